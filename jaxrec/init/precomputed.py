"""Precomputed item embeddings from disk, reordered to a dataset's dense item ids.

A ``.npy`` of shape [R, N] comes with an id list (one original item id per line; row r of
the array belongs to line r). By default the list is ``<stem>.item_ids.txt`` beside the
array, e.g. ``ml-100k.all-mpnet-base-v2.npy`` + ``ml-100k.all-mpnet-base-v2.item_ids.txt``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxrec.errors import JaxrecError

log = logging.getLogger("jaxrec.init")


class EmbeddingFileError(JaxrecError, ValueError):
    """A precomputed embedding file or its id list is unusable; the message names the file."""


@dataclasses.dataclass(frozen=True)
class PrecomputedReport:
    npy_path: str
    item_ids_path: str
    rows_in_file: int
    dim: int
    num_items: int  # dataset items, all found
    num_extra: int  # ids in the file that are not dataset items (ignored)
    extra_examples: tuple[str, ...]

    def __str__(self) -> str:
        s = f"precomputed embeddings {self.npy_path}: {self.rows_in_file} rows x {self.dim}"
        s += f", {self.num_items} dataset items"
        if self.num_extra:
            s += f"; {self.num_extra} ids not in the dataset ignored (e.g. {list(self.extra_examples)})"
        return s


def default_item_ids_path(npy_path: str | Path) -> Path:
    """``<dir>/<stem>.item_ids.txt`` for ``<dir>/<stem>.npy``."""
    p = Path(npy_path)
    stem = p.name[: -len(".npy")] if p.name.endswith(".npy") else p.name
    return p.with_name(stem + ".item_ids.txt")


def read_item_ids(path: str | Path) -> list[str]:
    """One id per line (surrounding whitespace stripped; trailing blank lines ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise EmbeddingFileError(f"item id list {path}: cannot read ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    ids = [ln.strip() for ln in lines]
    blank = [n + 1 for n, s in enumerate(ids) if not s]
    if blank:
        raise EmbeddingFileError(f"item id list {path}: {len(blank)} blank line(s), first at line {blank[0]}")
    return ids


def load_precomputed(
    npy_path: str | Path,
    item_ids_path: str | Path | None = None,
    *,
    dataset_item_ids: Sequence[str] | np.ndarray,
    return_report: bool = False,
) -> np.ndarray | tuple[np.ndarray, PrecomputedReport]:
    """Rows of ``npy_path`` for the dataset's items -> float32 [num_items, N].

    Row ``d`` of the result belongs to dense item ``d`` (original id ``dataset_item_ids[d]``).
    Raises ``EmbeddingFileError`` (naming the file) if the array is not 2-D, its row count
    differs from the id count, ids repeat, rows hold NaN/inf, or dataset items have no row.
    Ids not in the dataset are ignored and counted (logged; in the report if requested).
    """
    npy_path = Path(npy_path)
    ids_path = Path(item_ids_path) if item_ids_path is not None else default_item_ids_path(npy_path)
    if not npy_path.is_file():
        raise EmbeddingFileError(f"embedding file {npy_path}: not found")
    if not ids_path.is_file():
        raise EmbeddingFileError(f"item id list {ids_path} (for {npy_path}): not found")
    try:
        arr = np.load(npy_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EmbeddingFileError(f"embedding file {npy_path}: cannot read as .npy ({e})") from None
    if arr.ndim != 2:
        raise EmbeddingFileError(f"embedding file {npy_path}: expected a 2-D array [items, N], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise EmbeddingFileError(f"embedding file {npy_path}: expected numbers, got dtype {arr.dtype}")
    ids = read_item_ids(ids_path)
    if len(ids) != arr.shape[0]:
        raise EmbeddingFileError(
            f"embedding file {npy_path} has {arr.shape[0]} rows but item id list {ids_path} has {len(ids)} ids"
        )
    uniq, counts = np.unique(np.asarray(ids, dtype=str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise EmbeddingFileError(f"item id list {ids_path}: {len(dup)} duplicated id(s), e.g. {dup[:5].tolist()}")
    bad_rows = ~np.isfinite(arr).all(axis=1)
    if bad_rows.any():
        first = np.flatnonzero(bad_rows)[:5]
        raise EmbeddingFileError(
            f"embedding file {npy_path}: {int(bad_rows.sum())} row(s) hold NaN or inf "
            f"(rows {first.tolist()}, ids {[ids[r] for r in first]})"
        )
    want = [str(x) for x in np.asarray(dataset_item_ids).tolist()]
    if len(set(want)) != len(want):
        raise ValueError("dataset_item_ids: ids repeat; expected one original id per dense item")
    row_of = {iid: r for r, iid in enumerate(ids)}
    missing = [iid for iid in want if iid not in row_of]
    if missing:
        raise EmbeddingFileError(
            f"embedding file {npy_path} (ids {ids_path}): no row for {len(missing)} of {len(want)} dataset "
            f"items, e.g. {missing[:5]}"
        )
    rows = np.fromiter((row_of[iid] for iid in want), dtype=np.int64, count=len(want))
    out = np.ascontiguousarray(arr[rows], dtype=np.float32)
    wanted = set(want)
    extra = [iid for iid in ids if iid not in wanted]
    if extra:
        log.info("%s: %d ids not in the dataset ignored (e.g. %s)", npy_path, len(extra), extra[:5])
    if return_report:
        report = PrecomputedReport(
            str(npy_path), str(ids_path), arr.shape[0], arr.shape[1], len(want), len(extra), tuple(extra[:5])
        )
        return out, report
    return out
