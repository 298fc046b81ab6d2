"""LLM initializers (``config.init``), registered once in ``jaxrec.registry.INITIALIZERS``.

An initializer turns the encoder table [I, N] into the backbone's item table [I, K]:
``Initializer.build(emb [I, N] float32, k, inputs) -> (table [I, K], dims int32 [K] | None)``
where ``inputs`` (``InitInputs``) offers the key, the training interactions and the config;
a build may record what it did in ``inputs.details`` (JSON-able facts, e.g. Rec-PCA's lambda
and eigenvalues) and, for a linear map ``(x - center) @ W``, ``inputs.center`` [N] and
``inputs.projection`` [N, K], so that new items can later be mapped the same way (both end
up in ``InitReport``). ``check(inputs)`` (optional) rejects a config that cannot work on
the given training data, before any compute (``jaxrec.train.check_run`` and
``llm_init_params`` call it). ``llm_init_params`` then normalizes the item rows
(``config.init_norm``), pools users from the items and writes both tables. A new
initializer is one ``Initializer`` registered here or from a plugin
(``INITIALIZERS.register(name, ...)``).

Built-ins (LLMInit, DESIGN 2.1; ``jaxrec.init.selection``):

- ``none``: no LLM initialization (the backbone's own random init);
- ``uniform`` / ``random`` / ``variance``: K of the N dims (``select_dims``);
- ``full``: all N dims (the backbone's embedding size must be N);
- ``pca``: the centered table on its top-K principal axes (``pca_project``);
- ``recpca`` (TF-LLMER, DESIGN 2.3): the centered table on the top-K eigenvectors of
  X^T (I - lam L) X, L the normalized Laplacian of the item co-occurrence graph of the
  *training* interactions, lam = ``config.recpca_lambda`` (``jaxrec.init.recpca.rec_pca``);
  lam = 0 is ``pca``. A graph without edges (no user with two distinct training items) is a
  ``ConfigError`` for lam > 0 rather than a silent fallback: the penalty would be zero, the
  result exactly ``pca``'s, and a lambda sweep would report PCA under Rec-PCA's name.
  Eigenvalues <= 0 among the top K (lam large enough that the penalty outweighs the
  variance: those columns span directions the objective rejects, often the null space of
  X, and come out near zero) are counted in ``details`` and logged as a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.init.selection import item_popularity, pca_project, select_dims
from jaxrec.registry import INITIALIZERS

log = logging.getLogger("jaxrec.init")

#: Rec-PCA's lambda when the config has none (``Config.recpca_lambda``'s default).
DEFAULT_RECPCA_LAMBDA = 0.5


@dataclasses.dataclass
class InitInputs:
    """What an initializer may read besides the encoder table.

    ``popularity`` (int [I], training interactions per item) is counted from ``train_item``
    when not given. ``details``, ``center`` and ``projection`` are written by the build (module
    docstring).
    """

    config: Any = None
    key: jax.Array | None = None
    train_user: np.ndarray | None = None
    train_item: np.ndarray | None = None
    num_users: int = 0
    num_items: int = 0
    popularity: np.ndarray | None = None
    details: dict = dataclasses.field(default_factory=dict)
    center: Any = None  # [N] float32: the table is (emb - center) @ projection
    projection: Any = None  # [N, K] float32

    def interactions(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The training (user, item) arrays; ValueError naming initializer ``name`` if absent."""
        if self.train_user is None or self.train_item is None:
            raise ValueError(f"init {name!r} needs the training interactions (train_user, train_item)")
        return np.asarray(self.train_user), np.asarray(self.train_item)

    def item_popularity(self) -> np.ndarray:
        if self.popularity is None:
            if self.train_item is None:
                raise ValueError("this initializer needs item popularity: pass the training interactions")
            self.popularity = item_popularity(self.train_item, self.num_items)
        return self.popularity

    def setting(self, name: str, default: Any) -> Any:
        return getattr(self.config, name, default) if self.config is not None else default


@dataclasses.dataclass(frozen=True)
class Initializer:
    """``build(emb, k, inputs) -> (table [I, K], selected dims or None)``; ``build=None``: no LLM init.

    ``needs_key``: draws randomness (``inputs.key`` must be given). ``check(inputs) -> None``:
    raises ``ConfigError`` when the config cannot work on ``inputs``' training data (called
    before any compute; ``inputs`` then has no key and no embeddings).
    """

    build: Callable[..., tuple[jax.Array, Any]] | None
    needs_key: bool = False
    description: str = ""
    check: Callable[[InitInputs], None] | None = None


