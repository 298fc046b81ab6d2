"""Amazon review data, 2014 (McAuley) and 2018 (Ni) formats, plain or gzipped.

Reviews: one record per line with ``reviewerID, asin, overall, unixReviewTime`` (both
years) -> columns user_id, item_id (str [n]), rating, timestamp (float64 [n]).
Metadata: one record per line with ``asin`` and optional ``title, brand, description``
plus ``categories`` (2014: list of lists) or ``category`` (2018: list); ``description``
is a string (2014) or a list of strings (2018) -> columns item_id, title, brand,
categories (flattened, de-duplicated, joined by ", "), description (one string).
Lines are JSON; 2014 metadata lines are Python literals, read with ``ast.literal_eval``.

Parsing: pyarrow's JSON reader with an explicit schema (other keys are skipped unparsed);
when it fails (Python literals, other value types, a bad line), the exact line-by-line
reader runs and names the bad line. Encodings as every reader (:mod:`jaxrec.data.textio`).

Preprocessing protocols (:func:`load_amazon`; ``AmazonProtocol`` records registered in
``jaxrec.registry.DATA_PROTOCOLS``):

- ``"kcore"`` (LLMInit; built in; default config ``rating_threshold=4, dedup=True, kcore=5``):
  ratings >= 4, repeated (user, item) pairs keep the earliest, iterative 5-core;
- ``"allmrec"`` (A-LLMRec's own, registered by ``jaxrec.methods.allmrec.register()`` from
  ``jaxrec.methods.allmrec.data``; ``pre_train/sasrec/data_preprocess.py`` of ghdtjr/A-LLMRec):
  one counting pass keeps a review when its user and its item have >= 5 reviews (>= 4 for
  Beauty and Toys, where reviews rated below 3 are not counted, but kept); no rating
  filter, no iterative core; sequences in ``unixReviewTime`` order (stable: ties keep file
  order, counted in the split report); item text ``Title: <title>, Description: <first
  description element>`` (``jaxrec.methods.allmrec.data.allmrec_item_text``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from ..config import Config
from ..registry import DATA_PROTOCOLS
from .atomic import fast_then_exact
from .cells import check_cells, where_row
from .errors import DataError, where
from .textio import Encoding, arrow_input, decoded_lines, row_lines, sniff_encoding

REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")
REVIEW_COLUMNS = {"reviewerID": "user_id", "asin": "item_id", "overall": "rating", "unixReviewTime": "timestamp"}
REVIEW_SCHEMA = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()), ("overall", pa.float64()),
                           ("unixReviewTime", pa.float64())])
META_SCHEMA = pa.schema([("asin", pa.string()), ("title", pa.string()), ("brand", pa.string()),
                         ("description", pa.list_(pa.string())), ("category", pa.list_(pa.string())),
                         ("categories", pa.list_(pa.list_(pa.string())))])
_BLOCK = 16 << 20


@dataclasses.dataclass(frozen=True)
class JsonTable:
    """A JSON-lines file as parsed: ``table`` (schema columns, nulls for absent keys),
    ``lines`` the line of each row when the exact reader ran (else None: each non-blank
    line is one record, checked when a message needs a line number)."""

    path: Path
    table: pa.Table
    encoding: Encoding
    lines: np.ndarray | None = None
    exact: Callable[[], "JsonTable"] | None = None

    def line_of(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self.lines is not None:
            return self.lines[rows]
        got = row_lines(self.path, rows, skip_lines=0, blank="space", total_rows=self.table.num_rows)
        if got is None and self.exact is not None:  # records do not sit one per line: the exact reader says where
            return self.exact().line_of(rows)
        return got


def iter_records(path: str | Path, enc: Encoding | None = None):
    """(line number, record dict) per non-blank line; JSON first, then a Python literal."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an Amazon reviews/metadata file (.json or .json.gz)")
    for no, line in decoded_lines(path, enc or sniff_encoding(path)):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                raise DataError(f"{where(path, no)}: expected one JSON object or Python dict "
                                f"literal per line, got {line[:60]!r}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where(path, no)}: expected an object/dict, got {type(rec).__name__}")
        yield no, rec


