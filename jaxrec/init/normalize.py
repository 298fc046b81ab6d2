"""Row normalization of item embeddings (TF-LLMER, DESIGN 2.3 and 7).

TF-LLMER normalizes each item embedding to unit norm, optionally scaled to the backbone's
typical norm, to remove the spread of LLM embedding norms that stalls training.

``normalize_table(table [rows, K], mode, rows=None, k=None) -> (table, NormalizeReport)``
is the composable step, applied to the table any selection produced (uniform, random,
variance, pca, full, recpca):

- ``none``: unchanged (the report still describes the norms);
- ``unit``: every non-zero row scaled to norm 1;
- ``typical``: every non-zero row scaled to ``typical_row_norm(rows, k)``, the root-mean-
  square row norm of the backbone's xavier-uniform [rows, k] table (``rows``/``k`` default
  to the table's own shape).

Zero rows stay zero (and are counted). ``normalize_items(emb, target_norm)`` is the
underlying row scaling.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from jaxrec.init.scaling import xavier_std

NORMALIZE_MODES = ("none", "unit", "typical")


class NormalizeError(ValueError):
    """Bad input to ``normalize_table`` (the message names the argument)."""


def typical_row_norm(n: int, k: int) -> float:
    """Root-mean-square row norm of an xavier-initialized [n, k] table: ``sqrt(k) * sqrt(2 / (n + k))``.

    Each entry has variance 2 / (n + k) (Glorot and Bengio 2010, eq. 16; torch
    ``xavier_uniform_``), so E||row||^2 = k * 2 / (n + k).
    """
    return math.sqrt(k) * xavier_std(n, k)


def normalize_items(emb, target_norm: float | None = None, eps: float = 1e-12) -> jnp.ndarray:
    """Rows of ``emb`` [I, N] scaled to norm ``target_norm`` (default 1); zero rows stay zero."""
    emb = jnp.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"emb: expected [items, N], got shape {emb.shape}")
    if target_norm is not None and not target_norm > 0:
        raise ValueError(f"target_norm={target_norm}: expected a number > 0")
    norms = jnp.linalg.norm(emb, axis=1, keepdims=True)
    scale = (1.0 if target_norm is None else float(target_norm)) / jnp.maximum(norms, eps)
    return jnp.where(norms > eps, emb * scale, 0.0).astype(emb.dtype)


@dataclasses.dataclass(frozen=True)
class NormalizeReport:
    """What ``normalize_table`` did (printable). Norm statistics are over the non-zero rows."""

    mode: str
    target_norm: float | None  # None for mode "none"
    rows: int
    zero_rows: int  # left at zero
    mean_norm_before: float
    min_norm_before: float
    max_norm_before: float
    mean_norm_after: float

    def __str__(self) -> str:
        s = (f"normalize {self.mode}: {self.rows} rows, norms before mean {self.mean_norm_before:.4g} "
             f"(min {self.min_norm_before:.4g}, max {self.max_norm_before:.4g}), after mean "
             f"{self.mean_norm_after:.4g}")
        if self.target_norm is not None:
            s += f" (target {self.target_norm:.4g})"
        if self.zero_rows:
            s += f"; {self.zero_rows} zero rows left at zero"
        return s


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise NormalizeError(f"{name}={value!r}: expected a positive integer (the backbone table's shape)")
    return int(value)


def normalize_table(table, mode: str = "unit", rows: int | None = None, k: int | None = None,
                    eps: float = 1e-12) -> tuple[jnp.ndarray, NormalizeReport]:
    """Normalize the rows of an initial item table [rows, K] -> (same shape and dtype, report).

    ``mode``: ``none`` | ``unit`` | ``typical`` (module docstring). For ``typical``,
    ``rows``/``k`` give the backbone table's shape whose random-init norm is the target
    (default: ``table``'s shape). Rows of norm <= ``eps`` count as zero and stay zero.
    Raises ``NormalizeError`` (a ValueError) naming ``mode``, ``table``, ``rows`` or ``k``.
    """
    if mode not in NORMALIZE_MODES:
        raise NormalizeError(f"mode={mode!r}: expected one of {', '.join(NORMALIZE_MODES)}")
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise NormalizeError(f"table: expected [rows, K], got shape {table.shape}")
    if not bool(jnp.all(jnp.isfinite(table))):
        bad = int(jnp.sum(~jnp.all(jnp.isfinite(table), axis=1)))
        raise NormalizeError(f"table: expected finite values, {bad} rows hold NaN or inf")
    n_rows, dim = table.shape
    rows = n_rows if rows is None else _positive_int(rows, "rows")
    k = dim if k is None else _positive_int(k, "k")
    target = {"none": None, "unit": 1.0, "typical": typical_row_norm(rows, k)}[mode]
    out = table if mode == "none" else normalize_items(table, target, eps)
    before = np.asarray(jnp.linalg.norm(table.astype(jnp.float32), axis=1), np.float64)
    after = np.asarray(jnp.linalg.norm(out.astype(jnp.float32), axis=1), np.float64)
    nz = before > eps
    pick = (lambda a, f: float(f(a[nz])) if nz.any() else 0.0)
    report = NormalizeReport(mode, target, n_rows, int(np.sum(~nz)), pick(before, np.mean), pick(before, np.min),
                             pick(before, np.max), pick(after, np.mean))
    return out, report
