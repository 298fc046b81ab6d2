"""The long-short update (DESIGN.md 8) against retraining from scratch.

Data. The dataset's interactions are cut in two: **new** = every interaction of a random
``--new-items`` share of the items (10%, drawn with the seed) plus the last ``--new-time``
share of all interactions in time (20%; time order = timestamp, then file position);
**old** = the rest. Items and users that appear only in new interactions are new
items / users (their atomic rows go to ``new.item`` / ``new.user``).

Runs (per seed and backbone; LLM init ``variance`` with the reference MPNet embeddings by
default, ``--embeddings auto``):

- ``parent``: trained on old data (``jaxrec.train_run``: stores ``init.json``);
- ``update, LLM new items``: ``jaxrec.serve.update`` of the parent with the new data: every
  known row starts from the parent's best params, new items from their text embeddings on
  the parent's stored dims and scaling, new users pooled from their items, then
  ``--update-epochs`` epochs (a fixed budget: ``min_epochs`` = that, the best validation
  epoch kept; ``--early-stop`` lets patience stop them);
- ``update, random new items``: the same with new item rows from the backbone's random init;
- ``..., norm-matched`` (``--scales``): the same two with the new rows scaled to the mean norm
  of the trained rows (``new_row_scale="trained"``): trained LightGCN rows are about 4x the
  norm of fresh LLM-init rows, so fresh rows start far behind in every dot product;
- ``fold-in only``: an LLM update's starting parameters, evaluated without training;
- ``scratch``: LLM init and training from scratch on all the data (the update's dataset),
  early stopping as configured (patience 10, at most 300 epochs).

Test (identical for every compared run): all runs but the parent use the same merged
dataset (old + new, the update's ``data/`` folder; fingerprints checked equal) split by
``loo_time``: each user's last interaction in time is test, the one before is validation,
ranking over all items excluding the user's train and valid items. With a time-ordered
split no parent training interaction is a test or validation interaction of the merged data
(the update reports ``test_seen_by_parent`` = 0). Metrics are also split by user: test item
is a new item (``new item``), test interaction is otherwise a new one (``fresh``), or the
user's test interaction was already the parent's (``old``).

    python -m experiments.long_short_update --dataset ml-100k
    python -m experiments.long_short_update --dataset ml-100k --seeds 2020,2021,2022 --update-epochs 40

Writes ``long_short_update.csv``, ``cells.csv``, ``long_short_update.png``, ``table.txt``
and ``results.json`` (every run's config, metrics, seconds and the update reports) into
``checkpoints/long_short_update/<run-name>/`` (or ``--out``); the jaxrec runs in ``runs/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from experiments import cli, plots, report
from jaxrec.config import Config, ConfigError

log = logging.getLogger("experiments")

EXPERIMENT = "long_short_update"
SCALES = ("init", "trained")


def update_method(mode: str, scale: str) -> str:
    return f"update-{mode}" + ("" if scale == "init" else f"-{scale}")


def label(method: str) -> str:
    """Row label of a method key (``update-llm-trained`` -> "update, LLM new items, norm-matched")."""
    fixed = {"parent": "parent (old data)", "scratch": "retrain from scratch"}
    if method in fixed:
        return fixed[method]
    scale = ", norm-matched" if method.endswith("-trained") else ""
    if method.startswith("fold-in"):
        return f"fold-in only (LLM new items{scale}, no training)"
    return f"update, {'LLM' if '-llm' in method else 'random'} new items{scale}"


GROUPS = ("all", "new_item", "fresh", "old")
EXTRAS = tuple(f"{m}_{g}" for g in GROUPS[1:] for m in ("ndcg@10", "recall@10")) + ("seconds_total",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common experiment options")
    g.add_argument("--dataset", default="ml-100k", help="dataset name or folder (default ml-100k)")
    g.add_argument("--seeds", default="2020", help="comma-separated seeds (default 2020)")
    g.add_argument("--backbones", default="lightgcn", help="comma-separated backbones (default lightgcn)")
    g.add_argument("--init", default="variance", help="LLM initializer of the runs (default variance)")
    g.add_argument("--epochs", type=int, default=None, help="cap on epochs of the parent and scratch runs")
    g.add_argument("--out", type=Path, default=None, help="run folder (default checkpoints/long_short_update/<name>/)")
    g.add_argument("--name", default=None, help="run name for the default run folder")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first (repeatable)")
    g.add_argument("--encoder", default=None, help="text encoder (default: the reference embeddings, else minilm)")
    g.add_argument("--embeddings", default="auto", help="precomputed item embeddings .npy, 'auto' (default) or 'none'")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a Config key (repeatable)")
    g.add_argument("--progress", action="store_true", help="progress bars")
    g.add_argument("--compile-cache", default=os.environ.get("JAXREC_COMPILE_CACHE"), metavar="DIR",
                   help="JAX persistent compilation cache folder")
    g.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    e = p.add_argument_group(EXPERIMENT)
    e.add_argument("--new-items", type=float, default=0.1, help="share of items held out with all their interactions")
    e.add_argument("--new-time", type=float, default=0.2, help="share of interactions held out at the end in time")
    e.add_argument("--update-epochs", type=int, default=20, help="training epochs of each update (default 20)")
    e.add_argument("--early-stop", dest="fixed_budget", action="store_false",
                   help="let the updates stop early (patience as configured); default: they run all "
                        "--update-epochs (min_epochs) and keep the best validation epoch")
    e.add_argument("--scales", default="init,trained",
                   help="new_row_scale of the updates: init (the initializer's scale, as the run was), trained "
                        "(scaled to the trained rows' mean norm); default both")
    return p


# ------------------------------------------------------------------------------ the cut
def cut_new_data(item: np.ndarray, timestamp: np.ndarray, seed: int, new_items: float = 0.1,
                 new_time: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(is_new bool [n], held-out item ids): interactions of ``floor(new_items * #items)``
    random items (``np.random.default_rng(seed)``) plus the last ``floor(new_time * n)`` in
    time order (timestamp, then position)."""
    if not 0 <= new_items < 1 or not 0 <= new_time < 1:
        raise ConfigError(f"--new-items {new_items}, --new-time {new_time}: expected shares in [0, 1)")
    item = np.asarray(item).astype(str)
    uniq = np.unique(item)
    held = np.random.default_rng(seed).choice(uniq, int(np.floor(new_items * uniq.size)), replace=False)
    order = np.argsort(np.asarray(timestamp), kind="stable")  # int64 timestamps compared exactly
    late = np.zeros(item.size, bool)
    late[order[item.size - int(np.floor(new_time * item.size)):]] = True
    return late | np.isin(item, held), np.sort(held)


