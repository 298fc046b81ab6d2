"""Greedy generation and continuation log-likelihoods, jitted, over a fixed-size KV cache.

``greedy_generate``: one prefill over the (padded) prompt writes the cache, then a compiled
``lax.while_loop`` decodes one token per step against the cache (never re-running the
prompt) until every row produced ``eos_id`` or ``max_new_tokens`` were made. Repetition
penalty follows transformers' ``RepetitionPenaltyLogitsProcessor`` (Keskar et al. 2019,
CTRL): the logit of every token already in the sequence is divided by ``p`` when positive and
multiplied by ``p`` otherwise; "in the sequence" means the prompt's ``input_ids`` (when given)
and the tokens generated so far, as in ``model.generate``.

``sequence_logprob``: log p(continuation | prefix) summed over the continuation's tokens, for
ranking candidates (A-LLMRec's 20 titles): the prefix is run once, its cache is repeated for
each candidate, and all candidates run as one batch.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .errors import LMError
from .model import LanguageModel, Params


def _last_real(mask: jax.Array) -> jax.Array:
    """Index [B] of the last 1 in each row of ``mask`` [B, T]."""
    t = mask.shape[1]
    return t - 1 - jnp.argmax(mask[:, ::-1], axis=1)


def _check_prompt(model: LanguageModel, shape, mask, extra: int, what: str) -> None:
    cfg = model.config
    b, t = shape
    if t + extra > cfg.max_position_embeddings:
        raise LMError(f"{what}: a prompt of {t} tokens + {extra} more exceeds the model's context of "
                      f"{cfg.max_position_embeddings} positions ({cfg.source}); expected at most "
                      f"{cfg.max_position_embeddings - extra} prompt tokens")
    if mask is not None and not isinstance(mask, jax.core.Tracer):
        empty = np.flatnonzero(np.asarray(mask).sum(axis=1) == 0)
        if empty.size:
            raise LMError(f"{what}: attention_mask rows {empty[:8].tolist()} have no real token; expected at least one")


def _penalize(logits: jax.Array, seen: jax.Array, penalty) -> jax.Array:
    """HF RepetitionPenaltyLogitsProcessor on the ``seen`` [B, V] tokens (p = 1: unchanged, exactly)."""
    scored = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, scored, logits)


@partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _greedy(model, params, input_ids, inputs_embeds, mask, eos_id, pad_id, penalty, *, max_new_tokens):
    """eos_id (-1: none), pad_id, penalty: int32/float32 scalars (traced: one compile per shape)."""
    b, t = mask.shape
    dtype = params["embed_tokens"]["embedding"].dtype
    vocab = model.config.vocab_size
    cache = model.init_cache(b, t + max_new_tokens, dtype)
    rows = jnp.arange(b)
    seen = jnp.zeros((b, vocab), bool)
    if input_ids is not None:
        seen = seen.at[rows[:, None], jnp.where(mask, input_ids, vocab)].set(True, mode="drop")  # pads dropped
    embeds_in = inputs_embeds
    ids_in = input_ids if inputs_embeds is None else None
    hidden, cache = model.forward_hidden(params, ids_in, embeds_in, mask, cache=cache)
    logits = model.logits(params, hidden[rows, _last_real(mask)])

    def pick(logits, seen, done):
        tok = jnp.argmax(_penalize(logits, seen, penalty), axis=-1).astype(jnp.int32)
        tok = jnp.where(done, pad_id, tok)
        seen = seen.at[rows, tok].set(True, mode="drop")
        return tok, seen, done | (tok == eos_id)

    tok, seen, done = pick(logits, seen, jnp.zeros((b,), bool))
    out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok)

    def cond(state):
        step, _, _, _, done = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, cache, out, seen, done = state
        prev = jax.lax.dynamic_slice_in_dim(out, step - 1, 1, axis=1)
        hidden, cache = model.forward_hidden(params, prev, None, jnp.ones((b, 1), bool), cache=cache)
        tok, seen, done = pick(model.logits(params, hidden[:, 0]), seen, done)
        out = jax.lax.dynamic_update_slice_in_dim(out, tok[:, None], step, axis=1)
        return step + 1, cache, out, seen, done

    state = (jnp.asarray(1, jnp.int32), cache, out, seen, done)
    return jax.lax.while_loop(cond, body, state)[2]


def greedy_generate(model: LanguageModel, params: Params, input_ids=None, attention_mask=None, *,
                    inputs_embeds=None, max_new_tokens: int, eos_id: int | None, pad_id: int | None = None,
                    repetition_penalty: float = 1.0) -> jax.Array:
    """Greedy decoding: the new tokens int32 [B, max_new_tokens].

    Prompt: ``input_ids`` int [B, T] and/or ``inputs_embeds`` [B, T, E] (the embeddings are
    what the model reads when given; ``input_ids`` then only seeds the repetition penalty),
    ``attention_mask`` [B, T] (1 = real token; left or right padding; default all 1).
    A row stops after it emits ``eos_id`` (None: never); later slots, and every slot after
    all rows stopped, hold ``pad_id`` (default ``eos_id``, else 0). ``repetition_penalty``
    p >= 1 uses HF semantics (module doc). Raises LMError before compute when T +
    max_new_tokens exceeds the model's context or a row has no real token.
    """
    if input_ids is None and inputs_embeds is None:
        raise LMError("greedy_generate: pass input_ids [B, T] and/or inputs_embeds [B, T, E]")
    if max_new_tokens < 1:
        raise LMError(f"greedy_generate: max_new_tokens is {max_new_tokens}; expected at least 1")
    if not repetition_penalty > 0:
        raise LMError(f"greedy_generate: repetition_penalty is {repetition_penalty}; expected a positive number")
    shape = (jnp.shape(inputs_embeds)[:2] if inputs_embeds is not None else jnp.shape(input_ids))
    if input_ids is not None and jnp.shape(input_ids) != tuple(shape):
        raise LMError(f"greedy_generate: input_ids {jnp.shape(input_ids)} and inputs_embeds {shape} disagree")
    mask = jnp.ones(shape, bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
    if mask.shape != tuple(shape):
        raise LMError(f"greedy_generate: attention_mask has shape {mask.shape}; expected {tuple(shape)}")
    _check_prompt(model, shape, attention_mask, max_new_tokens, "greedy_generate")
    pad = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    return _greedy(model, params, None if input_ids is None else jnp.asarray(input_ids, jnp.int32),
                   None if inputs_embeds is None else jnp.asarray(inputs_embeds), mask,
                   jnp.int32(-1 if eos_id is None else eos_id), jnp.int32(pad), jnp.float32(repetition_penalty),
                   max_new_tokens=int(max_new_tokens))


@partial(jax.jit, static_argnames=("model",))
def _logprob(model, params, prefix_ids, prefix_embeds, prefix_mask, cont, cont_mask):
    b, tp = prefix_mask.shape
    _, c, tc = cont.shape
    dtype = params["embed_tokens"]["embedding"].dtype
    cache = model.init_cache(b, tp + tc, dtype)
    hidden, cache = model.forward_hidden(params, prefix_ids, prefix_embeds, prefix_mask, cache=cache)
    first = jax.nn.log_softmax(model.logits(params, hidden[jnp.arange(b), _last_real(prefix_mask)]))  # [B, V]
    rep = {"k": 1, "v": 1, "mask": 0, "pos": 0}
    cache = {k: (jnp.repeat(v, c, axis=rep[k]) if k in rep else v) for k, v in cache.items()}
    flat, flat_mask = cont.reshape(b * c, tc), cont_mask.reshape(b * c, tc)
    hidden, _ = model.forward_hidden(params, flat, None, flat_mask, cache=cache)
    logp = jax.nn.log_softmax(model.logits(params, hidden[:, :-1]))  # [BC, Tc-1, V]: predicts tokens 1..Tc-1
    lp0 = jnp.take_along_axis(jnp.repeat(first, c, axis=0), flat[:, :1], axis=1)
    rest = jnp.take_along_axis(logp, flat[:, 1:, None], axis=2)[..., 0]
    tok = jnp.concatenate([lp0, rest], axis=1) * flat_mask
    return tok.sum(axis=1).reshape(b, c)


def sequence_logprob(model: LanguageModel, params: Params, prefix_ids=None, continuation_ids=None, *,
                     prefix_embeds=None, prefix_mask=None, continuation_mask=None) -> jax.Array:
    """Log-likelihood float32 of each continuation given its prefix: sum over the continuation's
    real tokens of log p(token | prefix, earlier continuation tokens).

    Prefix: ``prefix_ids`` int [B, Tp] or ``prefix_embeds`` [B, Tp, E] (with ``prefix_mask``
    [B, Tp], left or right padded); a 1-D [Tp] prefix means B = 1. Continuations:
    ``continuation_ids`` int [C, Tc] (the same candidates for every prefix) or [B, C, Tc],
    right-padded, with ``continuation_mask`` of the same shape (default all 1). Returns
    [B, C], or [C] for a 1-D prefix. The prefix runs once; its KV cache is shared by the C
    candidates. Raises LMError on inconsistent shapes or a sequence beyond the context.
    """
    if continuation_ids is None or (prefix_ids is None) == (prefix_embeds is None):
        raise LMError("sequence_logprob: pass continuation_ids and exactly one of prefix_ids / prefix_embeds")
    squeeze = False
    if prefix_ids is not None:
        prefix_ids = jnp.asarray(prefix_ids, jnp.int32)
        if prefix_ids.ndim == 1:
            prefix_ids, squeeze = prefix_ids[None], True
        shape = prefix_ids.shape
    else:
        prefix_embeds = jnp.asarray(prefix_embeds)
        if prefix_embeds.ndim == 2:
            prefix_embeds, squeeze = prefix_embeds[None], True
        shape = prefix_embeds.shape[:2]
    b = shape[0]
    mask = jnp.ones(shape, bool) if prefix_mask is None else jnp.asarray(prefix_mask).astype(bool).reshape(shape)
    cont = jnp.asarray(continuation_ids, jnp.int32)
    if cont.ndim == 2:
        cont = jnp.broadcast_to(cont[None], (b, *cont.shape))
    if cont.ndim != 3 or cont.shape[0] != b:
        raise LMError(f"sequence_logprob: continuation_ids has shape {jnp.shape(continuation_ids)}; expected "
                      f"[C, Tc] or [{b}, C, Tc]")
    cmask = jnp.ones(cont.shape, bool) if continuation_mask is None else jnp.asarray(continuation_mask).astype(bool)
    if cmask.shape != cont.shape:
        cmask = jnp.broadcast_to(cmask, cont.shape) if cmask.shape == cont.shape[1:] else None
        if cmask is None:
            raise LMError(f"sequence_logprob: continuation_mask has shape {jnp.shape(continuation_mask)}; "
                          f"expected that of continuation_ids")
    _check_prompt(model, shape, None if prefix_mask is None else mask, cont.shape[2], "sequence_logprob")
    out = _logprob(model, params, prefix_ids, prefix_embeds, mask, cont, cmask)
    return out[0] if squeeze else out