def _read_json(path: str | Path, schema: pa.Schema, exact_row: Callable[[dict, Path, int], tuple],
               reports: list | None, engine: str = "auto") -> JsonTable:
    """pyarrow first (UTF-8, then the detected encoding), else the exact reader."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an Amazon reviews/metadata file (.json or .json.gz)")

    def fast(enc: Encoding) -> JsonTable:
        stream = arrow_input(path, enc)
        try:
            table = pj.read_json(stream, read_options=pj.ReadOptions(block_size=_BLOCK),
                                 parse_options=pj.ParseOptions(explicit_schema=schema,
                                                               unexpected_field_behavior="ignore"))
        finally:
            stream.close()
        table.validate(full=True)  # pyarrow's JSON reader does not check UTF-8: this does (ArrowInvalid)
        return JsonTable(path, table, enc, exact=lambda: exact(enc))

    def exact(enc: Encoding) -> JsonTable:
        rows, lines = [], []
        for no, rec in iter_records(path, enc):
            rows.append(exact_row(rec, path, no))
            lines.append(no)
        cols = list(zip(*rows)) if rows else [() for _ in schema.names]
        table = pa.table({f.name: pa.array(list(c), type=f.type) for f, c in zip(schema, cols)})
        return JsonTable(path, table, enc, np.asarray(lines, dtype=np.int64))

    return fast_then_exact(path, fast, exact, reports, engine)


# -------------------------------------------------------------------------------- reviews
def _review_row(rec: dict, path: Path, no: int) -> tuple:
    out: list[Any] = []
    for key in REVIEW_KEYS:
        v = rec.get(key)
        if key in ("reviewerID", "asin"):
            out.append(None if v is None else str(v))
            continue
        if v is None:
            out.append(None)
            continue
        try:
            if isinstance(v, bool):
                raise TypeError
            out.append(float(v))
        except (TypeError, ValueError):
            raise DataError(f"{where(path, no, key)}: expected a number, got {v!r}") from None
    return tuple(out)


def read_amazon_reviews_table(path: str | Path, reports: list | None = None, engine: str = "auto") -> JsonTable:
    """Reviews file -> :class:`JsonTable` with columns reviewerID, asin (string), overall,
    unixReviewTime (float64); absent keys are nulls (checked by the caller)."""
    return _read_json(path, REVIEW_SCHEMA, _review_row, reports, engine)


def read_amazon_reviews(path: str | Path, engine: str = "auto", reports: list | None = None) -> dict:
    """Reviews file -> user_id, item_id (str [n]), rating, timestamp (float64 [n]).

    Raises DataError naming the line and key of a missing/empty id or a missing or
    non-finite number, of a line that is not one JSON object (or Python dict literal), and
    for a file without reviews.
    """
    t = read_amazon_reviews_table(path, reports, engine)
    if t.table.num_rows == 0:
        raise DataError(f"{t.path}: no reviews; expected one record per line")
    check_cells(t.table.rename_columns([REVIEW_COLUMNS[c] for c in REVIEW_KEYS]), t.path, t.line_of, "error",
                {v: k for k, v in REVIEW_COLUMNS.items()}, f" (keys {', '.join(REVIEW_KEYS)})")
    col = lambda k: t.table.column(k).to_numpy(zero_copy_only=False)  # noqa: E731
    return {"user_id": np.asarray(col("reviewerID"), dtype=str), "item_id": np.asarray(col("asin"), dtype=str),
            "rating": col("overall").astype(np.float64), "timestamp": col("unixReviewTime").astype(np.float64)}


# -------------------------------------------------------------------------------- metadata
def _text(v: Any, path: Path, no: int, key: str) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return " ".join(x.strip() for x in v if x.strip())
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise DataError(f"{where(path, no, key)}: expected a string or a list of strings, got {type(v).__name__}")


def _description(v: Any, path: Path, no: int) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]  # 2014: one string
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return list(v)
    raise DataError(f"{where(path, no, 'description')}: expected a string (2014) or a list of strings (2018), "
                    f"got {type(v).__name__}")


def _category_lists(v: Any, key: str, path: Path, no: int) -> list | None:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)):
        raise DataError(f"{where(path, no, key)}: expected a list (2018) or a list of lists (2014)")
    out = []
    for x in v:
        group = list(x) if isinstance(x, (list, tuple)) else [x]
        for c in group:
            if not isinstance(c, str):
                raise DataError(f"{where(path, no, key)}: expected category names (strings), got {c!r}")
        out.append(group)
    return out


def _meta_row(rec: dict, path: Path, no: int) -> tuple:
    if rec.get("asin") is None:
        raise DataError(f"{where(path, no, 'asin')}: missing; expected every metadata record to have an asin")
    cats = _category_lists(rec.get("category"), "category", path, no)
    cats2014 = _category_lists(rec.get("categories"), "categories", path, no)
    return (str(rec["asin"]), _text(rec.get("title"), path, no, "title"), _text(rec.get("brand"), path, no, "brand"),
            _description(rec.get("description"), path, no), [c for g in cats for c in g] if cats else cats,
            cats2014)


def read_amazon_meta_table(path: str | Path, reports: list | None = None, engine: str = "auto") -> JsonTable:
    """Metadata file -> :class:`JsonTable` with columns asin, title, brand (string),
    description (list of strings; a 2014 string becomes a one-element list), category (list
    of strings), categories (list of lists); absent keys are nulls. DataError for a
    record without an asin."""
    t = _read_json(path, META_SCHEMA, _meta_row, reports, engine)
    asin = t.table.column("asin")
    if asin.null_count:
        row = int(np.flatnonzero(asin.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{where_row(t.path, t.line_of, row, 'asin')}: missing; expected every metadata "
                        f"record to have an asin")
    return t


def _categories(cat, cats2014) -> str:
    flat = list(cat or []) + [c for g in (cats2014 or []) for c in g]
    return ", ".join(dict.fromkeys(c.strip() for c in flat if c.strip()))


def read_amazon_meta(path: str | Path, engine: str = "auto", reports: list | None = None) -> dict:
    """Metadata file -> item_id (str [m]) and lists [m] of str title, brand, categories, description."""
    return _meta_columns(read_amazon_meta_table(path, reports, engine))


def _meta_columns(t: JsonTable) -> dict:
    tb = t.table
    cols: dict[str, Any] = {"item_id": np.asarray(tb.column("asin").to_pylist(), dtype=str)}
    cols["title"] = [(v or "").strip() for v in tb.column("title").to_pylist()]
    cols["brand"] = [(v or "").strip() for v in tb.column("brand").to_pylist()]
    cols["categories"] = [_categories(a, b) for a, b in zip(tb.column("category").to_pylist(),
                                                            tb.column("categories").to_pylist())]
    cols["description"] = [" ".join(x.strip() for x in (d or []) if x.strip())
                           for d in tb.column("description").to_pylist()]
    if len(cols["item_id"]) == 0:
        cols["item_id"] = np.array([], dtype=str)
    return cols


@dataclasses.dataclass(frozen=True)
class AmazonProtocol:
    """A preprocessing protocol of ``load_amazon``, registered in ``jaxrec.registry.DATA_PROTOCOLS``.

    name: its key; ``default_config()``: the ``Config`` used when none is given;
    ``missing_meta``: what to do with reviewed items without a metadata row (drop | empty | error);
    ``threshold(name) -> (threshold, count_min_rating)``: a single counting pass (keep a review
    when its user and its item have >= threshold reviews, counting only ratings >=
    count_min_rating when given) instead of the config's iterative k-core (None: no such pass);
    ``features(meta: JsonTable) -> (columns, repeated)``: item feature columns from the metadata
    table and how many records repeat an asin (None: every field, ``_meta_columns``);
    ``fill_text()``: the ``text`` feature of an item without metadata (None: empty).
    """

    name: str
    default_config: Callable[[], Config]
    missing_meta: str = "drop"
    threshold: Callable[[str], tuple[int, float | None]] | None = None
    features: Callable[[JsonTable], tuple[dict, int]] | None = None
    fill_text: Callable[[], str] | None = None


#: LLMInit's protocol: ratings >= 4, repeated pairs keep the earliest, iterative 5-core.
KCORE = AmazonProtocol("kcore", lambda: Config(rating_threshold=4.0, dedup=True, kcore=5), missing_meta="drop")
DATA_PROTOCOLS.register("kcore", KCORE)


# -------------------------------------------------------------------------------- loading
def load_amazon(reviews_path: str | Path, meta_path: str | Path | None = None, config: Config | None = None,
                name: str | None = None, missing_meta: str | None = None, protocol: str = "kcore",
                threshold: int | None = None, count_min_rating: float | None = None, cache: bool | None = None):
    """Dataset from an Amazon reviews file (+ metadata).

    protocol: a registered ``AmazonProtocol`` name (``jaxrec.registry.DATA_PROTOCOLS``) or record.
    ``"kcore"`` (LLMInit): ``config=None`` means ``Config(rating_threshold=4, dedup=True,
    kcore=5)``; reviewed items without a metadata row are dropped before filtering
    (``missing_meta="drop"``, the default, reported), kept with empty features (``"empty"``) or
    rejected (``"error"``). A protocol with a counting pass (A-LLMRec's ``"allmrec"``) uses
    ``threshold`` / ``count_min_rating`` (default: the protocol's for the dataset name) instead of
    ``config.kcore``. The parsed, filtered data is cached (``cache=None`` follows ``config.data_cache``).
    """
    from .cache import cached_prepare
    from .dataset import _interactions, _options, prepare, split_prepared

    spec = protocol if isinstance(protocol, AmazonProtocol) else DATA_PROTOCOLS.get(protocol, "protocol")
    protocol = spec.name
    reviews_path = Path(reviews_path)
    if config is None:
        config = spec.default_config()
    if missing_meta is None:
        missing_meta = spec.missing_meta
    if name is None:
        name = reviews_path.name.split(".")[0]
        for prefix in ("reviews_", "review_"):
            name = name.removeprefix(prefix)
    if spec.threshold is not None:
        t_default, r_default = spec.threshold(name)
        threshold = t_default if threshold is None else threshold
        count_min_rating = r_default if count_min_rating is None else count_min_rating
    files = [reviews_path] + ([Path(meta_path)] if meta_path is not None else [])
    source = str(reviews_path) + (f" + {meta_path}" if meta_path is not None else "")

    def build():
        from . import filters

        reports: list = []
        t = read_amazon_reviews_table(reviews_path, reports)
        if t.table.num_rows == 0:
            raise DataError(f"{reviews_path}: no reviews; expected one record per line")
        table = t.table.rename_columns([REVIEW_COLUMNS[c] for c in REVIEW_KEYS])
        inter = _interactions(table, reviews_path, config.missing, reports, t.line_of,
                              {v: k for k, v in REVIEW_COLUMNS.items()})
        meta = None
        if meta_path is not None:
            mt = read_amazon_meta_table(meta_path, reports)
            if spec.features is not None:
                meta, repeated = spec.features(mt)
                if repeated:
                    reports.append(filters.FilterReport(
                        "meta_repeated_asin", 0, 0, 0,
                        f"{repeated:,} metadata records repeat an asin of {meta_path}; the last one is used "
                        f"({protocol} protocol)"))
            else:
                meta = _meta_columns(mt)
        count = None
        if spec.threshold is not None:
            count = lambda x: filters.count_filter(  # noqa: E731
                x, threshold, count_min_rating,
                f"{protocol}_count(threshold={threshold}"
                + (f", count_min_rating={count_min_rating})" if count_min_rating is not None else ")"))
        prepared = prepare(inter, config, item_features=meta, item_source=str(meta_path),
                           missing_features=missing_meta, reports=reports, count_filter=count)
        if spec.fill_text is not None and meta is not None and missing_meta == "empty":
            feats = prepared.item_features
            feats["text"] = [x or spec.fill_text() for x in feats["text"]]
        return prepared

    options = _options(config, protocol=protocol, missing_meta=missing_meta, threshold=threshold,
                       count_min_rating=count_min_rating, kcore=None if spec.threshold is not None else config.kcore)
    prepared, _ = cached_prepare(name, f"amazon-{protocol}", files, options, build,
                                 enabled=config.data_cache if cache is None else cache)
    return split_prepared(name, prepared, config, source=source)


__all__ = ["read_amazon_reviews", "read_amazon_meta", "read_amazon_reviews_table", "read_amazon_meta_table",
           "iter_records", "load_amazon", "AmazonProtocol", "KCORE", "JsonTable"]
