"""What stage 2 reads from the stages before it: user representations, joint item embeddings,
and the per-stage histories and targets its prompts are built from.

``Stage2Inputs`` is the small interface between A-LLMRec's stage 1 (the alignment network)
and stage 2 (the LM):

- ``user_rep``: ``{"train", "valid", "test"} -> float32 [U, d]``: SASRec's user
  representation (the last position's output) of the history the stage's prompts show:
  ``"train"`` the training sequence without its last item (whose title is the teacher-forced
  target, as the reference's ``SeqDataset``: ``seq = train[:-1]``, target ``pos[-1]``),
  ``"valid"`` the training sequence, ``"test"`` training + validation item
  (SASRec.pytorch ``evaluate``);
- ``item_emb`` float32 [I, k]: the joint item embeddings (stage 1: ``e_i`` for items with
  interactions, ``q_i`` from text otherwise; k = 128);
- ``kind``: ``"stage1"``, ``"sasrec"`` (the fallback without stage 1: SASRec's own item table
  as the item embeddings, k = d), or ``"arrays"``; ``source`` (file or description) and the
  dataset ``fingerprint`` they were computed on (checked against the dataset stage 2 runs on).

``stage_examples(dataset, stage, history)`` gives the users of a stage with their prompt
histories (last ``history`` items, oldest first) and targets.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxrec.methods.allmrec.stage2 import Stage2Error
from jaxrec.train.runfolder import RunFolder
from jaxrec.data import Dataset
from jaxrec.data.fingerprint import dataset_fingerprint
from jaxrec.data.sequences import Sequences, histories, left_pad, user_sequences

STAGES = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Stage2Inputs:
    """User representations per stage and joint item embeddings (module docstring)."""

    user_rep: dict[str, np.ndarray]
    item_emb: np.ndarray
    kind: str
    source: str
    fingerprint: dict | None = None
    #: float32 [I, d] or None: the recommender's item vectors in the user representations' space
    #: (its score of item i for user u is ``user_rep[u] . score_items[i]``): stage 1's decoded joint
    #: embeddings, or SASRec's item table (the score probe reads them).
    score_items: np.ndarray | None = None

    @property
    def user_dim(self) -> int:
        return int(self.user_rep["train"].shape[1])

    @property
    def item_dim(self) -> int:
        return int(self.item_emb.shape[1])

    def check(self, dataset: Dataset) -> "Stage2Inputs":
        """Stage2Error naming ``source`` unless the arrays fit ``dataset`` (sizes, and the
        fingerprint when recorded: stage-1 outputs of another dataset or split are refused)."""
        fp = dataset_fingerprint(dataset)
        if self.fingerprint is not None and self.fingerprint != fp:
            raise Stage2Error(f"{self.source}: computed on dataset {self.fingerprint}; expected this run's dataset {fp} "
                              f"(a {self.kind} output of another dataset or split)")
        missing = [s for s in STAGES if s not in self.user_rep]
        if missing:
            raise Stage2Error(f"{self.source}: user representations lack stage(s) {missing}; expected {list(STAGES)}")
        for s in STAGES:
            u = self.user_rep[s]
            if u.ndim != 2 or u.shape[0] != dataset.num_users or u.shape[1] != self.user_dim:
                raise Stage2Error(f"{self.source}: user_rep[{s!r}] has shape {u.shape}; expected "
                                  f"[{dataset.num_users}, {self.user_dim}] (one row per user of {dataset.name})")
        if self.item_emb.ndim != 2 or self.item_emb.shape[0] != dataset.num_items:
            raise Stage2Error(f"{self.source}: item_emb has shape {self.item_emb.shape}; expected "
                              f"[{dataset.num_items}, k] (one row per item of {dataset.name})")
        for name, arr in [("item_emb", self.item_emb)] + [(f"user_rep[{s!r}]", self.user_rep[s]) for s in STAGES]:
            if not np.isfinite(arr).all():
                raise Stage2Error(f"{self.source}: {name} holds non-finite values; expected finite embeddings")
        return self


def from_arrays(user_rep: dict[str, Any] | Any, item_emb, source: str = "arrays", dataset: Dataset | None = None,
                kind: str = "arrays") -> Stage2Inputs:
    """``Stage2Inputs`` of in-memory arrays; one [U, d] array stands for every stage. With
    ``dataset`` they are checked against it and carry its fingerprint."""
    reps = user_rep if isinstance(user_rep, dict) else dict.fromkeys(STAGES, user_rep)
    out = Stage2Inputs({s: np.asarray(v, np.float32) for s, v in reps.items()}, np.asarray(item_emb, np.float32),
                       kind, source, None if dataset is None else dataset_fingerprint(dataset))
    return out.check(dataset) if dataset is not None else out


# ----------------------------------------------------------------------------- histories
def _sequences(data) -> Sequences:
    return data if isinstance(data, Sequences) else user_sequences(data, log_report=False)


def stage_histories(data, stage: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(histories int32 [U, max_len] item ids + 1 left-padded with 0, targets int32 [U] dense id
    or -1) of ``stage`` (module docstring: "train" = training sequence minus its last item with
    that item as target; "valid" / "test" = ``jaxrec.data.sequences.histories``)."""
    if stage not in STAGES:
        raise Stage2Error(f"stage={stage!r}: expected one of {STAGES}")
    s = _sequences(data)
    if stage == "train":
        n = s.lengths
        keep = np.ones(len(s.items), bool)
        keep[s.indptr[1:][n > 0] - 1] = False  # each user's last training item
        indptr = np.concatenate([[0], np.cumsum(np.maximum(n - 1, 0))]).astype(np.int64)
        target = np.full(s.num_users, -1, np.int32)
        target[n >= 2] = s.items[s.indptr[1:][n >= 2] - 1]
        return left_pad(indptr, s.items[keep], max_len, None), target
    target = (s.valid_item if stage == "valid" else s.test_item).astype(np.int32)
    return histories(s, stage, max_len), target


