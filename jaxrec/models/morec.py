"""MoRec (Yuan et al., SIGIR 2023, "Where to Go Next for Recommender Systems? ID- vs.
Modality-based Recommender Models Revisited"): SASRec whose item embeddings come from the items'
text encoder instead of an ID table.

MoRec replaces the ID embedding of every item by ``ME(text_i)``: the modality encoder's output
followed by a dense layer to the recommender's width d (the paper's section 2: "item encoder +
DNN projection"), scored and consumed by the same SASRec user encoder. Here:

- item row i (dense id) = ``(T_i + D_i) W + b`` with ``T`` [I, N] the item text embeddings of
  the offline encoder (``jaxrec.models.textseq``: ``encoder`` minilm / mpnet / smollm2, or a
  precomputed ``embeddings`` file), ``W`` [N, d] / ``b`` [d] the trainable projection
  (``params["text_projection"]``), and ``D`` [I, N] (``params["text_delta"]``) only with
  ``text_tuning="vectors"``;
- everything else is ``jaxrec.models.sasrec`` unchanged (the table above takes the place of
  ``item_embedding``: scaled by sqrt(d), learned positions, blocks, final LayerNorm; logits
  ``out_t . row_i``; the ``bce_seq`` loss through ``text_bce_seq``).

What trains (``text_tuning``):

- ``"frozen"`` (MoRec's "frozen ME" rows): the text vectors are fixed; the projection and all
  of SASRec (positions, blocks, norms) train;
- ``"vectors"`` (our stand-in for MoRec's end-to-end fine-tuned ME): in addition every item's
  text vector is a free parameter initialized at the encoder's output: ``D`` starts at 0, so
  Adam on ``D`` is Adam on ``T + D`` started from ``T`` (Adam is shift-invariant). The paper
  back-propagates into the encoder's own weights (BERT/RoBERTa, top layers); that needs the
  encoder's forward and backward over every item of a batch at each step: MiniLM encodes ml-100k's
  1682 texts at 246 items/s forward-only on this machine's 2 shared cores (experiments/README.md,
  encoder choice), so one SASRec step (a batch of 128 windows touches up to ~1,500 items) would
  cost ~6 s forward + ~12 s backward, ~2.5 min per ml-100k epoch against SASRec's ~1 s: not run here.
  Tuning the vectors keeps the item-specific freedom of fine-tuning without the encoder.

Initialization: SASRec's (``jaxrec.models.sasrec.init_params``) for the shared parts; ``W``
xavier-normal N(0, 2/(N + d)) (the reference initializes every >= 2-d parameter that way),
``b`` torch Linear's U(-1/sqrt(N), 1/sqrt(N)); ``D`` = 0.

Settings: ``MoRecSettings`` = SASRec's (d = 50, 2 blocks, 1 head, dropout 0.5, max_seq_len 50:
the A-LLMRec reference's SASRec, so the rows compare) + ``text_tuning``. Errors: ``MoRecError``
naming the argument; bad config values ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxrec.errors import JaxrecError
from jaxrec.models import sasrec as _sasrec
from jaxrec.models.base import Model
from jaxrec.models.sequential import chunked_users
from jaxrec.models.textseq import TextSeqContext, TextSequenceEncoder
from jaxrec.nn import torch_uniform, xavier_normal
from jaxrec.objectives import term, weighted_sum

Params = dict
#: ``text_tuning`` values
TEXT_TUNINGS = ("frozen", "vectors")
_OWN = ("text_projection", "text_delta")


class MoRecError(JaxrecError, ValueError):
    """A MoRec input is invalid; the message names the argument."""


@dataclasses.dataclass(frozen=True)
class MoRecSettings(_sasrec.SASRecSettings):
    """MoRec's config keys: SASRec's (``SASRecSettings``) + ``text_tuning`` ("frozen": fixed text
    vectors through a trainable projection | "vectors": the text vectors train too)."""

    text_tuning: str = "frozen"

    def validate(self) -> None:
        super().validate()
        self.expect("text_tuning", self.text_tuning in TEXT_TUNINGS, f"one of {list(TEXT_TUNINGS)}")


def init_params(key: jax.Array, arch: _sasrec.SASRecArch, text_dim: int, text_tuning: str = "frozen") -> Params:
    """Fresh MoRec params: SASRec's without ``item_embedding`` + ``text_projection/{kernel [N, d],
    bias [d]}`` (+ ``text_delta`` [I, N] zeros with ``text_tuning="vectors"``). ``arch.num_items``
    is I. Raises MoRecError for ``text_dim`` < 1 or an unknown ``text_tuning``."""
    if isinstance(text_dim, bool) or not isinstance(text_dim, int) or text_dim < 1:
        raise MoRecError(f"text_dim={text_dim!r}: expected an integer >= 1")
    if text_tuning not in TEXT_TUNINGS:
        raise MoRecError(f"text_tuning={text_tuning!r}: expected one of {list(TEXT_TUNINGS)}")
    k_s, k_w, k_b = jax.random.split(key, 3)
    params = _sasrec.init_params(k_s, arch)
    del params["item_embedding"]
    d = arch.hidden
    params["text_projection"] = {"kernel": xavier_normal(k_w, (text_dim, d)),
                                 "bias": torch_uniform(text_dim)(k_b, (d,))}
    if text_tuning == "vectors":
        params["text_delta"] = jnp.zeros((arch.num_items, text_dim), jnp.float32)
    return params


def item_rows(params: Params, text) -> jax.Array:
    """float32 [I + 1, d]: row 0 zeros (padding), row i + 1 = ``(text[i] + delta[i]) W + b``.

    text: float [I, N] (the context's item text). Raises MoRecError on a width or row mismatch."""
    text = jnp.asarray(text, jnp.float32)
    kernel = params["text_projection"]["kernel"]
    if text.ndim != 2 or text.shape[1] != kernel.shape[0]:
        raise MoRecError(f"text: shape {text.shape}; expected [I, {kernel.shape[0]}] (the projection's input width)")
    if "text_delta" in params:
        if params["text_delta"].shape != text.shape:
            raise MoRecError(f"params['text_delta']: shape {params['text_delta'].shape}; expected {text.shape}")
        text = text + params["text_delta"]
    rows = text @ kernel + params["text_projection"]["bias"]
    return jnp.concatenate([jnp.zeros((1, rows.shape[1]), rows.dtype), rows])


def sasrec_params(params: Params, table) -> Params:
    """The SASRec parameter dict MoRec runs: its own shared parts with ``item_embedding = table``."""
    return {**{k: v for k, v in params.items() if k not in _OWN}, "item_embedding": table}


def arch_for(config, num_items: int) -> _sasrec.SASRecArch:
    return _sasrec.arch_from_config(config, num_items)


def sequence_output(params: Params, seq, text, arch: _sasrec.SASRecArch, *, key=None, train: bool = False):
    """float32 [B, L, d]: SASRec's outputs over ``seq`` [B, L] (ids + 1, left-padded) with the
    item table ``item_rows(params, text)``; dropout only with ``train`` and ``key``."""
    return _sasrec.sequence_output(sasrec_params(params, item_rows(params, text)), seq, arch, key=key, train=train)


def embed(params: Params, context: TextSeqContext, arch: _sasrec.SASRecArch, chunk_size: int = 1024):
    """(user_emb [U, d]: last-position outputs over ``context.histories``, item_emb [I, d]: the
    projected text rows)."""
    table = item_rows(params, context.text)
    sp = sasrec_params(params, table)
    users = chunked_users(lambda s: _sasrec.user_representation(sp, s, arch), jnp.asarray(context.histories),
                          chunk_size, MoRecError)
    return users, table[1:]


def morec_encoder(config) -> TextSequenceEncoder:
    """MoRec's ``TextSequenceEncoder`` (``init`` reads N and I from the context's shapes)."""
    chunk = config.eval_chunk

    def arch_of(text) -> _sasrec.SASRecArch:
        return arch_for(config, text.shape[0])

    def init(key, num_users, num_items, context_shapes):
        return init_params(key, arch_for(config, num_items), int(context_shapes.text.shape[1]), config.text_tuning)

    def forward(params, seq, key=None, train=False, context=None):
        return sequence_output(params, seq, context.text, arch_of(context.text), key=key, train=train)

    return TextSequenceEncoder(name="morec", init=init, forward=forward,
                               embed=lambda p, ctx: embed(p, ctx, arch_of(ctx.text), chunk),
                               items=lambda p, ctx: item_rows(p, ctx.text))


def make_morec(config) -> Model:
    """MoRec: ``morec_encoder`` trained with ``text_bce_seq`` over the ``"text_sequences"`` context."""
    return Model("morec", morec_encoder(config), weighted_sum(term("text_bce_seq", config)), context="text_sequences")


#: MoRec's protocol defaults for shared keys: SASRec's (``SASREC_DEFAULTS``) and the minilm encoder.
MOREC_DEFAULTS = dict(_sasrec.SASREC_DEFAULTS, encoder="minilm")

__all__ = ["MoRecSettings", "MoRecError", "TEXT_TUNINGS", "init_params", "item_rows", "sasrec_params",
           "sequence_output", "embed", "morec_encoder", "make_morec", "MOREC_DEFAULTS"]
