"""jaxrec's LightGCN (CLI defaults) trained on a split dumped by ``run_recbole.py``.

    .venv/bin/python benchmarks/recbole_parity/jaxrec_on_split.py /tmp/rb/split2020 2020
    .venv/bin/python benchmarks/recbole_parity/jaxrec_on_split.py /tmp/rb/ml1m2020 2020 --dataset ml-1m --epochs 2

Loads the dataset (ml-100k by default) as jaxrec does (for its id spaces), replaces train / valid / test with
RecBole's, and trains with ``jaxrec.pipeline.train_run``. Prints ``RESULT <seed> {...}``.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from jaxrec import Config, load_dataset  # noqa: E402
from jaxrec.data.interactions import Interactions  # noqa: E402
from jaxrec.pipeline import train_run  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("split_dir", type=Path)
ap.add_argument("seed", type=int)
ap.add_argument("--dataset", default="ml-100k")
ap.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the config's)")
a = ap.parse_args()
split_dir, seed = a.split_dir, a.seed
config = Config.for_model("lightgcn", seed=seed, dataset=a.dataset)
if a.epochs:
    config = config.replace(epochs=a.epochs)
ds = load_dataset(a.dataset, config)
user_index = {u: k for k, u in enumerate(ds.user_ids)}
item_index = {i: k for k, i in enumerate(ds.item_ids)}


def part(name: str) -> Interactions:
    rows = np.loadtxt(split_dir / f"{name}.tsv", dtype=str, delimiter="\t", comments=None)  # titles may hold '#'
    try:
        users = np.array([user_index[u] for u in rows[:, 0]], np.int32)
        items = np.array([item_index[i] for i in rows[:, 1]], np.int32)
    except KeyError as e:
        raise SystemExit(f"{split_dir / (name + '.tsv')}: id {e} is not in jaxrec's {a.dataset}") from None
    return Interactions(users, items, None, None, ds.user_ids, ds.item_ids)


ds = dataclasses.replace(ds, train=part("train"), valid=part("valid"), test=part("test"))
result, _ = train_run(config, dataset=ds, progress=False)
print("RESULT", seed, json.dumps({"test": result.test_metrics, "valid": result.valid_metrics,
                                  "best": result.best_epoch, "stop": result.stopped_epoch}))
print("EPOCHS", json.dumps([{k: r.get(k) for k in ("epoch", "train_seconds", "eval_seconds")} for r in result.history]))
