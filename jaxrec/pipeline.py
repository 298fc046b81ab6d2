"""A training run as a few public calls: load data, build a backbone, initialize, fit.

``train_run(config, out_dir)`` is exactly what ``jaxrec train`` does::

    dataset = load_dataset(config.dataset, config)
    model = get_model(config)
    check_run(model, dataset, config)                   # the config against the data, before any compute
    params = initial_params(model, dataset, config)     # LLMInit when config.init != "none"
    result = fit(model, dataset, config, out_dir, params=params)
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np

from jaxrec.config import Config
from jaxrec.data import Dataset, load_dataset
from jaxrec.models import Model, Params, get_model
from jaxrec.train import RunResult, check_run, fit
from jaxrec.train.state import run_keys, run_keys_from

log = logging.getLogger("jaxrec.pipeline")


def initial_params(model: Model, dataset: Dataset, config: Config, key: jax.Array | None = None,
                   embeddings: np.ndarray | None = None) -> Params | None:
    """Starting parameters: None (the model's own init, which ``fit`` draws) unless ``config.init``
    names an LLM initializer; then the model's init with the seed's init key, its declared
    embedding tables written by ``jaxrec.init.llm_init_params``.

    ``key`` overrides ``PRNGKey(config.seed)``; ``embeddings`` (float [I, N]) overrides the
    item text embeddings that ``jaxrec.init.item_embeddings(dataset, config)`` resolves.
    """
    return llm_initial_params(model, dataset, config, key, embeddings)[0]


def llm_initial_params(model: Model, dataset: Dataset, config: Config, key: jax.Array | None = None,
                       embeddings: np.ndarray | None = None) -> tuple[Params | None, dict]:
    """``initial_params`` and the record of what LLM initialization did (``init.json``:
    strategy, selected dims, scaling parameters, embedding source; see
    ``jaxrec.init.record``), which ``train_run`` stores in the run folder so that an
    update initializes new items the same way. ``{"strategy": "none"}`` without LLM init."""
    from jaxrec import init as llminit
    from jaxrec.init.record import init_record

    if llminit.get_initializer(config.init).build is None:
        return None, init_record(llminit.InitReport(config.init, None, None, None, None, None, 0), None, config)
    keys = run_keys(config.seed) if key is None else run_keys_from(key)
    base = model.init(keys.init, dataset.num_users, dataset.num_items)
    emb = llminit.item_embeddings(dataset, config) if embeddings is None else embeddings
    params, report = llminit.llm_init_params(
        base, emb, dataset.train.user, dataset.train.item, dataset.num_users, config, keys.select,
        tables=model.tables,
    )
    log.info("LLMInit: %s", report)
    return params, init_record(report, emb, config, model.tables)


def train_run(
    config: Config,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    dataset: Dataset | None = None,
) -> tuple[RunResult, Dataset]:
    """Load ``config.dataset``, check the config against it, build ``config.model``, initialize
    and train it (what ``jaxrec train`` does). The run folder also gets ``init.json``, the
    record of the initialization (``llm_initial_params``), written before the run is published.

    Raises ``ConfigError`` before reading data when an LLM ``init`` has no item text source
    (``embeddings`` / ``encoder``), and the data / config errors ``load_dataset`` and
    ``check_run`` raise."""
    from jaxrec.init.embeddings import require_text_source

    require_text_source(config)
    dataset = dataset if dataset is not None else load_dataset(config.dataset, config)
    model = get_model(config)
    check_run(model, dataset, config)
    params, record = llm_initial_params(model, dataset, config)
    result = fit(model, dataset, config, out_dir=out_dir, params=params, resume=resume, overwrite=overwrite,
                 progress=progress, before_publish=lambda folder: folder.write_init_record(record))
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
