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

The same type reads a finished (or interrupted) run: ``RunFolder.read(path)`` checks that the
folder holds a run and gives its ``identity`` (run.json), ``config`` (``Config.from_dict``),
``model_name``, ``fingerprint``, ``results`` (results.json, None while training), ``init_record``
(init.json, ``jaxrec.init.record``), ``check_dataset(dataset)`` and ``restore_params(target)``
(the best parameters onto a structure). Serving (``jaxrec.serve.load_run``) and the method
packages (A-LLMRec reads its SASRec and stage-1 runs) read runs only through it; errors are
``RunFolderError`` naming the folder and the file.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrec.errors import JaxrecError, RunExistsError
from jaxrec.train.checkpoint import MissingCheckpointError, RunCheckpoints
from jaxrec.train.runfiles import JsonlLog, check_identity, write_json_atomic
from jaxrec.train.state import TrainState

log = logging.getLogger("jaxrec.train")

#: run.json format: 2 = written by jaxrec >= 0.2 (format 1 folders have no "format" key and
#: the same checkpoint layout; they are read as they are).
FORMAT = 2
#: The files of a run folder besides ``ckpt/``.
IDENTITY, LOG, RESULTS, INIT = "run.json", "log.jsonl", "results.json", "init.json"


class RunFolderError(JaxrecError, ValueError):
    """A run folder that cannot be read as asked (missing, unfinished, another model or dataset);
    the message names the folder or file and what was expected."""


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
        self.jsonl = JsonlLog(self.path / LOG)
        self.identity: dict | None = None

    # -- reading a run -------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, what: str = "run folder") -> "RunFolder":
        """The run in ``path``, for reading (nothing is written or cleaned). Raises
        ``RunFolderError`` when ``path`` is not a folder holding a ``run.json`` with the model,
        config and dataset fields jaxrec writes (``what`` names the setting it came from)."""
        path = Path(path).expanduser()
        if path.is_file():
            raise RunFolderError(f"{what} {path}: a file, not a folder; expected the folder given to "
                                 f"`jaxrec train --out` (e.g. {path.parent})")
        if not path.is_dir():
            raise RunFolderError(f"{what} {path}: not found; expected the folder given to `jaxrec train --out` "
                                 "(default checkpoints/<dataset>-<model>-<init>-s<seed>)")
        run = cls(path, primary=False)
        ident = path / IDENTITY
        if not ident.is_file():
            raise RunFolderError(f"{what} {path}: no {IDENTITY}; expected a folder written by `jaxrec train --out` "
                                 "or jaxrec.fit(out_dir=...)")
        run.identity = _read_json(ident, "run identity")
        for key in ("config", "dataset", "model"):
            if key not in run.identity:
                raise RunFolderError(f"{ident}: no {key!r} field; expected the run identity jaxrec writes")
        return run

    @property
    def model_name(self) -> str:
        return self.identity["model"]

    @property
    def fingerprint(self) -> dict:
        """The dataset fingerprint the run was trained on (``jaxrec.data.fingerprint``)."""
        return self.identity["dataset"]

    @property
    def config(self):
        """The run's ``jaxrec.Config`` (``Config.from_dict`` of run.json's config; plugins imported).
        ``ConfigError`` naming the folder when it is not valid here (e.g. its model is not registered)."""
        from jaxrec.config import Config, ConfigError  # noqa: PLC0415

        try:
            return Config.from_dict(self.identity["config"], source=f"{self.path / IDENTITY} config")
        except ConfigError as e:
            raise ConfigError(f"run folder {self.path}: {e}") from None

    @property
    def results(self) -> dict | None:
        """results.json (test metrics, config, seed), or None while the run has not finished."""
        path = self.path / RESULTS
        return _read_json(path, "results") if path.is_file() else None

    def finished_results(self, what: str = "run folder") -> dict:
        """results.json; ``RunFolderError`` when the run has not finished."""
        results = self.results
        if results is None:
            raise RunFolderError(f"{self.path / RESULTS}: missing; {what} {self.path} has not finished training "
                                 "(jaxrec.fit writes results.json when training ends)")
        return results

    @property
    def init_record(self) -> dict | None:
        """init.json (how the run was initialized: ``jaxrec.init.record``), or None if absent;
        ``InitRecordError`` naming the file when it is unreadable or not an init record."""
        from jaxrec.init.record import InitRecordError, check_record  # noqa: PLC0415

        path = self.path / INIT
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InitRecordError(f"{path}: unreadable ({e})") from None
        return check_record(rec, path)

    def write_init_record(self, record: dict) -> Path:
        """Write init.json (atomically; ``jaxrec.init.record.init_record`` builds ``record``)."""
        return self.write_json(INIT, dict(record))

    def read_json(self, name: str, what: str | None = None) -> dict:
        """A JSON file of the run folder (``RunFolderError`` naming it when unreadable)."""
        return _read_json(self.path / name, what or name)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a JSON file into the run folder atomically (never half-written)."""
        path = self.path / name
        write_json_atomic(path, obj)
        return path

    def require_model(self, *names: str, what: str = "run folder") -> None:
        """``RunFolderError`` unless the run's model is one of ``names``."""
        if self.model_name not in names:
            raise RunFolderError(f"{self.path / IDENTITY}: model {self.model_name!r}; expected "
                                 f"{' or '.join(repr(n) for n in names)} ({what})")

    def check_dataset(self, dataset: Any, what: str = "run folder") -> dict:
        """``dataset``'s fingerprint; ``RunFolderError`` naming the differing fields when the run was
        trained on another dataset or split."""
        from jaxrec.data.fingerprint import dataset_fingerprint  # noqa: PLC0415

        now = dataset_fingerprint(dataset)
        saved = self.fingerprint
        diffs = [f"{k}: run {saved.get(k)!r}, given {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                 if saved.get(k) != now.get(k)]
        if diffs:
            raise RunFolderError(f"{what} {self.path} was trained on another dataset than the one given ("
                                 + "; ".join(diffs) + "). Pass the dataset (and config) the run was trained with")
        return now

    def has_best(self) -> bool:
        best = self.path / "ckpt" / "best"
        return best.is_dir() and any(p.is_dir() and p.name.isdigit() for p in best.iterdir())

    def restore_params(self, target: Any, which: str = "best") -> Any:
        """The ``which`` ("best" / "latest") checkpoint's parameters onto ``target`` (arrays or
        ``jax.ShapeDtypeStruct`` leaves, optionally with shardings). ``RunFolderError`` when there is
        no complete checkpoint; ``CheckpointMismatchError`` naming the leaf when shapes differ."""
        if which == "best" and not self.has_best():
            raise RunFolderError(f"run folder {self.path}: no complete best checkpoint under {self.path / 'ckpt' / 'best'} "
                                 "(the run stopped before its first validation); resume it with `jaxrec train --resume`")
        with RunCheckpoints(self.path / "ckpt") as ck:
            try:
                state, _ = ck.restore(which, {"params": target})
            except MissingCheckpointError as e:
                raise RunFolderError(f"run folder {self.path}: {e}") from None
        return state["params"]

    def saved_param_shapes(self, which: str = "best") -> Any:
        """The ``which`` checkpoint's parameter metadata (leaves with ``.shape``; no arrays read)."""
        with RunCheckpoints(self.path / "ckpt") as ck:
            try:
                return ck.state_metadata(which)["params"]
            except MissingCheckpointError as e:
                raise RunFolderError(f"run folder {self.path}: {e}") from None

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
                raise RunExistsError(
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
        # init.json: the initialization record (jaxrec.pipeline.train_run); update.json: jaxrec.serve.update's
        for name in ("ckpt", "log.jsonl", "results.json", "run.json", "init.json", "update.json"):
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


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunFolderError(f"{path}: unreadable {what} ({e})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object ({what})")
    return data


def open_run(out_dir: str | Path | None, identity: dict, *, resume: bool = False, overwrite: bool = False,
             primary: bool = True) -> NullRunFolder:
    """``RunFolder.open`` for a path, ``NullRunFolder()`` for None."""
    if out_dir is None:
        return NullRunFolder()
    return RunFolder.open(out_dir, identity, resume=resume, overwrite=overwrite, primary=primary)


__all__ = ["RunFolder", "NullRunFolder", "RunFolderError", "open_run", "FORMAT"]
