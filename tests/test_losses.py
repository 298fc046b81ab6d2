"""Losses against hand-computed numbers, float64 numpy references and naive jnp formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.losses import (
    bpr_loss,
    info_nce,
    info_nce_all,
    info_nce_by_id,
    l2_normalize,
    l2_reg,
    mse_loss,
    reconstruction_loss,
    sgcl_loss,
    sgcl_loss_by_id,
    unique_counts,
)


# --- independent references --------------------------------------------------------------

def np_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def np_info_nce(a, b, tau):
    """-mean_k log(exp(a_k.b_k/t) / sum_j exp(a_k.b_j/t)), written out in float64."""
    a, b = np_normalize(a), np_normalize(b)
    terms = []
    for k in range(a.shape[0]):
        num = math.exp(a[k] @ b[k] / tau)
        den = sum(math.exp(a[k] @ b[j] / tau) for j in range(b.shape[0]))
        terms.append(-math.log(num / den))
    return float(np.mean(terms))


def np_sgcl(u, v, tau):
    """The DESIGN.md 2.1 formula, pair by pair, in float64."""
    u, v = np_normalize(u), np_normalize(v)
    terms = []
    for k in range(u.shape[0]):
        num = math.exp(u[k] @ v[k] / tau)
        den = sum(math.exp(u[k] @ u[j] / tau) for j in range(u.shape[0]))
        den += sum(math.exp(v[k] @ v[j] / tau) for j in range(v.shape[0]))
        terms.append(-math.log(num / den))
    return float(np.mean(terms))


def naive_info_nce(a, b, tau):
    """Direct jnp transcription with explicit exp / sum (no log-sum-exp): for gradients."""
    an = a / jnp.linalg.norm(a, axis=1, keepdims=True)
    bn = b / jnp.linalg.norm(b, axis=1, keepdims=True)
    e = jnp.exp(an @ bn.T / tau)
    return -jnp.mean(jnp.log(jnp.diagonal(e) / jnp.sum(e, axis=1)))


def naive_sgcl(u, v, tau):
    un = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    vn = v / jnp.linalg.norm(v, axis=1, keepdims=True)
    num = jnp.exp(jnp.sum(un * vn, axis=1) / tau)
    den = jnp.sum(jnp.exp(un @ un.T / tau), axis=1) + jnp.sum(jnp.exp(vn @ vn.T / tau), axis=1)
    return -jnp.mean(jnp.log(num / den))


# Jitted once per shape: far fewer compilations than op-by-op eager dispatch.
INFO = jax.jit(info_nce, static_argnums=2)
SGCL = jax.jit(sgcl_loss, static_argnums=2)
GRAD_INFO = jax.jit(jax.grad(info_nce, argnums=(0, 1)), static_argnums=2)
GRAD_SGCL = jax.jit(jax.grad(sgcl_loss, argnums=(0, 1)), static_argnums=2)
GRAD_NAIVE_INFO = jax.jit(jax.grad(naive_info_nce, argnums=(0, 1)), static_argnums=2)
GRAD_NAIVE_SGCL = jax.jit(jax.grad(naive_sgcl, argnums=(0, 1)), static_argnums=2)


def rand(seed, *shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


# --- BPR and L2 ------------------------------------------------------------------------------

def test_bpr_loss_hand_computed():
    # diffs [1, -1]: mean(log(1 + e^-1), log(1 + e^1))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    got = bpr_loss(jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0]))
    assert got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    # equal scores: log 2
    np.testing.assert_allclose(float(bpr_loss(jnp.zeros(3), jnp.zeros(3))), math.log(2), rtol=1e-6)


def test_bpr_loss_stable_for_large_margins():
    got = bpr_loss(jnp.array([-100.0, 100.0]), jnp.array([100.0, -100.0]))
    np.testing.assert_allclose(float(got), 100.0, rtol=1e-6)  # (200 + ~0) / 2


def test_l2_reg_hand_computed():
    e1 = jnp.array([[3.0, 4.0], [0.0, 0.0]])  # Frobenius norm 5
    e2 = jnp.array([[0.0, 1.0], [0.0, 0.0]])  # norm 1
    np.testing.assert_allclose(float(l2_reg(e1, e2)), (5 + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(l2_reg(e1, e2, require_pow=True)), (25 + 1) / 2 / 2, rtol=1e-6)
    with pytest.raises(ValueError):
        l2_reg()


# --- InfoNCE -------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_info_nce_matches_numpy(tau):
    a, b = rand(0, 8, 6), rand(1, 8, 6)
    got = INFO(a, b, tau)
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), np_info_nce(a, b, tau), rtol=1e-5)


def test_info_nce_scale_invariant_and_jit():
    a, b = rand(2, 8, 6), rand(3, 8, 6)
    ref = float(info_nce(a, b, 0.3))  # eager
    np.testing.assert_allclose(float(INFO(10 * a, 0.1 * b, 0.3)), ref, rtol=1e-5)
    np.testing.assert_allclose(float(INFO(a, b, 0.3)), ref, rtol=1e-6)


def test_info_nce_gradient_matches_naive_formula():
    a, b = rand(4, 8, 6), rand(5, 8, 6)
    ga, gb = GRAD_INFO(a, b, 0.5)
    na, nb = GRAD_NAIVE_INFO(a, b, 0.5)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(na), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), np.asarray(nb), rtol=1e-4, atol=1e-6)


def test_info_nce_gradient_finite_differences():
    a, b = rand(6, 8, 6), rand(7, 8, 6)
    g = np.asarray(GRAD_INFO(a, b, 0.5)[0])
    h = 1e-5
    a64 = np.asarray(a, np.float64)
    for idx in [(0, 0), (1, 2), (3, 1)]:
        ap, am = a64.copy(), a64.copy()
        ap[idx] += h
        am[idx] -= h
        fd = (np_info_nce(ap, b, 0.5) - np_info_nce(am, b, 0.5)) / (2 * h)
        np.testing.assert_allclose(g[idx], fd, rtol=1e-3, atol=1e-5)


def test_info_nce_stable_at_small_tau():
    a = rand(8, 8, 6, scale=1e3)
    b = a + rand(9, 8, 6, scale=1.0)
    naive = float(jax.jit(naive_info_nce, static_argnums=2)(a, b, 0.01))
    assert not math.isfinite(naive)  # exp(~100) overflows float32 in the naive form
    got = INFO(a, b, 0.01)
    grads = GRAD_INFO(a, b, 0.01)
    assert np.isfinite(float(got))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    np.testing.assert_allclose(float(got), np_info_nce(a, b, 0.01), rtol=1e-3, atol=1e-4)


# --- SGCL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_sgcl_loss_matches_numpy(tau):
    u, v = rand(10, 8, 6), rand(11, 8, 6)
    got = SGCL(u, v, tau)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), np_sgcl(u, v, tau), rtol=1e-5)


def test_sgcl_loss_hand_computed_two_pairs():
    # u = [e1, e2], v = [e1, e2]: s(u_k, i_k) = 1, u u^T = v v^T = I.
    # pair k: -log(e^{1/t} / (e^{1/t} + 1 + e^{1/t} + 1)); same for both pairs.
    u = jnp.eye(2)
    t = 0.5
    expected = -math.log(math.exp(2) / (2 * math.exp(2) + 2))
    np.testing.assert_allclose(float(SGCL(u, u, t)), expected, rtol=1e-6)


def test_sgcl_gradient_matches_naive_formula():
    u, v = rand(12, 8, 6), rand(13, 8, 6)
    gu, gv = GRAD_SGCL(u, v, 0.4)
    nu, nv = GRAD_NAIVE_SGCL(u, v, 0.4)
    np.testing.assert_allclose(np.asarray(gu), np.asarray(nu), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gv), np.asarray(nv), rtol=1e-4, atol=1e-6)


def test_sgcl_stable_at_small_tau():
    u = rand(14, 8, 6, scale=1e3)
    v = u + rand(15, 8, 6)
    assert not math.isfinite(float(jax.jit(naive_sgcl, static_argnums=2)(u, v, 0.01)))
    got = SGCL(u, v, 0.01)
    grads = GRAD_SGCL(u, v, 0.01)
    assert np.isfinite(float(got))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    np.testing.assert_allclose(float(got), np_sgcl(u, v, 0.01), rtol=1e-3, atol=1e-4)


# --- by-id forms: same loss over distinct ids with multiplicities ---------------------------

def test_unique_counts_static_size_and_zero_padding():
    ids = jnp.array([3, 1, 3, 3, 7, 1])
    uniq, inv, counts = jax.jit(unique_counts, static_argnums=1)(ids, 5)
    assert uniq.shape == counts.shape == (5,)
    np.testing.assert_array_equal(np.asarray(uniq)[:3], [1, 3, 7])
    np.testing.assert_array_equal(np.asarray(counts), [2, 3, 1, 0, 0])  # padding weighs 0
    np.testing.assert_array_equal(np.asarray(uniq)[np.asarray(inv)], np.asarray(ids))


def _dup_ids(seed, batch, rows):
    ids = np.random.default_rng(seed).integers(0, rows, batch)
    ids[:3] = ids[0]  # at least one id three times
    return jnp.asarray(ids)


@pytest.mark.parametrize("batch,rows,max_unique", [(40, 9, None), (7, 30, None), (40, 30, 35)])
def test_info_nce_by_id_equals_gathered_rows_float64_reference(batch, rows, max_unique):
    a_t, b_t = rand(30, rows, 6), rand(31, rows, 6)
    ids = _dup_ids(32, batch, rows)
    got = info_nce_by_id(a_t, b_t, ids, 0.3, max_unique=max_unique)
    np.testing.assert_allclose(float(got), np_info_nce(a_t[ids], b_t[ids], 0.3), rtol=1e-5)
    by_id = jax.jit(jax.grad(lambda a, b: info_nce_by_id(a, b, ids, 0.3), argnums=(0, 1)))
    gathered = jax.jit(jax.grad(lambda a, b: info_nce(a[ids], b[ids], 0.3), argnums=(0, 1)))
    for g, r in zip(by_id(a_t, b_t), gathered(a_t, b_t)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("batch,users,items", [(40, 9, 25), (6, 30, 4)])
def test_sgcl_loss_by_id_equals_gathered_rows_float64_reference(batch, users, items):
    u_t, i_t = rand(33, users, 6), rand(34, items, 6)
    u, p = _dup_ids(35, batch, users), _dup_ids(36, batch, items)
    got = jax.jit(sgcl_loss_by_id, static_argnums=4)(u_t, i_t, u, p, 0.2)
    np.testing.assert_allclose(float(got), np_sgcl(u_t[u], i_t[p], 0.2), rtol=1e-5)
    by_id = jax.grad(lambda a, b: sgcl_loss_by_id(a, b, u, p, 0.2), argnums=(0, 1))
    gathered = jax.grad(lambda a, b: sgcl_loss(a[u], b[p], 0.2), argnums=(0, 1))
    for g, r in zip(by_id(u_t, i_t), gathered(u_t, i_t)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)


def np_info_nce_all(a_t, b_t, ids, tau):
    """SGL reference form in float64: each batch row against every row of the other view."""
    a, b = np_normalize(a_t), np_normalize(b_t)
    terms = []
    for k in np.asarray(ids):
        den = sum(math.exp(a[k] @ b[j] / tau) for j in range(b.shape[0]))
        terms.append(-math.log(math.exp(a[k] @ b[k] / tau) / den))
    return float(np.mean(terms))


@pytest.mark.parametrize("batch,rows", [(40, 9), (5, 30)])
def test_info_nce_all_matches_float64_reference_and_gradients(batch, rows):
    a_t, b_t = rand(40, rows, 6), rand(41, rows, 6)
    ids = _dup_ids(42, batch, rows)
    got = jax.jit(info_nce_all, static_argnums=3)(a_t, b_t, ids, 0.25)
    np.testing.assert_allclose(float(got), np_info_nce_all(a_t, b_t, ids, 0.25), rtol=1e-5)
    # gradients vs a direct transcription over the gathered rows and the whole b table
    def direct(a, b):
        an = a[ids] / jnp.linalg.norm(a[ids], axis=1, keepdims=True)
        bn = b / jnp.linalg.norm(b, axis=1, keepdims=True)
        e = jnp.exp(an @ bn.T / 0.25)
        return -jnp.mean(jnp.log(e[jnp.arange(ids.shape[0]), ids] / jnp.sum(e, axis=1)))
    got_g = jax.grad(lambda a, b: info_nce_all(a, b, ids, 0.25), argnums=(0, 1))(a_t, b_t)
    for g, r in zip(got_g, jax.grad(direct, argnums=(0, 1))(a_t, b_t)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-6)


def test_by_id_losses_reject_singleton_batch_and_bad_tau():
    t = rand(37, 5, 4)
    one, two = jnp.array([1]), jnp.array([1, 2])
    with pytest.raises(ValueError, match="batch size 1"):
        info_nce_by_id(t, t, one, 0.2)
    with pytest.raises(ValueError, match="batch size 1"):
        sgcl_loss_by_id(t, t, one, one, 0.2)
    with pytest.raises(ValueError, match="batch size 1"):
        info_nce_all(t, t, one, 0.2)
    with pytest.raises(ValueError, match="tau"):
        info_nce_all(t, t, two, -0.1)
    with pytest.raises(ValueError, match="tau"):
        info_nce_by_id(t, t, two, 0.0)
    with pytest.raises(ValueError, match="tau"):
        sgcl_loss_by_id(t, t, two, two, -1.0)


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [info_nce, sgcl_loss])
def test_contrastive_rejects_singleton_batch_and_bad_tau(fn):
    with pytest.raises(ValueError, match="batch size 1"):
        fn(rand(0, 1, 4), rand(1, 1, 4), 0.2)
    for tau in (0.0, -0.5):
        with pytest.raises(ValueError, match="tau"):
            fn(rand(0, 3, 4), rand(1, 3, 4), tau)
    with pytest.raises(ValueError, match="batch size 1"):  # also at trace time under jit
        jax.jit(fn, static_argnums=2)(rand(0, 1, 4), rand(1, 1, 4), 0.2)
    with pytest.raises(AssertionError):  # shape mismatch
        fn(rand(0, 3, 4), rand(1, 4, 4), 0.2)


# --- MSE -------------------------------------------------------------------------------------

def test_mse_and_reconstruction_loss():
    a, b = rand(20, 5, 3), rand(21, 5, 3)
    ref = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    np.testing.assert_allclose(float(mse_loss(a, b)), ref, rtol=1e-6)
    assert reconstruction_loss is mse_loss
    np.testing.assert_allclose(float(mse_loss(jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0]))), 5.0)
    with pytest.raises(AssertionError):
        mse_loss(a, b[:4])


def test_l2_normalize_rows():
    x = rand(22, 4, 3)
    np.testing.assert_allclose(np.asarray(l2_normalize(x)), np_normalize(x), rtol=1e-6)
    assert np.isfinite(np.asarray(l2_normalize(jnp.zeros((2, 3))))).all()


def test_sgcl_zero_rows_and_tiny_tau_stay_finite():
    u = rand(16, 8, 6).at[0].set(0.0)
    v = rand(17, 8, 6).at[0].set(0.0)
    for tau in (0.2, 0.001):
        got = SGCL(u, v, tau)
        assert np.isfinite(float(got))
        assert all(np.isfinite(np.asarray(g)).all() for g in GRAD_SGCL(u, v, tau))
    # away from zero rows the value still matches the float64 formula at tiny tau
    w = rand(18, 8, 6)
    np.testing.assert_allclose(float(SGCL(w, -w, 0.005)), np_sgcl(w, -w, 0.005), rtol=1e-4)
