"""Propagation kernels: one LightGCN layer ``A_hat @ x`` and a 2-layer forward+backward.

Competitors, all in one process run, interleaved, medians (see ``benchmarks/common.py``):

- jaxrec kernels (``jaxrec.graph.propagate``): bcsr (default), segment_sum, bcoo, dense
  (``dense`` rebuilds the dense adjacency every call, as the library does);
- dense jnp matmul with the dense adjacency precomputed (forward only);
- scipy.sparse CSR @ dense (one thread, forward only);
- torch.sparse.mm on COO built exactly as RecBole 1.2.1's LightGCN does (uncoalesced);
- torch.sparse.mm on CSR, and CSR with a symmetric custom backward (like jaxrec's bcsr VJP).

Bytes per layer follow DESIGN.md section 5: ``nnz * (12 + 4d) + N * 4d``; the floor is
those bytes over the memory bandwidth measured in the same run. On ml-100k the node table
(N x d floats, 1.3 MB at d = 128) sits in cache, so the row gathers are cache hits and a
kernel can beat the "floor": read the fraction as an effective bandwidth, not a bound.

    python benchmarks/propagation.py                    # ml-100k, d = 128 and 64
    python benchmarks/propagation.py --dim 128 --repeats 15
    python benchmarks/propagation.py --graph synthetic --edges 1000000 --dim 64
    python benchmarks/propagation.py --graph suite     # ml-100k + 10^5, 10^6, 10^7 interactions, d = 128, 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    bench_interleaved, compulsory_bytes, cpu_count, layer_bytes, load_ml100k_train, machine_line, measure_bandwidth, median,
    synthetic_train, table, versions_line,
)
from jaxrec.graph import build_graph, dense_adjacency, light_propagate, propagate  # noqa: E402

warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)

JAX_KERNELS = ("bcsr", "segment_sum", "bcoo", "dense")
DENSE_MAX_NODES = 20_000  # dense [N, N] float32 beyond this is > 1.6 GB


class _SymmetricSpmm(torch.autograd.Function):
    """``A @ x`` with backward ``A @ g`` (A symmetric): the torch twin of jaxrec's bcsr VJP."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, g):
        return None, torch.sparse.mm(ctx.adj, g)


def torch_adjacencies(graph) -> dict[str, torch.Tensor]:
    """The normalized adjacency as torch sparse tensors (same values and order as ``graph``).

    ``coo``: ``torch.sparse_coo_tensor(indices, values, shape)`` straight from a scipy COO
    in row-major order, uncoalesced, exactly as RecBole's ``get_norm_adj_mat`` builds it.
    """
    n = graph.num_nodes
    row = torch.from_numpy(np.asarray(graph.row).astype(np.int64))
    col = torch.from_numpy(np.asarray(graph.indices).astype(np.int64))
    val = torch.from_numpy(np.asarray(graph.weight, dtype=np.float32).copy())
    coo = torch.sparse_coo_tensor(torch.stack([row, col]), val, (n, n))
    csr = torch.sparse_csr_tensor(torch.from_numpy(np.asarray(graph.indptr).astype(np.int64)), col, val, (n, n))
    return {"coo": coo, "csr": csr}


