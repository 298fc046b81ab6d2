"""Filter-then-rerank: a trained recommender picks each user's top ``K`` (20) items, the
stage-2 LM re-orders only those.

The survey's production recipe (DESIGN.md 8): a conventional recommender pre-ranks the whole
catalogue cheaply; the LLM handles only the hard top candidates. Here the candidates are not
A-LLMRec's random ones (target + 19 never-interacted items) but the recommender's own top ``K``
over every item the user has not interacted with before the stage (``jaxrec.data.exclusion_pairs``:
training items for "valid", training + validation items for "test"), so the target may be
missing from the list: such a user counts as a miss in every metric of both orderings.

- ``recommender_top``: top-``K`` lists of dot-product scores (``jaxrec.eval.ranking.topk_full_ranking``)
  of any recommender's (user [U, d], item [I, d]) embeddings; ``model_top`` gets them from a
  ``jaxrec`` model's ``embed(params, context)`` (a ``jaxrec.fit`` result); ``run_top`` from a
  run folder (``jaxrec.serve.load_run``).
- ``rerank``: the LM's log-likelihood of each listed item's target text (``"title"`` + eos)
  given the A-LLMRec prompt whose candidate set is the list (``jaxrec.methods.allmrec.stage2.evaluate_lm``,
  ranking view (b)), shown in a seeded random order (``order="shuffled"``, as the reference
  shuffles its candidates; ``"recommender"`` shows them best first).
- ``RerankResult.metrics``: ``recall@K`` (share of targets in the list: the ceiling of both),
  ``hit@1`` / ``hit@5`` / ``ndcg@5`` of the recommender's order (``recommender/...``) and of the
  LM's order (``lm/...``, pessimistic ties as ``jaxrec.eval.candidates``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxrec.methods.allmrec.stage2 import SCORES, Stage2Context, Stage2Error, evaluate_lm, evaluate_stage2
from jaxrec.data import exclusion_pairs
from jaxrec.eval.candidates import metrics_from_ranks
from jaxrec.eval.ranking import topk_full_ranking

DEFAULT_K = 20
ORDERS = ("shuffled", "recommender")


def recommender_top(user_emb, item_emb, users, dataset, stage: str = "test", k: int = DEFAULT_K) -> np.ndarray:
    """int32 [M, k]: the ``k`` best items of each of ``users`` [M] by ``user_emb[u] . item_emb[i]``
    (user_emb [U, d], item_emb [I, d], dense ids), best first, never an item the user interacted
    with before ``stage`` ("valid" | "test"). Stage2Error when a user has fewer than ``k`` items
    left (the list would hold -1)."""
    if stage not in ("valid", "test"):
        raise Stage2Error(f"stage={stage!r}: expected 'valid' or 'test' (the held-out items re-ranked)")
    ex_u, ex_i = exclusion_pairs(dataset, stage)
    top = topk_full_ranking(user_emb, item_emb, np.asarray(users), ex_u, ex_i, k=k)
    short = np.flatnonzero((top < 0).any(axis=1))
    if short.size:
        raise Stage2Error(f"recommender_top: {short.size} user(s) (first: dense id {int(np.asarray(users)[short[0]])}) "
                          f"have fewer than k={k} items they have not interacted with; expected at least k")
    return top


def model_top(model, params, context, dataset, users, stage: str = "test", k: int = DEFAULT_K) -> np.ndarray:
    """``recommender_top`` of a jaxrec ``Model``'s ``embed(params, context)`` (e.g. LightGCN, MF,
    SASRec given the stage's context)."""
    user_emb, item_emb = model.embed(params, context)
    return recommender_top(np.asarray(user_emb), np.asarray(item_emb), users, dataset, stage, k)


def run_top(run: Any, users, stage: str = "test", k: int = DEFAULT_K) -> np.ndarray:
    """``model_top`` of a trained run folder (a path, opened with ``jaxrec.serve.load_run``, or a
    loaded ``jaxrec.serve.Run``): its model and best parameters over the ``stage`` context of its
    dataset (a sequence model's users are then represented by their ``stage`` histories, not by
    the serve context's full ones). Stage2Error when this checkout has no ``jaxrec.serve``."""
    if isinstance(run, (str, Path)):
        try:
            from jaxrec.serve import load_run
        except ImportError:
            raise Stage2Error(f"run {str(run)!r}: reading a run folder needs jaxrec.serve (load_run), which this "
                              f"checkout lacks; pass the model's embeddings to recommender_top") from None
        run = load_run(run)
    from jaxrec.train import prepare

    context = prepare(run.dataset).contexts(run.model.context, run.config)[stage]
    return model_top(run.model, run.params, context, run.dataset, users, stage, k)


