"""RecBole atomic files (``.inter``, ``.item``, ``.user``): read and write.

Tab-separated text, no quoting. The first line is the header of ``name:type`` fields; types:

- ``token``      one string            -> numpy str array [n]
- ``token_seq``  space-separated words -> list (length n) of lists of str
- ``float``      one number            -> float64 array [n] (an empty cell reads as NaN); a column
  whose cells are all integers, some beyond 2**53 in magnitude (float64 cannot hold them
  exactly: nanosecond timestamps), reads as int64 [n] instead, exact (``exact_integers``)
- ``float_seq``  space-separated numbers -> list (length n) of float64 arrays

Encodings, byte-order marks, line ends: as every reader, see :mod:`jaxrec.data.textio`
(UTF-8, else cp1252/latin-1 with the decision reported; ``\\r\\n``, ``\\n``, ``\\r``).
Empty lines are not rows. Sequences split on single spaces; empty words are dropped
(RecBole's ``seq_separator`` is a space). Numbers: ``[+-]`` decimal or exponent notation,
``inf``, ``infinity``, ``nan`` (any case), spaces around them allowed.

Parsing: pyarrow's CSV reader (multi-threaded C++); when it fails, the file is read again
line by line to name the bad line and field in a DataError (see :func:`read_atomic`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .errors import DataError, where
from .textio import (Encoding, UTF8_BOM, arrow_input, decoded_lines, open_bytes, report_encoding, row_lines,
                     sniff_encoding, utf8_guess)

TYPES = ("token", "token_seq", "float", "float_seq")
ENGINES = ("auto", "arrow", "python")
FLOAT_RE = re.compile(r" *[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|(?i:inf|infinity|nan)) *")
# What pyarrow's readers raise for input they cannot parse (ArrowInvalid is a ValueError).
FAST_ERRORS = (pa.ArrowException, ValueError, UnicodeError, OSError, EOFError)
_BLOCK = 16 << 20  # bytes per pyarrow block: a longer line needs the exact path


@dataclasses.dataclass(frozen=True)
class AtomicTable:
    """An atomic file as parsed: ``table`` holds one column per field (``float`` fields as
    float64 with nulls for empty cells, every other type as the raw string), ``types``
    the header, ``lines`` the line number of each row when the exact reader ran (else
    None: then each non-empty line after the header is one row)."""

    path: Path
    table: pa.Table
    types: dict[str, str]
    encoding: Encoding
    lines: np.ndarray | None = None

    def line_of(self, rows) -> np.ndarray:
        """int64 line numbers of 0-based ``rows`` (for error messages)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.lines is not None:
            return self.lines[rows]
        return row_lines(self.path, rows, skip_lines=1, blank="empty")


def read_atomic_header(path: str | Path) -> dict[str, str]:
    """The header of an atomic file as ``{name: type}`` in column order."""
    path = Path(path)
    _must_exist(path)
    try:
        return _parse_header(path, _first_line(path, utf8_guess(path)))
    except UnicodeDecodeError:
        return _parse_header(path, _first_line(path, sniff_encoding(path)))


def read_atomic(path: str | Path, with_types: bool = False, engine: str = "auto", reports: list | None = None):
    """Read an atomic file into ``{column: values}`` (see module doc for value types).

    With ``with_types=True`` returns ``(columns, {column: type})``. ``engine``: ``"auto"``
    (pyarrow, then the exact line reader on failure), ``"arrow"``, ``"python"`` (exact
    reader only; the reference the tests compare against). A non-UTF-8 encoding is logged
    and appended to ``reports`` when given.
    Raises DataError naming the file (and line / field) for a missing file, a bad header,
    a row with the wrong number of cells, or a malformed number.
    """
    t = read_atomic_table(path, engine=engine, reports=reports)
    out = {name: column_values(t, name) for name in t.types}
    return (out, dict(t.types)) if with_types else out


