"""What a run's LLM initialization did, stored with the run, and new item rows made the same way.

``jaxrec.pipeline.train_run`` writes ``init.json`` into the run folder (``RunFolder.write_init_record``;
``RunFolder.init_record`` reads it back through ``check_record``): the initializer
(``strategy``), K and N, the selected encoder dims (``indices``), the rescaling and its
parameters, the embedding source (precomputed file or encoder) and the run's table layout.
``item_rows(record, emb)`` maps text embeddings of *new* items [m, N] to rows [m, K] exactly
as ``jaxrec.init.llm_init_params`` mapped the run's own items (``jaxrec.init.apply``):

1. ``init_scale="minmax"``: ``(x - min) / (max - min)`` with the run's global min and max of
   its full [I, N] table (RecBole ``normalize_all``, ``jaxrec.init.scaling.minmax_full``);
2. the selected dims ``x[:, indices]`` (``uniform`` / ``random`` / ``variance``; LLMInit,
   DESIGN.md 2.1) or every dim (``full``);
2b. ``init_norm`` (TF-LLMER, ``jaxrec.init.normalize``): every non-zero row scaled to the run's
   ``norm_target`` (1 for ``unit``, the backbone's measured typical row norm for ``typical``);
3. ``match_random``: times the run's factor ``sqrt(K) * reference_std / mean_row_norm_before``;
   ``standardize``: ``(x - mean) / std * reference_std`` per dim with the run's mean and std
   over its non-zero item rows (stored as float32); zero rows stay zero.

Initializers whose item table is not a fixed map of each item's own embedding row (``pca``:
the projection axes are not stored) are recorded with ``reusable: false``; ``item_rows``
refuses them (``InitRecordError``). A run trained with ``init="none"`` stores
``{"strategy": "none"}``: its new rows come from the backbone's own random init.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxrec.errors import JaxrecError

INIT_FILE = "init.json"
FORMAT = 1


class InitRecordError(JaxrecError, ValueError):
    """An ``init.json`` is unreadable or cannot initialize new rows; the message names the file or field."""


def init_record(report: Any, emb: np.ndarray | None, config: Any, tables: Mapping[str, Any] | None = None) -> dict:
    """The JSON record of one LLM initialization.

    Args:
      report: the ``jaxrec.init.InitReport`` that ``llm_init_params`` returned.
      emb: float [I, N], the item text embeddings it was given (None when ``strategy == "none"``).
      config: the run's config (``init``, ``init_scale``, ``variance_fraction``, ``embeddings``,
        ``encoder``, ``random_with_replacement``).
      tables: the model's ``Model.tables`` (``{"user": TableSpec, "item": TableSpec}``).
    """
    rec: dict[str, Any] = {"format": FORMAT, "strategy": report.strategy}
    if report.strategy == "none":
        return rec
    mode = getattr(config, "init_scale", "none")
    rec.update(
        k=report.k, n=report.n, indices=None if report.indices is None else [int(i) for i in report.indices],
        init_scale=mode, item_scale=_plain(report.item_scale), user_scale=_plain(report.user_scale),
        item_norm_mean=report.item_norm_mean, user_norm_mean=report.user_norm_mean,
        users_without_items=report.users_without_items,
        variance_fraction=getattr(config, "variance_fraction", None),
        random_with_replacement=getattr(config, "random_with_replacement", None),
        source={"embeddings": getattr(config, "embeddings", None), "encoder": getattr(config, "encoder", None)},
        tables={side: {"key": spec.key, "offset": spec.offset} for side, spec in (tables or {}).items()},
        reusable=report.indices is not None or report.strategy == "full",
        init_norm=getattr(report, "init_norm", "none"), norm_target=getattr(report, "norm_target", None),
    )
    if report.strategy == "recpca":
        rec["recpca_lambda"] = getattr(config, "recpca_lambda", None)
    if rec["reusable"] and mode == "standardize":
        table = _normalized(rec, _selected(rec, np.asarray(emb, np.float32)))
        mean, std = _standardize_stats(table)
        rec["item_standardize"] = {"mean": mean.tolist(), "std": std.tolist()}
    return rec


def _plain(d: Any) -> Any:
    return None if d is None else {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}


def _selected(rec: dict, x: np.ndarray) -> np.ndarray:
    """Steps 1 and 2 of the module docstring: [m, N] -> [m, K] float32."""
    if rec.get("init_scale") == "minmax":
        lo, hi = float(rec["item_scale"]["min"]), float(rec["item_scale"]["max"])
        x = np.ones_like(x) if hi == lo else ((x - lo) / (hi - lo)).astype(x.dtype, copy=False)
    return x if rec["indices"] is None else np.take(x, np.asarray(rec["indices"], np.int64), axis=1)


def _normalized(rec: Mapping[str, Any], table: np.ndarray) -> np.ndarray:
    """Step 2b: non-zero rows scaled to ``norm_target`` by the run's own ``normalize_items``."""
    if rec.get("init_norm", "none") == "none":
        return table
    target = rec.get("norm_target")
    if target is None:
        raise InitRecordError(f"init.json: init_norm={rec['init_norm']!r} without its 'norm_target'")
    from jaxrec.init.normalize import normalize_items  # noqa: PLC0415

    return np.asarray(normalize_items(table, float(target)), np.float32)


