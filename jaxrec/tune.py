"""Hyperparameter search with Optuna: ``jaxrec tune`` and ``jaxrec.tune.tune``.

The search space is a config file (TOML) like any other, plus one ``[space.<key>]`` table per
searched key::

    # fixed keys, as in a `jaxrec train --config` file
    model = "lightgcn"
    epochs = 100
    embedding_size = 64

    [space.learning_rate]
    type = "float"            # float | int | categorical
    low = 1e-4
    high = 1e-2
    log = true                # optional (float and int); `step` is optional too

    [space.num_layers]
    type = "int"
    low = 1
    high = 4

    [space.reg_weight]
    type = "categorical"
    choices = [1e-5, 1e-4, 1e-3]

Each searched key must be a config key of the model (shared, or one of its settings:
``jaxrec.config`` names a misplaced key and the models that have it); every bound and choice is
validated as a config value before any compute. Keys that decide the data or the run's identity
(``dataset``, ``seed``, the split and filtering keys, ``model``, ``plugins``, ``track`` and the
launch keys) cannot be searched: every trial trains on the same split.

- Objective: the validation metric ``config.valid_metric`` of the best epoch (maximized;
  ``RunResult.valid_metrics``), never the test metrics (recorded per trial, not used).
- Pruning: each trial reports its validation metric after every evaluation to Optuna's pruner
  (``median`` (default: Optuna's MedianPruner after 3 finished trials and 10 warm-up epochs),
  ``hyperband`` or ``none``) through a tracker (``OptunaPruning``, passed
  to ``fit`` as ``Tracking.trackers``), which stops a hopeless trial (state PRUNED).
- Storage: the study lives in an Optuna RDB storage (``sqlite:///study.db``), so the search is
  resumable and shared: the same command again (or several processes at once, on the same
  ``--storage`` and ``--study-name``) continues until ``trials`` trials are COMPLETE or PRUNED
  (failed ones do not count). A trial whose process was killed is marked FAIL when the search
  resumes: at once when its process (recorded with the trial) is gone from this machine, else by
  Optuna's heartbeat after ``grace_period`` seconds without one. A study remembers its space and
  base config and refuses to continue under other ones.
- Result: the top trials' table, and the best trial's full config written as a TOML file that
  ``jaxrec train --config best.toml`` takes (``TuneResult``).

Each trial is a ``jaxrec.fit`` run named ``trial-<n>`` in the study's group for the trackers
of ``config.track`` (with ``runs_dir``, its run folder is ``<runs_dir>/trial-<n>``, where the
default TensorBoard tracker writes). One process runs one trial at a time; run several
processes to search in parallel.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from jaxrec.config import Config, ConfigError, build_config, coerce_mapping, import_plugins, read_config_file
from jaxrec.errors import JaxrecError
from jaxrec.train.runfiles import LAUNCH_FIELDS

log = logging.getLogger("jaxrec.tune")

#: Keys a search space may not search: they decide the data, the model or how a run is launched.
NOT_SEARCHABLE = frozenset({"model", "dataset", "seed", "plugins", "split", "split_ratios", "rating_threshold",
                            "dedup", "kcore", "data_dirs", "missing", "data_cache", "valid_metric", "evaluation",
                            "checkpoint_every", "sharding", "mesh_shape", "mesh_axes", "data_axis", "model_axis",
                            "row_comm"}) | LAUNCH_FIELDS
TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "none")
#: User attributes a trial records (besides Optuna's own params and value).
ATTR_CONFIG, ATTR_HOST, ATTR_PID = "jaxrec.config", "jaxrec.host", "jaxrec.pid"


class TuneError(JaxrecError, ValueError):
    """A search that cannot run as asked (bad space file, a study created with another space, a
    storage that is not an Optuna RDB URL, Optuna not installed); the message names the file,
    key or study."""


def _optuna():
    try:
        import optuna  # noqa: PLC0415
    except ImportError:
        raise TuneError("jaxrec tune needs Optuna, which is not installed; pip install 'jaxrec[track]'") from None
    return optuna


# ----------------------------------------------------------------------------- the search space
@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched key: ``type`` float / int (``low``, ``high``, ``log``, ``step``) or categorical
    (``choices``)."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's ``trial`` suggests for this key."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def values_to_check(self) -> list:
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if v not in (None, ()) and not (k == "log" and v is False)}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A space file: the fixed config keys (its top level) and the searched ``dims``."""

    fixed: Mapping[str, Any]
    dims: tuple[Dimension, ...]
    source: str = "search space"

    def to_dict(self) -> dict:
        return {"fixed": dict(self.fixed), "space": [d.to_dict() for d in self.dims]}


