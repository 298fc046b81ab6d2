"""Evaluation: full-ranking top-k over all items and RecBole-style ranking metrics."""

from jaxrec.eval.metrics import (
    METRICS,
    build_truth,
    hit_matrix,
    mean_metrics,
    per_user_metrics,
    ranking_metrics,
)
from jaxrec.eval.ranking import evaluate, topk_full_ranking
from jaxrec.eval.sharded import evaluate_sharded, topk_full_ranking_sharded

__all__ = [
    "METRICS",
    "build_truth",
    "evaluate",
    "hit_matrix",
    "mean_metrics",
    "per_user_metrics",
    "ranking_metrics",
    "topk_full_ranking",
    "evaluate_sharded",
    "topk_full_ranking_sharded",
]
