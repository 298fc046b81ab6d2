"""Evaluation protocols (``config.evaluation``), registered in ``jaxrec.registry.EVALUATIONS``.

A protocol is a factory ``(prepared, config, partitioner) -> Evaluator``; an evaluator maps a
model's ``(user_emb [U, d], item_emb [I, d])`` for a stage ("valid" or "test") to metrics
``{"ndcg@10": float, ...}``. The training loop selects and reports with whichever protocol
the config names, so a new protocol (e.g. sampled candidates) is one factory registered here.

- ``full``: full ranking over all items with the user's known items masked (training items;
  training + validation items when testing), RecBole's metrics at ``config.topk``
  (DESIGN 2.1); sharded over items on a mesh (``Partitioner.rank``).
- ``candidates``: A-LLMRec's protocol (DESIGN 2.2, ``jaxrec.eval.candidates``): each user with a
  held-out item at the stage scores it against ``config.candidate_negatives`` (19) items the
  user never interacted with, drawn once per (dataset split, stage, ``config.seed``) and
  stored in ``config.candidates_dir`` (default ``$JAXREC_CACHE/candidates``), so every model
  and every run on that split and seed scores the same lists. Metrics: ``<m>@<k>`` for ``m``
  in ``config.metrics`` and ``k`` in ``config.topk`` (k <= the list length), ``mrr`` over the
  whole list; beside them the full-ranking view ``full_recall@k`` / ``full_ndcg@k`` at
  ``config.full_view_topk`` (the ``full`` protocol's numbers; none when empty).

A protocol is a ``jaxrec.registry.EvaluationProtocol`` record: ``build``, ``check(dataset,
config)`` (DataError / ConfigError before any compute, from ``jaxrec.train.check_run``) and
``check_config(config)`` (ConfigError from ``Config`` validation; ``valid_metric`` must be one
of its metrics).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from jaxrec.fetch import cache_root
from jaxrec.registry import EVALUATIONS, EvaluationProtocol

#: Metrics of the full-ranking view the candidate protocol reports beside its own (``full_`` prefix).
FULL_VIEW_METRICS = ("recall", "ndcg")
FULL_VIEW_PREFIX = "full_"


class Evaluator(Protocol):
    """``evaluate(embeddings, stage) -> {metric: float}``; a protocol registered with
    ``per_user=True`` also takes ``per_user=True`` and returns ``(metrics, per_user)``
    (``jaxrec.registry.EvaluationProtocol.per_user``)."""

    def __call__(self, embeddings: tuple[Any, Any], stage: str) -> dict[str, float]: ...


def full_ranking(prepared: Any, config: Any, partitioner: Any) -> Callable[..., Any]:
    def evaluate(embeddings, stage: str, per_user: bool = False):
        user_emb, item_emb = embeddings
        return partitioner.rank(user_emb, item_emb, None, prepared.exclude(stage), prepared.truth(stage),
                                config.topk, config.metrics, config.eval_chunk, per_user=per_user)

    return evaluate


def candidate_protocol(prepared: Any, config: Any, partitioner: Any) -> Callable[[tuple[Any, Any], str], dict]:
    import numpy as np  # noqa: PLC0415

    from jaxrec.eval.candidates import candidate_ranks, candidates_for, dot_scores, per_user_from_ranks  # noqa: PLC0415

    folder = config.candidates_dir or cache_root() / "candidates"
    names = candidate_metric_names(config)
    lists: dict[str, Any] = {}

    def evaluate(embeddings, stage: str, per_user: bool = False):
        if stage not in lists:
            lists[stage] = candidates_for(folder, prepared.dataset, stage, config.seed, config.candidate_negatives)
        user_emb, item_emb = partitioner.gather(embeddings)
        scores = dot_scores(user_emb, item_emb, lists[stage])
        values = per_user_from_ranks(candidate_ranks(scores), scores.shape[1], names)
        out = {m: float(np.mean(v)) for m, v in values.items()}  # = candidate_metrics(scores, names)
        users = {"user": np.asarray(lists[stage].users), **values}
        if config.full_view_topk:
            full = partitioner.rank(embeddings[0], embeddings[1], None, prepared.exclude(stage), prepared.truth(stage),
                                    config.full_view_topk, FULL_VIEW_METRICS, config.eval_chunk, per_user=per_user)
            if per_user:
                full, full_users = full
                if np.array_equal(full_users["user"], users["user"]):  # the same users: one table
                    users.update({FULL_VIEW_PREFIX + k: v for k, v in full_users.items() if k != "user"})
            out.update({FULL_VIEW_PREFIX + k: v for k, v in full.items()})
        return (out, users) if per_user else out

    return evaluate


def candidate_metric_names(config: Any) -> tuple[str, ...]:
    """The candidate metrics ``config`` asks for: ``mrr`` (whole list) and ``<m>@<k>`` for the
    other names of ``config.metrics`` at every k of ``config.topk``."""
    return tuple(n for m in config.metrics for n in ([m] if m == "mrr" else [f"{m}@{k}" for k in config.topk]))


def _candidate_check_config(config: Any) -> None:
    from jaxrec.config import ConfigError  # noqa: PLC0415
    from jaxrec.eval.candidates import CANDIDATE_METRICS  # noqa: PLC0415

    size = config.candidate_negatives + 1
    if max(config.topk) > size:
        raise ConfigError(f"topk={list(config.topk)}: evaluation='candidates' ranks {size} candidates (the held-out "
                          f"item + candidate_negatives={config.candidate_negatives}); use cutoffs <= {size}")
    bad = [m for m in config.metrics if m not in CANDIDATE_METRICS]
    if bad:
        raise ConfigError(f"metrics={list(config.metrics)}: evaluation='candidates' computes "
                          f"{list(CANDIDATE_METRICS)}, not {bad}")
    names = candidate_metric_names(config) + tuple(
        f"{FULL_VIEW_PREFIX}{m}@{k}" for m in FULL_VIEW_METRICS for k in config.full_view_topk)
    if config.valid_metric not in names:
        raise ConfigError(f"valid_metric={config.valid_metric!r}: expected one of the metrics evaluation='candidates' "
                          f"reports with metrics={list(config.metrics)}, topk={list(config.topk)} and full_view_topk="
                          f"{list(config.full_view_topk)}: {', '.join(names)}")


def _candidate_check(dataset: Any, config: Any) -> None:
    from jaxrec.config import ConfigError  # noqa: PLC0415
    from jaxrec.eval.candidates import check_candidates  # noqa: PLC0415

    for stage in ("valid", "test"):
        check_candidates(dataset, stage, config.candidate_negatives)
    if config.full_view_topk and max(config.full_view_topk) > dataset.num_items:
        raise ConfigError(f"full_view_topk={list(config.full_view_topk)}: k={max(config.full_view_topk)} exceeds the "
                          f"{dataset.num_items} items of dataset {dataset.name}; use cutoffs <= {dataset.num_items}")


def _full_check(dataset: Any, config: Any) -> None:
    from jaxrec.config import ConfigError  # noqa: PLC0415

    if max(config.topk) > dataset.num_items:
        raise ConfigError(f"topk={list(config.topk)}: k={max(config.topk)} exceeds the {dataset.num_items} items "
                          f"of dataset {dataset.name}; use cutoffs <= {dataset.num_items}")


EVALUATIONS.register("full", EvaluationProtocol(full_ranking, check=_full_check, per_user=True))
EVALUATIONS.register("candidates", EvaluationProtocol(candidate_protocol, check=_candidate_check,
                                                      check_config=_candidate_check_config, per_user=True))


def make_evaluator(prepared: Any, config: Any, partitioner: Any) -> Evaluator:
    """The evaluator of ``config.evaluation`` over ``prepared`` (a ``jaxrec.train.PreparedData``)."""
    return EVALUATIONS.get(config.evaluation, "evaluation").build(prepared, config, partitioner)


__all__ = ["Evaluator", "full_ranking", "candidate_protocol", "candidate_metric_names", "make_evaluator",
           "FULL_VIEW_METRICS", "FULL_VIEW_PREFIX"]
