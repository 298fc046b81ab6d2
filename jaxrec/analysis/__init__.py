"""Measures of trained and initial models: embedding collapse, norm statistics, curvature."""

from jaxrec.analysis.collapse import (
    effective_rank,
    information_abundance,
    singular_values,
)

__all__ = ["singular_values", "effective_rank", "information_abundance"]