@dataclasses.dataclass(frozen=True, eq=False)
class RerankResult:
    """Per-user results of ``rerank`` (rows follow ``users``).

    users int32 [M]; top int32 [M, K] (the recommender's list, best first); target int32 [M];
    scores float32 [M, K] (sum log-likelihood of each listed item's target text, columns as
    ``top``); lengths int32 [M, K] (its tokens); seconds (LM time).
    """

    users: np.ndarray
    top: np.ndarray
    target: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    seconds: dict

    @property
    def k(self) -> int:
        return int(self.top.shape[1])

    @property
    def found(self) -> np.ndarray:
        """bool [M]: the target is in the recommender's list."""
        return (self.top == self.target[:, None]).any(axis=1)

    def recommender_ranks(self) -> np.ndarray:
        """int64 [M]: the target's 0-based position in ``top`` (``K`` when absent)."""
        hit = self.top == self.target[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), self.k).astype(np.int64)

    def lm_order(self, score: str = "sum") -> np.ndarray:
        """int32 [M, K]: ``top`` re-ordered by the LM's ``score`` ("sum" | "mean" per token), best
        first (stable: ties keep the recommender's order)."""
        s = self._scores(score)
        return np.take_along_axis(self.top, np.argsort(-s, axis=1, kind="stable"), axis=1)

    def lm_ranks(self, score: str = "sum") -> np.ndarray:
        """int64 [M]: the target's 0-based rank by the LM's ``score`` among the K listed items,
        pessimistic (ties count above), ``K`` when absent."""
        s = self._scores(score)
        hit = self.top == self.target[:, None]
        col = hit.argmax(axis=1)
        own = np.take_along_axis(s, col[:, None], axis=1)
        rank = (~(own > s)).sum(axis=1) - 1  # the others not strictly below the target
        return np.where(hit.any(axis=1), rank, self.k).astype(np.int64)

    def _scores(self, score: str) -> np.ndarray:
        if score not in SCORES:
            raise Stage2Error(f"score={score!r}: expected one of {SCORES}")
        return self.scores if score == "sum" else self.scores / np.maximum(self.lengths, 1)

    def metrics(self, score: str = "sum", metrics: Sequence[str] = ("hit@1", "hit@5", "ndcg@5"),
                rows=None) -> dict[str, float]:
        """``recall@K``, ``recommender/<m>`` and ``lm/<m>`` (``lm/<m>_sum``, ``lm/<m>_mean`` too) over
        ``rows`` (bool mask or indices; default all). Misses (target not listed) count 0."""
        sel = np.arange(len(self.users)) if rows is None else np.asarray(rows)
        if sel.dtype == bool:
            sel = np.flatnonzero(sel)
        if sel.size == 0:
            return {}
        kk = self.k + 1  # rank K = absent: every metric of k <= K is 0 there
        out = {f"recall@{self.k}": float(self.found[sel].mean()), "users": float(sel.size)}
        out.update({f"recommender/{m}": v for m, v in metrics_from_ranks(self.recommender_ranks()[sel], kk,
                                                                         metrics).items()})
        for s in SCORES:
            m = metrics_from_ranks(self.lm_ranks(s)[sel], kk, metrics)
            out.update({f"lm/{n}_{s}": v for n, v in m.items()})
            if s == score:
                out.update({f"lm/{n}": v for n, v in m.items()})
        return out


def rerank(ctx: Stage2Context, tokens, users, histories: Sequence[Sequence[int]], top, target, *,
           order: str = "shuffled", seed: int = 0, user_names=None, batch_size: int = 8) -> RerankResult:
    """Re-rank each user's list ``top`` [M, K] (best first) by the stage-2 LM (module docstring).

    ctx: the stage's context; ``tokens``: the trained stage-2 params (a dict: ``evaluate_stage2``,
    any answer kind, LoRA included), or the projected (user, item) tables of a title-answer stage 2
    (``evaluate_lm``); an index answer needs K equal to its number of labels;
    users [M] dense ids; histories: M lists of dense item ids (oldest first); target [M] the
    held-out item (-1 or any absent item: a miss). ``order``: how the list is shown in the prompt.
    """
    top = np.asarray(top, np.int32)
    target = np.asarray(target, np.int32)
    m = len(np.asarray(users))
    if top.ndim != 2 or top.shape[0] != m or target.shape != (m,):
        raise Stage2Error(f"rerank: users [{m}], top {top.shape}, target {target.shape}; expected [M], [M, K], [M]")
    if order not in ORDERS:
        raise Stage2Error(f"order={order!r}: expected one of {ORDERS}")
    if (top < 0).any():
        raise Stage2Error("rerank: top holds -1 (a list shorter than K); expected K items per user")
    if order == "shuffled":
        rng = np.random.default_rng([seed, 7])
        shown = np.stack([rng.permutation(top.shape[1]) for _ in range(m)]) if m else None
    else:
        shown = None
    if isinstance(tokens, dict):
        res = evaluate_stage2(tokens, ctx, users, histories, top, shown=shown, user_names=user_names,
                              batch_size=batch_size, generate=False)
    else:
        res = evaluate_lm(ctx, tokens, users, histories, top, shown=shown, user_names=user_names,
                          batch_size=batch_size, generate=False)
    return RerankResult(np.asarray(users, np.int32), top, target, res.scores, res.lengths, res.seconds)


__all__ = ["DEFAULT_K", "ORDERS", "recommender_top", "model_top", "run_top", "RerankResult", "rerank"]
