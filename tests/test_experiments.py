"""The experiment modules end to end on a tiny synthetic dataset, plus their pieces
(aggregation, relative gain, cold-start reduction, collapse measures) against
hand-computed numbers."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tiny_dataset

from experiments import (
    cli,
    cold_start,
    embedding_collapse,
    encoder_choice,
    grid,
    llminit_table,
    long_short_update,
    report,
    tf_llmer,
)
from jaxrec.analysis import collapse
from jaxrec.init import EmbeddingSource, save_precomputed

N_DIMS = 24  # dims of the tiny random "text" embeddings


def _write_embeddings(path: Path, item_ids, dim: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(len(item_ids), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return save_precomputed(path, emb, item_ids)


def _item_ids(folder: Path, name: str) -> list[str]:
    lines = (folder / f"{name}.item").read_text().splitlines()[1:]
    return [ln.split("\t")[0] for ln in lines if ln.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny RecBole dataset named like a paper dataset, with auto-detectable embeddings."""
    root = tmp_path_factory.mktemp("expdata")
    ds = write_tiny_dataset(root, name="amazon-beauty")
    ids = _item_ids(ds, "amazon-beauty")
    _write_embeddings(ds / "amazon-beauty.all-mpnet-base-v2.npy", ids, N_DIMS, 0)  # found by --embeddings auto
    other = _write_embeddings(root / "enc_b.npy", ids[::-1], 16, 1)  # rows in another order: reordered by id
    return {"dataset": ds, "other": other, "ids": ids, "root": root}


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    """Common options: 2 epochs, tiny sizes, and a compilation cache so each shape compiles once.
    Restores JAX's cache settings and the loggers the experiments configure afterwards."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("experiments", "jaxrec.init")
    saved_log = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
                 for n in names}
    saved_cfg = {k: getattr(jax.config, k) for k in (
        "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes")}
    cache = tmp_path_factory.mktemp("jaxcc")
    yield ["--epochs", "2", "--set", "embedding_size=8", "--set", "batch_size=64", "--set", "topk=10,20",
           "--compile-cache", str(cache)]
    for k, v in saved_cfg.items():
        jax.config.update(k, v)
    cc.reset_cache()
    for n, (level, handlers, propagate) in saved_log.items():
        lg = logging.getLogger(n)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _table_lines(text: str) -> list[str]:
    """The body rows of the first printed table (after the ---- rule)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("--"))
    body = []
    for ln in lines[start + 1:]:
        if not ln.strip():
            break
        body.append(ln)
    return body


# --------------------------------------------------------------------------- end to end
def test_llminit_table_end_to_end(tiny, fast, tmp_path, capsys):
    out = tmp_path / "t1"
    argv = ["--dataset", str(tiny["dataset"]), "--seeds", "1,2", "--out", str(out), *fast]
    assert llminit_table.main(argv) == 0
    text = capsys.readouterr().out
    rows = _table_lines(text)
    assert [r.split("  ")[0].strip() for r in rows] == ["LightGCN", "LightGCN + Rand", "LightGCN + Uni",
                                                         "LightGCN + Var"]
    assert "paper R@10 (beauty)" in text and ".0910" in text and ".0485" in text  # LLMInit Table 1, Beauty
    for name in ("llminit_table.csv", "cells.csv", "results.json", "table.txt"):
        assert (out / name).is_file(), name
    assert _is_png(out / "llminit_table.png")
    res = json.loads((out / "results.json").read_text())
    assert res["complete"] and res["experiment"] == "llminit_table"
    assert len(res["cells"]) == 8
    for cell in res["cells"]:
        assert cell["seed"] == cell["key"]["seed"] == cell["config"]["seed"]
        assert cell["config"]["init"] == cell["key"]["init"] and cell["config"]["epochs"] == 2
        assert set(cell["test"]) >= {"recall@10", "ndcg@10"}
        if cell["key"]["init"] != "none":
            assert cell["config"]["embeddings"].endswith("amazon-beauty.all-mpnet-base-v2.npy")  # auto-detected
    # the CSV's mean, std and gain follow from the cells
    table = {r["init"]: r for r in _csv(out / "llminit_table.csv")}
    by_init: dict[str, list[float]] = {}
    for cell in res["cells"]:
        by_init.setdefault(cell["key"]["init"], []).append(cell["test"]["ndcg@10"])
    for init, vals in by_init.items():
        assert float(table[init]["ndcg@10_mean"]) == pytest.approx(np.mean(vals), rel=1e-4)
        assert float(table[init]["ndcg@10_std"]) == pytest.approx(np.std(vals, ddof=1), rel=1e-3, abs=1e-6)
    gain = 100 * (np.mean(by_init["variance"]) - np.mean(by_init["none"])) / np.mean(by_init["none"])
    assert float(table["variance"]["ndcg@10_gain"]) == pytest.approx(gain, rel=1e-3, abs=1e-3)
    assert table["none"]["ndcg@10_gain"] == ""

    # --resume reuses every finished cell: same numbers, nothing retrained
    assert llminit_table.main(argv + ["--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [c["test"] for c in again["cells"]] == [c["test"] for c in res["cells"]]


def test_llminit_table_scales_grid(tiny, fast, tmp_path, capsys):
    out = tmp_path / "t2"
    assert llminit_table.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--inits", "none,variance",
                               "--scales", "none,match_random", "--embeddings", str(tiny["other"]),
                               "--out", str(out), *fast]) == 0
    rows = [r.split("  ")[0].strip() for r in _table_lines(capsys.readouterr().out)]
    assert rows == ["LightGCN", "LightGCN + Var", "LightGCN + Var [match_random]"]
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [c["config"]["init_scale"] for c in cells] == ["none", "none", "match_random"]
    assert cells[1]["config"]["embeddings"] == str(tiny["other"].resolve())
    # --reuse: a run elsewhere takes matching cells from this one instead of training them
    out2 = tmp_path / "t2b"
    assert llminit_table.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--inits", "none,variance",
                               "--scales", "match_random", "--embeddings", str(tiny["other"]),
                               "--out", str(out2), "--reuse", str(out / "results.json"), *fast]) == 0
    reused = json.loads((out2 / "results.json").read_text())["cells"]
    assert [c["test"] for c in reused] == [cells[0]["test"], cells[2]["test"]]


