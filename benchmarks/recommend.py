"""Benchmark: recommendations out of a run (jaxrec.serve) vs a numpy matmul + argpartition baseline.

    python benchmarks/recommend.py                                   # ml-100k + 1e6 x 1e5 synthetic
    python benchmarks/recommend.py --synthetic-users 100000          # a quicker synthetic case
    python benchmarks/recommend.py --skip-synthetic --rounds 7

1. **ml-100k, from a run folder.** A LightGCN run (K = 128, 2 layers, one epoch: speed does not
   depend on the quality) is trained into a temporary folder; then, timed: ``load_run`` (config,
   dataset reload + fingerprint check, Orbax restore), the first ``recommend`` for all 943 users
   (embed on the serve graph + compile + rank), and warm calls of ``recommend`` (top-10 for all
   users, seen items excluded) against numpy on the same embeddings and exclusions, interleaved,
   medians (``benchmarks/common.bench_interleaved``).
2. **Synthetic catalog**: U users x I items (default 10^6 x 10^5), d = 64, random normal
   float32 embeddings, ``--seen`` random known items per user excluded. ``write_recommendations``
   writes every user's top-10 to parquet in blocks of ``--block-users``; wall time, users/s, and
   the peak resident memory the write added (``VmHWM`` after resetting it through
   ``/proc/self/clear_refs``, minus the resident set before) against the bound the design
   promises: one block's gathered rows, results and arrow rows, one chunk's [chunk, I] scores
   (x2 for XLA's top-k temporaries) and the block's exclusions. The numpy baseline (per chunk
   of the same size: BLAS matmul, excluded pairs to -inf, ``argpartition``, sort of the k) and
   jaxrec's ranking alone (``rank_users``) run on the first ``--baseline-users`` users, same
   process, interleaved rounds; users/s and the ratio are reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_interleaved, machine_line, median, spread, table, versions_line  # noqa: E402


def status_mb(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def numpy_topk(user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, known, k: int,
               chunk: int) -> np.ndarray:
    """The baseline: per chunk, BLAS scores, known pairs to -inf, argpartition, sort of the k."""
    out = np.empty((users.size, k), np.int64)
    for s in range(0, users.size, chunk):
        block = users[s:s + chunk]
        scores = user_emb[block] @ item_emb.T
        if known is not None:
            rows, items = known.pairs(block)
            scores[rows, items] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(scores, part, axis=1)
        out[s:s + block.size] = np.take_along_axis(part, np.argsort(-top, axis=1, kind="stable"), axis=1)
    return out


def bench_ml100k(args) -> list[list[str]]:
    import jaxrec
    from jaxrec.serve import load_run, recommend

    tmp = tempfile.TemporaryDirectory(prefix="jaxrec-rec-bench-")
    config = jaxrec.Config.for_model("lightgcn", dataset="ml-100k", epochs=1)
    t0 = time.perf_counter()
    jaxrec.train_run(config, out_dir=Path(tmp.name) / "run", progress=False)
    print(f"trained a 1-epoch LightGCN run in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    t0 = time.perf_counter()
    run = load_run(Path(tmp.name) / "run")
    t_load = time.perf_counter() - t0
    users = list(run.dataset.user_ids)
    t0 = time.perf_counter()
    first = recommend(run, users, k=10)
    t_first = time.perf_counter() - t0
    cat = run.catalog
    ie = np.asarray(cat.item_emb)
    dense = np.arange(run.num_users)
    ref = numpy_topk(cat.user_emb, ie, dense, cat.known, 10, 1024)
    agree = float((ref == first.item_index).mean())
    t0 = time.perf_counter()
    run.embed()
    t_embed = time.perf_counter() - t0
    samples = bench_interleaved({
        "jaxrec recommend (all users, top-10)": lambda: recommend(run, users, k=10),
        "numpy matmul + argpartition": lambda: numpy_topk(cat.user_emb, ie, dense, cat.known, 10, 1024),
    }, repeats=args.rounds, target_s=0.3)
    jr, nr = (median(v) for v in samples.values())
    rows = [["load_run (dataset reload + fingerprint + restore)", f"{t_load * 1e3:.0f} ms", "", ""],
            ["first recommend, all 943 users (embed + compile + rank)", f"{t_first * 1e3:.0f} ms", "", ""],
            ["embed on the serve graph (jitted, warm)", f"{t_embed * 1e3:.1f} ms", "", ""]]
    for name, v in samples.items():
        rows.append([name + " (warm)", f"{median(v) * 1e3:.1f} ms", spread(v), f"{nr / median(v):.2f}x"])
    print(f"ml-100k: {run.num_users} x {run.num_items}, d = {ie.shape[1]}, {int(cat.known.items.size):,} known "
          f"pairs excluded; jaxrec and numpy agree on {agree:.4%} of the top-10 slots", file=sys.stderr)
    tmp.cleanup()
    return rows


def bench_synthetic(args) -> tuple[list[list[str]], dict]:
    import jax

    from jaxrec.serve import Catalog, KnownItems, write_recommendations
    from jaxrec.serve.recommend import rank_users

    U, I, d, k = args.synthetic_users, args.synthetic_items, args.dim, 10
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    ue = rng.standard_normal((U, d), dtype=np.float32)
    ie = rng.standard_normal((I, d), dtype=np.float32)
    seen_u = np.repeat(np.arange(U), args.seen)
    seen_i = rng.integers(0, I, seen_u.size)
    known = KnownItems.from_pairs(seen_u, seen_i, U, I)
    cat = Catalog.from_arrays(ue, ie, known=known)
    print(f"synthetic catalog {U:,} x {I:,} (d = {d}, {known.items.size:,} known pairs) built in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    n = min(args.baseline_users, U)
    sub = np.arange(n)
    rank_users(cat, sub[:args.chunk], k, True, None, args.chunk)  # compile once before timing
    samples = bench_interleaved({
        "jaxrec rank_users": lambda: jax.block_until_ready(rank_users(cat, sub, k, True, None, args.chunk)),
        "numpy matmul + argpartition": lambda: numpy_topk(ue, ie, sub, known, k, args.chunk),
    }, repeats=args.rounds, target_s=0.5, warmup=1)
    tmp = tempfile.TemporaryDirectory(prefix="jaxrec-rec-synth-")
    path = Path(args.out) if args.out else Path(tmp.name) / "recs.parquet"
    base = status_mb("VmRSS")
    measured = reset_peak()
    t0 = time.perf_counter()
    rep = write_recommendations(cat, path, k=k, block_users=args.block_users, chunk_size=args.chunk,
                                progress=args.progress)
    wall = time.perf_counter() - t0
    added = status_mb("VmHWM") - base if measured else float("nan")
    size_mb = path.stat().st_size / 2**20
    B, C = args.block_users, args.chunk
    # one block: gathered rows, ids + scores (and their copies), arrow rows; one chunk's scores and top-k
    # temporaries; the block's exclusion pairs; the arrow arrays of all user and item ids
    bound = (B * (d * 4 + k * 8 * 2 + k * 64) + 2 * C * I * 4 + B * args.seen * 16 * 2 + (U + I) * 24) / 2**20
    jr, nr = median(samples["jaxrec rank_users"]), median(samples["numpy matmul + argpartition"])
    rows = [[f"jaxrec rank_users, first {n:,} users", f"{n / jr:,.0f}", spread(samples['jaxrec rank_users']),
             f"{nr / jr:.2f}x"],
            [f"numpy matmul + argpartition, first {n:,} users", f"{n / nr:,.0f}",
             spread(samples["numpy matmul + argpartition"]), "1"],
            [f"jaxrec write_recommendations, all {U:,} users -> parquet", f"{U / wall:,.0f}", "one run",
             f"{(U / wall) / (n / nr):.2f}x"]]
    mem = {"wall_s": wall, "rows": rep.rows, "file_mb": size_mb, "added_mb": added, "bound_mb": bound,
           "base_mb": base, "emb_mb": (U + I) * d * 4 / 2**20}
    tmp.cleanup()
    return rows, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--synthetic-users", type=int, default=1_000_000)
    ap.add_argument("--synthetic-items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seen", type=int, default=5, help="known items excluded per synthetic user")
    ap.add_argument("--baseline-users", type=int, default=20_000, help="users the numpy baseline ranks")
    ap.add_argument("--block-users", type=int, default=65_536, help="users per written block")
    ap.add_argument("--chunk", type=int, default=1024, help="users scored at once")
    ap.add_argument("--out", default=None, help="keep the synthetic parquet here (default: a temporary file)")
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    print(f"# recommend: {machine_line()}\n# {versions_line()}")
    if not args.skip_ml100k:
        rows = bench_ml100k(args)
        print("\nml-100k, top-10 for every user (seen items excluded)")
        print(table(["what", "time (median)", "spread", "speed-up vs numpy"], rows))
    if not args.skip_synthetic:
        rows, mem = bench_synthetic(args)
        print(f"\nsynthetic {args.synthetic_users:,} users x {args.synthetic_items:,} items, d = {args.dim}, top-10, "
              f"{args.seen} seen items excluded per user; chunk {args.chunk}, block {args.block_users:,} users")
        print(table(["what", "users/s", "spread", "vs numpy"], rows))
        print(f"\nwrite_recommendations: {mem['rows']:,} rows, {mem['file_mb']:.0f} MiB parquet in {mem['wall_s']:.0f} s; "
              f"peak memory added by the write {mem['added_mb']:,.0f} MiB (bound {mem['bound_mb']:,.0f} MiB; "
              f"embeddings {mem['emb_mb']:,.0f} MiB and everything else resident before: {mem['base_mb']:,.0f} MiB)")


if __name__ == "__main__":
    main()
