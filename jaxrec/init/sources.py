"""Where LLM initialization's item text embeddings come from: the one resolver.

``resolve_embedding_source(config, embeddings="auto", encoder=None) -> EmbeddingSource`` decides,
in this order: the config's own ``embeddings`` / ``encoder`` keys; an explicit ``embeddings``
file; an explicit ``encoder``; with ``embeddings="auto"`` the reference file
``<data folder>/<dataset>.all-mpnet-base-v2.npy`` (with its ``.item_ids.txt``) when present; else
the ``minilm`` encoder. ``item_embeddings(dataset, config)`` (``jaxrec.init.embeddings``) then
loads a precomputed file or encodes through the on-disk cache. ``save_precomputed`` writes a
``.npy`` + id list that ``load_precomputed`` reads back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: The reference MPNet embeddings file name beside a dataset (``../shared/data`` has ml-100k's).
REFERENCE_EMBEDDINGS = "{name}.all-mpnet-base-v2.npy"


@dataclasses.dataclass(frozen=True)
class EmbeddingSource:
    """A precomputed ``embeddings`` file (.npy with its id list) or an ``encoder`` name/folder."""

    embeddings: str | None = None
    encoder: str | None = None
    description: str = ""

    def config_fields(self) -> dict[str, Any]:
        """The config keys that select this source (``config.replace(**source.config_fields())``)."""
        return {"embeddings": self.embeddings, "encoder": self.encoder}


def is_reference_embeddings(path) -> bool:
    """Whether ``path`` is named like a reference MPNet file (``*.all-mpnet-base-v2.npy``: rows by
    sentence-transformers all-mpnet-base-v2, which the ``mpnet`` encoder reproduces)."""
    return Path(path).name.endswith(REFERENCE_EMBEDDINGS.format(name="")[1:])


def find_reference_embeddings(dataset: str, data_dirs: Sequence[str] = ()) -> Path | None:
    """``<data folder>/<name>.all-mpnet-base-v2.npy`` (with its id list) if present, else None."""
    from jaxrec.data import DataError, find_dataset  # noqa: PLC0415

    try:
        folder = find_dataset(dataset, data_dirs, download=False)
    except (DataError, FileNotFoundError, OSError):
        return None
    file = REFERENCE_EMBEDDINGS.format(name=folder.name)
    for cand in (folder / file, folder.parent / file):
        ids = cand.with_name(cand.name[: -len(".npy")] + ".item_ids.txt")
        if cand.is_file() and ids.is_file():
            return cand
    return None


def resolve_embedding_source(config: Any, embeddings: str | None = "auto", encoder: str | None = None) -> EmbeddingSource:
    """The item-embedding source an LLM-initialized run uses (module docstring).

    Raises ``ConfigError`` naming ``embeddings`` when an explicit file does not exist.
    """
    from jaxrec.config import ConfigError  # noqa: PLC0415

    if config.embeddings or config.encoder:
        return EmbeddingSource(config.embeddings, config.encoder, "from the config")
    if embeddings and str(embeddings).lower() not in ("auto", "none"):
        path = Path(embeddings)
        if not path.is_file():
            raise ConfigError(f"embeddings={str(embeddings)!r}: file not found")
        return EmbeddingSource(str(path.resolve()), None, f"precomputed {path}")
    if encoder:
        return EmbeddingSource(None, str(encoder), f"encoder {encoder}")
    if str(embeddings).lower() == "auto":
        ref = find_reference_embeddings(config.dataset, config.data_dirs)
        if ref is not None:
            return EmbeddingSource(str(ref.resolve()), None, f"reference MPNet embeddings {ref} (auto-detected)")
    why = "reference embeddings not used (embeddings=none)" if str(embeddings).lower() == "none" else \
        "no reference embeddings found"
    return EmbeddingSource(None, "minilm", f"encoder minilm ({why})")


def save_precomputed(path: str | Path, emb: np.ndarray, item_ids: Sequence[str]) -> Path:
    """Write ``path`` (.npy, float32 [I, N]) and ``<stem>.item_ids.txt`` beside it, as
    ``load_precomputed`` reads them. Each file is written beside and renamed into place, the
    id list first and the array last (``find_reference_embeddings`` looks for both), so a
    crash leaves complete files or none."""
    from .cache import _atomic_write  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{i}\n" for i in np.asarray(item_ids).astype(str)).encode("utf-8")
    _atomic_write(path.with_name(path.name[: -len(".npy")] + ".item_ids.txt"), lambda f: f.write(text))
    arr = np.asarray(emb, np.float32)
    _atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
    return path


__all__ = ["EmbeddingSource", "REFERENCE_EMBEDDINGS", "is_reference_embeddings", "find_reference_embeddings", "resolve_embedding_source",
           "save_precomputed"]
