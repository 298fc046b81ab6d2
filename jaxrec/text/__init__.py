"""A JAX sentence encoder (BERT family: BERT, MPNet) matching sentence-transformers.

- ``folder``: read and check a sentence-transformers folder (``read_sentence_folder``);
- ``model``: Flax NNX BERT/MPNet layers, ``SentenceModel`` (pure ``encode(params,
  input_ids, attention_mask, *, train=False, key=None)``), ``load_params`` (safetensors);
- ``pooling``: cls / max / mean / mean_sqrt_len_tokens / weightedmean / lasttoken, L2 norm;
- ``encoder``: ``load_sentence_encoder(folder)`` -> ``SentenceEncoder`` with
  ``.encode(texts)`` (tokenizers, length buckets, jitted batches, progress bar).

``jaxrec.init.load_encoder("minilm-jax")`` / ``"mpnet-jax"`` / ``"<folder>-jax"`` wraps it for LLMInit.
"""

from jaxrec.text.encoder import (
    SentenceEncoder,
    bucket_length,
    check_texts,
    load_sentence_encoder,
    load_tokenizer,
    plan_batches,
)
from jaxrec.text.folder import (
    POOLING_MODES,
    SentenceFolder,
    SentenceModelError,
    TransformerConfig,
    read_sentence_folder,
)
from jaxrec.text.model import SentenceModel, TransformerEncoder, load_params, relative_position_bucket
from jaxrec.text.pooling import l2_normalize, pool

__all__ = [
    "POOLING_MODES",
    "SentenceEncoder",
    "SentenceFolder",
    "SentenceModel",
    "SentenceModelError",
    "TransformerConfig",
    "TransformerEncoder",
    "bucket_length",
    "check_texts",
    "l2_normalize",
    "load_params",
    "load_sentence_encoder",
    "load_tokenizer",
    "plan_batches",
    "pool",
    "read_sentence_folder",
    "relative_position_bucket",
]
