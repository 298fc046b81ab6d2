"""TF-LLMER: do item normalization and Rec-PCA bring LLM initialization to or above random init?

Rows per backbone are initialization variants ``<init>[@<lambda>][+<norm>]``: ``none`` (the
backbone's own random init), LLMInit's ``variance`` selection, the same with the item rows
normalized (``+unit``: norm 1; ``+typical``: the RMS row norm of the backbone's random-init
item table; ``init_norm``), ``pca`` and ``recpca`` at Laplacian penalties ``@lambda``
(``recpca_lambda``; the co-occurrence graph of the training interactions only). Users are the
mean of their training items' (normalized) rows, as in LLMInit. DESIGN.md 2.3 and 7.

Three tables: test R@10 / N@10 (mean ± sample std over seeds) with the relative gain over
the backbone's random init; the measures of the optimization barrier at init
(``jaxrec.analysis.barrier``: item / user row norms against the backbone's random init, the
spread (cv) of item norms, the anisotropy of the item rows, their roughness on the
co-occurrence graph, the largest Hessian eigenvalue of the training loss on one fixed batch,
the same batch for every variant of a seed); and per backbone which variants reach random
init's N@10. Figures: the metrics as bars (``tf_llmer.png``) and, per backbone, training loss
and validation NDCG@10 per epoch of every variant (first seed; ``tf_llmer_curves.png``).

    python -m experiments.tf_llmer --dataset ml-100k            # 4 backbones x 9 variants x 3 seeds
    python -m experiments.tf_llmer --dataset ml-100k --backbones lightgcn,sgcl --seeds 2020 --epochs 200 \\
        --resume --reuse checkpoints/tf_llmer/lightgcn3
    python -m experiments.tf_llmer --variants none,variance,variance+typical,recpca@1+typical

SASRec rows train under SASRec's own protocol (leave-one-out by time, its item table K = d = 50
initialized, early stopping on the candidate lists' NDCG@10) and report the full-ranking R@10 /
N@10 it computes beside (``full_*``): compare them within SASRec, not with the graph backbones.
SGL from an LLM init dips for about ten epochs before it recovers (experiments/README.md), so
early stopping waits ``--min-epochs`` (default ``sgl=40``). Text embeddings as in
``llminit_table`` (``--embeddings auto``: the MPNet reference file when present). Writes
``tf_llmer.csv``, ``cells.csv``, ``tf_llmer.png``, ``tf_llmer_curves.png``, ``table.txt`` and
``results.json`` into ``checkpoints/tf_llmer/<run-name>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from experiments import cli, grid, plots, report
from jaxrec.config import ConfigError, model_defaults
from jaxrec.init import EmbeddingSource
from jaxrec.init.apply import check_embedding_size
from jaxrec.registry import INIT_NORMS, INITIALIZERS, MODELS

log = logging.getLogger("experiments")

EXPERIMENT = "tf_llmer"
# Rec-PCA where its lambda matters: the probe (experiments/README.md) shows PCA's span up to ~0.98, turned at 1,
# degenerate past ~1.02
DEFAULT_VARIANTS = ("none,variance,variance+unit,variance+typical,pca,recpca@0.99,recpca@1,recpca@1.01,"
                    "recpca@1+typical")
DEFAULT_MIN_EPOCHS = "sgl=40"
DEFAULT_PROBE = "0,0.5,0.9,0.95,0.98,1,1.02,1.05,1.1,1.5"
#: Numbers measured at init per cell (``barrier_measures``), aggregated over seeds like the metrics.
EXTRAS = ("item_norm_ratio", "item_norm_cv", "user_norm_ratio", "item_anisotropy", "item_roughness",
          "hessian_top", "hessian_min_ritz", "initial_loss")
NORM_LABELS = {"unit": "unit", "typical": "typical"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One initialization row: ``init`` (a registered initializer), ``norm`` (``init_norm``),
    ``lam`` (``recpca_lambda``, Rec-PCA only)."""

    init: str
    norm: str = "none"
    lam: float | None = None

    @property
    def name(self) -> str:
        s = self.init + ("" if self.lam is None else f"@{self.lam:g}")
        return s + ("" if self.norm == "none" else f"+{self.norm}")

    @property
    def label(self) -> str:
        if self.init == "none":
            return ""
        s = report.INIT_LABELS.get(self.init, self.init)
        if self.lam is not None:
            s += f" λ={self.lam:g}"
        return s + ("" if self.norm == "none" else f" + {NORM_LABELS.get(self.norm, self.norm)}")

    def config_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"init": self.init, "init_norm": self.norm}
        if self.lam is not None:
            fields["recpca_lambda"] = float(self.lam)
        return fields


