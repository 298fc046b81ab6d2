"""jaxrec SASRec against the PyTorch reference port (benchmarks/torch_sasrec.py): same weights,
same outputs; same batches, same Adam steps; the same initialization statistics."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import torch_sasrec as ts  # noqa: E402
from jaxrec.config import Config  # noqa: E402
from jaxrec.data import dataset_from_interactions, remap_ids  # noqa: E402
from jaxrec.data.sequences import training_windows, window_batches  # noqa: E402
from jaxrec.models.sasrec import SASRecArch, bce_loss, init_params, sequence_output  # noqa: E402


def to_torch(params, s: SASRecArch):
    return ts.from_jaxrec(params, s.num_items, s.hidden, s.num_blocks, s.num_heads, s.dropout, s.max_len, s.norm)


@pytest.mark.parametrize("norm", ["reference", "prenorm"])
def test_sasrec_torch_forward_parity(norm):
    s = SASRecArch(num_items=30, hidden=12, num_blocks=2, num_heads=3, max_len=7, norm=norm)
    leaves, tree = jax.tree.flatten(init_params(jax.random.key(0), s))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    seq = np.random.default_rng(0).integers(1, 31, size=(5, 7)).astype(np.int32)
    seq[0, :4] = 0
    seq[1, :6] = 0
    model = to_torch(params, s).eval()
    with torch.no_grad():
        ref = model.log2feats(torch.from_numpy(seq).long()).numpy()
    np.testing.assert_allclose(np.asarray(sequence_output(params, seq, s)), ref, rtol=1e-5, atol=2e-5)
    cand = np.random.default_rng(1).integers(0, 30, size=(5, 4))
    table = np.asarray(params["item_embedding"])
    np.testing.assert_allclose(ts.score(model, seq, cand), np.einsum("bd,bcd->bc", ref[:, -1], table[cand + 1]),
                               rtol=1e-5, atol=2e-5)


def test_sasrec_torch_training_steps_parity():
    """dropout 0 (so both are deterministic): three Adam(1e-3, 0.9, 0.98) steps on the same batches.

    One block keeps the jit compile short; the forward test covers two stacked blocks."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{it}", float(t)) for u in range(12)
            for t, it in enumerate(rng.choice(20, size=rng.integers(4, 12), replace=False))]
    u, i, t = zip(*rows)
    ds = dataset_from_interactions("t", remap_ids(np.array(u), np.array(i), timestamp=np.array(t)),
                                   Config(split="loo_time"))
    s = SASRecArch(num_items=ds.num_items, hidden=8, num_blocks=1, num_heads=2, dropout=0.0, max_len=6)
    params = init_params(jax.random.key(0), s)
    model = to_torch(params, s)
    opt_t = ts.make_optimizer(model)
    opt = optax.adam(1e-3, b1=0.9, b2=0.98)
    state = opt.init(params)

    @jax.jit
    def step(p, st, batch):
        (loss, _), g = jax.value_and_grad(bce_loss, has_aux=True)(p, batch, s, jax.random.key(0))
        up, st = opt.update(g, st, p)
        return optax.apply_updates(p, up), st, loss

    batches = list(window_batches(np.random.default_rng(1), training_windows(ds, 6), batch_size=4))[:3]
    for batch in batches:
        params, state, loss = step(params, state, batch)
        assert ts.train_step(model, opt_t, batch) == pytest.approx(float(loss), rel=1e-5)
    want = to_torch(params, s).state_dict()
    for name, value in model.state_dict().items():
        got, ref = value.numpy(), want[name].numpy()
        if name.endswith("in_proj_bias"):  # key bias: its exact gradient is 0 (softmax ignores a shift of all
            keep = np.r_[0:8, 16:24]        # logits), so Adam turns float rounding noise into steps; skip it
            got, ref = got[keep], ref[keep]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6, err_msg=name)


def test_sasrec_init_matches_reference_statistics():
    """init_params draws from the distributions the reference's xavier_normal_ loop leaves.

    Both sides are pooled over 16 seeds (the torch model is built after seeding, so its default
    bias/LayerNorm init is seeded too: nothing depends on which tests ran before in the process).
    Tolerances are 4 standard errors of a difference of two samples of n values each: the mean
    within 4 * std * sqrt(2 / n), the std within 4 / sqrt(n) relative (the standard error of a sample
    std is at most std / sqrt(2 n) for distributions no heavier-tailed than the normal), never
    tighter than 2%; a wrong fan, a wrong family (normal vs uniform bias at another scale) or a
    missing scale moves the std by far more than that for every tensor here.
    """
    s = SASRecArch(num_items=400, hidden=64, num_blocks=1, num_heads=1, max_len=50)
    seeds = range(16)

    def reference(seed):
        torch.manual_seed(seed)
        return ts.reference_init(ts.TorchSASRec(400, 64, 1, 1, 0.5, 50), seed=seed).state_dict()

    ours = [to_torch(init_params(jax.random.key(seed), s), s).state_dict() for seed in seeds]
    refs = [reference(seed) for seed in seeds]
    for name in refs[0]:
        cut = slice(1, None) if name == "item_emb.weight" else slice(None)  # jaxrec zeroes the padding row
        assert ours[0][name].shape == refs[0][name].shape, name
        a = np.concatenate([o[name].numpy()[cut].ravel() for o in ours])
        b = np.concatenate([r[name].numpy()[cut].ravel() for r in refs])
        n = b.size
        assert abs(a.mean() - b.mean()) <= 4 * b.std() * (2 / n) ** 0.5 + 1e-6, name
        assert a.std() == pytest.approx(b.std(), rel=max(4 / n ** 0.5, 0.02), abs=1e-7), name
