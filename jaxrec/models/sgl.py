"""SGL (Wu et al., 2021): LightGCN + self-supervised contrast between two augmented views.

Encoder: LightGCN (``lightgcn_embed``). Once per epoch ``epoch_views(graph, key)`` draws two
views of the training graph with ``config.ssl_aug`` ("ED" edge dropout, the default; "ND"
node dropout; "RW" random walk = a different edge dropout per layer) at drop ratio
``config.ssl_ratio`` (``jaxrec.graph.augment``); the views keep the graph's shapes, so the
jitted step compiles once. Per step::

    loss = BPR + reg_weight * L2(ego u, pos, neg)                  (LightGCN's loss)
         + ssl_weight * (info_nce(u'_B, u''_B) + info_nce(i'_B, i''_B))

where ``u'``/``u''`` (``i'``/``i''``) are the LightGCN outputs over view 1 / view 2, taken at
the batch's users (positive items), duplicates kept as in the reference, with temperature
``ssl_tau``. The value is computed over the batch's distinct ids weighted by their
multiplicity (``jaxrec.losses.info_nce_by_id``): the same loss and gradients at a fraction
of the [B, B] cost when the batch repeats ids. ``ssl_negatives="all"`` contrasts each batch
row with every user (item) of the other view instead, as SGL's reference code does
(``jaxrec.losses.info_nce_all``). Each view costs one extra ``num_layers``-layer propagation (forward and
backward): two extra propagations per step in all.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxrec.config import Config
from jaxrec.graph import BipartiteGraph, augment, light_propagate, propagate
from jaxrec.losses import info_nce_all, info_nce_by_id
from jaxrec.models.base import Model, init_tables
from jaxrec.models.lightgcn import bpr_batch_loss, lightgcn_embed, node_table

View = BipartiteGraph | tuple[BipartiteGraph, ...]


def view_propagate(view: View, x: jax.Array, num_layers: int, kernel: str) -> jax.Array:
    """LightGCN mean of layers 0..L over a view. [N, d] -> [N, d].

    ``view`` is one graph (used by every layer) or a tuple of ``num_layers`` graphs (layer
    ``l`` propagates over ``view[l]``, SGL's random walk).
    """
    if isinstance(view, BipartiteGraph):
        return light_propagate(view, x, num_layers, kernel)
    if len(view) != num_layers:
        raise ValueError(f"view_propagate: {len(view)} per-layer graphs for num_layers={num_layers}")
    outs = [x]
    for g in view:
        outs.append(propagate(g, outs[-1], kernel))
    return sum(outs) / (num_layers + 1)


def view_embed(params, view: View, num_layers: int, kernel: str) -> tuple[jax.Array, jax.Array]:
    """(user_emb [U, d], item_emb [I, d]) propagated over one view."""
    out = view_propagate(view, node_table(params), num_layers, kernel)
    num_users = params["user_embedding"].shape[0]
    return out[:num_users], out[num_users:]


def make_sgl(config: Config) -> Model:
    dim, layers, kernel = config.embedding_size, config.num_layers, config.kernel
    reg_weight, require_pow = config.reg_weight, config.require_pow
    aug, ratio = config.ssl_aug, config.ssl_ratio
    tau, ssl_weight = config.ssl_tau, config.ssl_weight
    contrast = info_nce_by_id if config.ssl_negatives == "batch" else info_nce_all

    def init(key, num_users, num_items):
        return init_tables(key, num_users, num_items, dim)

    def embed(params, graph):
        return lightgcn_embed(params, graph, layers, kernel)

    def _views(graph: BipartiteGraph, key: jax.Array) -> tuple[View, View]:
        k1, k2 = jax.random.split(key)
        return augment(graph, k1, aug, ratio, layers), augment(graph, k2, aug, ratio, layers)

    # Compiled once per graph shape; called by the training loop once per epoch.
    views_jit = jax.jit(_views)

    def epoch_views(graph: BipartiteGraph, key: jax.Array) -> tuple[View, View]:
        """Two fresh augmented views of ``graph`` (same shapes), one call per epoch."""
        return views_jit(graph, key)

    def ssl_loss(params, views: Any, batch) -> jax.Array:
        view1, view2 = views
        u1, i1 = view_embed(params, view1, layers, kernel)
        u2, i2 = view_embed(params, view2, layers, kernel)
        u, p = batch["user"], batch["pos"]
        # "batch": == info_nce(u1[u], u2[u]) + info_nce(i1[p], i2[p]) (duplicates kept),
        # computed over the batch's distinct ids weighted by multiplicity ([<=U, <=U]
        # logits, not [B, B]); "all": every user / item of view 2 is a negative.
        return contrast(u1, u2, u, tau) + contrast(i1, i2, p, tau)

    def loss(params, graph, views, batch, key):
        user_emb, item_emb = embed(params, graph)
        total, aux = bpr_batch_loss(params, user_emb, item_emb, batch, reg_weight, require_pow)
        # In-batch InfoNCE needs >= 2 rows; a trailing singleton batch (static shape) and
        # ssl_weight = 0 skip the contrastive term (and its two view propagations).
        if views is not None and ssl_weight > 0 and batch["user"].shape[0] >= 2:
            ssl = ssl_loss(params, views, batch)
            total = total + ssl_weight * ssl
        else:
            ssl = jnp.zeros((), total.dtype)
        return total, {**aux, "ssl": ssl}

    return Model(name="sgl", init=init, embed=embed, loss=loss, epoch_views=epoch_views)
