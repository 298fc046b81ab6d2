"""Cell checks shared by the readers: ids present and non-empty, numbers finite.

A reader parses into a pyarrow table (nulls for absent keys / empty cells) and hands it
here with a ``line_of(rows) -> line numbers`` function; a bad cell is a DataError naming
file, line and field, or, with ``missing="drop"``, a row to drop (counted by the caller).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DataError, where

MISSING_MODES = ("error", "drop")
ID_COLUMNS = ("user_id", "item_id")


def bad_cells(table: pa.Table, id_columns=ID_COLUMNS) -> dict[str, np.ndarray]:
    """{column: bool [n]} for columns with a bad cell: an id column (string) null or empty,
    any other column (float) null or not finite."""
    n = table.num_rows
    bad: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if name in id_columns:
            b = pc.fill_null(pc.equal(col, ""), True)
        else:
            b = pc.invert(pc.fill_null(pc.is_finite(col), False))
        b = b.to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=bool)
        if b.any():
            bad[name] = b
    return bad


def lines_or_none(line_of: Callable | None, rows) -> np.ndarray | None:
    """``line_of(rows)`` when it can say (all >= 1), else None."""
    if line_of is None:
        return None
    try:
        lines = line_of(np.asarray(rows, dtype=np.int64))
    except (OSError, DataError):
        return None
    return None if lines is None or (np.asarray(lines) < 1).any() else np.asarray(lines)


def where_row(path, line_of: Callable | None, row: int, field: str | None = None) -> str:
    """``"<path>, line L, field 'f'"``, or ``"(row r)"`` when the line is not known."""
    lines = lines_or_none(line_of, [row])
    if lines is not None:
        return where(path, int(lines[0]), field)
    return f"{where(path, field=field)} (row {row})"


def check_cells(table: pa.Table, path, line_of: Callable | None, missing: str = "error",
                names: Mapping[str, str] | None = None, expected: str = "") -> tuple[np.ndarray | None, str]:
    """Check every cell (see :func:`bad_cells`).

    Returns ``(None, "")`` when all are good, else ``(bool [n] rows to keep, detail)`` with
    ``missing="drop"``; ``missing="error"`` raises DataError for the first bad row, naming
    the file, line and field (``names`` maps column names to the file's field names, e.g.
    ``rating -> overall``) and the total count; ``expected`` is added to the message.
    """
    if missing not in MISSING_MODES:
        raise ValueError(f"missing: expected one of {MISSING_MODES}, got {missing!r}")
    names = dict(names or {})
    bad = bad_cells(table)
    if not bad:
        return None, ""
    any_bad = np.logical_or.reduce(list(bad.values()))
    counts = ", ".join(f"{names.get(k, k)} {int(v.sum()):,}" for k, v in bad.items())
    total = int(any_bad.sum())
    if missing == "error":
        row = int(np.flatnonzero(any_bad)[0])
        col = next(k for k, v in bad.items() if v[row])
        value = table.column(col)[row].as_py()
        got = "missing" if value is None else ("empty" if value == "" else f"got {value!r}")
        want = "a non-empty id" if col in ID_COLUMNS else "a finite number"
        raise DataError(f"{where_row(path, line_of, row, names.get(col, col))}: {got}; expected {want}"
                        f"{expected} ({total:,} rows have a missing, empty or non-finite value: {counts}; "
                        f"missing=drop drops them, counted in a report)")
    if total == table.num_rows:
        raise DataError(f"{path}: every row has a missing, empty or non-finite value ({counts}); nothing to load")
    rows = np.flatnonzero(any_bad)[:5]
    lines = lines_or_none(line_of, rows)
    word = ("line" if lines is not None else "row") + ("s" if rows.size > 1 else "")
    ex = f"{word} {', '.join(map(str, (lines if lines is not None else rows).tolist()))}"
    detail = (f"{total:,} rows of {path} with a missing, empty or non-finite value ({counts}), e.g. {ex}; "
              f"missing=drop")
    return ~any_bad, detail


__all__ = ["MISSING_MODES", "bad_cells", "check_cells", "where_row", "lines_or_none"]
