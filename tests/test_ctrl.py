"""CTRL over SASRec: the stage-1 InfoNCE against numpy over the torch SASRec port's outputs; the
fine-tuned forward (aligned + delta) against the torch port; stage 1 lowers its InfoNCE and
stage 2 (``fit``) its BCE; config errors name the key."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import torch_sasrec as ts  # noqa: E402
from helpers import write_tiny_dataset  # noqa: E402

from jaxrec.config import Config, ConfigError  # noqa: E402
from jaxrec.data import load_dataset  # noqa: E402
from jaxrec.init import save_precomputed  # noqa: E402
from jaxrec.models import ctrl, get_model  # noqa: E402
from jaxrec.models import sasrec as sr  # noqa: E402
from jaxrec.train import fit  # noqa: E402
from jaxrec.train.state import run_keys  # noqa: E402

ARCH = sr.SASRecArch(num_items=9, hidden=8, num_blocks=2, num_heads=2, max_len=6, dropout=0.0)


def perturbed(params, seed=1, scale=0.2):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def np_info_nce(a, b, tau):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau
    out = []
    for k in range(len(a)):
        out.append(-np.log(np.exp(logits[k, k]) / np.exp(logits[k]).sum()))
    return float(np.mean(out))


def test_ctrl_align_loss_matches_numpy_over_torch_outputs():
    rng = np.random.default_rng(0)
    sasrec = perturbed(sr.init_params(jax.random.key(0), ARCH))
    heads = ctrl.init_heads(jax.random.key(2), 8, 5, 4)
    text = rng.normal(size=(9, 5)).astype(np.float32)
    seq = rng.integers(1, 10, size=(4, 6)).astype(np.int32)
    seq[0, :3] = 0
    seq[2, :5] = 0
    pos = rng.integers(1, 10, size=(4, 6)).astype(np.int32)
    loss, aux = ctrl.align_loss(sasrec, heads, {"seq": seq, "pos": pos}, text, ARCH, 0.2, train=False)
    model = ts.from_jaxrec(sasrec, 9, 8, 2, 2, 0.0, 6).eval()
    with torch.no_grad():
        user = model.log2feats(torch.from_numpy(seq).long()).numpy()[:, -1]
    user_text = np.stack([text[s[s > 0] - 1].mean(0) for s in seq])
    item_id = np.asarray(sasrec["item_embedding"])[pos[:, -1]]
    item_text = text[pos[:, -1] - 1]
    g, h = np.asarray(heads["id_head"]), np.asarray(heads["text_head"])
    want_u = 0.5 * (np_info_nce(user @ g, user_text @ h, 0.2) + np_info_nce(user_text @ h, user @ g, 0.2))
    want_i = 0.5 * (np_info_nce(item_id @ g, item_text @ h, 0.2) + np_info_nce(item_text @ h, item_id @ g, 0.2))
    assert float(aux["user"]) == pytest.approx(want_u, rel=1e-4)
    assert float(aux["item"]) == pytest.approx(want_i, rel=1e-4)
    assert float(loss) == pytest.approx(want_u + want_i, rel=1e-4)


def test_ctrl_fine_tuned_forward_is_sasrec_of_aligned_plus_delta():
    aligned = perturbed(sr.init_params(jax.random.key(0), ARCH))
    delta = perturbed(jax.tree.map(np.zeros_like, aligned), seed=3, scale=0.05)
    seq = np.random.default_rng(0).integers(1, 10, size=(3, 6)).astype(np.int32)
    seq[1, :2] = 0
    enc = ctrl.ctrl_encoder(Config("ctrl", embedding_size=8, num_layers=2, num_heads=2, max_seq_len=6,
                                   dropout_rate=0.0))
    ctx = ctrl.CTRLContext(seq, aligned)
    summed = {k: jax.tree.map(lambda a, b: np.asarray(a) + np.asarray(b), aligned[k], delta[k]) for k in aligned}
    model = ts.from_jaxrec(summed, 9, 8, 2, 2, 0.0, 6).eval()
    with torch.no_grad():
        ref = model.log2feats(torch.from_numpy(seq).long()).numpy()
    np.testing.assert_allclose(np.asarray(enc.forward({"delta": delta}, seq, None, False, ctx)), ref, rtol=1e-5,
                               atol=2e-5)
    users, items = enc.embed({"delta": delta}, ctx)
    np.testing.assert_allclose(np.asarray(users), ref[:, -1], rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(items), np.asarray(summed["item_embedding"])[1:], rtol=1e-6)
    init = enc.init(jax.random.key(0), 0, 9, jax.eval_shape(lambda: ctx))
    assert all(not np.asarray(x).any() for x in jax.tree.leaves(init))


def test_ctrl_alignment_then_fit_lower_their_losses(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    base = Config.for_model("ctrl", dataset=str(folder), data_cache=False, candidates_dir=str(tmp_path / "c"),
                            embedding_size=8, max_seq_len=6, batch_size=16, learning_rate=0.01, epochs=3,
                            dropout_rate=0.0, ctrl_align_epochs=8, ctrl_align_lr=0.01, ctrl_proj_dim=8, track=())
    ds = load_dataset(str(folder), base)
    emb = np.random.default_rng(0).normal(size=(ds.num_items, 12)).astype(np.float32)
    config = base.replace(encoder=None, embeddings=str(save_precomputed(tmp_path / "t.npy", emb, ds.item_ids)))
    aligned, history = ctrl.align(ds, config, emb)
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["loss"] < 0.9 * history[0]["loss"], history
    untouched, none = ctrl.align(ds, config.replace(ctrl_align_epochs=0), emb)
    assert none == []
    ref = sr.init_params(run_keys(config.seed).init, sr.arch_from_config(config, ds.num_items))
    jax.tree.map(np.testing.assert_array_equal, untouched, ref)  # no alignment: plain SASRec's init
    assert np.abs(np.asarray(aligned["item_embedding"]) - np.asarray(ref["item_embedding"])).max() > 0
    model = get_model(config)
    assert (model.context, model.batch_kind, model.tables) == ("ctrl", "sequences", {})
    result = fit(model, ds, config, progress=False)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(np.isfinite(v) for v in result.test_metrics.values())


@pytest.mark.parametrize("fields, message", [
    ({"ctrl_align_epochs": -1}, "ctrl_align_epochs=-1"),
    ({"ctrl_temperature": 0.0}, "ctrl_temperature=0.0"),
    ({"ctrl_proj_dim": 0}, "ctrl_proj_dim=0"),
    ({"ctrl_align_lr": 0.0}, "ctrl_align_lr=0.0"),
    ({"sharding": "row"}, "sharding='row'"),
])
def test_ctrl_bad_config_values(fields, message):
    with pytest.raises(ConfigError, match=message):
        get_model(Config("ctrl", **fields))
