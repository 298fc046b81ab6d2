"""Candidate evaluation (A-LLMRec, DESIGN.md 2.2): the held-out item among 19 sampled others.

For each evaluated user of a stage the candidate list is the user's held-out item (column 0)
plus ``num_negatives`` (19) distinct items the user never interacted with in any split,
drawn uniformly (Floyd's algorithm over the user's non-interacted items, vectorized, so it is
exact even for users who interacted with nearly everything). The lists are drawn once per
(dataset fingerprint, stage, seed, num_negatives) and stored as a ``.npz`` in a folder, so
every model and every run scores the same lists; loading checks the fingerprint.

Metrics over the C = 1 + num_negatives candidates, from the target's 0-based rank
``r = #{j >= 1 : not (score_0 > score_j)}`` (pessimistic: a candidate scored equal to the
target, or a NaN score, counts as ranked above it; the reference ``utils.py`` ranks by
``argsort().argsort()``, where ties fall in sort order):

- ``hit@k``  = 1 if r < k (``hit@1`` is the paper's Hit@1, the reference's ``rank < 1``)
- ``ndcg@k`` = 1 / log2(r + 2) if r < k else 0 (one relevant item: IDCG = 1)
- ``mrr``    = 1 / (r + 1) over the whole list (RecBole's MRR with k = C)
- ``recall@k`` = ``hit@k`` and ``precision@k`` = ``hit@k / k`` (RecBole's definitions with one
  relevant item)

each averaged over users (RecBole names). Full ranking over all items stays the second
view: ``jaxrec.eval.evaluate``; the ``"candidates"`` protocol of ``jaxrec.eval.protocols``
reports both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxrec.data import Dataset, DataError, PositiveIndex
from jaxrec.data.sequences import held_out_items

DEFAULT_METRICS = ("hit@1", "hit@5", "ndcg@5", "mrr")
NUM_NEGATIVES = 19
_NAME = re.compile(r"^(hit|ndcg|recall|precision)@(\d+)$|^mrr$")
#: Metric names (``config.metrics``) the candidate protocol computes.
CANDIDATE_METRICS = ("hit", "ndcg", "mrr", "recall", "precision")


@dataclasses.dataclass(frozen=True, eq=False)
class CandidateSet:
    """users: int32 [M] sorted evaluated dense user ids; items: int32 [M, C] dense item ids,
    column 0 the user's held-out item; stage, seed; fingerprint: the dataset's
    (``jaxrec.data.fingerprint.dataset_fingerprint``)."""

    users: np.ndarray
    items: np.ndarray
    stage: str
    seed: int
    fingerprint: dict

    @property
    def num_candidates(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def select(self, users) -> "CandidateSet":
        """The rows of ``users`` (int [M'], each must be in ``self.users``), in the given order."""
        users = np.asarray(users, dtype=np.int64)
        at = np.searchsorted(self.users, users)
        ok = (at < len(self.users)) & (self.users[np.minimum(at, len(self.users) - 1)] == users)
        if not ok.all():
            raise ValueError(f"users: {int((~ok).sum())} users have no candidate list at stage "
                             f"{self.stage!r}, e.g. dense id {int(users[~ok][0])}")
        return CandidateSet(self.users[at], self.items[at], self.stage, self.seed, self.fingerprint)


def _fingerprint(dataset: Dataset) -> dict:
    from jaxrec.data.fingerprint import dataset_fingerprint

    return dataset_fingerprint(dataset)


def _targets(dataset: Dataset, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """(users int32 [M] with a held-out item at ``stage``, their held-out items int32 [M])."""
    item = held_out_items(dataset, stage)
    users = np.flatnonzero(item >= 0).astype(np.int32)
    if users.size == 0:
        raise DataError(f"{dataset.source}: dataset.{stage} is empty; expected held-out items to evaluate")
    return users, item[users]


def _free_items(dataset: Dataset, stage: str, num_negatives: int):
    """(users, targets, index of every interaction, free items per user) after checking that
    every user of ``stage`` has ``num_negatives`` never-interacted items (DataError otherwise)."""
    if num_negatives < 1:
        raise ValueError(f"num_negatives: expected >= 1, got {num_negatives}")
    users, target = _targets(dataset, stage)
    parts = (dataset.train, dataset.valid, dataset.test)
    index = PositiveIndex.build(np.concatenate([p.user for p in parts]), np.concatenate([p.item for p in parts]),
                                dataset.num_items, dataset.num_users)
    free = dataset.num_items - index.counts[users]
    short = free < num_negatives
    if short.any():
        u = users[short]
        raise DataError(f"{dataset.source}: user {dataset.user_ids[u[0]]!r} ({int(short.sum())} such users) has "
                        f"interacted with {int(index.counts[u[0]])} of {dataset.num_items} items; candidate "
                        f"sampling needs {num_negatives} items the user never interacted with "
                        f"(candidate_negatives={num_negatives})")
    return users, target, index, free


def check_candidates(dataset: Dataset, stage: str, num_negatives: int = NUM_NEGATIVES) -> None:
    """DataError (naming the user) unless candidate lists of ``stage`` can be drawn: a
    leave-one-out ``stage`` with held-out items, each user with ``num_negatives`` items left."""
    _free_items(dataset, stage, num_negatives)


def sample_candidates(dataset: Dataset, stage: str, seed: int, num_negatives: int = NUM_NEGATIVES) -> CandidateSet:
    """Draw the candidate lists of ``stage`` with ``np.random.default_rng(seed)``.

    Negatives: ``num_negatives`` distinct items, none the user interacted with in train, valid
    or test, uniform over the remaining ones. Raises DataError naming the user's original id
    when a user has fewer than ``num_negatives`` items left, before drawing anything.
    """
    users, target, index, free = _free_items(dataset, stage, num_negatives)
    rng = np.random.default_rng(seed)
    # Floyd's algorithm: distinct ranks among the user's non-interacted items, uniform subsets
    ranks = np.empty((users.size, num_negatives), dtype=np.int64)
    for k in range(num_negatives):
        j = free - num_negatives + k  # [M]
        t = np.minimum((rng.random(users.size) * (j + 1)).astype(np.int64), j)
        taken = (ranks[:, :k] == t[:, None]).any(axis=1)
        ranks[:, k] = np.where(taken, j, t)
    # the r-th non-interacted item is r + #{interacted p_j (the j-th, 0-based) with p_j - j <= r}
    uu = np.broadcast_to(users[:, None].astype(np.int64), ranks.shape)
    before = np.searchsorted(index.gaps, uu * dataset.num_items + ranks, side="right") - index.indptr[uu]
    items = np.concatenate([target[:, None], (ranks + before).astype(np.int32)], axis=1)
    return CandidateSet(users, items, stage, int(seed), _fingerprint(dataset))


def candidate_file(folder, fingerprint: dict, stage: str, seed: int, num_negatives: int = NUM_NEGATIVES) -> Path:
    """``<folder>/candidates_<name>_<sha256>_<stage>_seed<seed>_neg<n>.npz``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(fingerprint["name"]))
    return Path(folder) / f"candidates_{name}_{fingerprint['sha256']}_{stage}_seed{seed}_neg{num_negatives}.npz"


def save_candidates(path, cands: CandidateSet) -> Path:
    """Write ``cands`` to ``path`` (.npz; written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = {"stage": cands.stage, "seed": cands.seed, "fingerprint": cands.fingerprint}
    np.savez(tmp, users=cands.users, items=cands.items, meta=np.array(json.dumps(meta, sort_keys=True)))
    os.replace(tmp, path)
    return path


def load_candidates(path, dataset: Dataset) -> CandidateSet:
    """Read a candidate file and check it belongs to ``dataset`` (DataError naming the file and field if not)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            users, items, meta = z["users"], z["items"], json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a candidate file ({e}); expected arrays users, items, meta") from None
    fp = _fingerprint(dataset)
    if meta.get("fingerprint") != fp:
        raise DataError(f"{path}, field 'fingerprint': {meta.get('fingerprint')} does not match the dataset "
                        f"({fp}); expected candidates drawn for this dataset and split")
    if items.ndim != 2 or users.shape != (items.shape[0],):
        raise DataError(f"{path}, field 'items': shape {items.shape} with users {users.shape}; expected [M, C] "
                        f"and [M]")
    return CandidateSet(users.astype(np.int32), items.astype(np.int32), meta["stage"], int(meta["seed"]), fp)


def candidates_for(folder, dataset: Dataset, stage: str, seed: int,
                   num_negatives: int = NUM_NEGATIVES) -> CandidateSet:
    """The stored candidate lists of (dataset, stage, seed), drawn and saved on first use."""
    path = candidate_file(folder, _fingerprint(dataset), stage, seed, num_negatives)
    if path.is_file():
        cands = load_candidates(path, dataset)
        if cands.stage != stage or cands.seed != seed or cands.num_candidates != num_negatives + 1:
            raise DataError(f"{path}: holds stage {cands.stage!r}, seed {cands.seed}, {cands.num_candidates} "
                            f"candidates; expected {stage!r}, {seed}, {num_negatives + 1}")
        return cands
    cands = sample_candidates(dataset, stage, seed, num_negatives)
    save_candidates(path, cands)
    return cands


# ----------------------------------------------------------------------------- metrics
def _check_metrics(metrics: Sequence[str], num_candidates: int) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError("metrics: expected at least one name like 'hit@1', 'ndcg@5', 'mrr'")
    for m in metrics:
        match = _NAME.match(m)
        if not match:
            raise ValueError(f"metrics: unknown candidate metric {m!r}; expected hit@k, ndcg@k, recall@k, "
                             f"precision@k or mrr")
        if match.group(2) is not None and not 1 <= int(match.group(2)) <= num_candidates:
            raise ValueError(f"metrics: {m!r}: k must lie in [1, {num_candidates}] (the number of candidates)")
    return metrics


def candidate_ranks(scores) -> np.ndarray:
    """int64 [M]: 0-based rank of column 0 among the C columns of ``scores`` [M, C], pessimistic
    (number of other candidates j with ``not scores[:, 0] > scores[:, j]``: ties and NaN count above)."""
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores: expected [M, C] with C >= 2 (target in column 0), got shape {s.shape}")
    return (~(s[:, :1] > s[:, 1:])).sum(axis=1).astype(np.int64)


def per_user_from_ranks(ranks, num_candidates: int, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, np.ndarray]:
    """Per-user candidate metrics ``{metric: float64 [M]}`` (module docstring) of 0-based target ranks [M]."""
    r = np.asarray(ranks, dtype=np.int64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks: expected a non-empty 1-d array, got shape {r.shape}")
    out = {}
    for m in _check_metrics(metrics, num_candidates):
        if m == "mrr":
            out[m] = 1.0 / (r + 1.0)
            continue
        kind, k = m.split("@")
        hit = r < int(k)
        per_user = {"hit": hit, "recall": hit, "precision": hit / int(k)}.get(kind)
        out[m] = np.asarray(per_user if per_user is not None else hit / np.log2(r + 2.0), dtype=np.float64)
    return out


def metrics_from_ranks(ranks, num_candidates: int, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean candidate metrics (module docstring) of 0-based target ranks [M] (M >= 1)."""
    return {m: float(np.mean(v)) for m, v in per_user_from_ranks(ranks, num_candidates, metrics).items()}


def candidate_metrics(scores, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean metrics of candidate ``scores`` [M, C] (target in column 0)."""
    s = np.asarray(scores)
    return metrics_from_ranks(candidate_ranks(s), s.shape[1], metrics)


def dot_scores(user_emb, item_emb, cands: CandidateSet, chunk_size: int = 4096) -> np.ndarray:
    """float32 [M, C]: ``user_emb[u] . item_emb[i]`` for every user row and candidate of ``cands``.

    user_emb: [U, d] indexed by dense user id; item_emb: [I, d] by dense item id (no padding
    row: ``jaxrec.models.sasrec.embed`` returns this layout). Chunked over users.
    """
    if np.ndim(user_emb) != 2 or np.ndim(item_emb) != 2 or np.shape(user_emb)[1] != np.shape(item_emb)[1]:
        raise ValueError(f"user_emb, item_emb: expected [U, d] and [I, d], got {np.shape(user_emb)} and "
                         f"{np.shape(item_emb)}")
    ue, ie = jnp.asarray(user_emb), jnp.asarray(item_emb)
    out = []
    for s in range(0, len(cands), chunk_size):
        u = jnp.asarray(cands.users[s:s + chunk_size])
        c = jnp.asarray(cands.items[s:s + chunk_size])
        out.append(np.asarray(jnp.einsum("md,mcd->mc", ue[u], ie[c])))
    return np.concatenate(out) if out else np.zeros((0, cands.num_candidates), np.float32)


def evaluate_candidates(user_emb, item_emb, cands: CandidateSet,
                        metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Candidate metrics of dot-product scores (see ``dot_scores``) over every row of ``cands``."""
    return candidate_metrics(dot_scores(user_emb, item_emb, cands), metrics)


__all__ = ["CandidateSet", "DEFAULT_METRICS", "NUM_NEGATIVES", "CANDIDATE_METRICS", "check_candidates",
           "sample_candidates", "candidate_file",
           "save_candidates", "load_candidates", "candidates_for", "candidate_ranks", "metrics_from_ranks",
           "candidate_metrics", "dot_scores", "evaluate_candidates"]
