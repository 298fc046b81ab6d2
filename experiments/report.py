"""Experiment reports: aggregation over seeds, relative gains, tables, CSV and results.json.

``aggregate`` groups cell records and takes the mean and sample std of each metric;
``add_gains`` adds the relative improvement over a base row and, given the cell records, a
paired significance test over users against that row (``paired_test``: paired t-test and
Wilcoxon signed-rank from ``scipy.stats`` on the per-user test metrics the grid stores, so
"A beats B" has a p-value); the ``fmt*`` helpers and
``format_table`` / ``markdown_table`` print; ``write_results`` / ``write_csv`` write the run
folder (default ``checkpoints/<experiment>/<run-name>/``). The papers' published numbers to
stand beside (DESIGN.md section 3) live here too.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jaxrec.config import Config


def dataset_label(name: str) -> str:
    return Path(str(name)).name


METRICS = ("recall@10", "ndcg@10")
#: Per-user test metrics a grid keeps for each cell (``experiments.grid.save_per_user``).
PER_USER_METRICS = METRICS
#: The metric the tables' p-value column tests.
SIGNIFICANCE_METRIC = "ndcg@10"


METRIC_LABELS = {"recall@10": "R@10", "ndcg@10": "N@10"}


BACKBONE_LABELS = {"mf": "MF", "lightgcn": "LightGCN", "sgl": "SGL", "sgcl": "SGCL", "sasrec": "SASRec"}


INIT_LABELS = {"none": "", "random": "Rand", "uniform": "Uni", "variance": "Var", "full": "Full", "pca": "PCA",
               "recpca": "Rec-PCA"}


PAPER_TABLE1: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "lightgcn": {
        "none": {"beauty": (.0910, .0432), "toys": (.0775, .0360), "tools": (.0574, .0283), "office": (.0745, .0365)},
        "random": {"beauty": (.0960, .0467), "toys": (.0805, .0387), "tools": (.0612, .0313), "office": (.0773, .0387)},
        "uniform": {"beauty": (.1006, .0469), "toys": (.0806, .0388), "tools": (.0633, .0319), "office": (.0791, .0395)},
        "variance": {"beauty": (.1019, .0485), "toys": (.0808, .0389), "tools": (.0633, .0317), "office": (.0816, .0414)},
    },
    "sgcl": {
        "none": {"beauty": (.1027, .0499), "toys": (.0828, .0382), "tools": (.0585, .0294), "office": (.0647, .0298)},
        "variance": {"beauty": (.1104, .0522), "toys": (.0941, .0421), "tools": (.0646, .0327), "office": (.0776, .0366)},
    },
}


PAPER_TABLE4_VAR_R10 = {"mpnet": .1019, "gte-qwen": .0932, "gpt-s": .098, "gpt-l": .096, "stella": .0935}


PAPER_DATASETS = ("beauty", "toys", "tools", "office")


def paper_dataset(name: str) -> str | None:
    """Which of LLMInit's four Amazon datasets ``name`` is (case-insensitive), else None."""
    low = dataset_label(name).lower()
    for key in PAPER_DATASETS:
        if key in low:
            return key
    return None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1); the std of one value is NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def relative_gain(value: float, base: float) -> float:
    """Improvement of ``value`` over ``base`` in percent: ``100 * (value - base) / base``."""
    if base is None or value is None or not math.isfinite(base) or base == 0:
        return float("nan")
    return 100.0 * (value - base) / base


def metric_value(record: dict, metric: str, split: str = "test") -> float:
    return float(record[split][metric])


