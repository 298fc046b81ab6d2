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

- ``"ring"`` (default): step ``s`` sends block ``q = (p + s) mod P`` straight to device
  ``p`` (one ``ppermute`` per step, only between device pairs that share edges; step 0 is
  the local block), and device ``p`` multiplies it by its ``(p, q)`` edge block. No
  device ever holds more than two ``R x d`` blocks of the table; the bytes moved are at
  most those of an all-gather, less when blocks share no edges (bipartite graphs: a
  block of users needs no other block of users).
- ``"allgather"``: ``all_gather`` the table (each device holds all N x d floats for the
  duration of the layer), then one local product.

Backward: the normalized adjacency is symmetric (``A^T = A``), so the cotangent of a
layer is the same row-sharded product applied to the incoming gradient (a custom VJP,
as the single-device ``bcsr`` kernel does). Edge weights get no gradient.

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
from jax.experimental import sparse as jsparse
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.graph.bipartite import BipartiteGraph

STRATEGIES = ("feature", "row")
ROW_COMMS = ("ring", "allgather")

__all__ = [
    "FeatureShardedGraph",
    "RowShardedGraph",
    "STRATEGIES",
    "ROW_COMMS",
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
        from jaxrec.graph.propagate import _KERNEL_FNS  # noqa: PLC0415 (propagate imports us lazily)

        size = _axis_size(self.mesh, self.axis)
        if x.shape[1] % size:
            raise ValueError(
                f"propagate (feature sharding): embedding size {x.shape[1]} is not divisible by the "
                f"{size} devices of mesh axis {self.axis!r}"
            )
        fn = _KERNEL_FNS[kernel]
        local = jax.shard_map(
            lambda g, xs: fn(g, xs),
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
    ``step_src`` (source row within the step's source block), ``step_dst`` (destination
    row within the device's block), ``step_indptr`` (CSR pointers of the step's edges,
    ``R + 1`` per device). Static: ``rows_per_device`` R, ``edges_per_device``,
    ``step_shift`` (block offset s of each step), ``step_pairs`` (the (source device,
    destination device) pairs that exchange a block at each step), ``comm``.
    """

    step_perm: tuple = ()
    step_src: tuple = ()
    step_dst: tuple = ()
    step_indptr: tuple = ()
    mesh: Mesh = struct.field(pytree_node=False, default=None)
    axis: str = struct.field(pytree_node=False, default="data")
    rows_per_device: int = struct.field(pytree_node=False, default=0)
    edges_per_device: int = struct.field(pytree_node=False, default=0)
    step_shift: tuple = struct.field(pytree_node=False, default=())
    step_pairs: tuple = struct.field(pytree_node=False, default=())
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

    def sharded_propagate(self, x: jax.Array, kernel: str) -> jax.Array:
        n, np_ = self.num_nodes, self.padded_nodes
        xp = jnp.pad(x, ((0, np_ - n), (0, 0))) if np_ > n else x
        arrays = (self.weight, self.step_perm, self.step_src, self.step_dst, self.step_indptr)
        out = _row_spmm_fn(self._static(kernel))(arrays, xp)
        return out[:n] if np_ > n else out

    def _static(self, kernel: str) -> "_RowStatic":
        return _RowStatic(
            mesh=self.mesh, axis=self.axis, rows=self.rows_per_device, edges=self.edges_per_device,
            shifts=self.step_shift, pairs=self.step_pairs, comm=self.comm, kernel=kernel,
        )


@functools.lru_cache(maxsize=None)
def _row_spmm_fn(static: "_RowStatic") -> Callable:
    """``(arrays, x [Np, d]) -> A x`` for one static layout, with the symmetric VJP."""
    apply = _row_shard_map(static)

    @jax.custom_vjp
    def spmm(arrays, x):
        return apply(arrays, x)

    def fwd(arrays, x):
        return apply(arrays, x), arrays

    def bwd(arrays, g):
        # A is symmetric: A^T g = A g, the same row-sharded product. No gradient to weights.
        return None, apply(arrays, g)

    spmm.defvjp(fwd, bwd)
    return spmm


class _RowStatic(NamedTuple):
    """Hashable static description of a row-sharded product (the cache key of its function)."""

    mesh: Mesh
    axis: str
    rows: int
    edges: int
    shifts: tuple
    pairs: tuple
    comm: str
    kernel: str


def _block_product(kernel: str, w, src, dst, indptr, xb, rows: int) -> jax.Array:
    """``B @ xb`` for one edge block B [rows, xb.shape[0]] given in CSR (and COO) form."""
    cols = xb.shape[0]
    w = w.astype(xb.dtype)
    if kernel == "bcsr":
        mat = jsparse.BCSR((w, src, indptr), shape=(rows, cols))
        return mat @ xb
    if kernel == "segment_sum":
        return jax.ops.segment_sum(xb[src] * w[:, None], dst, rows, indices_are_sorted=True)
    if kernel == "bcoo":
        mat = jsparse.BCOO((w, jnp.stack([dst, src], axis=1)), shape=(rows, cols))
        return mat @ xb
    if kernel == "dense":
        return jnp.zeros((rows, cols), xb.dtype).at[dst, src].add(w) @ xb
    raise ValueError(f"propagate: unknown kernel {kernel!r}")


def _row_shard_map(st: _RowStatic) -> Callable:
    axis, rows = st.axis, st.rows

    def local(arrays, xb):
        weight, perms, srcs, dsts, indptrs = arrays
        w_ext = jnp.concatenate([weight, jnp.zeros((1,), weight.dtype)])  # padding -> weight 0
        if st.comm == "allgather":
            full = jax.lax.all_gather(xb, axis, tiled=True)  # [Np, d]
            w = w_ext[perms[0]]
            return _block_product(st.kernel, w, srcs[0], dsts[0], indptrs[0], full, rows)
        out = jnp.zeros_like(xb)
        for k, (shift, pairs) in enumerate(zip(st.shifts, st.pairs)):
            if shift == 0:
                block = xb
            else:
                block = jax.lax.ppermute(xb, axis, perm=pairs)  # devices not receiving get zeros
            w = w_ext[perms[k]]
            out = out + _block_product(st.kernel, w, srcs[k], dsts[k], indptrs[k], block, rows)
        return out

    spec = P(axis)
    return jax.shard_map(
        local,
        mesh=st.mesh,
        in_specs=((spec, tuple(spec for _ in st.shifts), tuple(spec for _ in st.shifts),
                   tuple(spec for _ in st.shifts), tuple(spec for _ in st.shifts)), P(axis, None)),
        out_specs=P(axis, None),
        check_vma=False,
    )


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

    # Communication steps: edges of device p grouped by the source block they read.
    per_dev = []
    for p in range(nsh):
        a, b = int(starts[p]), int(stops[p])
        local_dst = row[a:b] - p * rows
        src = col[a:b]
        per_dev.append((np.arange(b - a), local_dst, src))
    steps = []
    if comm == "allgather":
        steps.append((0, [(pos, dst, src) for pos, dst, src in per_dev]))
    else:
        for s in range(nsh):
            sel = []
            for p, (pos, dst, src) in enumerate(per_dev):
                q = (p + s) % nsh
                m = (src // rows) == q
                sel.append((pos[m], dst[m], src[m] - q * rows))
            if s == 0 or any(len(t[0]) for t in sel):
                steps.append((s, sel))

    shifts, pairs, perms, srcs, dsts, indptrs = [], [], [], [], [], []
    for s, sel in steps:
        es = max(1, max(len(t[0]) for t in sel))
        perm = np.full((nsh, es), ecap, np.int32)  # padding -> the zero weight past the chunk
        srca = np.zeros((nsh, es), np.int32)
        dsta = np.full((nsh, es), rows - 1, np.int32)  # padding sits in the last row
        ptr = np.zeros((nsh, rows + 1), np.int32)
        step_pairs = []
        for p, (pos, dst, src) in enumerate(sel):
            c = len(pos)
            perm[p, :c], srca[p, :c], dsta[p, :c] = pos, src, dst
            cnt = np.bincount(dst, minlength=rows)
            cnt[rows - 1] += es - c
            ptr[p, 1:] = np.cumsum(cnt)
            if c and s != 0:
                step_pairs.append(((p + s) % nsh, p))
        shifts.append(s)
        pairs.append(tuple(step_pairs))
        perms.append(perm.ravel())
        srcs.append(srca.ravel())
        dsts.append(dsta.ravel())
        indptrs.append(ptr.ravel())
    return dict(
        flat=flat, rows=rows, ecap=ecap, shifts=tuple(shifts), pairs=tuple(pairs),
        perms=perms, srcs=srcs, dsts=dsts, indptrs=indptrs,
    )


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
    if comm not in ROW_COMMS:
        raise ValueError(f"shard_graph: comm={comm!r}; expected one of {', '.join(ROW_COMMS)}")
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
        step_dst=tuple(put_global(a, split) for a in lay["dsts"]),
        step_indptr=tuple(put_global(a, split) for a in lay["indptrs"]),
        mesh=mesh, axis=axis, rows_per_device=lay["rows"], edges_per_device=lay["ecap"],
        step_shift=lay["shifts"], step_pairs=lay["pairs"], comm=comm,
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
