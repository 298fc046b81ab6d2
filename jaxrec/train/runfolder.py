"""A run folder: identity, the per-epoch log, checkpoints, resume and results, in one object.

Files of a run (``RUN_FILES``): ``run.json`` (what the run belongs to: model, config, dataset
fingerprint, format), ``log.jsonl`` (one record per epoch), ``ckpt/latest`` and ``ckpt/best``
(Orbax; ``jaxrec.train.checkpoint``), ``results.json`` (test metrics with the config and
seed), and what the pipeline adds (``init.json``, ``update.json``, ``data/``).

**Publication** (what a reader may see is always one complete run). The folder ``U`` given to
``jaxrec train --out U`` holds::

    U/in-progress/     the run being written (the state --resume continues; never read by readers)
    U/v<N>/            published runs (complete: results.json and every file; never modified)
    U/current -> v<N>  the published run (a relative symlink, swapped in one atomic rename)
    U/run.json -> current/run.json, U/results.json -> ..., U/ckpt -> ...   (the run's files)
    U/.lock, U/.writer.json   the writers' lock (flock) and who holds / last held it

A writer writes beside (``in-progress/``), and publishes when the run is finished: the folder
is renamed ``v<N>`` and ``current`` is swapped to it (``os.replace`` of a symlink: atomic), so
a process killed at any moment leaves either the previous published run or the new complete
one. Older versions are removed once no reader holds them (below). A reader
(``RunFolder.read``) resolves ``current`` once and reads only that version folder, holding a
shared ``flock`` on it while the ``RunFolder`` is open (``close()``, or when it is garbage
collected) so that a writer never deletes a version under a reader; it never creates, cleans
or locks anything a writer waits on. A folder written before publication existed (the run's
files directly in ``U``) is read as it is, and turned into ``v<N>`` + ``current`` by its next
writer (hard links: no copy).

**One writer per folder**: ``U/.lock`` is taken with ``fcntl.flock`` (the OS releases it when
the process dies: a crash leaves nothing stuck); a second writer gets ``RunBusyError`` naming
the first (pid, start time, command). A reader of a folder with nothing published says whether
it is still being written (``RunFolderError``: "run U is still being written (started ...,
pid ...)") or was left unfinished.

``RunFolder.open`` decides what an existing folder means for a writer:

- ``in-progress/`` with a complete ``latest`` checkpoint (a run killed or stopped): ``resume``
  continues it; without ``resume`` it is refused (``RunExistsError``: resume or overwrite);
- a published run and ``resume``: it is copied into ``in-progress/`` and continued (e.g. more
  ``epochs``); the published run stays readable until the continued one is published;
- a published run without ``resume``: refused (``RunExistsError``) unless ``overwrite``, which
  starts afresh in ``in-progress/`` (the old run stays readable until the new one is complete);
- nothing complete (a run that died before its first save): a new run, leftovers cleared;
- checkpoints of another model, config or dataset (``run.json``): refused
  (``CheckpointMismatchError`` naming the differing fields; a config key the saved file lacks
  counts as its default, so folders written before a key was added still resume).

In a multi-process run every process opens the folder and saves checkpoints (Orbax writes
each process's shards) into ``in-progress/``; only process 0 (``primary``) takes the lock,
prepares the folder, writes ``run.json``, the log and ``results.json``, and publishes.
``NullRunFolder`` is the in-memory stand-in when there is no folder.

The same type reads a published run: ``RunFolder.read(path)`` checks that the folder holds a
run and gives its ``identity`` (run.json), ``config`` (``Config.from_dict``), ``model_name``,
``fingerprint``, ``results`` (results.json), ``init_record`` (init.json, ``jaxrec.init.record``),
``check_dataset(dataset)`` and ``restore_params(target)`` (the best parameters onto a
structure); ``path`` is the version folder read, ``published`` the folder given. Serving
(``jaxrec.serve.load_run``) and the method packages (A-LLMRec reads its SASRec and stage-1
runs) read runs only through it; errors are ``RunFolderError`` naming the folder and the file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxrec.errors import JaxrecError, RunBusyError, RunExistsError, write_error
from jaxrec.train.checkpoint import MissingCheckpointError, RunCheckpoints
from jaxrec.train.runfiles import JsonlLog, check_identity, write_json_atomic
from jaxrec.train.state import TrainState

log = logging.getLogger("jaxrec.train")

#: run.json format: 2 = written by jaxrec >= 0.2 (format 1 folders have no "format" key and
#: the same checkpoint layout; they are read as they are).
FORMAT = 2
#: The files of a run folder besides ``ckpt/``.
IDENTITY, LOG, RESULTS, INIT = "run.json", "log.jsonl", "results.json", "init.json"
#: Every entry a run may hold (what publication links and a legacy folder is made of).
RUN_FILES = (IDENTITY, LOG, RESULTS, INIT, "update.json", "ckpt", "data")
#: The layout of a published folder (module docstring).
CURRENT, WORK, LOCK, WRITER = "current", "in-progress", ".lock", ".writer.json"
_VERSION = re.compile(r"^v(\d+)$")


class RunFolderError(JaxrecError, ValueError):
    """A run folder that cannot be read as asked (missing, unfinished, still being written,
    another model or dataset, damaged); the message names the folder or file and what was expected."""


# ============================================================================ layout helpers
def _versions(root: Path) -> dict[int, Path]:
    """{N: root/v<N>} of the version folders present."""
    out = {}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return out
    for e in entries:
        m = _VERSION.match(e.name)
        if m and e.is_dir(follow_symlinks=False):
            out[int(m.group(1))] = Path(e.path)
    return out


def published_version(root: Path) -> Path | None:
    """The version folder ``root/current`` points to (None when nothing is published this way)."""
    link = Path(root) / CURRENT
    try:
        name = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    if not _VERSION.match(name):
        raise RunFolderError(f"{link}: points to {name!r}; expected a version folder v<N> written by jaxrec")
    return Path(root) / name


def _is_legacy(root: Path) -> bool:
    """The run's files directly in ``root`` (written before publication existed, or by hand)."""
    ident = Path(root) / IDENTITY
    return ident.is_file() and not ident.is_symlink()


