"""The experiment modules end to end on a tiny synthetic dataset, plus their pieces
(aggregation, relative gain, cold-start reduction, collapse measures) against
hand-computed numbers."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from experiments import cli, cold_start, embedding_collapse, encoder_choice, grid, llminit_table, report
from jaxrec.analysis import collapse
from jaxrec.init import EmbeddingSource, save_precomputed
from helpers import write_tiny_dataset

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
