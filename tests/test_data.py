"""jaxrec.data core: atomic files, Interactions, filters, splits, negative sampling.

Readers live in test_data_readers.py; locating/fetching/loading in test_data_load.py.
"""

from __future__ import annotations

import collections
import logging
import math

import numpy as np
import pytest

from jaxrec.data import (DataError, Interactions, PositiveIndex, compact, filters, leave_one_out,
                         ratio_split, read_atomic, remap_ids, sample_negatives, write_atomic)


# ------------------------------------------------------------------------------ helpers
def random_inter(seed=0, n=400, users=40, items=30, with_time=True, with_rating=True) -> Interactions:
    rng = np.random.default_rng(seed)
    # skewed degrees so that k-core has work to do
    u = (rng.pareto(1.2, n) * 3).astype(int) % users
    i = (rng.pareto(1.0, n) * 3).astype(int) % items
    return remap_ids([f"u{x}" for x in u], [f"i{x}" for x in i],
                     rng.integers(1, 6, n).astype(np.float32) if with_rating else None,
                     rng.permutation(n).astype(np.float64) * 10 if with_time else None)


def raw_pairs(inter: Interactions) -> collections.Counter:
    return collections.Counter(zip(inter.user_ids[inter.user].tolist(), inter.item_ids[inter.item].tolist()))


def raw_rows(inter: Interactions) -> collections.Counter:
    """Multiset of (raw user, raw item, rating, timestamp)."""
    r = inter.rating.tolist() if inter.rating is not None else [None] * len(inter)
    t = inter.timestamp.tolist() if inter.timestamp is not None else [None] * len(inter)
    return collections.Counter(zip(inter.user_ids[inter.user].tolist(), inter.item_ids[inter.item].tolist(), r, t))


# ------------------------------------------------------------------------------ atomic files
def test_atomic_round_trip_all_types(tmp_path):
    cols = {
        "item_id": np.array(["1", "2", "x-3", "é"]),
        "title": [["Toy", "Story"], [], ["Ça", "va"], ["one"]],
        "score": np.array([1.5, float("nan"), -2.0, 1e-300]),
        "emb": [np.array([0.1, 0.2]), np.array([]), np.array([1.0 / 3.0]), np.array([-5.0, 6.0, 7.25])],
    }
    types = {"item_id": "token", "title": "token_seq", "score": "float", "emb": "float_seq"}
    path = write_atomic(tmp_path / "d.item", cols, types)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "item_id:token\ttitle:token_seq\tscore:float\temb:float_seq"
    back, back_types = read_atomic(path, with_types=True)
    assert back_types == types
    assert list(back) == list(cols)
    assert back["item_id"].dtype.kind == "U" and back["item_id"].tolist() == cols["item_id"].tolist()
    assert back["title"] == cols["title"]
    assert back["score"].dtype == np.float64
    np.testing.assert_array_equal(back["score"], cols["score"])  # exact, NaN in place
    assert len(back["emb"]) == 4
    for a, b in zip(back["emb"], cols["emb"]):
        assert a.dtype == np.float64
        np.testing.assert_array_equal(a, b)


def test_atomic_reads_handwritten_file(tmp_path):
    p = tmp_path / "h.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\n1\t10\t4\r\n2\t20\t3.5\n\n", encoding="utf-8")
    cols = read_atomic(p)
    assert cols["user_id"].tolist() == ["1", "2"]
    assert cols["rating"].tolist() == [4.0, 3.5]


def test_atomic_write_rejects_tabs(tmp_path):
    with pytest.raises(DataError, match="t.item.*'name'"):
        write_atomic(tmp_path / "t.item", {"name": ["a\tb"]}, {"name": "token"})


@pytest.mark.parametrize("content, pieces", [
    ("user_id:token\titem_id\n1\t2\n", ["bad.inter", "line 1", "column 2", "'item_id'", "name:type"]),
    ("user_id:token\tx:double\n1\t2\n", ["bad.inter", "field 'x'", "column 2", "unknown type 'double'", "token_seq"]),
    ("a:token\tr:float\n1\t2\n2\tabc\n", ["bad.inter", "line 3", "field 'r'", "'abc'", "number"]),
    ("a:token\tr:float\n1\t2\n2\t3\t4\n", ["bad.inter", "line 3", "expected 2", "got 3"]),
    ("a:token\tr:float\n1\n", ["bad.inter", "line 2", "expected 2", "got 1"]),
    ("a:token\tv:float_seq\n1\t1 2\n2\t1 zz\n", ["bad.inter", "line 3", "field 'v'", "float_seq"]),
    ("", ["bad.inter", "line 1", "header"]),
])
def test_atomic_errors_name_file_line_field(tmp_path, content, pieces):
    p = tmp_path / "bad.inter"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_atomic(p)
    for piece in pieces:
        assert piece in str(e.value), (piece, str(e.value))