def test_embedding_collapse_end_to_end(tiny, fast, tmp_path, capsys):
    out = tmp_path / "c"
    assert embedding_collapse.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--dims", f"4,{N_DIMS}",
                                    "--out", str(out), *fast]) == 0
    rows = [r.split() for r in _table_lines(capsys.readouterr().out)]
    assert [(r[1], r[2]) for r in rows] == [("4", "none"), ("4", "variance"), (str(N_DIMS), "none"),
                                            (str(N_DIMS), "full")]
    for name in ("embedding_collapse.csv", "cells.csv", "results.json"):
        assert (out / name).is_file()
    assert _is_png(out / "metrics_vs_k.png") and _is_png(out / "collapse.png")
    res = json.loads((out / "results.json").read_text())
    assert res["meta"]["skipped_llm_dims"] == [] and res["meta"]["encoder_dims"] == N_DIMS
    for cell in res["cells"]:
        k = cell["key"]["dim"]
        assert cell["config"]["embedding_size"] == k
        sv = cell["extra"]["singular_values_item"]
        assert len(sv) == min(k, 40) and sv == sorted(sv, reverse=True)
        assert 1.0 <= cell["extra"]["erank_item"] <= k + 1e-6
        assert cell["extra"]["erank_item"] == pytest.approx(collapse.effective_rank(np.asarray(sv)))


def test_encoder_choice_end_to_end_precomputed(tiny, fast, tmp_path, capsys):
    out = tmp_path / "e"
    a = tiny["dataset"] / "amazon-beauty.all-mpnet-base-v2.npy"
    assert encoder_choice.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--reference", "none",
                                "--encoders", f"enc_a={a},enc_b={tiny['other']}", "--out", str(out), *fast]) == 0
    text = capsys.readouterr().out
    rows = [r.split("  ")[1].strip() for r in _table_lines(text)]
    assert rows == ["none (random init)", "enc_a", "enc_b"]
    assert "Uni R@10" in text and "Var N@10" in text and "encoding cost" in text
    for name in ("encoder_choice.csv", "encoding_cost.csv", "cells.csv", "results.json"):
        assert (out / name).is_file()
    assert _is_png(out / "encoder_choice.png")
    res = json.loads((out / "results.json").read_text())
    assert len(res["cells"]) == 1 + 2 * 3
    assert {c["key"]["encoder"] for c in res["cells"]} == {"-", "enc_a", "enc_b"}
    saved = np.load(out / "embeddings" / "enc_b.npy")  # rows put in the dataset's item order
    assert saved.shape == (40, 16)
    assert res["meta"]["encoding"]["enc_b"]["dim"] == 16


def test_embedding_collapse_cells_skip_llm_above_n():
    from jaxrec.config import Config

    src = EmbeddingSource(embeddings="e.npy")
    cells, skipped = embedding_collapse.build_cells(Config(), ["lightgcn"], [32, 768, 1024], [1, 2], 768,
                                                    "variance", src)
    keys = [(c.key["dim"], c.key["init"], c.key["seed"]) for c in cells]
    assert keys == [(32, "none", 1), (32, "variance", 1), (768, "none", 1), (768, "full", 1), (1024, "none", 1),
                    (32, "none", 2), (32, "variance", 2), (768, "none", 2), (768, "full", 2), (1024, "none", 2)]
    assert skipped == [1024]
    assert all(c.config.embedding_size == c.key["dim"] for c in cells)
    assert all((c.config.embeddings == "e.npy") == (c.key["init"] != "none") for c in cells)


