"""Model contexts: what a backbone reads from the dataset besides the batch, built once per run.

A context kind is registered in ``jaxrec.registry.CONTEXTS`` as a builder
``(dataset, config) -> {"train": ctx, "valid": ctx, "test": ctx}``: the context the loss sees
while training and the ones ``embed`` sees when scoring for validation and test (the same
object when they do not differ). Contexts are pytrees passed to jitted functions as
arguments, never closed over.

- ``"graph"``: the symmetric-normalized bipartite graph of the training interactions
  (``jaxrec.graph.build_graph``; LightGCN section 3.1); the same for every stage.
- ``"none"``: no context (MF).
"""

from __future__ import annotations

from jaxrec.graph import build_graph
from jaxrec.registry import CONTEXTS

STAGES = ("train", "valid", "test")


@CONTEXTS.register("graph")
def graph_context(dataset, config=None) -> dict:
    tr = dataset.train
    graph = build_graph(tr.user, tr.item, dataset.num_users, dataset.num_items)
    return dict.fromkeys(STAGES, graph)


@CONTEXTS.register("none")
def no_context(dataset, config=None) -> dict:
    return dict.fromkeys(STAGES, None)
