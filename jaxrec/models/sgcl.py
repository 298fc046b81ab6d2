"""SGCL: LightGCN trained with a supervised contrastive loss instead of BPR; no negatives.

Encoder: LightGCN (``lightgcn_embed``). Per step, on the batch's (user, positive item)
pairs::

    loss = sgcl_loss(final u_B, final i_B, sgcl_tau) + reg_weight * L2(ego u_B, ego i_B)

(``jaxrec.losses.sgcl_loss``: the other batch users and items are the negatives;
computed by ``sgcl_loss_by_id`` over the batch's distinct ids, same value). The
model sets ``needs_negatives=False``, so the training loop samples no negatives; a
``neg`` entry in the batch, if present, is ignored.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrec.config import Config
from jaxrec.losses import l2_reg, sgcl_loss_by_id
from jaxrec.models.base import Model, init_tables
from jaxrec.models.lightgcn import lightgcn_embed


def make_sgcl(config: Config) -> Model:
    dim, layers, kernel = config.embedding_size, config.num_layers, config.kernel
    reg_weight, require_pow, tau = config.reg_weight, config.require_pow, config.sgcl_tau

    def init(key, num_users, num_items):
        return init_tables(key, num_users, num_items, dim)

    def embed(params, graph):
        return lightgcn_embed(params, graph, layers, kernel)

    def loss(params, graph, views, batch, key):
        u, p = batch["user"], batch["pos"]
        user_emb, item_emb = embed(params, graph)
        reg = l2_reg(params["user_embedding"][u], params["item_embedding"][p], require_pow=require_pow)
        if u.shape[0] >= 2:
            # == sgcl_loss(user_emb[u], item_emb[p], tau), over distinct ids (same value).
            con = sgcl_loss_by_id(user_emb, item_emb, u, p, tau)
        else:  # a trailing singleton batch has no in-batch negatives: only the L2 term
            con = jnp.zeros((), reg.dtype)
        return con + reg_weight * reg, {"sgcl": con, "reg": reg}

    return Model(name="sgcl", init=init, embed=embed, loss=loss, needs_negatives=False)
