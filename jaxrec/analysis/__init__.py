"""Measurements of embedding tables and losses (TF-LLMER, DESIGN 7; embedding collapse).

- ``collapse``: ``singular_values``, ``effective_rank``, ``information_abundance``;
- ``norms``: ``norm_statistics`` (norm spread at init, ratio to the random-init norm);
- ``curvature``: ``hessian_top_eigenvalue`` (Lanczos / power iteration on jitted
  Hessian-vector products), ``hvp``.
"""

from jaxrec.analysis.collapse import effective_rank, information_abundance, singular_values
from jaxrec.analysis.curvature import HessianEigen, hessian_top_eigenvalue, hvp
from jaxrec.analysis.norms import NormStats, norm_statistics, row_norms, xavier_mean_row_norm

__all__ = [
    "HessianEigen",
    "NormStats",
    "effective_rank",
    "hessian_top_eigenvalue",
    "hvp",
    "information_abundance",
    "norm_statistics",
    "row_norms",
    "singular_values",
    "xavier_mean_row_norm",
]
