"""Text files for every reader: gzip detection, encoding detection, line numbering.

One policy for all readers (RecBole atomic, Amazon JSON lines, raw MovieLens):

- plain or gzip (detected by the magic bytes ``1f 8b``, not by the file name);
- a UTF-8 byte-order mark is skipped; ``\\r\\n``, ``\\n`` and a lone ``\\r`` end lines
  (pyarrow's CSV reader does the same);
- the encoding is UTF-8 when the whole file is valid UTF-8. Otherwise it is Windows-1252
  when every byte decodes in it, else latin-1 (both decode every byte; they differ only
  in 0x80-0x9F, where cp1252 has printable characters such as curly quotes and latin-1
  control characters). The decision is never silent: :func:`sniff_encoding` returns it
  with a sentence naming the file and the first byte that is not UTF-8, and the readers
  log it as a warning and add it to the dataset's reports (:class:`ReadReport`).
- a UTF-16 / UTF-32 byte-order mark is refused (DataError), as is text that is not one of
  the above; nothing is decoded by guessing byte by byte.

The readers parse with pyarrow first (UTF-8; the common case costs no extra pass) and only
when that fails call :func:`sniff_encoding` and retry with a transcoding stream, then fall
back to an exact line-by-line reader that names the bad line.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import io
import logging
import re
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from .errors import DataError, where

log = logging.getLogger("jaxrec.data")

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = codecs.BOM_UTF8
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_CHUNK = 1 << 22
LINE_END = re.compile(r"\r\n|\r|\n")
LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How a file's bytes are decoded.

    name: ``"utf-8"``, ``"cp1252"`` or ``"latin-1"`` (Python codec names); bom: a UTF-8
    byte-order mark starts the file (skipped); detail: the decision in words ("" for UTF-8).
    """

    name: str = "utf-8"
    bom: bool = False
    detail: str = ""

    @property
    def arrow_name(self) -> str:
        """The codec name pyarrow's transcoding stream expects."""
        return {"utf-8": "utf8", "cp1252": "cp1252", "latin-1": "latin1"}[self.name]


@dataclasses.dataclass(frozen=True)
class ReadReport:
    """Something a reader decided about a file (e.g. its encoding); printable like FilterReport."""

    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_bytes(path: str | Path) -> IO[bytes]:
    """The file's (decompressed) bytes as a binary stream; DataError when it does not exist."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _check_wide_bom(path: Path, head: bytes) -> None:
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            raise DataError(f"{where(path, 1)}: starts with a {name} byte-order mark; expected UTF-8 or "
                            f"latin-1 text (convert the file to UTF-8, e.g. iconv -f {name} -t UTF-8)")


def head_bytes(path: str | Path, n: int = 4) -> bytes:
    """The first ``n`` (decompressed) bytes."""
    try:
        with open_bytes(path) as f:
            return f.read(n)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); expected text, plain or gzip") from None


def utf8_guess(path: str | Path) -> Encoding:
    """The encoding the fast path tries first: UTF-8, with the BOM flag from the first bytes."""
    path = Path(path)
    head = head_bytes(path)
    _check_wide_bom(path, head)
    return Encoding("utf-8", head.startswith(UTF8_BOM))


def sniff_encoding(path: str | Path) -> Encoding:
    """Decide the encoding of a whole file (one streaming pass; see the module doc).

    Raises DataError for a missing/unreadable file or a UTF-16/32 byte-order mark.
    """
    path = Path(path)
    dec = codecs.getincrementaldecoder("utf-8")()
    seen = np.zeros(256, dtype=bool)  # which bytes occur (for cp1252 vs latin-1)
    bad_at = None  # (line, byte) of the first invalid UTF-8 sequence
    lines_before = 0
    bom = False
    try:
        with open_bytes(path) as f:
            first = True
            while True:
                chunk = f.read(_CHUNK)
                if first:
                    _check_wide_bom(path, chunk[:4])
                    bom = chunk.startswith(UTF8_BOM)
                    first = False
                if not chunk:
                    if bad_at is None:
                        try:
                            dec.decode(b"", final=True)
                        except UnicodeDecodeError:
                            bad_at = (lines_before + 1, -1)
                    break
                seen[np.frombuffer(chunk, dtype=np.uint8)] = True
                if bad_at is None:
                    try:
                        dec.decode(chunk)
                    except UnicodeDecodeError as e:
                        bad_at = (lines_before + chunk.count(b"\n", 0, e.start) + 1, chunk[e.start])
                    lines_before += chunk.count(b"\n")
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); expected text, plain or gzip") from None
    if bad_at is None:
        return Encoding("utf-8", bom)
    line, byte = bad_at
    what = f"byte 0x{byte:02X} on line {line}" if byte >= 0 else "a truncated sequence at the end"
    c1 = seen[0x80:0xA0]
    undefined = [0x81, 0x8D, 0x8F, 0x90, 0x9D]  # bytes cp1252 leaves undefined
    if not c1.any():
        name, why = "latin-1", "latin-1 (no bytes 0x80-0x9F, so cp1252 reads it the same)"
    elif seen[undefined].any():
        name, why = "latin-1", "latin-1 (it has bytes cp1252 leaves undefined)"
    else:
        name, why = "cp1252", "cp1252 (Windows-1252; its bytes 0x80-0x9F are printable there, control codes in latin-1)"
    detail = f"{path}: not valid UTF-8 ({what}); decoded as {why}"
    return Encoding(name, bom, detail)


def decoded_lines(path: str | Path, enc: Encoding) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its line end) for every line, BOM removed.

    Lines end at ``\r\n``, ``\n`` or a lone ``\r`` (universal newlines); a final line end
    adds no empty line. Streams the file (memory of one line): this is the exact, slow path.
    """
    path = Path(path)
    codec = "utf-8-sig" if enc.name == "utf-8" else enc.name
    try:
        with io.TextIOWrapper(open_bytes(path), encoding=codec, newline=None) as f:
            for no, line in enumerate(f, start=1):
                yield no, line[:-1] if line.endswith("\n") else line
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {enc.name} ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e}); expected text, plain or gzip") from None


