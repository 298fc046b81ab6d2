"""A-LLMRec rows: stage 2 (projectors into a frozen LM) beside SASRec on the same users and candidates.

The pipeline, every training a ``jaxrec.fit`` run folder under ``--out`` (``--resume`` reuses them):

1. SASRec (A-LLMRec's pretraining protocol, ``Config.for_model("sasrec")``) on the dataset;
2. stage-2 inputs (``jaxrec.align.stage2_inputs``): the user representations per stage and the
   item embeddings. Stage 1 (the alignment network's joint item embeddings) has not landed in
   this checkout, so the rows use the **SASRec fallback** (``sasrec_inputs``: SASRec's own item
   table, d = 50, as the "joint" item embeddings; ``--inputs FILE`` takes a stage-1 export
   written by ``save_inputs`` instead). The table names which one it used;
3. stage 2 (``allmrec_stage2``) on a seeded sample of ``--train-users`` training users, early
   stopping on ``--valid-users`` validation users, tested on ``--eval-users`` test users with the
   stored 20-candidate lists (the same lists as SASRec's ``candidates`` protocol), candidates
   shown in a seeded random order;
4. on exactly those test users: SASRec's Hit@1 / Hit@5 / NDCG@5 / MRR on the same candidates,
   overall and on cold / warm items (targets among the 35 % least / most trained items); the
   LM's ranking (sum and per-token mean log-likelihood), its greedy generation (exact title and
   the reference's substring rule);
5. filter-then-rerank (``jaxrec.align.rerank``): SASRec's top 20 over every unseen item,
   re-ordered by the trained stage-2 LM.

Rows "A-LLMRec stage 1" are "n/a" until stage 1 lands (its own recommendation is the user
representation against the decoded joint item embeddings).

    python -m experiments.allmrec_stage2 --dataset ml-100k --train-users 256 --eval-users 100
    # the full protocol on a GPU (every user, 10 epochs as the reference; OPT-6.7B as a folder):
    python -m experiments.allmrec_stage2 --dataset ml-100k --train-users 0 --eval-users 0 \\
        --valid-users 200 --stage2-epochs 10 --lm /path/to/opt-6.7b --set lm_dtype=bfloat16

Writes ``table.txt``, ``results.json`` and the run folders ``sasrec/``, ``stage2/`` into
``--out`` (default ``checkpoints/allmrec_stage2/<dataset>-s<seed>``).
"""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k", help="dataset name or folder (default ml-100k)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--lm", default="smollm2", help="frozen LM: smollm2 | a .gguf file | a Hugging Face folder")
    p.add_argument("--inputs", default=None,
                   help="stage-2 inputs .npz (a stage-1 export, jaxrec.align.stage2_inputs.save_inputs); default: "
                        "the SASRec fallback computed here")
    p.add_argument("--sasrec-epochs", type=int, default=200, help="SASRec epochs at most (default 200)")
    p.add_argument("--stage2-epochs", type=int, default=1, help="stage-2 epochs at most (reference: 10)")
    p.add_argument("--train-users", type=int, default=256, help="stage-2 training users (0: all)")
    p.add_argument("--valid-users", type=int, default=32, help="stage-2 validation users (0: as eval)")
    p.add_argument("--eval-users", type=int, default=100, help="test users compared (0: all)")
    p.add_argument("--rerank-k", type=int, default=20, help="filter-then-rerank list length (default 20)")
    p.add_argument("--no-rerank", action="store_true", help="skip filter-then-rerank")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="stage-2 config overrides (repeatable), e.g. lm_max_new_tokens=32")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="reuse finished run folders in --out")
    p.add_argument("--verbose", action="store_true")
    return p


