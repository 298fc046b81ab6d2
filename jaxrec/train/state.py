"""The training state: one pytree, one constructor, and the one place run keys are derived.

``TrainState`` holds the arrays a run evolves (``params``, ``opt_state``, the training
``key``, the ``best_params`` so far) as pytree leaves, and its bookkeeping (the last finished
``epoch``, the optimizer ``step`` count, the ``early`` stopping state and the validation
metrics at the best epoch) as static fields. ``arrays()`` / ``meta()`` are exactly what a
``latest`` checkpoint stores (Orbax state + JSON meta), so ``from_checkpoint`` restores it.

Keys (``run_keys(seed)``): ``PRNGKey(seed)`` split once into the model-init key and the
training key (every epoch splits the training key); LLM initialization draws from
``fold_in(PRNGKey(seed), 1)``. Every caller (``fit``, ``initial_params``, the experiments)
derives them here, so "the same seed" means the same tables and streams everywhere.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrec.train.early_stopping import EarlyStopping


class RunKeys(NamedTuple):
    init: jax.Array  # model.init
    train: jax.Array  # epochs: shuffling, negatives, views, dropout
    select: jax.Array  # LLM initialization (random dims)


def run_keys(seed: int) -> RunKeys:
    """The keys of a run with ``seed`` (module docstring)."""
    return run_keys_from(jax.random.PRNGKey(seed))


def run_keys_from(root: jax.Array) -> RunKeys:
    """The keys of a run whose root key is ``root`` (``PRNGKey(seed)`` for ``run_keys``)."""
    init_key, train_key = jax.random.split(root)
    return RunKeys(init_key, train_key, jax.random.fold_in(root, 1))


@struct.dataclass
class TrainState:
    params: Any
    opt_state: Any
    key: jax.Array
    best_params: Any
    epoch: int = struct.field(pytree_node=False, default=-1)  # last finished epoch
    step: int = struct.field(pytree_node=False, default=0)  # optimizer steps taken
    early: EarlyStopping = struct.field(pytree_node=False, default=EarlyStopping())
    valid_at_best: tuple = struct.field(pytree_node=False, default=())  # ((metric, value), ...)

    # -- what a checkpoint holds -----------------------------------------------------------
    def arrays(self) -> dict[str, Any]:
        return {"params": self.params, "opt_state": self.opt_state, "key": self.key,
                "best_params": self.best_params}

    def meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "early_stopping": self.early.to_dict(),
                "valid_at_best": dict(self.valid_at_best)}

    def from_checkpoint(self, arrays: dict[str, Any], meta: dict[str, Any]) -> "TrainState":
        return self.replace(
            params=arrays["params"], opt_state=arrays["opt_state"], key=arrays["key"],
            best_params=arrays["best_params"], epoch=int(meta["epoch"]), step=int(meta.get("step", 0)),
            early=EarlyStopping.from_dict(meta["early_stopping"]),
            valid_at_best=tuple(sorted(meta.get("valid_at_best", {}).items())),
        )

    # -- updates ---------------------------------------------------------------------------
    def observe(self, valid: dict[str, float], metric: str, epoch: int) -> "TrainState":
        """Record a validation result; on improvement keep a copy of the params as the best."""
        early = self.early.update(valid[metric], epoch)
        if not early.improved_at(epoch):
            return self.replace(early=early)
        return self.replace(early=early, best_params=copy_tree(self.params),
                            valid_at_best=tuple(sorted(valid.items())))

    @property
    def best_valid(self) -> dict[str, float]:
        return dict(self.valid_at_best)


def copy_tree(tree: Any) -> Any:
    """A copy of every array (the step donates its inputs: keep what must outlive it)."""
    return jax.tree.map(jnp.copy, tree)


def init_state(params: Any, optimizer: optax.GradientTransformation, train_key: jax.Array,
               partitioner: Any) -> TrainState:
    """The state at epoch 0: ``params`` copied (the caller's arrays stay valid, however often
    the step donates) and placed, the optimizer initialized in the same placement."""
    params = partitioner.place(copy_tree(params))
    opt_state = partitioner.place(optimizer.init(params))
    return TrainState(params=params, opt_state=opt_state, key=partitioner.place_replicated(train_key),
                      best_params=copy_tree(params))


__all__ = ["TrainState", "RunKeys", "run_keys", "run_keys_from", "init_state", "copy_tree"]
