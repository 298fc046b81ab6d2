"""A split dataset with aligned side features, and how it is loaded.

``load_dataset`` reads RecBole atomic files; ``dataset_from_interactions`` applies the same
pipeline (filters -> split -> feature alignment) to ``Interactions`` built elsewhere.
Pipeline: cell checks (empty ids, missing or non-finite ratings / timestamps: DataError,
or dropped and reported with ``config.missing="drop"``), missing features,
rating_threshold (if ``config.rating_threshold`` is set), drop_duplicates (if
``config.dedup``; else repeated (user, item) pairs are counted in a report), kcore (if
``config.kcore > 0``) or a protocol's counting pass, then ``config.split`` with
``np.random.default_rng(config.seed)``. Everything before the split is a
:class:`~jaxrec.data.cache.Prepared` dataset, cached on disk by the loaders.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config import Config
from ..registry import SPLITS
from . import filters
from .atomic import AtomicTable, read_atomic, read_atomic_table
from .cache import Prepared, cached_prepare
from .cells import check_cells
from .errors import DataError, where
from .filters import FilterReport
from .interactions import Interactions, dense_ids
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
def load_dataset(name_or_path, config: Config | None = None, cache: bool | None = None) -> Dataset:
    """Locate (see ``find_dataset``) and read ``<name>.inter`` (+ ``.item``/``.user`` if present),
    then filter and split as ``config`` says (default ``Config()``).

    The parsed and filtered data is cached (see :mod:`jaxrec.data.cache`) unless
    ``cache=False`` or ``config.data_cache`` is False (``cache=None`` follows the config).
    Raises DataError naming the file, line and field for bad input, before any compute.
    """
    config = config or Config()
    folder = find_dataset(name_or_path, config.data_dirs)
    ipath = inter_file(folder)
    name = ipath.stem
    side = {kind: folder / f"{name}.{kind}" for kind in ("item", "user")}
    side = {kind: p for kind, p in side.items() if p.is_file()}

    def build() -> Prepared:
        reports: list = []
        t = read_atomic_table(ipath, reports=reports)
        inter = interactions_from_table(t, missing=config.missing, reports=reports)
        tables = {kind: read_atomic(p, reports=reports) for kind, p in side.items()}
        return prepare(inter, config, item_features=tables.get("item"), user_features=tables.get("user"),
                       item_source=str(side.get("item", "item_features")),
                       user_source=str(side.get("user", "user_features")), reports=reports)

    prepared, _ = cached_prepare(name, "atomic", [ipath, *side.values()], _options(config), build,
                                 enabled=config.data_cache if cache is None else cache)
    return split_prepared(name, prepared, config, source=str(folder))


def _options(config: Config, **extra) -> dict:
    """The config fields (and loader arguments) that change a prepared dataset: its cache key."""
    return {"rating_threshold": config.rating_threshold, "dedup": config.dedup, "kcore": config.kcore,
            "missing": config.missing, **extra}


def interactions_from_columns(cols: Mapping[str, Any], path, missing: str = "error",
                              reports: list | None = None, line_of=None) -> Interactions:
    """Interactions from ``{user_id, item_id[, rating][, timestamp]}`` columns read from ``path``.

    Ids must be non-empty and ratings / timestamps finite. A row that is not:
    ``missing="error"`` raises DataError naming the line (``line_of(rows) -> lines``, else
    the 0-based row) and field; ``"drop"`` removes it and appends a FilterReport to
    ``reports``.
    """
    for need in ("user_id", "item_id"):
        if need not in cols:
            raise DataError(f"{path}: no {need!r} column (has {', '.join(cols)}); expected user_id:token "
                            f"and item_id:token")
    arrays = {}
    for name in ("user_id", "item_id"):
        v = cols[name]
        if isinstance(v, list) and v and isinstance(v[0], (list, np.ndarray)):
            raise DataError(f"{where(path, field=name)}: expected type token (one id per row), got a sequence type")
        a = np.asarray(v)
        arrays[name] = pa.array(a if a.dtype.kind == "U" else a.astype(str), type=pa.string())
    for name in ("rating", "timestamp"):
        if name in cols:
            v = cols[name]
            if isinstance(v, list) and v and isinstance(v[0], (list, np.ndarray)):
                raise DataError(f"{where(path, field=name)}: expected type float (one number per row), "
                                f"got a sequence type")
            try:
                a = np.asarray(v)
                arrays[name] = pa.array(a.astype(np.int64) if a.dtype.kind in "iu" and name == "timestamp"
                                        else np.asarray(v, dtype=np.float64))
            except (TypeError, ValueError, OverflowError):
                raise DataError(f"{where(path, field=name)}: expected numbers") from None
    return _interactions(pa.table(arrays), Path(str(path)), missing, reports, line_of)


def interactions_from_table(t: AtomicTable, missing: str = "error", reports: list | None = None) -> Interactions:
    """Interactions from a parsed ``.inter`` file (see :func:`interactions_from_columns`)."""
    cols = t.table.column_names
    for need in ("user_id", "item_id"):
        if need not in cols:
            raise DataError(f"{t.path}: no {need!r} column (has {', '.join(cols)}); expected user_id:token "
                            f"and item_id:token")
    for name in ("user_id", "item_id"):
        if t.types[name] != "token":
            raise DataError(f"{where(t.path, field=name)}: expected type token (one id per row), "
                            f"got {t.types[name]}")
    for name in ("rating", "timestamp"):
        if name in cols and t.types[name] != "float":
            raise DataError(f"{where(t.path, field=name)}: expected type float (one number per row), "
                            f"got {t.types[name]}")
    keep = [c for c in ("user_id", "item_id", "rating", "timestamp") if c in cols]
    return _interactions(t.table.select(keep), t.path, missing, reports, t.line_of)


def _interactions(table: pa.Table, path: Path, missing: str, reports: list | None, line_of,
                  names: Mapping[str, str] | None = None) -> Interactions:
    """Check cells (ids non-empty, numbers finite; see :func:`jaxrec.data.cells.check_cells`),
    then factorize ids (vectorized). ``names``: column -> the file's field name, for messages."""
    keep, detail = check_cells(table, path, line_of, missing, names)
    users, items = table.column("user_id"), table.column("item_id")
    if keep is not None:
        users, items = pc.fill_null(users, ""), pc.fill_null(items, "")
    with ThreadPoolExecutor(2) as pool:  # pyarrow hashes without the GIL: users and items at once
        (user_ids, user), (item_ids, item) = pool.map(dense_ids, (users, items))
    num = {k: _numbers(table.column(k)) for k in ("rating", "timestamp") if k in table.column_names}
    inter = Interactions(user, item, num.get("rating"), num.get("timestamp"), user_ids, item_ids)
    if keep is not None:
        inter, rep = filters._finish(inter, keep, "missing_values", detail)
        log.warning("%s", rep)
        if reports is not None:
            reports.append(rep)
    return inter


