"""SGL: jit, finite values and gradients, LightGCN equivalence at ssl_weight=0, and the SSL
term against a dense numpy reference of the two views."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.graph import BipartiteGraph, build_graph
from jaxrec.models import get_model
from jaxrec.models.lightgcn import view_propagate
from jaxrec.models.sgl import make_sgl

U, I, D, L = 12, 15, 8, 2


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(0)
    u = np.concatenate([np.arange(U), rng.integers(0, U, 60)])
    i = np.concatenate([rng.integers(0, I, U), rng.integers(0, I, 60)])
    return build_graph(u, i, U, I)


def config(**kw):
    base = dict(embedding_size=D, num_layers=L, reg_weight=1e-3)
    base.update(kw)
    return Config.for_model("sgl", **base)


def batch(seed=0, size=6):
    rng = np.random.default_rng(seed)
    return {
        "user": jnp.asarray(rng.integers(0, U, size), jnp.int32),
        "pos": jnp.asarray(rng.integers(0, I, size), jnp.int32),
        "neg": jnp.asarray(rng.integers(0, I, size), jnp.int32),
    }


# --- numpy references ---------------------------------------------------------------------

def np_adj(view):
    """Dense D^-1/2 A D^-1/2 from a view's edge mask, in float64."""
    n = view.num_nodes
    row, col, m = (np.asarray(x) for x in (view.row, view.indices, view.edge_mask))
    a = np.zeros((n, n))
    a[row[m > 0], col[m > 0]] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    return inv[:, None] * a * inv[None, :]


def np_view_embed(params, view):
    x = np.concatenate([np.asarray(params["user_embedding"]), np.asarray(params["item_embedding"])]).astype(
        np.float64
    )
    adjs = [np_adj(view)] * L if isinstance(view, BipartiteGraph) else [np_adj(g) for g in view]
    outs = [x]
    for a in adjs:
        outs.append(a @ outs[-1])
    out = sum(outs) / (L + 1)
    return out[:U], out[U:]


def np_info_nce(a, b, tau):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    e = np.exp(a @ b.T / tau)
    return float(-np.mean(np.log(np.diag(e) / e.sum(1))))


def np_ssl(params, views, b, tau):
    u1, i1 = np_view_embed(params, views[0])
    u2, i2 = np_view_embed(params, views[1])
    u, p = np.asarray(b["user"]), np.asarray(b["pos"])
    return np_info_nce(u1[u], u2[u], tau) + np_info_nce(i1[p], i2[p], tau)


# --- tests ------------------------------------------------------------------------------------
# Compiled functions are shared between tests (one compile each): the SSL loss does not
# depend on ssl_aug (only epoch_views does), so one SGL loss serves every augmentation.

SSL_CFG = config(ssl_ratio=0.3, ssl_weight=0.5)
SGL = make_sgl(SSL_CFG)
SGL_GRAD = jax.jit(jax.value_and_grad(SGL.loss, has_aux=True))
LGCN = get_model(Config.for_model("lightgcn", embedding_size=D, num_layers=L, reg_weight=1e-3))
LGCN_GRAD = jax.jit(jax.value_and_grad(LGCN.loss, has_aux=True))


def test_registered():
    model = get_model(config())
    assert model.name == "sgl" and model.needs_negatives


@pytest.mark.parametrize("aug", ["ED", "ND", "RW"])
def test_loss_jit_finite_and_matches_numpy(graph, aug):
    views = make_sgl(config(ssl_aug=aug, ssl_ratio=0.3)).epoch_views(graph, jax.random.key(1))
    if aug == "RW":
        assert all(isinstance(v, tuple) and len(v) == L for v in views["ssl"])
    else:
        assert all(isinstance(v, BipartiteGraph) for v in views["ssl"])
    params = SGL.init(jax.random.key(0), U, I)
    b = batch()
    (loss, aux), grads = SGL_GRAD(params, graph, views, b, jax.random.key(2))
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["user_embedding"]).sum()) > 0
    np.testing.assert_allclose(float(aux["ssl"]), np_ssl(params, views["ssl"], b, SSL_CFG.ssl_tau), rtol=2e-5)
    # the rest of the loss is exactly LightGCN's
    (lg_loss, _), _ = LGCN_GRAD(params, graph, None, b, jax.random.key(2))
    np.testing.assert_allclose(float(loss - SSL_CFG.ssl_weight * aux["ssl"]), float(lg_loss), rtol=1e-5)


