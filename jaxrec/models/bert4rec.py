"""BERT4Rec (Sun et al., CIKM 2019) as RecBole builds it, in Flax NNX behind pure functions.

The network follows RecBole 1.2.1's ``recbole/model/sequential_recommender/bert4rec.py`` and
its ``TransformerEncoder`` (``recbole/model/layers.py``); the paper's section 3 (Fig. 1b):

- input ``seq`` int32 [B, L]: item ids + 1, 0 = padding (left-padded), ``I + 1`` = the
  **mask token** (``mask_id(num_items)``; its vector is the separate parameter
  ``mask_embedding`` [d], so the item table keeps SASRec's layout [I + 1, d]);
- ``x = Dropout(LN(e[seq] + P[position]))``; positions count from the first real item
  (RecBole's batches are right-padded, so its first item sits at position 0: the same
  positions whatever the left padding here); P is learned, ``max_seq_len`` rows;
- ``num_layers`` post-norm transformer layers (RecBole ``TransformerLayer``)::

      x = LN(x + Dropout(MHA(x)))            # bidirectional: every real position attends to
      x = LN(x + Dropout(W2 GELU(W1 x)))     # every real position (padding keys masked)

  with attention-weight dropout, exact (erf) GELU, ``inner_size`` feed-forward width, LN eps
  ``layer_norm_eps``;
- ``h_t = LN(GELU(W_o x_t + b_o))`` (RecBole's ``output_ffn``, ``output_gelu``, ``output_ln``);
  logit of item ``i`` at t = ``h_t . e_i + bias_i`` (shared item table plus ``output_bias``
  [I]). Padding positions output 0.

**Cloze training** (paper section 3.6; RecBole's ``MaskItemSequence`` transform): the term
``cloze`` reads a "sequences" batch and rebuilds each user's most recent ``L`` training items
(``concat(seq, pos[:, -1:])[:, 1:]``). With probability ``ft_ratio`` a row is a fine-tuning
row whose last item alone is masked (RecBole's ``_append_mask_last``, drawn per batch there,
per row here); otherwise every real item is replaced by the mask token with probability
``mask_ratio`` (RecBole does not cap how many are masked in the input either; it scores at most
``int(mask_ratio * L)`` of them, all of them here). The loss is the full-catalog softmax
cross-entropy (``jaxrec.objectives.sequential.next_item_ce`` with the output bias) of the
original items at the masked positions, averaged over them (RecBole's ``loss_type="CE"``;
RecBole's softmax also has the padding row as a class, jaxrec's has the I items only).

**Scoring**: the user is the output at a mask token appended after the history
(``user_input``: the history's oldest column dropped, the mask appended; RecBole's
``reconstruct_test_data``, which drops the oldest item even of a short history; here only a
full history loses its oldest item). ``embed`` returns ``[h ; 1]`` [U, d + 1] and
``[e_i ; bias_i]`` [I, d + 1], so the dot product is ``h . e_i + bias_i`` exactly.

Initialization as RecBole's ``_init_weights``: every ``nn.Linear`` and ``nn.Embedding`` weight
N(0, 0.02^2) (``initializer_range``; the mask vector too), their biases and ``output_bias`` 0,
LayerNorm 1 / 0; the padding row 0 is set to 0 (it never reaches an output).

Parameters (plain nested dict, ``jaxrec.nn``): ``item_embedding`` [I+1, d], ``mask_embedding``
[d], ``position_embedding`` [L, d], ``input_norm``, ``layer_{l}/{query, key, value, dense,
attention_norm, ffn_in, ffn_out, ffn_norm}``, ``output_dense``, ``output_norm``, ``output_bias``
[I]. Errors: ``BERT4RecError`` (``JaxrecError``, ``ValueError``) naming the field or argument;
bad config values raise ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.config import ModelSettings
from jaxrec.errors import JaxrecError
from jaxrec.models.base import Model, SequenceEncoder
from jaxrec.models.dropout import HashDropout
from jaxrec.models.sequential import check_sequences, chunked_users, id_sequence_encoder, self_attention
from jaxrec.nn import PureModule, normal
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import LossInputs, Term, weighted_sum
from jaxrec.objectives.sequential import next_item_ce

Params = dict


class BERT4RecError(JaxrecError, ValueError):
    """A BERT4Rec setting or input is invalid; the message names the field or argument."""


def mask_id(num_items: int) -> int:
    """The mask token's id in input sequences: ``num_items + 1`` (items are 1..I, 0 = padding)."""
    return int(num_items) + 1


