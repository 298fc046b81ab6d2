"""Experiment tracking (jaxrec.train.tracking): what TensorBoard, MLflow and W&B hold is read back
with each tool's own reader and compared with log.jsonl / results.json; tracking changes no
number; process 0 alone tracks; a missing package is a clear error; per-user test metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.models import get_model
from jaxrec.registry import TRACKERS
from jaxrec.train import SingleDevice, fit, prepare
from jaxrec.train.tracking import Tracking, TrackerKind, TrackingError, check_trackers, tag_name

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_tiny_dataset(tmp_path_factory.mktemp("data"))
    config = Config(dataset=str(folder), epochs=2, batch_size=64, embedding_size=8, learning_rate=0.01, topk=(5, 10),
                    patience=100, track=())
    ds = load_dataset(str(folder), config)
    return folder, config, ds, prepare(ds)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


class Recorder:
    """A user's tracker: records every call."""

    calls: list = []

    def start(self, config, run):
        Recorder.calls.append(("start", run.name, run.group, run.start_epoch))

    def log_epoch(self, record):
        Recorder.calls.append(("epoch", record["epoch"], record["loss"]))
        record["loss"] = -1.0  # a tracker that mutates what it is given changes nothing

    def log_test(self, test, valid, best_epoch):
        Recorder.calls.append(("test", dict(test), best_epoch))

    def finish(self, status):
        Recorder.calls.append(("finish", status))


@pytest.fixture
def recorder():
    TRACKERS.register("recorder", TrackerKind(Recorder))
    Recorder.calls = []
    yield Recorder
    TRACKERS.unregister("recorder")


