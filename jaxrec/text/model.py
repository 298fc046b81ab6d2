"""BERT and MPNet encoders in Flax NNX, and a pure ``encode(params, input_ids, attention_mask)``.

The layers reproduce Hugging Face transformers 5 ``models/bert/modeling_bert.py``
(``BertEmbeddings``, ``BertSelfAttention`` eager path, ``BertSelfOutput``,
``BertIntermediate``, ``BertOutput``) and ``models/mpnet/modeling_mpnet.py``
(``MPNetEmbeddings``, ``MPNetSelfAttention``, ``MPNetAttention``, ``MPNetEncoder``
with ``compute_position_bias``/``relative_position_bucket``). With hidden size H, heads h,
d = H / h, and x the hidden states [B, T, H]:

- embeddings: BERT ``LN(word[ids] + pos[t] + token_type[0])`` with t = 0..T-1;
  MPNet ``LN(word[ids] + pos[p])`` with p = cumsum(ids != pad) * (ids != pad) + pad
  (``create_position_ids_from_input_ids``: positions start at pad + 1, padding gets pad);
- each layer (post-LN): ``a = LN(x + drop(O(softmax(Q K^T / sqrt(d) + bias) V)))``,
  ``x' = LN(a + drop(W2 act(W1 a)))``; bias = finfo(float32).min on padded keys, plus for
  MPNet the relative position bias ``rel[bucket(j - i)]`` [h, T, T] shared by all layers;
  attention dropout on the softmax output;
- ``bucket`` (``relative_position_bucket``, max_distance 128): n = i - j; half the buckets
  for n < 0; |n| < nb/4 exact, otherwise nb/4 + floor(log(|n| / (nb/4)) / log(128 / (nb/4))
  * nb/4), capped at nb/2 - 1 (nb = ``relative_attention_num_buckets``).

The token outputs are the last hidden state [B, T, H] (what sentence-transformers' Transformer
module passes on as ``token_embeddings``; the pooler is not used). Sentence embeddings are
``pooling.pool`` of them, then ``pooling.l2_normalize`` if the folder has a Normalize module.

Parameters are a plain nested dict (``jaxrec.nn``: ``PureModule``); ``load_params``
reads them from ``model.safetensors`` (torch ``Linear.weight`` [out, in] transposed to the
NNX kernel [in, out]). ``SentenceModel.encode`` is pure: dropout only with ``train=True`` and
an explicit key.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.nn import PureModule
from jaxrec.text.folder import SentenceFolder, SentenceModelError, TransformerConfig
from jaxrec.text.pooling import l2_normalize, pool

log = logging.getLogger("jaxrec.text")

MAX_DISTANCE = 128  # transformers' MPNetEncoder.relative_position_bucket default


# ------------------------------------------------------------------------------- pieces
def activation(name: str):
    """transformers' ACT2FN: ``gelu`` is the exact erf form, ``gelu_new``/``gelu_pytorch_tanh`` the tanh form."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"activation {name!r}: expected gelu, gelu_new, gelu_pytorch_tanh or relu")


def keep_masks(key: jax.Array | None, shapes: list[tuple[int, ...]], rates: list[float]) -> list[jax.Array | None]:
    """Dropout keep-masks (bool, P(keep) = 1 - rate) for several sites from ONE random draw.

    One ``jax.random.bits`` call per layer instead of one per site: every threefry call site
    costs XLA:CPU about as much compile time as a whole small layer. ``None`` entries (no key,
    or rate 0) mean "no dropout".
    """
    if key is None:
        return [None] * len(shapes)
    sizes = [math.prod(s) if r > 0 else 0 for s, r in zip(shapes, rates)]
    bits = jax.random.bits(key, (sum(sizes),), jnp.uint32)
    out, start = [], 0
    for shape, rate, size in zip(shapes, rates, sizes):
        if size == 0:
            out.append(None)
            continue
        threshold = min(int(round(rate * 2.0**32)), 2**32 - 1)
        out.append(bits[start : start + size].reshape(shape) >= jnp.uint32(threshold))
        start += size
    return out


