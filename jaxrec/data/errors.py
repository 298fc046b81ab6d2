"""The error raised for bad or unusable data.

Every message names the file (and line / field where that applies) and what was expected,
e.g. ``ml-100k.inter, line 17, field 'rating': expected a number, got 'abc'``.
"""

from __future__ import annotations

from jaxrec.errors import JaxrecError


class DataError(JaxrecError, ValueError):
    """Input data is missing, malformed, or unusable; the message says where and why."""


def where(path, line: int | None = None, field: str | None = None) -> str:
    """``"<path>, line <line>, field '<field>'"`` with the parts that are given."""
    parts = [str(path)]
    if line is not None:
        parts.append(f"line {line}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)
