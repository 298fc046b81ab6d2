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
