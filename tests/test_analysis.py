"""jaxrec.analysis: collapse measures, norm statistics, Hessian curvature, against numpy references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.analysis import (
    effective_rank,
    hessian_top_eigenvalue,
    hvp,
    information_abundance,
    norm_statistics,
    row_norms,
    singular_values,
    xavier_mean_row_norm,
)
from jaxrec.init.normalize import typical_row_norm
from jaxrec.models import xavier_uniform_table


# ==================================================================== collapse
def test_collapse_singular_values_match_numpy():
    a = np.random.default_rng(0).standard_normal((30, 6)).astype(np.float32)
    sv = singular_values(a)
    np.testing.assert_allclose(sv, np.linalg.svd(a.astype(np.float64), compute_uv=False), rtol=1e-12)
    assert sv.dtype == np.float64 and np.all(np.diff(sv) <= 0)
    np.testing.assert_allclose(sv**2, np.sort(np.linalg.eigvalsh(a.T.astype(np.float64) @ a))[::-1], rtol=1e-8)


def test_collapse_effective_rank_and_abundance_hand_cases():
    assert effective_rank(np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(3.0)
    assert effective_rank(np.array([5.0, 0.0])) == pytest.approx(1.0)
    p = np.array([0.75, 0.25])
    assert effective_rank(np.array([3.0, 1.0])) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.zeros(3)) == 0.0
    assert information_abundance(np.array([4.0, 2.0, 2.0])) == pytest.approx(2.0)
    assert information_abundance(np.zeros(0)) == 0.0
    # a table with two equal singular values (orthogonal columns of equal norm): rank 2, abundance 2
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((10, 2)))
    table = np.hstack([3 * q, np.zeros((10, 3))])
    assert effective_rank(singular_values(table)) == pytest.approx(2.0)
    assert information_abundance(singular_values(table)) == pytest.approx(2.0)


def test_collapse_bad_input():
    with pytest.raises(ValueError, match="table: expected a 2-D"):
        singular_values(np.ones(3))
    with pytest.raises(ValueError, match="sv: expected finite values >= 0"):
        effective_rank(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="sv: expected a 1-D"):
        information_abundance(np.ones((2, 2)))


# ==================================================================== norms
def test_norm_statistics_hand_case():
    t = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)  # norms 5, 0, 1, 2
    s = norm_statistics(t)
    assert (s.rows, s.zero_rows) == (4, 1)
    assert s.mean == pytest.approx(2.0) and s.std == pytest.approx(math.sqrt(14 / 4))
    assert (s.min, s.max) == (0.0, 5.0)
    assert s.cv == pytest.approx(math.sqrt(14 / 4) / 2)
    assert s.max_min_ratio == pytest.approx(5.0)  # over the non-zero rows
    assert s.mean_ratio is None and "1 zero rows" in str(s)
    ref = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert norm_statistics(t, reference=ref).mean_ratio == pytest.approx(1.0)
    np.testing.assert_allclose(row_norms(t), [5, 0, 1, 2])


def test_norm_xavier_mean_row_norm_matches_sampled_tables():
    rows, k = 20000, 8
    sampled = np.asarray(xavier_uniform_table(jax.random.key(0), rows, k))
    mean = row_norms(sampled).mean()
    expected = xavier_mean_row_norm(rows, k, "uniform")
    assert mean == pytest.approx(expected, rel=3e-3)  # sampling error ~1e-3
    assert abs(mean / typical_row_norm(rows, k) - 1) > 8e-3  # the RMS norm is 1.25% higher: not it
    normal = np.asarray(jax.random.normal(jax.random.key(1), (rows, k))) * math.sqrt(2 / (rows + k))
    assert row_norms(normal).mean() == pytest.approx(xavier_mean_row_norm(rows, k, "normal"), rel=5e-3)
    # a table at the expected norm has ratio ~1 against the shape
    s = norm_statistics(sampled, reference=(rows, k))
    assert s.mean_ratio == pytest.approx(1.0, rel=3e-3) and "xavier-uniform [20000, 8]" in str(s)


def test_norm_statistics_bad_input():
    with pytest.raises(ValueError, match="table: expected finite"):
        norm_statistics(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="table: expected a 2-D"):
        norm_statistics(np.ones(3))
    with pytest.raises(ValueError, match="reference: expected a 2-D table or a shape"):
        norm_statistics(np.ones((2, 2)), reference=np.ones(3))
    with pytest.raises(ValueError, match="distribution='gamma'"):
        norm_statistics(np.ones((2, 2)), reference=(10, 2), distribution="gamma")


# ==================================================================== curvature
def quadratic(eigenvalues, seed=0):
    """f(p) = 0.5 v^T A v + c^T v, v = concat(p["a"] [3], p["b"].ravel() [2, 2]), A = Q diag(ev) Q^T."""
    ev = np.asarray(eigenvalues, np.float64)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((ev.size, ev.size)))
    a = (q * ev) @ q.T
    c = rng.standard_normal(ev.size)
    aj, cj = jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32)

    def loss(p, scale):
        v = jnp.concatenate([p["a"], p["b"].ravel()])
        return scale * (0.5 * v @ aj @ v + cj @ v)

    params = {"a": jnp.asarray(rng.standard_normal(3), jnp.float32),
              "b": jnp.asarray(rng.standard_normal((2, 2)), jnp.float32)}
    return loss, params, a, q[:, np.argsort(ev)]


def flat(p):
    return np.concatenate([np.asarray(p["a"]), np.asarray(p["b"]).ravel()])


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_curvature_quadratic_pytree_of_two_arrays(method):
    ev = [10.0, 4.0, 2.0, 1.0, 0.5, -1.0, 0.1]
    loss, params, a, vecs = quadratic(ev)
    r = hessian_top_eigenvalue(loss, params, jnp.float32(1.0), key=jax.random.key(0), method=method, tol=1e-5)
    assert r.converged and r.eigenvalue == pytest.approx(10.0, rel=1e-4) and r.residual < 1e-3
    v = flat(r.vector)
    assert abs(v @ vecs[:, -1]) == pytest.approx(1.0, abs=1e-4)  # the top eigenvector, as a pytree
    assert set(r.vector) == {"a", "b"} and r.vector["b"].shape == (2, 2)
    if method == "lanczos":
        assert r.smallest == pytest.approx(-1.0, rel=1e-4) and r.largest == r.eigenvalue
    # loss_args are jit arguments: scaling the loss scales the curvature
    r2 = hessian_top_eigenvalue(loss, params, jnp.float32(3.0), key=jax.random.key(0), method=method, tol=1e-5)
    assert r2.eigenvalue == pytest.approx(30.0, rel=1e-4)


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_curvature_negative_dominant(method):
    ev = [-8.0, 3.0, 1.0, 0.5, -2.0, 0.2, 0.1]
    loss, params, a, _ = quadratic(ev, seed=1)
    one = jnp.float32(1.0)
    la = hessian_top_eigenvalue(loss, params, one, key=jax.random.key(1), method=method, which="LA", tol=1e-5)
    lm = hessian_top_eigenvalue(loss, params, one, key=jax.random.key(1), method=method, which="LM", tol=1e-5)
    assert la.converged and lm.converged
    assert la.eigenvalue == pytest.approx(3.0, rel=1e-4)  # largest algebraic
    assert lm.eigenvalue == pytest.approx(-8.0, rel=1e-4)  # largest magnitude
    assert la.largest == pytest.approx(3.0, rel=1e-4)


def test_curvature_large_quadratic_converges_before_dimension():
    # 400 parameters, a gap at the top: both methods must stop well before 400 HVPs
    rng = np.random.default_rng(2)
    ev = np.concatenate([[20.0], rng.uniform(-3, 8, 399)])
    q, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    a = jnp.asarray((q * ev) @ q.T, jnp.float32)
    loss = lambda p, a: 0.5 * p["w"].ravel() @ a @ p["w"].ravel()  # noqa: E731
    params = {"w": jnp.zeros((20, 20), jnp.float32)}
    for method in ("lanczos", "power"):
        r = hessian_top_eigenvalue(loss, params, a, key=jax.random.key(2), method=method, tol=1e-4)
        assert r.converged and r.hvps < 120 and r.eigenvalue == pytest.approx(20.0, rel=1e-4), (method, r)


def test_curvature_nonquadratic_loss_matches_dense_hessian():
    # a BPR-like loss of two tiny tables: dense Hessian (jax.hessian on the flat vector) as reference
    rng = np.random.default_rng(3)
    params = {"user": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
              "item": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)}
    batch = (jnp.array([0, 1, 2, 3, 0]), jnp.array([1, 2, 3, 4, 0]), jnp.array([0, 0, 1, 2, 4]))

    def loss(p, batch):
        u, i, j = batch
        x = jnp.sum(p["user"][u] * (p["item"][i] - p["item"][j]), axis=1)
        return -jnp.mean(jax.nn.log_sigmoid(x)) + 0.1 * jnp.sum(p["item"] ** 4)

    vec = jnp.concatenate([params["user"].ravel(), params["item"].ravel()])
    unflat = lambda v: {"user": v[:12].reshape(4, 3), "item": v[12:].reshape(5, 3)}  # noqa: E731
    dense = np.asarray(jax.jit(jax.hessian(lambda v: loss(unflat(v), batch)))(vec), np.float64)
    ev = np.linalg.eigvalsh(0.5 * (dense + dense.T))
    r = hessian_top_eigenvalue(loss, params, batch, key=jax.random.key(3), tol=1e-5)
    assert r.converged and r.eigenvalue == pytest.approx(ev[-1], rel=1e-4)
    assert r.smallest >= ev[0] - 1e-5  # a Ritz value: inside the spectrum, not converged itself
    aux = hessian_top_eigenvalue(lambda p, b: (loss(p, b), {"x": 1.0}), params, batch, key=jax.random.key(3),
                                 tol=1e-5, has_aux=True)  # Model.loss returns (scalar, aux)
    assert aux.eigenvalue == pytest.approx(r.eigenvalue, rel=1e-5)
    hv = hvp(loss)(params, params, batch)  # H p, the pytree API
    np.testing.assert_allclose(np.concatenate([np.asarray(hv["user"]).ravel(), np.asarray(hv["item"]).ravel()]),
                               dense @ np.asarray(vec), rtol=1e-4, atol=1e-5)


def test_curvature_bad_input():
    loss, params, _, _ = quadratic([1.0] * 7)
    one = jnp.float32(1.0)
    with pytest.raises(ValueError, match="which='SM'"):
        hessian_top_eigenvalue(loss, params, one, key=jax.random.key(0), which="SM")
    with pytest.raises(ValueError, match="method='arnoldi'"):
        hessian_top_eigenvalue(loss, params, one, key=jax.random.key(0), method="arnoldi")
    with pytest.raises(ValueError, match="key"):
        hessian_top_eigenvalue(loss, params, one, key=None)
    with pytest.raises(ValueError, match="params: expected a non-empty pytree of floating"):
        hessian_top_eigenvalue(loss, {"a": jnp.arange(3)}, one, key=jax.random.key(0))
