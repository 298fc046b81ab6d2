"""Sharded training: time per epoch vs device count, and memory per device vs graph size.

Two parts, one process run, on host CPU devices (``--xla_force_host_platform_device_count``,
set here to 8 unless XLA_FLAGS already asks for a count):

1. **Epoch time**: one LightGCN epoch (``make_train_step`` + ``run_epoch`` with the
   placement ``fit`` uses: sharded graph, parameters, optimizer state, batches split on
   the data axis) on a synthetic power-law graph, for 1, 2, 4, 8 devices and each
   strategy: ``feature`` (tables split along d, graph replicated), ``row`` (nodes and
   their edges split) with each block exchange (``ring``, ``direct``, ``allgather``); and the unsharded
   single-device baseline. A warm-up epoch compiles; the median of ``--epochs`` timed
   epochs is reported, with the largest parameter difference to the baseline after the
   same epochs (the numbers must agree to float round-off).
2. **Memory**: per-device bytes of the compiled training step (XLA's memory analysis of
   the SPMD program: arguments + outputs + temporaries - donated aliases) for graphs of
   increasing size on ``--mem-devices`` devices; the largest graph of the list that fits
   ``--budget-mib`` per device, with one step actually run at that size; and a linear
   extrapolation (from the two largest sizes) of the largest graph that would fit.

On this machine the "devices" are threads of one CPU sharing its cores and memory
(``PJRT_NPROC=32`` is set unless given: see the note at the imports):
more devices cannot make an epoch faster (the same 2 cores do all the work, plus the
collectives), so part 1 measures the overhead of the sharded programs, not a speed-up;
part 2's per-device accounting is what carries over to real accelerators.

    python benchmarks/scaling.py                                  # defaults below
    python benchmarks/scaling.py --edges 100000 --dim 64 --epochs 3 \\
        --mem-sizes 100000 300000 1000000 3000000 10000000 --budget-mib 512
    python benchmarks/scaling.py --skip-memory --devices 1 2 4 8
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# Several host "devices" on few cores: XLA:CPU sizes its thread pools max(cores, devices)
# and a device's program blocks a pool thread while it waits in a collective; with 8
# devices on 2 cores we hit "all gather rendezvous: 7 of 8 arrived" aborts. More pool
# threads (PJRT_NPROC) avoid it.
os.environ.setdefault("PJRT_NPROC", "32")

import argparse  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import TrainData, machine_line, median, synthetic_train, table, versions_line  # noqa: E402
from jaxrec.config import Config  # noqa: E402
from jaxrec.graph import build_graph  # noqa: E402
from jaxrec.models import get_model  # noqa: E402
from jaxrec.train.sharding import Placement, make_placement  # noqa: E402
from jaxrec.train.step import make_train_step, run_epoch  # noqa: E402

STRATEGIES = {  # name -> config overrides
    "none (1 device)": {"sharding": "none"},
    "feature": {"sharding": "feature"},
    "row (ring)": {"sharding": "row", "row_comm": "ring"},
    "row (direct)": {"sharding": "row", "row_comm": "direct"},
    "row (allgather)": {"sharding": "row", "row_comm": "allgather"},
}


def _graph_data(edges: int, args):
    """``synthetic_train`` with user and item ids randomly relabeled (unless --popularity-order).

    ``synthetic_train`` numbers nodes by popularity (id 0 = the most popular); real data
    sets number them in no such order. The row strategy splits nodes in contiguous id
    blocks, so popularity-ordered ids would put every hub on the first devices.
    """
    key = (edges, args.alpha, args.popularity_order)
    if key in _DATA:
        return _DATA[key]
    cache = None
    if args.cache_dir:
        cache = Path(args.cache_dir) / f"synthetic_{edges}_a{args.alpha}_{'pop' if args.popularity_order else 'shuf'}.npz"
    if cache is not None and cache.exists():
        z = np.load(cache)
        data = TrainData(z["user"], z["item"], int(z["num_users"]), int(z["num_items"]), str(z["source"]))
    else:
        data = synthetic_train(edges, alpha=args.alpha, seed=0)
        if not args.popularity_order:
            rng = np.random.default_rng(1)
            data.user = rng.permutation(data.num_users).astype(np.int32)[data.user]
            data.item = rng.permutation(data.num_items).astype(np.int32)[data.item]
            data.source += ", ids shuffled"
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, user=data.user, item=data.item, num_users=data.num_users, num_items=data.num_items,
                     source=data.source)
    _DATA[key] = data
    return data


_DATA: dict = {}


def _config(args, overrides: dict) -> Config:
    return Config(model="lightgcn", embedding_size=args.dim, num_layers=args.layers, batch_size=args.batch_size,
                  learning_rate=1e-3, kernel=args.kernel).replace(**overrides)


def _setup(config: Config, ndev: int, data, graph0):
    placement = make_placement(config, devices=jax.devices()[:ndev]) if config.sharding != "none" else Placement()
    model = get_model(config)
    optimizer = optax.adam(config.learning_rate)
    graph = placement.place_graph(graph0)
    params = placement.init_params(model.init, jax.random.PRNGKey(0), data.num_users, data.num_items)
    opt_state = placement.place_params(optimizer.init(params))
    step = make_train_step(model, optimizer, placement if placement.active else None)
    return placement, graph, params, opt_state, step


# ----------------------------------------------------------------------- part 1: epochs


def _epoch_batches(rng: np.random.Generator, data, batch_size: int):
    """Shuffled (user, pos, neg) batches with uniform negatives.

    Not ``jaxrec.train.step.epoch_batches``: its negatives are never a positive of the
    user, and the heaviest synthetic power-law users have interacted with every item.
    The step's cost does not depend on which items the negatives are.
    """
    order = rng.permutation(len(data.user))
    users, pos = data.user[order].astype(np.int32), data.item[order].astype(np.int32)
    neg = rng.integers(0, data.num_items, len(users)).astype(np.int32)
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        yield {"user": users[sl], "pos": pos[sl], "neg": neg[sl]}


def epoch_scaling(args, data, graph0) -> tuple[str, list[list]]:
    """Every (strategy, devices) set up and compiled first, then epochs interleaved round robin."""
    runs = {}
    for ndev in args.devices:
        for name, overrides in STRATEGIES.items():
            if overrides["sharding"] == "none" and ndev != 1:
                continue
            if name not in args.strategies and overrides["sharding"] != "none":
                continue
            config = _config(args, overrides)
            if config.sharding == "feature" and config.embedding_size % ndev:
                continue
            placement, graph, params, opt_state, step = _setup(config, ndev, data, graph0)
            runs[(name, ndev)] = {"placement": placement, "graph": graph, "params": params, "opt": opt_state,
                                  "step": step, "times": [], "compile": 0.0, "loss": float("nan"),
                                  "batch_size": config.batch_size}

    def one_epoch(run, epoch):
        rng = np.random.default_rng(epoch)
        batches = _epoch_batches(rng, data, run["batch_size"])
        if run["placement"].active:
            batches = map(run["placement"].place_batch, batches)
        t0 = time.perf_counter()
        run["params"], run["opt"], run["loss"], _ = run_epoch(
            run["step"], run["params"], run["opt"], run["graph"], None, batches, jax.random.PRNGKey(epoch))
        jax.block_until_ready(run["params"])
        return time.perf_counter() - t0

    keys = list(runs)
    for key in keys:  # epoch 0 compiles
        runs[key]["compile"] = one_epoch(runs[key], 0)
        print(f"  compiled {key}: {runs[key]['compile']:.1f}s", file=sys.stderr, flush=True)
    for epoch in range(1, args.epochs + 1):
        order = keys[epoch % len(keys):] + keys[: epoch % len(keys)]
        for key in order:
            time.sleep(0.05)
            runs[key]["times"].append(one_epoch(runs[key], epoch))
        print(f"  round {epoch}/{args.epochs} done", file=sys.stderr, flush=True)

    baseline = {k: np.asarray(v) for k, v in runs[keys[0]]["params"].items()}
    rows = []
    for (name, ndev), run in runs.items():
        host = {k: np.asarray(v) for k, v in run["params"].items()}
        diff = max(float(np.abs(host[k] - baseline[k]).max()) for k in host)
        placement = run["placement"]
        spec = placement.spec(run["params"]["user_embedding"].shape) if placement.active else "-"
        t = run["times"]
        rows.append([name, ndev, f"{median(t):.2f}", f"{min(t):.2f}-{max(t):.2f}", f"{run['compile']:.1f}",
                     f"{diff:.1e}", str(spec), f"{run['loss']:.4f}"])
    headers = ["strategy", "devices", "epoch s (median)", "range s", "1st epoch s (incl. compile)",
               f"max abs param diff to {keys[0][0]}", "user table spec", "last epoch loss"]
    return table(headers, rows), rows


# ----------------------------------------------------------------------- part 2: memory


def _resident_bytes(*trees) -> int:
    """Bytes of the placed arrays (state and graph) on the most loaded device."""
    per_device: dict = {}
    for leaf in jax.tree.leaves(trees):
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values()) if per_device else 0


def _step_memory(step, params, opt_state, graph, batch, key) -> dict[str, int]:
    """Per-device bytes: resident state + graph, plus the step's temporaries and new outputs.

    XLA's memory analysis of the partitioned program gives per-device temporaries; its
    argument size leaves out arrays the step does not read (jit prunes them), so the
    resident part is counted from the placed arrays' shards instead. Params and
    optimizer state are donated, so their outputs alias the inputs.
    """
    compiled = step.lower(params, opt_state, graph, None, batch, key).compile()
    m = compiled.memory_analysis()
    resident = _resident_bytes(params, opt_state, graph, batch)
    if m is None:
        return {"resident": resident, "total": resident}
    fresh_out = max(0, int(m.output_size_in_bytes) - int(m.alias_size_in_bytes))
    return {"resident": resident, "temp": int(m.temp_size_in_bytes), "out": fresh_out,
            "total": resident + int(m.temp_size_in_bytes) + fresh_out}


def memory_scaling(args) -> tuple[str, str, list[str]]:
    ndev = args.mem_devices
    budget = args.budget_mib * (1 << 20)
    results: dict[str, list[tuple[int, int, int, dict]]] = {}
    rows = []
    largest_data = {}
    for edges in args.mem_sizes:
        t0 = time.perf_counter()
        data = _graph_data(edges, args)
        graph0 = build_graph(data.user, data.item, data.num_users, data.num_items)
        print(f"  graph {edges}: {graph0.num_nodes} nodes, {graph0.num_edges} directed edges "
              f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
        for name, overrides in STRATEGIES.items():
            if name not in args.strategies and overrides["sharding"] != "none":
                continue
            n = 1 if overrides["sharding"] == "none" else ndev
            config = _config(args, overrides)
            placement, graph, params, opt_state, step = _setup(config, n, data, graph0)
            batch = {"user": data.user[: config.batch_size], "pos": data.item[: config.batch_size],
                     "neg": data.item[::-1][: config.batch_size]}
            batch = placement.place_batch(batch) if placement.active else batch
            t1 = time.perf_counter()
            mem = _step_memory(step, params, opt_state, graph, batch, jax.random.PRNGKey(0))
            results.setdefault(name, []).append((edges, graph0.num_edges, graph0.num_nodes, mem))
            fits = mem.get("total", 0) <= budget
            rows.append([name, n, f"{edges:,}", f"{graph0.num_nodes:,}", _mib(mem.get("resident")), _mib(mem.get("temp")),
                         _mib(mem.get("total")), "yes" if fits else "no"])
            print("  " + " | ".join(map(str, rows[-1])) + f" (compile {time.perf_counter() - t1:.1f}s)",
                  file=sys.stderr, flush=True)
            if fits:
                largest_data[name] = edges
            del graph, params, opt_state, step
            gc.collect()
        del graph0
        gc.collect()
    mem_table = table(["strategy", "devices", "interactions", "nodes", "resident MiB/device", "step temp MiB/device",
                       "step total MiB/device", f"fits {args.budget_mib} MiB"], rows)

    # Largest graph within the budget: measured (and one step run), and extrapolated.
    summary_rows, notes = [], []
    for name, pts in results.items():
        measured = largest_data.get(name)
        run_s = "-"
        if measured is not None and not args.no_run_largest:
            run_s = _run_one_step(args, name, measured)
        extrap = "-"
        if len(pts) >= 2 and pts[-1][3] and pts[-2][3]:
            (e1, _, _, m1), (e2, _, _, m2) = pts[-2], pts[-1]
            slope = (m2["total"] - m1["total"]) / (e2 - e1)
            if slope > 0:
                extrap = f"{int(e2 + (budget - m2['total']) / slope):,}"
        bytes_per_edge = (pts[-1][3]["total"] / pts[-1][0]) if pts[-1][3] else float("nan")
        summary_rows.append([name, 1 if name.startswith("none") else ndev,
                             f"{measured:,}" if measured else "none of the list", run_s, extrap,
                             f"{bytes_per_edge:.0f}"])
    summary = table(["strategy", "devices", f"largest measured graph within {args.budget_mib} MiB/device",
                     "one step there (s)", "extrapolated largest (interactions)", "bytes/interaction/device at largest"],
                    summary_rows)
    return mem_table, summary, notes


def _run_one_step(args, name: str, edges: int) -> str:
    config = _config(args, STRATEGIES[name])
    n = 1 if config.sharding == "none" else args.mem_devices
    data = _graph_data(edges, args)
    graph0 = build_graph(data.user, data.item, data.num_users, data.num_items)
    placement, graph, params, opt_state, step = _setup(config, n, data, graph0)
    batch = {"user": data.user[: config.batch_size], "pos": data.item[: config.batch_size],
             "neg": data.item[::-1][: config.batch_size]}
    batch = placement.place_batch(batch) if placement.active else batch
    params, opt_state, loss, _ = step(params, opt_state, graph, None, batch, jax.random.PRNGKey(0))
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    params, opt_state, loss, _ = step(params, opt_state, graph, None, batch, jax.random.PRNGKey(1))
    jax.block_until_ready(loss)
    dt = time.perf_counter() - t0
    ok = np.isfinite(float(loss))
    del graph, params, opt_state, step
    gc.collect()
    return f"{dt:.2f}" + ("" if ok else " (non-finite loss!)")


def _mib(b) -> str:
    return "-" if b is None else f"{b / (1 << 20):.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, default=100_000, help="interactions of the epoch-timing graph")
    p.add_argument("--alpha", type=float, default=1.2, help="power-law exponent of the synthetic graphs")
    p.add_argument("--popularity-order", action="store_true",
                   help="keep synthetic_train's popularity-ordered node ids (default: shuffle them)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--kernel", default="bcsr")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the compiling one")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--strategies", nargs="+", default=["feature", "row (ring)", "row (direct)", "row (allgather)"],
                   choices=[s for s in STRATEGIES if not s.startswith("none")])
    p.add_argument("--mem-devices", type=int, default=8)
    p.add_argument("--mem-sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--budget-mib", type=int, default=256, help="memory budget per device (MiB)")
    p.add_argument("--skip-epochs", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--no-run-largest", action="store_true", help="do not run a step at the largest fitting size")
    p.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    p.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "jaxrec-bench"),
                   help="where generated synthetic graphs are kept between runs ('' = nowhere)")
    args = p.parse_args(argv)
    ndev = len(jax.devices())
    if max(args.devices + [args.mem_devices]) > ndev:
        p.error(f"only {ndev} devices: set XLA_FLAGS=--xla_force_host_platform_device_count=N")

    lines = [f"# Sharded training scaling ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"- machine: {machine_line()}; {ndev} host devices ({jax.devices()[0].platform})",
             f"- versions: {versions_line()}",
             f"- command: `python benchmarks/scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- model: LightGCN, d = {args.dim}, {args.layers} layers, kernel {args.kernel}, batch {args.batch_size}, "
             f"Adam; synthetic power-law graphs (alpha {args.alpha}, benchmarks.common.synthetic_train)", ""]
    if not args.skip_epochs:
        data = _graph_data(args.edges, args)
        graph0 = build_graph(data.user, data.item, data.num_users, data.num_items)
        print(f"epoch timing: {data.source}", file=sys.stderr)
        tbl, _ = epoch_scaling(args, data, graph0)
        lines += [f"## Time per epoch vs devices ({data.source}; {graph0.num_edges:,} directed edges)", "",
                  tbl, ""]
        print("\n".join(lines), file=sys.stderr, flush=True)
    if not args.skip_memory:
        print("memory per device", file=sys.stderr)
        mem_table, summary, _ = memory_scaling(args)
        lines += [f"## Memory per device of one training step ({args.mem_devices} devices; XLA memory analysis)", "",
                  mem_table, "", f"## Largest graph within {args.budget_mib} MiB per device", "", summary, ""]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
