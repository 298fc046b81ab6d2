"""A-LLMRec stage 1: align a frozen SASRec's item embeddings with item-text embeddings.

Kim et al., "Large Language Models meet Collaborative Filtering" (KDD 2024), section 4.1;
reference implementation ghdtjr/A-LLMRec, ``models/a_llmrec_model.py`` (``two_layer_mlp``,
``pre_train_phase1``) and ``train_model.py`` (``train_model_phase1_``); DESIGN.md 2.2 and 6.

Networks (``two_layer_mlp``): an item autoencoder ``f_I`` (d -> 128 -> d) and a text
autoencoder ``f_T`` (N -> 128 -> N), each ``z = sigmoid(W1 x + b1)`` (the latent) and
``x_hat = W2 z + b2`` (the reconstruction); no dropout, no normalization; torch ``nn.Linear``
default initialization (kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))).

Loss of one batch (``pre_train_phase1``), for the SASRec output ``u`` at the last position of
each training window (``align_positions="all"``: every non-padding position, the paper's
section 5.4.2 variant), the next item ``p`` and one sampled negative ``n`` (never an item of the
user), with ``E`` = SASRec's item table row (not scaled by sqrt(d)) and ``Q`` = the item's text
embedding:

- ``align_rec`` = BCE(mean_d(u * f_I^dec(e_p)), 1) + BCE(mean_d(u * f_I^dec(e_n)), 0)
  (the reference's logit is the *mean* over the d dimensions, ``(log_emb*pos_proj).mean(axis=1)``);
- ``align_match`` = MSE(e_p, q_p) + MSE(e_n, q_n) with ``e = f_I^enc(E)``, ``q = f_T^enc(Q)``;
- ``align_item_recon`` = MSE(f_I(E_p), E_p) + MSE(f_I(E_n), E_n);
- ``align_text_recon`` = MSE(f_T(Q_p), sg(Q_p)) + MSE(f_T(Q_n), sg(Q_n)) (target detached,
  the reference's ``.data``);
- total = rec + match + ``align_alpha`` (0.5) * item_recon + ``align_beta`` (0.2) * text_recon.

Every MSE / BCE is a mean over the valid rows (and dimensions), so padding rows of the last
batch carry no weight. Adam lr 1e-4, betas (0.9, 0.98), batch 32, 10 epochs (``train_model.py``).

Frozen parts: the SASRec parameters live in the model *context* (never in the optimized
params), and SASRec runs deterministically (dropout off; the reference calls ``model.train()``
on the whole module, which leaves SASRec's dropout on under ``no_grad``: a quirk not copied).
The text encoder is frozen (``text_finetune=False``: text embeddings precomputed once, from
``config.embeddings`` or ``config.encoder`` through the on-disk cache) or fine-tuned end to end
(``text_finetune=True``: its params are ``params["text_encoder"]``, dropout on while training).
The paper fine-tunes SBERT ``nq-distilbert-base-v1`` (768-d), which ``jaxrec.text`` does not
implement: MiniLM / MPNet (``jaxrec.text``) stand in.

Item text: the dataset's template (``jaxrec.init.text``); an item whose fields are all empty
gets ``FALLBACK_TEXT`` (the reference's ``'No Title'`` / ``'No Description'`` defaults), counted
and logged as a warning.

Joint embeddings (what stage 2 reads): ``e_i = f_I^enc(E_i)`` for items with training
interactions, ``q_i = f_T^enc(Q_i)`` otherwise (``joint_item_embeddings``). The stage-1
recommender scores item i for a user by ``u . f_I^dec(z_i)`` with z the joint embedding
(``align_items="joint"``) or q for every item (``"text"``, the "SBERT" variant); this ranks as
the reference's mean-over-d logit (a positive factor 1/d).

Backbones (``BACKBONES``; A-LLMRec Table 9: the method is model-agnostic): the frozen run is a
SASRec, GRU4Rec or NextItNet run (sequential: ``u`` = the output at the last position of the
history, ``E`` = the ID item table) or an NCF / NeuMF run (general: ``u`` = the GMF user row
times the GMF half of the prediction layer, ``E`` = the GMF item row, so that ``u . E_i`` is the
GMF part of NeuMF's logit; ``GeneralBackbone`` says why). "SASRec" below stands for any of them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxrec.config import ConfigError, ModelSettings
from jaxrec.data import DataError
from jaxrec.data.fingerprint import dataset_fingerprint
from jaxrec.data.sequences import histories, user_sequences
from jaxrec.errors import JaxrecError
from jaxrec.models import gru4rec as _gru4rec
from jaxrec.models import neumf as _neumf
from jaxrec.models import nextitnet as _nextitnet
from jaxrec.models import sasrec as _sasrec
from jaxrec.models.base import Encoder, Model
from jaxrec.nn import PureModule, torch_uniform
from jaxrec.nn import init_params as _init_pure
from jaxrec.objectives import LossInputs, Term, term, weighted_sum
from jaxrec.registry import ContextKind
from jaxrec.train.runfolder import RunFolder, RunFolderError

log = logging.getLogger("jaxrec.methods.allmrec")

JOINT_DIM = 128
POSITIONS = ("last", "all")
ITEM_SIDES = ("joint", "text")
FALLBACK_TEXT = "No Title, No Description"
#: Term names, in the order of the total loss.
TERMS = ("align_rec", "align_match", "align_item_recon", "align_text_recon")

Params = dict


class Stage1Error(JaxrecError, ValueError):
    """A stage-1 input is invalid (run folder, encoder, shapes); the message names it."""


# ----------------------------------------------------------------------------- backbones
class GeneralBackbone:
    """Stage 1's view of a general (non-sequential) backbone run: NCF / NeuMF (He et al. 2017,
    ``jaxrec.models.neumf``), A-LLMRec's Table 9 "NCF" row. The same functions as a sequential
    backbone's module (``BACKBONES``), over NeuMF's parameters:

    - user representation ``u = p_u * w_mf`` float32 [U, d_mf] (``neumf.gmf_user_vectors``: the
      GMF user row scaled by the GMF half of the ``predict`` kernel), item embedding ``E_i = q_i``
      [I, d_mf] (``neumf.gmf_item_vectors``: the GMF item row, the table LLM initialization writes
      for NeuMF). Then ``u . E_i`` is exactly the GMF tower's part of NeuMF's logit, so the stage-1
      recommender score ``u . f_I^dec(z_i)`` (``f_I^dec`` reconstructs ``E``) is NeuMF's own
      bilinear score through the decoded joint embedding. The MLP tower scores a pair through a
      nonlinear network of ``[p'_u ; q'_i]``, so no vector pair reproduces it; concatenating its
      embeddings would give a dot product ``p'_u . q'_i`` NeuMF never computes. (A choice of ours:
      the paper only says A-LLMRec uses the CF-RecSys's user and item embeddings, and the
      reference code, ghdtjr/A-LLMRec, ships SASRec only.)
    - The user representation depends on the user id, not on a history: ``embed(params,
      histories [U, L], arch)`` reads only the number of rows, which must be NeuMF's U (row u =
      user u), and returns the same vectors for every stage. A user kept out of NeuMF's training
      (cold users) has its untrained initial row, as NeuMF itself does; another dataset's users
      (cross-domain) have none (``cross_domain_embeddings`` raises Stage1Error).
    - Training batches (``"sequences"``) carry ``user`` [B]; ``batch_output`` broadcasts the
      user's vector over the window's positions, so ``align_positions="last"`` aligns (user, last
      training item) and ``"all"`` every (user, training item) pair of the window.
    - ``item_table(params)`` [I + 1, d_mf] puts a zero padding row 0 in front of ``q`` so that
      stage 1 indexes it with item ids + 1 as a sequential backbone's table.
    """

    sequential = False

    def __init__(self, module, arch_type, label: str):
        self.module, self.arch_type, self.label = module, arch_type, label

    def __repr__(self) -> str:
        return f"GeneralBackbone({self.label})"

    def arch_from_config(self, config, num_items: int, num_users: int | None = None):
        if num_users is None:
            raise Stage1Error(f"{self.label} run: its architecture needs the number of users (a general model "
                              "has a user table); give num_users")
        return self.module.arch_from_config(config, num_users, num_items)

    def init_params(self, key, arch):
        return self.module.init_params(key, arch)

    def user_vectors(self, params) -> jax.Array:
        """float32 [U, d_mf]: every user's representation (class docstring)."""
        return self.module.gmf_user_vectors(params)

    def item_table(self, params) -> jax.Array:
        """float32 [I + 1, d_mf]: a zero row 0 (padding), then the item embeddings by dense id."""
        items = self.module.gmf_item_vectors(params)
        return jnp.concatenate([jnp.zeros((1, items.shape[1]), items.dtype), items])

    def embed(self, params, histories, arch, chunk_size: int = 1024):
        """(user_emb [U, d_mf], item_emb [I, d_mf]); ``histories`` [U, L] only fixes U (row u = user u)."""
        rows = int(jnp.shape(histories)[0])
        if rows != arch.num_users:
            raise Stage1Error(f"histories: {rows} rows; the {self.label} run has {arch.num_users} users (a general "
                              "backbone's user representation is its user table row, so only its own users have one)")
        return self.user_vectors(params), self.module.gmf_item_vectors(params)

    def batch_output(self, params, batch, arch) -> jax.Array:
        """float32 [B, L, d_mf]: each row's user vector at every position of its window (padding
        rows, ``user`` -1, read user 0 and carry no loss: their ``pos`` is all 0)."""
        seq = jnp.asarray(batch["seq"])
        user = self.user_vectors(params)[jnp.maximum(jnp.asarray(batch["user"]), 0)]
        return jnp.broadcast_to(user[:, None, :], (*seq.shape, user.shape[-1]))


