"""The long-short update (DESIGN.md 8): fresh interactions and new items onto a trained run.

The survey's production recipe refreshes the expensive LLM side rarely (only texts never
seen before are encoded; every other text embedding comes from the cache) and retrains the
cheap CF model often. ``update(run, interactions, out_dir, items=..., users=...)``:

1. **Data.** The run's atomic files plus the new rows are written to ``<out_dir>/data/<name>/``
   (the run's rows first, then the new ones; the new files must have the run's fields and
   types, in any order, and are checked line by line first). Rows of ``--items`` /
   ``--users`` for ids the run already has are not appended (the run's text stays; they
   are counted, with how many differ). The merged folder is loaded with the run's config
   (filters and ``split`` as the run had them), so the updated run is an ordinary run
   whose ``config.dataset`` is that folder. Interaction ids without an item (user) row,
   when the run's dataset has an item (user) file, are an error naming the files.
2. **Text embeddings of new items.** From the run's embedding source (``init.json``
   "source", else the config): a precomputed file (rows looked up by original id), or the
   encoder through the on-disk cache (``jaxrec.init.cache``): the run's item texts are one
   cache entry (a hit, normally), only texts not in it are encoded, and the merged item
   list is stored as a new entry. ``EmbeddingUpdate`` counts encoded texts and cached rows.
3. **Parameters** (``carry_params``): every row of a user or item the run knows starts from
   the run's best parameters (old dense id -> new dense id by original id; padding rows and
   every parameter that is not an embedding table copied as they are). New item rows:
   ``new_items="llm"`` maps their text embeddings exactly as the run's own items were
   (``jaxrec.init.record.item_rows``: the stored selected dims and scaling);
   ``"random"`` takes them from ``model.init`` with the run's init key (the rows a fresh
   run would draw); ``"auto"`` is ``llm`` for an LLM-initialized run, else ``random``.
   New users (models with a user table) start as the mean of their training items' rows
   (the item table above; LLMInit's pooling, ``jaxrec.init.pooling``); a user without
   training items gets a zero row. ``new_row_scale="trained"`` then scales the new rows to
   the mean norm of the trained ones (``carry_params``).
4. **Training** continues through ``jaxrec.fit(params=...)`` on the merged data for
   ``epochs`` (default: the run's config; early stopping as configured), with a fresh
   optimizer, then evaluates as usual. The run folder gets ``init.json`` (the parent's
   record, so later updates use the same selection), ``update.json`` (everything below) and
   ``results.json`` with ``parent`` (the parent run, its dataset fingerprint and metrics)
   and ``update``.

Publication (``jaxrec.train.runfolder``): the update holds ``out_dir``'s writers' lock from
before it writes the merged data until the new run is published; everything (``data/``, the
checkpoints, the JSON files above) is written into ``out_dir/in-progress/`` and published in
one atomic step when training ends. With ``overwrite`` the run already in ``out_dir`` stays
readable (and served) until then; a process killed at any moment leaves it, or the complete
update. ``config.dataset`` of the updated run is ``<out_dir>/data/<name>``, read from the
version being read.

Evaluation caveat: the merged data is split again by the run's ``split``. With a time-ordered
leave-one-out split (``loo_time``) the parent's training interactions stay training
interactions; with a random split some of the new test interactions may be ones the parent
trained on. ``UpdateReport.test_seen_by_parent`` counts them (logged when non-zero).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.config import ConfigError
from jaxrec.data import DataError, Dataset, load_dataset
from jaxrec.data.atomic import read_atomic_header, read_atomic_table
from jaxrec.data.fingerprint import dataset_fingerprint
from jaxrec.data.locate import inter_file
from jaxrec.data.textio import decoded_lines, file_sha256, sniff_encoding
from jaxrec.errors import RunExistsError
from jaxrec.init.record import item_rows
from jaxrec.models import Model, Params, get_model
from jaxrec.serve.run import IdIndex, Run, ServeError
from jaxrec.train.runfolder import WORK, RunFolder, WriterLock, _sync, complete_checkpoint, published_version

log = logging.getLogger("jaxrec.serve")

NEW_ITEMS = ("auto", "llm", "random")
UPDATE_FILE = "update.json"


# --------------------------------------------------------------------------- 1. data files
@dataclasses.dataclass(frozen=True)
class MergeReport:
    """How one atomic file of the updated dataset was made."""

    kind: str  # inter | item | user
    parent_file: str
    new_file: str | None
    out_file: str
    parent_rows: int
    appended: int  # new rows written
    skipped_existing: int = 0  # rows of the new file for ids the run has (the run's row kept)
    changed_existing: int = 0  # of those, rows whose text differs from the run's

    def __str__(self) -> str:
        s = f".{self.kind}: {self.parent_rows:,} rows of the run + {self.appended:,} new"
        if self.new_file:
            s += f" (from {self.new_file})"
        if self.skipped_existing:
            s += (f"; {self.skipped_existing:,} rows for ids the run already has kept the run's row "
                  f"({self.changed_existing:,} of them differ)")
        return s


def _rows(path: Path) -> Iterator[str]:
    """The data rows of an atomic file as text: every non-empty line after the header."""
    for no, line in decoded_lines(path, sniff_encoding(path)):
        if no > 1 and line:
            yield line


def _header_text(header: dict[str, str]) -> str:
    return "\t".join(f"{n}:{t}" for n, t in header.items())


def _check_header(new: Path, parent: Path) -> tuple[dict[str, str], list[int] | None]:
    """(parent header, positions of the parent's fields in the new file or None if same order)."""
    ph, nh = read_atomic_header(parent), read_atomic_header(new)
    if sorted(ph.items()) != sorted(nh.items()):
        raise DataError(f"{new}: header {_header_text(nh)!r} does not match the run's {parent} "
                        f"({_header_text(ph)!r}); expected the same fields and types (in any order)")
    names = list(nh)
    order = [names.index(f) for f in ph]
    return ph, None if order == list(range(len(names))) else order


def _ids(path: Path, field: str) -> np.ndarray:
    """The ``field`` column of an atomic file as str [n], every row checked (DataError naming the line)."""
    col = read_atomic_table(path).table.column(field)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=str) if len(col) else np.zeros(0, str)