def read_atomic_table(path: str | Path, engine: str = "auto", reports: list | None = None) -> AtomicTable:
    """Parse an atomic file into an :class:`AtomicTable` (no per-row Python work on the
    pyarrow path). See :func:`read_atomic` for ``engine`` and errors. ``float`` columns of
    integers beyond 2**53 are int64 (:func:`exact_integers`)."""
    path = Path(path)
    _must_exist(path)
    t = fast_then_exact(path, lambda enc: _arrow_table(path, enc), lambda enc: _exact_table(path, enc),
                        reports, engine)
    return exact_integers(t)


#: Beyond this magnitude float64 does not hold every integer: 2**53 + 1 reads as 2**53.
EXACT_FLOAT_LIMIT = 2.0 ** 53
_INTEGER = r"^[+-]?[0-9]+$"


def exact_integers(t: AtomicTable) -> AtomicTable:
    """``t`` with each ``float`` column that holds an integer beyond 2**53 in magnitude read
    again from the file's text: int64 when every non-empty cell is an integer that fits
    (nulls stay nulls), else the float64 column as it was. Columns within 2**53 are exact in
    float64 and are not read again (no cost for ordinary files)."""
    for name, kind in t.types.items():
        if kind != "float":
            continue
        col = t.table.column(name)
        if not len(col) or not pc.any(pc.greater_equal(pc.abs(col), EXACT_FLOAT_LIMIT)).as_py():
            continue
        text = pc.utf8_trim(_text_column(t, name), " ")
        filled = pc.drop_null(text)
        if len(filled) and not pc.all(pc.match_substring_regex(filled, _INTEGER)).as_py():
            continue  # a non-integer among them: a float column by nature
        try:
            ints = pc.cast(pc.replace_substring_regex(text, r"^\+", ""), pa.int64())
        except pa.ArrowInvalid:  # beyond int64
            continue
        t = dataclasses.replace(t, table=t.table.set_column(t.table.column_names.index(name), name, ints))
    return t


def _text_column(t: AtomicTable, name: str) -> pa.ChunkedArray:
    """Column ``name`` of the file as read, text (empty cells null), same rows as ``t.table``."""
    types = {n: pa.string() for n in t.types}
    if t.lines is None:
        return arrow_csv(t.path, t.encoding, types, "\t", skip_rows=1, include=[name]).column(name)
    lines = decoded_lines(t.path, t.encoding)
    next(lines, None)
    table, _ = exact_csv(t.path, lines, types, "\t", "tab-separated cells")
    return pc.if_else(pc.equal(table.column(name), ""), pa.scalar(None, pa.string()), table.column(name))


def fast_then_exact(path: Path, fast, exact, reports: list | None, engine: str = "auto"):
    """``fast(encoding)`` (pyarrow) as UTF-8; when it fails, the detected encoding (reported)
    with ``fast`` again if that is not UTF-8, then ``exact(encoding)``, which names the bad
    line in a DataError. A DataError from ``fast`` (e.g. a bad header) is final.
    ``engine="python"`` runs only ``exact``; ``"arrow"`` turns a pyarrow failure into a
    DataError instead of running ``exact``."""
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    if engine != "python":
        try:
            return fast(utf8_guess(path))
        except DataError:
            raise
        except FAST_ERRORS as e:
            if engine == "arrow":
                raise DataError(f"{path}: pyarrow cannot parse it ({e}); engine='auto' names the bad line") from None
    enc = sniff_encoding(path)
    report_encoding(enc, reports)
    if enc.name != "utf-8" and engine != "python":
        try:
            return fast(enc)
        except DataError:
            raise
        except FAST_ERRORS:
            pass
    return exact(enc)


def column_values(t: AtomicTable, name: str):
    """The public value of column ``name`` (module doc) from a parsed table."""
    kind, col = t.types[name], t.table.column(name)
    if kind == "token":
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=str) if len(col) else np.array([], dtype=str)
    if kind == "float":
        if pa.types.is_integer(col.type) and col.null_count == 0:
            return col.to_numpy()  # int64: exact integers beyond 2**53 (exact_integers)
        return pc.fill_null(pc.cast(col, pa.float64()), math.nan).to_numpy() if len(col) else np.zeros(0)
    if kind == "token_seq":
        return [[w for w in s.split(" ") if w] for s in col.to_pylist()]
    return _float_seqs(t, name, col)