def _standardize_stats(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim mean and std over the non-zero rows, as ``jaxrec.init.scaling.rescale`` computes them."""
    import jax.numpy as jnp  # noqa: PLC0415

    t = jnp.asarray(table)
    m = jnp.any(t != 0, axis=1)[:, None].astype(t.dtype)
    count = jnp.maximum(m.sum(), 1.0)
    mean = (t * m).sum(axis=0) / count
    var = (((t - mean) * m) ** 2).sum(axis=0) / count
    return np.asarray(mean, np.float32), np.asarray(jnp.sqrt(var), np.float32)


def item_rows(record: Mapping[str, Any], emb: np.ndarray) -> np.ndarray:
    """Rows float32 [m, K] for items with text embeddings ``emb`` [m, N], made as the run's
    own item rows were (module docstring). Raises ``InitRecordError`` for a record that
    cannot do that (``strategy`` none or not reusable, N differs)."""
    strategy = record.get("strategy")
    if strategy == "none":
        raise InitRecordError("init.json: the run was not LLM-initialized (strategy 'none'); new rows come from "
                              "the backbone's random init")
    if not record.get("reusable"):
        raise InitRecordError(f"init.json: init {strategy!r} stores no per-item map (e.g. pca's projection axes), "
                              "so new items cannot be initialized as the run's were; initialize them randomly")
    x = np.asarray(emb, np.float32)
    if x.ndim != 2 or x.shape[1] != record["n"]:
        raise InitRecordError(f"item embeddings: expected [items, {record['n']}] (the run's N), got shape {x.shape}")
    table = _normalized(record, _selected(dict(record), x))
    mode = record.get("init_scale", "none")
    scale = record.get("item_scale") or {}
    if mode == "match_random":
        before = float(scale["mean_row_norm_before"])
        factor = math.sqrt(table.shape[1]) * float(scale["reference_std"]) / before if before > 0 else 1.0
        table = table * np.float32(factor)
    elif mode == "standardize":
        mean = np.asarray(record["item_standardize"]["mean"], np.float32)
        std = np.asarray(record["item_standardize"]["std"], np.float32)
        mask = np.any(table != 0, axis=1)[:, None].astype(np.float32)
        z = np.where(std > 0, (table - mean) / np.where(std > 0, std, np.float32(1)), np.float32(0))
        table = z * np.float32(scale["reference_std"]) * mask
    return np.ascontiguousarray(table, np.float32)


def check_record(rec: Any, where: str | Path) -> dict:
    """``rec`` (an ``init.json`` read from ``where``) if it is an init record; ``InitRecordError``
    naming ``where`` and the field otherwise."""
    if not isinstance(rec, dict) or "strategy" not in rec:
        raise InitRecordError(f"{where}: expected a JSON object with a 'strategy' field")
    if rec.get("reusable") and rec.get("n") is None:
        raise InitRecordError(f"{where}: field 'n' (the encoder's dims) is missing")
    return rec


__all__ = ["INIT_FILE", "InitRecordError", "init_record", "item_rows", "check_record"]
