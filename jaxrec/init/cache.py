"""On-disk cache of item text embeddings, keyed by (encoder id, template, texts content).

An entry is ``<encoder>-<key>.npy`` plus ``<encoder>-<key>.json``, the manifest: encoder,
template, content hash (sha256 of the texts), shape, dtype and sha256 of the array bytes.
Both files are written to a temporary file and moved into place with ``os.replace`` (array
first, manifest last). On load the manifest must match the request and the array its
recorded shape, dtype and hash; anything else (truncated, flipped byte, other template,
unreadable JSON) is logged as a warning and the entry rebuilt, never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("jaxrec.init")

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """Outcome of a cache lookup: ``hit`` or why it was (re)built."""

    hit: bool
    path: Path  # the .npy file
    reason: str  # "hit", "missing", or what failed verification


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of the item texts (a JSON list, so boundaries between texts are unambiguous)."""
    payload = json.dumps(list(texts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def cache_key(encoder_name: str, template: str, content_hash: str) -> str:
    """16 hex chars identifying (encoder, template, content)."""
    blob = json.dumps([FORMAT_VERSION, encoder_name, template, content_hash])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def entry_paths(cache_dir: str | Path, encoder_name: str, key: str) -> tuple[Path, Path]:
    """(``.npy``, ``.json``) paths of an entry; the encoder name is made filename-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name).strip("._")[-60:] or "encoder"
    return Path(cache_dir) / f"{safe}-{key}.npy", Path(cache_dir) / f"{safe}-{key}.json"


def _atomic_write(path: Path, write: Callable[[object], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_entry(npy: Path, manifest_path: Path, expected: dict, num_texts: int) -> tuple[np.ndarray | None, str]:
    """Load and verify an entry -> (array, "hit") or (None, reason)."""
    if not manifest_path.is_file() or not npy.is_file():
        return None, "missing"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        return None, f"manifest {manifest_path} unreadable ({e})"
    if not isinstance(manifest, dict):
        return None, f"manifest {manifest_path} is not a JSON object"
    for field, want in expected.items():
        if manifest.get(field) != want:
            return None, f"manifest {field} is {manifest.get(field)!r}, expected {want!r}"
    try:
        arr = np.load(npy, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable array is a rejected entry
        return None, f"array {npy} unreadable ({e})"
    if list(arr.shape) != manifest.get("shape") or str(arr.dtype) != manifest.get("dtype"):
        said = f"{manifest.get('shape')} {manifest.get('dtype')}"
        return None, f"array {npy} has shape {arr.shape} {arr.dtype}, manifest says {said}"
    if arr.ndim != 2 or arr.shape[0] != num_texts:
        return None, f"array {npy} has shape {arr.shape}, expected ({num_texts}, N)"
    if array_sha256(arr) != manifest.get("array_sha256"):
        return None, f"array {npy} content does not match its manifest sha256"
    return arr, "hit"


def cached_item_embeddings(
    encoder_name: str,
    texts: Sequence[str],
    template: str,
    cache_dir: str | Path,
    encode_fn: Callable[[list[str]], np.ndarray],
) -> tuple[np.ndarray, CacheInfo]:
    """Item embeddings float32 [len(texts), N] from the cache, or ``encode_fn(texts)`` stored there.

    Returns (embeddings, CacheInfo). A cached entry is used only if its manifest matches
    (encoder, template, texts hash) and the array matches the manifest's shape, dtype and
    sha256; otherwise the reason is logged and the entry is rebuilt and overwritten.
    """
    texts = list(texts)
    content = texts_sha256(texts)
    key = cache_key(encoder_name, template, content)
    cache_dir = Path(cache_dir)
    npy, manifest_path = entry_paths(cache_dir, encoder_name, key)
    expected = {"format": FORMAT_VERSION, "encoder": encoder_name, "template": template, "content_sha256": content}
    arr, reason = _check_entry(npy, manifest_path, expected, len(texts))
    if arr is not None:
        log.info("embedding cache hit: %s", npy)
        return arr, CacheInfo(True, npy, "hit")
    if reason != "missing":
        log.warning("embedding cache entry %s rejected: %s; rebuilding", npy, reason)
    emb = np.asarray(encode_fn(texts))
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"encode_fn returned shape {emb.shape}; expected ({len(texts)}, N)")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if not np.isfinite(emb).all():
        bad = int((~np.isfinite(emb)).any(axis=1).sum())
        raise ValueError(f"encode_fn returned non-finite values in {bad} rows; not caching")
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(npy, lambda f: np.save(f, emb, allow_pickle=False))
    manifest = dict(
        expected, shape=list(emb.shape), dtype=str(emb.dtype), array_sha256=array_sha256(emb), num_texts=len(texts)
    )
    _atomic_write(manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode("utf-8")))
    log.info("embedding cache %s: wrote %s (%s)", "miss" if reason == "missing" else "rebuild", npy, emb.shape)
    return emb, CacheInfo(False, npy, reason)
