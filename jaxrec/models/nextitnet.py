"""NextItNet (Yuan et al., WSDM 2019) as RecBole builds it, in Flax NNX behind pure functions.

The network follows RecBole 1.2.1's ``recbole/model/sequential_recommender/nextitnet.py``
(the paper's section 3: a stack of dilated causal 1-D convolutions in residual blocks, the
"b" block of its Fig. 3 with layer normalization):

- input ``seq`` int32 [B, L]: item ids + 1, 0 = padding, LEFT-padded (the "sequences" batch
  kind and context); ``x_0 = item_emb[seq]`` (no positional embedding, no dropout);
- ``dilations`` repeated ``block_num`` times (RecBole's ``dilations * block_num``: the
  defaults [1, 4] x 5 give 10 blocks); block ``b`` with dilation ``r``::

      h   = ReLU(LN(causal_conv(x, W1, r)))         # kernel k, dilation r
      out = ReLU(LN(causal_conv(h, W2, 2 r))) + x   # kernel k, dilation 2r; the residual

  where ``causal_conv(x, W, r)_t = b + sum_{j=0}^{k-1} W_j^T x_{t - (k-1-j) r}`` (torch's
  ``Conv2d(d, d, (1, k), dilation=r)`` over the sequence left-padded with ``(k-1) r`` zeros:
  RecBole's ``conv_pad``; ``W_j`` = torch ``weight[:, :, 0, j]`` transposed), LayerNorm eps 1e-8;
- ``out_t = final(x_B)_t`` (``nn.Linear(d, d)``) at every position; the output at the last
  position is the user representation (RecBole's ``gather_indexes(.., len - 1)`` then
  ``final_layer``); logit of item ``i`` = ``out_t . item_emb[i]`` (the shared item table).

Padding: RecBole's batches are right-padded, so a real position only ever sees the zeros of
``conv_pad`` to its left. Here (left padding) every convolution input is set to 0 at padding
positions, so a real position sees zeros there too: the output at every real position equals
the network run over the real items alone, whatever the amount of left padding (tested against
torch ``Conv2d`` on the unpadded items). Padding positions output 0.

Initialization as RecBole's ``_init_weights``: the item table U(-sqrt(1/(I+1)), sqrt(1/(I+1)))
(row 0, padding, set to 0: it never reaches an output); ``final`` weight ``xavier_normal_``,
bias 0.1; the convolutions keep torch's ``Conv2d`` default U(-1/sqrt(d k), 1/sqrt(d k)) for
weight and bias (RecBole's ``_init_weights`` does not touch ``nn.Conv2d``); LayerNorm 1 / 0.

Loss (``NextItNetSettings.seq_loss``): ``"ce"`` (default; RecBole's ``loss_type="CE"`` and the
paper's softmax, section 3.4) is the ``ce_seq`` term, full-catalog softmax cross-entropy at
every position with a next item (``jaxrec.objectives.sequential``); ``"bce"`` is ``bce_seq``
(one sampled negative per position, SASRec's loss). Plus ``reg_weight`` x RecBole's
``reg_loss_rb``: the sum of the L2 norms (not squared) of the residual blocks' weight arrays
(conv kernels and LayerNorm scales: RecBole's parameter names ending in ``weight``).

Parameters are a plain nested dict (``jaxrec.nn``): ``item_embedding`` [I+1, d],
``block_{b}/{conv1, conv2}/{kernel [k, d, d], bias [d]}``, ``block_{b}/{ln1, ln2}/{scale,
bias}`` [d], ``final/{kernel [d, d], bias [d]}``. Every function rebuilds the module inside, so
they jit with ``arch`` static (``NextItNetArch``). Errors: ``NextItNetError`` (a
``JaxrecError`` and a ``ValueError``) naming the field or argument; bad config values raise
``jaxrec.config.ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.config import ModelSettings
from jaxrec.errors import JaxrecError
from jaxrec.models.base import Model, SequenceEncoder
from jaxrec.models.sequential import SEQ_LOSSES, check_sequences, chunked_users, id_sequence_encoder
from jaxrec.nn import PureModule, torch_uniform, xavier_normal
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import Term, term, weighted_sum

Params = dict
LN_EPS = 1e-8


class NextItNetError(JaxrecError, ValueError):
    """A NextItNet setting or input is invalid; the message names the field or argument."""


@dataclasses.dataclass(frozen=True)
class NextItNetArch:
    """NextItNet's network sizes (defaults: RecBole's ``NextItNet.yaml``).

    num_items: I (the item table has I + 1 rows, row 0 = padding); embedding_size: d (item
    table, residual channels and output width); dilations: the dilation of each block's first
    convolution (the second uses twice it), already repeated ``block_num`` times; kernel_size:
    k. Raises ``NextItNetError`` naming the bad field.
    """

    num_items: int
    embedding_size: int = 64
    dilations: tuple[int, ...] = (1, 4) * 5
    kernel_size: int = 3

    def __post_init__(self) -> None:
        for name in ("num_items", "embedding_size", "kernel_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NextItNetError(f"NextItNetArch.{name}: expected an integer >= 1, got {v!r}")
        if (not isinstance(self.dilations, tuple) or not self.dilations
                or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in self.dilations)):
            raise NextItNetError(f"NextItNetArch.dilations: expected a non-empty tuple of integers >= 1, "
                                 f"got {self.dilations!r}")


# ----------------------------------------------------------------------------- modules
class CausalConv(nnx.Module):
    """Dilated causal 1-D convolution ``[B, L, d_in] -> [B, L, d_out]`` (module docstring's
    ``causal_conv``); ``kernel`` [k, d_in, d_out] (tap ``j`` reads ``x_{t - (k-1-j) r}``)."""

    def __init__(self, d_in: int, d_out: int, kernel_size: int, dilation: int, rngs: nnx.Rngs):
        init = torch_uniform(d_in * kernel_size)  # torch Conv2d default: fan_in = d_in * 1 * k
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, d_in, d_out)))
        self.bias = nnx.Param(init(rngs.params(), (d_out,)))
        self.dilation = dilation

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel.shape[0]
        length = x.shape[1]
        out = self.bias[...]
        for j in range(k):
            shift = (k - 1 - j) * self.dilation
            if shift >= length:
                continue  # this tap reads only the zero padding
            xs = jnp.pad(x, ((0, 0), (shift, 0), (0, 0)))[:, :length] if shift else x
            out = out + xs @ self.kernel[...][j]
        return out


class ResidualBlock(nnx.Module):
    """RecBole's ``ResidualBlock_b``: ``ReLU(LN(conv2(ReLU(LN(conv1(x)))))) + x`` with conv1 at
    dilation r and conv2 at 2r; ``keep`` [B, L, 1] zeroes padding positions before each conv."""

    def __init__(self, d: int, kernel_size: int, dilation: int, rngs: nnx.Rngs):
        self.conv1 = CausalConv(d, d, kernel_size, dilation, rngs)
        self.ln1 = nnx.LayerNorm(d, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
        self.conv2 = CausalConv(d, d, kernel_size, 2 * dilation, rngs)
        self.ln2 = nnx.LayerNorm(d, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)

    def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.ln1(self.conv1(x * keep)))
        return jax.nn.relu(self.ln2(self.conv2(h * keep))) + x


class NextItNetNet(nnx.Module):
    """The whole network: ``__call__(seq [B, L]) -> [B, L, d]`` (0 at padding positions)."""

    def __init__(self, s: NextItNetArch, rngs: nnx.Rngs):
        d = s.embedding_size
        bound = math.sqrt(1.0 / (s.num_items + 1))  # RecBole: uniform_(-sqrt(1/n_items), .), n_items = I + 1
        self.item_embedding = nnx.Param(jax.random.uniform(rngs.params(), (s.num_items + 1, d), jnp.float32,
                                                           -bound, bound))
        self.num_blocks = len(s.dilations)
        for b, r in enumerate(s.dilations):  # named attributes: the pure dict has string keys only
            setattr(self, f"block_{b}", ResidualBlock(d, s.kernel_size, r, rngs))
        self.final = nnx.Linear(d, d, kernel_init=lambda key, shape, dtype=jnp.float32: xavier_normal(key, shape),
                                bias_init=jax.nn.initializers.constant(0.1), rngs=rngs)

    def __call__(self, seq):
        keep = (seq != 0)[..., None].astype(jnp.float32)
        x = self.item_embedding[...][seq]
        for b in range(self.num_blocks):
            x = getattr(self, f"block_{b}")(x, keep)
        return self.final(x) * keep


# ----------------------------------------------------------------------------- pure API
@functools.lru_cache(maxsize=32)
def _pure(arch: NextItNetArch) -> PureModule:
    return PureModule.of(lambda rngs: NextItNetNet(arch, rngs=rngs))


def as_module(params: Params, arch: NextItNetArch) -> NextItNetNet:
    """The NNX module holding ``params``; raises NextItNetError if ``params`` does not have the
    structure and shapes ``init_params`` gives for ``arch``."""
    return _pure(arch).merge(params, check=True, error=NextItNetError, about=f"{arch}")


def init_params(key: jax.Array, arch: NextItNetArch) -> Params:
    """A fresh parameter dict (RecBole's initialization, module docstring), all float32.

    Keys: ``item_embedding`` [I+1, d] (row 0 = padding, zeros), ``block_{b}/conv{1,2}/kernel``
    [k, d, d] and ``bias`` [d], ``block_{b}/ln{1,2}/{scale, bias}`` [d], ``final/kernel`` [d, d]
    (laid out [in, out]), ``final/bias`` [d].
    """
    params = _init_pure(lambda rngs: NextItNetNet(arch, rngs=rngs), key)
    params["item_embedding"] = params["item_embedding"].at[0].set(0.0)
    return params


def sequence_output(params: Params, seq, arch: NextItNetArch, *, key: jax.Array | None = None,
                    train: bool = False) -> jax.Array:
    """float32 [B, L, d]: ``final(x_B)`` at every position of ``seq``, 0 at padding positions.

    seq: int [B, L] item ids + 1, 0 = padding (left-padded). The output at position t depends
    on the real items of ``seq[:, :t+1]`` only (causal convolutions). NextItNet has no dropout:
    ``key`` and ``train`` are accepted for the ``SequenceEncoder.forward`` signature and unused.
    Raises NextItNetError for a ``seq`` that is not a rank-2 integer array or ``params`` of
    another layout than ``init_params(., arch)``.
    """
    seq = check_sequences(seq, NextItNetError)
    return as_module(params, arch)(seq)


def user_representation(params: Params, seq, arch: NextItNetArch) -> jax.Array:
    """float32 [B, d]: the output at the last position (RecBole ``forward``)."""
    return sequence_output(params, seq, arch)[:, -1, :]


def item_table(params: Params) -> jax.Array:
    """float32 [I + 1, d]: the item embedding table; row 0 is padding, item dense id i is row i + 1."""
    return params["item_embedding"]


def embed(params: Params, histories, arch: NextItNetArch, chunk_size: int = 1024):
    """(user_emb float32 [U, d], item_emb float32 [I, d]) for scoring by dot product.

    histories: int [U, L] (the "sequences" context: ids + 1, left-padded); users computed
    ``chunk_size`` at a time (``chunked_users``); item_emb = the item table without its padding
    row. Jit-compatible (``arch`` static). Raises NextItNetError for bad ``histories`` or
    ``chunk_size`` < 1.
    """
    histories = check_sequences(histories, NextItNetError, "histories")
    users = chunked_users(lambda s: user_representation(params, s, arch), histories, chunk_size, NextItNetError)
    return users, params["item_embedding"][1:]


def block_weight_norm(params: Params) -> jax.Array:
    """RecBole's ``reg_loss_rb`` without its weight: ``sum ||w||_2`` (Frobenius norm, not squared)
    over the residual blocks' arrays RecBole names ``weight`` (conv kernels, LayerNorm scales)."""
    total = jnp.zeros((), jnp.float32)
    for name, block in params.items():
        if name.startswith("block_"):
            for part in ("conv1", "conv2"):
                total = total + jnp.sqrt(jnp.sum(block[part]["kernel"] ** 2))
            for part in ("ln1", "ln2"):
                total = total + jnp.sqrt(jnp.sum(block[part]["scale"] ** 2))
    return total


# ----------------------------------------------------------------------------- the backbone
@dataclasses.dataclass(frozen=True)
class NextItNetSettings(ModelSettings):
    """NextItNet's config keys (defaults: RecBole 1.2.1's ``NextItNet.yaml`` and
    ``MAX_ITEM_LIST_LENGTH``): ``embedding_size`` d (64), ``block_num`` (5: how often
    ``dilations`` repeats), ``dilations`` ((1, 4)), ``kernel_size`` (3), ``reg_weight`` (1e-5:
    weight of the residual blocks' L2 norms), ``max_seq_len`` (50) and ``seq_loss`` ("ce":
    full-catalog cross-entropy, RecBole's ``loss_type`` CE | "bce": one sampled negative)."""

    embedding_size: int = 64
    block_num: int = 5
    dilations: tuple[int, ...] = (1, 4)
    kernel_size: int = 3
    reg_weight: float = 1e-5
    max_seq_len: int = 50
    seq_loss: str = "ce"

    def validate(self) -> None:
        super().validate()
        self.expect("embedding_size", self.embedding_size >= 1, "an integer >= 1")
        self.expect("block_num", self.block_num >= 1, "an integer >= 1 (NextItNet needs at least one residual block)")
        self.expect("dilations", len(self.dilations) >= 1 and all(r >= 1 for r in self.dilations),
                    "a non-empty list of integers >= 1")
        self.expect("kernel_size", self.kernel_size >= 1, "an integer >= 1")
        self.expect("reg_weight", self.reg_weight >= 0 and math.isfinite(self.reg_weight), "a finite number >= 0")
        self.expect("max_seq_len", self.max_seq_len >= 1, "an integer >= 1 (the longest history a sequence "
                                                          "model reads)")
        self.expect("seq_loss", self.seq_loss in SEQ_LOSSES, f"one of {list(SEQ_LOSSES)}")


def arch_from_config(config, num_items: int) -> NextItNetArch:
    """``NextItNetArch`` of a config with NextItNet's settings for a catalog of ``num_items``."""
    return NextItNetArch(num_items=int(num_items), embedding_size=config.embedding_size,
                         dilations=tuple(config.dilations) * config.block_num, kernel_size=config.kernel_size)


def nextitnet_encoder(config) -> SequenceEncoder:
    """The NextItNet ``SequenceEncoder`` of ``config``: ``embed(params, histories [U, L])`` =
    (last-position outputs [U, d], item table rows 1.. [I, d]); ``forward`` = ``sequence_output``."""
    return id_sequence_encoder("nextitnet", config, arch_from_config=arch_from_config, init_params=init_params,
                               embed=embed, sequence_output=sequence_output)


def block_l2_term(config=None) -> Term:
    """``reg_rb``: ``block_weight_norm(params)`` (weighted by ``reg_weight`` in ``make_nextitnet``)."""
    return Term("reg_rb", lambda x: block_weight_norm(x.params))


def make_nextitnet(config) -> Model:
    """NextItNet: the ``SequenceEncoder`` trained with ``ce_seq`` (or ``bce_seq``, ``seq_loss``)
    + ``reg_weight`` x ``reg_rb`` over the ``"sequences"`` context and batch kind."""
    objective = weighted_sum(term(SEQ_LOSSES[config.seq_loss], config), (block_l2_term(config), config.reg_weight))
    return Model("nextitnet", nextitnet_encoder(config), objective, context="sequences")


#: Shared keys for NextItNet's protocol: those of SASRec / GRU4Rec (leave-one-out by time, the
#: 20-candidate protocol, early stopping on the validation NDCG@10).
NEXTITNET_DEFAULTS = dict(
    batch_size=128, epochs=200, learning_rate=1e-3,
    split="loo_time", evaluation="candidates", topk=(1, 5, 10), metrics=("hit", "ndcg", "mrr"),
    valid_metric="ndcg@10", patience=20,
)


__all__ = ["NextItNetArch", "NextItNetSettings", "NextItNetError", "NextItNetNet", "ResidualBlock", "CausalConv",
           "init_params", "as_module", "sequence_output", "user_representation", "item_table", "embed", "block_weight_norm",
           "arch_from_config", "nextitnet_encoder", "make_nextitnet", "NEXTITNET_DEFAULTS", "SEQ_LOSSES"]
