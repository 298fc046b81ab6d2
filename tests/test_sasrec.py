"""jaxrec.models.sasrec against an independent numpy SASRec (the reference's arithmetic)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.models.sasrec import (
    SASRecArch,
    SASRecError,
    as_module,
    bce_loss,
    embed,
    init_params,
    item_table,
    score_candidates,
    sequence_output,
    user_representation,
)

S = SASRecArch(num_items=11, hidden=8, num_blocks=2, num_heads=2, dropout=0.5, max_len=6)
SEQ = np.array([[0, 0, 3, 4, 5, 6],
                [1, 2, 3, 4, 5, 11],
                [0, 0, 0, 0, 0, 7],
                [0, 9, 9, 2, 8, 1]], dtype=np.int32)


def perturbed(params, seed=1, scale=0.3):
    """Make every parameter non-trivial (LayerNorm scales, zero biases) so the test sees them all."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


# ------------------------------------------------------------------------------ numpy reference
def np_ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-8) * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def np_lin(x, p, d):
    return x @ np.asarray(p["kernel"], np.float64).reshape(-1, d) + np.asarray(p["bias"], np.float64).reshape(-1)


def np_mha(q_in, kv_in, att, heads):
    b, length, d = q_in.shape
    hd = d // heads
    q, k, v = (np_lin(x, att[n], d).reshape(b, length, heads, hd)
               for x, n in ((q_in, "query"), (kv_in, "key"), (kv_in, "value")))
    logits = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(hd)
    logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhe->bqhe", w, v).reshape(b, length, d)
    return o @ np.asarray(att["out"]["kernel"], np.float64).reshape(d, d) + np.asarray(att["out"]["bias"], np.float64)


def np_ffn(h, p, d):
    return np_lin(np.maximum(np_lin(h, p["conv1"], d), 0.0), p["conv2"], d)


def np_block(x, p, heads, norm):
    d = x.shape[-1]
    if norm == "reference":  # Q = LN(x); x = Q + MHA(Q, x, x); h = LN(x); x = h + FFN(h)
        q = np_ln(x, p["attention_norm"])
        x = q + np_mha(q, x, p["attention"], heads)
        h = np_ln(x, p["ffn_norm"])
        return h + np_ffn(h, p["ffn"], d)
    h = np_ln(x, p["attention_norm"])
    x = x + np_mha(h, h, p["attention"], heads)
    return x + np_ffn(np_ln(x, p["ffn_norm"]), p["ffn"], d)


def np_forward(params, seq, s):
    table = np.asarray(params["item_embedding"], np.float64)
    pos = np.asarray(params["position_embedding"], np.float64)
    keep = (seq != 0)[..., None]
    x = (table[seq] * np.sqrt(s.hidden) + pos[: seq.shape[1]]) * keep
    for b in range(s.num_blocks):
        x = np_block(x, params[f"block_{b}"], s.num_heads, s.norm) * keep
    return np_ln(x, params["final_norm"])


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("norm", ["reference", "prenorm"])
def test_sasrec_block_matches_numpy(norm):
    s = SASRecArch(num_items=11, hidden=8, num_blocks=1, num_heads=2, max_len=6, norm=norm)
    params = perturbed(init_params(jax.random.key(0), s))
    x = np.random.default_rng(0).normal(size=(3, 6, 8))
    got = as_module(params, s).block_0(jnp.asarray(x, jnp.float32), False, None)
    np.testing.assert_allclose(np.asarray(got), np_block(x, params["block_0"], 2, norm), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["reference", "prenorm"])
def test_sasrec_network_matches_numpy_in_eval_mode(norm):
    s = SASRecArch(**{**S.__dict__, "norm": norm})
    params = perturbed(init_params(jax.random.key(0), s))
    got = np.asarray(sequence_output(params, SEQ, s))
    np.testing.assert_allclose(got, np_forward(params, SEQ, s), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(user_representation(params, SEQ, s)), got[:, -1], rtol=1e-6)


