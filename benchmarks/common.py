"""Shared helpers for the speed benchmarks: data, interleaved timing, bandwidth, tables.

Timing protocol (the machines are small and shared, so timings are noisy):

- every competitor runs in the same process run;
- repetitions are interleaved (round robin, the order rotated each round) so that a slow
  phase of the machine hits every competitor alike;
- each sample is ``number`` back-to-back calls (calibrated so a sample lasts about
  ``target_s``); the reported figure is the median over samples, and ratios are taken
  between medians;
- a short sleep separates samples so that one library's spinning worker threads (OpenMP,
  Eigen) do not steal the cores from the next competitor's sample.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` as well as `python -m benchmarks.x`
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def machine_line() -> str:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{cpu_count()} cores ({model}), load average {load}"


def versions_line() -> str:
    import jax
    parts = [f"python {sys.version.split()[0]}", f"numpy {np.__version__}", f"jax {jax.__version__}"]
    for name in ("scipy", "torch"):
        try:
            mod = __import__(name)
            parts.append(f"{name} {mod.__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------
# Data: ml-100k training interactions (jaxrec.data.load_dataset when it exists)
# ---------------------------------------------------------------------------------------
@dataclass
class TrainData:
    user: np.ndarray  # int32 [n]
    item: np.ndarray  # int32 [n]
    num_users: int
    num_items: int
    source: str  # how it was obtained (printed by the benchmarks)


def data_dir() -> Path:
    env = os.environ.get("JAXREC_DATA")
    if env:
        return Path(env)
    return ROOT.parent / "shared" / "data"


def load_ml100k_train(seed: int = 2020) -> TrainData:
    """The ml-100k training interactions under the reference protocol (loo_random, seed 2020).

    Uses ``jaxrec.data.load_dataset("ml-100k", Config())`` when it is importable; otherwise a
    private parse of ``ml-100k.inter`` with a leave-one-out random split (one valid and one
    test interaction per user; users with fewer than 3 interactions stay whole in train).
    The fallback has the same sizes as the real split but not necessarily the same held-out
    items (the RNG use differs), which does not matter for speed.
    """
    try:
        from jaxrec.data import load_dataset  # noqa: F401
    except ImportError:
        load_dataset = None
    if load_dataset is not None:
        from jaxrec.config import Config
        cfg = Config(seed=seed)
        extra = tuple(str(p) for p in (data_dir(),) if p.is_dir())
        if extra:
            cfg = cfg.replace(data_dirs=extra)
        try:
            ds = load_dataset("ml-100k", cfg)
        except Exception as e:  # the loader is being written: never let it block a benchmark
            fb = _private_ml100k_train(seed)
            fb.source += f"; load_dataset failed: {type(e).__name__}: {e}"
            return fb
        tr = ds.train
        return TrainData(np.asarray(tr.user, np.int32), np.asarray(tr.item, np.int32), tr.num_users, tr.num_items,
                         f"jaxrec.data.load_dataset('ml-100k', Config(seed={seed})).train")
    return _private_ml100k_train(seed)


def _private_ml100k_train(seed: int) -> TrainData:
    path = data_dir() / "ml-100k" / "ml-100k.inter"
    if not path.is_file():
        raise SystemExit(f"benchmarks: {path} not found (set $JAXREC_DATA to the folder holding ml-100k/)")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        cols = list(zip(*(line.rstrip("\n").split("\t") for line in f if line.strip())))
    raw_u = np.array(cols[names.index("user_id")])
    raw_i = np.array(cols[names.index("item_id")])
    user_ids, user = np.unique(raw_u, return_inverse=True)
    item_ids, item = np.unique(raw_i, return_inverse=True)
    rng = np.random.default_rng(seed)
    # leave-one-out, random order: shuffle, then per user the last two are valid/test.
    perm = rng.permutation(len(user))
    order = perm[np.argsort(user[perm], kind="stable")]
    counts = np.bincount(user, minlength=len(user_ids))
    ends = np.cumsum(counts)
    held = np.zeros(len(user), bool)
    splittable = counts >= 3
    held[order[ends[splittable] - 1]] = True
    held[order[ends[splittable] - 2]] = True
    keep = ~held
    return TrainData(user[keep].astype(np.int32), item[keep].astype(np.int32), len(user_ids), len(item_ids),
                     f"private parse of {path} (loo random, seed {seed}); jaxrec.data.load_dataset not used")


def synthetic_train(edges: int, num_users: int | None = None, num_items: int | None = None,
                    alpha: float = 1.2, seed: int = 0) -> TrainData:
    """A power-law bipartite graph with about ``edges`` distinct interactions.

    Item popularity and user activity follow Zipf-like weights ``rank^-alpha`` (mixed with
    a uniform floor so every node has some chance); sizes default to the ml-100k shape
    (about 100 interactions per user, 60 per item).
    """
    rng = np.random.default_rng(seed)
    num_users = num_users or max(16, edges // 100)
    num_items = num_items or max(16, edges // 60)

    def weights(n):
        w = np.arange(1, n + 1, dtype=np.float64) ** -alpha
        w = 0.9 * w / w.sum() + 0.1 / n
        return w / w.sum()

    pu, pi = weights(num_users), weights(num_items)
    keys = np.empty(0, np.int64)
    need = edges
    while need > 0:
        u = rng.choice(num_users, size=int(need * 1.3) + 16, p=pu)
        i = rng.choice(num_items, size=u.size, p=pi)
        keys = np.unique(np.concatenate([keys, u.astype(np.int64) * num_items + i]))
        need = edges - keys.size
    keys = rng.permutation(keys)[:edges]
    return TrainData((keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32), num_users,
                     num_items, f"synthetic power-law (alpha {alpha}, seed {seed}): {num_users} users, "
                                f"{num_items} items, {edges} interactions")


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------
def calibrate(fn: Callable[[], object], target_s: float, max_number: int = 10_000) -> int:
    """Calls per sample so that one sample lasts about ``target_s`` (fn already warmed up)."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if dt < target_s / 4:
        t0 = time.perf_counter()
        k = max(1, int(target_s / 4 / max(dt, 1e-7)))
        for _ in range(k):
            fn()
        dt = (time.perf_counter() - t0) / k
    return int(min(max_number, max(1, round(target_s / max(dt, 1e-9)))))


