"""Graph propagation ``x -> A_hat x`` with interchangeable kernels behind one signature.

Kernels (all jit-compatible and differentiable with respect to ``x``):

- ``bcsr`` (default): ``jax.experimental.sparse`` BCSR product. Its forward pass runs a
  native CSR kernel; its autodiff transpose does not (a 2-layer gradient took 60 ms on
  ml-100k), so a custom VJP computes the cotangent as ``A_hat^T g = A_hat g``, the same
  fast product, using the symmetry of the normalized adjacency. Edge weights are treated
  as constants (no gradient flows to them).
- ``segment_sum``: gather source rows, scale, ``jax.ops.segment_sum`` over sorted rows
  (the jraph formulation; plain autodiff).
- ``bcoo``: ``jax.experimental.sparse`` BCOO product (plain autodiff).
- ``dense``: materialize the dense [N, N] adjacency (small graphs, reference).

Measured on ml-100k (2,625 nodes, 200k edges, d = 128, 2 CPU cores), one layer forward:
bcsr 1.9 ms, segment_sum 47 ms, bcoo 35 ms, dense 8.8 ms; two layers forward + backward:
bcsr with this VJP 4.5 ms, bcsr through autodiff 63 ms. ``benchmarks/propagation.py``
re-measures these against scipy and torch.
"""

from __future__ import annotations

from typing import Callable

import chex
import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from jaxrec.graph.bipartite import BipartiteGraph, dense_adjacency

KERNELS = ("bcsr", "segment_sum", "bcoo", "dense")


def _bcsr_matmul(weight: jax.Array, indices: jax.Array, indptr: jax.Array, x: jax.Array) -> jax.Array:
    n = indptr.shape[0] - 1
    mat = jsparse.BCSR((weight, indices, indptr), shape=(n, n), indices_sorted=True, unique_indices=True)
    return mat @ x


@jax.custom_vjp
def _symmetric_spmm(weight: jax.Array, indices: jax.Array, indptr: jax.Array, x: jax.Array) -> jax.Array:
    return _bcsr_matmul(weight, indices, indptr, x)


def _symmetric_spmm_fwd(weight, indices, indptr, x):
    return _bcsr_matmul(weight, indices, indptr, x), (weight, indices, indptr)


def _symmetric_spmm_bwd(res, g):
    weight, indices, indptr = res
    # A_hat is symmetric, so A_hat^T g == A_hat g. No gradient to the edge weights.
    return None, None, None, _bcsr_matmul(weight, indices, indptr, g)


_symmetric_spmm.defvjp(_symmetric_spmm_fwd, _symmetric_spmm_bwd)


def _prop_bcsr(graph: BipartiteGraph, x: jax.Array) -> jax.Array:
    return _symmetric_spmm(graph.weight, graph.indices, graph.indptr, x)


def _prop_segment_sum(graph: BipartiteGraph, x: jax.Array) -> jax.Array:
    messages = x[graph.indices] * graph.weight[:, None].astype(x.dtype)
    return jax.ops.segment_sum(messages, graph.row, graph.num_nodes, indices_are_sorted=True)


def _prop_bcoo(graph: BipartiteGraph, x: jax.Array) -> jax.Array:
    n = graph.num_nodes
    idx = jnp.stack([graph.row, graph.indices], axis=1)
    mat = jsparse.BCOO((graph.weight, idx), shape=(n, n), indices_sorted=True, unique_indices=True)
    return mat @ x


def _prop_dense(graph: BipartiteGraph, x: jax.Array) -> jax.Array:
    return dense_adjacency(graph).astype(x.dtype) @ x


_KERNEL_FNS: dict[str, Callable[[BipartiteGraph, jax.Array], jax.Array]] = {
    "bcsr": _prop_bcsr,
    "segment_sum": _prop_segment_sum,
    "bcoo": _prop_bcoo,
    "dense": _prop_dense,
}


def propagate(graph: BipartiteGraph, x: jax.Array, kernel: str = "bcsr") -> jax.Array:
    """One layer of propagation: ``A_hat @ x``.

    Args:
      graph: the normalized bipartite graph (pass it as a jit argument, do not close over it).
      x: [N, d] node features, N = graph.num_nodes.
      kernel: one of ``KERNELS``.
    Returns:
      [N, d] propagated features.
    """
    chex.assert_rank(x, 2)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"propagate: x has {x.shape[0]} rows, the graph has {graph.num_nodes} nodes")
    try:
        fn = _KERNEL_FNS[kernel]
    except KeyError:
        raise ValueError(f"propagate: unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}") from None
    # Sharded graphs (jaxrec.graph.sharded: feature- or row-sharded over a mesh) run their
    # own shard_map version of the same kernel.
    sharded = getattr(graph, "sharded_propagate", None)
    if sharded is not None:
        return sharded(x, kernel)
    return fn(graph, x)


def light_propagate(
    graph: BipartiteGraph, x: jax.Array, num_layers: int, kernel: str = "bcsr"
) -> jax.Array:
    """LightGCN output: the mean of layers 0..num_layers, ``mean_l A_hat^l x``. [N, d] -> [N, d]."""
    return sum(layer_outputs(graph, x, num_layers, kernel)) / (num_layers + 1)


def layer_outputs(graph: BipartiteGraph, x: jax.Array, num_layers: int, kernel: str = "bcsr") -> list[jax.Array]:
    """[x, A x, A^2 x, ...] (num_layers + 1 arrays of [N, d])."""
    outs = [x]
    for _ in range(num_layers):
        outs.append(propagate(graph, outs[-1], kernel))
    return outs
