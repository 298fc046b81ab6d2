"""Rec-PCA (TF-LLMER, DESIGN 2.3): PCA regularized by the item co-occurrence graph.

With X [I, N] the centered item embeddings, C [I, I] the item co-occurrence counts (C_ij =
number of distinct users who interacted with both i and j, zero diagonal), d_i = sum_j C_ij
and L = I - D^-1/2 C D^-1/2 the normalized Laplacian, Rec-PCA finds W [N, K], W^T W = I,
maximizing tr(W^T X^T X W) - lam tr(W^T X^T L X W): the top-K eigenvectors of
X^T (I - lam L) X. It returns (X W [I, K], W). ``lam = 0`` is plain PCA
(``selection.pca_project``). Isolated items (d_i = 0) get L_ii = 0 (no neighbours to be
smooth with; the networkx convention).

The co-occurrence is kept sparse without scipy: ``item_cooccurrence`` returns COO arrays
(``rows``, ``cols``, ``weights``, both directions, sorted by row then column);
``dense=True`` gives an [I, I] float32 matrix instead (for small I). Building it costs
O(sum over users of degree^2) pair expansions, done in chunks of users.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.init.selection import _check_k, top_eigenvectors


class Cooccurrence(NamedTuple):
    """Sparse symmetric item-item matrix: entry (rows[e], cols[e]) = weights[e]."""

    rows: np.ndarray  # int32 [E]
    cols: np.ndarray  # int32 [E]
    weights: np.ndarray  # float32 [E]
    num_items: int

    def to_dense(self) -> np.ndarray:
        out = np.zeros((self.num_items, self.num_items), np.float32)
        out[self.rows, self.cols] = self.weights
        return out


def item_cooccurrence(user, item, num_items: int, dense: bool = False, max_pairs: int = 1 << 22):
    """Items sharing users -> ``Cooccurrence`` (or dense float32 [I, I] if ``dense``).

    Repeated (user, item) interactions count once. ``max_pairs`` bounds the item pairs
    expanded at a time (memory); one user's pairs are never split.
    """
    user = np.asarray(user, dtype=np.int64)
    item = np.asarray(item, dtype=np.int64)
    if user.ndim != 1 or user.shape != item.shape:
        raise ValueError(f"user, item: expected two 1-D arrays of one length, got {user.shape} and {item.shape}")
    if item.size and (item.min() < 0 or item.max() >= num_items):
        raise ValueError(f"item: ids must lie in [0, {num_items}), got range [{item.min()}, {item.max()}]")
    codes = np.unique(user * num_items + item)  # dedup, sorted by user then item
    users, items = codes // num_items, codes % num_items
    _, starts, degs = np.unique(users, return_index=True, return_counts=True)
    pairs_per_user = degs.astype(np.int64) ** 2
    parts_code: list[np.ndarray] = []
    parts_count: list[np.ndarray] = []
    u0 = 0
    while u0 < len(degs):
        cum = np.cumsum(pairs_per_user[u0:])
        u1 = u0 + max(1, int(np.searchsorted(cum, max_pairs, side="right")))
        s, d = starts[u0:u1], degs[u0:u1]
        # every interaction of the chunk, with its user's segment start and degree
        pos = np.arange(s[0], s[-1] + d[-1])
        seg_start = np.repeat(s, d)
        seg_deg = np.repeat(d, d)
        left = np.repeat(pos, seg_deg)
        offsets = np.repeat(np.cumsum(seg_deg) - seg_deg, seg_deg)
        right = np.repeat(seg_start, seg_deg) + (np.arange(left.size) - offsets)
        keep = left != right
        pair = items[left[keep]] * num_items + items[right[keep]]
        c, n = np.unique(pair, return_counts=True)
        parts_code.append(c)
        parts_count.append(n)
        u0 = u1
    if parts_code:
        allc = np.concatenate(parts_code)
        alln = np.concatenate(parts_count)
        c, inv = np.unique(allc, return_inverse=True)
        n = np.bincount(inv, weights=alln).astype(np.float32)
    else:
        c, n = np.zeros(0, np.int64), np.zeros(0, np.float32)
    cooc = Cooccurrence((c // num_items).astype(np.int32), (c % num_items).astype(np.int32), n, int(num_items))
    return cooc.to_dense() if dense else cooc


def normalized_adjacency(cooc: Cooccurrence) -> Cooccurrence:
    """D^-1/2 C D^-1/2 on the same edges (d = weighted degree; isolated items have no edges)."""
    deg = np.bincount(cooc.rows, weights=cooc.weights, minlength=cooc.num_items)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-30)), 0.0)
    w = cooc.weights * inv_sqrt[cooc.rows] * inv_sqrt[cooc.cols]
    return Cooccurrence(cooc.rows, cooc.cols, w.astype(np.float32), cooc.num_items)


def normalized_laplacian(cooc: Cooccurrence, dense: bool = False):
    """L = I - D^-1/2 C D^-1/2 (L_ii = 0 for isolated items) as ``Cooccurrence`` COO or dense [I, I]."""
    adj = normalized_adjacency(cooc)
    deg = np.bincount(cooc.rows, minlength=cooc.num_items)
    diag = np.flatnonzero(deg > 0).astype(np.int32)
    rows = np.concatenate([diag, adj.rows])
    cols = np.concatenate([diag, adj.cols])
    w = np.concatenate([np.ones(diag.size, np.float32), -adj.weights])
    order = np.lexsort((cols, rows))
    lap = Cooccurrence(rows[order], cols[order], w[order], cooc.num_items)
    return lap.to_dense() if dense else lap


@partial(jax.jit, static_argnames=("num_items",))
def _sparse_matmul(rows, cols, weights, x, num_items: int):
    """(A x)[r] = sum_e weights[e] x[cols[e]] over edges with rows[e] = r."""
    return jax.ops.segment_sum(weights[:, None] * x[cols], rows, num_segments=num_items)


@partial(jax.jit, static_argnames=("k",))
def _rec_pca(xc, lx, lam, k: int):
    m = xc.T @ xc - lam * (xc.T @ lx)
    _, w = top_eigenvectors(m, k)
    return xc @ w, w


def rec_pca(x, user, item, k: int, lam: float, num_items: int | None = None):
    """Rec-PCA of item embeddings ``x`` [I, N] -> (X_c W [I, k], W [N, k]) (see module docstring)."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"x: expected [items, N], got shape {x.shape}")
    num_items = x.shape[0] if num_items is None else num_items
    if num_items != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but num_items={num_items}")
    _check_k(k, x.shape[1])
    xc = x - x.mean(axis=0, keepdims=True)
    if lam == 0:
        lx = jnp.zeros_like(xc)
    else:
        lap = normalized_laplacian(item_cooccurrence(user, item, num_items))
        lx = _sparse_matmul(jnp.asarray(lap.rows), jnp.asarray(lap.cols), jnp.asarray(lap.weights), xc, num_items)
    return _rec_pca(xc, lx, jnp.float32(lam), int(k))
