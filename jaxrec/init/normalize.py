"""Row normalization of item embeddings (TF-LLMER, DESIGN 2.3 and 7).

TF-LLMER normalizes each item embedding to unit norm, optionally scaled to the backbone's
typical norm, to remove the spread of LLM embedding norms that stalls training.

``normalize_table(table [rows, K], mode, rows=None, k=None, reference=None) -> (table,
NormalizeReport)`` is the composable step, applied to the table any selection produced
(uniform, random, variance, pca, full, recpca). The modes are registered
(``jaxrec.registry.INIT_NORMS``, config field ``init_norm``; a ``Normalization`` gives the
target norm), built-ins:

- ``none``: unchanged (the report still describes the norms);
- ``unit``: every non-zero row scaled to norm 1;
- ``typical``: every non-zero row scaled to the backbone's typical row norm: with a
  ``reference`` table (the backbone's own random-init table, as ``llm_init_params`` passes
  it) its root-mean-square row norm ``sqrt(mean_i ||r_i||^2)`` (``rms_row_norm``), measured;
  without, ``typical_row_norm(rows, k)``, the expected RMS row norm of an xavier [rows, k]
  table (``rows``/``k`` default to the table's own shape). Both agree for the built-in
  backbones (xavier tables) up to sampling noise.

Zero rows stay zero (and are counted). ``normalize_items(emb, target_norm)`` is the
underlying row scaling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxrec.errors import JaxrecError
from jaxrec.init.scaling import xavier_std
from jaxrec.registry import INIT_NORMS


class NormalizeError(JaxrecError, ValueError):
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


def rms_row_norm(table) -> float:
    """Root-mean-square row norm ``sqrt(mean_i ||r_i||^2)`` of a 2-D table (float64 sums)."""
    a = np.asarray(table, np.float64)
    return float(np.sqrt(np.mean(np.sum(a * a, axis=1)))) if a.size else 0.0


@dataclasses.dataclass(frozen=True)
class Normalization:
    """A registered row-normalization mode (``config.init_norm``).

    ``target(rows, k, reference) -> (norm, where it came from)``: the norm every non-zero row
    gets, from the backbone table's shape ``rows`` x ``k`` and its random-init ``reference``
    rows (a float64 numpy array, or None when not given); ``target=None`` leaves rows as they are.
    """

    target: Callable[[int, int, np.ndarray | None], tuple[float, str]] | None
    description: str = ""


def _typical(rows: int, k: int, reference: np.ndarray | None) -> tuple[float, str]:
    if reference is None:
        return typical_row_norm(rows, k), f"expected RMS row norm of an xavier [{rows}, {k}] table"
    return rms_row_norm(reference), f"RMS row norm of the backbone's random-init table {list(reference.shape)}"


INIT_NORMS.register("none", Normalization(None, "item rows unchanged"))
INIT_NORMS.register("unit", Normalization(lambda rows, k, ref: (1.0, "unit"), "every item row to norm 1"))
INIT_NORMS.register("typical", Normalization(_typical, "every item row to the backbone's random-init RMS row norm"))


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
    target_source: str | None = None  # where target_norm came from

    def __str__(self) -> str:
        s = (f"normalize {self.mode}: {self.rows} rows, norms before mean {self.mean_norm_before:.4g} "
             f"(min {self.min_norm_before:.4g}, max {self.max_norm_before:.4g}), after mean "
             f"{self.mean_norm_after:.4g}")
        if self.target_norm is not None:
            s += f" (target {self.target_norm:.4g}: {self.target_source})"
        if self.zero_rows:
            s += f"; {self.zero_rows} zero rows left at zero"
        return s


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise NormalizeError(f"{name}={value!r}: expected a positive integer (the backbone table's shape)")
    return int(value)


def normalize_table(table, mode: str = "unit", rows: int | None = None, k: int | None = None,
                    eps: float = 1e-12, *, reference=None) -> tuple[jnp.ndarray, NormalizeReport]:
    """Normalize the rows of an initial item table [rows, K] -> (same shape and dtype, report).

    ``mode``: a registered normalization (``none`` | ``unit`` | ``typical``; module
    docstring). For ``typical``: ``reference`` [rows', K'] is the backbone's own random-init
    table whose RMS row norm is the target (measured), or else ``rows``/``k`` give the
    backbone table's shape whose expected xavier RMS norm is the target (default:
    ``table``'s shape); ``none`` reads neither. Rows of norm <= ``eps`` count as zero and stay zero.
    Raises ``NormalizeError`` (a ValueError) naming ``mode``, ``table``, ``rows``, ``k`` or
    ``reference`` (not 2-D, not finite, or given together with ``rows``/``k``), and a target
    norm that is not > 0 (a ``typical`` reference of zeros).
    """
    if mode not in INIT_NORMS:
        raise NormalizeError(f"mode={mode!r}: expected one of {', '.join(INIT_NORMS.names())}")
    normalization = INIT_NORMS.get(mode, "mode")
    if reference is not None and normalization.target is not None:  # "none" never reads it
        if rows is not None or k is not None:
            raise NormalizeError("reference: give either the backbone's random-init table or its shape rows/k, not both")
        reference = np.asarray(reference, np.float64)
        if reference.ndim != 2 or reference.shape[0] == 0:
            raise NormalizeError(f"reference: expected the backbone's table [rows, K], got shape {reference.shape}")
        if not np.all(np.isfinite(reference)):
            raise NormalizeError("reference: expected finite values (the backbone's random-init table)")
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise NormalizeError(f"table: expected [rows, K], got shape {table.shape}")
    if not bool(jnp.all(jnp.isfinite(table))):
        bad = int(jnp.sum(~jnp.all(jnp.isfinite(table), axis=1)))
        raise NormalizeError(f"table: expected finite values, {bad} rows hold NaN or inf")
    n_rows, dim = table.shape
    rows = n_rows if rows is None else _positive_int(rows, "rows")
    k = dim if k is None else _positive_int(k, "k")
    target = source = None
    if normalization.target is not None:
        target, source = normalization.target(rows, k, reference)
        target = float(target)
        if not (math.isfinite(target) and target > 0):
            raise NormalizeError(f"mode={mode!r}: target row norm {target} ({source}); expected a finite number > 0")
    out = table if target is None else normalize_items(table, target, eps)
    before = np.asarray(jnp.linalg.norm(table.astype(jnp.float32), axis=1), np.float64)
    after = np.asarray(jnp.linalg.norm(out.astype(jnp.float32), axis=1), np.float64)
    nz = before > eps
    pick = (lambda a, f: float(f(a[nz])) if nz.any() else 0.0)
    report = NormalizeReport(mode, target, n_rows, int(np.sum(~nz)), pick(before, np.mean), pick(before, np.min),
                             pick(before, np.max), pick(after, np.mean), source)
    return out, report
