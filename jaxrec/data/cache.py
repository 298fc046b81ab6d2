"""On-disk cache of parsed and filtered datasets, so repeated runs skip parsing.

What is cached is a :class:`Prepared` dataset: the interactions after every filter
(``rating_threshold``, ``dedup``, ``kcore``, missing cells, missing features, A-LLMRec
counting) and before the split, with the aligned item/user features and the reports so
far. The split (cheap, vectorized, seeded) runs on every load, so runs with other seeds or
splits share one entry.

Key: sha256 of (format version, loader, the sha256 of every input file's bytes, the
options that change the result: the config's data fields ``rating_threshold``, ``dedup``,
``kcore``, ``missing`` and the loader's own arguments). An entry under
``$JAXREC_CACHE/datasets`` (default ``~/.cache/jaxrec/datasets``) is ``<name>-<key>.npz``
(arrays) plus ``<name>-<key>.json`` (manifest: key material, shape, dtype and sha256 of each
array, features and reports as JSON), each written to a temporary file and moved in place
with ``os.replace`` (arrays first, manifest last), as the embedding cache
(``jaxrec.init.cache``) does. An entry whose manifest or arrays do not verify is logged
and rebuilt, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..init.cache import _atomic_write, array_sha256
from .filters import FilterReport
from .interactions import Interactions
from .locate import cache_root
from .split import SplitReport
from .textio import ReadReport, file_sha256

log = logging.getLogger("jaxrec.data")

FORMAT_VERSION = 2  # 2: integer timestamps beyond 2**53 are int64 (exact)
REPORT_TYPES = {c.__name__: c for c in (FilterReport, SplitReport, ReadReport)}


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """A dataset before its split: filtered interactions, aligned features, reports so far."""

    inter: Interactions
    item_features: dict[str, list]
    user_features: dict[str, list]
    reports: list


@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """Outcome of a lookup: ``hit``, the entry's path, and why it was (re)built."""

    hit: bool
    path: Path | None
    reason: str


def dataset_cache_dir() -> Path:
    """``$JAXREC_CACHE/datasets`` (default ``~/.cache/jaxrec/datasets``)."""
    return cache_root() / "datasets"


def cache_key(loader: str, files, options: dict[str, Any]) -> tuple[str, dict]:
    """(16 hex chars, the key material as a JSON-able dict) for ``files`` read by ``loader``."""
    material = {"format": FORMAT_VERSION, "loader": loader,
                "files": {Path(p).name: file_sha256(p) for p in files}, "options": options}
    blob = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16], json.loads(blob)


def cached_prepare(name: str, loader: str, files, options: dict[str, Any], build: Callable[[], Prepared],
                   enabled: bool = True, cache_dir: str | Path | None = None) -> tuple[Prepared, CacheInfo]:
    """``build()``'s result from the cache, or built and stored. ``enabled=False`` only builds."""
    if not enabled:
        return build(), CacheInfo(False, None, "disabled")
    key, material = cache_key(loader, files, options)
    folder = Path(cache_dir) if cache_dir is not None else dataset_cache_dir()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[-60:] or "dataset"
    npz, manifest_path = folder / f"{safe}-{key}.npz", folder / f"{safe}-{key}.json"
    got, reason = _load(npz, manifest_path, material)
    if got is not None:
        prepared, warnings = got
        log.info("dataset cache hit: %s", npz)
        for w in warnings:  # what the build warned about still holds: say it again
            log.warning("%s", w)
        return prepared, CacheInfo(True, npz, "hit")
    if reason != "missing":
        log.warning("dataset cache entry %s rejected: %s; rebuilding", npz, reason)
    seen = _Collect()
    log.addHandler(seen)
    try:
        prepared = build()
    finally:
        log.removeHandler(seen)
    try:
        arrays, meta = _encode(prepared)
    except TypeError as e:
        log.info("dataset %s not cached: %s", name, e)
        return prepared, CacheInfo(False, None, f"not cacheable ({e})")
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(npz, lambda f: np.savez(f, **arrays))
    manifest = {"key": material, "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype),
                                                "sha256": array_sha256(a)} for k, a in arrays.items()},
                "warnings": seen.messages, **meta}
    _atomic_write(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode("utf-8")))
    log.info("dataset cache %s: wrote %s", "miss" if reason == "missing" else "rebuild", npz)
    return prepared, CacheInfo(False, npz, reason)