def merge_atomic(kind: str, parent: Path, new: Path | None, out: Path, id_field: str | None = None,
                 new_ids: np.ndarray | None = None) -> MergeReport:
    """Write ``out``: the header and rows of ``parent`` then the rows of ``new`` in the
    parent's field order. With ``id_field``, rows of ``new`` for ids the parent has are left
    out and counted (``new_ids``: that column of ``new``, else parsed here)."""
    order, keep, parent_text = None, None, {}
    header = read_atomic_header(parent)
    if new is not None:
        header, order = _check_header(new, parent)
        if id_field:
            new_ids = _ids(new, id_field) if new_ids is None else new_ids
            pos = list(header).index(id_field)
            wanted = set(new_ids.tolist())
            for text in _rows(parent):
                key = text.split("\t")[pos]
                if key in wanted:
                    parent_text.setdefault(key, text)
            keep = ~np.isin(new_ids, np.asarray(list(parent_text), dtype=str))
    out.parent.mkdir(parents=True, exist_ok=True)
    parent_rows = appended = skipped = changed = 0
    id_pos = list(header).index(id_field) if id_field else None
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write(_header_text(header) + "\n")
        for text in _rows(parent):
            f.write(text + "\n")
            parent_rows += 1
        for r, text in enumerate(_rows(new) if new is not None else ()):
            if order is not None:
                cells = text.split("\t")
                text = "\t".join(cells[j] for j in order)
            if keep is not None and not keep[r]:
                skipped += 1
                changed += parent_text[text.split("\t")[id_pos]] != text
                continue
            f.write(text + "\n")
            appended += 1
    return MergeReport(kind, str(parent), None if new is None else str(new), str(out), parent_rows, appended,
                       skipped, int(changed))


def dataset_files(run: Run) -> tuple[Path, str, dict[str, Path]]:
    """(folder, name, {kind: file}) of the run's atomic dataset; ServeError if it has none."""
    folder = Path(run.dataset.source)
    try:
        ipath = inter_file(folder)
    except (DataError, OSError):
        raise ServeError(f"run {run.path}: its dataset was not read from atomic files (source {run.dataset.source!r}); "
                         "an update appends to the run's .inter/.item/.user files") from None
    name = ipath.stem
    files = {"inter": ipath}
    for kind in ("item", "user"):
        p = folder / f"{name}.{kind}"
        if p.is_file():
            files[kind] = p
    return folder, name, files


