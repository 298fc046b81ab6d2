"""LLMInit Table 1: backbones x initialization strategies, Recall@10 / NDCG@10 and gain.

Rows are ``<backbone>`` (its own random init, ``none``) and ``<backbone> + Rand / Uni /
Var`` (LLM item embeddings reduced to K dims by random, uniform or variance selection;
users = mean of their training items), columns R@10 and N@10 (mean ± sample std over
seeds) and the relative gain of the mean over the backbone's ``none`` row. On one of the
paper's datasets (Beauty, Toys, Tools, Office; matched case-insensitively in the dataset
name) the paper's numbers are printed beside.

    python -m experiments.llminit_table --dataset ml-100k
    python -m experiments.llminit_table --backbones lightgcn,sgl,sgcl --seeds 2020,2021,2022
    python -m experiments.llminit_table --scales none,match_random   # effect of init_scale

Text embeddings: ``--embeddings auto`` (default) uses ``<data folder>/<dataset>.all-mpnet-base-v2.npy``
when present (the MPNet reference file), else ``--encoder minilm``.
Writes ``llminit_table.csv``, ``cells.csv``, ``llminit_table.png``, ``table.txt`` and
``results.json`` into ``checkpoints/llminit_table/<run-name>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments import cli, grid, plots, report
from jaxrec.config import ConfigError
from jaxrec.init import EmbeddingSource

EXPERIMENT = "llminit_table"
DEFAULT_INITS = "none,random,uniform,variance"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p, backbones="lightgcn", seeds="2020")
    g = p.add_argument_group(EXPERIMENT)
    g.add_argument("--inits", default=DEFAULT_INITS,
                   help=f"initializations, rows per backbone (default {DEFAULT_INITS}; also full, pca)")
    g.add_argument("--init-scale", default=None, choices=("none", "match_random", "standardize", "minmax"),
                   help="config init_scale for the LLM-initialized rows (default none, as in the paper)")
    g.add_argument("--scales", default=None,
                   help="grid over init_scale for the LLM rows, e.g. none,match_random (overrides --init-scale)")
    return p


def build_cells(base, backbones, inits, scales, seeds, source: EmbeddingSource, sets=()) -> list[grid.Cell]:
    cells = []
    for seed in seeds:
        for backbone in backbones:
            for init in inits:
                for scale in (["none"] if init == "none" else scales):
                    fields = source.config_fields() if init != "none" else {"embeddings": None, "encoder": None}
                    config = cli.for_model(base, backbone, sets, init=init, init_scale=scale, seed=seed, **fields)
                    cells.append(grid.Cell({"backbone": backbone, "init": init, "scale": scale, "seed": seed}, config))
    return cells


def summarize(records, paper_key: str | None) -> list[dict]:
    rows = report.aggregate(records, by=("backbone", "init", "scale"))
    report.add_gains(rows, lambda r: {"backbone": r["backbone"], "init": "none"}, records=records,
                     by=("backbone", "init", "scale"))
    for r in rows:
        r["model"] = report.row_label(r["backbone"], r["init"], r["scale"])
        if paper_key is not None:
            paper = report.PAPER_TABLE1.get(r["backbone"], {}).get(r["init"], {}).get(paper_key)
            paper = paper if r["scale"] == "none" else None
            r["paper_recall@10"], r["paper_ndcg@10"] = paper if paper else (None, None)
            base = report.PAPER_TABLE1.get(r["backbone"], {}).get("none", {}).get(paper_key)
            r["paper_ndcg@10_gain"] = (report.relative_gain(paper[1], base[1]) if paper and base and r["init"] != "none"
                                       else None)
    return rows


def table_text(rows, title: str, paper_key: str | None) -> str:
    headers = ["model", "R@10", "N@10", "gain R@10", "gain N@10", report.SIGNIFICANCE_HEADER]
    if paper_key:
        headers += [f"paper R@10 ({paper_key})", "paper N@10", "paper gain N@10"]
    body = []
    for r in rows:
        line = [r["model"], report.fmt_mean_std(r["recall@10_mean"], r["recall@10_std"]),
                report.fmt_mean_std(r["ndcg@10_mean"], r["ndcg@10_std"]),
                report.fmt_gain(r["recall@10_gain"]), report.fmt_gain(r["ndcg@10_gain"]), report.fmt_significance(r)]
        if paper_key:
            line += [report.fmt(r.get("paper_recall@10")), report.fmt(r.get("paper_ndcg@10")),
                     report.fmt_gain(r.get("paper_ndcg@10_gain"))]
        body.append(line)
    return report.format_table(headers, body, title=title)


def plot(rows, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4))
    for ax, m in zip(axes, report.METRICS):
        series = plots.metric_series(rows, backbones, lambda r: r["backbone"], lambda r: (r["init"], r["scale"]),
                                 lambda key: report.init_label(*key) or "none (random)", m)
        plots.grouped_bars(ax, [report.backbone_label(b) for b in backbones], series, report.METRIC_LABELS[m] + " (test)")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, backbones = cli.start(args)
    inits = cli.check_inits(cli.parse_list(args.inits))
    scales = cli.parse_list(args.scales) if args.scales else [args.init_scale or "none"]
    for s in scales:
        if s not in ("none", "match_random", "standardize", "minmax"):
            raise ConfigError(f"--scales: unknown {s!r}; expected none, match_random, standardize, minmax")
    base = cli.base_config(args)
    llm = [i for i in inits if i != "none"]
    source = cli.resolve_text_source(args, base) if llm else EmbeddingSource(description="(no LLM init rows)")
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(backbones),
                                                                 "" if scales == ["none"] else "+".join(scales)))
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    cells = build_cells(base, backbones, inits, scales, seeds, source, args.set)
    datasets = grid.DatasetCache(args.split_seed)
    meta = {"backbones": backbones, "inits": inits, "scales": scales, "seeds": seeds, "split_seed": args.split_seed}
    if llm:
        meta["text_embeddings"] = grid.prepare_text_embeddings(datasets.first(base, seeds), source)
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta)
    paper_key = report.paper_dataset(base.dataset)
    rows = summarize(records, paper_key)
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = cli.dataset_label(base.dataset)
    dim = meta.get("text_embeddings", {}).get("dim")
    title = (f"LLMInit Table 1 layout: {name}, K={base.embedding_size}, test metrics, "
             f"{report.over_seeds(seeds)}; gain = mean vs the backbone's own init\n{report.SIGNIFICANCE_NOTE}"
             + (f"\ntext embeddings: {source.description} (N={dim})" if llm else ""))
    text = table_text(rows, title, paper_key)
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows,
                         ["model", "backbone", "init", "scale", "n", "seeds", "recall@10_mean", "recall@10_std",
                          "ndcg@10_mean", "ndcg@10_std", "recall@10_gain", "ndcg@10_gain", "ndcg@10_p_t", "ndcg@10_p_w",
                          "ndcg@10_users"]
                         + (["paper_recall@10", "paper_ndcg@10", "paper_ndcg@10_gain"] if paper_key else [])),
             report.write_csv(out / "cells.csv", report.cell_rows(records)),
             plot(rows, out / f"{EXPERIMENT}.png", f"{name}: test metrics by initialization (K={base.embedding_size})"),
             out / "results.json"]
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