def test_tensorboard_event_file_holds_the_logged_numbers(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, config, ds, prep = tiny
    config = config.replace(track=("tensorboard",))
    out = tmp_path / "run"
    result = fit(get_model(config), ds, config, out_dir=out, prepared=prep)
    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    log = _log(out)
    results = json.loads((out / "results.json").read_text())
    tags = acc.Tags()["scalars"]
    for tag, values in (("train/loss", [r["loss"] for r in log]), ("train/bpr", [r["bpr"] for r in log]),
                        ("train/reg", [r["reg"] for r in log]),
                        ("valid/ndcg@10", [r["valid"]["ndcg@10"] for r in log]),
                        ("valid/recall@5", [r["valid"]["recall@5"] for r in log]),
                        ("train/learning_rate", [0.01, 0.01])):
        events = acc.Scalars(tag_name(tag))
        assert [e.step for e in events] == [0, 1], tag
        # TensorBoard stores scalars as float32
        np.testing.assert_array_equal([e.value for e in events], np.float32(values), err_msg=tag)
    for name, value in results["test"].items():
        (event,) = acc.Scalars(tag_name(f"test/{name}"))
        assert event.value == np.float32(value) and event.step == results["best_epoch"]
    steps = [e.value for e in acc.Scalars("train/steps_per_second")]
    np.testing.assert_allclose(steps, [r["steps"] / r["train_seconds"] for r in log], rtol=1e-6)
    assert all(r["steps"] == 6 and r["examples"] == len(ds.train) for r in log)  # 6 batches of <= 64 rows
    assert {"time/train_seconds", "time/eval_seconds", "train/examples_per_second"} <= set(tags)
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'learning_rate = 0.01' in config_text and f'dataset = "{folder}"' in config_text
    # HParams (config + final metrics) in the run's own event file: the HPARAMS tab compares runs
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    assert result.test_metrics == results["test"]


def test_tensorboard_fresh_run_replaces_old_events_and_resume_purges(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, config, ds, prep = tiny
    config = config.replace(track=("tensorboard",), epochs=3)
    out = tmp_path / "run"
    fit(get_model(config), ds, config.replace(epochs=2), out_dir=out, prepared=prep)
    fit(get_model(config), ds, config, out_dir=out, prepared=prep, resume=True)  # epochs 2 more: 0..2
    acc = EventAccumulator(str(out))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 1, 2]
    np.testing.assert_array_equal([e.value for e in loss], np.float32([r["loss"] for r in _log(out)]))
    fit(get_model(config), ds, config.replace(epochs=1), out_dir=out, prepared=prep, overwrite=True)
    assert len(list(out.glob("events.out.tfevents.*"))) == 1  # the earlier run's events are gone
    acc = EventAccumulator(str(out))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [0]


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_store_holds_the_logged_numbers(tiny, tmp_path, monkeypatch, store):
    from mlflow.tracking import MlflowClient

    _, config, ds, prep = tiny
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store in maintenance mode
    config = config.replace(track=("mlflow",))
    out = tmp_path / "run"
    fit(get_model(config), ds, config, out_dir=out, prepared=prep, tracking=Tracking(group="tiny-grid"))
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-grid").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    log = _log(out)
    results = json.loads((out / "results.json").read_text())
    for name, values in (("train/loss", [r["loss"] for r in log]), ("train/bpr", [r["bpr"] for r in log]),
                         ("valid/ndcg@10", [r["valid"]["ndcg@10"] for r in log]),
                         ("valid/hit@5", [r["valid"]["hit@5"] for r in log])):
        hist = sorted(client.get_metric_history(run.info.run_id, tag_name(name)), key=lambda m: m.step)
        assert [m.step for m in hist] == [0, 1]
        assert [m.value for m in hist] == values, name  # float64: exact
    for name, value in results["test"].items():
        (m,) = client.get_metric_history(run.info.run_id, tag_name(f"test/{name}"))
        assert m.value == value and m.step == results["best_epoch"]
    assert tag_name("valid/ndcg@10") == "valid/ndcg_at_10"  # MLflow refuses "@"
    params = run.data.params
    assert params["learning_rate"] == "0.01" and params["topk"] == "5,10" and params["model"] == "lightgcn"
    assert run.data.tags["jaxrec.run_dir"] == str(out.resolve())


def _wandb_records(path: Path) -> list:
    """The protobuf records of a W&B ``.wandb`` file, read from its on-disk layout (LevelDB log
    format: a 7-byte ``:W&B`` header, then 32 KiB blocks of records ``crc32 (4) | length (2, little
    endian) | type (1: full, 2: first, 3: middle, 4: last) | data``); wandb >= 0.20 ships no Python reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            out.append(rec)
            pending = b""
    return out


def test_wandb_offline_run_holds_the_logged_numbers(tiny, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    _, config, ds, prep = tiny
    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = config.replace(track=("wandb",))
    out = tmp_path / "run"
    fit(get_model(config), ds, config, out_dir=out, prepared=prep, tracking=Tracking(group="tiny-grid"))
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")  # offline by default: nothing left the machine
    records = _wandb_records(run_file)
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    log = _log(out)
    assert [h["epoch"] for h in history] == [0, 1]
    assert [h["train/loss"] for h in history] == [r["loss"] for r in log]
    assert [h["valid/ndcg_at_10"] for h in history] == [r["valid"]["ndcg@10"] for r in log]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "tiny-grid" and run.display_name == "run"


def test_tracking_changes_no_number(tiny, tmp_path, monkeypatch, recorder):
    _, config, ds, prep = tiny
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    plain = fit(get_model(config), ds, config, out_dir=tmp_path / "a", prepared=prep)
    tracked_config = config.replace(track=("tensorboard", "mlflow", "recorder"))
    tracked = fit(get_model(tracked_config), ds, tracked_config, out_dir=tmp_path / "b", prepared=prep)
    assert tracked.test_metrics == plain.test_metrics and tracked.valid_metrics == plain.valid_metrics
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(tracked.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    drop = ("train_seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in _log(tmp_path / "a")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in _log(tmp_path / "b")]
    # the tracker saw the records as they were, and its own edit of them reached nothing else
    assert [c[2] for c in Recorder.calls if c[0] == "epoch"] == [r["loss"] for r in _log(tmp_path / "b")]
    assert Recorder.calls[0] == ("start", "b", "jaxrec", 0) and Recorder.calls[-1] == ("finish", "finished")
    assert ("test", tracked.test_metrics, tracked.best_epoch) in Recorder.calls
    # the run folder's identity does not include how it is tracked: the tracked run resumes untracked
    fit(get_model(config), ds, config.replace(epochs=3), out_dir=tmp_path / "b", prepared=prep, resume=True)


def test_only_process_zero_tracks(tiny, recorder):
    _, config, ds, prep = tiny

    class OtherProcess(SingleDevice):
        is_primary = False

    config = config.replace(track=("recorder",))
    extra = Recorder()
    fit(get_model(config), ds, config, prepared=prep, partitioner=OtherProcess(),
        tracking=Tracking(trackers=(extra,)))
    assert Recorder.calls == []
    fit(get_model(config), ds, config, prepared=prep, tracking=Tracking(name="x", group="g", trackers=(extra,)))
    assert [c[0] for c in Recorder.calls] == ["start", "start", "epoch", "epoch", "epoch", "epoch", "test", "test",
                                              "finish", "finish"]
    assert Recorder.calls[0] == ("start", "x", "g", 0)


def test_stopping_exception_sets_the_tracked_status(tiny, recorder):
    _, config, ds, prep = tiny

    class Stop(Exception):
        tracking_status = "pruned"

    class Stopper:
        def start(self, config, run): ...

        def log_epoch(self, record):
            raise Stop("enough")

        def log_test(self, *a): ...

        def finish(self, status): ...

    config = config.replace(track=("recorder",))
    with pytest.raises(Stop):
        fit(get_model(config), ds, config, prepared=prep, tracking=Tracking(trackers=(Stopper(),)))
    assert Recorder.calls[-1] == ("finish", "pruned")


def test_learning_rate_comes_from_the_optax_schedule(tiny, tmp_path):
    _, config, ds, prep = tiny
    schedule = optax.linear_schedule(0.01, 0.001, transition_steps=12)
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=schedule)
    fit(get_model(config), ds, config, out_dir=tmp_path / "run", prepared=prep, optimizer=opt)
    log = _log(tmp_path / "run")
    # the rate of each epoch's last step (6 steps per epoch: steps 5 and 11)
    assert [r["learning_rate"] for r in log] == pytest.approx([0.01 - 0.009 * 5 / 12, 0.01 - 0.009 * 11 / 12], rel=1e-6)


def test_unknown_tracker_and_missing_package_are_clear_errors(tiny, tmp_path):
    folder, config, ds, prep = tiny
    with pytest.raises(ConfigError, match="track='nope': unknown tracker; expected one of tensorboard, mlflow, wandb"):
        config.replace(track=("nope",))
    with pytest.raises(ConfigError, match="track=.*distinct"):
        config.replace(track=("mlflow", "mlflow"))
    plugin = tmp_path / "needs_pkg.py"
    plugin.write_text("from jaxrec.registry import TRACKERS\nfrom jaxrec.train.tracking import TrackerKind, "
                      "TensorBoardTracker\nTRACKERS.register('needs', TrackerKind(TensorBoardTracker, "
                      "requires=('jaxrec_no_such_package',)))\n")
    r = subprocess.run([sys.executable, "-m", "jaxrec", "train", "--dataset", str(folder), "--epochs", "1",
                        "--set", "topk=5,10", "--plugin", str(plugin), "--track", "tensorboard,needs",
                        "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("jaxrec: error: track='needs': the package jaxrec_no_such_package is not installed; "
            "pip install 'jaxrec[track]'") in r.stderr
    assert not (tmp_path / "run").exists()  # refused before any compute
    TRACKERS.register("needs", TrackerKind(Recorder, requires=("jaxrec_no_such_package",)))
    try:
        with pytest.raises(TrackingError, match="pip install 'jaxrec\\[track\\]'"):
            check_trackers(("tensorboard", "needs"))
    finally:
        TRACKERS.unregister("needs")


def test_cli_track_flag(tiny, tmp_path):
    from jaxrec.cli import build_parser, config_from_args

    folder = tiny[0]
    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--dataset", str(folder)])).track == ("tensorboard",)
    assert config_from_args(parser.parse_args(["train", "--track", "tensorboard,mlflow"])).track == \
        ("tensorboard", "mlflow")
    assert config_from_args(parser.parse_args(["train", "--track", "none"])).track == ()


def test_run_without_folder_writes_no_event_file(tiny, tmp_path, monkeypatch):
    _, config, ds, prep = tiny
    monkeypatch.chdir(tmp_path)
    config = config.replace(track=("tensorboard",))
    fit(get_model(config), ds, config, prepared=prep)
    assert list(tmp_path.rglob("events.out.tfevents.*")) == []
    fit(get_model(config), ds, config, prepared=prep, tracking=Tracking(name="cell", log_dir=tmp_path / "tb"))
    assert len(list((tmp_path / "tb" / "cell").glob("events.out.tfevents.*"))) == 1


# ----------------------------------------------------------------------------- per-user metrics
def test_per_user_test_metrics_average_to_the_reported_ones(tiny):
    from jaxrec.eval import evaluate

    _, config, ds, prep = tiny
    result = fit(get_model(config), ds, config, prepared=prep)
    per_user = result.test_per_user
    np.testing.assert_array_equal(per_user["user"], np.unique(ds.test.user))
    assert {k: float(np.mean(v)) for k, v in per_user.items() if k != "user"} == result.test_metrics
    # against a dense numpy reference of hit@5 and ndcg@10 for each user
    user_emb, item_emb = (np.asarray(x) for x in get_model(config).embed(result.params, prep.contexts("graph")["test"]))
    scores = user_emb @ item_emb.T
    ex_u, ex_i = prep.exclude("test")
    scores[ex_u, ex_i] = -np.inf
    truth = dict(zip(ds.test.user.tolist(), ds.test.item.tolist()))
    for row, u in enumerate(per_user["user"]):
        rank = int(np.sum(scores[u] > scores[u, truth[u]]))  # 0-based rank of the held-out item (no ties here)
        assert per_user["hit@5"][row] == float(rank < 5)
        assert per_user["ndcg@10"][row] == pytest.approx(1 / np.log2(rank + 2) if rank < 10 else 0.0, abs=1e-12)
    means, again = evaluate(user_emb, item_emb, None, prep.exclude("test"), prep.truth("test"), ks=(5, 10),
                            per_user=True)
    assert means == evaluate(user_emb, item_emb, None, prep.exclude("test"), prep.truth("test"), ks=(5, 10))


def test_candidate_protocol_gives_per_user_metrics(tmp_path):
    from jaxrec.eval.candidates import candidate_metrics, candidate_ranks, per_user_from_ranks

    scores = np.array([[3.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 0.0]])
    ranks = candidate_ranks(scores)
    assert ranks.tolist() == [0, 2, 1]  # ties count above
    per = per_user_from_ranks(ranks, 3, ("hit@1", "ndcg@2", "mrr"))
    assert per["hit@1"].tolist() == [1.0, 0.0, 0.0]
    assert per["ndcg@2"].tolist() == [1.0, 0.0, 1 / np.log2(3)]
    assert per["mrr"].tolist() == [1.0, 1 / 3, 0.5]
    assert candidate_metrics(scores, ("hit@1", "ndcg@2", "mrr")) == {k: float(np.mean(v)) for k, v in per.items()}
