"""Rec-PCA at scale: jaxrec.init.rec_pca (C never built) vs scipy (explicit C = B^T B).

For each size (default 10^5, 10^6, 10^7 interactions; users = items = interactions / 100),
on a synthetic power-law interaction set (Zipf-like user activity and item popularity,
distinct (user, item) pairs) and item embeddings X [I, N] with a decaying spectrum
(N = 768, the MPNet width), computes the top-K Rec-PCA axes with lam = 0.5 by:

- ``jaxrec``: ``jaxrec.init.rec_pca`` (the factored form: products with B and B^T only),
  run twice: cold (with compilation) and warm;
- ``scipy``: the textbook route, in float64: B as CSR, C = B^T B with the diagonal
  removed, D^-1/2 C D^-1/2 scaled in place, L X = m X - (D^-1/2 C D^-1/2) X, M =
  X^T X - lam X^T L X, ``scipy.linalg.eigh(M, subset_by_index=...)`` for the top K + 1;
- ``explicit`` (small sizes only, ``--explicit-max-pairs``): the previous jaxrec route,
  ``item_cooccurrence`` (pair expansion) + ``normalized_laplacian`` + a segment-sum product.

Each competitor runs in its own child process (so its peak resident memory, VmHWM, is its
own), one after the other, in the same run of this script. The scipy child gets an
address-space limit (``--scipy-mem-gib``): past it numpy raises MemoryError, which is
reported with the stage where it happened, instead of swapping a shared machine. The
parent prints times, peak memory, the scipy / jaxrec time ratio, and the agreement of the
results (top-K eigenvalues, largest principal angle between the K-dim subspaces).

    python benchmarks/recpca.py                              # 1e5 1e6 1e7, N=768, K=64
    python benchmarks/recpca.py --scales 1e5 1e6 --dim 256 --scipy-mem-gib 4

Generated interactions and embeddings are cached under ``--cache`` (default
``$TMPDIR/jaxrec-bench-recpca``); generating 10^7 distinct power-law pairs takes minutes.
"""

from __future__ import annotations

import argparse
import json
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

from benchmarks.common import machine_line, table, versions_line  # noqa: E402


