"""Property-based tests (hypothesis) of the atomic and Amazon readers.

- arbitrary headers, cells, separators, line ends and encodings: the readers return or
  raise DataError, never anything else; the pyarrow path and the exact line reader agree
  (same columns, or both DataError);
- write then read is the identity for every atomic column type (token, token_seq, float,
  float_seq) and for Amazon review / metadata records, in every accepted encoding variant.

Bounded example counts and no example database, so the runs are fast and repeatable.
"""

from __future__ import annotations

import codecs
import gzip
import json

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jaxrec.data import DataError, read_amazon_meta, read_amazon_reviews, read_atomic, write_atomic  # noqa: E402

SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------- arbitrary (mostly bad) input
FIELDS = ["a:token", "b:float", "c:token_seq", "d:float_seq", "e:bad", ":token", "a:token", "f", " g:float ",
          "h:"]
CELLS = ["1", "-2.5e3", " 4 ", "nan", "inf", "-0", "", " ", "abc", "é", "\u201c", "1 2 3", "1  x", "a b", "1_0",
         "0x1p3", "\x0b", "\u2028", "\ufeff", "1e400", "+.5", "."]
SEPS = ["\t", "\n", "\r\n", "\r", " ", "|"]
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]


def encode(text: str, encoding: str) -> bytes:
    return text.encode(encoding, errors="replace")


@st.composite
def messy_atomic(draw):
    header = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4))
    parts = ["\t".join(header), draw(st.sampled_from(["\n", "\r\n", "\r"]))]
    for _ in range(draw(st.integers(0, 6))):
        parts += [draw(st.sampled_from(CELLS + SEPS)) for _ in range(draw(st.integers(0, 8)))]
    raw = encode("".join(parts), draw(st.sampled_from(ENCODINGS)))
    if draw(st.booleans()):
        raw = draw(st.binary(max_size=8)) + raw
    return raw


def columns_equal(a, b) -> bool:
    if list(a) != list(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif len(x) != len(y) or not all(
                np.array_equal(p, q, equal_nan=True) if isinstance(p, np.ndarray) else p == q for p, q in zip(x, y)):
            return False
    return True


def outcome(path, engine):
    try:
        return read_atomic(path, with_types=True, engine=engine)
    except DataError:
        return DataError


@settings(max_examples=150, **SETTINGS)
@given(raw=messy_atomic())
def test_atomic_reader_only_raises_data_error_and_engines_agree(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("messy") / "x.inter"
    p.write_bytes(raw)
    auto, exact = outcome(p, "auto"), outcome(p, "python")
    event("DataError" if exact is DataError else "parsed")
    if auto is DataError or exact is DataError:
        assert auto is exact is DataError
    else:
        assert auto[1] == exact[1] and columns_equal(auto[0], exact[0])


# ---------------------------------------------------------------- atomic round trip
SAFE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00")
WORD = st.text(SAFE.filter(lambda c: c != " "), min_size=1, max_size=6)
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00:"),
               min_size=1, max_size=5).filter(lambda s: s == s.strip() and not s.startswith("\ufeff"))
FLOAT = st.floats(allow_nan=True, allow_infinity=True)
TYPES = ["token", "token_seq", "float", "float_seq"]


@st.composite
def atomic_columns(draw):
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique=True))
    n = draw(st.integers(0, 5))
    types, cols = {}, {}
    for name in names:
        kind = draw(st.sampled_from(TYPES))
        types[name] = kind
        if kind == "token":
            cols[name] = np.array(draw(st.lists(st.text(SAFE, max_size=6), min_size=n, max_size=n)), dtype=str)
        elif kind == "token_seq":
            cols[name] = draw(st.lists(st.lists(WORD, max_size=3), min_size=n, max_size=n))
        elif kind == "float":
            cols[name] = np.array(draw(st.lists(FLOAT, min_size=n, max_size=n)), dtype=np.float64)
        else:
            cols[name] = [np.array(v, dtype=np.float64) for v in
                          draw(st.lists(st.lists(FLOAT, max_size=3), min_size=n, max_size=n))]
    return cols, types