def write_atomic(path: str | Path, columns: Mapping[str, Any], types: Mapping[str, str]) -> Path:
    """Write ``columns`` (same layout :func:`read_atomic` returns) with header types ``types``.

    Floats are written so that they read back exactly (NaN as an empty cell in a ``float``
    column, ``nan`` inside a ``float_seq``). Raises DataError for anything that would not
    read back as written: a value with a tab, line end or NUL, a sequence word that is
    empty or holds a space, a field name that is empty, holds ``:`` or surrounding
    spaces, or an empty value in a one-column file (the line would be blank).
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
        if not n or n != n.strip() or n.startswith("\ufeff"):
            raise DataError(f"{where(path, field=n)}: a field name must be non-empty, without surrounding "
                            f"whitespace or a leading byte-order mark")
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
                    if not str(tok):
                        raise DataError(f"{where(path, field=n)}: an empty word cannot be stored in a token_seq")
                col.append(" ".join(str(t) for t in seq))
        elif kind == "float":
            col = [_fmt(v, "") for v in values]
        else:
            col = [" ".join(_fmt(x, "nan") for x in seq) for seq in values]
        cells.append(col)
    if len(names) == 1 and any(c == "" for c in cells[0]):
        raise DataError(f"{where(path, field=names[0])}: an empty value in a one-column file would be a blank "
                        f"line, which is not a row")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(f"{n}:{types[n]}" for n in names) + "\n")
        for r in range(n_rows):
            f.write("\t".join(c[r] for c in cells) + "\n")
    return path


# --------------------------------------------------------------------------------------
def _must_exist(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a RecBole atomic file (tab-separated, "
                        f"header of name:type fields)")


def _first_line(path: Path, enc: Encoding) -> str:
    """Line 1 decoded with ``enc`` (UnicodeDecodeError when it is not that encoding)."""
    with open_bytes(path) as f:
        head = b""
        while True:
            chunk = f.read(1 << 16)
            head += chunk
            if not chunk or b"\n" in chunk or b"\r" in chunk:
                break
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM):]
    first = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0]
    return first.decode(enc.name)


def _parse_header(path: Path, line: str) -> dict[str, str]:
    if not line.strip():
        raise DataError(f"{where(path, 1)}: empty header; expected tab-separated name:type fields")
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


def _arrow_types(types: Mapping[str, str]) -> dict[str, pa.DataType]:
    return {n: pa.float64() if k == "float" else pa.string() for n, k in types.items()}


def _arrow_table(path: Path, enc: Encoding) -> AtomicTable:
    types = _parse_header(path, _first_line(path, enc))
    table = arrow_csv(path, enc, _arrow_types(types), "\t", skip_rows=1)
    return AtomicTable(path, table, types, enc)


def _exact_table(path: Path, enc: Encoding) -> AtomicTable:
    """Line-by-line reader: the reference semantics, and the one that names bad lines."""
    lines = decoded_lines(path, enc)
    first = next(lines, None)
    types = _parse_header(path, first[1] if first else "")
    table, line_no = exact_csv(path, lines, _arrow_types(types), "\t", "tab-separated cells")
    return AtomicTable(path, table, types, enc, line_no)


def arrow_csv(path: Path, enc: Encoding, types: Mapping[str, pa.DataType], delimiter: str,
              skip_rows: int = 0, include: list[str] | None = None) -> pa.Table:
    """pyarrow's CSV reader without quoting: ``types`` gives the columns (float64 or string,
    in order); empty lines are skipped; empty float cells are nulls; ``include``: only these
    columns, their string cells null when empty. Raises pyarrow's errors."""
    stream = arrow_input(path, enc)
    try:
        return pcsv.read_csv(
            stream,
            read_options=pcsv.ReadOptions(skip_rows=skip_rows, column_names=list(types), block_size=_BLOCK),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char=False, escape_char=False,
                                            newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pcsv.ConvertOptions(column_types=dict(types), null_values=[""],
                                                strings_can_be_null=include is not None,
                                                quoted_strings_can_be_null=False, include_columns=include))
    finally:
        stream.close()


