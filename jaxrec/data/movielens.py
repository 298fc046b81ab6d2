"""Raw MovieLens 100K files (``u.data``, ``u.item``, ``u.user``) as atomic-style columns.

Column names match RecBole's atomic ml-100k: interactions ``user_id, item_id, rating,
timestamp``; items ``item_id, movie_title, release_year, class``; users ``user_id, age,
gender, occupation, zip_code``. ``movie_title`` and ``class`` are token lists (like
token_seq); the "(1995)" year suffix moves from the title into ``release_year``.
The original files are latin-1: every reader detects and reports the encoding
(:mod:`jaxrec.data.textio`). Parsing: pyarrow's CSV reader, then the exact line reader
(which also accepts space-separated ``u.data``) when that fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import Config
from .atomic import arrow_csv, exact_csv, fast_then_exact
from .cells import where_row
from .errors import DataError
from .textio import decoded_lines, row_lines

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")
RATING_FIELDS = ("user_id", "item_id", "rating", "timestamp")


def _table(path: Path, names, delimiter: str, floats=(), reports: list | None = None,
           exact_delimiter: str | None = "") -> tuple[pa.Table, np.ndarray | None]:
    """(string/float64 table, line of each row or None) via pyarrow, else the exact reader.
    ``exact_delimiter``: the exact reader's separator ("" = ``delimiter``, None = whitespace)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a raw MovieLens 100K file")
    types = {n: pa.float64() if n in floats else pa.string() for n in names}
    sep = delimiter if exact_delimiter == "" else exact_delimiter
    what = (f"{delimiter!r}-separated fields" if sep else "fields")
    return fast_then_exact(
        path, lambda enc: (arrow_csv(path, enc, types, delimiter), None),
        lambda enc: exact_csv(path, decoded_lines(path, enc), types, sep, what), reports)


def read_ml100k_ratings(path: str | Path, reports: list | None = None) -> dict:
    """``u.data`` (user \t item \t rating \t timestamp; any whitespace on the exact path) ->
    user_id, item_id (str [n]), rating, timestamp (float64 [n]).
    DataError names the line (and field) of a row without 4 fields or with a bad number."""
    return _ratings_columns(*_ratings_table(Path(path), reports))


def _ratings_table(path: Path, reports: list | None) -> tuple[pa.Table, np.ndarray | None]:
    return _table(path, RATING_FIELDS, "\t", ("rating", "timestamp"), reports, exact_delimiter=None)


def _ratings_columns(table: pa.Table, _lines=None) -> dict:
    col = lambda k: table.column(k).to_numpy(zero_copy_only=False)  # noqa: E731
    return {"user_id": np.asarray(col("user_id"), dtype=str), "item_id": np.asarray(col("item_id"), dtype=str),
            "rating": pc.fill_null(table.column("rating"), np.nan).to_numpy().astype(np.float64),
            "timestamp": pc.fill_null(table.column("timestamp"), np.nan).to_numpy().astype(np.float64)}


def read_ml100k_items(path: str | Path, reports: list | None = None) -> dict:
    """``u.item`` (latin-1, ``id|title|release date|video release|url|19 genre flags``) ->
    item_id (str [m]), movie_title (list of token lists), release_year (str [m]),
    class (list of genre-name lists)."""
    path = Path(path)
    names = ["item_id", "title", "release_date", "video_release", "url", *GENRES]
    table, lines = _table(path, names, "|", reports=reports)
    flags = np.stack([np.char.strip(np.asarray(table.column(g).to_pylist(), dtype=str)) for g in GENRES], axis=1) \
        if table.num_rows else np.zeros((0, len(GENRES)), dtype=str)
    bad = ~np.isin(flags, ["0", "1"])
    if bad.any():
        row, j = (int(x[0]) for x in np.nonzero(bad))
        line_of = (lambda r: lines[r]) if lines is not None else (lambda r: row_lines(path, r))
        raise DataError(f"{where_row(path, line_of, row, GENRES[j])}: expected a genre flag 0 or 1, "
                        f"got {str(flags[row, j])!r}")
    ids, titles, years = [], [], []
    for item_id, raw_title, date in zip(table.column("item_id").to_pylist(), table.column("title").to_pylist(),
                                        table.column("release_date").to_pylist()):
        title, year = raw_title.strip(), ""
        m = _TITLE_YEAR.match(title)
        if m:
            title, year = m.group(1), m.group(2)
        else:
            d = _DATE_YEAR.search(date)
            year = d.group(1) if d else ""
        ids.append(item_id.strip())
        titles.append(title.split())
        years.append(year)
    classes = [[g for g, f in zip(GENRES, row) if f == "1"] for row in flags.tolist()]
    return {"item_id": np.asarray(ids, dtype=str), "movie_title": titles,
            "release_year": np.asarray(years, dtype=str), "class": classes}


def read_ml100k_users(path: str | Path, reports: list | None = None) -> dict:
    """``u.user`` (``id|age|gender|occupation|zip``) -> str columns user_id, age, gender,
    occupation, zip_code."""
    names = ("user_id", "age", "gender", "occupation", "zip_code")
    table, _ = _table(Path(path), names, "|", reports=reports)
    return {n: np.asarray([v.strip() for v in table.column(n).to_pylist()], dtype=str) for n in names}


def load_movielens_raw(folder: str | Path, config: Config | None = None, name: str = "ml-100k",
                       cache: bool | None = None):
    """Dataset from a raw MovieLens 100K folder (``u.data``; ``u.item`` / ``u.user`` if present).
    Parsed, filtered data is cached (``cache=None`` follows ``config.data_cache``)."""
    from .cache import cached_prepare
    from .dataset import _interactions, _options, prepare, split_prepared

    config = config or Config()
    folder = Path(folder)
    data = folder / "u.data"
    item_path, user_path = folder / "u.item", folder / "u.user"
    files = [p for p in (data, item_path, user_path) if p.is_file()] or [data]

    def build():
        reports: list = []
        table, lines = _ratings_table(data, reports)
        line_of = (lambda r: lines[r]) if lines is not None else (lambda r: row_lines(data, r))
        inter = _interactions(table, data, config.missing, reports, line_of)
        items = read_ml100k_items(item_path, reports) if item_path.is_file() else None
        users = read_ml100k_users(user_path, reports) if user_path.is_file() else None
        return prepare(inter, config, item_features=items, user_features=users, item_source=str(item_path),
                       user_source=str(user_path), reports=reports)

    if not data.is_file():
        raise DataError(f"{data}: file not found; expected a raw MovieLens 100K file")
    prepared, _ = cached_prepare(name, "movielens-100k-raw", files, _options(config), build,
                                 enabled=config.data_cache if cache is None else cache)
    return split_prepared(name, prepared, config, source=str(folder))


__all__ = ["GENRES", "read_ml100k_ratings", "read_ml100k_items", "read_ml100k_users", "load_movielens_raw"]