def _numbers(col) -> np.ndarray:
    """A number column as numpy: int64 stays int64 (exact timestamps beyond 2**53; a missing
    cell, whose row is dropped or refused by ``check_cells``, reads 0), floats float64 (NaN)."""
    if not len(col):
        return np.zeros(0, np.int64 if pa.types.is_integer(col.type) else np.float64)
    if pa.types.is_integer(col.type):
        return pc.fill_null(pc.cast(col, pa.int64()), 0).to_numpy()
    return pc.fill_null(pc.cast(col, pa.float64()), math.nan).to_numpy()


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
    ``"empty"`` fills empty values. Repeated (user, item) pairs are counted in a report
    (``config.dedup`` keeps the earliest of each).
    """
    config = config or Config()
    prepared = prepare(inter, config, item_features, user_features, item_source, user_source, missing_features)
    return split_prepared(name, prepared, config, source or name)


def prepare(inter: Interactions, config: Config, item_features: Mapping[str, Any] | None = None,
            user_features: Mapping[str, Any] | None = None, item_source: str = "item_features",
            user_source: str = "user_features", missing_features: str = "error",
            reports: list | None = None, count_filter=None) -> Prepared:
    """Every step of :func:`dataset_from_interactions` before the split (what the cache stores).

    Order: missing features, rating_threshold, repeated pairs (dedup or a count report),
    ``count_filter`` (a function ``inter -> (inter, FilterReport)``, e.g. A-LLMRec's
    counting pass) or kcore, feature alignment.
    """
    if missing_features not in MISSING:
        raise ValueError(f"missing_features: expected one of {MISSING}, got {missing_features!r}")
    reports = list(reports or [])
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
    else:
        rep = filters.repeated_pairs(inter)
        if rep is not None:
            log.warning("%s", rep)
            reports.append(rep)
    if count_filter is not None:
        inter, rep = count_filter(inter)
        reports.append(rep)
    elif config.kcore > 0:
        inter, rep = filters.kcore(inter, config.kcore)
        reports.append(rep)
    items = _align(item_features, "item_id", inter.item_ids) if item_features is not None else {}
    users = _align(user_features, "user_id", inter.user_ids) if user_features is not None else {}
    return Prepared(inter, items, users, reports)


def split_prepared(name: str, prepared: Prepared, config: Config, source: str = "") -> Dataset:
    """Split a prepared dataset as ``config.split`` says, with ``np.random.default_rng(config.seed)``."""
    inter = prepared.inter
    rng = np.random.default_rng(config.seed)
    train, valid, test, rep = SPLITS.get(config.split)(inter, config, rng)
    return Dataset(name, train, valid, test, dict(prepared.item_features), dict(prepared.user_features),
                   [*prepared.reports, rep], source or name)


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
    pairs for ``"valid"``, train + valid pairs for ``"test"``, sorted by (user, item).

    A pair that is also a held-out pair of ``stage`` is never masked: with repeated
    (user, item) interactions the test item can also sit in train, and masking it would
    remove the truth from its own ranking (a perfect model would score hit@1 < 1).
    """
    _check_stage(stage)
    parts = [dataset.train] + ([dataset.valid] if stage == "test" else [])
    keys = np.unique(np.concatenate([p.keys() for p in parts]))
    held = (dataset.valid if stage == "valid" else dataset.test).keys()
    if held.size:
        keys = keys[~np.isin(keys, held)]
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
