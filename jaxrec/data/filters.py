"""Interaction filters. Each returns ``(Interactions, FilterReport)`` and never drops silently.

The returned interactions are compacted: users and items left without interactions are
dropped from the id maps and the rest renumbered densely (original ids kept).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import DataError
from .interactions import Interactions, compact, stable_argsort_int


@dataclasses.dataclass(frozen=True)
class FilterReport:
    """What one filter removed (counts of interactions, users, items) and how."""

    name: str
    removed_interactions: int
    removed_users: int
    removed_items: int
    detail: str = ""

    def __str__(self) -> str:
        s = (f"{self.name}: removed {self.removed_interactions:,} interactions, "
             f"{self.removed_users:,} users, {self.removed_items:,} items")
        return s + (f" ({self.detail})" if self.detail else "")


def _finish(inter: Interactions, keep: np.ndarray, name: str, detail: str) -> tuple[Interactions, FilterReport]:
    if len(inter) and not keep.any():
        raise DataError(f"filter {name}: no interactions left (of {len(inter):,}); "
                        f"expected a less strict threshold")
    out = compact(inter.take(keep)) if not keep.all() else inter
    rep = FilterReport(name, len(inter) - len(out), inter.num_users - out.num_users,
                       inter.num_items - out.num_items, detail)
    return out, rep


def rating_threshold(inter: Interactions, t: float) -> tuple[Interactions, FilterReport]:
    """Keep interactions with ``rating >= t`` (NaN ratings are dropped)."""
    if inter.rating is None:
        raise DataError(f"filter rating_threshold(t={t}): the interactions have no rating column; "
                        f"expected ratings, or rating_threshold=None")
    keep = inter.rating >= np.float32(t)
    return _finish(inter, keep, f"rating_threshold(t={t})", f"kept rating >= {t}")


def pair_groups(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(order int64 [n], starts int64 [m]): ``order`` sorts the interactions by (user, item)
    pair, ties in input order; the m distinct pairs start at ``starts`` in that order."""
    order = stable_argsort_int(inter.keys(), inter.num_users * inter.num_items)
    ks = inter.keys()[order]
    starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]])) if ks.size else np.zeros(0, np.int64)
    return order, starts


def drop_duplicates(inter: Interactions) -> tuple[Interactions, FilterReport]:
    """Keep one interaction per (user, item): the earliest by timestamp (NaN counts as
    latest), ties and no timestamps -> the first in input order. One integer sort of the
    pair keys (:func:`pair_groups`), then per-group minima with ``np.fmin.reduceat``."""
    n = len(inter)
    how = "earliest timestamp" if inter.timestamp is not None else "first occurrence"
    order, starts = pair_groups(inter)
    if starts.size == n:
        keep = np.ones(n, dtype=bool)
    else:
        pick = starts  # the first of each group in input order
        if inter.timestamp is not None:  # only groups of 2+ rows need their earliest row found
            sizes = np.diff(np.append(starts, n))
            multi = sizes > 1
            pos = np.flatnonzero(np.repeat(multi, sizes))  # places (in pair order) of those groups' rows
            msizes = sizes[multi]
            ts = inter.timestamp[order[pos]]
            gmin = np.repeat(np.fmin.reduceat(ts, np.cumsum(msizes) - msizes), msizes)  # NaN: all NaN
            cand = np.flatnonzero((ts == gmin) | np.isnan(gmin))
            group = np.repeat(np.arange(msizes.size), msizes)[cand]
            first = pos[cand[np.concatenate([[True], group[1:] != group[:-1]])]]
            pick = np.concatenate([starts[~multi], first])
        keep = np.zeros(n, dtype=bool)
        keep[order[pick]] = True
    return _finish(inter, keep, "drop_duplicates", f"kept the {how} of each (user, item) pair")


