"""jaxrec.models.bert4rec against torch.nn.TransformerEncoderLayer (post-norm, GELU: RecBole's
TransformerLayer arithmetic) plus RecBole's input and output layers, bidirectionality, padding,
the mask token and cloze masking, the cloze loss against torch's cross_entropy, the embed's
output bias, a short fit that lowers the loss, bad input."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.errors import JaxrecError
from jaxrec.models import get_model
from jaxrec.models.bert4rec import (
    BERT4REC_DEFAULTS,
    BERT4RecArch,
    BERT4RecError,
    cloze_inputs,
    cloze_loss,
    embed,
    init_params,
    mask_id,
    sequence_output,
    user_input,
)
from jaxrec.train import fit

torch = pytest.importorskip("torch")
F = torch.nn.functional

ARCH = BERT4RecArch(num_items=13, hidden=8, num_layers=2, num_heads=2, inner=12, max_len=7, ln_eps=1e-12)
M = mask_id(13)  # 14
SEQ = np.array([[0, 0, 0, 3, 4, 5, 6],
                [1, 2, 3, 4, M, 13, 7],
                [0, 0, 0, 0, 0, 0, M],
                [0, 0, 9, M, 2, 8, M]], dtype=np.int32)


def perturbed(params, seed=1, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def t(x):
    return torch.from_numpy(np.array(x, dtype=np.float32))


def torch_reference(params, arch):
    """f(ids [n]) -> h [n, d]: RecBole's BERT4Rec forward on one unpadded row, built from torch modules."""
    d = arch.hidden
    layers = []
    with torch.no_grad():
        for i in range(arch.num_layers):
            p = params[f"layer_{i}"]
            lay = torch.nn.TransformerEncoderLayer(d, arch.num_heads, arch.inner, dropout=0.0, activation="gelu",
                                                   layer_norm_eps=arch.ln_eps, batch_first=True, norm_first=False)
            lay.self_attn.in_proj_weight.copy_(torch.cat([t(p[n]["kernel"]).T for n in ("query", "key", "value")]))
            lay.self_attn.in_proj_bias.copy_(torch.cat([t(p[n]["bias"]) for n in ("query", "key", "value")]))
            lay.self_attn.out_proj.weight.copy_(t(p["dense"]["kernel"]).T)
            lay.self_attn.out_proj.bias.copy_(t(p["dense"]["bias"]))
            for lin, name in ((lay.linear1, "ffn_in"), (lay.linear2, "ffn_out")):
                lin.weight.copy_(t(p[name]["kernel"]).T)
                lin.bias.copy_(t(p[name]["bias"]))
            for norm, name in ((lay.norm1, "attention_norm"), (lay.norm2, "ffn_norm")):
                norm.weight.copy_(t(p[name]["scale"]))
                norm.bias.copy_(t(p[name]["bias"]))
            layers.append(lay.eval())
    table = torch.cat([t(params["item_embedding"]), t(params["mask_embedding"])[None]])
    pos = t(params["position_embedding"])

    def ln(x, name):
        return F.layer_norm(x, (d,), t(params[name]["scale"]), t(params[name]["bias"]), arch.ln_eps)

    def run(ids):
        with torch.no_grad():
            x = ln(table[torch.from_numpy(ids).long()] + pos[:len(ids)], "input_norm")[None]
            for lay in layers:
                x = lay(x)
            h = F.linear(x[0], t(params["output_dense"]["kernel"]).T, t(params["output_dense"]["bias"]))
            return ln(F.gelu(h), "output_norm").numpy()

    return run


def test_bert4rec_matches_torch_transformer():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    out = np.asarray(sequence_output(params, SEQ, ARCH))
    assert out.shape == (4, 7, 8) and out.dtype == np.float32
    ref = torch_reference(params, ARCH)
    for b, row in enumerate(SEQ):
        n = int((row != 0).sum())
        np.testing.assert_allclose(out[b, -n:], ref(row[row != 0]), rtol=1e-4, atol=2e-5)
        np.testing.assert_array_equal(out[b, :-n], 0.0)


