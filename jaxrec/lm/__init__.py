"""A frozen decoder-only language model in JAX (Llama family and OPT).

- ``LMConfig``, ``LanguageModel(config)``: pure functions over a params pytree
  (``init``, ``embed_tokens``, ``forward``/``forward_hidden``/``logits``, ``init_cache``).
- Loading: ``load_gguf(path, dtype)`` (llama GGUF, dequantized; tokenizer from its metadata),
  ``load_hf(folder, dtype)`` (HF safetensors folder, Llama or OPT); both return
  ``LoadedLM(model, params, tokenizer, report)``. ``smollm2_path()`` finds or fetches
  SmolLM2-135M-Instruct (the offline test model).
- ``Tokenizer``: byte-level BPE (``tokenizers``), special ids, ``add_special_tokens``.
- ``greedy_generate``, ``sequence_logprob``: jitted, over a fixed-size KV cache.
- ``shard_params``/``param_specs``: weights over a device mesh ("model" axis).
- ``resize_vocab``: grow the embedding table for added tokens; ``stack_layers`` /
  ``unstack_layers``: the two layouts of the per-block weights (see ``jaxrec.lm.model``).
- ``LMError`` (a ValueError) for bad files, tokenizers and prompts.
"""

from .config import LMConfig
from .errors import LMError
from .generate import greedy_generate, sequence_logprob
from .gguf_file import load_gguf, unpermute_qk
from .hf import load_hf
from .model import LanguageModel, layout_of, resize_vocab, stack_layers, unstack_layers
from .sharding import param_specs, shard_params
from .smollm import fetch_smollm2, smollm2_path
from .tokenizer import Tokenizer
from .weights import LoadedLM

__all__ = [
    "LMConfig", "LMError", "LanguageModel", "LoadedLM", "Tokenizer",
    "load_gguf", "load_hf", "smollm2_path", "fetch_smollm2", "unpermute_qk",
    "greedy_generate", "sequence_logprob", "resize_vocab", "shard_params", "param_specs",
    "stack_layers", "unstack_layers", "layout_of",
]
