"""LightGCN (He et al., 2020): embeddings smoothed by the mean of L propagation layers.

Encoder: ``final = mean_{l=0..L} A_hat^l E`` over the joint user+item node table (paper eq. 8,
layer weights 1/(L+1)), ``A_hat`` the symmetric-normalized training graph (eq. 7).
Objective: BPR on the final embeddings plus ``reg_weight`` * L2 on the batch's ego (layer-0)
embeddings (eq. 15; RecBole's ``EmbLoss``).

The encoder also runs over SGL's augmented views: its context may be one graph, or a tuple of
``num_layers`` graphs (layer ``l`` propagates over element ``l``, SGL's random walk).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxrec.config import Config
from jaxrec.graph import BipartiteGraph, light_propagate, propagate
from jaxrec.models.base import Encoder, Model, Params, TableSettings, init_tables
from jaxrec.objectives import term, weighted_sum
from jaxrec.registry import KERNELS


@dataclasses.dataclass(frozen=True)
class LightGCNSettings(TableSettings):
    """LightGCN's settings: ``TableSettings`` plus ``num_layers`` L (propagation layers; the final
    embedding is the mean of layers 0..L) and ``kernel`` (the propagation kernel,
    ``jaxrec.registry.KERNELS``). SGL and SGCL extend it."""

    num_layers: int = 2
    kernel: str = "bcsr"

    def validate(self) -> None:
        super().validate()
        self.expect("num_layers", self.num_layers >= 0, "an integer >= 0")
        KERNELS.check(self.kernel, "kernel")

View = BipartiteGraph | tuple[BipartiteGraph, ...]


def node_table(params: Params) -> jax.Array:
    """[U + I, d]: user rows then item rows, the graph's node order."""
    return jnp.concatenate([params["user_embedding"], params["item_embedding"]], axis=0)


def view_propagate(view: View, x: jax.Array, num_layers: int, kernel: str) -> jax.Array:
    """LightGCN mean of layers 0..L over a graph or per-layer graphs. [N, d] -> [N, d]."""
    if isinstance(view, BipartiteGraph):
        return light_propagate(view, x, num_layers, kernel)
    if len(view) != num_layers:
        raise ValueError(f"view_propagate: {len(view)} per-layer graphs for num_layers={num_layers}")
    outs = [x]
    for g in view:
        outs.append(propagate(g, outs[-1], kernel))
    return sum(outs) / (num_layers + 1)


def lightgcn_embed(params: Params, graph: View, num_layers: int, kernel: str) -> tuple[jax.Array, jax.Array]:
    """(user_emb [U, d], item_emb [I, d]) after LightGCN propagation over ``graph``."""
    out = view_propagate(graph, node_table(params), num_layers, kernel)
    num_users = params["user_embedding"].shape[0]
    return out[:num_users], out[num_users:]


def lightgcn_encoder(config: Config) -> Encoder:
    dim, layers, kernel = config.embedding_size, config.num_layers, config.kernel
    return Encoder(
        name="lightgcn",
        init=lambda key, num_users, num_items: init_tables(key, num_users, num_items, dim),
        embed=lambda params, graph: lightgcn_embed(params, graph, layers, kernel),
    )


def make_lightgcn(config: Config) -> Model:
    objective = weighted_sum(term("bpr", config), (term("reg", config), config.reg_weight))
    return Model("lightgcn", lightgcn_encoder(config), objective)
