"""LLMInit end to end: write the LLM-derived tables into a backbone's parameters.

``llm_init_params(params, item_emb_full [I, N], train_user, train_item, num_users, config,
key) -> (params, InitReport)``:

1. item table [I, K] from ``item_emb_full`` by ``config.init`` (uniform | random |
   variance | pca | full | recpca, or any registered initializer), K = the item table's
   width; popularity for ``variance`` = training interactions per item; ``recpca`` uses the
   training interactions' co-occurrence graph and ``config.recpca_lambda``;
2. item rows normalized by ``config.init_norm`` (TF-LLMER, DESIGN 2.3: ``none`` | ``unit``
   | ``typical``; ``jaxrec.init.normalize.normalize_table``); ``typical``'s target is the RMS
   row norm of the backbone's own random-init item table (the entity rows of
   ``params``'s item table as given);
3. user table [U, K] = mean of each user's training items' (normalized) rows (zero for
   users without), as in LLMInit;
4. both tables rescaled by ``config.init_scale`` (each against the xavier std of its own
   shape; ``none`` by default; ``minmax`` instead maps the full [I, N] table to [0, 1]
   before step 1, as the LLMInit reference code does through RecBole's normalize_all);
5. shapes checked against the model's tables (``Model.tables``, default
   ``params["user_embedding"]`` / ``params["item_embedding"]``) and a new dict returned with
   them replaced (cast to their dtype; padding rows kept). ``config.init == "none"`` returns
   ``params`` unchanged.

``InitReport`` keeps everything the initializer did, so new items can be initialized the
same way later: strategy, K, N, selected dims, or the linear map (``center`` [N],
``projection`` [N, K]) of ``pca``/``recpca``, the initializer's ``details`` (Rec-PCA: lambda,
eigenvalues, graph counts), the normalization mode and target norm, the rescaling.

``jaxrec.init.embeddings.item_embeddings(dataset, config)`` gets ``item_emb_full``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.init.normalize import normalize_table
from jaxrec.init.pooling import user_table_from_items
from jaxrec.init.scaling import minmax_full, rescale

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
    init_norm: str = "none"  # normalization mode of the item rows (config.init_norm)
    norm_target: float | None = None  # the row norm they got (None: unchanged)
    norm: dict | None = None  # NormalizeReport as a dict (norms before/after, target source)
    details: dict | None = None  # what the initializer recorded (Rec-PCA: recpca_lambda, eigenvalues, ...)
    center: Any = dataclasses.field(default=None, repr=False)  # [N] float32: table = (emb - center) @ projection
    projection: Any = dataclasses.field(default=None, repr=False)  # [N, K] float32 (pca, recpca)

    def __str__(self) -> str:
        if self.strategy == "none":
            return "LLM init: none (backbone's own random init)"
        # a model without a user table (e.g. SASRec: users are their histories) has no user norm
        user = "no user table" if self.user_norm_mean is None else f"users {self.user_norm_mean:.4g}"
        s = f"LLM init: {self.strategy}, K={self.k} of N={self.n}; mean row norm items {self.item_norm_mean:.4g}, {user}"
        if self.details and "recpca_lambda" in self.details:
            s += f"; Rec-PCA lambda {self.details['recpca_lambda']:g}"
        if self.init_norm != "none":
            s += f"; item rows normalized ({self.init_norm}, norm {self.norm_target:.4g})"
        if self.users_without_items:
            s += f"; {self.users_without_items} users without training items got zero rows"
        if self.item_scale and self.item_scale["mode"] != "none":
            s += f"; rescaled ({self.item_scale['mode']})"
        return s


def _write_rows(param: jax.Array, table, offset: int) -> jax.Array:
    """``param`` with rows ``[offset:]`` replaced by ``table`` (cast to ``param``'s dtype)."""
    table = jnp.asarray(table, dtype=param.dtype)
    return table if offset == 0 else param.at[offset:].set(table)


def _mean_nonzero_norm(table: jax.Array) -> float:
    norms = jnp.linalg.norm(table, axis=1)
    nz = norms > 0
    return float(jnp.sum(jnp.where(nz, norms, 0.0)) / jnp.maximum(nz.sum(), 1))


def check_embedding_size(k: int, n: int, strategy: str, where: str = "") -> None:
    """``ConfigError`` when the backbone's embedding size K exceeds the text embeddings' N dims
    that LLM initializer ``strategy`` reduces (``where``: e.g. " (lightgcn)", after the key)."""
    from jaxrec.config import ConfigError  # noqa: PLC0415

    if k > n:
        raise ConfigError(f"embedding_size={k}{where}: the backbone's embedding size K={k} exceeds the encoder's "
                          f"N={n} dims that init {strategy!r} reduces; use embedding_size <= {n}")


def llm_init_params(
    params: dict[str, Any],
    item_emb_full,
    train_user,
    train_item,
    num_users: int,
    config: Any,
    key: jax.Array | None = None,
    tables: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], InitReport]:
    """Write the LLMInit tables into ``params`` (see module doc); returns ``(new params, report)``.

    ``config`` needs ``init`` (a registered initializer, ``jaxrec.registry.INITIALIZERS``),
    ``variance_fraction``, ``init_scale``, ``random_with_replacement``, and reads
    ``init_norm`` and ``recpca_lambda`` when present (defaults ``none`` and 0.5); ``key`` is
    required by initializers that draw randomness (``random``). ``tables``: the model's
    embedding tables by side (``Model.tables``: ``{"user": TableSpec, "item": TableSpec}``;
    default the ``user_embedding`` / ``item_embedding`` entries without padding rows). A
    model without a user table (a sequence model) gets only its item rows written; padding
    rows are kept. ``params`` must be the backbone's own random init: ``init_norm="typical"``
    measures its item rows' RMS norm.
    Raises ``ValueError`` naming the mismatching shape or missing table; ``ConfigError`` (a
    ValueError) naming ``embedding_size`` when K exceeds the encoder's N, and the
    initializer's own (``recpca``: ``recpca_lambda``, a co-occurrence graph without edges),
    before any compute.
    """
    from jaxrec.init.strategies import InitInputs, get_initializer  # noqa: PLC0415
    from jaxrec.models.base import TableSpec  # noqa: PLC0415

    strategy = getattr(config, "init", "none")
    initializer = get_initializer(strategy)
    if initializer.build is None:
        return params, InitReport(strategy, None, None, None, None, None, 0)
    tables = dict(tables) if tables is not None else {"user": TableSpec("user_embedding"),
                                                       "item": TableSpec("item_embedding")}
    if "item" not in tables:
        raise ValueError("LLM init writes the item table, but the model declares none")
    for spec in tables.values():
        if spec.key not in params:
            raise ValueError(f"params: no {spec.key!r} entry (keys: {sorted(params)}); LLM init writes it")
    item_spec, user_spec = tables["item"], tables.get("user")
    item_param = params[item_spec.key]
    user_param = params[user_spec.key] if user_spec is not None else None
    if item_param.ndim != 2 or (user_param is not None and user_param.ndim != 2):
        shapes = f"item {item_param.shape}" + ("" if user_param is None else f", user {user_param.shape}")
        raise ValueError(f"params: embeddings must be 2-D, got {shapes}")
    num_items = item_param.shape[0] - item_spec.offset
    k = item_param.shape[1]
    emb = np.asarray(item_emb_full)
    if emb.ndim != 2:
        raise ValueError(f"item_emb_full: expected [items, N], got shape {emb.shape}")
    if emb.shape[0] != num_items:
        raise ValueError(f"item_emb_full has {emb.shape[0]} rows but params[{item_spec.key!r}] has {num_items} items")
    if user_param is not None and user_param.shape != (num_users + user_spec.offset, k):
        raise ValueError(
            f"params[{user_spec.key!r}] has shape {user_param.shape}; expected ({num_users + user_spec.offset}, {k}) "
            "(num_users x item embedding size)"
        )
    n = emb.shape[1]
    check_embedding_size(k, n, strategy)
    if initializer.needs_key and key is None:
        raise ValueError(f"init {strategy!r}: a jax.random key is required")
    norm_mode = getattr(config, "init_norm", "none")
    mode = getattr(config, "init_scale", "none")
    train_user, train_item = np.asarray(train_user), np.asarray(train_item)
    inputs = InitInputs(config=config, key=key, train_user=train_user, train_item=train_item,
                        num_users=int(num_users), num_items=int(num_items))
    if initializer.check is not None:
        initializer.check(inputs)
    full_scale = None
    if mode == "minmax":
        emb, full_scale = minmax_full(emb)
    item_table, idx = initializer.build(jnp.asarray(emb, jnp.float32), int(k), inputs)
    if item_table.shape != (num_items, k):
        raise ValueError(f"init {strategy!r} built an item table of shape {item_table.shape}; expected {(num_items, k)}")
    item_table, norm_report = normalize_table(item_table, norm_mode, reference=np.asarray(item_spec.rows(params)))
    new = dict(params)
    empty, user_scale, user_norm = 0, None, None
    if user_spec is not None:  # users pool the items' rows before either table is rescaled
        user_table, empty = user_table_from_items(item_table, train_user, train_item, num_users)
        user_table, user_scale = rescale(user_table, mode)
        new[user_spec.key] = _write_rows(user_param, user_table, user_spec.offset)
        user_norm = _mean_nonzero_norm(user_spec.rows(new))
    item_table, item_scale = rescale(item_table, mode)
    new[item_spec.key] = _write_rows(item_param, item_table, item_spec.offset)
    if full_scale is not None:
        item_scale = {**item_scale, **full_scale}
        user_scale = item_scale if user_spec is not None else None
    report = InitReport(
        strategy=strategy,
        k=int(k),
        n=int(n),
        indices=None if idx is None else tuple(int(i) for i in np.asarray(idx)),
        item_norm_mean=_mean_nonzero_norm(item_spec.rows(new)),
        user_norm_mean=user_norm,
        users_without_items=int(empty),
        item_scale=item_scale,
        user_scale=user_scale,
        init_norm=norm_mode,
        norm_target=norm_report.target_norm,
        norm=dataclasses.asdict(norm_report),
        details=dict(inputs.details) or None,
        center=None if inputs.center is None else np.asarray(inputs.center, np.float32),
        projection=None if inputs.projection is None else np.asarray(inputs.projection, np.float32),
    )
    log.info("%s", report)
    return new, report