# --------------------------------------------------------------------------------- data
def power_law_interactions(edges: int, num_users: int, num_items: int, alpha: float = 1.2,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``edges`` distinct (user, item) pairs, user and item drawn with weights ~ rank^-alpha
    (mixed with a 10% uniform floor). Draws with replacement, deduplicates, and redraws more
    until there are enough distinct pairs; then keeps a uniform random subset of ``edges``."""
    rng = np.random.default_rng(seed)

    def weights(n):
        w = np.arange(1, n + 1, dtype=np.float64) ** -alpha
        w = 0.9 * w / w.sum() + 0.1 / n
        return w / w.sum()

    pu, pi = weights(num_users), weights(num_items)
    draws = int(edges * 1.2)
    for _ in range(30):
        u = rng.choice(num_users, size=draws, p=pu).astype(np.int64)
        keys = np.sort(u * num_items + rng.choice(num_items, size=draws, p=pi))
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # np.unique: 40x slower on 10^7 int64 (numpy 2.4)
        if keys.size >= edges:
            break
        draws = int(draws * (edges / keys.size) ** 1.5 * 1.05)
    else:
        raise SystemExit(f"could not draw {edges} distinct pairs among {num_users} x {num_items}")
    keys = rng.choice(keys, size=edges, replace=False)
    return (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)


def item_embeddings(num_items: int, dim: int, seed: int = 1) -> np.ndarray:
    """X [I, N] float32: Gaussian rows with column scales 0.98^j, rotated by a random orthogonal matrix
    (the spectrum of X^T X decays geometrically, so the top-K subspace is well defined)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    g = rng.standard_normal((num_items, dim), dtype=np.float32) * (0.98 ** np.arange(dim)).astype(np.float32)
    return (g @ q.astype(np.float32)).astype(np.float32)


def cached_data(edges: int, args) -> tuple[Path, Path, dict]:
    users, items = max(16, edges // args.users_per), max(16, edges // args.items_per)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    inter = cache / f"inter_{edges}_{users}_{items}_a{args.alpha}_s{args.seed}.npz"
    xpath = cache / f"x_{items}_{args.dim}_s{args.seed}.npy"
    gen_s = 0.0
    if not inter.exists():
        t0 = time.perf_counter()
        u, i = power_law_interactions(edges, users, items, args.alpha, args.seed)
        np.savez(inter, user=u, item=i, num_items=items)
        gen_s = time.perf_counter() - t0
    if not xpath.exists():
        np.save(xpath, item_embeddings(items, args.dim, args.seed + 1))
    z = np.load(inter)
    deg = np.bincount(z["user"]).astype(np.float64)
    info = {
        "edges": edges, "users": users, "items": items, "gen_s": gen_s,
        "max_deg": int(deg.max()), "sum_deg2": float((deg * deg).sum()),
        # the heaviest user's items are pairwise linked: nnz(C) >= d_max (d_max - 1)
        "nnz_lower": float(deg.max() * (deg.max() - 1)),
        "nnz_upper": float(min(items * (items - 1.0), (deg * (deg - 1)).sum())),
    }
    return inter, xpath, info


# ---------------------------------------------------------------------------- children
def peak_rss_gib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def child_jaxrec(args, u, i, x) -> dict:
    import jax

    from jaxrec.init import cooccurrence_factors, rec_pca

    t0 = time.perf_counter()
    f = cooccurrence_factors(u, i, x.shape[0])
    host_s = time.perf_counter() - t0
    times = []
    for _ in range(1 + args.repeats):
        t0 = time.perf_counter()
        table_, w, rep = rec_pca(x, u, i, args.k, args.lam, return_report=True)
        jax.block_until_ready((table_, w))
        times.append(time.perf_counter() - t0)
    np.save(Path(args.out) / "w.npy", np.asarray(w, np.float64))
    warm = ", ".join(f"{t:.1f}" for t in times[1:])
    return {"cold_s": times[0], "warm_s": statistics.median(times[1:]), "isolated": f.isolated_items,
            "stages": f"graph stats (host) {host_s:.1f} s; warm runs {warm} s", "eigenvalues": list(rep.eigenvalues)}


def child_scipy(args, u, i, x) -> dict:
    import scipy.linalg
    import scipy.sparse as sp

    num_items, n = x.shape
    stages: list[str] = []
    out: dict = {}
    stage = ""

    def mark(name, t0):
        stages.append(f"{name} {time.perf_counter() - t0:.1f} s")

    t_all = time.perf_counter()
    try:
        stage = "B (CSR)"
        t0 = time.perf_counter()
        b = sp.csr_matrix((np.ones(u.size, np.float64), (u, i)), shape=(int(u.max()) + 1, num_items))
        b.data[:] = 1.0  # repeated pairs count once
        mark(stage, t0)
        stage = "C = B^T B"
        t0 = time.perf_counter()
        c = (b.T.tocsr() @ b).tocsr()
        c.setdiag(0)
        c.eliminate_zeros()
        out["nnz_c"] = int(c.nnz)
        mark(stage, t0)
        stage = "D^-1/2 C D^-1/2"
        t0 = time.perf_counter()
        d = np.asarray(c.sum(axis=1)).ravel()
        inv = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1.0)), 0.0)
        c.data *= inv[c.indices]
        c.data *= np.repeat(inv, np.diff(c.indptr))
        mark(stage, t0)
        stage = "L X"
        t0 = time.perf_counter()
        xc = x.astype(np.float64)
        xc -= xc.mean(axis=0)
        lx = (d > 0)[:, None] * xc - c @ xc
        mark(stage, t0)
        stage = "M, eigh"
        t0 = time.perf_counter()
        m = xc.T @ xc - args.lam * (xc.T @ lx)
        vals, vecs = scipy.linalg.eigh(m, subset_by_index=[n - args.k - 1, n - 1])
        vals, vecs = vals[::-1], vecs[:, ::-1]
        mark(stage, t0)
        out["eigenvalues"] = vals[: args.k].tolist()
        out["gap"] = float((vals[args.k - 1] - vals[args.k]) / vals[0])
        np.save(Path(args.out) / "w.npy", vecs[:, : args.k])
        out["warm_s"] = time.perf_counter() - t_all
    except MemoryError as e:
        out["error"] = f"MemoryError in {stage} after {time.perf_counter() - t_all:.0f} s: {e}"
    out["stages"] = "; ".join(stages)
    return out


