"""Text in, sentence embeddings out: tokenizer + batched, jitted, length-bucketed encoding.

``load_sentence_encoder(folder, dtype=float32, name=None) -> SentenceEncoder`` reads a
sentence-transformers BERT/MPNet folder (``folder.read_sentence_folder``), its
``model.safetensors`` (``model.load_params``) and its ``tokenizer.json`` (the `tokenizers`
library, truncation to the folder's ``max_seq_length``, no padding: the same ids as
sentence-transformers' tokenizer).

``SentenceEncoder.encode(texts, batch_size=64)`` -> float32 [n, dim]:

1. texts are tokenized once (lower-cased first if ``do_lower_case``);
2. they are sorted by token count (longest first, stable), cut into batches of
   ``batch_size``; each batch is padded to ``bucket_length`` of its longest text (multiples
   of 8 up to 64 tokens, of 16 up to 128, of 32 up to 256, ...: at most 4 lengths per
   octave, at most 1/4 padding), capped at ``max_seq_length``, and, when the texts are
   fewer than ``batch_size``, to the next power of two rows; so a handful of compiled
   shapes serve every batch (ml-100k: 3 shapes, 16% padding);
3. each batch runs through one jitted ``SentenceModel.encode`` (params are an argument,
   never closed over), with a tqdm progress bar;
4. rows are put back in input order.

``stats`` (optional dict) receives items, seconds, items_per_s, batches and the padded
shapes used. The encoder also offers the ``.name``/``.dim``/``.encode(texts, **kw)`` interface
of ``jaxrec.init.encoders.Encoder`` (``batch_size``, ``show_progress_bar``,
``convert_to_numpy``, ``normalize_embeddings`` as in sentence-transformers).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.text.folder import SentenceModelError, read_sentence_folder
from jaxrec.text.model import SentenceModel, load_params

log = logging.getLogger("jaxrec.text")

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_tokenizer(path: str | Path, max_length: int) -> Any:
    """``tokenizers.Tokenizer`` from ``tokenizer.json`` with truncation to ``max_length``, padding off."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise SentenceModelError(f"{path}: not a readable tokenizers file ({e})") from e
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)  # strategy longest_first, as sentence-transformers
    return tok


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, or ``ValueError`` for an empty list or a non-string element (index named)."""
    if isinstance(texts, str):
        raise ValueError("texts: got one string; expected a list of strings")
    texts = list(texts)
    if not texts:
        raise ValueError("texts: empty list; expected at least one text to encode")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}]: {type(t).__name__} {t!r:.60}; expected str")
    return texts


def bucket_length(n: int, min_step: int = 8) -> int:
    """``n`` rounded up to a multiple of max(``min_step``, next_power_of_two(n) / 8)."""
    step = max(min_step, (1 << max(int(n) - 1, 0).bit_length()) // 8)
    return -(-max(int(n), 1) // step) * step


def plan_batches(lengths: np.ndarray, batch_size: int, max_length: int, min_step: int = 8
                 ) -> list[tuple[np.ndarray, int, int]]:
    """Batches as (indices into ``lengths``, padded length, padded rows), longest texts first.

    Padded length: ``bucket_length`` of the batch's longest text, at most ``max_length``.
    Padded rows: ``batch_size``, or the next power of two of the number of texts when there
    are fewer than ``batch_size``.
    """
    if batch_size < 1 or min_step < 1:
        raise ValueError(f"batch_size={batch_size}, min_step={min_step}: expected >= 1")
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    rows = batch_size if len(lengths) >= batch_size else 1 << int(np.ceil(np.log2(max(len(lengths), 1))))
    plan = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        longest = int(lengths[idx].max())
        plan.append((idx, min(bucket_length(longest, min_step), max_length), rows))
    return plan


class SentenceEncoder:
    """A loaded sentence encoder: ``model`` (pure functions), ``params`` (pytree), tokenizer.

    Attributes: ``name`` (identifier), ``source`` (folder), ``dim`` (output size),
    ``max_seq_length``, ``pad_token_id``, ``dtype``.
    """

    #: ``jaxrec.init.encoders.encode_texts`` hands the whole list to ``encode`` (it sorts and batches itself)
    batches_itself = True

    def __init__(self, model: SentenceModel, params: dict, tokenizer: Any, name: str):
        self.model = model
        self.params = params
        self.tokenizer = tokenizer
        self.name = name
        self.source = str(model.folder.path)
        self.dim = model.dim
        self.max_seq_length = model.folder.max_seq_length
        self.pad_token_id = model.folder.config.pad_token_id
        self.dtype = model.dtype
        self._encode = jax.jit(lambda p, ids, mask: model.encode(p, ids, mask))

    def __repr__(self) -> str:
        cfg = self.model.folder.config
        return (f"SentenceEncoder({self.name!r}, {cfg.model_type}, {cfg.num_hidden_layers} layers, dim {self.dim}, "
                f"{jnp.dtype(self.dtype).name}, pooling {'+'.join(self.model.folder.pooling_modes)}"
                f"{', normalized' if self.model.folder.normalize else ''})")

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text ([CLS] ... [SEP] or <s> ... </s>), truncated to ``max_seq_length``."""
        texts = check_texts(texts)
        if self.model.folder.do_lower_case:
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def pad(self, ids: Sequence[Sequence[int]], length: int, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad token id lists -> (input_ids int32 [rows, length], attention_mask int32 [rows, length])."""
        rows = len(ids) if rows is None else rows
        input_ids = np.full((rows, length), self.pad_token_id, np.int32)
        mask = np.zeros((rows, length), np.int32)
        for r, seq in enumerate(ids):
            input_ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
        return input_ids, mask

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = True,
               min_step: int = 8, stats: dict | None = None, convert_to_numpy: bool = True,
               normalize_embeddings: bool = False) -> np.ndarray:
        """Sentence embeddings float32 [len(texts), dim] in input order (see module doc).

        Raises ``ValueError`` for an empty list or a non-string text.
        """
        del convert_to_numpy  # always numpy (sentence-transformers-compatible keyword)
        t0 = time.perf_counter()
        ids = self.tokenize(texts)
        plan = plan_batches(np.array([len(s) for s in ids]), batch_size, self.max_seq_length, min_step)
        out = np.empty((len(ids), self.dim), np.float32)
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc=f"encoding ({self.name})", unit="text")
        try:
            pending = None
            for idx, length, rows in plan:
                input_ids, mask = self.pad([ids[i] for i in idx], length, rows)
                result = self._encode(self.params, input_ids, mask)  # dispatched asynchronously
                if pending is not None:
                    self._collect(out, *pending, bar)
                pending = (idx, result)
            self._collect(out, *pending, bar)
        finally:
            if bar is not None:
                bar.close()
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        seconds = time.perf_counter() - t0
        if stats is not None:
            stats.update(items=len(ids), seconds=seconds, items_per_s=len(ids) / max(seconds, 1e-12),
                         batches=len(plan), shapes=sorted({(r, n) for _, n, r in plan}))
        return out

    @staticmethod
    def _collect(out: np.ndarray, idx: np.ndarray, result: jax.Array, bar: Any) -> None:
        out[idx] = np.asarray(result)[: len(idx)]
        if bar is not None:
            bar.update(len(idx))


def load_sentence_encoder(folder: str | Path, dtype: Any = jnp.float32, name: str | None = None) -> SentenceEncoder:
    """Load a sentence-transformers BERT/MPNet folder as a JAX ``SentenceEncoder``.

    ``dtype``: float32 (default) or bfloat16 (params and matmuls in bf16; LayerNorm, softmax,
    pooling and the output in float32). ``name`` defaults to the folder path.
    Raises ``SentenceModelError`` (a ``ValueError``) naming the file and field that is missing
    or not as expected.
    """
    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(f"dtype={dtype!r}: expected float32 or bfloat16")
    spec = read_sentence_folder(folder)
    tokenizer = load_tokenizer(spec.tokenizer, spec.max_seq_length)
    model = SentenceModel.build(spec, dtype)
    t0 = time.perf_counter()
    params = load_params(model)
    log.info("loaded %s (%s) in %.1f s", spec.path, jnp.dtype(dtype).name, time.perf_counter() - t0)
    return SentenceEncoder(model, params, tokenizer, name or str(spec.path))
