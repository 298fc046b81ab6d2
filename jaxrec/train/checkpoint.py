"""Orbax checkpoints of a run: the latest training state and the best parameters.

Two ``orbax.checkpoint.CheckpointManager``s under one root, each keeping one step:

- ``latest/<epoch>``: ``state`` (params, optimizer state, RNG key; any pytree) and
  ``meta`` (JSON: epoch, early-stopping state, ...) -- what ``--resume`` continues from;
- ``best/<epoch>``: ``state`` holding the parameters with the best validation score.

Orbax writes each step into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous step as the latest usable one.
Restoring takes a target pytree (arrays or ``jax.ShapeDtypeStruct``s, optionally with
shardings) and refuses one whose structure or shapes differ, naming the leaf.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxrec.errors import JaxrecError
from jaxrec.train.runfiles import CheckpointMismatchError


class MissingCheckpointError(JaxrecError, FileNotFoundError):
    """No complete checkpoint of the kind asked for; the message names the folder."""


class RunCheckpoints:
    """The ``latest`` and ``best`` checkpoints of one run under ``root``."""

    def __init__(self, root: str | Path, async_save: bool = False):
        self.root = Path(root).absolute()
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
        )
        self._managers = {
            name: ocp.CheckpointManager(  # handlers named up front: reading metadata needs no prior save
                self.root / name, options=opts,
                item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
            for name in ("latest", "best")
        }

    # -- saving ----------------------------------------------------------------
    def save(self, which: str, step: int, state: Any, meta: dict) -> None:
        mngr = self._managers[which]
        if int(step) in mngr.all_steps():
            mngr.delete(int(step))
        mngr.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def discard_after(self, which: str, step: int) -> None:
        """Delete ``which`` checkpoints newer than ``step`` (left by a run killed after ``step``)."""
        mngr = self._managers[which]
        for s in mngr.all_steps():
            if s > step:
                mngr.delete(s)

    def wait(self) -> None:
        for m in self._managers.values():
            m.wait_until_finished()

    # -- restoring ---------------------------------------------------------------
    def latest_step(self, which: str = "latest") -> int | None:
        return self._managers[which].latest_step()

    def state_metadata(self, which: str, step: int | None = None) -> Any:
        """The saved ``state`` tree's metadata (leaf shapes and dtypes; no arrays read)."""
        mngr = self._managers[which]
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise MissingCheckpointError(f"no complete {which} checkpoint under {self.root}")
        return mngr.item_metadata(step)["state"]

    def restore(self, which: str, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore ``(state, meta)`` of ``which`` (``latest``/``best``) onto ``target``'s structure."""
        mngr = self._managers[which]
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise MissingCheckpointError(f"no complete {which} checkpoint under {self.root}")
        check_compatible(mngr.item_metadata(step)["state"], target, where=f"{self.root / which}/{step}")
        abstract = jax.tree.map(_abstract, target)
        restored = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored["state"], dict(restored["meta"])

    def close(self) -> None:
        self.wait()
        for m in self._managers.values():
            m.close()

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    arr = np.asarray(x)
    return jax.ShapeDtypeStruct(arr.shape, arr.dtype)


def check_compatible(saved_meta: Any, target: Any, where: str) -> None:
    """Raise ``CheckpointMismatchError`` if saved leaf shapes/paths differ from ``target``'s."""
    if saved_meta is None:
        return
    saved = _leaf_shapes(saved_meta)
    wanted = _leaf_shapes(jax.tree.map(_abstract, target))
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    if missing or extra:
        raise CheckpointMismatchError(
            f"checkpoint {where}: structure differs from the model's state "
            f"(missing in checkpoint: {missing[:5]}, unexpected: {extra[:5]})"
        )
    for path, shape in wanted.items():
        if saved[path] is not None and tuple(saved[path]) != tuple(shape):
            raise CheckpointMismatchError(
                f"checkpoint {where}: leaf {path} has shape {tuple(saved[path])}, the model expects {tuple(shape)}"
            )


def _leaf_shapes(tree: Any) -> dict[str, tuple | None]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = jax.tree_util.keystr(path, simple=True, separator="/")
        out[key] = tuple(leaf.shape) if hasattr(leaf, "shape") and leaf.shape is not None else None
    return out
