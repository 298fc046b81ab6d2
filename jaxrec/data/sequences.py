"""Per-user item sequences for sequential recommenders (SASRec; A-LLMRec, DESIGN.md 2.2).

A ``Dataset`` split by ``Config(split="loo_time")`` (leave-one-out by time: per user the last
interaction is the test item, the second last the validation item, the rest training; ties in
time keep file order) already holds everything a sequential model needs; this module orders
each user's training interactions by time and turns them into fixed-shape int32 arrays:

- ``histories(data, stage, max_len)`` -> [U, L]: what a user's representation is computed
  from at ``stage`` (``"valid"``: the training sequence; ``"test"``: training sequence + the
  validation item, as SASRec.pytorch's ``evaluate`` does, ``utils.py``);
- ``training_windows(data, max_len)`` + ``window_batches(rng, windows, batch_size)``: the
  training inputs SASRec.pytorch's ``WarpSampler`` builds (``utils.py``, ``sample_function``):
  input = train[:-1], target ``pos`` = train[1:], one negative per non-padding position that
  is never one of the user's training items.

Id convention: dense item id ``i`` is stored as ``i + 1``; 0 is padding (SASRec's item table
has a padding row 0). Sequences keep the most recent ``max_len`` items and are LEFT-padded.
Users with fewer than 3 interactions keep everything in train (``leave_one_out``): they give
training windows when they have 2, are never evaluated, and are counted in the report.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

import numpy as np

from .dataset import Dataset
from .errors import DataError
from .sampling import PositiveIndex, sample_negatives

log = logging.getLogger("jaxrec.data")
STAGES = ("valid", "test")
PAD = 0


@dataclasses.dataclass(frozen=True)
class SequenceReport:
    """What building the sequences found (printable; nothing is dropped silently)."""

    num_users: int
    evaluable_users: int  # users with a validation and a test item
    short_users: int  # users with 1-2 interactions: training only, not evaluated
    window_users: int  # users with >= 2 training items (they give training windows)
    tied_timestamps: int  # interactions with the same timestamp as the user's previous one (file order kept)

    def __str__(self) -> str:
        return (f"sequences: {self.num_users:,} users, {self.evaluable_users:,} evaluated; "
                f"{self.short_users:,} users with < 3 interactions not evaluated; "
                f"{self.window_users:,} users give training windows; "
                f"{self.tied_timestamps:,} interactions tie in time with the user's previous one "
                f"(file order kept)")


@dataclasses.dataclass(frozen=True, eq=False)
class Sequences:
    """Time-ordered training sequences in CSR form plus the held-out items.

    indptr: int64 [U+1]; items: int32 [n_train] dense item ids, user ``u``'s training items
    oldest first are ``items[indptr[u]:indptr[u+1]]``; valid_item, test_item: int32 [U]
    (dense id, -1 = none); user_ids: original user ids [U]; num_items: I.
    """

    indptr: np.ndarray
    items: np.ndarray
    valid_item: np.ndarray
    test_item: np.ndarray
    user_ids: np.ndarray
    num_items: int
    report: SequenceReport

    @property
    def num_users(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def lengths(self) -> np.ndarray:
        """int64 [U]: number of training items per user."""
        return np.diff(self.indptr)

    def evaluated_users(self, stage: str) -> np.ndarray:
        """int32 [M] sorted users with a held-out item at ``stage``."""
        _check_stage(stage)
        held = self.valid_item if stage == "valid" else self.test_item
        return np.flatnonzero(held >= 0).astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceWindows:
    """SASRec training windows, one row per user with >= 2 training items.

    user: int32 [N] dense user ids; seq, pos: int32 [N, L] item ids + 1, left-padded with 0
    (``pos[n, t]`` is the item following ``seq[n, t]``); positives: the users' training items
    (negatives are never drawn from them).
    """

    user: np.ndarray
    seq: np.ndarray
    pos: np.ndarray
    positives: PositiveIndex

    def __len__(self) -> int:
        return int(self.user.shape[0])


# --------------------------------------------------------------------------------------
def check_max_len(max_len) -> int:
    """``max_len`` as an int >= 1, else ValueError naming it."""
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len: expected an integer >= 1 (the longest history kept), got {max_len!r}")
    return int(max_len)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")


def held_out_items(dataset: Dataset, stage: str) -> np.ndarray:
    """int32 [U]: every user's held-out item at ``stage`` (dense id; -1 = none).

    Raises DataError naming the user if one holds more than one (not a leave-one-out split).
    """
    _check_stage(stage)
    part = dataset.valid if stage == "valid" else dataset.test
    counts = np.bincount(part.user, minlength=dataset.num_users)
    if (counts > 1).any():
        u = int(np.flatnonzero(counts > 1)[0])
        raise DataError(f"{dataset.source}: dataset.{stage} holds {int(counts[u])} interactions of user "
                        f"{str(dataset.user_ids[u])!r}; expected at most one per user (a leave-one-out split, "
                        f"Config(split='loo_time'))")
    item = np.full(dataset.num_users, -1, dtype=np.int32)
    item[part.user] = part.item
    return item


def _no_time(n: int, like: np.ndarray, low: bool = False) -> np.ndarray:
    """[n] in ``like``'s dtype (int64 timestamps stay exact): NaN for floats, or the lowest
    value when ``low`` (-inf / the int64 minimum). Integers without ``low`` also get the
    minimum: it only fills users a mask leaves out."""
    if like.dtype.kind in "iu":
        return np.full(n, np.iinfo(np.int64).min, np.int64)
    return np.full(n, -np.inf if low else np.nan)


def _held_out_time(dataset: Dataset, stage: str) -> np.ndarray:
    part = dataset.valid if stage == "valid" else dataset.test
    ts = _no_time(dataset.num_users, part.timestamp)
    ts[part.user] = part.timestamp
    return ts


def user_sequences(dataset: Dataset, log_report: bool = True) -> Sequences:
    """Order every user's training interactions by time (ties: file order) and check the split.

    Requires timestamps and a leave-one-out split by time: at most one validation and one
    test interaction per user, not earlier than the user's training interactions and the
    validation one. Raises DataError naming the source and the first offending user
    otherwise, or when no user has 3 interactions (nothing to evaluate). The report is logged
    (WARNING when users are left unevaluated or timestamps tie) unless ``log_report`` is False.
    """
    parts = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
    for name, part in parts.items():
        if part.timestamp is None:
            raise DataError(f"{dataset.source}: dataset.{name} has no timestamp column (field 'timestamp'); "
                            f"expected timestamps to order the sequences by time")
    tr = dataset.train
    order = np.lexsort((np.arange(len(tr)), tr.timestamp, tr.user))  # time, ties in file order
    items = tr.item[order].astype(np.int32)
    counts = np.bincount(tr.user, minlength=dataset.num_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    valid, vts = held_out_items(dataset, "valid"), _held_out_time(dataset, "valid")
    test, tts = held_out_items(dataset, "test"), _held_out_time(dataset, "test")
    has_v, has_t = valid >= 0, test >= 0
    last_tr = _no_time(dataset.num_users, tr.timestamp, low=True)
    np.maximum.at(last_tr, tr.user, tr.timestamp)
    bad = (has_v != has_t) | (has_v & (vts < last_tr)) | (has_t & has_v & (tts < vts))
    if bad.any():
        u = int(np.flatnonzero(bad)[0])
        raise DataError(f"{dataset.source}: user {str(dataset.user_ids[u])!r}: the validation / test interactions "
                        f"are not the user's last two by time; expected a leave-one-out split by time "
                        f"(Config(split='loo_time'))")
    if not has_t.any():
        raise DataError(f"{dataset.source}: no user has 3 or more interactions ({dataset.num_users:,} users); "
                        f"expected at least one user with a training, a validation and a test item")
    # ties: one timestamp per user sequence train..valid..test, compared with the previous one
    all_u = np.concatenate([tr.user[order], np.flatnonzero(has_v), np.flatnonzero(has_t)])
    all_t = np.concatenate([tr.timestamp[order], vts[has_v], tts[has_t]])
    rank = np.concatenate([np.zeros(len(tr)), np.ones(int(has_v.sum())), np.full(int(has_t.sum()), 2.0)])
    o = np.lexsort((rank, all_t, all_u))
    ties = int(((all_u[o][1:] == all_u[o][:-1]) & (all_t[o][1:] == all_t[o][:-1])).sum())
    total = counts + has_v + has_t
    rep = SequenceReport(
        num_users=dataset.num_users, evaluable_users=int(has_t.sum()),
        short_users=int(((total > 0) & ~has_t).sum()), window_users=int((counts >= 2).sum()),
        tied_timestamps=ties)
    if log_report and (rep.short_users or ties):
        log.warning("%s", rep)
    return Sequences(indptr, items, valid, test, dataset.user_ids, dataset.num_items, rep)


def _as_sequences(data) -> Sequences:
    if isinstance(data, Sequences):
        return data
    if isinstance(data, Dataset):
        return user_sequences(data)
    raise ValueError(f"data: expected a jaxrec.data.Dataset or Sequences, got {type(data).__name__}")


def left_pad(indptr: np.ndarray, values: np.ndarray, max_len: int, what: str | None = "sequences") -> np.ndarray:
    """int32 [R, max_len]: row r holds the last ``max_len`` of ``values[indptr[r]:indptr[r+1]] + 1``,
    right-aligned, 0 before them (dense item ids shifted by one; 0 is padding). How many rows
    lost older items is logged (INFO) under ``what`` (not at all with ``what=None``)."""
    max_len = check_max_len(max_len)
    rows = len(indptr) - 1
    lengths = np.diff(indptr)
    cut = int((lengths > max_len).sum())
    if cut and what is not None:
        log.info("%s: %d of %d rows keep only their most recent %d items (%d older items left out)", what, cut,
                 rows, max_len, int(np.maximum(lengths - max_len, 0).sum()))
    out = np.zeros((rows, max_len), dtype=np.int32)
    row = np.repeat(np.arange(rows), lengths)
    col = np.arange(len(values)) - np.repeat(indptr[1:], lengths) + max_len  # last item -> column L-1
    keep = col >= 0
    out[row[keep], col[keep]] = values[keep].astype(np.int32) + 1
    return out


def histories(data, stage: str, max_len: int = 50) -> np.ndarray:
    """int32 [U, max_len]: every user's history at ``stage``, item ids + 1, left-padded with 0.

    ``"valid"``: the training sequence; ``"test"``: training sequence + the validation item
    (SASRec.pytorch ``utils.py`` ``evaluate``: ``seq[-1] = valid[u][0]`` then the training
    items); ``"serve"``: training sequence + the validation item + the test item (everything
    known, for recommending after all of it). ``data``: a ``Dataset`` or the ``Sequences``
    built from it (reuse them to avoid re-sorting). Rows of users without evaluation are
    filled all the same.
    """
    max_len = check_max_len(max_len)
    if stage != "serve":
        _check_stage(stage)
    s = _as_sequences(data)
    indptr, items = s.indptr, s.items
    held = {"valid": (), "test": (s.valid_item,), "serve": (s.valid_item, s.test_item)}[stage]
    for extra in held:  # appended after each user's sequence so far
        has = extra >= 0
        items = np.insert(items, indptr[1:][has], extra[has])
        indptr = np.concatenate([[0], np.cumsum(np.diff(indptr) + has)]).astype(np.int64)
    return left_pad(indptr, items, max_len, f"histories({stage!r})")


def training_windows(data, max_len: int = 50) -> SequenceWindows:
    """SASRec.pytorch's training inputs for every user with >= 2 training items.

    For training items t_1..t_n (by time): ``seq`` = t_1..t_{n-1} and ``pos`` = t_2..t_n,
    the last ``max_len`` of each, left-padded (ids + 1). Raises DataError naming the user's
    original id if a window user has interacted with every item (no negative exists), and
    when no user has 2 training items.
    """
    max_len = check_max_len(max_len)
    s = _as_sequences(data)
    n = s.lengths
    users = np.flatnonzero(n >= 2)
    if users.size == 0:
        raise DataError("training_windows: no user has 2 or more training interactions; expected at least "
                        "one (SASRec learns from item-to-next-item pairs)")
    owner = np.repeat(np.arange(s.num_users), n)
    first = np.r_[True, owner[1:] != owner[:-1]] if owner.size else np.zeros(0, bool)
    last = np.r_[owner[1:] != owner[:-1], True] if owner.size else np.zeros(0, bool)
    w_indptr = np.concatenate([[0], np.cumsum(n[users] - 1)]).astype(np.int64)
    inputs = s.items[~last & np.isin(owner, users)]
    targets = s.items[~first & np.isin(owner, users)]
    positives = PositiveIndex.build(owner, s.items, s.num_items, s.num_users)
    full = positives.counts[users] >= s.num_items
    if full.any():
        bad = s.user_ids[users[full]]
        raise DataError(f"training_windows: user {str(bad[0])!r} ({int(full.sum())} such users) has interacted with "
                        f"all {s.num_items} items in training; expected at least one item left to sample a "
                        f"negative from")
    return SequenceWindows(users.astype(np.int32), left_pad(w_indptr, inputs, max_len, "training_windows"),
                           left_pad(w_indptr, targets, max_len, None), positives)


def sample_window_negatives(rng: np.random.Generator, windows: SequenceWindows, rows=None) -> np.ndarray:
    """int32 [len(rows), L]: one uniform negative (id + 1) at each non-padding position, 0 elsewhere.

    A negative is never one of the row user's training items (SASRec.pytorch ``random_neq``
    with ``ts = set(user_train[uid])``); vectorized over all positions at once.
    """
    rows = np.arange(len(windows)) if rows is None else np.asarray(rows)
    pos = windows.pos[rows]
    where = pos != PAD
    users = np.broadcast_to(windows.user[rows][:, None], pos.shape)[where]
    neg = np.zeros(pos.shape, dtype=np.int32)
    neg[where] = sample_negatives(rng, windows.positives, users) + 1
    return neg


def window_batches(rng: np.random.Generator, windows: SequenceWindows, batch_size: int = 128,
                   shuffle: bool = True, pad: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of batches ``{"user": int32 [B], "seq", "pos", "neg": int32 [B, L]}`` (0 = padding).

    Every window once per epoch in a ``rng`` permutation (as SASRec.pytorch's sampler with
    shuffled user ids), negatives drawn fresh for the epoch; the last batch may be smaller,
    unless ``pad``: then it is completed to ``batch_size`` rows with padding rows (``user``
    -1, ``seq``/``pos``/``neg`` all 0), which carry no loss (no position has ``pos != 0``), so
    every batch has one shape (one compilation of a jitted step).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = rng.permutation(len(windows)) if shuffle else np.arange(len(windows))
    neg = sample_window_negatives(rng, windows, order)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = {"user": windows.user[rows], "seq": windows.seq[rows], "pos": windows.pos[rows],
                 "neg": neg[start:start + batch_size]}
        short = batch_size - len(rows)
        if pad and short:
            batch = {k: np.concatenate([v, np.full((short, *v.shape[1:]), -1 if k == "user" else PAD, v.dtype)])
                     for k, v in batch.items()}
        yield batch


__all__ = ["SequenceReport", "Sequences", "SequenceWindows", "user_sequences", "held_out_items", "histories",
           "left_pad", "training_windows", "sample_window_negatives", "window_batches", "check_max_len"]
