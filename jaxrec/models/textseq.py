"""What the text-based sequence models (MoRec, CTRL, RECFORMER-like) share: item text in the context.

These backbones read each item's text embedding (from the offline encoder: ``config.embeddings``,
a precomputed ``.npy``, or ``config.encoder``, e.g. ``minilm``, ``mpnet``, ``smollm2``, through
the on-disk cache of ``jaxrec.init.embeddings``) beside the users' histories. The values cannot
be closed over (contexts are jit arguments, never constants) nor reach ``init`` (it sees shapes
only), so they ride in the context:

- context kind ``"text_sequences"``: ``TextSeqContext(histories int32 [U, L], text float32
  [I, N])`` per stage; histories as the ``"sequences"`` kind (train/valid: the training
  sequence; test: + the validation item; serve: everything known); ``text`` the same array for
  every stage (row = dense item id). Needs a leave-one-out split by time and a text source
  (``ConfigError`` naming ``encoder`` / ``embeddings`` otherwise, before any compute).
- ``TextSequenceEncoder``: a ``SequenceEncoder`` whose ``forward(params, seq, key, train,
  context)`` and ``items(params, context) -> [I + 1, d]`` (the item table, row 0 padding)
  read the context; the ``"text_bce_seq"`` term (``jaxrec.objectives.sequential``) trains it
  as ``bce_seq`` trains SASRec.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from flax import struct

from jaxrec.data.sequences import histories, user_sequences
from jaxrec.models.base import SequenceEncoder
from jaxrec.registry import CONTEXTS, ContextKind


@struct.dataclass
class TextSeqContext:
    """``histories`` int32 [U, L] (ids + 1, left-padded) and ``text`` float32 [I, N] (row = dense id)."""

    histories: Any
    text: Any


def item_text_matrix(dataset, config) -> np.ndarray:
    """float32 [I, N]: the items' text embeddings of ``config`` (``embeddings`` file or ``encoder``
    through the embedding cache). Raises ``ConfigError`` naming the keys when neither is set, and
    ``ValueError`` when the rows do not match the catalog."""
    from jaxrec.init.embeddings import item_embeddings  # noqa: PLC0415 (init imports models)

    emb = np.asarray(item_embeddings(dataset, config, progress=False), np.float32)
    if emb.ndim != 2 or emb.shape[0] != dataset.num_items:
        raise ValueError(f"item text embeddings: shape {emb.shape}; expected [{dataset.num_items}, N]")
    return emb


def text_sequence_context(dataset, config) -> dict:
    seqs = user_sequences(dataset)
    text = item_text_matrix(dataset, config)
    valid = TextSeqContext(histories(seqs, "valid", config.max_seq_len), text)
    return {"train": valid, "valid": valid, "test": valid.replace(histories=histories(seqs, "test", config.max_seq_len))}


def check_text_sequences(dataset, config) -> None:
    """``ConfigError`` unless ``config`` names item text (``embeddings`` or ``encoder``); ``DataError``
    unless the dataset gives time-ordered leave-one-out sequences."""
    from jaxrec.config import ConfigError  # noqa: PLC0415

    if not (config.embeddings or config.encoder):
        raise ConfigError(f"encoder=None, embeddings=None: model {config.model!r} reads item text embeddings; set "
                          "encoder (minilm, mpnet, smollm2, a folder) or embeddings (a .npy with its id list)")
    user_sequences(dataset, log_report=False)


def serve_text_sequences(dataset, config) -> TextSeqContext:
    return TextSeqContext(histories(user_sequences(dataset, log_report=False), "serve", config.max_seq_len),
                          item_text_matrix(dataset, config))


CONTEXTS.register("text_sequences", ContextKind(text_sequence_context, fields=("max_seq_len", "embeddings", "encoder"),
                                                check=check_text_sequences, serve=serve_text_sequences))


@dataclasses.dataclass(frozen=True)
class TextSequenceEncoder(SequenceEncoder):
    """A ``SequenceEncoder`` whose item table is computed from the context's item text.

    forward: ``(params, seq [B, L], key, train, context) -> [B, L, d]``; items: ``(params,
    context) -> [I + 1, d]`` (row 0 padding, zeros). No table LLM initialization could write
    (the item rows are a function of the text already).
    """

    items: Callable[..., Any] | None = None
    item_table: Any = None
    init_reads_context: bool = True


__all__ = ["TextSeqContext", "TextSequenceEncoder", "item_text_matrix", "text_sequence_context",
           "check_text_sequences", "serve_text_sequences"]
