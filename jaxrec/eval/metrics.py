"""Top-k ranking metrics with RecBole 1.2.1 definitions, vectorized over users.

Inputs are a top-k list per user (``topk_items`` [M, k_max], best first; negative
entries mean "no item" and never count as hits) and the user's ground-truth items in
CSR form (``truth_indptr`` [M+1], ``truth_items`` [nnz]; user ``m`` owns
``truth_items[truth_indptr[m]:truth_indptr[m+1]]``). Every user must have at least one
truth item, and a user's truth items must be distinct.

For a user with truth set T and top-k list r_1..r_k (1-based ranks):

- ``hit@k``       = 1 if any r_j in T else 0
- ``recall@k``    = |{j <= k : r_j in T}| / |T|
- ``precision@k`` = |{j <= k : r_j in T}| / k
- ``mrr@k``       = 1 / (first j with r_j in T) if j <= k else 0
- ``ndcg@k``      = sum_{j <= k, r_j in T} 1/log2(j+1)  /  sum_{j=1}^{min(|T|,k)} 1/log2(j+1)

The reported value is the mean over the M users.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np

from jaxrec.registry import METRICS as METRIC_REGISTRY

__all__ = [
    "METRICS",
    "HitStats",
    "build_truth",
    "hit_matrix",
    "mean_metrics",
    "per_user_metrics",
    "ranking_metrics",
]

#: The built-in metrics (every registered one is in ``jaxrec.registry.METRICS``).
METRICS = ("recall", "ndcg", "hit", "mrr", "precision")


# ----------------------------------------------------------------------------- checks


def _as_int_array(name: str, x, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d integer array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer dtype, got {a.dtype}")
    return a.astype(np.int64, copy=False)


def _check_ks(ks: Sequence[int], k_max: int | None = None) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (int(ks),)
    ks = tuple(int(k) for k in ks)
    if not ks:
        raise ValueError("ks: expected at least one cutoff, got an empty sequence")
    bad = [k for k in ks if k < 1]
    if bad:
        raise ValueError(f"ks: cutoffs must be >= 1, got {bad}")
    if k_max is not None and max(ks) > k_max:
        raise ValueError(
            f"ks: cutoff {max(ks)} exceeds the number of ranked items per user "
            f"(topk_items has k_max={k_max} columns)"
        )
    return ks


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(m.lower() for m in metrics)
    if not metrics:
        raise ValueError("metrics: expected at least one metric name")
    unknown = [m for m in metrics if m not in METRIC_REGISTRY]
    if unknown:
        raise ValueError(f"metrics: unknown metric(s) {unknown}; known: {list(METRIC_REGISTRY.names())}")
    return metrics


def _check_truth(truth_indptr, truth_items, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    indptr = _as_int_array("truth_indptr", truth_indptr, 1)
    items = _as_int_array("truth_items", truth_items, 1)
    if indptr.shape[0] != num_users + 1:
        raise ValueError(
            f"truth_indptr: expected length M+1={num_users + 1} (M = rows of topk_items), "
            f"got {indptr.shape[0]}"
        )
    if indptr[0] != 0 or indptr[-1] != items.shape[0]:
        raise ValueError(
            f"truth_indptr: must start at 0 and end at len(truth_items)={items.shape[0]}, "
            f"got {indptr[0]} .. {indptr[-1]}"
        )
    counts = np.diff(indptr)
    if np.any(counts < 0):
        raise ValueError("truth_indptr: must be non-decreasing")
    if np.any(counts == 0):
        empty = np.flatnonzero(counts == 0)
        raise ValueError(
            f"truth_indptr: every user needs >= 1 truth item; {empty.size} user row(s) have "
            f"none (first rows: {empty[:5].tolist()})"
        )
    if items.size and items.min() < 0:
        raise ValueError(f"truth_items: item ids must be >= 0, got min {items.min()}")
    return indptr, items


# ------------------------------------------------------------------------ hit matrix


def hit_matrix(topk_items, truth_indptr, truth_items) -> np.ndarray:
    """bool [M, k_max]: ``topk_items[m, j]`` is a truth item of row ``m``.

    Membership is tested on int64 keys ``row * base + item`` with a sorted key array and
    ``np.searchsorted`` (no Python loop). Raises ValueError on duplicate truth items of a
    user or duplicate (non-negative) items within a top-k row.
    """
    topk = _as_int_array("topk_items", topk_items, 2)
    num_rows, k_max = topk.shape
    indptr, items = _check_truth(truth_indptr, truth_items, num_rows)

    if k_max > 1:
        s = np.sort(topk, axis=1)
        dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        if dup.any():
            row = int(np.flatnonzero(dup.any(axis=1))[0])
            raise ValueError(f"topk_items: row {row} lists the same item more than once")

    valid = topk >= 0
    base = int(max(items.max(initial=0), topk.max(initial=0))) + 1
    if num_rows * base >= np.iinfo(np.int64).max:  # pragma: no cover - absurd sizes
        raise ValueError("topk_items/truth_items: key space overflows int64")
    rows = np.repeat(np.arange(num_rows, dtype=np.int64), np.diff(indptr))
    truth_keys = np.sort(rows * base + items)
    if truth_keys.size > 1:
        dup = truth_keys[1:] == truth_keys[:-1]
        if dup.any():
            key = int(truth_keys[1:][dup][0])
            raise ValueError(
                f"truth_items: user row {key // base} lists item {key % base} more than once"
            )
    query = np.arange(num_rows, dtype=np.int64)[:, None] * base + np.where(valid, topk, 0)
    pos = np.searchsorted(truth_keys, query)
    pos = np.minimum(pos, truth_keys.size - 1)
    return valid & (truth_keys[pos] == query)


# -------------------------------------------------------------------------- metrics


class HitStats:
    """What every metric reads from a hit matrix, computed once (lazily) per evaluation.

    ``hits`` bool [M, k_max] (``hits[m, j]``: the item at rank j + 1 is a truth item of row m)
    and ``pos_len`` int [M] (truth items per row).
    """

    def __init__(self, hits: np.ndarray, pos_len: np.ndarray):
        self.hits = hits
        self.pos_len = pos_len
        self.k_max = hits.shape[1]

    @functools.cached_property
    def cum_hits(self) -> np.ndarray:
        """int64 [M, k_max]: hits within the top j + 1."""
        return np.cumsum(self.hits, axis=1, dtype=np.int64)

    @functools.cached_property
    def discount(self) -> np.ndarray:
        """float64 [k_max]: 1 / log2(rank + 1)."""
        return 1.0 / np.log2(np.arange(1, self.k_max + 1, dtype=np.float64) + 1.0)

    @functools.cached_property
    def dcg(self) -> np.ndarray:
        return np.cumsum(np.where(self.hits, self.discount, 0.0), axis=1)

    @functools.cached_property
    def idcg_table(self) -> np.ndarray:
        """idcg_table[n - 1] = ideal DCG with n relevant items."""
        return np.cumsum(self.discount)

    @functools.cached_property
    def first_hit(self) -> np.ndarray:
        """int [M]: 0-based rank of the first hit (k_max when none)."""
        return np.where(self.hits.any(axis=1), np.argmax(self.hits, axis=1), self.k_max)


# Registered metrics: name -> ``(stats: HitStats, k) -> float64 [M]`` (RecBole 1.2.1 definitions,
# module docstring). A new metric is one function registered here (or from a plugin).
@METRIC_REGISTRY.register("recall")
def recall(stats: HitStats, k: int) -> np.ndarray:
    return stats.cum_hits[:, k - 1] / stats.pos_len


@METRIC_REGISTRY.register("ndcg")
def ndcg(stats: HitStats, k: int) -> np.ndarray:
    return stats.dcg[:, k - 1] / stats.idcg_table[np.minimum(stats.pos_len, k) - 1]


@METRIC_REGISTRY.register("hit")
def hit(stats: HitStats, k: int) -> np.ndarray:
    return (stats.cum_hits[:, k - 1] > 0).astype(np.float64)


@METRIC_REGISTRY.register("mrr")
def mrr(stats: HitStats, k: int) -> np.ndarray:
    first = stats.first_hit
    return np.where(first < k, 1.0 / (first + 1.0), 0.0)


@METRIC_REGISTRY.register("precision")
def precision(stats: HitStats, k: int) -> np.ndarray:
    return stats.cum_hits[:, k - 1] / float(k)


def _metrics_from_hits(
    hits: np.ndarray, pos_len: np.ndarray, ks: tuple[int, ...], metrics: tuple[str, ...]
) -> dict[str, np.ndarray]:
    stats = HitStats(hits, pos_len)
    return {f"{name}@{k}": METRIC_REGISTRY.get(name, "metrics")(stats, k) for name in metrics for k in ks}


def per_user_metrics(
    topk_items,
    truth_indptr,
    truth_items,
    ks: Sequence[int],
    metrics: Sequence[str] = METRICS,
) -> dict[str, np.ndarray]:
    """Per-user metric values: ``{"recall@10": float64 [M], ...}``.

    Same arguments and definitions as :func:`ranking_metrics`; averaging these arrays
    (possibly concatenated across shards) gives the ranking_metrics values.
    """
    topk = _as_int_array("topk_items", topk_items, 2)
    ks = _check_ks(ks, topk.shape[1])
    metrics = _check_metrics(metrics)
    hits = hit_matrix(topk, truth_indptr, truth_items)
    pos_len = np.diff(np.asarray(truth_indptr, dtype=np.int64))
    return _metrics_from_hits(hits, pos_len, ks, metrics)


def ranking_metrics(
    topk_items,
    truth_indptr,
    truth_items,
    ks: Sequence[int],
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """Mean top-k metrics over users, RecBole 1.2.1 definitions (see module docstring).

    Args:
      topk_items: int [M, k_max], each row the ranked item ids (best first); negative
        entries are padding ("no item") and never hit.
      truth_indptr: int [M+1] CSR offsets into ``truth_items`` (row ``m`` = user row m).
      truth_items: int [nnz] ground-truth item ids, distinct within a user; every user
        must have at least one.
      ks: cutoffs, each in ``[1, k_max]``.
      metrics: subset of ``("recall", "ndcg", "hit", "mrr", "precision")``.

    Returns:
      ``{"recall@10": float, ...}`` ordered by metric then cutoff.
    """
    topk = _as_int_array("topk_items", topk_items, 2)
    if topk.shape[0] == 0:
        raise ValueError("topk_items: no users (M = 0) to average over")
    per_user = per_user_metrics(topk, truth_indptr, truth_items, ks, metrics)
    return {key: float(v.mean()) for key, v in per_user.items()}


def mean_metrics(per_user: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Average per-user arrays (e.g. concatenated shards) into ranking_metrics values."""
    return {key: float(np.mean(v)) for key, v in per_user.items()}


