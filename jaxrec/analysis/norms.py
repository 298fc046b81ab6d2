"""Norm statistics of an embedding table at init (TF-LLMER, DESIGN 7: the norm spread).

``norm_statistics(table [rows, d], reference=None) -> NormStats``: mean, std (ddof 0),
min and max of the row norms over all rows, the coefficient of variation std / mean (the
spread), the max / min ratio over the non-zero rows, the number of zero rows, and, with a
``reference``, the ratio of the mean norm to the backbone's random-init mean norm.
``reference`` is either a table (its measured mean row norm) or a shape ``(rows, k)``:
the expected mean row norm of an xavier-initialized [rows, k] table
(``xavier_mean_row_norm``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxrec.init.scaling import xavier_std

DISTRIBUTIONS = ("uniform", "normal")


def row_norms(table) -> np.ndarray:
    """Euclidean norm of every row of a 2-D table -> float64 [rows]."""
    a = np.asarray(table)
    if a.ndim != 2:
        raise ValueError(f"table: expected a 2-D array [rows, d], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"table: expected finite values, {int(np.sum(~np.isfinite(a)))} entries are NaN or inf")
    return np.linalg.norm(a.astype(np.float64), axis=1)


def xavier_mean_row_norm(rows: int, k: int, distribution: str = "uniform") -> float:
    """Expected row norm E||r|| of an xavier-initialized [rows, k] table (entry variance
    s^2 = 2 / (rows + k), Glorot and Bengio 2010; ``jaxrec.models.xavier_uniform_table``).

    ``normal``: exact, s sqrt(2) Gamma((k+1)/2) / Gamma(k/2) (chi distribution).
    ``uniform``: S = ||r||^2 has mean k s^2 and variance 0.8 k s^4 (E x^4 = 9/5 s^4 for
    uniform x), so by the second-order delta method E sqrt(S) = sqrt(k) s (1 - 1/(10 k)),
    with an O(1/k^2) error. Both are below the root-mean-square norm ``sqrt(k) s``
    (``jaxrec.init.normalize.typical_row_norm``) by about 1/(10 k) and 1/(4 k).
    """
    if isinstance(rows, bool) or int(rows) != rows or rows < 1 or isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"rows={rows!r}, k={k!r}: expected positive integers (the table's shape)")
    s = xavier_std(int(rows), int(k))
    if distribution == "normal":
        return s * math.sqrt(2.0) * math.exp(math.lgamma((k + 1) / 2) - math.lgamma(k / 2))
    if distribution == "uniform":
        return s * math.sqrt(k) * (1.0 - 0.1 / k)
    raise ValueError(f"distribution={distribution!r}: expected one of {', '.join(DISTRIBUTIONS)}")


@dataclasses.dataclass(frozen=True)
class NormStats:
    """Row-norm statistics of a table (printable)."""

    rows: int
    zero_rows: int
    mean: float  # over all rows
    std: float  # ddof 0, over all rows
    min: float
    max: float
    cv: float  # std / mean (inf if mean is 0)
    max_min_ratio: float  # over the non-zero rows (nan if there are none)
    reference_mean: float | None = None  # the random-init mean row norm compared with
    mean_ratio: float | None = None  # mean / reference_mean
    reference: str | None = None  # where reference_mean came from

    def __str__(self) -> str:
        s = (f"row norms over {self.rows} rows: mean {self.mean:.4g}, std {self.std:.4g} (cv {self.cv:.3g}), "
             f"min {self.min:.4g}, max {self.max:.4g}, max/min (non-zero rows) {self.max_min_ratio:.4g}")
        if self.zero_rows:
            s += f", {self.zero_rows} zero rows"
        if self.mean_ratio is not None:
            s += f"; mean / random-init mean {self.mean_ratio:.4g} ({self.reference})"
        return s


def norm_statistics(table, reference=None, distribution: str = "uniform", eps: float = 0.0) -> NormStats:
    """Row-norm statistics of ``table`` [rows, d] (module docstring); rows of norm <= ``eps`` are zero rows.

    ``reference``: None, a 2-D table (the backbone's actual random init), or a shape
    ``(rows, k)`` (expected mean norm of its ``distribution`` xavier init). Raises
    ValueError naming ``table``/``reference`` for non-2-D or non-finite input.
    """
    norms = row_norms(table)
    if norms.size == 0:
        raise ValueError("table: expected at least one row, got 0")
    nz = norms[norms > eps]
    mean = float(norms.mean())
    std = float(norms.std())
    ref_mean = ref_name = ratio = None
    if reference is not None:
        if isinstance(reference, tuple) and len(reference) == 2 and all(np.isscalar(v) for v in reference):
            ref_mean = xavier_mean_row_norm(reference[0], reference[1], distribution)
            ref_name = f"expected, xavier-{distribution} [{reference[0]}, {reference[1]}]"
        else:
            ref = np.asarray(reference)
            if ref.ndim != 2:
                raise ValueError(f"reference: expected a 2-D table or a shape (rows, k), got shape {ref.shape}")
            ref_mean = float(row_norms(ref).mean())
            ref_name = f"measured on a reference table {list(ref.shape)}"
        if not ref_mean > 0:
            raise ValueError(f"reference: its mean row norm is {ref_mean}; expected > 0")
        ratio = mean / ref_mean
    return NormStats(
        rows=int(norms.size),
        zero_rows=int(norms.size - nz.size),
        mean=mean,
        std=std,
        min=float(norms.min()),
        max=float(norms.max()),
        cv=std / mean if mean > 0 else math.inf,
        max_min_ratio=float(nz.max() / nz.min()) if nz.size else math.nan,
        reference_mean=ref_mean,
        mean_ratio=ratio,
        reference=ref_name,
    )