def parse_variant(text: str) -> Variant:
    """``<init>[@<lambda>][+<norm>]`` -> ``Variant``; ``ConfigError`` naming ``--variants``."""
    spec = text.strip()
    head, _, norm = spec.partition("+")
    init, at, lam_text = head.partition("@")
    init, norm = init.strip(), (norm.strip() or "none")
    if init not in INITIALIZERS:
        raise ConfigError(f"--variants {spec!r}: unknown initializer {init!r}; expected one of "
                          f"{', '.join(INITIALIZERS.names())}")
    if norm not in INIT_NORMS:
        raise ConfigError(f"--variants {spec!r}: unknown normalization {norm!r}; expected one of "
                          f"{', '.join(INIT_NORMS.names())}")
    if init == "none" and norm != "none":
        raise ConfigError(f"--variants {spec!r}: 'none' (random init) has no LLM rows to normalize")
    lam = None
    if at:
        if init != "recpca":
            raise ConfigError(f"--variants {spec!r}: a lambda (@) applies to recpca only")
        try:
            lam = float(lam_text)
        except ValueError:
            raise ConfigError(f"--variants {spec!r}: lambda {lam_text!r} is not a number") from None
        if not (math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"--variants {spec!r}: lambda {lam_text!r}: expected a finite number >= 0")
    return Variant(init, norm, lam)


def parse_variants(text: str) -> list[Variant]:
    variants = [parse_variant(p) for p in cli.parse_list(text)]
    if not variants:
        raise ConfigError("--variants: expected at least one variant")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"--variants {text!r}: variants repeat")
    return variants


def parse_per_backbone(items: Sequence[str], option: str, cast) -> dict[str, Any]:
    """``["sgl=40", ...]`` (or one comma-free value per item) -> ``{backbone: cast(value)}``."""
    out: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ConfigError(f"{option} {item!r}: expected BACKBONE=VALUE")
        try:
            out[name.strip()] = cast(value.strip())
        except (ValueError, ConfigError) as e:
            raise ConfigError(f"{option} {item!r}: {e}") from None
    return out


def _min_epochs(text: str) -> dict[str, int]:
    def cast(v: str) -> int:
        n = int(v)
        if n < 0:
            raise ValueError(f"expected an integer >= 0, got {n}")
        return n

    return parse_per_backbone(cli.parse_list(text), "--min-epochs", cast)


def build_parser() -> argparse.ArgumentParser:
    p, g = cli.experiment_parser(EXPERIMENT, __doc__, backbones="lightgcn,sgl,sgcl,sasrec", seeds="2020,2021,2022")
    g.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"initialization rows <init>[@<recpca lambda>][+<init_norm>] (default {DEFAULT_VARIANTS})")
    g.add_argument("--seeds-for", action="append", default=[], metavar="BACKBONE=SEEDS",
                   help="seeds of one backbone instead of --seeds (repeatable), e.g. --seeds-for sgl=2020")
    g.add_argument("--min-epochs", default=DEFAULT_MIN_EPOCHS, metavar="BACKBONE=N,...",
                   help=f"per-backbone config min_epochs, no early stop before (default {DEFAULT_MIN_EPOCHS})")
    g.add_argument("--curvature-iters", type=int, default=60,
                   help="Lanczos Hessian-vector products for the curvature at init (default 60; 0: skip)")
    g.add_argument("--lambda-probe", default=DEFAULT_PROBE,
                   help="Rec-PCA lambdas whose item tables are compared with PCA's on the first split, without "
                        f"training (default {DEFAULT_PROBE}; 'none': skip)")
    return p


