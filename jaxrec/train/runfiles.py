"""A run's files: atomic JSON writes, the per-epoch JSONL log, and the run identity.

``run.json`` records what a checkpoint folder belongs to (model, config, dataset
fingerprint); resuming or reusing the folder with anything else is refused with the
differing fields named.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from jaxrec.errors import JaxrecError, write_error

# Config fields that may change between an interrupted run and its resumption without
# changing the result of the epochs already done.
RESUMABLE_CHANGES = frozenset({"epochs", "checkpoint_every", "data_dirs", "eval_chunk", "time_budget_minutes"})
# How a run is launched, not what it computes: never part of its identity.
LAUNCH_FIELDS = frozenset({"coordinator_address", "num_processes", "process_id", "track"})
# Config keys added after run.json format 1 whose default changed the behaviour of some backbones:
# a format-1 folder of those backbones ran as these values say (so resuming it asks for them).
FORMAT1_BEHAVIOUR = {"contrast_unique": ("table", ("sgl", "sgcl"))}


class CheckpointMismatchError(JaxrecError, ValueError):
    """A checkpoint folder belongs to a different model, config or dataset."""


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and rename: never half-written. A full disk
    (or any OSError) is a ``jaxrec.errors.WriteError`` naming ``path``; the old file stays."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; run files are read by others too
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class JsonlLog:
    """Append-only per-epoch log; ``truncate_after(epoch)`` rewinds it for a resumed run."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        """Append one line (a full disk is a ``WriteError`` naming the log; a torn last line is
        skipped by ``records``)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record, sort_keys=True, default=_default) + "\n")
                f.flush()
        except OSError as e:
            raise write_error(self.path, e) from None

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a killed run
        return out

    def truncate_after(self, epoch: int) -> None:
        kept = [r for r in self.records() if r.get("epoch", -1) <= epoch]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_error(self.path, e) from None

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)


def check_identity(path: Path, identity: dict, resuming: bool) -> None:
    """Refuse a folder whose ``run.json`` names another model, config or dataset."""
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointMismatchError(f"{path}: unreadable run identity ({e})") from None
    diffs = _differences(saved, identity, ignore=RESUMABLE_CHANGES if resuming else frozenset())
    if diffs:
        lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, a, b in diffs[:8])
        raise CheckpointMismatchError(
            f"checkpoint folder {path.parent} belongs to a different run ({lines}). "
            "Use another output folder, or pass overwrite to start afresh there."
        )


def _differences(saved: dict, now: dict, ignore: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """(field, saved, now) of every difference; a config key the saved identity lacks (added to
    jaxrec since) counts as its default value."""
    from jaxrec.config import Config, ConfigError, _legacy_default  # noqa: PLC0415

    out = []
    ignore = set(ignore) | LAUNCH_FIELDS
    for section in ("model", "dataset"):
        if saved.get(section) != now.get(section):
            out.append((section, saved.get(section), now.get(section)))
    sc, nc = saved.get("config", {}), now.get("config", {})
    try:  # the keys of the run's model (shared + its settings) at their defaults
        defaults = Config(nc.get("model", "lightgcn"), plugins=tuple(nc.get("plugins", ()))).to_dict()
    except ConfigError:
        defaults = {}
    if "format" not in saved:  # written by jaxrec 0.1: what its runs did where a key is missing
        defaults.update({k: v for k, (v, models) in FORMAT1_BEHAVIOUR.items() if saved.get("model") in models})
    for k in sorted(set(sc) | set(nc)):
        if k in ignore:
            continue
        if k not in nc and k not in defaults and _legacy_default(k, sc[k]):
            continue  # jaxrec 0.1 stored every model's keys; this one is not the run's model's
        a, b = sc.get(k, defaults.get(k)), nc.get(k, defaults.get(k))
        if a != b:
            out.append((f"config.{k}", a, b))
    return out