def child_explicit(args, u, i, x) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxrec.init import item_cooccurrence, normalized_laplacian, top_eigenvectors

    @jax.jit
    def matrix(x, rows, cols, w):
        xc = x - x.mean(axis=0)
        lx = jax.ops.segment_sum(w[:, None] * xc[cols], rows, num_segments=x.shape[0])
        return xc.T @ xc - args.lam * (xc.T @ lx)

    t0 = time.perf_counter()
    lap = normalized_laplacian(item_cooccurrence(u, i, x.shape[0]))
    build = time.perf_counter() - t0
    _, w = top_eigenvectors(matrix(jnp.asarray(x), lap.rows, lap.cols, lap.weights), args.k)
    jax.block_until_ready(w)
    total = time.perf_counter() - t0
    np.save(Path(args.out) / "w.npy", np.asarray(w, np.float64))
    return {"cold_s": total, "stages": f"pair expansion + Laplacian (host) {build:.1f} s", "nnz_c": int(lap.rows.size)}


def run_child(args) -> None:
    if args.child == "scipy":
        import resource

        lim = int(args.scipy_mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    z = np.load(args.data)
    u, i = z["user"], z["item"]
    x = np.load(args.x)
    fn = {"jaxrec": child_jaxrec, "scipy": child_scipy, "explicit": child_explicit}[args.child]
    res = fn(args, u, i, x)
    res["peak_gib"] = peak_rss_gib()
    print("RESULT " + json.dumps(res), flush=True)


def spawn(who: str, inter: Path, xpath: Path, out: Path, args) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", who, "--data", str(inter), "--x", str(xpath), "--out", str(out),
           "--k", str(args.k), "--lam", str(args.lam), "--scipy-mem-gib", str(args.scipy_mem_gib),
           "--repeats", str(args.repeats)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished after the {args.timeout} s time limit"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit code {p.returncode} after {time.perf_counter() - t0:.0f} s: {tail}"}


def agreement(a: Path, b: Path, ev_a, ev_b) -> str:
    """Max relative eigenvalue difference and sin of the largest principal angle between the subspaces."""
    wa, wb = np.load(a), np.load(b)
    # ||(I - P_b) W_a||_2 (linear in the error; sqrt(1 - cos^2) would turn the float32
    # rounding of W_a, 1e-8 in cos, into 1e-4)
    sin = float(np.linalg.norm(wa - wb @ (wb.T @ wa), 2))
    ev = float(np.max(np.abs(np.asarray(ev_a) - np.asarray(ev_b)) / np.abs(ev_b))) if ev_a and ev_b else float("nan")
    return f"eig {ev:.1e}, sin {sin:.1e}"