def recpca_probe(dataset, emb, k: int, lambdas: Sequence[float]) -> list[dict]:
    """What Rec-PCA's lambda does to the item table [I, k] on ``dataset``'s training
    interactions, no training: per lambda the subspace overlap with PCA's (mean squared
    cosine of the principal angles, ``||W_pca^T W||_F^2 / k``: 1 = the same span), the top-k
    eigenvalues of X^T (I - lambda L) X that are <= 0, the variance kept
    (``||X_c W||^2 / ||X_c W_pca||^2``) and the table's roughness on the co-occurrence graph."""
    from jaxrec.analysis import graph_roughness
    from jaxrec.init import pca_project, rec_pca

    tr = dataset.train
    pca_table, w0 = (np.asarray(a, np.float64) for a in pca_project(emb, k))
    pca_var = float(np.sum(pca_table ** 2))
    rows = []
    for lam in lambdas:
        table, w, rep = rec_pca(emb, tr.user, tr.item, k, lam, return_report=True)
        table, w = np.asarray(table, np.float64), np.asarray(w, np.float64)
        vals = np.asarray(rep.eigenvalues)
        rows.append({"lambda": float(lam), "overlap_with_pca": float(np.sum((w0.T @ w) ** 2) / k),
                     "nonpositive_eigenvalues": int(np.sum(vals <= 1e-7 * max(abs(vals[0]), 1e-30))),
                     "top_eigenvalue": float(vals[0]), "variance_kept": float(np.sum(table ** 2)) / pca_var,
                     "roughness": graph_roughness(table, tr.user, tr.item)})
    return rows


def probe_text(rows, title: str) -> str:
    headers = ["lambda", "overlap with PCA", "eigenvalues <= 0", "top eigenvalue", "variance kept", "roughness"]
    body = [[f"{r['lambda']:g}", f"{r['overlap_with_pca']:.4f}", str(r["nonpositive_eigenvalues"]),
             f"{r['top_eigenvalue']:.4g}", f"{r['variance_kept']:.3f}", f"{r['roughness']:.3f}"] for r in rows]
    return report.format_table(headers, body, title=title)


def build_cells(base, backbones, variants: Sequence[Variant], seeds_of: dict[str, list[int]],
                min_epochs: dict[str, int], source: EmbeddingSource, bases: dict | None = None) -> list[grid.Cell]:
    """One cell per seed x backbone x variant; ``bases``: a backbone's own base config (its
    registered protocol, e.g. SASRec's; default ``base``)."""
    cells = []
    all_seeds = list(dict.fromkeys(s for b in backbones for s in seeds_of[b]))
    for seed in all_seeds:
        for backbone in backbones:
            if seed not in seeds_of[backbone]:
                continue
            for v in variants:
                fields = source.config_fields() if v.init != "none" else {"embeddings": None, "encoder": None}
                own = (bases or {}).get(backbone, base)
                config = own.replace(model=backbone, seed=seed, min_epochs=min_epochs.get(backbone, own.min_epochs),
                                      **v.config_fields(), **fields)
                cells.append(grid.Cell({"backbone": backbone, "variant": v.name, "seed": seed}, config))
    return cells


#: Config fields that change the initial parameters but not the model's loss function.
INIT_FIELDS = ("seed", "init", "init_norm", "recpca_lambda", "embeddings", "encoder", "variance_fraction",
               "init_scale", "random_with_replacement")


def barrier_measures(curvature_iters: int):
    """``on_result`` callback: the measures of ``jaxrec.analysis.barrier`` on the cell's
    starting parameters, against the backbone's random init of the same seed.

    Cells whose configs differ only in ``INIT_FIELDS`` share one model object for the
    curvature, so its Hessian-vector product compiles once (the loss is a static jit argument).
    """
    models: dict[str, Any] = {}

    def measure(ctx: grid.CellContext) -> dict:
        import jax

        from jaxrec.analysis import anisotropy, graph_roughness, loss_curvature, table_norms
        from jaxrec.train import run_keys

        cfg, ds, model = ctx.cell.config, ctx.dataset, ctx.model
        reference = model.init(run_keys(cfg.seed).init, ds.num_users, ds.num_items)
        norms = table_norms(model, ctx.init_params, reference)
        items = np.asarray(model.tables["item"].rows(ctx.init_params))
        out: dict[str, Any] = {
            "item_norm_ratio": norms["item"].mean_ratio, "item_norm_cv": norms["item"].cv,
            "item_norm_mean": norms["item"].mean, "item_norm_max_min": norms["item"].max_min_ratio,
            "user_norm_ratio": norms["user"].mean_ratio if "user" in norms else None,
            "item_anisotropy": anisotropy(items),
            "item_roughness": graph_roughness(items, ds.train.user, ds.train.item),
            "initial_loss": float(ctx.result.history[0]["loss"]) if ctx.result.history else None,
        }
        if curvature_iters > 0:
            key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2)  # one batch per seed, shared by the variants
            loss_model = models.setdefault(
                repr(sorted((k, v) for k, v in cfg.to_dict().items() if k not in INIT_FIELDS)), model)
            h = loss_curvature(loss_model, ctx.init_params, ctx.prepared, cfg, key, max_iters=curvature_iters)
            out.update(hessian_top=h.eigenvalue, hessian_min_ritz=h.smallest, hessian_converged=h.converged,
                       hessian_hvps=h.hvps, hessian_residual=h.residual)
        log.info("at init: item norm / random %.3f (cv %.3f), anisotropy %.3f, roughness %.3f, Hessian top %s",
                 out["item_norm_ratio"], out["item_norm_cv"], out["item_anisotropy"], out["item_roughness"],
                 f"{out['hessian_top']:.4g}" if "hessian_top" in out else "-")
        return out

    return measure