# --------------------------------------------------------------------------------------
class _Collect(logging.Handler):
    """Collects the warnings logged while a dataset is built (replayed on cache hits)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _encode(p: Prepared) -> tuple[dict[str, np.ndarray], dict]:
    it = p.inter
    arrays = {"user": it.user, "item": it.item, "user_ids": it.user_ids, "item_ids": it.item_ids}
    for k in ("rating", "timestamp"):
        if getattr(it, k) is not None:
            arrays[k] = getattr(it, k)
    feats = {}
    for side, table in (("item", p.item_features), ("user", p.user_features)):
        cols = []
        for col, values in table.items():
            kind, parts = _encode_feature(col, values)
            for suffix, a in parts.items():
                arrays[f"{side}.{len(cols)}.{suffix}"] = a
            cols.append([col, kind])
        feats[side] = cols
    reports = []
    for r in p.reports:
        if dataclasses.is_dataclass(r) and type(r).__name__ in REPORT_TYPES:
            reports.append({"type": type(r).__name__, **dataclasses.asdict(r)})
        else:
            reports.append({"type": "ReadReport", "name": type(r).__name__, "detail": str(r)})
    return arrays, {"features": feats, "reports": reports}


def _encode_feature(col: str, values: list) -> tuple[str, dict[str, np.ndarray]]:
    if all(isinstance(v, str) for v in values):
        return "str", {"values": np.asarray(values, dtype=str) if values else np.array([], dtype=str)}
    if all(isinstance(v, float) for v in values):
        return "float", {"values": np.asarray(values, dtype=np.float64)}
    if all(isinstance(v, np.ndarray) and v.ndim == 1 for v in values):
        lengths = np.array([len(v) for v in values], dtype=np.int64)
        flat = np.concatenate(values).astype(np.float64) if values else np.zeros(0)
        return "float_seq", {"values": flat, "lengths": lengths}
    raise TypeError(f"feature {col!r} holds values of mixed or unsupported types")


def _decode_feature(kind: str, get) -> list:
    if kind == "str":
        return get("values").tolist()
    if kind == "float":
        return get("values").tolist()
    flat, lengths = get("values"), get("lengths")
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def _load(npz: Path, manifest_path: Path, material: dict) -> tuple[tuple[Prepared, list[str]] | None, str]:
    if not npz.is_file() or not manifest_path.is_file():
        return None, "missing"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"manifest {manifest_path} unreadable ({e})"
    if not isinstance(manifest, dict) or manifest.get("key") != material:
        return None, f"manifest {manifest_path} does not match the request"
    want = manifest.get("arrays", {})
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(npz, allow_pickle=False) as z:
            if sorted(z.files) != sorted(want):
                return None, f"{npz} holds arrays {sorted(z.files)}, manifest says {sorted(want)}"
            for k in z.files:
                a = z[k]
                w = want[k]
                if list(a.shape) != w["shape"] or str(a.dtype) != w["dtype"] or array_sha256(a) != w["sha256"]:
                    return None, f"array {k!r} of {npz} does not match its manifest (shape, dtype or sha256)"
                arrays[k] = a
        inter = Interactions(arrays["user"], arrays["item"], arrays.get("rating"), arrays.get("timestamp"),
                             arrays["user_ids"], arrays["item_ids"])
        feats = {}
        for side in ("item", "user"):
            feats[side] = {col: _decode_feature(kind, lambda s, j=j: arrays[f"{side}.{j}.{s}"])
                           for j, (col, kind) in enumerate(manifest["features"][side])}
        reports = []
        for r in manifest["reports"]:
            r = dict(r)
            reports.append(REPORT_TYPES[r.pop("type")](**r))
        warnings = [str(w) for w in manifest.get("warnings", [])]
    except Exception as e:  # noqa: BLE001 - any unreadable entry is rejected and rebuilt
        return None, f"entry {npz} unreadable ({type(e).__name__}: {e})"
    return (Prepared(inter, feats["item"], feats["user"], reports), warnings), "hit"


__all__ = ["Prepared", "CacheInfo", "cached_prepare", "cache_key", "dataset_cache_dir"]
