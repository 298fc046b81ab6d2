"""jaxrec.data against real-world input faults (issue 10): repeated pairs, missing and
non-finite cells, encodings, errors naming original ids, time ties; and A-LLMRec's
Amazon preprocessing (issue 11). Each case is a small file built by hand, checked against
hand-computed expectations or a naive Python re-implementation."""

from __future__ import annotations

import codecs
import collections
import gzip
import json
import logging

import numpy as np
import pytest

from jaxrec.config import Config, ConfigError
from jaxrec.data import (
    DataError,
    PositiveIndex,
    exclusion_pairs,
    filters,
    leave_one_out,
    load_amazon,
    load_dataset,
    load_movielens_raw,
    read_amazon_meta,
    read_amazon_reviews,
    read_atomic,
    read_ml100k_items,
    remap_ids,
    sample_negatives,
    truth,
)
from jaxrec.data.movielens import GENRES
from jaxrec.data.textio import ReadReport, sniff_encoding
from jaxrec.eval import evaluate, ranking_metrics, topk_full_ranking
from jaxrec.methods.allmrec import register as register_allmrec
from jaxrec.methods.allmrec.data import allmrec_item_text, allmrec_threshold

NO_CACHE = dict(data_cache=False)


def write_inter(folder, name, rows, header="user_id:token\titem_id:token\ttimestamp:float"):
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.inter").write_text(header + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows),
                                     encoding="utf-8")
    return d


# ------------------------------------------------------------------ 1. repeated pairs and masking
ISSUE1 = [("u1", "a", 1), ("u1", "c", 2), ("u1", "b", 3), ("u1", "c", 4), ("u2", "a", 1), ("u2", "b", 2),
          ("u2", "c", 3), ("u2", "d", 4), ("u3", "b", 1), ("u3", "c", 2), ("u3", "a", 3), ("u3", "d", 4)]


def perfect_model(ds):
    """One-hot scores: every user's test item scores 1, everything else 0."""
    user_emb = np.zeros((ds.num_users, ds.num_items), np.float32)
    user_emb[ds.test.user, ds.test.item] = 1.0
    return user_emb, np.eye(ds.num_items, dtype=np.float32)


