"""``jaxrec recommend | export | update``: the command-line shell over ``jaxrec.serve``.

    jaxrec recommend --run DIR --users 196,186 --k 10          # a table (with titles when the dataset has them)
    jaxrec recommend --run DIR --users-file ids.txt --k 10 --out recs.parquet   # one id per line (any number)
    jaxrec recommend --run DIR --all --k 10 --out recs.parquet  # every user, in blocks, with a progress bar
    jaxrec export --run DIR --out FOLDER                        # embeddings + original ids (.npy, .txt, .parquet)
    jaxrec update --run DIR --interactions NEW.inter --items NEW.item --out DIR2 --epochs 20

Bad input (unknown ids, a dataset that is not the run's, k larger than the catalog, files
with other fields) raises a ``jaxrec.errors.JaxrecError`` before any compute; ``jaxrec.cli``
adds these parsers, calls ``run_command`` and reports such errors as ``jaxrec: error: ...``
with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMANDS = ("recommend", "export", "update")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, type=Path, metavar="DIR", help="run folder (jaxrec train --out)")
    p.add_argument("--dataset", default=None, metavar="DATASET",
                   help="dataset name or folder to load with the run's config instead of its own "
                        "(checked against the run's dataset fingerprint)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def add_parsers(sub) -> None:
    """Add the ``recommend``, ``export`` and ``update`` subcommands to ``sub`` (argparse subparsers)."""
    rec = sub.add_parser("recommend", help="top-k items for users of a trained run",
                         description="Top-k items (original ids) for original user ids of a trained run, "
                                     "scored with the run's best parameters; seen items left out.")
    _run_args(rec)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", metavar="U1,U2,...", help="comma-separated original user ids")
    who.add_argument("--users-file", type=Path, metavar="FILE",
                     help="original user ids, one per line (UTF-8; empty lines skipped): for lists too long for "
                          "one argument")
    who.add_argument("--all", action="store_true", help="every user of the run's dataset (needs --out)")
    rec.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    rec.add_argument("--out", type=Path, default=None,
                     help="write user_id, rank, item_id, score to a .parquet or .csv file")
    rec.add_argument("--include-seen", action="store_true", help="do not leave out the items a user already has")
    rec.add_argument("--candidates", default=None, metavar="IDS|FILE",
                     help="rank only these items: comma-separated original ids, or a file with one id per line")
    rec.add_argument("--block-users", type=int, default=None, metavar="N",
                     help="users per block written at once with --all (default 65536)")
    rec.add_argument("--no-progress", action="store_true", help="no progress bar")

    exp = sub.add_parser("export", help="write a run's user and item embeddings with their original ids",
                         description="Write <side>_embeddings.npy, <side>_ids.txt and <side>s.parquet for users "
                                     "and items, and export.json.")
    _run_args(exp)
    exp.add_argument("--out", required=True, type=Path, metavar="FOLDER", help="output folder")

    upd = sub.add_parser("update", help="long-short update: new interactions and items onto a trained run",
                         description="Append new interactions (and rows of new items/users) to the run's dataset, "
                                     "embed only new item texts, start every known row from the run's best "
                                     "parameters, continue training and evaluate (jaxrec.serve.update).")
    _run_args(upd)
    upd.add_argument("--interactions", required=True, type=Path, metavar="NEW.inter",
                     help="new interactions (atomic file with the run's .inter fields)")
    upd.add_argument("--items", type=Path, default=None, metavar="NEW.item", help="rows of new items")
    upd.add_argument("--users", type=Path, default=None, metavar="NEW.user", help="rows of new users")
    upd.add_argument("--out", required=True, type=Path, metavar="DIR2", help="folder of the updated run")
    upd.add_argument("--epochs", type=int, default=None, help="training epochs of the update (default: the run's)")
    upd.add_argument("--new-items", choices=("auto", "llm", "random"), default="auto",
                     help="new item rows: llm (the run's stored LLMInit selection and scaling), random, or auto "
                          "(llm for an LLM-initialized run; default)")
    upd.add_argument("--new-row-scale", choices=("init", "trained"), default="init",
                     help="new rows at their initializer's scale (init; default) or scaled to the mean norm of the "
                          "run's trained rows (trained)")
    upd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the run's config (repeatable), e.g. --set patience=5")
    upd.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    upd.add_argument("--no-progress", action="store_true", help="no progress bar")


def _users_file(path: Path) -> list[str]:
    """The ids of ``--users-file`` (one per line); ``ServeError`` naming the file when unreadable or empty."""
    from jaxrec.serve import ServeError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServeError(f"--users-file {path}: not found; expected a text file of user ids, one per line") from None
    except IsADirectoryError:
        raise ServeError(f"--users-file {path}: a folder; expected a text file of user ids, one per line") from None
    except UnicodeDecodeError as e:
        raise ServeError(f"--users-file {path}: not UTF-8 text (byte {e.start}); expected user ids, one per "
                         "line") from None
    except OSError as e:
        raise ServeError(f"--users-file {path}: cannot read ({e.strerror})") from None
    users = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if not users:
        raise ServeError(f"--users-file {path}: no user ids; expected one per line")
    return users


def _candidates(text: str | None) -> list[str] | None:
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [t.strip() for t in text.split(",") if t.strip()]


def _recommend(args, run) -> int:
    from jaxrec.serve import ServeError, format_recommendations, recommend, title_field, write_recommendations
    from jaxrec.serve.recommend import output_format, write_table

    progress = not args.no_progress and sys.stderr.isatty()
    cand = _candidates(args.candidates)
    block = {} if args.block_users is None else {"block_users": args.block_users}
    if args.all:
        if args.out is None:
            raise ServeError("--all writes every user's recommendations: give --out recs.parquet (or .csv)")
        print(write_recommendations(run, args.out, k=args.k, exclude_seen=not args.include_seen, candidates=cand,
                                    progress=progress, **block))
        return 0
    fmt = output_format(args.out) if args.out is not None else None  # a bad suffix fails before any compute
    if args.users_file is not None:
        users = args.users_from_file
        if args.out is not None:  # any number of users: in blocks, straight to the file
            print(write_recommendations(run, args.out, k=args.k, users=users, exclude_seen=not args.include_seen,
                                        candidates=cand, progress=progress, **block))
            return 0
    else:
        users = [u.strip() for u in args.users.split(",") if u.strip()]
    recs = recommend(run, users, k=args.k, exclude_seen=not args.include_seen, candidates=cand)
    field = title_field(run.dataset)
    print(format_recommendations(recs, run.dataset.item_features[field] if field else None))
    if args.out is not None:
        table = recs.to_arrow()
        write_table(table, args.out, fmt)
        print(f"wrote {table.num_rows:,} recommendations for {len(recs):,} users to {args.out}")
    return 0


def _export(args, run) -> int:
    from jaxrec.serve import export

    files = export(run, args.out)
    print(f"exported {run.num_users:,} users and {run.num_items:,} items (d = {run.catalog.user_emb.shape[1]}) "
          f"to {args.out}/: {', '.join(files)}")
    return 0


def _update(args, run) -> int:
    from jaxrec.pipeline import format_metrics_table
    from jaxrec.serve import update

    res = update(run, args.interactions, args.out, items=args.items, users=args.users, epochs=args.epochs,
                 sets=args.set, new_items=args.new_items, new_row_scale=args.new_row_scale, overwrite=args.overwrite,
                 progress=not args.no_progress)
    import jax

    if jax.process_index() != 0:
        return 0
    print(res.dataset.summary())
    for line in res.report.lines():
        print(line)
    r = res.result
    print(f"best epoch {r.best_epoch} (stopped at {r.stopped_epoch}); update took {res.report.seconds['total']:.1f} s "
          f"(training {res.report.seconds['fit']:.1f} s)")
    print(format_metrics_table(r.test_metrics, title=f"test metrics (update of {run.path})"))
    print(f"run files: {args.out}/ (results.json with the parent, update.json, init.json, data/, ckpt/)")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``recommend`` / ``export`` / ``update`` command (bad input raises a ``JaxrecError``)."""
    from jaxrec.serve import load_run

    if args.command == "recommend" and args.users_file is not None:
        args.users_from_file = _users_file(args.users_file)  # read before the run is loaded
    run = load_run(args.run, dataset=args.dataset)
    return {"recommend": _recommend, "export": _export, "update": _update}[args.command](args, run)


__all__ = ["add_parsers", "run_command", "COMMANDS"]
