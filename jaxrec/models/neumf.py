"""NCF / NeuMF (He et al., WWW 2017) as RecBole builds it, in Flax NNX behind pure functions.

A general (non-sequential) model: scores a (user, item) pair from ID embeddings only. The
network follows RecBole 1.2.1's ``recbole/model/general_recommender/neumf.py`` (the paper's
section 3.4, Fig. 3, without pre-training):

- GMF tower: ``g = p_u * q_i`` (elementwise; ``user_mf`` / ``item_mf`` tables [., d_mf]);
- MLP tower: ``m = MLP([p'_u ; q'_i])`` (``user_mlp`` / ``item_mlp`` tables [., d_mlp]);
  RecBole's ``MLPLayers([2 d_mlp] + mlp_hidden_size, dropout)``: per layer
  ``Dropout -> Linear -> ReLU`` (ReLU after the last layer too);
- ``logit(u, i) = w^T [g ; m] + b`` (``predict``: ``nn.Linear(d_mf + h_last, 1)``); RecBole's
  ``predict`` is ``sigmoid(logit)``, which ranks the same.

Loss (``NeuMFSettings.pair_loss``, batch kind ``"pairs"``: user, positive, one uniformly sampled
negative the user never interacted with in training): ``"bce"`` (default; RecBole's NeuMF is
pointwise, ``BCEWithLogitsLoss`` over positives labelled 1 and sampled negatives labelled 0, one
negative per positive: ``train_neg_sample_args`` ``sample_num 1``) = the mean over the 2B
examples, ``(mean softplus(-logit_pos) + mean softplus(logit_neg)) / 2``; ``"bpr"`` =
``mean(-log sigmoid(logit_pos - logit_neg))`` (paper-agnostic alternative). No L2 term
(RecBole's NeuMF has none).

Initialization as RecBole's ``_init_weights``: the four embedding tables N(0, 0.01^2); the
linear layers keep ``nn.Linear``'s default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (weight and bias).

**Scoring by dot product.** jaxrec's evaluation protocols and ``jaxrec.serve`` rank by
``user_emb @ item_emb.T``; NeuMF's score is not bilinear (the MLP tower is nonlinear in the
pair). ``embed`` therefore returns the exact score table as the user side and the identity as
the item side: ``user_emb`` = ``logits`` float32 [U, I] (every user against every item,
computed a chunk of users at a time, at most about 2^23 hidden activations per chunk), and
``item_emb`` = ``eye(I)`` [I, I], so that ``user_emb @ item_emb.T`` is the score table itself,
bit for bit. Memory O(U I + I^2) and one extra U x I x I matmul per evaluation: cheap at
MovieLens sizes (ml-100k: 943 x 1682, ml-1m: 6040 x 3706), prohibitive beyond ~10^4 items
(``check_neumf`` refuses catalogs over ``MAX_ITEMS``). The MLP tower's first layer is split
(``W1 = [W_u ; W_i]``), so the all-items score costs ``U I h_1 h_2 + ...``, not a forward per pair.

Parameters are a plain nested dict (``jaxrec.nn``): ``user_mf`` [U, d_mf], ``item_mf`` [I, d_mf],
``user_mlp`` [U, d_mlp], ``item_mlp`` [I, d_mlp], ``mlp_{l}/{kernel [in, out], bias [out]}``,
``predict/{kernel [d_mf + h_last, 1], bias [1]}``. Errors: ``NeuMFError`` (a ``JaxrecError``
and a ``ValueError``) naming the field or argument; bad config values raise ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.config import ConfigError, ModelSettings
from jaxrec.errors import JaxrecError
from jaxrec.losses import bpr_loss
from jaxrec.models.base import Encoder, Model, TableSpec
from jaxrec.models.dropout import HashDropout
from jaxrec.models.sequential import chunked_users
from jaxrec.nn import PureModule, normal, torch_uniform
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import LossInputs, Term, weighted_sum

Params = dict
PAIR_LOSSES = ("bce", "bpr")
#: the largest catalog NeuMF's exact score-table ``embed`` accepts (its [I, I] identity).
MAX_ITEMS = 20_000
#: hidden activations per chunk of users when scoring every item (bounds eval memory).
_CHUNK_ELEMENTS = 1 << 23


class NeuMFError(JaxrecError, ValueError):
    """A NeuMF setting or input is invalid; the message names the field or argument."""


@dataclasses.dataclass(frozen=True)
class NeuMFArch:
    """NeuMF's network sizes (defaults: RecBole's ``NeuMF.yaml``). num_users: U; num_items: I;
    mf_size: d_mf; mlp_size: d_mlp; hidden: the MLP tower's widths; dropout: rate in [0, 1)
    before each MLP layer. Raises ``NeuMFError`` naming the bad field."""

    num_users: int
    num_items: int
    mf_size: int = 64
    mlp_size: int = 64
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "mf_size", "mlp_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NeuMFError(f"NeuMFArch.{name}: expected an integer >= 1, got {v!r}")
        if (not isinstance(self.hidden, tuple) or not self.hidden
                or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden)):
            raise NeuMFError(f"NeuMFArch.hidden: expected a non-empty tuple of integers >= 1, got {self.hidden!r}")
        if isinstance(self.dropout, bool) or not (isinstance(self.dropout, (int, float))
                                                  and 0.0 <= self.dropout < 1.0):
            raise NeuMFError(f"NeuMFArch.dropout: expected a rate in [0, 1), got {self.dropout!r}")


class NeuMFNet(nnx.Module):
    """GMF + MLP towers. ``__call__(user [B], item [B], train, rngs) -> logits [B]`` scores pairs;
    ``all_items(user [B]) -> logits [B, I]`` scores every item (no dropout)."""

    def __init__(self, s: NeuMFArch, rngs: nnx.Rngs):
        init = normal(0.01)  # RecBole _init_weights: normal_(0, 0.01) on every nn.Embedding
        self.user_mf = nnx.Param(init(rngs.params(), (s.num_users, s.mf_size)))
        self.item_mf = nnx.Param(init(rngs.params(), (s.num_items, s.mf_size)))
        self.user_mlp = nnx.Param(init(rngs.params(), (s.num_users, s.mlp_size)))
        self.item_mlp = nnx.Param(init(rngs.params(), (s.num_items, s.mlp_size)))
        widths = (2 * s.mlp_size,) + s.hidden
        self.num_layers = len(s.hidden)
        for layer, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            setattr(self, f"mlp_{layer}", nnx.Linear(a, b, kernel_init=torch_uniform(a), bias_init=torch_uniform(a),
                                                     rngs=rngs))
        fan_in = s.mf_size + s.hidden[-1]
        self.predict = nnx.Linear(fan_in, 1, kernel_init=torch_uniform(fan_in), bias_init=torch_uniform(fan_in),
                                  rngs=rngs)
        self.dropout = HashDropout(s.dropout)
        self.mf_size, self.mlp_size = s.mf_size, s.mlp_size

    def _tower(self, h, train: bool, rngs):
        for layer in range(self.num_layers):
            h = self.dropout(h, deterministic=not train, rngs=rngs)
            h = jax.nn.relu(getattr(self, f"mlp_{layer}")(h))
        return h

    def __call__(self, user, item, train: bool = False, rngs=None):
        gmf = self.user_mf[...][user] * self.item_mf[...][item]
        mlp = self._tower(jnp.concatenate([self.user_mlp[...][user], self.item_mlp[...][item]], -1), train, rngs)
        return self.predict(jnp.concatenate([gmf, mlp], -1))[..., 0]

    def all_items(self, user):
        w = self.predict.kernel[...][:, 0]  # [d_mf + h_last]
        w_mf, w_mlp = w[:self.mf_size], w[self.mf_size:]
        gmf = (self.user_mf[...][user] * w_mf) @ self.item_mf[...].T  # [B, I]: sum_k p_uk w_k q_ik
        first = self.mlp_0
        kernel = first.kernel[...]
        a = self.user_mlp[...][user] @ kernel[:self.mlp_size] + first.bias[...]  # [B, h1]
        c = self.item_mlp[...] @ kernel[self.mlp_size:]  # [I, h1]
        h = jax.nn.relu(a[:, None, :] + c[None, :, :])  # [B, I, h1]
        for layer in range(1, self.num_layers):
            h = jax.nn.relu(getattr(self, f"mlp_{layer}")(h))
        return gmf + h @ w_mlp + self.predict.bias[...][0]


# ----------------------------------------------------------------------------- pure API
@functools.lru_cache(maxsize=32)
def _pure(arch: NeuMFArch) -> PureModule:
    return PureModule.of(lambda rngs: NeuMFNet(arch, rngs=rngs))


def as_module(params: Params, arch: NeuMFArch) -> NeuMFNet:
    """The NNX module holding ``params``; NeuMFError if their layout is not ``init_params``'s."""
    return _pure(arch).merge(params, check=True, error=NeuMFError, about=f"{arch}")