def summarize(edges: int, res: dict, info: dict, work: Path, rows: list, notes: list) -> None:
    """Append one table row per route of this size, and the notes (stages, errors, nnz bounds)."""
    j = res["jaxrec"]
    for who, r in res.items():
        ok = "error" not in r and "error" not in j
        t = r.get("warm_s") or r.get("cold_s")
        ratio = f"{t / j['warm_s']:.1f}x" if who != "jaxrec" and ok else ""
        agree = ""
        if who != "jaxrec" and ok:
            agree = agreement(work / f"{edges}_jaxrec" / "w.npy", work / f"{edges}_{who}" / "w.npy",
                              j.get("eigenvalues"), r.get("eigenvalues"))
        if "error" in r:
            time_s = ""
        elif "cold_s" in r and "warm_s" in r:
            time_s = f"{r['cold_s']:.1f} / {r['warm_s']:.1f}"
        else:
            time_s = f"{t:.1f}"
        status = r["error"].split(":")[0] if "error" in r else "ok"
        nnz = f"{r['nnz_c']:.3g}" if "nnz_c" in r else ""
        rows.append([f"{edges:.0e}", who, time_s, f"{r.get('peak_gib', float('nan')):.2f}", ratio, nnz, agree,
                     status])
        notes.append(f"- {edges:.0e} {who}: {r.get('stages', '')}" + (f"; {r['error']}" if "error" in r else ""))
    if "gap" in res.get("scipy", {}):
        notes.append(f"- {edges:.0e}: relative eigengap (l_K - l_K+1) / l_1 = {res['scipy']['gap']:.2e}")
    notes.append(f"- {edges:.0e}: nnz(C) from the degrees: >= {info['nnz_lower']:.3g} (the heaviest user's items), "
                 f"<= {info['nnz_upper']:.3g}; >= {info['nnz_lower'] * 12 / 2**30:.1f} GiB as CSR (12 bytes/entry)")


def run_sizes(args, work: Path, rows: list, notes: list) -> None:
    """Generate (or reuse) each size's data, run the routes' children, collect the summary."""
    for scale in args.scales:
        edges = int(scale)
        inter, xpath, info = cached_data(edges, args)
        size = (f"{edges:.0e} ({info['users']:,} U, {info['items']:,} I, max deg {info['max_deg']:,}, "
                f"sum deg^2 {info['sum_deg2']:.2g})")
        print(f"{size}: generated in {info['gen_s']:.0f} s" if info["gen_s"] else f"{size}: cached data", flush=True)
        res = {}
        for who in ("jaxrec", "scipy", "explicit"):
            if who == "explicit" and info["sum_deg2"] > args.explicit_max_pairs:
                continue
            res[who] = spawn(who, inter, xpath, work / f"{edges}_{who}", args)
            shown = {k: v for k, v in res[who].items() if k != "eigenvalues"}
            print(f"  {who}: {json.dumps(shown)}", flush=True)
        summarize(edges, res, info, work, rows, notes)


# --------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1e5, 1e6, 1e7], help="interactions")
    ap.add_argument("--users-per", type=int, default=100, help="users = interactions / this")
    ap.add_argument("--items-per", type=int, default=100, help="items = interactions / this")
    ap.add_argument("--alpha", type=float, default=1.2)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scipy-mem-gib", type=float, default=8.0, help="address-space limit of the scipy child")
    ap.add_argument("--explicit-max-pairs", type=float, default=2e8,
                    help="run the pair-expanding route only when sum of user degree^2 is below this")
    ap.add_argument("--repeats", type=int, default=3, help="warm jaxrec runs after the cold one (median)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per child")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "jaxrec-bench-recpca"))
    ap.add_argument("--child", choices=["jaxrec", "scipy", "explicit"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--x", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)

    print(f"# Rec-PCA benchmark: N={args.dim}, K={args.k}, lam={args.lam}")
    print(f"machine: {machine_line()}\nversions: {versions_line()}")
    print(f"scipy child address-space limit {args.scipy_mem_gib:g} GiB; memory = peak resident (VmHWM) per child\n")
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="recpca-bench-") as tmp:
        run_sizes(args, Path(tmp), rows, notes)
    print()
    print(table(["interactions", "route", "s (cold / warm)", "peak GiB", "time vs jaxrec warm", "nnz(C)",
                 "agreement with jaxrec", "status"], rows))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