def _select(strategy: str):
    def build(emb, k, inputs: InitInputs):
        idx = select_dims(emb, k, strategy, inputs.key,
                          inputs.item_popularity() if strategy == "variance" else None,
                          inputs.setting("variance_fraction", 0.2),
                          inputs.setting("random_with_replacement", False))
        return jnp.take(emb, idx, axis=1), idx

    return build


def _full(emb, k, inputs):
    n = emb.shape[1]
    if k != n:
        raise ValueError(f"init 'full' needs embedding size K = N = {n} (all encoder dims), got K={k}; "
                         f"set embedding_size={n}")
    return emb, None


def _pca(emb, k, inputs):
    table, w = pca_project(emb, k)
    inputs.center, inputs.projection = jnp.mean(emb, axis=0), w
    return table, None


def _recpca_lambda(inputs: InitInputs) -> float:
    from jaxrec.config import ConfigError  # noqa: PLC0415

    lam = inputs.setting("recpca_lambda", DEFAULT_RECPCA_LAMBDA)
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ConfigError(f"recpca_lambda={lam!r}: expected a finite number >= 0") from None
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"recpca_lambda={lam!r}: expected a finite number >= 0 (Rec-PCA's Laplacian penalty "
                          "weight; 0 is plain PCA)")
    return value


def _recpca_check(inputs: InitInputs) -> None:
    """lam > 0 needs a co-occurrence graph with an edge: some user with two distinct training items."""
    from jaxrec.config import ConfigError  # noqa: PLC0415

    lam = _recpca_lambda(inputs)
    if lam == 0:
        return
    user, item = inputs.interactions("recpca")
    if user.size == 0:
        raise ConfigError(f"init='recpca', recpca_lambda={lam:g}: no training interactions to build the item "
                          "co-occurrence graph from")
    n = max(int(inputs.num_items), int(item.max()) + 1)
    codes = np.sort(user.astype(np.int64) * n + item.astype(np.int64))  # np.sort: np.unique is ~80x slower at 1e7
    users = codes[np.r_[True, codes[1:] != codes[:-1]]] // n  # distinct (user, item) pairs, sorted by user
    if not np.any(users[1:] == users[:-1]):
        raise ConfigError(
            f"init='recpca', recpca_lambda={lam:g}: the item co-occurrence graph of the training data has no edges "
            f"(none of its {users.size:,} users has two distinct training items), so the penalty is zero "
            "and Rec-PCA would be plain PCA; use init='pca' (the same table) or recpca_lambda=0")


def _recpca(emb, k, inputs: InitInputs):
    from jaxrec.init.recpca import rec_pca  # noqa: PLC0415

    lam = _recpca_lambda(inputs)  # the graph was checked by ``check`` (rec_pca raises RecPCAError too)
    user, item = inputs.interactions("recpca")
    table, w, rep = rec_pca(emb, user, item, k, lam, num_items=inputs.num_items or None, return_report=True)
    vals = np.asarray(rep.eigenvalues, np.float64)
    nonpositive = int(np.sum(vals <= 1e-7 * max(abs(vals[0]), 1e-30)))
    if nonpositive:
        log.warning("Rec-PCA lambda=%g: %d of the top K=%d eigenvalues of X^T (I - lambda L) X are <= 0 (the penalty "
                    "outweighs the variance); their columns span directions the objective rejects and come out near zero",
                    lam, nonpositive, k)
    inputs.center, inputs.projection = jnp.mean(emb, axis=0), w
    inputs.details.update(
        recpca_lambda=lam, eigenvalues=[float(v) for v in vals], nonpositive_eigenvalues=nonpositive,
        interactions=rep.interactions, duplicates=rep.duplicates, users=rep.users,
        single_item_users=rep.single_item_users, isolated_items=rep.isolated_items,
        cooccurrence_weight=rep.cooccurrence_weight,
    )
    log.info("%s", rep)
    return table, None


INITIALIZERS.register("none", Initializer(None, description="the backbone's own random initialization"))
INITIALIZERS.register("random", Initializer(_select("random"), needs_key=True, description="K random dims"))
INITIALIZERS.register("uniform", Initializer(_select("uniform"), description="every floor(N/K)-th dim"))
INITIALIZERS.register("variance", Initializer(_select("variance"),
                                              description="top-K dims by variance over popular items"))
INITIALIZERS.register("full", Initializer(_full, description="all N dims (K = N)"))
INITIALIZERS.register("pca", Initializer(_pca, description="top-K principal components"))
INITIALIZERS.register("recpca", Initializer(_recpca, check=_recpca_check,
                                            description="Rec-PCA: PCA penalized by the training co-occurrence graph "
                                                        "(recpca_lambda)"))


def get_initializer(name: str) -> Initializer:
    return INITIALIZERS.get(name, "init")


__all__ = ["Initializer", "InitInputs", "get_initializer"]