def _mean_std(values) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return report.mean_std(vals)


def ranking_view(record: dict) -> dict:
    """The record with its test metrics as full-ranking ``recall@10`` / ``ndcg@10``: a backbone
    evaluated on candidate lists (SASRec) reports full ranking beside as ``full_*``
    (``full_view_topk``), which is what the other backbones' numbers are."""
    test = record.get("test", {})
    if all(m in test for m in report.METRICS) or not all(f"full_{m}" in test for m in report.METRICS):
        return record
    return {**record, "test": {**test, **{m: test[f"full_{m}"] for m in report.METRICS}}}


def summarize(records, variants: Sequence[Variant]) -> list[dict]:
    records = [ranking_view(r) for r in records]
    rows = report.aggregate(records, by=("backbone", "variant"))
    report.add_gains(rows, lambda r: {"backbone": r["backbone"], "variant": "none"}, records=records,
                     by=("backbone", "variant"))
    by_name = {v.name: v for v in variants}
    for r in rows:
        recs = [c for c in records if c["key"]["backbone"] == r["backbone"] and c["key"]["variant"] == r["variant"]]
        for e in EXTRAS:
            r[f"{e}_mean"], r[f"{e}_std"] = _mean_std(c.get("extra", {}).get(e) for c in recs)
        r["ndcg@10_by_seed"] = {int(c["key"]["seed"]): float(c["test"]["ndcg@10"]) for c in recs}
        r["best_epoch_mean"] = float(np.mean([c["best_epoch"] for c in recs]))
        r["epochs_run_mean"] = float(np.mean([c.get("epochs_run", c["stopped_epoch"] + 1) for c in recs]))
        v = by_name.get(r["variant"]) or parse_variant(r["variant"])
        r["init"], r["init_norm"], r["recpca_lambda"] = v.init, v.norm, v.lam
        r["model"] = report.backbone_label(r["backbone"]) + (f" + {v.label}" if v.label else "")
    return rows


def metrics_text(rows, title: str) -> str:
    headers = ["model", "R@10", "N@10", "gain R@10", "gain N@10", report.SIGNIFICANCE_HEADER, "best ep", "epochs"]
    body = [[r["model"], report.fmt_mean_std(r["recall@10_mean"], r["recall@10_std"]),
             report.fmt_mean_std(r["ndcg@10_mean"], r["ndcg@10_std"]), report.fmt_gain(r["recall@10_gain"]),
             report.fmt_gain(r["ndcg@10_gain"]), report.fmt_significance(r), f"{r['best_epoch_mean']:.0f}",
             f"{r['epochs_run_mean']:.0f}"]
            for r in rows]
    return report.format_table(headers, body, title=title)


def _fmt(x: float, digits: int = 3) -> str:
    return report.fmt(x, digits)