@settings(max_examples=120, **SETTINGS)
@given(data=atomic_columns(), variant=st.sampled_from(["plain", "bom-crlf", "gzip"]))
def test_atomic_write_then_read_is_identity(tmp_path_factory, data, variant):
    cols, types = data
    p = tmp_path_factory.mktemp("rt") / "x.item"
    try:
        write_atomic(p, cols, types)
    except DataError:  # e.g. an empty value in a one-column file: refused, not mangled
        assume(False)
    if variant == "bom-crlf":
        p.write_bytes(codecs.BOM_UTF8 + p.read_bytes().replace(b"\n", b"\r\n"))
    elif variant == "gzip":
        p.write_bytes(gzip.compress(p.read_bytes()))
    back, back_types = read_atomic(p, with_types=True)
    assert back_types == types
    for name, kind in types.items():
        got, want = back[name], cols[name]
        if kind in ("token", "float"):
            assert got.dtype.kind == want.dtype.kind  # str stays str (any width), float64 stays float64
            np.testing.assert_array_equal(got, want)
            if kind == "float":  # the sign of zero too (a NaN's sign bit is not data: text has one NaN)
                assert np.array_equal(np.signbit(got[~np.isnan(want)]), np.signbit(want[~np.isnan(want)]))
        elif kind == "token_seq":
            assert got == want
        else:
            assert len(got) == len(want)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
                assert np.array_equal(np.signbit(g[~np.isnan(w)]), np.signbit(w[~np.isnan(w)]))


# ---------------------------------------------------------------- Amazon readers
JSON_ATOMS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=False),
                       st.text(max_size=5))
JSON_VALUES = st.recursive(JSON_ATOMS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c,
                                                                                       max_size=3), max_leaves=6)
KEYS = ["reviewerID", "asin", "overall", "unixReviewTime", "title", "description", "category", "categories",
        "brand", "x"]


@st.composite
def messy_json_lines(draw):
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            rec = draw(st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=6))
            lines.append(json.dumps(rec, ensure_ascii=draw(st.booleans())))
        elif kind == 1:
            lines.append(repr(draw(st.dictionaries(st.sampled_from(KEYS), JSON_ATOMS, max_size=4))))
        else:
            lines.append(draw(st.text(max_size=12)))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    raw = encode(text, draw(st.sampled_from(ENCODINGS)))
    return gzip.compress(raw) if draw(st.booleans()) else raw


@settings(max_examples=150, **SETTINGS)
@given(raw=messy_json_lines())
def test_amazon_readers_only_raise_data_error(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("messyjson") / "x.json"
    p.write_bytes(raw)
    for reader in (read_amazon_reviews, read_amazon_meta):
        try:
            reader(p)
            event(f"{reader.__name__} parsed")
        except DataError:
            event(f"{reader.__name__} DataError")


ID = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8)
NUM = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=100, **SETTINGS)
@given(recs=st.lists(st.tuples(ID, ID, NUM, NUM), min_size=1, max_size=6),
       variant=st.sampled_from(["utf-8", "utf-8 ascii-escaped", "utf-8 BOM CRLF", "gzip"]))
def test_amazon_reviews_write_then_read_is_identity(tmp_path_factory, recs, variant):
    lines = [json.dumps({"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t, "reviewText": "x"},
                        ensure_ascii=variant == "utf-8 ascii-escaped") for u, a, r, t in recs]
    raw = "\n".join(lines).encode("utf-8")
    if variant == "utf-8 BOM CRLF":
        raw = codecs.BOM_UTF8 + "\r\n".join(lines).encode("utf-8")
    elif variant == "gzip":
        raw = gzip.compress(raw)
    p = tmp_path_factory.mktemp("rev") / "r.json"
    p.write_bytes(raw)
    got = read_amazon_reviews(p)
    assert got["user_id"].tolist() == [r[0] for r in recs] and got["item_id"].tolist() == [r[1] for r in recs]
    assert got["rating"].tolist() == [r[2] for r in recs] and got["timestamp"].tolist() == [r[3] for r in recs]


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(max_examples=100, **SETTINGS)
@given(recs=st.lists(st.tuples(ID, st.one_of(st.none(), TEXT), st.one_of(st.none(), st.lists(TEXT, max_size=3)),
                               st.one_of(st.none(), st.lists(TEXT, max_size=3))), min_size=1, max_size=5),
       crlf=st.booleans())
def test_amazon_meta_2018_write_then_read(tmp_path_factory, recs, crlf):
    lines = []
    for asin, title, desc, cat in recs:
        rec = {"asin": asin}
        for k, v in (("title", title), ("description", desc), ("category", cat)):
            if v is not None:
                rec[k] = v
        lines.append(json.dumps(rec, ensure_ascii=False))
    p = tmp_path_factory.mktemp("meta") / "m.json"
    p.write_bytes(("\r\n" if crlf else "\n").join(lines).encode("utf-8"))
    got = read_amazon_meta(p)
    assert got["item_id"].tolist() == [r[0] for r in recs]
    assert got["title"] == [(t or "").strip() for _, t, _, _ in recs]
    assert got["description"] == [" ".join(x.strip() for x in (d or []) if x.strip()) for _, _, d, _ in recs]
    assert got["categories"] == [", ".join(dict.fromkeys(c.strip() for c in (cat or []) if c.strip()))
                                 for *_, cat in recs]