#: NeuMF as a stage-1 backbone (``GeneralBackbone``: GMF user / item vectors).
NEUMF_BACKBONE = GeneralBackbone(_neumf, _neumf.NeuMFArch, "NCF (NeuMF)")

#: The backbones stage 1 can align (A-LLMRec Table 9: the method is model-agnostic): run model
#: name -> its module. A sequential backbone's module (SASRec, GRU4Rec, NextItNet) has
#: ``init_params(key, arch)``, ``sequence_output(params, seq, arch, key=, train=) -> [B, L, d]``,
#: ``embed(params, histories, arch, chunk_size) -> (users [U, d], items [I, d])``,
#: ``item_table(params) -> [I + 1, d]`` and ``arch_from_config(config, num_items)``; the user
#: representation is the output at the last position, the item representation the ID table row
#: (``item_embedding``). The general NeuMF is ``NEUMF_BACKBONE`` (``GeneralBackbone``: the same
#: functions but ``sequence_output``, plus ``batch_output``; GMF user and item vectors).
BACKBONES = {"sasrec": _sasrec, "gru4rec": _gru4rec, "nextitnet": _nextitnet, "neumf": NEUMF_BACKBONE}
_ARCH_TYPES = {_sasrec.SASRecArch: _sasrec, _gru4rec.GRU4RecArch: _gru4rec, _nextitnet.NextItNetArch: _nextitnet,
               _neumf.NeuMFArch: NEUMF_BACKBONE}
BACKBONE_LABELS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "nextitnet": "NextItNet", "neumf": "NCF (NeuMF)"}


def is_sequential_module(module) -> bool:
    """Whether a ``BACKBONES`` value is a sequential backbone's module (not a ``GeneralBackbone``)."""
    return getattr(module, "sequential", True)


def is_sequential(arch) -> bool:
    """Whether the backbone of ``arch`` reads histories (SASRec, GRU4Rec, NextItNet) rather than
    user ids (NeuMF, ``GeneralBackbone``)."""
    return getattr(backbone_module(arch), "sequential", True)


def backbone_item_table(arch, params) -> jax.Array:
    """float32 [I + 1, d]: the backbone's item table (row 0 padding, item dense id i at row i + 1)."""
    return backbone_module(arch).item_table(params)


def backbone_batch_output(arch, params, batch) -> jax.Array:
    """float32 [B, L, d]: the frozen backbone's user representation at each position of a
    ``"sequences"`` batch: a sequential backbone's output (dropout off), NeuMF's user vector."""
    module = backbone_module(arch)
    if is_sequential(arch):
        return module.sequence_output(params, jnp.asarray(batch["seq"]), arch, train=False)
    return module.batch_output(params, batch, arch)


def backbone_module(arch):
    """The module of the backbone whose architecture record ``arch`` is (``BACKBONES``;
    ``NEUMF_BACKBONE`` for a ``NeuMFArch``)."""
    try:
        return _ARCH_TYPES[type(arch)]
    except KeyError:
        raise Stage1Error(f"backbone architecture {type(arch).__name__}: expected one of "
                          f"{', '.join(t.__name__ for t in _ARCH_TYPES)} (a run of {', '.join(BACKBONES)})") from None


class TwoLayerMLP(nnx.Module):
    """``__call__(x [..., dim]) -> (z = sigmoid(fc1 x) [..., joint], x_hat = fc2 z [..., dim])``
    (reference ``two_layer_mlp``)."""

    def __init__(self, dim: int, joint: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, joint, kernel_init=torch_uniform(dim), bias_init=torch_uniform(dim), rngs=rngs)
        self.fc2 = nnx.Linear(joint, dim, kernel_init=torch_uniform(joint), bias_init=torch_uniform(joint), rngs=rngs)

    def encode(self, x):
        return jax.nn.sigmoid(self.fc1(x))

    def __call__(self, x):
        z = self.encode(x)
        return z, self.fc2(z)


