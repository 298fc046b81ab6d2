"""The user-item bipartite graph as a pytree, with symmetric normalization.

Users are nodes ``[0, U)`` and items ``[U, U + I)``. Every interaction (u, i) is stored as
two directed edges, u <- i and i <- u, so the normalized adjacency
``D^-1/2 A D^-1/2`` is symmetric and is its own transpose (the propagation kernels use
that for the backward pass). Edges are kept in CSR order (sorted by destination row, then
source) so one structure serves every kernel.

Dropping edges (SGL's augmentations) never changes array shapes: ``renormalize`` takes an
``edge_mask`` and recomputes degrees and weights, so jitted code is not recompiled and no
Python-side structure is rebuilt per step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class BipartiteGraph:
    """Normalized bipartite graph in CSR form.

    Attributes:
      indptr: int32 [N + 1] row pointers (N = num_users + num_items).
      indices: int32 [E] source node of each edge (E = 2 * interactions).
      row: int32 [E] destination node of each edge (``indptr`` expanded).
      weight: float [E] normalized weight ``mask / sqrt(deg[row] * deg[col])`` (float32, or
        float64 when x64 is enabled; kernels cast it to the features' dtype).
      edge_mask: float [E] 1 for a present edge, 0 for a dropped one (weight's dtype).
      degree: float [N] number of present edges at each node (weight's dtype).
      num_users, num_items: static sizes.
    """

    indptr: jax.Array
    indices: jax.Array
    row: jax.Array
    weight: jax.Array
    edge_mask: jax.Array
    degree: jax.Array
    num_users: int = struct.field(pytree_node=False)
    num_items: int = struct.field(pytree_node=False)

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[0])

    def split_nodes(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[N, d] node array -> ([U, d] users, [I, d] items)."""
        return x[: self.num_users], x[self.num_users :]


def build_graph(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> BipartiteGraph:
    """Graph of training interactions ``user[k] -- item[k]`` (int arrays [n]).

    Repeated (user, item) pairs are merged into one edge, as in the 0/1 interaction
    matrix of LightGCN.
    """
    user = np.asarray(user)
    item = np.asarray(item)
    if user.ndim != 1 or user.shape != item.shape:
        raise ValueError(f"build_graph: user and item must be 1-D of equal length, got {user.shape} and {item.shape}")
    if user.size == 0:
        raise ValueError("build_graph: no interactions")
    if user.min() < 0 or user.max() >= num_users:
        raise ValueError(f"build_graph: user ids must lie in [0, {num_users}), got [{user.min()}, {user.max()}]")
    if item.min() < 0 or item.max() >= num_items:
        raise ValueError(f"build_graph: item ids must lie in [0, {num_items}), got [{item.min()}, {item.max()}]")
    pairs = np.unique(user.astype(np.int64) * num_items + item.astype(np.int64))
    u = (pairs // num_items).astype(np.int64)
    i = (pairs % num_items).astype(np.int64) + num_users
    n = num_users + num_items
    row = np.concatenate([u, i])
    col = np.concatenate([i, u])
    order = np.lexsort((col, row))
    row, col = row[order], col[order]
    counts = np.bincount(row, minlength=n)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    dtype = default_float_dtype()
    mask = np.ones(row.shape[0], dtype)
    degree, weight = _normalize_np(row, col, mask, n, dtype)
    return BipartiteGraph(
        indptr=jnp.asarray(indptr),
        indices=jnp.asarray(col.astype(np.int32)),
        row=jnp.asarray(row.astype(np.int32)),
        weight=jnp.asarray(weight),
        edge_mask=jnp.asarray(mask),
        degree=jnp.asarray(degree),
        num_users=int(num_users),
        num_items=int(num_items),
    )


def default_float_dtype() -> np.dtype:
    """float64 when ``jax_enable_x64`` is on, else float32: the dtype of graph weights and degrees."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _normalize_np(row: np.ndarray, col: np.ndarray, mask: np.ndarray, n: int,
                  dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    degree = np.bincount(row, weights=mask, minlength=n).astype(dtype)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0).astype(dtype)
    return degree, (mask * inv_sqrt[row] * inv_sqrt[col]).astype(dtype)


def renormalize(graph: BipartiteGraph, edge_mask: jax.Array) -> BipartiteGraph:
    """Same graph with edges where ``edge_mask == 0`` dropped and weights recomputed.

    ``edge_mask`` is float or bool [E]; it must be symmetric (an edge and its reverse kept
    or dropped together) for the normalized adjacency to stay symmetric. Jit-able.
    """
    chex.assert_shape(edge_mask, (graph.num_edges,))
    mask = edge_mask.astype(graph.weight.dtype)
    degree = jax.ops.segment_sum(mask, graph.row, graph.num_nodes, indices_are_sorted=True)
    inv_sqrt = jnp.where(degree > 0, jax.lax.rsqrt(jnp.maximum(degree, 1e-12)), 0.0)
    weight = mask * inv_sqrt[graph.row] * inv_sqrt[graph.indices]
    return graph.replace(weight=weight, edge_mask=mask, degree=degree)


def dense_adjacency(graph: BipartiteGraph) -> jax.Array:
    """The normalized adjacency as a dense [N, N] matrix (small graphs and tests only)."""
    n = graph.num_nodes
    return jnp.zeros((n, n), graph.weight.dtype).at[graph.row, graph.indices].add(graph.weight)


def reverse_edge_index(graph: BipartiteGraph) -> np.ndarray:
    """int32 [E]: position of the reverse edge (col -> row) of every edge.

    Used to make per-edge random masks symmetric: ``mask = m[min(e, rev[e])]``.
    """
    row = np.asarray(graph.row).astype(np.int64)
    col = np.asarray(graph.indices).astype(np.int64)
    n = graph.num_nodes
    keys = row * n + col
    rkeys = col * n + row
    return np.searchsorted(keys, rkeys).astype(np.int32)
