"""The model protocol: a record of pure functions over a parameter pytree.

A backbone is built from a ``Config`` by ``get_model(config)``; its functions close over
the config's scalar hyperparameters only (never over arrays), so they jit cleanly with
the graph and parameters passed as arguments.

- ``init(key, num_users, num_items) -> params`` with ``params["user_embedding"]`` [U, d]
  and ``params["item_embedding"]`` [I, d] in every backbone (LLMInit writes these two).
- ``embed(params, graph) -> (user_emb [U, d], item_emb [I, d])``: final representations;
  the score of (u, i) is their dot product.
- ``epoch_views(graph, key) -> pytree | None``: per-epoch auxiliary inputs (SGL's two
  augmented graphs), computed once per epoch, passed to ``loss``.
- ``loss(params, graph, views, batch, key) -> (loss [], aux dict of scalars)``: ``batch``
  holds int32 [B] arrays ``user``, ``pos`` and (when ``needs_negatives``) ``neg``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]


class Model(NamedTuple):
    name: str
    init: Callable[..., Params]
    embed: Callable[..., tuple[jax.Array, jax.Array]]
    loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
    epoch_views: Callable[..., Any] = lambda graph, key: None
    needs_negatives: bool = True


def xavier_uniform_table(key: jax.Array, rows: int, dim: int) -> jax.Array:
    """[rows, dim] table ~ U(-b, b), b = sqrt(6 / (rows + dim)) (torch's xavier_uniform_ on an nn.Embedding)."""
    bound = (6.0 / (rows + dim)) ** 0.5
    return jax.random.uniform(key, (rows, dim), jnp.float32, -bound, bound)


def init_tables(key: jax.Array, num_users: int, num_items: int, dim: int) -> Params:
    """The user and item embedding tables every backbone starts from."""
    ku, ki = jax.random.split(key)
    return {
        "user_embedding": xavier_uniform_table(ku, num_users, dim),
        "item_embedding": xavier_uniform_table(ki, num_items, dim),
    }


def dot_scores(user_emb: jax.Array, item_emb: jax.Array) -> jax.Array:
    """Row-wise dot products of [B, d] and [B, d] -> [B]."""
    return jnp.sum(user_emb * item_emb, axis=-1)
