"""The CLI on a tiny dataset: options, config precedence, output, errors."""

import json
import re

import pytest

from helpers import write_tiny_dataset
from jaxrec.cli import build_parser, config_from_args, main
from jaxrec.config import Config, ConfigError, field_names
from jaxrec.pipeline import format_metrics_table


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("cli"))


def test_help_lists_every_config_key(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in field_names():
        assert name in text, name
    for flag in ("--config", "--set", "--resume", "--out", "--init", "--encoder", "--embeddings"):
        assert flag in text


def test_config_precedence_defaults_file_flags_set(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('epochs = 7\nlearning_rate = 0.01\ntopk = [5, 10]\nvalid_metric = "recall@10"\n')
    args = build_parser().parse_args(
        ["train", "--model", "mf", "--config", str(cfg), "--epochs", "9", "--set", "reg_weight=0.5"])
    c = config_from_args(args)
    assert (c.model, c.epochs, c.learning_rate, c.topk, c.reg_weight, c.valid_metric) == (
        "mf", 9, 0.01, (5, 10), 0.5, "recall@10")
    assert c.batch_size == Config().batch_size


def test_lightgcn_defaults_are_the_reference_protocol():
    c = Config.for_model("lightgcn")
    assert (c.seed, c.embedding_size, c.num_layers, c.learning_rate, c.batch_size, c.reg_weight, c.patience) == (
        2020, 128, 2, 1e-3, 2048, 1e-5, 10)
    assert c.split == "loo_random" and c.valid_metric == "ndcg@10"


@pytest.mark.parametrize("bad, message", [
    (["--set", "nope=1"], "unknown config key"),
    (["--set", "epochs=ten"], "cannot parse 'ten' as int"),
    (["--set", "ssl_ratio=1.5"], "ssl_ratio"),
    (["--set", "ssl_negatives=some"], "ssl_negatives"),
    (["--set", "valid_metric=ndcg@7"], "valid_metric"),
    (["--set", "epochs"], "expected key=value"),
])
def test_bad_options_give_clear_errors(tiny, tmp_path, capsys, bad, message):
    code = main(["train", "--dataset", str(tiny), "--out", str(tmp_path / "r")] + bad)
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--dataset", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]) == 2
    assert "absent" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "no_id_list"])
def test_bad_embeddings_file_is_a_clear_error(tiny, tmp_path, capsys, case):
    """A missing embeddings file, or a .npy without its id list, ends as ``jaxrec: error:``
    (exit 2) naming the file, not a traceback, and leaves no run folder."""
    import numpy as np

    npy = tmp_path / "emb.npy"
    if case == "no_id_list":
        np.save(npy, np.zeros((3, 4), np.float32))
    out = tmp_path / "r"
    code = main(["train", "--dataset", str(tiny), "--init", "variance", "--embeddings", str(npy), "--out", str(out),
                 "--epochs", "1", "--no-progress", "--set", "topk=5,10"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jaxrec: error: ") and "Traceback" not in err
    assert ("emb.npy: not found" if case == "missing" else "emb.item_ids.txt") in err
    assert not (out / "ckpt").exists()


def test_train_prints_table_and_writes_results(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", str(tiny), "--model", "lightgcn", "--epochs", "3", "--out", str(out),
                 "--set", "embedding_size=8", "--set", "batch_size=32", "--set", "topk=5,10", "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert re.search(rf"^ndcg@10\s+{results['test']['ndcg@10']:.4f}$", text, re.M)
    assert str(out) in text
    assert results["config"]["epochs"] == 3 and results["seed"] == 2020
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    hint = re.search(r"^recommendations: jaxrec (recommend .*?)\s{3}", text, re.M).group(1).split()
    assert main(hint + ["--no-progress"]) == 0  # the printed next step runs as printed
    assert capsys.readouterr().out.splitlines()[0].split()[:4] == ["user", "rank", "item", "score"]


def test_format_metrics_table_orders_by_metric_then_k():
    text = format_metrics_table({"ndcg@20": 0.2, "recall@10": 0.3, "ndcg@10": 0.1})
    rows = [line.split()[0] for line in text.splitlines()[2:]]
    assert rows == ["recall@10", "ndcg@10", "ndcg@20"]


def test_flags_then_set_are_validated_once_together(tiny):
    args = build_parser().parse_args(["train", "--topk", "5", "--set", "valid_metric=ndcg@5"])
    c = config_from_args(args)
    assert c.topk == (5,) and c.valid_metric == "ndcg@5"


@pytest.mark.parametrize("extra, message", [
    (["--set", "topk=10,20,50"], "topk=[10, 20, 50]: k=50 exceeds the 40 items"),
    (["--set", "split=ratio", "--set", "split_ratios=0.75,0,0.25", "--set", "topk=5,10"], "leaves no valid interactions"),
    (["--set", "split=ratio", "--set", "split_ratios=0,0.5,0.5", "--set", "topk=5,10"], "leaves no training interactions"),
])
def test_config_against_data_fails_before_training(tiny, tmp_path, capsys, extra, message):
    out = tmp_path / "r"
    code = main(["train", "--dataset", str(tiny), "--out", str(out), "--no-progress"] + extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("jaxrec: error: ")
    assert not out.exists()  # nothing was written: no folder to poison


def test_llm_init_text_source_auto(tmp_path, capsys):
    """An LLM init without --embeddings/--encoder (or with --embeddings auto) reads the dataset's
    reference MPNet file when it is in the data folder, else the minilm encoder; the choice is
    written into the config (run.json) and printed. Without a text source the library refuses
    the run before reading any data."""
    import numpy as np

    from jaxrec.cli import with_text_source
    from jaxrec.init.sources import save_precomputed
    from jaxrec.pipeline import train_run

    ds = write_tiny_dataset(tmp_path, name="auto")
    plain = Config(dataset=str(ds), init="variance")
    cfg, note = with_text_source(plain)  # no reference file yet: the encoder
    assert (cfg.embeddings, cfg.encoder) == (None, "minilm") and "encoder minilm" in note
    ids = [line.split("\t")[0] for line in (ds / "auto.item").read_text().splitlines()[1:]]
    ref = save_precomputed(ds / "auto.all-mpnet-base-v2.npy", np.ones((len(ids), 6), np.float32), ids)
    for c in (plain, plain.replace(embeddings="auto"), plain.replace(embeddings="AUTO")):
        got, note = with_text_source(c)
        assert got.embeddings == str(ref.resolve()) and got.encoder is None and "auto-detected" in note
    assert with_text_source(plain.replace(encoder="mpnet")) == (plain.replace(encoder="mpnet"), None)
    assert with_text_source(Config(dataset=str(ds), embeddings="auto"))[0].embeddings is None  # init none
    from jaxrec.init import resolve_embedding_source

    off = resolve_embedding_source(plain, "none")  # the reference file is there but turned off
    assert (off.embeddings, off.encoder) == (None, "minilm") and "not used (embeddings=none)" in off.description
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(ds), "--init", "variance", "--epochs", "1", "--out", str(out),
                 "--no-progress", "--set", "embedding_size=4", "--set", "topk=5,10"]) == 0
    assert "jaxrec: text embeddings: reference MPNet embeddings" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["config"]["embeddings"] == str(ref.resolve())
    with pytest.raises(ConfigError, match="init='variance' reads item text embeddings"):
        train_run(Config(dataset=str(tmp_path / "absent"), init="variance"))  # before the (missing) data
