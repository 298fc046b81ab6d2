"""The experiment grid: cells (one training run each), the datasets they share, and running them.

A ``Cell`` is one (backbone, init, seed, ...) run: ``run_grid`` trains every cell through
``jaxrec.initial_params`` + ``jaxrec.fit``, writes each finished cell at once (a killed job
keeps its cells; ``--resume`` reuses them) and returns one record per cell (``results.json``
content plus the cell's key, data description, time and learning curve). ``DatasetCache``
loads each (dataset, split seed) once and prepares it once for every cell that shares it.
``prepare_text_embeddings`` makes sure the cells' item text embeddings exist (encoding through
jaxrec's embedding cache) and measures the encoding cost.

Tracking: every cell is its own tracked run (``jaxrec.train.tracking``, the config's ``track``,
TensorBoard by default) named by its key, in the group of the grid's name (MLflow experiment, W&B
project); TensorBoard's event files go to the cell's run folder (``--save-runs``) or else to
``<out>/tracking/<cell>/``, so ``tensorboard --logdir <out>`` shows the cells side by side.

Per-user test metrics: when the evaluation protocol gives them, each cell's are written to
``<out>/per_user/<cell>.npz`` (``user`` and the report's metrics, float64 [M]) and named in the
record's ``per_user``; ``experiments.report`` reads them for the paired significance tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from experiments.report import PER_USER_METRICS, write_results
from jaxrec.config import Config, ConfigError
from jaxrec.init import EmbeddingSource

log = logging.getLogger("experiments")


class TimedEncoder:
    """A lazily loaded encoder with ``.name`` and ``.encode``: loads only on a cache miss and
    records the load time and the encoding cost (items, seconds, items/s)."""

    def __init__(self, name_or_path: str):
        from jaxrec.init import encoder_cache_id

        self.source = str(name_or_path)
        self.name = encoder_cache_id(name_or_path)
        self._encoder = None
        self.stats: dict[str, Any] = {"encoder": self.name, "items": 0, "seconds": 0.0, "load_seconds": 0.0}

    @property
    def dim(self) -> int:
        return self.loaded().dim

    def loaded(self):
        if self._encoder is None:
            from jaxrec.init import load_encoder

            t0 = time.perf_counter()
            self._encoder = load_encoder(self.source)
            self.stats["load_seconds"] = time.perf_counter() - t0
            log.info("loaded encoder %s in %.1f s", self.name, self.stats["load_seconds"])
        return self._encoder

    def encode(self, texts, **kw):
        enc = self.loaded()
        t0 = time.perf_counter()
        out = enc.model.encode(list(texts), **kw)
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["items"] += len(texts)
        return out

    def summary(self) -> dict[str, Any]:
        s = dict(self.stats)
        s["items_per_s"] = s["items"] / s["seconds"] if s["seconds"] > 0 else None
        return s


def encoding_report(stats: dict[str, Any]) -> str:
    if not stats.get("items"):
        return f"{stats.get('encoder')}: no encoding (cache hit or precomputed)"
    return (f"{stats['encoder']}: encoded {stats['items']} items in {stats['seconds']:.1f} s "
            f"({stats['items'] / max(stats['seconds'], 1e-9):.1f} items/s; model load {stats['load_seconds']:.1f} s)")


def prepare_text_embeddings(dataset, source: EmbeddingSource) -> dict[str, Any]:
    """Make sure the cells' embeddings exist; returns a record of the source and its cost.

    With an encoder the items are encoded now through jaxrec's embedding cache (the same
    entry ``jaxrec.pipeline.item_embeddings`` then reads), timing the encoding if it runs.
    """
    from jaxrec.init import dataset_item_embeddings, load_precomputed

    rec: dict[str, Any] = {"description": source.description, **source.config_fields()}
    if source.embeddings:
        emb = load_precomputed(source.embeddings, dataset_item_ids=dataset.train.item_ids)
        rec.update(dim=int(emb.shape[1]), encoding=None)
        return rec
    enc = TimedEncoder(source.encoder)
    emb = dataset_item_embeddings(dataset, enc, progress=False)
    stats = enc.summary()
    stats["cache_hit"] = stats["items"] == 0
    log.info("text embeddings: %s", encoding_report(stats))
    rec.update(dim=int(emb.shape[1]), encoding=stats)
    return rec


@dataclasses.dataclass
class Cell:
    """One training run: ``key`` names it in tables (backbone, init, seed, ...), ``config``
    is the full jaxrec Config, ``data`` describes the dataset it trains on."""

    key: dict[str, Any]
    config: Config
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def identity(self) -> str:
        return json.dumps({"key": self.key, "config": self.config.to_dict(), "data": self.data},
                          sort_keys=True, default=str)


def split_seed(cell: Cell, fixed: int | None) -> int:
    return cell.config.seed if fixed is None else int(fixed)


def data_key(config: Config, seed: int) -> tuple:
    """What determines the loaded and split dataset (not the model or training)."""
    return (config.dataset, seed, config.split, config.split_ratios, config.rating_threshold, config.dedup,
            config.kcore, config.missing, config.data_dirs)


class DatasetCache:
    """Loads each (dataset, split seed, ...) once; ``transform`` derives variants (cold start)."""

    def __init__(self, fixed_split_seed: int | None = None,
                 transform: Callable[[Any, Cell], tuple[Any, dict]] | None = None):
        self.fixed = fixed_split_seed
        self.transform = transform
        self._base: dict[tuple, Any] = {}
        self._derived: dict[tuple, tuple[Any, dict]] = {}
        self._prepared: dict[int, Any] = {}

    def base(self, config: Config, seed: int):
        from jaxrec.data import load_dataset

        k = data_key(config, seed)
        if k not in self._base:
            self._base[k] = load_dataset(config.dataset, config.replace(seed=seed))
            log.info("%r (split seed %d)", self._base[k], seed)
        return self._base[k]

    def first(self, config: Config, seeds: Sequence[int]):
        """The base dataset of the grid's first split (the fixed split seed, else ``seeds[0]``)."""
        return self.base(config, seeds[0] if self.fixed is None else self.fixed)

    def get(self, cell: Cell):
        """(dataset, info dict) for ``cell``."""
        seed = split_seed(cell, self.fixed)
        ds = self.base(cell.config, seed)
        info: dict[str, Any] = {"split_seed": seed}
        if self.transform is not None and cell.data:
            k = data_key(cell.config, seed) + (cell.config.seed, json.dumps(cell.data, sort_keys=True))
            if k not in self._derived:
                self._derived[k] = self.transform(ds, cell)
            ds, extra = self._derived[k]
            info.update(extra)
        return ds, info

    def prepared(self, dataset):
        from jaxrec.train import prepare

        if id(dataset) not in self._prepared:
            self._prepared[id(dataset)] = (dataset, prepare(dataset))  # keep dataset alive: id stays unique
        return self._prepared[id(dataset)][1]


