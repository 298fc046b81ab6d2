"""jaxrec.models.gru4rec against torch.nn.GRU + nn.Linear (RecBole's GRU4Rec network), padding,
dropout, the bce_seq gradient, RecBole's initialization statistics, a short fit, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.errors import JaxrecError
from jaxrec.models import get_model
from jaxrec.models.gru4rec import (
    GRU4REC_DEFAULTS,
    GRU4RecArch,
    GRU4RecError,
    embed,
    init_params,
    make_gru4rec,
    sequence_output,
    user_representation,
)
from jaxrec.train import fit

torch = pytest.importorskip("torch")

ARCH = GRU4RecArch(num_items=13, embedding_size=6, hidden_size=10, num_layers=1, dropout=0.3)
# left-padded, ids + 1 in 1..13; lengths 4, 7, 1, 5
SEQ = np.array([[0, 0, 0, 3, 4, 5, 6],
                [1, 2, 3, 4, 5, 13, 7],
                [0, 0, 0, 0, 0, 0, 7],
                [0, 0, 9, 9, 2, 8, 1]], dtype=np.int32)


def perturbed(params, seed=1, scale=0.3):
    """Every parameter moved off its init (so the comparison sees them all, gates away from 1/2)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def to_torch(params, arch: GRU4RecArch):
    """torch ``nn.GRU(d, h, num_layers, bias, batch_first=True)`` and ``nn.Linear(h, d)`` holding ``params``."""
    gru = torch.nn.GRU(arch.embedding_size, arch.hidden_size, arch.num_layers, bias=arch.bias, batch_first=True)
    dense = torch.nn.Linear(arch.hidden_size, arch.embedding_size)
    t = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))  # noqa: E731
    with torch.no_grad():
        for layer in range(arch.num_layers):
            p = params[f"gru_{layer}"]
            getattr(gru, f"weight_ih_l{layer}").copy_(t(p["kernel_ih"]).T)
            getattr(gru, f"weight_hh_l{layer}").copy_(t(p["kernel_hh"]).T)
            if arch.bias:
                getattr(gru, f"bias_ih_l{layer}").copy_(t(p["bias_ih"]))
                getattr(gru, f"bias_hh_l{layer}").copy_(t(p["bias_hh"]))
        dense.weight.copy_(t(params["dense"]["kernel"]).T)
        dense.bias.copy_(t(params["dense"]["bias"]))
    return gru.eval(), dense.eval()


def torch_outputs(params, arch, seq):
    """Per row: torch's outputs [n, d] over the row's n real items alone (no padding at all)."""
    gru, dense = to_torch(params, arch)
    table = torch.from_numpy(np.array(params["item_embedding"], dtype=np.float32))
    outs = []
    with torch.no_grad():
        for row in seq:
            ids = torch.from_numpy(row[row != 0].astype(np.int64))
            h, _ = gru(table[ids][None])  # [1, n, h]
            outs.append(dense(h)[0].numpy())
    return outs


@pytest.mark.parametrize("num_layers, bias", [(1, False), (2, False), (2, True)])
def test_gru4rec_matches_torch_gru(num_layers, bias):
    arch = GRU4RecArch(num_items=13, embedding_size=6, hidden_size=10, num_layers=num_layers, bias=bias)
    params = perturbed(init_params(jax.random.key(0), arch))
    out = np.asarray(sequence_output(params, SEQ, arch))
    assert out.shape == (4, 7, 6) and out.dtype == np.float32
    worst = 0.0
    for b, ref in enumerate(torch_outputs(params, arch, SEQ)):
        n = len(ref)
        np.testing.assert_allclose(out[b, -n:], ref, rtol=1e-5, atol=1e-5)  # every real position
        np.testing.assert_array_equal(out[b, :-n], 0.0)  # padding positions are zeroed
        worst = max(worst, float(np.abs(out[b, -n:] - ref).max()))
    # RecBole's own arithmetic: the batch right-padded, one GRU call, gather_indexes(output, len - 1)
    lengths = (SEQ != 0).sum(1)
    right = np.zeros_like(SEQ)
    for b, n in enumerate(lengths):
        right[b, :n] = SEQ[b, -n:]
    gru, dense = to_torch(params, arch)
    with torch.no_grad():
        h, _ = gru(torch.from_numpy(np.array(params["item_embedding"]))[torch.from_numpy(right).long()])
        ref_last = dense(h).numpy()[np.arange(len(SEQ)), lengths - 1]
    np.testing.assert_allclose(np.asarray(user_representation(params, SEQ, arch)), ref_last, rtol=1e-5, atol=1e-5)
    print(f"num_layers={num_layers} bias={bias}: max |jax - torch| = {worst:.2e}")


