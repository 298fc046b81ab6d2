"""Bipartite user-item graphs, normalization and propagation kernels."""

from jaxrec.graph.bipartite import (
    BipartiteGraph,
    build_graph,
    dense_adjacency,
    renormalize,
    reverse_edge_index,
)
from jaxrec.graph.kernels import Kernel, get_kernel
from jaxrec.graph.propagate import layer_outputs, light_propagate, propagate
from jaxrec.registry import AUGMENTATIONS, KERNELS
from jaxrec.graph.augment import augment, edge_dropout, node_dropout, random_walk
from jaxrec.graph.sharded import FeatureShardedGraph, RowShardedGraph, shard_graph, unshard_graph

__all__ = [
    "BipartiteGraph",
    "build_graph",
    "dense_adjacency",
    "renormalize",
    "reverse_edge_index",
    "KERNELS",
    "Kernel",
    "get_kernel",
    "propagate",
    "light_propagate",
    "layer_outputs",
    "AUGMENTATIONS",
    "augment",
    "edge_dropout",
    "node_dropout",
    "random_walk",
    "FeatureShardedGraph",
    "RowShardedGraph",
    "shard_graph",
    "unshard_graph",
]