def row_lines(path: str | Path, rows, skip_lines: int = 0, blank: str = "empty",
              total_rows: int | None = None) -> np.ndarray | None:
    """Line numbers (1-based, int64) of the data rows ``rows`` (0-based) of a file in
    which each non-blank line after the first ``skip_lines`` lines is one row.

    blank: ``"empty"`` (only empty lines are skipped: CSV) or ``"space"`` (lines of
    whitespace too: JSON lines). Returns None when ``total_rows`` is given and the file
    does not hold exactly that many rows (so lines and rows do not correspond).
    Used only to word error messages; reads the whole file.
    """
    path = Path(path)
    rows = np.asarray(rows, dtype=np.int64)
    with open_bytes(path) as f:
        data = f.read()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    b = np.frombuffer(data + b"\n", dtype=np.uint8)[:-1] if data else np.zeros(0, np.uint8)
    n = b.size
    if n == 0:
        return None if total_rows else np.full(rows.shape, -1, dtype=np.int64)
    nl, cr = b == 10, b == 13
    cr_alone = cr.copy()
    cr_alone[:-1] &= ~nl[1:]  # "\r\n" ends a line once, at its "\n"
    term = np.flatnonzero(nl | cr_alone)
    starts = np.concatenate([[0], term + 1])
    ends = np.concatenate([term, [n]])
    ends = ends - ((ends < n) & (ends > 0) & nl[np.minimum(ends, n - 1)] & cr[np.maximum(ends - 1, 0)])
    if starts[-1] >= n:  # a final line end adds no line
        starts, ends = starts[:-1], ends[:-1]
    if blank == "empty":
        filled = ends > starts
    else:
        ns = np.concatenate([[0], np.cumsum(~np.isin(b, list(b" \t\n\r\x0b\x0c")), dtype=np.int64)])
        filled = ns[ends] > ns[starts]
    numbers = np.arange(1, starts.size + 1, dtype=np.int64)
    keep = numbers[filled & (numbers > skip_lines)]
    if total_rows is not None and keep.size != total_rows:
        return None
    ok = (rows >= 0) & (rows < keep.size)
    out = np.full(rows.shape, -1, dtype=np.int64)
    out[ok] = keep[rows[ok]]
    return out


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes as stored (compressed files are not decompressed)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def arrow_input(path: str | Path, enc: Encoding):
    """A pyarrow input stream of the file's text as UTF-8: decompressed, BOM skipped,
    transcoded from ``enc`` when that is not UTF-8."""
    import pyarrow as pa

    path = Path(path)
    stream = pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)
    if enc.bom:
        stream.read(len(UTF8_BOM))
    if enc.name != "utf-8":
        stream = pa.transcoding_input_stream(stream, enc.arrow_name, "utf8")
    return stream


def report_encoding(enc: Encoding, reports: list | None) -> None:
    """Log a non-UTF-8 decision and add it to ``reports``."""
    if enc.detail:
        log.warning("%s", enc.detail)
        if reports is not None:
            reports.append(ReadReport("encoding", enc.detail))


__all__ = ["Encoding", "ReadReport", "sniff_encoding", "utf8_guess", "decoded_lines", "row_lines",
           "file_sha256", "arrow_input", "open_bytes", "report_encoding"]
