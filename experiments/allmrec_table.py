"""A-LLMRec Tables 1/2 layout: Hit@1 overall, on cold / warm items, cold users and few-shot K users.

Rows are *methods* (``METHODS``; today SASRec, the backbone A-LLMRec pretrains; the alignment
stages add rows here), columns the evaluation scenarios of A-LLMRec (DESIGN.md 2.2; the
harness ``jaxrec.eval.scenarios``), each Hit@1 on the stored 20-candidate test lists (the held-out
item + 19 never-interacted items; ``evaluation="candidates"``), mean ± sample std over seeds:

- ``overall``: every test user (``Standard``); ``cold items`` / ``warm items``: the test users
  whose target is among the 35% least / most interacted items (``ColdWarmItems``), scored by
  the same trained model;
- ``cold users``: users with exactly 3 interactions, kept out of training, evaluated with
  their first two items as history (``ColdUsers``; not applicable where no user has 3);
- ``few-shot K``: trained (and selected on validation) on K seeded users only, evaluated on
  every test user (``FewShot``; K = 128 and 256 by default);
- cross-domain (train on one dataset, test on another) is reported as not applicable to an
  id-based model such as SASRec (``CrossDomain``).

On one of the paper's datasets (Movies & TV, Video Games, Beauty, Toys; matched on the dataset
name) the paper's numbers stand beside. Every training run is a cell of ``experiments.grid``
(``--resume`` reuses finished cells); a setting's scenarios are scored by the method's
``score`` on the scenario's evaluation dataset. A new row is one ``Method`` in ``METHODS``:
its registered backbone (trained by ``jaxrec.fit`` with that backbone's defaults and the
row's ``overrides``) and how it scores candidate lists (default: dot products of the
embeddings the model computes from the evaluation dataset's test histories).

    python -m experiments.allmrec_table --dataset ml-100k
    python -m experiments.allmrec_table --dataset ml-100k --seeds 2020,2021,2022 --few-shot 128,256

Writes ``allmrec_table.csv`` (every method x column, all candidate metrics), ``cells.csv``,
``allmrec_table.png``, ``table.txt`` and ``results.json`` into
``checkpoints/allmrec_table/<run-name>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from experiments import cli, grid, plots, report
from jaxrec.config import Config, ConfigError, model_defaults
from jaxrec.eval.candidates import DEFAULT_METRICS, CandidateSet, candidates_for, dot_scores
from jaxrec.eval.scenarios import ColdUsers, ColdWarmItems, CrossDomain, FewShot, ScenarioData, Standard, \
    scenario_metrics

log = logging.getLogger("experiments")
EXPERIMENT = "allmrec_table"
METRIC = "hit@1"
TABLE_METRICS = DEFAULT_METRICS  # hit@1, hit@5, ndcg@5, mrr


def embedding_scores(ctx: grid.CellContext, eval_dataset, cands: CandidateSet) -> np.ndarray:
    """float [M, C]: ``user_emb . item_emb`` of the trained model for ``cands``, the users'
    representations computed from ``eval_dataset``'s test-stage context (a sequence model: the
    test histories, so a cold user's first two items)."""
    import jax

    from jaxrec.train import prepare

    context = prepare(eval_dataset).contexts(ctx.model.context, ctx.cell.config)["test"]
    user_emb, item_emb = jax.jit(ctx.model.embed)(ctx.result.params, context)
    return dot_scores(np.asarray(user_emb), np.asarray(item_emb), cands)


def stage1_scores(ctx: grid.CellContext, eval_dataset, cands: CandidateSet) -> np.ndarray:
    """float [M, C]: the stage-1 recommender's ``u . f_I^dec(z_i)`` (``jaxrec.align.stage1``):
    the frozen SASRec and text of the cell's training data, the users' test histories of
    ``eval_dataset`` (a cold user's first two items)."""
    import jax

    from jaxrec.align.stage1 import evaluation_context

    context = evaluation_context(ctx.prepared.contexts(ctx.model.context, ctx.cell.config)["test"], eval_dataset,
                                 ctx.cell.config)
    user_emb, item_emb = jax.jit(ctx.model.embed)(ctx.result.params, context)
    return dot_scores(np.asarray(user_emb), np.asarray(item_emb), cands)


