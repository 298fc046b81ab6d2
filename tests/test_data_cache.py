"""jaxrec.data.cache: parsed datasets are reused only when verified, and rebuilt otherwise."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from jaxrec.config import Config
from jaxrec.data import load_dataset, write_atomic


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXREC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


def make(tmp_path, n=400, seed=0, name="toy"):
    rng = np.random.default_rng(seed)
    d = tmp_path / name
    u, i = rng.integers(0, 30, n), rng.integers(0, 40, n)
    write_atomic(d / f"{name}.inter", {"user_id": [f"u{x}" for x in u], "item_id": [f"i{x}" for x in i],
                                       "rating": rng.integers(1, 6, n).astype(float),
                                       "timestamp": rng.integers(0, 10**6, n).astype(float)},
                 {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"})
    write_atomic(d / f"{name}.item", {"item_id": [f"i{x}" for x in range(45)],
                                      "title": [["t", str(x)] for x in range(45)],
                                      "year": np.arange(45, dtype=float),
                                      "emb": [np.arange(x % 3, dtype=float) for x in range(45)]},
                 {"item_id": "token", "title": "token_seq", "year": "float", "emb": "float_seq"})
    return d


def same(a, b):
    assert repr(a) == repr(b) and [str(r) for r in a.reports] == [str(r) for r in b.reports]
    for x, y in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
        for k in ("user", "item", "rating", "timestamp", "user_ids", "item_ids"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
    assert list(a.item_features) == list(b.item_features)
    for k in a.item_features:
        for p, q in zip(a.item_features[k], b.item_features[k]):
            assert np.array_equal(p, q) if isinstance(p, np.ndarray) else p == q


def cache_events(caplog):
    return [r.getMessage().split(":")[0] for r in caplog.records if r.getMessage().startswith("dataset cache")]


def test_hit_equals_a_fresh_load_and_replays_warnings(tmp_path, cache, caplog):
    d = make(tmp_path)
    cfg = Config(split="loo_time", kcore=2)
    with caplog.at_level(logging.INFO, logger="jaxrec.data"):
        first = load_dataset(d, cfg)
        caplog.clear()
        second = load_dataset(d, cfg)
    assert cache_events(caplog) == ["dataset cache hit"]
    assert any("have no interactions" in r.getMessage() for r in caplog.records)  # the .item rows not used
    fresh = load_dataset(d, cfg, cache=False)
    same(first, second)
    same(second, fresh)
    assert len(list(cache.glob("*.npz"))) == 1 and len(list(cache.glob("*.json"))) == 1


def test_seed_and_split_share_an_entry_but_filters_do_not(tmp_path, cache, caplog):
    d = make(tmp_path)
    with caplog.at_level(logging.INFO, logger="jaxrec.data"):
        a = load_dataset(d, Config(seed=1))
        b = load_dataset(d, Config(seed=2, split="ratio"))
        load_dataset(d, Config(dedup=True))
    assert cache_events(caplog) == ["dataset cache miss", "dataset cache hit", "dataset cache miss"]
    same(b, load_dataset(d, Config(seed=2, split="ratio"), cache=False))
    assert not np.array_equal(a.test.keys(), load_dataset(d, Config(seed=2), cache=False).test.keys())


def test_changed_file_is_a_miss(tmp_path, cache, caplog):
    d = make(tmp_path)
    load_dataset(d)
    make(tmp_path, seed=1)  # same names, other content
    with caplog.at_level(logging.INFO, logger="jaxrec.data"):
        ds = load_dataset(d)
    assert cache_events(caplog) == ["dataset cache miss"]
    same(ds, load_dataset(d, cache=False))


@pytest.mark.parametrize("damage", ["flip_array_byte", "truncate_npz", "bad_manifest_json", "manifest_hash"])
def test_corrupt_entry_is_rejected_and_rebuilt(tmp_path, cache, caplog, damage):
    d = make(tmp_path)
    load_dataset(d)
    npz, manifest = next(cache.glob("*.npz")), next(cache.glob("*.json"))
    if damage == "flip_array_byte":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "bad_manifest_json":
        manifest.write_text(manifest.read_text()[:50])
    else:
        m = json.loads(manifest.read_text())
        m["arrays"]["user"]["sha256"] = "0" * 64
        manifest.write_text(json.dumps(m))
    with caplog.at_level(logging.INFO, logger="jaxrec.data"):
        ds = load_dataset(d)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"dataset cache entry {npz} rejected") for m in msgs), msgs
    assert any(m.startswith("dataset cache rebuild") for m in msgs), msgs
    same(ds, load_dataset(d, cache=False))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jaxrec.data"):
        load_dataset(d)
    assert cache_events(caplog) == ["dataset cache hit"]  # the rebuilt entry verifies


def test_disabled_by_config_or_argument(tmp_path, cache):
    d = make(tmp_path)
    load_dataset(d, Config(data_cache=False))
    load_dataset(d, Config(), cache=False)
    assert not cache.exists()
    load_dataset(d, Config(data_cache=False), cache=True)
    assert len(list(cache.glob("*.npz"))) == 1
