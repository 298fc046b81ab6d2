"""Experiment tracking: a run's config, curves and results sent to the tools the field uses.

``fit`` calls one small interface, ``Tracker`` (``start`` / ``log_epoch`` / ``log_test`` /
``finish``), through a ``TrackerGroup``; the trackers implement it. Which trackers a run uses is
the config key ``track`` (a tuple of names in ``jaxrec.registry.TRACKERS``; ``jaxrec train
--track tensorboard,mlflow``), plus any tracker objects the caller passes in ``Tracking.trackers``
(``jaxrec.tune``'s Optuna pruning is one). A user's own tracker is one registered
``TrackerKind``::

    from jaxrec.registry import TRACKERS
    from jaxrec.train.tracking import TrackerKind
    TRACKERS.register("mine", TrackerKind(MyTracker, requires=("my_package",)))

Built in (``pip install 'jaxrec[track]'`` brings the packages):

- ``tensorboard`` (default): TensorBoard event files written with tensorboardX into the run
  folder itself (``tensorboard --logdir checkpoints`` then lists every run by its folder name);
  the config as text and as TensorBoard HParams (so runs compare side by side in the HPARAMS
  tab), per-epoch scalars, the final test metrics. A run without a folder (``out_dir=None``) and
  without ``Tracking.log_dir`` writes no event file. A fresh run removes the folder's old event
  files; a resumed one purges the epochs it re-runs (tensorboardX ``purge_step``).
- ``mlflow``: one MLflow run per jaxrec run through ``mlflow.tracking.MlflowClient`` (no server):
  the store is ``$MLFLOW_TRACKING_URI``, else MLflow's own default ``sqlite:///mlflow.db`` in the
  working directory (``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows it; the UI is in
  the full ``mlflow`` package). Experiment = ``Tracking.group`` (default ``jaxrec``); config as
  params. A resumed run continues the MLflow run of the same run folder.
- ``wandb``: Weights & Biases, offline unless ``$WANDB_MODE`` says otherwise (files under
  ``<run folder>/wandb/``; ``wandb sync`` uploads them later). Project = ``Tracking.group``.

What is logged (the same names in every tracker; step = the 0-based epoch of ``log.jsonl``; a
metric's ``@`` is written ``_at_``, since MLflow refuses ``@`` and tensorboardX rewrites it:
``valid/ndcg_at_10``, ``tag_name``):
``train/loss`` and ``train/<term>`` for every loss term of the objective, ``train/learning_rate``
(from an ``optax.inject_hyperparams`` state when the optimizer has one, else
``config.learning_rate``), ``train/steps_per_second``, ``train/examples_per_second`` (rows of the
batches per second of the epoch's training time), ``time/train_seconds``, ``time/eval_seconds``,
``valid/<metric>`` at each evaluation; at the end ``test/<metric>`` and ``best/valid_<metric>``
(the selected epoch's validation metrics, step = best epoch). The config goes as parameters.

Tracking never changes a run: trackers get copies of the records, after the numbers are
computed, and draw no random numbers. In a multi-process run only process 0 tracks.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from jaxrec.errors import JaxrecError
from jaxrec.registry import TRACKERS

log = logging.getLogger("jaxrec.train")

#: The pip extra that installs the built-in trackers' packages (pyproject.toml).
EXTRA = "track"

#: Keys of an epoch record (``fit``'s ``log.jsonl`` line) that are not per-epoch training values.
_NOT_TRAIN = frozenset({"epoch", "valid", "loss", "train_seconds", "eval_seconds", "steps", "examples",
                        "learning_rate"})


class TrackingError(JaxrecError, RuntimeError):
    """A tracker cannot run (its package is not installed, its store is unreachable); the message
    names the tracker and what to install or set."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a tracker learns about the run when it starts.

    name: the run's name in the tracker's UI (the run folder's name, or ``Tracking.name``).
    group: the experiment the run belongs to (MLflow experiment, W&B project): a grid's or a
      study's name, default ``"jaxrec"``.
    dir: the folder for the run's tracking files (the run folder, or ``Tracking.log_dir/<name>``),
      None when the run has neither.
    start_epoch: the first epoch this process trains (0 for a fresh run; more when resumed).
    tags: free ``{key: value}`` labels (a grid's cell key, a study's trial number).
    """

    name: str
    group: str
    dir: Path | None
    start_epoch: int = 0
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Tracker(Protocol):
    """The interface ``fit`` calls (module docstring). ``status`` of ``finish``: ``"finished"``,
    ``"failed"``, ``"killed"`` (interrupted) or what the stopping exception names in its
    ``tracking_status`` attribute (e.g. ``"pruned"``)."""

    def start(self, config: Any, run: RunInfo) -> None: ...

    def log_epoch(self, record: Mapping[str, Any]) -> None: ...

    def log_test(self, test: Mapping[str, float], valid: Mapping[str, float], best_epoch: int) -> None: ...

    def finish(self, status: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class TrackerKind:
    """A registered tracker (``jaxrec.registry.TRACKERS``, config key ``track``).

    build: ``() -> Tracker`` (a new tracker per run).
    requires: import names of the packages it needs (checked before any compute).
    install: what to tell a user who lacks them (default: the ``track`` extra).
    """

    build: Callable[[], Tracker]
    requires: tuple[str, ...] = ()
    install: str = f"pip install 'jaxrec[{EXTRA}]'"


@dataclasses.dataclass(frozen=True)
class Tracking:
    """How a caller labels a run for the trackers (``fit(..., tracking=...)``).

    name: the run's name (default: the run folder's name, else ``<dataset>-<model>-s<seed>``).
    group: the experiment / project it belongs to (default ``"jaxrec"``).
    log_dir: where file-based trackers write when the run has no folder (``<log_dir>/<name>``).
    tags: labels recorded with the run.
    trackers: tracker objects used besides the config's ``track`` names.
    """

    name: str | None = None
    group: str | None = None
    log_dir: str | Path | None = None
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    trackers: Sequence[Tracker] = ()


def parse_track(text: str | None) -> tuple[str, ...] | None:
    """``--track`` text -> tracker names: ``"tensorboard,mlflow"`` -> both, ``"none"`` or ``""`` -> ``()``,
    None -> None (the config's own)."""
    if text is None:
        return None
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    return () if names in ([], ["none"]) else tuple(names)


def check_trackers(names: Sequence[str]) -> None:
    """``TrackingError`` naming the tracker and the install command when a package a tracker in
    ``names`` needs is not installed (``ConfigError`` for an unknown name)."""
    for name in names:
        kind = TRACKERS.get(name, "track")
        missing = [p for p in kind.requires if importlib.util.find_spec(p) is None]
        if missing:
            raise TrackingError(f"track={name!r}: the package{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} not installed; "
                                f"{kind.install} (or leave {name} out of track / --track)")


class TrackerGroup:
    """The trackers of one run, called by ``fit`` as one (no tracker-specific code in the loop).

    Used as a context manager around training: leaving it calls ``finish`` with ``"finished"``,
    or with the exception's status (``"killed"`` for KeyboardInterrupt, the exception's
    ``tracking_status`` attribute if it has one, else ``"failed"``).
    """

    def __init__(self, trackers: Sequence[Tracker] = ()):
        self.trackers = list(trackers)
        self._started: list[Tracker] = []

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, config: Any, run: RunInfo) -> None:
        for t in self.trackers:
            t.start(config, run)
            self._started.append(t)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        for t in self._started:
            t.log_epoch(copy.deepcopy(dict(record)))

    def log_test(self, test: Mapping[str, float], valid: Mapping[str, float], best_epoch: int) -> None:
        for t in self._started:
            t.log_test(dict(test), dict(valid), int(best_epoch))

    def finish(self, status: str) -> None:
        started, self._started = self._started, []
        errors = []
        for t in started:
            try:
                t.finish(status)
            except Exception as e:  # noqa: BLE001 - finish every tracker, then report
                errors.append(f"{type(t).__name__}: {e}")
        if errors and status == "finished":
            raise TrackingError("tracking: finishing failed: " + "; ".join(errors))
        for e in errors:
            log.warning("tracking: %s", e)

    def __enter__(self) -> "TrackerGroup":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("killed")
        else:
            self.finish(str(getattr(exc, "tracking_status", "failed")))


