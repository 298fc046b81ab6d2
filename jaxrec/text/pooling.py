"""Sentence pooling and normalization of token embeddings, as sentence-transformers computes them.

Formulas follow sentence-transformers 6.2 ``sentence_transformer/modules/pooling.py``
(``Pooling._forward_padded``, no prompt exclusion) and ``base/modules/normalize.py``
(``torch.nn.functional.normalize(p=2, eps=1e-12)``). With m the attention mask [B, T]
(1 = token, 0 = padding) and x the token embeddings [B, T, H]:

- ``cls``: x at the first position with m = 1;
- ``max``: max over positions with m = 1 (padding set to the dtype's lowest value instead
  of -inf, which only differs for a row without any token);
- ``mean``: sum_t m x / max(sum_t m, 1e-9); ``mean_sqrt_len_tokens``: the same sum over
  sqrt(max(sum_t m, 1e-9));
- ``weightedmean``: weights w_t = t + 1 - (index of the first token), sum_t m w x / max(sum_t m w, 1e-9);
- ``lasttoken``: x at the last position with m = 1 (the last position if none).

Several modes are concatenated along the feature axis in the given order. Computation is
in float32 whatever the input dtype.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax.numpy as jnp

from jaxrec.text.folder import POOLING_MODES


def pool(token_embeddings: jnp.ndarray, attention_mask: jnp.ndarray, modes: Sequence[str] = ("mean",)) -> jnp.ndarray:
    """Pool token embeddings [B, T, H] under mask [B, T] -> float32 [B, H * len(modes)].

    Raises ``ValueError`` for an unknown mode or an empty ``modes``.
    """
    chex.assert_rank(token_embeddings, 3)
    chex.assert_rank(attention_mask, 2)
    chex.assert_equal_shape_prefix([token_embeddings, attention_mask], 2)
    if not modes:
        raise ValueError("pool: modes is empty; expected at least one of " + ", ".join(POOLING_MODES))
    x = token_embeddings.astype(jnp.float32)
    m = attention_mask.astype(jnp.float32)
    _, t, _ = x.shape
    rows = jnp.arange(x.shape[0])
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(x[rows, jnp.argmax(attention_mask, axis=1)])
        elif mode == "max":
            out.append(jnp.where(m[..., None] > 0, x, jnp.finfo(jnp.float32).min).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = jnp.einsum("bth,bt->bh", x, m)
            count = jnp.maximum(m.sum(axis=1, keepdims=True), 1e-9)
            out.append(total / (count if mode == "mean" else jnp.sqrt(count)))
        elif mode == "weightedmean":
            first = jnp.argmax(attention_mask, axis=1)[:, None]
            w = m * (jnp.arange(1, t + 1, dtype=jnp.float32)[None, :] - first)
            out.append(jnp.einsum("bth,bt->bh", x, w) / jnp.maximum(w.sum(axis=1, keepdims=True), 1e-9))
        elif mode == "lasttoken":
            flipped = attention_mask[:, ::-1]
            idx = jnp.where(flipped.max(axis=1) == 0, t - 1, jnp.argmax(flipped, axis=1))
            out.append((x * m[..., None])[rows, t - 1 - idx])
        else:
            raise ValueError(f"pool: mode {mode!r}; expected one of {list(POOLING_MODES)}")
    return out[0] if len(out) == 1 else jnp.concatenate(out, axis=-1)


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """x / max(||x||_2, eps) over the last axis (torch.nn.functional.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)
