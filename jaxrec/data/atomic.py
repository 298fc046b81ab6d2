"""RecBole atomic files (``.inter``, ``.item``, ``.user``): read and write.

Tab-separated text, UTF-8. The first line is the header of ``name:type`` fields; types:

- ``token``      one string            -> numpy str array [n]
- ``token_seq``  space-separated words -> list (length n) of lists of str
- ``float``      one number            -> float64 array [n] (an empty cell reads as NaN)
- ``float_seq``  space-separated numbers -> list (length n) of float64 arrays
"""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import DataError, where

TYPES = ("token", "token_seq", "float", "float_seq")


def read_atomic_header(path: str | Path) -> dict[str, str]:
    """The header of an atomic file as ``{name: type}`` in column order."""
    path = Path(path)
    first = _read_lines(path, header_only=True)[0]
    return _parse_header(path, first)


def read_atomic(path: str | Path, with_types: bool = False):
    """Read an atomic file into ``{column: values}`` (see module doc for value types).

    With ``with_types=True`` returns ``(columns, {column: type})``.
    Raises DataError naming the file (and line / field) for a missing file, a bad header,
    a row with the wrong number of cells, or a non-numeric float.
    """
    path = Path(path)
    lines = _read_lines(path)
    types = _parse_header(path, lines[0])
    names = list(types)
    rows: list[list[str]] = []
    line_no: list[int] = []
    for no, line in enumerate(lines[1:], start=2):
        if not line:
            continue  # blank lines (e.g. a trailing newline) are not rows
        cells = line.split("\t")
        if len(cells) != len(names):
            raise DataError(f"{where(path, no)}: expected {len(names)} tab-separated cells "
                            f"({', '.join(names)}), got {len(cells)}")
        rows.append(cells)
        line_no.append(no)
    cols = list(zip(*rows)) if rows else [() for _ in names]
    out: dict[str, Any] = {}
    for name, cells in zip(names, cols):
        kind = types[name]
        if kind == "token":
            out[name] = np.array(cells, dtype=str)
        elif kind == "token_seq":
            out[name] = [c.split() for c in cells]
        elif kind == "float":
            out[name] = _floats(path, name, cells, line_no)
        else:  # float_seq
            out[name] = [_float_seq(path, name, c, no) for c, no in zip(cells, line_no)]
    return (out, types) if with_types else out


def write_atomic(path: str | Path, columns: Mapping[str, Any], types: Mapping[str, str]) -> Path:
    """Write ``columns`` (same layout :func:`read_atomic` returns) with header types ``types``.

    Floats are written so that they read back exactly; NaN is written as an empty cell.
    """
    path = Path(path)
    names = list(columns)
    missing = [n for n in names if n not in types]
    if missing:
        raise DataError(f"{path}: no type given for column(s) {missing}; expected one of {', '.join(TYPES)}")
    for n in names:
        if types[n] not in TYPES:
            raise DataError(f"{where(path, field=n)}: unknown type {types[n]!r}; expected one of {', '.join(TYPES)}")
        _check_text(path, n, n, ":")
    lengths = {n: len(columns[n]) for n in names}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{path}: columns have different lengths {lengths}; expected one length")
    n_rows = next(iter(lengths.values()), 0)
    cells = []
    for n in names:
        kind, values = types[n], columns[n]
        if kind == "token":
            col = [str(v) for v in values]
            for v in col:
                _check_text(path, n, v)
        elif kind == "token_seq":
            col = []
            for seq in values:
                for tok in seq:
                    _check_text(path, n, str(tok), " ")
                col.append(" ".join(str(t) for t in seq))
        elif kind == "float":
            col = [_fmt(v) for v in values]
        else:
            col = [" ".join(_fmt(x) for x in seq) for seq in values]
        cells.append(col)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(f"{n}:{types[n]}" for n in names) + "\n")
        for r in range(n_rows):
            f.write("\t".join(c[r] for c in cells) + "\n")
    return path


# --------------------------------------------------------------------------------------
def _read_lines(path: Path, header_only: bool = False) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a RecBole atomic file (tab-separated, "
                        f"header of name:type fields)")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.readline() if header_only else f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); expected a RecBole atomic file") from None
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines[0].strip():
        raise DataError(f"{where(path, 1)}: empty header; expected tab-separated name:type fields")
    return lines


def _parse_header(path: Path, line: str) -> dict[str, str]:
    types: dict[str, str] = {}
    for col, field in enumerate(line.split("\t"), start=1):
        name, sep, kind = field.strip().partition(":")
        if not sep or not name:
            raise DataError(f"{where(path, 1)}: header column {col} {field!r}: expected name:type "
                            f"with type one of {', '.join(TYPES)}")
        if kind not in TYPES:
            raise DataError(f"{where(path, 1, name)} (header column {col}): unknown type {kind!r}; "
                            f"expected one of {', '.join(TYPES)}")
        if name in types:
            raise DataError(f"{where(path, 1, name)} (header column {col}): duplicate field name; "
                            f"expected unique names")
        types[name] = kind
    return types


def _floats(path: Path, name: str, cells, line_no: list[int]) -> np.ndarray:
    try:
        return np.array([c if c.strip() else "nan" for c in cells], dtype=np.float64)
    except ValueError:
        pass
    for c, no in zip(cells, line_no):
        if c.strip():
            try:
                float(c)
            except ValueError:
                raise DataError(f"{where(path, no, name)}: expected a number (type float), got {c!r}") from None
    raise DataError(f"{where(path, field=name)}: cannot parse as float")  # pragma: no cover


def _float_seq(path: Path, name: str, cell: str, no: int) -> np.ndarray:
    try:
        return np.array([float(x) for x in cell.split()], dtype=np.float64)
    except ValueError:
        raise DataError(f"{where(path, no, name)}: expected space-separated numbers (type float_seq), "
                        f"got {cell!r}") from None


def _fmt(v) -> str:
    v = float(v)
    if math.isnan(v):
        return ""
    return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)


def _check_text(path: Path, name: str, text: str, extra: str = "") -> None:
    bad = [c for c in "\t\n\r" + extra if c in text]
    if bad:
        raise DataError(f"{where(path, field=name)}: value {text!r} contains {bad[0]!r}, which the "
                        f"atomic format cannot hold")


__all__ = ["TYPES", "read_atomic", "read_atomic_header", "write_atomic"]
