"""SGCL: the LightGCN encoder trained with a supervised contrastive loss instead of BPR; no negatives.

``loss = sgcl(final u_B, final i_B, sgcl_tau) + reg_weight * L2(ego u_B, ego i_B)`` on the batch's
(user, positive item) pairs (``jaxrec.objectives.contrast``; the other batch users and items are
the negatives). The objective's batch kind is "positives", so the loop samples no negatives.
"""

from __future__ import annotations

import dataclasses

from jaxrec.config import Config
from jaxrec.models.base import Model
from jaxrec.models.lightgcn import lightgcn_encoder
from jaxrec.models.sgl import ContrastSettings
from jaxrec.objectives import term, weighted_sum
from jaxrec.objectives.ranking import reg_term


@dataclasses.dataclass(frozen=True)
class SGCLSettings(ContrastSettings):
    """SGCL's settings: ``ContrastSettings`` plus the temperature ``sgcl_tau`` (DESIGN.md 2.1: 0.2)."""

    sgcl_tau: float = 0.2

    def validate(self) -> None:
        super().validate()
        self.expect("sgcl_tau", self.sgcl_tau > 0, "a temperature > 0")


def make_sgcl(config: Config) -> Model:
    objective = weighted_sum(term("sgcl", config), (reg_term(config, ("user", "pos")), config.reg_weight))
    return Model("sgcl", lightgcn_encoder(config), objective)
