"""SGL (Wu et al., 2021): the LightGCN encoder trained with BPR + L2 + the two-view InfoNCE.

``loss = BPR + reg_weight * L2(ego u, pos, neg) + ssl_weight * ssl`` where ``ssl`` is the
contrast of the encoder's outputs over two augmented views of the training graph drawn once
per epoch (``jaxrec.objectives.contrast``: ``config.ssl_aug``, ``ssl_ratio``, ``ssl_tau``,
``ssl_negatives``). Each view costs one extra ``num_layers``-layer propagation (forward and
backward): two extra propagations per step in all.
"""

from __future__ import annotations

from jaxrec.config import Config
from jaxrec.models.base import Model
from jaxrec.models.lightgcn import lightgcn_encoder
from jaxrec.objectives import term, weighted_sum


def make_sgl(config: Config) -> Model:
    objective = weighted_sum(term("bpr", config), (term("reg", config), config.reg_weight),
                             (term("ssl", config), config.ssl_weight))
    return Model("sgl", lightgcn_encoder(config), objective)