def _subset(columns: dict, keep: np.ndarray) -> dict:
    idx = np.flatnonzero(keep)
    return {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in columns.items()}


def write_cut(dataset: str, data_dirs, seed: int, new_items: float, new_time: float, out: Path) -> dict:
    """Write ``out/old/<name>/`` (the parent's dataset) and ``out/new.inter|.item|.user``;
    returns the counts."""
    from jaxrec.data import find_dataset, read_atomic, write_atomic
    from jaxrec.data.locate import inter_file

    folder = find_dataset(dataset, data_dirs)
    name = inter_file(folder).stem
    cols, types = read_atomic(folder / f"{name}.inter", with_types=True)
    if "timestamp" not in cols:
        raise ConfigError(f"dataset {dataset}: no timestamp column; the long-short update cuts by time")
    is_new, held = cut_new_data(cols["item_id"], cols["timestamp"], seed, new_items, new_time)
    old_dir = out / "old" / name
    write_atomic(old_dir / f"{name}.inter", _subset(cols, ~is_new), types)
    write_atomic(out / "new.inter", _subset(cols, is_new), types)
    info = {"interactions": int(is_new.size), "old_interactions": int((~is_new).sum()),
            "new_interactions": int(is_new.sum()), "held_out_items": int(held.size), "seed": seed,
            "new_items_share": new_items, "new_time_share": new_time}
    for kind in ("item", "user"):
        path = folder / f"{name}.{kind}"
        if not path.is_file():
            continue
        side, side_types = read_atomic(path, with_types=True)
        ids = np.asarray(side[f"{kind}_id"]).astype(str)
        used_old = np.isin(ids, np.asarray(cols[f"{kind}_id"]).astype(str)[~is_new])
        used_new = np.isin(ids, np.asarray(cols[f"{kind}_id"]).astype(str)[is_new]) & ~used_old
        write_atomic(old_dir / f"{name}.{kind}", _subset(side, used_old), side_types)
        write_atomic(out / f"new.{kind}", _subset(side, used_new), side_types)
        info[f"new_{kind}s"] = int(used_new.sum())
    info["old_folder"] = str(old_dir)
    return info


