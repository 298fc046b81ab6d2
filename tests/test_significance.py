"""Paired significance over users in the experiment reports (experiments.report): the tests against
scipy.stats and a hand-computed t statistic, pairing across seeds, and the grid's per-user files
and per-cell tracking end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tiny_dataset
from scipy import stats

from experiments import grid, report
from jaxrec.config import Config, ConfigError


def test_paired_test_against_scipy_and_by_hand():
    a = np.array([0.10, 0.30, 0.00, 0.50, 0.20, 0.40, 0.25, 0.05])
    b = np.array([0.15, 0.35, 0.10, 0.45, 0.30, 0.50, 0.25, 0.20])
    out = report.paired_test(a, b)
    d = b - a
    t_hand = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))  # paired t: mean difference over its standard error
    assert out["t"] == pytest.approx(t_hand, rel=1e-12)
    assert out["p_t"] == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-12)
    assert out["p_t"] == pytest.approx(2 * stats.t.sf(abs(t_hand), d.size - 1), rel=1e-10)
    w = stats.wilcoxon(b, a, zero_method="wilcox")
    assert (out["w"], out["p_w"]) == (pytest.approx(w.statistic), pytest.approx(w.pvalue))
    # Wilcoxon by hand: the zero difference is dropped, ranks of |d| = .05,.05,.1,.05,.1,.1,.15 -> W- = rank of -.05
    nonzero = d[d != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    assert out["w"] == min(ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum())
    assert (out["n"], out["mean_a"], out["mean_b"]) == (8, pytest.approx(a.mean()), pytest.approx(b.mean()))
    assert out["diff"] == pytest.approx(d.mean())
    same = report.paired_test(a, a)
    assert (same["p_t"], same["p_w"]) == (1.0, 1.0)  # no difference at all: nothing to reject
    with pytest.raises(ValueError, match="same length"):
        report.paired_test(a, b[:-1])


def _cell(tmp_path: Path, name: str, seed: int, users, values) -> dict:
    path = tmp_path / f"{name}-{seed}.npz"
    np.savez(path, user=np.asarray(users), **{"ndcg@10": np.asarray(values, dtype=np.float64)})
    return {"key": {"method": name, "seed": seed}, "data": {"split_seed": seed}, "per_user": str(path)}


def test_paired_over_seeds_averages_each_user_over_common_seeds(tmp_path):
    base = [_cell(tmp_path, "a", 1, [0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4]),
            _cell(tmp_path, "a", 2, [0, 1, 2, 3], [0.3, 0.2, 0.1, 0.0]),
            _cell(tmp_path, "a", 3, [0, 1, 2, 3], [9.0, 9.0, 9.0, 9.0])]  # seed 3: the other side lacks it
    other = [_cell(tmp_path, "b", 2, [0, 1, 2, 4], [0.5, 0.1, 0.2, 0.7]),  # user 4 only here, user 3 missing
             _cell(tmp_path, "b", 1, [0, 1, 2, 4], [0.2, 0.4, 0.3, 0.6])]
    out = report.paired_over_seeds(base, other, "ndcg@10")
    assert out["seeds"] == [1, 2] and out["users"] == 3  # users 0, 1, 2 are in every paired cell
    a = np.array([(0.1 + 0.3) / 2, (0.2 + 0.2) / 2, (0.3 + 0.1) / 2])
    b = np.array([(0.2 + 0.5) / 2, (0.4 + 0.1) / 2, (0.3 + 0.2) / 2])
    assert out["p_t"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert out["p_w"] == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert report.paired_over_seeds(base, [{"key": {"seed": 1}, "data": {"split_seed": 1}}], "ndcg@10") is None
    assert report.fmt_p(0.01234) == "0.012" and report.fmt_p(0.00012) == "0.0001" and report.fmt_p(1e-6) == "<1e-4"
    assert report.fmt_significance({"ndcg@10_p_t": 0.5, "ndcg@10_p_w": 0.25}) == "0.500 / 0.250"
    assert report.fmt_significance({"ndcg@10_p_t": float("nan")}) == "-"


def test_grid_stores_per_user_metrics_tracks_cells_and_tables_test_them(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = write_tiny_dataset(tmp_path / "data")
    base = Config(dataset=str(folder), epochs=2, batch_size=64, embedding_size=8, topk=(5, 10), patience=100)
    cells = [grid.Cell({"backbone": m, "seed": s}, base.replace(model=m, seed=s))
             for s in (1, 2) for m in ("mf", "lightgcn")]
    out = tmp_path / "grid"
    records = grid.run_grid(cells, out, experiment="tiny-grid")
    for rec in records:
        assert Path(rec["per_user"]) == (out / "per_user" / f"{grid._slug(rec['key'])}.npz").resolve()
        with np.load(rec["per_user"]) as f:
            assert set(f.files) == {"user", "recall@10", "ndcg@10"}
            assert float(np.mean(f["ndcg@10"])) == rec["test"]["ndcg@10"]  # the cell's reported mean
            np.testing.assert_array_equal(f["user"], np.arange(60))  # every tiny user has a test item
        events = list((out / "tracking" / grid._slug(rec["key"])).glob("events.out.tfevents.*"))
        assert len(events) == 1  # each cell its own TensorBoard run
    acc = EventAccumulator(str(out / "tracking" / "backbone=lightgcn-seed=2"))
    acc.Reload()
    assert records[3]["key"] == {"backbone": "lightgcn", "seed": 2}
    np.testing.assert_allclose([e.value for e in acc.Scalars("train/loss")], records[3]["curve"]["loss"], rtol=1e-5)

    rows = report.aggregate(records, by=("backbone",))
    report.add_gains(rows, lambda r: {"backbone": "mf"}, records=records, by=("backbone",))
    mf, lgcn = rows
    assert math.isnan(mf["ndcg@10_p_t"]) and mf["ndcg@10_users"] == 0  # the base row is not tested against itself

    def per_user(model):
        arrays = []
        for rec in records:
            if rec["key"]["backbone"] == model:
                with np.load(rec["per_user"]) as f:
                    arrays.append(f["ndcg@10"])
        return np.mean(arrays, axis=0)  # each user's NDCG@10 averaged over the two seeds

    a, b = per_user("mf"), per_user("lightgcn")
    assert lgcn["ndcg@10_p_t"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert lgcn["ndcg@10_p_w"] == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert lgcn["ndcg@10_users"] == 60 and lgcn["ndcg@10_seeds"] == [1, 2]
    # the cells of results.json name their per-user files relative to the grid's folder; a reused
    # cell (another folder's results.json) gets the absolute path
    report.write_results(out, "tiny-grid", "cmd", base, records)
    stored = json.loads((out / "results.json").read_text())["cells"]
    assert [c["per_user"] for c in stored] == [f"per_user/{grid._slug(r['key'])}.npz" for r in records]
    again = grid.load_previous_cells(out)
    assert [c["per_user"] for c in again] == [r["per_user"] for r in records]


def test_experiment_track_option_sets_every_cells_trackers():
    from experiments import cli, llminit_table

    args = llminit_table.build_parser().parse_args(["--track", "tensorboard,mlflow"])
    assert cli.base_config(args).track == ("tensorboard", "mlflow")
    args = llminit_table.build_parser().parse_args(["--track", "none"])
    assert cli.base_config(args).track == ()
    assert cli.base_config(llminit_table.build_parser().parse_args([])).track == ("tensorboard",)


def test_compare_runs_pairs_two_run_folders(tmp_path, capsys):
    from experiments import compare_runs
    from jaxrec.data import load_dataset
    from jaxrec.models import get_model
    from jaxrec.train import fit

    folder = write_tiny_dataset(tmp_path / "data")
    base = Config(dataset=str(folder), epochs=2, batch_size=64, embedding_size=8, topk=(5, 10), track=())
    ds = load_dataset(str(folder), base)
    results = {}
    for name in ("mf", "lightgcn"):
        config = base.replace(model=name)
        results[name] = fit(get_model(config), ds, config, out_dir=tmp_path / name)
    assert compare_runs.main([str(tmp_path / "mf"), str(tmp_path / "lightgcn")]) == 0
    text = capsys.readouterr().out
    a, b = results["mf"].test_per_user, results["lightgcn"].test_per_user
    t = stats.ttest_rel(b["ndcg@10"], a["ndcg@10"])
    line = next(ln for ln in text.splitlines() if ln.startswith("ndcg@10"))
    assert line.split()[1:4] == ["60", report.fmt(results["mf"].test_metrics["ndcg@10"]),
                                 report.fmt(results["lightgcn"].test_metrics["ndcg@10"])]
    assert line.split()[5:7] == [f"{t.statistic:.2f}", report.fmt_p(t.pvalue)]
    other = write_tiny_dataset(tmp_path / "data2", seed=1)
    config = base.replace(dataset=str(other))
    fit(get_model(config), load_dataset(str(other), config), config, out_dir=tmp_path / "other")
    with pytest.raises(ConfigError, match="trained on different data or splits"):
        compare_runs.main([str(tmp_path / "mf"), str(tmp_path / "other")])
