"""jaxrec's GRU4Rec, NextItNet, BERT4Rec or NeuMF on a split dumped by ``run_recbole_seq.py``.

    .venv/bin/python benchmarks/recbole_parity/jaxrec_seq_on_split.py gru4rec /tmp/rb/seq2020 2020 --epochs 20

Loads ml-100k as jaxrec does (its id spaces), replaces train / valid / test with RecBole's
(``position`` as the timestamp, so jaxrec orders each user's items as RecBole did), and trains
with ``jaxrec.fit`` under RecBole's protocol: full ranking, Recall@10 / NDCG@10, early stopping
on validation NDCG@10 with patience 10, at most ``--epochs`` epochs, lr 1e-3. Like RecBole, a
sequential model ranks every item (no history masked: ``PreparedData(exclude=...)`` empty);
NeuMF masks the training history (and the validation item at test), as RecBole does for a
general model. The sequential models train with cross-entropy over the catalog (GRU4Rec and
NextItNet: ``ce_seq``, BERT4Rec: ``cloze``), RecBole's ``loss_type`` CE. Batches are jaxrec's:
one window per user (its last ``max_seq_len`` + 1 training items), ``--batch-size`` windows
(default 128) for the sequential models; 1024 (user, positive, negative) rows for NeuMF (RecBole's 2048 examples per step).

Prints ``RESULT <model> <seed> {"test": ..., "valid": ..., "best": ..., "stop": ...,
"seconds_per_epoch": ..., "eval_seconds_per_epoch": ..., "valid_curve": [valid NDCG@10 per epoch], ...}``.
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
from jaxrec.models import get_model  # noqa: E402
from jaxrec.train import fit  # noqa: E402
from jaxrec.train.batches import PreparedData  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("model", choices=["gru4rec", "nextitnet", "bert4rec", "neumf"])
p.add_argument("split_dir", type=Path)
p.add_argument("seed", type=int)
p.add_argument("--epochs", type=int, default=300)
p.add_argument("--batch-size", type=int, default=None)
p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
args = p.parse_args()

general = args.model == "neumf"
fields = dict(seed=args.seed, dataset="ml-100k", split="loo_time", evaluation="full", topk=(10,),
              metrics=("recall", "ndcg"), valid_metric="ndcg@10", patience=10, epochs=args.epochs,
              learning_rate=1e-3)
if args.model == "gru4rec":
    fields["seq_loss"] = "ce"
if args.batch_size:
    fields["batch_size"] = args.batch_size
for kv in args.set:
    k, v = kv.split("=", 1)
    fields[k] = json.loads(v) if v[:1] in "[{0123456789-.tf" and v not in ("true", "false") else v
config = Config.for_model(args.model, **fields)
ds = load_dataset("ml-100k", config)
user_index = {u: k for k, u in enumerate(ds.user_ids)}
item_index = {i: k for k, i in enumerate(ds.item_ids)}


def part(name: str) -> Interactions:
    rows = np.loadtxt(args.split_dir / f"{name}.tsv", dtype=str, delimiter="\t")
    users = np.array([user_index[u] for u in rows[:, 0]], np.int32)
    items = np.array([item_index[i] for i in rows[:, 1]], np.int32)
    return Interactions(users, items, None, rows[:, 2].astype(np.int64), ds.user_ids, ds.item_ids)


ds = dataclasses.replace(ds, train=part("train"), valid=part("valid"), test=part("test"))
empty = (np.zeros(0, np.int32), np.zeros(0, np.int32))
prepared = PreparedData(ds, exclude=None if general else {"valid": empty, "test": empty})
result = fit(get_model(config), ds, config, progress=False, prepared=prepared)
train_s = [r["train_seconds"] for r in result.history]
eval_s = [r.get("eval_seconds", 0.0) for r in result.history]
print("RESULT", args.model, args.seed, json.dumps({
    "test": result.test_metrics, "valid": result.valid_metrics, "best": result.best_epoch,
    "stop": result.stopped_epoch, "epochs_run": len(result.history),
    "seconds_per_epoch": float(np.median(train_s[1:] if len(train_s) > 1 else train_s)),
    "first_epoch_seconds": train_s[0], "eval_seconds_per_epoch": float(np.median(eval_s)),
    "batch_size": config.batch_size,
    "valid_curve": [(r.get("valid") or {}).get("ndcg@10") for r in result.history],
    "loss_curve": [r.get("loss") for r in result.history]}))
