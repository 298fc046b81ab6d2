"""Command line: ``jaxrec train ...`` (also ``python -m jaxrec train ...``).

Every option maps onto a ``Config`` field; precedence is defaults < ``--config`` file <
explicit options < ``--set key=value``, and the config is validated once, after every layer.
``--plugin MODULE`` (or a ``.py`` path; repeatable) is imported first, so the components it
registers (``jaxrec.register_model`` ...) are valid names. The command is a thin shell over
``jaxrec.pipeline.train_run``. ``jaxrec recommend | export | update`` serve and update a
trained run (``jaxrec.serve.cli``). ``--track tensorboard,mlflow`` chooses the experiment
trackers (config ``track``; ``jaxrec.train.tracking``; ``none`` for none). ``jaxrec tune``
searches hyperparameters with Optuna (``jaxrec.tune``).

Multi-host: ``--coordinator-address host:port --num-processes N --process-id I`` (or the
config keys, or ``$JAXREC_COORDINATOR`` / ``$JAXREC_NUM_PROCESSES`` / ``$JAXREC_PROCESS_ID``)
start ``jax.distributed`` before anything runs; every process trains its shards, process 0
alone writes the run files and prints the table.

Bad input (config, data, run folder: any ``jaxrec.errors.JaxrecError``) is reported as
``jaxrec: error: ...`` with exit status 2, never a traceback; so is a file that cannot be
written or read (a full disk: ``WriteError`` naming the file; any other ``OSError`` with its
file); a run that diverges exits with status 1 and names its last checkpoint.

The method packages (``jaxrec.methods``: A-LLMRec's stages) are registered explicitly at
start-up (``jaxrec.methods.register_all()``), so ``--model allmrec_stage1`` is a valid name here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from jaxrec.config import (
    Config,
    build_config,
    coerce_mapping,
    field_type_name,
    import_plugins,
    model_spec,
    parse_value,
    settings_fields,
    shared_field_names,
)
from jaxrec.errors import JaxrecError

# Options with their own flags (besides --set); the rest are reachable via --set.
_FLAGGED = ("dataset", "model", "seed", "epochs", "batch_size", "learning_rate", "embedding_size",
            "num_layers", "reg_weight", "patience", "topk", "split", "kernel", "init", "encoder",
            "embeddings", "track", "coordinator_address", "num_processes", "process_id")


def _field_help() -> str:
    from jaxrec.registry import MODELS  # noqa: PLC0415

    defaults = Config()
    lines = ["shared config keys (for --set key=value or a --config TOML/JSON file):"]
    for name in shared_field_names():
        lines.append(f"  {name:<24} {field_type_name(name):<18} default {getattr(defaults, name)!r}")
    for model in MODELS.names():
        spec = model_spec(model)
        fields = settings_fields(spec.settings)
        lines.append(f"settings of model {model!r} ({spec.settings.__name__})" + (":" if fields else ": none"))
        own = spec.settings()
        for name in fields:
            lines.append(f"  {name:<24} {field_type_name(name, model):<18} default {getattr(own, name)!r}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from jaxrec.methods import register_all  # noqa: PLC0415

    register_all()  # the method packages' models, contexts, terms and evaluations (explicit, once)
    parser = argparse.ArgumentParser(prog="jaxrec", description="LLM-enhanced recommendation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train and evaluate a backbone",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_field_help(),
        description="Train a backbone on a dataset, select the best validation epoch, print test metrics.",
    )
    from jaxrec.registry import INITIALIZERS, MODELS  # noqa: PLC0415

    from jaxrec.registry import TRACKERS  # noqa: PLC0415

    extra = {
        "track": f"; comma-separated experiment trackers among {', '.join(TRACKERS)} (default tensorboard: "
                 "event files in the run folder), or none",
        "model": f"; a registered backbone: {', '.join(sorted(MODELS))}",
        "init": f"; none or an LLM initializer: {', '.join(sorted(n for n in INITIALIZERS if n != 'none'))}",
        "embeddings": "; precomputed item text embeddings (.npy, <stem>.item_ids.txt beside it), or 'auto' "
                      "(the default for an LLM init without --encoder: <dataset>.all-mpnet-base-v2.npy in the "
                      "data folder when present, else --encoder minilm)",
    }
    for name in _FLAGGED:
        what = f"config {name} ({field_type_name(name)})" if name in shared_field_names() else \
            f"the model's setting {name} (models with it: see the list below)"
        train.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar=name.upper(),
                           help=what + extra.get(name, ""))
    train.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="import MODULE (or a .py file) first: it may register backbones, initializers, ... "
                            "(repeatable; recorded in the config's plugins)")
    train.add_argument("--config", type=Path, help="TOML or JSON file of config keys")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any config key (repeatable); see the list below")
    train.add_argument("--out", type=Path, help="run folder (default checkpoints/<dataset>-<model>-<init>-s<seed>)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    train.add_argument("--overwrite", action="store_true", help="clear an existing run in the run folder")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    from jaxrec.serve.cli import add_parsers  # recommend, export, update

    add_parsers(sub)
    _add_tune_parser(sub)
    return parser


def _add_tune_parser(sub) -> None:
    from jaxrec.tune import PRUNERS  # noqa: PLC0415

    t = sub.add_parser(
        "tune", help="search hyperparameters with Optuna (resumable; several processes may share a study)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search a space of config values with Optuna: the objective is the best validation "
                    "valid_metric of each trial, hopeless trials are pruned, the study lives in --storage (resume "
                    "by running the same command; run it in several processes to search together). Prints the top "
                    "trials and writes the best config (--out) for `jaxrec train --config`.",
        epilog="search space file (TOML): fixed config keys at the top level, then one table per searched key:\n"
               "  [space.learning_rate]\n  type = \"float\"\n  low = 1e-4\n  high = 1e-2\n  log = true\n\n"
               "  [space.num_layers]\n  type = \"int\"\n  low = 1\n  high = 4\n\n"
               "  [space.reg_weight]\n  type = \"categorical\"\n  choices = [1e-5, 1e-4, 1e-3]")
    t.add_argument("--space", type=Path, required=True, help="the search space (TOML; see below)")
    t.add_argument("--trials", type=int, required=True,
                   help="finished (complete or pruned) trials the study should hold; failed ones do not count")
    t.add_argument("--storage", required=True, help="Optuna database URL, e.g. sqlite:///study.db")
    t.add_argument("--study-name", default=None, help="default <dataset>-<model>")
    t.add_argument("--model", default=None, help="backbone (overrides the space file's model)")
    t.add_argument("--dataset", default=None, help="dataset name or folder (overrides the space file's)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a fixed config key")
    t.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first")
    t.add_argument("--track", default=None, help="experiment trackers of every trial (config track; none for none)")
    t.add_argument("--out", type=Path, default=None, help="write the best config here (TOML; default best.toml)")
    t.add_argument("--pruner", default="median", choices=PRUNERS, help="Optuna pruner (default median)")
    t.add_argument("--sampler-seed", type=int, default=None, help="seed of Optuna's TPE sampler (default random)")
    t.add_argument("--runs", type=Path, default=None,
                   help="keep each trial's run folder as RUNS/trial-<n> (TensorBoard writes there)")
    t.add_argument("--top", type=int, default=10, help="rows of the printed table (default 10)")
    t.add_argument("--grace-period", type=int, default=60,
                   help="seconds without a heartbeat after which another machine's trial counts as failed")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def _tracker_names(text: str | None) -> tuple[str, ...] | None:
    from jaxrec.train.tracking import parse_track  # noqa: PLC0415

    return parse_track(text)


def config_from_args(args: argparse.Namespace) -> Config:
    """defaults < --config file < flags < --set, validated once after all layers. The model (from
    --set, --model or the file, in that order) decides which keys are its settings."""
    import_plugins(args.plugin)
    raw: dict = {}
    if args.config is not None:
        from jaxrec.config import read_config_file  # noqa: PLC0415

        raw = read_config_file(args.config)
    model = next((a.split("=", 1)[1].strip() for a in reversed(args.set) if a.split("=", 1)[0].strip() == "model"),
                 args.model or raw.get("model") or Config.model)
    import_plugins(raw.get("plugins", ()) or ())
    file_layer = coerce_mapping(raw, source=f"config file {args.config}:", model=model) if raw else {}
    flags = {name: parse_value(name, getattr(args, name), source="--" + name.replace("_", "-"), model=model)
             for name in _FLAGGED if getattr(args, name) is not None and name != "track"}
    if args.track is not None:
        flags["track"] = _tracker_names(args.track)
    if args.plugin:
        flags["plugins"] = tuple(dict.fromkeys([*file_layer.get("plugins", ()), *args.plugin]))
    return build_config(file_layer, flags, sets=args.set)


def with_text_source(config: Config) -> tuple[Config, str | None]:
    """``embeddings=auto``, or an LLM ``init`` or a model that reads item text
    (``ModelSettings.reads_item_text``) given neither ``embeddings`` nor ``encoder``: the
    config with the source the experiments use by default (``jaxrec.init.resolve_embedding_source``:
    the dataset's reference MPNet file ``<dataset>.all-mpnet-base-v2.npy`` when it is in the data
    folder, else the ``minilm`` encoder), written into the config so run.json records it; plus a
    line saying which. Other configs are returned as they are (``None``)."""
    from jaxrec.init import get_initializer, resolve_embedding_source  # noqa: PLC0415

    auto = str(config.embeddings or "").lower() == "auto"
    if auto:
        config = config.replace(embeddings=None)
    reads_text = get_initializer(config.init).build is not None or type(config.settings).reads_item_text
    if config.embeddings or config.encoder or not reads_text:
        return config, None
    source = resolve_embedding_source(config, "auto")
    return config.replace(embeddings=source.embeddings, encoder=source.encoder), f"text embeddings: {source.description}"


def default_out_dir(config: Config) -> Path:
    name = Path(config.dataset).name
    return Path("checkpoints") / f"{name}-{config.model}-{config.init}-s{config.seed}"


def _quiet_unraisable(unraisable) -> None:
    """Exceptions Python cannot raise (e.g. tensorstore's callbacks into a closed event loop
    after a damaged checkpoint was refused): logged at DEBUG (``-v``), not printed as tracebacks."""
    logging.getLogger("jaxrec").debug("ignored in %r: %r", unraisable.object, unraisable.exc_value)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if argv is None:  # the command line (not a caller's own process): no stray tracebacks
        sys.unraisablehook = _quiet_unraisable
    from jaxrec.train import TrainingDivergedError

    try:
        if args.command == "tune":
            return _tune(args)
        if args.command != "train":
            from jaxrec.serve.cli import run_command

            return run_command(args)
        return _train(args)
    except JaxrecError as e:
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2
    except TrainingDivergedError as e:
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the system's refusal (no space, no permission) of a file no check above names
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"jaxrec: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    config, text_note = with_text_source(config_from_args(args))
    if text_note:
        print(f"jaxrec: {text_note}", file=sys.stderr)
    from jaxrec import distributed

    distributed.initialize(config)  # before any computation; a no-op for one process
    from jaxrec.pipeline import format_metrics_table, train_run

    out = args.out or default_out_dir(config)
    result, dataset = train_run(config, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                                progress=not args.no_progress)
    import jax

    if jax.process_index() != 0:
        return 0
    print(dataset.summary())
    print(f"best epoch {result.best_epoch} (stopped at {result.stopped_epoch}); "
          f"selected on valid {config.valid_metric} = {result.valid_metrics.get(config.valid_metric, float('nan')):.4f}")
    print(format_metrics_table(result.test_metrics, title=f"test metrics ({config.model}, seed {config.seed})"))
    files = "results.json, log.jsonl, run.json, " + ("init.json, " if (Path(out) / "init.json").is_file() else "")
    print(f"run files: {out}/ ({files}ckpt/)")
    print(f"recommendations: jaxrec recommend --run {out} --users {','.join(map(str, dataset.user_ids[:2]))} "
          f"--k 10   (or --all --out recs.parquet; jaxrec export --run {out} --out FOLDER)")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from jaxrec.tune import tune  # noqa: PLC0415

    if args.verbose:
        logging.getLogger("jaxrec.tune").setLevel(logging.INFO)
    else:  # one line per trial
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("jaxrec tune: %(message)s"))
        lg = logging.getLogger("jaxrec.tune")
        lg.setLevel(logging.INFO)
        lg.addHandler(handler)
        lg.propagate = False
    out = args.out or Path("best.toml")
    result = tune(args.space, trials=args.trials, storage=args.storage, model=args.model, dataset=args.dataset,
                  sets=args.set, plugins=args.plugin, track=_tracker_names(args.track), study_name=args.study_name,
                  out=out, pruner=args.pruner, sampler_seed=args.sampler_seed, runs_dir=args.runs, top=args.top,
                  progress=False if args.no_progress else None, grace_period=args.grace_period)
    print(result.table)
    metric = result.best_config.valid_metric
    test = ", ".join(f"{k} {v:.4f}" for k, v in result.best_test.items() if k in ("recall@10", "ndcg@10", metric))
    print(f"best trial {result.best_number}: valid {metric} = {result.best_value:.4f}"
          + (f"; its test metrics (not used for selection): {test}" if test else ""))
    print(f"best config: {result.out}   (jaxrec train --config {result.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
