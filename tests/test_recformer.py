"""RECFORMER-like: the forward pass and the catalog-softmax loss against a numpy implementation
written from the module docstring's formulas; a short ``fit`` lowers the loss; errors name the key."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.init import save_precomputed
from jaxrec.models import get_model
from jaxrec.models import recformer as rf
from jaxrec.models.textseq import TextSeqContext
from jaxrec.train import fit

ARCH = rf.RecformerArch(text_dim=5, hidden=8, num_blocks=2, num_heads=2, dropout=0.0, max_len=6)
erf = np.vectorize(math.erf)


def perturbed(params, seed=1, scale=0.2):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [np.asarray(x + scale * jax.random.normal(k, x.shape), np.float64)
                                     for x, k in zip(leaves, keys)])


def ln(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def lin(x, p):
    return x @ p["kernel"] + p["bias"]


def np_user(params, seq, text, heads=2):
    items = ln(lin(text, params["projection"]), params["projection_norm"])
    out = []
    for row in seq:  # one user at a time, only its real items (no padding at all)
        real = row[row > 0]
        x = np.concatenate([params["cls"][None], items[real - 1]]) + params["position_embedding"][
            np.r_[0, np.flatnonzero(row > 0) + 1]]
        for b in range(2):
            p = params[f"block_{b}"]
            y = ln(x, p["attention_norm"])
            q, k, v = lin(y, p["query"]), lin(y, p["key"]), lin(y, p["value"])
            hd = x.shape[1] // heads
            att = []
            for h in range(heads):
                sl = slice(h * hd, (h + 1) * hd)
                logits = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
                w = np.exp(logits - logits.max(1, keepdims=True))
                att.append((w / w.sum(1, keepdims=True)) @ v[:, sl])
            x = x + lin(np.concatenate(att, 1), p["out"])
            z = lin(ln(x, p["ffn_norm"]), p["ffn_in"])
            x = x + lin(0.5 * z * (1 + erf(z / math.sqrt(2))), p["ffn_out"])
        out.append(ln(x, params["final_norm"])[0])
    return np.stack(out), items


def test_recformer_forward_and_loss_match_numpy():
    rng = np.random.default_rng(0)
    params = perturbed(rf.init_params(jax.random.key(0), ARCH))
    text = rng.normal(size=(9, 5))
    seq = rng.integers(1, 10, size=(4, 6)).astype(np.int32)
    seq[0, :3] = 0
    seq[2, :5] = 0
    p32 = jax.tree.map(lambda x: x.astype(np.float32), params)
    u, v = np_user(params, seq, text)
    np.testing.assert_allclose(np.asarray(rf.user_vectors(p32, seq, text, ARCH)), u, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(rf.item_vectors(p32, text, ARCH)), v, rtol=1e-4, atol=1e-4)
    target = np.array([3, 0, 9, 1])
    un, vn = u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True)
    logits = un @ vn.T / 0.05
    nll = [np.log(np.exp(logits[b]).sum()) - logits[b, target[b] - 1] for b in (0, 2, 3)]
    got = rf.next_item_ce(p32, seq, target, text, ARCH, 0.05, train=False)
    assert float(got) == pytest.approx(np.mean(nll), rel=1e-4)
    # embed scores rank as cos / tau
    enc = rf.recformer_encoder(Config("recformer_like", embedding_size=8, num_heads=2, max_seq_len=6,
                                      dropout_rate=0.0))
    users, items = enc.embed(p32, TextSeqContext(seq, text.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(users @ items.T), logits, rtol=1e-3, atol=1e-3)


def test_recformer_padding_and_errors():
    params = rf.init_params(jax.random.key(0), ARCH)
    text = np.random.default_rng(1).normal(size=(9, 5)).astype(np.float32)
    a = rf.user_vectors(params, np.array([[0, 0, 0, 4, 2, 7]]), text, ARCH)
    b = rf.user_vectors(params, np.array([[0, 4, 2, 7]]), text, ARCH)  # less padding, same items: positions differ
    assert a.shape == (1, 8) and np.isfinite(np.asarray(b)).all()
    with pytest.raises(rf.RecformerError, match=r"text: shape \(9, 4\)"):
        rf.item_vectors(params, text[:, :4], ARCH)
    with pytest.raises(rf.RecformerError, match="exceeds max_len=6"):
        rf.user_vectors(params, np.ones((1, 7), np.int32), text, ARCH)
    with pytest.raises(rf.RecformerError, match="RecformerArch.hidden=9"):
        rf.RecformerArch(text_dim=5, hidden=9, num_heads=2)
    with pytest.raises(ConfigError, match="recformer_temperature=0.0"):
        Config("recformer_like", recformer_temperature=0.0)
    with pytest.raises(ConfigError, match="embedding_size"):
        Config("recformer_like", embedding_size=9, num_heads=2)


def test_recformer_fit_lowers_the_loss(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    base = Config.for_model("recformer_like", dataset=str(folder), data_cache=False,
                            candidates_dir=str(tmp_path / "c"), embedding_size=8, max_seq_len=6, batch_size=16,
                            learning_rate=0.01, epochs=5, dropout_rate=0.0, track=())
    ds = load_dataset(str(folder), base)
    emb = np.random.default_rng(0).normal(size=(ds.num_items, 12)).astype(np.float32)
    config = base.replace(encoder=None, embeddings=str(save_precomputed(tmp_path / "t.npy", emb, ds.item_ids)))
    model = get_model(config)
    assert (model.name, model.context, model.batch_kind) == ("recformer_like", "text_sequences", "sequences")
    result = fit(model, ds, config, progress=False)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(np.isfinite(v) for v in result.test_metrics.values())
