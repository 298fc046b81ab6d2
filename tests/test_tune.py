"""Hyperparameter search (jaxrec.tune): the space file format and its up-front checks, pruning
through the tracker interface, a search killed mid-trial (SIGKILL) and resumed from its SQLite
study, several processes on one study, the best config as a `jaxrec train --config` file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError, load_config_file
from jaxrec.data import load_dataset
from jaxrec.models import get_model
from jaxrec.train import fit, prepare
from jaxrec.train.tracking import Tracking
from jaxrec.tune import (OptunaPruning, TuneError, base_config, check_space, parse_space, read_space, tune,
                         write_config_toml)

REPO = Path(__file__).resolve().parents[1]
FIXED = 'epochs = 3\nbatch_size = 64\nembedding_size = 8\ntopk = [5, 10]\npatience = 100\n'
SPACE = FIXED + """
[space.learning_rate]
type = "float"
low = 1e-3
high = 5e-2
log = true

[space.num_layers]
type = "int"
low = 1
high = 3

[space.reg_weight]
type = "categorical"
choices = [1e-5, 1e-3]
"""
#: A tracker that makes every epoch last 0.4 s, so that a trial is surely running when it is killed.
SLOW_PLUGIN = """import time
from jaxrec.registry import TRACKERS
from jaxrec.train.tracking import TrackerKind

class Slow:
    def start(self, config, run): pass
    def log_epoch(self, record): time.sleep(0.4)
    def log_test(self, *args): pass
    def finish(self, status): pass

