"""SGL (Wu et al., 2021): the LightGCN encoder trained with BPR + L2 + the two-view InfoNCE.

``loss = BPR + reg_weight * L2(ego u, pos, neg) + ssl_weight * ssl`` where ``ssl`` is the
contrast of the encoder's outputs over two augmented views of the training graph drawn once
per epoch (``jaxrec.objectives.contrast``: ``ssl_aug``, ``ssl_ratio``, ``ssl_tau``,
``ssl_negatives``). Each view costs one extra ``num_layers``-layer propagation (forward and
backward): two extra propagations per step in all.
"""

from __future__ import annotations

import dataclasses

from jaxrec.config import Config, ConfigError
from jaxrec.models.base import Model
from jaxrec.models.lightgcn import LightGCNSettings, lightgcn_encoder
from jaxrec.objectives import term, weighted_sum
from jaxrec.registry import AUGMENTATIONS, CONTRAST_UNIQUE, CONTRASTS


@dataclasses.dataclass(frozen=True)
class ContrastSettings(LightGCNSettings):
    """``LightGCNSettings`` plus ``contrast_unique``: how the distinct ids of a batch are found for
    the by-id contrastive losses (``bucket``: on the host, padded to a multiple of 64, fast;
    ``table``: inside the step, padded to min(batch, table rows), the form before jaxrec 0.2)."""

    contrast_unique: str = "bucket"

    def validate(self) -> None:
        super().validate()
        CONTRAST_UNIQUE.check(self.contrast_unique, "contrast_unique")


@dataclasses.dataclass(frozen=True)
class SGLSettings(ContrastSettings):
    """SGL's settings (DESIGN.md 2.1): augmentation ``ssl_aug`` (ED | ND | RW) at drop ratio
    ``ssl_ratio``, InfoNCE temperature ``ssl_tau`` and weight ``ssl_weight``, and its negatives
    ``ssl_negatives`` (batch: the batch's users/items; all: every user/item, SGL's code)."""

    ssl_aug: str = "ED"
    ssl_ratio: float = 0.1
    ssl_tau: float = 0.2
    ssl_weight: float = 0.05
    ssl_negatives: str = "batch"

    def validate(self) -> None:
        super().validate()
        AUGMENTATIONS.check(self.ssl_aug, "ssl_aug")
        CONTRASTS.check(self.ssl_negatives, "ssl_negatives")
        self.expect("ssl_ratio", 0 <= self.ssl_ratio < 1, "a number in [0, 1)")
        self.expect("ssl_tau", self.ssl_tau > 0, "a temperature > 0")
        self.expect("ssl_weight", self.ssl_weight >= 0, "a number >= 0")


def check_in_batch(config: Config) -> None:
    """In-batch contrastive losses need two rows per batch (SGL, SGCL)."""
    if config.batch_size < 2:
        raise ConfigError(f"batch_size={config.batch_size!r}: expected at least 2 for in-batch contrastive losses")


def make_sgl(config: Config) -> Model:
    objective = weighted_sum(term("bpr", config), (term("reg", config), config.reg_weight),
                             (term("ssl", config), config.ssl_weight))
    return Model("sgl", lightgcn_encoder(config), objective)
