"""normalize_table (jaxrec.init.normalize) after every selection strategy, against numpy norms."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxrec.analysis import norm_statistics
from jaxrec.config import Config, ConfigError
from jaxrec.init import initial_item_table, llm_init_params, rec_pca
from jaxrec.init.normalize import (
    NormalizeError,
    normalize_table,
    rms_row_norm,
    typical_row_norm,
)
from jaxrec.models import TableSpec, xavier_uniform_table
from jaxrec.registry import INIT_NORMS


def table_with_zero_row():
    t = (np.random.default_rng(0).standard_normal((6, 4)) * np.arange(1, 7)[:, None]).astype(np.float32)
    t[2] = 0
    return t


def test_normalize_table_unit_and_typical():
    t = table_with_zero_row()
    norms = np.linalg.norm(t, axis=1)
    out, rep = normalize_table(t, "unit")
    out = np.asarray(out)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 1, 0, 1, 1, 1], rtol=1e-6)
    nz = norms > 0
    np.testing.assert_allclose(out[nz], t[nz] / norms[nz, None], rtol=1e-6)  # same directions
    assert out.dtype == np.float32 and np.all(out[2] == 0)
    assert rep.zero_rows == 1 and rep.target_norm == 1.0 and rep.rows == 6
    assert rep.mean_norm_before == pytest.approx(norms[nz].mean(), rel=1e-6)
    assert (rep.min_norm_before, rep.max_norm_before) == pytest.approx((norms[nz].min(), norms[nz].max()), rel=1e-6)
    assert rep.mean_norm_after == pytest.approx(1.0) and "1 zero rows" in str(rep)
    # typical: the backbone's xavier row norm sqrt(K) sqrt(2 / (rows + K)); own shape or a given one
    out, rep = normalize_table(t, "typical")
    assert rep.target_norm == pytest.approx(math.sqrt(4) * math.sqrt(2 / (6 + 4)))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1)[nz], rep.target_norm, rtol=1e-6)
    out, rep = normalize_table(t, "typical", rows=1682, k=64)
    assert rep.target_norm == pytest.approx(typical_row_norm(1682, 64))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1)[nz], typical_row_norm(1682, 64), rtol=1e-6)
    out, rep = normalize_table(t, "none")
    np.testing.assert_array_equal(np.asarray(out), t)
    assert rep.target_norm is None and rep.mean_norm_after == rep.mean_norm_before


@pytest.mark.parametrize("strategy", ["uniform", "random", "variance", "pca", "full", "recpca"])
def test_normalize_table_after_every_selection(strategy):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((12, 8)) * rng.uniform(0.1, 5, (12, 1))).astype(np.float32)  # spread norms
    user = rng.integers(0, 5, 40).astype(np.int32)
    item = rng.integers(0, 12, 40).astype(np.int32)
    if strategy == "recpca":
        table, _ = rec_pca(x, user, item, 4, 0.5)
    else:
        table = initial_item_table(x, 8 if strategy == "full" else 4, strategy, key=jax.random.key(0),
                                   popularity=np.bincount(item, minlength=12))
    k = table.shape[1]
    before = norm_statistics(table)
    assert before.cv > 0.1  # the spread that normalization removes
    out, rep = normalize_table(table, "typical", rows=12, k=k)
    after = norm_statistics(out, reference=(12, k))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1), typical_row_norm(12, k), rtol=1e-5)
    assert after.cv < 1e-5 and after.max_min_ratio == pytest.approx(1.0, abs=1e-5)
    # mean norm / expected xavier-uniform mean norm = RMS / mean = 1 / (1 - 1/(10 k))
    assert after.mean_ratio == pytest.approx(1 / (1 - 0.1 / k), rel=1e-5)


@pytest.mark.parametrize(
    "args, match",
    [
        ({"mode": "l2"}, "mode='l2': expected one of none, unit, typical"),
        ({"table": np.ones(3)}, "table: expected \\[rows, K\\]"),
        ({"table": np.array([[1.0, np.nan], [1.0, 1.0]])}, "table: expected finite values, 1 rows"),
        ({"mode": "typical", "rows": 0}, "rows=0"),
        ({"mode": "typical", "k": 2.5}, "k=2.5"),
    ],
)
def test_normalize_table_bad_input(args, match):
    kwargs = {"table": np.ones((3, 2)), "mode": "unit"} | args
    with pytest.raises(NormalizeError, match=match):
        normalize_table(**kwargs)


# ---------------------------------------------------------------- init_norm in LLM init

EMB = np.random.default_rng(5).standard_normal((7, 6)).astype(np.float32) * np.arange(1, 8, dtype=np.float32)[:, None]
USER = np.array([0, 0, 1, 1, 1, 2, 3, 3, 3], np.int32)  # user 4 has no training item
ITEM = np.array([0, 1, 0, 2, 6, 3, 0, 4, 5], np.int32)


def _params(num_users=5, num_items=7, k=3, offset=0):
    keys = jax.random.split(jax.random.key(11))
    params = {"item_embedding": xavier_uniform_table(keys[0], num_items + offset, k)}
    if offset:
        params["item_embedding"] = params["item_embedding"].at[:offset].set(0.0)
    else:
        params["user_embedding"] = xavier_uniform_table(keys[1], num_users, k)
    return params


def _user_means(items, user, item, num_users):
    out = np.zeros((num_users, items.shape[1]))
    for u in range(num_users):
        rows = [items[i] for uu, i in zip(user, item) if uu == u]
        if rows:
            out[u] = np.mean(rows, axis=0)
    return out


def test_normalize_init_norm_registry_and_config_errors():
    assert INIT_NORMS.names()[:3] == ("none", "unit", "typical")
    assert Config(init="variance", init_norm="typical").init_norm == "typical"
    with pytest.raises(ConfigError, match="init_norm='l2': unknown item normalization; expected one of none, unit"):
        Config(init="variance", init_norm="l2")
    with pytest.raises(ConfigError, match="init_norm='unit'.*init='none' writes none"):
        Config(init_norm="unit")
    with pytest.raises(ConfigError, match="init_norm='typical' with init_scale='standardize'"):
        Config(init="pca", init_norm="typical", init_scale="standardize")
    Config(init="variance", init_norm="unit", init_scale="minmax")  # minmax acts before selection: composes


def test_normalize_table_typical_reference_is_measured_rms():
    t = table_with_zero_row()
    ref = np.random.default_rng(3).uniform(-0.2, 0.2, (9, 4))
    out, rep = normalize_table(t, "typical", reference=ref)
    target = math.sqrt(np.mean(np.sum(ref ** 2, axis=1)))
    assert rep.target_norm == pytest.approx(target, rel=1e-12) and "random-init table [9, 4]" in rep.target_source
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=1), [target] * 2 + [0] + [target] * 3, rtol=1e-6)
    assert rms_row_norm(ref) == pytest.approx(target)
    # an xavier table's measured RMS is close to the expected one used without a reference
    big = np.asarray(xavier_uniform_table(jax.random.key(0), 1682, 64))
    assert rms_row_norm(big) == pytest.approx(typical_row_norm(1682, 64), rel=5e-3)
    with pytest.raises(NormalizeError, match="reference: give either"):
        normalize_table(t, "typical", rows=3, reference=ref)
    with pytest.raises(NormalizeError, match="mode='typical': target row norm 0.0 \\(RMS row norm of the backbone"):
        normalize_table(t, "typical", reference=np.zeros((3, 4)))
    with pytest.raises(NormalizeError, match="reference: expected the backbone's table"):
        normalize_table(t, "typical", reference=np.ones(4))
    assert normalize_table(t, "none", reference=np.zeros((3, 4)))[1].target_norm is None  # not read


@pytest.mark.parametrize("init", ["uniform", "variance", "pca", "recpca"])
@pytest.mark.parametrize("mode", ["unit", "typical"])
def test_normalize_in_llm_init_then_users_pooled(init, mode):
    params = _params()
    cfg = Config(init=init, init_norm=mode, variance_fraction=0.5, recpca_lambda=0.5)
    plain, _ = llm_init_params(params, EMB, USER, ITEM, 5, cfg.replace(init_norm="none"), jax.random.key(0))
    new, rep = llm_init_params(params, EMB, USER, ITEM, 5, cfg, jax.random.key(0))
    raw = np.asarray(plain["item_embedding"], np.float64)  # the selection alone
    target = 1.0 if mode == "unit" else rms_row_norm(np.asarray(params["item_embedding"]))
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True) * target  # numpy reference
    np.testing.assert_allclose(new["item_embedding"], expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(new["user_embedding"], _user_means(expected, USER, ITEM, 5), rtol=2e-5, atol=1e-6)
    assert np.all(np.asarray(new["user_embedding"])[4] == 0)  # no training items: zero row
    assert rep.init_norm == mode and rep.norm_target == pytest.approx(target, rel=1e-6)
    assert rep.norm["mode"] == mode and rep.item_norm_mean == pytest.approx(target, rel=1e-5)
    assert f"normalized ({mode}" in str(rep)


def test_normalize_sequence_table_offset_and_no_user_table():
    # a sequence model's item table: padding row 0, no user table (SASRec's layout)
    params = _params(offset=1)
    tables = {"item": TableSpec("item_embedding", offset=1)}
    new, rep = llm_init_params(params, EMB, USER, ITEM, 5, Config(init="pca", init_norm="typical"), tables=tables)
    table = np.asarray(new["item_embedding"])
    assert table.shape == (8, 3) and np.all(table[0] == 0)  # padding row kept
    target = rms_row_norm(np.asarray(params["item_embedding"])[1:])  # the entity rows only
    np.testing.assert_allclose(np.linalg.norm(table[1:], axis=1), target, rtol=1e-5)
    assert rep.user_norm_mean is None and rep.norm_target == pytest.approx(target, rel=1e-6)