TRACKERS.register("slow", TrackerKind(Slow))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def _space(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the space file
def test_space_file_reads_fixed_keys_and_dimensions(tmp_path, tiny):
    space = read_space(_space(tmp_path))
    assert space.fixed == {"epochs": 3, "batch_size": 64, "embedding_size": 8, "topk": [5, 10], "patience": 100}
    assert [(d.key, d.type) for d in space.dims] == [("learning_rate", "float"), ("num_layers", "int"),
                                                      ("reg_weight", "categorical")]
    lr = space.dims[0]
    assert (lr.low, lr.high, lr.log) == (1e-3, 5e-2, True) and space.dims[2].choices == (1e-5, 1e-3)
    base = base_config(space, model="lightgcn", dataset=str(tiny), sets=["epochs=2"])
    assert (base.model, base.epochs, base.embedding_size, base.topk) == ("lightgcn", 2, 8, (5, 10))
    check_space(space, base)
    sasrec = base_config(parse_space({"space": {"dropout_rate": {"type": "float", "low": 0.1, "high": 0.5}}}),
                         model="sasrec")
    assert sasrec.batch_size == 128  # SASRec's protocol defaults sit beneath the file's keys


@pytest.mark.parametrize("text, error, match", [
    ("epochs = 3\n", TuneError, r"no \[space.<key>\] table"),
    ('[space.learning_rate]\ntype = "uniform"\nlow = 1\nhigh = 2\n', TuneError,
     r"\[space.learning_rate\]: type = 'uniform'; expected one of float, int, categorical"),
    ('[space.learning_rate]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n', TuneError, "low = 0.1 must be below high"),
    ('[space.learning_rate]\ntype = "float"\nlow = 0.0\nhigh = 0.01\nlog = true\n', TuneError, "log = true needs low > 0"),
    ('[space.num_layers]\ntype = "int"\nlow = 1.5\nhigh = 3\n', TuneError, r"\[space.num_layers\]: low = 1.5; expected an integer"),
    ('[space.reg_weight]\ntype = "categorical"\nchoices = []\n', TuneError, "non-empty list"),
    ('[space.reg_weight]\ntype = "categorical"\nchoices = [1, 2]\nlow = 1\n', TuneError, "low apply to float and int"),
    ('[space.learning_rate]\ntype = "float"\nlow = 1e-3\nhigh = 1e-2\nstep = 1e-3\nlog = true\n', TuneError,
     "step and log"),
    ('[space.learning_rate]\ntype = "float"\nlow = 1e-3\nhigh = 1e-2\nlowe = 1\n', TuneError, "unknown field lowe"),
    ('learning_rate = 0.01\n[space.learning_rate]\ntype = "float"\nlow = 1e-3\nhigh = 1e-2\n', TuneError,
     "also a fixed key"),
])
def test_space_file_errors_name_the_table(tmp_path, text, error, match):
    with pytest.raises(error, match=match):
        read_space(_space(tmp_path, text))


def test_space_is_checked_against_the_model_before_any_compute(tmp_path, tiny):
    def check(text, model="lightgcn"):
        space = read_space(_space(tmp_path, text))
        check_space(space, base_config(space, model=model, dataset=str(tiny)))

    with pytest.raises(ConfigError, match=r"\[space.max_seq_len\].*model 'lightgcn' has no setting 'max_seq_len' "
                                          r"\(a setting of .*sasrec"):
        check('[space.max_seq_len]\ntype = "int"\nlow = 10\nhigh = 50\n')
    with pytest.raises(TuneError, match=r"\[space.seed\]: seed cannot be searched"):
        check('[space.seed]\ntype = "int"\nlow = 1\nhigh = 5\n')
    with pytest.raises(ConfigError, match=r"\[space.kernel\].*'nope'.*kernel='nope': unknown propagation kernel"):
        check('[space.kernel]\ntype = "categorical"\nchoices = ["bcsr", "nope"]\n')
    with pytest.raises(ConfigError, match=r"\[space.embedding_size\].*expected int"):
        check('[space.embedding_size]\ntype = "float"\nlow = 8\nhigh = 16\n')
    with pytest.raises(ConfigError, match=r"\[space.learning_rate\].*learning_rate=.*expected a finite number > 0"):
        check('[space.learning_rate]\ntype = "float"\nlow = -1.0\nhigh = 1e-2\n')
    check('[space.dropout_rate]\ntype = "float"\nlow = 0.1\nhigh = 0.5\n', model="sasrec")  # its own setting


def test_best_config_toml_round_trips(tmp_path, tiny):
    config = Config.for_model("sasrec", dataset=str(tiny), learning_rate=3e-3, topk=(5, 10), track=("mlflow",))
    path = write_config_toml(tmp_path / "best.toml", config, header=["a comment"])
    assert path.read_text().startswith("# a comment\n")
    assert load_config_file(path).to_dict() == config.to_dict()


# ----------------------------------------------------------------------------- pruning
def test_pruning_stops_a_trial_through_the_tracker_interface(tmp_path, tiny):
    config = Config(dataset=str(tiny), epochs=5, batch_size=64, embedding_size=8, topk=(5, 10), track=())
    dataset = load_dataset(str(tiny), config)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        fit(get_model(config), dataset, config, prepared=prepare(dataset),
            tracking=Tracking(trackers=(OptunaPruning(trial, "ndcg@10"),)))
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0]  # stopped after one report
    keep = optuna.create_study(direction="maximize").ask()  # no pruner opinion: the run goes on
    result = fit(get_model(config), dataset, config, prepared=prepare(dataset),
                 tracking=Tracking(trackers=(OptunaPruning(keep, "ndcg@10"),)))
    reported = keep.storage.get_trial(keep._trial_id).intermediate_values
    assert reported == {r["epoch"]: r["valid"]["ndcg@10"] for r in result.history}


# ----------------------------------------------------------------------------- the search, killed and resumed
def _command(tmp_path: Path, tiny: Path, trials: int, storage: str, *extra: str) -> list[str]:
    plugin = tmp_path / "slow_tracker.py"
    plugin.write_text(SLOW_PLUGIN)
    return [sys.executable, "-m", "jaxrec", "tune", "--model", "lightgcn", "--dataset", str(tiny),
            "--space", str(_space(tmp_path)), "--trials", str(trials), "--storage", storage, "--study-name", "s",
            "--pruner", "none", "--plugin", str(plugin), "--track", "slow", "--no-progress", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _trials(storage: str) -> list:
    return optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)


