"""Rec-PCA (TF-LLMER, DESIGN 2.3): PCA regularized by the item co-occurrence graph.

With X [I, N] the centered item embeddings, C [I, I] the item co-occurrence counts (C_ij =
number of distinct users who interacted with both i and j, zero diagonal), d = C 1 and
L = I - D^-1/2 C D^-1/2 the normalized Laplacian, Rec-PCA finds W [N, K], W^T W = I,
maximizing tr(W^T X^T X W) - lam tr(W^T X^T L X W): the top-K eigenvectors of
M = X^T (I - lam L) X. It returns (X W [I, K], W). ``lam = 0`` is plain PCA
(``selection.pca_project``). Isolated items (d_i = 0) get L_ii = 0 (no neighbours to be
smooth with; the networkx convention). Repeated (user, item) pairs count once.

Scale: C is never materialized. With B [U, I] the binary user-item matrix,
C = B^T B - diag(B^T B), so with Y = D^-1/2 X (zero rows for isolated items) and
n_i = (B^T B)_ii the number of distinct users of item i,

    X^T L X = X^T diag(m + n / d) X - (B Y)^T (B Y),     m_i = [d_i > 0],
    d = B^T (B 1) - n,

exactly (no bound, no sampling). Users with a single distinct item add b b^T - diag(b) = 0
to C and are skipped. (B Y)^T (B Y) = sum over users of z_u z_u^T is accumulated over
chunks of ``chunk_users`` users (their rows z_u = sum of y_i over the user's items come
from CSR products over pieces of ``piece`` interactions, a jitted ``lax.scan``), so memory
is O(I N + chunk_users N + piece N + N^2) and time O(nnz N + (U + I) N^2), whatever the
users' degrees; the explicit C has up to sum_u deg_u^2 entries (10^10 for 10^7
interactions with power-law users, where scipy's B^T B needs 75 GiB: ``benchmarks/recpca.py``).
The [N, N] matrix is accumulated in float32 (relative error ~1e-7 against float64), its
top-K eigenvectors are taken in float64.

For small data and as a test reference, ``item_cooccurrence`` still builds C explicitly
(COO arrays ``rows``, ``cols``, ``weights``, both directions, sorted by row then column; or
dense [I, I] float32), by O(sum over users of degree^2) pair expansions in chunks of users;
``normalized_adjacency`` and ``normalized_laplacian`` act on it.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from threadpoolctl import threadpool_limits

from jaxrec.errors import JaxrecError


class RecPCAError(JaxrecError, ValueError):
    """Bad Rec-PCA input (``lam``, ``k``, ``x``, ``user``/``item``); the message names the argument."""


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


def _check_interactions(user, item, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    user = np.asarray(user)
    item = np.asarray(item)
    if user.ndim != 1 or user.shape != item.shape:
        raise RecPCAError(f"user, item: expected two 1-D arrays of one length, got {user.shape} and {item.shape}")
    for name, a in (("user", user), ("item", item)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise RecPCAError(f"{name}: expected integer ids, got dtype {a.dtype}")
    user = user.astype(np.int64)
    item = item.astype(np.int64)
    if item.size and (item.min() < 0 or item.max() >= num_items):
        raise RecPCAError(f"item: ids must lie in [0, {num_items}), got range [{item.min()}, {item.max()}]")
    if user.size and user.min() < 0:
        raise RecPCAError(f"user: ids must be >= 0, got minimum {user.min()}")
    return user, item


def _unique_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a 1-D array and their counts, by sort + run boundaries.

    ``np.unique`` of numpy 2.4 took 42 s on 10^7 random int64 where ``np.sort`` took 0.5 s
    (measured here); this is the sort.
    """
    s = np.sort(a, kind="stable")
    if s.size == 0:
        return s, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return s[starts], np.diff(np.r_[starts, s.size])


