"""Sequence terms: next-item binary cross-entropy with one sampled negative per position.

- ``bce_seq`` (batch kind "sequences"; SASRec, Kang and McAuley 2018, section III-F; the
  reference ``main.py`` of A-LLMRec's ``pre_train/sasrec``): the encoder's output at every
  position of ``batch["seq"]`` (dropout drawn from the step's key) is scored against the item
  table rows of the next item ``batch["pos"]`` (label 1) and of one sampled negative
  ``batch["neg"]`` (label 0, never an item of the user); each BCE is averaged over the
  positions with ``pos != 0`` and the two are summed (``jaxrec.losses.sampled_bce``). No L2.
- ``ce_seq`` (batch kind "sequences"; RecBole's ``loss_type="CE"`` of its sequential models,
  e.g. ``recbole/model/sequential_recommender/nextitnet.py`` ``calculate_loss``; NextItNet,
  Yuan et al. 2019, section 3.4): at every position with ``pos != 0``, softmax cross-entropy of
  the output's logits over the whole catalog (rows 1.. of the item table, the padding row is
  not a class) with the next item as the label, averaged over those positions. RecBole scores
  the last position of every training prefix; each prefix of a window is one position here,
  so an epoch sees the same (prefix, next item) pairs (up to ``max_seq_len``). Costs a
  [B, L, I] logit array per step.

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


def next_item_ce(out: jax.Array, table: jax.Array, pos: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy over the catalog at the positions with ``pos != 0`` -> [].

    out: float [B, L, d]; table: float [I + 1, d] (row 0 = padding, not a class); pos: int
    [B, L] (labels as ids + 1, 0 = no label); bias: optional float [I] added to the logits
    (BERT4Rec's output bias). logits = ``out @ table[1:].T (+ bias)`` [B, L, I]; loss =
    ``sum_t mask_t * (logsumexp(logits_t) - logits_t[pos_t - 1]) / max(sum mask, 1)``.
    """
    logits = jnp.einsum("bld,id->bli", out, table[1:])
    if bias is not None:
        logits = logits + bias
    mask = (pos != 0).astype(logits.dtype)
    label = jnp.maximum(pos - 1, 0)
    picked = jnp.take_along_axis(logits, label[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - picked
    return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1.0)


def _forward_of(x: LossInputs, name: str):
    forward = getattr(x.encoder, "forward", None)
    if forward is None:
        raise ValueError(f"objective {name!r}: encoder {x.encoder.name!r} has no forward over sequences; "
                         "it needs a jaxrec.models.SequenceEncoder")
    return forward


@OBJECTIVES.register("ce_seq")
def ce_seq_term(config=None) -> Term:
    def loss(x: LossInputs):
        out = _forward_of(x, "ce_seq")(x.params, x.batch["seq"], x.key, True)  # [B, L, d]
        return next_item_ce(out, x.encoder.table(x.params, "item"), x.batch["pos"])

    return Term("ce_seq", loss, batch_kind="sequences")


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
