"""Loss functions: pure, shape-checked, numerically stable.

Every function takes arrays and returns a scalar (float32 []), so they compose freely
inside any model's loss and differentiate with ``jax.grad``.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np


def bpr_loss(pos_scores: jax.Array, neg_scores: jax.Array) -> jax.Array:
    """Bayesian personalized ranking: ``mean(-log sigmoid(pos - neg))``. [B], [B] -> []."""
    chex.assert_rank(pos_scores, 1)
    chex.assert_equal_shape([pos_scores, neg_scores])
    return -jnp.mean(jax.nn.log_sigmoid(pos_scores - neg_scores))


def sampled_bce(pos_logits: jax.Array, neg_logits: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Binary cross-entropy of positive (label 1) and sampled negative (label 0) logits at the
    positions where ``mask`` is 1, each averaged over those positions -> ``(bce_pos, bce_neg)``.

    ``bce_pos = sum(mask * softplus(-pos)) / sum(mask)``, ``bce_neg`` likewise with
    ``softplus(neg)``; the loss of SASRec's reference ``main.py`` (A-LLMRec
    ``pre_train/sasrec/main.py``: two ``BCEWithLogitsLoss`` over ``pos != 0``) is their sum.
    Any shapes, all equal; a mask without ones gives 0 (not NaN).
    """
    chex.assert_equal_shape([pos_logits, neg_logits, mask])
    mask = mask.astype(pos_logits.dtype)
    count = jnp.maximum(mask.sum(), 1.0)
    return (jnp.sum(jax.nn.softplus(-pos_logits) * mask) / count,
            jnp.sum(jax.nn.softplus(neg_logits) * mask) / count)


def l2_reg(*embeddings: jax.Array, require_pow: bool = False) -> jax.Array:
    """L2 on the ego embeddings of a batch, divided by the batch size (RecBole's EmbLoss).

    ``require_pow=False`` (RecBole's LightGCN default): ``sum_e ||e||_F / B``.
    ``require_pow=True``: ``sum_e ||e||_F^2 / (2 B)``. Each embedding is [B, d].
    """
    if not embeddings:
        raise ValueError("l2_reg: needs at least one embedding array")
    chex.assert_rank(embeddings, 2)
    batch = embeddings[-1].shape[0]
    if require_pow:
        total = sum(jnp.sum(jnp.square(e)) for e in embeddings)
        return total / batch / 2.0
    total = sum(jnp.sqrt(jnp.sum(jnp.square(e))) for e in embeddings)
    return total / batch


# --- contrastive and reconstruction losses ---------------------------------------------


def _check_tau(tau, name: str) -> None:
    """Reject a non-positive temperature when its value is known (Python or concrete array)."""
    try:
        value = float(tau)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError, TypeError):
        return  # traced temperature: value unknown at trace time
    if not value > 0:
        raise ValueError(f"{name}: tau={value!r}; expected a temperature > 0")


def _check_in_batch(name: str, *arrays: jax.Array) -> int:
    chex.assert_rank(arrays, 2)
    chex.assert_equal_shape(arrays)
    batch = arrays[0].shape[0]
    if batch < 2:
        raise ValueError(
            f"{name}: batch size {batch}; in-batch contrastive losses need at least 2 rows "
            "(the other rows are the negatives)"
        )
    return batch


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows scaled to unit L2 norm, ``x / max(||x||, eps)`` (torch's ``F.normalize``). [..., d]."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def info_nce(a: jax.Array, b: jax.Array, tau: float) -> jax.Array:
    """In-batch InfoNCE between two views: [B, d], [B, d] -> [].

    Rows are L2-normalized; row ``k`` of ``a`` has ``b[k]`` as its positive and every row
    of ``b`` in its softmax denominator (SGL's in-batch form)::

        -mean_k log( exp(a_k . b_k / tau) / sum_j exp(a_k . b_j / tau) )

    computed as ``mean_k(logsumexp_j(l_kj) - l_kk)`` with ``l = a_n b_n^T / tau`` (stable
    for small ``tau``). Raises ``ValueError`` for B < 2 or ``tau <= 0``.
    """
    _check_in_batch("info_nce", a, b)
    _check_tau(tau, "info_nce")
    an, bn = l2_normalize(a), l2_normalize(b)
    logits = (an @ bn.T) / tau
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))