def open_trackers(config: Any, tracking: Tracking | None, run_dir: Path | None, start_epoch: int,
                  primary: bool = True) -> tuple[TrackerGroup, RunInfo]:
    """The run's ``TrackerGroup`` (the config's ``track`` names built from ``TRACKERS``, then
    ``tracking.trackers``) and its ``RunInfo``; an empty group on a process other than 0.
    Raises ``TrackingError`` when a tracker's package is missing."""
    tracking = tracking or Tracking()
    name = tracking.name or (Path(run_dir).name if run_dir is not None else
                             f"{Path(str(config.dataset)).name}-{config.model}-s{config.seed}")
    folder = Path(run_dir) if run_dir is not None else (
        Path(tracking.log_dir) / name if tracking.log_dir is not None else None)
    info = RunInfo(name=name, group=tracking.group or "jaxrec", dir=folder, start_epoch=int(start_epoch),
                   tags={str(k): str(v) for k, v in dict(tracking.tags).items()})
    if not primary:
        return TrackerGroup(), info
    check_trackers(config.track)
    trackers = [TRACKERS.get(n, "track").build() for n in config.track] + list(tracking.trackers)
    return TrackerGroup(trackers), info


# ----------------------------------------------------------------------------- what is logged
def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """``{tag: value}`` of one epoch record (``fit``'s ``log.jsonl`` line; module docstring names)."""
    out: dict[str, float] = {}
    if "loss" in record:
        out["train/loss"] = float(record["loss"])
    for k, v in record.items():
        if k not in _NOT_TRAIN and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[tag_name(f"train/{k}")] = float(v)
    if "learning_rate" in record:
        out["train/learning_rate"] = float(record["learning_rate"])
    secs = float(record.get("train_seconds", 0.0))
    if secs > 0 and "steps" in record:
        out["train/steps_per_second"] = float(record["steps"]) / secs
    if secs > 0 and "examples" in record:
        out["train/examples_per_second"] = float(record["examples"]) / secs
    for k in ("train_seconds", "eval_seconds"):
        if k in record:
            out[f"time/{k}"] = float(record[k])
    for k, v in (record.get("valid") or {}).items():
        out[tag_name(f"valid/{k}")] = float(v)
    return out


