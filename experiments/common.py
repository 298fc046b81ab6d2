"""Shared machinery of the experiment modules (thin shell over public jaxrec calls).

- options common to every experiment (:func:`add_common_args`) and the base ``Config``
  they describe (:func:`base_config`): ``--dataset``, ``--seeds``, ``--backbones``,
  ``--epochs`` (a cap), ``--out``, ``--encoder`` / ``--embeddings``, ``--set key=value``;
- the item text embeddings an LLM-initialized run reads (:func:`resolve_text_source`):
  a precomputed ``.npy`` (auto-detected MPNet reference file beside the dataset) or an
  encoder, whose cost (items/s) is measured and logged when it actually encodes;
- a grid of :class:`Cell` (one (backbone, init, seed, ...) training run each) run through
  ``jaxrec.pipeline.initial_params`` + ``jaxrec.train.fit`` (:func:`run_grid`), with
  every finished cell written to ``results.json`` at once (``--resume`` reuses them);
- aggregation over seeds (:func:`aggregate`: mean and sample std) and relative gains
  (:func:`relative_gain`, :func:`add_gains`);
- output: text tables, CSV, PNG (matplotlib, Agg) and ``results.json`` in the run folder
  (default ``checkpoints/<experiment>/<run-name>/``).

Seeds: a cell's ``config.seed`` drives everything of that run, the leave-one-out split
included (as ``jaxrec train --seed`` does), so the spread across seeds covers split,
initialization and training noise. ``--split-seed S`` fixes the split for every seed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxrec.config import Config, ConfigError
from jaxrec.registry import INITIALIZERS

log = logging.getLogger("experiments")

METRICS = ("recall@10", "ndcg@10")
METRIC_LABELS = {"recall@10": "R@10", "ndcg@10": "N@10"}
BACKBONE_LABELS = {"mf": "MF", "lightgcn": "LightGCN", "sgl": "SGL", "sgcl": "SGCL"}
INIT_LABELS = {"none": "", "random": "Rand", "uniform": "Uni", "variance": "Var", "full": "Full", "pca": "PCA"}
REFERENCE_EMBEDDINGS = "{name}.all-mpnet-base-v2.npy"

#: LLMInit Table 1 (Recall@10, NDCG@10; K = 128, MPNet), DESIGN.md section 3.
PAPER_TABLE1: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "lightgcn": {
        "none": {"beauty": (.0910, .0432), "toys": (.0775, .0360), "tools": (.0574, .0283), "office": (.0745, .0365)},
        "random": {"beauty": (.0960, .0467), "toys": (.0805, .0387), "tools": (.0612, .0313), "office": (.0773, .0387)},
        "uniform": {"beauty": (.1006, .0469), "toys": (.0806, .0388), "tools": (.0633, .0319), "office": (.0791, .0395)},
        "variance": {"beauty": (.1019, .0485), "toys": (.0808, .0389), "tools": (.0633, .0317), "office": (.0816, .0414)},
    },
    "sgcl": {
        "none": {"beauty": (.1027, .0499), "toys": (.0828, .0382), "tools": (.0585, .0294), "office": (.0647, .0298)},
        "variance": {"beauty": (.1104, .0522), "toys": (.0941, .0421), "tools": (.0646, .0327), "office": (.0776, .0366)},
    },
}
#: LLMInit Table 4 (LightGCN, Beauty, Recall@10 with variance selection) by encoder.
PAPER_TABLE4_VAR_R10 = {"mpnet": .1019, "gte-qwen": .0932, "gpt-s": .098, "gpt-l": .096, "stella": .0935}
PAPER_DATASETS = ("beauty", "toys", "tools", "office")


# ----------------------------------------------------------------------------- options
def parse_list(text: str | None, cast: Callable[[str], Any] = str) -> list:
    """``"a,b, c"`` -> ``[cast("a"), cast("b"), cast("c")]`` (empty items dropped)."""
    if text is None:
        return []
    return [cast(p.strip()) for p in str(text).split(",") if p.strip()]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = parse_list(text, int)
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 2020,2021,2022") from None
    if not seeds:
        raise ConfigError("--seeds: expected at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: seeds repeat")
    return seeds


def add_common_args(parser: argparse.ArgumentParser, backbones: str = "lightgcn", seeds: str = "2020",
                    text_source: bool = True) -> argparse.ArgumentParser:
    g = parser.add_argument_group("common experiment options")
    g.add_argument("--dataset", default="ml-100k", help="dataset name or folder (default ml-100k)")
    g.add_argument("--seeds", default=seeds,
                   help=f"comma-separated seeds; mean and std are over them (default {seeds})")
    g.add_argument("--backbones", default=backbones, help=f"comma-separated backbones (default {backbones})")
    g.add_argument("--epochs", type=int, default=None,
                   help="cap on training epochs (early stopping still applies; default: the config's 300)")
    g.add_argument("--out", type=Path, default=None,
                   help="run folder (default checkpoints/<experiment>/<run-name>/)")
    g.add_argument("--name", default=None, help="run name for the default run folder")
    if text_source:
        g.add_argument("--encoder", default=None,
                       help="text encoder for LLM init (minilm, mpnet or a folder); default: the reference "
                            "embeddings if found, else minilm")
        g.add_argument("--embeddings", default="auto",
                       help="precomputed item embeddings .npy (item id list <stem>.item_ids.txt beside it); "
                            "'auto' (default): <data folder>/<dataset>.all-mpnet-base-v2.npy when present; "
                            "'none': never")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any jaxrec Config key (repeatable), e.g. --set embedding_size=64")
    g.add_argument("--split-seed", type=int, default=None,
                   help="fix the data split to this seed for every run (default: each run's own seed)")
    g.add_argument("--resume", action="store_true",
                   help="reuse the cells already in the run folder's results.json (same config) and run the rest")
    g.add_argument("--reuse", action="append", default=[], metavar="RESULTS",
                   help="also reuse matching cells from another run's results.json (file or run folder; repeatable)")
    g.add_argument("--save-runs", action="store_true",
                   help="keep each cell's jaxrec run folder (checkpoints, log.jsonl) under <out>/runs/")
    g.add_argument("--progress", action="store_true", help="show a progress bar per training run")
    g.add_argument("--compile-cache", default=os.environ.get("JAXREC_COMPILE_CACHE"), metavar="DIR",
                   help="JAX persistent compilation cache folder: cells with the same shapes compile once "
                        "(default $JAXREC_COMPILE_CACHE; off when unset)")
    g.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser


_STANDALONE = False


def setup_logging(verbose: bool = False) -> None:
    """Progress of the experiment and jaxrec's LLM-init/encoding messages (items/s) on stderr."""
    level = logging.DEBUG if verbose else logging.INFO
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("experiments", "jaxrec.init"):
        lg = logging.getLogger(name)
        lg.setLevel(level)
        if not any(getattr(h, "_experiments", False) for h in lg.handlers):
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(fmt)
            h._experiments = True  # type: ignore[attr-defined]
            lg.addHandler(h)
        if _STANDALONE:  # run as a program: don't repeat these lines through a root handler
            lg.propagate = False


