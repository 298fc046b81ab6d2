"""Item text embeddings [num_items, N] for a dataset: precomputed file or encoder + cache.

- ``item_embeddings(dataset, config)``: ``config.embeddings`` (a ``.npy`` with its id list,
  see ``precomputed``) if set, else ``dataset_item_embeddings(dataset, config.encoder)``.
- ``dataset_item_embeddings(dataset, encoder)``: the dataset's item texts (template by
  dataset, see ``text.template_for``) encoded by ``encoder`` (a name, folder, or loaded
  ``Encoder``), through the on-disk cache (``$JAXREC_CACHE/embeddings`` by default) keyed
  by (encoder id, template, texts); the encoder is only loaded on a cache miss.

``dataset`` is duck-typed: ``train.item_ids`` [I], ``item_features`` (field -> list [I]) and
``name`` are all that is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from jaxrec.init.cache import cached_item_embeddings
from jaxrec.init.encoders import cache_root, encode_texts, encoder_cache_id, encoder_id, load_encoder
from jaxrec.init.precomputed import load_precomputed
from jaxrec.init.text import item_texts, template_for

log = logging.getLogger("jaxrec.init")


def dataset_item_embeddings(
    dataset: Any,
    encoder: Any,
    cache_dir: str | Path | None = None,
    template: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """Encode the dataset's item texts -> float32 [num_items, N] (cached; see module doc).

    ``encoder``: a name/folder for ``load_encoder`` or an object with ``.encode`` (and
    ``.name`` for the cache key). ``template`` overrides ``template_for(dataset.name, ...)``.
    """
    num_items = len(np.asarray(dataset.train.item_ids))
    features = dataset.item_features
    if not features:
        raise ValueError(
            f"dataset {getattr(dataset, 'name', '?')!r} has no item features to build item texts from; "
            "pass precomputed embeddings (config.embeddings) instead"
        )
    template = template or template_for(getattr(dataset, "name", ""), features)
    texts, report = item_texts(features, template)
    log.info("%s", report)
    if len(texts) != num_items:
        raise ValueError(f"item_features describe {len(texts)} items but the dataset has {num_items}")
    if isinstance(encoder, (str, Path)):
        name, loaded = encoder_cache_id(encoder), None
    else:
        name, loaded = encoder_id(encoder), encoder
    holder = {"encoder": loaded}

    def encode(t: list[str]) -> np.ndarray:
        if holder["encoder"] is None:
            holder["encoder"] = load_encoder(str(encoder), device=device)
        return encode_texts(holder["encoder"], t, batch_size=batch_size, progress=progress)

    emb, _ = cached_item_embeddings(name, texts, template, cache_dir or cache_root() / "embeddings", encode)
    return emb


def item_embeddings(
    dataset: Any, config: Any, cache_dir: str | Path | None = None, encoder: Any = None, progress: bool = True
) -> np.ndarray:
    """float32 [num_items, N]: ``config.embeddings`` if set, else items encoded by ``encoder``/``config.encoder``;
    ``ConfigError`` when neither is given."""
    if getattr(config, "embeddings", None):
        return load_precomputed(config.embeddings, dataset_item_ids=np.asarray(dataset.train.item_ids))
    encoder = encoder if encoder is not None else getattr(config, "encoder", None)
    if encoder is None:
        from jaxrec.config import ConfigError  # noqa: PLC0415

        raise ConfigError("item text embeddings: set config.embeddings (a .npy) or config.encoder (e.g. minilm)")
    return dataset_item_embeddings(dataset, encoder, cache_dir=cache_dir, progress=progress)


def require_text_source(config: Any) -> None:
    """Raise ``ConfigError`` (before any data is read) when ``config.init`` is an LLM initializer
    and the config names no item text: neither ``embeddings`` (a .npy) nor ``encoder``."""
    from jaxrec.config import ConfigError  # noqa: PLC0415
    from jaxrec.init.strategies import get_initializer  # noqa: PLC0415

    if getattr(config, "embeddings", None) or getattr(config, "encoder", None):
        return
    if get_initializer(config.init).build is not None:
        raise ConfigError(f"init={config.init!r} reads item text embeddings: set embeddings=FILE.npy (jaxrec train "
                          "--embeddings FILE.npy, or --embeddings auto: the dataset's reference MPNet file when present, "
                          "else the minilm encoder) or encoder=NAME (e.g. minilm)")
