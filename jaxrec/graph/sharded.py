"""Sharded graphs: the two multi-device propagation strategies behind ``propagate``.

Both types subclass ``BipartiteGraph``, so every model, ``renormalize`` and the SGL
augmentations work on them unchanged; ``jaxrec.graph.propagate`` sends a graph that has a
``sharded_propagate`` method to it. ``shard_graph(graph, mesh, strategy, axis)`` builds
either from a single-device graph; ``jaxrec.train.sharding.Placement`` does this for
``fit``.

**feature** (``FeatureShardedGraph``): the graph is replicated on every device and the
node table ``x`` [N, d] is split along the embedding dimension over mesh axis ``axis``.
``A x`` splits column-wise, ``(A x)[:, cols] = A x[:, cols]``, so every device runs the
single-device kernel on its own columns: no communication at all. Needs d divisible by
the axis size; memory per device: the whole graph plus N * d / P floats.

**row** (``RowShardedGraph``): nodes are split in contiguous blocks of
``R = ceil(N / P)`` rows (node ids ``[p R, (p+1) R)`` on device ``p``; the last blocks are
padded with isolated nodes, so any N works), and each device stores only the edges that
end in its rows (CSR, padded to the largest device's count). The flat edge arrays
(``row``, ``indices``, ``weight``, ``edge_mask``) stay in global CSR order, device-major,
so ``renormalize`` and the augmentations run on them as on one device (under GSPMD:
degrees are one all-reduce of N floats). For the product, the edges of device ``p`` are
grouped by the block ``q`` their source lies in; communication (``comm``):

- ``"ring"`` (default): a loop (``lax.scan``) over the P source blocks: each device
  multiplies the block it holds by its edge block for that source block, then passes
  the block to its neighbour (``ppermute``) and receives the next one. The loop reuses
  its buffers, so a device holds its own rows and one block in flight, never the
  table, whatever the compiler's schedule: per-device memory is O(E/P + N d/P). Moves
  the bytes of an all-gather; every step's edge arrays are padded to the largest
  (device, block) pair.
- ``"direct"``: unrolled steps in which devices receive blocks straight from their
  owners, only between device pairs that share edges (bipartite graphs: a block of
  users needs no other block of users), with pairs of similar edge counts grouped into
  a step so that padding is small. Moves fewer bytes than ``ring``, but XLA:CPU keeps
  the received blocks of all steps alive at once (measured: about 15 R x d blocks in a
  2-layer training step), so it bounds traffic, not memory.
- ``"allgather"``: ``all_gather`` the table (each device holds all N x d floats for the
  duration of the layer), then one local product.

Backward: the normalized adjacency is symmetric (``A^T = A``), so the cotangent of a
layer is the same row-sharded product applied to the incoming gradient (a custom VJP,
as the single-device ``bcsr`` kernel does). Edge weights get no gradient.

Balance: nodes are split by id, so a device's edge count follows the degrees of its id
range, and arrays are padded to the busiest device. On the 10^6-interaction synthetic
power-law graph over 8 devices the busiest device held 1.5x the mean with shuffled ids
(users have more edges per node than items), 2.9x with ids sorted by popularity; real
data sets number nodes in no such order (``benchmarks/scaling.py`` shuffles its
synthetic ids for that reason).

Inside each block the configured kernel runs (``bcsr``, ``segment_sum``, ``bcoo`` or
``dense``), so ``config.kernel`` keeps its meaning.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.custom_derivatives import SymbolicZero
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.graph.bipartite import BipartiteGraph
from jaxrec.graph.kernels import get_kernel
from jaxrec.registry import ROW_COMMS

STRATEGIES = ("feature", "row")

# Row-sharded communication schemes (``config.row_comm``); described in the module docstring.
ROW_COMMS.register("ring", "a scan over source blocks passed around the ring (bounded memory)")
ROW_COMMS.register("direct", "unrolled steps between device pairs that share edges (least traffic)")
ROW_COMMS.register("allgather", "all-gather the node table, then one local product")

__all__ = [
    "FeatureShardedGraph",
    "RowShardedGraph",
    "STRATEGIES",
    "shard_graph",
    "unshard_graph",
    "put_global",
]


# ---------------------------------------------------------------------------- helpers


def put_global(x, sharding: NamedSharding) -> jax.Array:
    """Place ``x`` (numpy, or a jax array) with ``sharding``; works across processes.

    A host array (the same on every process) is cut into the shards this process owns
    (``make_array_from_callback``), so a multi-host run never needs a device to hold it
    whole. A jax array that is already global is resharded with ``device_put``.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.process_count() == 1:
        return jax.device_put(x, sharding)
    arr = np.asarray(x)
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def _axis_size(mesh: Mesh, axis: str) -> int:
    if axis not in mesh.shape:
        raise ValueError(f"mesh axis {axis!r} is not an axis of the mesh {dict(mesh.shape)}")
    return int(mesh.shape[axis])


