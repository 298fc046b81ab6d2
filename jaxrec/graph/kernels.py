"""Sparse-dense product kernels, registered once and used by every propagation path.

A kernel computes ``y = M x`` for a sparse matrix ``M`` [rows, cols] in CSR form with its
edge list expanded: ``weight`` [E] (the values), ``src`` [E] (column of each entry), ``dst``
[E] (row of each entry, ascending) and ``indptr`` [rows + 1]. The single-device
``propagate`` (``jaxrec.graph.propagate``) and both sharded strategies
(``jaxrec.graph.sharded``: whole graph per device, or one edge block per source block) call
the same registered function, so a new kernel is one function registered here (or from a
plugin) and ``config.kernel`` selects it everywhere.

Dtypes: the weights are cast to ``x.dtype``, so float32, float64 (x64) and bfloat16 tables
propagate in their own dtype.

Built-ins (``jaxrec.registry.KERNELS``):

- ``bcsr`` (default): ``jax.experimental.sparse`` BCSR product. Its forward runs a native
  CSR kernel; its autodiff transpose does not (a 2-layer gradient took 60 ms on ml-100k),
  so ``propagate`` gives it a custom VJP that uses the symmetry of the normalized
  adjacency (``A^T g = A g``, the same fast product) and computes the edge-weight cotangent
  ``d w_e = g[dst_e] . x[src_e]`` exactly (XLA drops it when nothing asks for it).
- ``segment_sum``: gather source rows, scale, ``jax.ops.segment_sum`` over the sorted rows
  (the jraph formulation; plain autodiff).
- ``bcoo``: ``jax.experimental.sparse`` BCOO product (plain autodiff).
- ``dense``: materialize the dense [rows, cols] matrix (small graphs, reference).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax.experimental import sparse as jsparse

from jaxrec.registry import KERNELS

#: ``(weight [E], src [E], dst [E], indptr [R+1], x [C, d], rows, canonical) -> [R, d]``;
#: ``canonical``: every row's columns are sorted and distinct (true for a whole graph).
Product = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A registered product and how it is differentiated.

    ``symmetric_vjp``: differentiate through ``propagate``'s custom VJP (``A^T = A``; exact
    edge-weight cotangent) instead of the product's own autodiff.
    """

    product: Product
    symmetric_vjp: bool = False


def bcsr_product(weight, src, dst, indptr, x, rows: int, canonical: bool = False) -> jax.Array:
    mat = jsparse.BCSR((weight.astype(x.dtype), src, indptr), shape=(rows, x.shape[0]),
                       indices_sorted=canonical, unique_indices=canonical)
    return mat @ x


def segment_sum_product(weight, src, dst, indptr, x, rows: int, canonical: bool = False) -> jax.Array:
    messages = x[src] * weight[:, None].astype(x.dtype)
    return jax.ops.segment_sum(messages, dst, rows, indices_are_sorted=True)


def bcoo_product(weight, src, dst, indptr, x, rows: int, canonical: bool = False) -> jax.Array:
    idx = jnp.stack([dst, src], axis=1)
    mat = jsparse.BCOO((weight.astype(x.dtype), idx), shape=(rows, x.shape[0]),
                       indices_sorted=canonical, unique_indices=canonical)
    return mat @ x


def dense_product(weight, src, dst, indptr, x, rows: int, canonical: bool = False) -> jax.Array:
    return jnp.zeros((rows, x.shape[0]), x.dtype).at[dst, src].add(weight.astype(x.dtype)) @ x


KERNELS.register("bcsr", Kernel(bcsr_product, symmetric_vjp=True))
KERNELS.register("segment_sum", Kernel(segment_sum_product))
KERNELS.register("bcoo", Kernel(bcoo_product))
KERNELS.register("dense", Kernel(dense_product))


def get_kernel(name: str) -> Kernel:
    """The registered kernel ``name`` (``ConfigError`` naming ``kernel`` if unknown)."""
    return KERNELS.get(name, "kernel")


__all__ = ["Kernel", "Product", "get_kernel", "bcsr_product", "segment_sum_product", "bcoo_product",
           "dense_product"]