@dataclasses.dataclass(frozen=True, eq=False)
class StageExamples:
    """users int32 [N] (those with a target); history: N lists of dense item ids (the last
    ``history`` items, oldest first); target int32 [N]; user_ids: original ids [N]."""

    users: np.ndarray
    history: list
    target: np.ndarray
    user_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def take(self, rows) -> "StageExamples":
        rows = np.asarray(rows)
        return StageExamples(self.users[rows], [self.history[r] for r in rows], self.target[rows],
                             self.user_ids[rows])


def stage_examples(data, stage: str, history: int = 10) -> StageExamples:
    """The users of ``stage`` with a target, their last ``history`` items and their target.
    "train" needs 2 training items (history >= 1 item), as every prompt shows at least one."""
    s = _sequences(data)
    hist, target = stage_histories(s, stage, history)
    has_history = (hist > 0).any(axis=1)
    users = np.flatnonzero((target >= 0) & has_history).astype(np.int32)
    rows = [(r[r > 0] - 1).astype(np.int32) for r in hist[users]]
    return StageExamples(users, rows, target[users], np.asarray(s.user_ids)[users])


def sasrec_user_reps(params, settings, data, stages=STAGES, max_len: int | None = None) -> dict[str, np.ndarray]:
    """``{stage: float32 [U, d]}``: the backbone's user representation of each stage's
    ``stage_histories`` at ``max_len`` (default ``settings.max_len``, SASRec's; the other
    backbones' runs pass their ``max_seq_len``), by its architecture record
    (``jaxrec.methods.allmrec.stage1.BACKBONES``): a sequential backbone's last-position output
    (``jaxrec.models.sasrec.embed``, GRU4Rec's, NextItNet's); NeuMF's GMF user vector
    (``stage1.GeneralBackbone``: the same for every stage, read by user id)."""
    from jaxrec.methods.allmrec.stage1 import backbone_module  # noqa: PLC0415

    module = backbone_module(settings)
    length = max_len if max_len is not None else getattr(settings, "max_len", 50)
    s = _sequences(data)
    return {stage: np.asarray(module.embed(params, stage_histories(s, stage, length)[0], settings)[0])
            for stage in stages}


