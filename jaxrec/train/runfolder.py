"""A run folder: identity, the per-epoch log, checkpoints, resume and results, in one object.

Layout (``out_dir``): ``run.json`` (what the folder belongs to: model, config, dataset
fingerprint, format), ``log.jsonl`` (one record per epoch), ``ckpt/latest`` and ``ckpt/best``
(Orbax; ``jaxrec.train.checkpoint``) and ``results.json`` (test metrics with the config and
seed). ``RunFolder.open`` decides what an existing folder means:

- a complete ``latest`` checkpoint and ``resume``: continue from it (``restore``);
- a complete checkpoint without ``resume``: refused (``FileExistsError``: resume or overwrite);
- no complete checkpoint (a run that failed or was killed before its first save): treated as
  new, its leftovers cleared (there is nothing to continue or protect);
- checkpoints of another model, config or dataset (``run.json``): refused
  (``CheckpointMismatchError`` naming the differing fields; a config key the saved file lacks
  counts as its default, so folders written before a key was added still resume).

In a multi-process run every process opens the folder and saves checkpoints (Orbax writes
each process's shards); only process 0 (``primary``) writes ``run.json``, the log and
``results.json``. ``NullRunFolder`` is the in-memory stand-in when there is no folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrec.train.checkpoint import RunCheckpoints
from jaxrec.train.runfiles import JsonlLog, check_identity, write_json_atomic
from jaxrec.train.state import TrainState

log = logging.getLogger("jaxrec.train")

#: run.json format: 2 = written by jaxrec >= 0.2 (format 1 folders have no "format" key and
#: the same checkpoint layout; they are read as they are).
FORMAT = 2


class NullRunFolder:
    """No folder: nothing is written, nothing resumed."""

    path = None

    def restore(self, state: TrainState) -> tuple[TrainState, list[dict]]:
        return state, []

    def log(self, record: dict) -> None: ...

    def save_best(self, state: TrainState, epoch: int, valid: dict) -> None: ...

    def save_latest(self, state: TrainState) -> None: ...

    def finish(self, results: dict) -> None: ...

    def close(self) -> None: ...

    def last_good(self) -> str:
        return "none (the run has no output folder)"


class RunFolder(NullRunFolder):
    """The files of one run under ``path`` (module docstring)."""

    def __init__(self, path: Path, primary: bool = True):
        self.path = Path(path)
        self.primary = primary
        self._resume = False
        self.ckpt: RunCheckpoints | None = None
        self.jsonl = JsonlLog(self.path / "log.jsonl")

    @classmethod
    def open(cls, path: str | Path, identity: dict, *, resume: bool = False, overwrite: bool = False,
             primary: bool = True) -> "RunFolder":
        run = cls(Path(path), primary)
        identity = {**identity, "format": FORMAT}
        if overwrite and run.path.exists() and primary:
            run.clear()
        complete = run.has_checkpoint()
        if complete:
            check_identity(run.path / "run.json", identity, resuming=resume)
            if not resume:
                raise FileExistsError(
                    f"{run.path} already holds checkpoints of this run; resume it (--resume) or start afresh "
                    "(--overwrite)"
                )
        elif primary and any((run.path / name).exists() for name in ("ckpt", "run.json", "log.jsonl")):
            # Nothing complete to protect or continue: a run that failed or was killed before
            # its first checkpoint. Its leftovers go; this run starts afresh.
            log.info("%s holds no complete checkpoint (a run that stopped before its first save): starting afresh",
                     run.path)
            run.clear()
        if resume and not complete:
            log.warning("%s has no complete checkpoint to resume from; starting at epoch 0", run.path)
        if primary:
            run.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run.path / "run.json", identity)
        run._resume = resume and complete
        run.ckpt = RunCheckpoints(run.path / "ckpt")
        return run

    def has_checkpoint(self) -> bool:
        """Whether ``ckpt/latest`` holds a complete checkpoint: a step folder Orbax has finalized
        (renamed from its temporary name). Decided by process 0 and shared with every process,
        so all of them take the same path through ``open``."""
        root = self.path / "ckpt" / "latest"
        found = root.is_dir() and any(p.is_dir() and p.name.isdigit() for p in root.iterdir())
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            found = bool(multihost_utils.broadcast_one_to_all(np.asarray(found)))
        return found

    def clear(self) -> None:
        for name in ("ckpt", "log.jsonl", "results.json", "run.json"):
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    # -- resume --------------------------------------------------------------------------------
    def restore(self, state: TrainState) -> tuple[TrainState, list[dict]]:
        """``(state, history)`` of the latest checkpoint onto ``state``'s structure and placement;
        ``(state, [])`` when starting afresh."""
        if not self._resume:
            if self.primary:
                self.jsonl.reset()
            self.ckpt.discard_after("best", -1)
            return state, []
        arrays, meta = self.ckpt.restore("latest", state.arrays())
        state = state.from_checkpoint(arrays, meta)
        # A run killed after its last complete "latest" may have saved a newer "best": those
        # epochs are re-run, so that best goes and the restored one is re-exported.
        self.ckpt.discard_after("best", state.epoch)
        if state.early.best_epoch >= 0 and self.ckpt.latest_step("best") != state.early.best_epoch:
            self._save_best_arrays(state.best_params, state.early.best_epoch, state.best_valid)
        if self.primary:
            self.jsonl.truncate_after(state.epoch)
        log.info("resumed %s at epoch %d (best %.4f at epoch %d)", self.path, state.epoch + 1,
                 state.early.best_score, state.early.best_epoch)
        return state, self.jsonl.records()

    # -- during the run --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if self.primary:
            self.jsonl.append(record)

    def save_best(self, state: TrainState, epoch: int, valid: dict) -> None:
        self._save_best_arrays(state.params, epoch, valid)

    def _save_best_arrays(self, params: Any, epoch: int, valid: dict) -> None:
        self.ckpt.save("best", epoch, {"params": params}, {"epoch": epoch, "valid": valid})

    def save_latest(self, state: TrainState) -> None:
        self.ckpt.save("latest", state.epoch, state.arrays(), state.meta())

    def last_good(self) -> str:
        step = self.ckpt.latest_step() if self.ckpt is not None else None
        if step is None:
            return f"none yet in {self.path / 'ckpt'}"
        return f"{self.path / 'ckpt' / 'latest' / str(step)} (epoch {step}; continue with --resume)"

    def finish(self, results: dict) -> None:
        self.ckpt.wait()
        if self.primary:
            write_json_atomic(self.path / "results.json", results)

    def close(self) -> None:
        if self.ckpt is not None:
            self.ckpt.close()


def open_run(out_dir: str | Path | None, identity: dict, *, resume: bool = False, overwrite: bool = False,
             primary: bool = True) -> NullRunFolder:
    """``RunFolder.open`` for a path, ``NullRunFolder()`` for None."""
    if out_dir is None:
        return NullRunFolder()
    return RunFolder.open(out_dir, identity, resume=resume, overwrite=overwrite, primary=primary)


__all__ = ["RunFolder", "NullRunFolder", "open_run", "FORMAT"]