def read_space(path: str | Path) -> SearchSpace:
    """The ``SearchSpace`` of a TOML file (module docstring); ``TuneError`` / ``ConfigError``
    naming the file and the table when it is malformed."""
    path = Path(path)
    if path.suffix != ".toml":
        raise TuneError(f"search space {path}: expected a .toml file (fixed keys, then [space.<key>] tables)")
    return parse_space(read_config_file(path), source=f"search space {path}")


def parse_space(table: Mapping[str, Any], source: str = "search space") -> SearchSpace:
    """A ``SearchSpace`` from a parsed TOML table (``read_space``)."""
    table = dict(table)
    space = table.pop("space", None)
    if not isinstance(space, dict) or not space:
        raise TuneError(f"{source}: no [space.<key>] table; add one per searched key, e.g. [space.learning_rate] "
                        'type = "float", low = 1e-4, high = 1e-2, log = true')
    dims = []
    for key, spec in space.items():
        where = f"{source}: [space.{key}]"
        if not isinstance(spec, dict):
            raise TuneError(f"{where}: expected a table with type = float | int | categorical")
        unknown = sorted(set(spec) - {"type", "low", "high", "log", "step", "choices"})
        if unknown:
            raise TuneError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            "expected type, low, high, log, step (float/int) or choices (categorical)")
        kind = spec.get("type")
        if kind not in TYPES:
            raise TuneError(f"{where}: type = {kind!r}; expected one of {', '.join(TYPES)}")
        if key in table:
            raise TuneError(f"{where}: {key} is also a fixed key at the top level; keep one of them")
        if kind == "categorical":
            choices = spec.get("choices")
            extra = sorted(set(spec) - {"type", "choices"})
            if not isinstance(choices, list) or not choices:
                raise TuneError(f"{where}: expected choices = [a non-empty list of values]")
            if extra:
                raise TuneError(f"{where}: {', '.join(extra)} apply to float and int; a categorical key has choices")
            if any(isinstance(c, (list, dict)) for c in choices):
                raise TuneError(f"{where}: choices must be numbers, strings or booleans (Optuna's categorical values)")
            if len(set(map(repr, choices))) != len(choices):
                raise TuneError(f"{where}: choices repeat")
            dims.append(Dimension(key, kind, choices=tuple(choices)))
            continue
        if "choices" in spec:
            raise TuneError(f"{where}: choices apply to type = \"categorical\"; a {kind} key has low and high")
        low, high, log_, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
        num = (int,) if kind == "int" else (int, float)
        for name, v in (("low", low), ("high", high)):
            if not isinstance(v, num) or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
                raise TuneError(f"{where}: {name} = {v!r}; expected a{'n integer' if kind == 'int' else ' finite number'}")
        if not low < high:
            raise TuneError(f"{where}: low = {low!r} must be below high = {high!r}")
        if not isinstance(log_, bool):
            raise TuneError(f"{where}: log = {log_!r}; expected true or false")
        if log_ and low <= 0:
            raise TuneError(f"{where}: log = true needs low > 0 (got {low!r})")
        if step is not None:
            if not isinstance(step, num) or isinstance(step, bool) or step <= 0:
                raise TuneError(f"{where}: step = {step!r}; expected a positive {kind}")
            if log_:
                raise TuneError(f"{where}: step and log = true cannot be combined (Optuna)")
        dims.append(Dimension(key, kind, low=float(low) if kind == "float" else low,
                              high=float(high) if kind == "float" else high, log=log_,
                              step=(float(step) if kind == "float" else step) if step is not None else None))
    return SearchSpace(fixed=table, dims=tuple(dims), source=source)


