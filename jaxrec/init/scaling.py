"""Optional rescaling of an LLM-initialized table relative to the standard random init.

The backbones start from xavier_uniform tables: for an [n, K] table the entries have std
``sqrt(2 / (n + K))`` (``xavier_std``), so a row's norm is about ``sqrt(K) * std``.

``rescale(table [n, K], mode, reference_std=None) -> (table, report dict)``:

- ``none`` (default, as in the LLMInit paper): unchanged;
- ``match_random``: one scalar factor so the mean norm of the non-zero rows equals
  ``sqrt(K) * reference_std``;
- ``standardize``: each dim to zero mean / unit variance over the non-zero rows, times
  ``reference_std`` (dims with zero variance become 0);
- ``minmax``: what the LLMInit reference code does through RecBole's ``normalize_all``
  (its dataset configs set it, and the LLM embedding is a float_seq field of the .item
  file): the *full* [I, N] encoder table is mapped to [0, 1] by its global minimum and
  maximum, ``(x - min) / (max - min)``, before the K dims are selected
  (``minmax_full``); the selected tables are then left as they are. Every entry becomes
  positive, so all rows share a large common direction.

Zero rows (users without training items) stay zero. ``reference_std`` defaults to
``xavier_std(n, K)`` of the table's own shape (pass ``n``/``k`` to use another shape).
The report holds mode, reference_std, mean row norm and entry std before and after.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxrec.registry import INIT_SCALES

# Registered modes (``config.init_scale``); the module docstring describes each.
INIT_SCALES.register("none", "unchanged")
INIT_SCALES.register("match_random", "one factor: mean row norm of the random init")
INIT_SCALES.register("standardize", "each dim to zero mean, the random init's std")
INIT_SCALES.register("minmax", "the full encoder table mapped to [0, 1] before selection (LLMInit code)")


def xavier_std(n: int, k: int) -> float:
    """Std of xavier_uniform (and xavier_normal) entries of an [n, k] table: sqrt(2 / (n + k))."""
    return math.sqrt(2.0 / (n + k))


def _stats(table, mask) -> tuple[float, float]:
    norms = jnp.linalg.norm(table, axis=1)
    count = jnp.maximum(mask.sum(), 1)
    mean_norm = float(jnp.sum(jnp.where(mask, norms, 0.0)) / count)
    return mean_norm, float(jnp.std(table))


def minmax_full(emb) -> tuple[np.ndarray, dict]:
    """RecBole ``normalize_all`` on an encoder table: [I, N] -> [I, N] in [0, 1], and a report.

    One global min and max over all entries (RecBole normalizes a float_seq field over the
    concatenation of all its values). A constant table maps to all ones, as in RecBole.
    """
    emb = np.asarray(emb)
    lo, hi = float(emb.min()), float(emb.max())
    out = np.ones_like(emb) if hi == lo else (emb - lo) / (hi - lo)
    return out.astype(emb.dtype, copy=False), {"mode": "minmax", "min": lo, "max": hi}


def rescale(
    table, mode: str = "none", reference_std: float | None = None, n: int | None = None, k: int | None = None
) -> tuple[jnp.ndarray, dict]:
    """Rescale ``table`` [n, K] by ``mode`` (none | match_random | standardize) -> (table, report).

    ``minmax`` acts on the full encoder table before selection (``minmax_full``); here it
    leaves the table unchanged, like ``none``.
    """
    INIT_SCALES.check(mode, "init_scale")
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"table: expected [rows, K], got shape {table.shape}")
    rows, dim = table.shape
    if reference_std is None:
        reference_std = xavier_std(n if n is not None else rows, k if k is not None else dim)
    mask = jnp.any(table != 0, axis=1)
    before = _stats(table, mask)
    if mode == "match_random":
        target = math.sqrt(dim) * reference_std
        factor = target / before[0] if before[0] > 0 else 1.0
        out = table * jnp.asarray(factor, table.dtype)
    elif mode == "standardize":
        m = mask[:, None].astype(table.dtype)
        count = jnp.maximum(m.sum(), 1.0)
        mean = (table * m).sum(axis=0) / count
        var = (((table - mean) * m) ** 2).sum(axis=0) / count
        std = jnp.sqrt(var)
        z = jnp.where(std > 0, (table - mean) / jnp.where(std > 0, std, 1.0), 0.0)
        out = (z * reference_std * m).astype(table.dtype)
    else:
        out = table
    after = _stats(out, mask)
    report = {
        "mode": mode,
        "reference_std": float(reference_std),
        "mean_row_norm_before": before[0],
        "mean_row_norm_after": after[0],
        "std_before": before[1],
        "std_after": after[1],
    }
    return out, report
