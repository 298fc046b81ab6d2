"""Integer timestamps beyond 2**53 (issue 26, item 3): nanoseconds since the epoch that differ by 1
stay distinct and ordered from the atomic file to the split, the sequences, the dataset cache and
back to a file; equal timestamps keep the file order (stable, documented)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxrec import Config
from jaxrec.data import load_dataset
from jaxrec.data.atomic import read_atomic, write_atomic

BASE = 1_700_000_000_000_000_000  # 2023-11-14 in ns; float64 spacing here is 256 ns


def _ns_dataset(tmp_path: Path, name: str = "ns") -> tuple[Path, dict]:
    """Users whose events are 1 ns apart, written latest first (file order is the reverse of time)."""
    users, items, ts = [], [], []
    for u in range(4):
        for k in reversed(range(5)):
            users.append(f"u{u}"), items.append(f"i{(u + k) % 7}"), ts.append(BASE + 10 * u + k)
    folder = tmp_path / name
    folder.mkdir()
    text = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, i, t in zip(users, items, ts))
    (folder / f"{name}.inter").write_text(text)
    assert float(BASE + 1) == float(BASE)  # what float64 made of them
    return folder, {"user": users, "item": items, "ts": ts}


@pytest.mark.parametrize("engine", ["auto", "python"])
def test_atomic_reader_keeps_ns_timestamps_exact(tmp_path, engine):
    folder, rows = _ns_dataset(tmp_path)
    cols = read_atomic(folder / "ns.inter", engine=engine)
    assert cols["timestamp"].dtype == np.int64 and cols["timestamp"].tolist() == rows["ts"]
    # ordinary timestamps stay float64 (exact there), as before
    (tmp_path / "s.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\na\tb\t874965758\na\tc\t1.5\n")
    assert read_atomic(tmp_path / "s.inter", engine=engine)["timestamp"].dtype == np.float64
    # a column of huge numbers that are not all integers stays float
    (tmp_path / "f.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\na\tb\t1e300\na\tc\t5\n")
    assert read_atomic(tmp_path / "f.inter", engine=engine)["timestamp"].dtype == np.float64


def test_split_sequences_and_cache_order_ns_timestamps_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREC_CACHE", str(tmp_path / "cache"))
    folder, rows = _ns_dataset(tmp_path)
    for attempt in ("miss", "hit"):  # the dataset cache round-trips them
        ds = load_dataset(folder, Config(split="loo_time"))
        # the test item is each user's latest event (k = 4), the validation item the one 1 ns before
        for u in range(4):
            uid = f"u{u}"
            dense = int(np.flatnonzero(ds.user_ids == uid)[0])
            test_t = ds.test.timestamp[ds.test.user == dense]
            valid_t = ds.valid.timestamp[ds.valid.user == dense]
            assert test_t.tolist() == [BASE + 10 * u + 4], attempt
            assert valid_t.tolist() == [BASE + 10 * u + 3]
            assert ds.item_ids[ds.test.item[ds.test.user == dense][0]] == f"i{(u + 4) % 7}"
        assert "share their user's previous timestamp" not in ds.summary()  # no ties: they differ by 1
        for part in (ds.train, ds.valid, ds.test):
            assert part.timestamp.dtype == np.int64
    from jaxrec.data.sequences import user_sequences

    seq = user_sequences(ds, log_report=False)
    assert seq.report.tied_timestamps == 0
    for u in range(4):
        dense = int(np.flatnonzero(ds.user_ids == f"u{u}")[0])
        got = seq.items[seq.indptr[dense]:seq.indptr[dense + 1]]
        assert [ds.item_ids[i] for i in got] == [f"i{(u + k) % 7}" for k in range(3)]  # oldest first


def test_ties_keep_file_order_and_duplicates_keep_the_earliest(tmp_path):
    from jaxrec.data.filters import drop_duplicates
    from jaxrec.data.interactions import Interactions
    from jaxrec.data.split import leave_one_out, time_ties

    # three events at one ns and one at the next: the tie keeps file order, the later ns is last
    t = np.array([BASE + 1, BASE, BASE, BASE], np.int64)
    inter = Interactions(np.zeros(4, np.int32), np.arange(4, dtype=np.int32), None, t, ["u"],
                         ["a", "b", "c", "d"])
    assert inter.timestamp.dtype == np.int64 and time_ties(inter) == 2
    train, valid, test, rep = leave_one_out(inter, "time")
    assert test.item.tolist() == [0] and valid.item.tolist() == [3] and train.item.tolist() == [1, 2]
    assert rep.time_ties == 2
    # a repeated (user, item) pair keeps its earliest event, 1 ns apart
    dup = Interactions(np.zeros(3, np.int32), np.array([0, 0, 1], np.int32), None,
                       np.array([BASE + 1, BASE, BASE + 5], np.int64), ["u"], ["a", "b"])
    kept, _ = drop_duplicates(dup)
    assert kept.timestamp.tolist() == [BASE, BASE + 5]


def test_write_atomic_writes_ns_timestamps_exactly(tmp_path):
    ts = np.array([BASE + 1, BASE, 2 ** 63 - 1], np.int64)
    path = write_atomic(tmp_path / "w.inter", {"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"],
                                               "timestamp": ts},
                        {"user_id": "token", "item_id": "token", "timestamp": "float"})
    assert path.read_text().splitlines()[1:] == [f"a\tx\t{BASE + 1}", f"a\ty\t{BASE}", f"b\tz\t{2 ** 63 - 1}"]
    assert read_atomic(path)["timestamp"].tolist() == ts.tolist()
