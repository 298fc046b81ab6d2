"""A-LLMRec rows: stage 2 (projectors into a frozen LM) beside SASRec on the same users and candidates.

The pipeline, every training a ``jaxrec.fit`` run folder under ``--out`` (``--resume`` reuses them):

1. SASRec (A-LLMRec's pretraining protocol, ``Config.for_model("sasrec")``) on the dataset;
   with ``--stage1-run DIR`` the SASRec that stage-1 run was trained on instead;
2. stage-2 inputs (``jaxrec.methods.allmrec.stage2_inputs``): the user representations per stage and the
   item embeddings, one of
   - ``--train-stage1``: stage 1 (``allmrec_stage1``, ``--stage1-set`` overrides, e.g.
     ``embeddings=...`` or ``encoder=mpnet``) trained here on that SASRec into ``stage1/``,
     then its joint item embeddings (``stage1_inputs``): A-LLMRec in one command;
   - ``--stage1-run DIR``: a finished stage-1 run folder (``stage1_inputs``);
   - ``--inputs FILE``: a ``save_inputs`` export;
   - none of them: the **SASRec fallback** (``sasrec_inputs``: SASRec's own item table, d = 50,
     as the "joint" item embeddings; not A-LLMRec). The table names which one it used;
3. stage 2 (``allmrec_stage2``) on a seeded sample of ``--train-users`` training users, early
   stopping on ``--valid-users`` validation users, tested on ``--eval-users`` test users with the
   stored 20-candidate lists (the same lists as SASRec's ``candidates`` protocol), candidates
   shown in a seeded random order;
4. on exactly those test users: SASRec's Hit@1 / Hit@5 / NDCG@5 / MRR on the same candidates,
   overall and on cold / warm items (targets among the 35 % least / most trained items); the
   LM's ranking (sum and per-token mean log-likelihood), its greedy generation (exact title and
   the reference's substring rule);
5. filter-then-rerank (``jaxrec.methods.allmrec.rerank``): SASRec's top 20 over every unseen item,
   re-ordered by the trained stage-2 LM.

Row "A-LLMRec stage 1" (with ``--train-stage1`` / ``--stage1-run``): the stage-1 recommender,
SASRec's user representation against the decoded joint item embeddings, on the same users and
lists. ``experiments.allmrec_table --methods sasrec,stage1,allmrec`` puts these rows in the
scenario table (the same pipeline as grid cells).

    python -m experiments.allmrec_stage2 --dataset ml-100k --train-users 256 --eval-users 100
    # A-LLMRec: SASRec -> stage 1 (frozen MPNet text embeddings) -> stage 2
    python -m experiments.allmrec_stage2 --dataset ml-100k --train-stage1 --stage1-set encoder=mpnet
    # the full protocol on a GPU (every user, 10 epochs as the reference; OPT-6.7B as a folder):
    python -m experiments.allmrec_stage2 --dataset ml-100k --train-users 0 --eval-users 0 \\
        --valid-users 200 --stage2-epochs 10 --lm /path/to/opt-6.7b --set lm_dtype=bfloat16

Writes ``table.txt``, ``results.json``, ``stage2_inputs.npz`` and the run folders ``sasrec/``
(``stage1/``), ``stage2/`` into
``--out`` (default ``checkpoints/allmrec_stage2/<dataset>-s<seed>``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from experiments import cli, report
from jaxrec.config import Config, ConfigError

log = logging.getLogger("experiments")
EXPERIMENT = "allmrec_stage2"
METRICS = ("hit@1", "hit@5", "ndcg@5", "mrr")
_INDEX = {"answer": "index", "input_norm": "standardize", "token_norm": "match"}
#: ``--variant``: (description, stage-2 config overrides). ``reference`` is the paper's protocol.
VARIANTS = {
    "reference": ("the paper's prompt, title answer (generation + title likelihood)", {}),
    "index": ("index answer, standardized inputs, LM-norm soft tokens", _INDEX),
    "lora": ("index + LoRA r=8 on q/v", {**_INDEX, "lora_rank": 8}),
    "lora_all": ("index + LoRA, every training position a prompt", {**_INDEX, "lora_rank": 8, "train_targets": "all"}),
    "probe": ("index + the recommender's score of each candidate as an extra item-projector input",
              {**_INDEX, "score_probe": True}),
    "lora_probe": ("probe + LoRA r=8 on q/v", {**_INDEX, "score_probe": True, "lora_rank": 8}),
    "probe_soft": ("probe with soft tokens only (no titles; the compact prompt, 126 tokens against the "
                   "reference's ~300: cheaper steps), batch 8, lr 1e-3 (the synthetic diagnostic's setting)",
                   {**_INDEX, "score_probe": True, "prompt_titles": False, "batch_size": 8, "learning_rate": 1e-3}),
}
DEFAULT_VARIANT = "probe_soft"
#: Minutes of a --budget-minutes run kept for the test evaluation (measured: ~0.2 s per user for
#: the index answer on this machine; the reference's 20 title scorings + generation take far more).
TEST_RESERVE_MINUTES = {"title": 12.0, "index": 4.0}
#: Shares of --budget-minutes SASRec and stage 1 may take when trained here (each stops after the
#: epoch that spends its share, keeping its best checkpoint; quiet, SASRec needs ~3 min on ml-100k).
BUDGET_SHARE = {"sasrec": 0.25, "stage1": 0.1}


def resolve_user_counts(args) -> argparse.Namespace:
    """Fill the user counts left unset: with ``--budget-minutes`` every training user, 100
    validation and 300 test users (the headline's); otherwise 256 / 32 / 100 (a quick look)."""
    budget = bool(args.budget_minutes)
    for name, (with_budget, without) in {"train_users": (0, 256), "valid_users": (100, 32),
                                         "eval_users": (300, 100)}.items():
        if getattr(args, name) is None:
            setattr(args, name, with_budget if budget else without)
    return args


def stage2_config(args, **source) -> Config:
    """Stage 2's config: the variant's settings, the user counts, then ``--set`` (ConfigError
    naming a bad key or value)."""
    return Config.for_model("allmrec_stage2", dataset=str(args.dataset), seed=args.seed, lm=args.lm,
                            epochs=args.stage2_epochs, train_users=args.train_users, eval_users=args.eval_users,
                            valid_users=args.valid_users, **VARIANTS[args.variant][1], **source
                            ).with_overrides(args.set)


def check_settings(args) -> None:
    """ConfigError before any data is read or model trained: a bad ``--set`` / ``--stage1-set``
    key or value, or a ``--budget-minutes`` that cannot hold stage 2's test evaluation."""
    c2 = stage2_config(args)
    if args.train_stage1:
        Config.for_model("allmrec_stage1", dataset=str(args.dataset), seed=args.seed).with_overrides(args.stage1_set)
    reserve = TEST_RESERVE_MINUTES[c2.answer]
    if args.budget_minutes and args.budget_minutes <= reserve:
        raise ConfigError(f"--budget-minutes {args.budget_minutes}: expected more than the test evaluation's "
                          f"{reserve} min (answer={c2.answer!r}) plus SASRec's and stage 2's training")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k", help="dataset name or folder (default ml-100k)")
    p.add_argument("--seed", type=int, default=2020, help="seed of the split, candidates and every run (default 2020)")
    p.add_argument("--lm", default="smollm2",
                   help="frozen LM: smollm2 | a .gguf file | a Hugging Face folder (default smollm2)")
    p.add_argument("--inputs", default=None,
                   help="stage-2 inputs .npz (a stage-1 export, jaxrec.methods.allmrec.stage2_inputs.save_inputs); default: "
                        "the SASRec fallback computed here")
    p.add_argument("--stage1-run", type=Path, default=None, metavar="DIR",
                   help="a finished allmrec_stage1 run folder: its joint item embeddings and its SASRec")
    p.add_argument("--train-stage1", action="store_true",
                   help="train stage 1 here on the SASRec of step 1 (into OUT/stage1) and use it")
    p.add_argument("--stage1-epochs", type=int, default=None, help="stage-1 epochs at most (default: the reference's 10)")
    p.add_argument("--stage1-set", action="append", default=[], metavar="KEY=VALUE",
                   help="stage-1 config overrides (repeatable), e.g. encoder=mpnet or embeddings=FILE.npy")
    p.add_argument("--sasrec-epochs", type=int, default=200, help="SASRec epochs at most (default 200)")
    p.add_argument("--stage2-epochs", type=int, default=1,
                   help="stage-2 epochs at most (default 1; the reference: 10; --budget-minutes trains epochs "
                        "until the budget instead)")
    p.add_argument("--train-users", type=int, default=None,
                   help="stage-2 training users (0: all; default 256, all with --budget-minutes: 256 users "
                        "repeated over the budget's epochs overfit, measured)")
    p.add_argument("--valid-users", type=int, default=None,
                   help="stage-2 validation users (0: as eval; default 32, 100 with --budget-minutes)")
    p.add_argument("--eval-users", type=int, default=None,
                   help="test users compared (0: all; default 100, 300 with --budget-minutes)")
    p.add_argument("--rerank-k", type=int, default=20, help="filter-then-rerank list length (default 20)")
    p.add_argument("--no-rerank", action="store_true", help="skip filter-then-rerank")
    p.add_argument("--variant", choices=tuple(VARIANTS), default=DEFAULT_VARIANT,
                   help=f"stage-2 setting: {'; '.join(f'{k} = {v[0]}' for k, v in VARIANTS.items())} "
                        f"(default {DEFAULT_VARIANT})")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock budget of SASRec (at most 25%%), stage 1 (at most 10%%) and stage 2, which trains "
                        "until another epoch would overrun it less a reserve for its test evaluation, then is "
                        "tested; writes OUT/summary.json. The filter-then-rerank runs after it (--no-rerank skips it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="stage-2 config overrides (repeatable), e.g. lm_max_new_tokens=32")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default checkpoints/allmrec_stage2/<dataset>-s<seed>/)")
    p.add_argument("--resume", action="store_true", help="reuse finished run folders in --out")
    p.add_argument("--verbose", action="store_true", help="INFO logging")
    return p