def repeated_pairs(inter: Interactions) -> FilterReport | None:
    """A report (nothing removed) counting repeated (user, item) pairs, or None when there are none.

    Repeats change the data's meaning for many protocols (a pair can be both a training and a
    held-out interaction); ``Config.dedup`` keeps the earliest of each instead.
    """
    n = len(inter)
    if n < 2:
        return None
    ks = np.sort(inter.keys())
    rep = ks[1:] == ks[:-1]
    extra = int(np.count_nonzero(rep))
    if extra == 0:
        return None
    pairs = int(np.count_nonzero(rep & np.concatenate([[True], ~rep[:-1]])))
    k = int(ks[1:][rep][0])
    ex = f"{inter.user_ids[k // inter.num_items]}, {inter.item_ids[k % inter.num_items]}"
    return FilterReport("repeated_pairs", 0, 0, 0,
                        f"{pairs:,} (user, item) pairs occur more than once ({extra:,} interactions beyond "
                        f"the first of each), e.g. ({ex}); kept: dedup=true keeps the earliest of each")


def count_filter(inter: Interactions, threshold: int, count_min_rating: float | None = None,
                 name: str | None = None) -> tuple[Interactions, FilterReport]:
    """One counting pass (not an iterative k-core): keep an interaction when its user and its
    item each have at least ``threshold`` interactions, counted over the input; with
    ``count_min_rating``, interactions rated below it are not counted (but are kept when
    their user and item pass). Repeated pairs count each time.

    Source: A-LLMRec, ``pre_train/sasrec/data_preprocess.py`` (``countU``/``countP`` over the
    reviews file, then ``if countU[rev] < threshold or countP[asin] < threshold: continue``;
    for Beauty and Toys ``threshold = 4`` and reviews with ``overall < 3`` are skipped in
    the counting pass only).
    """
    if threshold < 0:
        raise ValueError(f"threshold: expected an integer >= 0, got {threshold}")
    counted = np.ones(len(inter), dtype=bool)
    if count_min_rating is not None:
        if inter.rating is None:
            raise DataError(f"count_filter(count_min_rating={count_min_rating}): the interactions have no rating "
                            f"column; expected ratings, or count_min_rating=None")
        counted = inter.rating >= np.float32(count_min_rating)
    du = np.bincount(inter.user[counted], minlength=inter.num_users)
    di = np.bincount(inter.item[counted], minlength=inter.num_items)
    keep = (du[inter.user] >= threshold) & (di[inter.item] >= threshold)
    label = name or f"count_filter(threshold={threshold}" + (
        f", count_min_rating={count_min_rating})" if count_min_rating is not None else ")")
    how = "one counting pass over users and items"
    if count_min_rating is not None:
        how += f"; ratings below {count_min_rating} not counted"
    return _finish(inter, keep, label, how)


def kcore(inter: Interactions, k: int) -> tuple[Interactions, FilterReport]:
    """Iterative k-core: repeatedly drop users and items with fewer than ``k`` interactions
    (repeated pairs count each time) until every remaining user and item has at least ``k``.
    """
    if k < 0:
        raise ValueError(f"k: expected an integer >= 0, got {k}")
    keep = np.ones(len(inter), dtype=bool)
    rounds = 0
    while True:
        du = np.bincount(inter.user[keep], minlength=inter.num_users)
        di = np.bincount(inter.item[keep], minlength=inter.num_items)
        bad = keep & ((du[inter.user] < k) | (di[inter.item] < k))
        if not bad.any():
            break
        keep &= ~bad
        rounds += 1
    return _finish(inter, keep, f"kcore(k={k})", f"{rounds} rounds to the fixpoint")


def keep_items(inter: Interactions, item_mask: np.ndarray, name: str, detail: str = "") -> tuple[Interactions, FilterReport]:
    """Keep interactions whose item has ``item_mask[item]`` True (item_mask: bool [num_items])."""
    item_mask = np.asarray(item_mask, dtype=bool)
    if item_mask.shape != (inter.num_items,):
        raise ValueError(f"item_mask: expected shape ({inter.num_items},), got {item_mask.shape}")
    return _finish(inter, item_mask[inter.item], name, detail)


__all__ = ["FilterReport", "rating_threshold", "drop_duplicates", "pair_groups", "repeated_pairs", "count_filter", "kcore",
           "keep_items"]
