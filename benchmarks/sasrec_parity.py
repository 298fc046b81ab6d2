"""SASRec parity and speed: jaxrec (Flax NNX, jit) vs the PyTorch reference port, same run.

For each seed both implementations start from the same weights (``init_params(key(seed))``,
copied into ``benchmarks/torch_sasrec.TorchSASRec``), train on the same batches
(``window_batches``: every user's window once per epoch, negatives drawn per epoch) with
Adam(1e-3, betas (0.9, 0.98)), batch 128, and are scored on the same stored test candidate
lists (target + 19 never-interacted items, ``jaxrec.eval.candidates``). Dropout masks differ
(each library draws its own), so the two runs are two samples of the same procedure: compare
metric means over seeds, not single numbers. Epochs are interleaved (the order alternates),
and epoch time is the median over epochs after the first (which includes jit compilation).

The jaxrec side uses a simple loop of its own for now (``jaxrec.fit`` once SASRec is
registered). Printed: per seed and implementation, test Hit@1 / Hit@5 / NDCG@5 / NDCG@10 / MRR
on the candidate lists, full-ranking NDCG@10 (the second view, ``jaxrec.eval.evaluate``), the
median epoch time; then means and the torch / jaxrec epoch-time ratio.

    python benchmarks/sasrec_parity.py --seeds 2020 2021 2022 --epochs 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from benchmarks import torch_sasrec as ts  # noqa: E402
from benchmarks.common import data_dir, machine_line, table, versions_line  # noqa: E402
from jaxrec.config import Config  # noqa: E402
from jaxrec.data import exclusion_pairs, load_dataset, truth  # noqa: E402
from jaxrec.data.sequences import histories, training_windows, user_sequences, window_batches  # noqa: E402
from jaxrec.eval import evaluate  # noqa: E402
from jaxrec.eval.candidates import candidate_metrics, candidates_for, dot_scores  # noqa: E402
from jaxrec.models.sasrec import SASRecSettings, bce_loss, embed, init_params  # noqa: E402

METRICS = ("hit@1", "hit@5", "ndcg@5", "ndcg@10", "mrr")
TIMES = ("first epoch s", "s/epoch")


def make_jax_step(settings: SASRecSettings, lr: float):
    opt = optax.adam(lr, b1=0.9, b2=0.98)

    @jax.jit
    def step(params, state, batch, key):
        (loss, _), grads = jax.value_and_grad(bce_loss, has_aux=True)(params, batch, settings, key)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return opt, step


def run_seed(ds, windows, cands, hist, settings, seed, epochs, batch_size, lr, log_every):
    params = init_params(jax.random.key(seed), settings)
    model = ts.from_jaxrec(params, settings.num_items, settings.hidden, settings.num_blocks, settings.num_heads,
                           settings.dropout, settings.max_len, settings.norm)
    torch.manual_seed(seed)
    opt_t = ts.make_optimizer(model, lr)
    opt, step = make_jax_step(settings, lr)
    state = opt.init(params)
    key = jax.random.key(seed + 1)
    times = {"jaxrec": [], "torch": []}
    for epoch in range(epochs):
        batches = list(window_batches(np.random.default_rng([seed, epoch]), windows, batch_size))
        losses = {}

        def jax_epoch():
            nonlocal params, state, key
            out = []
            for b in batches:
                key, sub = jax.random.split(key)
                params, state, loss = step(params, state, b, sub)
                out.append(loss)
            losses["jaxrec"] = float(np.mean(jax.device_get(out)))

        def torch_epoch():
            losses["torch"] = float(np.mean([ts.train_step(model, opt_t, b) for b in batches]))

        order = [("jaxrec", jax_epoch), ("torch", torch_epoch)]
        for name, fn in (order if epoch % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if log_every and (epoch % log_every == 0 or epoch == epochs - 1):
            print(f"  seed {seed} epoch {epoch + 1:>3}: loss jaxrec {losses['jaxrec']:.4f} "
                  f"torch {losses['torch']:.4f}; s/epoch {times['jaxrec'][-1]:.3f} / {times['torch'][-1]:.3f}", flush=True)
    # evaluation on the same candidate lists; full ranking as the second view
    user_j, item_j = jax.jit(lambda p, h: embed(p, h, settings))(params, hist)
    user_j, item_j = np.asarray(user_j), np.asarray(item_j)
    model.eval()
    with torch.no_grad():
        user_t = np.concatenate([model.log2feats(torch.from_numpy(hist[s:s + 1024]).long())[:, -1].numpy()
                                 for s in range(0, len(hist), 1024)])
        item_t = model.item_emb.weight[1:].numpy()
    rows = {}
    test_truth, test_ex = truth(ds, "test"), exclusion_pairs(ds, "test")
    for name, ue, ie in (("jaxrec", user_j, item_j), ("torch", user_t, item_t)):
        m = candidate_metrics(dot_scores(ue, ie, cands), METRICS)
        m["full ndcg@10"] = evaluate(ue, ie, None, test_ex, test_truth, ks=(10,), metrics=("ndcg",))["ndcg@10"]
        m["first epoch s"] = times[name][0]
        m["s/epoch"] = statistics.median(times[name][1:]) if len(times[name]) > 1 else times[name][0]
        rows[name] = m
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--norm", default="reference", choices=["reference", "prenorm"])
    ap.add_argument("--candidates", default="checkpoints/candidates", help="folder of the stored candidate lists")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    cfg = Config(split="loo_time", data_dirs=(str(data_dir()),))
    ds = load_dataset(args.dataset, cfg)
    seq_data = user_sequences(ds)
    windows = training_windows(seq_data, args.max_len)
    hist = histories(seq_data, "test", args.max_len)
    settings = SASRecSettings(num_items=ds.num_items, max_len=args.max_len, norm=args.norm)
    print(f"# SASRec parity: {ds!r}; {seq_data.report}")
    print(f"# {settings}; batch {args.batch_size}, Adam(lr {args.lr}, betas (0.9, 0.98)), {args.epochs} epochs, "
          f"{len(windows)} windows = {-(-len(windows) // args.batch_size)} steps per epoch")
    print(f"# {machine_line()}; torch threads {torch.get_num_threads()}; {versions_line()}")
    results = []
    for seed in args.seeds:
        cands = candidates_for(args.candidates, ds, "test", seed)
        results.append((seed, run_seed(ds, windows, cands, hist, settings, seed, args.epochs,
                                       args.batch_size, args.lr, args.log_every)))
    cols = list(METRICS) + ["full ndcg@10", *TIMES]
    rows = [[seed, name] + [f"{m[c]:.3f}" if c in TIMES else f"{m[c]:.4f}" for c in cols]
            for seed, per_impl in results for name, m in per_impl.items()]
    rows += [["mean", name] + [f"{np.mean([r[name][c] for _, r in results]):.4f}" for c in cols]
             for name in ("jaxrec", "torch")]
    ratio = np.mean([r["torch"]["s/epoch"] / r["jaxrec"]["s/epoch"] for _, r in results])
    print(table(["seed", "implementation"] + cols, rows, align="ll" + "r" * len(cols)))
    print(f"\nepoch time torch / jaxrec (median epochs, mean over seeds): {ratio:.2f}x")


if __name__ == "__main__":
    main()