def test_held_out_item_is_never_masked_out_of_its_own_ranking(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="jaxrec.data"):
        ds = load_dataset(write_inter(tmp_path, "rep", ISSUE1), Config(split="loo_time", **NO_CACHE))
    rep = [r for r in ds.reports if r.name == "repeated_pairs"]
    assert len(rep) == 1 and "1 (user, item) pairs occur more than once" in rep[0].detail
    assert "(u1, c)" in rep[0].detail and any("repeated_pairs" in r.getMessage() for r in caplog.records)
    name = lambda part: list(zip(part.user_ids[part.user], part.item_ids[part.item]))  # noqa: E731
    assert ("u1", "c") in name(ds.test) and ("u1", "c") in name(ds.train)  # the case of the issue
    eu, ei = exclusion_pairs(ds, "test")
    excluded = set(zip(ds.user_ids[eu], ds.item_ids[ei]))
    assert ("u1", "c") not in excluded and ("u1", "a") in excluded and ("u1", "b") in excluded
    user_emb, item_emb = perfect_model(ds)
    t = truth(ds, "test")
    assert evaluate(user_emb, item_emb, None, (eu, ei), t, ks=[1], metrics=["hit"])["hit@1"] == 1.0
    # the old exclusion list (every train + valid pair) reproduces the issue's 0.667
    keys = np.unique(np.concatenate([ds.train.keys(), ds.valid.keys()]))
    top = topk_full_ranking(user_emb, item_emb, t[0], keys // ds.num_items, keys % ds.num_items, k=1)
    assert ranking_metrics(top, t[1], t[2], [1], ["hit"])["hit@1"] == pytest.approx(2 / 3)
    # evaluate itself unmasks truth pairs given in an exclusion list, and says so
    with caplog.at_level(logging.WARNING, logger="jaxrec.eval"):
        got = evaluate(user_emb, item_emb, None, (keys // ds.num_items, keys % ds.num_items), t, ks=[1],
                       metrics=["hit"])
    assert got["hit@1"] == 1.0 and any("also truth pairs" in r.getMessage() for r in caplog.records)


def test_amazon_preset_keeps_the_first_of_repeated_pairs(tmp_path):
    rows = [("A1", f"B{k}", 5.0, 100 + k) for k in range(6)] + [("A1", "B0", 4.0, 50)]
    rows += [(f"A{u}", f"B{k}", 5.0, 10 * u + k) for u in range(2, 7) for k in range(6)]
    rp = tmp_path / "reviews_Toy.json"
    rp.write_text("".join(json.dumps({"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t}) + "\n"
                          for u, a, r, t in rows))
    ds = load_amazon(rp, cache=False)
    assert [r.name for r in ds.reports][:3] == ["rating_threshold(t=4.0)", "drop_duplicates", "kcore(k=5)"]
    assert ds.reports[1].removed_interactions == 1
    times = {(u, i): t for part in (ds.train, ds.valid, ds.test)
             for u, i, t in zip(part.user_ids[part.user], part.item_ids[part.item], part.timestamp)}
    assert times[("A1", "B0")] == 50  # the earliest of the repeated pair


# ------------------------------------------------------------------ 2. missing and non-finite cells
@pytest.mark.parametrize("cell, field, shown", [
    ("", "timestamp", "missing"), ("nan", "timestamp", "got nan"), ("inf", "rating", "got inf"),
    ("-inf", "rating", "got -inf"), ("NaN", "rating", "got nan"),
])
def test_atomic_missing_and_non_finite_cells(tmp_path, cell, field, shown):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    rows = [["u1", "a", 4, 1], ["u1", "b", 3, 2], ["u1", "c", 5, 3], ["u2", "a", 2, 4], ["u2", "b", 5, 5],
            ["u2", "c", 1, 6]]
    rows[4][2 if field == "rating" else 3] = cell
    d = write_inter(tmp_path, "m", rows, header)
    with pytest.raises(DataError) as e:
        load_dataset(d, Config(split="loo_time", **NO_CACHE))
    msg = str(e.value)
    for piece in ("m.inter", "line 6", f"field '{field}'", shown, "expected a finite number", "missing=drop"):
        assert piece in msg, (piece, msg)
    ds = load_dataset(d, Config(split="loo_time", missing="drop", **NO_CACHE))
    rep = [r for r in ds.reports if r.name == "missing_values"][0]
    assert rep.removed_interactions == 1 and f"{field} 1" in rep.detail and "line 6" in rep.detail
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 5
    kept = {(u, i) for p in (ds.train, ds.valid, ds.test) for u, i in zip(p.user_ids[p.user], p.item_ids[p.item])}
    assert ("u2", "b") not in kept


def test_empty_id_and_counts(tmp_path):
    d = write_inter(tmp_path, "e", [("u1", "a", 1), ("", "b", 2), ("u1", "", 3), ("u1", "c", "")])
    with pytest.raises(DataError, match=r"e\.inter, line 3, field 'user_id': empty; expected a non-empty id "
                                        r"\(3 rows .*user_id 1, item_id 1, timestamp 1"):
        load_dataset(d, Config(**NO_CACHE))


def test_missing_timestamp_no_longer_becomes_the_test_item(tmp_path):
    # before: the empty cell read as NaN, sorted last and silently became u1's test item
    d = write_inter(tmp_path, "t", [("u1", "a", 1), ("u1", "b", ""), ("u1", "c", 3), ("u1", "d", 2)])
    with pytest.raises(DataError, match=r"line 3, field 'timestamp': missing"):
        load_dataset(d, Config(split="loo_time", **NO_CACHE))
    ds = load_dataset(d, Config(split="loo_time", missing="drop", **NO_CACHE))
    assert ds.test.item_ids[ds.test.item].tolist() == ["c"]


def test_config_missing_is_validated():
    with pytest.raises(ConfigError, match="missing='skip'"):
        Config(missing="skip")


def test_amazon_and_movielens_missing_cells(tmp_path):
    p = tmp_path / "r.json"
    recs = [{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": 1},
            {"reviewerID": "A", "asin": "C", "overall": float("nan"), "unixReviewTime": 2},
            {"reviewerID": "", "asin": "C", "overall": 3, "unixReviewTime": 2}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(DataError, match=r"r\.json, line 2, field 'overall': got nan; expected a finite number"):
        read_amazon_reviews(p)
    (tmp_path / "u.data").write_text("1\t1\t5\t10\n1\t2\tinf\t11\n")
    with pytest.raises(DataError, match=r"u\.data, line 2, field 'rating': got inf"):
        load_movielens_raw(tmp_path, Config(**NO_CACHE))


# ------------------------------------------------------------------ 6. encodings
TITLES_UTF8 = ["Café “Society”", "Smörgåsbord", "plain"]
TITLES_LATIN1 = ["Café Society", "Smörgåsbord", "plain"]

VARIANTS = [  # (encode text -> bytes, titles it can hold, reported?)
    ("utf-8", lambda s: s.encode("utf-8"), TITLES_UTF8, None),
    ("utf-8 BOM CRLF", lambda s: codecs.BOM_UTF8 + s.replace("\n", "\r\n").encode("utf-8"), TITLES_UTF8, None),
    ("latin-1", lambda s: s.encode("latin-1"), TITLES_LATIN1, "latin-1"),
    ("cp1252 CRLF", lambda s: s.replace("\n", "\r\n").encode("cp1252"), TITLES_UTF8, "cp1252"),
]


@pytest.mark.parametrize("label, encode, titles, reported", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_reader_accepts_the_same_encodings(tmp_path, label, encode, titles, reported):
    reports: list = []
    # atomic
    item = tmp_path / "x.item"
    item.write_bytes(encode("item_id:token\ttitle:token_seq\n" + "".join(f"i{k}\t{t}\n" for k, t in enumerate(titles))))
    got = read_atomic(item, reports=reports)
    assert got["title"] == [t.split(" ") for t in titles]
    # Amazon metadata (2018 JSON, non-ASCII left unescaped) and reviews, plain and gzip
    meta = "".join(json.dumps({"asin": f"B{k}", "title": t, "description": [t]}, ensure_ascii=False) + "\n"
                   for k, t in enumerate(titles))
    (tmp_path / "meta.json").write_bytes(encode(meta))
    with gzip.open(tmp_path / "meta.json.gz", "wb") as f:
        f.write(encode(meta))
    for p in (tmp_path / "meta.json", tmp_path / "meta.json.gz"):
        m = read_amazon_meta(p, reports=reports)
        assert m["title"] == titles and m["description"] == titles
    rev = "".join(json.dumps({"reviewerID": t, "asin": "B0", "overall": 5, "unixReviewTime": 1},
                             ensure_ascii=False) + "\n" for t in titles)
    (tmp_path / "rev.json").write_bytes(encode(rev))
    assert read_amazon_reviews(tmp_path / "rev.json", reports=reports)["user_id"].tolist() == titles
    # MovieLens raw u.item
    flags = "|".join(["0"] * len(GENRES))
    (tmp_path / "u.item").write_bytes(encode("".join(f"{k + 1}|{t} (1995)|01-Jan-1995||http://x|{flags}\n"
                                                     for k, t in enumerate(titles))))
    assert read_ml100k_items(tmp_path / "u.item", reports=reports)["movie_title"] == [t.split() for t in titles]
    enc_reports = [r for r in reports if isinstance(r, ReadReport)]
    if reported is None:
        assert enc_reports == []
    else:  # one report per file read (5), each naming the file and the decision
        assert len(enc_reports) == 5 and all(f"decoded as {reported}" in r.detail for r in enc_reports)
        assert "x.item: not valid UTF-8" in enc_reports[0].detail


def test_encoding_detection_decisions(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes("naïve\n".encode("utf-8"))
    assert sniff_encoding(p).name == "utf-8"
    p.write_bytes(b"ok\nna\xefve\n")
    e = sniff_encoding(p)
    assert e.name == "latin-1" and "byte 0xEF on line 2" in e.detail
    p.write_bytes(b"\x93quoted\x94\n")
    assert sniff_encoding(p).name == "cp1252"
    p.write_bytes(b"\x81\x93\n")  # 0x81 is undefined in cp1252: latin-1 is the only lossless reading
    assert sniff_encoding(p).name == "latin-1"
    p.write_bytes("user_id:token\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 byte-order mark"):
        read_atomic(p)


def test_utf8_bom_crlf_metadata_2018_is_not_refused(tmp_path):
    p = tmp_path / "meta_Beauty.json"
    p.write_bytes(codecs.BOM_UTF8 + b'{"asin": "B1", "title": "T\\u00e9"}\r\n{"asin": "B2"}\r\n')
    m = read_amazon_meta(p)
    assert m["item_id"].tolist() == ["B1", "B2"] and m["title"] == ["Té", ""]


@pytest.mark.parametrize("content", [
    "user_id:token\titem_id:token\trating:float\r\nu1\ti1\t 4 \r\n\r\nu2\ti2\t\ru3\ti3\t-1e-3\n",
    "\ufeffa:token\tb:token_seq\tc:float_seq\nx\t  w1  w2 \t1 2  inf\n\ny\t\t\n",
])
def test_engines_agree_on_handwritten_files(tmp_path, content):
    p = tmp_path / "h.inter"
    p.write_bytes(content.encode("utf-8"))
    a, ta = read_atomic(p, with_types=True, engine="arrow")
    b, tb = read_atomic(p, with_types=True, engine="python")
    assert ta == tb and list(a) == list(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k]))


# ------------------------------------------------------------------ 7. errors name the user's ids
def test_sampler_error_names_the_original_user_id():
    inter = remap_ids(["alice", "alice", "bob"], ["x", "y", "x"])
    idx = PositiveIndex.from_interactions(inter)
    with pytest.raises(DataError, match=r"user 'alice' \(dense id 0\) has interacted with all 2 items"):
        sample_negatives(np.random.default_rng(0), idx, np.array([1, 0]))
    assert sample_negatives(np.random.default_rng(0), idx, np.array([1, 1])).tolist() == [1, 1]


# ------------------------------------------------------------------ time ties
def test_time_order_is_stable_and_ties_are_counted():
    # u: three interactions at t=5 (file order x, y, z), one earlier; v: distinct times
    inter = remap_ids(["u", "u", "u", "u", "v", "v", "v"], ["x", "y", "w", "z", "x", "y", "z"],
                      None, [5.0, 5.0, 1.0, 5.0, 1.0, 2.0, 3.0])
    tr, va, te, rep = leave_one_out(inter, "time")
    pairs = lambda p: sorted(zip(p.user_ids[p.user], p.item_ids[p.item]))  # noqa: E731
    assert pairs(te) == [("u", "z"), ("v", "z")] and pairs(va) == [("u", "y"), ("v", "y")]
    assert rep.time_ties == 2 and "2 interactions share their user's previous timestamp" in str(rep)
    _, _, _, rep_random = leave_one_out(inter, "random", 0)
    assert rep_random.time_ties == 0


# ------------------------------------------------------------------ A-LLMRec preprocessing
def naive_allmrec(rows, threshold, min_rating):
    """The reference's two passes over the reviews, as plain Python."""
    cu, ci = collections.Counter(), collections.Counter()
    for u, i, r, _ in rows:
        if min_rating is not None and r < min_rating:
            continue
        cu[u] += 1
        ci[i] += 1
    return [row for row in rows if cu[row[0]] >= threshold and ci[row[1]] >= threshold]


@pytest.mark.parametrize("seed, threshold, min_rating", [(0, 5, None), (1, 4, 3.0), (2, 3, 4.0)])
def test_count_filter_matches_the_reference_loop(seed, threshold, min_rating):
    rng = np.random.default_rng(seed)
    n = 600
    rows = [(f"u{a}", f"i{b}", float(r), float(t)) for a, b, r, t in
            zip(rng.integers(0, 60, n), (rng.pareto(1.0, n) * 4).astype(int) % 40, rng.integers(1, 6, n), range(n))]
    u, i, r, t = zip(*rows)
    out, rep = filters.count_filter(remap_ids(u, i, r, t), threshold, min_rating)
    got = sorted(zip(out.user_ids[out.user], out.item_ids[out.item], out.rating.tolist(), out.timestamp.tolist()))
    want = sorted(naive_allmrec(rows, threshold, min_rating))
    assert got == want and rep.removed_interactions == n - len(want)


def test_count_filter_is_one_pass_not_a_core():
    # counts: users a, b, c 3 and d 1; items x, y, z 3 and rare 1. One pass keeps 8 rows, after
    # which a and z have 2: an iterative 3-core goes on peeling until nothing is left
    rows = [("a", "x"), ("a", "y"), ("a", "rare"), ("b", "x"), ("b", "y"), ("b", "z"), ("c", "x"), ("c", "y"),
            ("c", "z"), ("d", "z")]
    inter = remap_ids(*zip(*rows))
    out, rep = filters.count_filter(inter, 3)
    assert sorted(zip(out.user_ids[out.user], out.item_ids[out.item])) == sorted(
        r for r in rows if r[1] != "rare" and r[0] != "d")
    assert (rep.removed_interactions, rep.removed_users, rep.removed_items) == (2, 1, 1)
    with pytest.raises(DataError, match="no interactions left"):
        filters.kcore(inter, 3)


def test_allmrec_item_text_fallbacks():
    assert allmrec_item_text("Lip Balm", ["Soft.", "Great"]) == "Title: Lip Balm, Description: Soft."
    assert allmrec_item_text("Lip Balm", []) == "Title: Lip Balm, Description: Empty description"
    assert allmrec_item_text(None, ["d"]) == "Title: No Title, Description: d"
    assert allmrec_item_text("Lip Balm", None) == "Title: No Title, Description: No Description"
    assert allmrec_item_text(None, None, has_meta=False) == "Title: No Title, Description: No Description"
    assert allmrec_threshold("Beauty") == (4, 3.0) and allmrec_threshold("Toys_and_Games") == (4, 3.0)
    assert allmrec_threshold("Movies_and_TV") == (5, None)


def test_load_amazon_allmrec_protocol(tmp_path, caplog):
    rng = np.random.default_rng(5)
    rows = []
    for k in range(400):  # 30 users, 12 items, ratings 1..5, few distinct times (ties)
        rows.append((f"A{rng.integers(0, 30)}", f"B{int(rng.pareto(0.8) * 3) % 12}", float(rng.integers(1, 6)),
                     float(1000 + rng.integers(0, 40))))
    rp = tmp_path / "reviews_Beauty.json.gz"
    with gzip.open(rp, "wt") as f:
        f.writelines(json.dumps({"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": int(t)}) + "\n"
                     for u, a, r, t in rows)
    meta = [{"asin": "B0", "title": "Old", "description": ["x"]},
            {"asin": "B0", "title": "Lip Balm", "description": ["Soft.", "Great"]},  # the last record wins
            {"asin": "B1", "title": "Shampoo", "description": []},
            {"asin": "B2", "description": ["No title here"]},
            {"asin": "B3", "title": "No description key"}]
    mp = tmp_path / "meta_Beauty.json"
    mp.write_text("".join(json.dumps(m) + "\n" for m in meta))
    with pytest.raises(ConfigError, match="protocol='nope': unknown .*jaxrec.methods.register_all"):
        load_amazon(rp, mp, protocol="nope", cache=False)
    register_allmrec()  # the "allmrec" protocol is A-LLMRec's: its package registers it
    with caplog.at_level(logging.WARNING, logger="jaxrec.data"):
        ds = load_amazon(rp, mp, protocol="allmrec", cache=False)
    kept = naive_allmrec(rows, 4, 3.0)  # Beauty: threshold 4, ratings below 3 not counted
    assert len(ds.train) + len(ds.valid) + len(ds.test) == len(kept)
    assert any(r.name == "allmrec_count(threshold=4, count_min_rating=3.0)" for r in ds.reports)
    assert not any(r.name.startswith(("kcore", "rating_threshold", "drop_duplicates")) for r in ds.reports)
    all_ratings = np.concatenate([p.rating for p in (ds.train, ds.valid, ds.test)])
    assert (all_ratings < 3).any()  # low ratings are not counted, but kept
    text = dict(zip(ds.item_ids, ds.item_features["text"]))
    assert text["B0"] == "Title: Lip Balm, Description: Soft."
    assert text["B1"] == "Title: Shampoo, Description: Empty description"
    assert text["B2"] == "Title: No Title, Description: No title here"
    assert text["B3"] == "Title: No Title, Description: No Description"
    assert text["B4"] == "Title: No Title, Description: No Description"  # no metadata at all: kept
    assert any(r.name == "meta_repeated_asin" for r in ds.reports)
    # sequences in unixReviewTime order, ties in file order: the test item is the last of the max time
    split = ds.reports[-1]
    assert split.name == "leave_one_out(order=time)" and split.time_ties > 0
    for u in np.unique(ds.test.user):
        uid = ds.user_ids[u]
        seq = [(t, j) for j, (uu, a, r, t) in enumerate(kept) if uu == uid]
        last = kept[max(seq)[1]]
        assert ds.item_ids[ds.test.item[ds.test.user == u][0]] == last[1]