@pytest.mark.slow
def test_search_killed_mid_trial_resumes_to_four_complete_trials(tmp_path, tiny):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = _command(tmp_path, tiny, 4, storage, "--out", str(tmp_path / "best.toml"))
    first = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline, killed = time.monotonic() + 180, None
    try:
        while time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
            try:
                trials = _trials(storage)
            except (KeyError, Exception):  # the study is not created yet
                continue
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and "jaxrec.config" in t.user_attrs]
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and running:
                first.send_signal(signal.SIGKILL)
                killed = running[0].number
                break
    finally:
        if first.poll() is None and killed is None:
            first.kill()
        first.wait()
    assert killed is not None, first.stderr.read().decode()[-2000:]
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "best.toml").exists()
    assert [t.state for t in _trials(storage) if t.number == killed] == [optuna.trial.TrialState.RUNNING]

    second = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = _trials(storage)
    states = {t.number: t.state for t in trials}
    assert states[killed] == optuna.trial.TrialState.FAIL  # marked failed when the search resumed
    assert "ended mid-trial" in trials[killed].system_attrs["fail_reason"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len(trials) == 5
    assert "4 complete, 1 fail" in second.stdout and "best config:" in second.stdout
    best = max(complete, key=lambda t: t.value)
    assert f"best trial {best.number}: valid ndcg@10 = {best.value:.4f}" in second.stdout

    # the best config trains again with `jaxrec train --config` to the same validation metric
    from jaxrec.cli import main

    assert main(["train", "--config", str(tmp_path / "best.toml"), "--out", str(tmp_path / "again"),
                 "--track", "none", "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["valid"]["ndcg@10"] == best.value
    assert again["test"] == best.user_attrs["jaxrec.test"]
    assert {k: again["config"][k] for k in best.params} == best.params


@pytest.mark.slow
def test_two_processes_search_one_study_together(tmp_path, tiny):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = _command(tmp_path, tiny, 3, storage, "--out", str(tmp_path / "best.toml"))
    # the study exists before both start (two creators would race on the empty database)
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-2000:] for o in outs]
    complete = [t for t in _trials(storage) if t.state == optuna.trial.TrialState.COMPLETE]
    assert 3 <= len(complete) <= 4  # each process stops once 3 are done; the other may be finishing one
    assert {t.user_attrs["jaxrec.pid"] for t in complete} == {p.pid for p in procs}
    assert len({t.number for t in complete}) == len(complete)


def test_study_refuses_another_space(tmp_path, tiny):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    plain = SPACE.replace("[space.reg_weight]", "[space.x]").split("[space.x]")[0]  # lr and layers only
    space = read_space(_space(tmp_path, plain))
    result = tune(space, trials=1, storage=storage, model="lightgcn", dataset=str(tiny), study_name="s",
                  track=(), out=tmp_path / "best.toml", pruner="none")
    assert result.counts == {"COMPLETE": 1} and (tmp_path / "best.toml").is_file()
    assert "rank  trial  valid ndcg@10  learning_rate  num_layers" in result.table
    again = tune(space, trials=1, storage=storage, model="lightgcn", dataset=str(tiny), study_name="s", track=())
    assert again.counts == {"COMPLETE": 1}  # already done: no new trial
    with pytest.raises(TuneError, match="study 's' .* was created with another search .*epochs: saved 3, now 2"):
        tune(space, trials=2, storage=storage, model="lightgcn", dataset=str(tiny), study_name="s",
             sets=["epochs=2"])
    with pytest.raises(TuneError, match="expected a database URL"):
        tune(space, trials=1, storage=str(tmp_path / "study.db"), model="lightgcn", dataset=str(tiny))


def test_cli_tune_errors_are_one_line(tmp_path, tiny):
    r = subprocess.run([sys.executable, "-m", "jaxrec", "tune", "--model", "lightgcn", "--dataset", str(tiny),
                        "--space", str(_space(tmp_path, SPACE + '\n[space.seed]\ntype = "int"\nlow = 1\nhigh = 2\n')),
                        "--trials", "2", "--storage", f"sqlite:///{tmp_path / 'x.db'}"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("jaxrec: error: search space") and "seed cannot be searched" in r.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the study was created
