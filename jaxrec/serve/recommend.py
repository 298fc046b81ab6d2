"""Recommendations and scores with original ids: ``recommend``, ``score``, ``write_recommendations``.

Scores are dot products ``user_emb[u] . item_emb[i]`` of the run's served representations
(``Run.catalog``: ``model.embed`` on the ``"serve"`` context), the same score the run was
trained and evaluated with. Top-k is ``jaxrec.eval.topk_full_ranking`` (chunked, jitted
matmul + exclusion mask + ``lax.top_k``; ties go to the lower dense item id), run on blocks
of ``block_users`` users at a time: each block's user rows are gathered into their own table,
so memory stays bounded by the embeddings, one block's results and one chunk's
``[chunk_size, I]`` scores, however many users are ranked.

``exclude_seen`` masks every item the user is known to have (train, valid and test
interactions). ``candidates`` restricts ranking to a list of items (original ids) shared by
every user. A user with fewer than k rankable items gets empty slots: item ``""``, dense id
-1, score NaN (``write_recommendations`` leaves those rows out and counts them).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa

from jaxrec.errors import write_error
from jaxrec.eval.ranking import topk_full_ranking
from jaxrec.serve.run import Catalog, Run, ServeError

log = logging.getLogger("jaxrec.serve")

#: Users ranked per block (their results and gathered rows live at once).
BLOCK_USERS = 65536
FORMATS = {".parquet": "parquet", ".csv": "csv"}


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Top-k per user, best first.

    users: str [M] original user ids; items: str [M, k] original item ids ("" in an empty
    slot); item_index: int32 [M, k] dense item ids (-1 in an empty slot); scores: float32
    [M, k] dot-product scores (NaN in an empty slot).
    """

    users: np.ndarray
    items: np.ndarray
    item_index: np.ndarray
    scores: np.ndarray

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to_arrow(self) -> pa.Table:
        """Long format: one row per filled slot, columns ``user_id``, ``rank`` (1-based),
        ``item_id``, ``score``."""
        return long_table(pa.array(self.users, pa.string()), np.arange(len(self)), self.item_index, self.scores,
                          pa.array(self.items.ravel(), pa.string()) if self.items.size else pa.array([], pa.string()),
                          items_given=True)


def check_k(k: Any, catalog_size: int, what: str = "the catalog") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ServeError(f"k={k!r}: expected an integer >= 1")
    if k > catalog_size:
        raise ServeError(f"k={k}: larger than {what} ({catalog_size:,} items); use k <= {catalog_size}")
    return int(k)


def _candidates(source: Run | Catalog, candidates) -> np.ndarray | None:
    """Dense ids of the original ``candidates`` (distinct; ``ServeError`` otherwise), or None."""
    if candidates is None:
        return None
    cand = source.item_index(candidates)
    if cand.size == 0:
        raise ServeError("candidates: empty list; expected item ids to rank")
    uniq, counts = np.unique(cand, return_counts=True)
    if (counts > 1).any():
        dup = np.asarray(source.item_ids)[uniq[counts > 1]][:5].tolist()
        raise ServeError(f"candidates: {int((counts > 1).sum())} repeated item id(s), e.g. {dup}; expected distinct ids")
    return cand


def _check_request(source: Run | Catalog, users, k, candidates) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """(dense users or None for all, dense candidates or None, k), checked before any compute."""
    dense = None if users is None else source.user_index(users)
    if dense is not None and dense.size == 0:
        raise ServeError("users: none given; expected original user ids")
    cand = _candidates(source, candidates)
    k = check_k(k, source.num_items if cand is None else cand.size,
                "the catalog" if cand is None else "the candidates")
    return dense, cand, k


