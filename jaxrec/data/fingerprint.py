"""A dataset's identity: sizes and a hash of its split, recorded by every run and cache."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def dataset_fingerprint(dataset: Any) -> dict:
    """``{name, num_users, num_items, num_train, sha256}``: sizes and the first 16 hex digits of
    the sha256 of the train / valid / test (user, item) pairs (int32, in split order)."""
    h = hashlib.sha256()
    for inter in (dataset.train, dataset.valid, dataset.test):
        h.update(np.ascontiguousarray(inter.user, np.int32).tobytes())
        h.update(np.ascontiguousarray(inter.item, np.int32).tobytes())
    return {
        "name": dataset.name,
        "num_users": int(dataset.num_users),
        "num_items": int(dataset.num_items),
        "num_train": int(len(dataset.train)),
        "sha256": h.hexdigest()[:16],
    }
