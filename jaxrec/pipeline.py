"""A training run as a few public calls: load data, build a backbone, initialize, fit.

``train_run(config, out_dir)`` is exactly what ``jaxrec train`` does::

    dataset = load_dataset(config.dataset, config)
    model = get_model(config)
    params = initial_params(model, dataset, config)     # LLMInit when config.init != "none"
    result = fit(model, dataset, config, out_dir, params=params)
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np

from jaxrec.config import Config, ConfigError
from jaxrec.data import Dataset, load_dataset
from jaxrec.models import Model, Params, get_model
from jaxrec.train import RunResult, fit

log = logging.getLogger("jaxrec.pipeline")


def item_embeddings(dataset: Dataset, config: Config) -> np.ndarray:
    """float32 [num_items, N] text embeddings of the dataset's items, for LLMInit.

    From ``config.embeddings`` (a precomputed ``.npy`` with its id list) if set, else by
    encoding the items' text with ``config.encoder`` (cached on disk).
    """
    from jaxrec import init as llminit

    if config.embeddings:
        return llminit.load_precomputed(config.embeddings, dataset_item_ids=dataset.train.item_ids)
    if config.encoder:
        return llminit.dataset_item_embeddings(dataset, config.encoder)
    raise ConfigError(f"init={config.init!r} needs item text embeddings: set encoder (e.g. minilm) or embeddings (a .npy file)")


def initial_params(model: Model, dataset: Dataset, config: Config, key: jax.Array | None = None) -> Params | None:
    """Starting parameters: None (the model's own init) unless ``config.init`` asks for LLMInit."""
    if config.init == "none":
        return None
    from jaxrec import init as llminit

    key = jax.random.PRNGKey(config.seed) if key is None else key
    init_key = jax.random.split(key)[0]  # the key fit() gives model.init, so "none" matches fit's default
    select_key = jax.random.fold_in(key, 1)
    base = model.init(init_key, dataset.num_users, dataset.num_items)
    emb = item_embeddings(dataset, config)
    params, report = llminit.llm_init_params(
        base, emb, dataset.train.user, dataset.train.item, dataset.num_users, config, select_key
    )
    log.info("LLMInit: %s", report)
    return params


def train_run(
    config: Config,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> tuple[RunResult, Dataset]:
    """Load ``config.dataset``, build ``config.model``, initialize and train it."""
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config)
    model = get_model(config)
    params = initial_params(model, dataset, config)
    result = fit(model, dataset, config, out_dir=out_dir, params=params, resume=resume, overwrite=overwrite,
                 progress=progress)
    return result, dataset


def format_metrics_table(metrics: dict[str, float], title: str | None = None) -> str:
    """Metrics ``{"ndcg@10": ...}`` as a two-column table, names as RecBole writes them,
    ordered by metric then k."""

    def order(key: str) -> tuple[int, int]:
        name, _, k = key.partition("@")
        names = ("recall", "ndcg", "hit", "mrr", "precision")
        return (names.index(name) if name in names else len(names), int(k) if k.isdigit() else 0)

    width = max([len(k) for k in metrics] + [6])
    lines = [title] if title else []
    lines += [f"{'metric':<{width}}  {'value':>8}", "-" * (width + 10)]
    lines += [f"{k:<{width}}  {metrics[k]:>8.4f}" for k in sorted(metrics, key=order)]
    return "\n".join(lines)
