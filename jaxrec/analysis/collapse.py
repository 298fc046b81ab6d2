"""Embedding-collapse measures of a learned (or initial) table [rows, d].

- ``singular_values(table)``: singular values, descending, float64 (the table is not
  centered);
- ``effective_rank(sv)``: exp of the Shannon entropy of ``p = s / sum(s)`` (Roy and
  Vetterli 2007, "The effective rank: a measure of effective dimensionality", eq. 2-3):
  K for K equal values, 1 for a rank-one table;
- ``information_abundance(sv)``: ``sum(s) / max(s)`` (Guo et al. 2024, "On the Embedding
  Collapse when Scaling up Recommendation Models", ICML, Definition 1).

Copied from ``experiments/common.py`` (the experiments will import these).
"""

from __future__ import annotations

import numpy as np


def singular_values(table) -> np.ndarray:
    """Singular values (descending) of a 2-D table -> float64 [min(rows, d)]; not centered."""
    a = np.asarray(table, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"table: expected a 2-D array, got shape {a.shape}")
    return np.linalg.svd(a, compute_uv=False)


def _check_sv(sv) -> np.ndarray:
    s = np.asarray(sv, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"sv: expected a 1-D array of singular values, got shape {s.shape}")
    if s.size and not (np.all(np.isfinite(s)) and s.min() >= 0):
        bad = int(np.sum(~np.isfinite(s)))
        raise ValueError(f"sv: expected finite values >= 0, got min {s.min()} ({bad} NaN/inf)")
    return s


def effective_rank(sv) -> float:
    """exp(-sum p log p), ``p = s / sum(s)`` over the non-zero values; 0.0 for an all-zero ``sv``."""
    s = _check_sv(sv)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def information_abundance(sv) -> float:
    """``sum(s) / max(s)``; 0.0 for an empty or all-zero ``sv``."""
    s = _check_sv(sv)
    return float(s.sum() / s.max()) if s.size and s.max() > 0 else 0.0