def rank_users(catalog: Catalog, users: np.ndarray, k: int, exclude_seen: bool = True,
               candidates: np.ndarray | None = None, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of dense ``users`` [M] (one block) -> (dense items int32 [M, k] with -1 in empty
    slots, scores float32 [M, k] with NaN there). Inputs are checked by the callers."""
    users = np.asarray(users, np.int64)
    item_emb = catalog.item_emb if candidates is None else jnp.take(catalog.item_emb, jnp.asarray(candidates), axis=0)
    rows = items = None
    if exclude_seen and catalog.known is not None:
        rows, items = catalog.known.pairs(users)
        if candidates is not None:  # known items outside the candidates do not matter; the rest by position
            pos = np.full(catalog.num_items, -1, np.int64)
            pos[candidates] = np.arange(candidates.size)
            keep = pos[items] >= 0
            rows, items = rows[keep], pos[items[keep]]
    idx, scores = topk_full_ranking(catalog.user_emb[users], item_emb, np.arange(users.size), rows, items, k=k,
                                    chunk_size=chunk_size, return_scores=True)
    empty = idx < 0
    if candidates is not None:
        idx = np.where(empty, -1, candidates[np.maximum(idx, 0)]).astype(np.int32)
    scores = np.where(empty, np.nan, scores).astype(np.float32)
    return idx, scores


def recommend(run: Run | Catalog, users: Sequence[Any], k: int = 10, exclude_seen: bool = True,
              candidates: Sequence[Any] | None = None, chunk_size: int | None = None) -> Recommendations:
    """Top-``k`` items (original ids) and scores for the original ``users`` of ``run``.

    Args:
      run: a ``Run`` (``load_run``) or a ``Catalog``.
      users: original user ids (any values; compared as ``str``), in the order wanted.
      k: items per user, at most the catalog (or ``candidates``) size.
      exclude_seen: leave out the items each user is known to have (train + valid + test).
      candidates: original item ids to rank among (shared by all users); None: every item.
      chunk_size: users scored at once (default: the run's ``eval_chunk``, a catalog's 1024).
    Raises:
      ServeError before any compute: unknown user or item ids, repeated candidates, ``k``
      not an integer in [1, catalog size].
    """
    dense, cand, k = _check_request(run, users, k, candidates)
    chunk = chunk_size or run.chunk_size
    catalog = run.catalog  # compute starts here (a run embeds on first use)
    idx = np.empty((dense.size, k), np.int32)
    scores = np.empty((dense.size, k), np.float32)
    for sl in _blocks(dense.size, BLOCK_USERS):
        idx[sl], scores[sl] = rank_users(catalog, dense[sl], k, exclude_seen, cand, chunk)
    items = np.where(idx >= 0, catalog.item_ids[np.maximum(idx, 0)], "")
    return Recommendations(catalog.user_ids[dense], items, idx, scores)


def score(run: Run | Catalog, users: Sequence[Any], items: Sequence[Any]) -> np.ndarray:
    """Scores float32 [M, N] of original ``users`` [M] against original ``items`` [N]
    (``user_emb[u] . item_emb[i]``). ``ServeError`` naming unknown ids, before any compute."""
    u, i = run.user_index(users), run.item_index(items)
    catalog = run.catalog
    ue = jnp.asarray(catalog.user_emb[u])
    ie = jnp.take(catalog.item_emb, jnp.asarray(i), axis=0)
    return np.asarray(jnp.dot(ue, ie.T, precision=jax.lax.Precision.HIGHEST), np.float32)


# ------------------------------------------------------------------------------------ files
@dataclasses.dataclass(frozen=True)
class WriteReport:
    """What ``write_recommendations`` wrote."""

    path: Path
    format: str
    users: int
    rows: int
    empty_slots: int  # slots left out: users with fewer than k rankable items
    users_short: int  # users with at least one empty slot
    seconds: float

    def __str__(self) -> str:
        s = (f"wrote {self.rows:,} recommendations for {self.users:,} users to {self.path} ({self.format}) in "
             f"{self.seconds:.1f} s ({self.users / max(self.seconds, 1e-9):,.0f} users/s)")
        if self.empty_slots:
            s += (f"; {self.users_short:,} users have fewer than k rankable items: {self.empty_slots:,} empty slots "
                  "left out")
        return s


SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                    ("score", pa.float32())])


def long_table(user_ids: pa.Array, rows: np.ndarray, idx: np.ndarray, scores: np.ndarray, item_ids: pa.Array,
               items_given: bool = False) -> pa.Table:
    """One row per filled slot of ``idx`` [n, k] (users ``user_ids[rows]``); ``item_ids`` is
    the catalog's ids (taken by ``idx``) or, with ``items_given``, the [n * k] ids themselves."""
    n, k = idx.shape
    filled = (idx >= 0).ravel()
    flat_rows = np.repeat(np.asarray(rows, np.int64), k)[filled]
    rank = np.tile(np.arange(1, k + 1, dtype=np.int32), n)[filled]
    items = item_ids.filter(pa.array(filled)) if items_given else item_ids.take(pa.array(idx.ravel()[filled]))
    return pa.table([user_ids.take(pa.array(flat_rows)), pa.array(rank), items,
                     pa.array(scores.ravel()[filled].astype(np.float32))], schema=SCHEMA)


class _Writer:
    """Writes ``path`` beside it (``.<name>.partial-<pid>``) and renames it into place on
    ``commit``: the file is complete or absent (an existing one is kept) whatever happens. A
    full disk is a ``WriteError`` naming ``path``; the partial file is removed."""

    def __init__(self, path: Path, fmt: str):
        self.path = path
        self.tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                import pyarrow.parquet as pq  # noqa: PLC0415

                self.w = pq.ParquetWriter(str(self.tmp), SCHEMA)
            else:
                import pyarrow.csv as pcsv  # noqa: PLC0415

                self.w = pcsv.CSVWriter(str(self.tmp), SCHEMA)
        except OSError as e:
            self.tmp.unlink(missing_ok=True)
            raise write_error(path, e) from None

    def write(self, table: pa.Table) -> None:
        try:
            self.w.write_table(table)
        except OSError as e:
            self.abort()
            raise write_error(self.path, e) from None

    def commit(self) -> None:
        try:
            self.w.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.tmp.unlink(missing_ok=True)
            raise write_error(self.path, e) from None

    def abort(self) -> None:
        try:
            self.w.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)