def test_ssl_negatives_all_contrasts_every_node_of_the_other_view(graph):
    cfg = config(ssl_ratio=0.3, ssl_weight=0.5, ssl_negatives="all")
    model = make_sgl(cfg)
    views = model.epoch_views(graph, jax.random.key(1))
    params = model.init(jax.random.key(0), U, I)
    b = batch()
    (loss, aux), _ = jax.jit(jax.value_and_grad(model.loss, has_aux=True))(params, graph, views, b, jax.random.key(2))
    u1, i1 = np_view_embed(params, views["ssl"][0])
    u2, i2 = np_view_embed(params, views["ssl"][1])

    def np_all(a, b_tab, ids, tau):  # row ids[k] of a vs all rows of b_tab
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b_tab = b_tab / np.linalg.norm(b_tab, axis=1, keepdims=True)
        e = np.exp(a[ids] @ b_tab.T / tau)
        return float(-np.mean(np.log(e[np.arange(len(ids)), ids] / e.sum(1))))

    u, p = np.asarray(b["user"]), np.asarray(b["pos"])
    want = np_all(u1, u2, u, cfg.ssl_tau) + np_all(i1, i2, p, cfg.ssl_tau)
    np.testing.assert_allclose(float(aux["ssl"]), want, rtol=2e-5)
    assert abs(float(aux["ssl"]) - np_ssl(params, views["ssl"], b, cfg.ssl_tau)) > 1e-3  # differs from in-batch


def test_ssl_weight_zero_equals_lightgcn_exactly(graph):
    model = make_sgl(config(ssl_weight=0.0))
    params = model.init(jax.random.key(3), U, I)
    views = model.epoch_views(graph, jax.random.key(4))
    b = batch(1)
    (l1, a1), g1 = jax.jit(jax.value_and_grad(model.loss, has_aux=True))(params, graph, views, b, jax.random.key(0))
    (l2, a2), g2 = LGCN_GRAD(params, graph, None, b, jax.random.key(0))
    assert float(l1) == float(l2)
    assert float(a1["bpr"]) == float(a2["bpr"]) and float(a1["reg"]) == float(a2["reg"])
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.jit(model.embed)(params, graph), jax.jit(LGCN.embed)(params, graph)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_views_resampled_per_key_and_keep_shapes(graph):
    v1a, v1b = SGL.epoch_views(graph, jax.random.key(1))["ssl"]
    v2a, _ = SGL.epoch_views(graph, jax.random.key(2))["ssl"]
    v1a_again, _ = SGL.epoch_views(graph, jax.random.key(1))["ssl"]
    m = lambda v: np.asarray(v.edge_mask)  # noqa: E731
    assert not np.array_equal(m(v1a), m(v1b))  # the two views of an epoch differ
    assert not np.array_equal(m(v1a), m(v2a))  # new epoch key, new views
    np.testing.assert_array_equal(m(v1a), m(v1a_again))
    for v in (v1a, v1b, v2a):
        assert v.weight.shape == graph.weight.shape and v.indptr.shape == graph.indptr.shape


def test_view_propagate_per_layer_graphs(graph):
    view, _ = make_sgl(config(ssl_aug="RW", ssl_ratio=0.3)).epoch_views(graph, jax.random.key(5))["ssl"]
    params = SGL.init(jax.random.key(0), U, I)
    x = jnp.concatenate([params["user_embedding"], params["item_embedding"]])
    got = np.asarray(jax.jit(view_propagate, static_argnums=(2, 3))(view, x, L, "bcsr"))
    ref_u, ref_i = np_view_embed(params, view)
    np.testing.assert_allclose(got, np.concatenate([ref_u, ref_i]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="per-layer"):
        view_propagate(view, x, L + 1, "bcsr")


def test_singleton_batch_skips_ssl(graph):
    params = SGL.init(jax.random.key(0), U, I)
    views = SGL.epoch_views(graph, jax.random.key(1))
    b = {k: v[:1] for k, v in batch().items()}
    (loss, aux), _ = SGL_GRAD(params, graph, views, b, jax.random.key(0))
    assert np.isfinite(float(loss)) and float(aux["ssl"]) == 0.0
