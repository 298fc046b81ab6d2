"""Evaluation protocols (``config.evaluation``), registered in ``jaxrec.registry.EVALUATIONS``.

A protocol is a factory ``(prepared, config, partitioner) -> Evaluator``; an evaluator maps a
model's ``(user_emb [U, d], item_emb [I, d])`` for a stage ("valid" or "test") to metrics
``{"ndcg@10": float, ...}``. The training loop selects and reports with whichever protocol
the config names, so a new protocol (e.g. sampled candidates) is one factory registered here.

- ``full``: full ranking over all items with the user's known items masked (training items;
  training + validation items when testing), RecBole's metrics at ``config.topk``
  (DESIGN 2.1); sharded over items on a mesh (``Partitioner.rank``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from jaxrec.registry import EVALUATIONS


class Evaluator(Protocol):
    def __call__(self, embeddings: tuple[Any, Any], stage: str) -> dict[str, float]: ...


@EVALUATIONS.register("full")
def full_ranking(prepared: Any, config: Any, partitioner: Any) -> Callable[[tuple[Any, Any], str], dict]:
    def evaluate(embeddings, stage: str) -> dict[str, float]:
        user_emb, item_emb = embeddings
        return partitioner.rank(user_emb, item_emb, None, prepared.exclude(stage), prepared.truth(stage),
                                config.topk, config.metrics, config.eval_chunk)

    return evaluate


def make_evaluator(prepared: Any, config: Any, partitioner: Any) -> Evaluator:
    """The evaluator of ``config.evaluation`` over ``prepared`` (a ``jaxrec.train.PreparedData``)."""
    return EVALUATIONS.get(config.evaluation, "evaluation")(prepared, config, partitioner)


__all__ = ["Evaluator", "full_ranking", "make_evaluator"]