def barrier_text(rows, title: str) -> str:
    headers = ["model", "item norm / rand", "item norm cv", "user norm / rand", "anisotropy", "roughness",
               "Hessian top", "Hessian min (Ritz)", "loss epoch 0"]
    body = [[r["model"], _fmt(r["item_norm_ratio_mean"]), _fmt(r["item_norm_cv_mean"]), _fmt(r["user_norm_ratio_mean"]),
             _fmt(r["item_anisotropy_mean"]), _fmt(r["item_roughness_mean"]),
             "-" if not math.isfinite(r["hessian_top_mean"]) else f"{r['hessian_top_mean']:.4g}",
             "-" if not math.isfinite(r["hessian_min_ritz_mean"]) else f"{r['hessian_min_ritz_mean']:.4g}",
             _fmt(r["initial_loss_mean"], 4)] for r in rows]
    return report.format_table(headers, body, title=title)


def verdicts(rows) -> list[dict]:
    """Per backbone: the best LLM variant; the variants whose mean N@10 reaches random init's
    (``at_or_above_random``) and those at or above it on every seed (``every_seed``); and the
    variants whose gap exceeds the seeds' spread (|gap| > the larger of the two stds), above
    (``beyond_seed_spread_above``) or below (``..._below``; ``beyond_seed_spread``: both)."""
    out = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        base = next((r for r in mine if r["variant"] == "none"), None)
        llm = [r for r in mine if r["variant"] != "none"]
        if base is None or not llm:
            continue
        best = max(llm, key=lambda r: r["ndcg@10_mean"])
        at_or_above = [r["variant"] for r in llm if r["ndcg@10_mean"] >= base["ndcg@10_mean"]]
        # with one seed there is no spread to compare against: None
        base_seeds = base.get("ndcg@10_by_seed", {})
        every_seed = [r["variant"] for r in llm if r.get("ndcg@10_by_seed") and base_seeds
                      and all(v >= base_seeds[sd] for sd, v in r["ndcg@10_by_seed"].items() if sd in base_seeds)]
        spread = None if base["n"] < 2 else [
            r["variant"] for r in llm if r["n"] >= 2
            and abs(r["ndcg@10_mean"] - base["ndcg@10_mean"]) > max(r["ndcg@10_std"], base["ndcg@10_std"])]
        mean_of = {r["variant"]: r["ndcg@10_mean"] for r in llm}
        above = None if spread is None else [v for v in spread if mean_of[v] > base["ndcg@10_mean"]]
        below = None if spread is None else [v for v in spread if v not in above]
        out.append({"backbone": backbone, "random_ndcg@10": base["ndcg@10_mean"], "best_variant": best["variant"],
                    "best_ndcg@10": best["ndcg@10_mean"], "best_gain": best["ndcg@10_gain"],
                    "at_or_above_random": at_or_above, "every_seed": every_seed, "beyond_seed_spread": spread,
                    "beyond_seed_spread_above": above, "beyond_seed_spread_below": below, "seeds": base["n"]})
    return out


def verdict_text(items: list[dict]) -> str:
    if not items:
        return "Does an LLM-based init reach random init? (no LLM-initialized rows)"
    def names(xs):
        return ", ".join(xs) or "none"

    lines = ["Does an LLM-based init reach random init (test N@10)?"]
    for v in items:
        seeds = f"{v['seeds']} seed" + ("s" if v["seeds"] != 1 else "")
        line = (f"- {report.backbone_label(v['backbone'])} ({seeds}): random {v['random_ndcg@10']:.4f}; "
                f"best {v['best_variant']} {v['best_ndcg@10']:.4f} ({report.fmt_gain(v['best_gain'])}); "
                f"mean at or above random: {names(v['at_or_above_random'])}")
        if v["beyond_seed_spread"] is None:
            line += "; gap vs the seeds' std: n/a (one seed)"
        else:
            line += (f"; on every seed: {names(v.get('every_seed', []))}; beyond the seeds' std above random: "
                     f"{names(v['beyond_seed_spread_above'])}, below random: {names(v['beyond_seed_spread_below'])}")
        lines.append(line)
    return "\n".join(lines)


