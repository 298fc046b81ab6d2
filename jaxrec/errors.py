"""The one base of every error jaxrec raises for bad input.

Each error class of the library and of the method packages derives from ``JaxrecError`` (and
from the builtin it always was, ``ValueError`` for most), so a caller, and the command line,
catch bad input with one ``except JaxrecError`` whatever part raised it: the CLI prints it as
``jaxrec: error: <message>`` with exit status 2. Every message names the file, line, field or
argument and what was expected.

``TrainingDivergedError`` (a run whose loss became non-finite) is not bad input and does not
derive from it: the CLI reports it with exit status 1.
"""

from __future__ import annotations


class JaxrecError(Exception):
    """Bad input to jaxrec (a file, key, value or id the user gave); the message names it."""


class RunExistsError(JaxrecError, FileExistsError):
    """An output folder already holds a run (resume it, or overwrite it)."""


class RunBusyError(JaxrecError, RuntimeError):
    """Another process is writing the run folder (one writer per run folder); the message names
    the folder, the process and when it started."""


class WriteError(JaxrecError, OSError):
    """A file jaxrec writes could not be written (disk full, no permission, read-only file
    system); the message names the file and the reason. Nothing partial is left in its place."""


def write_error(path, error: BaseException, what: str = "") -> WriteError:
    """A ``WriteError`` naming ``path`` for ``error`` (an ``OSError``, or a library's error
    wrapping one, e.g. Orbax's "RESOURCE_EXHAUSTED ... No space left on device")."""
    text = f"{getattr(error, 'strerror', None) or ''} {error}"
    known = [r for r in ("No space left on device", "Disk quota exceeded", "Read-only file system",
                         "Permission denied", "File too large") if r in text]
    reason = known[0] if known else (getattr(error, "strerror", None)
                                     or (str(error).strip().splitlines() or [type(error).__name__])[0])
    full = any(w in reason.lower() for w in ("space", "quota"))
    return WriteError(f"{path}: cannot write{' ' + what if what else ''} ({reason})"
                      + ("; free some space or write elsewhere" if full else ""))


__all__ = ["JaxrecError", "RunExistsError", "RunBusyError", "WriteError", "write_error"]