def init_params(key: jax.Array, arch: NeuMFArch) -> Params:
    """A fresh parameter dict (RecBole's initialization, module docstring), all float32."""
    return _init_pure(lambda rngs: NeuMFNet(arch, rngs=rngs), key)


def _ids(x, name: str, upper: int) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise NeuMFError(f"{name}: expected integer ids, got dtype {x.dtype}")
    if x.size:
        try:
            lo, hi = int(x.min()), int(x.max())
        except jax.errors.ConcretizationTypeError:  # traced (inside jit): checked where the ids came from
            return x
        if lo < 0 or hi >= upper:
            raise NeuMFError(f"{name}: ids must lie in [0, {upper}), got range [{lo}, {hi}]")
    return x


def pair_logits(params: Params, user, item, arch: NeuMFArch, *, key: jax.Array | None = None,
                train: bool = False) -> jax.Array:
    """float32 [B]: NeuMF's logit of each (user[b], item[b]) pair (dense ids, int [B] each).

    ``train=True`` applies the MLP tower's dropout with ``key`` (required then). Raises
    NeuMFError for non-integer or out-of-range ids (checked outside jit), shapes that differ,
    a missing ``key``, or ``params`` of another layout.
    """
    user, item = _ids(user, "user", arch.num_users), _ids(item, "item", arch.num_items)
    if user.shape != item.shape or user.ndim != 1:
        raise NeuMFError(f"user, item: expected two int arrays [B] of one shape, got {user.shape} and {item.shape}")
    if train and key is None:
        raise NeuMFError("key: a jax.random key is required when train=True (dropout)")
    rngs = nnx.Rngs(dropout=key) if train else None
    return as_module(params, arch)(user, item, train, rngs)


