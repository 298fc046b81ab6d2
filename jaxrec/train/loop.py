"""The training loop: ``fit(model, dataset, config)``.

Any optax optimizer (default Adam at ``config.learning_rate``), a jitted step wrapped by the
partitioner (one device or a mesh: the loop does not ask), the model's batch kind and context,
evaluation on validation every ``eval_every`` epochs with the configured protocol, RecBole's
early stopping on ``valid_metric``, best-model selection, a progress bar, a run folder
(``jaxrec.train.runfolder``: log, Orbax checkpoints of latest and best, exact resume,
``results.json`` with the test metrics, the full config and the seed), and the experiment
trackers of ``config.track`` (``jaxrec.train.tracking``: TensorBoard by default, MLflow, W&B),
called through one interface after each epoch's numbers are computed.

Randomness: ``run_keys(config.seed)``; every epoch splits the training key, and the epoch's
sub-key seeds the shuffling/negative sampling (numpy) and the model's own randomness. The key
is checkpointed, so a resumed run continues the same stream and ends with the same
parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec._version import __version__
from jaxrec.config import Config
from jaxrec.data import DataError, Dataset
from jaxrec.data.fingerprint import dataset_fingerprint
from jaxrec.eval.protocols import make_evaluator
from jaxrec.models import Model, Params
from jaxrec.models.base import abstract_context
from jaxrec.registry import BATCH_KINDS, CONTEXTS, EVALUATIONS
from jaxrec.train.batches import PreparedData, batch_source, prepare
from jaxrec.train.partition import Partitioner, make_partitioner
from jaxrec.train.runfolder import open_run
from jaxrec.train.state import TrainState, init_state, run_keys
from jaxrec.train.step import run_epoch, train_step
from jaxrec.train.tracking import Tracking, check_trackers, open_trackers

log = logging.getLogger("jaxrec.train")


class TrainingDivergedError(FloatingPointError):
    """The loss or the parameters became NaN or infinite; nothing of that epoch was saved."""


@dataclasses.dataclass
class RunResult:
    """What ``fit`` returns: best parameters and their validation and test metrics."""

    params: Params
    test_metrics: dict[str, float]
    valid_metrics: dict[str, float]
    best_epoch: int
    stopped_epoch: int
    out_dir: Path | None
    config: Config
    history: list[dict]
    #: Per-user test metrics ``{"user": int [M], "<metric>": float [M]}`` when the evaluation
    #: protocol gives them (``EvaluationProtocol.per_user``), else None.
    test_per_user: dict[str, np.ndarray] | None = None
    #: the evaluation protocol's evaluator this run used (``config.evaluation``); a protocol that
    #: keeps per-user details of its own (A-LLMRec's ``lm_candidates``: ``evaluator.results[stage]``)
    #: exposes them here. Not saved to the run folder.
    evaluator: Any = None


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """The default optimizer: Adam at ``config.learning_rate`` with betas ``config.adam_b1`` /
    ``adam_b2`` (0.9 / 0.999 as LightGCN/RecBole's; SASRec's protocol sets 0.98)."""
    return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def fit(
    model: Model,
    dataset: Dataset,
    config: Config,
    out_dir: str | Path | None = None,
    params: Params | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    prepared: PreparedData | None = None,
    optimizer: optax.GradientTransformation | None = None,
    partitioner: Partitioner | None = None,
    tracking: Tracking | None = None,
    before_publish: Any = None,
) -> RunResult:
    """Train ``model`` on ``dataset`` with ``config``; evaluate the best epoch on test.

    Args:
      model: a backbone from ``jaxrec.models.get_model(config)`` (or any ``Model``).
      dataset: a split ``jaxrec.data.Dataset``.
      config: the run's configuration (seed, epochs, batch_size, ...).
      out_dir: the run folder (``log.jsonl``, ``results.json``, ``run.json``, ``ckpt/``); None
        keeps everything in memory (no checkpoints, no resume).
      params: initial parameters (e.g. ``jaxrec.initial_params``); default ``model.init`` with
        the seed's init key. Never modified or invalidated: ``fit`` trains a copy.
      resume: continue from ``out_dir``'s latest complete checkpoint (same result as an
        uninterrupted run).
      overwrite: clear an existing run in ``out_dir`` instead of refusing it.
      progress: show a progress bar (default: when stderr is a terminal).
      prepared: ``prepare(dataset)`` to share between runs on the same split.
      optimizer: any ``optax.GradientTransformation`` (default ``make_optimizer(config)``).
      partitioner: where the run lives (default ``make_partitioner(config)``).
      tracking: the run's name, group and extra trackers for the trackers of ``config.track``
        (``jaxrec.train.tracking.Tracking``); process 0 alone tracks.
      before_publish: ``f(run_folder)`` called (process 0) once ``results.json`` is written and
        before the run is published, to add files of its own (``RunFolder.write_json``): the
        published run holds them from its first moment (``jaxrec.pipeline.train_run``'s init.json).
    The run is written in ``out_dir/in-progress/`` and published when finished
    (``jaxrec.train.runfolder``): a reader of ``out_dir`` sees the previous run or this complete one.
    Raises:
      ConfigError / DataError: the config does not fit the dataset (before any compute).
      TrainingDivergedError: the loss or parameters became non-finite (naming the epoch and
        the last good checkpoint; nothing non-finite is saved).
      FileExistsError / CheckpointMismatchError: ``out_dir`` holds another or a finished run.
      TrackingError: a tracker of ``config.track`` lacks its package (before any compute).
      RunBusyError: another process is writing ``out_dir``.
      WriteError: a file could not be written (a full disk), naming it.
    """
    check_run(model, dataset, config)
    progress = sys.stderr.isatty() if progress is None else progress
    part = partitioner or make_partitioner(config)
    data = prepared or prepare(dataset)
    keys = run_keys(config.seed)
    contexts = _placed_contexts(data.contexts(model.context, config), part)
    optimizer = optimizer or make_optimizer(config)
    if params is None:
        params = part.init(model.init, keys.init, dataset.num_users, dataset.num_items,
                           abstract_context(contexts["train"]))
    state = init_state(params, optimizer, keys.train, part)
    run = open_run(out_dir, run_identity(model, config, dataset), resume=resume, overwrite=overwrite,
                   primary=part.is_primary)
    try:
        state, history = run.restore(state)
        # trackers write into the run folder given (its name names the run; TensorBoard shows it live),
        # not into the version being written: their files are a log, not part of the published run
        trackers, info = open_trackers(config, tracking, run.published, state.epoch + 1, part.is_primary)
        epoch_fn = EpochRunner(model, part, part.step(train_step(model, optimizer)), batch_source(model, data, config))
        evaluate, embed = make_evaluator(data, config, part), part.embed(model.embed)
        with trackers, _ProgressBar(config, state.epoch + 1, progress) as bar:
            trackers.start(config, info)
            for epoch in range(state.epoch + 1, config.epochs):
                state, record = epoch_fn(state, contexts["train"], epoch)
                record["learning_rate"] = learning_rate(state.opt_state, config.learning_rate)
                _check_finite(state, record, run)
                if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                    t1 = time.perf_counter()
                    record["valid"] = evaluate(embed(state.params, contexts["valid"]), "valid")
                    record["eval_seconds"] = time.perf_counter() - t1
                    state = state.observe(record["valid"], config.valid_metric, epoch)
                    if state.early.improved_at(epoch):
                        run.save_best(state, epoch, record["valid"])
                stop = state.early.should_stop(config.patience) and epoch + 1 >= config.min_epochs
                if config.time_budget_minutes > 0 and budget_spent([*history, record], 60 * config.time_budget_minutes):
                    stop = True  # another epoch would overrun the budget (resumed epochs included)
                    log.info("time budget of %.1f min spent at epoch %d", config.time_budget_minutes, epoch)
                history.append(record)
                run.log(record)
                if (epoch + 1) % config.checkpoint_every == 0 or stop or epoch + 1 == config.epochs:
                    run.save_latest(state)
                bar.update(record, state.early)
                trackers.log_epoch(record)
                if stop:
                    log.info("early stop at epoch %d (best epoch %d)", epoch, state.early.best_epoch)
                    break
            test, per_user = _evaluate_test(evaluate, embed(state.best_params, contexts["test"]), config)
            result = RunResult(
                params=state.best_params, test_metrics=test, valid_metrics=state.best_valid,
                best_epoch=state.early.best_epoch, stopped_epoch=state.epoch, out_dir=run.published, config=config,
                history=history, test_per_user=per_user, evaluator=evaluate,
            )
            trackers.log_test(test, state.best_valid, state.early.best_epoch)
        # the trackers are closed (their files complete) before the run is published
        run.finish(results_record(result, dataset), before_publish)
    finally:
        run.close()
    return result


def _evaluate_test(evaluate, embeddings, config: Config) -> tuple[dict[str, float], dict | None]:
    """The test metrics, and the per-user values when the protocol gives them (at no extra cost)."""
    if EVALUATIONS.get(config.evaluation, "evaluation").per_user:
        return evaluate(embeddings, "test", per_user=True)
    return evaluate(embeddings, "test"), None


def learning_rate(opt_state: Any, default: float) -> float:
    """The learning rate of the last step: the ``learning_rate`` hyperparameter of an
    ``optax.inject_hyperparams`` state inside ``opt_state`` (a schedule's current value), else
    ``default`` (the config's constant rate)."""
    kinds = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds))
             if isinstance(x, kinds) and "learning_rate" in x.hyperparams]
    return float(np.asarray(found[0].hyperparams["learning_rate"])) if found else float(default)


