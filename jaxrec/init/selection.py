"""Choosing K of the N encoder dimensions (LLMInit, DESIGN 2.1) and the initial item table.

Strategies of ``select_dims(emb [I, N], k, strategy, ...) -> int32 [k]``:

- ``uniform``: ``i = j * floor(N / K)`` for ``j < K``;
- ``random``: K dims drawn with ``jax.random.choice(key, N)``, without replacement by
  default (``with_replacement=True`` allows repeats); returned sorted ascending;
- ``variance``: the K dims of largest variance (ddof 0) over the ``variance_fraction``
  most popular items (``floor(fraction * I)``, at least 1; popularity = training
  interaction counts, ties -> lower item id first; variance ties -> lower dim first);
  returned sorted ascending, as in the reference code.

``initial_item_table(emb, k, strategy, ...) -> [I, K] | None`` also covers ``full`` (all N
dims, no selection: ``k`` must be None or N, so a backbone using it needs
``embedding_size = N``), ``pca`` (projections of the centered embeddings on the top-K
principal axes; each axis' largest-magnitude coordinate is made positive) and ``none``
(no LLM initialization: returns None).
"""

from __future__ import annotations

import types
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np



def _check_k(k: int, n: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"K={k}: expected a positive integer number of dimensions")
    if k > n:
        raise ValueError(f"K={k} dimensions requested but the embeddings have only N={n}; use K <= N")


def _as_2d(emb, name: str = "emb") -> jax.Array:
    emb = jnp.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [items, N], got shape {emb.shape}")
    return emb


def item_popularity(item: np.ndarray, num_items: int) -> np.ndarray:
    """Training interaction count per item -> int32 [num_items]."""
    item = np.asarray(item)
    if item.size and (item.min() < 0 or item.max() >= num_items):
        raise ValueError(f"item: ids must lie in [0, {num_items}), got range [{item.min()}, {item.max()}]")
    return np.bincount(item, minlength=num_items).astype(np.int32)


def num_popular(num_items: int, variance_fraction: float) -> int:
    """How many top items the variance strategy looks at: ``max(1, floor(fraction * I))``."""
    if not 0 < variance_fraction <= 1:
        raise ValueError(f"variance_fraction={variance_fraction}: expected a number in (0, 1]")
    return max(1, int(np.floor(variance_fraction * num_items + 1e-9)))