def test_gru4rec_padding_is_inert():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    longer = np.pad(SEQ, ((0, 0), (5, 0)))  # the same histories with 5 more padding columns
    np.testing.assert_allclose(np.asarray(sequence_output(params, longer, ARCH))[:, -7:],
                               np.asarray(sequence_output(params, SEQ, ARCH)), rtol=1e-6, atol=1e-6)
    # the padding row's values never reach an output
    noisy = dict(params, item_embedding=params["item_embedding"].at[0].set(5.0))
    np.testing.assert_array_equal(np.asarray(sequence_output(noisy, SEQ, ARCH)),
                                  np.asarray(sequence_output(params, SEQ, ARCH)))


def test_gru4rec_dropout_only_in_training():
    params = init_params(jax.random.key(0), ARCH)
    key = jax.random.key(3)
    eval_out = np.asarray(sequence_output(params, SEQ, ARCH, key=key))  # train=False ignores the key
    np.testing.assert_array_equal(eval_out, np.asarray(sequence_output(params, SEQ, ARCH)))
    a = np.asarray(sequence_output(params, SEQ, ARCH, key=key, train=True))
    np.testing.assert_array_equal(a, np.asarray(sequence_output(params, SEQ, ARCH, key=key, train=True)))
    assert np.abs(a - eval_out).max() > 1e-4
    no_drop = GRU4RecArch(num_items=13, embedding_size=6, hidden_size=10, dropout=0.0)
    np.testing.assert_array_equal(np.asarray(sequence_output(params, SEQ, no_drop, key=key, train=True)), eval_out)
    with pytest.raises(GRU4RecError, match="key"):
        sequence_output(params, SEQ, ARCH, train=True)


def test_gru4rec_bce_seq_gradient_is_finite():
    config = Config("gru4rec", embedding_size=6, hidden_size=10, num_layers=2)
    model = make_gru4rec(config)
    assert (model.context, model.batch_kind) == ("sequences", "sequences")
    params = model.init(jax.random.key(0), 5, 13)
    pos = np.concatenate([SEQ[:, 1:], np.array([[8], [9], [10], [11]], np.int32)], axis=1) * (SEQ != 0)
    neg = np.where(pos != 0, 12, 0).astype(np.int32)
    batch = {"seq": jnp.asarray(SEQ), "pos": jnp.asarray(pos), "neg": jnp.asarray(neg)}
    (loss, _), grads = jax.value_and_grad(model.loss, has_aux=True)(params, None, None, batch, jax.random.key(1))
    assert np.isfinite(float(loss)) and float(loss) > 0
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(np.asarray(g)).all(), jax.tree_util.keystr(path)
        assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(grads["item_embedding"][0]), 0.0)  # padding row gets no gradient


def test_gru4rec_embed():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    user, items = embed(params, SEQ, ARCH, chunk_size=3)  # 4 users in chunks of 3: one padded chunk
    assert user.shape == (4, 6) and items.shape == (13, 6)
    np.testing.assert_allclose(np.asarray(user), np.asarray(sequence_output(params, SEQ, ARCH))[:, -1],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(items), np.asarray(params["item_embedding"])[1:])


def test_gru4rec_init_matches_recbole_statistics():
    """init_params draws from the distributions RecBole's GRU4Rec._init_weights leaves on torch's
    modules (xavier_normal_ table, xavier_uniform_ on layer 0's weights, torch defaults elsewhere).
    Pooled over 8 seeds; the std within 4 / sqrt(n) relative (at least 3%), the mean within 4
    standard errors."""
    arch = GRU4RecArch(num_items=300, embedding_size=32, hidden_size=48, num_layers=2)

    def reference(seed):
        torch.manual_seed(seed)
        emb = torch.nn.Embedding(301, 32, padding_idx=0)
        gru = torch.nn.GRU(32, 48, 2, bias=False, batch_first=True)
        dense = torch.nn.Linear(48, 32)
        torch.nn.init.xavier_normal_(emb.weight)
        torch.nn.init.xavier_uniform_(gru.weight_hh_l0)
        torch.nn.init.xavier_uniform_(gru.weight_ih_l0)
        return {"item_embedding": emb.weight[1:], "gru_0/kernel_ih": gru.weight_ih_l0,
                "gru_0/kernel_hh": gru.weight_hh_l0, "gru_1/kernel_ih": gru.weight_ih_l1,
                "gru_1/kernel_hh": gru.weight_hh_l1, "dense/kernel": dense.weight, "dense/bias": dense.bias}

    def ours(seed):
        p = init_params(jax.random.key(seed), arch)
        assert np.all(np.asarray(p["item_embedding"][0]) == 0)
        flat = {"item_embedding": p["item_embedding"][1:], "dense/kernel": p["dense"]["kernel"],
                "dense/bias": p["dense"]["bias"]}
        flat.update({f"{k}/{n}": v for k in ("gru_0", "gru_1") for n, v in p[k].items()})
        return flat

    refs = [reference(s) for s in range(8)]
    mine = [ours(s) for s in range(8)]
    assert set(refs[0]) == set(mine[0])
    for name in refs[0]:
        a = np.concatenate([np.asarray(m[name]).ravel() for m in mine])
        b = np.concatenate([r[name].detach().numpy().ravel() for r in refs])
        n = b.size
        assert abs(a.mean() - b.mean()) <= 4 * b.std() * (2 / n) ** 0.5, name
        assert a.std() == pytest.approx(b.std(), rel=max(4 / n ** 0.5, 0.03)), name
        assert np.abs(a).max() <= np.abs(b).max() * 1.05 or name == "item_embedding", name  # uniform bounds


