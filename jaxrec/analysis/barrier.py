"""The optimization barrier of an initialization, measured at init (TF-LLMER, DESIGN.md 7).

TF-LLMER's claim is that LLM item embeddings train badly because (1) their norms differ
from the backbone's and spread widely, and (2) their angular clusters do not follow the
collaborative structure. The paper's body is not available, so these are measured on the
starting parameters of a run:

- ``table_norms(model, params, reference)``: ``NormStats`` of every embedding table the
  model declares (``Model.tables``, padding rows excluded), with the ratio of its mean row
  norm to the same table in ``reference`` (the backbone's own random init);
- ``anisotropy(table)``: ``||mean_i r_i / ||r_i||||`` over the non-zero rows, in [0, 1]:
  0 for directions spread evenly, 1 when every row points the same way (a common direction
  shared by all items, as raw sentence embeddings have);
- ``graph_roughness(table, user, item)``: ``tr(T^T L T) / tr(T^T T)`` of the column-centered
  table T with L the normalized Laplacian of the item co-occurrence graph of the training
  interactions (``jaxrec.init.recpca.laplacian_form``; exact, the graph never built): in
  [0, 2], about 1 for a table unrelated to the graph (E[x^T L x] / E[x^T x] = tr(L) / I for
  i.i.d. columns), below 1 when items that share users have similar rows. It is the ratio
  Rec-PCA penalizes (DESIGN.md 2.3);
- ``loss_curvature(model, params, prepared, config, key)``: the largest Hessian eigenvalue
  of the model's training loss ``model.loss(params, context, views, batch, key)`` over all
  parameters, on one fixed batch (``fixed_batch``: the first batch of the epoch that
  ``key`` draws, with that epoch's views), by Lanczos on Hessian-vector products
  (``jaxrec.analysis.curvature.hessian_top_eigenvalue``). The sharpness bounds the stable
  step size of gradient descent (2 / lr); Adam rescales per coordinate, so it is a
  diagnostic of conditioning, not a step-size limit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.analysis.curvature import HessianEigen, hessian_top_eigenvalue
from jaxrec.analysis.norms import NormStats, norm_statistics, row_norms


def table_norms(model: Any, params: dict, reference: dict | None = None) -> dict[str, NormStats]:
    """``{side: NormStats}`` for each table of ``model.tables`` ("user", "item") in ``params``
    (entity rows only), ``mean_ratio`` against the same rows of ``reference`` params when given.

    Raises ValueError naming the missing params entry.
    """
    out = {}
    for side, spec in model.tables.items():
        for name, tree in (("params", params), ("reference", reference)):
            if tree is not None and spec.key not in tree:
                raise ValueError(f"{name}: no {spec.key!r} entry (the model's {side} table); keys: {sorted(tree)}")
        ref = None if reference is None else np.asarray(spec.rows(reference))
        out[side] = norm_statistics(np.asarray(spec.rows(params)), reference=ref)
    return out


def anisotropy(table, eps: float = 1e-12) -> float:
    """Norm of the mean unit row of ``table`` [rows, d] over its non-zero rows (module docstring).

    Raises ValueError for a non-2-D or non-finite table, or one without a non-zero row.
    """
    norms = row_norms(table)
    nz = norms > eps
    if not nz.any():
        raise ValueError("table: every row is zero; the mean direction is undefined")
    unit = np.asarray(table, np.float64)[nz] / norms[nz, None]
    return float(np.linalg.norm(unit.mean(axis=0)))


def graph_roughness(table, user, item) -> float:
    """``tr(T^T L T) / tr(T^T T)`` for ``table`` [I, d] centered by column (module docstring).

    ``user``/``item`` int [n]: the training interactions (item ids index ``table``'s rows).
    Raises ValueError (``jaxrec.init.RecPCAError``) for malformed ids or a non-finite table,
    and for a table whose columns are constant (zero variance).
    """
    from jaxrec.init.recpca import laplacian_form  # noqa: PLC0415

    t = np.asarray(table, np.float64)
    if t.ndim != 2:
        raise ValueError(f"table: expected [items, d], got shape {t.shape}")
    tc = t - t.mean(axis=0, keepdims=True)
    total = float(np.sum(tc * tc))
    if not total > 0:
        raise ValueError("table: its columns are constant (zero variance after centering); roughness is undefined")
    form = laplacian_form(jnp.asarray(tc, jnp.float32), user, item, num_items=t.shape[0])
    return float(jnp.trace(form)) / total


def fixed_batch(model: Any, prepared: Any, config: Any, key: jax.Array) -> tuple[Any, Any, Any, jax.Array]:
    """``(context, views, batch, loss_key)``: the training context, the views and the first
    batch of the epoch that ``key`` draws (split as the training loop splits an epoch key:
    ``jaxrec.train.loop.EpochRunner``), and the key the loss gets."""
    from jaxrec.train.batches import batch_source  # noqa: PLC0415
    from jaxrec.train.loop import epoch_rng  # noqa: PLC0415

    context = prepared.contexts(model.context, config)["train"]
    view_key, loss_key = jax.random.split(key)
    views = model.epoch_views(context, view_key)
    batch = next(iter(batch_source(model, prepared, config).epoch(epoch_rng(key))), None)
    if batch is None:
        raise ValueError("prepared: the training data yields no batch")
    return context, views, jax.tree.map(jnp.asarray, batch), loss_key


def loss_curvature(model: Any, params: dict, prepared: Any, config: Any, key: jax.Array, *,
                   method: str = "lanczos", max_iters: int = 100, tol: float = 1e-3) -> HessianEigen:
    """Largest Hessian eigenvalue of ``model.loss`` at ``params`` on ``fixed_batch(..., key)``.

    ``prepared``: ``jaxrec.train.prepare(dataset)``; ``config``: the run's config (batch
    size, the context's fields). The start vector of the iteration is drawn from
    ``fold_in(key, 1)``. Same ``key``, same batch: compare initializations with one key.
    """
    context, views, batch, loss_key = fixed_batch(model, prepared, config, key)
    return hessian_top_eigenvalue(model.loss, params, context, views, batch, loss_key,
                                  key=jax.random.fold_in(key, 1), method=method, max_iters=max_iters, tol=tol,
                                  has_aux=True)


__all__ = ["anisotropy", "fixed_batch", "graph_roughness", "loss_curvature", "table_norms"]
