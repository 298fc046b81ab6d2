"""Flax NNX layers of the Llama and OPT decoders.

Each decoder is two modules: an *outer* one (token embedding, positions, final norm, output
head) and a *block* (one transformer layer). ``jaxrec.lm.model`` keeps the L blocks' pure-dict
parameters as a list (or stacked along a leading layer axis, run with ``lax.scan``) and rebuilds
the modules inside the traced function. Parameter names follow
the Hugging Face checkpoints (``self_attn.q_proj``, ``mlp.gate_proj``, ``fc1``, ...) so that a
pure-dict path reads like the tensor it came from; kernels are ``[in, out]`` (the transpose of
torch's ``Linear.weight``).

Numerics follow ``transformers`` (models/llama/modeling_llama.py, models/opt/modeling_opt.py):
norms compute in float32 and cast back to the activation dtype; rotary embedding uses the
"rotate half" layout with ``inv_freq = 1 / theta^(2i / D)`` computed in float32; attention
softmax runs in float32 (``jax.nn.dot_product_attention``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from .config import LMConfig

# (k_cache [B, S, K, D], v_cache [B, S, K, D]) of one layer, or None without a cache.
LayerCache = tuple[jax.Array, jax.Array] | None


class RMSNorm(nnx.Module):
    """``scale * x / sqrt(mean(x^2) + eps)`` over the last axis (Zhang & Sennrich 2019; LlamaRMSNorm).

    [..., H] -> [..., H] in the input dtype; the statistics are computed in float32.
    """

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * h.astype(x.dtype)


class LayerNorm(nnx.Module):
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis (torch.nn.LayerNorm).

    [..., H] -> [..., H] in the input dtype, computed in float32; ``affine=False`` has no
    parameters (OPT's ``layer_norm_elementwise_affine=False``).
    """

    def __init__(self, dim: int, eps: float, *, affine: bool = True, param_dtype=jnp.float32):
        self.eps = eps
        self.affine = affine
        if affine:
            self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
            self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.astype(jnp.float32)
        mean = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
        h = ((h - mean) * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return h * self.scale[...] + self.bias[...] if self.affine else h


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float, dtype) -> tuple[jax.Array, jax.Array]:
    """Rotary tables for integer ``positions`` [B, T] -> (cos, sin), each [B, T, 1, D] in ``dtype``.

    ``inv_freq[i] = theta^(-2i / D)`` for i < D/2, angles ``pos * inv_freq`` repeated twice
    along the last axis (Su et al. 2021, RoFormer; LlamaRotaryEmbedding, "default" type).
    """
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    emb = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """``x * cos + rotate_half(x) * sin`` with rotate_half([a, b]) = [-b, a]; x [B, T, heads, D]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def self_attention(x, q_proj, k_proj, v_proj, o_proj, cfg: LMConfig, rope, kv: LayerCache, index, allowed):
    """Multi-head (grouped-query when K < N) causal self-attention of one layer.

    x [B, T, H]; ``rope`` (cos, sin) [B, T, 1, D] or None; ``kv`` this layer's cache slots
    [B, S, K, D] (the new keys/values are written at slots ``index .. index + T``, then all S
    slots are attended to) or None (attend to the T new tokens only); ``allowed`` bool
    [B, 1, T, S or T]: query t may attend key slot s. Scores are scaled by D^-1/2.
    Returns (out [B, T, H], (k_new, v_new) [B, T, K, D] to store in the cache).
    """
    b, t, _ = x.shape
    n, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q = q_proj(x).reshape(b, t, n, d)
    keys = k_proj(x).reshape(b, t, k, d)
    values = v_proj(x).reshape(b, t, k, d)
    if rope is not None:
        q, keys = apply_rope(q, *rope), apply_rope(keys, *rope)
    new = (keys, values)
    if kv is not None:
        keys = jax.lax.dynamic_update_slice(kv[0], keys.astype(kv[0].dtype), (0, index, 0, 0)).astype(q.dtype)
        values = jax.lax.dynamic_update_slice(kv[1], values.astype(kv[1].dtype), (0, index, 0, 0)).astype(q.dtype)
    out = jax.nn.dot_product_attention(q, keys, values, mask=allowed, scale=d ** -0.5)
    return o_proj(out.reshape(b, t, n * d)), new


def _linear(param_dtype, rngs: nnx.Rngs):
    return partial(nnx.Linear, param_dtype=param_dtype, rngs=rngs)


class LlamaAttention(nnx.Module):
    def __init__(self, cfg: LMConfig, *, param_dtype, rngs: nnx.Rngs):
        lin = _linear(param_dtype, rngs)
        h, n, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = lin(h, n * d, use_bias=bias)
        self.k_proj = lin(h, k * d, use_bias=bias)
        self.v_proj = lin(h, k * d, use_bias=bias)
        self.o_proj = lin(n * d, h, use_bias=bias)
        self.cfg = cfg

    def __call__(self, x, rope, kv, index, allowed):
        return self_attention(x, self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.cfg, rope, kv, index, allowed)


class LlamaMLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))`` (Shazeer 2020; LlamaMLP). [..., H] -> [..., H]."""

    def __init__(self, cfg: LMConfig, *, param_dtype, rngs: nnx.Rngs):
        lin = _linear(param_dtype, rngs)
        h, f, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = lin(h, f, use_bias=bias)
        self.up_proj = lin(h, f, use_bias=bias)
        self.down_proj = lin(f, h, use_bias=bias)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nnx.Module):
    """One Llama decoder layer (LlamaDecoderLayer): pre-RMSNorm attention and SwiGLU, residuals.

    ``__call__(x [B, T, H], rope, kv, index, allowed) -> (x [B, T, H], (k_new, v_new))``.
    """

    def __init__(self, cfg: LMConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps, param_dtype=param_dtype)
        self.self_attn = LlamaAttention(cfg, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps, param_dtype=param_dtype)
        self.mlp = LlamaMLP(cfg, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, rope, kv, index, allowed):
        h, new_kv = self.self_attn(self.input_layernorm(x), rope, kv, index, allowed)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), new_kv


