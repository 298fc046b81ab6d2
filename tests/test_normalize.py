"""normalize_table (jaxrec.init.normalize) after every selection strategy, against numpy norms."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxrec.analysis import norm_statistics
from jaxrec.init import initial_item_table, rec_pca
from jaxrec.init.normalize import NormalizeError, normalize_table, typical_row_norm


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
