"""Full-ranking evaluation sharded over items, with a merged top-k.

The item table is split in equal row blocks over one mesh axis (padded to a multiple of
the axis size; padded items score -inf). For each chunk of users, every device scores
the chunk against its own items, masks the excluded pairs that fall in its block, takes
its local top-k, and the devices all-gather their k candidates (values and global item
ids: ``P * k`` per user) and take the top-k of those. No device ever holds the whole
item table or a [C, I] score matrix: per device C x I / P scores and C x P x k
candidates.

Same result as ``jaxrec.eval.topk_full_ranking``, exactly: the scores of a (user, item)
pair are the same dot product, and ties still go to the lower item id (candidates are
concatenated in device order, i.e. item-id order, and ``lax.top_k`` prefers the earlier
position among equal values).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.eval.metrics import METRICS
from jaxrec.eval.ranking import check_topk_args, fill_chunks, metrics_of_topk, plan_chunks, prepare_evaluation

__all__ = ["topk_full_ranking_sharded", "evaluate_sharded"]


@functools.lru_cache(maxsize=None)
def _items_padder(mesh: Mesh, axis: str, padded: int):
    sharding = NamedSharding(mesh, P(axis, None))

    def pad(item_emb):
        return jnp.pad(item_emb, ((0, padded - item_emb.shape[0]), (0, 0)))

    return jax.jit(pad, out_shardings=sharding)


@functools.lru_cache(maxsize=None)
def _chunk_fn(mesh: Mesh, axis: str, k: int, num_items: int, rows: int):
    kk = min(k, rows)

    def local(u, items, ex_rows, ex_cols):
        off = jax.lax.axis_index(axis) * rows
        c = u.shape[0]
        scores = jax.lax.dot_general(
            u, items, (((1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST
        )  # [C, rows]
        lc = ex_cols - off
        inb = (lc >= 0) & (lc < rows)
        scores = scores.at[jnp.where(inb, ex_rows, c), jnp.where(inb, lc, 0)].set(-jnp.inf, mode="drop")
        gid = off + jnp.arange(rows)
        scores = jnp.where((gid < num_items)[None, :], scores, -jnp.inf)
        vals, idx = jax.lax.top_k(scores, kk)
        idx = idx + off
        all_vals = jax.lax.all_gather(vals, axis, axis=1, tiled=True)  # [C, P * kk], device order
        all_idx = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
        best, pos = jax.lax.top_k(all_vals, k)
        top = jnp.take_along_axis(all_idx, pos, axis=1)
        return jnp.where(best == -jnp.inf, -1, top).astype(jnp.int32)

    sm = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(axis, None), P(), P()), out_specs=P(), check_vma=False
    )

    @jax.jit
    def chunk(user_emb, items_padded, users, ex_rows, ex_cols):
        u = jnp.take(user_emb, users, axis=0)
        return sm(u, items_padded, ex_rows, ex_cols)

    return chunk


def topk_full_ranking_sharded(
    user_emb,
    item_emb,
    users,
    exclude_users=None,
    exclude_items=None,
    k: int = 50,
    chunk_size: int = 1024,
    *,
    mesh: Mesh,
    axis: str,
) -> np.ndarray:
    """``jaxrec.eval.topk_full_ranking`` with the items split over mesh axis ``axis``.

    Arguments and result as in ``topk_full_ranking`` (int32 [M, k], best first, -1 where a
    user has fewer than k rankable items); ``user_emb``/``item_emb`` may carry any
    sharding on ``mesh`` (or none).
    """
    if axis not in mesh.shape:
        raise ValueError(f"axis: {axis!r} is not an axis of the mesh {dict(mesh.shape)}")
    user_emb, item_emb, users, exclude_users, exclude_items, k, chunk_size = check_topk_args(
        user_emb, item_emb, users, exclude_users, exclude_items, k, chunk_size
    )
    num, num_items = users.shape[0], item_emb.shape[0]
    out = np.empty((num, k), dtype=np.int32)
    if num == 0:
        return out
    nsh = int(mesh.shape[axis])
    rows = math.ceil(num_items / nsh)
    items_padded = _items_padder(mesh, axis, rows * nsh)(item_emb)
    size, users_padded, ex_rows, ex_cols = plan_chunks(users, exclude_users, exclude_items, int(chunk_size))
    fn = _chunk_fn(mesh, axis, k, num_items, rows)
    return fill_chunks(
        out, size, users_padded.shape[0],
        lambda c: fn(user_emb, items_padded, users_padded[c], ex_rows[c], ex_cols[c]),
    )


def evaluate_sharded(
    user_emb,
    item_emb,
    users,
    exclude,
    truth,
    ks: Sequence[int] = (10, 20, 50),
    metrics: Sequence[str] = METRICS,
    chunk_size: int = 1024,
    *,
    mesh: Mesh,
    axis: str,
    per_user: bool = False,
):
    """``jaxrec.eval.evaluate`` with the ranking sharded over items (same arguments, same result)."""
    ks, metrics, truth_users, indptr, truth_items, ex_users, ex_items = prepare_evaluation(
        users, exclude, truth, ks, metrics
    )
    topk = topk_full_ranking_sharded(
        user_emb, item_emb, truth_users, ex_users, ex_items, k=max(ks), chunk_size=chunk_size, mesh=mesh, axis=axis
    )
    return metrics_of_topk(topk, truth_users, indptr, truth_items, ks, metrics, per_user)