def base_config(space: SearchSpace, model: str | None = None, dataset: str | None = None,
                sets: Sequence[str] = (), plugins: Sequence[str] = (), track: Sequence[str] | None = None) -> Config:
    """The config every trial starts from: the model's protocol defaults < the space file's fixed
    keys < ``model`` / ``dataset`` / ``plugins`` / ``track`` < ``sets`` (``key=value``), validated once."""
    import_plugins(plugins)
    import_plugins(space.fixed.get("plugins", ()) or ())
    chosen = model or space.fixed.get("model") or Config.model
    fixed = coerce_mapping(space.fixed, source=f"{space.source}:", model=chosen) if space.fixed else {}
    flags: dict[str, Any] = {"model": chosen}
    if dataset is not None:
        flags["dataset"] = str(dataset)
    if plugins:
        flags["plugins"] = tuple(dict.fromkeys([*fixed.get("plugins", ()), *plugins]))
    if track is not None:
        flags["track"] = tuple(track)
    return build_config(fixed, flags, sets=sets)


def check_space(space: SearchSpace, base: Config) -> None:
    """Every searched key is a key of ``base.model`` that may be searched, and every bound and
    choice is a valid value of it (``ConfigError`` / ``TuneError`` naming ``[space.<key>]``),
    before any compute."""
    from jaxrec.config import coerce_value  # noqa: PLC0415

    for d in space.dims:
        where = f"{space.source}: [space.{d.key}]"
        if d.key in NOT_SEARCHABLE:
            raise TuneError(f"{where}: {d.key} cannot be searched (it decides the data, the model or how the run is "
                            "launched; every trial trains on the same split); set it as a fixed key")
        try:
            values = [coerce_value(d.key, v, source=where, model=base.model) for v in d.values_to_check()]
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        for v in values:
            try:
                base.replace(**{d.key: v})
            except ConfigError as e:
                raise ConfigError(f"{where}: the value {v!r} is not valid for model {base.model!r}: {e}") from None


# ----------------------------------------------------------------------------- pruning through a tracker
class OptunaPruning:
    """A tracker (``jaxrec.train.tracking.Tracker``) that reports the validation metric of every
    evaluation to an Optuna trial and stops the run (``optuna.TrialPruned``, tracked as
    ``"pruned"``) when the study's pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric = trial, metric

    def start(self, config: Any, run: Any) -> None: ...

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        valid = record.get("valid")
        if not valid:
            return
        epoch = int(record["epoch"])
        self.trial.report(float(valid[self.metric]), epoch)
        if self.trial.should_prune():
            log.info("trial %d: pruned at epoch %d (%s = %.4f)", self.trial.number, epoch, self.metric,
                     valid[self.metric])
            err = _optuna().TrialPruned(f"pruned at epoch {epoch} ({self.metric} = {valid[self.metric]:.4f})")
            err.tracking_status = "pruned"
            raise err

    def log_test(self, test, valid, best_epoch) -> None: ...

    def finish(self, status: str) -> None: ...


# ----------------------------------------------------------------------------- the search
@dataclasses.dataclass
class TuneResult:
    """What ``tune`` returns: the study, its best trial's number, value and config, where the best
    config was written, the counts of trials by state, and the printed table."""

    study: Any
    best_number: int
    best_value: float
    best_config: Config
    best_test: dict[str, float]
    out: Path | None
    counts: dict[str, int]
    table: str


def _pruner(name: str, optuna: Any) -> Any:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=10)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"pruner={name!r}: expected one of {', '.join(PRUNERS)}")


def open_storage(storage: str, heartbeat_interval: int = 10, grace_period: int = 60) -> Any:
    """An Optuna RDB storage (with heartbeats, so a killed trial is failed) for a database URL such
    as ``sqlite:///study.db``; ``TuneError`` for anything else."""
    optuna = _optuna()
    if not isinstance(storage, str) or "://" not in storage:
        raise TuneError(f"--storage {storage!r}: expected a database URL, e.g. sqlite:///study.db (the study lives "
                        "there: resumable, shared by several jaxrec tune processes)")
    if storage.startswith("sqlite:///"):
        folder = Path(storage[len("sqlite:///"):]).expanduser().parent
        if not folder.is_dir():
            raise TuneError(f"--storage {storage}: folder {folder} does not exist")
    import warnings  # noqa: PLC0415

    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words; they are what resumes
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's many errors, named
        raise TuneError(f"--storage {storage}: cannot open it ({type(e).__name__}: {e})") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study: Any, storage: Any) -> list[int]:
    """Mark FAIL the RUNNING trials whose process (recorded on this machine) no longer exists; the
    trials of other machines are left to Optuna's heartbeat. Returns their numbers."""
    optuna = _optuna()
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get(ATTR_HOST) == host and isinstance(t.user_attrs.get(ATTR_PID), int) \
                and t.user_attrs[ATTR_PID] != os.getpid() and not _pid_alive(t.user_attrs[ATTR_PID]):
            storage.set_trial_system_attr(t._trial_id, "fail_reason",
                                          f"process {t.user_attrs[ATTR_PID]} on {host} ended mid-trial (killed)")
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(t.number)
    if failed:
        log.warning("tune: trials %s were left RUNNING by a process that ended (killed); marked FAIL", failed)
    return failed


