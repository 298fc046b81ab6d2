"""Graph construction, normalization and propagation against dense numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.graph import KERNELS, build_graph, dense_adjacency, light_propagate, propagate, renormalize, reverse_edge_index


def random_interactions(seed=0, users=13, items=17, n=90):
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, n), rng.integers(0, items, n), users, items


def dense_reference(user, item, num_users, num_items):
    """D^-1/2 A D^-1/2 of the bipartite graph, built from scratch with numpy."""
    n = num_users + num_items
    a = np.zeros((n, n))
    a[user, num_users + item] = 1.0
    a[num_users + item, user] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-12)), 0)
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_matches_dense_numpy():
    u, i, nu, ni = random_interactions()
    g = build_graph(u, i, nu, ni)
    np.testing.assert_allclose(np.asarray(dense_adjacency(g)), dense_reference(u, i, nu, ni), rtol=1e-6, atol=1e-7)
    # duplicates merged, both directions present, CSR consistent
    assert g.num_edges == 2 * len(set(zip(u.tolist(), i.tolist())))
    np.testing.assert_array_equal(np.diff(np.asarray(g.indptr)), np.bincount(np.asarray(g.row), minlength=nu + ni))
    np.testing.assert_allclose(np.asarray(g.degree), dense_reference(u, i, nu, ni).astype(bool).sum(1))


def test_build_graph_rejects_bad_ids():
    with pytest.raises(ValueError, match="item ids must lie in"):
        build_graph(np.array([0, 1]), np.array([0, 5]), 2, 5)
    with pytest.raises(ValueError, match="equal length"):
        build_graph(np.array([0, 1]), np.array([0]), 2, 5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_propagate_matches_dense_matmul_values_and_gradients(kernel):
    u, i, nu, ni = random_interactions(1)
    g = build_graph(u, i, nu, ni)
    a = dense_reference(u, i, nu, ni)
    x = np.random.default_rng(2).normal(size=(nu + ni, 6)).astype(np.float32)
    out = jax.jit(propagate, static_argnames="kernel")(g, jnp.asarray(x), kernel=kernel)
    np.testing.assert_allclose(np.asarray(out), a @ x, rtol=1e-5, atol=1e-5)

    # gradient of a 2-layer loss: d/dx sum((A A x) * c) = A^T A^T c
    c = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    loss = lambda x: jnp.sum(propagate(g, propagate(g, x, kernel), kernel) * c)
    grad = jax.jit(jax.grad(loss))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(grad), a.T @ a.T @ c, rtol=1e-4, atol=1e-5)


def test_light_propagate_is_mean_of_layers():
    u, i, nu, ni = random_interactions(4)
    g = build_graph(u, i, nu, ni)
    a = dense_reference(u, i, nu, ni)
    x = np.random.default_rng(5).normal(size=(nu + ni, 4))
    expected = (x + a @ x + a @ a @ x + a @ a @ a @ x) / 4
    np.testing.assert_allclose(np.asarray(light_propagate(g, jnp.asarray(x, jnp.float32), 3)), expected, rtol=1e-5, atol=1e-5)


def test_propagate_rejects_wrong_rows_and_kernel():
    u, i, nu, ni = random_interactions()
    g = build_graph(u, i, nu, ni)
    with pytest.raises(ValueError, match="nodes"):
        propagate(g, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="unknown propagation kernel"):
        propagate(g, jnp.ones((nu + ni, 2)), kernel="nope")


def test_renormalize_drops_edges_like_a_rebuilt_graph():
    u, i, nu, ni = random_interactions(6)
    g = build_graph(u, i, nu, ni)
    rev = reverse_edge_index(g)
    row, col = np.asarray(g.row), np.asarray(g.indices)
    np.testing.assert_array_equal(row[rev], col)
    np.testing.assert_array_equal(col[rev], row)
    # drop every third interaction (both directions)
    edge = np.arange(g.num_edges)
    canon = np.minimum(edge, rev)
    mask = (canon % 3 != 0).astype(np.float32)
    g2 = jax.jit(renormalize)(g, jnp.asarray(mask))
    assert g2.indices.shape == g.indices.shape
    kept = mask > 0
    users = row[kept & (row < nu)]
    items = col[kept & (row < nu)] - nu
    np.testing.assert_allclose(np.asarray(dense_adjacency(g2)), dense_reference(users, items, nu, ni), rtol=1e-6, atol=1e-7)
    x = np.random.default_rng(7).normal(size=(nu + ni, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(propagate(g2, jnp.asarray(x))), dense_reference(users, items, nu, ni) @ x, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- dtypes and weights


@pytest.mark.parametrize("kernel", ["bcsr", "segment_sum", "bcoo", "dense"])
def test_bfloat16_tables_propagate_and_differentiate_in_bfloat16(kernel):
    from jaxrec.config import Config
    from jaxrec.models import get_model

    u, i, nu, ni = random_interactions()
    g = build_graph(u, i, nu, ni)
    x = jax.random.normal(jax.random.PRNGKey(0), (g.num_nodes, 8))
    out = propagate(g, x.astype(jnp.bfloat16), kernel)
    assert out.dtype == jnp.bfloat16
    ref = dense_reference(u, i, nu, ni) @ np.asarray(x, np.float64)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.05, rtol=0.05)
    model = get_model(Config.for_model("lightgcn", embedding_size=8, kernel=kernel))
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), model.init(jax.random.PRNGKey(1), nu, ni))
    batch = {"user": jnp.array([0, 1, 2]), "pos": jnp.array([1, 2, 3]), "neg": jnp.array([4, 5, 6])}
    (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(params, g, None, batch, jax.random.PRNGKey(0))
    assert np.isfinite(float(loss))
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(grads))


def test_float64_graphs_when_x64_is_enabled():
    code = (
        "import jax, numpy as np; jax.config.update('jax_enable_x64', True)\n"
        "from jaxrec.graph import build_graph, propagate, dense_adjacency\n"
        "rng = np.random.default_rng(0); u, i = rng.integers(0, 7, 40), rng.integers(0, 9, 40)\n"
        "g = build_graph(u, i, 7, 9); x = rng.normal(size=(16, 3))\n"
        "a = np.zeros((16, 16)); a[u, 7 + i] = 1; a[7 + i, u] = 1; d = a.sum(1)\n"
        "inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0); ref = inv[:, None] * a * inv[None, :] @ x\n"
        "for k in ('bcsr', 'segment_sum', 'bcoo', 'dense'):\n"
        "    out = propagate(g, jax.numpy.asarray(x), k)\n"
        "    assert out.dtype == np.float64 and np.abs(np.asarray(out) - ref).max() < 1e-12, k\n"
        "print(g.weight.dtype, g.degree.dtype)\n"
    )
    import subprocess
    import sys
    from pathlib import Path

    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["float64", "float64"]


@pytest.mark.parametrize("kernel", ["bcsr", "segment_sum", "bcoo"])
def test_edge_weight_gradient_matches_the_dense_reference(kernel):
    u, i, nu, ni = random_interactions(seed=3)
    g = build_graph(u, i, nu, ni)
    x = jax.random.normal(jax.random.PRNGKey(0), (g.num_nodes, 5))
    t = jax.random.normal(jax.random.PRNGKey(1), (g.num_nodes, 5))

    def loss(w, kern):
        return jnp.sum(t * light_propagate(g.replace(weight=w), x, 2, kern))

    got = np.asarray(jax.grad(loss)(g.weight, kernel))
    # numpy: d/dw_e of sum(t * (x + A x + A A x)) / 3 for A[row_e, col_e] = w_e
    a = np.asarray(dense_adjacency(g), np.float64)
    xn, tn = np.asarray(x, np.float64), np.asarray(t, np.float64)
    row, col = np.asarray(g.row), np.asarray(g.indices)
    # layer 1: t^T (dA) x ; layer 2: t^T (dA A + A dA) x
    ax, at = a @ xn, a.T @ tn
    want = (np.sum(tn[row] * xn[col], 1) + np.sum(tn[row] * ax[col], 1) + np.sum(at[row] * xn[col], 1)) / 3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(got).max() > 0
