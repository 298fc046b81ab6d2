"""SASRec training step alone: jaxrec's jitted step vs the PyTorch reference port's, same batches, same run.

What ``benchmarks/sasrec_parity.py``'s "s/epoch" holds, split into its parts. Both sides of
the parity run time the same loop: drawing the epoch's batches on the host
(``window_batches``: a permutation, the negatives of every position, slicing; shared code)
and the steps; jaxrec additionally splits its step keys and transfers each numpy batch at
the jitted call, and steps on 8 batches of 128 rows (the last one completed with padding rows,
one compiled shape) where torch steps on 7 x 128 + 47 rows (8.6% fewer rows). Here,
interleaved rounds (``benchmarks.common.bench_interleaved``'s protocol: warm-up, calls per
sample calibrated to ``--target-s``, the order rotated each round, medians) time, in wall
time and in the process's CPU time (all threads; on a shared machine the steadier figure):

- ``draw``: one epoch of host batches (943 windows, negatives drawn), shared by both sides;
- ``jaxrec step`` / ``torch step``: one training step (forward, backward, Adam) on the same
  full 128-row batch (the step ``jaxrec.fit`` jits: ``Partitioner.step(train_step(model,
  optimizer))``, params and optimizer state donated, blocked on the loss; ``ts.train_step``);
- ``jaxrec epoch`` / ``torch epoch``: what the parity benchmark's "s/epoch" measures: an
  epoch drawn and stepped as ``jaxrec.fit``'s ``EpochRunner`` / the parity torch loop do
  (no evaluation).

Both start from the same weights (``model.init``, copied into ``TorchSASRec``).

    python benchmarks/sasrec_step.py --xla-threads 1 --rounds 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if "--xla-threads" in sys.argv[1:-1] and sys.argv[sys.argv.index("--xla-threads") + 1] == "1":
    # before jax starts its CPU backend (as benchmarks/sasrec_parity.py)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import jax
import numpy as np
import torch

from benchmarks import torch_sasrec as ts
from benchmarks.common import (
    calibrate,
    data_dir,
    machine_line,
    median,
    spread,
    table,
    versions_line,
)
from jaxrec.config import Config
from jaxrec.data import load_dataset
from jaxrec.models import get_model
from jaxrec.train import SingleDevice, batch_source, prepare
from jaxrec.train.loop import EpochRunner, epoch_rng, make_optimizer
from jaxrec.train.state import init_state, run_keys
from jaxrec.train.step import train_step


def load_line() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--target-s", type=float, default=0.5, help="seconds per sample (calls calibrated to it)")
    ap.add_argument("--no-epochs", action="store_true", help="time the steps and the draw only")
    ap.add_argument("--dropout-rng", default="hash", choices=["hash", "threefry"])
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--xla-threads", choices=["1", "default"], default="default",
                    help="1: XLA runs each operation on one thread (XLA_FLAGS set before jax starts)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    config = Config.for_model("sasrec", dataset=args.dataset, data_dirs=(str(data_dir()),), seed=args.seed,
                              dropout_rng=args.dropout_rng)
    ds = load_dataset(args.dataset, config)
    prepared = prepare(ds)
    model = get_model(config)
    keys = run_keys(config.seed)
    params = model.init(keys.init, ds.num_users, ds.num_items)
    net = ts.from_jaxrec(params, ds.num_items, config.embedding_size, config.num_layers, config.num_heads,
                         config.dropout_rate, config.max_seq_len, config.seq_norm)
    opt_t = ts.make_optimizer(net, config.learning_rate)
    optimizer = make_optimizer(config)
    part = SingleDevice()
    step = part.step(train_step(model, optimizer))
    source = batch_source(model, prepared, config)
    context = prepared.contexts(model.context, config)["train"]
    views = model.epoch_views(context, jax.random.key(0))
    batches = [b for b in source.epoch(np.random.default_rng(0)) if (b["user"] >= 0).all()]  # full batches only
    placed = [part.place_batch({k: jax.device_put(v) for k, v in b.items()}) for b in batches]
    print(f"# SASRec step: {ds!r}; {len(batches)} full batches of {config.batch_size} x {config.max_seq_len}, "
          f"hidden {config.embedding_size}, {config.num_layers} blocks, {config.num_heads} head, dropout "
          f"{config.dropout_rate} ({args.dropout_rng} masks in jaxrec)")
    print(f"# {machine_line()}; torch threads {torch.get_num_threads()}; XLA threads {args.xla_threads} "
          f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); {versions_line()}")

    state = {"j": init_state(params, optimizer, keys.train, part), "n": 0, "key": jax.random.key(1)}

    def jax_step():
        s, i = state["j"], state["n"] % len(placed)
        state["key"], sub = jax.random.split(state["key"])
        p, o, loss, _ = step(s.params, s.opt_state, context, views, placed[i], sub)
        state["j"], state["n"] = s.replace(params=p, opt_state=o), state["n"] + 1
        jax.block_until_ready(loss)

    tn = {"n": 0}

    def torch_step():
        ts.train_step(net, opt_t, batches[tn["n"] % len(batches)])
        tn["n"] += 1

    draws = {"n": 0}

    def draw():
        draws["n"] += 1
        list(source.epoch(np.random.default_rng(draws["n"])))

    fns = {"draw": draw, "jaxrec step": jax_step, "torch step": torch_step}
    if not args.no_epochs:
        runner = EpochRunner(model, part, step, source)
        ep = {"n": 0, "key": keys.train}

        def jax_epoch():
            ep["n"] += 1
            state["j"], _ = runner(state["j"], context, ep["n"])  # ends on float(loss): blocks

        def torch_epoch():  # the parity benchmark's torch loop, without validation
            ep["key"], epoch_key = jax.random.split(ep["key"])
            for batch in source.epoch(epoch_rng(epoch_key)):
                real = batch["user"] >= 0
                ts.train_step(net, opt_t, {k: v[real] for k, v in batch.items()})

        fns.update({"jaxrec epoch": jax_epoch, "torch epoch": torch_epoch})
    print(f"  start: {load_line()}", flush=True)
    wall, cpu = bench_wall_cpu(fns, args.rounds, args.target_s)
    print(f"  end: {load_line()}", flush=True)
    rows = [[name, f"{1e3 * median(wall[name]):.1f}", spread(wall[name]), f"{1e3 * median(cpu[name]):.1f}",
             spread(cpu[name]), len(wall[name])] for name in fns]
    print(table(["what", "wall ms (median)", "min/max", "CPU ms (median)", "min/max", "samples"], rows,
                align="lrrrrr"))
    pairs = [("step", "jaxrec step", "torch step")]
    if not args.no_epochs:
        pairs.append(("epoch (draw + steps, no evaluation)", "jaxrec epoch", "torch epoch"))
    for what, j, t in pairs:
        for clock, s in (("wall", wall), ("CPU", cpu)):
            per_round = [b / a for a, b in zip(s[j], s[t])]
            print(f"{what}, {clock}: torch / jaxrec = {median(s[t]) / median(s[j]):.2f}x (ratio of medians); "
                  f"per round: median {median(per_round):.2f}x, {min(per_round):.2f}x to {max(per_round):.2f}x")
    if not args.no_epochs:
        print(f"draw share of an epoch (wall): jaxrec {median(wall['draw']) / median(wall['jaxrec epoch']):.1%}, "
              f"torch {median(wall['draw']) / median(wall['torch epoch']):.1%}")


def bench_wall_cpu(fns: dict, rounds: int, target_s: float) -> tuple[dict, dict]:
    """``bench_interleaved``'s protocol (2 warm-up calls each, calls per sample calibrated to
    ``target_s``, rounds in an order rotated each round, a pause between samples), recording
    per call both the wall time and the process's CPU time (every thread: the Python thread,
    XLA's and torch's workers). On a machine shared with other jobs the CPU time is the
    steadier figure: it counts the work done, not the time spent waiting for a core."""
    names = list(fns)
    for n in names:
        for _ in range(2):
            fns[n]()
    number = {n: calibrate(fns[n], target_s) for n in names}
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.05)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(number[n]):
                fns[n]()
            wall[n].append((time.perf_counter() - t0) / number[n])
            cpu[n].append((time.process_time() - c0) / number[n])
    return wall, cpu


if __name__ == "__main__":
    main()
