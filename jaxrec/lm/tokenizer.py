"""Byte-level BPE tokenizers (GPT-2 style) built with the ``tokenizers`` library.

``Tokenizer.from_bpe`` builds one from a vocabulary and merges (what a GGUF file's
``tokenizer.ggml.*`` metadata holds): a ``tokenizers.models.BPE`` with the ByteLevel
pre-tokenizer and decoder, the pre-tokenizer's splitting chosen by llama.cpp's
``tokenizer.ggml.pre`` name (src/llama-vocab.cpp: ``smollm`` and the starcoder family split
every digit first; ``llama-bpe`` and friends use Llama 3's regex), and the file's control
tokens (type 3) added as special tokens so that ``<|im_start|>`` in text stays one token.
``Tokenizer.from_hf_folder`` reads a ``tokenizer.json``.

A ``Tokenizer`` is immutable: ``add_special_tokens`` returns a new one whose new tokens get
ids after the existing ones; existing ids never change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LMError

# llama.cpp's tokenizer.ggml.pre names -> how text is split before byte-level BPE.
_GPT2 = ("gpt2", "default", "mpt", "olmo", "jais")
_DIGITS = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
_LLAMA3 = ("llama3", "llama-bpe", "llama-v3", "smaug-bpe", "dbrx", "falcon3")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = _GPT2 + _DIGITS + _LLAMA3
CONTROL, USER_DEFINED = 3, 4  # GGUF token types (gguf.TokenType)


def _pre_tokenizer(pre: str, source: str):
    from tokenizers import Regex, pre_tokenizers

    if pre in _GPT2:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in _LLAMA3:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise LMError(f"{source}: tokenizer.ggml.pre is {pre!r}; expected one of {', '.join(PRE_TOKENIZERS)}")


class Tokenizer:
    """Text <-> token ids, with the model's special ids.

    ``bos_id``/``eos_id``/``pad_id`` (ints or None), ``add_bos`` (prepend bos in ``encode`` by
    default), ``chat_template`` (Jinja source or None), ``source`` (file, for messages),
    ``backend`` (the ``tokenizers.Tokenizer``).
    """

    def __init__(self, backend, *, bos_id: int | None, eos_id: int | None, pad_id: int | None,
                 add_bos: bool = False, chat_template: str | None = None, source: str = "<tokenizer>"):
        self.backend = backend
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.add_bos = add_bos
        self.chat_template = chat_template
        self.source = source
        self._plain = None  # the backend that encodes special-token strings as plain text (encode_plain)
        size = backend.get_vocab_size(with_added_tokens=True)
        for name in ("bos_id", "eos_id", "pad_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < size:
                raise LMError(f"{source}: {name} {v} is outside the vocabulary of {size} tokens")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_bpe(cls, tokens: Sequence[str], merges: Sequence[str], *, token_types: Sequence[int] | None = None,
                 pre: str = "gpt2", bos_id=None, eos_id=None, pad_id=None, add_bos: bool = False,
                 chat_template: str | None = None, source: str = "<tokenizer>") -> "Tokenizer":
        """Byte-level BPE from ``tokens`` (id = position; byte-level spelled, as GPT-2's vocab.json),
        ``merges`` ("a b" strings, highest priority first) and GGUF ``token_types`` (control tokens
        become special added tokens, user-defined ones plain added tokens; ids unchanged).
        Raises LMError naming ``source`` for duplicate tokens, malformed merges or an unknown ``pre``."""
        from tokenizers import AddedToken
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models

        vocab = {}
        for i, tok in enumerate(tokens):
            if tok in vocab:
                raise LMError(f"{source}: token {tok!r} appears twice (ids {vocab[tok]} and {i}); "
                              f"expected unique tokens")
            vocab[tok] = i
        pairs = []
        for i, m in enumerate(merges):
            parts = m.split(" ")
            if len(parts) != 2:
                raise LMError(f"{source}: merge {i} is {m!r}; expected two tokens separated by one space")
            pairs.append((parts[0], parts[1]))
        backend = Backend(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = _pre_tokenizer(pre, source)
        backend.decoder = decoders.ByteLevel()
        if token_types is not None:
            if len(token_types) != len(tokens):
                raise LMError(f"{source}: {len(token_types)} token types for {len(tokens)} tokens; expected one each")
            special = [AddedToken(t, special=True, normalized=False)
                       for t, k in zip(tokens, token_types) if k == CONTROL]
            plain = [AddedToken(t, special=False, normalized=False)
                     for t, k in zip(tokens, token_types) if k == USER_DEFINED]
            backend.add_special_tokens(special)
            backend.add_tokens(plain)
        return cls(backend, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, add_bos=add_bos,
                   chat_template=chat_template, source=source)

    @classmethod
    def from_hf_folder(cls, folder: str | Path, config=None) -> "Tokenizer":
        """The tokenizer of a HF folder: ``tokenizer.json``, else GPT-2 style ``vocab.json`` +
        ``merges.txt`` (OPT checkpoints); special tokens from ``tokenizer_config.json``
        (``bos_token``/``eos_token``/``pad_token``, ``add_bos_token``, ``chat_template``), else
        ``config``'s ids. Raises LMError naming the file when none is readable."""
        from tokenizers import Tokenizer as Backend

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if path.is_file():
            try:
                backend = Backend.from_file(str(path))
            except Exception as e:  # tokenizers raises plain Exception subclasses
                raise LMError(f"{path}: cannot read as a tokenizers JSON file: {e}") from None
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            path = folder / "vocab.json"
            backend = cls._gpt2_files(path, folder / "merges.txt").backend
        else:
            raise LMError(f"{folder}: no tokenizer.json, nor vocab.json + merges.txt; expected a HF tokenizer")
        meta = {}
        meta_path = folder / "tokenizer_config.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError as e:
                raise LMError(f"{meta_path}: not valid JSON ({e})") from None

        def special(key, fallback):
            tok = meta.get(key)
            if isinstance(tok, dict):
                tok = tok.get("content")
            if tok is None:
                return fallback
            tid = backend.token_to_id(tok)
            if tid is None:
                raise LMError(f"{meta_path}: {key} {tok!r} is not in {path}")
            return tid

        ids = {k: getattr(config, k, None) for k in ("bos_id", "eos_id", "pad_id")}
        return cls(backend, bos_id=special("bos_token", ids["bos_id"]), eos_id=special("eos_token", ids["eos_id"]),
                   pad_id=special("pad_token", ids["pad_id"]), add_bos=bool(meta.get("add_bos_token", False)),
                   chat_template=meta.get("chat_template"), source=str(path))

    @classmethod
    def _gpt2_files(cls, vocab_path: Path, merges_path: Path) -> "Tokenizer":
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise LMError(f"{vocab_path}: not valid JSON ({e}); expected a token -> id map") from None
        tokens = [None] * len(vocab)
        for tok, i in vocab.items():
            if not (isinstance(i, int) and 0 <= i < len(vocab)) or tokens[i] is not None:
                raise LMError(f"{vocab_path}: token {tok!r} has id {i!r}; expected ids 0..{len(vocab) - 1}, each once")
            tokens[i] = tok
        lines = merges_path.read_text(encoding="utf-8").splitlines()
        merges = [m for m in lines if m and not m.startswith("#version")]
        return cls.from_bpe(tokens, merges, source=str(vocab_path))

    # ------------------------------------------------------------------ use
    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def require(self, name: str) -> int:
        """The id of special token ``name`` ("bos", "eos" or "pad"); LMError when the tokenizer has none."""
        v = getattr(self, f"{name}_id")
        if v is None:
            raise LMError(f"{self.source}: the tokenizer has no {name} token; expected one "
                          f"(set {name}_id or use a tokenizer that defines it)")
        return v

    def token_id(self, token: str) -> int:
        """Id of ``token`` (exact vocabulary entry). Raises LMError naming it when absent."""
        tid = self.backend.token_to_id(token)
        if tid is None:
            raise LMError(f"{self.source}: token {token!r} is not in the vocabulary; expected it "
                          f"(add it with add_special_tokens)")
        return tid

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special tokens written in the text map to their ids. ``add_bos``
        (default: the file's ``add_bos``) prepends ``bos_id``. For text that is data (catalogue
        titles, user input), use ``encode_plain``: here ``<|im_end|>`` in the text is a control token."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if self.add_bos if add_bos is None else add_bos:
            ids = [self.require("bos")] + ids
        return ids

    def encode_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text: a special (control) token written in it, e.g.
        ``<|im_end|>`` or ``[UserRep]``, is split into ordinary tokens like any other characters, so
        data can never act as a control token (no bos is added). The ``tokenizers`` backend's
        ``encode_special_tokens`` (transformers' ``split_special_tokens=True``); text without
        special-token strings encodes exactly as ``encode``."""
        if self._plain is None:
            from tokenizers import Tokenizer as Backend

            backend = Backend.from_str(self.backend.to_str())
            backend.encode_special_tokens = True
            self._plain = backend
        return self._plain.encode(text, add_special_tokens=False).ids

    def special_ids(self) -> set[int]:
        """Ids of every special (control) token: the file's control tokens and those added by
        ``add_special_tokens``."""
        return {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}

    def special_tokens(self) -> list[str]:
        """The strings of every special (control) token, by id."""
        dec = self.backend.get_added_tokens_decoder()
        return [dec[i].content for i in sorted(dec) if dec[i].special]

    def encode_batch(self, texts: Sequence[str], *, padding_side: str = "left", add_bos: bool | None = None,
                     pad_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 [B, T], attention_mask int32 [B, T]) padded to the longest text with
        ``pad_id`` (default the tokenizer's pad, else eos) on ``padding_side`` ("left" or "right")."""
        if padding_side not in ("left", "right"):
            raise LMError(f"encode_batch: padding_side {padding_side!r}; expected 'left' or 'right'")
        if pad_id is None:
            pad_id = self.pad_id if self.pad_id is not None else self.require("eos")
        rows = [self.encode(t, add_bos) for t in texts]
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
            ids[i, sl] = r
            mask[i, sl] = 1
        return ids, mask

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a sequence or 1-D array); special tokens dropped unless asked for."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def add_special_tokens(self, tokens: Sequence[str]) -> "Tokenizer":
        """A new Tokenizer with ``tokens`` (e.g. "[UserRep]") added as special tokens: matched whole
        in text, new ids ``vocab_size, vocab_size + 1, ...`` in order; tokens already present keep
        their ids; every existing id is unchanged. (Grow the model with ``resize_vocab``.)"""
        from tokenizers import AddedToken
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_str(self.backend.to_str())
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
        return Tokenizer(backend, bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, add_bos=self.add_bos,
                         chat_template=self.chat_template, source=self.source)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The prompt text of ``messages`` ([{"role", "content"}]) rendered with the file's Jinja
        chat template in a sandbox (as transformers does). Raises LMError when there is none."""
        if not self.chat_template:
            raise LMError(f"{self.source}: no chat template; expected tokenizer.chat_template metadata")
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        specials = {"bos_token": self._text(self.bos_id), "eos_token": self._text(self.eos_id)}
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **specials)

    def _text(self, tid):
        return None if tid is None else self.backend.id_to_token(tid)
