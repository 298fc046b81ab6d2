"""Benchmark: full-ranking top-k (jaxrec.eval.topk_full_ranking) vs a numpy baseline.

    python benchmarks/evaluation.py                       # ml-100k shape + 50k x 20k synthetic
    python benchmarks/evaluation.py --users 943 --items 1682 --dim 128 --repeats 5
    python benchmarks/evaluation.py --sweep 256,512,1024,2048   # chunk-size sweep

Both sides rank every user over all items with excluded (user, item) pairs masked and
return the sorted top-k, in the same process on the same arrays:

- numpy baseline: per chunk of users, ``u @ v.T`` (BLAS), excluded pairs set to -inf by
  fancy indexing, ``np.argpartition`` for the top k, then a sort of those k. Chunked with
  the same chunk size (a 50k x 20k float32 score matrix alone is 4 GB).
- jaxrec: ``topk_full_ranking`` (jitted matmul + scatter mask + ``lax.top_k`` per chunk).

Times are the median of ``--repeats`` runs after one warm-up (compilation excluded).
Matmul throughput (2 * M * I * d FLOP over the time of the bare numpy and jax matmuls on
one chunk) is printed as context (DESIGN.md section 5): ranking cannot beat the matmul.

The ml-100k case uses the real interactions when found (``$JAXREC_DATA`` or
``../shared/data``) with a seeded random leave-one-out split, excluding the ~98k training
pairs; otherwise synthetic pairs with the same counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrec.eval import topk_full_ranking  # noqa: E402


# ----------------------------------------------------------------------------- data


def _find_ml100k() -> Path | None:
    roots = [os.environ.get("JAXREC_DATA"), Path(__file__).resolve().parents[2] / "shared/data"]
    for root in roots:
        if root and (Path(root) / "ml-100k/ml-100k.inter").is_file():
            return Path(root) / "ml-100k/ml-100k.inter"
    return None


def ml100k_train_pairs(rng) -> tuple[int, int, np.ndarray, np.ndarray, str]:
    """Train pairs of a random leave-one-out split of ml-100k (2 held out per user)."""
    path = _find_ml100k()
    if path is None:
        u, i = synthetic_pairs(rng, 943, 1682, 100_000 - 2 * 943)
        return 943, 1682, u, i, "synthetic pairs, ml-100k counts"
    raw = np.loadtxt(path, dtype=str, delimiter="\t", skiprows=1, usecols=(0, 1))
    _, user = np.unique(raw[:, 0], return_inverse=True)
    _, item = np.unique(raw[:, 1], return_inverse=True)
    num_users, num_items = int(user.max()) + 1, int(item.max()) + 1
    order = np.lexsort((rng.random(user.size), user))  # random order within each user
    user, item = user[order], item[order]
    counts = np.bincount(user, minlength=num_users)
    last = np.cumsum(counts)
    held = np.zeros(user.size, bool)
    held[last - 1] = held[last - 2] = True  # every ml-100k user has >= 20 ratings
    return num_users, num_items, user[~held], item[~held], f"real {path.name}, RO leave-one-out"


def synthetic_pairs(rng, num_users, num_items, n) -> tuple[np.ndarray, np.ndarray]:
    # Skewed per-user counts (like real data): Zipf-ish item popularity, uniform users.
    pop = 1.0 / np.arange(1, num_items + 1) ** 0.8
    keys = np.zeros(0, dtype=np.int64)
    while keys.size < n:  # draw until n distinct pairs, then keep a random n of them
        users = rng.integers(0, num_users, size=n)
        items = rng.choice(num_items, size=n, p=pop / pop.sum())
        keys = np.unique(np.concatenate([keys, users.astype(np.int64) * num_items + items]))
    keys = rng.choice(keys, size=n, replace=False)
    return (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)


# ------------------------------------------------------------------------ baseline


def numpy_topk(user_emb, item_emb, users, ex_users, ex_items, k, chunk_size):
    """Chunked numpy: BLAS matmul, -inf mask, argpartition, sort of the k."""
    num = users.shape[0]
    row_of = np.full(user_emb.shape[0], -1, dtype=np.int64)
    row_of[users] = np.arange(num)
    rows = row_of[ex_users]
    keep = rows >= 0
    rows, cols = rows[keep], ex_items[keep]
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    out = np.empty((num, k), dtype=np.int64)
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        scores = user_emb[users[start:stop]] @ item_emb.T
        a, b = np.searchsorted(rows, [start, stop])
        scores[rows[a:b] - start, cols[a:b]] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(scores, part, axis=1)
        out[start:stop] = np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), 1)
    return out


# -------------------------------------------------------------------------- timing


def median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each function. Runs are interleaved and the order rotates
    every round, so that load from other processes on a shared machine, and BLAS threads
    still spinning after a numpy call, hit every contender alike."""
    for fn in fns.values():
        fn()  # warm-up (compilation, caches)
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def matmul_gflops(user_emb, item_emb, rows: int, repeats: int) -> tuple[float, float]:
    u = user_emb[:rows]
    flop = 2.0 * u.shape[0] * item_emb.shape[0] * item_emb.shape[1]
    uj, vj = jnp.asarray(u), jnp.asarray(item_emb)
    mm = jax.jit(lambda a, b: a @ b.T)
    t = median_times(
        {"np": lambda: u @ item_emb.T, "jax": lambda: mm(uj, vj).block_until_ready()}, repeats
    )
    return flop / t["np"] / 1e9, flop / t["jax"] / 1e9


