"""Graph propagation ``x -> A_hat x`` with interchangeable kernels behind one signature.

The kernels are registered in ``jaxrec.graph.kernels`` (``jaxrec.registry.KERNELS``:
``bcsr`` (default), ``segment_sum``, ``bcoo``, ``dense``, and any a plugin registers); all
are jit-compatible, differentiable with respect to ``x`` and to the edge weights, and keep
``x``'s dtype (float32, float64 with x64, bfloat16).

Kernels marked ``symmetric_vjp`` (``bcsr``) are differentiated here by a custom VJP: the
cotangent of ``x`` is ``A_hat^T g = A_hat g`` (the normalized adjacency is symmetric), one
more fast product instead of the slow autodiff transpose; the cotangent of edge ``e``'s
weight is ``g[row_e] . x[col_e]``, computed only when asked for (XLA removes it otherwise).

Measured on ml-100k (2,625 nodes, 200k edges, d = 128, 2 CPU cores), one layer forward:
bcsr 1.9 ms, segment_sum 47 ms, bcoo 35 ms, dense 8.8 ms; two layers forward + backward:
bcsr with the custom VJP 4.5 ms, bcsr through autodiff 63 ms. ``benchmarks/propagation.py``
re-measures these against scipy and torch.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from jaxrec.graph.bipartite import BipartiteGraph
from jaxrec.graph.kernels import Product, get_kernel


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def symmetric_product(product: Product, weight, src, dst, indptr, rows: int, x):
    """``product`` of a symmetric square matrix, with the ``A^T = A`` VJP (see module doc)."""
    return product(weight, src, dst, indptr, x, rows, True)


def _symmetric_fwd(product, weight, src, dst, indptr, rows, x):
    return product(weight, src, dst, indptr, x, rows, True), (weight, src, dst, indptr, x)


def _symmetric_bwd(product, rows, res, g):
    weight, src, dst, indptr, x = res
    dx = product(weight, src, dst, indptr, g, rows, True)  # A^T g == A g
    dweight = jnp.sum(g[dst] * x[src], axis=-1).astype(weight.dtype)
    return dweight, None, None, None, dx


symmetric_product.defvjp(_symmetric_fwd, _symmetric_bwd)


def propagate(graph: BipartiteGraph, x: jax.Array, kernel: str = "bcsr") -> jax.Array:
    """One layer of propagation: ``A_hat @ x``.

    Args:
      graph: the normalized bipartite graph (pass it as a jit argument, do not close over it).
      x: [N, d] node features (any float dtype), N = graph.num_nodes.
      kernel: a registered kernel name (``jaxrec.registry.KERNELS``).
    Returns:
      [N, d] propagated features, ``x.dtype``.
    Raises:
      ValueError: ``x`` does not have one row per node; ``ConfigError`` for an unknown kernel.
    """
    chex.assert_rank(x, 2)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"propagate: x has {x.shape[0]} rows, the graph has {graph.num_nodes} nodes")
    k = get_kernel(kernel)
    # Sharded graphs (jaxrec.graph.sharded: feature- or row-sharded over a mesh) run their
    # own shard_map version of the same kernel.
    sharded = getattr(graph, "sharded_propagate", None)
    if sharded is not None:
        return sharded(x, kernel)
    return plain_propagate(graph, x, k.product, k.symmetric_vjp)


def plain_propagate(graph: BipartiteGraph, x: jax.Array, product: Product, symmetric_vjp: bool) -> jax.Array:
    """``A_hat @ x`` on one device with ``product`` (what ``propagate`` runs per device)."""
    args = (graph.weight, graph.indices, graph.row, graph.indptr)
    if symmetric_vjp:
        return symmetric_product(product, *args, graph.num_nodes, x)
    return product(*args, x, graph.num_nodes, True)


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
