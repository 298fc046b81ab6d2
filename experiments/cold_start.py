"""LLMInit Figure 3: cold start. Remove half of each user's training interactions (keep
at least one; which ones is drawn with the run's seed), keep the validation and test
items and the id maps as they are, and compare the backbone's own random init (``none``)
with LLM init (``variance``), next to the same runs on the full training data.

Conditions (``--conditions``): ``full`` (the split as is); ``cold`` (reduced training
data; ranking still excludes *all* of the user's original training items, so validation
and test rank the same candidates against the same held-out item as ``full``); and
``cold-unmasked`` (reduced, and the removed interactions are not excluded from ranking:
the model may recommend them and they count as misses).

A user with n training interactions keeps ``max(1, ceil(keep_fraction * n))`` of them
(``--keep-fraction``, default 0.5: ceil(n/2)); the reduced ``Dataset`` is
``dataclasses.replace(dataset, train=dataset.train.take(kept))``, and what was removed
(interactions, users affected, items left without training interactions) is reported,
printed and stored in results.json.

    python -m experiments.cold_start --backbones lightgcn --seeds 2020

Writes ``cold_start.csv``, ``cells.csv``, ``cold_start.png``, ``table.txt`` and
``results.json`` (with each condition's reduction report).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from experiments import cli, grid, plots, report
from jaxrec.config import ConfigError
from jaxrec.init import EmbeddingSource

log = logging.getLogger("experiments")

EXPERIMENT = "cold_start"
CONDITIONS = ("full", "cold", "cold-unmasked")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p, backbones="lightgcn", seeds="2020")
    g = p.add_argument_group(EXPERIMENT)
    g.add_argument("--inits", default="none,variance", help="initializations compared (default none,variance)")
    g.add_argument("--conditions", default="full,cold",
                   help="full (as split), cold (reduced; ranking excludes the original training items), "
                        "cold-unmasked (reduced; removed items not excluded); default full,cold")
    g.add_argument("--keep-fraction", type=float, default=0.5,
                   help="share of each user's training interactions kept in 'cold' (default 0.5; at least one)")
    return p


def reduce_training(dataset, seed: int, keep_fraction: float = 0.5):
    """Keep ``max(1, ceil(keep_fraction * n_u))`` random training interactions of every user
    (drawn with ``np.random.default_rng(seed)``) -> (reduced Dataset, report dict).

    valid, test, id maps and features are unchanged; the kept rows keep their order.
    """
    if not 0 < keep_fraction <= 1:
        raise ConfigError(f"--keep-fraction {keep_fraction}: expected a number in (0, 1]")
    from jaxrec.data import FilterReport

    tr = dataset.train
    n = len(tr)
    counts = np.bincount(tr.user, minlength=tr.num_users)
    keep_n = np.where(counts > 0, np.maximum(1, np.ceil(keep_fraction * counts - 1e-9)), 0).astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    perm = perm[np.argsort(tr.user[perm], kind="stable")]  # grouped by user, random order within a user
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[tr.user[perm]]
    kept = np.zeros(n, dtype=bool)
    kept[perm[rank < keep_n[tr.user[perm]]]] = True
    train = tr.take(kept)
    item_before = np.bincount(tr.item, minlength=tr.num_items)
    item_after = np.bincount(train.item, minlength=tr.num_items)
    report = {
        "keep_fraction": keep_fraction,
        "seed": int(seed),
        "train_before": int(n),
        "train_after": int(len(train)),
        "removed_interactions": int(n - len(train)),
        "users": int((counts > 0).sum()),
        "users_reduced": int(((counts - keep_n) > 0).sum()),
        "users_with_one_left": int((keep_n == 1).sum()),
        "items_with_train_before": int((item_before > 0).sum()),
        "items_with_train_after": int((item_after > 0).sum()),
        "items_left_without_train": int(((item_before > 0) & (item_after == 0)).sum()),
    }
    detail = (f"cold start: kept max(1, ceil({keep_fraction} * n)) of each user's training interactions "
              f"(seed {seed}); {report['items_left_without_train']} items left without training interactions")
    rep = FilterReport("cold_start", report["removed_interactions"], 0, 0, detail)
    reduced = dataclasses.replace(dataset, train=train, reports=list(dataset.reports) + [rep])
    return reduced, report


class ColdStartData(grid.DatasetCache):
    """Datasets per cell: the split as is (``full``), or its reduced training data (``cold*``)
    whose ranking excludes the original training items too when ``mask_removed``."""

    def __init__(self, fixed_split_seed: int | None, keep_fraction: float):
        super().__init__(fixed_split_seed, transform=self._reduce)
        self.keep_fraction = keep_fraction
        self._origin: dict[int, tuple] = {}  # id(reduced) -> (reduced, full, mask_removed)

    def _reduce(self, dataset, cell: grid.Cell):
        if not cell.data.get("condition", "full").startswith("cold"):
            return dataset, {}
        reduced, report = reduce_training(dataset, cell.config.seed, self.keep_fraction)
        self._origin[id(reduced)] = (reduced, dataset, bool(cell.data.get("mask_removed")))
        log.info("cold start (seed %d): removed %d of %d training interactions; %d users reduced; "
                   "%d items left without training interactions", cell.config.seed, report["removed_interactions"],
                   report["train_before"], report["users_reduced"], report["items_left_without_train"])
        return reduced, {"reduction": report}

    def prepared(self, dataset):
        origin = self._origin.get(id(dataset))
        if origin is not None and origin[2] and id(dataset) not in self._prepared:
            from jaxrec.data import exclusion_pairs
            from jaxrec.train import prepare

            full = origin[1]
            p = prepare(dataset, exclude={s: exclusion_pairs(full, s) for s in ("valid", "test")})
            self._prepared[id(dataset)] = (dataset, p)
        return super().prepared(dataset)


def build_cells(base, backbones, inits, conditions, seeds, source: EmbeddingSource, keep_fraction: float,
                sets=()):
    cells = []
    for seed in seeds:
        for backbone in backbones:
            for cond in conditions:
                for init in inits:
                    fields = source.config_fields() if init != "none" else {"embeddings": None, "encoder": None}
                    cfg = cli.for_model(base, backbone, sets, init=init, seed=seed, **fields)
                    data = {"condition": cond}
                    if cond != "full":
                        data.update(keep_fraction=keep_fraction, mask_removed=cond == "cold")
                    cells.append(grid.Cell({"backbone": backbone, "condition": cond, "init": init, "seed": seed}, cfg,
                                        data))
    return cells


def summarize(records):
    rows = report.aggregate(records, by=("backbone", "condition", "init"))
    report.add_gains(rows, lambda r: {"backbone": r["backbone"], "condition": r["condition"], "init": "none"},
                     records=records, by=("backbone", "condition", "init"))
    # how much of the full-data score each cold row keeps
    for r in rows:
        full = next((f for f in rows if f["backbone"] == r["backbone"] and f["init"] == r["init"]
                     and f["condition"] == "full"), None)
        r["ndcg@10_vs_full"] = (report.relative_gain(r["ndcg@10_mean"], full["ndcg@10_mean"])
                                if full is not None and r["condition"] != "full" else float("nan"))
        r["model"] = report.row_label(r["backbone"], r["init"])
    return rows


def table_text(rows, title: str) -> str:
    headers = ["model", "training data", "R@10", "N@10", "gain R@10", "gain N@10", report.SIGNIFICANCE_HEADER,
               "N@10 vs full data"]
    body = [[r["model"], r["condition"], report.fmt_mean_std(r["recall@10_mean"], r["recall@10_std"]),
             report.fmt_mean_std(r["ndcg@10_mean"], r["ndcg@10_std"]), report.fmt_gain(r["recall@10_gain"]),
             report.fmt_gain(r["ndcg@10_gain"]), report.fmt_significance(r), report.fmt_gain(r["ndcg@10_vs_full"])]
            for r in rows]
    return report.format_table(headers, body, title=title, align_left=2)


def reduction_text(records) -> str:
    seen, lines = set(), []
    for rec in records:
        rep = rec.get("data", {}).get("reduction")
        if rep and rep["seed"] not in seen:
            seen.add(rep["seed"])
            lines.append(f"seed {rep['seed']}: training interactions {rep['train_before']:,} -> {rep['train_after']:,} "
                         f"(removed {rep['removed_interactions']:,}); "
                         f"{rep['users_reduced']:,} of {rep['users']:,} users "
                         f"reduced, {rep['users_with_one_left']:,} keep one; items with training interactions "
                         f"{rep['items_with_train_before']:,} -> {rep['items_with_train_after']:,}")
    return "\n".join(lines)


def plot(rows, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    groups = list(dict.fromkeys((r["backbone"], r["condition"]) for r in rows))
    labels = [f"{report.backbone_label(b)}\n{c} data" for b, c in groups]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4))
    for ax, m in zip(axes, report.METRICS):
        series = plots.metric_series(rows, groups, lambda r: (r["backbone"], r["condition"]), lambda r: r["init"],
                                 lambda init: report.init_label(init) or "none (random)", m)
        plots.grouped_bars(ax, labels, series, report.METRIC_LABELS[m] + " (test)")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, backbones = cli.start(args)
    inits = cli.check_inits(cli.parse_list(args.inits))
    conditions = cli.parse_list(args.conditions)
    if not conditions or any(c not in CONDITIONS for c in conditions):
        raise ConfigError(f"--conditions {args.conditions!r}: expected a subset of {', '.join(CONDITIONS)}")
    if not 0 < args.keep_fraction <= 1:
        raise ConfigError(f"--keep-fraction {args.keep_fraction}: expected a number in (0, 1]")
    base = cli.base_config(args)
    llm = [i for i in inits if i != "none"]
    source = cli.resolve_text_source(args, base) if llm else EmbeddingSource(description="(no LLM init rows)")
    datasets = ColdStartData(args.split_seed, args.keep_fraction)
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(backbones),
                                                                 f"keep{args.keep_fraction:g}"))
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    meta = {"backbones": backbones, "inits": inits, "conditions": conditions, "seeds": seeds,
            "keep_fraction": args.keep_fraction, "split_seed": args.split_seed}
    if llm:
        meta["text_embeddings"] = grid.prepare_text_embeddings(datasets.first(base, seeds), source)
    cells = build_cells(base, backbones, inits, conditions, seeds, source, args.keep_fraction, args.set)
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta)
    rows = summarize(records)
    meta["reductions"] = [r["data"]["reduction"] for r in records if "reduction" in r.get("data", {})]
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = cli.dataset_label(base.dataset)
    title = (f"LLMInit Figure 3 (cold start): {name}, K={base.embedding_size}, test metrics, "
             f"{report.over_seeds(seeds)}; 'cold' keeps max(1, ceil({args.keep_fraction:g} n)) of each user's n "
             f"training interactions (ranking still excludes all of them; 'cold-unmasked': only the kept ones)"
             f"\ngain = vs the backbone's own init on the same data; {report.SIGNIFICANCE_NOTE}"
             + (f"; text embeddings: {source.description}" if llm else ""))
    text = table_text(rows, title)
    red = reduction_text(records)
    if red:
        text += "\n\nremoved from the training data of 'cold' runs:\n" + red
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows,
                         ["model", "backbone", "condition", "init", "n", "seeds", "recall@10_mean", "recall@10_std",
                          "ndcg@10_mean", "ndcg@10_std", "recall@10_gain", "ndcg@10_gain", "ndcg@10_vs_full"]),
             report.write_csv(out / "cells.csv", report.cell_rows(records)),
             plot(rows, out / f"{EXPERIMENT}.png", f"{name}: cold start (keep {args.keep_fraction:g} of each "
                                                   f"user's training interactions)"),
             out / "results.json"]
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