@pytest.mark.slow  # loads torch and the MiniLM model (tens of seconds on a busy machine)
def test_encoder_choice_measures_encoding_cost(tiny, fast, tmp_path):
    pytest.importorskip("sentence_transformers")
    from jaxrec.init import EncoderNotAvailableError, load_encoder

    try:
        load_encoder("minilm")
    except EncoderNotAvailableError as e:
        pytest.skip(str(e))
    out = tmp_path / "m"
    assert encoder_choice.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--encoders", "minilm",
                                "--inits", "variance", "--reference", "none", "--out", str(out), *fast]) == 0
    cost = json.loads((out / "results.json").read_text())["meta"]["encoding"]["minilm"]
    assert cost["dim"] == 384 and cost["items"] == 40 and cost["items_per_s"] > 0
    assert _csv(out / "encoding_cost.csv")[0]["items_per_s"] != ""


def test_cold_start_end_to_end(tiny, fast, tmp_path, capsys):
    out = tmp_path / "cs"
    assert cold_start.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--out", str(out), *fast]) == 0
    text = capsys.readouterr().out
    rows = [tuple(x.strip() for x in r.split("  ") if x.strip())[:2] for r in _table_lines(text)]
    assert rows == [("LightGCN", "full"), ("LightGCN + Var", "full"), ("LightGCN", "cold"), ("LightGCN + Var", "cold")]
    assert "training interactions 360 -> 180 (removed 180)" in text
    for name in ("cold_start.csv", "cells.csv", "results.json"):
        assert (out / name).is_file()
    assert _is_png(out / "cold_start.png")
    res = json.loads((out / "results.json").read_text())
    cold = [c for c in res["cells"] if c["key"]["condition"] == "cold"]
    assert len(cold) == 2 and all(c["dataset"]["num_train"] == 180 for c in cold)
    assert all(c["data"]["reduction"]["removed_interactions"] == 180 for c in cold)
    full = [c for c in res["cells"] if c["key"]["condition"] == "full"]
    assert all(c["dataset"]["num_train"] == 360 for c in full)


@pytest.mark.slow  # six training runs (parent, two updates, scratch): about a minute on a busy machine
def test_long_short_update_end_to_end(tiny, fast, tmp_path, capsys):
    out = tmp_path / "lsu"
    assert long_short_update.main(["--dataset", str(tiny["dataset"]), "--seeds", "1", "--update-epochs", "1",
                                   "--scales", "init", "--out", str(out), *fast]) == 0
    text = capsys.readouterr().out
    labels = [re.split(r"\s{2,}", r.strip())[1] for r in _table_lines(text)]
    assert labels == ["parent (old data)", "update, LLM new items", "update, random new items",
                                       "fold-in only (LLM new items, no training)", "retrain from scratch"]
    res = json.loads((out / "results.json").read_text())
    cells = {c["key"]["method"]: c for c in res["cells"]}
    cut = cells["parent"]["data"]
    assert cut["old_interactions"] + cut["new_interactions"] == 480 and cut["held_out_items"] == 4
    merged = {json.dumps(c["dataset"], sort_keys=True) for m, c in cells.items() if m != "parent"}
    assert len(merged) == 1  # one test set for every compared run
    assert json.loads(merged.pop())["num_train"] + 2 * 60 == 480  # all the data, loo_time
    assert cells["parent"]["dataset"]["num_train"] < cells["scratch"]["dataset"]["num_train"]
    for m in ("update-llm", "update-random"):
        assert cells[m]["update"]["test_seen_by_parent"] == 0
        assert cells[m]["update"]["carry"]["new_items_init"] == m.split("-")[1]
        assert cells[m]["config"]["min_epochs"] == 1 and cells[m]["stopped_epoch"] == 0
    groups = cut["groups"]
    assert groups["new_item"] + groups["fresh"] + groups["old"] == groups["all"] == 60
    assert _is_png(out / "long_short_update.png") and (out / "long_short_update.csv").is_file()


def test_long_short_cut_holds_out_items_and_the_latest_interactions():
    item = np.array(["a", "a", "b", "c", "d", "c", "b", "e", "f", "g"])
    t = np.array([5, 1, 2, 9, 3, 9, 7, 0, 4, 8])
    is_new, held = long_short_update.cut_new_data(item, t, seed=3, new_items=0.2, new_time=0.3)
    assert held.size == 1  # floor(0.2 * 7 items)
    latest = {9, 3, 5}  # timestamps 8, 9, 9 (ties by position)
    assert set(np.flatnonzero(is_new)) == latest | set(np.flatnonzero(item == held[0]))
    is_new, held = long_short_update.cut_new_data(item, t, seed=3, new_items=0.0, new_time=0.0)
    assert not is_new.any() and held.size == 0