def test_sasrec_is_causal():
    params = perturbed(init_params(jax.random.key(0), S))
    base = np.asarray(sequence_output(params, SEQ, S))
    later = SEQ.copy()
    later[:, 4:] = [[10, 2], [7, 7], [0, 3], [11, 4]]
    out = np.asarray(sequence_output(params, later, S))
    np.testing.assert_array_equal(out[:, :4], base[:, :4])  # positions 0..3 never see 4..5
    assert np.abs(out[:, 4:] - base[:, 4:]).max() > 1e-3
    earlier = SEQ.copy()
    earlier[1, 1] = 10
    assert np.abs(np.asarray(sequence_output(params, earlier, S))[1, 1:] - base[1, 1:]).min() > 0


def test_sasrec_padding_is_inert():
    params = perturbed(init_params(jax.random.key(0), S))
    assert float(jnp.abs(init_params(jax.random.key(0), S)["item_embedding"][0]).max()) == 0.0
    base = np.asarray(sequence_output(params, SEQ, S))
    # padding outputs: LayerNorm of a zero row = the final LayerNorm's bias
    pad = SEQ == 0
    np.testing.assert_allclose(base[pad], np.broadcast_to(np.asarray(params["final_norm"]["bias"]), base[pad].shape),
                               atol=1e-6)
    # the padding row of the item table and the position rows under padding never reach an output
    p2 = jax.tree.map(lambda x: x, params)
    p2["item_embedding"] = params["item_embedding"].at[0].set(5.0)
    np.testing.assert_allclose(np.asarray(sequence_output(p2, SEQ[[0, 2]], S)), base[[0, 2]], atol=1e-6)
    p3 = jax.tree.map(lambda x: x, params)
    p3["position_embedding"] = params["position_embedding"].at[:2].set(-4.0)
    np.testing.assert_allclose(np.asarray(sequence_output(p3, SEQ[[0, 2]], S)), base[[0, 2]], atol=1e-6)


def np_bce(params, batch, s):
    out = np_forward(params, batch["seq"], s)
    table = np.asarray(params["item_embedding"], np.float64)
    pl = (out * table[batch["pos"]]).sum(-1)
    nl = (out * table[batch["neg"]]).sum(-1)
    m = batch["pos"] != 0
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    return -np.log(sig(pl[m])).mean() - np.log(1 - sig(nl[m])).mean()


def test_sasrec_bce_loss_matches_numpy():
    s = SASRecArch(**{**S.__dict__, "dropout": 0.0})
    params = perturbed(init_params(jax.random.key(3), s))
    pos = np.where(SEQ != 0, (SEQ % 11) + 1, 0)
    neg = np.where(SEQ != 0, ((SEQ + 5) % 11) + 1, 0)
    batch = {"user": np.arange(4, dtype=np.int32), "seq": SEQ, "pos": pos, "neg": neg}
    loss, aux = bce_loss(params, batch, s, jax.random.key(0))
    np.testing.assert_allclose(float(loss), np_bce(params, batch, s), rtol=1e-5)
    np.testing.assert_allclose(float(aux["bce_pos"] + aux["bce_neg"]), float(loss), rtol=1e-6)
    # padded targets carry no loss: changing neg there changes nothing
    batch2 = dict(batch, neg=np.where(pos == 0, 3, neg))
    assert float(bce_loss(params, batch2, s, jax.random.key(0))[0]) == pytest.approx(float(loss), rel=1e-6)
    # (gradients, the padding row's included, are compared with torch in test_sasrec_torch.py)


def test_sasrec_dropout_only_in_training():
    params = init_params(jax.random.key(0), S)
    ev = np.asarray(sequence_output(params, SEQ, S))
    np.testing.assert_array_equal(np.asarray(sequence_output(params, SEQ, S, key=jax.random.key(9))), ev)
    t1 = np.asarray(sequence_output(params, SEQ, S, key=jax.random.key(1), train=True))
    t1b = np.asarray(sequence_output(params, SEQ, S, key=jax.random.key(1), train=True))
    t2 = np.asarray(sequence_output(params, SEQ, S, key=jax.random.key(2), train=True))
    np.testing.assert_array_equal(t1, t1b)
    assert np.abs(t1 - ev).max() > 1e-2 and np.abs(t1 - t2).max() > 1e-2
    s0 = SASRecArch(**{**S.__dict__, "dropout": 0.0})
    np.testing.assert_allclose(np.asarray(sequence_output(params, SEQ, s0, key=jax.random.key(1), train=True)), ev,
                               atol=1e-6)
    with pytest.raises(SASRecError, match="key"):
        sequence_output(params, SEQ, S, train=True)