def test_bert4rec_is_bidirectional_and_padding_inert():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    base = np.asarray(sequence_output(params, SEQ, ARCH))
    changed = SEQ.copy()
    changed[1, -1] = 11  # a later item changes the earlier outputs of its row only
    out = np.asarray(sequence_output(params, changed, ARCH))
    assert np.abs(out[1, 0] - base[1, 0]).max() > 1e-4
    np.testing.assert_allclose(out[[0, 2, 3]], base[[0, 2, 3]], rtol=1e-6, atol=1e-6)
    arch9 = BERT4RecArch(num_items=13, hidden=8, num_layers=2, num_heads=2, inner=12, max_len=9)
    longer = np.pad(SEQ, ((0, 0), (2, 0)))  # more left padding: same outputs (positions from the first item)
    p9 = dict(params, position_embedding=jnp.concatenate([params["position_embedding"], jnp.ones((2, 8))]))
    np.testing.assert_allclose(np.asarray(sequence_output(p9, longer, arch9))[:, 2:], base, rtol=1e-5, atol=1e-5)
    noisy = dict(params, item_embedding=params["item_embedding"].at[0].set(5.0))
    np.testing.assert_allclose(np.asarray(sequence_output(noisy, SEQ, ARCH)), base, rtol=1e-6, atol=1e-6)


def test_bert4rec_embed_scores_with_bias():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    hist = np.array([[0, 0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 13, 7]], np.int32)
    np.testing.assert_array_equal(np.asarray(user_input(hist, ARCH)),
                                  [[0, 0, 3, 4, 5, 6, M], [2, 3, 4, 5, 13, 7, M]])
    user, items = embed(params, hist, ARCH, chunk_size=1)
    assert user.shape == (2, 9) and items.shape == (13, 9)
    ref = torch_reference(params, ARCH)
    table = np.asarray(params["item_embedding"])[1:]
    bias = np.asarray(params["output_bias"])
    for b, row in enumerate(np.asarray(user_input(hist, ARCH))):
        h = ref(row[row != 0])[-1]
        np.testing.assert_allclose(np.asarray(user @ items.T)[b], table @ h + bias, rtol=1e-4, atol=1e-4)


def test_cloze_inputs_masks_real_items_only():
    seq = np.array([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]], np.int32)
    pos = np.array([[0, 0, 2, 3, 9], [5, 6, 7, 8, 10]], np.int32)
    items = np.array([[0, 1, 2, 3, 9], [5, 6, 7, 8, 10]])
    inputs, labels = cloze_inputs(seq, pos, jax.random.key(0), ARCH, mask_ratio=1.0, ft_ratio=0.0)
    np.testing.assert_array_equal(np.asarray(inputs), np.where(items != 0, M, 0))
    np.testing.assert_array_equal(np.asarray(labels), items)
    inputs, labels = cloze_inputs(seq, pos, jax.random.key(0), ARCH, mask_ratio=0.2, ft_ratio=1.0)
    np.testing.assert_array_equal(np.asarray(inputs), np.where(np.arange(5) == 4, M, items))
    np.testing.assert_array_equal(np.asarray(labels), np.where(np.arange(5) == 4, items, 0))
    big = np.tile(np.arange(1, 14, dtype=np.int32)[None, :5], (4000, 1))
    inputs, labels = cloze_inputs(big, big, jax.random.key(1), ARCH, mask_ratio=0.2, ft_ratio=0.5)
    rows_last_only = np.all(np.asarray(labels)[:, :4] == 0, axis=1) & (np.asarray(labels)[:, 4] != 0)
    rate = float((np.asarray(labels) != 0).mean())
    assert 0.5 * 0.2 + 0.5 * 0.2 - 0.02 < rate < 0.5 * 0.2 + 0.5 * 0.2 + 0.02  # ft rows: 1 of 5 masked
    assert 0.45 < rows_last_only.mean() < 0.57  # ft rows plus random rows that masked just the last
    np.testing.assert_array_equal(np.asarray(inputs) == M, np.asarray(labels) != 0)


def test_cloze_loss_matches_torch_cross_entropy():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    inputs = np.array([[0, 0, 3, M, 5, M, 6], [1, 2, M, 4, 5, 13, M]], np.int32)
    labels = np.array([[0, 0, 0, 4, 0, 9, 0], [0, 0, 3, 0, 0, 0, 7]], np.int32)
    ref = torch_reference(params, ARCH)
    logits, targets = [], []
    table, bias = t(params["item_embedding"])[1:], t(params["output_bias"])
    for row, lab in zip(inputs, labels):
        h = torch.from_numpy(ref(row[row != 0]))
        lab = lab[row != 0]
        logits.append(h[torch.from_numpy(lab != 0)] @ table.T + bias)
        targets.append(torch.from_numpy(lab[lab != 0] - 1).long())
    want = F.cross_entropy(torch.cat(logits), torch.cat(targets)).item()
    got = float(cloze_loss(params, inputs, labels, ARCH, None, train=False))
    assert got == pytest.approx(want, rel=1e-5)


