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

A builder may carry ``context_fields`` (config fields its result depends on: the cache key of
``PreparedData.contexts``), ``options`` (config keys only models over this kind read: another
model changing one is refused by ``get_model``) and ``check(dataset, config)`` (raises
``DataError`` before any compute when the dataset cannot give this context; ``check_run``).
"""

from __future__ import annotations

from jaxrec.data.sequences import histories, user_sequences
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


@CONTEXTS.register("sequences")
def sequence_context(dataset, config) -> dict:
    seqs = user_sequences(dataset)
    valid = histories(seqs, "valid", config.max_seq_len)
    return {"train": valid, "valid": valid, "test": histories(seqs, "test", config.max_seq_len)}


def _check_sequences(dataset, config) -> None:
    """DataError unless ``dataset`` is a leave-one-out split by time with timestamps and at least
    one user with 3 interactions (``jaxrec.data.sequences.user_sequences``)."""
    user_sequences(dataset, log_report=False)


sequence_context.context_fields = ("max_seq_len",)
sequence_context.options = ("max_seq_len", "num_heads", "dropout_rate", "seq_norm", "dropout_rng")
sequence_context.check = _check_sequences
