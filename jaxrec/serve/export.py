"""Export a run's served user and item embeddings with their original ids.

``export(run, folder)`` writes, for ``side`` in (``user``, ``item``):

- ``<side>_embeddings.npy``: float32 [rows, d], row r belongs to line r of
- ``<side>_ids.txt``: one original id per line (``jaxrec.init.load_precomputed`` reads this pair);
- ``<side>s.parquet``: columns ``<side>_id`` (string) and ``embedding`` (fixed-size list of
  d float32), the same rows in the same order;

and ``export.json``: the run folder, model, dataset fingerprint, d, the context stage
(``serve``: everything known) and the files. The embeddings are ``Run.catalog``'s: what
``recommend`` and ``score`` rank with, so ``user_emb @ item_emb.T`` of the files reproduces
their scores.

The folder is written beside (``.<name>.partial-<pid>``) and swapped into place when every
file is complete (``renameat2(RENAME_EXCHANGE)`` on Linux: one atomic step; elsewhere two
renames), so ``folder`` always holds the files of one run: the previous export or the new
one, never a mix, and nothing partial after a crash or a full disk (``WriteError`` naming
the file).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import errno
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxrec.errors import write_error
from jaxrec.serve.run import Run

FILES = ("user_embeddings.npy", "user_ids.txt", "users.parquet", "item_embeddings.npy", "item_ids.txt",
         "items.parquet", "export.json")


def _write_side(folder: Path, side: str, emb: np.ndarray, ids: np.ndarray) -> list[Path]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    emb = np.ascontiguousarray(emb, np.float32)
    npy, txt, parquet = folder / f"{side}_embeddings.npy", folder / f"{side}_ids.txt", folder / f"{side}s.parquet"
    for path, write in ((npy, lambda p: np.save(p, emb, allow_pickle=False)),
                        (txt, lambda p: p.write_text("".join(f"{i}\n" for i in ids.astype(str)))),
                        (parquet, lambda p: pq.write_table(_table(side, emb, ids), p))):
        try:
            write(path)
        except OSError as e:
            raise write_error(path, e) from None
    return [npy, txt, parquet]


def _table(side: str, emb: np.ndarray, ids: np.ndarray) -> pa.Table:
    flat = pa.array(emb.reshape(-1), pa.float32())
    return pa.table({f"{side}_id": pa.array(ids.astype(str), pa.string()),
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})


def _exchange(a: Path, b: Path) -> bool:
    """Swap paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False when the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, folder: Path) -> None:
    """Put the complete folder ``tmp`` at ``folder`` (replacing an earlier export there)."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    if _exchange(tmp, folder):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous export
        return
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def export(run: Run, folder: str | Path) -> dict[str, Path]:
    """Write the run's served embeddings and ids into ``folder`` (module docstring); returns
    ``{file name: path}``. An earlier export in ``folder`` is replaced as a whole, in one step;
    a folder holding other files is refused (``ServeError``), and so is a file of that name."""
    from jaxrec.serve.run import ServeError  # noqa: PLC0415
    from jaxrec.train.runfiles import write_json_atomic  # noqa: PLC0415

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ServeError(f"export folder {folder}: a file; expected a folder (new, or an earlier export)")
    if folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if p.name not in FILES)
        if other:
            raise ServeError(f"export folder {folder} holds files that are not an export ({', '.join(other[:5])}); "
                             "an export replaces the whole folder: choose an empty or new folder")
    catalog = run.catalog
    item_emb = np.asarray(catalog.item_emb)
    tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
        except OSError as e:
            raise write_error(tmp, e) from None
        paths = _write_side(tmp, "user", catalog.user_emb, catalog.user_ids)
        paths += _write_side(tmp, "item", item_emb, catalog.item_ids)
        write_json_atomic(tmp / "export.json", {
            "run": str(run.path.resolve()), "model": run.config.model, "dataset": run.fingerprint,
            "dim": int(item_emb.shape[1]), "num_users": int(catalog.num_users), "num_items": int(catalog.num_items),
            "context": "serve (train + valid + test interactions known)", "score": "user_embedding . item_embedding",
            "files": [p.name for p in paths], "created": _dt.datetime.now().isoformat(timespec="seconds"),
        })
        try:
            _swap_in(tmp, folder)
        except OSError as e:
            raise write_error(folder, e, "the export") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: folder / name for name in [p.name for p in paths] + ["export.json"]}


__all__ = ["export", "FILES"]