def write_table(table: pa.Table, path: str | Path, fmt: str | None = None) -> Path:
    """Write one table to ``path`` (.parquet or .csv): complete or absent (``WriteError`` naming it
    when the disk is full)."""
    path = Path(path)
    writer = _Writer(path, fmt or output_format(path))
    try:
        writer.write(table)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return path


def output_format(path: str | Path) -> str:
    """``parquet`` or ``csv`` from the file suffix; ``ServeError`` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ServeError(f"{path}: unknown output format {suffix or '(no suffix)'!r}; expected .parquet or .csv")
    return FORMATS[suffix]


def _blocks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def write_recommendations(run: Run | Catalog, path: str | Path, k: int = 10, users: Sequence[Any] | None = None,
                          exclude_seen: bool = True, candidates: Sequence[Any] | None = None,
                          block_users: int = BLOCK_USERS, chunk_size: int | None = None,
                          progress: bool | None = None) -> WriteReport:
    """Write the top-``k`` of every user (or of original ``users``) to ``path`` (.parquet or
    .csv; columns ``user_id``, ``rank``, ``item_id``, ``score``), ``block_users`` users at a
    time with a progress bar: memory stays bounded by the embeddings and one block.

    Raises ``ServeError`` (unknown ids, bad ``k``, unknown format) before any compute. The
    file is written beside ``path`` and renamed into place when complete: ``path`` is never
    left partial or empty (a full disk is a ``WriteError`` naming it, and an existing file
    of that name stays as it was).
    """
    import sys  # noqa: PLC0415

    path = Path(path)
    fmt = output_format(path)
    dense, cand, k = _check_request(run, users, k, candidates)
    if block_users < 1:
        raise ServeError(f"block_users={block_users}: expected an integer >= 1")
    num_users = run.num_users if dense is None else dense.size
    chunk = chunk_size or run.chunk_size
    catalog = run.catalog
    t0 = time.perf_counter()
    user_ids = pa.array(catalog.user_ids, pa.string())
    item_ids = pa.array(catalog.item_ids, pa.string())
    progress = sys.stderr.isatty() if progress is None else progress
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=num_users, desc="recommending", unit="user", dynamic_ncols=True)
    writer = _Writer(path, fmt)
    rows = empty = short = 0
    done = False
    try:
        for sl in _blocks(num_users, block_users):
            block = np.arange(sl.start, sl.stop, dtype=np.int64) if dense is None else dense[sl]
            if block.size < block_users and num_users > block_users:  # same shapes as the other blocks: no recompile
                padded = np.concatenate([block, np.full(block_users - block.size, block[0])])
                idx, scores = rank_users(catalog, padded, k, exclude_seen, cand, chunk)
                idx, scores = idx[: block.size], scores[: block.size]
            else:
                idx, scores = rank_users(catalog, block, k, exclude_seen, cand, chunk)
            table = long_table(user_ids, block, idx, scores, item_ids)
            writer.write(table)
            rows += table.num_rows
            missing = (idx < 0).sum(axis=1)
            empty += int(missing.sum())
            short += int((missing > 0).sum())
            if bar is not None:
                bar.update(block.size)
        writer.commit()
        done = True
    finally:
        if not done:
            writer.abort()
        if bar is not None:
            bar.close()
    report = WriteReport(path, fmt, num_users, rows, empty, short, time.perf_counter() - t0)
    if empty:
        log.warning("%s", report)
    return report


def title_field(dataset) -> str | None:
    """The item feature holding titles (``title``, ``movie_title``, ``name``), if the dataset has one."""
    for name in ("title", "movie_title", "name", "item_name"):
        if name in (dataset.item_features or {}):
            return name
    return None


def format_recommendations(recs: Recommendations, titles: Sequence[str] | None = None) -> str:
    """A fixed-width table: user, rank, item, score (and title when ``titles`` [I] is given)."""
    headers = ["user", "rank", "item", "score"] + (["title"] if titles is not None else [])
    body = []
    for m, user in enumerate(recs.users):
        for r in range(recs.k):
            if recs.item_index[m, r] < 0:
                continue
            row = [str(user), str(r + 1), str(recs.items[m, r]), f"{recs.scores[m, r]:.4f}"]
            if titles is not None:
                row.append(str(titles[recs.item_index[m, r]]))
            body.append(row)
    widths = [max([len(h)] + [len(row[c]) for row in body]) for c, h in enumerate(headers)]
    right = {1, 3}

    def line(cells):
        return "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in body])


__all__ = ["Recommendations", "WriteReport", "recommend", "score", "rank_users", "write_recommendations",
           "format_recommendations", "title_field", "output_format", "write_table", "check_k", "BLOCK_USERS"]
