"""Matrix factorization trained with BPR (the sanity baseline): no propagation."""

from __future__ import annotations

from jaxrec.config import Config
from jaxrec.losses import bpr_loss, l2_reg
from jaxrec.models.base import Model, dot_scores, init_tables


def make_mf(config: Config) -> Model:
    dim, reg_weight, require_pow = config.embedding_size, config.reg_weight, config.require_pow

    def init(key, num_users, num_items):
        return init_tables(key, num_users, num_items, dim)

    def embed(params, graph):
        return params["user_embedding"], params["item_embedding"]

    def loss(params, graph, views, batch, key):
        u = params["user_embedding"][batch["user"]]
        p = params["item_embedding"][batch["pos"]]
        n = params["item_embedding"][batch["neg"]]
        rec = bpr_loss(dot_scores(u, p), dot_scores(u, n))
        reg = l2_reg(u, p, n, require_pow=require_pow)
        return rec + reg_weight * reg, {"bpr": rec, "reg": reg}

    return Model(name="mf", init=init, embed=embed, loss=loss)
