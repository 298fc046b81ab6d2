"""Sequence terms: next-item binary cross-entropy with one sampled negative per position.

- ``bce_seq`` (batch kind "sequences"; SASRec, Kang and McAuley 2018, section III-F; the
  reference ``main.py`` of A-LLMRec's ``pre_train/sasrec``): the encoder's output at every
  position of ``batch["seq"]`` (dropout drawn from the step's key) is scored against the item
  table rows of the next item ``batch["pos"]`` (label 1) and of one sampled negative
  ``batch["neg"]`` (label 0, never an item of the user); each BCE is averaged over the
  positions with ``pos != 0`` and the two are summed (``jaxrec.losses.sampled_bce``). No L2.

The encoder must be a ``jaxrec.models.SequenceEncoder`` (``forward``; ids + 1 in an item table
with a padding row 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrec.losses import sampled_bce
from jaxrec.objectives import LossInputs, Term
from jaxrec.registry import OBJECTIVES


def next_item_bce(out: jax.Array, table: jax.Array, pos: jax.Array, neg: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(bce_pos, bce_neg)`` of outputs ``out`` [B, L, d] against item ``table`` [I + 1, d] rows
    ``pos`` / ``neg`` (int [B, L], ids + 1, 0 = padding): logits ``out[b, t] . table[id]`` (the
    reference ``forward``), BCE averaged over the positions with ``pos != 0``."""
    pos_logit = jnp.sum(out * table[pos], axis=-1)
    neg_logit = jnp.sum(out * table[neg], axis=-1)
    return sampled_bce(pos_logit, neg_logit, pos != 0)


@OBJECTIVES.register("bce_seq")
def bce_seq_term(config=None) -> Term:
    def loss(x: LossInputs):
        forward = getattr(x.encoder, "forward", None)
        if forward is None:
            raise ValueError(f"objective 'bce_seq': encoder {x.encoder.name!r} has no forward over sequences; "
                             "it needs a jaxrec.models.SequenceEncoder")
        seq, pos, neg = (x.batch[k] for k in ("seq", "pos", "neg"))
        out = forward(x.params, seq, x.key, True)  # [B, L, d]
        bce_pos, bce_neg = next_item_bce(out, x.encoder.table(x.params, "item"), pos, neg)
        return bce_pos + bce_neg

    return Term("bce_seq", loss, batch_kind="sequences")


@OBJECTIVES.register("text_bce_seq")
def text_bce_seq_term(config=None) -> Term:
    """``bce_seq`` for an encoder whose item table comes from the context (``jaxrec.models.textseq.
    TextSequenceEncoder``: MoRec, CTRL's fine-tuning): outputs ``forward(params, seq, key, True,
    context)`` [B, L, d] scored against ``items(params, context)`` [I + 1, d], the same BCE."""

    def loss(x: LossInputs):
        items = getattr(x.encoder, "items", None)
        if items is None:
            raise ValueError(f"objective 'text_bce_seq': encoder {x.encoder.name!r} has no items(params, context); "
                             "it needs a jaxrec.models.textseq.TextSequenceEncoder")
        seq, pos, neg = (x.batch[k] for k in ("seq", "pos", "neg"))
        out = x.encoder.forward(x.params, seq, x.key, True, x.context)
        bce_pos, bce_neg = next_item_bce(out, items(x.params, x.context), pos, neg)
        return bce_pos + bce_neg

    return Term("text_bce_seq", loss, batch_kind="sequences")
