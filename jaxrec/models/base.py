"""The model protocol: an encoder and an objective over a context built from the dataset.

A backbone is a ``Model`` record of values, built from a ``Config`` by a registered builder
(``jaxrec.registry.MODELS``; ``get_model(config)``):

- ``encoder`` (``Encoder``): ``init(key, num_users, num_items) -> params`` (a plain pytree) and
  ``embed(params, context) -> (user_emb [U, d], item_emb [I, d])``, the representations whose
  dot products score (user, item) pairs; it declares its embedding ``tables`` (where LLM
  initialization writes: ``TableSpec`` names the params entry and how many leading rows are
  padding, e.g. a sequence model's item table has a padding row 0) and whether ``embed``
  ``propagates`` (False: the output is the tables themselves, as in MF).
- ``objective`` (``jaxrec.objectives.Objective``): a weighted sum of loss terms; it fixes the
  batch kind the loop draws ("pairs" with sampled negatives, "positives", "sequences") and the
  per-epoch views (SGL's augmented graphs).
- ``context``: the registered context kind (``jaxrec.registry.CONTEXTS``) the loop builds from
  the dataset once per stage: ``"graph"`` (the normalized training graph), ``"none"``, or a
  sequence model's per-stage histories.

The functions close over the config's scalar hyperparameters only (never over arrays): graphs
and params are always jit arguments. ``Model.init/embed/loss/epoch_views`` are the pure
functions the training loop calls:

- ``loss(params, context, views, batch, key) -> (loss [], aux dict of scalars)``;
- ``epoch_views(context, key) -> pytree | None``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxrec.config import ModelSettings
from jaxrec.nn import xavier_uniform

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """An embedding table of the params: ``params[key]`` [offset + rows, d].

    ``offset`` leading rows are not entities (a padding row 0 of a sequence model's item table).
    """

    key: str
    offset: int = 0

    def rows(self, params: Params) -> jax.Array:
        """The table's entity rows [rows, d] (padding excluded)."""
        table = params[self.key]
        return table[self.offset:] if self.offset else table


@dataclasses.dataclass(frozen=True)
class Encoder:
    """How a backbone turns parameters and a context into user and item representations.

    Attributes:
      name: for messages.
      init: ``(key, num_users, num_items) -> params``.
      embed: ``(params, context) -> (user_emb [U, d], item_emb [I, d])``.
      user_table / item_table: the tables LLM initialization writes (None: no such table, e.g.
        a sequence model computes users from their histories).
      propagates: False when ``embed`` returns the tables themselves (MF).
      init_reads_context: True when the parameter shapes depend on the context (A-LLMRec
        stage 2: the projectors' widths are those of the stage-1 arrays and of the frozen LM):
        ``init(key, num_users, num_items, context_shapes)`` then gets the training context
        with ``jax.ShapeDtypeStruct`` leaves (shapes only: init never closes over its arrays).
      dot_scores: True when ``embed``'s outputs score (user, item) by their dot product (what
        full ranking and ``jaxrec.serve`` compute); False for outputs that feed another scorer
        (A-LLMRec stage 2's soft tokens, ranked by its LM), which ``jaxrec.serve`` refuses.
    """

    name: str
    init: Callable[..., Params]
    embed: Callable[..., tuple[jax.Array, jax.Array]]
    user_table: TableSpec | None = TableSpec("user_embedding")
    item_table: TableSpec | None = TableSpec("item_embedding")
    propagates: bool = True
    init_reads_context: bool = False
    dot_scores: bool = True

    def table(self, params: Params, side: str) -> jax.Array:
        """The full params table (padding rows included) of ``side`` ("user" or "item")."""
        spec = self.user_table if side == "user" else self.item_table
        if spec is None:
            raise ValueError(f"encoder {self.name!r} has no {side} embedding table")
        return params[spec.key]


@dataclasses.dataclass(frozen=True)
class SequenceEncoder(Encoder):
    """An encoder over item sequences (SASRec): ``embed`` reads the per-stage histories context
    (int32 [U, L], item ids + 1, 0 = padding); ``forward(params, seq [B, L], key, train) -> [B, L, d]``
    gives the output at every position (what the sequence objectives score against the item
    table; ``key`` draws dropout when ``train``). No user table; the item table has a padding
    row 0 (``TableSpec("item_embedding", offset=1)``).
    """

    forward: Callable[..., jax.Array] | None = None
    user_table: TableSpec | None = None
    item_table: TableSpec | None = TableSpec("item_embedding", offset=1)


@dataclasses.dataclass(frozen=True)
class TableSettings(ModelSettings):
    """Settings of a backbone over user and item embedding tables trained with BPR + L2 (MF and
    the graph backbones): ``embedding_size`` K, ``reg_weight`` (the L2 term's weight; LightGCN
    eq. 15 / RecBole's ``EmbLoss``) and ``require_pow`` (L2 as the sum of squared norms, True, or
    of norms, RecBole's default)."""

    embedding_size: int = 128
    reg_weight: float = 1e-5
    require_pow: bool = False

    def validate(self) -> None:
        super().validate()
        self.expect("embedding_size", self.embedding_size >= 1, "an integer >= 1")
        self.expect("reg_weight", self.reg_weight >= 0 and math.isfinite(self.reg_weight), "a finite number >= 0")


@dataclasses.dataclass(frozen=True)
class Model:
    """A backbone: ``encoder`` + ``objective`` over a ``context`` kind (module docstring)."""

    name: str
    encoder: Encoder
    objective: Any  # jaxrec.objectives.Objective
    context: str = "graph"

    # -- the pure functions the loop calls ----------------------------------------------
    def init(self, key: jax.Array, num_users: int, num_items: int, context_shapes: Any = None) -> Params:
        """Fresh parameters; ``context_shapes`` (``abstract_context``) reaches encoders that declare
        ``init_reads_context`` (ValueError when such an encoder gets none)."""
        if not self.encoder.init_reads_context:
            return self.encoder.init(key, num_users, num_items)
        if context_shapes is None:
            raise ValueError(f"model {self.name!r}: its parameter shapes come from the context; pass "
                             f"context_shapes=abstract_context(context) to init")
        return self.encoder.init(key, num_users, num_items, context_shapes)

    def embed(self, params: Params, context: Any) -> tuple[jax.Array, jax.Array]:
        return self.encoder.embed(params, context)

    def loss(self, params: Params, context: Any, views: Any, batch: Any, key: jax.Array):
        return self.objective.loss(self.encoder, params, context, views, batch, key)

    def epoch_views(self, context: Any, key: jax.Array) -> Any:
        return self.objective.epoch_views(context, key)

    # -- what the loop asks of it ----------------------------------------------------------
    @property
    def batch_kind(self) -> str:
        return self.objective.batch_kind

    @property
    def needs_negatives(self) -> bool:
        return self.batch_kind == "pairs"

    @property
    def tables(self) -> dict[str, TableSpec]:
        """The embedding tables LLM initialization may write, by side."""
        return {side: spec for side, spec in (("user", self.encoder.user_table), ("item", self.encoder.item_table))
                if spec is not None}


def abstract_context(context: Any) -> Any:
    """``context`` with every array leaf replaced by its ``jax.ShapeDtypeStruct`` (static fields kept)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype), context)


def xavier_uniform_table(key: jax.Array, rows: int, dim: int) -> jax.Array:
    """[rows, dim] table ~ U(-b, b), b = sqrt(6 / (rows + dim)) (torch's xavier_uniform_ on an nn.Embedding)."""
    return xavier_uniform(key, (rows, dim))


def init_tables(key: jax.Array, num_users: int, num_items: int, dim: int) -> Params:
    """The user and item embedding tables every built-in CF backbone starts from."""
    ku, ki = jax.random.split(key)
    return {
        "user_embedding": xavier_uniform_table(ku, num_users, dim),
        "item_embedding": xavier_uniform_table(ki, num_items, dim),
    }


def dot_scores(user_emb: jax.Array, item_emb: jax.Array) -> jax.Array:
    """Row-wise dot products of [B, d] and [B, d] -> [B]."""
    return jnp.sum(user_emb * item_emb, axis=-1)