def aggregate(records: Sequence[dict], by: Sequence[str], metrics: Sequence[str] = METRICS,
              split: str = "test", extras: Sequence[str] = ()) -> list[dict]:
    """Group records by ``key[by...]`` (first-seen order) -> rows with ``<metric>_mean``,
    ``<metric>_std`` (sample std over seeds), ``n`` and ``seeds``; ``extras`` are numbers
    from each record's ``extra`` dict, aggregated the same way."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["key"].get(b) for b in by), []).append(r)
    rows = []
    for gkey, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, gkey))
        row["n"] = len(recs)
        row["seeds"] = [r["key"].get("seed", r.get("seed")) for r in recs]
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std([metric_value(r, m, split) for r in recs])
        for e in extras:
            row[f"{e}_mean"], row[f"{e}_std"] = mean_std([float(r["extra"][e]) for r in recs])
        rows.append(row)
    return rows


def add_gains(rows: list[dict], base_of: Callable[[dict], dict | None], metrics: Sequence[str] = METRICS,
              base_label: Callable[[dict], str] | None = None, records: Sequence[dict] | None = None,
              by: Sequence[str] | None = None, tested: Sequence[str] = (SIGNIFICANCE_METRIC,)) -> list[dict]:
    """Add ``<metric>_gain`` (% over the mean of the row ``base_of(row)`` returns matching
    fields of; NaN where there is none) to every row, in place; returns ``rows``.

    With ``records`` (the cell records) and ``by`` (the fields ``aggregate`` grouped them by), also
    the paired test over users of each row against its base row for each metric of ``tested``:
    ``<metric>_p_t`` (paired t-test), ``<metric>_p_w`` (Wilcoxon), ``<metric>_users`` and
    ``<metric>_seeds`` (``paired_over_seeds``; NaN / 0 where the cells have no per-user file)."""
    for row in rows:
        match = base_of(row)
        base = None
        if match is not None:
            for cand in rows:
                if all(cand.get(k) == v for k, v in match.items()):
                    base = cand
                    break
        for m in metrics:
            has_base = base is not None and base is not row
            row[f"{m}_gain"] = relative_gain(row[f"{m}_mean"], base[f"{m}_mean"]) if has_base else float("nan")
        if records is not None and by is not None:
            mine = _group(records, by, row)
            theirs = _group(records, by, base) if base is not None and base is not row else []
            for m in tested:
                test = paired_over_seeds(theirs, mine, m) if theirs else None
                row[f"{m}_p_t"] = test["p_t"] if test else float("nan")
                row[f"{m}_p_w"] = test["p_w"] if test else float("nan")
                row[f"{m}_users"] = test["users"] if test else 0
                row[f"{m}_seeds"] = test["seeds"] if test else []
    return rows


def _group(records: Sequence[dict], by: Sequence[str], row: dict) -> list[dict]:
    return [r for r in records if all(r["key"].get(b) == row.get(b) for b in by)]


# ----------------------------------------------------------------------------- significance
def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired tests of ``b`` against ``a`` over the same units (users): ``{"n", "mean_a",
    "mean_b", "diff" (mean of b - a), "t", "p_t"`` (``scipy.stats.ttest_rel``, two-sided)``,
    "w", "p_w"`` (``scipy.stats.wilcoxon``, two-sided, zero differences dropped: Wilcoxon's
    original rule)``}``. When every difference is zero the tests are undefined: p = 1.
    Raises ValueError for arrays of different shapes or fewer than 2 pairs."""
    from scipy import stats  # noqa: PLC0415

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test: expected two 1-d arrays of the same length, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError(f"paired_test: need at least 2 pairs, got {a.size}")
    d = b - a
    out = {"n": int(a.size), "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(d.mean())}
    if not np.any(d != 0):
        return {**out, "t": 0.0, "p_t": 1.0, "w": 0.0, "p_w": 1.0}
    t = stats.ttest_rel(b, a)
    w = stats.wilcoxon(b, a, zero_method="wilcox")
    return {**out, "t": float(t.statistic), "p_t": float(t.pvalue), "w": float(w.statistic), "p_w": float(w.pvalue)}


def load_per_user(record: dict, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(users [M], values [M])`` of a cell's per-user test ``metric`` (its ``per_user`` file; the
    full-ranking view ``full_<metric>`` when the cell was evaluated on candidates, as
    ``ranking_view`` reads the means), or None when the cell has none."""
    path = record.get("per_user")
    if not path or not Path(path).is_file():
        return None
    with np.load(path) as f:
        name = metric if metric in f.files else f"full_{metric}" if f"full_{metric}" in f.files else None
        return (np.asarray(f["user"]), np.asarray(f[name])) if name else None


def _seed_of(record: dict) -> Any:
    return record.get("data", {}).get("split_seed", record["key"].get("seed", record.get("seed")))


def paired_over_seeds(base: Sequence[dict], other: Sequence[dict], metric: str) -> dict | None:
    """The paired test over users of ``other``'s cells against ``base``'s (``paired_test``).

    Cells are paired by split seed (the same test users and held-out items); each user's value
    is its mean over the seeds both sides have, over the users every one of those cells
    evaluated, so one user is one pair. None when no seed has per-user files on both sides.
    Adds ``"seeds"`` and ``"users"`` to ``paired_test``'s record."""
    a_by = {_seed_of(r): r for r in base}
    b_by = {_seed_of(r): r for r in other}
    a_vals, b_vals, seeds = [], [], []
    for seed in [s for s in a_by if s in b_by]:
        a, b = load_per_user(a_by[seed], metric), load_per_user(b_by[seed], metric)
        if a is None or b is None:
            continue
        a_vals.append(dict(zip(a[0].tolist(), a[1]))), b_vals.append(dict(zip(b[0].tolist(), b[1])))
        seeds.append(seed)
    if not seeds:
        return None
    users = sorted(set.intersection(*(set(v) for v in a_vals + b_vals)))
    if len(users) < 2:
        return None
    a = np.mean([[v[u] for u in users] for v in a_vals], axis=0)
    b = np.mean([[v[u] for u in users] for v in b_vals], axis=0)
    return {**paired_test(a, b), "seeds": seeds, "users": len(users)}


def fmt_p(p: float | None) -> str:
    """A p-value for a table: ``0.003``, ``<1e-4``, or ``-``."""
    if p is None or not math.isfinite(p):
        return "-"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}" if p < 0.001 else f"{p:.3f}"


