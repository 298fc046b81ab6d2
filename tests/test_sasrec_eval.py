"""jaxrec.eval.candidates (20-candidate metrics, stored lists) and jaxrec.eval.scenarios, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.data import DataError, dataset_from_interactions, remap_ids
from jaxrec.data.sequences import histories
from jaxrec.eval.candidates import (candidate_file, candidate_metrics, candidate_ranks, candidates_for,
                                    evaluate_candidates, load_candidates, metrics_from_ranks, sample_candidates,
                                    save_candidates)
from jaxrec.eval.scenarios import ColdUsers, ColdWarmItems, CrossDomain, FewShot, Standard, run_scenario


def make_dataset(rows, name="hand"):
    u, i, t = zip(*rows)
    inter = remap_ids(np.array(u), np.array(i), timestamp=np.array(t, dtype=np.float64))
    return dataset_from_interactions(name, inter, Config(split="loo_time"))


def many_users(n_users=40, n_items=60, seed=0, name="many"):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(3, 12), replace=False)
        rows += [(f"u{u:03d}", f"i{it:03d}", float(t)) for t, it in enumerate(items)]
    return make_dataset(rows, name)


# ------------------------------------------------------------------------------ metrics
def test_sasrec_candidate_ranks_and_metrics_by_hand():
    scores = np.array([[5.0, 1, 2, 3],        # target best: rank 0
                       [2.0, 3, 1, 0],        # one above: rank 1
                       [1.0, 1, 0, 2],        # a tie counts above (pessimistic) + one above: rank 2
                       [np.nan, 0, 0, 0],     # NaN target: worst
                       [0.0, 0, 0, 0]])       # all tied: worst, not best
    assert candidate_ranks(scores).tolist() == [0, 1, 2, 3, 3]
    m = candidate_metrics(scores, ["hit@1", "hit@2", "ndcg@2", "ndcg@4", "mrr"])
    assert m["hit@1"] == pytest.approx(1 / 5)
    assert m["hit@2"] == pytest.approx(2 / 5)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 5)
    assert m["ndcg@4"] == pytest.approx((1 + 1 / math.log2(3) + 1 / 2 + 2 / math.log2(5)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 4) / 5)
    assert set(metrics_from_ranks([0], 20)) == {"hit@1", "hit@5", "ndcg@5", "mrr"}
    rp = candidate_metrics(scores, ["recall@2", "precision@2"])  # one relevant item: recall = hit, precision = hit/k
    assert rp == pytest.approx({"recall@2": 2 / 5, "precision@2": 1 / 5})
    with pytest.raises(ValueError, match="map@1"):
        candidate_metrics(scores, ["map@1"])
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        candidate_metrics(scores, ["hit@5"])


# ------------------------------------------------------------------------------ sampling
def test_sasrec_candidates_never_interacted_distinct_seeded():
    ds = many_users()
    c = sample_candidates(ds, "test", seed=7)
    assert c.items.shape == (len(c.users), 20) and c.items.dtype == np.int32
    np.testing.assert_array_equal(c.users, np.unique(ds.test.user))
    target = dict(zip(ds.test.user.tolist(), ds.test.item.tolist()))
    inter = {}
    for p in (ds.train, ds.valid, ds.test):
        for u, i in zip(p.user.tolist(), p.item.tolist()):
            inter.setdefault(u, set()).add(i)
    for u, row in zip(c.users.tolist(), c.items.tolist()):
        assert row[0] == target[u]
        assert len(set(row[1:])) == 19 and not (set(row[1:]) & inter[u])
    np.testing.assert_array_equal(sample_candidates(ds, "test", seed=7).items, c.items)
    assert (sample_candidates(ds, "test", seed=8).items[:, 1:] != c.items[:, 1:]).any()
    v = sample_candidates(ds, "valid", seed=7)
    assert v.items[:, 0].tolist() == [dict(zip(ds.valid.user.tolist(), ds.valid.item.tolist()))[u]
                                      for u in v.users.tolist()]


def test_sasrec_candidates_uniform_when_few_items_left():
    # 400 users who each interacted with items 0..38 of 60: 21 left, 19 drawn -> each left item w.p. 19/21
    rows = [(f"u{u:03d}", f"i{it:02d}", float(it)) for u in range(400) for it in range(39)]
    rows += [("zz", f"i{it:02d}", float(it)) for it in range(39, 60)]  # makes items 39..59 exist
    ds = make_dataset(rows)
    c = sample_candidates(ds, "test", seed=0)
    negs = c.items[c.users != np.flatnonzero(ds.user_ids == "zz")[0], 1:]
    assert negs.min() >= 39  # never one of the user's items
    freq = np.bincount(negs.ravel() - 39, minlength=21) / len(negs)
    np.testing.assert_allclose(freq, 19 / 21, atol=0.04)  # binomial sd ~ 0.015


def test_sasrec_candidates_impossible_names_user():
    rows = [("heavy", f"i{it:02d}", float(it)) for it in range(24)]  # 25 items; "heavy" saw all but i24
    rows += [("light", f"i{it:02d}", float(it)) for it in (0, 1, 2, 24)]
    ds = make_dataset(rows)
    with pytest.raises(DataError, match="'heavy'.*24 of 25 items.*19 items"):
        sample_candidates(ds, "test", seed=0)
    c = sample_candidates(ds, "test", seed=0, num_negatives=1)
    assert c.items[c.users == 0, 1].tolist() == [24]  # the one item "heavy" never saw


def test_sasrec_candidate_files_round_trip(tmp_path):
    ds = many_users()
    c = candidates_for(tmp_path, ds, "test", seed=3)
    path = candidate_file(tmp_path, c.fingerprint, "test", 3)
    assert path.is_file() and "test_seed3_neg19" in path.name and c.fingerprint["sha256"] in path.name
    again = candidates_for(tmp_path, ds, "test", seed=3)
    np.testing.assert_array_equal(again.items, c.items)
    other = many_users(seed=1)
    with pytest.raises(DataError, match="fingerprint"):
        load_candidates(path, other)
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="x.npz"):
        load_candidates(bad, ds)
    save_candidates(tmp_path / "copy.npz", c)
    np.testing.assert_array_equal(load_candidates(tmp_path / "copy.npz", ds).users, c.users)


def test_sasrec_evaluate_candidates_dot_products():
    ds = many_users()
    c = sample_candidates(ds, "test", seed=0)
    rng = np.random.default_rng(0)
    ue, ie = rng.normal(size=(ds.num_users, 4)), rng.normal(size=(ds.num_items, 4))
    scores = np.stack([[ue[u] @ ie[i] for i in row] for u, row in zip(c.users, c.items)])
    assert evaluate_candidates(ue, ie, c) == pytest.approx(candidate_metrics(scores))


# ------------------------------------------------------------------------------ scenarios
# a: 6 interactions, b: 3, c: 3, d: 4, e: 5 ; items x1..x6
SCEN_ROWS = [("a", "x1", 1), ("a", "x2", 2), ("a", "x3", 3), ("a", "x4", 4), ("a", "x1", 5), ("a", "x5", 6),
             ("b", "x1", 1), ("b", "x6", 2), ("b", "x2", 3),
             ("c", "x2", 1), ("c", "x3", 2), ("c", "x6", 3),
             ("d", "x1", 1), ("d", "x2", 2), ("d", "x4", 3), ("d", "x3", 4),
             ("e", "x1", 1), ("e", "x3", 2), ("e", "x2", 3), ("e", "x5", 4), ("e", "x4", 5)]


def test_sasrec_scenarios_by_hand():
    ds = make_dataset(SCEN_ROWS)  # users a..e -> 0..4, items x1..x6 -> 0..5
    # training interactions: a: x1 x2 x3 x4 | b: x1 | c: x2 | d: x1 x2 | e: x1 x3 x2
    # counts x1..x6 = 4, 4, 2, 1, 0, 0; test targets: a x5, b x2, c x6, d x3, e x4
    cold, warm = ColdWarmItems(0.35).item_groups(ds)  # int(0.35 * 6) = 2 items each
    assert cold.tolist() == [4, 5] and warm.tolist() == [0, 1]
    g = ColdWarmItems(0.35).apply(ds).groups
    assert g["cold_items"].tolist() == [0, 2] and g["warm_items"].tolist() == [1]

    cu = ColdUsers().apply(ds)
    assert cu.applicable and cu.groups["cold_users"].tolist() == [1, 2]
    assert set(cu.train.train.user.tolist()) == {0, 3, 4} and set(cu.train.valid.user.tolist()) == {0, 3, 4}
    assert set(cu.train.test.user.tolist()) == {0, 3, 4} and cu.eval is ds
    assert histories(cu.eval, "test", 3)[[1, 2]].tolist() == [[0, 1, 6], [0, 2, 3]]  # first two items as history
    assert not ColdUsers(num_interactions=7).apply(ds).applicable

    fs = FewShot(num_users=2, seed=0).apply(ds)
    chosen = FewShot(num_users=2, seed=0).chosen_users(ds)
    assert chosen.tolist() == sorted(np.random.default_rng(0).choice([0, 3, 4], 2, replace=False).tolist())
    assert set(fs.train.train.user.tolist()) == set(chosen.tolist())
    assert fs.groups["all"].tolist() == [0, 1, 2, 3, 4]
    assert fs.groups["unseen"].tolist() == sorted({0, 1, 2, 3, 4} - set(chosen.tolist()))
    with pytest.raises(ValueError, match="only 3 users"):
        FewShot(num_users=4).apply(ds)

    cd = CrossDomain(target=many_users()).apply(ds)
    assert not cd.applicable and "not applicable" in cd.note
    assert Standard().apply(ds).groups["all"].tolist() == [0, 1, 2, 3, 4]


def test_sasrec_run_scenario_harness(tmp_path):
    ds = many_users(n_users=60, n_items=80)
    trained_on = []

    def train(d):
        trained_on.append(d)
        return np.bincount(d.train.item, minlength=d.num_items).astype(float)  # popularity "model"

    def score(model, d, cands):
        return model[cands.items]

    res = run_scenario(ColdWarmItems(), ds, train, score, seed=1, candidates_dir=tmp_path)
    assert res.applicable and set(res.metrics) == {"cold_items", "warm_items"} and trained_on[-1] is ds
    c = candidates_for(tmp_path, ds, "test", 1)  # the stored lists were used
    pop = np.bincount(ds.train.item, minlength=ds.num_items).astype(float)
    cold, _ = ColdWarmItems().item_groups(ds)
    rows = np.isin(c.items[:, 0], cold)
    assert res.metrics["cold_items"] == pytest.approx(candidate_metrics(pop[c.items[rows]]))
    assert res.counts["cold_items"] == int(rows.sum())
    fs = run_scenario(FewShot(num_users=5, seed=2), ds, train, score, seed=1)
    assert len(np.unique(trained_on[-1].train.user)) == 5 and set(fs.metrics) == {"all", "unseen"}
    na = run_scenario(CrossDomain(target=ds), ds, train, score, seed=1)
    assert not na.applicable and na.metrics == {} and len(trained_on) == 2  # never trained


# ------------------------------------------------------------------------------ the protocol
def test_sasrec_candidates_protocol_against_numpy(tmp_path):
    from jaxrec.data.fingerprint import dataset_fingerprint
    from jaxrec.eval.protocols import make_evaluator
    from jaxrec.train import SingleDevice, prepare

    ds = many_users(n_users=50, n_items=70)
    config = Config(evaluation="candidates", candidates_dir=str(tmp_path), seed=5, topk=(1, 5),
                    metrics=("hit", "ndcg", "mrr", "recall"), valid_metric="mrr", full_view_topk=(10,))
    rng = np.random.default_rng(0)
    ue = rng.normal(size=(ds.num_users, 6)).astype(np.float32)
    ie = rng.normal(size=(ds.num_items, 6)).astype(np.float32)
    got = make_evaluator(prepare(ds), config, SingleDevice())((ue, ie), "test")
    # the lists were stored beside the split, keyed by its fingerprint, stage and seed
    path = candidate_file(tmp_path, dataset_fingerprint(ds), "test", 5)
    cands = load_candidates(path, ds)
    stamp = path.stat().st_mtime_ns
    scores = np.einsum("md,mcd->mc", ue[cands.users].astype(np.float64), ie[cands.items].astype(np.float64))
    r = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)  # pessimistic rank of the target (column 0)
    want = {"hit@1": np.mean(r < 1), "hit@5": np.mean(r < 5), "ndcg@1": np.mean(r < 1),
            "ndcg@5": np.mean((r < 5) / np.log2(r + 2)), "mrr": np.mean(1 / (r + 1)),
            "recall@1": np.mean(r < 1), "recall@5": np.mean(r < 5)}
    # full ranking of the test item among all items but the user's training and validation items
    seen = {}
    for part in (ds.train, ds.valid):
        for u, i in zip(part.user.tolist(), part.item.tolist()):
            seen.setdefault(u, set()).add(i)
    full = []
    for u, i in zip(ds.test.user.tolist(), ds.test.item.tolist()):
        s = ue[u].astype(np.float64) @ ie.astype(np.float64).T
        others = [j for j in range(ds.num_items) if j != i and j not in seen.get(u, set())]
        full.append(int((s[others] > s[i]).sum()))
    full = np.array(full)
    want["full_recall@10"] = np.mean(full < 10)
    want["full_ndcg@10"] = np.mean((full < 10) / np.log2(full + 2))
    assert got == pytest.approx(want, abs=1e-9)
    # a second evaluator (another model, another run) reads the stored lists instead of drawing new ones
    again = make_evaluator(prepare(ds), config, SingleDevice())((ue.copy(), ie.copy()), "test")
    assert again == got and path.stat().st_mtime_ns == stamp
    make_evaluator(prepare(ds), config, SingleDevice())((ue, ie), "valid")
    valid = load_candidates(candidate_file(tmp_path, dataset_fingerprint(ds), "valid", 5), ds)
    assert valid.items[:, 0].tolist() == [dict(zip(ds.valid.user.tolist(), ds.valid.item.tolist()))[u]
                                          for u in valid.users.tolist()]
