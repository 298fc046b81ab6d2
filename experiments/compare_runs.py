"""Paired significance of two trained runs on the same test users: run B against run A.

Loads both run folders (``jaxrec.serve.load_run``: config, dataset checked against the run's
fingerprint, best parameters), evaluates each on its test stage with its own protocol asking for
the per-user values (the means are checked against each run's ``results.json``), and prints the
paired t-test and Wilcoxon signed-rank p-values over users (``experiments.report.paired_test``)
for each metric. Both runs must have been trained on the same split (same dataset, split and
seed): the users are paired one to one.

    python -m experiments.compare_runs checkpoints/default-lightgcn checkpoints/tuned-lightgcn
    python -m experiments.compare_runs RUN_A RUN_B --metrics ndcg@10,full_ndcg@10
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments import cli, report
from jaxrec.config import ConfigError


def per_user_test(run_dir: str) -> tuple[dict, dict]:
    """``(means, per_user)`` of a run folder's best parameters on its test stage."""
    from jaxrec.eval.protocols import make_evaluator
    from jaxrec.registry import EVALUATIONS
    from jaxrec.serve import load_run
    from jaxrec.train import SingleDevice, prepare

    run = load_run(run_dir)
    if not EVALUATIONS.get(run.config.evaluation, "evaluation").per_user:
        raise ConfigError(f"{run_dir}: evaluation={run.config.evaluation!r} gives no per-user metrics")
    prep = prepare(run.dataset)
    context = prep.contexts(run.model.context, run.config)["test"]
    means, users = make_evaluator(prep, run.config, SingleDevice())(run.model.embed(run.params, context), "test",
                                                                     per_user=True)
    stored = run.results["test"] if run.results else {}
    off = [k for k in means if k in stored and abs(means[k] - stored[k]) > 1e-9]
    if off:
        raise ConfigError(f"{run_dir}: re-evaluated test metrics differ from results.json ({off[:3]})")
    return means, users


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.compare_runs", description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", help="the baseline run folder")
    p.add_argument("run_b", help="the run compared with it")
    p.add_argument("--metrics", default=None, help="comma-separated test metrics (default: recall@10,ndcg@10 and "
                                                   "their full-ranking view where the runs have one)")
    args = p.parse_args(argv)
    from jaxrec.train.runfolder import RunFolder

    fa, fb = RunFolder.read(args.run_a).fingerprint, RunFolder.read(args.run_b).fingerprint
    if fa != fb:
        diff = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
        raise ConfigError(f"{args.run_a} and {args.run_b} were trained on different data or splits (dataset "
                          f"fingerprints differ in {', '.join(diff)}); a paired test needs the same test users and items")
    _, a = per_user_test(args.run_a)
    _, b = per_user_test(args.run_b)
    if not np.array_equal(a["user"], b["user"]):
        raise ConfigError(f"{args.run_a} and {args.run_b} were tested on different users (another split or seed); "
                          "a paired test needs the same ones")
    metrics = cli.parse_list(args.metrics) or [m for m in (*report.METRICS, *(f"full_{m}" for m in report.METRICS))
                                               if m in a and m in b]
    rows = []
    for m in metrics:
        if m not in a or m not in b:
            raise ConfigError(f"--metrics: {m!r} is not a per-user test metric of both runs "
                              f"({', '.join(k for k in a if k != 'user')})")
        t = report.paired_test(a[m], b[m])
        rows.append([m, str(t["n"]), report.fmt(t["mean_a"]), report.fmt(t["mean_b"]),
                     report.fmt_gain(report.relative_gain(t["mean_b"], t["mean_a"])), f"{t['t']:.2f}",
                     report.fmt_p(t["p_t"]), report.fmt_p(t["p_w"])])
    print(report.format_table(["metric", "users", "A", "B", "B vs A", "t", "p (t-test)", "p (Wilcoxon)"], rows,
                              title=f"test, paired over users: A = {args.run_a}, B = {args.run_b}"))
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