def bench_interleaved(fns: dict[str, Callable[[], object]], repeats: int, target_s: float = 0.05,
                      warmup: int = 2, gap_s: float = 0.003, verbose: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each ``fn`` (each must block until its result is ready).

    Warm-up, calibration, then ``repeats`` rounds; each round takes one sample of every
    function, in an order rotated by one each round. Returns ``{name: [s/call per sample]}``.
    """
    names = list(fns)
    for n in names:
        for _ in range(warmup):
            fns[n]()
    number = {n: calibrate(fns[n], target_s) for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            time.sleep(gap_s)
            fn, k = fns[n], number[n]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[n].append((time.perf_counter() - t0) / k)
        if verbose:
            print(f"  round {r + 1}/{repeats} done", file=sys.stderr)
    return samples


def median(xs) -> float:
    return float(statistics.median(xs))


def spread(xs) -> str:
    """``min-max`` of samples relative to the median, as a +/- percentage string."""
    m = median(xs)
    return f"{100 * (min(xs) / m - 1):+.0f}/{100 * (max(xs) / m - 1):+.0f}%"


# ---------------------------------------------------------------------------------------
# Memory bandwidth
# ---------------------------------------------------------------------------------------
def measure_bandwidth(mbytes: int = 256, repeats: int = 7) -> dict[str, float]:
    """Streaming bandwidth in GB/s (1e9 bytes/s) over ``mbytes`` float32 arrays.

    ``numpy copy``: ``np.copyto`` (one thread, libc memcpy), bytes = read + write;
    ``jnp x*c``: a jitted elementwise scale with the input buffer donated, so XLA writes in
    place instead of page-faulting a fresh 256 MB output every call (all cores), bytes =
    read + write; ``numpy sum``: read-only reduction (one thread), bytes = read.
    Interleaved, median over ``repeats``.
    """
    import jax
    import jax.numpy as jnp

    n = mbytes * (1 << 20) // 4
    src = np.random.default_rng(0).random(n, dtype=np.float32)
    dst = np.empty_like(src)
    scale = jax.jit(lambda x: x * -1.0, donate_argnums=0)
    state = {"x": scale(jnp.asarray(src))}

    def jnp_scale():
        state["x"] = scale(state["x"])
        state["x"].block_until_ready()

    fns = {
        "numpy copy": lambda: np.copyto(dst, src),
        "jnp x*c (donated)": jnp_scale,
        "numpy sum": lambda: src.sum(),
    }
    s = bench_interleaved(fns, repeats, target_s=0.0, warmup=1)
    nb = n * 4
    out = {
        "numpy copy": 2 * nb / median(s["numpy copy"]) / 1e9,
        "jnp x*c (donated)": 2 * nb / median(s["jnp x*c (donated)"]) / 1e9,
        "numpy sum": nb / median(s["numpy sum"]) / 1e9,
    }
    del src, dst, state
    return out


def layer_bytes(nnz: int, num_nodes: int, dim: int) -> int:
    """DESIGN.md section 5: one propagation layer reads nnz*(12 + 4d) and writes N*4d bytes."""
    return nnz * (12 + 4 * dim) + num_nodes * 4 * dim


def compulsory_bytes(nnz: int, num_nodes: int, dim: int) -> int:
    """Bytes a layer must move if the node table stays in cache: the edge arrays once
    (nnz * 12), the input table once and the output once (2 * N * 4d)."""
    return nnz * 12 + 2 * num_nodes * 4 * dim


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """A GitHub-markdown table (left-aligned first column, right-aligned numbers)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or ("l" + "r" * (len(headers) - 1))

    def fmt(row):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1)) for w, a in zip(widths, align)) + "|"
    return "\n".join([fmt(headers), sep] + [fmt(r) for r in cells])