def exact_csv(path: Path, lines, types: Mapping[str, pa.DataType], delimiter: str | None,
              what: str) -> tuple[pa.Table, np.ndarray]:
    """The exact twin of :func:`arrow_csv` over ``(line number, text)`` pairs: (table, line
    of each row). ``delimiter=None`` splits on runs of whitespace. DataError names the line
    (and field) of a row with another number of cells or a malformed number."""
    names = list(types)
    cols: list[list] = [[] for _ in names]
    line_no: list[int] = []
    floats = [pa.types.is_floating(types[n]) for n in names]
    for no, line in lines:
        if not line or (delimiter is None and not line.strip()):
            continue  # empty lines are not rows
        cells = line.split(delimiter)
        if len(cells) != len(names):
            raise DataError(f"{where(path, no)}: expected {len(names)} {what} ({', '.join(names)}), "
                            f"got {len(cells)}")
        for j, c in enumerate(cells):
            if floats[j]:
                c = _float_cell(c, path, no, names[j], "float")
            cols[j].append(c)
        line_no.append(no)
    table = pa.table({n: pa.array(c, type=types[n]) for n, c in zip(names, cols)})
    return table, np.asarray(line_no, dtype=np.int64)


def _float_cell(cell: str, path, no, name: str, kind: str) -> float | None:
    """One number (None for an empty cell) or DataError naming the line and field."""
    if cell == "":
        return None
    if not FLOAT_RE.fullmatch(cell):
        expected = "a number (type float)" if kind == "float" else "space-separated numbers (type float_seq)"
        raise DataError(f"{where(path, no, name)}: expected {expected}, got {cell!r}")
    return float(cell)


def _float_seqs(t: AtomicTable, name: str, col) -> list[np.ndarray]:
    n = len(col)
    if n == 0:
        return []
    words = pc.split_pattern(col, " ")
    flat = pc.list_flatten(words)
    parent = pc.list_parent_indices(words).to_numpy()
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    flat = flat.filter(pa.array(keep))
    parent = parent[keep]
    try:
        values = pc.cast(flat, pa.float64()).to_numpy()
    except FAST_ERRORS:
        values = np.empty(len(flat), dtype=np.float64)
        for k, w in enumerate(flat.to_pylist()):
            if not FLOAT_RE.fullmatch(w):
                row = int(parent[k])
                raise DataError(f"{where(t.path, int(t.line_of([row])[0]), name)}: expected space-separated "
                                f"numbers (type float_seq), got {col[row].as_py()!r}") from None
            values[k] = float(w)
    counts = np.bincount(parent, minlength=n)
    return np.split(values, np.cumsum(counts)[:-1])


def _fmt(v, nan: str) -> str:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))  # exact, whatever its size (nanosecond timestamps)
    v = float(v)
    if math.isnan(v):
        return nan
    if v == 0 and math.copysign(1.0, v) < 0:
        return "-0.0"
    return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)


def _check_text(path: Path, name: str, text: str, extra: str = "") -> None:
    bad = [c for c in "\t\n\r\x00" + extra if c in text]
    if bad:
        raise DataError(f"{where(path, field=name)}: value {text!r} contains {bad[0]!r}, which the "
                        f"atomic format cannot hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where(path, field=name)}: value {text!r} is not valid Unicode text "
                        f"(a lone surrogate); UTF-8 cannot hold it") from None


__all__ = ["TYPES", "AtomicTable", "read_atomic", "read_atomic_header", "read_atomic_table", "write_atomic",
           "column_values", "arrow_csv", "exact_csv", "fast_then_exact", "exact_integers", "EXACT_FLOAT_LIMIT"]
