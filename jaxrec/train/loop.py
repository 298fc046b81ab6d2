"""The generic training loop: ``fit(model, dataset, config)``.

Adam with a jitted step, epoch shuffling with fresh negatives, evaluation on validation
every ``eval_every`` epochs, RecBole's early stopping on ``valid_metric``, best-model
selection, a progress bar, a per-epoch JSONL log, Orbax checkpoints (latest + best) and a
``results.json`` with the test metrics, the full config and the seed.

Randomness: one ``jax.random`` key from ``config.seed``; every epoch splits it, and the
epoch's sub-key seeds the shuffling/negative sampling (numpy) and the model's own
randomness. The key is checkpointed, so a resumed run continues the same stream and ends
with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec.config import Config
from jaxrec.data import Dataset, PositiveIndex, exclusion_pairs, truth
from jaxrec.eval import evaluate
from jaxrec.graph import BipartiteGraph, build_graph
from jaxrec.models import Model, Params
from jaxrec.train.checkpoint import RunCheckpoints
from jaxrec.train.early_stopping import EarlyStopping
from jaxrec.train.runfiles import JsonlLog, check_identity, write_json_atomic
from jaxrec.train.sharding import Placement, make_placement
from jaxrec.train.step import epoch_batches, make_train_step, run_epoch

log = logging.getLogger("jaxrec.train")


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


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Arrays derived once from a dataset for training and evaluation."""

    graph: BipartiteGraph
    positives: PositiveIndex
    valid_exclude: tuple[np.ndarray, np.ndarray]
    valid_truth: tuple[np.ndarray, np.ndarray, np.ndarray]
    test_exclude: tuple[np.ndarray, np.ndarray]
    test_truth: tuple[np.ndarray, np.ndarray, np.ndarray]


def prepare(dataset: Dataset) -> PreparedData:
    tr = dataset.train
    return PreparedData(
        graph=build_graph(tr.user, tr.item, dataset.num_users, dataset.num_items),
        positives=PositiveIndex.build(tr.user, tr.item, dataset.num_items),
        valid_exclude=exclusion_pairs(dataset, "valid"),
        valid_truth=truth(dataset, "valid"),
        test_exclude=exclusion_pairs(dataset, "test"),
        test_truth=truth(dataset, "test"),
    )


def make_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def dataset_fingerprint(dataset: Dataset) -> dict:
    """Sizes and a hash of the training/held-out pairs: identifies the data a run used."""
    h = hashlib.sha256()
    for inter in (dataset.train, dataset.valid, dataset.test):
        h.update(np.ascontiguousarray(inter.user, np.int32).tobytes())
        h.update(np.ascontiguousarray(inter.item, np.int32).tobytes())
    return {
        "name": dataset.name,
        "num_users": int(dataset.num_users),
        "num_items": int(dataset.num_items),
        "num_train": int(len(dataset.train)),
        "sha256": h.hexdigest()[:16],
    }


