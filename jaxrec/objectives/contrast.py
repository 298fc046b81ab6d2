"""Contrastive terms: SGL's two-view InfoNCE and SGCL's supervised contrastive loss.

- ``ssl`` (SGL, Wu et al. 2021, eq. 10-12): once per epoch two augmented views of the training
  graph are drawn with ``config.ssl_aug`` (``jaxrec.registry.AUGMENTATIONS``) at drop ratio
  ``config.ssl_ratio``; per step the encoder runs over both views and
  ``contrast(u', u'', batch users) + contrast(i', i'', batch positives)`` with temperature
  ``config.ssl_tau``. ``contrast`` is ``config.ssl_negatives`` (``CONTRASTS``): ``"batch"`` =
  ``info_nce_by_id`` (the batch's rows are the negatives, duplicates kept, computed over
  distinct ids), ``"all"`` = ``info_nce_all`` (every row of the other view, SGL's code).
  A batch of one row has no in-batch negatives: the term is 0 there.
- ``sgcl`` (SGCL, batch kind "positives"): ``sgcl_loss_by_id`` on the final embeddings of the
  batch's (user, positive) pairs, temperature ``config.sgcl_tau`` (0 for a batch of one).

Distinct ids (``config.contrast_unique``, ``CONTRAST_UNIQUE``): ``"bucket"`` finds them on the
host when the batch is drawn (``jaxrec.losses.host_distinct``: padded to a multiple of 64, so the
[m, m] logits stay near the real distinct count); ``"table"`` finds them inside the step with
``jnp.unique`` padded to ``min(batch, table rows)`` (the form of jaxrec 0.1; same values up to
float summation order, more work: 1,682 padded item slots for ~800 distinct items on ml-100k).
"""

from __future__ import annotations

import jax

from jaxrec.graph import augment
from jaxrec.losses import host_distinct, info_nce_all, info_nce_by_id, sgcl_loss_by_id
from jaxrec.objectives import LossInputs, Term
from jaxrec.registry import CONTRAST_UNIQUE, CONTRASTS, OBJECTIVES

CONTRASTS.register("batch", info_nce_by_id)
CONTRASTS.register("all", info_nce_all)
CONTRAST_UNIQUE.register("bucket", "distinct ids found on the host, padded to a multiple of 64")
CONTRAST_UNIQUE.register("table", "distinct ids found in the step, padded to min(batch, table rows)")

#: Batch columns whose distinct ids the contrastive terms read, and the table they index.
_SIDES = {"user": "num_users", "pos": "num_items"}


def distinct_key(column: str) -> str:
    return f"distinct_{column}"


def add_distinct(columns: tuple[str, ...]):
    """``prepare_batch`` hook adding ``batch["distinct_<col>"]`` (``jaxrec.losses.Distinct``)."""

    def prepare(batch: dict, sizes) -> dict:
        out = dict(batch)
        for col in columns:
            if distinct_key(col) not in out:
                out[distinct_key(col)] = host_distinct(batch[col], getattr(sizes, _SIDES[col]))
        return out

    return prepare


def _distinct(x: LossInputs, column: str):
    return x.batch.get(distinct_key(column))


@OBJECTIVES.register("ssl")
def ssl_term(config) -> Term:
    aug, ratio, layers = config.ssl_aug, config.ssl_ratio, config.num_layers
    tau = config.ssl_tau
    contrast = CONTRASTS.get(config.ssl_negatives, "ssl_negatives")
    bucket = config.contrast_unique == "bucket"

    def views(context, key):
        """Two fresh augmented views of the training graph (same shapes), one call per epoch."""
        k1, k2 = jax.random.split(key)
        return augment(context, k1, aug, ratio, layers), augment(context, k2, aug, ratio, layers)

    def loss(x: LossInputs):
        if x.batch_size < 2:  # a trailing singleton batch (static shape): no in-batch negatives
            return jax.numpy.zeros((), x.embeddings[0].dtype)
        view1, view2 = x.views["ssl"]
        u1, i1 = x.encoder.embed(x.params, view1)
        u2, i2 = x.encoder.embed(x.params, view2)
        u, p = x.batch["user"], x.batch["pos"]
        return (contrast(u1, u2, u, tau, distinct=_distinct(x, "user"))
                + contrast(i1, i2, p, tau, distinct=_distinct(x, "pos")))

    return Term("ssl", loss, views=views, prepare_batch=add_distinct(("user", "pos")) if bucket else None)


@OBJECTIVES.register("sgcl")
def sgcl_term(config) -> Term:
    tau = config.sgcl_tau
    bucket = config.contrast_unique == "bucket"

    def loss(x: LossInputs):
        user_emb, item_emb = x.embeddings
        if x.batch_size < 2:  # a trailing singleton batch has no in-batch negatives
            return jax.numpy.zeros((), user_emb.dtype)
        du, di = _distinct(x, "user"), _distinct(x, "pos")
        distinct = (du, di) if du is not None and di is not None else None
        return sgcl_loss_by_id(user_emb, item_emb, x.batch["user"], x.batch["pos"], tau, distinct=distinct)

    return Term("sgcl", loss, batch_kind="positives",
                prepare_batch=add_distinct(("user", "pos")) if bucket else None)
