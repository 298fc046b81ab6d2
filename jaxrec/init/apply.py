"""LLMInit end to end: write the LLM-derived tables into a backbone's parameters.

``llm_init_params(params, item_emb_full [I, N], train_user, train_item, num_users, config,
key) -> (params, InitReport)``:

1. item table [I, K] from ``item_emb_full`` by ``config.init`` (uniform | random |
   variance | pca | full), K = ``params["item_embedding"].shape[1]``; popularity for
   ``variance`` = training interactions per item;
2. user table [U, K] = mean of each user's training items' rows (zero for users without);
3. both tables rescaled by ``config.init_scale`` (each against the xavier std of its own
   shape; ``none`` by default; ``minmax`` instead maps the full [I, N] table to [0, 1]
   before step 1, as the LLMInit reference code does through RecBole's normalize_all);
4. shapes checked against ``params["user_embedding"]`` / ``params["item_embedding"]`` and a
   new dict returned with those two replaced (cast to their dtype). Works for any backbone
   whose params hold these two keys. ``config.init == "none"`` returns ``params`` unchanged.

``jaxrec.init.embeddings.item_embeddings(dataset, config)`` gets ``item_emb_full``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.init.pooling import user_table_from_items
from jaxrec.init.scaling import minmax_full, rescale
from jaxrec.init.selection import TABLE_STRATEGIES, initial_item_table, item_popularity

log = logging.getLogger("jaxrec.init")


@dataclasses.dataclass(frozen=True)
class InitReport:
    """What LLM initialization did (printable)."""

    strategy: str
    k: int | None  # embedding size of the backbone
    n: int | None  # encoder dims
    indices: tuple[int, ...] | None  # selected dims (uniform/random/variance)
    item_norm_mean: float | None  # mean row norm of the written item table
    user_norm_mean: float | None  # mean row norm of the written user table (non-empty users)
    users_without_items: int
    item_scale: dict | None = None
    user_scale: dict | None = None

    def __str__(self) -> str:
        if self.strategy == "none":
            return "LLM init: none (backbone's own random init)"
        s = (
            f"LLM init: {self.strategy}, K={self.k} of N={self.n}; mean row norm items "
            f"{self.item_norm_mean:.4g}, users {self.user_norm_mean:.4g}"
        )
        if self.users_without_items:
            s += f"; {self.users_without_items} users without training items got zero rows"
        if self.item_scale and self.item_scale["mode"] != "none":
            s += f"; rescaled ({self.item_scale['mode']})"
        return s


def _mean_nonzero_norm(table: jax.Array) -> float:
    norms = jnp.linalg.norm(table, axis=1)
    nz = norms > 0
    return float(jnp.sum(jnp.where(nz, norms, 0.0)) / jnp.maximum(nz.sum(), 1))


def llm_init_params(
    params: dict[str, Any],
    item_emb_full,
    train_user,
    train_item,
    num_users: int,
    config: Any,
    key: jax.Array | None = None,
) -> tuple[dict[str, Any], InitReport]:
    """Replace ``params["user_embedding"]``/``["item_embedding"]`` by the LLMInit tables (see module doc).

    ``config`` needs ``init``, ``variance_fraction``, ``init_scale``, ``random_with_replacement``;
    ``key`` is required for ``init == "random"``.
    """
    strategy = getattr(config, "init", "none")
    if strategy not in TABLE_STRATEGIES:
        raise ValueError(f"config.init={strategy!r}: expected one of {', '.join(TABLE_STRATEGIES)}")
    if strategy == "none":
        return params, InitReport("none", None, None, None, None, None, 0)
    for name in ("user_embedding", "item_embedding"):
        if name not in params:
            raise ValueError(f"params: no {name!r} entry (keys: {sorted(params)}); LLM init writes it")
    user_param, item_param = params["user_embedding"], params["item_embedding"]
    if item_param.ndim != 2 or user_param.ndim != 2:
        raise ValueError(f"params: embeddings must be 2-D, got user {user_param.shape}, item {item_param.shape}")
    num_items, k = item_param.shape
    emb = np.asarray(item_emb_full)
    if emb.ndim != 2:
        raise ValueError(f"item_emb_full: expected [items, N], got shape {emb.shape}")
    if emb.shape[0] != num_items:
        raise ValueError(f"item_emb_full has {emb.shape[0]} rows but params['item_embedding'] has {num_items} items")
    if user_param.shape != (num_users, k):
        raise ValueError(
            f"params['user_embedding'] has shape {user_param.shape}; expected ({num_users}, {k}) "
            "(num_users x item embedding size)"
        )
    n = emb.shape[1]
    if k > n:
        raise ValueError(f"embedding size K={k} exceeds the encoder's N={n} dims; use K <= N")
    if strategy == "full" and k != n:
        raise ValueError(f"init 'full' needs embedding size K = N = {n}, got K={k}; set embedding_size={n}")
    if strategy == "random" and key is None:
        raise ValueError("init 'random': a jax.random key is required")
    mode = getattr(config, "init_scale", "none")
    full_scale = None
    if mode == "minmax":
        emb, full_scale = minmax_full(emb)
    train_item = np.asarray(train_item)
    popularity = item_popularity(train_item, num_items) if strategy == "variance" else None
    item_table, idx = initial_item_table(
        emb,
        k,
        strategy,
        key=key,
        popularity=popularity,
        variance_fraction=getattr(config, "variance_fraction", 0.2),
        with_replacement=getattr(config, "random_with_replacement", False),
        return_indices=True,
    )
    user_table, empty = user_table_from_items(item_table, train_user, train_item, num_users)
    item_table, item_scale = rescale(item_table, mode)
    user_table, user_scale = rescale(user_table, mode)
    if full_scale is not None:
        item_scale = user_scale = {**item_scale, **full_scale}
    if item_table.shape != item_param.shape or user_table.shape != user_param.shape:
        raise ValueError(
            f"LLM init built user {user_table.shape} / item {item_table.shape} tables; params hold "
            f"{user_param.shape} / {item_param.shape}"
        )
    new = dict(params)
    new["item_embedding"] = jnp.asarray(item_table, dtype=item_param.dtype)
    new["user_embedding"] = jnp.asarray(user_table, dtype=user_param.dtype)
    report = InitReport(
        strategy=strategy,
        k=int(k),
        n=int(n),
        indices=None if idx is None else tuple(int(i) for i in np.asarray(idx)),
        item_norm_mean=_mean_nonzero_norm(new["item_embedding"]),
        user_norm_mean=_mean_nonzero_norm(new["user_embedding"]),
        users_without_items=int(empty),
        item_scale=item_scale,
        user_scale=user_scale,
    )
    log.info("%s", report)
    return new, report
