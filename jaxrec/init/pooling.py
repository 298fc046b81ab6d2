"""User table from item table: each user's mean over their training items (LLMInit).

``user_table_from_items(item_table [I, K], user int32 [n], item int32 [n], num_users)
-> (user_table [U, K], num_users_without_items)``: the degree-normalized sum
``D_u^-1 sum_{(u, i) in train} item_table[i]``; users with no training item get a zero row
and are counted. Jitted ``jax.ops.segment_sum`` over chunks of interactions (a
``lax.scan``), so gathered rows never exceed ``chunk`` x K floats: 10^7 interactions with
K = 128 take a few seconds on 2 CPU cores (benchmarks/pooling.py). Degrees are counted on
the host (``np.bincount``); interactions already sorted by user (checked in O(n)) are
passed as ``indices_are_sorted``. Repeated (u, i) pairs count as many times as they appear.
"""

from __future__ import annotations

import logging
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger("jaxrec.init")


@partial(jax.jit, static_argnames=("num_users", "chunk", "is_sorted"))
def _pool(item_table, user, item, degree, num_users: int, chunk: int, is_sorted: bool = False):
    """Sum rows per user in ``chunk``-sized steps, then divide by ``degree`` [U] (>= 1).

    ``user``/``item`` are padded to a multiple of ``chunk`` with user id ``num_users``
    (dropped by segment_sum). XLA turns ``acc + segment_sum`` into an in-place scatter-add.
    """
    dim = item_table.shape[1]
    users = user.reshape(-1, chunk)
    items = item.reshape(-1, chunk)

    def body(acc, xs):
        u, i = xs
        rows = item_table[i]
        return acc + jax.ops.segment_sum(rows, u, num_segments=num_users, indices_are_sorted=is_sorted), None

    acc, _ = jax.lax.scan(body, jnp.zeros((num_users, dim), item_table.dtype), (users, items))
    return acc / degree[:, None].astype(acc.dtype)


def default_chunk(n: int, dim: int) -> int:
    """Interactions per scan step: ~2^27 gathered floats (512 MiB f32), at most ``n``."""
    target = max(1 << 14, (1 << 27) // max(dim, 1))
    return int(max(1, min(n, target)))


def user_table_from_items(
    item_table,
    user,
    item,
    num_users: int,
    chunk: int | None = None,
) -> tuple[jax.Array, int]:
    """Mean of each user's training items' rows -> (float [num_users, K], users without items)."""
    item_table = jnp.asarray(item_table)
    if item_table.ndim != 2:
        raise ValueError(f"item_table: expected [items, K], got shape {item_table.shape}")
    user = np.asarray(user)
    item = np.asarray(item)
    if user.ndim != 1 or user.shape != item.shape:
        raise ValueError(f"user, item: expected two 1-D arrays of one length, got {user.shape} and {item.shape}")
    num_items = item_table.shape[0]
    if user.size:
        if user.min() < 0 or user.max() >= num_users:
            raise ValueError(f"user: ids must lie in [0, {num_users}), got range [{user.min()}, {user.max()}]")
        if item.min() < 0 or item.max() >= num_items:
            raise ValueError(
                f"item: ids must lie in [0, {num_items}) (item_table rows), got [{item.min()}, {item.max()}]"
            )
    n = user.size
    chunk = chunk or default_chunk(n, item_table.shape[1])
    padded = max(1, -(-n // chunk)) * chunk
    u = np.full(padded, num_users, dtype=np.int32)
    i = np.zeros(padded, dtype=np.int32)
    u[:n] = user
    i[:n] = item
    degree = np.bincount(user, minlength=num_users)
    empty = int(np.sum(degree == 0))
    is_sorted = bool(n < 2 or np.all(user[1:] >= user[:-1]))  # padding (id num_users) keeps it sorted
    table = _pool(
        item_table,
        jnp.asarray(u),
        jnp.asarray(i),
        jnp.asarray(np.maximum(degree, 1), np.float32),
        int(num_users),
        int(chunk),
        is_sorted,
    )
    if empty:
        log.info("user pooling: %d of %d users have no training items; their rows are zero", empty, num_users)
    return table, empty