def test_scalars(test: Mapping[str, float], valid: Mapping[str, float]) -> dict[str, float]:
    """``test/<metric>`` and ``best/valid_<metric>`` (the selected epoch's validation metrics)."""
    return {**{tag_name(f"test/{k}"): float(v) for k, v in test.items()},
            **{tag_name(f"best/valid_{k}"): float(v) for k, v in valid.items()}}


def tag_name(name: str) -> str:
    """The tracked name of a metric: ``@`` written ``_at_`` (``valid/ndcg@10`` -> ``valid/ndcg_at_10``)."""
    return name.replace("@", "_at_")


def config_params(config: Any) -> dict[str, str | float | int | bool]:
    """The config as flat parameters (lists as text, None as ``"none"``)."""
    out: dict[str, Any] = {}
    for k, v in config.to_dict().items():
        if isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        out[k] = "none" if v is None else v
    return out


# ----------------------------------------------------------------------------- TensorBoard
class TensorBoardTracker:
    """TensorBoard event files (tensorboardX) in the run folder (module docstring)."""

    def __init__(self):
        self.writer = None

    def start(self, config: Any, run: RunInfo) -> None:
        if run.dir is None:
            log.info("tracking: tensorboard writes into the run folder; this run has none (no out_dir): skipped")
            return
        from tensorboardX import SummaryWriter  # noqa: PLC0415

        run.dir.mkdir(parents=True, exist_ok=True)
        if run.start_epoch == 0:  # a fresh run: the folder's earlier event files are another run's
            for old in run.dir.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = SummaryWriter(logdir=str(run.dir), purge_step=run.start_epoch or None, flush_secs=30)
        self.params = config_params(config)
        text = "\n".join(f"    {k} = {json.dumps(v)}" for k, v in sorted(self.params.items()))
        self.writer.add_text("config", text, run.start_epoch)
        for k, v in sorted(run.tags.items()):
            self.writer.add_text(f"tags/{k}", str(v), run.start_epoch)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        epoch = int(record["epoch"])
        for tag, value in epoch_scalars(record).items():
            self.writer.add_scalar(tag, value, epoch)

    def log_test(self, test: Mapping[str, float], valid: Mapping[str, float], best_epoch: int) -> None:
        if self.writer is None:
            return
        from tensorboardX.summary import hparams  # noqa: PLC0415

        scalars = test_scalars(test, valid)
        exp, ssi, sei = hparams({k: v for k, v in self.params.items()}, scalars)
        for s in (exp, ssi, sei):  # HParams in this run's own event file (add_hparams would open a sub-run)
            self.writer.file_writer.add_summary(s)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, best_epoch)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.add_text("status", status)
            self.writer.close()
            self.writer = None