# ------------------------------------------------------------------- feature strategy


@struct.dataclass
class FeatureShardedGraph(BipartiteGraph):
    """A replicated ``BipartiteGraph`` whose propagation splits the embedding dimension."""

    mesh: Mesh = struct.field(pytree_node=False, default=None)
    axis: str = struct.field(pytree_node=False, default="data")

    @property
    def strategy(self) -> str:
        return "feature"

    def plain(self) -> BipartiteGraph:
        return BipartiteGraph(
            indptr=self.indptr, indices=self.indices, row=self.row, weight=self.weight,
            edge_mask=self.edge_mask, degree=self.degree, num_users=self.num_users, num_items=self.num_items,
        )

    def sharded_propagate(self, x: jax.Array, kernel: str) -> jax.Array:
        from jaxrec.graph.propagate import plain_propagate  # noqa: PLC0415 (propagate imports us lazily)

        size = _axis_size(self.mesh, self.axis)
        if x.shape[1] % size:
            raise ValueError(
                f"propagate (feature sharding): embedding size {x.shape[1]} is not divisible by the "
                f"{size} devices of mesh axis {self.axis!r}"
            )
        k = get_kernel(kernel)
        local = jax.shard_map(
            lambda g, xs: plain_propagate(g, xs, k.product, k.symmetric_vjp),
            mesh=self.mesh,
            in_specs=(P(), P(None, self.axis)),
            out_specs=P(None, self.axis),
            check_vma=False,
        )
        return local(self.plain(), x)


# ----------------------------------------------------------------------- row strategy