def sasrec_inputs(params, settings, dataset: Dataset, source: str = "SASRec parameters",
                  sequences: Sequences | None = None, max_len: int | None = None) -> Stage2Inputs:
    """The fallback without stage 1: SASRec's (or another backbone's, ``stage1.BACKBONES``) user
    representations per stage (``sasrec_user_reps``) and its own item table (without its padding
    row; NeuMF: the GMF item table) as the item embeddings (k = d)."""
    from jaxrec.methods.allmrec.stage1 import backbone_item_table  # noqa: PLC0415

    reps = sasrec_user_reps(params, settings, sequences if sequences is not None else dataset, max_len=max_len)
    item = np.asarray(backbone_item_table(settings, params))[1:]
    return Stage2Inputs(reps, item, "sasrec", source, dataset_fingerprint(dataset), item).check(dataset)


def sasrec_run_inputs(run_dir, dataset: Dataset) -> Stage2Inputs:
    """``sasrec_inputs`` of a finished SASRec run folder (``jaxrec.methods.allmrec.stage1.load_sasrec_run``:
    DataError when it was trained on another dataset or split; Stage1Error for a folder that is
    not a finished SASRec run)."""
    from jaxrec.methods.allmrec.stage1 import BACKBONE_LABELS, load_sasrec_run  # noqa: PLC0415

    run = load_sasrec_run(run_dir, dataset)
    label = BACKBONE_LABELS.get(run.backbone, run.backbone)
    return sasrec_inputs(run.params, run.settings, dataset, source=f"{run.path} ({label} fallback: no stage 1)",
                         max_len=run.max_len)


def stage1_inputs(stage1_run, dataset: Dataset) -> Stage2Inputs:
    """Stage 2's inputs (kind ``"stage1"``) from a finished ``allmrec_stage1`` run (a
    ``Stage1Run`` or its folder, ``jaxrec.methods.allmrec.stage1.load_stage1_run``):

    - ``item_emb`` float32 [I, joint_dim] = ``Stage1Run.joint_item_embeddings()`` (``e_i`` for
      items with training interactions, ``q_i`` from text otherwise; A-LLMRec section 3.2);
    - ``user_rep["valid"]`` / ``["test"]`` float32 [U, d] = ``Stage1Run.user_representations``
      of that stage (the frozen SASRec's last-position output; another sequential backbone's
      likewise; NeuMF's GMF user vectors, ``stage1.GeneralBackbone``, the same for every stage);
    - ``user_rep["train"]``: the same frozen SASRec over the training sequence without its last
      item (the teacher-forced target: the reference's ``SeqDataset``, module docstring), not
      ``user_representations("train")``, whose history holds that target.

    The fingerprint is the stage-1 run's (``results.json``), so another dataset or split is
    refused (Stage2Error); a folder that is not a finished stage-1 run raises Stage1Error.
    """
    from jaxrec.methods.allmrec.stage1 import Stage1Run, load_stage1_run  # noqa: PLC0415

    run = stage1_run if isinstance(stage1_run, Stage1Run) else load_stage1_run(stage1_run, dataset)
    frozen = run.contexts["test"].sasrec
    reps = {"train": sasrec_user_reps(frozen, run.sasrec.settings, dataset, ("train",), run.sasrec.max_len)["train"],
            "valid": run.user_representations("valid"), "test": run.user_representations("test")}
    fingerprint = RunFolder.read(run.path, "stage-1 run").fingerprint
    decoded = np.asarray(run.recommender_embeddings("test")[1], np.float32)
    return Stage2Inputs({k: np.asarray(v, np.float32) for k, v in reps.items()},
                        np.asarray(run.joint_item_embeddings(), np.float32), "stage1",
                        f"{run.path} (stage-1 run)", fingerprint, decoded).check(dataset)