@dataclasses.dataclass(frozen=True)
class Method:
    """A row: ``model`` (a registered backbone) trained by ``jaxrec.fit`` with that backbone's
    defaults, then ``overrides``, then ``--set``; ``score(ctx, eval_dataset, cands) -> [M, C]``;
    ``paper``: its key in ``PAPER`` (None: no published numbers). ``on_sasrec``: the row reads
    the SASRec run of the same setting and seed (A-LLMRec's stage 1 aligns that frozen model:
    ``sasrec_run`` points at its saved run folder, the SASRec-only keys come from that run)."""

    name: str
    label: str
    model: str
    overrides: dict = dataclasses.field(default_factory=dict)
    paper: str | None = None
    score: Callable[[grid.CellContext, Any, CandidateSet], np.ndarray] = embedding_scores
    on_sasrec: bool = False


#: Text of the frozen-encoder stage-1 rows: the dataset's reference MPNet embeddings when present
#: (ml-100k), else MiniLM through the embedding cache (``jaxrec.init.resolve_embedding_source``).
#: The fine-tuned row fine-tunes MiniLM end to end (the paper fine-tunes SBERT nq-distilbert-base-v1,
#: which jaxrec.text does not implement).
METHODS = (
    Method("sasrec", "SASRec", "sasrec", paper="sasrec"),
    Method("stage1", "A-LLMRec stage 1 (e, frozen text)", "allmrec_stage1", score=stage1_scores, on_sasrec=True),
    Method("stage1_sbert", "stage 1, SBERT variant (q)", "allmrec_stage1", {"align_items": "text"},
           score=stage1_scores, on_sasrec=True),
    Method("stage1_ft", "stage 1 (e, fine-tuned MiniLM)", "allmrec_stage1", {"encoder": "minilm",
                                                                             "text_finetune": True},
           score=stage1_scores, on_sasrec=True),
)
#: The default rows (the fine-tuned-encoder row costs an encoder forward and backward per step).
DEFAULT_METHODS = ("sasrec", "stage1", "stage1_sbert")
#: Keys of the frozen SASRec that a stage-1 row takes from the SASRec run, not from --set.
SASREC_ONLY = ("num_heads", "dropout_rate", "seq_norm", "dropout_rng")

#: A-LLMRec (Kim et al., 2024) Tables 1-4, Hit@1 over 20 candidates (DESIGN.md section 3):
#: method -> dataset -> column -> value.
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "sasrec": {
        "movies_tv": {"overall": .6154, "cold items": .2589, "warm items": .6787, "cold users": .2589,
                      "few-shot K=256": .2111},
        "video_games": {"overall": .5402, "cold items": .1991, "warm items": .5764, "cold users": .4048,
                        "few-shot K=256": .1396},
        "beauty": {"overall": .5298, "cold items": .1190, "warm items": .6312, "cold users": .4459,
                   "few-shot K=256": .2243},
        "toys": {"overall": .2359},
    },
    "allmrec": {
        "movies_tv": {"overall": .6237, "cold items": .5714, "warm items": .6880, "cold users": .5272,
                      "few-shot K=256": .2880},
        "video_games": {"overall": .5282, "cold items": .4263, "warm items": .5970, "cold users": .4160,
                        "few-shot K=256": .2495},
        "beauty": {"overall": .5809, "cold items": .5605, "warm items": .6414, "cold users": .5337,
                   "few-shot K=256": .3467},
        "toys": {"overall": .3336},
    },
    "allmrec_sbert": {
        "movies_tv": {"cold items": .5772, "warm items": .6802, "few-shot K=256": .2963},
        "video_games": {"cold items": .4359, "warm items": .5792, "few-shot K=256": .2607},
        "beauty": {"cold items": .5591, "warm items": .6405, "few-shot K=256": .3605},
    },
}
PAPER_DATASETS = {"movies_tv": ("movie",), "video_games": ("game",), "beauty": ("beauty",), "toys": ("toys",)}


