"""jaxrec.models.nextitnet against a torch NextItNet written as RecBole's (Conv2d (1, k) over the
zero-padded sequence, LayerNorm, residual), padding, the ce_seq loss against torch's
cross_entropy, RecBole's reg_loss_rb, a short fit that lowers the loss, bad input."""

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
from jaxrec.models.nextitnet import (
    NEXTITNET_DEFAULTS,
    NextItNetArch,
    NextItNetError,
    block_weight_norm,
    embed,
    init_params,
    sequence_output,
    user_representation,
)
from jaxrec.objectives.sequential import next_item_ce
from jaxrec.train import fit

torch = pytest.importorskip("torch")
F = torch.nn.functional

ARCH = NextItNetArch(num_items=13, embedding_size=6, dilations=(1, 2, 1, 2), kernel_size=3)
# left-padded, ids + 1 in 1..13; lengths 4, 9, 1, 5
SEQ = np.array([[0, 0, 0, 0, 0, 3, 4, 5, 6],
                [1, 2, 3, 4, 5, 13, 7, 7, 2],
                [0, 0, 0, 0, 0, 0, 0, 0, 7],
                [0, 0, 0, 0, 9, 9, 2, 8, 1]], dtype=np.int32)


def perturbed(params, seed=1, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


class TorchBlock(torch.nn.Module):
    """RecBole 1.2.1's ``ResidualBlock_b`` (nextitnet.py), verbatim arithmetic."""

    def __init__(self, d, k, dilation):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(d, d, kernel_size=(1, k), padding=0, dilation=dilation)
        self.ln1 = torch.nn.LayerNorm(d, eps=1e-8)
        self.conv2 = torch.nn.Conv2d(d, d, kernel_size=(1, k), padding=0, dilation=dilation * 2)
        self.ln2 = torch.nn.LayerNorm(d, eps=1e-8)
        self.dilation, self.k = dilation, k

    def conv_pad(self, x, dilation):
        x = x.permute(0, 2, 1).unsqueeze(2)
        return torch.nn.ZeroPad2d(((self.k - 1) * dilation, 0, 0, 0))(x)

    def forward(self, x):
        out = self.conv1(self.conv_pad(x, self.dilation)).squeeze(2).permute(0, 2, 1)
        out = F.relu(self.ln1(out))
        out2 = self.conv2(self.conv_pad(out, self.dilation * 2)).squeeze(2).permute(0, 2, 1)
        return F.relu(self.ln2(out2)) + x


def torch_net(params, arch):
    t = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))  # noqa: E731
    blocks = []
    with torch.no_grad():
        for b, r in enumerate(arch.dilations):
            blk, p = TorchBlock(arch.embedding_size, arch.kernel_size, r), params[f"block_{b}"]
            for c in ("conv1", "conv2"):  # ours [k, in, out] -> torch [out, in, 1, k]
                getattr(blk, c).weight.copy_(t(p[c]["kernel"]).permute(2, 1, 0).unsqueeze(2))
                getattr(blk, c).bias.copy_(t(p[c]["bias"]))
            for n in ("ln1", "ln2"):
                getattr(blk, n).weight.copy_(t(p[n]["scale"]))
                getattr(blk, n).bias.copy_(t(p[n]["bias"]))
            blocks.append(blk)
        final = torch.nn.Linear(arch.embedding_size, arch.embedding_size)
        final.weight.copy_(t(params["final"]["kernel"]).T)
        final.bias.copy_(t(params["final"]["bias"]))
    return torch.nn.Sequential(*blocks).eval(), final.eval(), t(params["item_embedding"])