# ----------------------------------------------------------------------------- files
def save_inputs(path, inputs: Stage2Inputs) -> Path:
    """Write ``inputs`` as one ``.npz`` (``user_rep_<stage>``, ``item_emb``, ``score_items`` when
    present, JSON ``meta`` with kind, source and fingerprint); written to a temporary name, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    meta = {"kind": inputs.kind, "source": inputs.source, "fingerprint": inputs.fingerprint}
    np.savez(tmp, item_emb=inputs.item_emb, meta=np.array(json.dumps(meta, sort_keys=True)),
             **{f"user_rep_{s}": inputs.user_rep[s] for s in STAGES},
             **({"score_items": inputs.score_items} if inputs.score_items is not None else {}))
    os.replace(tmp, path)
    return path


def load_inputs(path, dataset: Dataset | None = None) -> Stage2Inputs:
    """Read a ``save_inputs`` file (Stage2Error naming the file and the missing field); with
    ``dataset``, checked against it (``Stage2Inputs.check``: another dataset is refused)."""
    path = Path(path)
    want = ["item_emb", "meta"] + [f"user_rep_{s}" for s in STAGES]
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in want if k not in z.files]
            if missing:
                raise Stage2Error(f"{path}: no field(s) {missing}; expected a stage-2 inputs file (save_inputs) "
                                  f"with {want}")
            arrays = {k: z[k] for k in want + (["score_items"] if "score_items" in z.files else [])}
    except (OSError, ValueError) as e:
        if isinstance(e, Stage2Error):
            raise
        raise Stage2Error(f"{path}: cannot read as a stage-2 inputs .npz ({e})") from None
    meta = json.loads(str(arrays["meta"]))
    out = Stage2Inputs({s: arrays[f"user_rep_{s}"].astype(np.float32) for s in STAGES},
                       arrays["item_emb"].astype(np.float32), meta.get("kind", "arrays"), str(path),
                       meta.get("fingerprint"),
                       arrays["score_items"].astype(np.float32) if "score_items" in arrays else None)
    return out.check(dataset) if dataset is not None else out


def resolve_inputs(config, dataset: Dataset) -> Stage2Inputs:
    """The stage-2 inputs ``config`` names, checked against ``dataset``:

    - ``stage1_run``: a finished stage-1 run folder (``stage1_inputs``) or its exported inputs
      (``.npz``, ``save_inputs``);
    - else ``sasrec_run``: the SASRec fallback, from a finished SASRec run folder
      (``sasrec_run_inputs``) or a ``.npz`` of ``sasrec_inputs`` saved.

    Raises Stage2Error naming the key when neither is set or the path is neither such a folder
    nor such a file (Stage1Error / DataError from the folder's loader: not a finished run of
    that model, or another dataset).
    """
    for key, from_folder, what in (("stage1_run", stage1_inputs, "an allmrec_stage1 run folder"),
                                   ("sasrec_run", sasrec_run_inputs, "a sasrec run folder")):
        value = getattr(config, key)
        if value is None:
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            return from_folder(path, dataset)
        if path.suffix == ".npz" and path.is_file():
            return load_inputs(path, dataset)
        raise Stage2Error(f"{key}={value!r}: expected {what} or a stage-2 inputs .npz (jaxrec.methods.allmrec.stage2_inputs."
                          f"save_inputs); {'no such file or folder' if not path.exists() else 'not a .npz file'}")
    raise Stage2Error("stage 2 needs user representations and joint item embeddings: set stage1_run (or "
                      "sasrec_run for the fallback on SASRec's own item table)")


__all__ = ["save_inputs", "load_inputs", "resolve_inputs", "Stage2Inputs", "STAGES", "from_arrays", "stage_histories", "StageExamples", "stage_examples",
           "sasrec_inputs", "sasrec_user_reps", "sasrec_run_inputs", "stage1_inputs"]