def run(graph, dim: int, repeats: int, fwd_bwd: bool = True, skip_slow: bool = False) -> dict:
    """Time every competitor; returns ``{"fwd": (samples, errs), "fb": (samples, errs)}``."""
    n = graph.num_nodes
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((n, dim), dtype=np.float32) * 0.1
    x = jnp.asarray(x_np)

    # float64 references
    a64 = sp.csr_matrix((np.asarray(graph.weight, np.float64), np.asarray(graph.indices), np.asarray(graph.indptr)),
                        shape=(n, n))
    ref_fwd = a64 @ x_np.astype(np.float64)
    out64 = (x_np + ref_fwd + a64 @ ref_fwd) / 3.0
    # d/dx sum(out^2) = 2 M^T out with M = (I + A + A^2) / 3 and A symmetric
    ref_grad = 2.0 * (out64 + a64 @ out64 + a64 @ (a64 @ out64)) / 3.0

    kernels = [k for k in JAX_KERNELS if not (k == "dense" and n > DENSE_MAX_NODES)]
    if skip_slow:
        kernels = ["bcsr"]
    prop = jax.jit(propagate, static_argnames="kernel")
    fwd: dict[str, callable] = {}
    for k in kernels:
        fwd[f"jaxrec {k}"] = (lambda k=k: prop(graph, x, kernel=k).block_until_ready())
    if n <= DENSE_MAX_NODES:
        a_dense = dense_adjacency(graph)
        mm = jax.jit(lambda a, v: a @ v)
        fwd["jnp dense matmul (A precomputed)"] = lambda: mm(a_dense, x).block_until_ready()
    a32 = a64.astype(np.float32)
    fwd["scipy CSR (1 thread)"] = lambda: a32 @ x_np
    adj = torch_adjacencies(graph)
    xt = torch.from_numpy(x_np)
    fwd["torch COO (RecBole)"] = lambda: torch.sparse.mm(adj["coo"], xt)
    fwd["torch CSR"] = lambda: torch.sparse.mm(adj["csr"], xt)
    cuda_fwd, cuda_fb = torch_cuda_competitors(adj, x_np)  # empty without a GPU
    fwd.update(cuda_fwd)

    def errors(fns, ref):
        out = {}
        for name, fn in fns.items():
            r = fn()
            r = r.detach().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
            out[name] = float(np.max(np.abs(r.astype(np.float64) - ref)))
        return out

    res = {"fwd": (bench_interleaved(fwd, repeats), errors(fwd, ref_fwd))}
    if not fwd_bwd:
        return res

    def jloss(v, g, kernel):
        return jnp.sum(light_propagate(g, v, 2, kernel) ** 2)

    jgrad = jax.jit(jax.grad(jloss), static_argnames="kernel")
    fb: dict[str, callable] = {}
    for k in kernels:
        fb[f"jaxrec {k}"] = (lambda k=k: jgrad(x, graph, kernel=k).block_until_ready())
    xg = xt.clone().requires_grad_(True)

    def torch_fb(mm_fn):
        def f():
            xg.grad = None
            outs = [xg]
            h = xg
            for _ in range(2):
                h = mm_fn(h)
                outs.append(h)
            out = torch.stack(outs, dim=1).mean(dim=1)  # RecBole's layer mean
            (out ** 2).sum().backward()
            return xg.grad
        return f

    fb["torch COO (RecBole)"] = torch_fb(lambda h: torch.sparse.mm(adj["coo"], h))
    fb["torch CSR"] = torch_fb(lambda h: torch.sparse.mm(adj["csr"], h))
    fb["torch CSR + symmetric VJP"] = torch_fb(lambda h: _SymmetricSpmm.apply(adj["csr"], h))
    fb.update(cuda_fb)
    res["fb"] = (bench_interleaved(fb, repeats), errors(fb, ref_grad))
    return res