def plot_metrics(rows, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    labels = {r["variant"]: r["model"].partition(" + ")[2] or "none (random)" for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, m in zip(axes, report.METRICS):
        series = plots.metric_series(rows, backbones, lambda r: r["backbone"], lambda r: r["variant"],
                                     lambda key: labels[key], m)
        plots.grouped_bars(ax, [report.backbone_label(b) for b in backbones], series,
                           report.METRIC_LABELS[m] + " (test)")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def plot_curves(records, rows, path: Path, title: str, valid_metric: str) -> Path:
    """Per backbone (rows of panels): training loss and validation ``valid_metric`` per epoch,
    one line per variant, from each (backbone, variant)'s first seed."""
    plt = plots.pyplot()
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    labels = {r["variant"]: r["model"].partition(" + ")[2] or "none (random)" for r in rows}
    fig, axes = plt.subplots(len(backbones), 2, figsize=(10, 3.0 * len(backbones)), squeeze=False)
    for row_axes, backbone in zip(axes, backbones):
        seen = set()
        for rec in records:
            key = rec["key"]
            if key["backbone"] != backbone or key["variant"] in seen or "curve" not in rec:
                continue
            seen.add(key["variant"])
            curve = rec["curve"]
            style = {"color": "black", "lw": 2.0} if key["variant"] == "none" else {"lw": 1.2}
            row_axes[0].plot(curve["epoch"], curve["loss"], label=labels.get(key["variant"], key["variant"]), **style)
            valid = [(e, v) for e, v in zip(curve["epoch"], curve.get(valid_metric, [])) if v is not None]
            if valid:
                row_axes[1].plot(*zip(*valid), **style)
        name = report.backbone_label(backbone)
        row_axes[0].set_ylabel(f"{name}: training loss")
        row_axes[1].set_ylabel(f"{name}: valid {valid_metric}")
        for ax in row_axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


SUMMARY_COLUMNS = (["model", "backbone", "variant", "init", "init_norm", "recpca_lambda", "n", "seeds",
                    "recall@10_mean", "recall@10_std", "ndcg@10_mean", "ndcg@10_std", "recall@10_gain",
                    "ndcg@10_gain", "best_epoch_mean", "epochs_run_mean"]
                   + [f"{e}_{s}" for e in EXTRAS for s in ("mean", "std")])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, backbones = cli.start(args)
    variants = parse_variants(args.variants)
    per = parse_per_backbone(args.seeds_for, "--seeds-for", cli.parse_seeds)
    unknown = sorted(set(per) - set(backbones))
    if unknown:
        raise ConfigError(f"--seeds-for: {unknown} not among --backbones {backbones}")
    seeds_of = {b: per.get(b, seeds) for b in backbones}
    min_epochs = _min_epochs(args.min_epochs)
    for b in min_epochs:
        MODELS.check(b, "--min-epochs")
    if args.curvature_iters < 0:
        raise ConfigError(f"--curvature-iters {args.curvature_iters}: expected an integer >= 0")
    probe: list[float] = []
    if str(args.lambda_probe).strip().lower() != "none":
        try:
            probe = cli.parse_list(args.lambda_probe, float)
        except ValueError:
            raise ConfigError(f"--lambda-probe {args.lambda_probe!r}: expected comma-separated numbers") from None
        bad = [x for x in probe if not (math.isfinite(x) and x >= 0)]
        if bad:
            raise ConfigError(f"--lambda-probe: {bad}: expected finite numbers >= 0")
    base = cli.base_config(args)
    llm = [v for v in variants if v.init != "none"]
    source = cli.resolve_text_source(args, base) if llm else EmbeddingSource(description="(no LLM init rows)")
    all_seeds = list(dict.fromkeys(s for b in backbones for s in seeds_of[b]))
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(backbones)))
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    bases = {b: cli.base_config(args, model=b, **model_defaults(b)) for b in backbones}  # e.g. SASRec's own protocol
    cells = build_cells(base, backbones, variants, seeds_of, min_epochs, source, bases)
    from jaxrec.models import get_model

    for cell in cells:  # every cell's config against its backbone before any cell trains (cells are independent)
        get_model(cell.config)
    datasets = grid.DatasetCache(args.split_seed)
    meta = {"backbones": backbones, "variants": [v.name for v in variants], "seeds": seeds_of,
            "min_epochs": min_epochs, "split_seed": args.split_seed, "curvature_iters": args.curvature_iters}
    probe_rows: list[dict] = []
    first = datasets.first(base, all_seeds)  # a bad --dataset is refused here, before --out is made
    if llm:
        meta["text_embeddings"] = grid.prepare_text_embeddings(first, source)
        n = meta["text_embeddings"].get("dim")
        if n is not None:
            for cell in cells:  # K <= N for every LLM cell (and the probe) before any training
                if cell.config.init != "none":
                    check_embedding_size(cell.config.embedding_size, n, cell.config.init, f" ({cell.config.model})")
        if probe and n is not None and base.embedding_size > n:
            raise ConfigError(f"--lambda-probe: embedding_size={base.embedding_size} exceeds the text embeddings' "
                              f"N={n} dims; use embedding_size <= {n} or --lambda-probe none")
        if probe:
            from jaxrec.init import item_embeddings

            emb = np.asarray(item_embeddings(first, base.replace(**source.config_fields())), np.float32)
            probe_rows = recpca_probe(first, emb, base.embedding_size, probe)
            meta["recpca_probe"] = {"split_seed": args.split_seed if args.split_seed is not None else all_seeds[0],
                                    "k": base.embedding_size, "rows": probe_rows}
    out.mkdir(parents=True, exist_ok=True)  # after every check: a refused run leaves no folder behind
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta,
                             on_result=barrier_measures(args.curvature_iters))
    rows = summarize(records, variants)
    verdict = verdicts(rows)
    meta["verdicts"] = verdict
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = cli.dataset_label(base.dataset)
    dim = meta.get("text_embeddings", {}).get("dim")
    seeds_txt = "; ".join(f"{report.backbone_label(b)} {','.join(map(str, seeds_of[b]))}" for b in backbones)
    dims = {bases[b].embedding_size for b in backbones}
    k_txt = (f"K={dims.pop()}" if len(dims) == 1 else
             "K: " + ", ".join(f"{report.backbone_label(b)} {bases[b].embedding_size}" for b in backbones))
    stat = "mean ± std over seeds" if any(len(seeds_of[b]) > 1 for b in backbones) else "one seed, no std"
    title = (f"TF-LLMER: {name}, {k_txt}, test metrics, {stat} ({seeds_txt}); "
             f"gain = mean vs the backbone's random init\n{report.SIGNIFICANCE_NOTE}"
             + (f"\ntext embeddings: {source.description} (N={dim})" if llm else "")
             + "".join(f"\n{report.backbone_label(b)}: full-ranking R@10 / N@10 on its own protocol's split "
                       f"(split {bases[b].split}, early stopping on {bases[b].evaluation}); compare within "
                       f"{report.backbone_label(b)} only" for b in backbones if bases[b].evaluation != "full")
             + (f"\nmin_epochs: {', '.join(f'{b}={min_epochs[b]}' for b in backbones if b in min_epochs)}"
                if any(b in min_epochs for b in backbones) else ""))
    barrier_title = ("At init (mean over seeds): row norms / the backbone's random init, item norm spread (cv), "
                     "anisotropy ||mean unit item row||, roughness tr(T'LT)/tr(T'T) on the item co-occurrence "
                     "graph, Hessian eigenvalues of the training loss on one fixed batch per seed "
                     f"({args.curvature_iters} Lanczos steps), mean training loss of epoch 0")
    parts = [metrics_text(rows, title), barrier_text(rows, barrier_title), verdict_text(verdict)]
    if probe_rows:
        parts.append(probe_text(probe_rows, (
            f"Rec-PCA vs lambda without training (K={base.embedding_size}, the first split's training interactions): "
            "overlap = mean squared cosine of the principal angles to PCA's span; eigenvalues <= 0 among the top K of "
            "X'(I - lambda L)X; variance kept relative to PCA's; roughness tr(T'LT)/tr(T'T) (PCA: lambda 0)")))
    text = "\n\n".join(parts)
    cell_table = report.cell_rows([ranking_view(r) for r in records])  # the metrics the table shows
    for row, rec in zip(cell_table, records):
        row["variant"] = rec["key"]["variant"]
        row.update({e: rec.get("extra", {}).get(e) for e in EXTRAS})
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows, SUMMARY_COLUMNS),
             report.write_csv(out / "cells.csv", cell_table),
             plot_metrics(rows, out / f"{EXPERIMENT}.png", f"{name}: test metrics by initialization ({k_txt})"),
             plot_curves(records, rows, out / f"{EXPERIMENT}_curves.png",
                         f"{name}: training loss and validation {base.valid_metric} per epoch (first seed)",
                         base.valid_metric),
             out / "results.json"]
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
