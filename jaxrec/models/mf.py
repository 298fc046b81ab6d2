"""Matrix factorization trained with BPR (the sanity baseline): no propagation, no context."""

from __future__ import annotations

import dataclasses

from jaxrec.config import Config
from jaxrec.models.base import Encoder, Model, TableSettings, init_tables
from jaxrec.objectives import term, weighted_sum


@dataclasses.dataclass(frozen=True)
class MFSettings(TableSettings):
    """MF's settings: ``embedding_size``, ``reg_weight``, ``require_pow`` (``TableSettings``)."""


def mf_encoder(config: Config) -> Encoder:
    dim = config.embedding_size
    return Encoder(
        name="mf",
        init=lambda key, num_users, num_items: init_tables(key, num_users, num_items, dim),
        embed=lambda params, context: (params["user_embedding"], params["item_embedding"]),
        propagates=False,
    )


def make_mf(config: Config) -> Model:
    """MF: dot products of the user and item tables; BPR + ``reg_weight`` * L2 on the batch's rows."""
    objective = weighted_sum(term("bpr", config), (term("reg", config), config.reg_weight))
    return Model("mf", mf_encoder(config), objective, context="none")
