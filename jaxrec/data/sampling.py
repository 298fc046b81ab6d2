"""Uniform negative sampling that never returns a positive of the user."""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class PositiveIndex:
    """Membership index of (user, item) positives.

    keys: int64 [P] sorted unique ``user * num_items + item``; counts: int64 [num_users]
    distinct positives per user; indptr: int64 [num_users + 1] (user u's keys are
    ``keys[indptr[u]:indptr[u+1]]``); gaps: int64 [P] ``user * num_items + item - rank``
    (rank of the item among the user's positives), used to pick the r-th non-positive;
    user_ids: str [num_users] original ids (dense id u is ``user_ids[u]``) or None, used to
    name users in errors.
    """

    keys: np.ndarray
    counts: np.ndarray
    indptr: np.ndarray
    gaps: np.ndarray
    num_users: int
    num_items: int
    user_ids: np.ndarray | None = None

    @classmethod
    def build(cls, user, item, num_items: int, num_users: int | None = None, user_ids=None) -> "PositiveIndex":
        """From parallel int arrays user [n], item [n] (repeats are fine); ``user_ids``
        (str [num_users], optional) are the original ids errors name."""
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        if user.ndim != 1 or user.shape != item.shape:
            raise ValueError(f"user, item: expected two 1-d arrays of one length, got {user.shape}, {item.shape}")
        if num_items < 1:
            raise ValueError(f"num_items: expected >= 1, got {num_items}")
        if item.size and (item.min() < 0 or item.max() >= num_items):
            raise ValueError(f"item: ids must lie in [0, num_items={num_items})")
        if num_users is None:
            num_users = int(user.max()) + 1 if user.size else 0
        if user.size and (user.min() < 0 or user.max() >= num_users):
            raise ValueError(f"user: ids must lie in [0, num_users={num_users})")
        if user_ids is not None:
            user_ids = np.asarray(user_ids)
            if user_ids.shape != (num_users,):
                raise ValueError(f"user_ids: expected shape ({num_users},) (one original id per dense user), "
                                 f"got {user_ids.shape}")
        keys = np.unique(user * num_items + item)
        ku = keys // num_items
        counts = np.bincount(ku, minlength=num_users).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rank = np.arange(keys.size, dtype=np.int64) - indptr[ku]
        return cls(keys, counts, indptr, keys - rank, int(num_users), int(num_items), user_ids)

    @classmethod
    def from_interactions(cls, inter) -> "PositiveIndex":
        """The positives of an :class:`~jaxrec.data.Interactions` (e.g. ``dataset.train``),
        carrying its original user ids for error messages."""
        return cls.build(inter.user, inter.item, inter.num_items, inter.num_users, inter.user_ids)

    def describe_user(self, u: int) -> str:
        """``"user 'A1B2' (dense id 0)"``, or ``"user 0"`` (the dense id) without original ids."""
        if self.user_ids is not None:
            return f"user {str(self.user_ids[u])!r} (dense id {u})"
        return f"user {u}"

    def contains(self, users, items) -> np.ndarray:
        """bool array (shape of broadcast users, items): is (user, item) a positive?"""
        k = np.asarray(users, dtype=np.int64) * self.num_items + np.asarray(items, dtype=np.int64)
        if self.keys.size == 0:
            return np.zeros(k.shape, dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, k), self.keys.size - 1)
        return self.keys[at] == k


def sample_negatives(rng: np.random.Generator, index: PositiveIndex, users, num_negatives: int = 1,
                     max_rounds: int = 16) -> np.ndarray:
    """Uniform non-positive items for each user: int32 [B] (or [B, n] when n > 1).

    Draws uniformly over all items and redraws only the collisions, in vectorized rounds;
    after ``max_rounds`` the few left are drawn exactly (r-th non-positive of the user), so
    the result is uniform over the user's non-positives and never a positive.
    Raises DataError if a user in ``users`` has interacted with every item.
    """
    users = np.asarray(users)
    if users.ndim != 1 or (users.size and users.dtype.kind not in "iu"):
        raise ValueError(f"users: expected a 1-d integer array, got shape {users.shape} dtype {users.dtype}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives: expected >= 1, got {num_negatives}")
    users = users.astype(np.int64)
    if users.size and (users.min() < 0 or users.max() >= index.num_users):
        raise ValueError(f"users: ids must lie in [0, num_users={index.num_users})")
    full = index.counts[users] >= index.num_items
    if full.any():
        n_full = np.unique(users[full]).size
        raise DataError(f"sample_negatives: {index.describe_user(int(users[full][0]))} has interacted with all "
                        f"{index.num_items} items" + (f" ({n_full} such users in this batch)" if n_full > 1 else "")
                        + "; expected at least one non-positive item per user"
                        + ("" if index.user_ids is not None else
                           " (dense ids: PositiveIndex.from_interactions(train) names the original ids)"))
    u = np.repeat(users, num_negatives)
    out = rng.integers(0, index.num_items, size=u.size, dtype=np.int64)
    todo = np.flatnonzero(index.contains(u, out))
    for _ in range(max_rounds):
        if todo.size == 0:
            break
        out[todo] = rng.integers(0, index.num_items, size=todo.size, dtype=np.int64)
        todo = todo[index.contains(u[todo], out[todo])]
    if todo.size:
        uu = u[todo]
        r = rng.integers(0, index.num_items - index.counts[uu], dtype=np.int64)
        # the r-th non-positive is r + (number of positives p_j with p_j - j <= r)
        j = np.searchsorted(index.gaps, uu * index.num_items + r, side="right") - index.indptr[uu]
        out[todo] = r + j
    out = out.astype(np.int32)
    return out if num_negatives == 1 else out.reshape(users.size, num_negatives)


__all__ = ["PositiveIndex", "sample_negatives"]