# ------------------------------------------------------------------------ evaluation
def user_groups(dataset, parent_dataset) -> dict[str, np.ndarray]:
    """Dense test users of ``dataset`` by what their test interaction is (module docstring)."""
    from jaxrec.serve.update import old_positions

    test = dataset.test
    new_item = old_positions(parent_dataset.item_ids, dataset.item_ids)[test.item] < 0
    pairs = np.char.add(np.char.add(dataset.user_ids[test.user], "\t"), dataset.item_ids[test.item])
    parts = (parent_dataset.train, parent_dataset.valid, parent_dataset.test)
    old_pairs = np.concatenate([np.char.add(np.char.add(parent_dataset.user_ids[p.user], "\t"),
                                            parent_dataset.item_ids[p.item]) for p in parts])
    was_old = np.isin(pairs, old_pairs)
    return {"all": np.unique(test.user), "new_item": np.unique(test.user[new_item]),
            "fresh": np.unique(test.user[~new_item & ~was_old]), "old": np.unique(test.user[was_old])}


def group_metrics(model, params, dataset, prepared, config, groups) -> dict[str, float]:
    """NDCG@10 / Recall@10 on test of every user group (full ranking, train + valid masked)."""
    import jax

    from jaxrec.eval import evaluate

    user_emb, item_emb = jax.jit(model.embed)(params, prepared.contexts(model.context, config)["test"])
    out = {}
    for name, users in groups.items():
        if users.size == 0:
            out.update({f"ndcg@10_{name}": float("nan"), f"recall@10_{name}": float("nan")})
            continue
        m = evaluate(user_emb, item_emb, users, prepared.exclude("test"), prepared.truth("test"), ks=(10,),
                     metrics=("ndcg", "recall"), chunk_size=config.eval_chunk)
        out.update({f"ndcg@10_{name}": m["ndcg@10"], f"recall@10_{name}": m["recall@10"]})
    return out


def _record(method: str, seed: int, backbone: str, results: dict, seconds: float, extra: dict, **more) -> dict:
    return {"key": {"backbone": backbone, "method": method, "seed": seed}, "model": results["model"],
            "seed": seed, "config": results["config"], "dataset": results["dataset"],
            "best_epoch": results["best_epoch"], "stopped_epoch": results["stopped_epoch"],
            "valid": results["valid"], "test": results["test"], "seconds": seconds,
            "extra": {**dict.fromkeys(EXTRAS, float("nan")), **extra, "seconds_total": seconds}, **more}