def _identity(space: SearchSpace, base: Config) -> dict:
    """What a study is: the searched dimensions and the base config (tracking left out)."""
    cfg = {k: v for k, v in base.to_dict().items() if k not in LAUNCH_FIELDS}
    return {"space": [d.to_dict() for d in space.dims], "base_config": cfg}


def _check_study(study: Any, identity: dict, name: str, storage: str) -> None:
    saved = study.user_attrs.get("jaxrec.identity")
    if saved is None:
        study.set_user_attr("jaxrec.identity", identity)
        return
    saved, now = json.loads(json.dumps(saved)), json.loads(json.dumps(identity))
    if saved == now:
        return
    diffs = []
    if saved["space"] != now["space"]:
        diffs.append(f"space: saved {saved['space']}, now {now['space']}")
    for k in sorted(set(saved["base_config"]) | set(now["base_config"])):
        a, b = saved["base_config"].get(k), now["base_config"].get(k)
        if a != b:
            diffs.append(f"{k}: saved {a!r}, now {b!r}")
    raise TuneError(f"study {name!r} in {storage} was created with another search ({'; '.join(diffs[:6])}); "
                    "use the same space and settings to continue it, or another --study-name")


def count_states(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def tune(space: SearchSpace | str | Path, *, trials: int, storage: str, model: str | None = None,
         dataset: str | None = None, sets: Sequence[str] = (), plugins: Sequence[str] = (),
         track: Sequence[str] | None = None, study_name: str | None = None, out: str | Path | None = None,
         pruner: str = "median", sampler_seed: int | None = None, runs_dir: str | Path | None = None,
         top: int = 10, progress: bool | None = False, heartbeat_interval: int = 10, grace_period: int = 60,
         max_failures: int | None = None) -> TuneResult:
    """Search ``space`` with Optuna until ``trials`` trials of the study are COMPLETE or PRUNED
    (module docstring); write the best config to ``out`` (TOML) and return the ``TuneResult``.

    Args:
      space: a ``SearchSpace`` or the path of its TOML file.
      trials: how many finished (complete or pruned) trials the study should hold (>= 1).
      storage: an Optuna database URL (``sqlite:///study.db``).
      model, dataset, sets, plugins, track: as ``jaxrec train``'s ``--model``, ``--dataset``,
        ``--set``, ``--plugin``, ``--track`` (over the space file's fixed keys).
      study_name: default ``<dataset>-<model>``.
      out: where the best config goes (TOML; None: not written).
      pruner: ``median`` | ``hyperband`` | ``none``.
      sampler_seed: seed of the TPE sampler (None: random; two processes given the same seed
        would propose the same first trials).
      runs_dir: keep each trial's run folder as ``<runs_dir>/trial-<n>`` (None: trials run in
        memory; the TensorBoard tracker then writes nothing).
      top: rows of the printed table.
      heartbeat_interval, grace_period: Optuna's heartbeat (seconds): a trial without a heartbeat
        for ``grace_period`` is failed by the next process that starts a trial.
      max_failures: stop with ``TuneError`` after this many failed trials in this process
        (default ``trials``), so a space that always fails does not loop forever.
    Raises:
      TuneError / ConfigError / DataError: bad space, storage, study or data, before any trial.
    """
    optuna = _optuna()
    from jaxrec.data import load_dataset  # noqa: PLC0415
    from jaxrec.init.embeddings import require_text_source  # noqa: PLC0415
    from jaxrec.models import get_model  # noqa: PLC0415
    from jaxrec.pipeline import initial_params  # noqa: PLC0415
    from jaxrec.train import TrainingDivergedError, check_run, fit, prepare  # noqa: PLC0415
    from jaxrec.train.tracking import Tracking  # noqa: PLC0415

    if isinstance(space, (str, Path)):
        space = read_space(space)
    if not isinstance(trials, int) or trials < 1:
        raise TuneError(f"--trials {trials!r}: expected an integer >= 1")
    base = base_config(space, model=model, dataset=dataset, sets=sets, plugins=plugins, track=track)
    check_space(space, base)
    require_text_source(base)
    name = study_name or f"{Path(str(base.dataset)).name}-{base.model}"
    store = open_storage(storage, heartbeat_interval, grace_period)
    # The data (one split for every trial) and its checks, before the first trial.
    dataset_ = load_dataset(base.dataset, base)
    check_run(get_model(base), dataset_, base)
    prepared = prepare(dataset_)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    study = optuna.create_study(study_name=name, storage=store, direction="maximize", sampler=sampler,
                                pruner=_pruner(pruner, optuna), load_if_exists=True)
    _check_study(study, _identity(space, base), name, storage)
    fail_dead_trials(study, store)
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    failures = [0]
    max_failures = trials if max_failures is None else max_failures

    def objective(trial):
        trial.set_user_attr(ATTR_HOST, socket.gethostname())
        trial.set_user_attr(ATTR_PID, os.getpid())
        config = base.replace(**{d.key: d.suggest(trial) for d in space.dims})
        trial.set_user_attr(ATTR_CONFIG, config.to_dict())
        t0 = time.perf_counter()
        model_ = get_model(config)
        check_run(model_, dataset_, config)
        params = initial_params(model_, dataset_, config)
        run_dir = Path(runs_dir) / f"trial-{trial.number}" if runs_dir is not None else None
        tracking = Tracking(name=f"trial-{trial.number}", group=name, tags={"study": name, "trial": trial.number},
                            trackers=(OptunaPruning(trial, config.valid_metric),))
        result = fit(model_, dataset_, config, out_dir=run_dir, params=params, overwrite=True, progress=progress,
                     prepared=prepared, tracking=tracking)
        trial.set_user_attr("jaxrec.test", result.test_metrics)
        trial.set_user_attr("jaxrec.best_epoch", result.best_epoch)
        trial.set_user_attr("jaxrec.epochs_run", len(result.history))
        trial.set_user_attr("jaxrec.seconds", round(time.perf_counter() - t0, 1))
        value = float(result.valid_metrics[config.valid_metric])
        log.info("trial %d: %s = %.4f (%s)", trial.number, config.valid_metric, value,
                 ", ".join(f"{k}={v}" for k, v in trial.params.items()))
        return value

    def stop_when_done(study_, trial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            failures[0] += 1
            if failures[0] >= max_failures:
                study_.stop()
        if len(study_.get_trials(deepcopy=False, states=done_states)) >= trials:
            study_.stop()

    if len(study.get_trials(deepcopy=False, states=done_states)) < trials:
        study.optimize(objective, n_trials=None, callbacks=[stop_when_done],
                       catch=(TrainingDivergedError, ConfigError))
    if failures[0] >= max_failures and len(study.get_trials(deepcopy=False, states=done_states)) < trials:
        last = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))][-1:]
        why = last[0].system_attrs.get("fail_reason", "") if last else ""
        raise TuneError(f"study {name!r}: {failures[0]} trials failed in this process (last: {why or 'see the log'}); "
                        "check the search space")
    return summarize(study, base, out=out, top=top)