def paper_dataset(name: str) -> str | None:
    """Which of A-LLMRec's four Amazon datasets ``name`` is (case-insensitive), else None."""
    low = report.dataset_label(name).lower()
    return next((key for key, marks in PAPER_DATASETS.items() if any(m in low for m in marks)), None)


# ----------------------------------------------------------------------------- settings
def settings(few_shot: list[int]) -> dict[str, Callable[[int], tuple]]:
    """Training setting -> ``seed -> scenarios`` scored by one trained model; the first
    scenario's ``apply`` gives the training data of the setting."""
    out: dict[str, Callable[[int], tuple]] = {
        "standard": lambda seed: (Standard(), ColdWarmItems(0.35)),
        "cold_users": lambda seed: (ColdUsers(3),),
    }
    for k in few_shot:
        out[f"few_shot_{k}"] = lambda seed, k=k: (FewShot(k, seed),)
    return out


def columns(few_shot: list[int]) -> list[tuple[str, str, str]]:
    """(column label, setting, scenario group) of the table, in order."""
    return ([("overall", "standard", "all"), ("cold items", "standard", "cold_items"),
             ("warm items", "standard", "warm_items"), ("cold users", "cold_users", "cold_users")]
            + [(f"few-shot K={k}", f"few_shot_{k}", "all") for k in few_shot])


def applied(scenarios: tuple, dataset) -> list[ScenarioData] | str:
    """Every scenario applied to ``dataset``, or why the setting does not apply."""
    out = []
    for sc in scenarios:
        try:
            data = sc.apply(dataset)
        except ValueError as e:  # e.g. FewShot asking for more users than the dataset has
            return str(e)
        if not data.applicable:
            return data.note
        out.append(data)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p, backbones="sasrec", seeds="2020", text_source=False)
    g = p.add_argument_group(EXPERIMENT)
    g.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"rows, any of {', '.join(m.name for m in METHODS)} (default {','.join(DEFAULT_METHODS)}; "
                        "stage-1 rows need sasrec); --backbones is unused")
    g.add_argument("--few-shot", default="128,256", help="K values of the few-shot columns (default 128,256)")
    g.add_argument("--stage1-epochs", type=int, default=None,
                   help="epochs of the stage-1 rows only (default: the backbone's 10, or --epochs)")
    g.add_argument("--scenarios", default=None,
                   help="training settings to run (default all: standard, cold_users, few_shot_<K>)")
    return p


def method_config(args: argparse.Namespace, method: Method) -> Config:
    """The method's backbone defaults, its overrides, then the common options (--set, --epochs)."""
    return cli.base_config(args, **{**model_defaults(method.model), "model": method.model, **method.overrides})


def stage1_config(config: Config, sasrec_run: Path) -> Config:
    """A stage-1 row's config: ``sasrec_run``, the SASRec-only keys back at their defaults (the
    run fixes them), and a text source (``resolve_embedding_source``) unless the row names one."""
    from jaxrec.init import resolve_embedding_source

    defaults = Config()
    config = config.replace(sasrec_run=str(sasrec_run), **{k: getattr(defaults, k) for k in SASREC_ONLY})
    if not (config.embeddings or config.encoder):
        config = config.replace(**resolve_embedding_source(config).config_fields())
    return config


