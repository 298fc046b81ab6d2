"""LLMInit user pooling: jaxrec.init.user_table_from_items vs numpy/scipy references.

Pools a synthetic item table [I, K] into a user table [U, K] (mean of each user's items)
over n random interactions, timing, in one process:

- jaxrec: jitted chunked segment_sum (compile timed separately, then median of repeats);
- numpy: ``np.add.at`` over the same chunks of gathered rows, then divide by degree;
- scipy (if installed): CSR matrix (built from COO, included in the time) @ table.

    python benchmarks/pooling.py                       # 10^7 interactions, 1M users, 200k items, K=128
    python benchmarks/pooling.py --interactions 1000000 --users 100000 --items 20000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from jaxrec.init import user_table_from_items


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def numpy_reference(table, user, item, num_users, chunk=1 << 20):
    out = np.zeros((num_users, table.shape[1]), np.float32)
    for s in range(0, user.size, chunk):
        np.add.at(out, user[s : s + chunk], table[item[s : s + chunk]])
    deg = np.bincount(user, minlength=num_users).astype(np.float32)
    return out / np.maximum(deg, 1)[:, None]


def scipy_reference(table, user, item, num_users):
    import scipy.sparse as sp

    deg = np.bincount(user, minlength=num_users).astype(np.float32)
    w = (1.0 / np.maximum(deg, 1))[user]
    a = sp.csr_matrix((w, (user, item)), shape=(num_users, table.shape[0]))
    return a @ table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed jaxrec/scipy runs (median); numpy runs once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-numpy", action="store_true", help="skip the slow np.add.at reference")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    n, num_users, num_items, k = args.interactions, args.users, args.items, args.dim
    user = rng.integers(0, num_users, n, dtype=np.int32)
    item = rng.integers(0, num_items, n, dtype=np.int32)
    table = rng.standard_normal((num_items, k), dtype=np.float32)
    print(f"pooling {n:,} interactions, {num_users:,} users, {num_items:,} items, K={k}")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )

    t0 = time.perf_counter()
    res, empty = user_table_from_items(table, user, item, num_users)
    jax.block_until_ready(res)
    first = time.perf_counter() - t0

    def run_jax():
        out, _ = user_table_from_items(table, user, item, num_users)
        return jax.block_until_ready(out)

    t_jax, res = timed(run_jax, args.repeats)
    res = np.asarray(res)
    print(
        f"jaxrec   first call (incl. compile) {first:7.2f} s; steady median of {args.repeats}: {t_jax:7.2f} s "
        f"({n / t_jax / 1e6:.1f} M interactions/s); users without items: {empty:,}"
    )

    rows = [("jaxrec", t_jax)]
    try:
        t_sp, ref_sp = timed(lambda: scipy_reference(table, user, item, num_users), args.repeats)
        err = float(np.abs(ref_sp - res).max())
        print(f"scipy    CSR build + matmul, median of {args.repeats}: {t_sp:7.2f} s   max |diff| {err:.2e}")
        rows.append(("scipy", t_sp))
    except ImportError:
        print("scipy    not installed; skipped")
    if not args.skip_numpy:
        t_np, ref_np = timed(lambda: numpy_reference(table, user, item, num_users), 1)
        err = float(np.abs(ref_np - res).max())
        print(f"numpy    np.add.at, 1 run:                {t_np:7.2f} s   max |diff| {err:.2e}")
        rows.append(("numpy", t_np))
    for name, t in rows[1:]:
        print(f"speed-up of jaxrec over {name}: {t / t_jax:.1f}x")


if __name__ == "__main__":
    main()
