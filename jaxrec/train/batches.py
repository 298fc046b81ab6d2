"""Training data: what the loop derives once from a dataset, and the batch kinds it draws.

``PreparedData(dataset)`` holds the dataset-derived inputs of a run, each built on first use
and shared by every run that gets the same object (the experiment grids do): the model
contexts by kind (``jaxrec.registry.CONTEXTS``), the negative-sampling index, and the
exclusion pairs and held-out truth of each evaluation stage.

Batch kinds (``jaxrec.registry.BATCH_KINDS``) are factories ``(prepared, config, model) ->
BatchSource``; ``BatchSource.epoch(rng)`` yields one epoch of host batches (dicts of numpy
arrays), each passed through the model objective's ``prepare_batch`` hook:

- ``pairs``: shuffled training pairs with one uniformly sampled negative each (never a
  training positive of the user): ``user``, ``pos``, ``neg`` int32 [B];
- ``positives``: the same pairs without negatives: ``user``, ``pos``;
- ``sequences``: SASRec's training windows (``jaxrec.data.sequences.training_windows`` at
  ``config.max_seq_len``: input ``seq`` = a user's training items but the last, ``pos`` =
  the next item at each position, ``neg`` = one sampled item per non-padding position that
  is never one of the user's training items): ``user`` int32 [B], ``seq``, ``pos``, ``neg``
  int32 [B, L] (item ids + 1, 0 = padding), every window once per epoch in a shuffled
  order, the last batch completed with padding rows so that every batch has ``batch_size``
  rows (one compiled step).

A kind is a ``jaxrec.registry.BatchKind`` record: ``build(prepared, config, model) ->
BatchSource`` and ``check(dataset, config)`` (raises ``DataError`` before any compute when the
dataset cannot give such batches; ``jaxrec.train.check_run``): "pairs" refuses a user who has
every item (no negative to sample), "sequences" a dataset without a user of 2 training items.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from jaxrec.data import DataError, PositiveIndex, exclusion_pairs, sample_negatives, truth
from jaxrec.data.sequences import training_windows, user_sequences, window_batches
from jaxrec.registry import BATCH_KINDS, CONTEXTS, BatchKind

Batch = dict[str, Any]


class Sizes(NamedTuple):
    num_users: int
    num_items: int


class PreparedData:
    """Arrays derived once from ``dataset`` for training and evaluation (built lazily).

    ``exclude``: ``{stage: (users, items)}`` replacing the pairs masked when ranking for that
    stage (e.g. a reduced training set ranked as if the removed interactions were still known).
    """

    def __init__(self, dataset: Any, exclude: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        """``dataset``: a split ``jaxrec.data.Dataset``; ``exclude``: see the class docstring."""
        self.dataset = dataset
        self._cache: dict[tuple, Any] = {("exclude", s): pairs for s, pairs in (exclude or {}).items()}

    @property
    def sizes(self) -> Sizes:
        return Sizes(int(self.dataset.num_users), int(self.dataset.num_items))

    def contexts(self, kind: str, config: Any = None) -> dict[str, Any]:
        """``{"train", "valid", "test"} -> context`` of the registered kind (cached per kind and
        the config fields the kind declares in ``context_fields``)."""
        spec = CONTEXTS.get(kind)
        key = ("context", kind, tuple(getattr(config, f) for f in spec.fields))
        return self._once(key, lambda: spec.build(self.dataset, config))

    @property
    def graph(self):
        """The normalized training graph (the ``"graph"`` context)."""
        return self.contexts("graph")["train"]

    @functools.cached_property
    def positives(self) -> PositiveIndex:
        return PositiveIndex.from_interactions(self.dataset.train)  # errors name the original user ids

    def exclude(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) masked when ranking for ``stage`` (``jaxrec.data.exclusion_pairs``)."""
        return self._once(("exclude", stage), lambda: exclusion_pairs(self.dataset, stage))

    def truth(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Held-out items of ``stage`` in CSR form (``jaxrec.data.truth``)."""
        return self._once(("truth", stage), lambda: truth(self.dataset, stage))

    def _once(self, key: tuple, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # the attribute names of jaxrec 0.1
    valid_exclude = property(lambda self: self.exclude("valid"))
    valid_truth = property(lambda self: self.truth("valid"))
    test_exclude = property(lambda self: self.exclude("test"))
    test_truth = property(lambda self: self.truth("test"))


def prepare(dataset: Any, exclude: dict | None = None) -> PreparedData:
    """``PreparedData`` of ``dataset`` (share it between runs on the same split)."""
    return PreparedData(dataset, exclude)


def epoch_batches(
    rng: np.random.Generator,
    user: np.ndarray,
    item: np.ndarray,
    batch_size: int,
    positives: PositiveIndex | None,
) -> Iterator[Batch]:
    """Shuffled batches of training pairs (int32 [<=B] ``user``, ``pos``, and ``neg``).

    ``positives`` given: one uniform negative per pair that is never a training positive of
    the user, drawn for the whole epoch at once. ``None``: no negatives.
    """
    order = rng.permutation(len(user))
    users = user[order].astype(np.int32)
    pos = item[order].astype(np.int32)
    neg = sample_negatives(rng, positives, users) if positives is not None else None
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        batch = {"user": users[sl], "pos": pos[sl]}
        if neg is not None:
            batch["neg"] = neg[sl]
        yield batch


@dataclasses.dataclass
class BatchSource:
    """One epoch of batches at a time: ``draw(rng)`` then the objective's host-side hook."""

    draw: Callable[[np.random.Generator], Iterator[Batch]]
    prepare_batch: Callable[[Batch, Sizes], Batch] | None = None
    sizes: Sizes | None = None

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        for batch in self.draw(rng):
            yield batch if self.prepare_batch is None else self.prepare_batch(batch, self.sizes)


def _pairs(negatives: bool):
    def factory(prepared: PreparedData, config: Any, model: Any) -> BatchSource:
        tr = prepared.dataset.train
        positives = prepared.positives if negatives else None
        return BatchSource(lambda rng: epoch_batches(rng, tr.user, tr.item, config.batch_size, positives),
                           model.objective.prepare_batch, prepared.sizes)

    return factory


def check_negatives(dataset: Any, config: Any) -> None:
    """``DataError`` naming a user who has every item in training: no negative can be sampled."""
    tr, n = dataset.train, dataset.num_items
    distinct = np.bincount(np.unique(tr.user.astype(np.int64) * n + tr.item) // n, minlength=dataset.num_users)
    full = np.flatnonzero(distinct >= n)
    if full.size:
        raise DataError(
            f"dataset {dataset.name}: user {str(dataset.user_ids[full[0]])!r}"
            + (f" (and {full.size - 1} more)" if full.size > 1 else "")
            + f" has interacted with every one of the {n} items in training, so {config.model!r} cannot sample "
            "a negative for them; drop such users or use a backbone without negatives (sgcl)")


def _windows(dataset: Any, config: Any):
    return training_windows(user_sequences(dataset, log_report=False), config.max_seq_len)


def sequence_batches(prepared: PreparedData, config: Any, model: Any) -> BatchSource:
    windows = prepared._once(("windows", config.max_seq_len), lambda: _windows(prepared.dataset, config))
    size = config.batch_size
    return BatchSource(lambda rng: window_batches(rng, windows, size, pad=True), model.objective.prepare_batch,
                       prepared.sizes)


BATCH_KINDS.register("pairs", BatchKind(_pairs(negatives=True), check=check_negatives))
BATCH_KINDS.register("positives", BatchKind(_pairs(negatives=False)))
# check: DataError when no user has 2 training items, or one has every item
BATCH_KINDS.register("sequences", BatchKind(sequence_batches, check=_windows))


def batch_source(model: Any, prepared: PreparedData, config: Any) -> BatchSource:
    """The ``BatchSource`` of the model's batch kind."""
    return BATCH_KINDS.get(model.batch_kind).build(prepared, config, model)


__all__ = ["PreparedData", "prepare", "Sizes", "BatchSource", "epoch_batches", "batch_source", "Batch"]
