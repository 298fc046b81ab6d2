"""SASRec parity and speed: jaxrec (``jaxrec.fit``) vs the PyTorch reference port, same run.

For each seed both implementations start from the same weights (``model.init`` with the seed's
init key, copied into ``benchmarks/torch_sasrec.TorchSASRec``), train with Adam(1e-3, betas
(0.9, 0.98)) on the same batches (jaxrec's ``"sequences"`` batch kind: every user's window
once per epoch, negatives drawn per epoch; the torch side replays the epoch keys ``fit``
derives, so it draws exactly the batches jaxrec trains on, without jaxrec's padding rows),
validate every epoch on the same stored candidate lists (``evaluation="candidates"``: target
+ 19 never-interacted items), stop early with the same rule (RecBole's, ``patience``
evaluations of ``valid_metric`` without improvement) and are tested at their best epoch on the
same test lists, with the full ranking as the second view. Dropout masks differ (each library
draws its own), so the two runs are two samples of the same procedure: compare metric means
over seeds against the spread over seeds, not single numbers.

Epoch time is training only (no evaluation): jaxrec's ``train_seconds`` and the torch loop's,
medians over epochs after the first (jaxrec's first includes compiling the step). The order of
the two implementations alternates between seeds (the machine is shared: its load drifts);
the load average is printed before each run. ``--xla-threads 1`` runs XLA's operations on
one thread, like torch's with ``--torch-threads 1`` (on a shared 2-core machine both libraries
lose time to threads waiting for each other; torch with 2 threads thrashes here).

    python benchmarks/sasrec_parity.py --seeds 2020 2021 2022 --torch-threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if "--xla-threads" in sys.argv[1:-1] and sys.argv[sys.argv.index("--xla-threads") + 1] == "1":
    # before jax starts its CPU backend: XLA's operations on one thread, as torch's with --torch-threads 1
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import torch_sasrec as ts  # noqa: E402
from benchmarks.common import data_dir, machine_line, table, versions_line  # noqa: E402
from jaxrec.config import Config  # noqa: E402
from jaxrec.data import load_dataset  # noqa: E402
from jaxrec.eval.protocols import make_evaluator  # noqa: E402
from jaxrec.models import get_model  # noqa: E402
from jaxrec.train import EarlyStopping, SingleDevice, batch_source, fit, prepare  # noqa: E402
from jaxrec.train.loop import epoch_rng  # noqa: E402
from jaxrec.train.state import run_keys  # noqa: E402

METRICS = ("hit@1", "ndcg@10", "hit@5", "ndcg@5", "mrr", "full_ndcg@10")
MEAN_STD = ("hit@1", "ndcg@10", "full_ndcg@10")


def load_line() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_jaxrec(model, ds, config, prepared, params) -> dict:
    t0 = time.perf_counter()
    res = fit(model, ds, config, params=params, prepared=prepared, progress=False)
    secs = [h["train_seconds"] for h in res.history]
    return {**res.test_metrics, "epochs": len(res.history), "best_epoch": res.best_epoch,
            "first epoch s": secs[0], "s/epoch": statistics.median(secs[1:]) if len(secs) > 1 else secs[0],
            "wall s": time.perf_counter() - t0, "curve": [h["valid"][config.valid_metric] for h in res.history]}


def run_torch(model, ds, config, prepared, params) -> dict:
    """The reference loop on jaxrec's batches, validation and early stopping rule."""
    t0 = time.perf_counter()
    net = ts.from_jaxrec(params, ds.num_items, config.embedding_size, config.num_layers, config.num_heads,
                         config.dropout_rate, config.max_seq_len, config.seq_norm)
    opt = ts.make_optimizer(net, config.learning_rate)
    torch.manual_seed(config.seed)
    batches = batch_source(model, prepared, config)
    contexts = prepared.contexts(model.context, config)
    evaluate = make_evaluator(prepared, config, SingleDevice())

    def embeddings(stage):
        net.eval()
        with torch.no_grad():
            hist = torch.from_numpy(np.asarray(contexts[stage], dtype=np.int64))
            users = torch.cat([net.log2feats(hist[s:s + 1024])[:, -1] for s in range(0, len(hist), 1024)])
            return users.numpy(), net.item_emb.weight[1:].numpy().copy()

    key, early, best, secs, curve = run_keys(config.seed).train, EarlyStopping(), None, [], []
    for epoch in range(config.epochs):
        key, epoch_key = jax.random.split(key)  # the epoch keys jaxrec.fit derives
        t1 = time.perf_counter()
        for batch in batches.epoch(epoch_rng(epoch_key)):
            real = batch["user"] >= 0  # jaxrec pads the last batch to a fixed shape; torch needs no padding
            ts.train_step(net, opt, {k: v[real] for k, v in batch.items()})
        secs.append(time.perf_counter() - t1)
        valid = evaluate(embeddings("valid"), "valid")
        curve.append(valid[config.valid_metric])
        early = early.update(valid[config.valid_metric], epoch)
        if early.improved_at(epoch):
            best = copy.deepcopy(net.state_dict())
        if early.should_stop(config.patience) and epoch + 1 >= config.min_epochs:
            break
    net.load_state_dict(best)
    test = evaluate(embeddings("test"), "test")
    return {**test, "epochs": len(secs), "best_epoch": early.best_epoch, "first epoch s": secs[0],
            "s/epoch": statistics.median(secs[1:]) if len(secs) > 1 else secs[0],
            "wall s": time.perf_counter() - t0, "curve": curve}


