"""Pairwise ranking terms: BPR on the final embeddings and RecBole's L2 on the ego embeddings.

- ``bpr`` (batch kind "pairs"): ``mean(-log sigmoid(s(u, pos) - s(u, neg)))`` with ``s`` the
  dot product of the encoder's final user and item embeddings (Rendle et al., 2009; LightGCN
  section 3.2);
- ``reg``: ``l2_reg`` (RecBole's ``EmbLoss``: sum of the Frobenius norms, or of their squares
  halved with ``require_pow``, divided by the batch size) of the batch's ego embeddings:
  users, positive items and, when the batch has them, negative items. Weighted by
  ``config.reg_weight`` in the built-in backbones.
"""

from __future__ import annotations

from jaxrec.losses import bpr_loss, l2_reg
from jaxrec.models.base import dot_scores
from jaxrec.objectives import LossInputs, Term
from jaxrec.registry import OBJECTIVES


@OBJECTIVES.register("bpr")
def bpr_term(config=None) -> Term:
    def loss(x: LossInputs):
        u, p, n = x.rows("user", "user"), x.rows("item", "pos"), x.rows("item", "neg")
        return bpr_loss(dot_scores(u, p), dot_scores(u, n))

    return Term("bpr", loss, batch_kind="pairs")


#: batch column -> embedding side
SIDES = {"user": "user", "pos": "item", "neg": "item"}


@OBJECTIVES.register("reg")
def reg_term(config, columns: tuple[str, ...] | None = None) -> Term:
    """L2 on the ego rows of ``columns`` (default: user, pos, and neg when the batch has it)."""
    require_pow = config.require_pow

    def loss(x: LossInputs):
        cols = columns if columns is not None else [c for c in SIDES if c in x.batch]
        return l2_reg(*(x.ego_rows(SIDES[c], c) for c in cols), require_pow=require_pow)

    return Term("reg", loss)