@dataclasses.dataclass(frozen=True)
class BERT4RecArch:
    """BERT4Rec's network sizes (defaults: RecBole's ``BERT4Rec.yaml``). num_items: I; hidden:
    d (64); num_layers (2); num_heads (2; d must be a multiple); inner: feed-forward width (256);
    dropout: hidden dropout (0.2); attn_dropout (0.2); max_len: L, the learned positions (50);
    ln_eps (1e-12). Raises ``BERT4RecError`` naming the bad field."""

    num_items: int
    hidden: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    max_len: int = 50
    ln_eps: float = 1e-12

    def __post_init__(self) -> None:
        for name in ("num_items", "hidden", "num_layers", "num_heads", "inner", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BERT4RecError(f"BERT4RecArch.{name}: expected an integer >= 1, got {v!r}")
        if self.hidden % self.num_heads:
            raise BERT4RecError(f"BERT4RecArch.hidden={self.hidden}: expected a multiple of num_heads={self.num_heads}")
        for name in ("dropout", "attn_dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise BERT4RecError(f"BERT4RecArch.{name}: expected a rate in [0, 1), got {v!r}")
        if not (isinstance(self.ln_eps, float) and self.ln_eps > 0):
            raise BERT4RecError(f"BERT4RecArch.ln_eps: expected a float > 0, got {self.ln_eps!r}")


# ----------------------------------------------------------------------------- modules
def _linear(a: int, b: int, std: float, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(a, b, kernel_init=normal(std), bias_init=jax.nn.initializers.zeros, rngs=rngs)


def _norm(d: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=eps, use_fast_variance=False, rngs=rngs)


class TransformerLayer(nnx.Module):
    """RecBole's ``TransformerLayer``: post-norm multi-head self-attention + GELU feed-forward.
    ``__call__(x [B, L, d], key_mask [B, L] bool, train, rngs) -> [B, L, d]``."""

    def __init__(self, s: BERT4RecArch, std: float, rngs: nnx.Rngs):
        d = s.hidden
        self.query, self.key, self.value = (_linear(d, d, std, rngs) for _ in range(3))
        self.dense = _linear(d, d, std, rngs)
        self.attention_norm = _norm(d, s.ln_eps, rngs)
        self.ffn_in = _linear(d, s.inner, std, rngs)
        self.ffn_out = _linear(s.inner, d, std, rngs)
        self.ffn_norm = _norm(d, s.ln_eps, rngs)
        self.dropout = HashDropout(s.dropout)
        self.attn_dropout = HashDropout(s.attn_dropout)
        self.heads = s.num_heads

    def __call__(self, x, key_mask, train: bool, rngs):
        ctx = self_attention(self.query(x), self.key(x), self.value(x), key_mask, self.heads, padding="recbole",
                             weight_dropout=self.attn_dropout, train=train, rngs=rngs)
        x = self.attention_norm(x + self.dropout(self.dense(ctx), deterministic=not train, rngs=rngs))
        f = self.ffn_out(jax.nn.gelu(self.ffn_in(x), approximate=False))
        return self.ffn_norm(x + self.dropout(f, deterministic=not train, rngs=rngs))


class BERT4RecNet(nnx.Module):
    """The whole network: ``__call__(seq [B, L], train, rngs) -> [B, L, d]`` (``h_t``; 0 at padding)."""

    def __init__(self, s: BERT4RecArch, rngs: nnx.Rngs, std: float = 0.02):
        d = s.hidden
        init = normal(std)
        self.item_embedding = nnx.Param(init(rngs.params(), (s.num_items + 1, d)))
        self.mask_embedding = nnx.Param(init(rngs.params(), (d,)))
        self.position_embedding = nnx.Param(init(rngs.params(), (s.max_len, d)))
        self.input_norm = _norm(d, s.ln_eps, rngs)
        self.dropout = HashDropout(s.dropout)
        self.num_layers = s.num_layers
        for layer in range(s.num_layers):  # named attributes: the pure dict has string keys only
            setattr(self, f"layer_{layer}", TransformerLayer(s, std, rngs))
        self.output_dense = _linear(d, d, std, rngs)
        self.output_norm = _norm(d, s.ln_eps, rngs)
        self.output_bias = nnx.Param(jnp.zeros((s.num_items,), jnp.float32))

    def __call__(self, seq, train: bool = False, rngs=None):
        keep = seq != 0
        table = jnp.concatenate([self.item_embedding[...], self.mask_embedding[...][None]], 0)  # row I + 1 = mask
        position = jnp.maximum(jnp.cumsum(keep, axis=1) - 1, 0)  # from the first real item
        x = table[seq] + self.position_embedding[...][position]
        x = self.dropout(self.input_norm(x), deterministic=not train, rngs=rngs)
        for layer in range(self.num_layers):
            x = getattr(self, f"layer_{layer}")(x, keep, train, rngs)
        h = self.output_norm(jax.nn.gelu(self.output_dense(x), approximate=False))
        return jnp.where(keep[..., None], h, jnp.zeros((), h.dtype))


# ----------------------------------------------------------------------------- pure API
@functools.lru_cache(maxsize=32)
def _pure(arch: BERT4RecArch) -> PureModule:
    return PureModule.of(lambda rngs: BERT4RecNet(arch, rngs=rngs))


def as_module(params: Params, arch: BERT4RecArch) -> BERT4RecNet:
    """The NNX module holding ``params``; BERT4RecError if their layout is not ``init_params``'s."""
    return _pure(arch).merge(params, check=True, error=BERT4RecError, about=f"{arch}")


def init_params(key: jax.Array, arch: BERT4RecArch) -> Params:
    """A fresh parameter dict (RecBole's initialization, module docstring), all float32; the
    padding row 0 of ``item_embedding`` is 0."""
    params = _init_pure(lambda rngs: BERT4RecNet(arch, rngs=rngs), key)
    params["item_embedding"] = params["item_embedding"].at[0].set(0.0)
    return params


def _check_seq(seq, arch: BERT4RecArch, name: str = "seq") -> jax.Array:
    return check_sequences(seq, BERT4RecError, name, max_len=arch.max_len)


def sequence_output(params: Params, seq, arch: BERT4RecArch, *, key: jax.Array | None = None,
                    train: bool = False) -> jax.Array:
    """float32 [B, L, d]: ``h_t`` at every position (bidirectional: each depends on every real
    item of its row), 0 at padding positions.

    seq: int [B, L], L <= ``arch.max_len``: ids + 1, 0 = padding, ``mask_id(I)`` = the mask
    token. ``train=True`` applies dropout with ``key`` (required then). Raises BERT4RecError
    for a bad ``seq``, a missing key, or ``params`` of another layout.
    """
    seq = _check_seq(seq, arch)
    if train and key is None:
        raise BERT4RecError("key: a jax.random key is required when train=True (dropout)")
    rngs = nnx.Rngs(dropout=key) if train else None
    return as_module(params, arch)(seq, train, rngs)


def user_input(histories, arch: BERT4RecArch) -> jax.Array:
    """int32 [U, L]: the histories [U, L] with the oldest column dropped and the mask token
    appended (the input whose last output scores the next item; RecBole ``reconstruct_test_data``)."""
    histories = _check_seq(histories, arch, "histories")
    mask = jnp.full((histories.shape[0], 1), mask_id(arch.num_items), histories.dtype)
    return jnp.concatenate([histories[:, 1:], mask], axis=1)


def user_representation(params: Params, histories, arch: BERT4RecArch) -> jax.Array:
    """float32 [U, d]: ``h`` at the mask token appended after each history (``user_input``)."""
    return sequence_output(params, user_input(histories, arch), arch)[:, -1, :]


def embed(params: Params, histories, arch: BERT4RecArch, chunk_size: int = 1024):
    """(user_emb float32 [U, d + 1], item_emb float32 [I, d + 1]) = ([h_u ; 1], [e_i ; bias_i]):
    their dot product is BERT4Rec's logit ``h_u . e_i + bias_i``. Users ``chunk_size`` at a time.
    Jit-compatible (``arch`` static)."""
    histories = _check_seq(histories, arch, "histories")
    users = chunked_users(lambda s: user_representation(params, s, arch), histories, chunk_size, BERT4RecError)
    ones = jnp.ones((users.shape[0], 1), users.dtype)
    items = jnp.concatenate([params["item_embedding"][1:], params["output_bias"][:, None]], axis=1)
    return jnp.concatenate([users, ones], axis=1), items


def cloze_inputs(seq, pos, key: jax.Array, arch: BERT4RecArch, mask_ratio: float, ft_ratio: float):
    """(masked input int32 [B, L], labels int32 [B, L]) of one "sequences" batch (``seq``,
    ``pos`` [B, L], ids + 1): the rows' most recent L items ``concat(seq, pos[:, -1:])[:, 1:]``,
    each masked as the module docstring says; labels hold the original id (+1) at masked
    positions and 0 elsewhere."""
    seq, pos = jnp.asarray(seq), jnp.asarray(pos)
    items = jnp.concatenate([seq, pos[:, -1:]], axis=1)[:, 1:]
    real = items != 0
    k_row, k_pos = jax.random.split(key)
    fine_tune = jax.random.uniform(k_row, (items.shape[0], 1)) < ft_ratio
    last = jnp.zeros_like(real).at[:, -1].set(True) & real
    random_mask = (jax.random.uniform(k_pos, items.shape) < mask_ratio) & real
    masked = jnp.where(fine_tune, last, random_mask)
    inputs = jnp.where(masked, mask_id(arch.num_items), items)
    return inputs.astype(jnp.int32), jnp.where(masked, items, 0).astype(jnp.int32)


def cloze_loss(params: Params, inputs, labels, arch: BERT4RecArch, key: jax.Array | None, train: bool = True):
    """[]: mean full-catalog cross-entropy (with ``output_bias``) of ``labels`` at the positions
    where they are non-zero, given the masked ``inputs`` (``cloze_inputs``)."""
    out = sequence_output(params, inputs, arch, key=key, train=train)
    return next_item_ce(out, params["item_embedding"], labels, params["output_bias"])


# ----------------------------------------------------------------------------- the backbone
@dataclasses.dataclass(frozen=True)
class BERT4RecSettings(ModelSettings):
    """BERT4Rec's config keys (defaults: RecBole 1.2.1's ``BERT4Rec.yaml``): ``embedding_size``
    d (64: RecBole's ``hidden_size``), ``num_layers`` (2), ``num_heads`` (2), ``inner_size``
    (256), ``dropout_rate`` (0.2: hidden dropout), ``attn_dropout_rate`` (0.2), ``layer_norm_eps``
    (1e-12), ``mask_ratio`` (0.2), ``ft_ratio`` (0.5: rows masked at the last item only) and
    ``max_seq_len`` (50)."""

    embedding_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256
    dropout_rate: float = 0.2
    attn_dropout_rate: float = 0.2
    layer_norm_eps: float = 1e-12
    mask_ratio: float = 0.2
    ft_ratio: float = 0.5
    max_seq_len: int = 50

    def validate(self) -> None:
        super().validate()
        self.expect("embedding_size", self.embedding_size >= 1, "an integer >= 1")
        self.expect("num_layers", self.num_layers >= 1, "an integer >= 1")
        self.expect("num_heads", self.num_heads >= 1, "an integer >= 1")
        self.expect("embedding_size", self.embedding_size % self.num_heads == 0,
                    f"a multiple of num_heads={self.num_heads}")
        self.expect("inner_size", self.inner_size >= 1, "an integer >= 1")
        self.expect("dropout_rate", 0.0 <= self.dropout_rate < 1.0, "a rate in [0, 1)")
        self.expect("attn_dropout_rate", 0.0 <= self.attn_dropout_rate < 1.0, "a rate in [0, 1)")
        self.expect("layer_norm_eps", self.layer_norm_eps > 0, "a number > 0")
        self.expect("mask_ratio", 0.0 < self.mask_ratio <= 1.0, "a probability in (0, 1]")
        self.expect("ft_ratio", 0.0 <= self.ft_ratio <= 1.0, "a probability in [0, 1]")
        self.expect("max_seq_len", self.max_seq_len >= 2, "an integer >= 2 (the history plus the mask token)")


def arch_from_config(config, num_items: int) -> BERT4RecArch:
    """``BERT4RecArch`` of a config with BERT4Rec's settings for a catalog of ``num_items``."""
    return BERT4RecArch(num_items=int(num_items), hidden=config.embedding_size, num_layers=config.num_layers,
                        num_heads=config.num_heads, inner=config.inner_size, dropout=config.dropout_rate,
                        attn_dropout=config.attn_dropout_rate, max_len=config.max_seq_len,
                        ln_eps=float(config.layer_norm_eps))


def bert4rec_encoder(config) -> SequenceEncoder:
    """The BERT4Rec ``SequenceEncoder``: ``embed(params, histories)`` as ``embed`` above;
    ``forward(params, seq, key, train)`` = ``sequence_output`` (bidirectional; not a next-item
    model: train it with ``cloze``, not ``bce_seq`` / ``ce_seq``)."""
    return id_sequence_encoder("bert4rec", config, arch_from_config=arch_from_config, init_params=init_params,
                               embed=embed, sequence_output=sequence_output)


def cloze_term(config) -> Term:
    """``cloze`` (batch kind "sequences"): ``cloze_loss`` of ``cloze_inputs`` drawn from the
    step's key (masks and dropout from independent folds of it)."""
    mask_ratio, ft_ratio = config.mask_ratio, config.ft_ratio

    def loss(x: LossInputs):
        arch = arch_from_config(config, x.params["item_embedding"].shape[0] - 1)
        inputs, labels = cloze_inputs(x.batch["seq"], x.batch["pos"], jax.random.fold_in(x.key, 1), arch,
                                      mask_ratio, ft_ratio)
        return cloze_loss(x.params, inputs, labels, arch, jax.random.fold_in(x.key, 2))

    return Term("cloze", loss, batch_kind="sequences")


def make_bert4rec(config) -> Model:
    """BERT4Rec: the bidirectional ``SequenceEncoder`` trained with ``cloze`` over the
    ``"sequences"`` context and batch kind."""
    return Model("bert4rec", bert4rec_encoder(config), weighted_sum(cloze_term(config)), context="sequences")


#: Shared keys: SASRec's protocol (leave-one-out by time, the 20-candidate protocol, early
#: stopping on validation NDCG@10), with more epochs (a cloze epoch predicts ~20% of the items).
BERT4REC_DEFAULTS = dict(
    batch_size=128, epochs=400, learning_rate=1e-3,
    split="loo_time", evaluation="candidates", topk=(1, 5, 10), metrics=("hit", "ndcg", "mrr"),
    valid_metric="ndcg@10", patience=20,
)


__all__ = ["BERT4RecArch", "BERT4RecSettings", "BERT4RecError", "BERT4RecNet", "TransformerLayer", "mask_id",
           "init_params", "as_module", "sequence_output", "user_input", "user_representation", "embed",
           "cloze_inputs", "cloze_loss", "arch_from_config", "bert4rec_encoder", "cloze_term", "make_bert4rec",
           "BERT4REC_DEFAULTS"]
