"""jaxrec.data readers: raw MovieLens 100K and Amazon 2014 / 2018 review data (small files)."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.data import (DataError, load_amazon, load_movielens_raw, read_amazon_meta, read_amazon_reviews,
                         read_ml100k_items, read_ml100k_ratings)
from jaxrec.data.movielens import GENRES

# ------------------------------------------------------------------------------ MovieLens raw
U_DATA = "\n".join(f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in [
    (1, 1, 5, 100), (1, 2, 3, 101), (1, 3, 4, 102), (1, 4, 1, 103),
    (2, 1, 4, 200), (2, 2, 2, 201), (2, 3, 5, 202),
    (3, 2, 4, 300), (3, 3, 3, 301), (3, 4, 5, 302), (10, 1, 3, 5),
]) + "\n"


def genre_flags(*names):
    return "|".join("1" if g in names else "0" for g in GENRES)


TOY_GENRES = genre_flags("Animation", "Children's", "Comedy")
U_ITEM = "\n".join([
    f"1|Toy Story (1995)|01-Jan-1995||http://x/1|{TOY_GENRES}",
    f"2|Seven (Se7en) (1995)|01-Jan-1995||http://x/2|{genre_flags('Crime', 'Thriller')}",
    f"3|Café Society|12-Mar-1997||http://x/3|{genre_flags('Drama')}",
    f"4|unknown||||{genre_flags('unknown')}",
    f"5|Never Rated (1990)|01-Jan-1990||http://x/5|{genre_flags('Sci-Fi', 'Film-Noir')}",
]) + "\n"
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n10|53|M|lawyer|90703\n"


@pytest.fixture()
def ml_raw(tmp_path):
    d = tmp_path / "ml-raw"
    d.mkdir()
    (d / "u.data").write_text(U_DATA)
    (d / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (d / "u.user").write_text(U_USER)
    return d


def test_movielens_raw_readers(ml_raw):
    r = read_ml100k_ratings(ml_raw / "u.data")
    assert list(r) == ["user_id", "item_id", "rating", "timestamp"]
    assert r["user_id"][:3].tolist() == ["1", "1", "1"] and r["rating"][0] == 5.0 and r["timestamp"][-1] == 5.0
    it = read_ml100k_items(ml_raw / "u.item")
    assert list(it) == ["item_id", "movie_title", "release_year", "class"]
    assert it["item_id"].tolist() == ["1", "2", "3", "4", "5"]
    assert it["movie_title"][:3] == [["Toy", "Story"], ["Seven", "(Se7en)"], ["Café", "Society"]]
    assert it["release_year"].tolist() == ["1995", "1995", "1997", "", "1990"]
    assert it["class"][0] == ["Animation", "Children's", "Comedy"] and it["class"][3] == ["unknown"]


def test_load_movielens_raw_dataset(ml_raw, caplog):
    with caplog.at_level(logging.WARNING, logger="jaxrec.data"):
        ds = load_movielens_raw(ml_raw, Config(split="loo_time"))
    assert ds.name == "ml-100k"
    assert ds.num_users == 4 and ds.num_items == 4
    assert ds.item_ids.tolist() == ["1", "2", "3", "4"]
    assert ds.item_features["movie_title"] == ["Toy Story", "Seven (Se7en)", "Café Society", "unknown"]
    assert ds.item_features["class"][1] == "Crime Thriller"
    assert ds.user_features["occupation"] == ["technician", "other", "writer", "lawyer"]
    # item 5 is in u.item but never rated: reported, not an error
    assert any("1 items in" in str(r) for r in ds.reports)
    assert any("no interactions" in r.getMessage() for r in caplog.records)
    # user 10 has one rating: train only
    assert ds.test.user_ids[ds.test.user].tolist() == ["1", "2", "3"]
    assert ds.test.item_ids[ds.test.item].tolist() == ["4", "3", "4"]


def test_movielens_raw_errors(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data, line 2: expected 4 fields"):
        read_ml100k_ratings(tmp_path / "u.data")
    (tmp_path / "u.data").write_text("1\t2\tfive\t4\n")
    with pytest.raises(DataError, match=r"u\.data, line 1, field 'rating'"):
        read_ml100k_ratings(tmp_path / "u.data")
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n")
    with pytest.raises(DataError, match=r"u\.item, line 1: expected 24"):
        read_ml100k_items(tmp_path / "u.item")
    with pytest.raises(DataError, match=r"u\.data: file not found"):
        load_movielens_raw(tmp_path / "missing")


# ------------------------------------------------------------------------------ Amazon
REVIEWS = [  # (reviewer, asin, rating, time)
    ("A1", "B001", 5.0, 1000), ("A1", "B002", 4.0, 1001), ("A1", "B003", 5.0, 1002), ("A1", "B004", 2.0, 1003),
    ("A2", "B001", 4.0, 2000), ("A2", "B002", 5.0, 2001), ("A2", "B003", 4.0, 2002),
    ("A3", "B001", 5.0, 3000), ("A3", "B002", 4.0, 3001), ("A3", "B003", 5.0, 3002), ("A3", "B009", 5.0, 3003),
    ("A4", "B001", 3.0, 4000),
]


def review_lines(year: int) -> list[str]:
    out = []
    for u, a, r, t in REVIEWS:
        rec = {"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t, "reviewText": "ok\ttab"}
        if year == 2018:
            rec.update(verified=True, vote="2", style={"Size:": " Large"})
        out.append(json.dumps(rec))
    return out


META_2014 = [  # python literals, as in the 2014 metadata dumps
    "{'asin': 'B001', 'title': 'Lip Balm', 'brand': 'Acme', 'categories': [['Beauty', 'Skin Care', 'Lips'], "
    "['Beauty', 'Makeup']], 'description': \"Soft lips. It's great\", 'price': 3.5, 'related': {'also_bought': ['B002']}}",
    "{'asin': 'B002', 'title': 'Shampoo', 'categories': [['Beauty', 'Hair Care']], 'salesRank': {'Beauty': 5}}",
    "{'asin': 'B003', 'categories': [['Beauty']], 'description': 'No title here'}",
    "{'asin': 'B004', 'title': 'Soap', 'brand': 'Acme', 'categories': [['Beauty']]}",
    "{'asin': 'B777', 'title': 'Never reviewed', 'categories': []}",
]
META_2018 = [
    json.dumps({"asin": "B001", "title": "Lip Balm", "brand": "Acme", "category": ["Beauty", "Skin Care", "Beauty"],
                "description": ["Soft lips.", "It's great"], "also_buy": ["B002"]}),
    json.dumps({"asin": "B002", "title": "Shampoo", "category": ["Beauty", "Hair Care"], "description": []}),
    json.dumps({"asin": "B003", "category": ["Beauty"], "description": ["No title here"]}),
    json.dumps({"asin": "B004", "title": "Soap", "brand": "Acme", "category": ["Beauty"]}),
    json.dumps({"asin": "B777", "title": "Never reviewed"}),
]


def write_lines(path, lines, gz):
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("year", [2014, 2018])
def test_amazon_readers(tmp_path, year, gz):
    ext = ".json.gz" if gz else ".json"
    rp = write_lines(tmp_path / f"reviews_Beauty{ext}", review_lines(year), gz)
    mp = write_lines(tmp_path / f"meta_Beauty{ext}", META_2014 if year == 2014 else META_2018, gz)
    r = read_amazon_reviews(rp)
    assert list(r) == ["user_id", "item_id", "rating", "timestamp"]
    assert r["user_id"].tolist() == [x[0] for x in REVIEWS]
    assert r["item_id"].tolist() == [x[1] for x in REVIEWS]
    np.testing.assert_array_equal(r["rating"], [x[2] for x in REVIEWS])
    np.testing.assert_array_equal(r["timestamp"], [x[3] for x in REVIEWS])
    m = read_amazon_meta(mp)
    assert list(m) == ["item_id", "title", "brand", "categories", "description"]
    assert m["item_id"].tolist() == ["B001", "B002", "B003", "B004", "B777"]
    assert m["title"] == ["Lip Balm", "Shampoo", "", "Soap", "Never reviewed"]
    assert m["brand"] == ["Acme", "", "", "Acme", ""]
    if year == 2014:
        assert m["categories"][0] == "Beauty, Skin Care, Lips, Makeup"
    else:
        assert m["categories"][0] == "Beauty, Skin Care"
    assert m["categories"][1] == "Beauty, Hair Care" and m["categories"][4] == ""
    assert m["description"][0] == "Soft lips. It's great"
    assert m["description"][2] == "No title here"


@pytest.mark.parametrize("year", [2014, 2018])
def test_load_amazon_protocol(tmp_path, year, caplog):
    rp = write_lines(tmp_path / "reviews_Beauty_5.json.gz", review_lines(year), True)
    mp = write_lines(tmp_path / "meta_Beauty.json", META_2014 if year == 2014 else META_2018, False)
    # B009 has no metadata -> dropped (reported); ratings >= 4; 3-core; leave-one-out
    with caplog.at_level(logging.WARNING, logger="jaxrec.data"):
        ds = load_amazon(rp, mp, Config(rating_threshold=4, kcore=3, split="loo_time"))
    assert ds.name == "Beauty_5"
    assert ds.user_ids.tolist() == ["A1", "A2", "A3"]
    assert ds.item_ids.tolist() == ["B001", "B002", "B003"]
    assert ds.item_features["title"] == ["Lip Balm", "Shampoo", ""]
    names = [r.name for r in ds.reports]
    assert names[0] == "item_features" and names[1] == "missing_item_features"
    assert names[2:] == ["rating_threshold(t=4.0)", "kcore(k=3)", "leave_one_out(order=time)"]
    assert ds.reports[1].removed_interactions == 1  # (A3, B009)
    assert ds.test.item_ids[ds.test.item].tolist() == ["B003"] * 3
    with pytest.raises(DataError, match=r"meta_Beauty\.json: 1 item_ids .* B009"):
        load_amazon(rp, mp, Config(), missing_meta="error")


def test_amazon_errors(tmp_path):
    p = write_lines(tmp_path / "r.json", [json.dumps({"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": 1}),
                                          json.dumps({"reviewerID": "A", "asin": "B", "unixReviewTime": 1})], False)
    with pytest.raises(DataError, match=r"r\.json, line 2, field 'overall': missing"):
        read_amazon_reviews(p)
    p = write_lines(tmp_path / "r2.json.gz", [json.dumps({"reviewerID": "A", "asin": "B", "overall": 5,
                                                          "unixReviewTime": 1}), "{not json nor python"], True)
    with pytest.raises(DataError, match=r"r2\.json\.gz, line 2: expected one JSON object"):
        read_amazon_reviews(p)
    p = write_lines(tmp_path / "m.json", ["{'asin': 'B1', 'title': 'x'}", "{'title': 'no asin'}"], False)
    with pytest.raises(DataError, match=r"m\.json, line 2, field 'asin'"):
        read_amazon_meta(p)
    p = write_lines(tmp_path / "m2.json", ["{'asin': 'B1', 'categories': 'Beauty'}"], False)
    with pytest.raises(DataError, match=r"m2\.json, line 1, field 'categories'"):
        read_amazon_meta(p)
    with pytest.raises(DataError, match="not found"):
        read_amazon_reviews(tmp_path / "absent.json")
