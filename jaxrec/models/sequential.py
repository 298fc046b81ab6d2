"""What every sequence backbone (SASRec, GRU4Rec, ...) shares: scoring users from their histories.

A sequence backbone's ``embed`` is (the output at the last position of each user's history,
the item table without its padding row). ``chunked_users`` computes the first part a chunk of
users at a time with ``lax.map`` (so 10^5 users need only one chunk's activations at once);
``check_sequences`` is the input check of every sequence forward; ``self_attention`` the
bidirectional multi-head attention core of BERT4Rec and the RECFORMER-like model.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


#: ``seq_loss`` values of the next-item backbones (GRU4Rec, NextItNet) -> the registered term:
#: "ce" full-catalog softmax cross-entropy (RecBole's ``loss_type="CE"``), "bce" one sampled
#: negative per position (SASRec's loss). See ``jaxrec.objectives.sequential``.
SEQ_LOSSES = {"ce": "ce_seq", "bce": "bce_seq"}


def check_sequences(seq, error: type[Exception], name: str = "seq", max_len: int | None = None) -> jax.Array:
    """``seq`` as an int array [B, L] (item ids + 1, 0 = padding); ``error`` naming ``name`` when it
    is not rank 2, not integer, or longer than ``max_len``."""
    seq = jnp.asarray(seq)
    if seq.ndim != 2:
        raise error(f"{name}: expected int item ids [B, L], got shape {seq.shape}")
    if not jnp.issubdtype(seq.dtype, jnp.integer):
        raise error(f"{name}: expected integer item ids (+1, 0 = padding), got dtype {seq.dtype}")
    if max_len is not None and seq.shape[1] > max_len:
        raise error(f"{name}: length {seq.shape[1]} exceeds max_len={max_len}")
    return seq


def chunked_users(user_fn: Callable[[jax.Array], jax.Array], histories: jax.Array, chunk_size: int,
                  error: type[Exception] = ValueError) -> jax.Array:
    """float [U, d]: ``user_fn(histories[chunk])`` ([c, L] -> [c, d]) over chunks of ``chunk_size``
    users (the last chunk padded with empty histories, their rows dropped). Jit-compatible."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise error(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    num_users, length = histories.shape
    chunk = max(1, min(chunk_size, num_users))
    chunks = -(-num_users // chunk)
    padded = jnp.pad(histories, ((0, chunks * chunk - num_users), (0, 0)))
    user = jax.lax.map(user_fn, padded.reshape(chunks, chunk, length))
    return user.reshape(chunks * chunk, -1)[:num_users]


__all__ = ["check_sequences", "chunked_users", "SEQ_LOSSES", "PADDING_LOGITS", "self_attention"]


def id_sequence_encoder(name: str, config, *, arch_from_config: Callable, init_params: Callable, embed: Callable,
                        sequence_output: Callable):
    """The ``SequenceEncoder`` of an ID-based sequential backbone (GRU4Rec, NextItNet, BERT4Rec)
    from its module's functions: ``init(key, num_users, num_items)`` = ``init_params(key,
    arch_from_config(config, num_items))``; ``embed(params, histories [U, L])`` = the module's
    ``embed`` (users in chunks of ``config.eval_chunk``); ``forward(params, seq, key, train)`` =
    ``sequence_output``; the architecture is read back from the item table's rows (row 0 is
    padding: ``TableSpec("item_embedding", offset=1)``); no user table."""
    from jaxrec.models.base import SequenceEncoder, TableSpec  # noqa: PLC0415

    chunk = config.eval_chunk

    def arch_of(params):
        return arch_from_config(config, params["item_embedding"].shape[0] - 1)

    def init(key, num_users, num_items):
        return init_params(key, arch_from_config(config, num_items))

    def embed_fn(params, histories):
        return embed(params, histories, arch_of(params), chunk_size=chunk)

    def forward(params, seq, key=None, train=False):
        return sequence_output(params, seq, arch_of(params), key=key, train=train)

    return SequenceEncoder(name=name, init=init, embed=embed_fn, forward=forward,
                           item_table=TableSpec("item_embedding", offset=1))


#: ``self_attention``'s treatment of padding keys: RecBole's ``-10000 + logit`` (BERT4Rec, as its
#: ``get_attention_mask``) or the dtype's minimum (masked out exactly).
PADDING_LOGITS = ("recbole", "min")


def self_attention(q, k, v, key_mask, heads: int, *, padding: str, weight_dropout, train: bool, rngs) -> jax.Array:
    """Bidirectional multi-head scaled dot-product attention over projected ``q``, ``k``, ``v``
    [B, L, d] (d divisible by ``heads``): ``softmax(q_h k_h^T / sqrt(d / heads))`` per head, keys with
    ``key_mask`` [B, L] False moved to ``-10000 + logit`` (``padding="recbole"``, RecBole's
    ``TransformerLayer``) or to the dtype's minimum (``"min"``); ``weight_dropout(weights,
    deterministic=not train, rngs=rngs)`` on the attention weights; returns the heads' outputs
    concatenated, [B, L, d], before the output projection (Vaswani et al. 2017, eq. 1). Shared by
    BERT4Rec (``jaxrec.models.bert4rec``) and the RECFORMER-like model (``jaxrec.models.recformer``)."""
    b, length, d = q.shape
    hd = d // heads

    def split(y):  # [B, L, d] -> [B, H, L, hd]
        return y.reshape(b, length, heads, hd).transpose(0, 2, 1, 3)

    logits = jnp.matmul(split(q), jnp.swapaxes(split(k), -1, -2)) / math.sqrt(hd)  # [B, H, L, L]
    keep = key_mask[:, None, None, :]
    if padding == "recbole":
        logits = jnp.where(keep, logits, -10000.0 + logits)
    elif padding == "min":
        logits = jnp.where(keep, logits, jnp.finfo(logits.dtype).min)
    else:
        raise ValueError(f"padding={padding!r}: expected one of {PADDING_LOGITS}")
    weights = weight_dropout(jax.nn.softmax(logits, axis=-1), deterministic=not train, rngs=rngs)
    return jnp.matmul(weights, split(v)).transpose(0, 2, 1, 3).reshape(b, length, d)
