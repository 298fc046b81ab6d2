"""GRU4Rec (Hidasi et al., ICLR 2016) in the sequential form RecBole uses, in Flax NNX behind pure functions.

The network follows RecBole's ``recbole/model/sequential_recommender/gru4rec.py`` (Tan et al.'s
"Improved RNNs for session-based recommendations" setting: one output per position, the last
real one is the user):

- input ``seq`` int32 [B, L]: item ids + 1, 0 = padding, LEFT-padded (the "sequences" batch
  kind and context, ``jaxrec.train.batches`` / ``jaxrec.models.contexts``);
- ``x = Dropout(item_emb[seq])`` (embedding dropout only: RecBole's ``emb_dropout``);
- ``num_layers`` stacked GRU layers of width ``hidden_size`` (``torch.nn.GRU`` with
  ``batch_first=True``, no inter-layer dropout), each step in torch's equations, gates in
  torch's order r, z, n::

      r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
      z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
      n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
      h' = (1 - z) * n + z * h

  with h_0 = 0; RecBole builds the GRU with ``bias=False`` (all b = 0, no bias arrays), which
  is the default here (``gru_bias=False``); ``gru_bias=True`` adds torch's four bias vectors;
- ``out_t = dense(h_t)`` (``nn.Linear(hidden_size, embedding_size)``) at every position;
  the output at the last position is the user representation (RecBole's
  ``gather_indexes(gru_output, item_seq_len - 1)`` on right-padded input);
- logit of item ``i`` at position t = ``out_t . item_emb[i]`` (the shared item table).

Padding: at a position where ``seq == 0`` the state is carried over unchanged (``h_t = h_{t-1}``)
and the output is set to 0. With left padding the state therefore stays h_0 = 0 through the
padding, so the output at every real position (and at the last one) equals the GRU run over the
real items alone, which is what RecBole computes on its right-padded batches; more or less left
padding does not change it.

Initialization as RecBole's ``_init_weights``: the item table ``xavier_normal_``, N(0, 2/(I+1+d))
(row 0, padding, set to 0: it never reaches an output, and its gradient is 0); the first GRU
layer's input and recurrent weights ``xavier_uniform_`` on torch's [3h, in] / [3h, h] shapes,
U(-b, b) with b = sqrt(6/(in + 3h)) / sqrt(6/(4h)); the weights of layers 2.. (RecBole only
re-initializes layer 0) and any GRU biases keep torch's RNN default U(-1/sqrt(h), 1/sqrt(h));
``dense`` keeps ``nn.Linear``'s default, U(-1/sqrt(h), 1/sqrt(h)) for weight and bias.

Loss (``seq_loss``): RecBole's default for GRU4Rec is ``loss_type="CE"`` (full softmax
cross-entropy of the last position's output over the whole catalog; its ``GRU4Rec.yaml``).
jaxrec's default is the shared ``bce_seq`` term (``seq_loss="bce"``;
``jaxrec.objectives.sequential``: at every position with a next item, BCE of that item's logit
and of one sampled negative's), the loss SASRec trains with. ``seq_loss="ce"`` trains with
``ce_seq`` instead: full-catalog cross-entropy at every position with a next item, RecBole's CE
over all of a window's prefixes at once (what the RecBole parity runs use).

Parameters are a plain nested dict (``jaxrec.nn``: ``init_params`` / ``PureModule.merge``):
``item_embedding`` [I+1, d], ``gru_{l}/{kernel_ih [in, 3h], kernel_hh [h, 3h]}`` (the transposes
of torch's ``weight_ih_l{l}`` / ``weight_hh_l{l}``, columns r | z | n) plus ``bias_ih`` / ``bias_hh``
[3h] when ``gru_bias``, ``dense/{kernel [h, d], bias [d]}``. Every function rebuilds the module
inside, so they jit with ``arch`` static (``GRU4RecArch``: a frozen, hashable dataclass of the
network's sizes). ``GRU4RecSettings`` is the backbone's part of a ``jaxrec.Config``;
``arch_from_config`` maps it onto a ``GRU4RecArch`` for a catalog of ``num_items``.

Errors: ``GRU4RecError`` (a ``jaxrec.errors.JaxrecError`` and a ``ValueError``) naming the bad
field or argument; bad config values raise ``jaxrec.config.ConfigError`` naming the key.
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
from jaxrec.models.sequential import SEQ_LOSSES, check_sequences, chunked_users, id_sequence_encoder
from jaxrec.nn import PureModule, torch_uniform, xavier_normal, xavier_uniform
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import term, weighted_sum

Params = dict


class GRU4RecError(JaxrecError, ValueError):
    """A GRU4Rec setting or input is invalid; the message names the field or argument."""


@dataclasses.dataclass(frozen=True)
class GRU4RecArch:
    """GRU4Rec's network sizes (defaults: RecBole's ``GRU4Rec.yaml``).

    num_items: I (the item table has I + 1 rows, row 0 = padding); embedding_size: d (item
    table and output width); hidden_size: h (GRU state width); num_layers: stacked GRU layers;
    dropout: embedding dropout rate in [0, 1); bias: whether the GRU has torch's bias vectors
    (RecBole: False). Raises ``GRU4RecError`` naming the bad field.
    """

    num_items: int
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("num_items", "embedding_size", "hidden_size", "num_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GRU4RecError(f"GRU4RecArch.{name}: expected an integer >= 1, got {v!r}")
        if isinstance(self.dropout, bool) or not (isinstance(self.dropout, (int, float))
                                                  and 0.0 <= self.dropout < 1.0):
            raise GRU4RecError(f"GRU4RecArch.dropout: expected a rate in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bias, bool):
            raise GRU4RecError(f"GRU4RecArch.bias: expected a bool, got {self.bias!r}")


# ----------------------------------------------------------------------------- modules
class GRULayer(nnx.Module):
    """One ``torch.nn.GRU`` layer over a whole sequence: ``__call__(x [B, L, in], keep [B, L]) -> [B, L, h]``.

    ``kernel_ih`` [in, 3h] and ``kernel_hh`` [h, 3h] hold torch's ``weight_ih`` / ``weight_hh``
    transposed (columns: r | z | n); ``bias_ih`` / ``bias_hh`` [3h] only with ``bias``. The
    input projections of all positions are one matmul; ``jax.lax.scan`` runs the recurrence
    over time. Where ``keep`` is False the state is carried over unchanged.
    """

    def __init__(self, in_size: int, hidden: int, *, first: bool, bias: bool, rngs: nnx.Rngs):
        default = torch_uniform(hidden)  # torch RNN reset_parameters: U(-1/sqrt(h), 1/sqrt(h)) for all
        if first:  # RecBole _init_weights: xavier_uniform_ on weight_ih_l0 [3h, in] / weight_hh_l0 [3h, h]
            w_ih = xavier_uniform(rngs.params(), (in_size, 3 * hidden))
            w_hh = xavier_uniform(rngs.params(), (hidden, 3 * hidden))
        else:
            w_ih = default(rngs.params(), (in_size, 3 * hidden))
            w_hh = default(rngs.params(), (hidden, 3 * hidden))
        self.kernel_ih = nnx.Param(w_ih)
        self.kernel_hh = nnx.Param(w_hh)
        self.has_bias = bias
        if bias:
            self.bias_ih = nnx.Param(default(rngs.params(), (3 * hidden,)))
            self.bias_hh = nnx.Param(default(rngs.params(), (3 * hidden,)))
        self.hidden = hidden

    def __call__(self, x: jax.Array, keep: jax.Array) -> jax.Array:
        hd = self.hidden
        w_hh = self.kernel_hh[...]
        gi = x @ self.kernel_ih[...]  # [B, L, 3h]
        b_hh = None
        if self.has_bias:
            gi = gi + self.bias_ih[...]
            b_hh = self.bias_hh[...]

        def step(h, inputs):
            gi_t, keep_t = inputs  # [B, 3h], [B, 1]
            gh = h @ w_hh
            if b_hh is not None:
                gh = gh + b_hh
            r = jax.nn.sigmoid(gi_t[:, :hd] + gh[:, :hd])
            z = jax.nn.sigmoid(gi_t[:, hd:2 * hd] + gh[:, hd:2 * hd])
            n = jnp.tanh(gi_t[:, 2 * hd:] + r * gh[:, 2 * hd:])
            h_new = (1.0 - z) * n + z * h
            h = jnp.where(keep_t, h_new, h)
            return h, h

        h0 = jnp.zeros((x.shape[0], hd), x.dtype)
        xs = (jnp.swapaxes(gi, 0, 1), jnp.swapaxes(keep, 0, 1)[..., None])  # time-major
        _, hs = jax.lax.scan(step, h0, xs)
        return jnp.swapaxes(hs, 0, 1)


class GRU4RecNet(nnx.Module):
    """The whole network: ``__call__(seq [B, L], train, rngs) -> [B, L, d]`` (0 at padding positions).

    The item table ``item_embedding`` [I + 1, d] is a plain ``nnx.Param`` at the top of the
    parameter dict (``params["item_embedding"]``: what LLM initialization writes, ``TableSpec``
    offset 1); the layers are ``gru_0 .. gru_{num_layers-1}`` and ``dense``.
    """

    def __init__(self, s: GRU4RecArch, rngs: nnx.Rngs):
        d, hd = s.embedding_size, s.hidden_size
        self.item_embedding = nnx.Param(xavier_normal(rngs.params(), (s.num_items + 1, d)))
        self.dropout = HashDropout(s.dropout)
        self.num_layers = s.num_layers
        for layer in range(s.num_layers):  # named attributes: the pure dict has string keys only
            setattr(self, f"gru_{layer}", GRULayer(d if layer == 0 else hd, hd, first=layer == 0, bias=s.bias,
                                                   rngs=rngs))
        self.dense = nnx.Linear(hd, d, kernel_init=torch_uniform(hd), bias_init=torch_uniform(hd), rngs=rngs)

    def __call__(self, seq, train: bool = False, rngs=None):
        keep = seq != 0
        x = self.dropout(self.item_embedding[...][seq], deterministic=not train, rngs=rngs)
        for layer in range(self.num_layers):
            x = getattr(self, f"gru_{layer}")(x, keep)
        return jnp.where(keep[..., None], self.dense(x), jnp.zeros((), x.dtype))


# ----------------------------------------------------------------------------- pure API
@functools.lru_cache(maxsize=32)
def _pure(arch: GRU4RecArch) -> PureModule:
    return PureModule.of(lambda rngs: GRU4RecNet(arch, rngs=rngs))


def as_module(params: Params, arch: GRU4RecArch) -> GRU4RecNet:
    """The NNX module holding ``params`` (``jaxrec.nn.PureModule.merge``); raises GRU4RecError if
    ``params`` does not have the structure and shapes ``init_params`` gives for ``arch``."""
    return _pure(arch).merge(params, check=True, error=GRU4RecError, about=f"{arch}")


def init_params(key: jax.Array, arch: GRU4RecArch) -> Params:
    """A fresh parameter dict (RecBole's initialization, see the module docstring), all float32.

    Keys: ``item_embedding`` [I+1, d] (row 0 = padding, zeros), ``gru_{l}/kernel_ih`` [in, 3h]
    (in = d for l = 0, else h), ``gru_{l}/kernel_hh`` [h, 3h] (+ ``bias_ih``, ``bias_hh`` [3h]
    when ``arch.bias``), ``dense/kernel`` [h, d], ``dense/bias`` [d].
    """
    params = _init_pure(lambda rngs: GRU4RecNet(arch, rngs=rngs), key)
    params["item_embedding"] = params["item_embedding"].at[0].set(0.0)
    return params


def _check_seq(seq, name: str = "seq") -> jax.Array:
    return check_sequences(seq, GRU4RecError, name)


def sequence_output(params: Params, seq, arch: GRU4RecArch, *, key: jax.Array | None = None,
                    train: bool = False) -> jax.Array:
    """float32 [B, L, d]: ``dense(h_t)`` at every position of ``seq``, 0 at padding positions.

    seq: int [B, L] item ids + 1 (at most ``arch.num_items``), 0 = padding (left-padded; a
    padding position anywhere just carries the state over). The output at position t depends
    on the real items of ``seq[:, :t+1]`` only. ``train=True`` applies embedding dropout with
    ``key`` (required then); ``train=False`` is deterministic (``key`` ignored).
    Raises GRU4RecError for a ``seq`` that is not a rank-2 integer array, a missing ``key``,
    or ``params`` of another layout than ``init_params(., arch)``.
    """
    seq = _check_seq(seq)
    if train and key is None:
        raise GRU4RecError("key: a jax.random key is required when train=True (dropout)")
    rngs = nnx.Rngs(dropout=key) if train else None
    return as_module(params, arch)(seq, train, rngs)


def user_representation(params: Params, seq, arch: GRU4RecArch) -> jax.Array:
    """float32 [B, d]: the output at the last position (RecBole ``forward``: ``gather_indexes(.., len - 1)``)."""
    return sequence_output(params, seq, arch)[:, -1, :]


def item_table(params: Params) -> jax.Array:
    """float32 [I + 1, d]: the item embedding table; row 0 is padding, item dense id i is row i + 1."""
    return params["item_embedding"]


def embed(params: Params, histories, arch: GRU4RecArch, chunk_size: int = 1024):
    """(user_emb float32 [U, d], item_emb float32 [I, d]) for scoring by dot product.

    histories: int [U, L] (the "sequences" context of the stage: ids + 1, left-padded);
    user_emb[u] is the last-position output of row u, computed ``chunk_size`` users at a time
    (``lax.map``: only one chunk's activations live at once); item_emb = the item table without
    its padding row (dense id i -> row i). Jit-compatible (``arch`` static). Raises GRU4RecError
    for bad ``histories`` or ``chunk_size`` < 1.
    """
    histories = _check_seq(histories, "histories")
    users = chunked_users(lambda s: user_representation(params, s, arch), histories, chunk_size, GRU4RecError)
    return users, item_table(params)[1:]


# ----------------------------------------------------------------------------- the backbone
@dataclasses.dataclass(frozen=True)
class GRU4RecSettings(ModelSettings):
    """GRU4Rec's config keys (defaults: RecBole's ``GRU4Rec.yaml`` and ``MAX_ITEM_LIST_LENGTH``):
    ``embedding_size`` d (64: item table and output width), ``hidden_size`` h (128: GRU state),
    ``num_layers`` (1: stacked GRU layers), ``dropout_rate`` (0.3: embedding dropout, RecBole's
    ``dropout_prob``), ``max_seq_len`` (50: the longest history kept, the most recent items),
    ``gru_bias`` (False: RecBole's ``nn.GRU(bias=False)``; True adds torch's bias vectors) and
    ``seq_loss`` ("bce": one sampled negative per position, SASRec's loss | "ce": full-catalog
    cross-entropy, RecBole's ``loss_type`` CE)."""

    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout_rate: float = 0.3
    max_seq_len: int = 50
    gru_bias: bool = False
    seq_loss: str = "bce"

    def validate(self) -> None:
        super().validate()
        self.expect("embedding_size", self.embedding_size >= 1, "an integer >= 1")
        self.expect("hidden_size", self.hidden_size >= 1, "an integer >= 1 (the GRU state width)")
        self.expect("num_layers", self.num_layers >= 1, "an integer >= 1 (GRU4Rec needs at least one GRU layer)")
        self.expect("dropout_rate", 0.0 <= self.dropout_rate < 1.0, "a rate in [0, 1)")
        self.expect("max_seq_len", self.max_seq_len >= 1, "an integer >= 1 (the longest history a sequence "
                                                          "model reads)")
        self.expect("seq_loss", self.seq_loss in SEQ_LOSSES, f"one of {list(SEQ_LOSSES)}")


def arch_from_config(config, num_items: int) -> GRU4RecArch:
    """``GRU4RecArch`` of a config with GRU4Rec's settings for a catalog of ``num_items``."""
    return GRU4RecArch(num_items=int(num_items), embedding_size=config.embedding_size,
                       hidden_size=config.hidden_size, num_layers=config.num_layers, dropout=config.dropout_rate,
                       bias=config.gru_bias)


def gru4rec_encoder(config) -> SequenceEncoder:
    """The GRU4Rec ``SequenceEncoder`` of ``config``: params from ``init_params``; ``embed(params,
    histories [U, L])`` = (last-position outputs [U, d], item table rows 1.. [I, d]), users in
    chunks of ``config.eval_chunk``; ``forward(params, seq, key, train)`` = ``sequence_output``;
    item table ``TableSpec("item_embedding", offset=1)``, no user table."""
    return id_sequence_encoder("gru4rec", config, arch_from_config=arch_from_config, init_params=init_params,
                               embed=embed, sequence_output=sequence_output)


def make_gru4rec(config) -> Model:
    """GRU4Rec: the ``SequenceEncoder`` trained with ``bce_seq`` (``seq_loss="bce"``, one sampled
    negative per position) or ``ce_seq`` (``"ce"``, RecBole's full-softmax CE) over the
    ``"sequences"`` context and batch kind."""
    return Model("gru4rec", gru4rec_encoder(config), weighted_sum(term(SEQ_LOSSES[config.seq_loss], config)),
                 context="sequences")


#: ``register_model("gru4rec", make_gru4rec, defaults=...)``: the same protocol as SASRec's for
#: the shared keys (leave-one-out by time, 1 + sampled candidates, early stopping on the
#: validation NDCG@10); the network's own defaults are ``GRU4RecSettings``'.
GRU4REC_DEFAULTS = dict(
    batch_size=128, epochs=200, learning_rate=1e-3,
    split="loo_time", evaluation="candidates", topk=(1, 5, 10), metrics=("hit", "ndcg", "mrr"),
    valid_metric="ndcg@10", patience=20,
)


__all__ = ["GRU4RecArch", "GRU4RecSettings", "GRU4RecError", "GRU4RecNet", "GRULayer", "init_params", "as_module",
           "sequence_output", "user_representation", "item_table", "embed", "arch_from_config", "gru4rec_encoder",
           "make_gru4rec", "GRU4REC_DEFAULTS"]