def run_case(name, num_users, num_items, dim, ex_u, ex_i, k, chunk_size, repeats, sweep, rng):
    user_emb = rng.standard_normal((num_users, dim), dtype=np.float32) / np.sqrt(dim)
    item_emb = rng.standard_normal((num_items, dim), dtype=np.float32)
    users = np.arange(num_users, dtype=np.int32)
    flop = 2.0 * num_users * num_items * dim

    print(f"\n== {name}: {num_users} users x {num_items} items, d={dim}, k={k}, "
          f"{ex_u.size} excluded pairs, chunk_size={chunk_size}, repeats={repeats}")
    ue, ie = jnp.asarray(user_emb), jnp.asarray(item_emb)  # embeddings live on device
    fns = {
        "numpy": lambda: numpy_topk(user_emb, item_emb, users, ex_u, ex_i, k, chunk_size),
        chunk_size: lambda: topk_full_ranking(
            ue, ie, users, ex_u, ex_i, k=k, chunk_size=chunk_size
        ),
    }
    for cs in sweep:
        fns.setdefault(cs, lambda cs=cs: topk_full_ranking(
            ue, ie, users, ex_u, ex_i, k=k, chunk_size=cs))
    times = median_times(fns, repeats)
    t_np, t_jx = times["numpy"], times[chunk_size]
    got = topk_full_ranking(ue, ie, users, ex_u, ex_i, k=k, chunk_size=chunk_size)
    ref = numpy_topk(user_emb, item_emb, users, ex_u, ex_i, k, chunk_size)
    agree = float(np.mean(got == ref))
    gf_np, gf_jx = matmul_gflops(user_emb, item_emb, min(chunk_size, num_users), repeats)

    print(f"  numpy baseline      {t_np * 1e3:10.1f} ms   ({flop / t_np / 1e9:6.1f} GFLOP/s eff.)")
    print(f"  jaxrec topk         {t_jx * 1e3:10.1f} ms   ({flop / t_jx / 1e9:6.1f} GFLOP/s eff.)")
    print(f"  speed-up (numpy / jaxrec)   {t_np / t_jx:6.2f}x")
    print(f"  bare matmul, one chunk: numpy {gf_np:6.1f} GFLOP/s, jax {gf_jx:6.1f} GFLOP/s")
    print(f"  same top-k entries: {agree:.4%} (differences = float ties / rounding order)")
    row = dict(case=name, numpy_ms=t_np * 1e3, jaxrec_ms=t_jx * 1e3, speedup=t_np / t_jx,
               mm_np=gf_np, mm_jx=gf_jx)

    for cs in sweep:
        t = times[cs]
        print(f"  sweep chunk_size={cs:6d}: jaxrec {t * 1e3:10.1f} ms  ({t_np / t:5.2f}x numpy)")
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, help="run one synthetic case of this many users")
    p.add_argument("--items", type=int, help="items of that case")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--excluded-per-user", type=float, default=100.0,
                   help="synthetic cases: mean excluded (train) pairs per user")
    p.add_argument("--no-large", action="store_true", help="skip the 50k x 20k case")
    p.add_argument("--sweep", type=str, default="", help="comma-separated chunk sizes to try")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sweep = [int(s) for s in args.sweep.split(",") if s]

    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device), "
          f"numpy {np.__version__}, {os.cpu_count()} CPU cores, "
          f"{platform.processor() or platform.machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    rows = []
    if args.users is not None or args.items is not None:
        nu, ni = args.users or 943, args.items or 1682
        if (nu, ni) == (943, 1682):
            nu, ni, eu, ei, src = ml100k_train_pairs(rng)
        else:
            n = min(int(nu * args.excluded_per_user), nu * ni // 2)
            eu, ei = synthetic_pairs(rng, nu, ni, n)
            src = "synthetic"
        rows.append(run_case(f"{nu}x{ni} ({src})", nu, ni, args.dim, eu, ei, args.k,
                             args.chunk_size, args.repeats, sweep, rng))
    else:
        nu, ni, eu, ei, src = ml100k_train_pairs(rng)
        rows.append(run_case(f"ml-100k ({src})", nu, ni, args.dim, eu, ei, args.k,
                             args.chunk_size, args.repeats, sweep, rng))
        if not args.no_large:
            nu, ni = 50_000, 20_000
            eu, ei = synthetic_pairs(rng, nu, ni, int(nu * args.excluded_per_user))
            rows.append(run_case("synthetic 50k x 20k", nu, ni, args.dim, eu, ei, args.k,
                                 args.chunk_size, max(1, min(args.repeats, 3)), sweep, rng))

    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("\n| case | numpy baseline (ms) | jaxrec (ms) | speed-up "
          "| bare matmul numpy / jax (GFLOP/s) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['numpy_ms']:.1f} | {r['jaxrec_ms']:.1f} | "
              f"{r['speedup']:.2f}x | {r['mm_np']:.0f} / {r['mm_jx']:.0f} |")


if __name__ == "__main__":
    main()
