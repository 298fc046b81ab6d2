"""A-LLMRec's evaluation scenarios (DESIGN.md 2.2) as values passed to one harness.

A scenario is a small frozen dataclass whose ``apply(dataset)`` returns a ``ScenarioData``:
the dataset a model trains on (``train``: the same id space, holding only the interactions,
in all three splits, of the users it may learn from), the dataset histories and candidate lists come from (``eval``,
usually the original), and the test users evaluated, in named groups reported separately.
``run_scenario`` trains through a callback, scores the stored candidate lists of ``eval``
(``jaxrec.eval.candidates``, the same lists for every model and scenario) and reports the
candidate metrics of every group.

- ``Standard()``: every test user.
- ``ColdWarmItems(fraction=0.35)``: items ranked by training interactions (ties by dense
  id); test users whose target is among the bottom ``fraction`` (``cold_items``) or the top
  ``fraction`` (``warm_items``) of items.
- ``ColdUsers(num_interactions=3)``: users with exactly 3 interactions in all splits are
  kept out of training (all their interactions removed from ``train``) and
  evaluated at test with their first two items as history.
- ``FewShot(num_users=256, seed=0)``: train (and select on validation) on K users drawn with
  ``np.random.default_rng(seed)`` among users with >= 2 training items and a validation
  item; evaluated on every test user (``all``) and on the others (``unseen``).
- ``CrossDomain(target)``: train on one dataset, evaluate on another; not applicable to a
  model with id-based item embeddings (SASRec cannot transfer item ids) until an alignment
  stage supplies text-side item embeddings; reported with that reason.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import numpy as np

from jaxrec.data import Dataset, Interactions
from jaxrec.eval.candidates import DEFAULT_METRICS, NUM_NEGATIVES, CandidateSet, candidate_ranks, \
    candidates_for, metrics_from_ranks, sample_candidates

log = logging.getLogger("jaxrec.eval")


@dataclasses.dataclass(frozen=True, eq=False)
class ScenarioData:
    """name; train: what the model learns from; eval: what histories and candidates come
    from; groups: label -> sorted int32 test users of ``eval``; applicable / note: whether
    the scenario can run, and a human-readable account of what it did or why not."""

    name: str
    train: Dataset
    eval: Dataset
    groups: dict[str, np.ndarray]
    applicable: bool = True
    note: str = ""


def _test_users(dataset: Dataset) -> np.ndarray:
    return np.unique(dataset.test.user).astype(np.int32)


def _drop_users(inter: Interactions, users: np.ndarray) -> Interactions:
    return inter.take(~np.isin(inter.user, users))


def _keep_users(inter: Interactions, users: np.ndarray) -> Interactions:
    return inter.take(np.isin(inter.user, users))


@dataclasses.dataclass(frozen=True)
class Standard:
    """Every test user, trained on everything."""

    name: str = "standard"

    def apply(self, dataset: Dataset) -> ScenarioData:
        users = _test_users(dataset)
        return ScenarioData(self.name, dataset, dataset, {"all": users}, note=f"{users.size:,} test users")


@dataclasses.dataclass(frozen=True)
class ColdWarmItems:
    """Test users split by their target's popularity among training interactions."""

    fraction: float = 0.35
    name: str = "cold_warm_items"

    def __post_init__(self):
        if not 0.0 < self.fraction <= 0.5:
            raise ValueError(f"ColdWarmItems.fraction: expected a share in (0, 0.5], got {self.fraction!r}")

    def item_groups(self, dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """(cold, warm) sorted int32 dense item ids: the bottom / top ``fraction`` of all items
        by number of training interactions (rounded down; ties ordered by dense id)."""
        counts = np.bincount(dataset.train.item, minlength=dataset.num_items)
        order = np.lexsort((np.arange(dataset.num_items), counts))  # ascending count, then id
        n = int(self.fraction * dataset.num_items)
        return np.sort(order[:n]).astype(np.int32), np.sort(order[dataset.num_items - n:]).astype(np.int32)

    def apply(self, dataset: Dataset) -> ScenarioData:
        cold, warm = self.item_groups(dataset)
        users = dataset.test.user
        groups = {"cold_items": np.unique(users[np.isin(dataset.test.item, cold)]).astype(np.int32),
                  "warm_items": np.unique(users[np.isin(dataset.test.item, warm)]).astype(np.int32)}
        note = (f"{cold.size:,} cold / {warm.size:,} warm items (fraction {self.fraction}); "
                f"{groups['cold_items'].size:,} / {groups['warm_items'].size:,} test users")
        return ScenarioData(self.name, dataset, dataset, groups, note=note)


@dataclasses.dataclass(frozen=True)
class ColdUsers:
    """Users with exactly ``num_interactions`` interactions, unseen in training, evaluated at test."""

    num_interactions: int = 3
    name: str = "cold_users"

    def cold_users(self, dataset: Dataset) -> np.ndarray:
        total = sum(np.bincount(p.user, minlength=dataset.num_users)
                    for p in (dataset.train, dataset.valid, dataset.test))
        return np.flatnonzero(total == self.num_interactions).astype(np.int32)

    def apply(self, dataset: Dataset) -> ScenarioData:
        cold = np.intersect1d(self.cold_users(dataset), _test_users(dataset))
        if cold.size == 0:
            return ScenarioData(self.name, dataset, dataset, {"cold_users": cold}, applicable=False,
                                note=f"no test user has exactly {self.num_interactions} interactions in "
                                     f"{dataset.name}; nothing to evaluate")
        train = dataclasses.replace(dataset, train=_drop_users(dataset.train, cold),
                                    valid=_drop_users(dataset.valid, cold), test=_drop_users(dataset.test, cold))
        note = (f"{cold.size:,} users with exactly {self.num_interactions} interactions kept out of training "
                f"({len(dataset.train) - len(train.train):,} training and "
                f"{len(dataset.valid) - len(train.valid):,} validation interactions removed)")
        log.info("%s: %s", self.name, note)
        return ScenarioData(self.name, train, dataset, {"cold_users": cold}, note=note)


@dataclasses.dataclass(frozen=True)
class FewShot:
    """Train on ``num_users`` seeded users only; evaluate on every test user and the unseen ones."""

    num_users: int = 256
    seed: int = 0
    name: str = "few_shot"

    def __post_init__(self):
        if self.num_users < 1:
            raise ValueError(f"FewShot.num_users: expected >= 1, got {self.num_users}")

    def chosen_users(self, dataset: Dataset) -> np.ndarray:
        """Sorted int32: the K training users (among users with >= 2 training items and a validation item)."""
        eligible = np.intersect1d(np.flatnonzero(np.bincount(dataset.train.user, minlength=dataset.num_users) >= 2),
                                  dataset.valid.user)
        if eligible.size < self.num_users:
            raise ValueError(f"FewShot.num_users={self.num_users}: {dataset.name} has only {eligible.size} users "
                             f"with >= 2 training items and a validation item")
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(eligible, self.num_users, replace=False)).astype(np.int32)

    def apply(self, dataset: Dataset) -> ScenarioData:
        chosen = self.chosen_users(dataset)
        train = dataclasses.replace(dataset, train=_keep_users(dataset.train, chosen),
                                    valid=_keep_users(dataset.valid, chosen), test=_keep_users(dataset.test, chosen))
        users = _test_users(dataset)
        groups = {"all": users, "unseen": np.setdiff1d(users, chosen).astype(np.int32)}
        note = (f"trained on {self.num_users} users (seed {self.seed}), {len(train.train):,} of "
                f"{len(dataset.train):,} training interactions")
        return ScenarioData(self.name, train, dataset, groups, note=note)