def _missing_rows(new_inter: Path, ids: np.ndarray, field: str, parent: Path, parent_ids: np.ndarray,
                  new: Path | None, new_ids: np.ndarray | None, flag: str) -> None:
    """DataError when ``ids`` (the ``field`` column of the new interactions) have no row in
    ``parent`` or ``new``."""
    have = np.concatenate([parent_ids, new_ids if new_ids is not None else np.zeros(0, str)])
    uniq = np.unique(ids)
    missing = uniq[~np.isin(uniq, have)]
    if missing.size:
        shown = ", ".join(map(repr, missing[:5].tolist())) + (", ..." if missing.size > 5 else "")
        raise DataError(f"{new_inter}: {missing.size:,} {field}(s) have no row in {parent}"
                        + (f" or {new}" if new is not None else "") + f", e.g. {shown}; pass their rows with {flag}")


def merge_files(run: Run, interactions: str | Path, items: str | Path | None, users: str | Path | None,
                folder: Path) -> tuple[Path, list[MergeReport]]:
    """Write the updated dataset's atomic files into ``folder/<name>/`` (module docstring,
    step 1); every input is checked before anything is written."""
    _, name, files = dataset_files(run)
    new = {"inter": Path(interactions), "item": None if items is None else Path(items),
           "user": None if users is None else Path(users)}
    flags = {"inter": "--interactions", "item": "--items", "user": "--users"}
    for kind, path in new.items():
        if path is not None and not path.is_file():
            raise DataError(f"{path} ({flags[kind]}): file not found; expected a RecBole atomic .{kind} file")
        if path is not None and kind not in files:
            raise DataError(f"{path} ({flags[kind]}): the run's dataset has no .{kind} file to add these rows to")
    _check_header(new["inter"], files["inter"])
    inter = read_atomic_table(new["inter"]).table
    new_ids = {}
    for kind in ("item", "user"):
        if kind not in files:
            continue
        field = f"{kind}_id"
        new_ids[kind] = _ids(new[kind], field) if new[kind] is not None else None
        col = inter.column(field)
        ids = np.asarray(col.to_numpy(zero_copy_only=False), dtype=str) if len(col) else np.zeros(0, str)
        _missing_rows(new["inter"], ids, field, files[kind], _ids(files[kind], field), new[kind], new_ids[kind],
                      f"{flags[kind]} NEW.{kind}")
    out = folder / name
    reports = [merge_atomic(kind, files[kind], new[kind], out / f"{name}.{kind}",
                            None if kind == "inter" else f"{kind}_id", new_ids.get(kind))
               for kind in ("inter", "item", "user") if kind in files]
    for r in reports:
        log.info("update data %s", r)
    return out, reports


# ------------------------------------------------------------ 2. text embeddings of new items
@dataclasses.dataclass(frozen=True)
class EmbeddingUpdate:
    """Where the new items' text embeddings came from."""

    source: str  # "precomputed <file>" or "encoder <id>"
    new_items: int  # items the run did not have
    from_file: int = 0  # rows read from a precomputed file
    encoded: int = 0  # distinct texts encoded now
    from_cache: int = 0  # rows of the updated item list that came from the cache
    cache_entry: str | None = None

    def __str__(self) -> str:
        if self.from_file or self.source.startswith("precomputed"):
            return f"text embeddings: {self.new_items:,} new items, rows from {self.source}"
        return (f"text embeddings ({self.source}): {self.new_items:,} new items; {self.encoded:,} texts encoded, "
                f"{self.from_cache:,} rows from the cache")


class _CountingEncoder:
    """Wraps an encoder name or object: loads it only when a text has to be encoded and
    counts the texts it encodes."""

    def __init__(self, encoder: Any, batch_size: int = 64, progress: bool = False):
        from jaxrec.init.encoders import encoder_cache_id, encoder_id  # noqa: PLC0415

        self.source = encoder
        self.name = encoder_cache_id(encoder) if isinstance(encoder, (str, Path)) else encoder_id(encoder)
        self.loaded = None if isinstance(encoder, (str, Path)) else encoder
        self.batch_size, self.progress, self.count = batch_size, progress, 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        from jaxrec.init.encoders import encode_texts, load_encoder  # noqa: PLC0415

        if self.loaded is None:
            self.loaded = load_encoder(str(self.source))
        self.count += len(texts)
        return encode_texts(self.loaded, texts, batch_size=self.batch_size, progress=self.progress)