def summarize(study: Any, base: Config, out: str | Path | None = None, top: int = 10) -> TuneResult:
    """The top trials' table, the best config written to ``out`` (TOML) and the ``TuneResult``;
    ``TuneError`` when no trial has completed."""
    optuna = _optuna()
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    counts = count_states(study)
    if not complete:
        raise TuneError(f"study {study.study_name!r}: no completed trial yet ({_counts_text(counts)})")
    best = max(complete, key=lambda t: (t.value, -t.number))
    config = Config.from_dict(best.user_attrs[ATTR_CONFIG], source=f"study {study.study_name} trial {best.number}")
    path = write_config_toml(out, config, header=[
        f"best trial {best.number} of study {study.study_name!r}: valid {config.valid_metric} = {best.value:.6f}",
        f"train it: jaxrec train --config {Path(out).name if out else 'best.toml'}"]) if out else None
    table = trials_table(study, config.valid_metric, top)
    return TuneResult(study=study, best_number=best.number, best_value=float(best.value), best_config=config,
                      best_test=dict(best.user_attrs.get("jaxrec.test", {})), out=path, counts=counts, table=table)


def _counts_text(counts: Mapping[str, int]) -> str:
    order = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    return ", ".join(f"{counts[s]} {s.lower()}" for s in order if counts.get(s))