def complete_checkpoint(folder: Path, which: str = "latest") -> bool:
    """Whether ``folder/ckpt/<which>`` holds a step Orbax has finalized (renamed from its temporary name)."""
    root = Path(folder) / "ckpt" / which
    try:
        return any(p.is_dir() and p.name.isdigit() for p in root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def writer_info(root: Path) -> dict:
    """What ``.writer.json`` says of the process that last took the writers' lock ({} if nothing)."""
    try:
        info = json.loads((Path(root) / WRITER).read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(info: dict) -> bool | None:
    """Whether the writer process of ``info`` still runs (None: unknown, e.g. another host)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _who(info: dict) -> str:
    parts = [f"started {info['started']}" if info.get("started") else None,
             f"pid {info['pid']}" if info.get("pid") is not None else None,
             f"host {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else None]
    return ", ".join(p for p in parts if p) or "no writer recorded"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ============================================================================ the writers' lock
class WriterLock:
    """The one writer of run folder ``root`` (``fcntl.flock`` on ``root/.lock``; released by the OS
    when the process dies). Re-entrant within a process: ``jaxrec.serve.update`` takes it before
    writing the update's data, and ``fit`` inside it takes the same lock again."""

    _held: dict[str, "WriterLock"] = {}

    def __init__(self, root: Path, fd: int, key: str):
        self.root, self.fd, self.key, self.count = root, fd, key, 1
        self.prepared = False  # the caller prepared in-progress/ (e.g. the update's data): keep it

    @classmethod
    def acquire(cls, root: str | Path) -> "WriterLock":
        """Take the lock (creating ``root``); ``RunBusyError`` naming the holder when another process has it."""
        root = Path(root).absolute()
        key = os.path.realpath(root)
        held = cls._held.get(key)
        if held is not None:
            held.count += 1
            return held
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:
            raise RunFolderError(f"{root}: a file, not a folder; expected a run folder (or a new path)") from None
        except OSError as e:
            raise write_error(root / LOCK, e, "the run folder's lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise write_error(root / LOCK, e, "the run folder's lock") from None
            info = writer_info(root)
            cmd = f"; command: {info['command']}" if info.get("command") else ""
            raise RunBusyError(f"run folder {root} is being written by another process ({_who(info)}{cmd}); one "
                               "writer per run folder: wait for it to finish, or stop it first") from None
        lock = cls(root, fd, key)
        cls._held[key] = lock
        try:
            write_json_atomic(root / WRITER, {"pid": os.getpid(), "host": socket.gethostname(),
                                              "started": _dt.datetime.now().isoformat(timespec="seconds"),
                                              "command": " ".join(sys.argv)})
        except BaseException:
            lock.release()
            raise
        return lock

    def release(self) -> None:
        self.count -= 1
        if self.count > 0:
            return
        WriterLock._held.pop(self.key, None)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def _broadcast(value: int) -> int:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))
    return value


# ============================================================================ publication
def _migrate_legacy(root: Path) -> None:
    """A folder whose run files sit directly in ``root`` (before publication existed): a finished
    run becomes ``v<N>`` + ``current`` (hard links; its files stay in place until the next
    publication replaces them by links, so a reader already reading them is not disturbed);
    an unfinished one with a complete checkpoint becomes ``in-progress/`` (resumable); leftovers
    of a run that never saved are removed. Other files in ``root`` are never touched."""
    entries = [root / n for n in RUN_FILES if (root / n).exists() and not (root / n).is_symlink()]
    if not entries:
        return
    work = root / WORK
    if published_version(root) is not None:
        return  # already migrated (its leftovers are replaced at the next publication)
    if complete_checkpoint(root) and (root / RESULTS).is_file():
        n = max(_versions(root), default=0) + 1
        tmp = root / f".v{n}.migrating"
        _remove(tmp)
        tmp.mkdir()
        for src in entries:
            if src.is_dir():
                shutil.copytree(src, tmp / src.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(src), str(tmp / src.name))
        os.rename(tmp, root / f"v{n}")
        _point_current(root, f"v{n}")
        log.info("%s: the run's files were moved into v%d (published as %s)", root, n, root / CURRENT)
    elif complete_checkpoint(root) and not work.exists():
        work.mkdir()
        for src in entries:
            os.rename(src, work / src.name)
        log.info("%s: the unfinished run was moved into %s (resume it with --resume)", root, work)
    else:
        for src in entries:
            _remove(src)


def _point_current(root: Path, name: str) -> None:
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(name, tmp)
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def _link_files(root: Path, version: Path) -> None:
    """``root/<file>`` -> ``current/<file>`` for every run file of ``version`` (replacing a legacy
    file of that name); links to files the version lacks are removed."""
    for name in RUN_FILES:
        entry = root / name
        if not (version / name).exists():
            if entry.is_symlink():
                entry.unlink()
            continue
        if entry.is_symlink() and os.readlink(entry) == f"{CURRENT}/{name}":
            continue
        tmp = root / f".{name}.{os.getpid()}.link"
        tmp.unlink(missing_ok=True)
        os.symlink(f"{CURRENT}/{name}", tmp)
        if entry.is_dir() and not entry.is_symlink():  # a legacy folder (its copy lives in a version)
            trash = root / f".trash-{name}-{os.getpid()}"
            os.rename(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, entry)


def collect_garbage(root: Path, keep: set[str]) -> list[str]:
    """Remove version folders other than ``keep`` that no reader holds (a reader's shared flock
    makes the exclusive try fail: that version stays until a later publication), and leftovers
    of earlier removals. Returns the names removed."""
    removed = []
    for n, path in sorted(_versions(root).items()):
        if path.name in keep:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.info("%s: kept (a reader holds it)", path)
            continue
        try:
            trash = root / f".trash-{path.name}-{os.getpid()}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(path.name)
        finally:
            os.close(fd)
    for p in root.glob(".trash-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".v*.migrating"):
        shutil.rmtree(p, ignore_errors=True)
    return removed


def publish(root: Path, work: Path) -> Path:
    """Make ``work`` (a finished run) the published run of ``root`` in one atomic step: rename it
    ``v<N>``, swap ``current`` to it, link the run's files, remove unheld older versions.
    Returns the version folder."""
    root = Path(root)
    n = max(_versions(root), default=0) + 1
    version = root / f"v{n}"
    try:
        _fsync_dir(work)
        os.rename(work, version)
    except OSError as e:
        raise write_error(root, e, "the published run") from None
    try:
        _point_current(root, version.name)
    except OSError as e:
        try:
            os.rename(version, work)  # not published: it stays the resumable in-progress run
        except OSError:
            pass
        raise write_error(root / CURRENT, e, "the published run's link") from None
    try:
        _link_files(root, version)
    except OSError as e:  # published all the same (readers go through current/)
        log.warning("%s: the run is published but its top-level links could not be updated (%s)", root, e)
    collect_garbage(root, {version.name})
    return version


# ============================================================================ run folders
class NullRunFolder:
    """No folder: nothing is written, nothing resumed."""

    path = None
    published = None

    def restore(self, state: TrainState) -> tuple[TrainState, list[dict]]:
        return state, []

    def log(self, record: dict) -> None: ...

    def save_best(self, state: TrainState, epoch: int, valid: dict) -> None: ...

    def save_latest(self, state: TrainState) -> None: ...

    def finish(self, results: dict, before_publish: Callable | None = None) -> None: ...

    def close(self) -> None: ...

    def last_good(self) -> str:
        return "none (the run has no output folder)"


class RunFolder(NullRunFolder):
    """The files of one run (module docstring): ``path`` is the folder read or written (a
    published version, or ``in-progress/``), ``published`` the run folder given."""

    def __init__(self, path: Path, primary: bool = True, published: Path | None = None):
        self.path = Path(path)
        self.published = Path(published) if published is not None else self.path
        self.primary = primary
        self._resume = False
        self.ckpt: RunCheckpoints | None = None
        self.jsonl = JsonlLog(self.path / LOG)
        self.identity: dict | None = None
        self._lock: WriterLock | None = None
        self._read_fd: int | None = None

    # -- reading a run -------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, what: str = "run folder") -> "RunFolder":
        """The published run in ``path``, for reading (nothing is written, cleaned or locked
        against writers; the version read is held until ``close``). Raises ``RunFolderError``
        when ``path`` is not a folder holding a published run with a ``run.json`` of the model,
        config and dataset fields jaxrec writes, and says when the run is still being written
        (``what`` names the setting the path came from)."""
        path = Path(path).expanduser()
        if path.is_file():
            raise RunFolderError(f"{what} {path}: a file, not a folder; expected the folder given to "
                                 f"`jaxrec train --out` (e.g. {path.parent})")
        if not path.is_dir():
            raise RunFolderError(f"{what} {path}: not found; expected the folder given to `jaxrec train --out` "
                                 "(default checkpoints/<dataset>-<model>-<init>-s<seed>)")
        version, fd = cls._open_version(path, what)
        run = cls(version, primary=False, published=path)
        run._read_fd = fd
        ident = version / IDENTITY
        if not ident.is_file():
            run.close()
            raise RunFolderError(f"{what} {path}: no {IDENTITY}; expected a folder written by `jaxrec train --out` "
                                 "or jaxrec.fit(out_dir=...)")
        try:
            run.identity = _read_json(ident, "run identity")
            for key, kind in (("config", dict), ("dataset", dict), ("model", str)):
                if key not in run.identity:
                    raise RunFolderError(f"{ident}: no {key!r} field; expected the run identity jaxrec writes")
                if not isinstance(run.identity[key], kind):
                    raise RunFolderError(f"{ident}: field {key!r} is a {type(run.identity[key]).__name__}; expected "
                                         f"{'a JSON object' if kind is dict else 'a string'} (the run identity jaxrec "
                                         "writes)")
        except BaseException:
            run.close()
            raise
        return run

    @staticmethod
    def _open_version(path: Path, what: str) -> tuple[Path, int | None]:
        """(the folder to read, the fd holding its shared lock or None) of run folder ``path``."""
        missing = None
        for _ in range(50):
            version = published_version(path)
            if version is None:
                break
            try:
                fd = os.open(version, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                if missing == version:
                    raise RunFolderError(f"{what} {path}: {path / CURRENT} points to {version.name}, which is missing "
                                         "or not a folder; the run folder is damaged (write the run again)") from None
                missing = version
                continue  # replaced and removed meanwhile: read current again
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # a writer removing it holds it exclusively for a moment
            except OSError as e:  # a file system without flock on folders: read unprotected
                log.debug("%s: no shared lock (%s)", version, e)
            if os.fstat(fd).st_nlink > 0 and (version / IDENTITY).exists():
                return version, fd
            os.close(fd)
        else:
            raise RunFolderError(f"{what} {path}: {path / CURRENT} keeps changing to folders that are removed; "
                                 "expected a published run (try again)")
        if _is_legacy(path):
            return path, None
        if (path / WORK).exists():
            info = writer_info(path)
            if _alive(info) is False:
                raise RunFolderError(
                    f"run {path} has not finished: the process writing it stopped ({_who(info)}) before publishing "
                    f"it; continue it with `jaxrec train ... --out {path} --resume`, or write it again with "
                    "--overwrite")
            raise RunFolderError(f"run {path} is still being written ({_who(info)}); it can be read once it is "
                                 "finished and published")
        return path, None

    def close(self) -> None:
        """Release what this object holds: a reader's lock on its version, a writer's checkpoints and lock."""
        if self.ckpt is not None:
            ckpt, self.ckpt = self.ckpt, None
            ckpt.close()
        if self._read_fd is not None:
            fd, self._read_fd = self._read_fd, None
            os.close(fd)
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.release()

    def __del__(self):
        try:
            if self._read_fd is not None:
                os.close(self._read_fd)
                self._read_fd = None
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
            raise ConfigError(f"run folder {self.published}: {e}") from None

    @property
    def results(self) -> dict | None:
        """results.json (test metrics, config, seed), or None while the run has not finished."""
        path = self.path / RESULTS
        return _read_json(path, "results") if path.is_file() else None

    def finished_results(self, what: str = "run folder") -> dict:
        """results.json; ``RunFolderError`` when the run has not finished."""
        results = self.results
        if results is None:
            raise RunFolderError(f"{self.path / RESULTS}: missing; {what} {self.published} has not finished "
                                 "training (jaxrec.fit writes results.json when training ends); if it was stopped, "
                                 "continue it with `jaxrec train ... --resume`")
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
        """Write a JSON file into the run being written (atomically: never half-written). Refused
        on a published run (``RunFolderError``): published runs are never modified."""
        if self._lock is None:
            raise RunFolderError(f"{self.published}: {name} cannot be written here: a published run is never "
                                 "modified (write it while the run is written: fit(before_publish=...))")
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
            raise RunFolderError(f"{what} {self.published} was trained on another dataset than the one given ("
                                 + "; ".join(diffs) + "). Pass the dataset (and config) the run was trained with")
        return now

    def has_best(self) -> bool:
        return complete_checkpoint(self.path, "best")

    def restore_params(self, target: Any, which: str = "best") -> Any:
        """The ``which`` ("best" / "latest") checkpoint's parameters onto ``target`` (arrays or
        ``jax.ShapeDtypeStruct`` leaves, optionally with shardings). ``RunFolderError`` when there is
        no complete checkpoint; ``CheckpointMismatchError`` naming the leaf when shapes differ;
        ``CheckpointDamagedError`` naming the step folder when its files cannot be read."""
        if which == "best" and not self.has_best():
            raise RunFolderError(f"run folder {self.published}: no complete best checkpoint under "
                                 f"{self.path / 'ckpt' / 'best'} (the run stopped before its first validation); "
                                 "resume it with `jaxrec train --resume`")
        with RunCheckpoints(self.path / "ckpt", read_only=True) as ck:
            try:
                state, _ = ck.restore(which, {"params": target})
            except MissingCheckpointError as e:
                raise RunFolderError(f"run folder {self.published}: {e}") from None
        return state["params"]

    def saved_param_shapes(self, which: str = "best") -> Any:
        """The ``which`` checkpoint's parameter metadata (leaves with ``.shape``; no arrays read)."""
        with RunCheckpoints(self.path / "ckpt", read_only=True) as ck:
            try:
                return ck.state_metadata(which)["params"]
            except MissingCheckpointError as e:
                raise RunFolderError(f"run folder {self.published}: {e}") from None

    # -- writing a run ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, identity: dict, *, resume: bool = False, overwrite: bool = False,
             primary: bool = True) -> "RunFolder":
        """The run folder ``path`` for writing (module docstring): the writers' lock taken (process 0),
        ``in-progress/`` prepared, its ``run.json`` written. ``RunBusyError`` when another process
        writes it; ``RunExistsError`` / ``CheckpointMismatchError`` as the module docstring says."""
        root = Path(path)
        run = cls(root / WORK, primary, published=root)
        identity = {**identity, "format": FORMAT}
        decision = 0
        if primary:
            run._lock = WriterLock.acquire(root)
            try:
                decision = run._prepare(identity, resume, overwrite)
            except BaseException:
                _broadcast(-1)
                run.close()
                raise
        decision = _broadcast(decision)
        if decision < 0:
            raise RunFolderError(f"run folder {root}: process 0 could not open it (its message says why)")
        _sync("jaxrec-runfolder-open")
        run._resume = decision == 1
        run.ckpt = RunCheckpoints(run.path / "ckpt")
        return run

    def _prepare(self, identity: dict, resume: bool, overwrite: bool) -> int:
        """Process 0, holding the lock: make ``in-progress/`` what this run continues or starts from
        (1: resume from its checkpoint, 0: start afresh)."""
        root, work = self.published, self.path
        _migrate_legacy(root)
        keep_work = self._lock.prepared  # e.g. the update's data/, written there before fit
        current = published_version(root)
        decision = 0
        if overwrite:
            self._clear_work(keep_work)
        elif complete_checkpoint(work):
            check_identity(work / IDENTITY, identity, resuming=resume)
            if not resume:
                raise RunExistsError(f"{root} holds an unfinished run in {work} (stopped or killed); resume it "
                                     "(--resume) or start afresh (--overwrite)")
            decision = 1
        elif current is not None and complete_checkpoint(current):
            check_identity(current / IDENTITY, identity, resuming=resume)
            if not resume:
                raise RunExistsError(f"{root} already holds checkpoints of this run; resume it (--resume) or start "
                                     "afresh (--overwrite)")
            self._clear_work(False)
            try:
                shutil.copytree(current, work, symlinks=True)
            except OSError as e:
                _remove(work)
                raise write_error(work, e, "a copy of the published run to continue") from None
            decision = 1
        else:
            if any((work / name).exists() for name in RUN_FILES if name != "data"):
                log.info("%s holds no complete checkpoint (a run that stopped before its first save): starting "
                         "afresh", work)
            self._clear_work(keep_work)
            if resume:
                log.warning("%s has no complete checkpoint to resume from; starting at epoch 0", root)
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(work, e) from None
        write_json_atomic(work / IDENTITY, identity)
        return decision

    def _clear_work(self, keep_data: bool) -> None:
        work = self.path
        if not work.exists():
            return
        if not keep_data:
            shutil.rmtree(work)
            return
        for name in RUN_FILES:
            if name != "data":
                _remove(work / name)

    def has_checkpoint(self) -> bool:
        """Whether ``in-progress/ckpt/latest`` holds a complete checkpoint."""
        return complete_checkpoint(self.path)

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
        log.info("resumed %s at epoch %d (best %.4f at epoch %d)", self.published, state.epoch + 1,
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

    def finish(self, results: dict, before_publish: Callable[["RunFolder"], None] | None = None) -> None:
        """Write ``results.json``, let ``before_publish(self)`` add its files (process 0), then publish
        the run (module docstring) and release the lock."""
        self.ckpt.wait()
        if self.primary:
            write_json_atomic(self.path / RESULTS, results)
            if before_publish is not None:
                before_publish(self)
        ckpt, self.ckpt = self.ckpt, None
        ckpt.close()
        _sync("jaxrec-runfolder-finish")
        if self.primary:
            version = publish(self.published, self.path)
            log.info("published %s (%s)", self.published, version.name)
            self.path = version
            self.jsonl = JsonlLog(version / LOG)
            if self._lock is not None:  # published: nothing more is written here
                lock, self._lock = self._lock, None
                lock.release()


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


__all__ = ["RunFolder", "NullRunFolder", "RunFolderError", "open_run", "FORMAT", "RUN_FILES", "WriterLock",
           "publish", "published_version", "collect_garbage", "complete_checkpoint", "writer_info", "CURRENT",
           "WORK"]
