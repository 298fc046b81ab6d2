"""The command line shared by the experiment modules: options, logging, seeds, the base config.

``add_common_args`` adds ``--dataset``, ``--seeds``, ``--backbones``, ``--epochs`` (a cap),
``--out``, ``--encoder`` / ``--embeddings``, ``--set key=value``, ``--resume``, ... ; ``start``
sets up logging and the compilation cache and returns the validated (seeds, backbones);
``base_config`` is the ``Config`` they describe; ``main_wrapper`` turns configuration and data
errors into one line on stderr and exit status 2.

Seeds: a cell's ``config.seed`` drives everything of that run, the leave-one-out split
included (as ``jaxrec train --seed`` does), so the spread across seeds covers split,
initialization and training noise. ``--split-seed S`` fixes the split for every seed.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from experiments.report import dataset_label
from jaxrec.config import Config, ConfigError, import_plugins
from jaxrec.init import EmbeddingSource, resolve_embedding_source
from jaxrec.registry import INITIALIZERS

log = logging.getLogger("experiments")


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
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (or a .py file) first: its registered backbones/initializers/... become "
                        "valid names (repeatable; recorded in every cell's config)")
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
    g.add_argument("--overwrite", action="store_true",
                   help="replace the cells of an earlier run in --out (without it, and without --resume, an --out "
                        "holding a results.json with cells is refused)")
    g.add_argument("--reuse", action="append", default=[], metavar="RESULTS",
                   help="also reuse matching cells from another run's results.json (file or run folder; repeatable)")
    g.add_argument("--save-runs", action="store_true",
                   help="keep each cell's jaxrec run folder (checkpoints, log.jsonl) under <out>/runs/")
    g.add_argument("--progress", action="store_true", help="show a progress bar per training run")
    g.add_argument("--track", default=None, metavar="NAMES",
                   help="experiment trackers of every cell (config track: tensorboard (default), mlflow, wandb; "
                        "none for none); each cell is its own run in a group named after the experiment")
    g.add_argument("--compile-cache", default=os.environ.get("JAXREC_COMPILE_CACHE"), metavar="DIR",
                   help="JAX persistent compilation cache folder: cells with the same shapes compile once "
                        "(default $JAXREC_COMPILE_CACHE; off when unset)")
    g.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser


def experiment_parser(experiment: str, doc: str, backbones: str = "lightgcn",
                      seeds: str = "2020") -> tuple[argparse.ArgumentParser, Any]:
    """The parser of ``python -m experiments.<experiment>`` (description: ``doc``'s first
    paragraph) with the common options, and an argument group for the experiment's own."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{experiment}", description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, backbones=backbones, seeds=seeds)
    return p, p.add_argument_group(experiment)


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


#: Per-dataset protocol settings, applied before the user's ``--set`` (which wins): the SASRec
#: paper's (Kang & McAuley 2018) maximum sequence length for MovieLens-1M is 200 (50 for the
#: sparser Amazon sets and ml-100k's default). Only rows whose model has the key get it.
DATASET_SETS: dict[str, tuple[str, ...]] = {"ml-1m": ("max_seq_len=200",)}


def dataset_sets(dataset: str | os.PathLike) -> list[str]:
    """The ``KEY=VALUE`` protocol settings of a dataset (by its name or folder name), e.g.
    ``["max_seq_len=200"]`` for ml-1m; ``[]`` for others."""
    return list(DATASET_SETS.get(Path(str(dataset)).name.lower(), ()))


