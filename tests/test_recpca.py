"""Rec-PCA (jaxrec.init.recpca) against a dense numpy Laplacian built by python loops."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import explicit_cooccurrence, explicit_laplacian
from jaxrec.init import pca_project
from jaxrec.init.recpca import (
    RecPCAError,
    cooccurrence_degree,
    cooccurrence_factors,
    item_cooccurrence,
    laplacian_form,
    rec_pca,
)


def power_law_data(seed=0, num_users=40, num_items=30):
    """A heavy user (most items), single-item users, repeated pairs, isolated items."""
    rng = np.random.default_rng(seed)
    pop = np.arange(1, num_items + 1) ** -1.0
    pop[-3:] = 0  # the last 3 items: nobody, or only single-item users
    pop /= pop.sum()
    user, item = [], []
    for u in range(num_users - 4):
        deg = 25 if u == 0 else int(rng.integers(2, 8))
        its = rng.choice(num_items, size=deg, replace=False, p=pop)
        user += [u] * deg
        item += list(its)
    user += [num_users - 4, num_users - 3, num_users - 2, 5, 5]  # single-item users; user 5 repeats
    item += [num_items - 1, num_items - 1, 0, item[user.index(5)], item[user.index(5)]]
    return np.array(user, np.int32), np.array(item, np.int32), num_items


def test_recpca_degree_and_factors_match_explicit():
    user, item, n = power_law_data()
    c = explicit_cooccurrence(user, item, n)
    np.testing.assert_allclose(cooccurrence_degree(user, item, n), c.sum(1))
    f = cooccurrence_factors(user, item, n)
    assert f.duplicates == 2 and f.interactions == len(user)
    assert f.single_item_users == 3
    assert f.isolated_items == int(np.sum(c.sum(1) == 0)) >= 2
    assert f.total_weight == c.sum()


@pytest.mark.parametrize("chunk_users, piece", [(2048, None), (3, 4), (1, 1), (7, 25)])
def test_recpca_laplacian_form_matches_dense(chunk_users, piece):
    # tiny chunks and pieces: the heavy user's 25 items span many pieces, chunks get padded
    user, item, n = power_law_data()
    x = np.random.default_rng(1).standard_normal((n, 5)).astype(np.float32)
    lap = explicit_laplacian(explicit_cooccurrence(user, item, n))
    got = np.asarray(laplacian_form(x, user, item, chunk_users=chunk_users, piece=piece))
    ref = x.astype(np.float64).T @ lap @ x
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("lam", [0.3, 1.0, 3.0])
def test_recpca_matches_dense_eigh(lam):
    user, item, n = power_law_data(seed=2)
    x = (np.random.default_rng(3).standard_normal((n, 6)) * np.array([3, 2, 1.5, 1, 0.7, 0.5])).astype(np.float32)
    table, w, rep = rec_pca(x, user, item, 3, lam, return_report=True, chunk_users=4, piece=8)
    xc = (x - x.mean(0)).astype(np.float64)
    m = xc.T @ (np.eye(n) - lam * explicit_laplacian(explicit_cooccurrence(user, item, n))) @ xc
    vals, vecs = np.linalg.eigh(m)
    vals, ref = vals[::-1], vecs[:, ::-1][:, :3]
    assert np.min(np.abs(np.diff(vals[:4]))) > 1e-2 * np.abs(vals).max()  # unique up to sign
    w = np.asarray(w)
    ref = ref * np.sign(np.sum(w * ref, axis=0))
    np.testing.assert_allclose(w, ref, atol=1e-5)
    np.testing.assert_allclose(w.T @ w, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(table, xc @ w, atol=1e-4)
    np.testing.assert_allclose(rep.eigenvalues, vals[:3], rtol=1e-4)
    # the sign convention: each column's largest-magnitude coordinate is positive
    assert np.all(w[np.abs(w).argmax(0), np.arange(3)] > 0)
    assert rep.duplicates == 2 and rep.single_item_users == 3 and rep.fallback is None
    assert "isolated items" in str(rep)


def test_recpca_lambda_zero_is_pca_and_shrinks_roughness():
    user, item, n = power_law_data(seed=4)
    x = np.random.default_rng(5).standard_normal((n, 8)).astype(np.float32)
    t0, _ = rec_pca(x, user, item, 3, 0.0)
    np.testing.assert_allclose(t0, pca_project(x, 3)[0], atol=1e-5)
    # the objective: lam > 0 trades variance for smoothness tr(W^T X^T L X W)
    xc = (x - x.mean(0)).astype(np.float64)
    lap = explicit_laplacian(explicit_cooccurrence(user, item, n))
    ws = [np.asarray(rec_pca(x, user, item, 3, lam)[1]) for lam in (0.0, 1.0, 5.0)]
    rough = [np.trace(w.T @ xc.T @ lap @ xc @ w) for w in ws]
    assert rough[0] > rough[1] > rough[2]


def test_recpca_explicit_cooccurrence_still_matches():
    user, item, n = power_law_data(seed=6)
    np.testing.assert_array_equal(item_cooccurrence(user, item, n, dense=True), explicit_cooccurrence(user, item, n))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -0.5}, "lam=-0.5"),
        ({"lam": float("nan")}, "lam=nan"),
        ({"lam": float("inf")}, "lam=inf"),
        ({"lam": "big"}, "lam='big'"),
        ({"k": 7}, "k=7: larger than the embedding dimension N=6"),
        ({"k": 0}, "k=0"),
        ({"x": np.full((30, 6), np.nan, np.float32)}, "x: expected finite"),
        ({"x": np.zeros((29, 6), np.float32)}, "item: ids must lie in"),
        ({"x": np.zeros(30, np.float32)}, "x: expected item embeddings"),
        ({"item": np.array([0, 1])}, "user, item: expected two 1-D arrays"),
        ({"item": np.full(194, 0.5)}, "item: expected integer ids"),
        ({"chunk_users": 0}, "chunk_users=0"),
    ],
)
def test_recpca_bad_input_names_the_argument(kwargs, match):
    user, item, n = power_law_data()
    args = {"x": np.ones((n, 6), np.float32), "user": user, "item": item, "k": 2, "lam": 1.0} | kwargs
    with pytest.raises(RecPCAError, match=match):
        rec_pca(**args)
    assert issubclass(RecPCAError, ValueError)


def test_recpca_graph_without_edges():
    user = np.arange(6, dtype=np.int32)  # every user has one item (item 2 twice, by two users)
    item = np.array([0, 1, 2, 3, 4, 2], np.int32)
    x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(RecPCAError, match="no edges.*allow_pca_fallback"):
        rec_pca(x, user, item, 2, 0.5)
    table, w, rep = rec_pca(x, user, item, 2, 0.5, allow_pca_fallback=True, return_report=True)
    assert rep.fallback == "pca" and "fell back to plain PCA" in str(rep)
    assert rep.isolated_items == 5 and rep.single_item_users == 6
    np.testing.assert_allclose(table, pca_project(x, 2)[0], atol=1e-5)
    rec_pca(x, user, item, 2, 0.0)  # lam = 0 needs no graph: no error
    assert item_cooccurrence(user, item, 5).rows.size == 0
    assert not np.any(cooccurrence_degree(user, item, 5))