def item_cooccurrence(user, item, num_items: int, dense: bool = False, max_pairs: int = 1 << 22):
    """Items sharing users -> ``Cooccurrence`` (or dense float32 [I, I] if ``dense``).

    Explicit pair expansion: O(sum over users of degree^2) time and memory for the result
    (small data, test reference; ``rec_pca`` does not use it). Repeated (user, item)
    interactions count once. ``max_pairs`` bounds the item pairs expanded at a time
    (memory); one user's pairs are never split.
    """
    user, item = _check_interactions(user, item, num_items)
    codes, _ = _unique_counts(user * num_items + item)  # dedup, sorted by user then item
    users, items = codes // num_items, codes % num_items
    _, degs = _unique_counts(users)
    starts = np.cumsum(degs) - degs
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
        c, n = _unique_counts(pair)
        parts_code.append(c)
        parts_count.append(n)
        u0 = u1
    if parts_code:
        allc = np.concatenate(parts_code)
        order = np.argsort(allc, kind="stable")
        c, runs = _unique_counts(allc)
        n = np.add.reduceat(np.concatenate(parts_count)[order], np.cumsum(runs) - runs).astype(np.float32)
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


# ------------------------------------------------------------------ factored graph
class CooccurrenceFactors(NamedTuple):
    """The co-occurrence graph C = B^T B - diag(B^T B) kept as B (never C itself).

    Only users with at least two distinct items are kept (the others add nothing to C).
    """

    items: np.ndarray  # int32 [m]: distinct items of the kept users, grouped by user
    user_ptr: np.ndarray  # int64 [V + 1]: user v's items are items[user_ptr[v]:user_ptr[v + 1]]
    degree: np.ndarray  # float64 [I]: d = C 1 (weighted degree; 0 = isolated item)
    item_users: np.ndarray  # float64 [I]: n_i = distinct kept users of item i = (B^T B)_ii
    num_items: int
    interactions: int  # pairs given
    duplicates: int  # repeated (user, item) pairs, counted once
    users: int  # distinct users given
    single_item_users: int  # users with one distinct item (no pair: no edge)

    @property
    def isolated_items(self) -> int:
        return int(np.sum(self.degree == 0))

    @property
    def total_weight(self) -> float:
        """sum_ij C_ij = sum_u deg_u (deg_u - 1) (ordered pairs, both directions)."""
        return float(self.degree.sum())

    @property
    def has_edges(self) -> bool:
        return self.items.size > 0


def cooccurrence_factors(user, item, num_items: int) -> CooccurrenceFactors:
    """Deduplicate ``user``/``item`` (int [n]) and compute d = C 1 in O(n log n), C never built.

    d_i = sum over the distinct users u of item i of (deg_u - 1) = (B^T (B 1) - n)_i.
    Raises ``RecPCAError`` naming ``user``/``item`` for malformed ids.
    """
    user, item = _check_interactions(user, item, num_items)
    codes, _ = _unique_counts(user * num_items + item)  # dedup, sorted by user then item
    users, items = codes // num_items, codes % num_items
    _, degs = _unique_counts(users)  # users are sorted: one run per user
    multi = degs >= 2
    keep = np.repeat(multi, degs)
    items_kept = items[keep].astype(np.int32)
    degs_kept = degs[multi]
    user_ptr = np.concatenate([[0], np.cumsum(degs_kept)]).astype(np.int64)
    weight = np.repeat(degs_kept - 1, degs_kept).astype(np.float64)
    degree = np.bincount(items_kept, weights=weight, minlength=num_items)
    item_users = np.bincount(items_kept, minlength=num_items).astype(np.float64)
    return CooccurrenceFactors(
        items_kept, user_ptr, degree, item_users, int(num_items), int(user.size),
        int(user.size - codes.size), int(degs.size), int(np.sum(~multi)),
    )


def cooccurrence_degree(user, item, num_items: int) -> np.ndarray:
    """d = C 1, float64 [num_items], without building C (``cooccurrence_factors``)."""
    return cooccurrence_factors(user, item, num_items).degree


class _Layout(NamedTuple):
    items: np.ndarray  # int32 [T, P]: items of the piece's users, by user (padding: 0, past indptr[-1])
    indptr: np.ndarray  # int32 [T, chunk_rows + 1]: CSR row pointers of the piece (rows = chunk's users)
    flush: np.ndarray  # bool [T]: last piece of a chunk
    chunk_rows: int


