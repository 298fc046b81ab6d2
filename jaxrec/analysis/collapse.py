"""Embedding collapse measures (LLMInit section 4.3's figure; Guo et al. 2024, "On the embedding
collapse when scaling up recommendation models"): singular values, effective rank, information
abundance of an embedding table."""

from __future__ import annotations

import numpy as np


def singular_values(table) -> np.ndarray:
    """Singular values (descending) of a 2-D table, in float64; the table is not centered."""
    a = np.asarray(table, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"table: expected a 2-D array, got shape {a.shape}")
    return np.linalg.svd(a, compute_uv=False)


def effective_rank(sv: np.ndarray) -> float:
    """exp of the Shannon entropy of the normalized singular values ``p = s / sum(s)``
    (Roy & Vetterli 2007): K for K equal values, 1 for a rank-one table."""
    s = np.asarray(sv, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def information_abundance(sv: np.ndarray) -> float:
    """``sum(s) / max(s)`` (Guo et al. 2023, embedding collapse)."""
    s = np.asarray(sv, dtype=np.float64)
    return float(s.sum() / s.max()) if s.size and s.max() > 0 else 0.0


__all__ = ["singular_values", "effective_rank", "information_abundance"]