def build_cells(args, methods, seeds, setting_names, datasets: grid.DatasetCache, setups: dict,
                skipped: dict, out: Path | None = None) -> list[grid.Cell]:
    cells = []
    for seed in seeds:
        for m in methods:
            config = method_config(args, m).replace(seed=seed)
            base = datasets.base(config, grid.split_seed(grid.Cell({}, config), datasets.fixed))
            for s in setting_names:
                data = applied(setups[s](seed), base)
                if isinstance(data, str):
                    skipped.setdefault(s, {})[seed] = data
                    log.warning("%s, seed %d: not applicable: %s", s, seed, data)
                    continue
                cell_config = config
                if m.on_sasrec:  # the SASRec cell of this setting and seed, saved by run_grid (--save-runs)
                    runs = (out or Path(".")).resolve() / "runs"
                    cell_config = stage1_config(config, runs / grid._slug({"method": "sasrec", "setting": s,
                                                                           "seed": seed}))
                    if getattr(args, "stage1_epochs", None):
                        cell_config = cell_config.replace(epochs=args.stage1_epochs)
                cells.append(grid.Cell({"method": m.name, "setting": s, "seed": seed}, cell_config,
                                       {} if s == "standard" else {"setting": s}))
    return cells


def scorer(methods: dict[str, Method], setups: dict, datasets: grid.DatasetCache):
    """``on_result``: every scenario of the cell's setting, scored on its evaluation dataset's
    stored test candidate lists (drawn once per dataset split and seed)."""
    from jaxrec.data.locate import cache_root

    def on_result(ctx: grid.CellContext) -> dict:
        config, key = ctx.cell.config, ctx.cell.key
        base = datasets.base(config, grid.split_seed(ctx.cell, datasets.fixed))
        out: dict[str, Any] = {"groups": {}, "counts": {}, "notes": []}
        for data in applied(setups[key["setting"]](key["seed"]), base):
            cands = candidates_for(config.candidates_dir or cache_root() / "candidates", data.eval, "test",
                                   config.seed, config.candidate_negatives)
            cands = cands.select(np.unique(np.concatenate([np.asarray(v) for v in data.groups.values()])))
            scores = methods[key["method"]].score(ctx, data.eval, cands)
            out["groups"].update(scenario_metrics(data, cands, scores, TABLE_METRICS))
            out["counts"].update({g: int(len(u)) for g, u in data.groups.items()})
            out["notes"].append(f"{data.name}: {data.note}")
        return out

    return on_result


def transform(setups: dict):
    def apply(dataset, cell: grid.Cell):
        data = applied(setups[cell.data["setting"]](cell.config.seed), dataset)[0]
        return data.train, {"note": data.note, "train_interactions": int(len(data.train.train))}

    return apply


def summarize(records, methods, cols, paper_key: str | None) -> list[dict]:
    rows = []
    for m in methods:
        for label, setting, group in cols:
            recs = [r for r in records if r["key"]["method"] == m.name and r["key"]["setting"] == setting
                    and group in r.get("extra", {}).get("groups", {})]
            row: dict[str, Any] = {"method": m.name, "label": m.label, "column": label, "setting": setting,
                                   "group": group, "n": len(recs), "seeds": [r["key"]["seed"] for r in recs],
                                   "users": [r["extra"]["counts"][group] for r in recs]}
            for metric in TABLE_METRICS:
                row[f"{metric}_mean"], row[f"{metric}_std"] = report.mean_std(
                    [r["extra"]["groups"][group][metric] for r in recs])
            paper = PAPER.get(m.paper or "", {}).get(paper_key or "", {})
            row["paper_hit@1"] = paper.get(label)
            rows.append(row)
    return rows


def table_text(rows, methods, cols, title: str, paper_key: str | None, notes: list[str]) -> str:
    headers = ["method"] + [c[0] for c in cols]
    body = []
    for m in methods:
        mine = {r["column"]: r for r in rows if r["method"] == m.name}
        body.append([m.label] + [report.fmt_mean_std(mine[c]["hit@1_mean"], mine[c]["hit@1_std"]) if mine[c]["n"]
                                 else "n/a" for c, _, _ in cols])
        if paper_key and m.paper:
            body.append([f"  paper ({paper_key})"] + [report.fmt(mine[c]["paper_hit@1"]) for c, _, _ in cols])
    text = report.format_table(headers, body, title=title)
    return text + ("\n" + "\n".join(notes) if notes else "")