def evaluate_params(
    model: Model, params: Params, graph: BipartiteGraph, exclude, truth_, config: Config,
    placement: Placement | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of ``params`` (``exclude`` masked, ``truth_`` held out).

    With an active ``placement`` (sharded ``params`` and ``graph``) the ranking is sharded too.
    """
    placement = placement if placement is not None else Placement()
    user_emb, item_emb = placement.embed(model.embed, params, graph)
    if placement.active:
        return placement.evaluate(user_emb, item_emb, None, exclude, truth_, config.topk, config.metrics,
                                  config.eval_chunk)
    return evaluate(
        user_emb, item_emb, users=None, exclude=exclude, truth=truth_, ks=config.topk, metrics=config.metrics,
        chunk_size=config.eval_chunk,
    )


def _epoch_rng(key: jax.Array) -> np.random.Generator:
    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng(seed.astype(np.uint32).ravel().tolist())


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
) -> RunResult:
    """Train ``model`` on ``dataset`` with ``config``; evaluate the best epoch on test.

    Args:
      model: a backbone from ``jaxrec.models.get_model(config)``.
      dataset: a split ``jaxrec.data.Dataset``.
      config: the run's configuration (seed, epochs, batch_size, learning_rate, ...).
      out_dir: where ``log.jsonl``, ``results.json``, ``run.json`` and ``ckpt/`` go; None
        keeps everything in memory (no checkpoints, no resume).
      params: initial parameters (e.g. from ``jaxrec.init.llm_init_params``); default
        ``model.init`` with a key derived from ``config.seed``.
      resume: continue from ``out_dir``'s latest complete checkpoint (same result as an
        uninterrupted run).
      overwrite: clear an existing ``out_dir`` run instead of refusing it.
      progress: show a progress bar (default: when stderr is a terminal).
      prepared: precomputed ``prepare(dataset)`` to share between runs.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    root_key = jax.random.PRNGKey(config.seed)
    init_key, train_key = jax.random.split(root_key)
    data = prepared or prepare(dataset)
    # Sharding (config.sharding): the mesh, and where graph, params and batches live.
    # The default "none" placement is a no-op.
    placement = make_placement(config)
    graph = placement.place_graph(data.graph)
    if params is None:
        params = placement.init_params(model.init, init_key, dataset.num_users, dataset.num_items)
    else:
        params = placement.place_params(params)
    optimizer = make_optimizer(config)
    opt_state = placement.place_params(optimizer.init(params))
    early = EarlyStopping()
    best_params: Params | None = None
    start_epoch = 0
    valid_at_best: dict[str, float] = {}
    history: list[dict] = []

    out = Path(out_dir) if out_dir is not None else None
    ckpt: RunCheckpoints | None = None
    jsonl: JsonlLog | None = None
    if out is not None:
        identity = {"model": model.name, "config": config.to_dict(), "dataset": dataset_fingerprint(dataset)}
        run_json = out / "run.json"
        if overwrite and out.exists():
            _clear_run(out)
        if not resume and (out / "ckpt").exists() and any((out / "ckpt").iterdir()):
            check_identity(run_json, identity, resuming=False)
            raise FileExistsError(
                f"{out} already holds checkpoints of this run; resume it (--resume) or start afresh (--overwrite)"
            )
        check_identity(run_json, identity, resuming=resume)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_json, identity)
        ckpt = RunCheckpoints(out / "ckpt")
        jsonl = JsonlLog(out / "log.jsonl")
        if resume and ckpt.latest_step() is not None:
            target = {"params": params, "opt_state": opt_state, "key": train_key, "best_params": params}
            state, meta = ckpt.restore("latest", target)
            params, opt_state, train_key = state["params"], state["opt_state"], state["key"]
            best_params = state["best_params"]
            last = int(meta["epoch"])
            start_epoch = last + 1
            early = EarlyStopping.from_dict(meta["early_stopping"])
            valid_at_best = meta.get("valid_at_best", {})
            # A run killed after its last complete "latest" may have saved a newer "best":
            # those epochs are re-run, so that best goes and the restored one is re-exported.
            ckpt.discard_after("best", last)
            if early.best_epoch >= 0 and ckpt.latest_step("best") != early.best_epoch:
                ckpt.save("best", early.best_epoch, {"params": best_params},
                          {"epoch": early.best_epoch, "valid": valid_at_best})
            jsonl.truncate_after(last)
            history = jsonl.records()
            log.info("resumed %s at epoch %d (best %s=%.4f at epoch %d)", out, start_epoch,
                     config.valid_metric, early.best_score, early.best_epoch)
        else:
            if resume:
                log.warning("%s has no complete checkpoint to resume from; starting at epoch 0", out)
            ckpt.discard_after("best", -1)
            jsonl.reset()

    step = make_train_step(model, optimizer, placement if placement.active else None)
    tr = dataset.train
    positives = data.positives if model.needs_negatives else None
    bar = _progress_bar(config.epochs, start_epoch, progress)
    stopped_epoch = start_epoch - 1
    if early.best_epoch < 0:
        best_params = jax.tree.map(jnp.copy, params)
    try:
        for epoch in range(start_epoch, config.epochs):
            train_key, epoch_key = jax.random.split(train_key)
            view_key, step_key = jax.random.split(epoch_key)
            t0 = time.perf_counter()
            views = model.epoch_views(graph, view_key)
            batches = epoch_batches(_epoch_rng(epoch_key), tr.user, tr.item, config.batch_size, positives)
            if placement.active:
                batches = map(placement.place_batch, batches)  # split along the data axis
            params, opt_state, loss, aux = run_epoch(step, params, opt_state, graph, views, batches, step_key)
            record: dict[str, Any] = {"epoch": epoch, "loss": loss, **aux, "train_seconds": time.perf_counter() - t0}
            if not np.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch}: training loss is {loss}; lower learning_rate or check inputs")
            stop = False
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                t1 = time.perf_counter()
                valid = evaluate_params(model, params, graph, data.valid_exclude, data.valid_truth, config, placement)
                record["valid"] = valid
                record["eval_seconds"] = time.perf_counter() - t1
                early = early.update(valid[config.valid_metric], epoch)
                if early.improved_at(epoch):
                    valid_at_best = valid
                    best_params = jax.tree.map(jnp.copy, params)  # params are donated to the next step
                    if ckpt is not None:
                        ckpt.save("best", epoch, {"params": params}, {"epoch": epoch, "valid": valid})
                stop = early.should_stop(config.patience) and epoch + 1 >= config.min_epochs
            history.append(record)
            if jsonl is not None:
                jsonl.append(record)
            if ckpt is not None and ((epoch + 1) % config.checkpoint_every == 0 or stop or epoch + 1 == config.epochs):
                ckpt.save(
                    "latest", epoch,
                    {"params": params, "opt_state": opt_state, "key": train_key, "best_params": best_params},
                    {"epoch": epoch, "early_stopping": early.to_dict(), "valid_at_best": valid_at_best},
                )
            stopped_epoch = epoch
            _update_bar(bar, record, config, early)
            if stop:
                log.info("early stop at epoch %d (best epoch %d)", epoch, early.best_epoch)
                break
        if ckpt is not None:
            ckpt.wait()
        test = evaluate_params(model, best_params, graph, data.test_exclude, data.test_truth, config, placement)
    finally:
        if bar is not None:
            bar.close()
        if ckpt is not None:
            ckpt.close()

    result = RunResult(
        params=best_params, test_metrics=test, valid_metrics=valid_at_best, best_epoch=early.best_epoch,
        stopped_epoch=stopped_epoch, out_dir=out, config=config, history=history,
    )
    if out is not None:
        write_json_atomic(out / "results.json", results_record(result, dataset))
    return result


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
        "versions": {"jax": jax.__version__, "jaxrec": _jaxrec_version()},
    }


def _jaxrec_version() -> str:
    from jaxrec import __version__

    return __version__


def _clear_run(out: Path) -> None:
    for name in ("ckpt", "log.jsonl", "results.json", "run.json"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="epochs", unit="ep", dynamic_ncols=True)


def _update_bar(bar, record: dict, config: Config, early: EarlyStopping) -> None:
    if bar is None:
        return
    post = {"loss": f"{record['loss']:.4f}"}
    if "valid" in record:
        post[config.valid_metric] = f"{record['valid'][config.valid_metric]:.4f}"
        post["best"] = f"{early.best_score:.4f}@{early.best_epoch}"
    bar.set_postfix(post)
    bar.update(1)
