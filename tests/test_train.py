"""Training loop: early stopping, Orbax checkpoints, resume equality, run-folder safety."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.models import get_model
from jaxrec.train import CheckpointMismatchError, EarlyStopping, RunCheckpoints, fit

REPO = Path(__file__).resolve().parents[1]


def test_early_stopping_follows_recbole_rule():
    es = EarlyStopping()
    scores = [0.1, 0.2, 0.2, 0.15, 0.1, 0.19]  # ties count as improvement (>=)
    states = []
    for epoch, s in enumerate(scores):
        es = es.update(s, epoch)
        states.append((es.best_epoch, es.bad_evals))
    assert states == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]
    assert not es.should_stop(3) and es.should_stop(2)
    assert EarlyStopping.from_dict(es.to_dict()) == es


def test_checkpoint_round_trip_restores_identical_state(tmp_path):
    params = {"user_embedding": jax.random.normal(jax.random.PRNGKey(0), (5, 3)),
              "item_embedding": jax.random.normal(jax.random.PRNGKey(1), (7, 3))}
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)
    _, opt_state = opt.update(params, opt_state, params)  # a non-trivial state
    state = {"params": params, "opt_state": opt_state, "key": jax.random.PRNGKey(42)}
    with RunCheckpoints(tmp_path) as ck:
        ck.save("latest", 3, state, {"epoch": 3})
        ck.save("latest", 4, state, {"epoch": 4})
    with RunCheckpoints(tmp_path) as ck:
        assert ck.latest_step() == 4
        restored, meta = ck.restore("latest", jax.tree.map(jnp.zeros_like, state))
    assert meta == {"epoch": 4}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert type(restored["opt_state"][0]) is type(opt_state[0])
    assert sorted(os.listdir(tmp_path / "latest")) == ["4"]  # only the latest kept


def test_checkpoint_restore_rejects_other_shapes(tmp_path):
    state = {"params": {"user_embedding": jnp.ones((5, 3))}}
    with RunCheckpoints(tmp_path) as ck:
        ck.save("best", 0, state, {})
        with pytest.raises(CheckpointMismatchError, match="user_embedding has shape"):
            ck.restore("best", {"params": {"user_embedding": jnp.ones((5, 4))}})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_tiny_dataset(tmp_path_factory.mktemp("data"))
    config = Config(dataset=str(folder), epochs=6, batch_size=64, embedding_size=8, learning_rate=0.01, topk=(5, 10),
                    valid_metric="ndcg@10", patience=100)
    return folder, config, load_dataset(str(folder), config)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("model_name", ["lightgcn", "mf"])
def test_training_improves_over_initial_params(tiny, model_name):
    _, config, ds = tiny
    config = config.replace(model=model_name, epochs=15)
    model = get_model(config)
    res = fit(model, ds, config)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    untrained = fit(model, ds, config.replace(epochs=1, learning_rate=1e-9))
    assert res.test_metrics["ndcg@10"] > untrained.test_metrics["ndcg@10"]
    assert 0 <= res.best_epoch <= res.stopped_epoch


def test_min_epochs_defers_early_stopping(tiny):
    _, config, ds = tiny
    from jaxrec.registry import EVALUATIONS, EvaluationProtocol

    # A scripted validation curve that dips and recovers (SGL from an LLM init does this):
    # best at epoch 0, worse for epochs 1..5, better again from epoch 6 on. It is an
    # evaluation protocol of its own, registered like any other.
    curve = [0.5, 0.4, 0.3, 0.2, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    calls = {"n": 0}

    def scripted(prepared, cfg, partitioner):
        def evaluate(embeddings, stage):
            if stage != "valid":
                return {"ndcg@10": 0.0}
            calls["n"] += 1
            return {"ndcg@10": curve[calls["n"] - 1]}
        return evaluate

    EVALUATIONS.register("scripted_curve", EvaluationProtocol(scripted))
    try:
        config = config.replace(model="mf", epochs=len(curve), patience=2, evaluation="scripted_curve")
        model = get_model(config)
        plain = fit(model, ds, config)
        assert (plain.best_epoch, plain.stopped_epoch) == (0, 3)  # 3 evaluations without improvement
        calls["n"] = 0
        deferred = fit(model, ds, config.replace(min_epochs=7))
        assert (deferred.best_epoch, deferred.stopped_epoch) == (11, 11)  # ran through the dip
        calls["n"] = 0
        at_six = fit(model, ds, config.replace(min_epochs=6))
        assert at_six.stopped_epoch == 5  # stopping is allowed once min_epochs epochs have run
        with pytest.raises(ConfigError, match="min_epochs"):
            config.replace(min_epochs=-1)
    finally:
        EVALUATIONS.unregister("scripted_curve")


def test_resume_reaches_same_result_as_uninterrupted_run(tiny, tmp_path):
    _, config, ds = tiny
    model = get_model(config)
    full = fit(model, ds, config, out_dir=tmp_path / "full")
    fit(model, ds, config.replace(epochs=3), out_dir=tmp_path / "cut")  # "interrupted" after 3 epochs
    resumed = fit(model, ds, config, out_dir=tmp_path / "cut", resume=True)
    for a, b in zip(_leaves(full.params), _leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    assert full.test_metrics == resumed.test_metrics
    full_log = [json.loads(l) for l in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    cut_log = [json.loads(l) for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}
    assert [strip(r) for r in full_log] == [strip(r) for r in cut_log]
    results = json.loads((tmp_path / "full" / "results.json").read_text())
    assert results["seed"] == config.seed and results["config"]["epochs"] == config.epochs
    assert results["test"] == full.test_metrics


def test_run_folder_refuses_other_config_and_silent_reuse(tiny, tmp_path):
    _, config, ds = tiny
    model = get_model(config)
    fit(model, ds, config.replace(epochs=1), out_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="config.learning_rate"):
        fit(model, ds, config.replace(epochs=2, learning_rate=0.5), out_dir=tmp_path, resume=True)
    other = get_model(config.replace(model="mf"))
    with pytest.raises(CheckpointMismatchError, match="model"):
        fit(other, ds, config.replace(model="mf", epochs=2), out_dir=tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(model, ds, config.replace(epochs=1), out_dir=tmp_path)
    fit(model, ds, config.replace(epochs=1), out_dir=tmp_path, overwrite=True)  # explicit start-over works


def test_killed_cli_run_resumes_to_the_uninterrupted_result(tiny, tmp_path):
    folder, _, _ = tiny
    common = [sys.executable, "-m", "jaxrec", "train", "--dataset", str(folder), "--model", "lightgcn",
              "--epochs", "40", "--set", "batch_size=16", "--set", "embedding_size=8", "--set", "patience=100",
              "--set", "topk=5,10", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(common + ["--out", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(common + ["--out", str(tmp_path / "cut")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "cut" / "in-progress" / "log.jsonl"  # written beside, published when finished
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "results.json").exists(), "run finished before it could be killed"
    subprocess.run(common + ["--out", str(tmp_path / "cut"), "--resume"], check=True, env=env, capture_output=True)
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert full["test"] == cut["test"] and full["best_epoch"] == cut["best_epoch"]


def test_a_folder_without_a_complete_checkpoint_is_a_new_run(tiny, tmp_path):
    """A run that died before its first save leaves empty ckpt folders and a run.json: the same
    command (or another config) then starts afresh instead of being refused."""
    _, config, ds = tiny
    model = get_model(config)
    (tmp_path / "ckpt" / "latest").mkdir(parents=True)
    (tmp_path / "ckpt" / "best").mkdir(parents=True)
    (tmp_path / "run.json").write_text(json.dumps({"model": "mf", "config": {"learning_rate": 9.0}}))
    (tmp_path / "log.jsonl").write_text('{"epoch": 0, "loss": 1.0}\n{"epo')
    res = fit(model, ds, config.replace(epochs=2), out_dir=tmp_path)
    assert [r["epoch"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())] == [0, 1]
    assert json.loads((tmp_path / "run.json").read_text())["config"]["learning_rate"] == config.learning_rate
    assert res.stopped_epoch == 1


def test_diverging_run_stops_naming_epoch_and_last_good_checkpoint(tiny, tmp_path):
    _, config, ds = tiny
    model = get_model(config.replace(model="mf"))
    steps_per_epoch = -(-len(ds.train) // config.batch_size)
    # a learning rate that explodes after the first epoch's steps
    explode = optax.adam(lambda count: jnp.where(count < steps_per_epoch, 1e-2, 1e38))
    with pytest.raises(FloatingPointError, match=r"epoch 1: .*not finite|epoch 1: training loss is") as err:
        fit(model, ds, config.replace(model="mf", epochs=5), out_dir=tmp_path, optimizer=explode)
    assert "in-progress/ckpt/latest/0 (epoch 0" in str(err.value)
    assert not (tmp_path / "current").exists()  # a stopped run is not published; it stays in in-progress/
    with RunCheckpoints(tmp_path / "in-progress" / "ckpt", read_only=True) as ck:  # nothing non-finite was saved
        assert ck.latest_step() == 0 and ck.latest_step("best") == 0
    log = [json.loads(line) for line in (tmp_path / "in-progress" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0]


def test_run_folders_of_jaxrec_0_1_are_read(tiny, tmp_path):
    """A format-1 run.json (no "format", fewer config keys) resumes; a key whose default changed
    since is asked for explicitly, with a message that says which."""
    _, config, ds = tiny
    model = get_model(config)
    fit(model, ds, config.replace(epochs=2), out_dir=tmp_path)
    identity = json.loads((tmp_path / "run.json").read_text())
    del identity["format"]
    for key in ("plugins", "evaluation"):
        del identity["config"][key]
    identity["config"].update(max_seq_len=50, ssl_weight=0.05, lm="smollm2")  # 0.1 stored every model's keys
    (tmp_path / "run.json").write_text(json.dumps(identity))
    res = fit(model, ds, config.replace(epochs=3), out_dir=tmp_path, resume=True)
    assert res.stopped_epoch == 2
    sgl = config.replace(model="sgl", epochs=2)
    fit(get_model(sgl), ds, sgl, out_dir=tmp_path / "sgl")
    identity = json.loads((tmp_path / "sgl" / "run.json").read_text())
    del identity["format"], identity["config"]["contrast_unique"]
    (tmp_path / "sgl" / "run.json").write_text(json.dumps(identity))
    with pytest.raises(CheckpointMismatchError, match="config.contrast_unique: saved 'table', now 'bucket'"):
        fit(get_model(sgl), ds, sgl.replace(epochs=3), out_dir=tmp_path / "sgl", resume=True)
    fit(get_model(sgl), ds, sgl.replace(epochs=3, contrast_unique="table"), out_dir=tmp_path / "sgl", resume=True)


def test_checkpoint_restore_from_a_fresh_manager_is_quiet_and_exact(tmp_path, caplog):
    """A fresh RunCheckpoints (as a resumed or served run opens it) restores state and meta without
    Orbax's 'found in the checkpoint, but could not be restored' warnings (its handlers are named up front)."""
    state = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "step": np.int32(4)}
    with RunCheckpoints(tmp_path) as ck:
        ck.save("best", 4, state, {"epoch": 4, "score": 0.25})
    with caplog.at_level("WARNING"), RunCheckpoints(tmp_path) as ck:
        restored, meta = ck.restore("best", jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
    assert meta == {"epoch": 4, "score": 0.25}
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert int(restored["step"]) == 4
    assert not [r for r in caplog.records if "could not be restored" in r.getMessage()]


def test_time_budget_stops_after_the_epoch_that_spends_it(tiny, tmp_path):
    """``time_budget_minutes``: training stops after the epoch when another of the mean length so
    far would overrun the budget (here: the first epoch), and the run still ends with test metrics."""
    _, config, ds = tiny
    config = config.replace(model="mf", epochs=50, patience=100)
    model = get_model(config)
    res = fit(model, ds, config.replace(time_budget_minutes=1e-6), out_dir=tmp_path / "b")
    assert res.stopped_epoch == 0 and len(res.history) == 1 and "ndcg@10" in res.test_metrics
    assert fit(model, ds, config.replace(epochs=3)).stopped_epoch == 2  # no budget: every epoch
    with pytest.raises(ConfigError, match="time_budget_minutes=-1.0"):
        config.replace(time_budget_minutes=-1)
    from jaxrec.train.loop import budget_spent

    # 12 s spent in one epoch: a 30 s budget takes another (24 <= 30), a 20 s one does not (24 > 20)
    one = [{"train_seconds": 10.0, "eval_seconds": 2.0}]
    assert not budget_spent(one, 30.0) and budget_spent(one, 20.0)
    two = one + [{"train_seconds": 8.0}]  # 20 s spent, mean 10: 30 s
    assert not budget_spent(two, 30.0) and budget_spent(two, 29.0) and not budget_spent([], 0.0)
