"""jaxrec.data.sequences: per-user sequences, histories, SASRec training windows (hand-checked)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.data import DataError, dataset_from_interactions, load_dataset, remap_ids
from jaxrec.data.sequences import (histories, sample_window_negatives, training_windows, user_sequences,
                                   window_batches)

# (user, item, timestamp) in file order; "a" has a tie at t=20 (file order: i3 then i2)
ROWS = [("a", "i1", 10), ("b", "i2", 5), ("a", "i3", 20), ("a", "i2", 20), ("c", "i4", 1), ("a", "i5", 30),
        ("b", "i6", 6), ("e", "i1", 1), ("a", "i6", 40), ("b", "i1", 7), ("c", "i5", 2), ("d", "i3", 3),
        ("e", "i2", 2), ("e", "i3", 3), ("e", "i4", 4)]


def hand_dataset(rows=ROWS, split="loo_time", seed=0):
    u, i, t = zip(*rows)
    inter = remap_ids(np.array(u), np.array(i), timestamp=np.array(t, dtype=np.float64))
    return dataset_from_interactions("hand", inter, Config(split=split, seed=seed))


def test_sasrec_sequences_by_hand():
    ds = hand_dataset()
    s = user_sequences(ds)  # users a..e -> 0..4; items i1..i6 -> 0..5 (stored as 1..6)
    assert [s.items[s.indptr[u]:s.indptr[u + 1]].tolist() for u in range(5)] == [[0, 2, 1], [1], [3, 4], [2], [0, 1]]
    assert s.valid_item.tolist() == [4, 5, -1, -1, 2] and s.test_item.tolist() == [5, 0, -1, -1, 3]
    r = s.report
    assert (r.num_users, r.evaluable_users, r.short_users, r.window_users, r.tied_timestamps) == (5, 3, 2, 3, 1)
    assert s.evaluated_users("test").tolist() == [0, 1, 4]
    assert histories(s, "valid", 4).tolist() == [[0, 1, 3, 2], [0, 0, 0, 2], [0, 0, 4, 5], [0, 0, 0, 3], [0, 0, 1, 2]]
    assert histories(ds, "test", 4).tolist() == [[1, 3, 2, 5], [0, 0, 2, 6], [0, 0, 4, 5], [0, 0, 0, 3], [0, 1, 2, 3]]
    h2 = histories(s, "test", 2)  # the most recent two
    assert h2.dtype == np.int32 and h2[[0, 1, 4]].tolist() == [[2, 5], [2, 6], [2, 3]]


def test_sasrec_training_windows_by_hand():
    w = training_windows(hand_dataset(), 3)
    assert w.user.tolist() == [0, 2, 4]  # b has a single training item: no window
    assert w.seq.tolist() == [[0, 1, 3], [0, 0, 4], [0, 0, 1]]
    assert w.pos.tolist() == [[0, 3, 2], [0, 0, 5], [0, 0, 2]]
    assert w.seq.dtype == np.int32 and w.pos.dtype == np.int32
    w1 = training_windows(hand_dataset(), 1)
    assert w1.seq.tolist() == [[3], [4], [1]] and w1.pos.tolist() == [[2], [5], [2]]


def test_sasrec_window_negatives_and_batches():
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 25
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(3, 20), replace=False)
        rows += [(f"u{u}", f"i{it}", float(t)) for t, it in enumerate(items)]
    ds = hand_dataset(rows)
    s = user_sequences(ds)
    w = training_windows(s, 8)
    train_sets = {u: set(s.items[s.indptr[u]:s.indptr[u + 1]] + 1) for u in range(s.num_users)}
    for epoch in range(3):
        seen = []
        for b in window_batches(np.random.default_rng(epoch), w, batch_size=16):
            assert set(b) == {"user", "seq", "pos", "neg"} and b["seq"].shape[1] == 8
            assert all(v.dtype == np.int32 for v in b.values())
            np.testing.assert_array_equal(b["neg"] == 0, b["pos"] == 0)  # one negative per target position
            for u, negs in zip(b["user"], b["neg"]):
                assert not (set(negs[negs > 0]) & train_sets[int(u)])
                assert negs.max() <= n_items
            seen.append(b["user"])
        assert sorted(np.concatenate(seen).tolist()) == sorted(w.user.tolist())  # each window once
    a = list(window_batches(np.random.default_rng(5), w, 16))
    b = list(window_batches(np.random.default_rng(5), w, 16))
    assert all((x["neg"] == y["neg"]).all() and (x["user"] == y["user"]).all() for x, y in zip(a, b))
    padded = list(window_batches(np.random.default_rng(5), w, 16, pad=True))  # every batch 16 rows
    assert [len(x["user"]) for x in padded] == [16] * len(a) and len(a[-1]["user"]) < 16
    tail, full = padded[-1], a[-1]
    k = len(full["user"])
    assert all((tail[c][:k] == full[c]).all() for c in full)  # the same rows first, then padding rows
    assert (tail["user"][k:] == -1).all() and all((tail[c][k:] == 0).all() for c in ("seq", "pos", "neg"))
    assert all(v.dtype == np.int32 for v in tail.values())
    negs = sample_window_negatives(np.random.default_rng(1), w)
    used = np.bincount(negs[negs > 0], minlength=n_items + 1)[1:]
    assert (used > 0).sum() > 0.8 * n_items  # spread over the item range, not a few ids


def test_sasrec_sequences_bad_input():
    ds = hand_dataset()
    with pytest.raises(ValueError, match="max_len"):
        histories(ds, "test", 0)
    with pytest.raises(ValueError, match="max_len"):
        training_windows(ds, -1)
    with pytest.raises(ValueError, match="stage"):
        histories(ds, "train", 5)
    with pytest.raises(DataError, match="3 or more"):  # the split itself refuses
        hand_dataset([("a", "i1", 1), ("a", "i2", 2), ("b", "i1", 1)])
    empty = dataclasses.replace(ds, valid=ds.valid.take(np.zeros(len(ds.valid), bool)),
                                test=ds.test.take(np.zeros(len(ds.test), bool)))
    with pytest.raises(DataError, match="no user has 3"):
        user_sequences(empty)
    with pytest.raises(DataError, match="loo_time"):
        user_sequences(hand_dataset(split="loo_random", seed=3))
    no_time = dataclasses.replace(ds, train=dataclasses.replace(ds.train, timestamp=None))
    with pytest.raises(DataError, match="timestamp"):
        user_sequences(no_time)
    full = [("z", "i1", 1), ("z", "i2", 2), ("z", "i3", 3), ("z", "i1", 4), ("z", "i2", 5), ("y", "i1", 1),
            ("y", "i2", 2), ("y", "i3", 3)]
    with pytest.raises(DataError, match="'z'.*all 3 items"):
        training_windows(hand_dataset(full), 5)


def test_sasrec_histories_ml100k(shared_data):
    """Against a plain-python build from the raw file: sort by (timestamp, line), hold out the last two."""
    ds = load_dataset(shared_data / "ml-100k", Config(split="loo_time"))
    lines = (shared_data / "ml-100k" / "ml-100k.inter").read_text().splitlines()[1:]
    per_user: dict[str, list] = {}
    for n, line in enumerate(lines):
        u, i, _, t = line.split("\t")
        per_user.setdefault(u, []).append((float(t), n, i))
    item_row = {str(x): k + 1 for k, x in enumerate(ds.item_ids)}
    s = user_sequences(ds)
    valid, test = histories(s, "valid", 50), histories(s, "test", 50)
    assert s.report.evaluable_users == 943 and s.report.tied_timestamps > 0
    for u in range(0, ds.num_users, 37):
        seq = [item_row[i] for _, _, i in sorted(per_user[str(ds.user_ids[u])])]
        assert valid[u][valid[u] > 0].tolist() == seq[:-2][-50:]
        assert test[u][test[u] > 0].tolist() == seq[:-1][-50:]
        assert s.test_item[u] + 1 == seq[-1]
