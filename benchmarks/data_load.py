"""Loading a large ``.inter`` file: jaxrec's load_dataset vs a plain pyarrow / polars parse.

Synthetic power-law data (user / item popularity ~ rank^-0.8 / rank^-1.0, 1e6 and 1e7
rows by default, columns user_id:token, item_id:token, rating:float, timestamp:float;
3% of rows repeat an earlier pair, more repeats come from popular pairs) is written once
per size. Every measurement runs in a fresh subprocess, so its peak memory is its own
(``VmHWM``; also given: the peak minus the RSS right after the imports, i.e. what the load
itself added). Per size:

- ``pyarrow parse``: ``pyarrow.csv.read_csv`` of the file, nothing else (the competitor);
- ``polars parse``: ``polars.read_csv`` of the file, nothing else (if polars is installed);
- ``jaxrec load``: ``load_dataset(path, Config(dedup=True, split=...))`` with the cache
  off: parse, id factorization, repeated-pair removal, per-user split;
- ``jaxrec cached``: the same call with the cache on and an entry present;
- ``baseline`` (``--baseline-repo DIR``, sizes up to ``--baseline-max``): the same call
  against another checkout (e.g. the main branch before the pyarrow readers).

Rounds are interleaved (every competitor once per round, the order rotated); the table
gives medians and the ratio to the plain pyarrow parse.

    python benchmarks/data_load.py --sizes 1e6,1e7 --rounds 3 --baseline-repo /work/main --baseline-max 1e6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_line  # noqa: E402

CHILD = r"""
import json, os, sys, time
kind, path, split, cache_dir = sys.argv[1:5]
def status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
def rss_mb():
    return status_mb("VmRSS")
if kind == "pyarrow":
    import pyarrow as pa, pyarrow.csv as pcsv
    base = rss_mb(); t = time.perf_counter()
    tab = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False))
    n = tab.num_rows
elif kind == "polars":
    import polars as pl
    base = rss_mb(); t = time.perf_counter()
    n = pl.read_csv(path, separator="\t", quote_char=None).height
else:
    os.environ["JAXREC_CACHE"] = cache_dir
    from jaxrec.config import Config
    from jaxrec.data import load_dataset
    base = rss_mb()
    kw = {} if kind == "baseline" else {"data_cache": kind == "cached"}
    cfg = Config(dedup=True, split=split, **kw)
    t = time.perf_counter()
    ds = load_dataset(path, cfg)
    n = len(ds.train) + len(ds.valid) + len(ds.test)
dt = time.perf_counter() - t
peak = status_mb("VmHWM")  # this process image's peak (ru_maxrss would carry the parent's over fork)
print(json.dumps({"seconds": dt, "peak_mb": peak, "base_mb": base, "rows": n}))
"""


def write_synthetic(path: Path, n: int, seed: int = 0) -> None:
    """Power-law users/items (popularity of the r-th most popular ~ r^-0.8 for users, r^-1.0
    for items), ratings 1-5, integer timestamps, plus 3% rows repeating an earlier pair."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    num_users, num_items = max(1000, n // 20), max(500, n // 50)
    user = _power_law(rng, num_users, 0.8, n)
    item = _power_law(rng, num_items, 1.0, n)
    rep = rng.random(n) < 0.03  # repeat an earlier row's pair
    src = rng.integers(0, n, n)
    user[rep], item[rep] = user[src[rep]], item[src[rep]]
    table = pa.table({
        "u": pa.array(np.char.add("u", user.astype(str))),
        "i": pa.array(np.char.add("i", item.astype(str))),
        "r": rng.integers(1, 6, n).astype(np.float64),
        "t": rng.integers(880_000_000, 1_600_000_000, n).astype(np.float64),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        pcsv.write_csv(table, f, pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))


def _power_law(rng: np.random.Generator, m: int, s: float, n: int) -> np.ndarray:
    """n draws from {0..m-1} with P(r) ~ (r+1)^-s, shuffled so popularity is not id order."""
    cdf = np.cumsum(np.arange(1, m + 1, dtype=np.float64) ** -s)
    draws = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), m - 1)
    return rng.permutation(m)[draws]


def run_child(kind: str, path: Path, split: str, cache_dir: Path, repo: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(repo))
    res = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), split, str(cache_dir)],
                         capture_output=True, text=True, env=env, cwd=str(repo), timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} on {path} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--split", default="loo_random", choices=["loo_random", "loo_time", "ratio"])
    ap.add_argument("--dir", default=None, help="where the synthetic files go (default: a temporary folder)")
    ap.add_argument("--baseline-repo", default=None, help="another checkout to time (e.g. /work/main)")
    ap.add_argument("--baseline-max", type=float, default=1e6, help="largest size the baseline runs on")
    args = ap.parse_args()

    try:
        import polars  # noqa: F401
        has_polars = True
    except ImportError:
        has_polars = False
    tmp = tempfile.TemporaryDirectory(prefix="jaxrec-data-load-")
    root = Path(args.dir) if args.dir else Path(tmp.name)
    print(f"# data_load: {machine_line()}; split {args.split}; {args.rounds} rounds (median)")
    rows_out = []
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        path = root / f"syn{size}" / f"syn{size}.inter"
        if not path.is_file():
            t = time.perf_counter()
            write_synthetic(path, size)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        cache_dir = root / "cache"
        kinds = ["pyarrow"] + (["polars"] if has_polars else []) + ["jaxrec", "cached"]
        if args.baseline_repo and size <= args.baseline_max:
            kinds.append("baseline")
        run_child("cached", path, args.split, cache_dir, ROOT)  # fill the cache entry once
        got: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                repo = Path(args.baseline_repo) if k == "baseline" else ROOT
                got[k].append(run_child(k, path, args.split, cache_dir, repo))
        ref = statistics.median(x["seconds"] for x in got["pyarrow"])
        for k in kinds:
            sec = statistics.median(x["seconds"] for x in got[k])
            peak = statistics.median(x["peak_mb"] for x in got[k])
            add = statistics.median(x["peak_mb"] - x["base_mb"] for x in got[k])
            rows_out.append((size, k, sec, sec / ref, peak, add, got[k][0]["rows"]))
    print()
    print("| rows | what | s (median) | / pyarrow parse | peak RSS MiB | added by the load MiB | rows out |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    names = {"pyarrow": "pyarrow.csv.read_csv (parse only)", "polars": "polars.read_csv (parse only)",
             "jaxrec": "jaxrec load_dataset, dedup + split, cache off", "cached": "jaxrec load_dataset, cache hit",
             "baseline": f"baseline load_dataset ({args.baseline_repo})"}
    for size, k, sec, ratio, peak, add, n in rows_out:
        print(f"| {size:.0e} | {names[k]} | {sec:.2f} | {ratio:.2f}x | {peak:,.0f} | {add:,.0f} | {n:,} |")


if __name__ == "__main__":
    main()