def test_sasrec_embed_and_scores():
    params = perturbed(init_params(jax.random.key(0), S))
    user, items = jax.jit(lambda p, h: embed(p, h, S, chunk_size=3))(params, SEQ)  # 4 users -> 2 chunks, padded
    np.testing.assert_allclose(np.asarray(user), np.asarray(user_representation(params, SEQ, S)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(items), np.asarray(item_table(params))[1:])
    cand = np.array([[0, 1, 2], [10, 4, 4], [5, 6, 7], [9, 8, 0]])
    got = np.asarray(score_candidates(params, SEQ, cand, S))
    ref = np.einsum("bd,bcd->bc", np.asarray(user), np.asarray(items)[cand])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_sasrec_bad_settings_and_inputs():
    with pytest.raises(SASRecError, match="max_len"):
        SASRecArch(num_items=5, max_len=0)
    with pytest.raises(SASRecError, match="num_heads"):
        SASRecArch(num_items=5, hidden=50, num_heads=3)
    with pytest.raises(SASRecError, match="dropout"):
        SASRecArch(num_items=5, dropout=1.0)
    with pytest.raises(SASRecError, match="norm"):
        SASRecArch(num_items=5, norm="post")
    params = init_params(jax.random.key(0), S)
    with pytest.raises(SASRecError, match="max_len=6"):
        sequence_output(params, np.zeros((1, 7), np.int32), S)
    with pytest.raises(SASRecError, match="shape"):
        sequence_output(params, SEQ, SASRecArch(**{**S.__dict__, "num_items": 12}))


def test_sasrec_hash_dropout_masks():
    from flax import nnx

    from jaxrec.models.dropout import HashDropout, dropout_mask, hash_bits

    key = jax.random.key(3)
    mask = np.asarray(dropout_mask(key, 0.3, (200, 500)))
    assert abs(mask.mean() - 0.7) < 4 * np.sqrt(0.21 / mask.size)  # kept with probability 1 - rate
    np.testing.assert_array_equal(mask, np.asarray(dropout_mask(key, 0.3, (200, 500))))  # a function of the key
    other = np.asarray(dropout_mask(jax.random.key(4), 0.3, (200, 500)))
    assert abs((mask == other).mean() - (0.7 ** 2 + 0.3 ** 2)) < 0.01  # independent across keys
    m = mask.astype(float) - mask.mean()
    assert abs((m[:, 1:] * m[:, :-1]).mean() / m.var()) < 0.02  # and across neighbouring elements
    assert abs((m[1:] * m[:-1]).mean() / m.var()) < 0.02
    bits = np.asarray(hash_bits(key, (4096,)))[:, None] >> np.arange(32, dtype=np.uint32) & 1
    np.testing.assert_allclose(bits.mean(axis=0), 0.5, atol=4 * 0.5 / 64)  # every bit balanced
    x = jnp.asarray(np.random.default_rng(0).normal(size=(200, 500)), jnp.float32)
    drop = HashDropout(0.3)
    out = np.asarray(drop(x, rngs=nnx.Rngs(dropout=key)))
    want = np.where(np.asarray(dropout_mask(nnx.Rngs(dropout=key).dropout(), 0.3, x.shape)), np.asarray(x) / 0.7, 0)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(drop(x, deterministic=True)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(HashDropout(0.0)(x, rngs=nnx.Rngs(dropout=key))), np.asarray(x))
    with pytest.raises(ValueError, match="rate"):
        HashDropout(1.0)
