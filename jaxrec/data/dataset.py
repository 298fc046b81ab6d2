"""A split dataset with aligned side features, and how it is loaded.

``load_dataset`` reads RecBole atomic files; ``dataset_from_interactions`` applies the same
pipeline (filters -> split -> feature alignment) to ``Interactions`` built elsewhere.
Pipeline order: rating_threshold (if ``config.rating_threshold`` is set), drop_duplicates
(if ``config.dedup``), kcore (if ``config.kcore > 0``), then ``config.split`` with
``np.random.default_rng(config.seed)``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np

from ..config import Config
from ..registry import SPLITS
from . import filters
from .atomic import read_atomic
from .errors import DataError, where
from .filters import FilterReport
from .interactions import Interactions, remap_ids
from .locate import find_dataset, inter_file

log = logging.getLogger("jaxrec.data")
MISSING = ("error", "drop", "empty")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """train / valid / test share one id space; features are lists aligned with dense ids.

    item_features[col][i] belongs to dense item i (``train.item_ids[i]``); token_seq values
    are joined into one space-separated string, floats stay floats, float_seq stay arrays.
    """

    name: str
    train: Interactions
    valid: Interactions
    test: Interactions
    item_features: dict[str, list]
    user_features: dict[str, list]
    reports: list
    source: str

    @property
    def num_users(self) -> int:
        return self.train.num_users

    @property
    def num_items(self) -> int:
        return self.train.num_items

    @property
    def user_ids(self) -> np.ndarray:
        return self.train.user_ids

    @property
    def item_ids(self) -> np.ndarray:
        return self.train.item_ids

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, users={self.num_users}, items={self.num_items}, "
                f"train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)})")

    def summary(self) -> str:
        """Multi-line human-readable description: sizes, features, reports."""
        n = len(self.train) + len(self.valid) + len(self.test)
        dens = n / max(1, self.num_users * self.num_items)
        lines = [f"dataset {self.name} (from {self.source})",
                 f"  {self.num_users:,} users, {self.num_items:,} items, {n:,} interactions "
                 f"(density {dens:.4%})",
                 f"  train {len(self.train):,} / valid {len(self.valid):,} / test {len(self.test):,}",
                 f"  item features: {', '.join(self.item_features) or '-'}",
                 f"  user features: {', '.join(self.user_features) or '-'}"]
        lines += [f"  - {r}" for r in self.reports]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
def load_dataset(name_or_path, config: Config | None = None) -> Dataset:
    """Locate (see ``find_dataset``) and read ``<name>.inter`` (+ ``.item``/``.user`` if present),
    then filter and split as ``config`` says (default ``Config()``)."""
    config = config or Config()
    folder = find_dataset(name_or_path, config.data_dirs)
    ipath = inter_file(folder)
    name = ipath.stem
    cols, types = read_atomic(ipath, with_types=True)
    inter = interactions_from_columns(cols, ipath)
    tables = {}
    for kind in ("item", "user"):
        p = folder / f"{name}.{kind}"
        if p.is_file():
            tables[kind] = (read_atomic(p), str(p))
    item, user = tables.get("item"), tables.get("user")
    return dataset_from_interactions(
        name, inter, config,
        item_features=item[0] if item else None, user_features=user[0] if user else None,
        source=str(folder), item_source=item[1] if item else "item_features",
        user_source=user[1] if user else "user_features")


def interactions_from_columns(cols: Mapping[str, Any], path) -> Interactions:
    """Interactions from ``{user_id, item_id[, rating][, timestamp]}`` columns read from ``path``."""
    for need in ("user_id", "item_id"):
        if need not in cols:
            raise DataError(f"{path}: no {need!r} column (has {', '.join(cols)}); expected user_id:token "
                            f"and item_id:token")
    extra = {}
    for name in ("rating", "timestamp"):
        if name in cols:
            v = cols[name]
            if isinstance(v, list):
                raise DataError(f"{where(path, field=name)}: expected type float (one number per row), "
                                f"got a sequence type")
            try:
                extra[name] = np.asarray(v, dtype=np.float64)
            except ValueError:
                raise DataError(f"{where(path, field=name)}: expected numbers") from None
    for name in ("user_id", "item_id"):
        if isinstance(cols[name], list):
            raise DataError(f"{where(path, field=name)}: expected type token (one id per row), got a sequence type")
    return remap_ids(cols["user_id"], cols["item_id"], extra.get("rating"), extra.get("timestamp"))


def dataset_from_interactions(name: str, inter: Interactions, config: Config | None = None,
                              item_features: Mapping[str, Any] | None = None,
                              user_features: Mapping[str, Any] | None = None,
                              source: str = "", item_source: str = "item_features",
                              user_source: str = "user_features",
                              missing_features: str = "error") -> Dataset:
    """Filter, split and attach features to interactions built elsewhere.

    item_features / user_features: tables ``{"item_id": raw ids [m], col: values [m], ...}``
    (``"user_id"`` for users), as :func:`read_atomic` returns them; rows are matched to the
    interactions by original id. Table ids without interactions are reported and ignored.
    Interaction ids without a row: ``missing_features="error"`` raises DataError naming
    ``item_source``; ``"drop"`` removes those items' interactions first (reported);
    ``"empty"`` fills empty values.
    """
    config = config or Config()
    if missing_features not in MISSING:
        raise ValueError(f"missing_features: expected one of {MISSING}, got {missing_features!r}")
    reports: list = []
    if item_features is not None:
        missing = _match(item_features, "item_id", inter.item_ids, item_source, "item", reports)
        if missing.any():
            if missing_features == "error":
                _missing_error(item_source, "item_id", inter.item_ids[missing])
            if missing_features == "drop":
                inter, rep = filters.keep_items(
                    inter, ~missing, "missing_item_features",
                    f"items without a row in {item_source}, e.g. {_examples(inter.item_ids[missing])}")
                log.warning("%s", rep)
                reports.append(rep)
    if user_features is not None:
        missing = _match(user_features, "user_id", inter.user_ids, user_source, "user", reports)
        if missing.any() and missing_features == "error":
            _missing_error(user_source, "user_id", inter.user_ids[missing])
    if config.rating_threshold is not None:
        inter, rep = filters.rating_threshold(inter, config.rating_threshold)
        reports.append(rep)
    if config.dedup:
        inter, rep = filters.drop_duplicates(inter)
        reports.append(rep)
    if config.kcore > 0:
        inter, rep = filters.kcore(inter, config.kcore)
        reports.append(rep)
    rng = np.random.default_rng(config.seed)
    train, valid, test, rep = SPLITS.get(config.split)(inter, config, rng)
    reports.append(rep)
    items = _align(item_features, "item_id", inter.item_ids) if item_features is not None else {}
    users = _align(user_features, "user_id", inter.user_ids) if user_features is not None else {}
    return Dataset(name, train, valid, test, items, users, reports, source or name)


# --------------------------------------------------------------------------------------
def _examples(ids, k: int = 5) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:k])) + (", ..." if len(ids) > k else "")


def _missing_error(source: str, id_col: str, ids) -> None:
    raise DataError(f"{source}: {len(ids):,} {id_col}s of the interactions have no row, e.g. "
                    f"{_examples(ids)}; expected a row for every {id_col} in the interactions")


def _table_ids(table: Mapping[str, Any], id_col: str, source: str) -> np.ndarray:
    if id_col not in table:
        raise DataError(f"{source}: no {id_col!r} column (has {', '.join(table)}); expected {id_col}:token")
    ids = table[id_col]
    if isinstance(ids, list) and ids and isinstance(ids[0], list):
        raise DataError(f"{where(source, field=id_col)}: expected type token, got a sequence type")
    return np.asarray(ids).astype(str)


def _match(table, id_col, ids, source, kind, reports) -> np.ndarray:
    """bool [len(ids)]: which ids have no row in ``table``; reports table rows never used."""
    tids = _table_ids(table, id_col, source)
    uniq, first = np.unique(tids, return_index=True)
    if len(uniq) < len(tids):
        log.warning("%s: %d repeated %s values; the first row of each is used", source,
                    len(tids) - len(uniq), id_col)
    rows = _lookup(uniq, first, ids)
    unused = len(uniq) - int((rows >= 0).sum())
    if unused:
        rep = FilterReport(f"{kind}_features", 0, 0, 0,
                           f"{unused:,} {kind}s in {source} have no interactions and are not used")
        log.warning("%s", rep.detail)
        reports.append(rep)
    return rows < 0


def _lookup(uniq: np.ndarray, first: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(uniq) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(uniq, ids), len(uniq) - 1)
    return np.where(uniq[pos] == ids, first[pos], -1)


def _align(table: Mapping[str, Any], id_col: str, ids: np.ndarray) -> dict[str, list]:
    tids = np.asarray(table[id_col]).astype(str)
    uniq, first = np.unique(tids, return_index=True)
    rows = _lookup(uniq, first, ids)
    out = {}
    for col, values in table.items():
        if col == id_col:
            continue
        fill = _fill(values)
        out[col] = [_plain(values[r]) if r >= 0 else fill for r in rows]
    return out


def _fill(values):
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return float("nan")
    if isinstance(values, list) and values and isinstance(values[0], np.ndarray):
        return np.zeros(0)
    return ""


def _plain(v):
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    if isinstance(v, np.str_):
        return str(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


# --------------------------------------------------------------------------------------
def _check_stage(stage: str) -> None:
    if stage not in ("valid", "test"):
        raise ValueError(f"stage: expected 'valid' or 'test', got {stage!r}")


def exclusion_pairs(dataset: Dataset, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """(users int32 [E], items int32 [E]) unique pairs to mask in full ranking: the train
    pairs for ``"valid"``, train + valid pairs for ``"test"``; sorted by (user, item)."""
    _check_stage(stage)
    parts = [dataset.train] + ([dataset.valid] if stage == "test" else [])
    keys = np.unique(np.concatenate([p.keys() for p in parts]))
    n = dataset.num_items
    return (keys // n).astype(np.int32), (keys % n).astype(np.int32)


def truth(dataset: Dataset, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out items of ``stage`` in CSR form: (users sorted unique int32 [M],
    indptr int32 [M+1], items int32 [nnz]); user ``users[m]``'s items are
    ``items[indptr[m]:indptr[m+1]]``, sorted."""
    _check_stage(stage)
    part = dataset.valid if stage == "valid" else dataset.test
    order = np.lexsort((part.item, part.user))
    u, it = part.user[order], part.item[order]
    users, counts = np.unique(u, return_counts=True)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return users.astype(np.int32), indptr, it.astype(np.int32)


__all__ = ["Dataset", "load_dataset", "dataset_from_interactions", "interactions_from_columns",
           "exclusion_pairs", "truth"]