def new_item_embeddings(run: Run, dataset: Dataset, new_items: np.ndarray, encoder: Any = None,
                        cache_dir: str | Path | None = None, progress: bool = False
                        ) -> tuple[np.ndarray, EmbeddingUpdate]:
    """Text embeddings float32 [len(new_items), N] of the dense ``new_items`` of ``dataset``
    (module docstring, step 2). ``encoder``: a loaded encoder object used instead of loading
    the run's (its ``.name`` must be the run's encoder id for the cache to match)."""
    from jaxrec.init import load_precomputed  # noqa: PLC0415
    from jaxrec.init.cache import cached_item_embeddings  # noqa: PLC0415
    from jaxrec.init.encoders import cache_root  # noqa: PLC0415
    from jaxrec.init.text import item_texts, template_for  # noqa: PLC0415

    src = dict((run.init or {}).get("source") or {})
    file = src.get("embeddings", run.config.embeddings)
    name = src.get("encoder", run.config.encoder) if encoder is None else encoder
    if file:
        emb = load_precomputed(file, dataset_item_ids=dataset.item_ids[new_items]) if new_items.size else None
        n = int(new_items.size)
        return (emb if emb is not None else np.zeros((0, run.init["n"]), np.float32),
                EmbeddingUpdate(f"precomputed {file}", n, from_file=n))
    if name is None:
        raise ServeError(f"run {run.path}: no embedding source (init.json source / config embeddings, encoder) "
                         "to embed new items' texts with")
    if not dataset.item_features:
        raise ServeError(f"dataset {dataset.name!r} has no item features: no texts to embed new items from")
    enc = _CountingEncoder(name, progress=progress)
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "embeddings"
    old_template = template_for(run.dataset.name, run.dataset.item_features)
    template = template_for(dataset.name, dataset.item_features)
    if template != old_template:
        raise ServeError(f"item text template changed ({old_template!r} -> {template!r}): the updated dataset's "
                         "item fields differ from the run's")
    old_texts, _ = item_texts(run.dataset.item_features, template)
    texts, _ = item_texts(dataset.item_features, template)
    old_emb, old_info = cached_item_embeddings(enc.name, old_texts, template, cache, enc)
    known = {t: r for r, t in enumerate(old_texts)}
    from_cache = {"rows": 0}

    def encode_new(all_texts: list[str]) -> np.ndarray:
        fresh = list(dict.fromkeys(t for t in all_texts if t not in known))
        fresh_emb = enc(fresh) if fresh else np.zeros((0, old_emb.shape[1]), np.float32)
        fresh_row = {t: r for r, t in enumerate(fresh)}
        out = np.empty((len(all_texts), old_emb.shape[1]), np.float32)
        for r, t in enumerate(all_texts):
            out[r] = old_emb[known[t]] if t in known else fresh_emb[fresh_row[t]]
        from_cache["rows"] = sum(t in known for t in all_texts) if old_info.hit else 0
        return out

    emb, info = cached_item_embeddings(enc.name, texts, template, cache, encode_new)
    rows = len(texts) if info.hit else from_cache["rows"]
    report = EmbeddingUpdate(f"encoder {enc.name}", int(new_items.size), encoded=enc.count, from_cache=rows,
                             cache_entry=str(info.path))
    return np.asarray(emb)[new_items], report


# ------------------------------------------------------------------------- 3. parameters
@dataclasses.dataclass(frozen=True)
class CarryReport:
    """How the updated run's parameters were made from the parent's."""

    new_items_init: str  # llm | random
    users_kept: int
    users_new: int
    users_dropped: int  # users of the run that the updated dataset no longer has
    items_kept: int
    items_new: int
    items_dropped: int
    new_users_without_items: int = 0  # new users with no training interaction (zero rows)
    new_row_scale: str = "init"  # init | trained
    scale_factors: dict | None = None  # trained: {"item": f, "user": f}

    def __str__(self) -> str:
        s = (f"parameters: {self.users_kept:,} users and {self.items_kept:,} items from the run's best params; "
             f"{self.items_new:,} new items ({self.new_items_init} init), {self.users_new:,} new users (pooled from "
             "their items)")
        if self.scale_factors:
            s += "; new rows scaled to the trained rows' mean norm (" + ", ".join(
                f"{side} x{f:.3g}" for side, f in self.scale_factors.items()) + ")"
        if self.users_dropped or self.items_dropped:
            s += f"; {self.users_dropped:,} users and {self.items_dropped:,} items of the run are not in the update"
        if self.new_users_without_items:
            s += f"; {self.new_users_without_items:,} new users have no training items (zero rows)"
        return s