def test_bert4rec_defaults_and_registration():
    c = Config.for_model("bert4rec")
    assert (c.embedding_size, c.num_layers, c.num_heads, c.inner_size, c.dropout_rate, c.attn_dropout_rate,
            c.layer_norm_eps, c.mask_ratio, c.ft_ratio, c.max_seq_len) == (64, 2, 2, 256, 0.2, 0.2, 1e-12, 0.2, 0.5, 50)
    assert {k: getattr(c, k) for k in BERT4REC_DEFAULTS} == BERT4REC_DEFAULTS
    model = get_model(c)
    assert (model.context, model.batch_kind) == ("sequences", "sequences")
    assert [t.name for t, _ in model.objective.terms] == ["cloze"]
    p = init_params(jax.random.key(0), BERT4RecArch(num_items=300, hidden=32, inner=64))
    assert np.all(np.asarray(p["item_embedding"][0]) == 0)
    assert np.asarray(p["item_embedding"][1:]).std() == pytest.approx(0.02, rel=0.05)  # normal_(0, 0.02)
    assert np.asarray(p["layer_0"]["ffn_in"]["kernel"]).std() == pytest.approx(0.02, rel=0.05)
    np.testing.assert_array_equal(np.asarray(p["output_bias"]), 0.0)


def test_bert4rec_fit_lowers_loss(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    config = Config.for_model("bert4rec", dataset=str(folder), data_cache=False, candidates_dir=str(tmp_path / "c"),
                              embedding_size=8, num_heads=1, num_layers=1, inner_size=16, max_seq_len=6,
                              batch_size=32, learning_rate=0.01, epochs=5, patience=100, dropout_rate=0.0,
                              attn_dropout_rate=0.0, ft_ratio=1.0)
    ds = load_dataset(str(folder), config)
    result = fit(get_model(config), ds, config, progress=False)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0], losses
    assert {"hit@1", "ndcg@10", "mrr"} <= set(result.test_metrics)


@pytest.mark.parametrize("fields, message", [
    ({"embedding_size": 6, "num_heads": 4}, "embedding_size=6: expected a multiple of num_heads=4"),
    ({"inner_size": 0}, "inner_size=0"),
    ({"mask_ratio": 0.0}, "mask_ratio=0.0"),
    ({"ft_ratio": 1.5}, "ft_ratio=1.5"),
    ({"attn_dropout_rate": 1.0}, "attn_dropout_rate=1.0"),
    ({"max_seq_len": 1}, "max_seq_len=1"),
    ({"layer_norm_eps": 0.0}, "layer_norm_eps=0.0"),
    ({"seq_norm": "prenorm"}, "seq_norm"),
    ({"sharding": "row"}, "sharding='row'"),
])
def test_bert4rec_bad_config_values(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_model(Config("bert4rec", **fields))


def test_bert4rec_bad_arch_and_inputs():
    for bad, field in [(dict(num_items=0), "num_items"), (dict(hidden=6, num_heads=4), "hidden"),
                       (dict(dropout=1.0), "dropout"), (dict(ln_eps=0.0), "ln_eps")]:
        with pytest.raises(BERT4RecError, match=f"BERT4RecArch.{field}"):
            BERT4RecArch(**{"num_items": 5, **bad})
    assert issubclass(BERT4RecError, JaxrecError) and issubclass(BERT4RecError, ValueError)
    params = init_params(jax.random.key(0), ARCH)
    with pytest.raises(BERT4RecError, match="exceeds max_len=7"):
        sequence_output(params, np.ones((2, 8), np.int32), ARCH)
    with pytest.raises(BERT4RecError, match="key"):
        sequence_output(params, SEQ, ARCH, train=True)
    with pytest.raises(BERT4RecError, match=r"params\[.*\]: shape"):
        sequence_output(params, SEQ, BERT4RecArch(num_items=13, hidden=8, num_heads=2, inner=16, max_len=7))
