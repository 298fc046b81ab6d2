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
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxrec.serve.run import Run

FILES = ("user_embeddings.npy", "user_ids.txt", "users.parquet", "item_embeddings.npy", "item_ids.txt",
         "items.parquet", "export.json")


def _write_side(folder: Path, side: str, emb: np.ndarray, ids: np.ndarray) -> list[Path]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    emb = np.ascontiguousarray(emb, np.float32)
    npy, txt, parquet = folder / f"{side}_embeddings.npy", folder / f"{side}_ids.txt", folder / f"{side}s.parquet"
    np.save(npy, emb, allow_pickle=False)
    txt.write_text("".join(f"{i}\n" for i in ids.astype(str)))
    flat = pa.array(emb.reshape(-1), pa.float32())
    table = pa.table({f"{side}_id": pa.array(ids.astype(str), pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})
    pq.write_table(table, parquet)
    return [npy, txt, parquet]


def export(run: Run, folder: str | Path) -> dict[str, Path]:
    """Write the run's served embeddings and ids into ``folder`` (module docstring); returns
    ``{file name: path}``. Existing files of these names are replaced."""
    from jaxrec.train.runfiles import write_json_atomic  # noqa: PLC0415

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    catalog = run.catalog
    item_emb = np.asarray(catalog.item_emb)
    paths = _write_side(folder, "user", catalog.user_emb, catalog.user_ids)
    paths += _write_side(folder, "item", item_emb, catalog.item_ids)
    manifest = folder / "export.json"
    write_json_atomic(manifest, {
        "run": str(run.path.resolve()), "model": run.config.model, "dataset": run.fingerprint,
        "dim": int(item_emb.shape[1]), "num_users": int(catalog.num_users), "num_items": int(catalog.num_items),
        "context": "serve (train + valid + test interactions known)", "score": "user_embedding . item_embedding",
        "files": [p.name for p in paths], "created": _dt.datetime.now().isoformat(timespec="seconds"),
    })
    return {p.name: p for p in [*paths, manifest]}


__all__ = ["export", "FILES"]