def test_atomic_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.inter: file not found"):
        read_atomic(tmp_path / "nope.inter")


# ------------------------------------------------------------------------------ Interactions
def test_remap_keeps_original_ids_and_is_sorted():
    raw_u = ["bob", "amy", "bob", "cid", "amy"]
    raw_i = ["10", "2", "2", "1", "10"]
    inter = remap_ids(raw_u, raw_i, [1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1])
    assert inter.user.dtype == np.int32 and inter.item.dtype == np.int32
    assert inter.rating.dtype == np.float32 and inter.timestamp.dtype == np.float64
    assert inter.user_ids.tolist() == ["amy", "bob", "cid"]
    assert inter.item_ids.tolist() == ["1", "2", "10"]  # all-digit ids sort as numbers
    assert inter.user_ids[inter.user].tolist() == raw_u
    assert inter.item_ids[inter.item].tolist() == raw_i
    assert (inter.num_users, inter.num_items, len(inter)) == (3, 3, 5)


def test_take_and_compact():
    inter = remap_ids(["a", "b", "c", "a"], ["x", "y", "z", "y"], None, [1.0, 2, 3, 4])
    sub = inter.take(np.array([True, False, False, True]))
    assert sub.num_users == 3 and len(sub) == 2  # maps kept by take
    c = compact(sub)
    assert c.user_ids.tolist() == ["a"] and c.item_ids.tolist() == ["x", "y"]
    assert raw_pairs(c) == raw_pairs(sub)
    assert c.timestamp.tolist() == [1.0, 4.0]
    assert raw_pairs(inter.take(np.array([2, 0]))) == collections.Counter([("c", "z"), ("a", "x")])


def test_interactions_validates_shapes():
    with pytest.raises(ValueError, match="item"):
        Interactions(np.array([0, 1]), np.array([0]), None, None, np.array(["a", "b"]), np.array(["x"]))
    with pytest.raises(ValueError, match="user"):
        Interactions(np.array([0, 2]), np.array([0, 0]), None, None, np.array(["a", "b"]), np.array(["x"]))


# ------------------------------------------------------------------------------ filters
def naive_kcore(pairs: list[tuple[str, str]], k: int) -> collections.Counter:
    rows = list(pairs)
    while True:
        du = collections.Counter(u for u, _ in rows)
        di = collections.Counter(i for _, i in rows)
        kept = [(u, i) for u, i in rows if du[u] >= k and di[i] >= k]
        if len(kept) == len(rows):
            return collections.Counter(kept)
        rows = kept


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kcore_matches_naive_fixpoint(seed, k):
    inter = random_inter(seed, n=600)
    ref = naive_kcore(list(zip(inter.user_ids[inter.user], inter.item_ids[inter.item])), k)
    if not ref:
        with pytest.raises(DataError, match=f"kcore\\(k={k}\\)"):
            filters.kcore(inter, k)
        return
    out, rep = filters.kcore(inter, k)
    assert raw_pairs(out) == ref
    assert np.bincount(out.user, minlength=out.num_users).min() >= k
    assert np.bincount(out.item, minlength=out.num_items).min() >= k
    assert rep.removed_interactions == len(inter) - sum(ref.values())
    assert rep.removed_users == inter.num_users - len({u for u, _ in ref})
    assert rep.removed_items == inter.num_items - len({i for _, i in ref})
    # compacted: every id referenced
    assert out.num_users == len(np.unique(out.user)) and out.num_items == len(np.unique(out.item))
    assert "kcore(k=" in str(rep) and "removed" in str(rep)


@pytest.mark.parametrize("seed", range(4))
def test_kcore_sparse_matches_naive(seed):
    inter = random_inter(seed, n=700, users=200, items=150)
    ref = naive_kcore(list(zip(inter.user_ids[inter.user], inter.item_ids[inter.item])), 3)
    out, rep = filters.kcore(inter, 3)
    assert raw_pairs(out) == ref


def test_kcore_cascade_peels_tail():
    cycle = [("u0", "i0"), ("u1", "i0"), ("u1", "i1"), ("u2", "i1"), ("u2", "i2"), ("u0", "i2")]
    tail = [("u0", "i3"), ("u3", "i3"), ("u3", "i4"), ("u4", "i4")]
    u, i = zip(*(cycle + tail))
    out, rep = filters.kcore(remap_ids(u, i), 2)
    assert raw_pairs(out) == collections.Counter(cycle)
    assert (rep.removed_interactions, rep.removed_users, rep.removed_items) == (4, 2, 2)
    assert "4 rounds" in rep.detail