def score_all(params: Params, user, arch: NeuMFArch) -> jax.Array:
    """float32 [B, I]: the logit of every item for each of ``user`` (dense ids int [B]), no
    dropout; equals ``pair_logits`` of every pair (split first MLP layer, module docstring)."""
    user = _ids(user, "user", arch.num_users)
    if user.ndim != 1:
        raise NeuMFError(f"user: expected int ids [B], got shape {user.shape}")
    return as_module(params, arch).all_items(user)


def user_chunk(arch: NeuMFArch) -> int:
    """Users scored at once by ``embed``: about 2^23 first-layer activations ([c, I, h_1])."""
    return max(1, _CHUNK_ELEMENTS // (arch.num_items * arch.hidden[0]))


def embed(params: Params, arch: NeuMFArch, chunk_size: int | None = None):
    """(score table float32 [U, I], identity float32 [I, I]): ``user_emb @ item_emb.T`` is the
    logit of every (user, item) pair (module docstring, "Scoring by dot product"). Users are
    scored ``chunk_size`` at a time (default ``user_chunk(arch)``). Jit-compatible."""
    users = jnp.arange(arch.num_users, dtype=jnp.int32)[:, None]
    table = chunked_users(lambda u: as_module(params, arch).all_items(u[:, 0]), users,
                          chunk_size or user_chunk(arch), NeuMFError)
    return table, jnp.eye(arch.num_items, dtype=table.dtype)


def gmf_user_vectors(params: Params) -> jax.Array:
    """float32 [U, d_mf]: ``p_u * w_mf``, the GMF user table scaled elementwise by the GMF half of
    the ``predict`` layer's kernel (``w_mf = predict/kernel[:d_mf, 0]``).

    With ``gmf_item_vectors``, ``gmf_user_vectors(params)[u] . gmf_item_vectors(params)[i]`` is the
    GMF tower's part of NeuMF's logit, ``sum_k w_k p_uk q_ik``: the bilinear part of the score (the
    MLP tower is not a dot product of a user and an item vector). A-LLMRec's stage 1 over a NeuMF
    run reads these as the user representation and the item embedding
    (``jaxrec.methods.allmrec.stage1.NEUMF_BACKBONE``)."""
    d_mf = params["user_mf"].shape[1]
    return params["user_mf"] * params["predict"]["kernel"][:d_mf, 0]


def gmf_item_vectors(params: Params) -> jax.Array:
    """float32 [I, d_mf]: the GMF item table ``q_i`` (``item_mf``; row i = dense item id i, no
    padding row): the item side of ``gmf_user_vectors``'s dot product."""
    return params["item_mf"]


# ----------------------------------------------------------------------------- the backbone
@dataclasses.dataclass(frozen=True)
class NeuMFSettings(ModelSettings):
    """NeuMF's config keys (defaults: RecBole 1.2.1's ``NeuMF.yaml``): ``mf_embedding_size``
    d_mf (64: GMF tables), ``mlp_embedding_size`` d_mlp (64: MLP tables), ``mlp_hidden_size``
    ((128, 64): the MLP tower), ``dropout_rate`` (0.1: before each MLP layer, RecBole's
    ``dropout_prob``) and ``pair_loss`` ("bce": pointwise BCE on the positive and the sampled
    negative, RecBole's | "bpr")."""

    mf_embedding_size: int = 64
    mlp_embedding_size: int = 64
    mlp_hidden_size: tuple[int, ...] = (128, 64)
    dropout_rate: float = 0.1
    pair_loss: str = "bce"

    def validate(self) -> None:
        super().validate()
        self.expect("mf_embedding_size", self.mf_embedding_size >= 1, "an integer >= 1")
        self.expect("mlp_embedding_size", self.mlp_embedding_size >= 1, "an integer >= 1")
        self.expect("mlp_hidden_size", len(self.mlp_hidden_size) >= 1 and all(h >= 1 for h in self.mlp_hidden_size),
                    "a non-empty list of integers >= 1 (the MLP tower's widths)")
        self.expect("dropout_rate", 0.0 <= self.dropout_rate < 1.0, "a rate in [0, 1)")
        self.expect("pair_loss", self.pair_loss in PAIR_LOSSES, f"one of {list(PAIR_LOSSES)}")


def arch_from_config(config, num_users: int, num_items: int) -> NeuMFArch:
    """``NeuMFArch`` of a config with NeuMF's settings for U users and I items."""
    return NeuMFArch(num_users=int(num_users), num_items=int(num_items), mf_size=config.mf_embedding_size,
                     mlp_size=config.mlp_embedding_size, hidden=tuple(config.mlp_hidden_size),
                     dropout=config.dropout_rate)


def neumf_encoder(config) -> Encoder:
    """NeuMF's ``Encoder``: ``embed(params, None)`` = (score table [U, I], eye [I, I]); tables
    ``user_mf`` / ``item_mf`` (the GMF tower's: where LLM initialization writes)."""


    def init(key, num_users, num_items):
        check_catalog(num_items)
        return init_params(key, arch_from_config(config, num_users, num_items))

    def embed_fn(params, context):
        return embed(params, _arch_of(config, params))

    return Encoder(name="neumf", init=init, embed=embed_fn, user_table=TableSpec("user_mf"),
                   item_table=TableSpec("item_mf"))


def _arch_of(config, params) -> NeuMFArch:
    return arch_from_config(config, params["user_mf"].shape[0], params["item_mf"].shape[0])


def pair_term(config) -> Term:
    """NeuMF's loss on a "pairs" batch (``pair_loss``: "bce" or "bpr", module docstring); the
    positive and negative pairs go through one forward (one dropout draw for the 2B rows)."""
    kind = config.pair_loss

    def loss(x: LossInputs):
        arch = _arch_of(config, x.params)
        user, pos, neg = x.batch["user"], x.batch["pos"], x.batch["neg"]
        logits = pair_logits(x.params, jnp.concatenate([user, user]), jnp.concatenate([pos, neg]), arch,
                             key=x.key, train=True)
        lp, ln = jnp.split(logits, 2)
        if kind == "bpr":
            return bpr_loss(lp, ln)
        return 0.5 * (jnp.mean(jax.nn.softplus(-lp)) + jnp.mean(jax.nn.softplus(ln)))

    return Term(f"neumf_{kind}", loss, batch_kind="pairs")


def check_neumf(config) -> None:
    """``ConfigError`` for ``sharding`` other than "none" (NeuMF's score-table ``embed`` is not
    split over a mesh)."""
    if config.sharding != "none":
        raise ConfigError(f"sharding={config.sharding!r}: model 'neumf' runs on one device (its embed is the "
                          "[U, I] score table); use sharding='none'")


def check_catalog(num_items: int) -> None:
    """NeuMFError when ``num_items`` exceeds ``MAX_ITEMS`` (the [I, I] identity of ``embed``)."""
    if num_items > MAX_ITEMS:
        raise NeuMFError(f"num_items={num_items}: NeuMF's exact score-table evaluation holds an [I, I] identity; "
                         f"catalogs up to {MAX_ITEMS} items are supported")


def make_neumf(config) -> Model:
    """NeuMF: GMF + MLP towers trained with ``pair_loss`` on "pairs" batches; context "none"."""
    return Model("neumf", neumf_encoder(config), weighted_sum(pair_term(config)), context="none")


#: Shared keys for NeuMF as A-LLMRec's Table 1 evaluates it (leave-one-out by time, the
#: 20-candidate protocol, early stopping on the validation NDCG@10) with RecBole's optimizer
#: settings: lr 1e-3 and ``train_batch_size`` 2048 *examples*, which RecBole fills with 1024
#: positives and their 1024 sampled negatives (its ``batch_size // (1 + sample_num)``): here
#: ``batch_size`` counts (user, positive, negative) rows, so 1024.
NEUMF_DEFAULTS = dict(
    batch_size=1024, epochs=300, learning_rate=1e-3,
    split="loo_time", evaluation="candidates", topk=(1, 5, 10), metrics=("hit", "ndcg", "mrr"),
    valid_metric="ndcg@10", patience=20,
)


__all__ = ["NeuMFArch", "NeuMFSettings", "NeuMFError", "NeuMFNet", "init_params", "as_module", "pair_logits",
           "score_all", "embed", "user_chunk", "gmf_user_vectors", "gmf_item_vectors", "arch_from_config", "neumf_encoder", "pair_term", "check_neumf",
           "make_neumf", "NEUMF_DEFAULTS", "PAIR_LOSSES", "MAX_ITEMS"]