# --------------------------------------------------------------------- truth helpers


def build_truth(users, items) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group (user, item) pairs into the CSR truth triple used by ``evaluate``.

    Returns ``(users_sorted int32 [M], indptr int64 [M+1], items int32 [nnz])`` with
    unique sorted users and each user's items sorted. Raises ValueError on duplicate
    pairs (filtering never drops silently: deduplicate upstream).
    """
    u = _as_int_array("users", users, 1)
    i = _as_int_array("items", items, 1)
    if u.shape != i.shape:
        raise ValueError(f"users/items: lengths differ ({u.shape[0]} vs {i.shape[0]})")
    if u.size and (u.min() < 0 or i.min() < 0):
        raise ValueError("users/items: ids must be >= 0")
    order = np.lexsort((i, u))
    u, i = u[order], i[order]
    if u.size > 1:
        dup = (u[1:] == u[:-1]) & (i[1:] == i[:-1])
        if dup.any():
            j = int(np.flatnonzero(dup)[0]) + 1
            raise ValueError(
                f"users/items: pair (user {u[j]}, item {i[j]}) appears more than once "
                f"({int(dup.sum())} duplicate pair(s) in total)"
            )
    users_sorted, counts = np.unique(u, return_counts=True)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return users_sorted.astype(np.int32), indptr, i.astype(np.int32)
