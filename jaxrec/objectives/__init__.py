"""Objectives as values: loss terms that compose by a weighted sum, like ``optax.chain``.

A **term** (``Term``) is one loss: a pure function of ``LossInputs`` (the encoder, parameters,
model context, per-epoch views, batch and a key) returning a scalar, plus what it needs from
the training loop: a batch kind (``"pairs"``: user, pos and a sampled ``neg``; ``"positives"``:
user and pos only; ``"sequences"``: per-user windows), optional per-epoch ``views`` (SGL's
augmented graphs) and an optional host-side ``prepare_batch`` (e.g. the batch's distinct ids).

An **objective** (``Objective``) is a weighted sum of terms, ``weighted_sum(t1, (t2, w2), ...)``:
``loss = sum_k w_k * t_k`` evaluated in the order given (a weight of 1 adds the term as is), with
every term's value in ``aux`` under its name. Terms with weight 0 are not evaluated (their
views are not drawn either) and report 0. So SGCL is the LightGCN encoder with
``weighted_sum(term("sgcl"), (term("reg"), reg_weight))``, not a copied backbone.

Terms are registered by name in ``jaxrec.registry.OBJECTIVES`` as builders ``(Config) -> Term``:
``bpr`` and ``reg`` (``jaxrec.objectives.ranking``), ``ssl`` and ``sgcl``
(``jaxrec.objectives.contrast``), ``bce_seq`` and ``ce_seq`` (``jaxrec.objectives.sequential``). ``term(name, config)`` builds one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxrec.registry import OBJECTIVES

__all__ = ["LossInputs", "Term", "Objective", "weighted_sum", "term", "batch_kind_of"]


class LossInputs:
    """Everything a term reads, for one evaluation of the loss (inside the traced step).

    The encoder's output is computed once however many terms read it (``embeddings``), and
    so is every gathered batch block (``rows``, ``ego_rows``): terms share one computation.
    """

    def __init__(self, encoder: Any, params: Any, context: Any, views: Mapping[str, Any] | None,
                 batch: Mapping[str, Any], key: jax.Array):
        self.encoder = encoder
        self.params = params
        self.context = context
        self.views = views or {}
        self.batch = batch
        self.key = key
        self._rows: dict[tuple, jax.Array] = {}

    @functools.cached_property
    def embeddings(self) -> tuple[jax.Array, jax.Array]:
        """(user_emb [U, d], item_emb [I, d]): the encoder's output over the context."""
        return self.encoder.embed(self.params, self.context)

    @property
    def batch_size(self) -> int:
        return int(self.batch["user"].shape[0])

    def rows(self, side: str, column: str) -> jax.Array:
        """Final embeddings [B, d] of ``batch[column]`` on ``side`` ("user" or "item")."""
        key = ("final", side, column)
        if key not in self._rows:
            user_emb, item_emb = self.embeddings
            self._rows[key] = (user_emb if side == "user" else item_emb)[self.batch[column]]
        return self._rows[key]

    def shared(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per loss evaluation under ``name``, however many terms ask (e.g. a
        forward pass every term of a backbone reads)."""
        key = ("shared", name)
        if key not in self._rows:
            self._rows[key] = compute()
        return self._rows[key]

    def ego_rows(self, side: str, column: str) -> jax.Array:
        """Ego (layer-0, parameter table) embeddings [B, d] of ``batch[column]`` on ``side``.

        For an encoder without propagation (``propagates=False``: its output is its tables)
        these are the same arrays as ``rows``.
        """
        if not self.encoder.propagates:
            return self.rows(side, column)
        key = ("ego", side, column)
        if key not in self._rows:
            self._rows[key] = self.encoder.table(self.params, side)[self.batch[column]]
        return self._rows[key]


@dataclasses.dataclass(frozen=True)
class Term:
    """One loss term.

    Attributes:
      name: key of its value in ``aux`` (and in the training log).
      loss: ``(LossInputs) -> []`` scalar.
      batch_kind: the batch it needs ("pairs", "positives", "sequences"), None if any.
      views: ``(context, key) -> pytree``, drawn once per epoch (None: no views).
      prepare_batch: host-side ``(batch dict, sizes) -> batch dict`` (None: nothing to add).
    """

    name: str
    loss: Callable[[LossInputs], jax.Array]
    batch_kind: str | None = None
    views: Callable[..., Any] | None = None
    prepare_batch: Callable[[dict, Any], dict] | None = None


def batch_kind_of(kinds: Sequence[str | None]) -> str:
    """The one batch kind that satisfies every term (``ValueError`` when two conflict)."""
    given = {k for k in kinds if k is not None}
    if len(given) > 1:
        raise ValueError(f"objective: terms need different batch kinds {sorted(given)}; one batch serves all terms")
    return given.pop() if given else "positives"


@dataclasses.dataclass(frozen=True)
class Objective:
    """A weighted sum of terms (build with ``weighted_sum``)."""

    terms: tuple[tuple[Term, float], ...]

    def __post_init__(self):
        names = [t.name for t, _ in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"objective: term names must be distinct, got {names}")
        object.__setattr__(self, "_views_jit", jax.jit(self._views))

    @property
    def batch_kind(self) -> str:
        return batch_kind_of([t.batch_kind for t, _ in self.terms])

    @property
    def active(self) -> tuple[tuple[Term, float], ...]:
        return tuple((t, w) for t, w in self.terms if w != 0)

    def loss(self, encoder: Any, params: Any, context: Any, views: Any, batch: Mapping[str, Any],
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``(sum_k w_k * term_k, {name: term value})`` over ``batch``. Pure; jit it."""
        inputs = LossInputs(encoder, params, context, views, batch, key)
        total = None
        aux: dict[str, jax.Array] = {}
        for t, w in self.terms:
            if w == 0:
                continue
            value = t.loss(inputs)
            aux[t.name] = value
            contrib = value if w == 1 else w * value
            total = contrib if total is None else total + contrib
        if total is None:
            raise ValueError("objective: every term has weight 0; nothing to minimize")
        for t, w in self.terms:
            if w == 0:
                aux[t.name] = jnp.zeros((), total.dtype)
        return total, {t.name: aux[t.name] for t, _ in self.terms}

    def _views(self, context: Any, key: jax.Array) -> dict[str, Any]:
        with_views = [t for t, _ in self.active if t.views is not None]
        return {t.name: t.views(context, key if i == 0 else jax.random.fold_in(key, i))
                for i, t in enumerate(with_views)}

    def epoch_views(self, context: Any, key: jax.Array) -> dict[str, Any] | None:
        """Every term's per-epoch views (one jitted call; None when no term draws any)."""
        if not any(t.views is not None for t, _ in self.active):
            return None
        return self._views_jit(context, key)

    def prepare_batch(self, batch: dict, sizes: Any) -> dict:
        """Host-side additions every term asks of a batch (applied in term order)."""
        for t, _ in self.active:
            if t.prepare_batch is not None:
                batch = t.prepare_batch(batch, sizes)
        return batch


def weighted_sum(*terms: Term | tuple[Term, float]) -> Objective:
    """``Objective`` of ``terms``; a bare ``Term`` has weight 1 (``(term, w)`` otherwise)."""
    pairs = []
    for t in terms:
        term_, weight = (t, 1.0) if isinstance(t, Term) else t
        if not isinstance(term_, Term):
            raise TypeError(f"weighted_sum: expected Term or (Term, weight), got {t!r}")
        pairs.append((term_, float(weight)))
    if not pairs:
        raise ValueError("weighted_sum: needs at least one term")
    return Objective(tuple(pairs))


def term(name: str, config: Any) -> Term:
    """The registered term ``name`` built for ``config``."""
    return OBJECTIVES.get(name)(config)


# Built-in terms register on import.
from jaxrec.objectives import contrast, ranking, sequential  # noqa: E402,F401
