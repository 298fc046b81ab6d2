"""Raw MovieLens 100K files (``u.data``, ``u.item``, ``u.user``) as atomic-style columns.

Column names match RecBole's atomic ml-100k: interactions ``user_id, item_id, rating,
timestamp``; items ``item_id, movie_title, release_year, class``; users ``user_id, age,
gender, occupation, zip_code``. ``movie_title`` and ``class`` are token lists (like
token_seq); the "(1995)" year suffix moves from the title into ``release_year``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..config import Config
from .errors import DataError, where

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")


def _lines(path: Path, encoding: str) -> list[tuple[int, str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a raw MovieLens 100K file")
    with open(path, encoding=encoding) as f:
        return [(no, ln.rstrip("\r\n")) for no, ln in enumerate(f, start=1) if ln.strip()]


def read_ml100k_ratings(path: str | Path) -> dict:
    """``u.data`` (user \\t item \\t rating \\t timestamp) -> user_id, item_id (str [n]),
    rating, timestamp (float64 [n])."""
    path = Path(path)
    users, items, ratings, times = [], [], [], []
    for no, line in _lines(path, "latin-1"):
        cells = line.split()
        if len(cells) != 4:
            raise DataError(f"{where(path, no)}: expected 4 fields (user, item, rating, timestamp), "
                            f"got {len(cells)}")
        for name, c in zip(("rating", "timestamp"), cells[2:]):
            try:
                float(c)
            except ValueError:
                raise DataError(f"{where(path, no, name)}: expected a number, got {c!r}") from None
        users.append(cells[0])
        items.append(cells[1])
        ratings.append(cells[2])
        times.append(cells[3])
    return {"user_id": np.array(users, dtype=str), "item_id": np.array(items, dtype=str),
            "rating": np.array(ratings, dtype=np.float64), "timestamp": np.array(times, dtype=np.float64)}


def read_ml100k_items(path: str | Path) -> dict:
    """``u.item`` (latin-1, ``id|title|release date|video release|url|19 genre flags``) ->
    item_id (str [m]), movie_title (list of token lists), release_year (str [m]),
    class (list of genre-name lists)."""
    path = Path(path)
    ids, titles, years, classes = [], [], [], []
    for no, line in _lines(path, "latin-1"):
        cells = line.split("|")
        if len(cells) != 5 + len(GENRES):
            raise DataError(f"{where(path, no)}: expected {5 + len(GENRES)} '|'-separated fields "
                            f"(id, title, release date, video release, url, {len(GENRES)} genre flags), "
                            f"got {len(cells)}")
        flags = cells[5:]
        bad = [g for g, f in zip(GENRES, flags) if f.strip() not in ("0", "1")]
        if bad:
            raise DataError(f"{where(path, no, bad[0])}: expected a genre flag 0 or 1")
        title, year = cells[1].strip(), ""
        m = _TITLE_YEAR.match(title)
        if m:
            title, year = m.group(1), m.group(2)
        else:
            d = _DATE_YEAR.search(cells[2])
            year = d.group(1) if d else ""
        ids.append(cells[0].strip())
        titles.append(title.split())
        years.append(year)
        classes.append([g for g, f in zip(GENRES, flags) if f.strip() == "1"])
    return {"item_id": np.array(ids, dtype=str), "movie_title": titles,
            "release_year": np.array(years, dtype=str), "class": classes}


def read_ml100k_users(path: str | Path) -> dict:
    """``u.user`` (``id|age|gender|occupation|zip``) -> str columns user_id, age, gender,
    occupation, zip_code."""
    path = Path(path)
    names = ("user_id", "age", "gender", "occupation", "zip_code")
    cols: list[list[str]] = [[] for _ in names]
    for no, line in _lines(path, "latin-1"):
        cells = line.split("|")
        if len(cells) != len(names):
            raise DataError(f"{where(path, no)}: expected {len(names)} '|'-separated fields "
                            f"({', '.join(names)}), got {len(cells)}")
        for c, v in zip(cols, cells):
            c.append(v.strip())
    return {n: np.array(c, dtype=str) for n, c in zip(names, cols)}


def load_movielens_raw(folder: str | Path, config: Config | None = None, name: str = "ml-100k"):
    """Dataset from a raw MovieLens 100K folder (``u.data``; ``u.item`` / ``u.user`` if present)."""
    from .dataset import dataset_from_interactions, interactions_from_columns

    folder = Path(folder)
    data = folder / "u.data"
    inter = interactions_from_columns(read_ml100k_ratings(data), data)
    item_path, user_path = folder / "u.item", folder / "u.user"
    items = read_ml100k_items(item_path) if item_path.is_file() else None
    users = read_ml100k_users(user_path) if user_path.is_file() else None
    return dataset_from_interactions(name, inter, config, item_features=items, user_features=users,
                                     source=str(folder), item_source=str(item_path),
                                     user_source=str(user_path))


__all__ = ["GENRES", "read_ml100k_ratings", "read_ml100k_items", "read_ml100k_users", "load_movielens_raw"]