def old_positions(old_ids: np.ndarray, new_ids: np.ndarray) -> np.ndarray:
    """int64 [len(new_ids)]: each new id's dense id in ``old_ids``, -1 if it is new."""
    old_ids, new_ids = np.asarray(old_ids).astype(str), np.asarray(new_ids).astype(str)
    if old_ids.size == 0:
        return np.full(new_ids.size, -1, np.int64)
    index = IdIndex(old_ids, "id")
    pos = np.minimum(np.searchsorted(index.sorted, new_ids), old_ids.size - 1)
    return np.where(index.sorted[pos] == new_ids, index.order[pos], -1).astype(np.int64)


def _leaf_paths(tree: Any) -> dict[str, Any]:
    return {jax.tree_util.keystr(p, simple=True, separator="/"): x
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _mean_norm(rows: np.ndarray) -> float:
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    return float(norms[norms > 0].mean()) if (norms > 0).any() else 0.0


def _match_norm(table: np.ndarray, new_rows: np.ndarray, kept_rows: np.ndarray) -> float:
    """Scale ``table[new_rows]`` in place by one factor so their mean row norm is that of
    ``table[kept_rows]``; returns the factor (1 when either side is empty or zero)."""
    target, now = _mean_norm(table[kept_rows]), _mean_norm(table[new_rows])
    factor = target / now if target > 0 and now > 0 else 1.0
    table[new_rows] *= np.asarray(factor, table.dtype)
    return factor


NEW_ROW_SCALES = ("init", "trained")


def carry_params(run: Run, dataset: Dataset, model: Model, key: jax.Array,
                 new_item_rows: np.ndarray | None = None, new_items_init: str = "random",
                 new_row_scale: str = "init") -> tuple[Params, CarryReport]:
    """The updated run's starting parameters (module docstring, step 3).

    ``model``: the backbone built from the updated config (its tables must have the run's
    widths); ``key``: ``model.init``'s key (the random rows of new items come from it);
    ``new_item_rows``: float [new items, d] for the items of ``dataset`` the run does not
    have, in dense id order (None: the random rows). ``new_row_scale``: ``init`` keeps new
    rows at their initializer's scale; ``trained`` multiplies the new item rows, then the
    new (pooled) user rows, by one factor per table so that their mean row norm equals the
    mean row norm of the carried, trained rows (trained tables grow: ml-100k LightGCN item
    rows from 0.48 at LLM init to about 2.7). Raises ``ServeError`` for a parameter whose
    shape changed that is not a declared embedding table.
    """
    if new_row_scale not in NEW_ROW_SCALES:
        raise ServeError(f"new_row_scale={new_row_scale!r}: expected one of {', '.join(NEW_ROW_SCALES)}")
    base = model.init(key, dataset.num_users, dataset.num_items)
    new = {k: np.array(v) for k, v in _leaf_paths(base).items()}
    old = {k: np.asarray(v) for k, v in _leaf_paths(run.params).items()}
    if set(new) != set(old):
        raise ServeError(f"the updated model's parameters {sorted(new)} differ from the run's {sorted(old)}")
    tables = model.tables
    table_keys = {spec.key: side for side, spec in tables.items()}
    for name in new:
        if name not in table_keys and new[name].shape != old[name].shape:
            raise ServeError(f"parameter {name!r} has shape {old[name].shape} in the run but {new[name].shape} in the "
                             "update, and is not an embedding table the update can map by id")
        if name not in table_keys:
            new[name] = old[name]
    counts: dict[str, tuple[int, int, int]] = {}
    positions = {}
    for side, spec in tables.items():
        ids_old = run.dataset.user_ids if side == "user" else run.dataset.item_ids
        ids_new = dataset.user_ids if side == "user" else dataset.item_ids
        pos = old_positions(ids_old, ids_new)
        positions[side] = pos
        o, t = old[spec.key], new[spec.key]
        if o.shape[1:] != t.shape[1:]:
            raise ServeError(f"table {spec.key!r}: rows of shape {o.shape[1:]} in the run, {t.shape[1:]} in the update "
                             "(embedding_size changed?)")
        off = spec.offset
        t[:off] = o[:off]
        kept = np.flatnonzero(pos >= 0)
        t[off + kept] = o[off + pos[kept]]
        counts[side] = (kept.size, int((pos < 0).sum()), len(ids_old) - kept.size)
    pos_items = positions.get("item", old_positions(run.dataset.item_ids, dataset.item_ids))
    new_items = np.flatnonzero(pos_items < 0)
    if "item" in tables and new_item_rows is not None:
        spec = tables["item"]
        rows = np.asarray(new_item_rows)
        if rows.shape != (new_items.size, new[spec.key].shape[1]):
            raise ServeError(f"new item rows: expected shape {(new_items.size, new[spec.key].shape[1])}, got {rows.shape}")
        new[spec.key][spec.offset + new_items] = rows
    factors = {}
    if new_row_scale == "trained" and "item" in tables and new_items.size:
        spec = tables["item"]
        factors["item"] = _match_norm(new[spec.key], spec.offset + new_items,
                                      spec.offset + np.flatnonzero(pos_items >= 0))
    empty_new = 0
    if "user" in tables and "item" in tables:
        from jaxrec.init.pooling import user_table_from_items  # noqa: PLC0415

        ispec, uspec = tables["item"], tables["user"]
        new_users = np.flatnonzero(positions["user"] < 0)
        if new_users.size:
            pooled, _ = user_table_from_items(new[ispec.key][ispec.offset:], dataset.train.user, dataset.train.item,
                                              dataset.num_users)
            new[uspec.key][uspec.offset + new_users] = np.asarray(pooled)[new_users]
            degree = np.bincount(dataset.train.user, minlength=dataset.num_users)
            empty_new = int((degree[new_users] == 0).sum())
            if new_row_scale == "trained":
                factors["user"] = _match_norm(new[uspec.key], uspec.offset + new_users,
                                              uspec.offset + np.flatnonzero(positions["user"] >= 0))
    user_counts = counts.get("user", (0, 0, 0))
    if "user" not in tables:  # no user table: count users by id all the same
        pos_u = old_positions(run.dataset.user_ids, dataset.user_ids)
        user_counts = (int((pos_u >= 0).sum()), int((pos_u < 0).sum()), run.dataset.num_users - int((pos_u >= 0).sum()))
    item_counts = counts.get("item", (int((pos_items >= 0).sum()), new_items.size,
                                      run.dataset.num_items - int((pos_items >= 0).sum())))
    report = CarryReport(new_items_init if new_items.size else "-", *user_counts, *item_counts, empty_new,
                         new_row_scale, factors or None)
    leaves = jax.tree_util.tree_flatten_with_path(base)[0]
    params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(base), [
        jnp.asarray(new[jax.tree_util.keystr(p, simple=True, separator="/")], dtype=x.dtype) for p, x in leaves])
    return params, report