def trials_table(study: Any, metric: str, top: int = 10) -> str:
    """The ``top`` completed trials by value (best first): number, value, searched params, best
    epoch, epochs run, seconds; a line with the counts by state above."""
    optuna = _optuna()
    complete = sorted(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: (-t.value, t.number))[:top]
    keys = list(dict.fromkeys(k for t in complete for k in t.params))
    headers = ["rank", "trial", f"valid {metric}", *keys, "best ep", "epochs", "seconds"]
    rows = [[str(i + 1), str(t.number), f"{t.value:.4f}", *[_fmt_param(t.params.get(k)) for k in keys],
             str(t.user_attrs.get("jaxrec.best_epoch", "-")), str(t.user_attrs.get("jaxrec.epochs_run", "-")),
             str(t.user_attrs.get("jaxrec.seconds", "-"))] for i, t in enumerate(complete)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    title = f"study {study.study_name!r}: {_counts_text(count_states(study))}; top {len(rows)} by valid {metric}"
    return "\n".join([title, line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def write_config_toml(path: str | Path, config: Config, header: Iterable[str] = ()) -> Path:
    """Write ``config`` as a TOML file that ``jaxrec train --config`` reads back to the same config
    (keys holding None are left out: TOML has no null; a None that is not the key's default is a
    ``TuneError``). Written atomically."""
    import tomli_w  # noqa: PLC0415

    from jaxrec.config import load_config_file  # noqa: PLC0415

    path = Path(path)
    data = {k: v for k, v in config.to_dict().items() if v is not None}
    text = "".join(f"# {h}\n" for h in header) + tomli_w.dumps(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.toml")
    tmp.write_text(text)
    back = load_config_file(tmp, base=Config.for_model(config.model)).to_dict()
    if back != config.to_dict():
        tmp.unlink()
        diffs = [k for k in config.to_dict() if back.get(k) != config.to_dict()[k]]
        raise TuneError(f"{path}: the config does not survive TOML (keys {diffs}: a None where the default is not)")
    os.replace(tmp, path)
    return path


__all__ = ["tune", "TuneResult", "TuneError", "SearchSpace", "Dimension", "read_space", "parse_space", "base_config",
           "check_space", "OptunaPruning", "open_storage", "fail_dead_trials", "summarize", "trials_table",
           "write_config_toml", "NOT_SEARCHABLE"]