class _HostCopy:
    """A GPU result that ``np.asarray`` copies to the host (only for the error check)."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def __array__(self, dtype=None, copy=None):
        a = self.t.detach().cpu().numpy()
        return a.astype(dtype) if dtype is not None else a


def torch_cuda_competitors(adj: dict, x_np: np.ndarray) -> tuple[dict, dict]:
    """torch.sparse.mm on the GPU when torch sees one: ``({fwd name: fn}, {fwd+bwd name: fn})``.

    Each call ends with ``torch.cuda.synchronize()``, so the timing covers the kernels.
    Empty dicts without CUDA (the CPU-only torch wheel here).
    """
    if not torch.cuda.is_available():
        return {}, {}
    dev = torch.device("cuda")
    coo, csr = adj["coo"].to(dev), adj["csr"].to(dev)
    xt = torch.from_numpy(x_np).to(dev)
    xg = xt.clone().requires_grad_(True)

    def synced(f):
        def g():
            r = f()
            torch.cuda.synchronize()
            return _HostCopy(r)
        return g

    def fb(mm_fn):
        def f():
            xg.grad = None
            outs, h = [xg], xg
            for _ in range(2):
                h = mm_fn(h)
                outs.append(h)
            (torch.stack(outs, dim=1).mean(dim=1) ** 2).sum().backward()
            return xg.grad
        return synced(f)

    name = torch.cuda.get_device_name(0)
    fwd = {f"torch COO (cuda, {name})": synced(lambda: torch.sparse.mm(coo, xt)),
           f"torch CSR (cuda, {name})": synced(lambda: torch.sparse.mm(csr, xt))}
    fbs = {f"torch COO (cuda, {name})": fb(lambda h: torch.sparse.mm(coo, h)),
           f"torch CSR (cuda, {name})": fb(lambda h: torch.sparse.mm(csr, h))}
    return fwd, fbs


def suite_data(edges: int, alpha: float, cache_dir: str | None):
    """``synthetic_train(edges, alpha)``, kept as an .npz under ``cache_dir`` between runs
    (generating 10^7 interactions takes a quarter of an hour here)."""
    from benchmarks.common import TrainData  # noqa: PLC0415

    path = Path(cache_dir) / f"synthetic_{edges}_a{alpha}_pop.npz" if cache_dir else None
    if path is not None and path.exists():
        z = np.load(path)
        return TrainData(z["user"], z["item"], int(z["num_users"]), int(z["num_items"]), str(z["source"]))
    data = synthetic_train(edges, alpha=alpha)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, user=data.user, item=data.item, num_users=data.num_users, num_items=data.num_items,
                 source=data.source)
    return data


def main_suite(args) -> int:
    """``--graph suite``: ml-100k and synthetic graphs of ``--suite-edges`` interactions, one run.

    The memory bandwidth is measured once before and once after all graphs; graphs of more
    than ``--slow-max-edges`` interactions time only bcsr among the jaxrec kernels (the
    others take seconds per call there) with ``--big-repeats`` samples.
    """
    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    print("# Propagation kernels: ml-100k and synthetic power-law graphs (one run)")
    print(f"machine: {machine_line()}")
    print(f"versions: {versions_line()}; jax backend {jax.default_backend()}, torch threads {torch.get_num_threads()}"
          f", torch cuda {torch.cuda.is_available()}")
    bw0 = measure_bandwidth()
    done = []
    for e in [0] + list(args.suite_edges):
        data = load_ml100k_train() if e == 0 else suite_data(e, args.alpha, args.cache_dir)
        graph = build_graph(data.user, data.item, data.num_users, data.num_items)
        big = e > args.slow_max_edges
        reps = args.big_repeats if big else args.repeats
        print(f"  {data.source}: {graph.num_nodes} nodes, {graph.num_edges} directed edges", file=sys.stderr,
              flush=True)
        res = {d: run(graph, d, reps, fwd_bwd=not args.no_backward, skip_slow=args.fast_only or big)
               for d in args.dim}
        done.append((data, graph, res, reps, big))
    bw1 = measure_bandwidth()
    bandwidth = report_bandwidth(bw0, bw1, ", before and after all graphs")
    for data, graph, res, reps, big in done:
        print(f"\n## {data.source}: {data.num_users} users + {data.num_items} items = {graph.num_nodes:,} nodes, "
              f"{graph.num_edges:,} directed edges" + (" (jaxrec bcsr only among jaxrec kernels)" if big else ""))
        for d in args.dim:
            print(render(res[d], graph, d, reps, bandwidth))
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    return 0


def render(res: dict, graph, dim: int, repeats: int, bandwidth: float) -> str:
    n, nnz = graph.num_nodes, graph.num_edges
    nbytes = layer_bytes(nnz, n, dim)
    cbytes = compulsory_bytes(nnz, n, dim)
    lines = [f"\n### d = {dim}: N = {n:,} nodes, nnz = {nnz:,} edges; per layer {nbytes / 1e6:.1f} MB "
             f"(DESIGN.md 5 model), floor {1e3 * nbytes / bandwidth / 1e9:.3f} ms; compulsory "
             f"{cbytes / 1e6:.1f} MB, floor {1e3 * cbytes / bandwidth / 1e9:.3f} ms (at {bandwidth:.1f} GB/s)\n"]
    samples, errs = res["fwd"]
    base = median(samples["jaxrec bcsr"])
    rows = []
    for name, s in samples.items():
        t, tmin = median(s), min(s)
        gbs = nbytes / t / 1e9
        rows.append([name, f"{1e3 * t:.3f}", f"{1e3 * tmin:.3f}", f"{gbs:.1f}", f"{gbs / bandwidth:.2f}",
                     f"{nbytes / tmin / 1e9 / bandwidth:.2f}", f"{t / base:.2f}x", f"{errs[name]:.0e}"])
    lines.append(f"One layer forward, d = {dim} (median and min of {repeats} interleaved samples; GB/s and "
                 f"time / bcsr from medians):\n")
    lines.append(table(["kernel", "ms/layer", "min ms", "GB/s", "frac. of floor", "frac. at min", "time / bcsr",
                        "max abs err"], rows))
    if "fb" in res:
        samples, errs = res["fb"]
        base = median(samples["jaxrec bcsr"])
        rows = []
        for name, s in samples.items():
            t, tmin = median(s), min(s)
            gbs = 4 * nbytes / t / 1e9  # 2 layers forward + 2 transposed products backward
            rows.append([name, f"{1e3 * t:.3f}", f"{1e3 * tmin:.3f}", f"{1e3 * t / 4:.3f}", f"{gbs:.1f}",
                         f"{gbs / bandwidth:.2f}", f"{4 * nbytes / tmin / 1e9 / bandwidth:.2f}", f"{t / base:.2f}x",
                         f"{errs[name]:.0e}"])
        lines.append(f"\nTwo layers forward + backward, d = {dim}: grad of sum(light_propagate(x, 2)**2) w.r.t. x; "
                     f"bytes counted as 4 SpMM passes (ms/pass = median / 4):\n")
        lines.append(table(["kernel", "ms total", "min ms", "ms/pass", "GB/s", "frac. of floor", "frac. at min",
                            "time / bcsr", "max abs err"], rows))
    return "\n".join(lines)


def report_bandwidth(bw0: dict, bw1: dict, when: str = "") -> float:
    """Print the bandwidth measured before (``bw0``) and after (``bw1``); returns the best
    copy/scale figure (GB/s), the one the floors use."""
    bandwidth = max(bw[k] for bw in (bw0, bw1) for k in ("numpy copy", "jnp x*c (donated)"))
    print("\nMemory bandwidth, GB/s (256 MB float32 arrays, median of 7 interleaved; copy/scale count "
          f"read + write bytes, sum counts read bytes){when}:\n")
    print(table(["measure", "before", "after"], [[k, f"{bw0[k]:.1f}", f"{bw1[k]:.1f}"] for k in bw0]))
    print(f"\nBandwidth used for the floors: {bandwidth:.1f} GB/s (best copy/scale figure of the run).")
    return bandwidth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, nargs="+", default=[128, 64], help="embedding sizes (default 128 64)")
    p.add_argument("--repeats", type=int, default=11, help="interleaved samples per competitor (default 11)")
    p.add_argument("--graph", choices=("ml-100k", "synthetic", "suite"), default="ml-100k",
                   help="suite: ml-100k and synthetic graphs of --suite-edges interactions in one run")
    p.add_argument("--suite-edges", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--slow-max-edges", type=int, default=2_000_000,
                   help="suite: above this many interactions, bcsr is the only jaxrec kernel timed")
    p.add_argument("--big-repeats", type=int, default=5, help="suite: samples per competitor on those graphs")
    p.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "jaxrec-bench"),
                   help="suite: where generated synthetic graphs are kept between runs ('' = nowhere)")
    p.add_argument("--edges", type=int, default=1_000_000, help="interactions of the synthetic graph")
    p.add_argument("--alpha", type=float, default=1.2, help="power-law exponent of the synthetic graph")
    p.add_argument("--no-backward", action="store_true", help="skip the forward+backward table")
    p.add_argument("--fast-only", action="store_true", help="jaxrec bcsr only among jaxrec kernels (big graphs)")
    p.add_argument("--torch-threads", type=int, default=cpu_count())
    args = p.parse_args(argv)
    if args.graph == "suite":
        return main_suite(args)

    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    data = load_ml100k_train() if args.graph == "ml-100k" else synthetic_train(args.edges, alpha=args.alpha)
    graph = build_graph(data.user, data.item, data.num_users, data.num_items)
    print(f"# Propagation kernels on {args.graph}")
    print(f"machine: {machine_line()}")
    print(f"versions: {versions_line()}; jax backend {jax.default_backend()}, torch threads {torch.get_num_threads()}")
    print(f"data: {data.source}")
    print(f"graph: {data.num_users} users + {data.num_items} items = {graph.num_nodes} nodes, "
          f"{len(data.user)} training interactions, {graph.num_edges} directed edges")

    bw0 = measure_bandwidth()
    results = {d: run(graph, d, args.repeats, fwd_bwd=not args.no_backward, skip_slow=args.fast_only)
               for d in args.dim}
    bw1 = measure_bandwidth()
    bandwidth = report_bandwidth(bw0, bw1)
    print("Fractions above 1 mean the kernel beats the DESIGN.md model: the gathered node rows come from "
          "cache (N x d table of a few MB), not DRAM. The header of each section also gives the "
          "compulsory bytes with a cached table (nnz*12 + 2*N*4d) and their floor.")
    for d in args.dim:
        print(render(results[d], graph, d, args.repeats, bandwidth))
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