# ------------------------------------------------------------------------- aggregation
def _rec(init, seed, r10, n10):
    return {"key": {"backbone": "lightgcn", "init": init, "seed": seed}, "seed": seed,
            "test": {"recall@10": r10, "ndcg@10": n10}}


def test_mean_std_and_gain_hand_computed():
    m, s = report.mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and s == pytest.approx(math.sqrt(5 / 3))  # sample std (ddof 1)
    m, s = report.mean_std([0.0432])
    assert m == 0.0432 and math.isnan(s)  # one seed: no spread
    assert report.relative_gain(0.0485, 0.0432) == pytest.approx(12.268518518518519)
    assert report.relative_gain(0.09, 0.1) == pytest.approx(-10.0)
    assert math.isnan(report.relative_gain(0.1, 0.0))

    records = [_rec("none", 1, 0.10, 0.04), _rec("none", 2, 0.20, 0.05), _rec("none", 3, 0.30, 0.06),
               _rec("variance", 1, 0.20, 0.05), _rec("variance", 2, 0.30, 0.07), _rec("variance", 3, 0.40, 0.06)]
    rows = report.aggregate(records, by=("backbone", "init"))
    rows = report.add_gains(rows, lambda r: {"backbone": r["backbone"], "init": "none"})
    none, var = rows
    assert (none["init"], none["n"], none["seeds"]) == ("none", 3, [1, 2, 3])
    assert none["recall@10_mean"] == pytest.approx(0.2) and none["recall@10_std"] == pytest.approx(0.1)
    assert var["recall@10_mean"] == pytest.approx(0.3) and var["recall@10_std"] == pytest.approx(0.1)
    assert var["ndcg@10_mean"] == pytest.approx(0.06) and var["ndcg@10_std"] == pytest.approx(0.01)
    assert var["recall@10_gain"] == pytest.approx(50.0)  # (0.3 - 0.2) / 0.2
    assert var["ndcg@10_gain"] == pytest.approx(20.0)  # (0.06 - 0.05) / 0.05
    assert math.isnan(none["recall@10_gain"])
    assert report.fmt_mean_std(0.2, 0.1) == "0.2000 ± 0.1000"
    assert report.fmt_mean_std(0.2, float("nan")) == "0.2000"
    assert report.over_seeds([2020]) == "one seed (2020), no std"
    assert report.over_seeds([2020, 2021]) == "mean ± std over seeds 2020,2021"
    assert report.fmt_gain(12.2685) == "+12.3%" and report.fmt_gain(float("nan")) == "-"


def test_llminit_summary_paper_numbers():
    records = [_rec("none", 1, 0.1, 0.05), _rec("variance", 1, 0.11, 0.06)]
    rows = llminit_table.summarize([dict(r, key=dict(r["key"], scale="none")) for r in records], "beauty")
    assert rows[0]["model"] == "LightGCN" and rows[1]["model"] == "LightGCN + Var"
    assert (rows[0]["paper_recall@10"], rows[0]["paper_ndcg@10"]) == (.0910, .0432)
    assert (rows[1]["paper_recall@10"], rows[1]["paper_ndcg@10"]) == (.1019, .0485)
    assert rows[1]["paper_ndcg@10_gain"] == pytest.approx(100 * (.0485 - .0432) / .0432)
    assert rows[1]["ndcg@10_gain"] == pytest.approx(20.0)


@pytest.mark.parametrize("name,key", [("amazon-beauty", "beauty"), ("Beauty", "beauty"), ("Toys_and_Games", "toys"),
                                      ("amazon_tools", "tools"), ("/data/Office_Products", "office"),
                                      ("ml-100k", None)])
def test_paper_dataset_matching(name, key):
    assert report.paper_dataset(name) == key


def test_collapse_measures_hand_computed():
    assert collapse.effective_rank(np.array([1.0, 1.0, 1.0, 0.0])) == pytest.approx(3.0)
    assert collapse.effective_rank(np.array([5.0, 0.0])) == pytest.approx(1.0)
    p = np.array([3.0, 1.0]) / 4
    assert collapse.effective_rank(np.array([3.0, 1.0])) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert collapse.information_abundance(np.array([4.0, 2.0, 2.0])) == pytest.approx(2.0)
    table = np.diag([2.0, 2.0, 0.0])
    assert collapse.effective_rank(collapse.singular_values(table)) == pytest.approx(2.0)
    assert embedding_collapse.llm_init_for(128, 768, "variance") == "variance"
    assert embedding_collapse.llm_init_for(768, 768, "variance") == "full"
    assert embedding_collapse.llm_init_for(1024, 768, "variance") is None


# -------------------------------------------------------------------------- cold start
def _handmade_dataset():
    """Users with 1..6 training interactions (user u has u + 1), one valid and one test item each."""
    from jaxrec.config import Config
    from jaxrec.data import dataset_from_interactions, remap_ids

    users, items = [], []
    for u in range(6):
        for i in range(u + 3):  # u + 1 train + valid + test after leave-one-out
            users.append(f"u{u}")
            items.append(f"i{(u * 3 + i) % 20:02d}")
    inter = remap_ids(np.array(users), np.array(items))
    return dataset_from_interactions("hand", inter, Config(seed=0))


