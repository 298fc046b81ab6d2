"""SGCL: no negatives, jit, finite gradients, and the loss against a dense numpy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.graph import build_graph
from jaxrec.models import get_model
from jaxrec.models.sgcl import make_sgcl

U, I, D, L = 12, 15, 8, 2
CFG = Config.for_model("sgcl", embedding_size=D, num_layers=L, reg_weight=1e-2, sgcl_tau=0.3)
SGCL = make_sgcl(CFG)
SGCL_GRAD = jax.jit(jax.value_and_grad(SGCL.loss, has_aux=True))


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(1)
    u = np.concatenate([np.arange(U), rng.integers(0, U, 60)])
    i = np.concatenate([rng.integers(0, I, U), rng.integers(0, I, 60)])
    return build_graph(u, i, U, I)


def batch(seed=0, size=6):
    rng = np.random.default_rng(seed)
    return {"user": jnp.asarray(rng.integers(0, U, size), jnp.int32),
            "pos": jnp.asarray(rng.integers(0, I, size), jnp.int32)}


def np_lightgcn(params, graph):
    n = U + I
    a = np.zeros((n, n))
    a[np.asarray(graph.row), np.asarray(graph.indices)] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    a = inv[:, None] * a * inv[None, :]
    x = np.concatenate([np.asarray(params["user_embedding"]), np.asarray(params["item_embedding"])]).astype(float)
    outs = [x]
    for _ in range(L):
        outs.append(a @ outs[-1])
    out = sum(outs) / (L + 1)
    return out[:U], out[U:]


def np_sgcl_loss(params, graph, b, tau, reg_weight):
    ue, ie = np_lightgcn(params, graph)
    u, p = np.asarray(b["user"]), np.asarray(b["pos"])
    uu = ue[u] / np.linalg.norm(ue[u], axis=1, keepdims=True)
    ii = ie[p] / np.linalg.norm(ie[p], axis=1, keepdims=True)
    terms = []
    for k in range(len(u)):
        num = math.exp(uu[k] @ ii[k] / tau)
        den = sum(math.exp(uu[k] @ uu[j] / tau) for j in range(len(u)))
        den += sum(math.exp(ii[k] @ ii[j] / tau) for j in range(len(u)))
        terms.append(-math.log(num / den))
    ego_u = np.asarray(params["user_embedding"])[u]
    ego_p = np.asarray(params["item_embedding"])[p]
    reg = (np.linalg.norm(ego_u) + np.linalg.norm(ego_p)) / len(u)  # RecBole EmbLoss, require_pow=False
    return float(np.mean(terms)), reg


def test_registered_without_negatives():
    model = get_model(Config.for_model("sgcl"))
    assert model.name == "sgcl" and model.needs_negatives is False


def test_loss_matches_numpy_and_gradients_finite(graph):
    params = SGCL.init(jax.random.key(0), U, I)
    b = batch()
    (loss, aux), grads = SGCL_GRAD(params, graph, None, b, jax.random.key(1))
    con, reg = np_sgcl_loss(params, graph, b, CFG.sgcl_tau, CFG.reg_weight)
    np.testing.assert_allclose(float(aux["sgcl"]), con, rtol=2e-5)
    np.testing.assert_allclose(float(aux["reg"]), reg, rtol=2e-5)
    np.testing.assert_allclose(float(loss), con + CFG.reg_weight * reg, rtol=2e-5)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert float(jnp.abs(grads["item_embedding"]).sum()) > 0


def test_negatives_in_batch_are_ignored(graph):
    params = SGCL.init(jax.random.key(0), U, I)
    b = batch(3)
    with_neg = {**b, "neg": jnp.zeros_like(b["pos"])}
    l1, _ = jax.jit(SGCL.loss)(params, graph, None, b, jax.random.key(0))
    l2, _ = jax.jit(SGCL.loss)(params, graph, None, with_neg, jax.random.key(0))
    assert float(l1) == float(l2)


def test_embed_is_lightgcn(graph):
    params = SGCL.init(jax.random.key(2), U, I)
    ue, ie = jax.jit(SGCL.embed)(params, graph)
    ru, ri = np_lightgcn(params, graph)
    np.testing.assert_allclose(np.asarray(ue), ru, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ie), ri, rtol=1e-5, atol=1e-6)


def test_singleton_batch_is_reg_only(graph):
    params = SGCL.init(jax.random.key(0), U, I)
    b = {k: v[:1] for k, v in batch().items()}
    (loss, aux), grads = SGCL_GRAD(params, graph, None, b, jax.random.key(0))
    assert float(aux["sgcl"]) == 0.0
    np.testing.assert_allclose(float(loss), CFG.reg_weight * float(aux["reg"]), rtol=1e-6)
