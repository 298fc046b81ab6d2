"""Compute a dataset's item text embeddings once with the offline encoders and cache them.

For each encoder (default ``minilm,mpnet``): the dataset's item texts (its template, e.g.
``Title: {movie_title}, Year: {release_year}, Genres: {class}``) are encoded through the
embedding cache (``jaxrec.init.dataset_item_embeddings``: ``$JAXREC_CACHE/embeddings``, keyed by
encoder, template and texts), so every later run with ``encoder=<name>`` reads them from there.
The MPNet rows (sentence-transformers all-mpnet-base-v2, the LLMInit paper's model) are also
written as the dataset's reference file ``<data folder>/<name>.all-mpnet-base-v2.npy`` +
``.item_ids.txt`` (as ``../shared/data/ml-100k`` has for ml-100k), which
``resolve_embedding_source(embeddings="auto")`` picks up; nothing is overwritten unless
``--overwrite``.

    python -m experiments.reference_embeddings --dataset ml-1m
    python -m experiments.reference_embeddings --dataset ml-1m --encoders minilm

Prints, per encoder: shape, seconds, and where the rows are.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from jaxrec.config import Config
from jaxrec.data import find_dataset, load_dataset
from jaxrec.init.embeddings import dataset_item_embeddings
from jaxrec.init.sources import REFERENCE_EMBEDDINGS, save_precomputed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--encoders", default="minilm,mpnet", help="comma-separated encoder names (default minilm,mpnet)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="rewrite an existing reference file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = Config(dataset=args.dataset)
    dataset = load_dataset(args.dataset, config)
    folder = find_dataset(args.dataset, config.data_dirs, download=False)
    for enc in [e.strip() for e in args.encoders.split(",") if e.strip()]:
        t = time.perf_counter()
        emb = dataset_item_embeddings(dataset, enc, batch_size=args.batch_size)
        secs = time.perf_counter() - t
        norms = np.linalg.norm(emb, axis=1)
        print(f"{args.dataset} {enc}: {emb.shape} float32, row norms {norms.min():.4f}..{norms.max():.4f}, "
              f"{secs:.1f} s (embedding cache)")
        if enc == "mpnet":
            ref = folder / REFERENCE_EMBEDDINGS.format(name=folder.name)
            if ref.exists() and not args.overwrite:
                print(f"  reference file {ref} exists; kept (--overwrite rewrites it)")
            else:
                save_precomputed(ref, emb, dataset.item_ids)
                print(f"  reference file {ref} (+ .item_ids.txt)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