def _layout(f: CooccurrenceFactors, chunk_users: int, piece: int) -> _Layout:
    """Cut the kept users into chunks of ``chunk_users`` and their items into pieces of ``piece``.

    Each piece is a CSR matrix [chunk_rows, I] of ones (a user's items may span pieces).
    """
    num_users = f.user_ptr.size - 1
    rows_per_chunk = max(1, min(chunk_users, num_users))
    bounds = f.user_ptr[::rows_per_chunk]
    bounds = np.append(bounds, f.user_ptr[-1]) if bounds[-1] != f.user_ptr[-1] else bounds
    sizes = np.diff(bounds)  # interactions per chunk (> 0: every kept user has >= 2)
    p = int(max(1, min(piece, sizes.max())))
    pieces = -(-sizes // p)
    first = np.cumsum(pieces) - pieces
    total = int(pieces.sum())
    chunk = np.repeat(np.arange(sizes.size), sizes)
    offset = np.arange(f.items.size, dtype=np.int64) - bounds[chunk]
    piece_of = first[chunk] + offset // p
    items = np.zeros((total, p), np.int32)
    items[piece_of, offset % p] = f.items
    row = np.repeat(np.arange(num_users) % rows_per_chunk, np.diff(f.user_ptr))
    counts = np.bincount(piece_of * (rows_per_chunk + 1) + row + 1, minlength=total * (rows_per_chunk + 1))
    indptr = np.cumsum(counts.reshape(total, rows_per_chunk + 1), axis=1).astype(np.int32)
    flush = np.zeros(total, bool)
    flush[first + pieces - 1] = True
    return _Layout(items, indptr, flush, rows_per_chunk)


@partial(jax.jit, static_argnames=("chunk_rows",))
def _user_gram(y, items, indptr, flush, chunk_rows: int):
    """(B Y)^T (B Y) = sum_u z_u z_u^T, z_u = sum of y over u's items; pieces scanned, chunks flushed.

    Each piece's rows come from a BCSR product (a native CSR kernel on CPU: 1.8x faster
    than ``segment_sum`` at 10^7 interactions, N = 768).
    """
    n = y.shape[1]
    ones = jnp.ones(items.shape[1], y.dtype)

    def body(carry, xs):
        z, g = carry
        it, ptr, fl = xs
        piece = jsparse.BCSR((ones, it, ptr), shape=(chunk_rows, y.shape[0]), indices_sorted=True,
                             unique_indices=True)
        z = z + piece @ y
        z, g = jax.lax.cond(
            fl,
            lambda z, g: (jnp.zeros_like(z), g + jnp.dot(z.T, z, precision="highest")),
            lambda z, g: (z, g),
            z,
            g,
        )
        return (z, g), None

    init = (jnp.zeros((chunk_rows, n), y.dtype), jnp.zeros((n, n), y.dtype))
    (_, g), _ = jax.lax.scan(body, init, (items, indptr, flush))
    return g


@partial(jax.jit, static_argnames=("center", "chunk_rows"))
def _graph_form(x, inv_sqrt_d, c, base, lam, items, indptr, flush, center: bool, chunk_rows: int):
    """X^T diag(base - lam c) X + lam (B Y)^T (B Y), Y = D^-1/2 X (X centered if ``center``)."""
    x = x.astype(jnp.float32)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    diag_part = jnp.dot((x * (base - lam * c)[:, None]).T, x, precision="highest")
    if items.shape[0] == 0:
        return diag_part, x
    g = _user_gram(x * inv_sqrt_d[:, None], items, indptr, flush, chunk_rows)
    return diag_part + lam * g, x


def _default_piece(n: int) -> int:
    """Interactions gathered per scan step: ~2^24 floats (64 MiB f32) of [piece, N] rows."""
    return max(256, (1 << 24) // max(n, 1))


def _graph_arrays(f: CooccurrenceFactors, chunk_users: int, piece: int | None, n: int):
    for name, v in (("chunk_users", chunk_users), ("piece", 1 if piece is None else piece)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise RecPCAError(f"{name}={v!r}: expected a positive integer")
    d = f.degree
    inv_sqrt = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1.0)), 0.0)
    c = np.where(d > 0, 1.0 + f.item_users / np.maximum(d, 1.0), 0.0)
    if f.has_edges:
        lay = _layout(f, int(chunk_users), int(piece or _default_piece(n)))
    else:
        lay = _Layout(np.zeros((0, 1), np.int32), np.zeros((0, 2), np.int32), np.zeros(0, bool), 1)
    return (jnp.asarray(inv_sqrt, jnp.float32), jnp.asarray(c, jnp.float32),
            jnp.asarray(lay.items), jnp.asarray(lay.indptr), jnp.asarray(lay.flush)), lay.chunk_rows


