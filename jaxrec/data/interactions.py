"""User-item interactions with dense integer ids.

``Interactions`` holds ``n`` interactions as parallel arrays over dense ids
(``user`` in ``[0, num_users)``, ``item`` in ``[0, num_items)``) and keeps the original
string ids: dense id ``u`` is ``user_ids[u]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """Parallel arrays of ``n`` interactions.

    user: int32 [n]; item: int32 [n]; rating: float32 [n] | None;
    timestamp: int64 [n] (integer timestamps: exact at any size, e.g. nanoseconds since the
    epoch) or float64 [n] (any other numbers) | None; user_ids: str [num_users]; item_ids: str [num_items].
    Time orders sort by timestamp and keep the input order among equal ones (stable).
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    timestamp: np.ndarray | None
    user_ids: np.ndarray
    item_ids: np.ndarray

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        put("user", _as_ids(self.user, "user"))
        put("item", _as_ids(self.item, "item"))
        n = self.user.shape[0]
        if self.item.shape != (n,):
            raise ValueError(f"item: expected shape ({n},) like user, got {self.item.shape}")
        for name, dtype in (("rating", np.float32), ("timestamp", np.float64)):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v)
                v = v.astype(np.int64, copy=False) if name == "timestamp" and v.dtype.kind in "iu" \
                    else v.astype(dtype, copy=False)
                if v.shape != (n,):
                    raise ValueError(f"{name}: expected shape ({n},) like user, got {v.shape}")
                put(name, v)
        for name in ("user_ids", "item_ids"):
            v = np.asarray(self._str(getattr(self, name)))
            if v.ndim != 1:
                raise ValueError(f"{name}: expected a 1-d array of original ids, got shape {v.shape}")
            put(name, v)
        for name, ids, count in (("user", self.user, len(self.user_ids)), ("item", self.item, len(self.item_ids))):
            if n and (ids.min() < 0 or ids.max() >= count):
                raise ValueError(f"{name}: dense ids must lie in [0, {count}) (the length of {name}_ids)")

    @staticmethod
    def _str(v) -> np.ndarray:
        v = np.asarray(v)
        return v if v.dtype.kind == "U" else v.astype(str)

    @property
    def num_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_ids.shape[0])

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def __repr__(self) -> str:
        extra = [k for k in ("rating", "timestamp") if getattr(self, k) is not None]
        return (f"Interactions(n={len(self)}, num_users={self.num_users}, num_items={self.num_items}"
                + (f", with {'+'.join(extra)}" if extra else "") + ")")

    def take(self, mask_or_index) -> "Interactions":
        """Subset by a bool mask [n] or an integer index array; id maps are kept as they are."""
        sel = np.asarray(mask_or_index)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise ValueError(f"mask_or_index: bool mask must have shape ({len(self)},), got {sel.shape}")
        pick = lambda a: None if a is None else a[sel]  # noqa: E731
        return Interactions(self.user[sel], self.item[sel], pick(self.rating), pick(self.timestamp),
                            self.user_ids, self.item_ids)

    def keys(self) -> np.ndarray:
        """int64 [n] pair keys ``user * num_items + item``."""
        return self.user.astype(np.int64) * self.num_items + self.item


def _as_ids(v, name: str) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of dense ids, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected integer dense ids, got dtype {a.dtype}")
    return a.astype(np.int32, copy=False)


def remap_ids(raw_users, raw_items, rating=None, timestamp=None) -> Interactions:
    """Map raw ids (any values, compared as ``str``) to dense int32 ids.

    Dense ids follow the sorted order of the unique original ids (deterministic; when every
    id is a string of ASCII digits they sort numerically, so ml-100k item "1" -> 0, "10" -> 9);
    raw_users, raw_items: [n]; rating, timestamp: [n] or None.
    """
    users, items = np.asarray(raw_users), np.asarray(raw_items)
    if users.ndim != 1 or users.shape != items.shape:
        raise ValueError(f"raw_users, raw_items: expected two 1-d arrays of one length, got "
                         f"{users.shape} and {items.shape}")
    user_ids, user = _dense(users)
    item_ids, item = _dense(items)
    return Interactions(user, item, rating, timestamp, user_ids, item_ids)


def _dense(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids as str [m], dense id of each raw id int32 [n]); all-digit ids sort as numbers."""
    if raw.dtype.kind in "iu" and (raw.size == 0 or raw.min() >= 0):
        uniq, inv = np.unique(raw, return_inverse=True)  # numeric order == the digit-string order below
        return uniq.astype(str), inv.reshape(-1).astype(np.int32)
    return dense_ids(pa.array(raw if raw.dtype.kind == "U" else raw.astype(str), type=pa.string()))


def dense_ids(col) -> tuple[np.ndarray, np.ndarray]:
    """Factorize a pyarrow string column (Array or ChunkedArray, no nulls) into
    (sorted unique ids as str [m], dense id of each row int32 [n]).

    Hashing in pyarrow (``dictionary_encode``), then only the m unique ids are sorted:
    by code point, or, when every id is a string of ASCII digits, by (length, string),
    i.e. numerically (``"2" < "10"``; ``"01"`` and ``"1"`` stay distinct).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        return np.array([], dtype=str), np.zeros(0, dtype=np.int32)
    enc = pc.dictionary_encode(col)
    uniq = enc.dictionary
    if pc.all(pc.match_substring_regex(uniq, r"^[0-9]+$")).as_py():
        order = pc.sort_indices(pa.table({"n": pc.binary_length(uniq), "s": uniq}),
                                sort_keys=[("n", "ascending"), ("s", "ascending")])
    else:
        order = pc.array_sort_indices(uniq)
    order = order.to_numpy()
    rank = np.empty(order.size, dtype=np.int32)
    rank[order] = np.arange(order.size, dtype=np.int32)
    ids = np.asarray(uniq.take(pa.array(order)).to_numpy(zero_copy_only=False), dtype=str)
    return ids, rank[enc.indices.to_numpy()]


def stable_argsort_int(keys: np.ndarray, upper: int | None = None) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative integer keys below ``upper``
    (default ``keys.max() + 1``), int64 [n].

    When ``upper * n < 2**63`` the pairs (key, position) are packed into one int64 and
    sorted by value (numpy's SIMD sort: about 6x faster than a stable argsort at 1e7 rows
    here); the positions are read back from the low bits. Otherwise the plain argsort.
    """
    keys = np.asarray(keys)
    n = keys.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if upper is None:
        upper = int(keys.max()) + 1
    shift = max(1, (n - 1).bit_length())
    if (max(1, upper - 1).bit_length() + shift) > 62:
        return np.argsort(keys, kind="stable").astype(np.int64, copy=False)
    packed = (keys.astype(np.int64) << shift) | np.arange(n, dtype=np.int64)
    packed.sort()
    return packed & ((1 << shift) - 1)


def compact(inter: Interactions) -> Interactions:
    """Drop users/items no interaction refers to and renumber the rest densely (order kept)."""
    used_u = np.bincount(inter.user, minlength=inter.num_users) > 0
    used_i = np.bincount(inter.item, minlength=inter.num_items) > 0
    if used_u.all() and used_i.all():
        return inter
    new_u = np.cumsum(used_u, dtype=np.int64) - 1
    new_i = np.cumsum(used_i, dtype=np.int64) - 1
    return Interactions(new_u[inter.user].astype(np.int32), new_i[inter.item].astype(np.int32),
                        inter.rating, inter.timestamp, inter.user_ids[used_u], inter.item_ids[used_i])