# ------------------------------------------------------------------------------ 4. update
@dataclasses.dataclass(frozen=True)
class UpdateReport:
    """Everything ``update`` did (``update.json``)."""

    parent: str
    parent_dataset: dict
    dataset: dict
    inputs: dict  # flag -> {"path", "sha256"}
    merge: list
    embeddings: dict | None
    carry: dict
    test_seen_by_parent: int  # test interactions of the update the parent trained on
    seconds: dict

    def lines(self) -> list[str]:
        out = [str(MergeReport(**m)) for m in self.merge]
        if self.embeddings is not None:
            out.append(str(EmbeddingUpdate(**self.embeddings)))
        out.append(str(CarryReport(**self.carry)))
        if self.test_seen_by_parent:
            out.append(f"{self.test_seen_by_parent:,} test interactions of the update were training interactions "
                       "of the parent (random split): its test metrics are optimistic; use split=loo_time")
        return out


@dataclasses.dataclass
class UpdateResult:
    """What ``update`` returns: the training result, the report and the updated dataset."""

    result: Any  # jaxrec.train.RunResult
    report: UpdateReport
    dataset: Dataset


def _pair_keys(inter, user_ids, item_ids) -> np.ndarray:
    return np.char.add(np.char.add(np.asarray(user_ids)[inter.user].astype(str), "\t"),
                       np.asarray(item_ids)[inter.item].astype(str))


