"""Early stopping as a pure state update (RecBole's rule).

An evaluation whose score is >= the best so far resets the counter and becomes the best;
otherwise the counter grows, and training stops once it exceeds ``patience`` (RecBole's
``stopping_step``: with patience 10, the 11th evaluation without improvement stops).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    best_score: float = float("-inf")
    best_epoch: int = -1
    bad_evals: int = 0

    def update(self, score: float, epoch: int) -> "EarlyStopping":
        if score >= self.best_score:
            return EarlyStopping(best_score=float(score), best_epoch=int(epoch), bad_evals=0)
        return dataclasses.replace(self, bad_evals=self.bad_evals + 1)

    def improved_at(self, epoch: int) -> bool:
        return self.best_epoch == epoch

    def should_stop(self, patience: int) -> bool:
        return self.bad_evals > patience

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EarlyStopping":
        return cls(best_score=float(d["best_score"]), best_epoch=int(d["best_epoch"]), bad_evals=int(d["bad_evals"]))