def run_seed(base: Config, backbone: str, seed: int, args, out: Path) -> list[dict]:
    """Every run of one (backbone, seed); one record each."""
    import json

    from jaxrec.data.fingerprint import dataset_fingerprint
    from jaxrec.models import get_model
    from jaxrec.pipeline import train_run
    from jaxrec.serve import carry_params, item_rows, load_run, update
    from jaxrec.serve.update import new_item_embeddings, old_positions
    from jaxrec.train import evaluate_params, prepare, run_keys

    root = out / "runs" / f"{backbone}-s{seed}"
    cut = write_cut(base.dataset, base.data_dirs, seed, args.new_items, args.new_time, root / "data")
    log.info("seed %d: %d old / %d new interactions (%d items held out)", seed, cut["old_interactions"],
             cut["new_interactions"], cut["held_out_items"])
    config = cli.for_model(base, backbone, args.set, seed=seed, dataset=cut["old_folder"])
    t0 = time.perf_counter()
    result, _ = train_run(config, out_dir=root / "parent", overwrite=True, progress=args.progress)
    parent_seconds = time.perf_counter() - t0
    parent = load_run(root / "parent")
    records = [_record("parent", seed, backbone, json.loads((root / "parent" / "results.json").read_text()),
                       parent_seconds, {}, cut=cut)]
    new = {kind: root / "data" / f"new.{kind}" for kind in ("inter", "item", "user")}
    updates = {}
    for mode in ("llm", "random"):
        for scale in args.scales:
            method = update_method(mode, scale)
            res = update(parent, new["inter"], root / method, items=new["item"] if new["item"].is_file() else None,
                         users=new["user"] if new["user"].is_file() else None, epochs=args.update_epochs,
                         sets=[f"min_epochs={args.update_epochs}"] if args.fixed_budget else [], new_items=mode,
                         new_row_scale=scale, overwrite=True, progress=args.progress)
            updates[method] = res
            records.append(_record(method, seed, backbone, json.loads((root / method / "results.json").read_text()),
                                   res.report.seconds["total"], {}, update=dataclasses.asdict(res.report)))
    first = next(iter(updates.values()))
    merged, merged_cfg = first.dataset, first.result.config
    prepared = prepare(merged)
    groups = user_groups(merged, parent.dataset)
    # fold-in only: an LLM update's starting point, evaluated without training
    new_dense = np.flatnonzero(old_positions(parent.dataset.item_ids, merged.item_ids) < 0)
    emb, _ = new_item_embeddings(parent, merged, new_dense)
    model = get_model(merged_cfg)
    ctx = prepared.contexts(model.context, merged_cfg)
    for scale in args.scales:
        params, _ = carry_params(parent, merged, model, run_keys(seed).init, item_rows(parent.init, emb), "llm", scale)
        fold = {"model": backbone, "config": merged_cfg.to_dict(), "dataset": dataset_fingerprint(merged),
                "best_epoch": -1, "stopped_epoch": -1,
                "valid": evaluate_params(model, params, ctx["valid"], "valid", merged_cfg, prepared),
                "test": evaluate_params(model, params, ctx["test"], "test", merged_cfg, prepared)}
        spent = updates[update_method("llm", scale)].report.seconds  # what an update without training costs
        records.append(_record("fold-in" + ("" if scale == "init" else f"-{scale}"), seed, backbone, fold,
                               spent["total"] - spent["fit"],
                               group_metrics(model, params, merged, prepared, merged_cfg, groups)))
    t0 = time.perf_counter()
    scratch_cfg = config.replace(dataset=merged_cfg.dataset)
    train_run(scratch_cfg, out_dir=root / "scratch", overwrite=True, progress=args.progress)
    records.append(_record("scratch", seed, backbone, json.loads((root / "scratch" / "results.json").read_text()),
                           time.perf_counter() - t0, {}))
    fps = {r["key"]["method"]: r["dataset"] for r in records if r["key"]["method"] != "parent"}
    if len({json.dumps(fp, sort_keys=True) for fp in fps.values()}) != 1:
        raise RuntimeError(f"the compared runs did not share one dataset: {fps}")
    for rec in records:
        m = rec["key"]["method"]
        if m in updates or m == "scratch":
            run = load_run(root / m, dataset=merged)
            rec["extra"].update(group_metrics(run.model, run.params, merged, prepared, run.config, groups))
    for rec in records:
        rec["data"] = {"groups": {k: int(v.size) for k, v in groups.items()}, **cut}
    return records


# ---------------------------------------------------------------------------- report
def summarize(records) -> list[dict]:
    rows = report.aggregate(records, by=("backbone", "method"), extras=EXTRAS)
    for r in rows:
        scratch = next((s for s in rows if s["backbone"] == r["backbone"] and s["method"] == "scratch"), None)
        r["ndcg@10_vs_scratch"] = (report.relative_gain(r["ndcg@10_mean"], scratch["ndcg@10_mean"])
                                   if scratch is not None and r["method"] not in ("parent", "scratch") else float("nan"))
        r["time_vs_scratch"] = (r["seconds_total_mean"] / scratch["seconds_total_mean"]
                                if scratch is not None and r["method"] != "parent" else float("nan"))
        epochs = [(c["best_epoch"], c["stopped_epoch"] + 1) for c in records
                  if c["key"]["method"] == r["method"] and c["key"]["backbone"] == r["backbone"]]
        r["epochs"] = " ".join(f"{b}/{n}" for b, n in epochs)
    return rows