class LlamaOuter(nnx.Module):
    """Token embedding [V, H], final RMSNorm, and the output head (tied: the embedding's transpose)."""

    def __init__(self, cfg: LMConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs)
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps, param_dtype=param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = nnx.Linear(cfg.hidden_size, cfg.vocab_size, use_bias=False, param_dtype=param_dtype,
                                      rngs=rngs)
        self.cfg = cfg

    def prepare(self, x, positions):
        """Token embeddings [B, T, H] -> (layer input [B, T, H], rotary tables for ``positions`` [B, T])."""
        return x, rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)

    def finish(self, h):
        return self.norm(h)

    def logits(self, h):
        return _head(self, h)


def _head(outer, h):
    """float32 logits [..., V] of final hidden states [..., E]: ``h @ embedding.T`` when tied."""
    if outer.cfg.tie_word_embeddings:
        return jnp.einsum("...e,ve->...v", h, outer.embed_tokens.embedding[...], preferred_element_type=jnp.float32)
    return jnp.einsum("...e,ev->...v", h, outer.lm_head.kernel[...], preferred_element_type=jnp.float32)


class OPTAttention(nnx.Module):
    def __init__(self, cfg: LMConfig, *, param_dtype, rngs: nnx.Rngs):
        lin = _linear(param_dtype, rngs)
        h, bias = cfg.hidden_size, cfg.attention_bias
        self.q_proj = lin(h, h, use_bias=bias)
        self.k_proj = lin(h, h, use_bias=bias)
        self.v_proj = lin(h, h, use_bias=bias)
        self.out_proj = lin(h, h, use_bias=bias)
        self.cfg = cfg

    def __call__(self, x, rope, kv, index, allowed):
        return self_attention(x, self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.cfg, rope, kv, index,
                              allowed)


class OPTBlock(nnx.Module):
    """One OPT decoder layer (OPTDecoderLayer): attention and a ReLU feed-forward ``fc2(act(fc1(x)))``,
    each with a residual; LayerNorm before each (``do_layer_norm_before``) or after each residual sum.
    """

    def __init__(self, cfg: LMConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        lin = _linear(param_dtype, rngs)
        h, f = cfg.hidden_size, cfg.intermediate_size
        ln = partial(LayerNorm, h, cfg.norm_eps, affine=cfg.layer_norm_affine, param_dtype=param_dtype)
        self.self_attn_layer_norm = ln()
        self.self_attn = OPTAttention(cfg, param_dtype=param_dtype, rngs=rngs)
        self.final_layer_norm = ln()
        self.fc1 = lin(h, f, use_bias=cfg.mlp_bias)
        self.fc2 = lin(f, h, use_bias=cfg.mlp_bias)
        self.cfg = cfg

    def __call__(self, x, rope, kv, index, allowed):
        pre = self.cfg.do_layer_norm_before
        act = jax.nn.relu if self.cfg.activation == "relu" else partial(jax.nn.gelu, approximate=False)
        h, new_kv = self.self_attn(self.self_attn_layer_norm(x) if pre else x, rope, kv, index, allowed)
        x = x + h
        if not pre:
            x = self.self_attn_layer_norm(x)
        h = self.fc2(act(self.fc1(self.final_layer_norm(x) if pre else x)))
        x = x + h
        return (x if pre else self.final_layer_norm(x)), new_kv


class OPTOuter(nnx.Module):
    """OPT token embedding [V, E], learned positions [P + 2, H] (offset 2), optional
    ``project_in`` E -> H / ``project_out`` H -> E, optional final LayerNorm, output head."""

    POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset

    def __init__(self, cfg: LMConfig, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        h, e = cfg.hidden_size, cfg.embed_dim
        self.embed_tokens = nnx.Embed(cfg.vocab_size, e, param_dtype=param_dtype, rngs=rngs)
        self.embed_positions = nnx.Embed(cfg.max_position_embeddings + self.POSITION_OFFSET, h,
                                         param_dtype=param_dtype, rngs=rngs)
        if e != h:
            self.project_in = nnx.Linear(e, h, use_bias=False, param_dtype=param_dtype, rngs=rngs)
            self.project_out = nnx.Linear(h, e, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        if cfg.final_layer_norm:
            self.final_layer_norm = LayerNorm(h, cfg.norm_eps, affine=cfg.layer_norm_affine, param_dtype=param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = nnx.Linear(e, cfg.vocab_size, use_bias=False, param_dtype=param_dtype, rngs=rngs)
        self.cfg = cfg

    def prepare(self, x, positions):
        """Token embeddings [B, T, E] -> (project_in(x) + position embeddings [B, T, H], no rotary tables)."""
        if self.cfg.embed_dim != self.cfg.hidden_size:
            x = self.project_in(x)
        return x + self.embed_positions(positions + self.POSITION_OFFSET).astype(x.dtype), None

    def finish(self, h):
        if self.cfg.final_layer_norm:
            h = self.final_layer_norm(h)
        if self.cfg.embed_dim != self.cfg.hidden_size:
            h = self.project_out(h)
        return h

    def logits(self, h):
        return _head(self, h)


MODULES = {"llama": (LlamaOuter, LlamaBlock), "opt": (OPTOuter, OPTBlock)}
