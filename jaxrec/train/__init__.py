"""Training: jitted steps, the epoch loop, early stopping, checkpoints and run files."""

from jaxrec.train.checkpoint import RunCheckpoints
from jaxrec.train.early_stopping import EarlyStopping
from jaxrec.train.loop import PreparedData, RunResult, evaluate_params, fit, make_optimizer, prepare
from jaxrec.train.runfiles import CheckpointMismatchError
from jaxrec.train.step import epoch_batches, make_train_step, run_epoch

__all__ = [
    "fit", "prepare", "PreparedData", "RunResult", "evaluate_params", "make_optimizer",
    "RunCheckpoints", "EarlyStopping", "CheckpointMismatchError",
    "make_train_step", "epoch_batches", "run_epoch",
]