def fmt_significance(row: dict, metric: str = SIGNIFICANCE_METRIC) -> str:
    """The table cell ``p(t) / p(W)`` of ``row``'s paired tests on ``metric`` vs its base row."""
    pt, pw = row.get(f"{metric}_p_t"), row.get(f"{metric}_p_w")
    if pt is None or not math.isfinite(pt):
        return "-"
    return f"{fmt_p(pt)} / {fmt_p(pw)}"


#: The header of ``fmt_significance``'s column and the line tables add under their title.
SIGNIFICANCE_HEADER = "p N@10 (t / W)"
SIGNIFICANCE_NOTE = ("p N@10: paired t-test / Wilcoxon signed-rank over test users (per-user NDCG@10 averaged over "
                     "the seeds), this row vs the gain's base row")


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
    if std is None or not math.isfinite(std):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def over_seeds(seeds: Sequence[int]) -> str:
    """A table title's statistic: ``"mean ± std over seeds 2020,2021"``, or ``"one seed (2020), no std"``
    when there is one seed (the cells then show the value alone, ``fmt_mean_std``)."""
    seeds = list(seeds)
    if len(seeds) == 1:
        return f"one seed ({seeds[0]}), no std"
    return f"mean ± std over seeds {','.join(map(str, seeds))}"


def fmt_gain(g: float | None) -> str:
    if g is None or not math.isfinite(g):
        return "-"
    return f"{g:+.1f}%"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None,
                 align_left: int = 1) -> str:
    """Fixed-width text table; the first ``align_left`` columns left-aligned, the rest right."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < align_left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [title] if title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def backbone_label(name: str) -> str:
    return BACKBONE_LABELS.get(name, name)


def init_label(init: str, scale: str = "none") -> str:
    s = INIT_LABELS.get(init, init)
    if scale and scale != "none" and init != "none":
        s += f" [{scale}]"
    return s


def row_label(backbone: str, init: str, scale: str = "none") -> str:
    lab = init_label(init, scale)
    return backbone_label(backbone) + (f" + {lab}" if lab else "")


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(data), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_value(r.get(c)) for c in columns])
    return path


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return "" if v is None else v


def cell_rows(records: Sequence[dict],
              metrics: Sequence[str] = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")) -> list[dict]:
    """One flat CSV row per cell (per seed): key fields, metrics, epochs, seconds."""
    rows = []
    for r in records:
        row = dict(r["key"])
        row.update({m: r["test"].get(m) for m in metrics})
        row.update({f"valid_{m}": r["valid"].get(m) for m in metrics[:2]})
        row.update(best_epoch=r["best_epoch"], stopped_epoch=r["stopped_epoch"], seconds=round(r["seconds"], 1),
                   split_seed=r.get("data", {}).get("split_seed"))
        rows.append(row)
    return rows


def write_results(out_dir: Path, experiment: str, command: str, base: Config, records: Sequence[dict],
                  summary: Sequence[dict] | None = None, meta: dict | None = None, complete: bool = True) -> Path:
    """``results.json``: the command, the base config, every cell (config, seed, metrics), the summary."""
    import jax

    from jaxrec import __version__

    root = Path(out_dir).resolve()
    records = [_relative_per_user(r, root) for r in records]
    return write_json(Path(out_dir) / "results.json", {
        "experiment": experiment,
        "command": command,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "complete": complete,
        "base_config": base.to_dict(),
        "meta": meta or {},
        "summary": list(summary or []),
        "cells": list(records),
        "versions": {"jax": jax.__version__, "jaxrec": __version__, "python": sys.version.split()[0]},
    })


def _relative_per_user(record: dict, root: Path) -> dict:
    """The record with its per-user file named relative to ``root`` when it lies there (the folder
    stays movable; ``experiments.grid.load_previous_cells`` resolves it again)."""
    path = record.get("per_user")
    if not path or not Path(path).is_absolute() or not Path(path).is_relative_to(root):
        return record
    return {**record, "per_user": str(Path(path).relative_to(root))}


def finish(out_dir: Path, printed: str, files: Sequence[Path]) -> None:
    """Write the printed table to ``table.txt``, print it and where the files are."""
    (Path(out_dir) / "table.txt").write_text(printed + "\n")
    print(printed)
    print(f"\nwrote {', '.join(str(Path(f).name) for f in files)} in {out_dir}/")