class EpochRunner:
    """One epoch: draw the views and batches from the epoch key, run every batch through the step."""

    def __init__(self, model: Model, partitioner: Partitioner, step, batches):
        self.model, self.part, self.step, self.batches = model, partitioner, step, batches

    def __call__(self, state: TrainState, context: Any, epoch: int) -> tuple[TrainState, dict[str, Any]]:
        t0 = time.perf_counter()
        train_key, epoch_key = jax.random.split(state.key)
        view_key, step_key = jax.random.split(epoch_key)
        views = self.model.epoch_views(context, view_key)
        rows = [0]

        def counted(batch):  # rows of the epoch's batches (throughput), counted on the host
            rows[0] += int(np.shape(jax.tree.leaves(batch)[0])[0]) if jax.tree.leaves(batch) else 0
            return batch

        batches = map(self.part.place_batch, map(counted, self.batches.epoch(epoch_rng(epoch_key))))
        params, opt_state, loss, aux, steps = run_epoch(self.step, state.params, state.opt_state, context, views,
                                                        batches, step_key)
        state = state.replace(params=params, opt_state=opt_state, key=train_key, epoch=epoch, step=state.step + steps)
        return state, {"epoch": epoch, "loss": loss, **aux, "train_seconds": time.perf_counter() - t0,
                       "steps": steps, "examples": rows[0]}