@struct.dataclass
class RowShardedGraph(BipartiteGraph):
    """Nodes and their incoming edges split in row blocks over mesh axis ``axis``.

    Extra leaves (all split over ``axis``, one equal-size chunk per device), one entry per
    communication step: ``step_perm`` (position of the step's edges in the device's chunk
    of the flat edge arrays; padding points one past the chunk, to a zero weight),
    ``step_src`` (source row within the step's source block) and ``step_indptr`` (CSR
    pointers of the step's edges over the device's ``R`` rows); for ``comm="ring"`` one
    entry of each, shaped ``[P * P, E_s]`` (device p's chunk is its ``[P, E_s]`` loop
    input, one row per source block). Static:
    ``rows_per_device`` R, ``edges_per_device``, ``step_pairs`` (the (source, destination)
    device pairs that exchange a block at each step), ``step_local`` (the devices that
    multiply their own block at each step), ``comm``.
    """

    step_perm: tuple = ()
    step_src: tuple = ()
    step_indptr: tuple = ()
    mesh: Mesh = struct.field(pytree_node=False, default=None)
    axis: str = struct.field(pytree_node=False, default="data")
    rows_per_device: int = struct.field(pytree_node=False, default=0)
    edges_per_device: int = struct.field(pytree_node=False, default=0)
    step_pairs: tuple = struct.field(pytree_node=False, default=())
    step_local: tuple = struct.field(pytree_node=False, default=())
    comm: str = struct.field(pytree_node=False, default="ring")

    @property
    def strategy(self) -> str:
        return "row"

    @property
    def num_shards(self) -> int:
        return _axis_size(self.mesh, self.axis)

    @property
    def padded_nodes(self) -> int:
        return self.rows_per_device * self.num_shards

    @property
    def step_edges(self) -> tuple[int, ...]:
        """Padded edge count of each step (per device)."""
        return tuple(int(a.size) // self.num_shards for a in self.step_perm)

    def sharded_propagate(self, x: jax.Array, kernel: str) -> jax.Array:
        n, np_ = self.num_nodes, self.padded_nodes
        xp = jnp.pad(x, ((0, np_ - n), (0, 0))) if np_ > n else x
        arrays = (self.weight, self.step_perm, self.step_src, self.step_indptr)
        out = _row_spmm_fn(self._static(kernel))(arrays, xp)
        return out[:n] if np_ > n else out

    def _static(self, kernel: str) -> "_RowStatic":
        return _RowStatic(
            mesh=self.mesh, axis=self.axis, rows=self.rows_per_device, nsteps=len(self.step_perm),
            pairs=self.step_pairs, local=self.step_local, comm=self.comm, kernel=kernel,
        )


@functools.lru_cache(maxsize=None)
def _row_spmm_fn(static: "_RowStatic") -> Callable:
    """``(arrays, x [Np, d]) -> A x`` for one static layout, with the symmetric VJP."""
    apply = _row_shard_map(static)

    @jax.custom_vjp
    def spmm(arrays, x):
        return apply(arrays, x)

    def fwd(arrays, x):
        if arrays[0].perturbed:
            raise NotImplementedError(
                "propagate: gradients with respect to the edge weights are not available for row-sharded "
                "graphs (their edges are laid out per communication step); use sharding='feature' or 'none'"
            )
        arrays = jax.tree.map(lambda a: a.value, arrays, is_leaf=lambda a: hasattr(a, "perturbed"))
        return apply(arrays, x.value), arrays

    def bwd(arrays, g):
        # A is symmetric: A^T g = A g, the same row-sharded product. Edge weights are not
        # differentiated (fwd refuses it).
        none = jax.tree.map(lambda _: None, arrays)
        if isinstance(g, SymbolicZero):
            return none, jnp.zeros(g.shape, g.dtype)
        return none, apply(arrays, g)

    spmm.defvjp(fwd, bwd, symbolic_zeros=True)
    return spmm


class _RowStatic(NamedTuple):
    """Hashable static description of a row-sharded product (the cache key of its function)."""

    mesh: Mesh
    axis: str
    rows: int
    nsteps: int
    pairs: tuple
    local: tuple
    comm: str
    kernel: str


def _block_product(kernel: str, w, src, indptr, xb, rows: int) -> jax.Array:
    """``B @ xb`` for one edge block B [rows, xb.shape[0]] given in CSR form (registered kernel)."""
    # Destination row of every edge, from the CSR pointers (padding sits in the last row).
    dst = jnp.repeat(jnp.arange(rows, dtype=src.dtype), jnp.diff(indptr), total_repeat_length=src.shape[0])
    return get_kernel(kernel).product(w.astype(xb.dtype), src, dst, indptr, xb, rows, False)


def _row_shard_map(st: _RowStatic) -> Callable:
    axis, rows, nsh = st.axis, st.rows, int(st.mesh.shape[st.axis])

    def local(arrays, xb):
        weight, perms, srcs, indptrs = arrays
        w_ext = jnp.concatenate([weight, jnp.zeros((1,), weight.dtype)])  # padding -> weight 0
        if st.comm == "allgather":
            full = jax.lax.all_gather(xb, axis, tiled=True)  # [Np, d]
            return _block_product(st.kernel, w_ext[perms[0]], srcs[0], indptrs[0], full, rows)
        if st.comm == "ring":
            # A loop over the P source blocks: multiply the block held, pass it to the
            # previous device, receive the next one. The loop reuses its buffers, so a
            # device holds its own block and the one in flight, whatever the scheduler.
            shift = [(j, (j - 1) % nsh) for j in range(nsh)]

            def body(carry, xs):
                block, out = carry
                perm, src, ptr = xs
                out = out + _block_product(st.kernel, w_ext[perm], src, ptr, block, rows)
                return (jax.lax.ppermute(block, axis, perm=shift), out), None

            (_, out), _ = jax.lax.scan(body, (xb, jnp.zeros_like(xb)), (perms[0], srcs[0], indptrs[0]))
            return out
        me = jax.lax.axis_index(axis)
        out = jnp.zeros_like(xb)
        for k, (pairs, local_devs) in enumerate(zip(st.pairs, st.local)):
            if not pairs:
                block = xb
            else:
                block = jax.lax.ppermute(xb, axis, perm=pairs)  # devices not receiving get zeros
                if local_devs:
                    is_local = jnp.asarray([d in local_devs for d in range(nsh)])[me]
                    block = jnp.where(is_local, xb, block)
            out = out + _block_product(st.kernel, w_ext[perms[k]], srcs[k], indptrs[k], block, rows)
        return out

    spec = P(axis)
    steps = tuple(spec for _ in range(st.nsteps))
    return jax.shard_map(
        local,
        mesh=st.mesh,
        in_specs=((spec, steps, steps, steps), P(axis, None)),
        out_specs=P(axis, None),
        check_vma=False,
    )


def _schedule(counts: np.ndarray) -> list[list[tuple[int, int]]]:
    """Group the (receiver p, source block q) pairs with edges into exchange steps.

    A step is a partial matching: each device receives at most one block and sends at
    most one (its own block used locally does not count as sending). Every step's
    arrays are padded to its largest pair, so pairs of similar size are put together
    (greedy, largest first, best fit); the plain ring (step s: q = p + s) is kept when
    it pads less.
    """
    nsh = counts.shape[0]
    pairs = sorted(((int(counts[p, q]), p, q) for p in range(nsh) for q in range(nsh) if counts[p, q] > 0),
                   reverse=True)
    steps: list[dict] = []
    for c, p, q in pairs:
        best, best_cost = None, None
        for st in steps:
            if p in st["recv"] or (q != p and q in st["send"]):
                continue
            cost = (max(c - st["max"], 0), st["max"] - c if st["max"] >= c else 0)
            if best is None or cost < best_cost:
                best, best_cost = st, cost
        if best is None:
            best = {"recv": set(), "send": set(), "max": 0, "pairs": []}
            steps.append(best)
        best["recv"].add(p)
        if q != p:
            best["send"].add(q)
        best["max"] = max(best["max"], c)
        best["pairs"].append((p, q))
    greedy = [st["pairs"] for st in steps]
    ring = [[(p, (p + s) % nsh) for p in range(nsh) if counts[p, (p + s) % nsh] > 0] for s in range(nsh)]
    ring = [r for r in ring if r]

    def padded(schedule):
        return sum(max(counts[p, q] for p, q in st) for st in schedule)

    best = greedy if padded(greedy) < padded(ring) else ring
    return best or [[(0, 0)]]


def _pad_indptr(ptr: np.ndarray, total: int) -> np.ndarray:
    """CSR pointers [..., R + 1] of steps padded to ``total`` edges: the extra ones join the last row."""
    out = ptr.copy()
    out[..., -1] = total
    return out


def _row_layout(graph: BipartiteGraph, num_shards: int, comm: str) -> dict:
    """Host-side (numpy) row-sharded layout of ``graph`` over ``num_shards`` devices."""
    n = graph.num_nodes
    nsh = num_shards
    rows = max(1, math.ceil(n / nsh))
    indptr = np.asarray(graph.indptr).astype(np.int64)
    row = np.asarray(graph.row).astype(np.int64)
    col = np.asarray(graph.indices).astype(np.int64)
    bounds = np.minimum(np.arange(nsh + 1) * rows, n)
    starts, stops = indptr[bounds[:-1]], indptr[bounds[1:]]
    counts = stops - starts
    ecap = max(1, int(counts.max()))

    # Flat edge arrays: device-major chunks of ecap, global CSR order, zero-weight padding
    # whose row keeps the order sorted (the device's last row, clipped to N - 1).
    flat = {name: np.zeros(nsh * ecap, dtype) for name, dtype in
            (("row", np.int32), ("indices", np.int32), ("weight", np.float32), ("edge_mask", np.float32))}
    src_arrays = {"row": row, "indices": col, "weight": np.asarray(graph.weight),
                  "edge_mask": np.asarray(graph.edge_mask)}
    for p in range(nsh):
        a, b, c = int(starts[p]), int(stops[p]), int(counts[p])
        sl = slice(p * ecap, p * ecap + c)
        for name in flat:
            flat[name][sl] = src_arrays[name][a:b]
        flat["row"][p * ecap + c:(p + 1) * ecap] = min((p + 1) * rows - 1, n - 1)

    # Edges of device p grouped by the source block q they read: (positions, local dst, local src).
    groups: dict[tuple[int, int], tuple] = {}
    pair_counts = np.zeros((nsh, nsh), np.int64)
    for p in range(nsh):
        a, b = int(starts[p]), int(stops[p])
        pos, dst, src = np.arange(b - a), row[a:b] - p * rows, col[a:b]
        if comm == "allgather":
            groups[(p, 0)] = (pos, dst, src)
            continue
        blk = src // rows
        for q in np.unique(blk):
            m = blk == q
            groups[(p, int(q))] = (pos[m], dst[m], src[m] - q * rows)
            pair_counts[p, q] = int(m.sum())
    if comm == "allgather":
        schedule = [[(p, 0) for p in range(nsh)]]
    elif comm == "ring":  # step s: every device multiplies block (p + s) mod P
        schedule = [[(p, (p + s) % nsh) for p in range(nsh)] for s in range(nsh)]
    else:
        schedule = _schedule(pair_counts)

    pairs, local, perms, srcs, indptrs = [], [], [], [], []
    empty = (np.zeros(0, np.int64),) * 3
    for st in schedule:
        members = {p: q for p, q in st}
        es = max(1, max(len(groups.get((p, q), empty)[0]) for p, q in st))
        perm = np.full((nsh, es), ecap, np.int32)  # padding -> the zero weight past the chunk
        srca = np.zeros((nsh, es), np.int32)
        ptr = np.zeros((nsh, rows + 1), np.int32)
        for p in range(nsh):
            pos, dst, src = groups.get((p, members[p]), empty) if p in members else empty
            c = len(pos)
            perm[p, :c], srca[p, :c] = pos, src
            cnt = np.bincount(dst, minlength=rows)
            cnt[rows - 1] += es - c  # padding sits in the last row
            ptr[p, 1:] = np.cumsum(cnt)
        if comm == "direct":
            pairs.append(tuple((q, p) for p, q in st if q != p))
            local.append(tuple(p for p, q in st if q == p))
        perms.append(perm)
        srcs.append(srca)
        indptrs.append(ptr)
    if comm == "ring":  # one [P * S, E_s] array per kind: device p's chunk is its [S, E_s] loop input
        es = max(a.shape[1] for a in perms)
        pad = lambda a, fill: np.pad(a, ((0, 0), (0, es - a.shape[1])), constant_values=fill)  # noqa: E731
        perms = [np.stack([pad(a, ecap) for a in perms], axis=1).reshape(nsh * len(schedule), es)]
        srcs = [np.stack([pad(a, 0) for a in srcs], axis=1).reshape(nsh * len(schedule), es)]
        indptrs = [_pad_indptr(np.stack(indptrs, axis=1), es).reshape(nsh * len(schedule), rows + 1)]
    else:
        perms = [a.ravel() for a in perms]
        srcs = [a.ravel() for a in srcs]
        indptrs = [a.ravel() for a in indptrs]
    return dict(flat=flat, rows=rows, ecap=ecap, pairs=tuple(pairs), local=tuple(local),
                perms=perms, srcs=srcs, indptrs=indptrs)


# --------------------------------------------------------------------------- public API


def shard_graph(
    graph: BipartiteGraph, mesh: Mesh, strategy: str, axis: str, comm: str = "ring"
) -> FeatureShardedGraph | RowShardedGraph:
    """Lay ``graph`` out over ``mesh`` for strategy ``"feature"`` or ``"row"`` along ``axis``.

    The result propagates exactly like ``graph`` (same ``propagate`` signature, same
    numbers up to float summation order) and keeps its logical node count.
    """
    if isinstance(graph, (FeatureShardedGraph, RowShardedGraph)):
        graph = unshard_graph(graph)
    nsh = _axis_size(mesh, axis)
    replicated = NamedSharding(mesh, P())
    if strategy == "feature":
        return FeatureShardedGraph(
            indptr=put_global(graph.indptr, replicated), indices=put_global(graph.indices, replicated),
            row=put_global(graph.row, replicated), weight=put_global(graph.weight, replicated),
            edge_mask=put_global(graph.edge_mask, replicated), degree=put_global(graph.degree, replicated),
            num_users=graph.num_users, num_items=graph.num_items, mesh=mesh, axis=axis,
        )
    if strategy != "row":
        raise ValueError(f"shard_graph: strategy={strategy!r}; expected one of {', '.join(STRATEGIES)}")
    ROW_COMMS.check(comm, "row_comm")
    lay = _row_layout(graph, nsh, comm)
    split = NamedSharding(mesh, P(axis))
    flat = {k: put_global(v, split) for k, v in lay["flat"].items()}
    return RowShardedGraph(
        indptr=put_global(graph.indptr, replicated),
        indices=flat["indices"], row=flat["row"], weight=flat["weight"], edge_mask=flat["edge_mask"],
        degree=put_global(graph.degree, replicated),
        num_users=graph.num_users, num_items=graph.num_items,
        step_perm=tuple(put_global(a, split) for a in lay["perms"]),
        step_src=tuple(put_global(a, split) for a in lay["srcs"]),
        step_indptr=tuple(put_global(a, split) for a in lay["indptrs"]),
        mesh=mesh, axis=axis, rows_per_device=lay["rows"], edges_per_device=lay["ecap"],
        step_pairs=lay["pairs"], step_local=lay["local"], comm=comm,
    )


def unshard_graph(graph: BipartiteGraph) -> BipartiteGraph:
    """The single-device ``BipartiteGraph`` of a sharded one (host copy; padding removed)."""
    if isinstance(graph, FeatureShardedGraph):
        return jax.tree.map(lambda a: jnp.asarray(_host(a)), graph.plain())
    if not isinstance(graph, RowShardedGraph):
        return graph
    mask_keep = np.zeros(graph.num_edges, bool)
    ecap, rows = graph.edges_per_device, graph.rows_per_device
    indptr = _host(graph.indptr).astype(np.int64)
    n = graph.num_nodes
    for p in range(graph.num_shards):
        lo, hi = min(p * rows, n), min((p + 1) * rows, n)
        c = int(indptr[hi] - indptr[lo])
        mask_keep[p * ecap: p * ecap + c] = True
    take = lambda a: jnp.asarray(_host(a)[mask_keep])  # noqa: E731
    return BipartiteGraph(
        indptr=jnp.asarray(indptr.astype(np.int32)), indices=take(graph.indices), row=take(graph.row),
        weight=take(graph.weight), edge_mask=take(graph.edge_mask), degree=jnp.asarray(_host(graph.degree)),
        num_users=graph.num_users, num_items=graph.num_items,
    )


def _host(a) -> np.ndarray:
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
