"""Tests for jaxrec.eval against hand-computed numbers and plain numpy/python references."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.eval import (
    build_truth,
    evaluate,
    mean_metrics,
    per_user_metrics,
    ranking_metrics,
    topk_full_ranking,
)
from jaxrec.eval.ranking import _chunk_topk, plan_chunks

ALL = ("recall", "ndcg", "hit", "mrr", "precision")


# ----------------------------------------------------------------------------- helpers


def csr(lists):
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    items = np.array([i for x in lists for i in x], dtype=np.int64)
    return indptr, items


def loop_reference(topk, truth_lists, ks):
    """Plain-python RecBole definitions, one user and one cutoff at a time."""
    out = {f"{m}@{k}": [] for m in ALL for k in ks}
    for row, truth in zip(topk, truth_lists):
        truth = set(int(t) for t in truth)
        for k in ks:
            top = [int(x) for x in row[:k]]
            hit_ranks = [r + 1 for r, item in enumerate(top) if item in truth]
            out[f"hit@{k}"].append(1.0 if hit_ranks else 0.0)
            out[f"recall@{k}"].append(len(hit_ranks) / len(truth))
            out[f"precision@{k}"].append(len(hit_ranks) / k)
            out[f"mrr@{k}"].append(1.0 / hit_ranks[0] if hit_ranks else 0.0)
            dcg = sum(1.0 / math.log2(r + 1) for r in hit_ranks)
            idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(truth), k) + 1))
            out[f"ndcg@{k}"].append(dcg / idcg)
    return {key: sum(v) / len(v) for key, v in out.items()}


def dense_reference(user_emb, item_emb, users, ex_users, ex_items, k):
    """Full dense scores, exclusions at -inf, stable descending argsort (ties: low id)."""
    scores = np.asarray(user_emb, np.float64) @ np.asarray(item_emb, np.float64).T
    scores[ex_users, ex_items] = -np.inf
    scores = scores[users]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isneginf(top_scores), -1, order)


def int_embeddings(rng, num_users, num_items, dim=4):
    # Small integers: scores are exact in float32 and ties are frequent (tests tie order).
    u = rng.integers(-3, 4, size=(num_users, dim)).astype(np.float32)
    v = rng.integers(-3, 4, size=(num_items, dim)).astype(np.float32)
    return u, v


def random_pairs(rng, num_users, num_items, n):
    keys = rng.choice(num_users * num_items, size=n, replace=False)
    return (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)


# ------------------------------------------------------------------ metrics: by hand

# user 0: truth {1, 5, 9}, hits at ranks 1 and 3
# user 1: truth {4},       hit at rank 4
# user 2: truth {10, 11},  no hit (its list holds user 0's truth items 1 and 5)
HAND_TOPK = np.array([[1, 2, 5, 7, 8], [0, 3, 6, 4, 2], [0, 1, 2, 3, 5]])
HAND_TRUTH = [[1, 5, 9], [4], [11, 10]]


def test_metrics_hand_computed():
    indptr, items = csr(HAND_TRUTH)
    got = ranking_metrics(HAND_TOPK, indptr, items, ks=(1, 3, 5))
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # |T| = 3: ranks 1..3
    ndcg_u0 = (1 + 1 / math.log2(4)) / idcg3  # hits at ranks 1 and 3
    ndcg_u1 = (1 / math.log2(5)) / 1.0  # hit at rank 4, idcg = 1
    expected = {
        "hit@1": 1 / 3,
        "hit@3": 1 / 3,
        "hit@5": 2 / 3,
        "recall@1": (1 / 3) / 3,
        "recall@3": (2 / 3) / 3,
        "recall@5": (2 / 3 + 1) / 3,
        "precision@1": 1 / 3,
        "precision@3": (2 / 3) / 3,
        "precision@5": (2 / 5 + 1 / 5) / 3,
        "mrr@1": 1 / 3,
        "mrr@3": 1 / 3,
        "mrr@5": (1 + 1 / 4) / 3,
        "ndcg@1": 1 / 3,
        "ndcg@3": ndcg_u0 / 3,
        "ndcg@5": (ndcg_u0 + ndcg_u1) / 3,
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    # ordered by metric, then cutoff
    assert list(got)[:3] == ["recall@1", "recall@3", "recall@5"]
    # numbers written out, as a second check on the formulas above
    assert got["ndcg@3"] == pytest.approx(0.7039180890 / 3, abs=1e-9)
    assert got["ndcg@5"] == pytest.approx((0.7039180890 + 0.4306765581) / 3, abs=1e-9)


def test_per_user_metrics_hand_computed_and_mean():
    indptr, items = csr(HAND_TRUTH)
    pu = per_user_metrics(HAND_TOPK, indptr, items, ks=(5,), metrics=("mrr", "recall"))
    assert set(pu) == {"mrr@5", "recall@5"}
    np.testing.assert_allclose(pu["mrr@5"], [1.0, 0.25, 0.0])
    np.testing.assert_allclose(pu["recall@5"], [2 / 3, 1.0, 0.0])
    # shard merge: concatenating per-user arrays of two halves gives the full mean
    a = per_user_metrics(HAND_TOPK[:1], *csr(HAND_TRUTH[:1]), ks=(5,), metrics=("mrr",))
    b = per_user_metrics(HAND_TOPK[1:], *csr(HAND_TRUTH[1:]), ks=(5,), metrics=("mrr",))
    merged = mean_metrics({"mrr@5": np.concatenate([a["mrr@5"], b["mrr@5"]])})
    assert merged["mrr@5"] == pytest.approx(1.25 / 3)


def test_metrics_padding_never_hits():
    # -1 = "no item" (user with fewer than k candidates); must not hit nor collide.
    topk = np.array([[3, -1, -1], [-1, -1, -1]])
    indptr, items = csr([[3, 7], [0]])
    got = ranking_metrics(topk, indptr, items, ks=(3,), metrics=("hit", "recall", "ndcg"))
    assert got["hit@3"] == pytest.approx(0.5)
    assert got["recall@3"] == pytest.approx(0.25)
    assert got["ndcg@3"] == pytest.approx(0.5 * 1 / (1 + 1 / math.log2(3)))


# ------------------------------------------------------------- metrics: loop reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_loop_reference(seed):
    rng = np.random.default_rng(seed)
    num_rows, num_items, k_max = 60, 40, 20
    topk = np.stack([rng.permutation(num_items)[:k_max] for _ in range(num_rows)])
    truth = []
    for r in range(num_rows):
        n = int(rng.integers(1, 25))
        # bias toward items in the list so that there are plenty of hits
        pool = np.concatenate([topk[r, : rng.integers(1, k_max)], rng.permutation(num_items)])
        truth.append(list(dict.fromkeys(pool.tolist()))[:n])
    ks = (1, 2, 5, 10, 20)
    got = ranking_metrics(topk, *csr(truth), ks=ks, metrics=ALL)
    ref = loop_reference(topk, truth, ks)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_single_held_out_item_recall_equals_hit():
    rng = np.random.default_rng(3)
    topk = np.stack([rng.permutation(100)[:50] for _ in range(200)])
    truth = rng.integers(0, 100, size=200)
    indptr = np.arange(201)
    got = ranking_metrics(topk, indptr, truth, ks=(10, 20, 50))
    for k in (10, 20, 50):
        assert got[f"recall@{k}"] == got[f"hit@{k}"]
        assert got[f"precision@{k}"] == pytest.approx(got[f"hit@{k}"] / k)
    assert 0 < got["hit@10"] < got["hit@50"]


# ------------------------------------------------------------------- metrics: errors


def test_metrics_validation_errors():
    indptr, items = csr(HAND_TRUTH)
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(HAND_TOPK, indptr, items, ks=(6,))
    with pytest.raises(ValueError, match="ks"):
        ranking_metrics(HAND_TOPK, indptr, items, ks=(0,))
    with pytest.raises(ValueError, match="metrics"):
        ranking_metrics(HAND_TOPK, indptr, items, ks=(1,), metrics=("auc",))
    with pytest.raises(ValueError, match="topk_items"):
        ranking_metrics(HAND_TOPK[0], indptr, items, ks=(1,))
    with pytest.raises(ValueError, match="truth_indptr"):
        ranking_metrics(HAND_TOPK, indptr[:-1], items, ks=(1,))
    with pytest.raises(ValueError, match="truth_indptr"):
        ranking_metrics(HAND_TOPK, *csr([[1], [], [2]]), ks=(1,))  # user without truth
    with pytest.raises(ValueError, match="truth_items"):
        ranking_metrics(HAND_TOPK, *csr([[1, 1], [2], [3]]), ks=(1,))  # duplicate truth
    with pytest.raises(ValueError, match="topk_items"):
        ranking_metrics(np.array([[1, 1]]), *csr([[1]]), ks=(1,))  # duplicate in a list


def test_build_truth():
    users, indptr, items = build_truth([5, 2, 5, 9, 2], [7, 1, 3, 0, 4])
    np.testing.assert_array_equal(users, [2, 5, 9])
    np.testing.assert_array_equal(indptr, [0, 2, 4, 5])
    np.testing.assert_array_equal(items, [1, 4, 3, 7, 0])
    with pytest.raises(ValueError, match="more than once"):
        build_truth([1, 1], [3, 3])


# ------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1000])
def test_topk_matches_dense_reference(chunk_size):
    rng = np.random.default_rng(10)
    num_users, num_items, k = 45, 30, 8
    u, v = int_embeddings(rng, num_users, num_items)
    ex_u, ex_i = random_pairs(rng, num_users, num_items, 300)
    users = np.arange(num_users, dtype=np.int32)
    got = topk_full_ranking(u, v, users, ex_u, ex_i, k=k, chunk_size=chunk_size)
    ref = dense_reference(u, v, users, ex_u, ex_i, k)
    assert got.dtype == np.int32 and got.shape == (num_users, k)
    np.testing.assert_array_equal(got, ref)
    excluded = set(zip(ex_u.tolist(), ex_i.tolist()))
    rows, cols = np.nonzero(got >= 0)
    shown = set(zip(users[rows].tolist(), got[rows, cols].tolist()))
    assert shown and not shown & excluded


def test_topk_users_subset_duplicates_and_jax_inputs():
    rng = np.random.default_rng(11)
    num_users, num_items, k = 40, 25, 6
    u, v = int_embeddings(rng, num_users, num_items)
    ex_u, ex_i = random_pairs(rng, num_users, num_items, 200)
    users = np.array([17, 3, 39, 3, 0, 22, 17, 8, 30, 11, 5], dtype=np.int32)  # unsorted, repeats
    got = topk_full_ranking(jnp.asarray(u), jnp.asarray(v), users, ex_u, ex_i, k=k, chunk_size=4)
    np.testing.assert_array_equal(got, dense_reference(u, v, users, ex_u, ex_i, k))


def test_topk_float_embeddings_scores_match():
    # Random float embeddings: float32 rounding may swap near-ties, so compare scores.
    rng = np.random.default_rng(12)
    u = rng.standard_normal((70, 16)).astype(np.float32)
    v = rng.standard_normal((90, 16)).astype(np.float32)
    ex_u, ex_i = random_pairs(rng, 70, 90, 1500)
    users = np.arange(70)
    got = topk_full_ranking(u, v, users, ex_u, ex_i, k=20, chunk_size=32)
    ref = dense_reference(u, v, users, ex_u, ex_i, 20)
    scores = u.astype(np.float64) @ v.astype(np.float64).T
    np.testing.assert_allclose(
        np.take_along_axis(scores, got, 1), np.take_along_axis(scores, ref, 1), atol=1e-4
    )
    assert (np.mean(got == ref)) > 0.99


def test_topk_all_items_and_too_few_candidates():
    rng = np.random.default_rng(13)
    u, v = int_embeddings(rng, 5, 6)
    ex_u = np.array([0, 0, 0, 2], dtype=np.int32)
    ex_i = np.array([1, 4, 5, 0], dtype=np.int32)
    got = topk_full_ranking(u, v, np.arange(5), ex_u, ex_i, k=6, chunk_size=2)
    np.testing.assert_array_equal(got, dense_reference(u, v, np.arange(5), ex_u, ex_i, 6))
    assert (got[0] == -1).sum() == 3 and (got[2] == -1).sum() == 1 and (got[1] >= 0).all()
    assert sorted(got[1].tolist()) == list(range(6))  # k == num_items: a permutation


def test_topk_no_exclusions_and_empty_users():
    rng = np.random.default_rng(14)
    u, v = int_embeddings(rng, 9, 12)
    got = topk_full_ranking(u, v, np.arange(9), k=4, chunk_size=3)
    np.testing.assert_array_equal(got, dense_reference(u, v, np.arange(9), [], [], 4))
    assert topk_full_ranking(u, v, np.zeros(0, np.int32), k=4).shape == (0, 4)


def test_topk_errors():
    rng = np.random.default_rng(15)
    u, v = int_embeddings(rng, 4, 5)
    users = np.arange(4)
    with pytest.raises(ValueError, match="k: must lie in"):
        topk_full_ranking(u, v, users, k=6)
    with pytest.raises(ValueError, match="k: must lie in"):
        topk_full_ranking(u, v, users, k=0)
    with pytest.raises(ValueError, match="users"):
        topk_full_ranking(u, v, np.array([0, 4]), k=2)
    with pytest.raises(ValueError, match="exclude_items"):
        topk_full_ranking(u, v, users, np.array([0]), np.array([5]), k=2)
    with pytest.raises(ValueError, match="exclude_users/exclude_items"):
        topk_full_ranking(u, v, users, np.array([0, 1]), np.array([1]), k=2)
    with pytest.raises(ValueError, match="item_emb"):
        topk_full_ranking(u, v[:, :3], users, k=2)
    with pytest.raises(ValueError, match="user_emb"):
        topk_full_ranking(u[0], v, users, k=2)
    with pytest.raises(AssertionError):  # chex check for jax arrays
        topk_full_ranking(jnp.asarray(u[0]), v, users, k=2)
    with pytest.raises(ValueError, match="chunk_size"):
        topk_full_ranking(u, v, users, k=2, chunk_size=0)


def test_plan_chunks_bounded_and_one_compile_per_call():
    rng = np.random.default_rng(16)
    users = rng.permutation(1000)[:250]
    ex_u, ex_i = random_pairs(rng, 1000, 50, 5000)
    size, users_pad, ex_rows, ex_cols = plan_chunks(users, ex_u, ex_i, chunk_size=64)
    assert size <= 64 and users_pad.shape == (4, size) and size * 4 >= 250
    cap = ex_rows.shape[1]
    assert cap & (cap - 1) == 0  # power of two
    # every relevant pair appears exactly once, at its user's row
    ranked = set(users.tolist())
    row_of = {int(user): r for r, user in enumerate(users)}
    want = sorted((row_of[int(a)], int(b)) for a, b in zip(ex_u, ex_i) if a in ranked)
    c, j = np.nonzero(ex_rows < size)
    have = sorted(zip((c * size + ex_rows[c, j]).tolist(), ex_cols[c, j].tolist()))
    assert have == want

    u, v = int_embeddings(rng, 1000, 50)
    before = _chunk_topk._cache_size()
    topk_full_ranking(u, v, users, ex_u, ex_i, k=5, chunk_size=64)
    assert _chunk_topk._cache_size() - before <= 1  # all chunks share one compilation


# ------------------------------------------------------------------------ evaluate


def _leave_one_out(rng, num_users, num_items, per_user=12):
    ex_u, ex_i, t_u, t_i = [], [], [], []
    for user in range(num_users):
        items = rng.permutation(num_items)[:per_user]
        ex_u += [user] * (per_user - 2)
        ex_i += items[:-2].tolist()
        t_u.append(user)
        t_i.append(items[-1])
    return np.array(ex_u), np.array(ex_i), np.array(t_u), np.array(t_i)


def test_evaluate_matches_references():
    rng = np.random.default_rng(20)
    num_users, num_items = 60, 40
    u, v = int_embeddings(rng, num_users, num_items, dim=6)
    ex_u, ex_i, t_u, t_i = _leave_one_out(rng, num_users, num_items)
    truth = build_truth(t_u, t_i)
    ks = (5, 10, 20)
    got = evaluate(u, v, None, (ex_u, ex_i), truth, ks=ks, metrics=ALL, chunk_size=16)
    ref_top = dense_reference(u, v, truth[0], ex_u, ex_i, max(ks))
    ref = loop_reference(ref_top, [[t] for t in t_i[np.argsort(t_u)]], ks)
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    for k in ks:
        assert got[f"recall@{k}"] == got[f"hit@{k}"]


def test_evaluate_user_subset_and_multi_item_truth():
    rng = np.random.default_rng(21)
    num_users, num_items = 30, 25
    u, v = int_embeddings(rng, num_users, num_items)
    ex_u, ex_i = random_pairs(rng, num_users, num_items, 150)
    excluded = set(zip(ex_u.tolist(), ex_i.tolist()))
    pairs = [(a, b) for a in range(0, num_users, 2) for b in rng.permutation(num_items)[:4].tolist()
             if (a, b) not in excluded]
    truth = build_truth([p[0] for p in pairs], [p[1] for p in pairs])
    subset = np.array([8, 0, 14, 26])
    got = evaluate(u, v, subset, (ex_u, ex_i), truth, ks=(3, 7), metrics=("ndcg", "mrr"))
    lists = [[b for a, b in pairs if a == s] for s in subset]
    ref = loop_reference(dense_reference(u, v, subset, ex_u, ex_i, 7), lists, (3, 7))
    for key in got:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    with pytest.raises(ValueError, match="users: 1 user"):
        evaluate(u, v, np.array([0, 1]), (ex_u, ex_i), truth, ks=(3,))
    with pytest.raises(ValueError, match="truth"):
        evaluate(u, v, None, None, truth[:2], ks=(3,))
    with pytest.raises(ValueError, match="k: must lie in"):
        evaluate(u, v, None, None, truth, ks=(26,))
