"""SGL augmentations: shapes kept, symmetric drops, dense numpy renormalization, drop rates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.graph import build_graph, dense_adjacency, reverse_edge_index
from jaxrec.graph.augment import augment, edge_dropout, node_dropout, pair_uniform, random_walk

ED = jax.jit(edge_dropout, static_argnums=2)
ND = jax.jit(node_dropout, static_argnums=2)


def random_graph(seed, num_users, num_items, n):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, num_users, n)
    i = rng.integers(0, num_items, n)
    return build_graph(u, i, num_users, num_items)


@pytest.fixture(scope="module")
def small():
    return random_graph(0, 20, 30, 200)


@pytest.fixture(scope="module")
def big():
    return random_graph(1, 400, 600, 60_000)


def np_normalized_adjacency(graph, mask):
    """Dense D^-1/2 A D^-1/2 of the kept edges, from scratch in numpy (float64)."""
    n = graph.num_nodes
    row, col = np.asarray(graph.row), np.asarray(graph.indices)
    a = np.zeros((n, n))
    keep = np.asarray(mask) > 0
    a[row[keep], col[keep]] = 1.0
    deg = a.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return inv[:, None] * a * inv[None, :]


def assert_same_structure(view, graph):
    for name in ("indptr", "indices", "row", "weight", "edge_mask", "degree"):
        a, b = getattr(view, name), getattr(graph, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
    np.testing.assert_array_equal(np.asarray(view.indptr), np.asarray(graph.indptr))
    np.testing.assert_array_equal(np.asarray(view.indices), np.asarray(graph.indices))
    np.testing.assert_array_equal(np.asarray(view.row), np.asarray(graph.row))
    assert (view.num_users, view.num_items) == (graph.num_users, graph.num_items)


def assert_symmetric_mask(view):
    rev = reverse_edge_index(view)
    mask = np.asarray(view.edge_mask)
    np.testing.assert_array_equal(mask, mask[rev])


@pytest.mark.parametrize("fn", [ED, ND])
def test_views_keep_shapes_symmetric_and_renormalized(small, fn):
    view = fn(small, jax.random.key(3), 0.3)
    assert_same_structure(view, small)
    assert_symmetric_mask(view)
    mask = np.asarray(view.edge_mask)
    assert 0 < mask.sum() < mask.size  # something dropped, something kept
    np.testing.assert_allclose(np.asarray(dense_adjacency(view)), np_normalized_adjacency(small, mask), atol=1e-6)
    np.testing.assert_allclose(np.asarray(view.degree), np_normalized_adjacency(small, mask).astype(bool).sum(1))
    assert np.all(np.asarray(view.weight)[mask == 0] == 0)


def test_edge_dropout_rate_close_to_ratio(big):
    rev = reverse_edge_index(big)
    for ratio in (0.1, 0.5):
        mask = np.asarray(ED(big, jax.random.key(7), ratio).edge_mask)
        assert_symmetric_mask_arr(mask, rev)
        # ~55k interactions: binomial std of the dropped share ~0.002
        assert abs((1 - mask.mean()) - ratio) < 0.01


def assert_symmetric_mask_arr(mask, rev):
    np.testing.assert_array_equal(mask, mask[rev])


def test_edge_dropout_deterministic_per_key_and_composes(small):
    a = ED(small, jax.random.key(1), 0.3)
    b = ED(small, jax.random.key(1), 0.3)
    c = ED(small, jax.random.key(2), 0.3)
    np.testing.assert_array_equal(np.asarray(a.edge_mask), np.asarray(b.edge_mask))
    assert not np.array_equal(np.asarray(a.edge_mask), np.asarray(c.edge_mask))
    # eager == jit; raw uint32 keys work too
    np.testing.assert_array_equal(np.asarray(edge_dropout(small, jax.random.key(1), 0.3).edge_mask),
                                  np.asarray(a.edge_mask))
    edge_dropout(small, jax.random.PRNGKey(1), 0.3)
    # dropping from a view never brings an edge back
    ac = ED(a, jax.random.key(2), 0.3)
    assert np.all(np.asarray(ac.edge_mask) <= np.asarray(a.edge_mask))
    np.testing.assert_allclose(
        np.asarray(dense_adjacency(ac)), np_normalized_adjacency(small, np.asarray(ac.edge_mask)), atol=1e-6
    )
    # ratio 0 keeps everything, weights unchanged
    z = ED(small, jax.random.key(5), 0.0)
    np.testing.assert_allclose(np.asarray(z.weight), np.asarray(small.weight), rtol=1e-6)


def test_pair_uniform_depends_on_pair_only():
    key = jax.random.key(0)
    a = jnp.array([1, 2, 3, 1], jnp.int32)
    b = jnp.array([5, 5, 7, 5], jnp.int32)
    r = np.asarray(pair_uniform(key, a, b))
    assert r[0] == r[3] and len(set(r[:3].tolist())) == 3
    assert np.all((r >= 0) & (r < 1))
    r2 = np.asarray(pair_uniform(key, jnp.array([1, 9], jnp.int32), jnp.array([5, 9], jnp.int32)))
    assert r2[0] == r[0]


def test_node_dropout_removes_all_edges_of_dropped_nodes(big):
    view = ND(big, jax.random.key(11), 0.2)
    assert_same_structure(view, big)
    mask = np.asarray(view.edge_mask) > 0
    row, col = np.asarray(big.row), np.asarray(big.indices)
    alive = np.asarray(view.degree) > 0  # every kept node of this dense graph keeps some edge
    # kept edges form the subgraph induced by the kept nodes: an edge survives iff both ends do
    np.testing.assert_array_equal(mask, alive[row] & alive[col])
    deg0 = np.asarray(big.degree) > 0
    dropped_share = 1 - alive[deg0].mean()
    assert abs(dropped_share - 0.2) < 0.03
    # both sides are dropped, not only users or only items
    nu = big.num_users
    assert 0.1 < 1 - alive[:nu].mean() < 0.3 and 0.1 < 1 - alive[nu:].mean() < 0.3


def test_random_walk_per_layer_graphs(small):
    rw = jax.jit(random_walk, static_argnums=(2, 3))(small, jax.random.key(4), 0.3, 3)
    assert isinstance(rw, tuple) and len(rw) == 3
    masks = [np.asarray(g.edge_mask) for g in rw]
    for g in rw:
        assert_same_structure(g, small)
        assert_symmetric_mask(g)
        np.testing.assert_allclose(np.asarray(dense_adjacency(g)), np_normalized_adjacency(small, g.edge_mask),
                                   atol=1e-6)
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    assert random_walk(small, jax.random.key(4), 0.3, 0) == ()


def test_augment_dispatch_and_errors(small):
    key = jax.random.key(0)
    np.testing.assert_array_equal(np.asarray(augment(small, key, "ED", 0.2, 2).edge_mask),
                                  np.asarray(edge_dropout(small, key, 0.2).edge_mask))
    assert len(augment(small, key, "RW", 0.2, 2)) == 2
    with pytest.raises(ValueError, match="aug"):
        augment(small, key, "XX", 0.2, 2)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ratio"):
            edge_dropout(small, key, bad)
        with pytest.raises(ValueError, match="ratio"):
            node_dropout(small, key, bad)