def test_seen_by_parent(run: Run, dataset: Dataset) -> int:
    """How many test interactions of ``dataset`` are training interactions of the run (by original ids)."""
    tr = run.dataset.train
    seen = _pair_keys(tr, run.dataset.user_ids, run.dataset.item_ids)
    test = _pair_keys(dataset.test, dataset.user_ids, dataset.item_ids)
    return int(np.isin(test, seen).sum())


def resolve_new_items(run: Run, new_items: str) -> str:
    """``auto`` -> ``llm`` for an LLM-initialized run (with a reusable init.json), else ``random``."""
    if new_items not in NEW_ITEMS:
        raise ServeError(f"new_items={new_items!r}: expected one of {', '.join(NEW_ITEMS)}")
    rec = run.init
    llm_ok = bool(rec and rec.get("strategy") != "none" and rec.get("reusable"))
    if new_items == "auto":
        if rec is None and run.config.init != "none":
            log.warning("run %s has no init.json (not trained by jaxrec train / train_run): new items get random rows",
                        run.path)
        return "llm" if llm_ok else "random"
    if new_items == "llm" and not llm_ok:
        if rec is None:
            why = "has no init.json"
        elif rec.get("strategy") == "none":
            why = "was not LLM-initialized"
        else:
            why = f"was initialized with {rec.get('strategy')!r}, which stores no per-item map"
        raise ServeError(f"new_items='llm': run {run.path} {why}; use new_items='random'")
    return new_items


def _sha(path: Path | None) -> dict | None:
    return None if path is None else {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}


