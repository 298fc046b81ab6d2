"""The error raised for unusable language-model input (files, tokenizers, prompts)."""

from __future__ import annotations

from jaxrec.errors import JaxrecError


class LMError(JaxrecError, ValueError):
    """A model file, tokenizer or prompt jaxrec.lm cannot use; the message names the file or
    argument and what was expected (e.g. ``model.gguf: general.architecture is 'qwen2';
    expected 'llama'``)."""
