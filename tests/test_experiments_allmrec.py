"""experiments.allmrec_table on a tiny dataset with cold users: files, cells, and the harness
numbers checked against fit's own candidate evaluation and hand counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import clustered_interactions

from experiments import allmrec_table as T
from jaxrec.config import Config
from jaxrec.data import load_dataset, write_atomic
from jaxrec.eval.scenarios import ColdWarmItems, FewShot
from jaxrec.methods.allmrec import register as _register_allmrec  # noqa: E402

_register_allmrec()  # A-LLMRec's models, contexts, terms and evaluation are registered explicitly

TINY = ["embedding_size=8", "num_heads=2", "num_layers=1", "max_seq_len=6", "batch_size=32", "learning_rate=0.01"]


def write_dataset(folder: Path) -> Path:
    """40 users with 8 interactions each and 5 users with exactly 3 (the cold users)."""
    rows = clustered_interactions(0, users=40, items=30)
    rng = np.random.default_rng(1)
    rows += [(100 + u, int(i), 3.0, float(10_000 * (100 + u) + t))
             for u in range(5) for t, i in enumerate(rng.choice(30, 3, replace=False))]
    ds = folder / "tinyseq"
    ds.mkdir(parents=True)
    write_atomic(ds / "tinyseq.inter",
                 {"user_id": np.array([f"u{r[0]}" for r in rows]), "item_id": np.array([f"i{r[1]}" for r in rows]),
                  "rating": np.array([r[2] for r in rows]), "timestamp": np.array([r[3] for r in rows])},
                 {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"})
    return ds


@pytest.mark.slow
def test_sasrec_allmrec_table_end_to_end(tmp_path, capsys):
    folder = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--dataset", str(folder), "--seeds", "2020", "--epochs", "2", "--methods", "sasrec",
              "--compile-cache", str(tmp_path / "cc"),
              "--set", f"candidates_dir={tmp_path / 'cands'}"] + [a for s in TINY for a in ("--set", s)]
    assert T.main(common + ["--few-shot", "8", "--out", str(out)]) == 0
    for name in ("allmrec_table.csv", "cells.csv", "allmrec_table.png", "table.txt", "results.json"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    cells = {c["key"]["setting"]: c for c in res["cells"]}
    assert set(cells) == {"standard", "cold_users", "few_shot_8"}
    ds = load_dataset(str(folder), Config.for_model("sasrec"))
    # overall: the harness (embeddings of the test histories, stored lists) equals fit's own test evaluation
    std = cells["standard"]
    for m in T.TABLE_METRICS:
        assert std["extra"]["groups"]["all"][m] == pytest.approx(std["test"][m], abs=1e-9)
    cold, warm = (ColdWarmItems(0.35).apply(ds).groups[g] for g in ("cold_items", "warm_items"))
    counts = std["extra"]["counts"]
    assert (counts["all"], counts["cold_items"], counts["warm_items"]) == (45, len(cold), len(warm))
    # cold users: the 5 users with 3 interactions, kept out of training (1 training interaction each)
    cu = cells["cold_users"]
    assert cu["extra"]["counts"] == {"cold_users": 5}
    assert cu["data"]["train_interactions"] == len(ds.train) - 5
    # few-shot: trained on 8 seeded users' training interactions, evaluated on every test user
    chosen = FewShot(8, 2020).chosen_users(ds)
    fs = cells["few_shot_8"]
    assert fs["data"]["train_interactions"] == int(np.isin(ds.train.user, chosen).sum())
    assert fs["extra"]["counts"] == {"all": 45, "unseen": 37}
    # the summary rows are the cells' numbers (one seed: no std)
    rows = {r["column"]: r for r in res["summary"]}
    assert rows["cold users"]["hit@1_mean"] == cu["extra"]["groups"]["cold_users"]["hit@1"]
    assert rows["few-shot K=8"]["hit@1_mean"] == fs["extra"]["groups"]["all"]["hit@1"]
    text = (out / "table.txt").read_text()
    assert "cold users" in text and "cross-domain: not run" in text and "few-shot K=8" in text
    assert "SASRec: not applicable to id-based item embeddings" in text
    assert res["summary"][0]["paper_hit@1"] is None  # tinyseq is not one of the paper's datasets
    capsys.readouterr()

    # a setting the dataset cannot give is reported, not trained
    na = tmp_path / "na"
    assert T.main(common + ["--few-shot", "100", "--scenarios", "few_shot_100", "--out", str(na)]) == 0
    res = json.loads((na / "results.json").read_text())
    assert res["cells"] == [] and "has only" in res["meta"]["not_applicable"]["few_shot_100"]["2020"]
    assert "n/a" in (na / "table.txt").read_text()


@pytest.mark.slow
def test_cf_rows_allmrec_table(tmp_path, capsys):
    """The CF rows of Table 1 (issue 24): the harness's overall numbers (each model's embed over
    the test histories, dot products on the stored lists) equal fit's own candidate evaluation,
    NeuMF's score table and BERT4Rec's bias column included."""
    folder = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    tiny = ["embedding_size=8", "num_layers=1", "max_seq_len=6", "batch_size=32", "learning_rate=0.01",
            "block_num=1", "num_heads=1", "inner_size=8", "mf_embedding_size=4", "mlp_embedding_size=4",
            "mlp_hidden_size=[8, 4]", "hidden_size=8"]
    args = ["--dataset", str(folder), "--seeds", "2020", "--epochs", "1", "--scenarios", "standard",
            "--methods", "gru4rec,nextitnet,neumf,bert4rec", "--compile-cache", str(tmp_path / "cc"),
            "--set", f"candidates_dir={tmp_path / 'cands'}", "--out", str(out)] + [a for s in tiny for a in ("--set", s)]
    assert T.main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert sorted(c["key"]["method"] for c in res["cells"]) == ["bert4rec", "gru4rec", "neumf", "nextitnet"]
    for cell in res["cells"]:
        for m in T.TABLE_METRICS:
            assert cell["extra"]["groups"]["all"][m] == pytest.approx(cell["test"][m], abs=1e-6), cell["key"]
    text = (out / "table.txt").read_text()
    assert all(label in text for label in ("GRU4Rec", "NextItNet", "NCF (NeuMF)", "BERT4Rec"))
    capsys.readouterr()


def test_sasrec_allmrec_paper_datasets_and_bad_options(tmp_path, capsys):
    assert T.paper_dataset("amazon-beauty") == "beauty" and T.paper_dataset("Movies_and_TV") == "movies_tv"
    assert T.paper_dataset("Video_Games") == "video_games" and T.paper_dataset("ml-100k") is None
    assert T.PAPER["sasrec"]["beauty"]["cold items"] == .1190
    from experiments.cli import main_wrapper

    assert main_wrapper(T.main, ["--methods", "no_such_row", "--out", str(tmp_path)]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main_wrapper(T.main, ["--scenarios", "warm_users", "--out", str(tmp_path)]) == 2
    assert "--scenarios" in capsys.readouterr().err


def test_table9_rows_align_their_backbone_rows(tmp_path, capsys):
    """A-LLMRec Table 9 rows: stage 1 over GRU4Rec, NextItNet and NCF (NeuMF) align their own
    backbone row's run (``backbone_row``); NeuMF's has no cross-domain column (a general model's
    users are its own); asking for one without its backbone row is refused before any training."""
    from experiments.cli import main_wrapper

    rows = {m.name: m for m in T.METHODS}
    for name, backbone in (("stage1_gru4rec", "gru4rec"), ("stage1_nextitnet", "nextitnet"),
                           ("stage1_neumf", "neumf")):
        m = rows[name]
        assert (m.model, m.backbone_row, m.on_sasrec, m.score) == ("allmrec_stage1", backbone, True, T.stage1_scores)
        assert rows[backbone].model == backbone
    assert rows["stage1_nextitnet"].cross_domain and not rows["stage1_neumf"].cross_domain
    for name, backbone in (("stage1_nextitnet", "nextitnet"), ("stage1_neumf", "neumf")):
        assert main_wrapper(T.main, ["--methods", name, "--out", str(tmp_path)]) == 2
        assert f"align the {backbone} run of the same setting and seed; add {backbone}" in capsys.readouterr().err


def test_resume_matches_a_stored_stage2_cell():
    """--resume of a table with a stage-2 row: ``grid.same_cell`` compares a stored record with the
    cell's config, taking a key the record lacks at the model's own default. For allmrec_stage2 a
    bare ``Config("allmrec_stage2")`` is refused (its evaluation must be lm_candidates), which made
    every --resume of such a table fail before reusing anything (found on ml-100k)."""
    from experiments import grid

    cfg = Config.for_model("allmrec_stage2", dataset="x", batch_size=8, answer="index", score_probe=True)
    key = {"method": "probe_sasrec", "setting": "standard", "seed": 2020}
    stored = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k != "probe_weight"}
    record = {"key": key, "data": {}, "config": stored}  # stored before probe_weight existed
    assert grid.same_cell(record, grid.Cell(key, cfg, {}))
    assert not grid.same_cell(record, grid.Cell(key, cfg.replace(probe_weight=2.0), {}))
    assert not grid.same_cell(record, grid.Cell(key, cfg.replace(batch_size=2), {}))