def table_text(rows, title: str) -> str:
    headers = ["backbone", "run", "N@10 (all)", "R@10 (all)", "N@10 new-item users", "N@10 fresh", "N@10 old",
               "vs scratch", "epochs best/run", "seconds", "time vs scratch"]
    body = []
    for r in rows:
        body.append([report.backbone_label(r["backbone"]), label(r["method"]),
                     report.fmt_mean_std(r["ndcg@10_mean"], r["ndcg@10_std"]),
                     report.fmt_mean_std(r["recall@10_mean"], r["recall@10_std"]),
                     report.fmt(r.get("ndcg@10_new_item_mean")), report.fmt(r.get("ndcg@10_fresh_mean")),
                     report.fmt(r.get("ndcg@10_old_mean")), report.fmt_gain(r["ndcg@10_vs_scratch"]), r["epochs"],
                     f"{r['seconds_total_mean']:.0f}",
                     "-" if not np.isfinite(r["time_vs_scratch"]) else f"{r['time_vs_scratch']:.2f}x"])
    return report.format_table(headers, body, title=title, align_left=2)


def plot(rows, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    rows = [r for r in rows if r["method"] != "parent"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    groups = ["all", "new_item", "fresh", "old"]
    series = {}
    for m in methods:
        r = next(x for x in rows if x["method"] == m)
        series[label(m)] = ([r["ndcg@10_mean"] if g == "all" else r.get(f"ndcg@10_{g}_mean", float("nan"))
                              for g in groups],
                             [r["ndcg@10_std"] if g == "all" else r.get(f"ndcg@10_{g}_std", float("nan"))
                              for g in groups])
    plots.grouped_bars(axes[0], ["all users", "new-item test", "fresh test", "old test"], series, "NDCG@10 (test)")
    times = {label(m): ([next(x for x in rows if x["method"] == m)["seconds_total_mean"]],
                         [next(x for x in rows if x["method"] == m)["seconds_total_std"]]) for m in methods}
    plots.grouped_bars(axes[1], ["wall time"], times, "seconds")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, backbones = cli.start(args)
    if args.update_epochs < 1:
        raise ConfigError(f"--update-epochs {args.update_epochs}: expected an integer >= 1")
    args.scales = cli.parse_list(args.scales)
    if not args.scales or any(x not in SCALES for x in args.scales):
        raise ConfigError(f"--scales: expected a subset of {', '.join(SCALES)}")
    base = cli.base_config(args, init=args.init, split="loo_time")
    source = cli.resolve_text_source(args, base)
    base = base.replace(**source.config_fields())
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(backbones),
                                                                 f"new{args.new_items:g}-{args.new_time:g}"))
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    meta = {"backbones": backbones, "seeds": seeds, "new_items": args.new_items, "new_time": args.new_time,
            "update_epochs": args.update_epochs, "text_embeddings": source.description,
            "test": "loo_time test of the merged (old + new) data, identical for every run but the parent"}
    records: list[dict] = []
    for seed in seeds:
        for backbone in backbones:
            records += run_seed(base, backbone, seed, args, out)
            report.write_results(out, EXPERIMENT, command, base, records, meta=meta, complete=False)
    rows = summarize(records)
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = cli.dataset_label(base.dataset)
    c = records[0]["data"]
    title = (f"Long-short update: {name}, {args.new_items:.0%} of items held out + last {args.new_time:.0%} of "
             f"interactions in time ({c['new_interactions']:,} of {c['interactions']:,}); init {args.init} "
             f"({source.description}); test = loo_time test of all data (same for every row but the parent), "
             f"N@10 {report.over_seeds(seeds)}; updates run <= {args.update_epochs} epochs"
             f"\nuser groups (seed {seeds[0]}): {c['groups']}")
    text = table_text(rows, title)
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows),
             report.write_csv(out / "cells.csv", report.cell_rows(records)),
             plot(rows, out / f"{EXPERIMENT}.png", f"{name}: long-short update vs retraining"),
             out / "results.json"]
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