def _top_eigenvectors_f64(m, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of symmetric ``m`` [N, N] in float64 on the host (numpy LAPACK).

    Same sign convention as ``selection.top_eigenvectors`` (each vector's largest-magnitude
    coordinate positive). Float64 costs nothing at [N, N] and is more accurate: on the
    benchmark's 768 x 768 matrix (float32 entries exact to 1.4e-7) the top-64 subspace was
    off by 5e-6 (sine of the largest principal angle) with jax's float32 eigh, 3e-7 here.
    """
    m = np.asarray(m, np.float64)
    # one BLAS thread: on the shared 2-core machine, OpenBLAS's 2 threads took 1 to 13 s
    # for N = 768 while one thread took 0.3 s (threads spin waiting for each other)
    with threadpool_limits(limits=1, user_api="blas"):
        vals, vecs = np.linalg.eigh(0.5 * (m + m.T))
    vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(k)])
    return vals, vecs * np.where(signs == 0, 1.0, signs)


def _check_x(x, num_items: int | None) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise RecPCAError(f"x: expected item embeddings [items, N], got shape {x.shape}")
    if num_items is not None and num_items != x.shape[0]:
        raise RecPCAError(f"x has {x.shape[0]} rows but num_items={num_items}; expected one row per item")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise RecPCAError(f"x: expected finite values, found {int(jnp.sum(~jnp.isfinite(x)))} NaN/inf entries")
    return x


def laplacian_form(x, user, item, num_items: int | None = None, chunk_users: int = 2048,
                   piece: int | None = None) -> jax.Array:
    """X^T L X, float32 [N, N], for ``x`` [I, N] taken as given (not centered), C never built.

    ``user``/``item`` int [n] are the interactions; L as in the module docstring.
    """
    x = _check_x(x, num_items)
    f = cooccurrence_factors(user, item, x.shape[0])
    arrays, rows = _graph_arrays(f, chunk_users, piece, x.shape[1])
    # X^T diag(0 - (-1) c) X + (-1) G = X^T diag(c) X - (B Y)^T (B Y)
    out, _ = _graph_form(x, *arrays[:2], jnp.float32(0.0), jnp.float32(-1.0), *arrays[2:], center=False,
                         chunk_rows=rows)
    return out


@dataclasses.dataclass(frozen=True)
class RecPCAReport:
    """What ``rec_pca`` did (printable)."""

    lam: float
    k: int
    num_items: int
    dim: int  # N, encoder dims
    interactions: int  # (user, item) pairs given
    duplicates: int  # repeated pairs, counted once
    users: int
    single_item_users: int  # users with one distinct item: no co-occurrence
    isolated_items: int  # d_i = 0: L_ii = 0, no smoothing
    cooccurrence_weight: float  # sum_ij C_ij
    eigenvalues: tuple[float, ...]  # top-k eigenvalues of X^T (I - lam L) X, descending
    fallback: str | None = None  # "pca" when the graph had no edges and the fallback was allowed

    def __str__(self) -> str:
        s = (f"Rec-PCA: lam={self.lam:g}, K={self.k} of N={self.dim}, {self.num_items} items, "
             f"{self.interactions:,} interactions ({self.duplicates:,} repeated, counted once), "
             f"{self.users:,} users ({self.single_item_users:,} with a single item), "
             f"{self.isolated_items:,} isolated items, co-occurrence weight {self.cooccurrence_weight:.6g}")
        if self.fallback:
            s += "; the co-occurrence graph has no edges: fell back to plain PCA"
        return s


def _check_lam(lam) -> float:
    try:
        val = float(lam)
    except (TypeError, ValueError):
        raise RecPCAError(f"lam={lam!r}: expected a finite number >= 0") from None
    if not math.isfinite(val) or val < 0:
        raise RecPCAError(
            f"lam={lam!r}: expected a finite number >= 0 (the Laplacian penalty weight; "
            f"a negative lam rewards roughness on the co-occurrence graph, 0 is plain PCA)"
        )
    return val


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise RecPCAError(f"k={k!r}: expected a positive integer number of dimensions")
    if k > n:
        raise RecPCAError(f"k={k}: larger than the embedding dimension N={n} of x; expected k <= {n}")
    return int(k)


def rec_pca(
    x,
    user,
    item,
    k: int,
    lam: float,
    num_items: int | None = None,
    *,
    allow_pca_fallback: bool = False,
    return_report: bool = False,
    chunk_users: int = 2048,
    piece: int | None = None,
):
    """Rec-PCA of item embeddings ``x`` [I, N] -> (X_c W float32 [I, k], W float32 [N, k]).

    ``user``/``item`` int [n]: training interactions (item ids index the rows of ``x``).
    ``lam`` >= 0 weighs the Laplacian penalty (0: plain PCA, the graph is not used).
    Columns of W are the eigenvectors of X_c^T (I - lam L) X_c by descending eigenvalue
    (the [N, N] matrix is built in float32, its eigendecomposition done in float64),
    each with its largest-magnitude coordinate positive (as ``top_eigenvectors``).
    With ``return_report`` returns (table, W, ``RecPCAReport``).

    Errors (``RecPCAError``, a ValueError): ``lam`` negative or not finite; ``k`` not in
    [1, N]; ``x`` not 2-D or not finite, or ``num_items`` != its rows; ``user``/``item`` of
    different lengths or ids out of range; ``lam`` > 0 with a graph without edges (every
    user has at most one distinct item), unless ``allow_pca_fallback``: then the result
    is plain PCA (exactly what the objective is with L = 0) and the report says so.
    ``chunk_users``/``piece`` trade memory for speed (module docstring), not the result.
    Formula: TF-LLMER (Zhu and Zhang, 2026), DESIGN.md 2.3.
    """
    lam = _check_lam(lam)
    x = _check_x(x, num_items)
    num_items, n = x.shape
    k = _check_k(k, n)
    f = cooccurrence_factors(user, item, num_items)
    fallback = None
    if lam > 0 and not f.has_edges:
        msg = (f"user, item: the co-occurrence graph has no edges (no user among {f.users:,} has two "
               f"distinct items), so lam={lam:g} has nothing to regularize and Rec-PCA is plain PCA")
        if not allow_pca_fallback:
            raise RecPCAError(msg + "; pass allow_pca_fallback=True to accept that")
        fallback = "pca"
    # lam = 0 is plain PCA: the graph is skipped (X^T diag(1 - 0 c) X = X^T X)
    f_used = f if lam > 0 else f._replace(items=np.zeros(0, np.int32))
    arrays, rows = _graph_arrays(f_used, chunk_users, piece, n)
    m, xc = _graph_form(x, *arrays[:2], jnp.float32(1.0), jnp.float32(lam), *arrays[2:], center=True,
                        chunk_rows=rows)
    vals, w64 = _top_eigenvectors_f64(m, k)
    w = jnp.asarray(w64, jnp.float32)
    table = jnp.dot(xc, w, precision="highest")
    if not return_report:
        return table, w
    report = RecPCAReport(
        lam, k, num_items, n, f.interactions, f.duplicates, f.users, f.single_item_users, f.isolated_items,
        f.total_weight, tuple(float(v) for v in vals), fallback,
    )
    return table, w, report
