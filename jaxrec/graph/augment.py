"""Graph augmentations for SGL (Wu et al., 2021): edge dropout, node dropout, random walk.

Each function is pure in ``(graph, key)``, jit-able, and returns a re-normalized
``BipartiteGraph`` of the **same shapes** (dropped edges get ``edge_mask = 0`` and weight 0
through ``renormalize``), so a jitted training step never recompiles for a new view and no
Python-side structure is rebuilt. Edges already dropped in the input stay dropped.

Symmetry without a reverse-edge index: every interaction (u, i) is stored as two directed
edges. Instead of gathering a per-edge random number through a precomputed reverse-edge
permutation, the random number of an edge is a keyed hash (one Threefry-2x32 block, the
counter-based PRNG behind ``jax.random``) of its *undirected* endpoint pair
``(min(row, col), max(row, col)) = (user node, item node)``. Both directions get the same
number, hence the same keep/drop decision, with no state to precompute, cache or pass
around, for any edge order. On ml-100k (200k edges) a mask costs about 1.3 ms on CPU, the
same as the reverse-index gather.

Sampling is Bernoulli: each interaction (ED) or node (ND) is dropped independently with
probability ``ratio`` (kept with ``1 - ratio``). RecBole's SGL draws exactly
``floor(n * (1 - ratio))`` kept interactions without replacement; the expected count is the
same and the difference is O(sqrt(n)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.random import threefry_2x32

from jaxrec.graph.bipartite import BipartiteGraph, renormalize
from jaxrec.registry import AUGMENTATIONS



def _check_ratio(ratio, name: str) -> None:
    try:
        value = float(ratio)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError, TypeError):
        return
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: ratio={value!r}; expected a drop probability in [0, 1)")


def _uniform_from_bits(bits: jax.Array) -> jax.Array:
    """uint32 -> float32 uniform in [0, 1) with 24 random bits (exact in float32)."""
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def pair_uniform(key: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """float32 [n] uniforms in [0, 1): a keyed hash of the integer pairs ``(a[k], b[k])``.

    The same pair gives the same number under the same key, wherever it sits.
    Uses one Threefry-2x32 block per pair with ``(a, b)`` as the 64-bit counter.
    """
    n = a.shape[0]
    seed = jax.random.bits(key, (2,), jnp.uint32)  # any key type -> a threefry key
    counts = jnp.concatenate([a.astype(jnp.uint32), b.astype(jnp.uint32)])
    return _uniform_from_bits(threefry_2x32(seed, counts)[:n])


def interaction_uniform(graph: BipartiteGraph, key: jax.Array) -> jax.Array:
    """float32 [E]: one uniform per undirected interaction, shared by both of its directed edges."""
    lo = jnp.minimum(graph.row, graph.indices)
    hi = jnp.maximum(graph.row, graph.indices)
    return pair_uniform(key, lo, hi)


def edge_dropout(graph: BipartiteGraph, key: jax.Array, ratio: float) -> BipartiteGraph:
    """Drop each interaction (both directions together) with probability ``ratio``; re-normalize.

    Same shapes as ``graph``; jit-able. SGL's "ED" view.
    """
    _check_ratio(ratio, "edge_dropout")
    keep = interaction_uniform(graph, key) >= ratio
    return renormalize(graph, graph.edge_mask * keep.astype(graph.edge_mask.dtype))


def node_dropout(graph: BipartiteGraph, key: jax.Array, ratio: float) -> BipartiteGraph:
    """Drop each node (user or item) with probability ``ratio``, with all its edges; re-normalize.

    A dropped node keeps no edge (degree 0, so it receives and sends nothing). Same shapes
    as ``graph``; jit-able. SGL's "ND" view.
    """
    _check_ratio(ratio, "node_dropout")
    keep_node = jax.random.uniform(key, (graph.num_nodes,)) >= ratio
    keep = keep_node[graph.row] & keep_node[graph.indices]
    return renormalize(graph, graph.edge_mask * keep.astype(graph.edge_mask.dtype))


def random_walk(
    graph: BipartiteGraph, key: jax.Array, ratio: float, num_layers: int
) -> tuple[BipartiteGraph, ...]:
    """``num_layers`` edge-dropped graphs, an independent mask per layer (SGL's "RW" view).

    Layer ``l`` of the view propagates over element ``l`` (see
    ``jaxrec.models.sgl.view_propagate``). Returns a tuple (a pytree); empty for 0 layers.
    """
    _check_ratio(ratio, "random_walk")
    if num_layers < 0:
        raise ValueError(f"random_walk: num_layers={num_layers}; expected >= 0")
    keys = jax.random.split(key, num_layers) if num_layers else []
    return tuple(edge_dropout(graph, k, ratio) for k in keys)


# Registered views (``config.ssl_aug``): ``(graph, key, ratio, num_layers) -> view``; a view is
# one graph (every layer propagates over it) or a tuple of ``num_layers`` graphs (one per layer).
AUGMENTATIONS.register("ED", lambda graph, key, ratio, num_layers: edge_dropout(graph, key, ratio))
AUGMENTATIONS.register("ND", lambda graph, key, ratio, num_layers: node_dropout(graph, key, ratio))
AUGMENTATIONS.register("RW", random_walk)


def augment(
    graph: BipartiteGraph, key: jax.Array, aug: str, ratio: float, num_layers: int
) -> BipartiteGraph | tuple[BipartiteGraph, ...]:
    """One SGL view by the registered augmentation ``aug`` ("ED", "ND": a graph; "RW": per-layer graphs)."""
    return AUGMENTATIONS.get(aug, "ssl_aug")(graph, key, ratio, num_layers)