class AlignmentNet(nnx.Module):
    """The two autoencoders: ``item_ae`` (d -> joint -> d) and ``text_ae`` (N -> joint -> N)."""

    def __init__(self, item_dim: int, text_dim: int, joint_dim: int, rngs: nnx.Rngs):
        self.item_ae = TwoLayerMLP(item_dim, joint_dim, rngs)
        self.text_ae = TwoLayerMLP(text_dim, joint_dim, rngs)


@functools.lru_cache(maxsize=32)
def _pure(item_dim: int, text_dim: int, joint_dim: int) -> PureModule:
    return PureModule.of(lambda rngs: AlignmentNet(item_dim, text_dim, joint_dim, rngs))


def _dims(params: Params) -> tuple[int, int, int]:
    try:
        item_dim, joint = params["item_ae"]["fc1"]["kernel"].shape
        text_dim = params["text_ae"]["fc1"]["kernel"].shape[0]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise Stage1Error("params: expected the dict init_params returns (item_ae/text_ae with fc1/fc2 "
                          f"kernel and bias); {type(e).__name__}: {e}") from None
    return int(item_dim), int(text_dim), int(joint)


def as_module(params: Params) -> AlignmentNet:
    """The ``AlignmentNet`` holding ``params["item_ae"]`` / ``params["text_ae"]`` (other keys,
    e.g. ``text_encoder``, are ignored); Stage1Error if their structure is not ``init_params``'s."""
    ae = {"item_ae": params["item_ae"], "text_ae": params["text_ae"]}
    return _pure(*_dims(params)).merge(ae, check=True, error=Stage1Error, about="init_params' autoencoders")