def plot(rows, methods, cols, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 3.4))
    labels = [c[0] for c in cols]
    series = {}
    for m in methods:
        mine = {r["column"]: r for r in rows if r["method"] == m.name}
        series[m.label] = ([mine[c]["hit@1_mean"] for c in labels], [mine[c]["hit@1_std"] for c in labels])
        paper = [mine[c]["paper_hit@1"] for c in labels]
        if any(p is not None for p in paper):
            series[f"{m.label} (paper)"] = ([np.nan if p is None else p for p in paper], [np.nan] * len(labels))
    plots.grouped_bars(ax, labels, series, "Hit@1 (20 candidates, test)")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seeds, _ = cli.start(args)
    names = cli.parse_list(args.methods)
    known = {m.name: m for m in METHODS}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"--methods: unknown {bad}; expected a subset of {', '.join(known)}")
    methods = [known[n] for n in names]
    if any(m.on_sasrec for m in methods):
        if "sasrec" not in names:
            raise ConfigError(f"--methods {args.methods}: the stage-1 rows align the SASRec of the same setting and "
                              "seed; add sasrec")
        methods = sorted(methods, key=lambda m: m.name != "sasrec")  # SASRec first: its runs are saved
        args.save_runs = True
    try:
        few_shot = cli.parse_list(args.few_shot, int)
    except ValueError:
        raise ConfigError(f"--few-shot {args.few_shot!r}: expected comma-separated integers") from None
    if any(k < 1 for k in few_shot):
        raise ConfigError(f"--few-shot {args.few_shot!r}: expected integers >= 1")
    setups = settings(few_shot)
    chosen = cli.parse_list(args.scenarios) if args.scenarios else list(setups)
    unknown = [s for s in chosen if s not in setups]
    if unknown:
        raise ConfigError(f"--scenarios: unknown {unknown}; expected a subset of {', '.join(setups)}")
    cols = [c for c in columns(few_shot) if c[1] in chosen]
    base = method_config(args, methods[0])
    for m in methods:
        if method_config(args, m).evaluation != "candidates":
            raise ConfigError(f"method {m.name}: evaluation={method_config(args, m).evaluation!r}; the A-LLMRec "
                              "table scores the stored candidate lists (evaluation='candidates')")
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(names)))
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    datasets = grid.DatasetCache(args.split_seed, transform=transform(setups))
    skipped: dict[str, dict[int, str]] = {}
    cells = build_cells(args, methods, seeds, chosen, datasets, setups, skipped, out)
    cross = CrossDomain(target=datasets.first(base, seeds)).apply(datasets.first(base, seeds)).note
    notes = [f"{s}: not applicable ({'; '.join(sorted(set(why.values())))})" for s, why in skipped.items()]
    notes.append(f"cross-domain: {cross.split(': ', 1)[-1]}")
    meta = {"methods": names, "seeds": seeds, "settings": chosen, "few_shot": few_shot, "columns": cols,
            "not_applicable": skipped, "notes": notes, "split_seed": args.split_seed}
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta,
                             on_result=scorer(known, setups, datasets))
    paper_key = paper_dataset(base.dataset)
    rows = summarize(records, methods, cols, paper_key)
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = report.dataset_label(base.dataset)
    title = (f"A-LLMRec Tables 1/2 layout: {name}, Hit@1 over {base.candidate_negatives + 1} candidates (test), "
             f"mean ± std over seeds {','.join(map(str, seeds))}"
             + (f"; paper: {paper_key}" if paper_key else "; not one of the paper's datasets (no paper numbers)"))
    text = table_text(rows, methods, cols, title, paper_key, notes)
    metric_cols = [f"{m}_{s}" for m in TABLE_METRICS for s in ("mean", "std")]
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows,
                              ["method", "label", "column", "setting", "group", "n", "seeds", "users", *metric_cols,
                               "paper_hit@1"]),
             report.write_csv(out / "cells.csv", report.cell_rows(records, ("hit@1", "ndcg@10", "mrr",
                                                                             "full_ndcg@10"))),
             plot(rows, methods, cols, out / f"{EXPERIMENT}.png", f"{name}: Hit@1 by scenario"),
             out / "results.json"]
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