@dataclasses.dataclass(frozen=True)
class CrossDomain:
    """Train on the dataset passed to ``apply``, evaluate on ``target``."""

    target: Dataset
    name: str = "cross_domain"

    def apply(self, dataset: Dataset) -> ScenarioData:
        note = (f"train on {dataset.name}, evaluate on {self.target.name}: not applicable to id-based item "
                f"embeddings (SASRec's item ids do not transfer between datasets); needs an alignment stage "
                f"that supplies text-side item embeddings")
        return ScenarioData(self.name, dataset, self.target, {"all": _test_users(self.target)},
                            applicable=False, note=note)


SCENARIOS = (Standard, ColdWarmItems, ColdUsers, FewShot, CrossDomain)


@dataclasses.dataclass(frozen=True)
class ScenarioResult:
    """name; metrics: group -> {metric: value} (empty if not applicable); counts: group ->
    evaluated users; applicable; note."""

    name: str
    metrics: dict[str, dict[str, float]]
    counts: dict[str, int]
    applicable: bool
    note: str


def scenario_metrics(data: ScenarioData, cands: CandidateSet, scores,
                     metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, dict[str, float]]:
    """Per-group candidate metrics from ``scores`` [M, C] of the rows of ``cands``.

    Groups with no user are left out (and logged)."""
    ranks = candidate_ranks(scores)
    out = {}
    for label, users in data.groups.items():
        if len(users) == 0:
            log.warning("scenario %s: group %s has no test user; not reported", data.name, label)
            continue
        rows = np.searchsorted(cands.users, users)
        out[label] = metrics_from_ranks(ranks[rows], cands.num_candidates, metrics)
    return out


def run_scenario(scenario, dataset: Dataset, train: Callable[[Dataset], Any],
                 score: Callable[[Any, Dataset, CandidateSet], np.ndarray], *, seed: int,
                 candidates_dir=None, num_negatives: int = NUM_NEGATIVES,
                 metrics: Sequence[str] = DEFAULT_METRICS) -> ScenarioResult:
    """Apply ``scenario`` to ``dataset``, train, and report every group's test metrics.

    train(train_dataset) -> model (anything ``score`` understands); score(model,
    eval_dataset, cands) -> float [M, C] scores of ``cands.items`` (target in column 0) for
    ``cands.users`` at the test stage. Candidates: the stored lists of ``candidates_dir``
    (``candidates_for``; drawn once per dataset, stage and seed) or, without a folder, drawn
    in memory with ``seed``. A scenario that is not applicable reports its reason, untrained.
    """
    data = scenario.apply(dataset)
    counts = {k: int(len(v)) for k, v in data.groups.items()}
    if not data.applicable:
        log.warning("scenario %s: %s", data.name, data.note)
        return ScenarioResult(data.name, {}, counts, False, data.note)
    model = train(data.train)
    if candidates_dir is not None:
        cands = candidates_for(candidates_dir, data.eval, "test", seed, num_negatives)
    else:
        cands = sample_candidates(data.eval, "test", seed, num_negatives)
    evaluated = np.unique(np.concatenate([np.asarray(v) for v in data.groups.values()]))
    cands = cands.select(evaluated)
    scores = np.asarray(score(model, data.eval, cands))
    if scores.shape != cands.items.shape:
        raise ValueError(f"score: returned shape {scores.shape}; expected {cands.items.shape} (users x candidates)")
    return ScenarioResult(data.name, scenario_metrics(data, cands, scores, metrics), counts, True, data.note)


__all__ = ["ScenarioData", "ScenarioResult", "Standard", "ColdWarmItems", "ColdUsers", "FewShot", "CrossDomain",
           "SCENARIOS", "scenario_metrics", "run_scenario"]