# ----------------------------------------------------------------------------- MLflow
_MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


class MLflowTracker:
    """One MLflow run per jaxrec run through ``MlflowClient`` (module docstring)."""

    def __init__(self):
        self.client = None
        self.run_id: str | None = None

    def start(self, config: Any, run: RunInfo) -> None:
        from mlflow.entities import Param, RunTag  # noqa: PLC0415
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(run.group)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(run.group)
        except Exception as e:  # noqa: BLE001 - any store failure, named
            raise TrackingError(f"track='mlflow': cannot open the MLflow store {uri} ({type(e).__name__}: {e}); "
                                "set MLFLOW_TRACKING_URI to a writable store, e.g. sqlite:///mlflow.db") from None
        folder = str(run.dir.resolve()) if run.dir is not None else None
        if run.start_epoch > 0 and folder is not None:  # resumed: continue the run of this folder
            found = self.client.search_runs([exp_id], filter_string=f"tags.`jaxrec.run_dir` = '{folder}'",
                                            order_by=["attributes.start_time DESC"], max_results=1)
            self.run_id = found[0].info.run_id if found else None
        tags = {"jaxrec.model": config.model, "jaxrec.dataset": str(config.dataset), "jaxrec.seed": str(config.seed),
                **({"jaxrec.run_dir": folder} if folder else {}), **dict(run.tags)}
        if self.run_id is None:
            self.run_id = self.client.create_run(exp_id, run_name=run.name, tags=tags).info.run_id
            params = [Param(k, str(v)) for k, v in sorted(config_params(config).items())]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.log_batch(self.run_id, tags=[RunTag("jaxrec.resumed_at_epoch", str(run.start_epoch))])

    def _log(self, scalars: Mapping[str, float], step: int) -> None:
        import time  # noqa: PLC0415

        from mlflow.entities import Metric  # noqa: PLC0415

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._log(epoch_scalars(record), int(record["epoch"]))

    def log_test(self, test: Mapping[str, float], valid: Mapping[str, float], best_epoch: int) -> None:
        self._log(test_scalars(test, valid), best_epoch)

    def finish(self, status: str) -> None:
        if self.client is None or self.run_id is None:
            return
        if status not in _MLFLOW_STATUS:
            self.client.set_tag(self.run_id, "jaxrec.status", status)
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(status, "KILLED"))
        self.client = None


# ----------------------------------------------------------------------------- Weights & Biases
class WandbTracker:
    """A Weights & Biases run, offline unless ``$WANDB_MODE`` is set (module docstring)."""

    def __init__(self):
        self.run = None

    def start(self, config: Any, run: RunInfo) -> None:
        import wandb  # noqa: PLC0415

        if run.dir is not None:
            run.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=run.group, name=run.name, dir=str(run.dir) if run.dir is not None else None,
                                  config=config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"),
                                  tags=[f"{k}={v}" for k, v in sorted(run.tags.items())][:20] or None,
                                  reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        except Exception as e:  # noqa: BLE001 - wandb's own failures, named
            raise TrackingError(f"track='wandb': wandb.init failed ({type(e).__name__}: {e}); jaxrec runs W&B offline "
                                "(WANDB_MODE=offline) by default") from None

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self.run.log({**epoch_scalars(record), "epoch": int(record["epoch"])}, step=int(record["epoch"]))

    def log_test(self, test: Mapping[str, float], valid: Mapping[str, float], best_epoch: int) -> None:
        for k, v in test_scalars(test, valid).items():
            self.run.summary[k] = v
        self.run.summary["best_epoch"] = int(best_epoch)

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.summary["status"] = status
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None


TRACKERS.register("tensorboard", TrackerKind(TensorBoardTracker, requires=("tensorboardX",)))
TRACKERS.register("mlflow", TrackerKind(MLflowTracker, requires=("mlflow", "sqlalchemy", "alembic")))
TRACKERS.register("wandb", TrackerKind(WandbTracker, requires=("wandb",)))


__all__ = ["Tracker", "TrackerKind", "Tracking", "RunInfo", "TrackerGroup", "TrackingError", "open_trackers", "parse_track",
           "check_trackers", "epoch_scalars", "test_scalars", "config_params", "tag_name",
           "TensorBoardTracker", "MLflowTracker", "WandbTracker", "EXTRA"]