@dataclasses.dataclass
class CellContext:
    """What ``on_result`` callbacks see after a cell trained."""

    cell: Cell
    result: Any  # jaxrec.train.RunResult
    dataset: Any
    model: Any
    prepared: Any  # jaxrec.train.PreparedData
    init_params: Any  # the parameters training started from


def _initial_params(model, dataset, config: Config):
    """The params ``fit`` starts from: LLM init, or the model's own init with fit's key (None for
    a model whose init reads its context: ``fit`` then draws them)."""
    from jaxrec.pipeline import initial_params
    from jaxrec.train import run_keys

    params = initial_params(model, dataset, config)
    if params is None and getattr(model.encoder, "init_reads_context", False):
        return None  # sizes come from the context (e.g. stage 2's LM): fit draws them with the same key
    if params is None:
        params = model.init(run_keys(config.seed).init, dataset.num_users, dataset.num_items)  # what fit() draws
    return params


def run_grid(cells: Sequence[Cell], out_dir: Path, *, datasets: DatasetCache | None = None,
             on_result: Callable[[CellContext], dict] | None = None, resume: bool = False,
             save_runs: bool = False, progress: bool = False,
             checkpoint: Callable[[list[dict]], None] | None = None,
             reuse: Sequence[str | Path] = (), experiment: str | None = None) -> list[dict]:
    """Train every cell (in order) and return one record per cell.

    A record is jaxrec's ``results.json`` content for that run (``model``, ``seed``, full
    ``config``, ``dataset`` fingerprint, ``best_epoch``, ``stopped_epoch``, ``valid``,
    ``test``, ``versions``) plus ``key``, ``data`` (+ ``split_seed``), ``seconds``,
    ``epochs_run``, ``curve`` (loss and validation metric per epoch) and, with
    ``on_result``, ``extra``. ``checkpoint(records)`` is called
    after each cell (the experiments write ``results.json`` there), so a killed job keeps
    its finished cells; with ``resume`` the cells already in ``out_dir/results.json`` with
    the same key, data and config are reused instead of retrained (also from the
    ``reuse`` results files). Each cell is tracked as run ``<cell>`` of group ``experiment``
    (default: ``out_dir``'s name); ``per_user`` names its per-user test metrics file (module
    docstring).
    """
    from jaxrec.models import get_model
    from jaxrec.train import fit
    from jaxrec.train.loop import results_record
    from jaxrec.train.tracking import Tracking

    datasets = datasets or DatasetCache()
    own = load_previous_cells(out_dir) if resume else []
    previous = list(own)
    for other in reuse:
        found = load_previous_cells(other)
        if not found:
            raise ConfigError(f"--reuse {other}: no results.json with cells there")
        previous += found
    records: list[dict] = []
    for n, cell in enumerate(cells, 1):
        tag = ", ".join(f"{k}={v}" for k, v in cell.key.items())
        old = next((r for r in previous if same_cell(r, cell)), None)
        if old is not None:
            records.append(old)
            own = [r for r in own if r is not old]
            log.info("[%d/%d] %s: reused from results.json", n, len(cells), tag)
            continue
        t0 = time.perf_counter()
        dataset, info = datasets.get(cell)
        prepared = datasets.prepared(dataset)
        model = get_model(cell.config)
        params = _initial_params(model, dataset, cell.config)
        slug = _slug(cell.key)
        run_dir = out_dir / "runs" / slug if save_runs else None
        tracking = Tracking(name=slug, group=experiment or Path(out_dir).name, log_dir=Path(out_dir) / "tracking",
                            tags={str(k): v for k, v in cell.key.items()})
        result = fit(model, dataset, cell.config, out_dir=run_dir, params=params, overwrite=True,
                     progress=progress, prepared=prepared, tracking=tracking)
        rec = results_record(result, dataset)
        if result.test_per_user is not None:
            rec["per_user"] = str(save_per_user(Path(out_dir), slug, result.test_per_user, cell.config.valid_metric))
        rec.update(key=dict(cell.key), data={**cell.data, **info}, seconds=time.perf_counter() - t0,
                   epochs_run=len(result.history), curve=learning_curve(result.history, cell.config.valid_metric))
        if run_dir is not None:
            rec["run_dir"] = str(run_dir)
        if on_result is not None:
            rec["extra"] = on_result(CellContext(cell, result, dataset, model, prepared, params))
        records.append(rec)
        t = rec["test"]
        shown = [m for m in ("recall@10", "ndcg@10") if m in t] or [cell.config.valid_metric]
        log.info("[%d/%d] %s: test %s (best epoch %d, stopped %d, %.0f s)", n, len(cells), tag,
                 " ".join(f"{m} {t.get(m, float('nan')):.4f}" for m in shown), rec["best_epoch"],
                 rec["stopped_epoch"], rec["seconds"])
        if checkpoint is not None:  # cells of the folder's results.json not reached yet stay in it
            checkpoint(records + own)
    return records


