"""SASRec as a registered backbone: fit, CLI train/resume, LLM init, bad input (tiny data)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from helpers import write_tiny_dataset

from jaxrec.cli import main
from jaxrec.config import Config, ConfigError
from jaxrec.data import DataError, dataset_from_interactions, load_dataset, remap_ids
from jaxrec.models import get_model
from jaxrec.pipeline import initial_params
from jaxrec.train import check_run, fit
from jaxrec.train.state import run_keys

# A small SASRec (one block, d = 8, histories of 6) so that a step compiles fast.
TINY = dict(embedding_size=8, num_heads=2, num_layers=1, max_seq_len=6, batch_size=32, learning_rate=0.01, epochs=3)
TINY_SET = [f"{k}={v}" for k, v in TINY.items() if k != "epochs"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec")
    folder = write_tiny_dataset(root)
    config = Config.for_model("sasrec", dataset=str(folder), candidates_dir=str(root / "candidates"), **TINY)
    ds = load_dataset(str(folder), config)
    emb = np.random.default_rng(0).normal(size=(ds.num_items, 16)).astype(np.float32)
    npy = root / "tiny.text.npy"
    np.save(npy, emb[::-1])  # rows in another order than the dense ids: the id list maps them
    (root / "tiny.text.item_ids.txt").write_text("\n".join(ds.item_ids[::-1].tolist()) + "\n")
    return root, config, ds, npy, emb


def test_sasrec_defaults_are_the_reference_protocol():
    c = Config.for_model("sasrec")
    assert (c.embedding_size, c.num_layers, c.num_heads, c.dropout_rate, c.max_seq_len, c.seq_norm) == (
        50, 2, 1, 0.5, 50, "reference")
    assert (c.batch_size, c.epochs, c.learning_rate, c.adam_b1, c.adam_b2) == (128, 200, 1e-3, 0.9, 0.98)
    assert (c.split, c.evaluation, c.valid_metric, c.candidate_negatives) == ("loo_time", "candidates", "ndcg@10", 19)
    model = get_model(c)
    assert (model.context, model.batch_kind) == ("sequences", "sequences")
    assert model.tables == {"item": model.encoder.item_table} and model.encoder.item_table.offset == 1


def test_sasrec_llm_init_writes_item_rows_only(tiny, caplog):
    _, config, ds, npy, emb = tiny
    c = config.replace(init="uniform", embeddings=str(npy))
    model = get_model(c)
    with caplog.at_level("INFO", logger="jaxrec.init"):
        params = initial_params(model, ds, c)
    assert "LLM init: uniform, K=8 of N=16" in caplog.text and "no user table" in caplog.text  # report prints
    base = model.init(run_keys(c.seed).init, ds.num_users, ds.num_items)
    table = np.asarray(params["item_embedding"])
    assert table.shape == (ds.num_items + 1, 8)
    np.testing.assert_array_equal(table[0], 0.0)  # the padding row stays
    np.testing.assert_allclose(table[1:], emb[:, 0:16:2], rtol=1e-6)  # uniform: dims k * floor(16 / 8)
    rest = {k: v for k, v in params.items() if k != "item_embedding"}
    for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves({k: base[k] for k in rest})):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # nothing else written (no user table)


@pytest.mark.slow
def test_sasrec_cli_train_resume_with_llm_init_matches_fit(tiny, tmp_path, capsys):
    root, config, ds, npy, _ = tiny
    c = config.replace(init="variance", embeddings=str(npy))
    model = get_model(c)
    ref = fit(model, ds, c, params=initial_params(model, ds, c), progress=False)
    assert set(ref.test_metrics) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (1, 5, 10)} | {"mrr"} | {
        f"full_{m}@{k}" for m in ("recall", "ndcg") for k in (10, 20)}
    stored = sorted(p.name for p in (root / "candidates").iterdir())
    assert len(stored) == 2 and all("seed2020_neg19" in n for n in stored)  # valid and test lists, drawn once

    out = tmp_path / "run"
    argv = ["train", "--dataset", config.dataset, "--model", "sasrec", "--init", "variance", "--embeddings", str(npy),
            "--out", str(out), "--no-progress", "--set", f"candidates_dir={root / 'candidates'}"]
    argv += [a for s in TINY_SET for a in ("--set", s)]
    assert main(argv + ["--epochs", "2"]) == 0  # "interrupted" after 2 epochs
    assert main(argv + ["--epochs", "3", "--resume"]) == 0
    assert "hit@1" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "sasrec" and results["config"]["init"] == "variance"
    assert results["config"]["adam_b2"] == 0.98 and results["config"]["evaluation"] == "candidates"
    assert results["test"] == ref.test_metrics  # the same candidate lists, the same parameters
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in ref.history]


def _hand_dataset(rows, split="loo_time"):
    u, i, t = zip(*rows)
    inter = remap_ids(np.array(u), np.array(i), timestamp=np.array(t, dtype=np.float64))
    return dataset_from_interactions("hand", inter, Config(split=split))


def _never_computes(model):
    def boom(*args):
        raise AssertionError("model.init ran: the check should have failed before any compute")
    return dataclasses.replace(model, encoder=dataclasses.replace(model.encoder, init=boom))


@pytest.mark.parametrize("fields, message", [
    ({"max_seq_len": 0}, "max_seq_len=0"),
    ({"dropout_rate": 1.0}, "dropout_rate"),
    ({"seq_norm": "post"}, "seq_norm"),
    ({"topk": (1, 25)}, r"topk=\[1, 25\].*21 candidates"),
    ({"valid_metric": "recall@10"}, "valid_metric='recall@10'"),
    ({"adam_b2": 1.0}, "adam_b2"),
])
def test_sasrec_bad_config_values(fields, message):
    with pytest.raises(ConfigError, match=message):
        Config.for_model("sasrec", candidate_negatives=20, **fields)


@pytest.mark.parametrize("model, fields, message", [
    ("sasrec", {"sharding": "row"}, "sharding='row'.*feature"),
    ("sasrec", {"kernel": "dense"}, r"model 'sasrec' has no setting 'kernel' \(a setting of lightgcn, sgl, sgcl\)"),
    ("sasrec", {"ssl_weight": 0.1}, r"model 'sasrec' has no setting 'ssl_weight' \(a setting of sgl\)"),
    ("sasrec", {"reg_weight": 0.01}, "model 'sasrec' has no setting 'reg_weight'"),
    ("sasrec", {"num_heads": 3}, "embedding_size=50.*num_heads=3"),
    ("sasrec", {"num_layers": 0}, "num_layers=0"),
    ("lightgcn", {"max_seq_len": 20}, r"model 'lightgcn' has no setting 'max_seq_len' \(a setting of sasrec"),
    ("sgl", {"num_heads": 2}, "model 'sgl' has no setting 'num_heads'"),
    ("mf", {"dropout_rate": 0.1}, "model 'mf' has no setting 'dropout_rate'.*MFSettings: embedding_size"),
])
def test_sasrec_options_of_the_other_model_family_are_refused(model, fields, message):
    """A key is a setting of some models only (``ModelSettings``): another model's config refuses
    it, naming the model whose settings lack it and the models that have it."""
    with pytest.raises(ConfigError, match=message):
        get_model(Config.for_model(model, **fields))


def test_sasrec_bad_data_fails_before_compute(tiny, tmp_path):
    _, config, ds, _, _ = tiny
    model = _never_computes(get_model(config))
    with pytest.raises(DataError, match="no user has 3 or more interactions"):  # the split itself refuses
        _hand_dataset([(f"u{u}", f"i{(u + k) % 30}", float(k)) for u in range(10) for k in range(2)])
    # a user who saw 24 of 25 items leaves 1 < 19 candidates to draw
    heavy = [("heavy", f"i{k:02d}", float(k)) for k in range(24)] + [("light", f"i{k:02d}", float(k))
                                                                   for k in (0, 1, 2, 24)]
    with pytest.raises(DataError, match="'heavy'.*candidate sampling needs 19.*candidate_negatives=19"):
        fit(model, _hand_dataset(heavy), config, progress=False)
    feasible = config.replace(candidate_negatives=1, topk=(1, 2), valid_metric="mrr")  # 1 negative is possible
    check_run(model, _hand_dataset(heavy), feasible)
    shuffled = load_dataset(config.dataset, config.replace(split="loo_random"))
    with pytest.raises(DataError, match="leave-one-out split by time"):
        fit(model, shuffled, config.replace(split="loo_random"), progress=False)
    with pytest.raises(ConfigError, match="full_view_topk=.*exceeds"):
        fit(model, ds, config.replace(full_view_topk=(10, 500)), progress=False)
