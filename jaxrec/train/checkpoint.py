"""Orbax checkpoints of a run: the latest training state and the best parameters.

Two ``orbax.checkpoint.CheckpointManager``s under one root, each keeping one step:

- ``latest/<epoch>``: ``state`` (params, optimizer state, RNG key; any pytree) and
  ``meta`` (JSON: epoch, early-stopping state, ...) -- what ``--resume`` continues from;
- ``best/<epoch>``: ``state`` holding the parameters with the best validation score.

Orbax writes each step into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous step as the latest usable one.
Restoring takes a target pytree (arrays or ``jax.ShapeDtypeStruct``s, optionally with
shardings) and refuses one whose structure or shapes differ, naming the leaf.

A reader opens them with ``read_only=True``: nothing is created, cleaned or deleted (a writer's
own Orbax managers remove their unfinished temporary folders; a reader doing that would pull
a step out from under the writer). A save that fails (a full disk) is a ``WriteError`` naming
the step folder; a checkpoint that cannot be read (truncated, corrupted files) a
``CheckpointDamagedError`` naming it. Orbax's own tracebacks of such failures are not logged
(the error says it).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxrec.errors import JaxrecError, write_error
from jaxrec.train.runfiles import CheckpointMismatchError


class MissingCheckpointError(JaxrecError, FileNotFoundError):
    """No complete checkpoint of the kind asked for; the message names the folder."""


class CheckpointDamagedError(JaxrecError, ValueError):
    """A checkpoint folder whose files cannot be read (truncated, corrupted, half-copied); the
    message names it and the reader's complaint."""


class _DropOrbaxErrors(logging.Filter):
    """Drops the absl records (ERROR, with tracebacks) Orbax logs for a failure it also raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and "read only" not in record.getMessage() \
            and "read_only=True" not in record.getMessage()


@contextlib.contextmanager
def _quiet_orbax():
    logger = logging.getLogger("absl")
    filt = _DropOrbaxErrors()
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


class RunCheckpoints:
    """The ``latest`` and ``best`` checkpoints of one run under ``root`` (``read_only``: a reader's)."""

    def __init__(self, root: str | Path, async_save: bool = False, read_only: bool = False):
        self.root = Path(root).absolute()
        self.read_only = read_only
        if read_only:
            opts = ocp.CheckpointManagerOptions(max_to_keep=None, save_interval_steps=0, create=False,
                                                cleanup_tmp_directories=False, read_only=True)
        else:
            opts = ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
            )
        with _quiet_orbax():
            self._managers = {
                name: ocp.CheckpointManager(  # handlers named up front: reading metadata needs no prior save
                    self.root / name, options=opts,
                    item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
                for name in ("latest", "best")
            }

    # -- saving ----------------------------------------------------------------
    def save(self, which: str, step: int, state: Any, meta: dict) -> None:
        """Save step ``step`` of ``which``; ``WriteError`` naming the step folder when the disk is
        full (the previous step stays the latest complete one)."""
        mngr = self._managers[which]
        try:
            with _quiet_orbax():
                if int(step) in mngr.all_steps():
                    mngr.delete(int(step))
                mngr.save(
                    int(step),
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                mngr.wait_until_finished()
        except JaxrecError:
            raise
        except Exception as e:  # noqa: BLE001 - Orbax / tensorstore report a full disk as ValueError
            raise write_error(self.root / which / str(int(step)), e, "the checkpoint") from e

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
        return self._reading(which, step, lambda: mngr.item_metadata(step)["state"])

    def restore(self, which: str, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore ``(state, meta)`` of ``which`` (``latest``/``best``) onto ``target``'s structure.
        ``CheckpointDamagedError`` naming the step folder when its files cannot be read."""
        mngr = self._managers[which]
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise MissingCheckpointError(f"no complete {which} checkpoint under {self.root}")
        saved = self.state_metadata(which, step)
        check_compatible(saved, target, where=f"{self.root / which}/{step}")
        abstract = jax.tree.map(_abstract, target)
        restored = self._reading(which, step, lambda: mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        ))
        meta = restored["meta"]
        if not isinstance(meta, dict):
            raise CheckpointDamagedError(f"checkpoint {self.root / which / str(step)}: its meta is not a JSON object; "
                                         "expected the one jaxrec writes")
        return restored["state"], dict(meta)

    def _reading(self, which: str, step: int, read):
        try:
            with _quiet_orbax():
                return read()
        except JaxrecError:
            raise
        except Exception as e:  # noqa: BLE001 - Orbax / tensorstore raise many kinds for damaged files
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise CheckpointDamagedError(
                f"checkpoint {self.root / which / str(step)} cannot be read ({type(e).__name__}: {first}); expected "
                "a complete Orbax checkpoint as jaxrec writes it (truncated or corrupted files?)") from e

    def close(self) -> None:
        with _quiet_orbax():
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