def test_rating_threshold_and_report():
    inter = remap_ids(["a", "a", "b", "c", "c"], ["x", "y", "y", "z", "x"], [5, 3, 4, 1, 4], None)
    out, rep = filters.rating_threshold(inter, 4)
    assert raw_pairs(out) == collections.Counter([("a", "x"), ("b", "y"), ("c", "x")])
    assert (rep.removed_interactions, rep.removed_users, rep.removed_items) == (2, 0, 1)
    assert str(rep).startswith("rating_threshold(t=4): removed 2 interactions, 0 users, 1 items")
    with pytest.raises(DataError, match=r"rating_threshold\(t=9\).*no interactions left"):
        filters.rating_threshold(inter, 9)
    with pytest.raises(DataError, match="no rating"):
        filters.rating_threshold(remap_ids(["a"], ["b"]), 4)


def test_drop_duplicates_keeps_earliest_then_first():
    inter = remap_ids(["a", "a", "a", "b", "b"], ["x", "x", "y", "x", "x"], [1, 2, 3, 4, 5], [30, 10, 5, 7, 7])
    out, rep = filters.drop_duplicates(inter)
    assert raw_rows(out) == collections.Counter([("a", "x", 2.0, 10.0), ("a", "y", 3.0, 5.0), ("b", "x", 4.0, 7.0)])
    assert (rep.removed_interactions, rep.removed_users, rep.removed_items) == (2, 0, 0)
    no_time = remap_ids(["a", "a", "b"], ["x", "x", "x"], [1, 2, 3], None)
    out2, _ = filters.drop_duplicates(no_time)
    assert sorted(out2.rating.tolist()) == [1.0, 3.0]


# ------------------------------------------------------------------------------ splits
def check_split_partition(inter, train, valid, test):
    for part in (train, valid, test):  # shared id maps
        assert part.user_ids is inter.user_ids and part.item_ids is inter.item_ids
    assert raw_rows(train) + raw_rows(valid) + raw_rows(test) == raw_rows(inter)


def test_leave_one_out_invariants(caplog):
    inter = random_inter(1, n=500, users=60)
    counts = np.bincount(inter.user, minlength=inter.num_users)
    assert (counts < 3).any() and (counts >= 3).any()  # the data covers both cases
    with caplog.at_level(logging.WARNING, logger="jaxrec.data"):
        train, valid, test, rep = leave_one_out(inter, "random", np.random.default_rng(0))
    check_split_partition(inter, train, valid, test)
    evaluable = np.flatnonzero(counts >= 3)
    for part in (valid, test):
        np.testing.assert_array_equal(np.sort(part.user), evaluable)  # exactly one each
    short = np.flatnonzero((counts > 0) & (counts < 3))
    assert rep.unsplit_users == len(short)
    assert set(np.unique(train.user)) >= set(short) and not set(valid.user) & set(short)
    assert (rep.num_train, rep.num_valid, rep.num_test) == (len(train), len(valid), len(test))
    assert any("fewer than 3" in r.getMessage() and inter.user_ids[short[0]] in r.getMessage()
               for r in caplog.records)
    # without duplicates, the held-out pairs are never in train
    dd, _ = filters.drop_duplicates(inter)
    tr, va, te, _ = leave_one_out(dd, "random", np.random.default_rng(0))
    train_keys = set(tr.keys().tolist())
    assert not train_keys & set(va.keys().tolist()) and not train_keys & set(te.keys().tolist())


def test_leave_one_out_time_picks_latest():
    inter = random_inter(2, n=500)
    train, valid, test, _ = leave_one_out(inter, "time")
    for u in np.unique(test.user):
        ts = sorted(inter.timestamp[inter.user == u].tolist())
        assert test.timestamp[test.user == u].tolist() == [ts[-1]]
        assert valid.timestamp[valid.user == u].tolist() == [ts[-2]]
        assert train.timestamp[train.user == u].max() <= ts[-2]


def test_leave_one_out_seeded():
    inter = random_inter(3, n=500)
    a = leave_one_out(inter, "random", np.random.default_rng(7))
    b = leave_one_out(inter, "random", np.random.default_rng(7))
    c = leave_one_out(inter, "random", np.random.default_rng(8))
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x.keys(), y.keys())
        np.testing.assert_array_equal(x.timestamp, y.timestamp)
    assert not np.array_equal(a[2].timestamp, c[2].timestamp)


