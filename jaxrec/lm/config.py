"""Hyperparameters of a decoder-only language model (Llama family or OPT).

``LMConfig`` is a frozen, hashable record: jitted functions take it (through
``jaxrec.lm.LanguageModel``) as a static argument. ``LMConfig.from_hf(config_dict, source)``
reads a Hugging Face ``config.json`` (``model_type`` ``llama`` or ``opt``); GGUF metadata is
read by ``jaxrec.lm.gguf_file``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import LMError

ARCHS = ("llama", "opt")
ACTIVATIONS = {"llama": ("silu",), "opt": ("relu", "gelu")}


@dataclass(frozen=True)
class LMConfig:
    """Shape and numerics of a decoder-only transformer.

    Common fields: ``arch`` ("llama" or "opt"), ``vocab_size`` V, ``hidden_size`` H,
    ``num_layers`` L, ``num_heads`` N, ``num_kv_heads`` K (N % K == 0; grouped-query
    attention when K < N; OPT has K == N), ``head_dim`` D, ``intermediate_size`` F (the MLP
    hidden width: SwiGLU's for Llama, ``ffn_dim`` for OPT), ``max_position_embeddings``
    (the context length: prompts and caches longer than this are refused), ``norm_eps``,
    ``tie_word_embeddings`` (the output head is the token-embedding table transposed),
    ``attention_bias`` (q/k/v/o biases; OPT's ``enable_bias`` also covers fc1/fc2),
    ``mlp_bias``, ``activation``.

    Llama only: ``rope_theta`` (rotary base). OPT only: ``word_embed_proj_dim`` E (the token
    embedding width; ``project_in`` E -> H and ``project_out`` H -> E exist when E != H),
    ``do_layer_norm_before`` (pre-LN when true, post-LN as in OPT-350m otherwise),
    ``final_layer_norm`` (the decoder's last LayerNorm; absent when post-LN or
    ``_remove_final_layer_norm``), ``layer_norm_affine``.

    Special token ids ``bos_id``/``eos_id``/``pad_id`` (None when unknown) and ``source``
    (the file it was read from, for error messages; not part of equality) ride along.
    Raises LMError (naming the field and ``source``) on inconsistent values.
    """

    arch: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    activation: str = "silu"
    word_embed_proj_dim: int | None = None
    do_layer_norm_before: bool = True
    final_layer_norm: bool = True
    layer_norm_affine: bool = True
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    source: str = field(default="<config>", compare=False)

    def __post_init__(self):
        def bad(name, expected):
            raise LMError(f"{self.source}: field {name!r} is {getattr(self, name)!r}; expected {expected}")

        if self.arch not in ARCHS:
            bad("arch", f"one of {ARCHS}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "max_position_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "a positive integer")
        if self.num_heads % self.num_kv_heads:
            bad("num_kv_heads", f"a divisor of num_heads={self.num_heads}")
        if self.activation not in ACTIVATIONS[self.arch]:
            bad("activation", f"one of {ACTIVATIONS[self.arch]} for {self.arch}")
        if self.arch == "llama" and self.head_dim % 2:
            bad("head_dim", "an even number (rotary positions rotate pairs of dimensions)")
        if self.arch == "opt":
            if self.num_kv_heads != self.num_heads:
                bad("num_kv_heads", f"num_heads={self.num_heads} for opt")
            if self.num_heads * self.head_dim != self.hidden_size:
                bad("head_dim", f"hidden_size / num_heads = {self.hidden_size / self.num_heads} for opt")
        if not self.norm_eps > 0:
            bad("norm_eps", "a positive number")
        for name in ("bos_id", "eos_id", "pad_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < self.vocab_size:
                bad(name, f"None or an id in [0, {self.vocab_size})")

    @property
    def embed_dim(self) -> int:
        """Width of the token-embedding table (E for OPT, H for Llama): the last axis of ``inputs_embeds``."""
        return self.word_embed_proj_dim or self.hidden_size

    def replace(self, **changes) -> "LMConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any], source: str = "config.json") -> "LMConfig":
        """An LMConfig from a Hugging Face ``config.json`` dict (``model_type`` llama or opt).

        Follows ``transformers`` LlamaConfig / OPTConfig defaults for absent keys. Raises LMError
        naming ``source`` and the key for what it cannot run: another model type, a missing
        size, rope scaling, ``pretraining_tp`` != 1, another activation, or a list of several
        eos/bos ids (a one-element list is read as that id).
        """
        kind = cfg.get("model_type")
        if kind not in ARCHS:
            raise LMError(f"{source}: model_type is {kind!r}; expected one of {ARCHS}")

        def need(key):
            if key not in cfg or cfg[key] is None:
                raise LMError(f"{source}: key {key!r} missing; expected it in a {kind} config")
            return cfg[key]

        def token(key):
            v = cfg.get(key)
            if isinstance(v, list):
                if len(v) != 1:
                    raise LMError(f"{source}: {key} is {v!r}; expected one token id")
                v = v[0]
            return v

        heads = need("num_attention_heads")
        hidden = need("hidden_size")
        common = dict(
            vocab_size=need("vocab_size"), hidden_size=hidden, num_layers=need("num_hidden_layers"),
            num_heads=heads, max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            tie_word_embeddings=cfg.get("tie_word_embeddings", kind == "opt"),
            bos_id=token("bos_token_id"), eos_id=token("eos_token_id"), pad_id=token("pad_token_id"), source=source)
        if kind == "llama":
            rope = cfg.get("rope_parameters") or {}
            scaling = cfg.get("rope_scaling") or {}
            rope_type = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
            if rope_type != "default":
                raise LMError(f"{source}: rope type {rope_type!r}; expected 'default' (rope scaling is not supported)")
            if cfg.get("pretraining_tp", 1) != 1:
                raise LMError(f"{source}: pretraining_tp is {cfg['pretraining_tp']}; expected 1")
            return cls(
                arch="llama", **common, num_kv_heads=cfg.get("num_key_value_heads") or heads,
                head_dim=cfg.get("head_dim") or hidden // heads, intermediate_size=need("intermediate_size"),
                norm_eps=cfg.get("rms_norm_eps", 1e-6),
                rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
                attention_bias=cfg.get("attention_bias", False), mlp_bias=cfg.get("mlp_bias", False),
                activation=cfg.get("hidden_act", "silu"))
        pre = cfg.get("do_layer_norm_before", True)
        return cls(
            arch="opt", **common, num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=need("ffn_dim"),
            norm_eps=1e-5, attention_bias=cfg.get("enable_bias", True), mlp_bias=cfg.get("enable_bias", True),
            activation=cfg.get("activation_function", "relu"),
            word_embed_proj_dim=cfg.get("word_embed_proj_dim") or hidden, do_layer_norm_before=pre,
            final_layer_norm=pre and not cfg.get("_remove_final_layer_norm", False),
            layer_norm_affine=cfg.get("layer_norm_elementwise_affine", True))
