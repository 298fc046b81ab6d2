"""Experiment figures (matplotlib, Agg backend): grouped bars with error bars, saved as PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def metric_series(rows: Sequence[dict], groups: Sequence, group_of: Callable[[dict], Any],
                  series_of: Callable[[dict], Any], label_of: Callable[[Any], str], metric: str,
                  series: Sequence | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """``{label_of(s): ([mean per group], [std per group])}`` of summary ``rows`` for ``grouped_bars``.

    One entry per series key (``series``, or the keys of ``rows`` in order); NaN where no row
    has that (group, series) pair.
    """
    index: dict = {}
    for r in rows:
        index.setdefault((group_of(r), series_of(r)), r)
    keys = series if series is not None else list(dict.fromkeys(series_of(r) for r in rows))
    out = {}
    for key in keys:
        vals = [index.get((g, key)) for g in groups]
        out[label_of(key)] = ([v[f"{metric}_mean"] if v else float("nan") for v in vals],
                              [v[f"{metric}_std"] if v else float("nan") for v in vals])
    return out


def grouped_bars(ax, groups: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float]]],
                 ylabel: str, title: str | None = None) -> None:
    """Bars per group (x) and series (colour) with std error bars (NaN std: none)."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    for j, (name, (means, stds)) in enumerate(series.items()):
        means = np.asarray(means, float)
        errs = np.nan_to_num(np.asarray(stds, float), nan=0.0)
        ax.bar(x - 0.4 + width * (j + 0.5), means, width, yerr=errs if errs.any() else None, capsize=2, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    finite = []
    for means, stds in series.values():
        for m, sd in zip(np.asarray(means, float), np.nan_to_num(np.asarray(stds, float), nan=0.0)):
            if math.isfinite(m):
                finite += [m - sd, m + sd]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1e-9) - 0.05 * hi), hi + 0.15 * (hi - lo + 1e-9) + 0.05 * hi)
    ax.legend(fontsize=7)