def _group_metrics(ranks: np.ndarray, rows: dict[str, np.ndarray], num: int) -> dict[str, dict]:
    from jaxrec.eval.candidates import metrics_from_ranks

    return {g: ({**metrics_from_ranks(ranks[sel], num, METRICS), "users": int(sel.sum())} if sel.any() else {})
            for g, sel in rows.items()}


def main(argv: list[str] | None = None) -> int:
    from jaxrec.methods.allmrec import register

    register()  # A-LLMRec's stages, contexts, terms and evaluation (explicit; idempotent)
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    import jaxrec
    from jaxrec.data import load_dataset
    from jaxrec.eval.candidates import candidate_ranks
    from jaxrec.methods.allmrec import stage2_fit
    from jaxrec.methods.allmrec.rerank import recommender_top, rerank
    from jaxrec.methods.allmrec.stage1 import load_sasrec_run, load_stage1_run
    from jaxrec.methods.allmrec.stage2_inputs import load_inputs, sasrec_inputs, save_inputs, stage1_inputs
    from jaxrec.models.sasrec import arch_from_config
    from jaxrec.train import prepare

    given = [n for n, v in (("--inputs", args.inputs), ("--stage1-run", args.stage1_run),
                            ("--train-stage1", args.train_stage1)) if v]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give at most one source of stage-2 inputs")
    for name in ("sasrec_epochs", "stage2_epochs", "rerank_k", "stage1_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected an integer >= 1")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes {args.budget_minutes}: expected a number of minutes > 0")
    resolve_user_counts(args)
    started = time.perf_counter()
    out = args.out or cli.default_out_dir(EXPERIMENT, f"{report.dataset_label(args.dataset)}-s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    seconds: dict[str, float] = {}

    # 1. SASRec (the one of --stage1-run when given)
    check_settings(args)  # every --set / --stage1-set and the budget, before any data or training
    s_cfg = Config.for_model("sasrec", dataset=str(args.dataset), seed=args.seed, epochs=args.sasrec_epochs
                             ).with_overrides(cli.dataset_sets(args.dataset))  # ml-1m: max_seq_len=200
    if args.budget_minutes:
        s_cfg = s_cfg.replace(time_budget_minutes=BUDGET_SHARE["sasrec"] * args.budget_minutes)
    ds = load_dataset(s_cfg.dataset, s_cfg)
    prepared = prepare(ds)
    t0 = time.perf_counter()
    if args.stage1_run:
        s1 = load_stage1_run(args.stage1_run, ds)
        s_run = load_sasrec_run(s1.config.sasrec_run, ds)
        s_results = json.loads((s_run.path / "results.json").read_text())
        s_params, s_settings, s_dir = s_run.params, s_run.settings, s_run.path
        s_test, s_best = s_results.get("test", {}), s_results.get("best_epoch")
    else:
        s_fit = jaxrec.fit(jaxrec.get_model(s_cfg), ds, s_cfg, out_dir=out / "sasrec", resume=args.resume,
                           overwrite=not args.resume, prepared=prepared)
        s_params, s_settings, s_dir = s_fit.params, arch_from_config(s_cfg, ds.num_items), out / "sasrec"
        s_test, s_best = s_fit.test_metrics, s_fit.best_epoch
    seconds["sasrec_fit"] = time.perf_counter() - t0
    log.info("SASRec (%s): best epoch %s, test hit@1 %.4f (%.0f s)", s_dir, s_best, s_test.get("hit@1", np.nan),
             seconds["sasrec_fit"])
    # SASRec's own user representations and item table: the SASRec rows and the rerank's candidates
    s_inputs = sasrec_inputs(s_params, s_settings, ds, source=f"{s_dir} (SASRec fallback: no stage 1)")

    # 2. stage-2 inputs (stage 1 trained here, a stage-1 run, a file, or the SASRec fallback)
    if args.train_stage1:
        c1 = Config.for_model("allmrec_stage1", dataset=str(args.dataset), seed=args.seed, sasrec_run=str(s_dir),
                              max_seq_len=s_cfg.max_seq_len,
                              **({"epochs": args.stage1_epochs} if args.stage1_epochs else {})
                              ).with_overrides(args.stage1_set)
        if not (c1.embeddings or c1.encoder):  # as allmrec_table's rows: the reference file, else minilm
            from jaxrec.init import resolve_embedding_source

            c1 = c1.replace(**resolve_embedding_source(c1).config_fields())
        if args.budget_minutes:
            c1 = c1.replace(time_budget_minutes=BUDGET_SHARE["stage1"] * args.budget_minutes)
        t0 = time.perf_counter()
        jaxrec.fit(jaxrec.get_model(c1), ds, c1, out_dir=out / "stage1", resume=args.resume,
                   overwrite=not args.resume, prepared=prepared)
        seconds["stage1_fit"] = time.perf_counter() - t0
        args.stage1_run = out / "stage1"
    if args.stage1_run:
        inputs = stage1_inputs(args.stage1_run, ds)
    elif args.inputs:
        inputs = load_inputs(args.inputs, ds)
    else:
        inputs = s_inputs
    inputs_path = save_inputs(out / "stage2_inputs.npz", inputs)  # a record of what stage 2 read

    # 3. stage 2
    c2 = stage2_config(args, **({"stage1_run": str(args.stage1_run or inputs_path)} if inputs.kind == "stage1" else
                                {"sasrec_run": str(inputs_path)}))
    if args.budget_minutes:
        left = args.budget_minutes - (time.perf_counter() - started) / 60 - TEST_RESERVE_MINUTES[c2.answer]
        if left <= 0:
            raise ConfigError(f"--budget-minutes {args.budget_minutes}: {left + TEST_RESERVE_MINUTES[c2.answer]:.1f} "
                              f"min left after SASRec / stage 1, less than the test evaluation's "
                              f"{TEST_RESERVE_MINUTES[c2.answer]} min")
        c2 = c2.replace(time_budget_minutes=left, epochs=max(c2.epochs, 1000))
        log.info("stage 2 trains for %.1f min (budget %.0f min)", left, args.budget_minutes)
    t0 = time.perf_counter()
    r2 = jaxrec.fit(jaxrec.get_model(c2), ds, c2, out_dir=out / "stage2", resume=args.resume,
                    overwrite=not args.resume, prepared=prepared)
    seconds["stage2_fit"] = time.perf_counter() - t0
    seconds["stage2_epochs"] = [{k: h.get(k) for k in ("train_seconds", "eval_seconds")} for h in r2.history]

    # 4. SASRec on the same users and candidates
    ex, items, _ = stage2_fit.evaluation_lists(ds, "test", c2)
    groups = stage2_fit.item_groups(ds)
    rows = {"overall": np.ones(len(ex), bool), **{g: np.isin(ex.target, m) for g, m in groups.items()}}
    u, it = s_inputs.user_rep["test"][ex.users], s_inputs.item_emb[items]
    sasrec = _group_metrics(candidate_ranks(np.einsum("md,mcd->mc", u, it)), rows, items.shape[1])
    stage1 = {}
    if inputs.kind == "stage1" and args.stage1_run:  # the stage-1 recommender u . f_I^dec(z_i), same users/lists
        u1, i1 = load_stage1_run(args.stage1_run, ds).recommender_embeddings("test")
        stage1 = _group_metrics(candidate_ranks(np.einsum("md,mcd->mc", u1[ex.users], i1[items])), rows,
                                items.shape[1])
    t2 = r2.test_metrics

    def lm_group(key: str) -> dict:
        out_ = {}
        for g in rows:
            p = "" if g == "overall" else f"{g}/"
            out_[g] = {m: t2.get(f"{p}{m}{key}") for m in METRICS}
            out_[g]["users"] = int(t2.get("users" if g == "overall" else f"{g}/users", 0))
        return out_

    lm_sum, lm_mean = lm_group("_sum"), lm_group("_mean")
    gen = {g: {"hit@1": t2.get(("" if g == "overall" else f"{g}/") + "hit@1_generate"),
               "hit@1_substring": t2.get(("" if g == "overall" else f"{g}/") + "hit@1_generate_substring"),
               "on_list": t2.get(("" if g == "overall" else f"{g}/") + "generate_on_list")} for g in rows}

    counts = np.bincount(ds.train.item, minlength=ds.num_items).astype(np.float64)
    popularity = _group_metrics(candidate_ranks(counts[items]), rows, items.shape[1])
    summary = {"users": int(len(ex)), "lm_hit@1": t2.get("hit@1"), "popularity_hit@1": popularity["overall"]["hit@1"],
               "sasrec_hit@1": sasrec["overall"]["hit@1"], "stage1_hit@1": stage1.get("overall", {}).get("hit@1"),
               "minutes": (time.perf_counter() - started) / 60, "variant": args.variant,
               "budget_minutes": args.budget_minutes, "stage2_epochs": len(r2.history),
               "stage2_train_examples": len(stage2_fit.training_examples(ds, c2)) * len(r2.history), "seed": args.seed,
               "config": c2.to_dict()}
    if args.budget_minutes:  # the headline claim, checkable in one file
        report.write_json(out / "summary.json", summary)

    # 5. filter-then-rerank of SASRec's top-k (a title answer ranks any K; an index answer its labels' count)
    rr_metrics = {}
    if not args.no_rerank and (c2.answer == "title" or args.rerank_k == c2.prompt_candidates):
        ctx = prepared.contexts(stage2_fit.CONTEXT, c2)["test"]
        top = recommender_top(s_inputs.user_rep["test"], s_inputs.item_emb, ex.users, ds, "test", args.rerank_k)
        t0 = time.perf_counter()
        rr = rerank(ctx, r2.params, ex.users, ex.history, top, ex.target, seed=args.seed, user_names=ex.user_ids,
                    batch_size=c2.lm_batch_size)
        seconds["rerank"] = time.perf_counter() - t0
        rr_metrics = {g: rr.metrics(c2.lm_score, rows=sel) for g, sel in rows.items()}

    # table
    kind = ("stage-1 joint embeddings (A-LLMRec)" if inputs.kind == "stage1" else
            "SASRec fallback item table (no stage 1: not A-LLMRec)" if inputs.kind == "sasrec" else inputs.kind)
    cols = list(rows)
    head = ["row"] + [f"{c} hit@1" for c in cols] + ["hit@5", "ndcg@5", "mrr", "users"]
    body = []

    def line(label, per):
        ov = per.get("overall", {})
        body.append([label] + [report.fmt(per.get(c, {}).get("hit@1")) for c in cols]
                    + [report.fmt(ov.get(m)) if ov.get(m) is not None else "-" for m in ("hit@5", "ndcg@5", "mrr")]
                    + [str(int(ov.get("users", 0)))])

    line("Popularity (training counts)", popularity)
    line("SASRec", sasrec)
    if stage1:
        line("A-LLMRec stage 1 (u . f_I^dec(z))", stage1)
    else:
        body.append(["A-LLMRec stage 1"] + ["n/a (no stage-1 run)"] + ["n/a"] * (len(head) - 2))
    if c2.answer == "index":
        line(f"A-LLMRec stage 2 ({args.variant}), LM rank (label logits)", lm_group(""))
    else:
        line("A-LLMRec stage 2, LM rank (sum log-lik)", lm_sum)
        line("A-LLMRec stage 2, LM rank (mean log-lik)", lm_mean)
        line("A-LLMRec stage 2, generation (exact title)", {g: {"hit@1": v["hit@1"], "users": lm_sum[g]["users"]}
                                                            for g, v in gen.items()})
        line("A-LLMRec stage 2, generation (ref. substring)",
             {g: {"hit@1": v["hit@1_substring"], "users": lm_sum[g]["users"]} for g, v in gen.items()})
    text = report.format_table(head, body, title=(
        f"A-LLMRec rows on {report.dataset_label(args.dataset)}, LM {args.lm}, inputs: {kind}; "
        f"stage 2 trained on {r2.config.train_users or 'all'} users x {len(r2.history)} epoch(s); "
        f"test: {len(ex)} users, 20 candidates (target + 19 never-interacted), seed {args.seed}"))
    if rr_metrics:
        k = args.rerank_k
        rhead = ["filter-then-rerank"] + [f"{c} hit@1" for c in cols] + ["hit@5", "ndcg@5", f"recall@{k}"]
        rbody = []
        for label, pre in ((f"SASRec top-{k}", "recommender/"), (f"SASRec top-{k} re-ranked by the LM", "lm/")):
            ov = rr_metrics["overall"]
            rbody.append([label] + [report.fmt(rr_metrics[c].get(f"{pre}hit@1")) for c in cols]
                         + [report.fmt(ov[f"{pre}hit@5"]), report.fmt(ov[f"{pre}ndcg@5"]), report.fmt(ov[f"recall@{k}"])])
        text += "\n\n" + report.format_table(rhead, rbody, title=(
            f"Filter-then-rerank on the same {len(ex)} test users: SASRec's top {k} of every unseen item "
            f"(a target outside it is a miss)"))
    text += (f"\n\ntimes (s): SASRec fit {seconds['sasrec_fit']:.0f}, stage-2 fit (train + valid + test) "
             f"{seconds['stage2_fit']:.0f}" + (f", rerank {seconds['rerank']:.0f}" if "rerank" in seconds else ""))
    results = {"command": command, "inputs": {"kind": inputs.kind, "source": inputs.source}, "summary": summary,
               "popularity": popularity,
               "sasrec": sasrec, "stage1": stage1, "stage2_sum": lm_sum, "stage2_mean": lm_mean, "stage2_generate": gen,
               "rerank": rr_metrics, "stage2_test_metrics": t2, "stage2_valid_metrics": r2.valid_metrics,
               "stage2_history": r2.history, "sasrec_test_metrics": s_test, "sasrec_run": str(s_dir),
               "stage1_run": str(args.stage1_run) if args.stage1_run else None, "sasrec_best_epoch": s_best, "seconds": seconds, "users": [str(x) for x in ex.user_ids]}
    report.write_json(out / "results.json", results)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