def init_params(key: jax.Array, item_dim: int, text_dim: int, joint_dim: int = JOINT_DIM) -> Params:
    """Fresh autoencoder params ``{"item_ae": {"fc1": {"kernel" [d, J], "bias" [J]}, "fc2":
    {"kernel" [J, d], "bias" [d]}}, "text_ae": (same with N)}``, float32, torch Linear init."""
    for name, v in (("item_dim", item_dim), ("text_dim", text_dim), ("joint_dim", joint_dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise Stage1Error(f"{name}: expected an integer >= 1, got {v!r}")
    return _init_pure(lambda rngs: AlignmentNet(item_dim, text_dim, joint_dim, rngs), key)


def item_latents(params: Params, item_vectors) -> jax.Array:
    """``e = f_I^enc(E)``: float32 [..., J] in (0, 1) for SASRec item rows ``item_vectors`` [..., d]."""
    return as_module(params).item_ae.encode(item_vectors)


def text_latents(params: Params, text_vectors) -> jax.Array:
    """``q = f_T^enc(Q)``: float32 [..., J] in (0, 1) for text embeddings ``text_vectors`` [..., N]."""
    return as_module(params).text_ae.encode(text_vectors)


def decode_items(params: Params, latents) -> jax.Array:
    """``f_I^dec(z)``: float32 [..., d], joint latents [..., J] back in SASRec's item space."""
    return as_module(params).item_ae.fc2(latents)


def joint_item_embeddings(params: Params, item_vectors, text_vectors, warm) -> jax.Array:
    """float32 [I, J]: ``e_i`` where ``warm[i]`` (the item has training interactions), else ``q_i``.

    item_vectors: [I, d] SASRec item rows (dense id i; padding row excluded); text_vectors:
    [I, N] item text embeddings; warm: bool [I]. Raises Stage1Error naming a mismatched input.
    """
    d, n, _ = _dims(params)
    item_vectors, text_vectors, warm = jnp.asarray(item_vectors), jnp.asarray(text_vectors), jnp.asarray(warm)
    if item_vectors.ndim != 2 or item_vectors.shape[1] != d:
        raise Stage1Error(f"item_vectors: shape {item_vectors.shape}; expected [I, {d}] (SASRec's hidden size)")
    if text_vectors.ndim != 2 or text_vectors.shape[1] != n:
        raise Stage1Error(f"text_vectors: shape {text_vectors.shape}; expected [I, {n}] (the text autoencoder's "
                          "input size: the encoder this stage-1 model was trained with)")
    if text_vectors.shape[0] != item_vectors.shape[0] or warm.shape != (item_vectors.shape[0],):
        raise Stage1Error(f"item_vectors {item_vectors.shape}, text_vectors {text_vectors.shape}, warm {warm.shape}: "
                          "expected the same number of items I in each")
    return jnp.where(warm[:, None], item_latents(params, item_vectors), text_latents(params, text_vectors))


# ----------------------------------------------------------------------------- loss
def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` [N, ...] over rows with ``mask`` [N] (and every trailing element)."""
    per_row = x.reshape(x.shape[0], -1).mean(axis=1)
    w = mask.astype(per_row.dtype)
    return jnp.sum(per_row * w) / jnp.maximum(jnp.sum(w), 1.0)


def stage1_losses(params: Params, user, pos_item, neg_item, pos_text, neg_text, mask=None) -> dict[str, jax.Array]:
    """The four stage-1 loss terms (module docstring) of N training examples -> dict of scalars.

    user, pos_item, neg_item: float32 [N, d] (SASRec output, item rows of the positive and the
    negative); pos_text, neg_text: float32 [N, T] (their text embeddings); mask: bool [N] rows
    that count (default all). Keys ``TERMS``. Pure; differentiable in ``params`` and the text
    embeddings (for a fine-tuned encoder; the reconstruction target is detached).
    """
    chex.assert_rank([user, pos_item, neg_item, pos_text, neg_text], 2)
    chex.assert_equal_shape([user, pos_item, neg_item])
    chex.assert_equal_shape([pos_text, neg_text])
    mask = jnp.ones(user.shape[0], bool) if mask is None else mask
    net = as_module(params)
    e_pos, item_hat_pos = net.item_ae(pos_item)
    e_neg, item_hat_neg = net.item_ae(neg_item)
    q_pos, text_hat_pos = net.text_ae(pos_text)
    q_neg, text_hat_neg = net.text_ae(neg_text)
    pos_logit = jnp.mean(user * item_hat_pos, axis=-1)
    neg_logit = jnp.mean(user * item_hat_neg, axis=-1)
    mse = lambda a, b: _masked_mean(jnp.square(a - b), mask)  # noqa: E731
    return {
        # BCE with logits: label 1 -> softplus(-x), label 0 -> softplus(x)
        "align_rec": _masked_mean(jax.nn.softplus(-pos_logit), mask) + _masked_mean(jax.nn.softplus(neg_logit), mask),
        "align_match": mse(e_pos, q_pos) + mse(e_neg, q_neg),
        "align_item_recon": mse(item_hat_pos, pos_item) + mse(item_hat_neg, neg_item),
        "align_text_recon": mse(text_hat_pos, jax.lax.stop_gradient(pos_text))
        + mse(text_hat_neg, jax.lax.stop_gradient(neg_text)),
    }


# ----------------------------------------------------------------------------- SASRec run
@dataclasses.dataclass(frozen=True)
class SASRecRun:
    """A finished run of a backbone (``BACKBONES``: SASRec, GRU4Rec, NextItNet, NeuMF): its
    ``config`` (dict of results.json), ``settings`` (its architecture record, ``SASRecArch`` /
    ``GRU4RecArch`` / ``NextItNetArch`` / ``NeuMFArch``), best ``params``, the ``fingerprint`` of
    the dataset it was trained on and the ``backbone`` name."""

    path: Path
    config: dict
    settings: Any
    params: Params | None
    fingerprint: dict
    backbone: str = "sasrec"

    @property
    def max_len(self) -> int:
        """The run's ``max_seq_len`` (the histories it reads; 50 for NeuMF, which reads none)."""
        return int(self.config.get("max_seq_len", 50))

    @property
    def sequential(self) -> bool:
        """Whether the backbone reads histories (False for NeuMF: ``GeneralBackbone``)."""
        return is_sequential(self.settings)


def _finished_run(path, what: str, *models: str) -> tuple[RunFolder, dict]:
    """(the run folder, its results.json) of a finished run of one of ``models``; Stage1Error otherwise."""
    try:
        folder = RunFolder.read(path, what)
        results = folder.finished_results(what)
        folder.require_model(*models, what=what)
    except RunFolderError as e:
        raise Stage1Error(str(e)) from None
    return folder, results


def sasrec_settings_of(run_config: dict, num_items: int, backbone: str = "sasrec", num_users: int | None = None):
    """The architecture record (``SASRecArch``, ``GRU4RecArch``, ``NextItNetArch``, ``NeuMFArch``)
    of a stored run config dict (results.json ``config``) of ``backbone``; ``num_users`` is
    needed by NeuMF (its user tables). Stage1Error for a backbone not in ``BACKBONES``."""
    from jaxrec.config import Config  # noqa: PLC0415

    if backbone not in BACKBONES:
        raise Stage1Error(f"backbone {backbone!r}: expected one of {', '.join(BACKBONES)}")
    config = Config.from_dict(run_config, f"{backbone} run config")
    module = BACKBONES[backbone]
    if is_sequential_module(module):
        return module.arch_from_config(config, num_items)
    return module.arch_from_config(config, num_items, num_users)


def load_sasrec_run(path, dataset=None, *, with_params: bool = True) -> SASRecRun:
    """Read a finished run folder of a backbone (``jaxrec.fit`` with ``model="sasrec"``, or any of
    ``BACKBONES``: ``"gru4rec"``, ``"nextitnet"``, ``"neumf"``), through
    ``jaxrec.train.runfolder.RunFolder``.

    dataset: when given, the folder must have been trained on it (same dataset fingerprint:
    name, sizes and split hash), else ``DataError`` naming the differing fields.
    Raises Stage1Error for a folder that is not a finished run of one of ``BACKBONES`` (the
    message names them).
    """
    path = Path(path).expanduser()
    folder, data = _finished_run(path, "sasrec_run", *BACKBONES)
    backbone = folder.model_name
    fp = data["dataset"]
    if dataset is not None:
        ours = dataset_fingerprint(dataset)
        diff = {k: (fp.get(k), ours[k]) for k in ours if fp.get(k) != ours[k]}
        if diff:
            raise DataError(f"sasrec_run={str(path)!r}: trained on another dataset or split than {dataset.name!r}: "
                            + ", ".join(f"{k} {a!r} (run) vs {b!r} (here)" for k, (a, b) in diff.items())
                            + "; train SASRec on this dataset with the same split and seed first")
    settings = sasrec_settings_of(data["config"], int(fp["num_items"]), backbone, int(fp["num_users"]))
    params = None
    if with_params:
        shapes = jax.eval_shape(lambda k: BACKBONES[backbone].init_params(k, settings), jax.random.key(0))
        try:
            params = jax.tree.map(jnp.asarray, folder.restore_params(shapes, "best"))
        except RunFolderError as e:
            raise Stage1Error(f"sasrec_run={str(path)!r}: {e}") from None
    return SASRecRun(path, data["config"], settings, params, fp, backbone)


# ----------------------------------------------------------------------------- text inputs
def item_texts_with_fallback(dataset) -> tuple[list[str], str, int]:
    """(texts [I], template, number of items given ``FALLBACK_TEXT``) of the dataset's items."""
    from jaxrec.init.text import item_texts, template_for  # noqa: PLC0415

    if not dataset.item_features:
        raise DataError(f"dataset {dataset.name!r}: no item features to build item texts from; set "
                        "config.embeddings (precomputed text embeddings) with text_finetune=False")
    template = template_for(dataset.name, dataset.item_features)
    texts, _ = item_texts(dataset.item_features, template)
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        log.warning("stage 1: %d of %d items have no text; they get %r (e.g. items %s)", len(empty), len(texts),
                    FALLBACK_TEXT, [str(dataset.item_ids[i]) for i in empty[:5]])
        texts = [t or FALLBACK_TEXT for t in texts]
    return texts, template, len(empty)


def encoder_folder(name: str) -> Path:
    """The sentence-transformers folder of ``config.encoder`` for ``jaxrec.text`` (``minilm``,
    ``mpnet``, a folder; a ``-jax`` suffix is allowed). Raises Stage1Error otherwise."""
    from jaxrec.init import encoders as enc  # noqa: PLC0415

    base, _ = enc.split_jax_suffix(name)
    alias = enc._ALIASES.get(str(base).lower())
    if alias == "minilm":
        return enc.minilm_path()
    if alias == "mpnet":
        return enc.mpnet_path()
    path = Path(base).expanduser()
    if path.is_dir():
        return path.resolve()
    raise Stage1Error(f"encoder={name!r}: expected 'minilm', 'mpnet' or a sentence-transformers folder "
                      "(jaxrec.text runs it)")


def uses_precomputed_text(config) -> bool:
    """Whether a stage-1 config's text is a precomputed embeddings file (frozen encoder)."""
    return bool(config.embeddings) and not config.text_finetune


def text_dim_of(config) -> int:
    """Size N of the item text embeddings ``config`` gives (embeddings file or encoder folder)."""
    from jaxrec.text import read_sentence_folder  # noqa: PLC0415

    if config.embeddings and not config.text_finetune:
        try:
            arr = np.load(config.embeddings, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise ConfigError(f"embeddings={config.embeddings!r}: cannot read ({e}); expected a float .npy [I, N]") from None
        if arr.ndim != 2:
            raise ConfigError(f"embeddings={config.embeddings!r}: shape {arr.shape}; expected [I, N]")
        return int(arr.shape[1])
    if not config.encoder:
        raise ConfigError("encoder=None: stage 1 needs item text embeddings; set embeddings (a .npy, frozen "
                          "encoder) or encoder (minilm, mpnet or a sentence-transformers folder)")
    return int(read_sentence_folder(encoder_folder(config.encoder)).dim)


def frozen_text_embeddings(dataset, config, cache_dir=None) -> np.ndarray:
    """float32 [I, N]: ``config.embeddings`` (rows by item id) or the items' texts (with the
    fallback text) encoded once by ``config.encoder`` through the on-disk cache."""
    from jaxrec.init.cache import cached_item_embeddings  # noqa: PLC0415
    from jaxrec.init.encoders import cache_root, encode_texts, encoder_cache_id, load_encoder  # noqa: PLC0415
    from jaxrec.init.precomputed import load_precomputed  # noqa: PLC0415

    if config.embeddings:
        return np.asarray(load_precomputed(config.embeddings, dataset_item_ids=np.asarray(dataset.item_ids)),
                          np.float32)
    if not config.encoder:
        raise ConfigError("embeddings=None, encoder=None: stage 1 needs item text embeddings; set embeddings "
                          "(a .npy) or encoder (minilm, mpnet or a sentence-transformers folder), e.g. through "
                          "jaxrec.init.resolve_embedding_source")
    texts, template, _ = item_texts_with_fallback(dataset)
    holder = {}

    def encode(t):
        if "enc" not in holder:
            holder["enc"] = load_encoder(config.encoder)
        return encode_texts(holder["enc"], t, batch_size=64, progress=False)

    emb, _ = cached_item_embeddings(encoder_cache_id(config.encoder), texts, template,
                                    cache_dir or cache_root() / "embeddings", encode)
    return np.asarray(emb, np.float32)


def item_tokens(dataset, config) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int32 [I, T], attention_mask int32 [I, T]) of the items' texts for a fine-tuned
    encoder (``config.encoder``'s tokenizer; T = the longest text, at most its max_seq_length)."""
    from jaxrec.text import load_tokenizer, read_sentence_folder  # noqa: PLC0415

    folder = read_sentence_folder(encoder_folder(config.encoder))
    texts, _, _ = item_texts_with_fallback(dataset)
    if folder.do_lower_case:
        texts = [t.lower() for t in texts]
    ids = [e.ids for e in load_tokenizer(folder.tokenizer, folder.max_seq_length).encode_batch(texts)]
    length = max(len(s) for s in ids)
    tokens = np.full((len(ids), length), folder.config.pad_token_id, np.int32)
    mask = np.zeros((len(ids), length), np.int32)
    for r, s in enumerate(ids):
        tokens[r, :len(s)] = s
        mask[r, :len(s)] = 1
    return tokens, mask


# ----------------------------------------------------------------------------- context
@struct.dataclass
class Stage1Context:
    """What the stage-1 backbone reads besides the batch, per stage (a pytree; ``arch`` and
    ``text_model`` are static):

    - ``sasrec``: the frozen backbone params (never optimized); ``arch``: its architecture
      record (``SASRecArch``, ``GRU4RecArch``, ``NextItNetArch``, ``NeuMFArch``);
    - ``histories`` int32 [U, L] (valid: the training sequence; test: + the validation item);
    - ``warm`` bool [I]: items with training interactions;
    - ``text`` float32 [I, N] (frozen encoder), or ``tokens`` / ``mask`` int32 [I, T] with the
      ``text_model`` (a ``jaxrec.text.SentenceModel``) for a fine-tuned encoder.
    """

    sasrec: dict
    histories: Any
    warm: Any
    text: Any = None
    tokens: Any = None
    mask: Any = None
    arch: Any = struct.field(pytree_node=False, default=None)
    text_model: Any = struct.field(pytree_node=False, default=None)

    @property
    def text_dim(self) -> int:
        """N: the width of the item text embeddings."""
        return int(self.text.shape[1]) if self.text_model is None else int(self.text_model.dim)


def _text_model_from(encoder):
    from jaxrec.text import SentenceModel, read_sentence_folder  # noqa: PLC0415

    return SentenceModel.build(read_sentence_folder(encoder_folder(encoder)))


def stage1_context(dataset, config) -> dict:
    """``{"train"/"valid": ctx, "test": ctx}`` of ``Stage1Context``: the SASRec run of
    ``config.sasrec_run`` (its params and architecture), the stage's histories, the warm items,
    and the item text (frozen: embeddings from ``embeddings`` / ``encoder`` through the cache;
    fine-tuned: tokens of ``encoder``'s tokenizer and its ``SentenceModel``)."""
    run = load_sasrec_run(config.sasrec_run, dataset)
    seqs = user_sequences(dataset)
    warm = np.bincount(dataset.train.item, minlength=dataset.num_items) > 0
    if config.text_finetune:
        tokens, mask = item_tokens(dataset, config)
        text = {"tokens": tokens, "mask": mask, "text_model": _text_model_from(config.encoder)}
    else:
        emb = frozen_text_embeddings(dataset, config)
        want = text_dim_of(config)
        if emb.shape != (dataset.num_items, want):
            raise Stage1Error(f"text embeddings: shape {emb.shape}; expected [{dataset.num_items}, {want}]")
        text = {"text": emb}
    valid = Stage1Context(sasrec=run.params, histories=histories(seqs, "valid", config.max_seq_len), warm=warm,
                          arch=run.settings, **text)
    return {"train": valid, "valid": valid,
            "test": valid.replace(histories=histories(seqs, "test", config.max_seq_len))}


def evaluation_context(context: Stage1Context, eval_dataset, config) -> Stage1Context:
    """A stage-1 context (of the training data) scoring the users of ``eval_dataset`` (e.g. a
    cold-user scenario's dataset, whose users were kept out of training): its ``test``
    histories, the same frozen SASRec, text and warm items. Raises Stage1Error when the item
    spaces differ."""
    n = len(context.warm)
    if not is_sequential(context.arch) and eval_dataset.num_users != context.arch.num_users:
        raise Stage1Error(f"eval_dataset {eval_dataset.name!r}: {eval_dataset.num_users} users; the "
                          f"{backbone_module(context.arch).label} run has {context.arch.num_users} (a general "
                          "backbone scores its own users only: the same user id space is needed)")
    if eval_dataset.num_items != n:
        raise Stage1Error(f"eval_dataset {eval_dataset.name!r}: {eval_dataset.num_items} items; the stage-1 context "
                          f"has {n} (the same item id space is needed)")
    return context.replace(histories=histories(user_sequences(eval_dataset, log_report=False), "test",
                                               config.max_seq_len))


def cross_domain_embeddings(params: Params, sasrec_params: Params, settings, target_text, target_histories,
                            chunk_size: int = 1024) -> tuple[jax.Array, jax.Array]:
    """(user_emb [U_t, d], item_emb [I_t, d]) of a target domain the stage-1 model never saw.

    Target items have no SASRec rows, only text: each is represented by its decoded text latent
    ``f_I^dec(q_i)``, ``q_i = f_T^enc(Q_i)`` (the SBERT path of the joint embedding); a target
    user is the frozen source SASRec run over their target history with that decoded table in
    place of its item table (positions, blocks and norms as trained). Scores ``u . f_I^dec(q_i)``
    as the stage-1 recommender. (A choice of ours: the reference code has no cross-domain path.)

    target_text: float32 [I_t, N] (the same encoder as the stage-1 run); target_histories: int
    [U_t, L] (target item ids + 1, 0 = padding, L <= the SASRec run's max_len). Raises
    Stage1Error naming a mismatched input.
    """
    if not is_sequential(settings):
        raise Stage1Error(f"cross-domain scoring: the backbone is {backbone_module(settings).label}, a general model "
                          "whose user representation is a row of its user table; another dataset's users have "
                          "none (a sequential backbone, e.g. sasrec, reads their target histories)")
    _, n, _ = _dims(params)
    target_text = jnp.asarray(target_text)
    if target_text.ndim != 2 or target_text.shape[1] != n:
        raise Stage1Error(f"target_text: shape {target_text.shape}; expected [I_t, {n}] (the text autoencoder's "
                          "input size: the encoder this stage-1 model was trained with)")
    items = decode_items(params, text_latents(params, target_text))
    table = jnp.concatenate([jnp.zeros((1, items.shape[1]), items.dtype), items])
    target = dataclasses.replace(settings, num_items=int(items.shape[0]))
    user, _ = backbone_module(settings).embed({**sasrec_params, "item_embedding": table}, target_histories, target,
                                              chunk_size)
    return user, items


def _check_stage1(dataset, config) -> None:
    """Before any compute: the SASRec run matches the dataset and ``max_seq_len``; the dataset
    gives sequences (``DataError`` / ``ConfigError`` / ``Stage1Error`` naming the key)."""
    if not config.sasrec_run:
        raise ConfigError("sasrec_run=None: stage 1 needs the folder of a finished SASRec run (jaxrec.fit, "
                          "model='sasrec') on the same dataset and split")
    run = load_sasrec_run(config.sasrec_run, dataset, with_params=False)
    if run.sequential and run.max_len != config.max_seq_len:
        raise ConfigError(f"max_seq_len={config.max_seq_len}: the {BACKBONE_LABELS[run.backbone]} run {config.sasrec_run} was trained "
                          f"with max_seq_len={run.max_len}; use that value")
    user_sequences(dataset, log_report=False)


#: The registered context kind ``"allmrec_stage1"`` (``jaxrec.methods.allmrec.register``).
STAGE1_CONTEXT = ContextKind(stage1_context, fields=("max_seq_len", "sasrec_run", "embeddings", "encoder",
                                                     "text_finetune"), check=_check_stage1)


# ----------------------------------------------------------------------------- terms
def _text_rows(x_params, ctx: Stage1Context, rows, key, train):
    """Text embeddings [..., N] of items ``rows`` (dense ids, any shape)."""
    if ctx.text_model is None:
        return ctx.text[rows]
    flat = rows.reshape(-1)
    out = ctx.text_model.encode(x_params["text_encoder"], ctx.tokens[flat], ctx.mask[flat], train=train, key=key)
    return out.reshape(*rows.shape, -1)


def _batch_losses(x: LossInputs, positions: str) -> dict[str, jax.Array]:
    ctx, batch = x.context, x.batch
    pos, neg = (jnp.asarray(batch[k]) for k in ("pos", "neg"))
    out = backbone_batch_output(ctx.arch, ctx.sasrec, batch)  # [B, L, d], frozen
    if positions == "last":
        out, pos, neg = out[:, -1], pos[:, -1], neg[:, -1]
    else:
        out, pos, neg = out.reshape(-1, out.shape[-1]), pos.reshape(-1), neg.reshape(-1)
    mask = pos != 0  # padding rows / positions
    table = backbone_item_table(ctx.arch, ctx.sasrec)  # [I + 1, d], ids + 1
    rows = jnp.maximum(jnp.stack([pos, neg]) - 1, 0)  # dense ids, padding -> item 0 (masked)
    text = _text_rows(x.params, ctx, rows, x.key, True)
    return stage1_losses(x.params, out, table[pos], table[neg], text[0], text[1], mask)


def _term(name: str):
    def builder(config) -> Term:
        positions = config.align_positions

        def loss(x: LossInputs):
            return x.shared("allmrec_stage1", lambda: _batch_losses(x, positions))[name]

        return Term(name, loss, batch_kind="sequences")

    return builder


#: The registered loss terms ``align_rec``, ``align_match``, ``align_item_recon``, ``align_text_recon``.
TERM_BUILDERS = {name: _term(name) for name in TERMS}


# ----------------------------------------------------------------------------- backbone
@dataclasses.dataclass(frozen=True)
class Stage1Settings(ModelSettings):
    """Stage 1's config keys (``train_model.py`` of the reference; DESIGN.md 6):

    - ``sasrec_run``: the folder of a finished run of one of ``BACKBONES`` (SASRec, GRU4Rec,
      NextItNet, NeuMF) on the same dataset and split (frozen);
    - ``align_alpha`` (0.5) / ``align_beta`` (0.2): weights of the item / text reconstruction;
    - ``joint_dim`` (128): the joint latent size;
    - ``text_finetune``: the text encoder frozen (False: item text embeddings precomputed once,
      from ``embeddings`` or ``encoder`` through the cache) or fine-tuned end to end (True:
      ``encoder`` a jaxrec.text folder, ``minilm`` or ``mpnet``);
    - ``align_positions``: ``last`` (the reference) or ``all`` (the paper's section 5.4.2);
    - ``align_items``: items scored through the joint embedding (``joint``: e for items with
      training interactions, q from text otherwise) or through q for every item (``text``, the
      "SBERT" variant);
    - ``max_seq_len``: must equal the SASRec run's (a sequential backbone's; for a NeuMF run it
      only sets the training windows' length).
    """

    reads_item_text: ClassVar[bool] = True  # jaxrec train resolves a default text source

    sasrec_run: str | None = None
    align_alpha: float = 0.5
    align_beta: float = 0.2
    joint_dim: int = JOINT_DIM
    text_finetune: bool = False
    align_positions: str = "last"
    align_items: str = "joint"
    max_seq_len: int = 50

    def validate(self) -> None:
        super().validate()
        self.expect("align_positions", self.align_positions in POSITIONS, f"one of {list(POSITIONS)}")
        self.expect("align_items", self.align_items in ITEM_SIDES, f"one of {list(ITEM_SIDES)}")
        for key in ("align_alpha", "align_beta"):
            v = getattr(self, key)
            self.expect(key, v >= 0 and math.isfinite(v), "a finite weight >= 0")
        self.expect("joint_dim", self.joint_dim >= 1, "an integer >= 1")
        self.expect("max_seq_len", self.max_seq_len >= 1, "an integer >= 1 (the SASRec run's)")


def check_config(config) -> None:
    """``ConfigError`` naming the key for shared values stage 1 cannot use (``ModelSpec.check``)."""
    if config.sharding == "row":
        raise ConfigError("sharding='row': stage 1 has no graph; use sharding='feature' (data-parallel) or 'none'")
    if config.text_finetune and not config.encoder:
        raise ConfigError("text_finetune=True: set encoder (minilm, mpnet or a sentence-transformers folder) to "
                          "fine-tune")
    if config.init != "none":
        raise ConfigError(f"init={config.init!r}: stage 1 starts its autoencoders from the reference "
                          "initialization; leave it at its default 'none'")


def item_text_vectors(params: Params, ctx: Stage1Context, chunk: int = 256) -> jax.Array:
    """float32 [I, N]: every item's text embedding (the context's, or the fine-tuned encoder's
    output in chunks of ``chunk`` items)."""
    if ctx.text_model is None:
        return ctx.text
    tokens, mask = ctx.tokens, ctx.mask
    n = tokens.shape[0]
    c = max(1, min(chunk, n))
    k = -(-n // c)
    pad = ((0, k * c - n), (0, 0))
    t, m = jnp.pad(tokens, pad).reshape(k, c, -1), jnp.pad(mask, pad).reshape(k, c, -1)
    out = jax.lax.map(lambda tm: ctx.text_model.encode(params["text_encoder"], tm[0], tm[1]), (t, m))
    return out.reshape(k * c, -1)[:n]


def stage1_encoder(config) -> Encoder:
    """``init(key, U, I, context_shapes)`` -> autoencoder params (+ ``text_encoder`` when fine-tuned,
    loaded from the encoder folder), sizes from the context (SASRec's hidden size, the text
    width); ``embed(params, ctx)`` -> (SASRec user representations [U, d], decoded joint item
    embeddings ``f_I^dec(z_i)`` [I, d]). Reads no file: the SASRec run and the text come in the
    context."""
    joint, side, chunk = config.joint_dim, config.align_items, config.eval_chunk

    def init(key, num_users, num_items, ctx: Stage1Context):
        item_dim = jax.eval_shape(lambda p: backbone_item_table(ctx.arch, p), ctx.sasrec).shape[1]  # abstract ctx
        params = init_params(key, int(item_dim), ctx.text_dim, joint)
        if ctx.text_model is not None:
            from jaxrec.text import load_params  # noqa: PLC0415

            params["text_encoder"] = load_params(ctx.text_model)
        return params

    def embed(params, ctx: Stage1Context):
        user, items = backbone_module(ctx.arch).embed(ctx.sasrec, ctx.histories, ctx.arch, chunk_size=chunk)
        text = item_text_vectors(params, ctx)
        if side == "text":
            z = text_latents(params, text)
        else:
            z = joint_item_embeddings(params, items, text, ctx.warm)
        return user, decode_items(params, z)

    return Encoder(name="allmrec_stage1", init=init, embed=embed, user_table=None, item_table=None,
                   init_reads_context=True)


def make_stage1(config) -> Model:
    """A-LLMRec stage 1 over the ``"allmrec_stage1"`` context: ``align_rec + align_match +
    alpha * align_item_recon + beta * align_text_recon`` (batch kind "sequences")."""
    objective = weighted_sum(term("align_rec", config), term("align_match", config),
                             (term("align_item_recon", config), config.align_alpha),
                             (term("align_text_recon", config), config.align_beta))
    return Model("allmrec_stage1", stage1_encoder(config), objective, context="allmrec_stage1")


#: The reference's stage-1 protocol for shared keys (``train_model.py``; DESIGN.md 6) over
#: SASRec's split/evaluation.
STAGE1_DEFAULTS = dict(
    batch_size=32, epochs=10, learning_rate=1e-4, adam_b1=0.9, adam_b2=0.98,
    split="loo_time", evaluation="candidates", topk=(1, 5, 10), metrics=("hit", "ndcg", "mrr"),
    valid_metric="ndcg@10", patience=10,
)


# ----------------------------------------------------------------------------- stage-1 runs (stage 2's inputs)
@dataclasses.dataclass(frozen=True)
class Stage1Run:
    """A finished stage-1 run: ``config`` (jaxrec.Config), best ``params``, the ``model``, the
    frozen ``sasrec`` run and the per-stage ``contexts`` (``stage1_context``)."""

    path: Path
    config: Any
    params: Params
    model: Model
    sasrec: SASRecRun
    contexts: dict

    def joint_item_embeddings(self) -> np.ndarray:
        """float32 [I, J] (J = joint_dim, 128): ``e_i`` for items with training interactions,
        ``q_i`` from text for the others; row i = dense item id i."""
        ctx = self.contexts["test"]
        text = item_text_vectors(self.params, ctx)
        items = backbone_item_table(ctx.arch, ctx.sasrec)[1:]
        return np.asarray(joint_item_embeddings(self.params, items, text, ctx.warm))

    def target_text(self, target_dataset, embeddings=None) -> np.ndarray:
        """float32 [I_t, N]: the text embeddings of another dataset's items by this run's encoder.

        - fine-tuned encoder (``text_finetune``): the target's item texts through the run's
          fine-tuned ``params["text_encoder"]``;
        - frozen encoder (``config.encoder``): the target's texts through the same encoder and
          the on-disk cache (``frozen_text_embeddings``);
        - precomputed file (``config.embeddings``): ``embeddings``, a .npy of the target's items
          by the same encoder (rows by item id, as ``load_precomputed``); without it, a file of
          the reference name ``*.all-mpnet-base-v2.npy`` is matched by encoding the target
          with ``mpnet`` (sentence-transformers all-mpnet-base-v2, the same model).

        Raises Stage1Error when no target text of this run's encoder can be had, when
        ``embeddings`` is given to a run that encodes with an encoder, or when the width is not
        the run's text width N; EmbeddingFileError when the file lacks a target item."""
        from jaxrec.init.sources import is_reference_embeddings  # noqa: PLC0415

        cfg = self.config
        if embeddings is not None and not uses_precomputed_text(cfg):
            raise Stage1Error(f"embeddings={str(embeddings)!r}: stage-1 run {self.path} encodes text with its "
                              f"encoder ({cfg.encoder!r}); a target embeddings file applies to runs whose text is "
                              "a precomputed file")
        if cfg.text_finetune:
            tokens, mask = item_tokens(target_dataset, cfg)
            ctx = self.contexts["test"].replace(tokens=jnp.asarray(tokens), mask=jnp.asarray(mask))
            out = item_text_vectors(self.params, ctx)
        elif embeddings is not None:
            out = frozen_text_embeddings(target_dataset, cfg.replace(embeddings=str(embeddings), encoder=None))
        elif cfg.embeddings and is_reference_embeddings(cfg.embeddings):
            out = frozen_text_embeddings(target_dataset, cfg.replace(embeddings=None, encoder="mpnet"))
        elif cfg.embeddings:
            raise Stage1Error(f"stage-1 run {self.path}: its text is the precomputed file {cfg.embeddings}; give "
                              f"embeddings of dataset {target_dataset.name!r}'s items by the same encoder (the "
                              f"embeddings argument; experiments.allmrec_table: --target-embeddings FILE.npy)")
        else:
            out = frozen_text_embeddings(target_dataset, cfg)
        out = np.asarray(out, np.float32)
        _, n, _ = _dims(self.params)
        if out.shape != (target_dataset.num_items, n):
            raise Stage1Error(f"target text of {target_dataset.name!r}: shape {out.shape}; expected "
                              f"[{target_dataset.num_items}, {n}] (this run's text width)")
        return out

    def cross_domain(self, target_dataset, target_text=None) -> tuple[np.ndarray, np.ndarray]:
        """(user_emb [U_t, d], item_emb [I_t, d]) on ``target_dataset`` (its test histories)
        from its items' text embeddings ``target_text`` [I_t, N] (``cross_domain_embeddings``;
        default ``self.target_text(target_dataset)``)."""
        if target_text is None:
            target_text = self.target_text(target_dataset)
        target_text = np.asarray(target_text)
        if target_text.shape[0] != target_dataset.num_items:
            raise Stage1Error(f"target_text: {target_text.shape[0]} rows; expected one per item of "
                              f"{target_dataset.name!r} ({target_dataset.num_items})")
        hist = histories(user_sequences(target_dataset, log_report=False), "test", self.sasrec.max_len)
        user, items = cross_domain_embeddings(self.params, self.contexts["test"].sasrec, self.sasrec.settings,
                                              target_text, hist)
        return np.asarray(user), np.asarray(items)

    def recommender_embeddings(self, stage: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(user_emb [U, d], item_emb [I, d]) of the stage-1 recommender (``stage1_encoder``'s
        ``embed``): SASRec's user representations of the ``stage`` histories and the decoded
        joint item embeddings ``f_I^dec(z_i)``; a candidate's score is their dot product."""
        if stage not in ("train", "valid", "test"):
            raise Stage1Error(f"stage={stage!r}: expected 'train', 'valid' or 'test'")
        user, items = jax.jit(self.model.embed)(self.params, self.contexts[stage])
        return np.asarray(user), np.asarray(items)

    def user_representations(self, stage: str = "test") -> np.ndarray:
        """float32 [U, d]: SASRec's output at the last position of each user's ``stage`` history
        (valid: the training sequence; test: + the validation item)."""
        if stage not in ("train", "valid", "test"):
            raise Stage1Error(f"stage={stage!r}: expected 'train', 'valid' or 'test'")
        ctx = self.contexts[stage]
        return np.asarray(backbone_module(self.sasrec.settings).embed(ctx.sasrec, ctx.histories,
                                                                      self.sasrec.settings)[0])


def load_stage1_run(path, dataset, **overrides) -> Stage1Run:
    """Load a finished ``allmrec_stage1`` run folder for ``dataset`` (the one it was trained on).

    overrides: config keys to change before rebuilding the context (e.g. ``embeddings`` or
    ``encoder`` when the text embeddings moved). Raises Stage1Error for a folder that is not a
    finished stage-1 run or whose text encoder's dimension differs from the checkpoint's text
    autoencoder input; DataError when ``dataset`` is not the one it (or its SASRec) was trained on.
    """
    from jaxrec.config import Config  # noqa: PLC0415
    from jaxrec.models import get_model  # noqa: PLC0415
    from jaxrec.models.base import abstract_context  # noqa: PLC0415

    path = Path(path).expanduser()
    folder, data = _finished_run(path, "stage-1 run", "allmrec_stage1")
    ours = dataset_fingerprint(dataset)
    if data["dataset"] != ours:
        raise DataError(f"stage-1 run {path}: trained on dataset {data['dataset']}, not on {ours}")
    config = Config.from_dict({**data["config"], **overrides}, f"{path / 'results.json'} config")
    try:
        saved = folder.saved_param_shapes("best")
    except RunFolderError as e:
        raise Stage1Error(f"stage-1 run {path}: {e}") from None
    n_saved = int(saved["text_ae"]["fc1"]["kernel"].shape[0])
    n_now = text_dim_of(config)
    if n_saved != n_now:
        raise Stage1Error(f"stage-1 run {path}: its text autoencoder takes {n_saved}-d text embeddings, but "
                          f"encoder={config.encoder!r} / embeddings={config.embeddings!r} give {n_now}-d; use "
                          "the encoder the run was trained with")
    model = get_model(config)
    contexts = stage1_context(dataset, config)
    shapes = jax.eval_shape(lambda k: model.init(k, ours["num_users"], ours["num_items"],
                                                 abstract_context(contexts["train"])), jax.random.key(0))
    params = folder.restore_params(shapes, "best")
    sasrec = load_sasrec_run(config.sasrec_run, dataset, with_params=False)
    return Stage1Run(path, config, jax.tree.map(jnp.asarray, params), model, sasrec, contexts)


__all__ = ["AlignmentNet", "TwoLayerMLP", "Stage1Error", "Stage1Run", "SASRecRun", "init_params", "as_module",
           "item_latents", "text_latents", "decode_items", "joint_item_embeddings", "stage1_losses",
           "load_sasrec_run", "load_stage1_run", "stage1_context", "evaluation_context", "Stage1Context",
           "Stage1Settings", "cross_domain_embeddings", "make_stage1", "stage1_encoder", "check_config",
           "item_texts_with_fallback", "frozen_text_embeddings", "item_tokens", "text_dim_of", "item_text_vectors",
           "uses_precomputed_text", "encoder_folder", "STAGE1_CONTEXT", "TERM_BUILDERS",
           "STAGE1_DEFAULTS", "TERMS", "FALLBACK_TEXT", "JOINT_DIM", "BACKBONES", "backbone_module", "GeneralBackbone",
           "NEUMF_BACKBONE", "BACKBONE_LABELS", "is_sequential", "backbone_item_table", "backbone_batch_output"]
