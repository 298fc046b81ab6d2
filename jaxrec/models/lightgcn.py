"""LightGCN (He et al., 2020): embeddings smoothed by the mean of L propagation layers.

``final = mean_{l=0..L} A_hat^l E`` over the joint user+item node table; BPR on the final
embeddings plus L2 on the batch's ego (layer-0) embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.config import Config
from jaxrec.graph import BipartiteGraph, light_propagate
from jaxrec.losses import bpr_loss, l2_reg
from jaxrec.models.base import Model, Params, dot_scores, init_tables


def node_table(params: Params) -> jax.Array:
    """[U + I, d]: user rows then item rows, the graph's node order."""
    return jnp.concatenate([params["user_embedding"], params["item_embedding"]], axis=0)


def lightgcn_embed(params: Params, graph: BipartiteGraph, num_layers: int, kernel: str):
    """(user_emb [U, d], item_emb [I, d]) after LightGCN propagation over ``graph``."""
    out = light_propagate(graph, node_table(params), num_layers, kernel)
    return graph.split_nodes(out)


def bpr_batch_loss(params: Params, user_emb, item_emb, batch, reg_weight: float, require_pow: bool):
    """BPR on propagated embeddings + reg_weight * L2 on the batch's ego embeddings."""
    u, p, n = batch["user"], batch["pos"], batch["neg"]
    ue = user_emb[u]
    rec = bpr_loss(dot_scores(ue, item_emb[p]), dot_scores(ue, item_emb[n]))
    reg = l2_reg(
        params["user_embedding"][u], params["item_embedding"][p], params["item_embedding"][n],
        require_pow=require_pow,
    )
    return rec + reg_weight * reg, {"bpr": rec, "reg": reg}


def make_lightgcn(config: Config) -> Model:
    dim, layers, kernel = config.embedding_size, config.num_layers, config.kernel
    reg_weight, require_pow = config.reg_weight, config.require_pow

    def init(key, num_users, num_items):
        return init_tables(key, num_users, num_items, dim)

    def embed(params, graph):
        return lightgcn_embed(params, graph, layers, kernel)

    def loss(params, graph, views, batch, key):
        user_emb, item_emb = embed(params, graph)
        return bpr_batch_loss(params, user_emb, item_emb, batch, reg_weight, require_pow)

    return Model(name="lightgcn", init=init, embed=embed, loss=loss)