def budget_spent(records: list[dict], budget_seconds: float) -> bool:
    """Whether training stops under a time budget (``time_budget_minutes``): True when the seconds
    of training and validation of the epochs in ``records`` (``log.jsonl`` records), plus one more
    epoch of their mean length, exceed ``budget_seconds`` (another epoch would overrun it)."""
    times = [r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in records]
    return bool(times) and sum(times) + sum(times) / len(times) > budget_seconds


def epoch_rng(key: jax.Array) -> np.random.Generator:
    """The numpy Generator an epoch's host-side sampling draws from, seeded by its key."""
    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng(seed.astype(np.uint32).ravel().tolist())


def check_run(model: Model, dataset: Dataset, config: Config) -> None:
    """Every check of ``config`` against ``dataset`` that would otherwise fail mid-run; raises
    ``ConfigError`` / ``DataError`` naming the key, before any compute."""
    name = dataset.name
    if len(dataset.train) == 0:
        raise DataError(f"dataset {name}: the split (split={config.split!r}, split_ratios="
                        f"{list(config.split_ratios)}) leaves no training interactions")
    for stage in ("valid", "test"):
        if len(getattr(dataset, stage)) == 0:
            raise DataError(
                f"dataset {name}: the split (split={config.split!r}"
                + (f", split_ratios={list(config.split_ratios)}" if config.split == "ratio" else "")
                + f") leaves no {stage} interactions to evaluate on; give the {stage} part a share")
    # The checks the model's context, batch kind and evaluation protocol declare (their records' ``check``).
    for component in (CONTEXTS.get(model.context), BATCH_KINDS.get(model.batch_kind),
                      EVALUATIONS.get(config.evaluation, "evaluation")):
        if component.check is not None:
            component.check(dataset, config)
    _check_initializer(dataset, config)
    check_trackers(config.track)  # a tracker's package is missing: TrackingError naming the extra


