"""RECFORMER-like: items as sentences, a bidirectional transformer over item-text vectors, and a
contrastive next-item objective against the item-text vectors (after Li et al., KDD 2023, "Text Is
All You Need: Learning Language Representations for Sequential Recommendation").

What RECFORMER does: every item is a key-value "sentence" of its attributes; a user's history is
flattened into one long token sequence (items in reverse order) and encoded by a Longformer
initialized from a pre-trained LM (token, token-position, token-type and item-position
embeddings; MLM + item-item contrastive pre-training on Amazon data); the user is the
sequence's ``[CLS]`` output, an item the same model over the item's sentence alone; fine-tuning
minimizes the softmax cross-entropy of cos(u, item) / tau over the whole catalog (tau = 0.05),
in two stages (item table frozen, then re-encoded).

What this row is instead (labelled "RECFORMER-like" everywhere): the item sentence goes through
the *offline* sentence encoder once (``jaxrec.models.textseq``: minilm / mpnet / smollm2,
frozen; no Longformer, no token-level model, no MLM or pre-training on other data); a trainable
projection maps it into the recommender's width, ``v_i = LN(T_i W + b)`` [d], used both as the
item-level tokens of the user's sequence and as the item side of the score; the user encoder is a
small bidirectional transformer over ``[CLS], v_{s_1}, ..., v_{s_n}`` (learned ``[CLS]`` vector,
learned positions, pre-norm blocks: ``x += MHA(LN(x))``, ``x += W2 GELU(W1 LN(x))`` with a
4d hidden layer, padded keys masked, final LayerNorm); the user is the ``[CLS]`` output ``u``.
Score: ``s(u, i) = cos(u, v_i) / tau``; loss (``recformer_ce``, batch kind "sequences"): for
each training window (``seq``, next item = ``pos[:, -1]``) the cross-entropy of the next item
under the softmax of s over the whole catalog (RECFORMER's fine-tuning loss; the whole catalog
is cheap at these sizes). One target per window: the encoder is bidirectional, so the earlier
positions' targets would be visible to it.

Scoring by dot product (``embed``): users ``u / ||u|| / tau``, items ``v / ||v||``.
Initialization: linear kernels xavier-normal, biases 0, ``[CLS]`` and positions N(0, 0.02^2),
LayerNorm 1 / 0. Settings (``RecformerSettings``): ``embedding_size`` d (64), ``num_layers``
(2), ``num_heads`` (2), ``dropout_rate`` (0.1: embeddings, attention weights, feed-forward),
``max_seq_len`` (50), ``recformer_temperature`` (0.05). Errors: ``RecformerError`` naming the
argument; bad config values ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.config import ModelSettings
from jaxrec.errors import JaxrecError
from jaxrec.models.base import Model
from jaxrec.models.dropout import HashDropout
from jaxrec.models.sequential import check_sequences, chunked_users, self_attention
from jaxrec.models.textseq import TextSeqContext, TextSequenceEncoder
from jaxrec.nn import PureModule, normal, xavier_normal
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import LossInputs, Term, weighted_sum

Params = dict
LN_EPS = 1e-6


class RecformerError(JaxrecError, ValueError):
    """A RECFORMER-like input or setting is invalid; the message names it."""


@dataclasses.dataclass(frozen=True)
class RecformerArch:
    """Network sizes: text_dim N, hidden d, num_blocks, num_heads (d divisible), dropout, max_len L."""

    text_dim: int
    hidden: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    dropout: float = 0.1
    max_len: int = 50

    def __post_init__(self) -> None:
        for name in ("text_dim", "hidden", "num_blocks", "num_heads", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RecformerError(f"RecformerArch.{name}: expected an integer >= 1, got {v!r}")
        if self.hidden % self.num_heads:
            raise RecformerError(f"RecformerArch.hidden={self.hidden}: expected a multiple of num_heads={self.num_heads}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise RecformerError(f"RecformerArch.dropout: expected a rate in [0, 1), got {self.dropout!r}")


def _ln(d: int, rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)


def _linear(i: int, o: int, rngs) -> nnx.Linear:
    return nnx.Linear(i, o, kernel_init=xavier_normal, bias_init=jax.nn.initializers.zeros, rngs=rngs)


class Block(nnx.Module):
    """Pre-norm bidirectional block: ``x += MHA(LN(x))`` (keys with ``keep`` False masked), ``x += FFN(LN(x))``."""

    def __init__(self, s: RecformerArch, rngs: nnx.Rngs):
        d = s.hidden
        self.attention_norm, self.ffn_norm = _ln(d, rngs), _ln(d, rngs)
        self.query, self.key, self.value, self.out = (_linear(d, d, rngs) for _ in range(4))
        self.ffn_in, self.ffn_out = _linear(d, 4 * d, rngs), _linear(4 * d, d, rngs)
        self.dropout = HashDropout(s.dropout)
        self.heads = s.num_heads

    def __call__(self, x, keep, train: bool, rngs):
        y = self.attention_norm(x)
        att = self_attention(self.query(y), self.key(y), self.value(y), keep, self.heads, padding="min",
                             weight_dropout=self.dropout, train=train, rngs=rngs)
        x = x + self.dropout(self.out(att), deterministic=not train, rngs=rngs)
        f = self.ffn_out(jax.nn.gelu(self.ffn_in(self.ffn_norm(x)), approximate=False))
        return x + self.dropout(f, deterministic=not train, rngs=rngs)


class RecformerNet(nnx.Module):
    """``items(text [I, N]) -> [I, d]`` and ``__call__(seq [B, L], items [I, d]) -> u [B, d]``."""

    def __init__(self, s: RecformerArch, rngs: nnx.Rngs):
        d = s.hidden
        self.projection = _linear(s.text_dim, d, rngs)
        self.projection_norm = _ln(d, rngs)
        self.cls = nnx.Param(normal(0.02)(rngs.params(), (d,)))
        self.position_embedding = nnx.Param(normal(0.02)(rngs.params(), (s.max_len + 1, d)))
        self.num_blocks = s.num_blocks
        for i in range(s.num_blocks):
            setattr(self, f"block_{i}", Block(s, rngs))
        self.final_norm = _ln(d, rngs)
        self.dropout = HashDropout(s.dropout)

    def items(self, text):
        return self.projection_norm(self.projection(text))

    def __call__(self, seq, items, train: bool = False, rngs=None):
        b, t = seq.shape
        tokens = items[jnp.maximum(seq - 1, 0)]
        x = jnp.concatenate([jnp.broadcast_to(self.cls[...], (b, 1, tokens.shape[-1])), tokens], axis=1)
        x = self.dropout(x + self.position_embedding[...][: t + 1], deterministic=not train, rngs=rngs)
        keep = jnp.concatenate([jnp.ones((b, 1), bool), seq != 0], axis=1)
        for i in range(self.num_blocks):
            x = getattr(self, f"block_{i}")(x, keep, train, rngs)
        return self.final_norm(x[:, 0])


@functools.lru_cache(maxsize=16)
def _pure(arch: RecformerArch) -> PureModule:
    return PureModule.of(lambda rngs: RecformerNet(arch, rngs=rngs))


def as_module(params: Params, arch: RecformerArch) -> RecformerNet:
    """The NNX module holding ``params``; RecformerError naming the first leaf that differs."""
    return _pure(arch).merge(params, check=True, error=RecformerError, about=f"{arch}")


def init_params(key: jax.Array, arch: RecformerArch) -> Params:
    """Fresh params: ``projection/{kernel [N, d], bias}``, ``projection_norm``, ``cls`` [d],
    ``position_embedding`` [L + 1, d], ``block_{i}/{attention_norm, query, key, value, out, ffn_norm,
    ffn_in [d, 4d], ffn_out [4d, d]}``, ``final_norm``."""
    return _init_pure(lambda rngs: RecformerNet(arch, rngs=rngs), key)


def item_vectors(params: Params, text, arch: RecformerArch) -> jax.Array:
    """float32 [I, d]: ``LN(text W + b)`` of text [I, N]. RecformerError for another width."""
    text = jnp.asarray(text, jnp.float32)
    if text.ndim != 2 or text.shape[1] != arch.text_dim:
        raise RecformerError(f"text: shape {text.shape}; expected [I, {arch.text_dim}]")
    return as_module(params, arch).items(text)


def user_vectors(params: Params, seq, text, arch: RecformerArch, *, key=None, train: bool = False) -> jax.Array:
    """float32 [B, d]: the ``[CLS]`` output over ``seq`` [B, L] (ids + 1, 0 = padding, L <= max_len)."""
    seq = check_sequences(seq, RecformerError, "seq", arch.max_len)
    if train and key is None:
        raise RecformerError("key: a jax.random key is required when train=True (dropout)")
    module = as_module(params, arch)
    return module(seq, module.items(jnp.asarray(text, jnp.float32)), train, nnx.Rngs(dropout=key) if train else None)


def _unit(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def next_item_ce(params: Params, seq, target, text, arch: RecformerArch, tau: float, *, key=None,
                 train: bool = True) -> jax.Array:
    """Mean over rows with ``target > 0`` of -log softmax_i(cos(u, v_i) / tau)[target - 1].

    seq: int [B, L]; target: int [B] (next item id + 1, 0 = no target)."""
    u = _unit(user_vectors(params, seq, text, arch, key=key, train=train))
    v = _unit(item_vectors(params, text, arch))
    logits = (u @ v.T) / tau
    target = jnp.asarray(target)
    nll = jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, jnp.maximum(target - 1, 0)[:, None], 1)[:, 0]
    m = (target > 0).astype(logits.dtype)
    return jnp.sum(nll * m) / jnp.maximum(m.sum(), 1.0)


@dataclasses.dataclass(frozen=True)
class RecformerSettings(ModelSettings):
    """RECFORMER-like config keys: ``embedding_size`` (64), ``num_layers`` (2), ``num_heads`` (2),
    ``dropout_rate`` (0.1), ``max_seq_len`` (50), ``recformer_temperature`` (tau, 0.05: RECFORMER's)."""

    embedding_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout_rate: float = 0.1
    max_seq_len: int = 50
    recformer_temperature: float = 0.05

    def validate(self) -> None:
        super().validate()
        self.expect("embedding_size", self.embedding_size >= 1, "an integer >= 1")
        self.expect("num_layers", self.num_layers >= 1, "an integer >= 1")
        self.expect("num_heads", self.num_heads >= 1, "an integer >= 1")
        self.expect("embedding_size", self.embedding_size % self.num_heads == 0,
                    f"a multiple of num_heads={self.num_heads}")
        self.expect("dropout_rate", 0.0 <= self.dropout_rate < 1.0, "a rate in [0, 1)")
        self.expect("max_seq_len", self.max_seq_len >= 1, "an integer >= 1")
        self.expect("recformer_temperature", self.recformer_temperature > 0, "a temperature > 0")


def arch_from_config(config, text_dim: int) -> RecformerArch:
    return RecformerArch(text_dim=int(text_dim), hidden=config.embedding_size, num_blocks=config.num_layers,
                         num_heads=config.num_heads, dropout=config.dropout_rate, max_len=config.max_seq_len)


def recformer_encoder(config) -> TextSequenceEncoder:
    """The encoder: ``embed`` = (u / ||u|| / tau [U, d], v / ||v|| [I, d]); ``init`` reads N from the context."""
    chunk, tau = config.eval_chunk, config.recformer_temperature

    def arch_of(text) -> RecformerArch:
        return arch_from_config(config, text.shape[1])

    def init(key, num_users, num_items, context_shapes):
        return init_params(key, arch_of(context_shapes.text))

    def embed(params, ctx: TextSeqContext):
        arch = arch_of(ctx.text)
        users = chunked_users(lambda s: user_vectors(params, s, ctx.text, arch), jnp.asarray(ctx.histories), chunk,
                              RecformerError)
        return _unit(users) / tau, _unit(item_vectors(params, ctx.text, arch))

    return TextSequenceEncoder(name="recformer_like", init=init, embed=embed, forward=None, items=None)


def recformer_term(config) -> Term:
    """``recformer_ce``: ``next_item_ce`` of each window's last next item (batch kind "sequences")."""
    tau = config.recformer_temperature

    def loss(x: LossInputs):
        arch = arch_from_config(config, x.context.text.shape[1])
        return next_item_ce(x.params, x.batch["seq"], x.batch["pos"][:, -1], x.context.text, arch, tau, key=x.key)

    return Term("recformer_ce", loss, batch_kind="sequences")


def make_recformer(config) -> Model:
    """The RECFORMER-like backbone over the ``"text_sequences"`` context."""
    return Model("recformer_like", recformer_encoder(config), weighted_sum(recformer_term(config)),
                 context="text_sequences")


#: Protocol defaults for shared keys: SASRec's (candidates, loo_time, batch 128, lr 1e-3) and minilm.
RECFORMER_DEFAULTS = dict(
    batch_size=128, epochs=200, learning_rate=1e-3, split="loo_time", evaluation="candidates", topk=(1, 5, 10),
    metrics=("hit", "ndcg", "mrr"), valid_metric="ndcg@10", patience=20, encoder="minilm")

__all__ = ["RecformerArch", "RecformerSettings", "RecformerError", "RecformerNet", "init_params", "item_vectors",
           "user_vectors", "next_item_ce", "arch_from_config", "recformer_encoder", "recformer_term",
           "make_recformer", "RECFORMER_DEFAULTS"]