def enable_compile_cache(path: str | os.PathLike | None) -> None:
    """Turn on JAX's persistent compilation cache in ``path`` (every entry kept), so the
    per-run jitted steps of a grid compile once per shape instead of once per run."""
    if not path:
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.set_cache_dir(str(path))
    cc.reset_cache()  # re-initialize with the new folder even if jax compiled before
    log.debug("JAX compilation cache: %s", path)


def start(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    """Logging and the compilation cache from the common options; returns the validated
    (seeds, backbones)."""
    setup_logging(args.verbose)
    enable_compile_cache(getattr(args, "compile_cache", None))
    return parse_seeds(args.seeds), check_backbones(parse_list(args.backbones))


def base_config(args: argparse.Namespace, **fields: Any) -> Config:
    """``Config(dataset=args.dataset, **fields)`` + ``--set`` overrides + the ``--epochs`` cap."""
    config = Config(dataset=str(args.dataset)).replace(**fields) if fields else Config(dataset=str(args.dataset))
    config = config.with_overrides(args.set)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs {args.epochs}: expected an integer >= 1")
        config = config.replace(epochs=min(config.epochs, args.epochs))
    return config


def check_backbones(names: Sequence[str]) -> list[str]:
    """Backbone names that ``jaxrec.models.get_model`` knows (any registered one)."""
    from jaxrec.models import get_model

    out = []
    for name in names:
        try:
            get_model(Config(model=name))
        except ConfigError as e:
            raise ConfigError(f"--backbones: {e}") from None
        out.append(name)
    if not out:
        raise ConfigError("--backbones: expected at least one backbone")
    return out


def check_inits(names: Sequence[str], allowed: Iterable[str] | None = None) -> list[str]:
    allowed = tuple(INITIALIZERS.names() if allowed is None else allowed)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ConfigError(f"--inits: unknown {bad}; expected a subset of {', '.join(allowed)}")
    return list(names)


def dataset_label(name: str) -> str:
    return Path(str(name)).name


def default_out_dir(experiment: str, run_name: str) -> Path:
    return Path("checkpoints") / experiment / run_name


def run_name(args: argparse.Namespace, *parts: str) -> str:
    if args.name:
        return args.name
    seeds = "_".join(str(s) for s in parse_seeds(args.seeds))
    bits = [dataset_label(args.dataset), *[p for p in parts if p], f"s{seeds}"]
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", "-".join(bits))


def command_line(module: str, argv: Sequence[str] | None) -> str:
    argv = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", "-m", module, *map(shlex.quote, argv)])


def paper_dataset(name: str) -> str | None:
    """Which of LLMInit's four Amazon datasets ``name`` is (case-insensitive), else None."""
    low = dataset_label(name).lower()
    for key in PAPER_DATASETS:
        if key in low:
            return key
    return None


# ------------------------------------------------------------------- text embeddings
@dataclasses.dataclass
class TextSource:
    """Where LLM init's item embeddings come from: ``embeddings`` (.npy) or ``encoder``."""

    embeddings: str | None = None
    encoder: str | None = None
    description: str = ""

    def config_fields(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "encoder": self.encoder}


def find_reference_embeddings(dataset: str, data_dirs: Sequence[str] = ()) -> Path | None:
    """``<data folder>/<name>.all-mpnet-base-v2.npy`` (with its id list) if present, else None."""
    from jaxrec.data import DataError, find_dataset

    try:
        folder = find_dataset(dataset, data_dirs, download=False)
    except (DataError, FileNotFoundError, OSError):
        return None
    name = folder.name
    file = REFERENCE_EMBEDDINGS.format(name=name)
    for cand in (folder / file, folder.parent / file):
        ids = cand.with_name(cand.name[: -len(".npy")] + ".item_ids.txt")
        if cand.is_file() and ids.is_file():
            return cand
    return None


def resolve_text_source(args: argparse.Namespace, config: Config) -> TextSource:
    """``--embeddings`` / ``--encoder`` (or ``--set``) -> the source every LLM-init cell uses."""
    emb = getattr(args, "embeddings", "auto")
    enc = getattr(args, "encoder", None)
    if config.embeddings or config.encoder:  # from --set
        return TextSource(config.embeddings, config.encoder, "from --set")
    if emb and str(emb).lower() not in ("auto", "none"):
        path = Path(emb)
        if not path.is_file():
            raise ConfigError(f"--embeddings {emb}: file not found")
        return TextSource(str(path.resolve()), None, f"precomputed {path}")
    if enc:
        return TextSource(None, str(enc), f"encoder {enc}")
    if str(emb).lower() == "auto":
        ref = find_reference_embeddings(config.dataset, config.data_dirs)
        if ref is not None:
            return TextSource(str(ref.resolve()), None, f"reference MPNet embeddings {ref} (auto-detected)")
    return TextSource(None, "minilm", "encoder minilm (no reference embeddings found)")


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


def prepare_text_embeddings(dataset, source: TextSource) -> dict[str, Any]:
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


def save_embeddings(path: Path, emb: np.ndarray, item_ids: Sequence[str]) -> Path:
    """Write ``path`` (.npy) and ``<stem>.item_ids.txt`` beside it, as ``load_precomputed`` reads them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(emb, np.float32), allow_pickle=False)
    path.with_name(path.name[: -len(".npy")] + ".item_ids.txt").write_text(
        "".join(f"{i}\n" for i in np.asarray(item_ids).astype(str)))
    return path


# ---------------------------------------------------------------------------- the grid
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
            config.kcore, config.data_dirs)


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
    """The params ``fit`` starts from: LLM init, or the model's own init with fit's key."""
    from jaxrec.pipeline import initial_params
    from jaxrec.train import run_keys

    params = initial_params(model, dataset, config)
    if params is None:
        params = model.init(run_keys(config.seed).init, dataset.num_users, dataset.num_items)  # what fit() draws
    return params


def run_grid(cells: Sequence[Cell], out_dir: Path, *, datasets: DatasetCache | None = None,
             on_result: Callable[[CellContext], dict] | None = None, resume: bool = False,
             save_runs: bool = False, progress: bool = False,
             checkpoint: Callable[[list[dict]], None] | None = None,
             reuse: Sequence[str | Path] = ()) -> list[dict]:
    """Train every cell (in order) and return one record per cell.

    A record is jaxrec's ``results.json`` content for that run (``model``, ``seed``, full
    ``config``, ``dataset`` fingerprint, ``best_epoch``, ``stopped_epoch``, ``valid``,
    ``test``, ``versions``) plus ``key``, ``data`` (+ ``split_seed``), ``seconds``,
    ``epochs_run``, ``curve`` (loss and validation metric per epoch) and, with
    ``on_result``, ``extra``. ``checkpoint(records)`` is called
    after each cell (the experiments write ``results.json`` there), so a killed job keeps
    its finished cells; with ``resume`` the cells already in ``out_dir/results.json`` with
    the same key, data and config are reused instead of retrained (also from the
    ``reuse`` results files).
    """
    from jaxrec.models import get_model
    from jaxrec.train import fit
    from jaxrec.train.loop import results_record

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
        run_dir = out_dir / "runs" / _slug(cell.key) if save_runs else None
        result = fit(model, dataset, cell.config, out_dir=run_dir, params=params, overwrite=True,
                     progress=progress, prepared=prepared)
        rec = results_record(result, dataset)
        rec.update(key=dict(cell.key), data={**cell.data, **info}, seconds=time.perf_counter() - t0,
                   epochs_run=len(result.history), curve=learning_curve(result.history, cell.config.valid_metric))
        if run_dir is not None:
            rec["run_dir"] = str(run_dir)
        if on_result is not None:
            rec["extra"] = on_result(CellContext(cell, result, dataset, model, prepared, params))
        records.append(rec)
        t = rec["test"]
        log.info("[%d/%d] %s: test R@10 %.4f N@10 %.4f (best epoch %d, stopped %d, %.0f s)", n, len(cells), tag,
                 t.get("recall@10", float("nan")), t.get("ndcg@10", float("nan")), rec["best_epoch"],
                 rec["stopped_epoch"], rec["seconds"])
        if checkpoint is not None:  # cells of the folder's results.json not reached yet stay in it
            checkpoint(records + own)
    return records


def run_cells(args: argparse.Namespace, experiment: str, command: str, base: Config, cells: Sequence[Cell],
              out: Path, datasets: DatasetCache, meta: dict, **kw) -> list[dict]:
    """``run_grid`` with the common options (--resume, --reuse, --save-runs, --progress);
    ``results.json`` is rewritten, marked incomplete, after every cell. ``kw``: e.g. ``on_result``."""
    log.info("%s: %d runs -> %s", experiment, len(cells), out)

    def checkpoint(records):
        write_results(out, experiment, command, base, records, meta=meta, complete=False)

    return run_grid(cells, out, datasets=datasets, resume=args.resume, reuse=args.reuse, save_runs=args.save_runs,
                    progress=args.progress, checkpoint=checkpoint, **kw)


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
    return [c for c in data.get("cells", []) if "key" in c and "config" in c]


def same_cell(record: dict, cell: Cell) -> bool:
    """Whether a stored cell record is ``cell``: same key, data and config (a config field
    the record lacks, e.g. added to jaxrec since, counts as its default)."""
    if record.get("key") != json.loads(json.dumps(cell.key)):
        return False
    data = {k: v for k, v in record.get("data", {}).items() if k in cell.data}
    if data != json.loads(json.dumps(cell.data)):
        return False
    defaults = Config().to_dict()
    stored = record["config"]
    return all(stored.get(k, defaults[k]) == v for k, v in json.loads(json.dumps(cell.config.to_dict())).items())


# ------------------------------------------------------------------------ aggregation
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1); the std of one value is NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def relative_gain(value: float, base: float) -> float:
    """Improvement of ``value`` over ``base`` in percent: ``100 * (value - base) / base``."""
    if base is None or value is None or not math.isfinite(base) or base == 0:
        return float("nan")
    return 100.0 * (value - base) / base


def metric_value(record: dict, metric: str, split: str = "test") -> float:
    return float(record[split][metric])


def aggregate(records: Sequence[dict], by: Sequence[str], metrics: Sequence[str] = METRICS,
              split: str = "test", extras: Sequence[str] = ()) -> list[dict]:
    """Group records by ``key[by...]`` (first-seen order) -> rows with ``<metric>_mean``,
    ``<metric>_std`` (sample std over seeds), ``n`` and ``seeds``; ``extras`` are numbers
    from each record's ``extra`` dict, aggregated the same way."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["key"].get(b) for b in by), []).append(r)
    rows = []
    for gkey, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, gkey))
        row["n"] = len(recs)
        row["seeds"] = [r["key"].get("seed", r.get("seed")) for r in recs]
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std([metric_value(r, m, split) for r in recs])
        for e in extras:
            row[f"{e}_mean"], row[f"{e}_std"] = mean_std([float(r["extra"][e]) for r in recs])
        rows.append(row)
    return rows


