"""Training: the train state, batch kinds, partitioners, run folders, experiment tracking and the loop (``fit``)."""

from jaxrec.train.batches import BatchSource, PreparedData, Sizes, batch_source, epoch_batches, prepare
from jaxrec.train.checkpoint import RunCheckpoints
from jaxrec.train.early_stopping import EarlyStopping
from jaxrec.train.loop import (RunResult, TrainingDivergedError, check_run, dataset_fingerprint, evaluate_params,
                               fit, make_optimizer, results_record, run_identity)
from jaxrec.train.partition import MeshPartitioner, Partitioner, SingleDevice, make_partitioner
from jaxrec.train.runfiles import CheckpointMismatchError
from jaxrec.train.runfolder import NullRunFolder, RunFolder, open_run
from jaxrec.train.state import RunKeys, TrainState, init_state, run_keys
from jaxrec.train.step import make_train_step, run_epoch, train_step
from jaxrec.train.tracking import Tracker, TrackerKind, Tracking, TrackingError

__all__ = [
    "fit", "prepare", "PreparedData", "RunResult", "evaluate_params", "make_optimizer", "check_run",
    "results_record", "run_identity", "dataset_fingerprint", "TrainingDivergedError",
    "TrainState", "init_state", "run_keys", "RunKeys",
    "Partitioner", "SingleDevice", "MeshPartitioner", "make_partitioner",
    "RunFolder", "NullRunFolder", "open_run", "RunCheckpoints", "EarlyStopping", "CheckpointMismatchError",
    "BatchSource", "Sizes", "batch_source", "epoch_batches",
    "train_step", "make_train_step", "run_epoch",
    "Tracking", "Tracker", "TrackerKind", "TrackingError",
]
