"""Extension points: components registered once (a backbone in a user's own file, a kernel, an
initializer, an objective term, a metric) work through Config, fit, the experiment harness and
the CLI; the registries are the one list of valid names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import write_tiny_dataset

import jaxrec
from jaxrec import registry as R
from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.graph import build_graph, propagate
from jaxrec.models import get_model
from jaxrec.objectives import LossInputs, Term, term, weighted_sum

REPO = Path(__file__).resolve().parents[1]

# A backbone written outside the package: MF with an item bias (score = u . i + b_i), its own
# encoder, the built-in BPR + L2 terms. Registered by importing the file (a plugin).
PLUGIN = '''
import dataclasses

import jax
import jax.numpy as jnp
import jaxrec
from jaxrec.models import Encoder, MFSettings, Model, init_tables
from jaxrec.objectives import term, weighted_sum


def build(config):
    dim, bias = config.embedding_size, config.bias_init

    def init(key, num_users, num_items):
        params = init_tables(key, num_users, num_items, dim)
        params["item_bias"] = jnp.full((num_items,), bias, jnp.float32)
        return params

    def embed(params, context):
        users = jnp.concatenate([params["user_embedding"], jnp.ones((params["user_embedding"].shape[0], 1))], 1)
        items = jnp.concatenate([params["item_embedding"], params["item_bias"][:, None]], 1)
        return users, items

    encoder = Encoder("biased_mf", init, embed)
    objective = weighted_sum(term("bpr", config), (term("reg", config), config.reg_weight))
    return Model("biased_mf", encoder, objective, context="none")


@dataclasses.dataclass(frozen=True)
class BiasedMFSettings(MFSettings):
    """MF's settings plus the item bias's starting value (a setting of this backbone only)."""

    bias_init: float = 0.0


jaxrec.register_model("biased_mf", build, settings=BiasedMFSettings, defaults={"learning_rate": 0.01})
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    folder = write_tiny_dataset(root)
    plugin = root / "biased_mf_plugin.py"
    plugin.write_text(PLUGIN)
    settings = dict(dataset=str(folder), epochs=4, batch_size=64, embedding_size=8, topk=(5, 10), patience=100,
                    plugins=(str(plugin),))
    return folder, plugin, settings


# ----------------------------------------------------------------------- registries


def test_every_config_name_field_asks_its_registry():
    fields = {reg.field for reg in R.all_registries().values() if reg.field}
    assert {"model", "init", "kernel", "sharding", "row_comm", "ssl_aug", "init_scale", "metrics",
            "ssl_negatives", "split", "evaluation", "contrast_unique"} <= fields
    from jaxrec.config import models_with_setting, shared_field_names

    for reg in R.all_registries().values():
        if reg.field and reg.field not in ("metrics", "track"):  # the tuple fields: below
            if reg.field == "model":
                kw = {"model": "nope"}
            else:  # a shared key, or a setting of the models that have it (e.g. ssl_aug: SGL's)
                model = "lightgcn" if reg.field in shared_field_names() else models_with_setting(reg.field)[0]
                kw = {"model": model, reg.field: "nope"}
            with pytest.raises(ConfigError, match=rf"{reg.field}='nope': unknown .*expected one of "
                                                  rf"{', '.join(reg.names())}"):
                Config(**kw)
    with pytest.raises(ConfigError, match="metrics='nope': unknown metric"):
        Config(metrics=("recall", "nope"))
    with pytest.raises(ConfigError, match="track='nope': unknown tracker; expected one of tensorboard, mlflow, wandb"):
        Config(track=("tensorboard", "nope"))


def test_registering_twice_refused_unless_replaced():
    R.KERNELS.register("twice_k", "a")
    try:
        R.KERNELS.register("twice_k", "a")  # the same object again: harmless (a plugin imported twice)
        with pytest.raises(ValueError, match="already registered"):
            R.KERNELS.register("twice_k", "b")
        R.KERNELS.register("twice_k", "b", replace=True)
        assert R.KERNELS.get("twice_k") == "b"
    finally:
        R.KERNELS.unregister("twice_k")


# ----------------------------------------------------------------------- a plugin backbone


def test_plugin_backbone_trains_through_fit(tiny):
    folder, plugin, settings = tiny
    config = Config.for_model("biased_mf", **settings)  # importing the plugin registers the name
    assert config.learning_rate == 0.01  # the backbone's registered defaults
    assert config.bias_init == 0.0 and Config.for_model("biased_mf", **settings, bias_init=0.5).bias_init == 0.5
    with pytest.raises(ConfigError, match=r"model 'lightgcn' has no setting 'bias_init' \(a setting of biased_mf\)"):
        Config("lightgcn", bias_init=0.5)  # its own settings: no other model has the key
    ds = load_dataset(folder, config)
    model = get_model(config)
    res = jaxrec.fit(model, ds, config, progress=False)
    untrained = jaxrec.fit(model, ds, config.replace(epochs=1, learning_rate=1e-9), progress=False)
    assert res.test_metrics["ndcg@10"] > untrained.test_metrics["ndcg@10"]
    assert float(jnp.abs(res.params["item_bias"]).sum()) > 0  # its own parameter trained
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_plugin_backbone_in_the_experiment_harness(tiny, tmp_path):
    folder, plugin, _ = tiny
    from experiments import llminit_table

    out = tmp_path / "exp"
    code = llminit_table.main(["--dataset", str(folder), "--plugin", str(plugin), "--backbones", "biased_mf",
                               "--inits", "none", "--epochs", "2", "--out", str(out), "--set", "embedding_size=8",
                               "--set", "batch_size=64", "--set", "topk=5,10"])
    assert code == 0
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [c["model"] for c in cells] == ["biased_mf"]
    assert cells[0]["config"]["plugins"] == [str(plugin)]


def test_plugin_backbone_through_the_cli(tiny, tmp_path):
    folder, plugin, _ = tiny
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{plugin.parent}"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jaxrec", "train", "--plugin", "biased_mf_plugin", "--model", "biased_mf",
           "--dataset", str(folder), "--epochs", "2", "--out", str(out), "--no-progress",
           "--set", "embedding_size=8", "--set", "batch_size=64", "--set", "topk=5,10"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "biased_mf" and results["config"]["plugins"] == ["biased_mf_plugin"]
    assert "ndcg@10" in done.stdout
    # without the plugin the name is unknown, and the error lists what is known
    bad = subprocess.run(cmd[:4] + cmd[6:8] + ["--dataset", str(folder)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "model='biased_mf': unknown backbone" in bad.stderr
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------- other components


def test_registered_kernel_serves_propagation_and_training(tiny):
    from jaxrec.graph.kernels import Kernel, dense_product

    calls = []

    def counting_dense(*args):
        calls.append(1)
        return dense_product(*args)

    R.KERNELS.register("counting_dense", Kernel(counting_dense))
    try:
        rng = np.random.default_rng(0)
        g = build_graph(rng.integers(0, 6, 30), rng.integers(0, 9, 30), 6, 9)
        x = jax.random.normal(jax.random.PRNGKey(0), (g.num_nodes, 4))
        np.testing.assert_allclose(propagate(g, x, "counting_dense"), propagate(g, x, "bcsr"), rtol=1e-5, atol=1e-6)
        folder, _, settings = tiny
        config = Config.for_model("lightgcn", **{**settings, "kernel": "counting_dense", "epochs": 1})
        jaxrec.fit(get_model(config), load_dataset(folder, config), config, progress=False)
        assert calls  # the training step traced through it
    finally:
        R.KERNELS.unregister("counting_dense")


def test_registered_initializer_writes_the_model_tables(tiny):
    from jaxrec.init import Initializer

    R.INITIALIZERS.register("first_k", Initializer(lambda emb, k, inputs: (emb[:, :k], None)))
    try:
        folder, _, settings = tiny
        config = Config.for_model("mf", **{**settings, "init": "first_k"})
        ds = load_dataset(folder, config)
        emb = np.random.default_rng(1).normal(size=(ds.num_items, 20)).astype(np.float32)
        params = jaxrec.initial_params(get_model(config), ds, config, embeddings=emb)
        np.testing.assert_allclose(params["item_embedding"], emb[:, :8])
        # users: the mean of their training items' rows (LLMInit)
        u0 = ds.train.item[ds.train.user == 0]
        np.testing.assert_allclose(params["user_embedding"][0], emb[u0, :8].mean(0), rtol=1e-5)
    finally:
        R.INITIALIZERS.unregister("first_k")


def test_registered_objective_term_composes(tiny):
    def hinge(config):
        def loss(x: LossInputs):
            u, p, n = x.rows("user", "user"), x.rows("item", "pos"), x.rows("item", "neg")
            return jnp.mean(jax.nn.relu(1.0 - jnp.sum(u * p, -1) + jnp.sum(u * n, -1)))
        return Term("hinge", loss, batch_kind="pairs")

    R.OBJECTIVES.register("hinge", hinge)
    try:
        folder, _, settings = tiny
        config = Config.for_model("lightgcn", **settings)
        base = get_model(config)
        model = jaxrec.Model("lightgcn_hinge", base.encoder,
                             weighted_sum(term("hinge", config), (term("reg", config), 0.5)))
        ds = load_dataset(folder, config)
        params = base.init(jax.random.PRNGKey(0), ds.num_users, ds.num_items)
        batch = {"user": jnp.array([0, 1]), "pos": jnp.array([2, 3]), "neg": jnp.array([4, 5])}
        graph = jaxrec.prepare(ds).graph
        total, aux = model.loss(params, graph, None, batch, jax.random.PRNGKey(0))
        u, i = base.embed(params, graph)
        want_h = np.mean(np.maximum(0, 1 - np.sum(u[:2] * i[2:4], -1) + np.sum(u[:2] * i[4:6], -1)))
        assert float(aux["hinge"]) == pytest.approx(float(want_h), rel=1e-5)
        assert float(total) == pytest.approx(float(aux["hinge"] + 0.5 * aux["reg"]), rel=1e-6)
        res = jaxrec.fit(model, ds, config, progress=False)
        assert np.isfinite(res.test_metrics["ndcg@10"])
    finally:
        R.OBJECTIVES.unregister("hinge")


def test_registered_metric_is_computed_and_selectable(tiny):
    from jaxrec.eval import ranking_metrics

    R.METRICS.register("rank_first", lambda stats, k: (stats.first_hit < k).astype(np.float64) * 2.0)
    try:
        got = ranking_metrics(np.array([[3, 1], [4, 5]]), np.array([0, 1, 2]), np.array([1, 9]), (2,),
                              ("rank_first", "hit"))
        assert got == {"rank_first@2": 1.0, "hit@2": 0.5}
        folder, _, settings = tiny
        config = Config.for_model("mf", **{**settings, "metrics": ("rank_first", "ndcg"),
                                           "valid_metric": "rank_first@5", "epochs": 1})
        res = jaxrec.fit(get_model(config), load_dataset(folder, config), config, progress=False)
        assert set(res.test_metrics) == {"rank_first@5", "rank_first@10", "ndcg@5", "ndcg@10"}
    finally:
        R.METRICS.unregister("rank_first")


# ----------------------------------------------------------------------- safe to call twice


def test_fit_twice_from_the_same_params_and_any_optimizer(tiny):
    folder, _, settings = tiny
    config = Config.for_model("lightgcn", **settings)
    ds = load_dataset(folder, config)
    model = get_model(config)
    p = model.init(jax.random.PRNGKey(3), ds.num_users, ds.num_items)
    before = jax.tree.map(np.asarray, p)
    a = jaxrec.fit(model, ds, config, params=p, progress=False)
    b = jaxrec.fit(model, ds, config, params=p, progress=False)  # the caller's arrays are still alive
    for x, y, z in zip(jax.tree.leaves(before), jax.tree.leaves(p), jax.tree.leaves(a.params)):
        np.testing.assert_array_equal(x, np.asarray(y))  # never modified
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # and reproducible
    sgd = jaxrec.fit(model, ds, config, params=p, optimizer=optax.sgd(0.0), progress=False)
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(sgd.params)):
        np.testing.assert_array_equal(x, np.asarray(y))  # a zero-step optimizer leaves the params as given


def test_config_normalizes_paths_and_sequences_so_a_resume_is_accepted(tiny, tmp_path):
    folder, _, settings = tiny
    emb = tmp_path / "e.npy"
    c1 = Config(embeddings=emb, data_dirs=[str(tmp_path)], topk=[5, 10], learning_rate=1)
    c2 = Config(embeddings=str(emb), data_dirs=(str(tmp_path),), topk=(5, 10), learning_rate=1.0)
    assert c1 == c2 and c1.to_dict() == c2.to_dict() and isinstance(c1.learning_rate, float)
    config = Config.for_model("mf", **{**settings, "data_dirs": [Path(folder).parent]})
    ds = load_dataset(folder, config)
    jaxrec.fit(get_model(config), ds, config.replace(epochs=2), out_dir=tmp_path / "run", progress=False)
    again = Config.for_model("mf", **{**settings, "data_dirs": (str(Path(folder).parent),)})
    res = jaxrec.fit(get_model(again), ds, again, out_dir=tmp_path / "run", resume=True, progress=False)
    assert res.stopped_epoch == again.epochs - 1
    with pytest.raises(ConfigError, match=r"epochs='3': expected int"):
        Config(epochs="3")
