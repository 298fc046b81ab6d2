"""Per-user splits into train / valid / test (all three share the input's id maps).

The order inside a user's group is either time (timestamp, NaN last, ties by input
position: a stable order; ties are counted in the report) or a seeded random permutation.
Integer timestamps (int64, e.g. nanoseconds since the epoch) are compared exactly: they are
never converted to float64, whose 53-bit mantissa would make neighbours beyond 2**53 tie.
``leave_one_out`` needs only each user's last two interactions in that order: it finds
them in O(n) with ``np.maximum.at`` (no sort); ``ratio_split`` groups users with stable
argsorts. Each split keeps its interactions in input order.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..registry import SPLITS
from .errors import DataError
from .interactions import Interactions, stable_argsort_int

log = logging.getLogger("jaxrec.data")
ORDERS = ("random", "time")


@dataclasses.dataclass(frozen=True)
class SplitReport:
    """Sizes of a split and the users that could not be evaluated."""

    name: str
    num_train: int
    num_valid: int
    num_test: int
    unsplit_users: int  # users whose interactions all stayed in train
    detail: str = ""
    time_ties: int = 0  # order="time": interactions with the same timestamp as the user's previous one

    def __str__(self) -> str:
        s = (f"{self.name}: train {self.num_train:,}, valid {self.num_valid:,}, test {self.num_test:,} "
             f"interactions; {self.unsplit_users:,} users kept only in train")
        if self.time_ties:
            s += (f"; {self.time_ties:,} interactions share their user's previous timestamp "
                  f"(ties keep file order)")
        return s + (f" ({self.detail})" if self.detail else "")


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng if rng is not None else 0)
    raise ValueError(f"rng: expected a numpy Generator or an int seed, got {type(rng).__name__}")


def _group(inter: Interactions, order: str, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(perm [n], pos [n], count [n]): ``perm`` sorts by (user, order); for the interaction
    at sorted place j, ``pos[j]`` is its place within its user and ``count[j]`` the user's size.
    The time order is stable: equal timestamps keep the input (file) order."""
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    n = len(inter)
    idx = np.arange(n)
    if order == "time":
        if inter.timestamp is None:
            raise DataError("split order='time': the interactions have no timestamp column; "
                            "expected timestamps, or order='random'")
        first = np.argsort(inter.timestamp, kind="stable")  # == lexsort((idx, timestamp, user)), 2 sorts
    else:
        first = _inverse(_rng(rng).permutation(n))  # == lexsort((permutation, user)), 1 sort
    perm = first[stable_argsort_int(inter.user[first], inter.num_users)]
    counts = np.bincount(inter.user, minlength=inter.num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    us = inter.user[perm]
    pos = idx - starts[us]
    return perm, pos, counts[us]


def _inverse(p: np.ndarray) -> np.ndarray:
    inv = np.empty_like(p)
    inv[p] = np.arange(p.size, dtype=p.dtype)
    return inv


def time_ties(inter: Interactions) -> int:
    """Interactions whose timestamp equals an earlier one of the same user (n minus the
    number of distinct (user, timestamp) pairs; NaN timestamps not counted): in a time order
    these keep the file order, not a time order. One integer sort of (user, time rank)."""
    if inter.timestamp is None or len(inter) < 2:
        return 0
    ok = ~np.isnan(inter.timestamp)
    ts, user = inter.timestamp[ok], inter.user[ok].astype(np.int64)
    if ts.size < 2:
        return 0
    if ts.dtype.kind in "iu":  # exact integers: offsets in int64 (python ints for the bound)
        lo, hi = int(ts.min()), int(ts.max())
        small = (hi - lo + 1) * inter.num_users < 2 ** 62
        offset = lambda: (ts - ts.min()).astype(np.int64)  # noqa: E731
    else:
        lo, hi = float(ts.min()), float(ts.max())
        small = bool(np.isfinite(hi - lo) and (ts == np.floor(ts)).all()
                     and (hi - lo + 1) * inter.num_users < 2.0 ** 62)
        offset = lambda: (ts - lo).astype(np.int64)  # noqa: E731
    if small:
        span, rank = int(hi - lo) + 1, offset()  # whole numbers: the offset is the rank
    else:
        values = np.unique(ts)
        span, rank = values.size, np.searchsorted(values, ts)
    keys = np.sort(user * span + rank)
    return int(np.count_nonzero(keys[1:] == keys[:-1]))


def _last_per_user(user: np.ndarray, keys: list[np.ndarray], active: np.ndarray, num_users: int) -> np.ndarray:
    """For each user, the row (among ``active``, bool [n]) that is last in the lexicographic
    order of ``keys`` (most significant first; the last key must be unique per user); -1 if
    none. O(n) with ``np.maximum.at``: the group's maximum of each key in turn, keeping the
    rows that reach it (the first pass runs on whole arrays, later ones on the few left)."""
    lowest = _lowest(keys[0])
    best = np.full(num_users, lowest, dtype=lowest.dtype)
    np.maximum.at(best, user, np.where(active, keys[0], lowest))
    cand = np.flatnonzero(active & (keys[0] == best[user]))
    for k in keys[1:]:
        lowest = _lowest(k)
        best = np.full(num_users, lowest, dtype=lowest.dtype)
        np.maximum.at(best, user[cand], k[cand])
        cand = cand[k[cand] == best[user[cand]]]
    out = np.full(num_users, -1, dtype=np.int64)
    out[user[cand]] = cand
    return out


def _lowest(key: np.ndarray) -> np.generic:
    """Below every value of ``key``, in its own dtype: -inf for floats, the int64 minimum for
    integers (an integer key stays int64: exact beyond 2**53)."""
    if key.dtype.kind in "iu":
        return np.int64(np.iinfo(np.int64).min)
    return np.float64(-np.inf)


def _take3(inter, perm, part):
    out = []
    for p in range(3):
        out.append(inter.take(np.sort(perm[part == p])))
    return out


def leave_one_out(inter: Interactions, order: str = "random", rng=None):
    """Per user: last interaction (in ``order``) -> test, second last -> valid, rest -> train.

    Users with fewer than 3 interactions keep everything in train (they cannot be
    evaluated); they are counted in the report and named in a warning.
    Returns ``(train, valid, test, SplitReport)``.
    """
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    n = len(inter)
    if order == "time":
        if inter.timestamp is None:
            raise DataError("split order='time': the interactions have no timestamp column; "
                            "expected timestamps, or order='random'")
        idx = np.arange(n, dtype=np.int64)  # ties: the later in the input is the later
        ts = inter.timestamp  # int64 stays int64 (exact), floats stay floats
        late = np.isnan(ts)  # NaN sorts after every number (as np.sort / np.lexsort do)
        keys = ([late.astype(np.int64), np.where(late, 0.0, ts)] if late.any() else [ts]) + [idx]
    else:
        keys = [_rng(rng).permutation(n).astype(np.int64)]  # the draw the sorted version used
    counts = np.bincount(inter.user, minlength=inter.num_users)
    active = (counts >= 3)[inter.user]
    test_row = _last_per_user(inter.user, keys, active, inter.num_users)
    test_row = test_row[test_row >= 0]
    is_test = np.zeros(n, dtype=bool)
    is_test[test_row] = True
    active[test_row] = False
    valid_row = _last_per_user(inter.user, keys, active, inter.num_users)
    is_valid = np.zeros(n, dtype=bool)
    is_valid[valid_row[valid_row >= 0]] = True
    train, valid, test = (inter.take(~(is_test | is_valid)), inter.take(is_valid), inter.take(is_test))
    counts = np.bincount(inter.user, minlength=inter.num_users)
    short = np.flatnonzero((counts > 0) & (counts < 3))
    if len(valid) == 0:
        raise DataError(f"leave_one_out(order={order!r}): no user has 3 or more interactions "
                        f"({inter.num_users:,} users, {len(inter):,} interactions); expected at least one "
                        f"user with train, valid and test interactions")
    detail = ""
    if len(short):
        ex = ", ".join(inter.user_ids[short[:10]])
        detail = f"users with < 3 interactions, not evaluated: {ex}{', ...' if len(short) > 10 else ''}"
        log.warning("leave_one_out: %d users have fewer than 3 interactions and stay in train only "
                    "(they cannot be evaluated): %s", len(short), ex + (", ..." if len(short) > 10 else ""))
    rep = SplitReport(f"leave_one_out(order={order})", len(train), len(valid), len(test), len(short), detail,
                      time_ties(inter) if order == "time" else 0)
    return train, valid, test, rep


def ratio_split(inter: Interactions, ratios=(0.8, 0.1, 0.1), order: str = "random", rng=None):
    """Per user, the first ``r0`` share of the user's interactions (in ``order``) -> train, the
    next ``r1`` -> valid, the rest -> test, RecBole-style: valid/test sizes are
    ``floor(r * count)``, train takes the remainder, and while train keeps more than one
    interaction, a part with ``0 < r * count < 1`` gets one (test first).
    Returns ``(train, valid, test, SplitReport)``.
    """
    r = np.asarray(ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"ratios: expected three non-negative numbers (train, valid, test), got {ratios}")
    r = r / r.sum()
    perm, pos, count = _group(inter, order, rng)
    users = np.unique(inter.user)
    tot = np.bincount(inter.user, minlength=inter.num_users)[users].astype(np.float64)
    cnt = np.floor(r[None, :] * tot[:, None]).astype(np.int64)  # [U', 3]
    cnt[:, 0] = tot.astype(np.int64) - cnt[:, 1:].sum(1)
    for j in (2, 1):  # RecBole: make small non-zero parts non-empty while train keeps > 1
        bump = (cnt[:, 0] > 1) & (r[j] * tot > 0) & (r[j] * tot < 1)
        cnt[bump, j] += 1
        cnt[bump, 0] -= 1
    per_user = np.zeros((inter.num_users, 3), dtype=np.int64)
    per_user[users] = cnt
    us = inter.user[perm]
    b1 = per_user[us, 0]
    b2 = b1 + per_user[us, 1]
    part = np.where(pos < b1, 0, np.where(pos < b2, 1, 2)).astype(np.int8)
    train, valid, test = _take3(inter, perm, part)
    no_eval = int(((cnt[:, 1] == 0) & (cnt[:, 2] == 0)).sum())
    rep = SplitReport(f"ratio_split(ratios={tuple(float(x) for x in ratios)}, order={order})",
                      len(train), len(valid), len(test), no_eval, "",
                      time_ties(inter) if order == "time" else 0)
    return train, valid, test, rep


# Registered splits (``config.split``): ``(inter, config, rng) -> (train, valid, test, SplitReport)``.
SPLITS.register("loo_random", lambda inter, config, rng: leave_one_out(inter, "random", rng))
SPLITS.register("loo_time", lambda inter, config, rng: leave_one_out(inter, "time", rng))
SPLITS.register("ratio", lambda inter, config, rng: ratio_split(inter, config.split_ratios, "random", rng))

__all__ = ["SplitReport", "leave_one_out", "ratio_split", "time_ties"]