def sgcl_loss(user_emb: jax.Array, item_emb: jax.Array, tau: float) -> jax.Array:
    """SGCL's supervised contrastive loss on (user, positive item) pairs: [B, d], [B, d] -> [].

    With ``u``, ``i`` the L2-normalized rows and ``s`` the dot product, for each pair k::

        -log( exp(s(u_k, i_k)/t) / (sum_{u'} exp(s(u_k, u')/t) + sum_{i'} exp(s(i_k, i')/t)) )

    where u' and i' run over all batch users and items (the pair's own u_k and i_k
    included), averaged over k. The log of the denominator is a log-sum-exp over the
    [B, 2B] logits ``[u u^T | i i^T] / t``, shifted by their row maximum, which is known
    without a reduction: ``s(u_k, u_k) = 1`` is the largest cosine, so every exponent lies
    in ``[-2/t, 0]`` and the self terms make the sum >= 1 (no overflow, no underflow to 0).
    Raises ``ValueError`` for B < 2 or ``tau <= 0``.
    """
    _check_in_batch("sgcl_loss", user_emb, item_emb)
    _check_tau(tau, "sgcl_loss")
    un, vn = l2_normalize(user_emb), l2_normalize(item_emb)
    pos = jnp.sum(un * vn, axis=-1) / tau
    # Row max of both blocks is the self-similarity 1/tau (an all-zero row would give
    # max 0; the floor keeps its log finite).
    total = jnp.sum(jnp.exp((un @ un.T - 1.0) / tau), axis=1) + jnp.sum(jnp.exp((vn @ vn.T - 1.0) / tau), axis=1)
    lse = jnp.log(jnp.maximum(total, jnp.finfo(total.dtype).tiny)) + 1.0 / tau
    return jnp.mean(lse - pos)


class Distinct(NamedTuple):
    """The distinct values of a batch column, padded to a static size ``m``.

    ``ids`` int32 [m] (slots past the distinct count repeat a real id), ``inverse`` int32 [B]
    (``ids[inverse] == batch column``), ``counts`` int32 [m] (multiplicities; 0 in padding
    slots, so padding carries no weight in count-weighted sums).
    """

    ids: jax.Array
    inverse: jax.Array
    counts: jax.Array


