"""Full ranking over all items: chunked ``user_emb @ item_emb.T``, masking, ``lax.top_k``.

Memory stays bounded: scores exist for one chunk of users at a time ([C, I] floats).
Every chunk runs the same compiled function: the users are padded to a whole number of
chunks of size C, and each chunk's excluded (row, item) pairs are padded to one shared
capacity (a power of two) with rows that point past the chunk, which the scatter drops.
Arrays are passed as jit arguments (never closed over), so nothing is constant-folded.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.eval.metrics import METRICS, _check_ks, _check_metrics, mean_metrics, per_user_metrics, ranking_metrics

__all__ = ["topk_full_ranking", "evaluate", "plan_chunks", "metrics_of_topk"]

_ROW_ALIGN = 8  # chunk sizes are rounded up to a multiple of this (when allowed)


# ----------------------------------------------------------------------------- checks


def _check_embedding(name: str, x) -> jax.Array:
    if isinstance(x, jax.Array):
        chex.assert_rank(x, 2)
    else:
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{name}: expected a 2-d [rows, d] array, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(np.float32)
    return jnp.asarray(x)


def _check_ids(name: str, x, upper: int, upper_name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d integer array, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer dtype, got {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= upper:
        raise ValueError(
            f"{name}: ids must lie in [0, {upper}) ({upper_name}), got range [{lo}, {hi}]"
        )
    return a.astype(np.int64, copy=False)


def _int1d(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name}: expected a 1-d integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# ---------------------------------------------------------------------- chunk planning


def plan_chunks(
    users: np.ndarray,
    exclude_users: np.ndarray,
    exclude_items: np.ndarray,
    chunk_size: int,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``users`` into equal chunks and group the exclusion pairs by chunk.

    Returns ``(C, users_padded int32 [n, C], ex_rows int32 [n, cap], ex_cols int32
    [n, cap])``. ``ex_rows`` are rows within the chunk; padding entries have row ``C``
    (out of bounds, dropped by the scatter). Exclusion pairs whose user is not ranked
    are irrelevant and not included; a user ranked at several positions gets its
    exclusions at each of them. Chunk size C is at most ``chunk_size`` and balanced so
    the last chunk is nearly full (less padding work).
    """
    num = users.shape[0]
    n_chunks = max(1, math.ceil(num / chunk_size))
    per = max(1, math.ceil(num / n_chunks))
    size = min(chunk_size, -(-per // _ROW_ALIGN) * _ROW_ALIGN)
    n_chunks = max(1, math.ceil(num / size))

    users_padded = np.zeros(n_chunks * size, dtype=np.int32)
    users_padded[:num] = users
    users_padded = users_padded.reshape(n_chunks, size)

    # Positions (rows of the output) of each exclusion pair's user.
    table_size = int(max(users.max(initial=-1), exclude_users.max(initial=-1))) + 1
    row_of = np.full(table_size, -1, dtype=np.int64)
    row_of[users] = np.arange(num, dtype=np.int64)
    if np.count_nonzero(row_of >= 0) == num:  # distinct users (common): a table lookup
        pos = row_of[exclude_users]
        keep = pos >= 0
        pos, cols = pos[keep], exclude_items[keep]
    else:  # a user ranked at several rows gets its exclusions at each of them
        order = np.argsort(users, kind="stable")
        sorted_users = users[order]
        lo = np.searchsorted(sorted_users, exclude_users, side="left")
        hi = np.searchsorted(sorted_users, exclude_users, side="right")
        cnt = hi - lo
        offsets = np.arange(int(cnt.sum()), dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pos = order[np.repeat(lo, cnt) + offsets]
        cols = np.repeat(exclude_items, cnt)
    total = pos.shape[0]

    chunk = pos // size
    by_chunk = np.argsort(chunk, kind="stable")
    pos, cols, chunk = pos[by_chunk], cols[by_chunk], chunk[by_chunk]
    counts = np.bincount(chunk, minlength=n_chunks)
    cap = _next_pow2(max(1, int(counts.max(initial=0))))
    starts = np.searchsorted(chunk, np.arange(n_chunks))
    within = np.arange(total, dtype=np.int64) - starts[chunk]

    ex_rows = np.full((n_chunks, cap), size, dtype=np.int32)
    ex_cols = np.zeros((n_chunks, cap), dtype=np.int32)
    ex_rows[chunk, within] = pos - chunk * size
    ex_cols[chunk, within] = cols
    return size, users_padded, ex_rows, ex_cols


# ---------------------------------------------------------------------------- kernel


@partial(jax.jit, static_argnames=("k",))
def _chunk_topk(user_emb, item_emb, users, ex_rows, ex_cols, *, k: int):
    """Top-k item ids int32 [C, k] and their scores [C, k] for one chunk of users; excluded
    pairs score -inf and show as item -1."""
    u = jnp.take(user_emb, users, axis=0)  # [C, d]
    scores = jax.lax.dot_general(
        u,
        item_emb,
        (((1,), (1,)), ((), ())),
        precision=jax.lax.Precision.HIGHEST,
    )  # [C, I]
    scores = scores.at[ex_rows, ex_cols].set(-jnp.inf, mode="drop")
    values, idx = jax.lax.top_k(scores, k)
    return jnp.where(values == -jnp.inf, -1, idx).astype(jnp.int32), values


# ------------------------------------------------------------------------ public API


def check_topk_args(user_emb, item_emb, users, exclude_users, exclude_items, k, chunk_size):
    """Validate ``topk_full_ranking``'s arguments; returns them converted (embeddings as
    arrays, ids as int arrays, an empty exclusion list for ``None``, ints)."""
    user_emb = _check_embedding("user_emb", user_emb)
    item_emb = _check_embedding("item_emb", item_emb)
    num_users, dim = user_emb.shape
    num_items = item_emb.shape[0]
    if item_emb.shape[1] != dim:
        raise ValueError(
            f"item_emb: embedding size {item_emb.shape[1]} does not match user_emb's {dim}"
        )
    k = int(k)
    if not 1 <= k <= num_items:
        raise ValueError(f"k: must lie in [1, num_items={num_items}], got {k}")
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    users = _check_ids("users", users, num_users, "rows of user_emb")
    if (exclude_users is None) != (exclude_items is None):
        raise ValueError("exclude_users/exclude_items: give both or neither")
    if exclude_users is None:
        exclude_users = exclude_items = np.zeros(0, dtype=np.int64)
    exclude_users = _check_ids("exclude_users", exclude_users, num_users, "rows of user_emb")
    exclude_items = _check_ids("exclude_items", exclude_items, num_items, "rows of item_emb")
    if exclude_users.shape != exclude_items.shape:
        raise ValueError(
            f"exclude_users/exclude_items: lengths differ "
            f"({exclude_users.shape[0]} vs {exclude_items.shape[0]})"
        )

    return user_emb, item_emb, users, exclude_users, exclude_items, k, chunk_size


def topk_full_ranking(
    user_emb,
    item_emb,
    users,
    exclude_users=None,
    exclude_items=None,
    k: int = 50,
    chunk_size: int = 1024,
    return_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Top-k items per user by dot-product score over all items.

    Args:
      user_emb: float [U, d] (numpy or jax).
      item_emb: float [I, d] (numpy or jax).
      users: int [M] user ids to rank (rows of the result, in this order).
      exclude_users, exclude_items: int [P] pairs (user, item) whose score is set to
        -inf before top-k (e.g. training interactions). Pairs of users not in ``users``
        are ignored. ``None`` means no exclusions.
      k: items per user, ``1 <= k <= I``.
      chunk_size: at most this many users are scored at once (memory ~ chunk_size * I
        floats).
      return_scores: also return the scores of the returned items.

    Returns:
      int32 [M, k], best first. Ties go to the lower item id. A user with fewer than k
      non-excluded items gets -1 in the remaining slots (excluded items never appear).
      With ``return_scores``: ``(items, scores)``, scores [M, k] in the embeddings' float
      dtype (-inf in the slots of item -1).
    """
    user_emb, item_emb, users, exclude_users, exclude_items, k, chunk_size = check_topk_args(
        user_emb, item_emb, users, exclude_users, exclude_items, k, chunk_size
    )
    num = users.shape[0]
    out = np.empty((num, k), dtype=np.int32)
    if return_scores:
        out = (out, np.empty((num, k), dtype=np.dtype(item_emb.dtype)))
    if num == 0:
        return out
    size, users_padded, ex_rows, ex_cols = plan_chunks(
        users, exclude_users, exclude_items, chunk_size
    )

    def compute(c: int):
        idx, values = _chunk_topk(user_emb, item_emb, users_padded[c], ex_rows[c], ex_cols[c], k=k)
        return (idx, values) if return_scores else idx

    return fill_chunks(out, size, users_padded.shape[0], compute)


def fill_chunks(out, size: int, num_chunks: int, compute):
    """``out[c*size : (c+1)*size] = compute(c)[:rows]`` for each chunk c; returns ``out``.

    ``out`` may be a tuple of arrays, ``compute(c)`` then a tuple of as many results.
    Chunk c+1 is dispatched before chunk c is fetched, so host copies overlap compute.
    """
    outs = out if isinstance(out, tuple) else (out,)

    def store(c: int, res) -> None:
        start = c * size
        stop = min(start + size, outs[0].shape[0])
        for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
            o[start:stop] = np.asarray(r)[: stop - start]

    pending = None
    for c in range(num_chunks):
        res = compute(c)
        if pending is not None:
            store(*pending)
        pending = (c, res)
    if pending is not None:
        store(*pending)
    return out


def prepare_evaluation(users, exclude, truth, ks, metrics):
    """Validate ``evaluate``'s arguments; returns (ks, metrics, truth_users, indptr,
    truth_items, ex_users, ex_items), the truth restricted to ``users`` when given."""
    ks = _check_ks(ks)
    metrics = _check_metrics(metrics)
    if not (isinstance(truth, (tuple, list)) and len(truth) == 3):
        raise ValueError("truth: expected a (users_sorted, indptr, items) triple")
    truth_users = _int1d("truth[0] (users)", truth[0])
    indptr = np.asarray(truth[1])
    truth_items = np.asarray(truth[2])
    if indptr.ndim != 1 or indptr.shape[0] != truth_users.shape[0] + 1:
        raise ValueError(
            f"truth[1] (indptr): expected shape [{truth_users.shape[0] + 1}], got {indptr.shape}"
        )
    if truth_users.size > 1 and np.any(np.diff(truth_users) <= 0):
        raise ValueError("truth[0] (users): must be unique and strictly increasing")
    if truth_users.size == 0:
        raise ValueError("truth: no users to evaluate")

    if users is not None:
        users = _int1d("users", users)
        if users.size == 0:
            raise ValueError("users: no users to evaluate")
        if users.size > 1 and np.unique(users).size != users.size:
            raise ValueError("users: ids must be distinct")
        row = np.minimum(np.searchsorted(truth_users, users), truth_users.size - 1)
        missing = truth_users[row] != users
        if missing.any():
            raise ValueError(
                f"users: {int(missing.sum())} user(s) have no truth items "
                f"(first: {users[missing][:5].tolist()})"
            )
        indptr, truth_items = _csr_take_rows(indptr.astype(np.int64), truth_items, row)
        truth_users = users

    if exclude is None:
        ex_users = ex_items = None
    else:
        if not (isinstance(exclude, (tuple, list)) and len(exclude) == 2):
            raise ValueError("exclude: expected a (users, items) pair of arrays or None")
        ex_users, ex_items = _unmask_truth(exclude, truth_users, indptr, truth_items)

    return ks, metrics, truth_users, indptr, truth_items, ex_users, ex_items


def _unmask_truth(exclude, truth_users, indptr, truth_items):
    """Exclusion pairs minus the truth pairs: an item is never masked out of the ranking it
    is the truth of (with repeated interactions a held-out pair can also be a training
    pair). Dropped pairs are counted in a warning."""
    ex_users, ex_items = (np.asarray(a) for a in exclude)
    if ex_users.shape != ex_items.shape or ex_users.ndim != 1 or ex_users.size == 0 or truth_items.size == 0:
        return ex_users, ex_items  # shapes are checked (and reported) by check_topk_args
    counts = np.diff(np.asarray(indptr, dtype=np.int64))
    t_users = np.repeat(truth_users, counts)
    base = int(max(ex_items.max(initial=0), truth_items.max(initial=0))) + 1
    ex_keys = ex_users.astype(np.int64) * base + ex_items.astype(np.int64)
    clash = np.isin(ex_keys, t_users * base + truth_items.astype(np.int64))
    if clash.any():
        logging.getLogger("jaxrec.eval").warning(
            "evaluate: %d excluded (user, item) pairs are also truth pairs (repeated interactions); "
            "they stay in the ranking", int(clash.sum()))
        ex_users, ex_items = ex_users[~clash], ex_items[~clash]
    return ex_users, ex_items


def evaluate(
    user_emb,
    item_emb,
    users,
    exclude,
    truth,
    ks: Sequence[int] = (10, 20, 50),
    metrics: Sequence[str] = METRICS,
    chunk_size: int = 1024,
    per_user: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """Full-ranking evaluation: top-max(ks) over all items, then ranking metrics.

    Args:
      user_emb, item_emb: float [U, d], [I, d] (numpy or jax).
      users: ``None`` to rank every truth user, or int [M'] ids (distinct, each with
        truth items) to evaluate only those.
      exclude: ``(users, items)`` pairs masked before ranking (training items, and the
        validation item when testing), or ``None``.
      truth: ``(users_sorted [M], indptr [M+1], items [nnz])``: the truth users, unique
        and increasing, with their held-out items in CSR form (see ``build_truth``).
      ks, metrics, chunk_size: as in ``ranking_metrics`` / ``topk_full_ranking``.
      per_user: also return the per-user values the means average (no extra work: the
        means are computed from them).

    Returns:
      ``{"recall@10": float, ...}`` averaged over the evaluated users; with ``per_user``,
      ``(means, per_user)`` where ``per_user`` is ``{"user": int [M] the evaluated user ids,
      "recall@10": float64 [M], ...}`` (``per_user_metrics``).
    """
    ks, metrics, truth_users, indptr, truth_items, ex_users, ex_items = prepare_evaluation(
        users, exclude, truth, ks, metrics
    )
    topk = topk_full_ranking(
        user_emb, item_emb, truth_users, ex_users, ex_items, k=max(ks), chunk_size=chunk_size
    )
    return metrics_of_topk(topk, truth_users, indptr, truth_items, ks, metrics, per_user)


def metrics_of_topk(topk, truth_users, indptr, truth_items, ks, metrics, per_user: bool = False):
    """``ranking_metrics`` of ``topk``, or ``(means, {"user": truth_users, metric: [M]})`` with ``per_user``."""
    if not per_user:
        return ranking_metrics(topk, indptr, truth_items, ks, metrics)
    values = per_user_metrics(topk, indptr, truth_items, ks, metrics)
    return mean_metrics(values), {"user": np.asarray(truth_users), **values}


def _csr_take_rows(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray):
    counts = indptr[rows + 1] - indptr[rows]
    new_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    starts = np.repeat(indptr[rows] - new_indptr[:-1], counts)
    idx = np.arange(new_indptr[-1], dtype=np.int64) + starts
    return new_indptr, values[idx]
