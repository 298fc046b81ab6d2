"""LLMInit Figure 1: test metrics vs embedding size K, random vs LLM initialization, and
how much of each learned item table is actually used (embedding collapse).

For each K in ``--dims`` (default 32, 64, 128, 256, 512, 768) the backbone (default
LightGCN) trains from its own random init (``none``) and from the LLM item embeddings:
``--select`` (default variance) selection of K of the encoder's N dims for K < N, all N
dims (``full``) for K = N; K > N has no LLM row (skipped, reported).

Collapse measures of every trained model's learned item embedding table (the layer-0
parameters ``params["item_embedding"]``, [items, K], not centered): its singular values,
the effective rank ``exp(H(s / sum s))`` (Roy & Vetterli; K when all directions are used
equally, 1 when collapsed to one) and the information abundance ``sum s / max s``; the
effective rank of the propagated item embeddings and of the initial table too.

    python -m experiments.embedding_collapse --dims 32,64,128,256,512,768 --seeds 2020

Writes ``embedding_collapse.csv``, ``cells.csv``, ``metrics_vs_k.png``, ``collapse.png``,
``table.txt`` and ``results.json`` (with each cell's singular values).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from experiments import cli, grid, plots, report
from jaxrec.analysis import collapse
from jaxrec.config import ConfigError
from jaxrec.init import EmbeddingSource

log = logging.getLogger("experiments")

EXPERIMENT = "embedding_collapse"
DEFAULT_DIMS = "32,64,128,256,512,768"
EXTRAS = ("erank_item", "erank_item_final", "erank_item_init", "abundance_item")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p, backbones="lightgcn", seeds="2020")
    g = p.add_argument_group(EXPERIMENT)
    g.add_argument("--dims", default=DEFAULT_DIMS, help=f"embedding sizes K (default {DEFAULT_DIMS})")
    g.add_argument("--select", default="variance", choices=("variance", "uniform", "random", "pca"),
                   help="LLM init for K < N (default variance); K = N always uses all dims (full)")
    return p


def llm_init_for(dim: int, n: int, select: str) -> str | None:
    """The LLM init of an embedding size: ``select`` below N, ``full`` at N, None above."""
    if dim < n:
        return select
    return "full" if dim == n else None


def build_cells(base, backbones, dims, seeds, n: int, select: str, source: EmbeddingSource, sets=()):
    cells, skipped = [], []
    for seed in seeds:
        for backbone in backbones:
            for dim in dims:
                cfg = cli.for_model(base, backbone, sets, embedding_size=dim, seed=seed)
                cells.append(grid.Cell({"backbone": backbone, "dim": dim, "method": "random", "init": "none",
                                     "seed": seed}, cfg.replace(init="none", embeddings=None, encoder=None)))
                init = llm_init_for(dim, n, select)
                if init is None:
                    if seed == seeds[0]:
                        skipped.append(dim)
                    continue
                cells.append(grid.Cell({"backbone": backbone, "dim": dim, "method": "llm", "init": init, "seed": seed},
                                    cfg.replace(init=init, **source.config_fields())))
    return cells, sorted(set(skipped))


def collapse_measures(ctx: grid.CellContext) -> dict:
    import jax

    learned = np.asarray(ctx.result.params["item_embedding"])
    _, final = jax.jit(ctx.model.embed)(ctx.result.params, ctx.prepared.graph)
    sv = collapse.singular_values(learned)
    sv_final = collapse.singular_values(np.asarray(final))
    sv_init = collapse.singular_values(np.asarray(ctx.init_params["item_embedding"]))
    return {
        "erank_item": collapse.effective_rank(sv),
        "erank_item_final": collapse.effective_rank(sv_final),
        "erank_item_init": collapse.effective_rank(sv_init),
        "abundance_item": collapse.information_abundance(sv),
        "singular_values_item": [float(x) for x in sv],
        "singular_values_item_init": [float(x) for x in sv_init],
    }


def summarize(records):
    rows = report.aggregate(records, by=("backbone", "dim", "method", "init"), extras=EXTRAS)
    report.add_gains(rows, lambda r: {"backbone": r["backbone"], "dim": r["dim"], "method": "random"},
                     records=records, by=("backbone", "dim", "method", "init"))
    for r in rows:
        r["erank_item_ratio"] = r["erank_item_mean"] / r["dim"]
    return rows


def table_text(rows, title: str) -> str:
    headers = ["backbone", "K", "init", "R@10", "N@10", "gain N@10", report.SIGNIFICANCE_HEADER, "eff. rank",
               "eff. rank / K", "init eff. rank"]
    body = [[report.backbone_label(r["backbone"]), str(r["dim"]), r["init"] if r["method"] == "llm" else "none (random)",
             report.fmt_mean_std(r["recall@10_mean"], r["recall@10_std"]),
             report.fmt_mean_std(r["ndcg@10_mean"], r["ndcg@10_std"]),
             report.fmt_gain(r["ndcg@10_gain"]), report.fmt_significance(r),
             report.fmt_mean_std(r["erank_item_mean"], r["erank_item_std"], 1),
             report.fmt(r["erank_item_ratio"], 3), report.fmt(r["erank_item_init_mean"], 1)] for r in rows]
    return report.format_table(headers, body, title=title, align_left=3)


def _series(rows):
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["backbone"], r["method"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["dim"]) for k, v in out.items()}


def _label(backbone: str, method: str, several: bool) -> str:
    lab = "random init" if method == "random" else "LLM init"
    return f"{report.backbone_label(backbone)}, {lab}" if several else lab


def plot_metrics(rows, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    series = _series(rows)
    several = len({b for b, _ in series}) > 1
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.3))
    for ax, m in zip(axes, report.METRICS):
        for (backbone, method), rs in series.items():
            x = [r["dim"] for r in rs]
            y = [r[f"{m}_mean"] for r in rs]
            e = np.nan_to_num([r[f"{m}_std"] for r in rs], nan=0.0)
            ax.errorbar(x, y, yerr=e if np.any(e) else None, marker="o", ms=4, capsize=2,
                        ls="-" if method == "random" else "--", label=_label(backbone, method, several))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["dim"] for r in rows}))
        ax.set_xticklabels([str(d) for d in sorted({r["dim"] for r in rows})], fontsize=8)
        ax.set_xlabel("embedding size K")
        ax.set_ylabel(report.METRIC_LABELS[m] + " (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def plot_collapse(rows, records, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    series = _series(rows)
    several = len({b for b, _ in series}) > 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ax = axes[0]
    dims = sorted({r["dim"] for r in rows})
    ax.plot(dims, dims, color="0.7", lw=1, ls=":", label="K (all dims used)")
    for (backbone, method), rs in series.items():
        x = [r["dim"] for r in rs]
        line = ax.errorbar(x, [r["erank_item_mean"] for r in rs],
                           yerr=np.nan_to_num([r["erank_item_std"] for r in rs], nan=0.0), marker="o", ms=4,
                           capsize=2, ls="-" if method == "random" else "--",
                           label="learned, " + _label(backbone, method, several))
        ax.plot(x, [r["erank_item_init_mean"] for r in rs], marker="x", ms=4, lw=0.8, alpha=0.6,
                color=line[0].get_color(), ls=":", label="initial, " + _label(backbone, method, several))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(dims)
    ax.set_xticklabels([str(d) for d in dims], fontsize=8)
    ax.set_xlabel("embedding size K")
    ax.set_ylabel("effective rank of item table")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    # spectra of the first seed, one line per (K, method)
    ax = axes[1]
    first_seed = records[0]["key"]["seed"] if records else None
    cmap = plt.get_cmap("viridis")
    for rec in records:
        k = rec["key"]
        if k["seed"] != first_seed or k["backbone"] != records[0]["key"]["backbone"]:
            continue
        sv = np.asarray(rec["extra"]["singular_values_item"])
        colour = cmap(dims.index(k["dim"]) / max(len(dims) - 1, 1))
        ax.plot(np.arange(1, len(sv) + 1), sv / sv[0], color=colour, lw=1,
                ls="-" if k["method"] == "random" else "--",
                label=f"K={k['dim']}" if k["method"] == "random" else None)
    ax.plot([], [], color="k", ls="-", label="random init")
    ax.plot([], [], color="k", ls="--", label="LLM init")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value s_i / s_1")
    ax.set_title(f"spectrum of the learned item table (seed {first_seed})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, backbones = cli.start(args)
    try:
        dims = sorted(set(cli.parse_list(args.dims, int)))
    except ValueError:
        raise ConfigError(f"--dims {args.dims!r}: expected comma-separated integers") from None
    if not dims or min(dims) < 1:
        raise ConfigError(f"--dims {args.dims!r}: expected integers >= 1")
    base = cli.base_config(args)
    source = cli.resolve_text_source(args, base)
    datasets = grid.DatasetCache(args.split_seed)
    text = grid.prepare_text_embeddings(datasets.first(base, seeds), source)
    n = int(text["dim"])
    cells, skipped = build_cells(base, backbones, dims, seeds, n, args.select, source, args.set)
    if skipped:
        log.warning("no LLM init for K=%s > N=%d encoder dims (random init only)", skipped, n)
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(backbones),
                                                                 "K" + "_".join(map(str, dims))))
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    meta = {"backbones": backbones, "dims": dims, "seeds": seeds, "select": args.select, "encoder_dims": n,
            "skipped_llm_dims": skipped, "text_embeddings": text, "split_seed": args.split_seed,
            "collapse_table": "params['item_embedding'] after training (best epoch), not centered"}
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta, on_result=collapse_measures)
    rows = summarize(records)
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = cli.dataset_label(base.dataset)
    llm_desc = f"{args.select} for K<{n}, full at K={n}"
    title = (f"LLMInit Figure 1: {name}, test metrics and effective rank of the learned item table vs K; "
             f"{report.over_seeds(seeds)}\nLLM init: {llm_desc} "
             f"({source.description}); gain = LLM vs random init at the same K\n{report.SIGNIFICANCE_NOTE}"
             + (f"; no LLM init for K={skipped} > N" if skipped else ""))
    table = table_text(rows, title)
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows,
                         ["backbone", "dim", "method", "init", "n", "seeds", "recall@10_mean", "recall@10_std",
                          "ndcg@10_mean", "ndcg@10_std", "recall@10_gain", "ndcg@10_gain",
                          *[f"{e}_{s}" for e in EXTRAS for s in ("mean", "std")], "erank_item_ratio"]),
             report.write_csv(out / "cells.csv", [dict(row, **{e: rec["extra"][e] for e in EXTRAS})
                                             for row, rec in zip(report.cell_rows(records), records)]),
             plot_metrics(rows, out / "metrics_vs_k.png", f"{name}: test metrics vs embedding size ({llm_desc})"),
             plot_collapse(rows, records, out / "collapse.png", f"{name}: collapse of the learned item embeddings"),
             out / "results.json"]
    report.finish(out, table, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
