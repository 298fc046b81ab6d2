"""Rec-PCA (jaxrec.init.recpca) against a dense numpy Laplacian built by python loops."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import explicit_cooccurrence, explicit_laplacian, write_tiny_dataset

from jaxrec import Config, get_model, initial_params, load_dataset
from jaxrec.config import ConfigError
from jaxrec.init import llm_init_params, pca_project
from jaxrec.init.recpca import (
    RecPCAError,
    cooccurrence_degree,
    cooccurrence_factors,
    item_cooccurrence,
    laplacian_form,
    rec_pca,
)
from jaxrec.train import check_run


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


# --------------------------------------------------------------- the recpca initializer


def _align_signs(a, b):
    """Columns of ``a`` flipped to agree in sign with ``b`` (eigenvectors are defined up to sign)."""
    s = np.sign(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=0))
    return np.asarray(a) * np.where(s == 0, 1, s)


def _toy(k=3, num_users=40, num_items=30):
    user, item, _ = power_law_data(1, num_users, num_items)
    x = np.random.default_rng(2).standard_normal((num_items, 8)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0))
    params = {"user_embedding": jax.random.uniform(keys[0], (num_users, k), minval=-0.1, maxval=0.1),
              "item_embedding": jax.random.uniform(keys[1], (num_items, k), minval=-0.1, maxval=0.1)}
    return params, x, user, item


def test_recpca_initializer_lambda_zero_is_pca():
    params, x, user, item = _toy()
    pca, _ = llm_init_params(params, x, user, item, 40, Config(init="pca"))
    rec, rep = llm_init_params(params, x, user, item, 40, Config(init="recpca", recpca_lambda=0.0))
    np.testing.assert_allclose(_align_signs(rec["item_embedding"], pca["item_embedding"]), pca["item_embedding"],
                               atol=1e-5)
    np.testing.assert_allclose(_align_signs(rec["user_embedding"], pca["user_embedding"]), pca["user_embedding"],
                               atol=1e-5)
    assert rep.strategy == "recpca" and rep.details["recpca_lambda"] == 0.0 and "Rec-PCA lambda 0" in str(rep)


@pytest.mark.parametrize("lam", [0.5, 1.3])
def test_recpca_initializer_matches_dense_reference_and_records_the_map(lam):
    params, x, user, item = _toy()
    new, rep = llm_init_params(params, x, user, item, 40, Config(init="recpca", recpca_lambda=lam))
    # dense numpy reference: top-3 eigenvectors of Xc^T (I - lam L) Xc, L from python loops
    xc = x.astype(np.float64) - x.mean(0)
    lap = explicit_laplacian(explicit_cooccurrence(user, item, 30))
    vals, vecs = np.linalg.eigh(xc.T @ (np.eye(30) - lam * lap) @ xc)
    ref = xc @ vecs[:, ::-1][:, :3]
    np.testing.assert_allclose(_align_signs(new["item_embedding"], ref), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rep.details["eigenvalues"], vals[::-1][:3], rtol=1e-4, atol=1e-4)
    assert rep.details["nonpositive_eigenvalues"] == int(np.sum(vals[::-1][:3] <= 1e-7 * abs(vals[-1])))
    assert rep.details["isolated_items"] == int(np.sum(explicit_cooccurrence(user, item, 30).sum(1) == 0))
    # the recorded linear map reproduces the table (how new items can be mapped later)
    assert rep.center.shape == (8,) and rep.projection.shape == (8, 3)
    np.testing.assert_allclose((x - rep.center) @ rep.projection, new["item_embedding"], atol=1e-5)


def test_recpca_config_errors_name_the_key():
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="recpca_lambda=.*finite number >= 0"):
            Config(init="recpca", recpca_lambda=bad)
    params, x, user, item = _toy(k=9)  # K = 9 > N = 8
    with pytest.raises(ConfigError, match="embedding_size=9.*N=8"):
        llm_init_params(params, x, user, item, 40, Config(init="recpca"))
    # every user has one distinct item: no co-occurrence edge
    params, x, _, _ = _toy(num_users=30)
    single_user, single_item = np.arange(30, dtype=np.int32), np.arange(30, dtype=np.int32)
    with pytest.raises(ConfigError, match="recpca_lambda=0.5: the item co-occurrence graph.*no edges.*init='pca'"):
        llm_init_params(params, x, single_user, single_item, 30, Config(init="recpca", recpca_lambda=0.5))
    new, _ = llm_init_params(params, x, single_user, single_item, 30, Config(init="recpca", recpca_lambda=0.0))
    assert np.isfinite(np.asarray(new["item_embedding"])).all()  # lambda 0 needs no graph


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recpca_data")
    return write_tiny_dataset(root, name="tiny", seed=3)


@pytest.mark.parametrize("backbone", ["mf", "lightgcn", "sgl", "sgcl"])
def test_recpca_every_backbone_from_training_interactions_only(tiny_data, backbone):
    cfg = Config.for_model(backbone, dataset=str(tiny_data), init="recpca", recpca_lambda=0.8, init_norm="unit",
                           embedding_size=6, topk=(10,), valid_metric="ndcg@10")
    ds = load_dataset(str(tiny_data), cfg)
    emb = np.random.default_rng(4).standard_normal((ds.num_items, 12)).astype(np.float32)
    model = get_model(cfg)
    params = initial_params(model, ds, cfg, embeddings=emb)
    table, _ = rec_pca(emb, ds.train.user, ds.train.item, 6, 0.8)  # the training interactions only
    expected = np.asarray(table) / np.linalg.norm(np.asarray(table), axis=1, keepdims=True)
    got = np.asarray(model.tables["item"].rows(params))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    every = np.concatenate([ds.train.user, ds.valid.user, ds.test.user])
    every_item = np.concatenate([ds.train.item, ds.valid.item, ds.test.item])
    leaked = np.asarray(rec_pca(emb, every, every_item, 6, 0.8)[0])
    assert np.abs(np.abs(leaked) - np.abs(np.asarray(table))).max() > 1e-3  # held-out pairs would change it


def test_recpca_check_run_rejects_a_graph_without_edges(tiny_data):
    import dataclasses

    cfg = Config(dataset=str(tiny_data), init="recpca", topk=(10,), valid_metric="ndcg@10")
    ds = load_dataset(str(tiny_data), cfg)
    first = np.unique(ds.train.user, return_index=True)[1]  # one training item per user
    train = dataclasses.replace(ds.train, user=ds.train.user[first], item=ds.train.item[first],
                                rating=None, timestamp=None)
    one_each = dataclasses.replace(ds, train=train)
    with pytest.raises(ConfigError, match="recpca_lambda=0.5.*no edges"):
        check_run(get_model(cfg), one_each, cfg)  # before any embedding is loaded
    check_run(get_model(cfg), ds, cfg)


def test_recpca_cli_train_with_lambda_and_unit_norm(tiny_data, tmp_path, capsys):
    import json

    from jaxrec import cli
    from jaxrec.init import save_precomputed

    ids = [ln.split("\t")[0] for ln in (tiny_data / "tiny.item").read_text().splitlines()[1:] if ln.strip()]
    emb = save_precomputed(tmp_path / "emb.npy", np.random.default_rng(0).standard_normal((len(ids), 16)), ids)
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(tiny_data), "--model", "lightgcn", "--init", "recpca",
            "--set", "recpca_lambda=0.5", "--set", "init_norm=unit", "--embeddings", str(emb), "--epochs", "2",
            "--embedding-size", "8", "--topk", "5,10", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["init"] == "recpca" and res["config"]["recpca_lambda"] == 0.5
    assert res["config"]["init_norm"] == "unit" and "ndcg@10" in res["test"]
    assert cli.main(argv[:7] + ["--set", "recpca_lambda=-1", "--embeddings", str(emb)]) == 2
    assert "recpca_lambda=-1.0: expected a finite number >= 0" in capsys.readouterr().err
