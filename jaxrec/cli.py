"""Command line: ``jaxrec train ...`` (also ``python -m jaxrec train ...``).

Every option maps onto a ``Config`` field; precedence is defaults < ``--config`` file <
explicit options < ``--set key=value``, and the config is validated once, after every layer.
``--plugin MODULE`` (or a ``.py`` path; repeatable) is imported first, so the components it
registers (``jaxrec.register_model`` ...) are valid names. The command is a thin shell over
``jaxrec.pipeline.train_run``. ``jaxrec recommend | export | update`` serve and update a
trained run (``jaxrec.serve.cli``).

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
            "embeddings", "coordinator_address", "num_processes", "process_id")


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

    extra = {
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
    return parser


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
             for name in _FLAGGED if getattr(args, name) is not None}
    if args.plugin:
        flags["plugins"] = tuple(dict.fromkeys([*file_layer.get("plugins", ()), *args.plugin]))
    return build_config(file_layer, flags, sets=args.set)


def with_text_source(config: Config) -> tuple[Config, str | None]:
    """``embeddings=auto``, or an LLM ``init`` given neither ``embeddings`` nor ``encoder``: the
    config with the source the experiments use by default (``jaxrec.init.resolve_embedding_source``:
    the dataset's reference MPNet file ``<dataset>.all-mpnet-base-v2.npy`` when it is in the data
    folder, else the ``minilm`` encoder), written into the config so run.json records it; plus a
    line saying which. Other configs are returned as they are (``None``)."""
    from jaxrec.init import get_initializer, resolve_embedding_source  # noqa: PLC0415

    auto = str(config.embeddings or "").lower() == "auto"
    if auto:
        config = config.replace(embeddings=None)
    if config.embeddings or config.encoder or get_initializer(config.init).build is None:
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


if __name__ == "__main__":
    sys.exit(main())