def unique_counts(ids: jax.Array, size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Distinct values of ``ids`` [B] with static ``size``: (unique [size], inverse [B], counts [size]).

    ``unique[inverse] == ids``; slots past the number of distinct values hold ``ids.min()``
    with count 0, so they carry no weight in count-weighted sums. jit-compatible.
    """
    uniq, inv, counts = jnp.unique(
        ids, size=size, fill_value=jnp.min(ids), return_inverse=True, return_counts=True
    )
    # jnp.unique gives the padding slots count 0 (checked in tests/test_losses.py).
    return uniq, inv.reshape(ids.shape), counts


def host_distinct(ids: np.ndarray, table_rows: int, multiple: int = 64) -> Distinct:
    """``Distinct`` of a host batch column, padded to the next multiple of ``multiple`` (at most
    ``table_rows``, at least the distinct count): what the by-id losses need, found on the host.

    A batch of 2048 ml-100k pairs holds about 700 distinct users and 800 distinct items; padding
    to that (not to min(B, rows) as ``unique_counts`` must inside jit) keeps the [m, m] logits
    small. Each padded size compiles the step once; the multiple bounds how many sizes occur.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"host_distinct: expected a non-empty 1-D id array, got shape {ids.shape}")
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    m = len(uniq)
    size = max(m, min(-(-m // multiple) * multiple, int(table_rows)))
    pad = size - m
    return Distinct(
        np.concatenate([uniq, np.full(pad, uniq[0], uniq.dtype)]).astype(np.int32),
        inverse.reshape(ids.shape).astype(np.int32),
        np.concatenate([counts, np.zeros(pad, counts.dtype)]).astype(np.int32),
    )


def _unique_size(ids: jax.Array, table_rows: int, max_unique: int | None) -> int:
    size = min(ids.shape[0], table_rows)
    return size if max_unique is None else min(size, int(max_unique))


def _view_pair_ids(name, a_table, b_table, ids, tau, max_unique, distinct):
    """Checks of the two-view by-id losses; (distinct ids [m], multiplicities [m])."""
    chex.assert_rank([a_table, b_table, ids], [2, 2, 1])
    chex.assert_equal_shape([a_table, b_table])
    if ids.shape[0] < 2:
        _check_in_batch(name, ids[:, None])
    _check_tau(tau, name)
    if distinct is not None:
        return distinct.ids, distinct.counts
    uniq, _, counts = unique_counts(ids, _unique_size(ids, a_table.shape[0], max_unique))
    return uniq, counts


def info_nce_by_id(
    a_table: jax.Array, b_table: jax.Array, ids: jax.Array, tau: float, *, max_unique: int | None = None,
    distinct: Distinct | None = None,
) -> jax.Array:
    """``info_nce(a_table[ids], b_table[ids], tau)`` computed over the distinct ids. [N, d], [N, d], [B] -> [].

    A batch drawn from N rows repeats ids (a 2048-pair batch of ml-100k holds at most 943
    users). Each duplicate is one more copy of the same logit column and the same loss
    row, so with ``c`` the multiplicity of each distinct id the in-batch loss is exactly

        sum_u c_u * (log sum_v c_v exp(l_uv) - l_uu) / B,   l = a_n b_n^T / tau over distinct ids

    at [m, m] instead of [B, B], m = min(B, N) (or ``max_unique``, which must then be at
    least the number of distinct ids), or the size of a precomputed ``distinct``. Same value and
    gradients as ``info_nce`` on the gathered rows, duplicates included (SGL's reference
    in-batch form), up to float summation order.
    """
    uniq, counts = _view_pair_ids("info_nce_by_id", a_table, b_table, ids, tau, max_unique, distinct)
    an, bn = l2_normalize(a_table[uniq]), l2_normalize(b_table[uniq])
    logits = (an @ bn.T) / tau
    w = counts.astype(logits.dtype)
    lse = jax.nn.logsumexp(logits, axis=1, b=w[None, :])
    return jnp.sum(w * (lse - jnp.diagonal(logits))) / ids.shape[0]


def info_nce_all(
    a_table: jax.Array, b_table: jax.Array, ids: jax.Array, tau: float, *, max_unique: int | None = None,
    distinct: Distinct | None = None,
) -> jax.Array:
    """InfoNCE of the batch rows against *every* row of the other view. [N, d], [N, d], [B] -> [].

    The form of SGL's reference code (and RecBole's / LLMInit's ``calc_ssl_loss``): row
    ``a[ids[k]]`` has ``b[ids[k]]`` as its positive and all N rows of ``b`` in the
    denominator::

        -mean_k log( exp(a_k . b_k / tau) / sum_{j < N} exp(a_k . b_j / tau) )

    on L2-normalized rows, computed once per distinct id (weighted by its multiplicity)
    at [m, N], m = min(B, N). Raises ``ValueError`` for B < 2 or ``tau <= 0``.
    """
    uniq, counts = _view_pair_ids("info_nce_all", a_table, b_table, ids, tau, max_unique, distinct)
    logits = (l2_normalize(a_table[uniq]) @ l2_normalize(b_table).T) / tau
    pos = jnp.take_along_axis(logits, uniq[:, None], axis=1)[:, 0]
    w = counts.astype(logits.dtype)
    return jnp.sum(w * (jax.nn.logsumexp(logits, axis=1) - pos)) / ids.shape[0]


def sgcl_loss_by_id(
    user_table: jax.Array,
    item_table: jax.Array,
    users: jax.Array,
    items: jax.Array,
    tau: float,
    *,
    max_unique: int | None = None,
    distinct: tuple[Distinct, Distinct] | None = None,
) -> jax.Array:
    """``sgcl_loss(user_table[users], item_table[items], tau)`` over distinct ids. [U, d], [I, d], [B], [B] -> [].

    The denominator of pair k depends only on u_k (its sum over batch users) and i_k (its
    sum over batch items); both sums are taken once per distinct id, weighted by the ids'
    multiplicities, at [m_u, m_u] and [m_i, m_i] instead of [B, 2B]. Same value and
    gradients as ``sgcl_loss`` on the gathered rows. ``distinct``: the precomputed
    (users, items) ``Distinct`` of the batch (``host_distinct``) instead of finding them here.
    """
    chex.assert_rank([user_table, item_table, users, items], [2, 2, 1, 1])
    chex.assert_equal_shape([users, items])
    if users.shape[0] < 2:
        _check_in_batch("sgcl_loss_by_id", users[:, None])
    _check_tau(tau, "sgcl_loss_by_id")

    def block(table, ids, given):
        """(normalized rows of the batch [B, d], their denominator block sums [B])."""
        if given is not None:
            uniq, inv, counts = given
        else:
            uniq, inv, counts = unique_counts(ids, _unique_size(ids, table.shape[0], max_unique))
        xn = l2_normalize(table[uniq])
        # Shifted by the self-similarity 1/tau (the row maximum), as in sgcl_loss.
        sums = jnp.exp((xn @ xn.T - 1.0) / tau) @ counts.astype(xn.dtype)
        return xn[inv], sums[inv]

    du, di = distinct if distinct is not None else (None, None)
    (un, su), (vn, si) = block(user_table, users, du), block(item_table, items, di)
    total = su + si
    pos = jnp.sum(un * vn, axis=-1) / tau
    lse = jnp.log(jnp.maximum(total, jnp.finfo(total.dtype).tiny)) + 1.0 / tau
    return jnp.mean(lse - pos)


def mse_loss(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error over all elements of two arrays of equal shape -> []."""
    chex.assert_equal_shape([a, b])
    return jnp.mean(jnp.square(a - b))


reconstruction_loss = mse_loss
"""Alias of ``mse_loss`` (A-LLMRec's item/text reconstruction terms)."""