def test_leave_one_out_nothing_to_split():
    inter = remap_ids(["a", "a", "b"], ["x", "y", "x"])
    with pytest.raises(DataError, match="no user has 3 or more"):
        leave_one_out(inter)
    with pytest.raises(DataError, match="timestamp"):
        leave_one_out(remap_ids(["a"] * 3, ["x", "y", "z"]), "time")


def recbole_counts(tot: int, ratios) -> list[int]:
    """RecBole 1.x Dataset._calcu_split_ids, as counts."""
    s = sum(ratios)
    ratios = [r / s for r in ratios]
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (6, 2, 2)])
def test_ratio_split_proportions(ratios):
    inter = random_inter(4, n=800, users=50)
    train, valid, test, rep = ratio_split(inter, ratios, "random", np.random.default_rng(0))
    check_split_partition(inter, train, valid, test)
    for u in range(inter.num_users):
        tot = int((inter.user == u).sum())
        got = [int((p.user == u).sum()) for p in (train, valid, test)]
        assert got == recbole_counts(tot, ratios), (u, tot)


def test_ratio_split_time_order():
    inter = random_inter(5, n=600, users=20)
    train, valid, test, _ = ratio_split(inter, (0.6, 0.2, 0.2), "time")
    for u in range(inter.num_users):
        tr, va, te = (p.timestamp[p.user == u] for p in (train, valid, test))
        if len(va) and len(tr):
            assert tr.max() <= va.min()
        if len(te) and len(va):
            assert va.max() <= te.min()


# ------------------------------------------------------------------------------ negative sampling
def test_positive_index_contains():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 20, 300), rng.integers(0, 15, 300)
    idx = PositiveIndex.build(u, i, 15)
    pos = set(zip(u.tolist(), i.tolist()))
    uu, ii = np.meshgrid(np.arange(20), np.arange(15), indexing="ij")
    got = idx.contains(uu, ii)
    ref = np.array([[(a, b) in pos for b in range(15)] for a in range(20)])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(idx.counts, ref.sum(1))


@pytest.mark.parametrize("max_rounds", [16, 0])
def test_sampler_never_returns_positives_dense_user(max_rounds):
    num_items = 50
    # user 0 interacted with all but items 7 and 31; user 1 with half; user 2 with one item
    users = [0] * 48 + [1] * 25 + [2]
    items = [x for x in range(num_items) if x not in (7, 31)] + list(range(0, 50, 2)) + [3]
    idx = PositiveIndex.build(users, items, num_items)
    pos = set(zip(users, items))
    rng = np.random.default_rng(0)
    batch = np.repeat(np.array([0, 1, 2], dtype=np.int32), 2000)
    neg = sample_negatives(rng, idx, batch, max_rounds=max_rounds)
    assert neg.shape == batch.shape and neg.dtype == np.int32
    assert not any((u, n) in pos for u, n in zip(batch.tolist(), neg.tolist()))
    assert set(neg[batch == 0].tolist()) == {7, 31}
    # uniform over the user's non-positives (loose check)
    c = np.bincount(neg[batch == 1], minlength=num_items)[1::2]
    assert c.min() > 2000 / 25 * 0.5 and c.max() < 2000 / 25 * 1.6
    many = sample_negatives(rng, idx, np.array([0, 1, 2]), num_negatives=5, max_rounds=max_rounds)
    assert many.shape == (3, 5)
    assert not any((u, n) in pos for u, row in zip([0, 1, 2], many.tolist()) for n in row)


def test_sampler_full_user_raises():
    idx = PositiveIndex.build([0, 0, 0, 1], [0, 1, 2, 0], 3)
    sample_negatives(np.random.default_rng(0), idx, np.array([1, 1]))
    with pytest.raises(DataError, match="user 0 has interacted with all 3 items"):
        sample_negatives(np.random.default_rng(0), idx, np.array([1, 0]))
    with pytest.raises(ValueError, match="users"):
        sample_negatives(np.random.default_rng(0), idx, np.array([5]))


def test_sampler_random_data_against_sets():
    rng = np.random.default_rng(1)
    u, i = rng.integers(0, 100, 5000), rng.integers(0, 80, 5000)
    idx = PositiveIndex.build(u, i, 80, num_users=100)
    pos = set(zip(u.tolist(), i.tolist()))
    batch = rng.integers(0, 100, 4096).astype(np.int32)
    neg = sample_negatives(rng, idx, batch, num_negatives=3)
    assert not any((a, b) in pos for a, row in zip(batch.tolist(), neg.tolist()) for b in row)
    assert math.isclose(len(np.unique(neg)), 80, abs_tol=5)