def uniform_dims(n: int, k: int) -> jax.Array:
    """``j * floor(n / k)`` for ``j < k`` -> int32 [k]."""
    _check_k(k, n)
    return jnp.arange(k, dtype=jnp.int32) * (n // k)


@partial(jax.jit, static_argnames=("n", "k", "replace"))
def _random_dims(key: jax.Array, n: int, k: int, replace: bool) -> jax.Array:
    return jnp.sort(jax.random.choice(key, n, (k,), replace=replace)).astype(jnp.int32)


def random_dims(key: jax.Array, n: int, k: int, with_replacement: bool = False) -> jax.Array:
    """K of ``n`` dims drawn with ``key`` (sorted ascending) -> int32 [k]."""
    _check_k(k, n)
    if key is None:
        raise ValueError("strategy 'random': a jax.random key is required")
    return _random_dims(key, n, k, bool(with_replacement))


@partial(jax.jit, static_argnames=("k", "n_top"))
def _variance_dims(emb: jax.Array, popularity: jax.Array, k: int, n_top: int) -> jax.Array:
    order = jnp.argsort(-popularity, stable=True)
    top = emb[order[:n_top]].astype(jnp.float32)
    var = jnp.var(top, axis=0)
    chosen = jnp.argsort(-var, stable=True)[:k]
    return jnp.sort(chosen).astype(jnp.int32)


def variance_dims(emb, popularity, k: int, variance_fraction: float = 0.2) -> jax.Array:
    """Top-K dims by variance over the most popular ``variance_fraction`` of items -> int32 [k]."""
    emb = _as_2d(emb)
    num_items, n = emb.shape
    _check_k(k, n)
    if popularity is None:
        raise ValueError("strategy 'variance': popularity (training interactions per item) is required")
    popularity = jnp.asarray(popularity)
    if popularity.shape != (num_items,):
        raise ValueError(f"popularity: expected shape ({num_items},) (one count per item), got {popularity.shape}")
    return _variance_dims(emb, popularity, int(k), num_popular(num_items, variance_fraction))


def select_dims(
    emb,
    k: int,
    strategy: str,
    key: jax.Array | None = None,
    popularity=None,
    variance_fraction: float = 0.2,
    with_replacement: bool = False,
) -> jax.Array:
    """Indices int32 [k] of the dims of ``emb`` [I, N] kept by ``strategy`` (uniform | random | variance)."""
    emb = _as_2d(emb)
    n = emb.shape[1]
    if strategy == "uniform":
        return uniform_dims(n, k)
    if strategy == "random":
        return random_dims(key, n, k, with_replacement)
    if strategy == "variance":
        return variance_dims(emb, popularity, k, variance_fraction)
    raise ValueError(f"strategy={strategy!r}: expected one of {', '.join(SELECT_STRATEGIES)}")


#: The dimension-selection strategies of ``select_dims`` (registered as initializers too).
SELECT_STRATEGIES = ("uniform", "random", "variance")


# ------------------------------------------------------------------------------ PCA
@partial(jax.jit, static_argnames=("k",))
def top_eigenvectors(m: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top-``k`` eigenpairs of symmetric ``m`` [N, N] -> (values [k] descending, vectors [N, k]).

    Sign convention: each vector's largest-magnitude coordinate is positive.
    """
    m = 0.5 * (m + m.T)
    vals, vecs = jnp.linalg.eigh(m)
    vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    pivot = jnp.argmax(jnp.abs(vecs), axis=0)
    signs = jnp.sign(vecs[pivot, jnp.arange(k)])
    signs = jnp.where(signs == 0, 1.0, signs)
    return vals, vecs * signs


@partial(jax.jit, static_argnames=("k",))
def _pca(emb: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    x = emb.astype(jnp.float32)
    xc = x - x.mean(axis=0, keepdims=True)
    _, w = top_eigenvectors(xc.T @ xc, k)
    return xc @ w, w


def pca_project(emb, k: int) -> tuple[jax.Array, jax.Array]:
    """Centered ``emb`` [I, N] on its top-K principal axes -> (table [I, K], axes W [N, K])."""
    emb = _as_2d(emb)
    _check_k(k, emb.shape[1])
    return _pca(emb, int(k))


# ------------------------------------------------------------------ initial table
def initial_item_table(
    emb,
    k: int | None,
    strategy: str,
    key: jax.Array | None = None,
    popularity=None,
    variance_fraction: float = 0.2,
    with_replacement: bool = False,
    return_indices: bool = False,
):
    """The initial item table of the registered initializer ``strategy`` -> float32 [I, K]
    (``full``: [I, N]; ``none``: None).

    With ``return_indices`` returns ``(table, indices)``; indices are int32 [K] for the
    selection strategies and None for ``full``, ``pca`` and ``none``.
    """
    from jaxrec.init.strategies import InitInputs, get_initializer  # noqa: PLC0415 (strategies imports us)

    init = get_initializer(strategy)
    table = idx = None
    if init.build is not None:
        emb = _as_2d(emb).astype(jnp.float32)
        if k is None:
            if strategy != "full":
                raise ValueError(f"init {strategy!r}: K is required")
            k = emb.shape[1]
        settings = types.SimpleNamespace(variance_fraction=variance_fraction, random_with_replacement=with_replacement)
        inputs = InitInputs(config=settings, key=key, num_items=emb.shape[0],
                            popularity=None if popularity is None else np.asarray(popularity))
        table, idx = init.build(emb, int(k), inputs)
    return (table, idx) if return_indices else table