def add_gains(rows: list[dict], base_of: Callable[[dict], dict | None], metrics: Sequence[str] = METRICS,
              base_label: Callable[[dict], str] | None = None) -> list[dict]:
    """Add ``<metric>_gain`` (% over the mean of the row ``base_of(row)`` returns matching
    fields of; NaN where there is none) to every row, in place; returns ``rows``."""
    for row in rows:
        match = base_of(row)
        base = None
        if match is not None:
            for cand in rows:
                if all(cand.get(k) == v for k, v in match.items()):
                    base = cand
                    break
        for m in metrics:
            has_base = base is not None and base is not row
            row[f"{m}_gain"] = relative_gain(row[f"{m}_mean"], base[f"{m}_mean"]) if has_base else float("nan")
    return rows


# --------------------------------------------------------------------------- formatting
def fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
    if std is None or not math.isfinite(std):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_gain(g: float | None) -> str:
    if g is None or not math.isfinite(g):
        return "-"
    return f"{g:+.1f}%"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None,
                 align_left: int = 1) -> str:
    """Fixed-width text table; the first ``align_left`` columns left-aligned, the rest right."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < align_left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def backbone_label(name: str) -> str:
    return BACKBONE_LABELS.get(name, name)


def init_label(init: str, scale: str = "none") -> str:
    s = INIT_LABELS.get(init, init)
    if scale and scale != "none" and init != "none":
        s += f" [{scale}]"
    return s


def row_label(backbone: str, init: str, scale: str = "none") -> str:
    lab = init_label(init, scale)
    return backbone_label(backbone) + (f" + {lab}" if lab else "")


# ------------------------------------------------------------------------------ output
def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_value(r.get(c)) for c in columns])
    return path


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return "" if v is None else v


def cell_rows(records: Sequence[dict],
              metrics: Sequence[str] = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")) -> list[dict]:
    """One flat CSV row per cell (per seed): key fields, metrics, epochs, seconds."""
    rows = []
    for r in records:
        row = dict(r["key"])
        row.update({m: r["test"].get(m) for m in metrics})
        row.update({f"valid_{m}": r["valid"].get(m) for m in metrics[:2]})
        row.update(best_epoch=r["best_epoch"], stopped_epoch=r["stopped_epoch"], seconds=round(r["seconds"], 1),
                   split_seed=r.get("data", {}).get("split_seed"))
        rows.append(row)
    return rows


def write_results(out_dir: Path, experiment: str, command: str, base: Config, records: Sequence[dict],
                  summary: Sequence[dict] | None = None, meta: dict | None = None, complete: bool = True) -> Path:
    """``results.json``: the command, the base config, every cell (config, seed, metrics), the summary."""
    import jax

    from jaxrec import __version__

    return write_json(Path(out_dir) / "results.json", {
        "experiment": experiment,
        "command": command,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "complete": complete,
        "base_config": base.to_dict(),
        "meta": meta or {},
        "summary": list(summary or []),
        "cells": list(records),
        "versions": {"jax": jax.__version__, "jaxrec": __version__, "python": sys.version.split()[0]},
    })


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def metric_series(rows: Sequence[dict], groups: Sequence, group_of: Callable[[dict], Any],
                  series_of: Callable[[dict], Any], label_of: Callable[[Any], str], metric: str,
                  series: Sequence | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """``{label_of(s): ([mean per group], [std per group])}`` of summary ``rows`` for ``grouped_bars``.

    One entry per series key (``series``, or the keys of ``rows`` in order); NaN where no row
    has that (group, series) pair.
    """
    index: dict = {}
    for r in rows:
        index.setdefault((group_of(r), series_of(r)), r)
    keys = series if series is not None else list(dict.fromkeys(series_of(r) for r in rows))
    out = {}
    for key in keys:
        vals = [index.get((g, key)) for g in groups]
        out[label_of(key)] = ([v[f"{metric}_mean"] if v else float("nan") for v in vals],
                              [v[f"{metric}_std"] if v else float("nan") for v in vals])
    return out


def grouped_bars(ax, groups: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float]]],
                 ylabel: str, title: str | None = None) -> None:
    """Bars per group (x) and series (colour) with std error bars (NaN std: none)."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for j, (name, (means, stds)) in enumerate(series.items()):
        means = np.asarray(means, float)
        errs = np.nan_to_num(np.asarray(stds, float), nan=0.0)
        ax.bar(x - 0.4 + width * (j + 0.5), means, width, yerr=errs if errs.any() else None, capsize=2, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    finite = []
    for means, stds in series.values():
        for m, sd in zip(np.asarray(means, float), np.nan_to_num(np.asarray(stds, float), nan=0.0)):
            if math.isfinite(m):
                finite += [m - sd, m + sd]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1e-9) - 0.05 * hi), hi + 0.15 * (hi - lo + 1e-9) + 0.05 * hi)
    ax.legend(fontsize=7)