def cell(column: str, value) -> str:
    if column in METRICS:
        return f"{value:.4f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def mean_std(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the config's 200)")
    ap.add_argument("--patience", type=int, default=None, help="early-stopping patience (default: the config's)")
    ap.add_argument("--norm", default="reference", choices=["reference", "prenorm"])
    ap.add_argument("--dropout-rng", default="hash", choices=["hash", "threefry"], help="jaxrec's dropout masks")
    ap.add_argument("--candidates", default="checkpoints/candidates", help="folder of the stored candidate lists")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--xla-threads", choices=["1", "default"], default="default",
                    help="1: XLA runs each operation on one thread (XLA_FLAGS set before jax starts), like "
                         "torch with --torch-threads 1; default: XLA's own thread pool (every core)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    extra = {k: v for k, v in (("epochs", args.epochs), ("patience", args.patience)) if v is not None}
    base = Config.for_model("sasrec", dataset=args.dataset, data_dirs=(str(data_dir()),), candidates_dir=args.candidates,
                            seq_norm=args.norm, dropout_rng=args.dropout_rng, **extra)
    ds = load_dataset(args.dataset, base)
    prepared = prepare(ds)
    print(f"# SASRec parity: {ds!r}")
    print(f"# hidden {base.embedding_size}, {base.num_layers} blocks, {base.num_heads} head, dropout {base.dropout_rate} "
          f"({args.dropout_rng} masks in jaxrec), max_len {base.max_seq_len}, norm {base.seq_norm}; batch "
          f"{base.batch_size}, Adam(lr {base.learning_rate}, betas ({base.adam_b1}, {base.adam_b2})); up to "
          f"{base.epochs} epochs, early stopping on valid {base.valid_metric} (patience {base.patience})")
    print(f"# {machine_line()}; torch threads {torch.get_num_threads()}; XLA threads {args.xla_threads} "
          f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); {versions_line()}")
    results = []
    for n, seed in enumerate(args.seeds):
        config = base.replace(seed=seed)
        model = get_model(config)
        params = model.init(run_keys(seed).init, ds.num_users, ds.num_items)
        runs = {"jaxrec": run_jaxrec, "torch": run_torch}
        order = list(runs) if n % 2 == 0 else list(runs)[::-1]
        per = {}
        for name in order:
            print(f"  seed {seed} {name}: start, {load_line()}", flush=True)
            per[name] = runs[name](model, ds, config, prepared, params)
            r = per[name]
            print(f"  seed {seed} {name}: {r['epochs']} epochs (best {r['best_epoch']}), hit@1 {r['hit@1']:.4f}, "
                  f"ndcg@10 {r['ndcg@10']:.4f}, {r['s/epoch']:.3f} s/epoch, {r['wall s']:.0f} s in all, "
                  f"{load_line()}", flush=True)
        results.append((seed, per))
    cols = list(METRICS) + ["epochs", "best_epoch", "first epoch s", "s/epoch"]
    rows = [[seed, name] + [cell(c, m[c]) for c in cols] for seed, per in results for name, m in per.items()]
    print(table(["seed", "implementation"] + cols, rows, align="ll" + "r" * len(cols)))
    print()
    summary = [[name] + [mean_std(per[name][c] for _, per in results) for c in MEAN_STD]
               + [f"{statistics.mean(per[name]['s/epoch'] for _, per in results):.3f}"] for name in ("jaxrec", "torch")]
    print(table(["implementation"] + [f"{c} (mean ± std)" for c in MEAN_STD] + ["s/epoch"], summary,
                align="l" + "r" * (len(MEAN_STD) + 1)))
    for c in ("hit@1", "ndcg@10"):
        j = [per["jaxrec"][c] for _, per in results]
        t = [per["torch"][c] for _, per in results]
        spread = max(statistics.stdev(j), statistics.stdev(t)) if len(results) > 1 else float("nan")
        print(f"{c}: |mean jaxrec - mean torch| = {abs(statistics.mean(j) - statistics.mean(t)):.4f}; "
              f"larger seed std {spread:.4f}")
    ratios = [per["torch"]["s/epoch"] / per["jaxrec"]["s/epoch"] for _, per in results]
    print(f"epoch time torch / jaxrec (median epochs per seed): {', '.join(f'{r:.2f}x' for r in ratios)}; "
          f"mean {statistics.mean(ratios):.2f}x")
    print(f"# finished, {load_line()}")


if __name__ == "__main__":
    main()
