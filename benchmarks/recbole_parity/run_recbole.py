"""RecBole 1.2.1's own LightGCN (or SASRec) on ml-100k / ml-1m with jaxrec's protocol; optionally dumps its split.

Runs in a separate virtual environment (RecBole 1.2.1 needs older numpy / pandas / scipy
than jaxrec; see README.md here):

    /tmp/rbvenv/bin/python benchmarks/recbole_parity/run_recbole.py 2020 --split-out /tmp/rb/split2020

Prints ``RESULT <seed> {"valid": ..., "test": ...}`` (RecBole's Recall@10 / NDCG@10 of the
best-validation epoch). With ``--split-out DIR`` it writes RecBole's train / valid / test
interactions (original ids, tab-separated) for ``jaxrec_on_split.py``; ``--split-only``
stops there.

ml-1m (issue 23): ``--dataset ml-1m --data ~/.cache/jaxrec`` reads jaxrec's converted files
(``jaxrec.load_dataset("ml-1m")`` puts them there); ``--epochs N`` caps training (RecBole's
seconds per training epoch and per validation are printed as ``epoch_s`` / ``eval_s``, medians
over the epochs after the first); ``--model SASRec`` runs RecBole's SASRec with the SASRec
paper's ML-1M setting (d 50, 2 blocks, 1 head, dropout 0.2, max length 200, BCE with one
negative, lr 1e-3, batch 128) on a leave-one-out split in time order, 100 uniformly sampled
negatives (``uni100``: the paper's protocol) and Hit/NDCG@10:

    /tmp/rbvenv/bin/python benchmarks/recbole_parity/run_recbole.py 2020 --dataset ml-1m \
        --data ~/.cache/jaxrec --epochs 2
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its own .pth

import numpy as np  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.general_recommender import LightGCN  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("seed", type=int)
p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
p.add_argument("--split-out", default=None)
p.add_argument("--split-only", action="store_true")
p.add_argument("--dataset", default="ml-100k")
p.add_argument("--model", default="LightGCN", choices=["LightGCN", "SASRec"])
p.add_argument("--epochs", type=int, default=300)
p.add_argument("--checkpoints", default="/tmp/recbole_saved",
               help="RecBole's working folder: its checkpoints, log/ and log_tensorboard/ go here")
args = p.parse_args()
args.data = str(Path(args.data).absolute())
if args.split_out:
    args.split_out = str(Path(args.split_out).absolute())
Path(args.checkpoints).mkdir(parents=True, exist_ok=True)
os.chdir(args.checkpoints)  # RecBole writes ./log and ./log_tensorboard into the working directory

cfg = {  # the protocol: LOO random order, K 128, 2 layers, lr 1e-3, batch 2048, reg 1e-5, patience 10
    "data_path": args.data, "seed": args.seed, "reproducibility": True,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "RO", "group_by": "user", "mode": "full"},
    "embedding_size": 128, "n_layers": 2, "learning_rate": 1e-3, "train_batch_size": 2048,
    "reg_weight": 1e-5, "stopping_step": 10, "epochs": args.epochs, "valid_metric": "NDCG@10",
    "metrics": ["Recall", "NDCG"], "topk": [10], "device": "cpu", "use_gpu": False,
    "checkpoint_dir": f"{args.checkpoints}/{args.seed}", "show_progress": False,
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
}
if args.model == "SASRec":  # the SASRec paper's ML-1M setting and protocol
    cfg.update({"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"},
                "hidden_size": 50, "inner_size": 50, "n_layers": 2, "n_heads": 1, "hidden_dropout_prob": 0.2,
                "attn_dropout_prob": 0.2, "MAX_ITEM_LIST_LENGTH": 200, "loss_type": "BCE", "train_batch_size": 128,
                "metrics": ["Hit", "NDCG"], "stopping_step": 20, "embedding_size": 50,
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]}})
config = Config(model=args.model, dataset=args.dataset, config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
if args.split_out:
    out = Path(args.split_out)
    out.mkdir(parents=True, exist_ok=True)
    for name, d in (("train", train_data.dataset), ("valid", valid_data.dataset), ("test", test_data.dataset)):
        users = dataset.id2token("user_id", d.inter_feat["user_id"].numpy())
        items = dataset.id2token("item_id", d.inter_feat["item_id"].numpy())
        np.savetxt(out / f"{name}.tsv", np.stack([users, items], 1), fmt="%s", delimiter="\t")
if args.split_only:
    raise SystemExit(0)
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
model = (SASRec if args.model == "SASRec" else LightGCN)(config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
seconds: dict[str, list[float]] = {"train": [], "eval": []}


def timed(kind, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        seconds[kind].append(time.perf_counter() - t)
        return out
    return wrapper


trainer._train_epoch = timed("train", trainer._train_epoch)
trainer._valid_epoch = timed("eval", trainer._valid_epoch)
_, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
med = lambda xs: statistics.median(xs[1:] or xs) if xs else None  # noqa: E731
print("RESULT", args.seed, json.dumps({"valid": dict(best_valid), "test": dict(test), "epochs": len(seconds["train"]),
                                       "epoch_s": med(seconds["train"]), "eval_s": med(seconds["eval"]),
                                       "train_s": seconds["train"], "valid_s": seconds["eval"]}, default=float))
