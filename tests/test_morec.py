"""MoRec: SASRec over projected item-text vectors, against the PyTorch SASRec port with the item
table computed in numpy; training through ``fit`` lowers the loss; config errors name the key."""

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
from jaxrec.models import get_model  # noqa: E402
from jaxrec.models import morec  # noqa: E402
from jaxrec.models.sasrec import SASRecArch  # noqa: E402
from jaxrec.models.textseq import TextSeqContext  # noqa: E402
from jaxrec.train import fit  # noqa: E402

ARCH = SASRecArch(num_items=9, hidden=8, num_blocks=2, num_heads=2, max_len=6, dropout=0.0)


def perturbed(params, seed=1, scale=0.2):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("tuning", ["frozen", "vectors"])
def test_morec_forward_matches_torch_sasrec_on_numpy_projected_text(tuning):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(9, 5)).astype(np.float32)
    params = perturbed(morec.init_params(jax.random.key(0), ARCH, 5, tuning))
    seq = rng.integers(1, 10, size=(4, 6)).astype(np.int32)
    seq[0, :3] = 0
    p = {k: np.asarray(v) if not isinstance(v, dict) else v for k, v in params.items()}
    vectors = text + (np.asarray(params["text_delta"]) if tuning == "vectors" else 0)
    rows = vectors @ np.asarray(p["text_projection"]["kernel"]) + np.asarray(p["text_projection"]["bias"])
    table = np.concatenate([np.zeros((1, 8), np.float32), rows])
    ref_params = {**{k: v for k, v in params.items() if not k.startswith("text_")}, "item_embedding": table}
    model = ts.from_jaxrec(ref_params, 9, 8, 2, 2, 0.0, 6).eval()
    with torch.no_grad():
        ref = model.log2feats(torch.from_numpy(seq).long()).numpy()
    got = morec.sequence_output(params, seq, text, ARCH)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(morec.item_rows(params, text)), table, rtol=1e-5, atol=1e-5)
    users, items = morec.embed(params, TextSeqContext(seq, text), ARCH, chunk_size=3)
    np.testing.assert_allclose(np.asarray(users), ref[:, -1], rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(items), table[1:], rtol=1e-5, atol=1e-5)


def test_morec_params_and_errors():
    frozen = morec.init_params(jax.random.key(0), ARCH, 5)
    assert "item_embedding" not in frozen and "text_delta" not in frozen
    assert frozen["text_projection"]["kernel"].shape == (5, 8)
    vec = morec.init_params(jax.random.key(0), ARCH, 5, "vectors")
    assert vec["text_delta"].shape == (9, 5) and not np.asarray(vec["text_delta"]).any()
    with pytest.raises(morec.MoRecError, match=r"text: shape \(9, 4\)"):
        morec.item_rows(frozen, np.zeros((9, 4)))
    with pytest.raises(morec.MoRecError, match="text_tuning='all'"):
        morec.init_params(jax.random.key(0), ARCH, 5, "all")
    with pytest.raises(ConfigError, match="text_tuning='all'"):
        Config("morec", text_tuning="all")
    with pytest.raises(ConfigError, match="sharding='row'"):
        get_model(Config("morec", sharding="row"))


@pytest.mark.parametrize("tuning", ["frozen", "vectors"])
def test_morec_fit_lowers_the_loss(tmp_path, tuning):
    folder = write_tiny_dataset(tmp_path)
    base = Config.for_model("morec", dataset=str(folder), data_cache=False, candidates_dir=str(tmp_path / "c"),
                            embedding_size=8, max_seq_len=6, batch_size=32, learning_rate=0.01, epochs=6,
                            dropout_rate=0.0, text_tuning=tuning, track=())
    ds = load_dataset(str(folder), base)
    emb = np.random.default_rng(0).normal(size=(ds.num_items, 12)).astype(np.float32)
    config = base.replace(encoder=None, embeddings=str(save_precomputed(tmp_path / "t.npy", emb, ds.item_ids)))
    model = get_model(config)
    assert (model.context, model.batch_kind, model.tables) == ("text_sequences", "sequences", {})
    result = fit(model, ds, config, progress=False)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(np.isfinite(v) for v in result.test_metrics.values())
    assert result.params["text_projection"]["kernel"].shape == (12, 8)
    assert ("text_delta" in result.params) == (tuning == "vectors")
    if tuning == "vectors":
        assert np.abs(np.asarray(result.params["text_delta"])).max() > 0  # the vectors trained


def test_morec_needs_item_text(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    config = Config.for_model("morec", dataset=str(folder), data_cache=False, encoder=None, track=())
    ds = load_dataset(str(folder), config)
    with pytest.raises(ConfigError, match="encoder=None, embeddings=None"):
        fit(get_model(config), ds, config, progress=False)