def run_cells(args: argparse.Namespace, experiment: str, command: str, base: Config, cells: Sequence[Cell],
              out: Path, datasets: DatasetCache, meta: dict, **kw) -> list[dict]:
    """``run_grid`` with the common options (--resume, --reuse, --save-runs, --progress);
    ``results.json`` is rewritten, marked incomplete, after every cell. ``kw``: e.g. ``on_result``."""
    if not args.resume and not getattr(args, "overwrite", False):
        earlier = load_previous_cells(out)
        if earlier:
            cells_txt = f"{len(earlier)} cell" + ("s" if len(earlier) != 1 else "")
            raise ConfigError(f"--out {out}: holds an earlier run's results.json ({cells_txt}); pass --resume to reuse "
                              "its matching cells, --overwrite to replace them, or another --out")
    log.info("%s: %d runs -> %s", experiment, len(cells), out)

    def checkpoint(records):
        write_results(out, experiment, command, base, records, meta=meta, complete=False)

    return run_grid(cells, out, datasets=datasets, resume=args.resume, reuse=args.reuse, save_runs=args.save_runs,
                    progress=args.progress, checkpoint=checkpoint, experiment=experiment, **kw)


def save_per_user(out_dir: Path, slug: str, per_user: dict, valid_metric: str) -> Path:
    """Write a cell's per-user test metrics (``user`` and ``PER_USER_METRICS`` + the valid metric, as
    many as the protocol gave, float64 [M]) to ``<out_dir>/per_user/<slug>.npz``; returns its absolute
    path (``results.json`` names it relative to ``out_dir``: ``experiments.report.write_results``)."""
    wanted = [*PER_USER_METRICS, valid_metric, *(f"full_{m}" for m in PER_USER_METRICS)]
    arrays = {"user": np.asarray(per_user["user"])}
    arrays.update({m: np.asarray(per_user[m], dtype=np.float64) for m in dict.fromkeys(wanted) if m in per_user})
    rel = Path("per_user") / f"{slug}.npz"
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path.resolve()


