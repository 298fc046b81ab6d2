"""jaxrec.models.neumf against a torch NeuMF written as RecBole's (GMF * , MLPLayers, predict
layer), the all-items score table and the dot-product embed, the BCE / BPR losses against
torch's, dropout, a short fit that lowers the loss, bad input."""

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
from jaxrec.models.neumf import (
    NEUMF_DEFAULTS,
    NeuMFArch,
    NeuMFError,
    embed,
    init_params,
    pair_logits,
    score_all,
)
from jaxrec.train import fit

torch = pytest.importorskip("torch")

ARCH = NeuMFArch(num_users=7, num_items=11, mf_size=4, mlp_size=5, hidden=(8, 6, 3), dropout=0.2)


def perturbed(params, seed=1, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


class TorchNeuMF(torch.nn.Module):
    """RecBole 1.2.1's NeuMF forward (mf_train and mlp_train True), eval mode."""

    def __init__(self, params, arch):
        super().__init__()
        t = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))  # noqa: E731
        self.user_mf = torch.nn.Embedding.from_pretrained(t(params["user_mf"]))
        self.item_mf = torch.nn.Embedding.from_pretrained(t(params["item_mf"]))
        self.user_mlp = torch.nn.Embedding.from_pretrained(t(params["user_mlp"]))
        self.item_mlp = torch.nn.Embedding.from_pretrained(t(params["item_mlp"]))
        widths = [2 * arch.mlp_size, *arch.hidden]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):  # MLPLayers: Dropout, Linear, ReLU
            lin = torch.nn.Linear(a, b)
            with torch.no_grad():
                lin.weight.copy_(t(params[f"mlp_{i}"]["kernel"]).T)
                lin.bias.copy_(t(params[f"mlp_{i}"]["bias"]))
            layers += [torch.nn.Dropout(arch.dropout), lin, torch.nn.ReLU()]
        self.mlp_layers = torch.nn.Sequential(*layers)
        self.predict_layer = torch.nn.Linear(arch.mf_size + arch.hidden[-1], 1)
        with torch.no_grad():
            self.predict_layer.weight.copy_(t(params["predict"]["kernel"]).T)
            self.predict_layer.bias.copy_(t(params["predict"]["bias"]))
        self.eval()

    def forward(self, user, item):
        mf_output = torch.mul(self.user_mf(user), self.item_mf(item))
        mlp_output = self.mlp_layers(torch.cat((self.user_mlp(user), self.item_mlp(item)), -1))
        return self.predict_layer(torch.cat((mf_output, mlp_output), -1)).squeeze(-1)


def test_neumf_matches_torch_recbole_forward():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    ref_net = TorchNeuMF(params, ARCH)
    users = np.array([0, 3, 6, 6, 2], np.int32)
    items = np.array([10, 0, 4, 5, 2], np.int32)
    got = np.asarray(pair_logits(params, users, items, ARCH))
    with torch.no_grad():
        ref = ref_net(torch.from_numpy(users).long(), torch.from_numpy(items).long()).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # every item for every user: the split first layer gives the same numbers
    uu, ii = np.meshgrid(np.arange(7), np.arange(11), indexing="ij")
    with torch.no_grad():
        full_ref = ref_net(torch.from_numpy(uu.ravel()).long(), torch.from_numpy(ii.ravel()).long()).numpy()
    full_ref = full_ref.reshape(7, 11)
    np.testing.assert_allclose(np.asarray(score_all(params, np.arange(7), ARCH)), full_ref, rtol=1e-5, atol=1e-5)
    user_emb, item_emb = embed(params, ARCH, chunk_size=3)  # 7 users in chunks of 3
    assert user_emb.shape == (7, 11) and item_emb.shape == (11, 11)
    np.testing.assert_allclose(np.asarray(user_emb @ item_emb.T), full_ref, rtol=1e-5, atol=1e-5)


def test_neumf_losses_match_torch():
    config = Config("neumf", mf_embedding_size=4, mlp_embedding_size=5, mlp_hidden_size=(8, 6, 3), dropout_rate=0.0)
    model = get_model(config)
    params = perturbed(model.init(jax.random.key(0), 7, 11))
    batch = {"user": jnp.array([0, 1, 5, 6], jnp.int32), "pos": jnp.array([1, 2, 3, 10], jnp.int32),
             "neg": jnp.array([4, 0, 9, 9], jnp.int32)}
    arch = NeuMFArch(num_users=7, num_items=11, mf_size=4, mlp_size=5, hidden=(8, 6, 3), dropout=0.0)
    ref_net = TorchNeuMF(params, arch)
    tb = {k: torch.from_numpy(np.array(v)).long() for k, v in batch.items()}
    with torch.no_grad():
        lp, ln = ref_net(tb["user"], tb["pos"]), ref_net(tb["user"], tb["neg"])
        bce = torch.nn.BCEWithLogitsLoss()(torch.cat([lp, ln]), torch.cat([torch.ones(4), torch.zeros(4)])).item()
        bpr = -torch.nn.functional.logsigmoid(lp - ln).mean().item()
    loss, aux = model.loss(params, None, None, batch, jax.random.key(1))
    assert float(loss) == pytest.approx(bce, rel=1e-5) and set(aux) == {"neumf_bce"}
    loss_bpr, _ = get_model(config.replace(pair_loss="bpr")).loss(params, None, None, batch, jax.random.key(1))
    assert float(loss_bpr) == pytest.approx(bpr, rel=1e-5)
    grads = jax.grad(lambda p: model.loss(p, None, None, batch, jax.random.key(1))[0])(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)