def _check_initializer(dataset: Dataset, config: Config) -> None:
    """The LLM initializer's own check of the config against the training data (e.g. Rec-PCA
    needs a co-occurrence graph with an edge), before embeddings are loaded."""
    from jaxrec.init.strategies import InitInputs, get_initializer  # noqa: PLC0415

    initializer = get_initializer(config.init)
    if initializer.check is not None:
        tr = dataset.train
        initializer.check(InitInputs(config=config, train_user=tr.user, train_item=tr.item,
                                     num_users=int(dataset.num_users), num_items=int(dataset.num_items)))


def run_identity(model: Model, config: Config, dataset: Dataset) -> dict:
    """What a run folder belongs to (``run.json``): model, config, dataset fingerprint."""
    return {"model": model.name, "config": config.to_dict(), "dataset": dataset_fingerprint(dataset)}


def evaluate_params(model: Model, params: Params, context: Any, stage: str, config: Config,
                    prepared: PreparedData, partitioner: Partitioner | None = None) -> dict[str, float]:
    """Metrics of ``params`` on ``stage`` ("valid" or "test") under ``config.evaluation``."""
    part = partitioner or make_partitioner(config)
    return make_evaluator(prepared, config, part)(part.embed(model.embed)(params, context), stage)


def results_record(result: RunResult, dataset: Dataset) -> dict:
    """The content of ``results.json``: metrics plus everything needed to reproduce them."""
    return {
        "model": result.config.model,
        "seed": result.config.seed,
        "config": result.config.to_dict(),
        "dataset": dataset_fingerprint(dataset),
        "best_epoch": result.best_epoch,
        "stopped_epoch": result.stopped_epoch,
        "valid": result.valid_metrics,
        "test": result.test_metrics,
        "versions": {"jax": jax.__version__, "jaxrec": __version__},
    }


def _placed_contexts(contexts: dict[str, Any], part: Partitioner) -> dict[str, Any]:
    placed: dict[int, Any] = {}
    for ctx in contexts.values():  # stages sharing one context share one placed copy
        if id(ctx) not in placed:
            placed[id(ctx)] = part.place_context(ctx)
    return {stage: placed[id(ctx)] for stage, ctx in contexts.items()}


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_finite(state: TrainState, record: dict, run: Any) -> None:
    if not np.isfinite(record["loss"]) or not bool(_all_finite(state.params)):
        what = f"training loss is {record['loss']}" if not np.isfinite(record["loss"]) else "parameters are not finite"
        raise TrainingDivergedError(
            f"epoch {record['epoch']}: {what}; stopped without saving this epoch. Last good checkpoint: "
            f"{run.last_good()}. Lower learning_rate or check the inputs."
        )


class _ProgressBar:
    """tqdm over epochs (when enabled), showing loss, validation metric and best."""

    def __init__(self, config: Config, initial: int, enabled: bool):
        self.config = config
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=config.epochs, initial=initial, desc="epochs", unit="ep", dynamic_ncols=True)

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, record: dict, early) -> None:
        if self.bar is None:
            return
        post = {"loss": f"{record['loss']:.4f}"}
        if "valid" in record:
            post[self.config.valid_metric] = f"{record['valid'][self.config.valid_metric]:.4f}"
            post["best"] = f"{early.best_score:.4f}@{early.best_epoch}"
        self.bar.set_postfix(post)
        self.bar.update(1)