def test_nextitnet_matches_torch_recbole_blocks():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    out = np.asarray(sequence_output(params, SEQ, ARCH))
    assert out.shape == (4, 9, 6) and out.dtype == np.float32
    blocks, final, table = torch_net(params, ARCH)
    lengths = (SEQ != 0).sum(1)
    right = np.zeros_like(SEQ)  # RecBole's right-padded batch
    for b, n in enumerate(lengths):
        right[b, :n] = SEQ[b, -n:]
    with torch.no_grad():
        for b, row in enumerate(SEQ):  # each row alone, unpadded
            ids = torch.from_numpy(row[row != 0].astype(np.int64))
            ref = final(blocks(table[ids][None]))[0].numpy()
            np.testing.assert_allclose(out[b, -len(ref):], ref, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(out[b, :-len(ref)], 0.0)
        # RecBole's forward: the right-padded batch, gather_indexes(len - 1), final_layer
        hidden = blocks(table[torch.from_numpy(right).long()])
        ref_last = final(hidden[torch.arange(4), torch.from_numpy(lengths - 1)]).numpy()
    np.testing.assert_allclose(np.asarray(user_representation(params, SEQ, ARCH)), ref_last, rtol=1e-4, atol=1e-5)


def test_nextitnet_is_causal_and_padding_is_inert():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    base = np.asarray(sequence_output(params, SEQ, ARCH))
    longer = np.pad(SEQ, ((0, 0), (4, 0)))
    np.testing.assert_allclose(np.asarray(sequence_output(params, longer, ARCH))[:, 4:], base, rtol=1e-5, atol=1e-5)
    noisy = dict(params, item_embedding=params["item_embedding"].at[0].set(5.0))
    np.testing.assert_allclose(np.asarray(sequence_output(noisy, SEQ, ARCH)), base, rtol=1e-6, atol=1e-6)
    changed = SEQ.copy()
    changed[:, -1] = 11  # the last item changes: earlier positions do not
    np.testing.assert_allclose(np.asarray(sequence_output(params, changed, ARCH))[:, :-1], base[:, :-1],
                               rtol=1e-6, atol=1e-6)


def test_ce_seq_matches_torch_cross_entropy():
    rng = np.random.default_rng(0)
    out = rng.normal(size=(3, 5, 4)).astype(np.float32)
    table = rng.normal(size=(8, 4)).astype(np.float32)  # I = 7 items + padding row
    pos = np.array([[0, 0, 3, 7, 1], [2, 2, 2, 2, 2], [0, 0, 0, 0, 5]], np.int32)
    bias = rng.normal(size=7).astype(np.float32)
    for b in (None, bias):
        logits = torch.from_numpy(out) @ torch.from_numpy(table[1:]).T
        if b is not None:
            logits = logits + torch.from_numpy(b)
        keep = torch.from_numpy(pos != 0)
        ref = F.cross_entropy(logits[keep], torch.from_numpy(pos)[keep].long() - 1).item()
        got = float(next_item_ce(jnp.asarray(out), jnp.asarray(table), jnp.asarray(pos),
                                 None if b is None else jnp.asarray(b)))
        assert got == pytest.approx(ref, rel=1e-5)
    assert float(next_item_ce(jnp.asarray(out), jnp.asarray(table), jnp.zeros_like(jnp.asarray(pos)))) == 0.0


def test_nextitnet_reg_matches_recbole_reg_loss_rb():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    blocks, _, _ = torch_net(params, ARCH)
    ref = sum(torch.norm(p, 2).item() for n, p in blocks.named_parameters() if n.endswith("weight"))
    assert float(block_weight_norm(params)) == pytest.approx(ref, rel=1e-5)


def test_nextitnet_embed_and_init():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    user, items = embed(params, SEQ, ARCH, chunk_size=3)
    np.testing.assert_allclose(np.asarray(user), np.asarray(sequence_output(params, SEQ, ARCH))[:, -1],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(items), np.asarray(params["item_embedding"])[1:])
    fresh = init_params(jax.random.key(0), NextItNetArch(num_items=399, embedding_size=32))
    emb = np.asarray(fresh["item_embedding"])
    assert np.all(emb[0] == 0) and np.abs(emb).max() <= (1 / 400) ** 0.5  # RecBole: U(-sqrt(1/n), sqrt(1/n))
    assert emb[1:].std() == pytest.approx((1 / 400) ** 0.5 / 3 ** 0.5, rel=0.05)
    conv = np.asarray(fresh["block_0"]["conv1"]["kernel"])  # torch Conv2d default: U(+-1/sqrt(d k))
    assert conv.shape == (3, 32, 32) and np.abs(conv).max() <= 1 / (32 * 3) ** 0.5
    np.testing.assert_array_equal(np.asarray(fresh["final"]["bias"]), np.float32(0.1))
    assert np.asarray(fresh["final"]["kernel"]).std() == pytest.approx((2 / 64) ** 0.5, rel=0.1)  # xavier_normal_
    assert len([k for k in fresh if k.startswith("block_")]) == 10  # (1, 4) x block_num 5


def test_nextitnet_defaults_and_registration():
    c = Config.for_model("nextitnet")
    assert (c.embedding_size, c.block_num, c.dilations, c.kernel_size, c.reg_weight, c.max_seq_len, c.seq_loss) == (
        64, 5, (1, 4), 3, 1e-5, 50, "ce")
    assert {k: getattr(c, k) for k in NEXTITNET_DEFAULTS} == NEXTITNET_DEFAULTS
    model = get_model(c)
    assert (model.context, model.batch_kind) == ("sequences", "sequences")
    assert [t.name for t, _ in model.objective.terms] == ["ce_seq", "reg_rb"]
    assert [t.name for t, _ in get_model(c.replace(seq_loss="bce")).objective.terms] == ["bce_seq", "reg_rb"]


def test_nextitnet_fit_lowers_loss(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    config = Config.for_model("nextitnet", dataset=str(folder), data_cache=False, candidates_dir=str(tmp_path / "c"),
                              embedding_size=8, block_num=1, max_seq_len=6, batch_size=32, learning_rate=0.01,
                              epochs=6, patience=100)
    ds = load_dataset(str(folder), config)
    result = fit(get_model(config), ds, config, progress=False)
    assert {"hit@1", "hit@10", "ndcg@10", "mrr"} <= set(result.test_metrics)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("fields, message", [
    ({"embedding_size": 0}, "embedding_size=0"),
    ({"block_num": 0}, "block_num=0"),
    ({"dilations": ()}, "dilations=()"),
    ({"dilations": (1, 0)}, "dilations=(1, 0)"),
    ({"kernel_size": 0}, "kernel_size=0"),
    ({"reg_weight": -1.0}, "reg_weight=-1.0"),
    ({"seq_loss": "bpr"}, "seq_loss='bpr'"),
    ({"num_heads": 2}, "num_heads"),
    ({"sharding": "row"}, "sharding='row'"),
])
def test_nextitnet_bad_config_values(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_model(Config("nextitnet", **fields))


def test_nextitnet_bad_arch_and_inputs():
    for bad, field in [(dict(num_items=0), "num_items"), (dict(embedding_size=0), "embedding_size"),
                       (dict(dilations=()), "dilations"), (dict(dilations=[1]), "dilations"),
                       (dict(kernel_size=1.5), "kernel_size")]:
        with pytest.raises(NextItNetError, match=f"NextItNetArch.{field}"):
            NextItNetArch(**{"num_items": 5, **bad})
    assert issubclass(NextItNetError, JaxrecError) and issubclass(NextItNetError, ValueError)
    params = init_params(jax.random.key(0), ARCH)
    with pytest.raises(NextItNetError, match="seq: expected integer"):
        sequence_output(params, SEQ.astype(np.float32), ARCH)
    with pytest.raises(NextItNetError, match=r"params\[.*\]: shape"):
        sequence_output(params, SEQ, NextItNetArch(num_items=14, embedding_size=6, dilations=(1, 2, 1, 2)))
    with pytest.raises(NextItNetError, match="structure"):
        sequence_output(params, SEQ, NextItNetArch(num_items=13, embedding_size=6, dilations=(1, 2)))