def test_gru4rec_defaults_and_registration():
    c = Config.for_model("gru4rec")
    assert (c.embedding_size, c.hidden_size, c.num_layers, c.dropout_rate, c.max_seq_len, c.gru_bias) == (
        64, 128, 1, 0.3, 50, False)
    assert {k: getattr(c, k) for k in GRU4REC_DEFAULTS} == GRU4REC_DEFAULTS
    assert c.seq_loss == "bce" and [t.name for t, _ in get_model(c).objective.terms] == ["bce_seq"]
    assert [t.name for t, _ in get_model(c.replace(seq_loss="ce")).objective.terms] == ["ce_seq"]
    model = get_model(c)
    assert model.name == "gru4rec" and (model.context, model.batch_kind) == ("sequences", "sequences")
    assert model.tables == {"item": model.encoder.item_table} and model.encoder.item_table.offset == 1


def test_gru4rec_fit_tiny(tmp_path):
    folder = write_tiny_dataset(tmp_path)
    config = Config.for_model("gru4rec", dataset=str(folder), data_cache=False, candidates_dir=str(tmp_path / "c"),
                              embedding_size=8, hidden_size=8, max_seq_len=6, batch_size=32, learning_rate=0.01,
                              epochs=2)
    ds = load_dataset(str(folder), config)
    result = fit(get_model(config), ds, config, progress=False)
    assert {"hit@1", "hit@10", "ndcg@10", "mrr"} <= set(result.test_metrics)
    assert all(np.isfinite(v) for v in result.test_metrics.values())
    assert result.params["item_embedding"].shape == (ds.num_items + 1, 8)


@pytest.mark.parametrize("fields, message", [
    ({"hidden_size": 0}, "hidden_size=0"),
    ({"embedding_size": 0}, "embedding_size=0"),
    ({"num_layers": 0}, "num_layers=0"),
    ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
    ({"max_seq_len": 0}, "max_seq_len=0"),
    ({"seq_loss": "bpr"}, "seq_loss='bpr'"),
    ({"num_heads": 2}, "num_heads"),  # a SASRec key, not GRU4Rec's
    ({"sharding": "row"}, "sharding='row'"),
])
def test_gru4rec_bad_config_values(fields, message):
    with pytest.raises(ConfigError, match=message):
        get_model(Config("gru4rec", **fields))


def test_gru4rec_bad_arch_and_inputs():
    for bad, field in [(dict(num_items=0), "num_items"), (dict(hidden_size=0), "hidden_size"),
                       (dict(num_layers=1.5), "num_layers"), (dict(dropout=1.0), "dropout"),
                       (dict(bias=1), "bias")]:
        with pytest.raises(GRU4RecError, match=f"GRU4RecArch.{field}"):
            GRU4RecArch(**{"num_items": 5, **bad})
    assert issubclass(GRU4RecError, JaxrecError) and issubclass(GRU4RecError, ValueError)
    params = init_params(jax.random.key(0), ARCH)
    with pytest.raises(GRU4RecError, match="seq: expected integer"):
        sequence_output(params, SEQ.astype(np.float32), ARCH)
    with pytest.raises(GRU4RecError, match=r"seq: expected int item ids \[B, L\]"):
        sequence_output(params, SEQ[0], ARCH)
    other = GRU4RecArch(num_items=13, embedding_size=6, hidden_size=12)
    with pytest.raises(GRU4RecError, match=r"params\[.*\]: shape"):
        sequence_output(params, SEQ, other)
    with pytest.raises(GRU4RecError, match="structure"):
        sequence_output(params, SEQ, GRU4RecArch(num_items=13, embedding_size=6, hidden_size=10, bias=True))
    with pytest.raises(GRU4RecError, match="chunk_size"):
        embed(params, SEQ, ARCH, chunk_size=0)