def test_neumf_dropout_only_in_training():
    params = perturbed(init_params(jax.random.key(0), ARCH))
    u, i = np.arange(7, dtype=np.int32), np.arange(7, dtype=np.int32)
    eval_out = np.asarray(pair_logits(params, u, i, ARCH))
    a = np.asarray(pair_logits(params, u, i, ARCH, key=jax.random.key(2), train=True))
    np.testing.assert_array_equal(a, np.asarray(pair_logits(params, u, i, ARCH, key=jax.random.key(2), train=True)))
    assert np.abs(a - eval_out).max() > 1e-4
    with pytest.raises(NeuMFError, match="key"):
        pair_logits(params, u, i, ARCH, train=True)


def test_neumf_init_matches_recbole():
    arch = NeuMFArch(num_users=500, num_items=400, mf_size=32, mlp_size=32, hidden=(64, 32))
    p = init_params(jax.random.key(0), arch)
    for name in ("user_mf", "item_mf", "user_mlp", "item_mlp"):
        assert np.asarray(p[name]).std() == pytest.approx(0.01, rel=0.03), name  # normal_(0, 0.01)
    w = np.asarray(p["mlp_0"]["kernel"])  # nn.Linear default: U(+-1/sqrt(fan_in)), std = bound / sqrt(3)
    assert w.shape == (64, 64) and np.abs(w).max() <= 1 / 8 and w.std() == pytest.approx(1 / 8 / 3 ** 0.5, rel=0.05)
    assert p["predict"]["kernel"].shape == (64, 1)


def test_neumf_defaults_and_registration():
    c = Config.for_model("neumf")
    assert (c.mf_embedding_size, c.mlp_embedding_size, c.mlp_hidden_size, c.dropout_rate, c.pair_loss) == (
        64, 64, (128, 64), 0.1, "bce")
    assert {k: getattr(c, k) for k in NEUMF_DEFAULTS} == NEUMF_DEFAULTS
    model = get_model(c)
    assert (model.context, model.batch_kind) == ("none", "pairs")
    assert {s: t.key for s, t in model.tables.items()} == {"user": "user_mf", "item": "item_mf"}


@pytest.mark.parametrize("evaluation", ["candidates", "full"])
def test_neumf_fit_lowers_loss(tmp_path, evaluation):
    folder = write_tiny_dataset(tmp_path)
    extra = {} if evaluation == "candidates" else dict(topk=(5,), metrics=("recall", "ndcg"), valid_metric="ndcg@5")
    config = Config.for_model("neumf", dataset=str(folder), data_cache=False, candidates_dir=str(tmp_path / "c"),
                              mf_embedding_size=8, mlp_embedding_size=8, mlp_hidden_size=(16, 8), batch_size=16,
                              learning_rate=0.01, epochs=5, patience=100, evaluation=evaluation, **extra)
    ds = load_dataset(str(folder), config)
    result = fit(get_model(config), ds, config, progress=False)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0], losses
    assert all(np.isfinite(v) for v in result.test_metrics.values())


@pytest.mark.parametrize("fields, message", [
    ({"mf_embedding_size": 0}, "mf_embedding_size=0"),
    ({"mlp_embedding_size": 0}, "mlp_embedding_size=0"),
    ({"mlp_hidden_size": ()}, "mlp_hidden_size=()"),
    ({"mlp_hidden_size": (8, 0)}, "mlp_hidden_size=(8, 0)"),
    ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
    ({"pair_loss": "ce"}, "pair_loss='ce'"),
    ({"embedding_size": 8}, "embedding_size"),
    ({"sharding": "feature"}, "sharding='feature'"),
])
def test_neumf_bad_config_values(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_model(Config("neumf", **fields))


def test_neumf_bad_arch_and_inputs():
    for bad, field in [(dict(num_users=0), "num_users"), (dict(mf_size=0), "mf_size"), (dict(hidden=()), "hidden"),
                       (dict(hidden=[4]), "hidden"), (dict(dropout=1.0), "dropout")]:
        with pytest.raises(NeuMFError, match=f"NeuMFArch.{field}"):
            NeuMFArch(**{"num_users": 3, "num_items": 5, **bad})
    assert issubclass(NeuMFError, JaxrecError) and issubclass(NeuMFError, ValueError)
    params = init_params(jax.random.key(0), ARCH)
    with pytest.raises(NeuMFError, match="item: ids must lie in"):
        pair_logits(params, np.array([0]), np.array([11]), ARCH)
    with pytest.raises(NeuMFError, match="user: expected integer"):
        pair_logits(params, np.array([0.0]), np.array([1]), ARCH)
    with pytest.raises(NeuMFError, match="one shape"):
        pair_logits(params, np.array([0, 1]), np.array([1]), ARCH)
    with pytest.raises(NeuMFError, match=r"params\[.*\]: shape"):
        score_all(params, np.array([0]), NeuMFArch(num_users=7, num_items=11, mf_size=4, mlp_size=5, hidden=(8, 6, 4)))
    with pytest.raises(NeuMFError, match="num_items=20001"):
        get_model(Config("neumf")).init(jax.random.key(0), 3, 20_001)
