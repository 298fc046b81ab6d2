"""SASRec (Kang and McAuley, 2018) as A-LLMRec pretrains it, in Flax NNX behind pure functions.

The network follows the reference implementation A-LLMRec uses (ghdtjr/A-LLMRec
``pre_train/sasrec/model.py``, a copy of pmixer/SASRec.pytorch; DESIGN.md 6):

- input ``seq`` int32 [B, L], L <= ``max_len``: item ids + 1, 0 = padding (left-padded);
- ``x = item_emb[seq] * sqrt(d) + pos_emb[0..L-1]`` (learned positions, the left-most column
  is position 0), dropout, then padding positions zeroed (the "timeline mask");
- per block (``norm="reference"``, ``log2feats``): ``Q = LN(x); x = Q + MHA(Q, x, x)`` with a
  causal mask (LayerNorm on the queries only; keys and values are the un-normalized ``x``; no
  key-padding mask, as the reference), then ``h = LN(x); x = h + FFN(h)`` with
  ``FFN = Dropout(W2 ReLU(Dropout(W1 h)))`` (the reference's two 1x1 Conv1d), and padding
  positions zeroed again; ``norm="prenorm"`` is the standard pre-norm block instead:
  ``x = x + MHA(LN(x)); x = x + FFN(LN(x))`` (SASRec.pytorch ``--norm_first``);
- final LayerNorm; every LayerNorm has eps 1e-8; attention dropout on the attention
  weights (torch ``nn.MultiheadAttention(dropout=rate)``);
- logit of item ``i`` at position t = ``output_t . item_emb[i]`` (shared table).

Initialization as the reference's ``main.py``: ``xavier_normal_`` on every parameter with
two or more dimensions, the rest keeps torch's default: embeddings N(0, 2/(rows + d)); the
stacked [3d, d] Q/K/V projection N(0, 2/(4d)); the attention output [d, d] and the two 1x1
convolutions N(0, 1/d); attention biases 0; convolution biases U(-1/sqrt(d), 1/sqrt(d));
LayerNorm scale 1, bias 0. Row 0 (padding) of the item table is set to 0 (the reference leaves
it random; it never reaches an output: padded inputs are masked, padded targets carry no loss,
so its gradient is 0 as well).

Loss (reference ``main.py``): binary cross-entropy with logits of the positive (label 1) and
of one sampled negative (label 0) at every position where ``pos != 0``, each averaged over
those positions, summed. No L2 on embeddings (A-LLMRec's ``l2_emb = 0``).

Parameters are a plain nested dict (``jaxrec.nn``: ``init_params`` / ``PureModule.merge``); every
function rebuilds the module inside, so they jit with ``arch`` static (``SASRecArch``: a frozen,
hashable dataclass of the network's sizes). ``SASRecSettings`` is the backbone's part of a
``jaxrec.Config`` (config keys ``embedding_size``, ``num_layers``, ``num_heads``,
``dropout_rate``, ``max_seq_len``, ``seq_norm``, ``dropout_rng``); ``arch_from_config`` maps it
onto a ``SASRecArch`` for a catalog of ``num_items``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.config import ConfigError, ModelSettings
from jaxrec.errors import JaxrecError
from jaxrec.models.base import Model, SequenceEncoder
from jaxrec.models.dropout import HashDropout
from jaxrec.models.sequential import check_sequences, chunked_users
from jaxrec.nn import PureModule, normal, torch_uniform, xavier_normal
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import term, weighted_sum
from jaxrec.objectives.sequential import next_item_bce

#: ``seq_norm`` values: LayerNorm placement in a block.
NORMS = ("reference", "prenorm")
#: ``dropout_rng`` values: where dropout masks come from (``jaxrec.models.dropout``).
DROPOUT_RNGS = ("hash", "threefry")
LN_EPS = 1e-8

Params = dict


class SASRecError(JaxrecError, ValueError):
    """A SASRec setting or input is invalid; the message names the field or argument."""


@dataclasses.dataclass(frozen=True)
class SASRecArch:
    """SASRec hyperparameters (defaults: A-LLMRec's pretraining, DESIGN.md 6).

    num_items: I (the item table has I + 1 rows, row 0 = padding); hidden: d; num_blocks;
    num_heads (hidden must be divisible by it); dropout: rate in [0, 1) for embeddings,
    attention weights and feed-forward; max_len: longest sequence L (also the number of
    learned positions); norm: ``"reference"`` (LayerNorm on the queries only) or ``"prenorm"``;
    dropout_rng: where dropout masks come from, ``"hash"`` (``jaxrec.models.dropout``: a keyed
    counter hash, 40x cheaper on CPU) or ``"threefry"`` (``nnx.Dropout``, ``jax.random.bernoulli``).
    """

    num_items: int
    hidden: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    norm: str = "reference"
    dropout_rng: str = "hash"

    def __post_init__(self) -> None:
        def whole(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SASRecError(f"SASRecArch.{name}: expected an integer >= {low}, got {v!r}")

        whole("num_items", 1)
        whole("hidden", 1)
        whole("num_blocks", 1)
        whole("num_heads", 1)
        whole("max_len", 1)
        if self.hidden % self.num_heads:
            raise SASRecError(f"SASRecArch.hidden={self.hidden}: expected a multiple of "
                              f"num_heads={self.num_heads}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise SASRecError(f"SASRecArch.dropout: expected a rate in [0, 1), got {self.dropout!r}")
        if self.norm not in NORMS:
            raise SASRecError(f"SASRecArch.norm: expected one of {NORMS}, got {self.norm!r}")
        if self.dropout_rng not in DROPOUT_RNGS:
            raise SASRecError(f"SASRecArch.dropout_rng: expected one of {DROPOUT_RNGS}, got {self.dropout_rng!r}")


# ----------------------------------------------------------------------------- modules
def _dropout(s: SASRecArch):
    return HashDropout(s.dropout) if s.dropout_rng == "hash" else nnx.Dropout(s.dropout)


def _layer_norm(d: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)


class PointWiseFeedForward(nnx.Module):
    """``Dropout(conv2(ReLU(Dropout(conv1(h)))))`` with 1x1 convolutions as [d, d] Linear layers."""

    def __init__(self, d: int, dropout: nnx.Module, rngs: nnx.Rngs):
        # torch Conv1d's default bias init, fan_in = d * 1; xavier_normal_ kernel [d, d]
        lin = dict(kernel_init=normal(math.sqrt(1.0 / d)), bias_init=torch_uniform(d), rngs=rngs)
        self.conv1 = nnx.Linear(d, d, **lin)
        self.conv2 = nnx.Linear(d, d, **lin)
        self.dropout = dropout

    def __call__(self, h, train: bool, rngs):
        h = self.dropout(jax.nn.relu(self.conv1(h)), deterministic=not train, rngs=rngs)
        return self.dropout(self.conv2(h), deterministic=not train, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    """Multi-head attention with a causal mask, in the arithmetic of torch's ``nn.MultiheadAttention``.

    ``q, k, v = x_q W_q + b_q, x_kv W_k + b_k, x_kv W_v + b_v`` ([d, d] kernels; head h owns
    columns ``h*hd:(h+1)*hd``, hd = d / heads, as the rows of torch's stacked ``in_proj_weight``),
    per head ``softmax(q k^T / sqrt(hd))`` with position t attending to positions <= t only,
    dropout on the attention weights, heads concatenated, then ``W_o``. Written with batched
    ``matmul`` on [B, H, L, hd] (not ``nnx.MultiHeadAttention``'s einsums): XLA:CPU runs the
    gradient of this form about twice as fast.
    """

    def __init__(self, d: int, heads: int, dropout: nnx.Module, rngs: nnx.Rngs):
        zeros = jax.nn.initializers.zeros
        qkv = dict(kernel_init=normal(math.sqrt(2.0 / (4 * d))), bias_init=zeros, rngs=rngs)  # xavier_normal_ [3d, d]
        self.query = nnx.Linear(d, d, **qkv)
        self.key = nnx.Linear(d, d, **qkv)
        self.value = nnx.Linear(d, d, **qkv)
        self.out = nnx.Linear(d, d, kernel_init=normal(math.sqrt(1.0 / d)), bias_init=zeros, rngs=rngs)
        self.heads = heads
        self.dropout = dropout

    def __call__(self, q_in, kv_in, train: bool, rngs):
        b, length, d = q_in.shape
        h = self.heads
        hd = d // h

        def heads(x):  # [B, L, d] -> [B, H, L, hd]
            return x.reshape(b, length, h, hd).transpose(0, 2, 1, 3)

        # one matmul for the projections that read the same input (k, v; q too in pre-norm)
        same = [self.query, self.key, self.value] if q_in is kv_in else [self.key, self.value]
        kernel = jnp.concatenate([lin.kernel[...] for lin in same], axis=1)
        bias = jnp.concatenate([lin.bias[...] for lin in same])
        proj = jnp.split(kv_in @ kernel + bias, len(same), axis=-1)
        q = proj[0] if q_in is kv_in else self.query(q_in)
        q = heads(q) * (1.0 / math.sqrt(hd))
        k, v = heads(proj[-2]), heads(proj[-1])
        logits = jnp.matmul(q, jnp.swapaxes(k, -1, -2))  # [B, H, L, L]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
        weights = self.dropout(jax.nn.softmax(logits, axis=-1), deterministic=not train, rngs=rngs)
        out = jnp.matmul(weights, v).transpose(0, 2, 1, 3).reshape(b, length, d)
        return self.out(out)


class SASRecBlock(nnx.Module):
    """One self-attention block; ``norm`` picks the reference or the pre-norm placement."""

    def __init__(self, s: SASRecArch, rngs: nnx.Rngs):
        d = s.hidden
        self.norm = s.norm
        self.attention_norm = _layer_norm(d, rngs)
        self.attention = CausalSelfAttention(d, s.num_heads, _dropout(s), rngs)
        self.ffn_norm = _layer_norm(d, rngs)
        self.ffn = PointWiseFeedForward(d, _dropout(s), rngs)

    def __call__(self, x, train: bool, rngs):
        if self.norm == "reference":
            q = self.attention_norm(x)
            x = q + self.attention(q, x, train, rngs)
            h = self.ffn_norm(x)
            return h + self.ffn(h, train, rngs)
        h = self.attention_norm(x)
        x = x + self.attention(h, h, train, rngs)
        return x + self.ffn(self.ffn_norm(x), train, rngs)


class SASRecNet(nnx.Module):
    """The whole network: ``__call__(seq [B, L], train, rngs) -> [B, L, d]``.

    The item table ``item_embedding`` [I + 1, d] and the positions ``position_embedding``
    [max_len, d] are plain ``nnx.Param`` arrays, so they sit at the top of the parameter dict
    (``params["item_embedding"]``: what LLM initialization writes, ``TableSpec`` offset 1).
    """

    def __init__(self, s: SASRecArch, rngs: nnx.Rngs):
        d = s.hidden
        self.item_embedding = nnx.Param(xavier_normal(rngs.params(), (s.num_items + 1, d)))
        self.position_embedding = nnx.Param(xavier_normal(rngs.params(), (s.max_len, d)))
        self.dropout = _dropout(s)
        self.num_blocks = s.num_blocks
        for b in range(s.num_blocks):  # named attributes: the pure dict has string keys only
            setattr(self, f"block_{b}", SASRecBlock(s, rngs))
        self.final_norm = _layer_norm(d, rngs)
        self.scale = math.sqrt(d)

    def __call__(self, seq, train: bool = False, rngs=None):
        length = seq.shape[1]
        keep = (seq != 0)[..., None].astype(jnp.float32)
        x = self.item_embedding[...][seq] * self.scale + self.position_embedding[...][:length]
        x = self.dropout(x, deterministic=not train, rngs=rngs) * keep
        for b in range(self.num_blocks):
            x = getattr(self, f"block_{b}")(x, train, rngs) * keep
        return self.final_norm(x)


# ----------------------------------------------------------------------------- pure API
@functools.lru_cache(maxsize=32)
def _pure(settings: SASRecArch) -> PureModule:
    return PureModule.of(lambda rngs: SASRecNet(settings, rngs=rngs))


def as_module(params: Params, settings: SASRecArch) -> SASRecNet:
    """The NNX module holding ``params`` (``jaxrec.nn.PureModule.merge``); raises SASRecError if
    ``params`` does not have the structure and shapes ``init_params`` gives."""
    return _pure(settings).merge(params, check=True, error=SASRecError, about=f"{settings}")


def init_params(key: jax.Array, settings: SASRecArch) -> Params:
    """A fresh parameter dict (reference initialization, see the module docstring).

    Keys: ``item_embedding`` [I+1, d] (row 0 = padding, zeros), ``position_embedding``
    [L, d], ``block_{b}/{attention_norm, attention/{query, key, value, out}, ffn_norm,
    ffn}/...`` (kernels [d, d] laid out [in, out]), ``final_norm/{scale, bias}``; all float32.
    """
    params = _init_pure(lambda rngs: SASRecNet(settings, rngs=rngs), key)
    params["item_embedding"] = params["item_embedding"].at[0].set(0.0)
    return params


def _check_seq(seq, settings: SASRecArch, name: str = "seq"):
    seq = check_sequences(seq, SASRecError, name)
    if seq.shape[1] > settings.max_len:
        raise SASRecError(f"{name}: length {seq.shape[1]} exceeds SASRecArch.max_len={settings.max_len}")
    return seq


def sequence_output(params: Params, seq, settings: SASRecArch, *, key: jax.Array | None = None,
                    train: bool = False) -> jax.Array:
    """float32 [B, L, d]: the network's output at every position of ``seq``.

    seq: int [B, L] item ids + 1, left-padded with 0, L <= max_len. ``train=True`` applies
    dropout with ``key`` (required then); ``train=False`` is deterministic (``key`` ignored).
    The output at position t depends on ``seq[:, :t+1]`` only (causal attention).
    """
    seq = _check_seq(seq, settings)
    if train and key is None:
        raise SASRecError("key: a jax.random key is required when train=True (dropout)")
    rngs = nnx.Rngs(dropout=key) if train else None
    return as_module(params, settings)(seq, train, rngs)


def user_representation(params: Params, seq, settings: SASRecArch) -> jax.Array:
    """float32 [B, d]: the output at the last position (SASRec.pytorch ``predict``: ``log_feats[:, -1]``)."""
    return sequence_output(params, seq, settings)[:, -1, :]


def item_table(params: Params) -> jax.Array:
    """float32 [I + 1, d]: the item embedding table; row 0 is padding, item dense id i is row i + 1."""
    return params["item_embedding"]


def bce_loss(params: Params, batch, settings: SASRecArch, key: jax.Array | None,
             train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Reference BCE loss of one batch of training windows -> (loss [], aux).

    batch: ``seq``, ``pos``, ``neg`` int [B, L] (ids + 1, 0 = padding; ``user`` is unused).
    loss = mean over positions with ``pos != 0`` of softplus(-pos_logit) (BCE, label 1)
    + the same mean of softplus(neg_logit) (label 0), logit = output_t . item_emb[id]
    (A-LLMRec ``pre_train/sasrec/main.py``). aux: ``bce_pos``, ``bce_neg`` (the two terms).
    ``key``: dropout key (required with ``train=True``).
    """
    seq, pos, neg = (jnp.asarray(batch[k]) for k in ("seq", "pos", "neg"))
    chex.assert_equal_shape([seq, pos, neg])
    out = sequence_output(params, seq, settings, key=key, train=train)
    bce_pos, bce_neg = next_item_bce(out, item_table(params), pos, neg)
    return bce_pos + bce_neg, {"bce_pos": bce_pos, "bce_neg": bce_neg}


def score_candidates(params: Params, seq, candidates, settings: SASRecArch) -> jax.Array:
    """float32 [B, C]: ``user_representation . item_emb`` for each user's candidate items.

    seq: int [B, L] (ids + 1, 0 = padding); candidates: int [B, C] **dense item ids**
    (0-based, NOT shifted: as stored by ``jaxrec.eval.candidates``), looked up at row id + 1.
    """
    candidates = jnp.asarray(candidates)
    chex.assert_rank(candidates, 2)
    user = user_representation(params, seq, settings)
    chex.assert_equal_shape_prefix([user, candidates], 1)
    return jnp.einsum("bd,bcd->bc", user, item_table(params)[candidates + 1])


def embed(params: Params, histories, settings: SASRecArch, chunk_size: int = 1024):
    """(user_emb float32 [U, d], item_emb float32 [I, d]) for scoring by dot product.

    histories: int [U, L] (``jaxrec.data.sequences.histories`` of the stage); user_emb[u] is
    the last-position output of row u, computed ``chunk_size`` users at a time
    (``lax.map``, so U = 1e5 needs only one chunk's activations); item_emb = the item table
    without its padding row (dense id i -> row i). Jit-compatible (``settings`` static).
    """
    histories = _check_seq(histories, settings, "histories")
    users = chunked_users(lambda s: user_representation(params, s, settings), histories, chunk_size, SASRecError)
    return users, item_table(params)[1:]


# ----------------------------------------------------------------------------- the backbone
@dataclasses.dataclass(frozen=True)
class SASRecSettings(ModelSettings):
    """SASRec's config keys (defaults: A-LLMRec's pretraining, DESIGN.md 6): ``embedding_size`` d
    (50), ``num_layers`` (self-attention blocks, 2), ``num_heads`` (1; d must be a multiple),
    ``dropout_rate`` (0.5: embeddings, attention weights, feed-forward), ``max_seq_len`` (50: the
    longest history kept, the most recent items, and the learned positions), ``seq_norm``
    (reference: LayerNorm on the queries only, A-LLMRec | prenorm) and ``dropout_rng`` (hash:
    a keyed counter hash, fast on CPU | threefry)."""

    embedding_size: int = 50
    num_layers: int = 2
    num_heads: int = 1
    dropout_rate: float = 0.5
    max_seq_len: int = 50
    seq_norm: str = "reference"
    dropout_rng: str = "hash"

    def validate(self) -> None:
        super().validate()
        self.expect("embedding_size", self.embedding_size >= 1, "an integer >= 1")
        self.expect("num_layers", self.num_layers >= 1, "an integer >= 1 (SASRec needs at least one "
                                                        "self-attention block)")
        self.expect("num_heads", self.num_heads >= 1, "an integer >= 1")
        self.expect("embedding_size", self.embedding_size % self.num_heads == 0,
                    f"a multiple of num_heads={self.num_heads} (SASRec splits the hidden size over the heads)")
        self.expect("dropout_rate", 0.0 <= self.dropout_rate < 1.0, "a rate in [0, 1)")
        self.expect("max_seq_len", self.max_seq_len >= 1, "an integer >= 1 (the longest history a sequence "
                                                          "model reads)")
        self.expect("seq_norm", self.seq_norm in NORMS, f"one of {list(NORMS)}")
        self.expect("dropout_rng", self.dropout_rng in DROPOUT_RNGS, f"one of {list(DROPOUT_RNGS)}")


def arch_from_config(config, num_items: int) -> SASRecArch:
    """``SASRecArch`` of a config with SASRec's settings: hidden = ``embedding_size``, blocks =
    ``num_layers``, ``num_heads``, dropout = ``dropout_rate``, max_len = ``max_seq_len``,
    norm = ``seq_norm``, ``dropout_rng``."""
    return SASRecArch(num_items=int(num_items), hidden=config.embedding_size, num_blocks=config.num_layers,
                      num_heads=config.num_heads, dropout=config.dropout_rate, max_len=config.max_seq_len,
                      norm=config.seq_norm, dropout_rng=config.dropout_rng)


settings_from_config = arch_from_config  # the name of jaxrec 0.1


def check_no_graph(config) -> None:
    """``ConfigError`` for ``sharding="row"`` (it splits a graph's nodes and edges): for the
    sequence backbones, which have no graph."""
    if config.sharding == "row":
        raise ConfigError(f"sharding='row': row sharding splits a graph's nodes and edges, and model "
                          f"{config.model!r} has no graph; use sharding='feature' (data-parallel batches over the "
                          "mesh) or 'none'")


def sasrec_encoder(config):
    """The SASRec ``SequenceEncoder`` of ``config``: params from ``init_params``; ``embed(params,
    histories [U, L])`` = (last-position outputs [U, d], item table rows 1.. [I, d]), users in
    chunks of ``config.eval_chunk``; ``forward`` = ``sequence_output``."""
    chunk = config.eval_chunk

    def settings_of(params) -> SASRecArch:
        return arch_from_config(config, params["item_embedding"].shape[0] - 1)

    def init(key, num_users, num_items):
        return init_params(key, arch_from_config(config, num_items))

    def embed_fn(params, histories):
        return embed(params, histories, settings_of(params), chunk_size=chunk)

    def forward(params, seq, key=None, train=False):
        return sequence_output(params, seq, settings_of(params), key=key, train=train)

    return SequenceEncoder(name="sasrec", init=init, embed=embed_fn, forward=forward)


def make_sasrec(config):
    """SASRec: the ``SequenceEncoder`` trained with ``bce_seq`` (one sampled negative per
    position) over the ``"sequences"`` context and batch kind."""
    return Model("sasrec", sasrec_encoder(config), weighted_sum(term("bce_seq", config)), context="sequences")


#: ``register_model("sasrec", make_sasrec, defaults=...)``: A-LLMRec's SASRec pretraining protocol
#: for shared keys (DESIGN.md 6) with early stopping on the candidate protocol's validation NDCG@10
#: (the network's own defaults are ``SASRecSettings``').
SASREC_DEFAULTS = dict(
    batch_size=128, epochs=200, learning_rate=1e-3, adam_b1=0.9, adam_b2=0.98,
    split="loo_time", evaluation="candidates", topk=(1, 5, 10), metrics=("hit", "ndcg", "mrr"),
    valid_metric="ndcg@10", patience=20,
)


__all__ = ["SASRecArch", "SASRecSettings", "SASRecError", "SASRecNet", "SASRecBlock", "CausalSelfAttention",
           "PointWiseFeedForward", "NORMS", "DROPOUT_RNGS", "init_params", "as_module", "sequence_output",
           "user_representation", "item_table", "bce_loss", "score_candidates", "embed", "arch_from_config",
           "settings_from_config", "check_no_graph", "sasrec_encoder", "make_sasrec", "SASREC_DEFAULTS"]