def test_cold_start_reduction_keeps_half_per_user():
    ds = _handmade_dataset()
    before = np.bincount(ds.train.user, minlength=ds.num_users)
    assert sorted(before.tolist()) == [1, 2, 3, 4, 5, 6]
    reduced, rep = cold_start.reduce_training(ds, seed=7)
    after = np.bincount(reduced.train.user, minlength=ds.num_users)
    for n, k in zip(before, after):
        assert k in (n // 2, (n + 1) // 2) and k >= 1
        assert k == max(1, math.ceil(n / 2))
    # kept pairs are training pairs; valid, test and id maps are untouched
    assert set(reduced.train.keys().tolist()) <= set(ds.train.keys().tolist())
    assert reduced.valid is ds.valid and reduced.test is ds.test
    assert reduced.item_features is ds.item_features
    assert np.array_equal(reduced.train.user_ids, ds.train.user_ids)
    assert np.array_equal(reduced.train.item_ids, ds.train.item_ids)
    assert (reduced.num_users, reduced.num_items) == (ds.num_users, ds.num_items)
    assert rep["train_before"] == before.sum() == 21
    assert rep["train_after"] == after.sum() == 1 + 1 + 2 + 2 + 3 + 3
    assert rep["removed_interactions"] == 21 - 12 and rep["users_reduced"] == 5 and rep["users_with_one_left"] == 2
    assert "cold_start" in str(reduced.reports[-1])
    # seeded: the same seed keeps the same interactions, another seed others
    again, _ = cold_start.reduce_training(ds, seed=7)
    assert np.array_equal(again.train.keys(), reduced.train.keys())
    others = {tuple(cold_start.reduce_training(ds, seed=s)[0].train.keys().tolist()) for s in range(8)}
    assert len(others) > 1


def test_cold_start_reduction_on_loaded_dataset(tiny):
    from jaxrec.config import Config
    from jaxrec.data import load_dataset

    ds = load_dataset(str(tiny["dataset"]), Config(seed=3))
    reduced, rep = cold_start.reduce_training(ds, seed=3, keep_fraction=0.25)
    before = np.bincount(ds.train.user, minlength=ds.num_users)
    after = np.bincount(reduced.train.user, minlength=ds.num_users)
    assert np.array_equal(after, np.maximum(1, np.ceil(0.25 * before)).astype(int))
    assert rep["removed_interactions"] == len(ds.train) - len(reduced.train)
    had = np.bincount(ds.train.item, minlength=ds.num_items) > 0
    has = np.bincount(reduced.train.item, minlength=ds.num_items) > 0
    assert rep["items_left_without_train"] == int((had & ~has).sum())


def test_cold_start_ranking_masks_removed_items(tiny):
    from jaxrec.config import Config
    from jaxrec.data import exclusion_pairs, load_dataset

    config = Config(dataset=str(tiny["dataset"]), seed=5)
    data = cold_start.ColdStartData(None, 0.5)
    full = load_dataset(str(tiny["dataset"]), config)
    prepared = {}
    for cond in ("full", "cold", "cold-unmasked"):
        extra = {} if cond == "full" else {"keep_fraction": 0.5, "mask_removed": cond == "cold"}
        ds, info = data.get(grid.Cell({"condition": cond}, config, {"condition": cond, **extra}))
        prepared[cond] = (ds, data.prepared(ds))
        assert ("reduction" in info) == (cond != "full")
    (fd, fp), (cd, cp), (ud, up) = prepared["full"], prepared["cold"], prepared["cold-unmasked"]
    assert len(fd.train) == len(full.train) == 2 * len(cd.train) == 2 * len(ud.train)
    assert np.array_equal(cd.train.keys(), ud.train.keys())  # same seed: same interactions removed
    for stage, attr in (("valid", "valid_exclude"), ("test", "test_exclude")):
        want = exclusion_pairs(full, stage)  # cold: every original training item stays excluded
        assert all(np.array_equal(a, b) for a, b in zip(getattr(cp, attr), want))
        got = exclusion_pairs(ud, stage)  # cold-unmasked: only what the model trained on
        assert all(np.array_equal(a, b) for a, b in zip(getattr(up, attr), got))
        assert len(got[0]) < len(want[0])
    assert int(cp.graph.indices.shape[0]) == int(up.graph.indices.shape[0]) < int(fp.graph.indices.shape[0])
    assert all(np.array_equal(a, b) for a, b in zip(cp.test_truth, fp.test_truth))


def test_common_option_errors(tiny, tmp_path):
    from jaxrec.config import ConfigError

    with pytest.raises(ConfigError, match="--seeds"):
        cli.parse_seeds("1,x")
    with pytest.raises(ConfigError, match="--backbones"):
        llminit_table.main(["--dataset", str(tiny["dataset"]), "--backbones", "nope", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--inits"):
        llminit_table.main(["--dataset", str(tiny["dataset"]), "--inits", "none,bogus", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="epochs"):
        llminit_table.main(["--dataset", str(tiny["dataset"]), "--set", "epochs=0", "--out", str(tmp_path)])
    # an --out holding an earlier run's cells is refused without --resume / --overwrite, before training
    (tmp_path / "done").mkdir()
    earlier = {"cells": [{"key": {"backbone": "mf"}, "config": {}, "test": {}}]}
    (tmp_path / "done" / "results.json").write_text(json.dumps(earlier))
    with pytest.raises(ConfigError, match="holds an earlier run's results.json \\(1 cell\\); pass --resume"):
        llminit_table.main(["--dataset", str(tiny["dataset"]), "--backbones", "mf", "--inits", "none", "--seeds", "1",
                            "--epochs", "1", "--out", str(tmp_path / "done")])
    assert json.loads((tmp_path / "done" / "results.json").read_text()) == earlier  # untouched


# ------------------------------------------------------------------------------ TF-LLMER
@pytest.mark.slow  # 9 tiny runs + curvature; 20 to 45 s on the shared 2 cores
def test_tf_llmer_end_to_end(tiny, fast, tmp_path, capsys):
    out = tmp_path / "tf"
    argv = ["--dataset", str(tiny["dataset"]), "--backbones", "lightgcn,sgcl", "--seeds", "1,2",
            "--seeds-for", "sgcl=1", "--variants", "none,variance+typical,recpca@0.5+unit",
            "--curvature-iters", "6", "--lambda-probe", "0,1.5", "--out", str(out), *fast]
    assert tf_llmer.main(argv) == 0
    text = capsys.readouterr().out
    assert [r.split("  ")[0].strip() for r in _table_lines(text)] == [
        "LightGCN", "LightGCN + Var + typical", "LightGCN + Rec-PCA λ=0.5 + unit",
        "SGCL", "SGCL + Var + typical", "SGCL + Rec-PCA λ=0.5 + unit"]
    assert "Hessian top" in text and "Does an LLM-based init reach random init" in text
    assert "SGCL (1 seed)" in text and "n/a (one seed)" in text and "LightGCN (2 seeds)" in text
    for name in ("tf_llmer.csv", "cells.csv", "results.json", "table.txt"):
        assert (out / name).is_file(), name
    assert _is_png(out / "tf_llmer.png") and _is_png(out / "tf_llmer_curves.png")
    res = json.loads((out / "results.json").read_text())
    cells = res["cells"]
    assert res["complete"] and len(cells) == 3 * 2 + 3  # lightgcn 2 seeds, sgcl 1
    by = {(c["key"]["backbone"], c["key"]["variant"], c["key"]["seed"]): c for c in cells}
    rec = by[("lightgcn", "recpca@0.5+unit", 1)]["config"]
    assert (rec["init"], rec["recpca_lambda"], rec["init_norm"]) == ("recpca", 0.5, "unit")
    assert by[("lightgcn", "none", 1)]["config"]["init"] == "none"
    assert by[("sgcl", "recpca@0.5+unit", 1)]["config"]["min_epochs"] == 0
    for c in cells:  # measured at init: the normalized rows have their target norm
        extra = c["extra"]
        assert extra["hessian_top"] > 0 and extra["hessian_hvps"] >= 2
        if c["key"]["variant"] == "none":
            assert extra["item_norm_ratio"] == pytest.approx(1.0) and extra["user_norm_ratio"] == pytest.approx(1.0)
        if c["key"]["variant"] == "variance+typical":
            assert extra["item_norm_ratio"] == pytest.approx(1.0, rel=0.05) and extra["item_norm_cv"] < 1e-5
        if c["key"]["variant"] == "recpca@0.5+unit":
            assert extra["item_norm_mean"] == pytest.approx(1.0, rel=1e-5)
        assert extra["initial_loss"] == pytest.approx(c["curve"]["loss"][0])
    # the summary follows from the cells
    table = {(r["backbone"], r["variant"]): r for r in _csv(out / "tf_llmer.csv")}
    rec_v = "recpca@0.5+unit"
    vals = {v: [by[("lightgcn", v, s)]["test"]["ndcg@10"] for s in (1, 2)] for v in ("none", rec_v)}
    row = table[("lightgcn", rec_v)]
    assert float(row["ndcg@10_mean"]) == pytest.approx(np.mean(vals[rec_v]), rel=1e-4)
    assert float(row["ndcg@10_std"]) == pytest.approx(np.std(vals[rec_v], ddof=1), rel=1e-3, abs=1e-6)
    gain = 100 * (np.mean(vals[rec_v]) - np.mean(vals["none"])) / np.mean(vals["none"])
    assert float(row["ndcg@10_gain"]) == pytest.approx(gain, rel=1e-3, abs=1e-3)
    hess = [by[("lightgcn", rec_v, s)]["extra"]["hessian_top"] for s in (1, 2)]
    assert float(row["hessian_top_mean"]) == pytest.approx(np.mean(hess), rel=1e-4)
    probe = res["meta"]["recpca_probe"]["rows"]  # lambda 0 is PCA: the same span, all of its variance
    assert [p["lambda"] for p in probe] == [0.0, 1.5] and "Rec-PCA vs lambda without training" in text
    assert probe[0]["overlap_with_pca"] == pytest.approx(1.0, abs=1e-5)
    assert probe[0]["variance_kept"] == pytest.approx(1.0, abs=1e-5) and probe[1]["variance_kept"] < 1
    verdict = {v["backbone"]: v for v in res["meta"]["verdicts"]}
    reach = [v for v in ("variance+typical", rec_v)
             if float(table[("sgcl", v)]["ndcg@10_mean"]) >= float(table[("sgcl", "none")]["ndcg@10_mean"])]
    assert verdict["sgcl"]["at_or_above_random"] == reach and verdict["sgcl"]["beyond_seed_spread"] is None
    ndcg = {(b, v, sd): c["test"]["ndcg@10"] for (b, v, sd), c in by.items()}
    every = [v for v in ("variance+typical", rec_v)
             if all(ndcg[("lightgcn", v, sd)] >= ndcg[("lightgcn", "none", sd)] for sd in (1, 2))]
    assert verdict["lightgcn"]["every_seed"] == every
    lg = verdict["lightgcn"]
    assert sorted(lg["beyond_seed_spread_above"] + lg["beyond_seed_spread_below"]) == sorted(lg["beyond_seed_spread"])
    for v in lg["beyond_seed_spread_above"]:
        assert float(table[("lightgcn", v)]["ndcg@10_mean"]) > float(table[("lightgcn", "none")]["ndcg@10_mean"])
    # --resume reuses every cell, its measures included
    assert tf_llmer.main(argv + ["--resume"]) == 0
    again = json.loads((out / "results.json").read_text())["cells"]
    assert [c["extra"] for c in again] == [c["extra"] for c in cells]


@pytest.mark.parametrize("spec, match", [
    ("pca@1", "a lambda \\(@\\) applies to recpca only"), ("none+unit", "no LLM rows to normalize"),
    ("recpca@-1", "expected a finite number >= 0"), ("recpca@x", "is not a number"),
    ("variance+l2", "unknown normalization 'l2'"), ("bogus", "unknown initializer 'bogus'"),
    ("pca,pca", "variants repeat"),
])
def test_tf_llmer_variant_errors(spec, match):
    from jaxrec.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        tf_llmer.parse_variants(spec)
    v = tf_llmer.parse_variant("recpca@1.0+typical")
    assert (v.init, v.lam, v.norm, v.name) == ("recpca", 1.0, "typical", "recpca@1+typical")
    assert v.config_fields() == {"init": "recpca", "init_norm": "typical", "recpca_lambda": 1.0}


def test_tf_llmer_option_errors(tiny, tmp_path):
    from jaxrec.config import ConfigError
    from jaxrec.data import DataError

    base = ["--dataset", str(tiny["dataset"]), "--backbones", "lightgcn", "--out", str(tmp_path)]
    with pytest.raises(ConfigError, match="--seeds-for: \\['sgl'\\] not among --backbones"):
        tf_llmer.main(base + ["--seeds-for", "sgl=1"])
    with pytest.raises(ConfigError, match="--seeds-for 'lightgcn': expected BACKBONE=VALUE"):
        tf_llmer.main(base + ["--seeds-for", "lightgcn"])
    with pytest.raises(ConfigError, match="--min-epochs='nope': unknown backbone"):
        tf_llmer.main(base + ["--min-epochs", "nope=3"])
    with pytest.raises(ConfigError, match="--min-epochs 'sgl=-1'"):
        tf_llmer.main(base + ["--min-epochs", "sgl=-1"])
    with pytest.raises(ConfigError, match="--lambda-probe: \\[-1.0\\]"):
        tf_llmer.main(base + ["--lambda-probe", "0,-1"])
    # refused before any cell trains, and before --out is made
    out = tmp_path / "fresh"
    fresh = ["--dataset", str(tiny["dataset"]), "--backbones", "lightgcn", "--seeds", "1", "--out", str(out)]
    with pytest.raises(ConfigError, match=f"embedding_size=999 \\(lightgcn\\): .* N={N_DIMS} dims that init 'pca'"):
        tf_llmer.main(fresh + ["--variants", "none,pca", "--lambda-probe", "none", "--set", "embedding_size=999"])
    with pytest.raises(ConfigError, match=f"embedding_size=999 .* N={N_DIMS} dims that init 'recpca'"):
        tf_llmer.main(fresh + ["--variants", "recpca@1", "--set", "embedding_size=999"])  # probe on by default
    with pytest.raises(ConfigError, match="--reuse .*nowhere: no results.json with cells there"):
        tf_llmer.main(fresh + ["--variants", "none", "--reuse", str(tmp_path / "nowhere")])
    with pytest.raises(DataError, match="nodata.*path not found"):
        tf_llmer.main(["--dataset", str(tmp_path / "nodata"), *fresh[2:], "--variants", "none"])
    assert not out.exists()


@pytest.mark.slow  # 2 tiny SASRec runs + curvature
def test_tf_llmer_sasrec_rows_use_its_protocol_and_full_ranking(tmp_path, capsys):
    """SASRec in TF-LLMER: trained under its own registered protocol (leave-one-out, candidate
    lists), its item table (offset by the padding row) LLM-initialized, and reported by the
    full-ranking view it computes beside (``full_recall@10``), as the graph backbones are."""
    from jaxrec.config import ConfigError

    ds = write_tiny_dataset(tmp_path, name="seqdata", users=30, items=40)
    _write_embeddings(ds / "seqdata.all-mpnet-base-v2.npy", _item_ids(ds, "seqdata"), 16, 0)
    out = tmp_path / "tf"
    argv = ["--dataset", str(ds), "--backbones", "sasrec", "--seeds", "1", "--variants", "none,recpca@1+typical",
            "--curvature-iters", "3", "--lambda-probe", "none", "--epochs", "1", "--out", str(out),
            "--set", "embedding_size=8", "--set", "max_seq_len=6", "--set", "batch_size=32"]
    # a --set key applies to the rows whose model has it (max_seq_len: SASRec's); one no model has is refused
    # before any cell trains, naming the model
    with pytest.raises(ConfigError, match="--set max_seq_lenn=6: unknown config key"):
        tf_llmer.main([a if a != "max_seq_len=6" else "max_seq_lenn=6" for a in argv])
    assert not (out / "results.json").exists()
    assert tf_llmer.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    by = {c["key"]["variant"]: c for c in res["cells"]}
    for c in by.values():
        assert (c["config"]["split"], c["config"]["evaluation"], c["config"]["max_seq_len"]) == (
            "loo_time", "candidates", 6)
        assert "recall@10" not in c["test"]
    assert by["none"]["extra"]["item_norm_ratio"] == pytest.approx(1.0)
    assert by["recpca@1+typical"]["extra"]["item_norm_cv"] < 1e-5
    table = {r["variant"]: r for r in _csv(out / "tf_llmer.csv")}
    for v, c in by.items():
        assert float(table[v]["recall@10_mean"]) == pytest.approx(c["test"]["full_recall@10"], rel=1e-4)
        assert float(table[v]["ndcg@10_mean"]) == pytest.approx(c["test"]["full_ndcg@10"], rel=1e-4)
    cells = {r["variant"]: r for r in _csv(out / "cells.csv")}  # the same full-ranking numbers per cell
    for v, c in by.items():
        assert float(cells[v]["ndcg@10"]) == pytest.approx(c["test"]["full_ndcg@10"], rel=1e-4)
    printed = capsys.readouterr().out
    assert "SASRec + Rec-PCA λ=1 + typical" in printed
    assert "SASRec: full-ranking R@10 / N@10 on its own protocol's split (split loo_time" in printed


def test_dataset_protocol_sets_give_sasrec_rows_the_ml1m_length_and_yield_to_the_user():
    """ml-1m's SASRec length is the SASRec paper's 200; a user's --set wins; LightGCN rows
    (no max_seq_len) are unaffected; other datasets get nothing."""
    from experiments import cli as ecli

    assert ecli.dataset_sets("ml-1m") == ["max_seq_len=200"] and ecli.dataset_sets("/data/ML-1M") == ["max_seq_len=200"]
    assert ecli.dataset_sets("ml-100k") == []
    p = ecli.experiment_parser("x", "doc")[0]
    args = p.parse_args(["--dataset", "ml-1m", "--backbones", "lightgcn,sasrec"])
    ecli.start(args)
    ecli.start(args)  # idempotent
    assert args.set == ["max_seq_len=200"]
    base = ecli.base_config(args)
    assert base.model == "lightgcn"
    assert ecli.for_model(base, "sasrec", args.set).max_seq_len == 200
    args = p.parse_args(["--dataset", "ml-1m", "--set", "max_seq_len=50"])
    ecli.start(args)
    assert ecli.for_model(ecli.base_config(args), "sasrec", args.set).max_seq_len == 50
    args = p.parse_args(["--dataset", "ml-100k"])
    ecli.start(args)
    assert ecli.for_model(ecli.base_config(args), "sasrec", args.set).max_seq_len == 50