def _group_metrics(ranks: np.ndarray, rows: dict[str, np.ndarray], num: int) -> dict[str, dict]:
    from jaxrec.eval.candidates import metrics_from_ranks

    return {g: ({**metrics_from_ranks(ranks[sel], num, METRICS), "users": int(sel.sum())} if sel.any() else {})
            for g, sel in rows.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    import jaxrec
    from jaxrec.align import stage2_fit
    from jaxrec.align.rerank import recommender_top, rerank
    from jaxrec.align.stage2 import project
    from jaxrec.align.stage2_inputs import load_inputs, sasrec_inputs, save_inputs
    from jaxrec.data import load_dataset
    from jaxrec.eval.candidates import candidate_ranks
    from jaxrec.models.sasrec import settings_from_config
    from jaxrec.train import prepare

    for name in ("sasrec_epochs", "stage2_epochs", "rerank_k"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected an integer >= 1")
    out = args.out or cli.default_out_dir(EXPERIMENT, f"{report.dataset_label(args.dataset)}-s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    seconds: dict[str, float] = {}

    # 1. SASRec
    s_cfg = Config.for_model("sasrec", dataset=str(args.dataset), seed=args.seed, epochs=args.sasrec_epochs)
    ds = load_dataset(s_cfg.dataset, s_cfg)
    prepared = prepare(ds)
    t0 = time.perf_counter()
    s_run = jaxrec.fit(jaxrec.get_model(s_cfg), ds, s_cfg, out_dir=out / "sasrec", resume=args.resume,
                       overwrite=not args.resume, prepared=prepared)
    seconds["sasrec_fit"] = time.perf_counter() - t0
    log.info("SASRec: best epoch %d, test hit@1 %.4f (%.0f s)", s_run.best_epoch, s_run.test_metrics.get("hit@1", np.nan),
             seconds["sasrec_fit"])

    # 2. stage-2 inputs
    if args.inputs:
        inputs = load_inputs(args.inputs, ds)
    else:
        inputs = sasrec_inputs(s_run.params, settings_from_config(s_cfg, ds.num_items), ds,
                               source=f"{out / 'sasrec'} (SASRec fallback: stage 1 not landed)")
    inputs_path = save_inputs(out / "stage2_inputs.npz", inputs)

    # 3. stage 2
    c2 = Config.for_model("allmrec_stage2", dataset=str(args.dataset), seed=args.seed, lm=args.lm,
                          epochs=args.stage2_epochs, train_users=args.train_users, eval_users=args.eval_users,
                          valid_users=args.valid_users,
                          **({"stage1_run": str(inputs_path)} if inputs.kind == "stage1" else
                             {"sasrec_run": str(inputs_path)})).with_overrides(args.set)
    t0 = time.perf_counter()
    r2 = jaxrec.fit(jaxrec.get_model(c2), ds, c2, out_dir=out / "stage2", resume=args.resume,
                    overwrite=not args.resume, prepared=prepared)
    seconds["stage2_fit"] = time.perf_counter() - t0
    seconds["stage2_epochs"] = [{k: h.get(k) for k in ("train_seconds", "eval_seconds")} for h in r2.history]

    # 4. SASRec on the same users and candidates
    ex, items, _ = stage2_fit.evaluation_lists(ds, "test", c2)
    groups = stage2_fit.item_groups(ds)
    rows = {"overall": np.ones(len(ex), bool), **{g: np.isin(ex.target, m) for g, m in groups.items()}}
    u, it = inputs.user_rep["test"][ex.users], inputs.item_emb[items]
    sasrec = _group_metrics(candidate_ranks(np.einsum("md,mcd->mc", u, it)), rows, items.shape[1])
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

    # 5. filter-then-rerank of SASRec's top-k
    rr_metrics = {}
    if not args.no_rerank:
        ctx = prepared.contexts(stage2_fit.CONTEXT, c2)["test"]
        tokens = project(r2.params, ctx.settings, ctx.user_rep, ctx.item_emb)
        top = recommender_top(inputs.user_rep["test"], inputs.item_emb, ex.users, ds, "test", args.rerank_k)
        t0 = time.perf_counter()
        rr = rerank(ctx, tokens, ex.users, ex.history, top, ex.target, seed=args.seed, user_names=ex.user_ids,
                    batch_size=c2.lm_batch_size)
        seconds["rerank"] = time.perf_counter() - t0
        rr_metrics = {g: rr.metrics(c2.lm_score, rows=sel) for g, sel in rows.items()}

    # table
    kind = "stage-1 joint embeddings" if inputs.kind == "stage1" else "SASRec fallback item table (stage 1 not landed)"
    cols = list(rows)
    head = ["row"] + [f"{c} hit@1" for c in cols] + ["hit@5", "ndcg@5", "mrr", "users"]
    body = []

    def line(label, per):
        ov = per.get("overall", {})
        body.append([label] + [report.fmt(per.get(c, {}).get("hit@1")) for c in cols]
                    + [report.fmt(ov.get(m)) if ov.get(m) is not None else "-" for m in ("hit@5", "ndcg@5", "mrr")]
                    + [str(int(ov.get("users", 0)))])

    line("SASRec", sasrec)
    body.append(["A-LLMRec stage 1"] + ["n/a"] * (len(head) - 1))
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
    results = {"command": command, "inputs": {"kind": inputs.kind, "source": inputs.source},
               "sasrec": sasrec, "stage2_sum": lm_sum, "stage2_mean": lm_mean, "stage2_generate": gen,
               "rerank": rr_metrics, "stage2_test_metrics": t2, "stage2_valid_metrics": r2.valid_metrics,
               "stage2_history": r2.history, "sasrec_test_metrics": s_run.test_metrics,
               "sasrec_best_epoch": s_run.best_epoch, "seconds": seconds, "users": [str(x) for x in ex.user_ids]}
    report.write_json(out / "results.json", results)
    (out / "table.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
