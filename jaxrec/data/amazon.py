"""Amazon review data, 2014 (McAuley) and 2018 (Ni) formats, plain or gzipped.

Reviews: one record per line with ``reviewerID, asin, overall, unixReviewTime`` (both
years) -> columns user_id, item_id (str [n]), rating, timestamp (float64 [n]).
Metadata: one record per line with ``asin`` and optional ``title, brand, description``
plus ``categories`` (2014: list of lists) or ``category`` (2018: list); ``description``
is a string (2014) or a list of strings (2018) -> columns item_id, title, brand,
categories (flattened, de-duplicated, joined by ", "), description (one string).
Lines are JSON; 2014 metadata lines are Python literals, read with ``ast.literal_eval``.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..config import Config
from .errors import DataError, where

REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an Amazon reviews/metadata file (.json or .json.gz)")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


def iter_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record dict) per non-blank line; JSON first, then a Python literal."""
    path = Path(path)
    with _open(path) as f:
        try:
            for no, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        rec = ast.literal_eval(line)
                    except (ValueError, SyntaxError, MemoryError, RecursionError):
                        raise DataError(f"{where(path, no)}: expected one JSON object or Python dict "
                                        f"literal per line, got {line[:60]!r}") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{where(path, no)}: expected an object/dict, got {type(rec).__name__}")
                yield no, rec
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read ({e}); expected UTF-8 text, plain or gzip") from None


def read_amazon_reviews(path: str | Path) -> dict:
    """Reviews file -> user_id, item_id (str [n]), rating, timestamp (float64 [n])."""
    path = Path(path)
    users, items, ratings, times = [], [], [], []
    for no, rec in iter_records(path):
        for key in REVIEW_KEYS:
            if key not in rec:
                raise DataError(f"{where(path, no, key)}: missing; expected keys {', '.join(REVIEW_KEYS)}")
        users.append(str(rec["reviewerID"]))
        items.append(str(rec["asin"]))
        for key, out in (("overall", ratings), ("unixReviewTime", times)):
            try:
                out.append(float(rec[key]))
            except (TypeError, ValueError):
                raise DataError(f"{where(path, no, key)}: expected a number, got {rec[key]!r}") from None
    if not users:
        raise DataError(f"{path}: no reviews; expected one record per line")
    return {"user_id": np.array(users, dtype=str), "item_id": np.array(items, dtype=str),
            "rating": np.array(ratings, dtype=np.float64), "timestamp": np.array(times, dtype=np.float64)}


def _text(v: Any, path: Path, no: int, key: str) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return " ".join(x.strip() for x in v if x.strip())
    if isinstance(v, (int, float)):
        return str(v)
    raise DataError(f"{where(path, no, key)}: expected a string or a list of strings, got {type(v).__name__}")


def _categories(rec: dict, path: Path, no: int) -> str:
    key = "categories" if "categories" in rec else "category"
    v = rec.get(key) or []
    flat: list[str] = []
    if not isinstance(v, (list, tuple)):
        raise DataError(f"{where(path, no, key)}: expected a list (2018) or a list of lists (2014)")
    for x in v:
        group = x if isinstance(x, (list, tuple)) else [x]
        for c in group:
            if not isinstance(c, str):
                raise DataError(f"{where(path, no, key)}: expected category names (strings), got {c!r}")
            flat.append(c.strip())
    return ", ".join(dict.fromkeys(c for c in flat if c))


def read_amazon_meta(path: str | Path) -> dict:
    """Metadata file -> item_id (str [m]) and lists [m] of str title, brand, categories, description."""
    path = Path(path)
    cols: dict[str, list] = {k: [] for k in ("item_id", "title", "brand", "categories", "description")}
    for no, rec in iter_records(path):
        if "asin" not in rec:
            raise DataError(f"{where(path, no, 'asin')}: missing; expected every metadata record to have an asin")
        cols["item_id"].append(str(rec["asin"]))
        for key in ("title", "brand", "description"):
            cols[key].append(_text(rec.get(key), path, no, key))
        cols["categories"].append(_categories(rec, path, no))
    cols["item_id"] = np.array(cols["item_id"], dtype=str)
    return cols


def load_amazon(reviews_path: str | Path, meta_path: str | Path | None = None, config: Config | None = None,
                name: str | None = None, missing_meta: str = "drop"):
    """Dataset from an Amazon reviews file (+ metadata). ``config=None`` uses the LLMInit
    Amazon protocol ``Config(rating_threshold=4, kcore=5)``. Reviewed items without a
    metadata row are dropped before filtering (``missing_meta="drop"``, reported), kept
    with empty features (``"empty"``), or rejected (``"error"``)."""
    from .dataset import dataset_from_interactions, interactions_from_columns

    reviews_path = Path(reviews_path)
    config = config or Config(rating_threshold=4.0, kcore=5)
    inter = interactions_from_columns(read_amazon_reviews(reviews_path), reviews_path)
    meta = read_amazon_meta(meta_path) if meta_path is not None else None
    if name is None:
        name = reviews_path.name.split(".")[0]
        for prefix in ("reviews_", "review_"):
            name = name.removeprefix(prefix)
    source = str(reviews_path) + (f" + {meta_path}" if meta_path is not None else "")
    return dataset_from_interactions(name, inter, config, item_features=meta, source=source,
                                     item_source=str(meta_path), missing_features=missing_meta)


__all__ = ["read_amazon_reviews", "read_amazon_meta", "iter_records", "load_amazon"]
