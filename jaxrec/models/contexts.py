"""Model contexts: what a backbone reads from the dataset besides the batch, built once per run.

A context kind is registered in ``jaxrec.registry.CONTEXTS`` as a builder
``(dataset, config) -> {"train": ctx, "valid": ctx, "test": ctx}``: the context the loss sees
while training and the ones ``embed`` sees when scoring for validation and test (the same
object when they do not differ). Contexts are pytrees passed to jitted functions as
arguments, never closed over.

- ``"graph"``: the symmetric-normalized bipartite graph of the training interactions
  (``jaxrec.graph.build_graph``; LightGCN section 3.1); the same for every stage.
- ``"none"``: no context (MF).
- ``"sequences"``: per-user histories int32 [U, max_seq_len] (item ids + 1, left-padded with 0;
  ``jaxrec.data.sequences.histories``): for ``"train"`` and ``"valid"`` the training sequence,
  for ``"test"`` the training sequence + the validation item (SASRec.pytorch ``evaluate``).
  Needs a leave-one-out split by time (``split="loo_time"``).

Serving (``jaxrec.serve``) embeds from one more stage, ``"serve"``: everything known about
the users, i.e. the train, valid and test interactions together, since a deployed model
recommends after all of them. A kind declares it in its record (``ContextKind.serve``: a
builder ``(dataset, config) -> ctx``); it is built only when a run is served, never during
training. ``serve_context`` falls back to the kind's ``"test"`` stage (train + valid known) for
a kind without one, and logs that it did.

- ``"graph"`` serves from the graph of all known interactions (repeated pairs merged, as in
  training); the run's reported metrics were measured on the training graph.
- ``"none"`` serves from no context.
- ``"sequences"`` serves from histories of everything known: training sequence, then the
  validation item, then the test item (``serve_histories``).

A kind is a ``jaxrec.registry.ContextKind`` record: ``build``, ``fields`` (config keys its result
depends on: the cache key of ``PreparedData.contexts``), ``check(dataset, config)`` (raises
``DataError`` before any compute when the dataset cannot give this context; ``check_run``) and
``serve``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from jaxrec.data.sequences import histories, user_sequences
from jaxrec.graph import build_graph
from jaxrec.registry import CONTEXTS, ContextKind

STAGES = ("train", "valid", "test")
log = logging.getLogger("jaxrec.models")


def graph_context(dataset, config=None) -> dict:
    tr = dataset.train
    graph = build_graph(tr.user, tr.item, dataset.num_users, dataset.num_items)
    return dict.fromkeys(STAGES, graph)


def graph_serve_context(dataset, config=None):
    parts = (dataset.train, dataset.valid, dataset.test)
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    return build_graph(user, item, dataset.num_users, dataset.num_items)


def no_context(dataset, config=None) -> dict:
    return dict.fromkeys(STAGES, None)


def sequence_context(dataset, config) -> dict:
    seqs = user_sequences(dataset)
    valid = histories(seqs, "valid", config.max_seq_len)
    return {"train": valid, "valid": valid, "test": histories(seqs, "test", config.max_seq_len)}


def check_sequences(dataset, config) -> None:
    """DataError unless ``dataset`` is a leave-one-out split by time with timestamps and at least
    one user with 3 interactions (``jaxrec.data.sequences.user_sequences``)."""
    user_sequences(dataset, log_report=False)


def serve_histories(dataset, config) -> np.ndarray:
    """int32 [U, max_seq_len]: every user's training sequence, then the validation item, then the
    test item (everything known when serving; ``jaxrec.data.sequences.histories(..., "serve")``)."""
    return histories(user_sequences(dataset, log_report=False), "serve", config.max_seq_len)


CONTEXTS.register("graph", ContextKind(graph_context, serve=graph_serve_context))
CONTEXTS.register("none", ContextKind(no_context, serve=lambda dataset, config=None: None))
CONTEXTS.register("sequences", ContextKind(sequence_context, fields=("max_seq_len",), check=check_sequences,
                                           serve=serve_histories))


def serve_context(kind: str, dataset, config=None) -> Any:
    """The ``"serve"`` context of kind ``kind`` (its ``ContextKind.serve``), else its ``"test"`` stage."""
    spec = CONTEXTS.get(kind)
    if spec.serve is not None:
        return spec.serve(dataset, config)
    log.warning("context %r has no serve stage (ContextKind.serve); serving from its 'test' stage "
                "(train + valid interactions known, not test)", kind)
    return spec.build(dataset, config)["test"]
