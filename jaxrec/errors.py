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


__all__ = ["JaxrecError", "RunExistsError"]
