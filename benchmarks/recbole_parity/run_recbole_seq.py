"""RecBole 1.2.1's GRU4Rec, NextItNet, BERT4Rec or NeuMF on ml-100k, leave-one-out by time; dumps its split.

Runs in RecBole's own environment (README.md here):

    /tmp/rbvenv/bin/python benchmarks/recbole_parity/run_recbole_seq.py gru4rec 2020 --epochs 20 \
        --split-out /tmp/rb/seq2020

Protocol (both sides, ``jaxrec_seq_on_split.py``): RecBole's ``LS valid_and_test`` split in
time order (``TO``; the last interaction of a user is the test item, the one before the
validation item), full ranking, Recall@10 / NDCG@10 (= Hit@10 under leave-one-out), the model's
RecBole defaults (its ``.yaml``), ``MAX_ITEM_LIST_LENGTH`` 50, Adam lr 1e-3, batch 2048, at most
``--epochs`` epochs with early stopping (``stopping_step`` 10) on validation NDCG@10. The
sequential models use RecBole's ``loss_type`` CE (no training negatives); NeuMF its pointwise BCE
with one uniform negative per positive. RecBole ranks every item for a sequential model (no
history masking) and masks the training history for NeuMF (a general model).

Prints ``RESULT <model> <seed> {"valid": ..., "test": ..., "seconds_per_epoch": ..., "epochs": ...}``.
With ``--split-out DIR`` it writes ``train.tsv``, ``valid.tsv``, ``test.tsv`` (user, item,
position: original ids; ``position`` orders a user's interactions as RecBole ordered them) for
``jaxrec_seq_on_split.py``; ``--split-only`` stops there.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its own .pth

import numpy as np  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.general_recommender import NeuMF  # noqa: E402
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, NextItNet  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

MODELS = {"gru4rec": GRU4Rec, "nextitnet": NextItNet, "bert4rec": BERT4Rec, "neumf": NeuMF}

p = argparse.ArgumentParser()
p.add_argument("model", choices=sorted(MODELS))
p.add_argument("seed", type=int)
p.add_argument("--epochs", type=int, default=300)
p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
p.add_argument("--split-out", default=None)
p.add_argument("--split-only", action="store_true")
p.add_argument("--checkpoints", default="/tmp/recbole_saved_seq")
args = p.parse_args()
args.data = str(Path(args.data).absolute())
if args.split_out:
    args.split_out = str(Path(args.split_out).absolute())
Path(args.checkpoints).mkdir(parents=True, exist_ok=True)
os.chdir(args.checkpoints)

general = args.model == "neumf"
cfg = {
    "data_path": args.data, "seed": args.seed, "reproducibility": True,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "MAX_ITEM_LIST_LENGTH": 50, "learning_rate": 1e-3, "train_batch_size": 2048, "eval_batch_size": 4096,
    "stopping_step": 10, "epochs": args.epochs, "valid_metric": "NDCG@10", "metrics": ["Recall", "NDCG"],
    "topk": [10], "device": "cpu", "use_gpu": False, "show_progress": False,
    "checkpoint_dir": f"{args.checkpoints}/{args.model}{args.seed}",
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1} if general else None,
}
model_name = {"gru4rec": "GRU4Rec", "nextitnet": "NextItNet", "bert4rec": "BERT4Rec", "neumf": "NeuMF"}[args.model]
config = Config(model=model_name, dataset="ml-100k", config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)


def tokens(field, values):
    return dataset.id2token(field, np.asarray(values))


def dump_general(out: Path) -> None:
    for name, d in (("train", train_data.dataset), ("valid", valid_data.dataset), ("test", test_data.dataset)):
        f = d.inter_feat
        order = np.argsort(f["timestamp"].numpy(), kind="stable")  # only ties' order is RecBole's row order
        users, items = tokens("user_id", f["user_id"].numpy()[order]), tokens("item_id", f["item_id"].numpy()[order])
        rank = np.arange(len(order))
        np.savetxt(out / f"{name}.tsv", np.stack([users, items, rank.astype(str)], 1), fmt="%s", delimiter="\t")


def dump_sequential(out: Path) -> None:
    """Each user's training sequence in RecBole's order: the first augmented sample's one-item
    history, then every training target in row order (rows are sorted by user and time)."""
    f = train_data.dataset.inter_feat
    uid, target = f["user_id"].numpy(), f["item_id"].numpy()
    lists, length = f["item_id_list"].numpy(), f["item_length"].numpy()
    seqs: dict[int, list[int]] = {}
    for r in range(len(uid)):
        if uid[r] not in seqs:
            assert length[r] == 1, (uid[r], length[r])
            seqs[uid[r]] = [int(lists[r, 0])]
        seqs[uid[r]].append(int(target[r]))
    rows = {"train": [], "valid": [], "test": []}
    for u, s in seqs.items():
        rows["train"] += [(u, i, k) for k, i in enumerate(s)]
    for name, d in (("valid", valid_data.dataset), ("test", test_data.dataset)):
        g = d.inter_feat
        for u, i, hist, n in zip(g["user_id"].numpy(), g["item_id"].numpy(), g["item_id_list"].numpy(),
                                 g["item_length"].numpy()):
            expect = seqs[u][-1] if name == "valid" else None
            if expect is not None:
                assert hist[n - 1] == expect, (u, hist[n - 1], expect)
            rows[name].append((u, int(i), 10**6 + (name == "test")))
    for name, rs in rows.items():
        a = np.array(rs, dtype=np.int64)
        np.savetxt(out / f"{name}.tsv", np.stack([tokens("user_id", a[:, 0]), tokens("item_id", a[:, 1]),
                                                 a[:, 2].astype(str)], 1), fmt="%s", delimiter="\t")


if args.split_out:
    out = Path(args.split_out)
    out.mkdir(parents=True, exist_ok=True)
    (dump_general if general else dump_sequential)(out)
if args.split_only:
    raise SystemExit(0)
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
model = MODELS[args.model](config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
start = time.perf_counter()
_, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
seconds = time.perf_counter() - start
epochs = trainer.cur_epoch + 1 if hasattr(trainer, "cur_epoch") else None
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
print("RESULT", args.model, args.seed, json.dumps({"valid": dict(best_valid), "test": dict(test),
                                                   "fit_seconds": seconds, "epochs_run": epochs,
                                                   "best_valid_score": trainer.best_valid_score,
                                                   "train_samples": len(train_data.dataset)}, default=float))