def update(run: Run, interactions: str | Path, out_dir: str | Path, *, items: str | Path | None = None,
           users: str | Path | None = None, epochs: int | None = None, sets: Sequence[str] = (),
           new_items: str = "auto", new_row_scale: str = "init", encoder: Any = None,
           cache_dir: str | Path | None = None, overwrite: bool = False, progress: bool | None = None) -> UpdateResult:
    """The long-short update of ``run`` with new ``interactions`` (an atomic .inter file) and
    the rows of new ``items`` / ``users`` into the run folder ``out_dir`` (module docstring).

    Args:
      epochs: training epochs of the update (default the run's ``epochs``).
      sets: ``key=value`` overrides of the run's config (e.g. ``patience=5``).
      new_items: ``auto`` | ``llm`` | ``random`` (module docstring, step 3).
      new_row_scale: ``init`` (new rows at their initializer's scale) or ``trained`` (scaled
        to the carried rows' mean norm; ``carry_params``).
      encoder: an encoder object to embed new texts with instead of loading the run's.
      cache_dir: the text-embedding cache (default ``$JAXREC_CACHE/embeddings``).
    Raises (before any training): ``ServeError`` (bad ``new_items``, ``out_dir`` is the run's
    folder), ``DataError`` (files missing, headers that differ, ids without rows, bad rows),
    ``ConfigError`` (bad overrides), ``FileExistsError`` (``out_dir`` holds a run and not
    ``overwrite``), ``EmbeddingFileError`` (new items without a precomputed row).
    """
    from jaxrec.train import check_run, fit  # noqa: PLC0415
    from jaxrec.train.state import run_keys  # noqa: PLC0415

    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.resolve() == run.path.resolve():
        raise ServeError(f"out_dir {out}: that is the run's own folder; write the update to a new folder")
    mode = resolve_new_items(run, new_items)
    if new_row_scale not in NEW_ROW_SCALES:
        raise ServeError(f"new_row_scale={new_row_scale!r}: expected one of {', '.join(NEW_ROW_SCALES)}")
    config = run.config.with_overrides(sets)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs={epochs!r}: expected an integer >= 1")
        config = config.replace(epochs=epochs)
    primary = jax.process_index() == 0
    existed = out.exists()
    lock = WriterLock.acquire(out) if primary else None  # one writer of out_dir, from here to publication
    work = out / WORK
    try:
        if primary:
            if (published_version(out) is not None or (out / "ckpt").exists()) and not overwrite:
                raise RunExistsError(f"{out} already holds a run; choose another folder or pass overwrite "
                                     "(--overwrite)")
            if complete_checkpoint(work) and not overwrite:
                raise RunExistsError(f"{out} holds an unfinished run in {work}; pass overwrite (--overwrite) to "
                                     "replace it")
            if work.exists():
                shutil.rmtree(work)
            lock.prepared = True  # fit keeps the data written into in-progress/ below
            folder, merges = merge_files(run, interactions, items, users, work / "data")
        _sync("jaxrec-update-data")
        if not primary:
            folder, merges = work / "data" / dataset_files(run)[1], []
        # the published path: readers of a published update read it from the version they read
        config = config.replace(dataset=os.path.abspath(out / "data" / folder.name))
        dataset = load_dataset(folder, config)
        model = get_model(config)
        check_run(model, dataset, config)
        t_data = time.perf_counter()
        new_items_dense = np.flatnonzero(old_positions(run.dataset.item_ids, dataset.item_ids) < 0)
        rows, emb_report = None, None
        if mode == "llm" and new_items_dense.size:
            emb, emb_report = new_item_embeddings(run, dataset, new_items_dense, encoder, cache_dir, bool(progress))
            log.info("%s", emb_report)
            rows = item_rows(run.init, emb)
        t_emb = time.perf_counter()
        params, carry = carry_params(run, dataset, model, run_keys(config.seed).init, rows, mode, new_row_scale)
        log.info("%s", carry)
        t_carry = time.perf_counter()
        seen = test_seen_by_parent(run, dataset)
        made: list[UpdateReport] = []

        def before_publish(run_folder: RunFolder) -> None:  # update.json, init.json, results' parent: one publication
            t_fit = time.perf_counter()
            report = UpdateReport(
                parent=str(run.path.resolve()), parent_dataset=run.fingerprint, dataset=dataset_fingerprint(dataset),
                inputs={"interactions": _sha(Path(interactions)), "items": _sha(items), "users": _sha(users)},
                merge=[dataclasses.asdict(m) for m in merges],
                embeddings=None if emb_report is None else dataclasses.asdict(emb_report),
                carry=dataclasses.asdict(carry), test_seen_by_parent=seen,
                seconds={"data": t_data - t0, "embeddings": t_emb - t_data, "params": t_carry - t_emb,
                         "fit": t_fit - t_carry, "total": t_fit - t0},
            )
            made.append(report)
            run_folder.write_json(UPDATE_FILE, dataclasses.asdict(report))
            run_folder.write_init_record({**(run.init or {"strategy": "none"}),
                                          "inherited_from": str(run.path.resolve())})
            _add_parent(run_folder, run, report)

        if seen:
            log.warning("%d test interactions of the update were training interactions of the parent (split %r): "
                        "the update's test metrics are optimistic; split=loo_time avoids it", seen, config.split)
        result = fit(model, dataset, config, out_dir=out, params=params, overwrite=overwrite, progress=progress,
                     before_publish=before_publish)
    except BaseException:
        if lock is not None and not complete_checkpoint(work):  # nothing trained yet: leave no half-made folder
            shutil.rmtree(work, ignore_errors=True)
            if not existed and published_version(out) is None:
                shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()
    if made:
        report = made[0]
    else:  # another process than 0: the report as process 0 wrote it
        report = UpdateReport(**RunFolder.read(out).read_json(UPDATE_FILE))
    return UpdateResult(result, report, dataset)


def _add_parent(folder: RunFolder, run: Run, report: UpdateReport) -> None:
    """``results.json`` of the update gets ``parent`` and ``update``."""
    results = folder.read_json("results.json", "results")
    parent = run.results or {}
    results["parent"] = {"run": str(run.path.resolve()), "dataset": run.fingerprint,
                         "best_epoch": parent.get("best_epoch"), "test": parent.get("test"),
                         "parent": parent.get("parent", {}).get("run") if parent.get("parent") else None}
    results["update"] = {k: v for k, v in dataclasses.asdict(report).items() if k != "parent"}
    folder.write_json("results.json", results)


__all__ = ["update", "UpdateResult", "UpdateReport", "MergeReport", "EmbeddingUpdate", "CarryReport",
           "merge_files", "merge_atomic", "new_item_embeddings", "carry_params", "old_positions",
           "resolve_new_items", "test_seen_by_parent", "NEW_ITEMS", "NEW_ROW_SCALES"]
