"""RecBole 1.2.1's own LightGCN on ml-100k with the issue's protocol; optionally dumps its split.

Runs in a separate virtual environment (RecBole 1.2.1 needs older numpy / pandas / scipy
than jaxrec; see README.md here):

    /tmp/rbvenv/bin/python benchmarks/recbole_parity/run_recbole.py 2020 --split-out /tmp/rb/split2020

Prints ``RESULT <seed> {"valid": ..., "test": ...}`` (RecBole's Recall@10 / NDCG@10 of the
best-validation epoch). With ``--split-out DIR`` it writes RecBole's train / valid / test
interactions (original ids, tab-separated) for ``jaxrec_on_split.py``; ``--split-only``
stops there.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole reloads its own .pth

import numpy as np  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.general_recommender import LightGCN  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("seed", type=int)
p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
p.add_argument("--split-out", default=None)
p.add_argument("--split-only", action="store_true")
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
    "reg_weight": 1e-5, "stopping_step": 10, "epochs": 300, "valid_metric": "NDCG@10",
    "metrics": ["Recall", "NDCG"], "topk": [10], "device": "cpu", "use_gpu": False,
    "checkpoint_dir": f"{args.checkpoints}/{args.seed}", "show_progress": False,
    "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
}
config = Config(model="LightGCN", dataset="ml-100k", config_dict=cfg)
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
model = LightGCN(config, train_data.dataset).to(config["device"])
trainer = Trainer(config, model)
_, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
print("RESULT", args.seed, json.dumps({"valid": dict(best_valid), "test": dict(test)}, default=float))