# --------------------------------------------------------------------- collapse measures
def singular_values(table) -> np.ndarray:
    """Singular values (descending) of a 2-D table, in float64; the table is not centered."""
    a = np.asarray(table, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"table: expected a 2-D array, got shape {a.shape}")
    return np.linalg.svd(a, compute_uv=False)


def effective_rank(sv: np.ndarray) -> float:
    """exp of the Shannon entropy of the normalized singular values ``p = s / sum(s)``
    (Roy & Vetterli 2007): K for K equal values, 1 for a rank-one table."""
    s = np.asarray(sv, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def information_abundance(sv: np.ndarray) -> float:
    """``sum(s) / max(s)`` (Guo et al. 2023, embedding collapse)."""
    s = np.asarray(sv, dtype=np.float64)
    return float(s.sum() / s.max()) if s.size and s.max() > 0 else 0.0


# ------------------------------------------------------------------------------ misc
def finish(out_dir: Path, printed: str, files: Sequence[Path]) -> None:
    """Write the printed table to ``table.txt``, print it and where the files are."""
    (Path(out_dir) / "table.txt").write_text(printed + "\n")
    print(printed)
    print(f"\nwrote {', '.join(str(Path(f).name) for f in files)} in {out_dir}/")


def main_wrapper(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main`` turning configuration/data errors into one line on stderr and exit code 2."""
    from jaxrec.data import DataError
    from jaxrec.init import EmbeddingFileError, EncoderNotAvailableError

    global _STANDALONE
    _STANDALONE = True
    try:
        return main(argv)
    except (ConfigError, DataError, EmbeddingFileError, EncoderNotAvailableError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