def dropout(x: jnp.ndarray, rate: float, keep: jax.Array | None) -> jnp.ndarray:
    """Inverted dropout (torch.nn.Dropout in training) with a ``keep_masks`` mask; identity for ``None``."""
    if keep is None:
        return x
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int = 32,
                             max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """int32 buckets of ``relative_position`` (= key index - query index), as transformers' MPNet.

    Computed in float32 like the torch code (``n.float() / max_exact``), so bucket borders agree.
    """
    n = -np.asarray(relative_position, dtype=np.int64)
    num_buckets //= 2
    ret = (n < 0).astype(np.int64) * num_buckets
    n = np.abs(n)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        scaled = np.log(n.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + np.where(is_small, 0, scaled * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (ret + np.where(is_small, n, large)).astype(np.int32)


def _linear(n_in: int, n_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=dtype, rngs=rngs)


def _norm(cfg: TransformerConfig, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # statistics and output in float32 also for bf16 params
    return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=jnp.float32, param_dtype=dtype, rngs=rngs)


class Embeddings(nnx.Module):
    """Word + position (+ token type 0 for BERT) embeddings, LayerNorm; see module doc."""

    def __init__(self, cfg: TransformerConfig, dtype, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.cfg = cfg
        self.word = nnx.Embed(cfg.vocab_size, h, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.position = nnx.Embed(cfg.max_position_embeddings, h, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.token_type = (nnx.Embed(cfg.type_vocab_size, h, dtype=dtype, param_dtype=dtype, rngs=rngs)
                           if cfg.type_vocab_size else None)
        self.norm = _norm(cfg, dtype, rngs)

    def __call__(self, input_ids: jnp.ndarray, rng: jax.Array | None) -> jnp.ndarray:
        cfg = self.cfg
        if cfg.model_type == "mpnet":
            real = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + cfg.pad_token_id
        else:
            positions = jnp.arange(input_ids.shape[1])[None, :]
        x = self.word(input_ids).astype(jnp.float32) + self.position(positions).astype(jnp.float32)
        if self.token_type is not None:
            x = x + self.token_type.embedding[...][0].astype(jnp.float32)
        (keep,) = keep_masks(rng, [x.shape], [cfg.hidden_dropout_prob])
        return dropout(self.norm(x), cfg.hidden_dropout_prob, keep)


class Layer(nnx.Module):
    """One post-LN transformer layer (BertLayer / MPNetLayer); see module doc."""

    def __init__(self, cfg: TransformerConfig, dtype, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.cfg = cfg
        self.dtype = dtype
        self.query = _linear(h, h, dtype, rngs)
        self.key = _linear(h, h, dtype, rngs)
        self.value = _linear(h, h, dtype, rngs)
        self.attn_out = _linear(h, h, dtype, rngs)
        self.attn_norm = _norm(cfg, dtype, rngs)
        self.ffn_in = _linear(h, i, dtype, rngs)
        self.ffn_out = _linear(i, h, dtype, rngs)
        self.ffn_norm = _norm(cfg, dtype, rngs)

    def __call__(self, x: jnp.ndarray, bias: jnp.ndarray, rng: jax.Array | None) -> jnp.ndarray:
        cfg = self.cfg
        b, t, _ = x.shape
        heads, d = cfg.num_attention_heads, cfg.head_dim
        p_att, p_hid = cfg.attention_probs_dropout_prob, cfg.hidden_dropout_prob
        keep = keep_masks(rng, [(b, heads, t, t), x.shape, x.shape], [p_att, p_hid, p_hid])
        xin = x.astype(self.dtype)
        q = self.query(xin).reshape(b, t, heads, d)
        k = self.key(xin).reshape(b, t, heads, d)
        v = self.value(xin).reshape(b, t, heads, d)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        probs = dropout(probs, p_att, keep[0]).astype(self.dtype)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, cfg.hidden_size)
        attn = dropout(self.attn_out(ctx), p_hid, keep[1])
        a = self.attn_norm(attn.astype(jnp.float32) + x)
        hidden = dropout(self.ffn_out(activation(cfg.hidden_act)(self.ffn_in(a.astype(self.dtype)))), p_hid, keep[2])
        return self.ffn_norm(hidden.astype(jnp.float32) + a)


class TransformerEncoder(nnx.Module):
    """BERT or MPNet encoder: ids [B, T] int32, mask [B, T] -> last hidden state float32 [B, T, H]."""

    def __init__(self, cfg: TransformerConfig, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, dtype, rngs)
        self.layers = nnx.List([Layer(cfg, dtype, rngs) for _ in range(cfg.num_hidden_layers)])
        self.relative_attention_bias = (
            nnx.Embed(cfg.relative_attention_num_buckets, cfg.num_attention_heads, dtype=jnp.float32,
                      param_dtype=dtype, rngs=rngs)
            if cfg.model_type == "mpnet" else None
        )

    def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray,
                 rng: jax.Array | None = None) -> jnp.ndarray:
        t = input_ids.shape[1]
        if t > self.cfg.max_tokens:
            raise ValueError(f"input_ids: {t} positions; the model's position table allows {self.cfg.max_tokens}")
        rngs = jax.random.split(rng, len(self.layers) + 1) if rng is not None else [None] * (len(self.layers) + 1)
        # additive mask over keys, like transformers' eager path: 0 for tokens, finfo.min for padding
        bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        if self.relative_attention_bias is not None:
            pos = np.arange(t)
            buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.relative_attention_num_buckets)
            rel = self.relative_attention_bias(jnp.asarray(buckets))  # [T, T, heads]
            bias = bias + jnp.transpose(rel, (2, 0, 1))[None]
        x = self.embeddings(input_ids, rngs[0])
        for layer, r in zip(self.layers, rngs[1:]):
            x = layer(x, bias, r)
        return x


# ------------------------------------------------------------------------ pure model
@dataclasses.dataclass(frozen=True, eq=False)
class SentenceModel:
    """A record of pure functions over a params pytree (closes over static structure only).

    ``folder``: the checked folder spec; ``module``: the abstract ``TransformerEncoder``
    (``jaxrec.nn.PureModule``: shapes only, no arrays); ``dtype``: the params' dtype.
    """

    folder: SentenceFolder
    module: PureModule
    dtype: Any

    @classmethod
    def build(cls, folder: SentenceFolder, dtype=jnp.float32) -> "SentenceModel":
        return cls(folder, PureModule.of(lambda rngs: TransformerEncoder(folder.config, dtype, rngs)), jnp.dtype(dtype))

    @property
    def dim(self) -> int:
        return self.folder.dim

    def param_shapes(self) -> dict:
        """The params layout: the same nested dict as ``load_params`` returns, with ``jax.ShapeDtypeStruct`` leaves."""
        return self.module.shapes()

    def _module(self, params: dict) -> TransformerEncoder:
        return self.module.merge(params)

    def token_embeddings(self, params: dict, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, *,
                         train: bool = False, key: jax.Array | None = None) -> jnp.ndarray:
        """Last hidden state float32 [B, T, H] for int32 ``input_ids``/``attention_mask`` [B, T].

        Dropout (the config's rates) is active only with ``train=True``, which needs ``key``.
        """
        chex.assert_rank([input_ids, attention_mask], 2)
        chex.assert_equal_shape([input_ids, attention_mask])
        if train and key is None:
            raise ValueError("token_embeddings: train=True needs a dropout key")
        return self._module(params)(input_ids, attention_mask, key if train else None)

    def encode(self, params: dict, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, *,
               train: bool = False, key: jax.Array | None = None) -> jnp.ndarray:
        """Sentence embeddings float32 [B, dim]: pooled token embeddings, L2-normalized if the folder says so."""
        tokens = self.token_embeddings(params, input_ids, attention_mask, train=train, key=key)
        out = pool(tokens, attention_mask, self.folder.pooling_modes)
        return l2_normalize(out) if self.folder.normalize else out


# --------------------------------------------------------------------- weight loading
def _hf_names(cfg: TransformerConfig) -> dict[tuple, tuple[str, bool]]:
    """Path in the params dict -> (safetensors key, transpose?)."""
    names: dict[tuple, tuple[str, bool]] = {
        ("embeddings", "word", "embedding"): ("embeddings.word_embeddings.weight", False),
        ("embeddings", "position", "embedding"): ("embeddings.position_embeddings.weight", False),
        ("embeddings", "norm", "scale"): ("embeddings.LayerNorm.weight", False),
        ("embeddings", "norm", "bias"): ("embeddings.LayerNorm.bias", False),
    }
    if cfg.model_type == "bert":
        names[("embeddings", "token_type", "embedding")] = ("embeddings.token_type_embeddings.weight", False)
        parts = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm"}
    else:
        names[("relative_attention_bias", "embedding")] = ("encoder.relative_attention_bias.weight", False)
        parts = {"query": "attention.attn.q", "key": "attention.attn.k", "value": "attention.attn.v",
                 "attn_out": "attention.attn.o", "attn_norm": "attention.LayerNorm"}
    parts.update(ffn_in="intermediate.dense", ffn_out="output.dense", ffn_norm="output.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        for ours, theirs in parts.items():
            pre = f"encoder.layer.{i}.{theirs}"
            if ours.endswith("norm"):
                names[("layers", i, ours, "scale")] = (f"{pre}.weight", False)
            else:
                names[("layers", i, ours, "kernel")] = (f"{pre}.weight", True)
            names[("layers", i, ours, "bias")] = (f"{pre}.bias", False)
    return names


def _set(tree: dict, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def load_params(model: SentenceModel) -> dict:
    """Read ``model.safetensors`` of ``model.folder`` into the params dict (dtype ``model.dtype``).

    A ``bert.``/``mpnet.`` key prefix (weights saved from a task model) is accepted. Tensors
    the encoder does not use (the pooler, ``position_ids``) are logged at INFO with their count.
    Raises ``SentenceModelError`` naming the file and the missing or mis-shaped tensors.
    """
    from safetensors import safe_open

    folder, cfg = model.folder, model.folder.config
    expected = jax.tree.map(lambda s: s.shape, model.param_shapes())
    path = folder.weights
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise SentenceModelError(f"{path}: not a readable safetensors file ({e})") from e
    with handle as f:
        keys = set(f.keys())
        probe = "embeddings.word_embeddings.weight"
        prefix = next((p for p in ("", f"{cfg.model_type}.", "model.") if p + probe in keys), "")
        params: dict = {}
        missing, bad_shape, used = [], [], set()
        for ours, (theirs, transpose) in _hf_names(cfg).items():
            key = prefix + theirs
            if key not in keys:
                missing.append(key)
                continue
            want = _get(expected, ours)
            got = tuple(f.get_slice(key).get_shape())
            if (got[::-1] if transpose else got) != tuple(want):
                bad_shape.append(f"{key} {list(got)} (expected {list(want[::-1] if transpose else want)})")
                continue
            arr = f.get_tensor(key)
            _set(params, ours, jnp.asarray(arr.T if transpose else arr, dtype=model.dtype))
            used.add(key)
    if missing or bad_shape:
        msg = [f"{path}: does not hold the {cfg.model_type} weights config.json describes"]
        if missing:
            msg.append(f"missing tensors ({len(missing)}): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if bad_shape:
            msg.append(f"wrong shapes ({len(bad_shape)}): {bad_shape[:8]}")
        raise SentenceModelError("; ".join(msg))
    unused = sorted(keys - used)
    if unused:
        log.info("%s: %d tensors not used by the sentence encoder: %s", path, len(unused), unused)
    return params


def _get(tree: dict, path: tuple) -> Any:
    for p in path:
        tree = tree[p]
    return tree