def learning_curve(history: Sequence[dict], valid_metric: str) -> dict[str, list]:
    """Compact per-epoch training loss and validation metric of a run (for diagnosis)."""
    return {"epoch": [int(h["epoch"]) for h in history],
            "loss": [round(float(h["loss"]), 6) for h in history],
            valid_metric: [round(float(h["valid"][valid_metric]), 6) if "valid" in h else None for h in history]}


def _slug(key: dict) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(f"{k}={v}" for k, v in key.items()))


def load_previous_cells(out_dir: str | Path) -> list[dict]:
    """The cell records of ``out_dir/results.json`` (or of the file ``out_dir``); [] if none."""
    path = Path(out_dir)
    path = path if path.is_file() else path / "results.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("cannot reuse %s (%s); running every cell", path, e)
        return []
    cells = [c for c in data.get("cells", []) if "key" in c and "config" in c]
    for c in cells:  # per-user files are named relative to their own folder
        if c.get("per_user") and not Path(c["per_user"]).is_absolute():
            c["per_user"] = str((path.parent / c["per_user"]).resolve())
    return cells


def same_cell(record: dict, cell: Cell) -> bool:
    """Whether a stored cell record is ``cell``: same key, data and config (a config field
    the record lacks, e.g. added to jaxrec since, counts as its default)."""
    if record.get("key") != json.loads(json.dumps(cell.key)):
        return False
    data = {k: v for k, v in record.get("data", {}).items() if k in cell.data}
    if data != json.loads(json.dumps(cell.data)):
        return False
    from jaxrec.train.runfiles import LAUNCH_FIELDS  # how a run is launched or tracked: not what it computes

    # the model's keys at its own defaults (a bare Config of a model with required settings, e.g.
    # allmrec_stage2's evaluation="lm_candidates", is refused by the model's check)
    defaults = Config.for_model(cell.config.model, plugins=cell.config.plugins).to_dict()
    stored = record["config"]
    return all(stored.get(k, defaults[k]) == v for k, v in json.loads(json.dumps(cell.config.to_dict())).items()
               if k not in LAUNCH_FIELDS)
