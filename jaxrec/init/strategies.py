"""LLM initializers (``config.init``), registered once in ``jaxrec.registry.INITIALIZERS``.

An initializer turns the encoder table [I, N] into the backbone's item table [I, K]:
``Initializer.build(emb [I, N] float32, k, inputs) -> (table [I, K], dims int32 [K] | None)``
where ``inputs`` (``InitInputs``) offers the key, the training interactions and the config.
``llm_init_params`` then pools users from the items and writes both tables. A new initializer
is one ``Initializer`` registered here or from a plugin (``INITIALIZERS.register(name, ...)``).

Built-ins (LLMInit, DESIGN 2.1; ``jaxrec.init.selection``):

- ``none``: no LLM initialization (the backbone's own random init);
- ``uniform`` / ``random`` / ``variance``: K of the N dims (``select_dims``);
- ``full``: all N dims (the backbone's embedding size must be N);
- ``pca``: the centered table on its top-K principal axes (``pca_project``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.init.selection import item_popularity, pca_project, select_dims
from jaxrec.registry import INITIALIZERS


@dataclasses.dataclass
class InitInputs:
    """What an initializer may read besides the encoder table.

    ``popularity`` (int [I], training interactions per item) is counted from ``train_item``
    when not given.
    """

    config: Any = None
    key: jax.Array | None = None
    train_user: np.ndarray | None = None
    train_item: np.ndarray | None = None
    num_users: int = 0
    num_items: int = 0
    popularity: np.ndarray | None = None

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

    ``needs_key``: draws randomness (``inputs.key`` must be given).
    """

    build: Callable[..., tuple[jax.Array, Any]] | None
    needs_key: bool = False
    description: str = ""


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
    return pca_project(emb, k)[0], None


INITIALIZERS.register("none", Initializer(None, description="the backbone's own random initialization"))
INITIALIZERS.register("random", Initializer(_select("random"), needs_key=True, description="K random dims"))
INITIALIZERS.register("uniform", Initializer(_select("uniform"), description="every floor(N/K)-th dim"))
INITIALIZERS.register("variance", Initializer(_select("variance"),
                                              description="top-K dims by variance over popular items"))
INITIALIZERS.register("full", Initializer(_full, description="all N dims (K = N)"))
INITIALIZERS.register("pca", Initializer(_pca, description="top-K principal components"))


def get_initializer(name: str) -> Initializer:
    return INITIALIZERS.get(name, "init")


__all__ = ["Initializer", "InitInputs", "get_initializer"]
