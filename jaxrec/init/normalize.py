"""Row normalization of item embeddings (TF-LLMER, DESIGN 2.3).

``normalize_items(emb [I, N], target_norm=None) -> [I, N]``: every non-zero row scaled to
norm 1, or to ``target_norm`` (e.g. ``typical_row_norm(I, K)``, the norm of a row of the
backbone's xavier-initialized table). Zero rows stay zero.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxrec.init.scaling import xavier_std


def typical_row_norm(n: int, k: int) -> float:
    """Expected row norm of an xavier-initialized [n, k] table: ``sqrt(k) * sqrt(2 / (n + k))``."""
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