def start(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    """Logging and the compilation cache from the common options; checks every ``--reuse``
    source holds cells; puts the dataset's protocol settings (``dataset_sets``) before the
    user's ``--set``; returns the validated (seeds, backbones)."""
    if hasattr(args, "set") and hasattr(args, "dataset") and not getattr(args, "_dataset_sets", False):
        args.set = dataset_sets(args.dataset) + list(args.set)
        args._dataset_sets = True
    setup_logging(args.verbose)
    enable_compile_cache(getattr(args, "compile_cache", None))
    import_plugins(getattr(args, "plugin", ()))
    from experiments.grid import load_previous_cells  # noqa: PLC0415

    for other in getattr(args, "reuse", None) or ():  # before any data is read
        if not load_previous_cells(other):
            raise ConfigError(f"--reuse {other}: no results.json with cells there")
    return parse_seeds(args.seeds), check_backbones(parse_list(args.backbones))


def base_config(args: argparse.Namespace, **fields: Any) -> Config:
    """``Config(dataset=args.dataset, **fields)`` + ``--plugin`` + ``--set`` overrides + the ``--epochs`` cap.

    A grid mixes models: a ``--set`` key that is a setting of some models applies to the rows
    whose model has it (``applicable_sets``); a key no model knows is an error."""
    plugins = tuple(getattr(args, "plugin", ()))
    config = Config(dataset=str(args.dataset), plugins=plugins).replace(**fields)
    config = config.with_overrides(applicable_sets(args.set, config.model))
    if getattr(args, "track", None) is not None:
        from jaxrec.train.tracking import parse_track  # noqa: PLC0415

        config = config.replace(track=parse_track(args.track))
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs {args.epochs}: expected an integer >= 1")
        config = config.replace(epochs=min(config.epochs, args.epochs))
    return config


def for_model(base: Config, model: str, sets: Sequence[str] = (), **fields: Any) -> Config:
    """``base`` switched to backbone ``model`` (``Config.replace``), with the ``--set`` assignments
    ``sets`` that are ``model``'s own settings applied (``base_config`` applied only those of its
    own model), then ``fields``."""
    own = set(settings_fields_of(model))
    mine = [a for a in sets if a.split("=", 1)[0].strip() in own]
    return base.replace(model=model).with_overrides(mine).replace(**fields)


def settings_fields_of(model: str) -> tuple[str, ...]:
    from jaxrec.config import model_spec, settings_fields

    return settings_fields(model_spec(model).settings)


def applicable_sets(assignments: Sequence[str], model: str) -> list[str]:
    """The ``key=value`` strings that apply to ``model``: shared keys and its settings. A key that is
    neither shared nor a setting of any registered model is a ``ConfigError``."""
    from jaxrec.config import model_spec, models_with_setting, settings_fields, shared_field_names

    own = set(shared_field_names()) | set(settings_fields(model_spec(model).settings))
    out = []
    for text in assignments:
        key = text.split("=", 1)[0].strip()
        if key in own or "=" not in text:
            out.append(text)  # a malformed one is reported by with_overrides
        elif not models_with_setting(key):
            raise ConfigError(f"--set {text}: unknown config key {key!r}: neither a shared key nor a setting of any "
                              "registered model (`jaxrec train --help` lists them)")
    return out


def check_backbones(names: Sequence[str]) -> list[str]:
    """Backbone names that ``jaxrec.models.get_model`` knows (any registered one)."""
    from jaxrec.models import get_model

    out = []
    for name in names:
        try:
            get_model(Config.for_model(name))
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


def resolve_text_source(args: argparse.Namespace, config: Config) -> EmbeddingSource:
    """``--embeddings`` / ``--encoder`` (or ``--set``) -> the source every LLM-init cell uses
    (``jaxrec.init.resolve_embedding_source``)."""
    return resolve_embedding_source(config, getattr(args, "embeddings", "auto"), getattr(args, "encoder", None))


def main_wrapper(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main`` with the method packages registered (``jaxrec.methods.register_all``), turning
    bad input (any ``jaxrec.errors.JaxrecError``: config, data, embedding files, stage-1/2
    inputs, ...) into one line ``jaxrec: error: ...`` on stderr and exit code 2, as the ``jaxrec``
    command does."""
    from jaxrec.errors import JaxrecError
    from jaxrec.methods import register_all

    global _STANDALONE
    _STANDALONE = True
    register_all()
    try:
        return main(argv)
    except JaxrecError as e:
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2
