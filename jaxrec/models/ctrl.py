"""CTRL (Li et al., 2023, "CTRL: Connect Collaborative and Language Model for CTR Prediction")
over SASRec: contrastive pre-alignment of the ID model with item text, then the ID model
fine-tuned alone.

CTRL's two stages (the paper's section 3): (1) cross-modal knowledge alignment: the
collaborative (ID) model and the language model encode the same sample, and an InfoNCE loss in
both directions (ID -> text and text -> ID, in-batch negatives, temperature tau) pulls the two
representations of a sample together; (2) supervised fine-tuning of the collaborative model
alone on its own objective; at serving time only the ID model runs. Here, on SASRec:

Stage 1 (``align``; run once per training run, when the context is built: ``ctrl_align_epochs``
epochs over SASRec's training windows in batches of ``batch_size`` (the last, smaller batch of
an epoch dropped: one shape), Adam at ``ctrl_align_lr``, seeded by ``config.seed``):

- ID side: the SASRec user representation ``u`` (output at the last position of the window,
  dropout on) and the ID item row ``E_p`` of the window's last next item;
- text side: the item's text vector ``T_p`` (the offline encoder, frozen; CTRL tunes the LM,
  which is too slow here, see ``jaxrec.models.morec``) and the user's text = the mean of the
  text vectors of the window's items (our stand-in for CTRL's textual prompt of the sample);
- linear heads to ``ctrl_proj_dim`` on both sides (``g_id``: d -> p, ``g_text``: N -> p);
- loss = sym(g_id(u), g_text(mean T_window)) + sym(g_id(E_p), g_text(T_p)), with
  sym(a, b) = (InfoNCE(a, b) + InfoNCE(b, a)) / 2 (``jaxrec.losses.info_nce``: L2-normalized
  rows, in-batch negatives, ``ctrl_temperature``).

Stage 2 (``fit``): SASRec with the ``bce_seq`` loss (``text_bce_seq`` over this context),
starting from the aligned SASRec parameters ``A`` (in the context, ``CTRLContext.aligned``):
the optimized params are ``delta`` (same tree as SASRec's, zeros at init) and the network runs
``A + delta``; Adam on ``delta`` is Adam on the parameters started from ``A`` (shift-invariant),
so this is fine-tuning from the aligned model exactly. The heads are dropped (as CTRL drops
the LM and the heads). Settings: SASRec's + ``ctrl_align_epochs`` (10), ``ctrl_align_lr``
(1e-3), ``ctrl_temperature`` (0.1), ``ctrl_proj_dim`` (64). ``ctrl_align_epochs=0`` is plain
SASRec (the ablation). Errors: ``ConfigError`` naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrec.losses import info_nce
from jaxrec.models import sasrec as _sasrec
from jaxrec.models.base import Model
from jaxrec.models.textseq import TextSequenceEncoder, check_text_sequences, item_text_matrix
from jaxrec.nn import xavier_normal
from jaxrec.objectives import term, weighted_sum
from jaxrec.registry import CONTEXTS, ContextKind

log = logging.getLogger("jaxrec.models")
Params = dict


@dataclasses.dataclass(frozen=True)
class CTRLSettings(_sasrec.SASRecSettings):
    """CTRL's config keys: SASRec's + ``ctrl_align_epochs`` (stage-1 epochs, 10; 0 = no
    alignment), ``ctrl_align_lr`` (1e-3), ``ctrl_temperature`` (InfoNCE tau, 0.1) and
    ``ctrl_proj_dim`` (the heads' width, 64)."""

    ctrl_align_epochs: int = 10
    ctrl_align_lr: float = 1e-3
    ctrl_temperature: float = 0.1
    ctrl_proj_dim: int = 64

    def validate(self) -> None:
        super().validate()
        self.expect("ctrl_align_epochs", self.ctrl_align_epochs >= 0, "an integer >= 0")
        self.expect("ctrl_align_lr", self.ctrl_align_lr > 0, "a learning rate > 0")
        self.expect("ctrl_temperature", self.ctrl_temperature > 0, "a temperature > 0")
        self.expect("ctrl_proj_dim", self.ctrl_proj_dim >= 1, "an integer >= 1")


# ----------------------------------------------------------------------------- stage 1
def init_heads(key: jax.Array, hidden: int, text_dim: int, proj_dim: int) -> Params:
    """``{"id_head": [d, p], "text_head": [N, p]}`` (xavier-normal linear maps, no bias)."""
    k1, k2 = jax.random.split(key)
    return {"id_head": xavier_normal(k1, (hidden, proj_dim)), "text_head": xavier_normal(k2, (text_dim, proj_dim))}


def symmetric_info_nce(a: jax.Array, b: jax.Array, tau: float) -> jax.Array:
    """(InfoNCE(a, b) + InfoNCE(b, a)) / 2 over [B, p] rows (``jaxrec.losses.info_nce``)."""
    return 0.5 * (info_nce(a, b, tau) + info_nce(b, a, tau))


def align_loss(sasrec: Params, heads: Params, batch: dict, text, arch: _sasrec.SASRecArch, tau: float,
               key: jax.Array | None = None, train: bool = True) -> tuple[jax.Array, dict]:
    """CTRL's stage-1 loss of one batch of windows (module docstring) -> (loss [], {"user", "item"}).

    batch: ``seq``, ``pos`` int [B, L] (ids + 1, left-padded); every row must hold a window (B >= 2).
    text: float [I, N]. The user text is the mean of ``text`` over the window's items (``seq``'s
    non-zero entries); the item is ``pos[:, -1]`` (the window's last next item).
    """
    seq, pos = jnp.asarray(batch["seq"]), jnp.asarray(batch["pos"])
    text = jnp.asarray(text)
    out = _sasrec.sequence_output(sasrec, seq, arch, key=key, train=train)
    user_id = out[:, -1]
    m = (seq > 0).astype(text.dtype)
    user_text = jnp.einsum("bl,bln->bn", m, text[jnp.maximum(seq - 1, 0)]) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    item = pos[:, -1]
    item_id = sasrec["item_embedding"][item]
    item_text = text[jnp.maximum(item - 1, 0)]
    lu = symmetric_info_nce(user_id @ heads["id_head"], user_text @ heads["text_head"], tau)
    li = symmetric_info_nce(item_id @ heads["id_head"], item_text @ heads["text_head"], tau)
    return lu + li, {"user": lu, "item": li}


@functools.lru_cache(maxsize=8)
def _optimizer(lr: float, b1: float, b2: float):
    return optax.adam(lr, b1=b1, b2=b2)


@functools.lru_cache(maxsize=8)
def _align_step(arch: _sasrec.SASRecArch, tau: float, lr: float, b1: float, b2: float):
    """The jitted stage-1 Adam step of these static settings (compiled once per process and shape)."""
    opt = _optimizer(lr, b1, b2)

    @jax.jit
    def step(p, st, batch, text, key):
        (loss, aux), g = jax.value_and_grad(lambda q: align_loss(q["sasrec"], q["heads"], batch, text, arch, tau, key),
                                            has_aux=True)(p)
        up, st = opt.update(g, st, p)
        return optax.apply_updates(p, up), st, loss, aux

    return step


def align(dataset, config, text: np.ndarray) -> tuple[Params, list[dict]]:
    """Stage 1: (aligned SASRec params, per-epoch records ``{"epoch", "loss", "user", "item", "seconds"}``).

    SASRec is initialized from ``config.seed`` (``jaxrec.train.state.run_keys``' init key, so with
    ``ctrl_align_epochs=0`` the fine-tuning starts from the very init plain SASRec would use)."""
    from jaxrec.data.sequences import training_windows, window_batches  # noqa: PLC0415
    from jaxrec.train.state import run_keys  # noqa: PLC0415

    arch = _sasrec.arch_from_config(config, dataset.num_items)
    keys = run_keys(config.seed)
    sasrec = _sasrec.init_params(keys.init, arch)
    if config.ctrl_align_epochs == 0:
        return sasrec, []
    params = {"sasrec": sasrec, "heads": init_heads(jax.random.fold_in(keys.init, 7), arch.hidden, text.shape[1],
                                                     config.ctrl_proj_dim)}
    opt = _optimizer(config.ctrl_align_lr, config.adam_b1, config.adam_b2)
    state = opt.init(params)
    text = jnp.asarray(text)
    tau = float(config.ctrl_temperature)
    step = _align_step(arch, tau, config.ctrl_align_lr, config.adam_b1, config.adam_b2)

    windows = training_windows(dataset, config.max_seq_len)
    rng = np.random.default_rng(config.seed + 7)
    key = jax.random.fold_in(keys.train, 7)
    history = []
    for epoch in range(config.ctrl_align_epochs):
        t0 = time.perf_counter()
        tot = {"loss": 0.0, "user": 0.0, "item": 0.0}
        n = 0
        for batch in window_batches(rng, windows, config.batch_size):
            if len(batch["seq"]) < min(config.batch_size, len(windows)) or len(batch["seq"]) < 2:
                continue  # drop_last: one shape, one compile; InfoNCE needs in-batch negatives
            key, sub = jax.random.split(key)
            params, state, loss, aux = step(params, state, {"seq": batch["seq"], "pos": batch["pos"]}, text, sub)
            tot["loss"] += float(loss)
            tot["user"] += float(aux["user"])
            tot["item"] += float(aux["item"])
            n += 1
        rec = {"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in tot.items()}, "seconds": time.perf_counter() - t0}
        history.append(rec)
        log.info("CTRL alignment epoch %d: InfoNCE %.4f (user %.4f, item %.4f), %.1f s", rec["epoch"], rec["loss"],
                 rec["user"], rec["item"], rec["seconds"])
    return params["sasrec"], history


# ----------------------------------------------------------------------------- stage 2
@struct.dataclass
class CTRLContext:
    """``histories`` int32 [U, L] (per stage), ``aligned`` (the stage-1 SASRec params, frozen) and
    ``history`` (stage-1 records, static)."""

    histories: Any
    aligned: Any
    history: Any = struct.field(pytree_node=False, default=())


def ctrl_context(dataset, config) -> dict:
    """``{"train", "valid", "test"}`` ``CTRLContext``s: stage 1 runs here, once."""
    from jaxrec.data.sequences import histories, user_sequences  # noqa: PLC0415

    seqs = user_sequences(dataset)
    aligned, history = align(dataset, config, item_text_matrix(dataset, config))
    valid = CTRLContext(histories(seqs, "valid", config.max_seq_len), aligned, tuple(map(tuple, (
        sorted(h.items()) for h in history))))
    return {"train": valid, "valid": valid, "test": valid.replace(histories=histories(seqs, "test", config.max_seq_len))}


def _serve(dataset, config):
    from jaxrec.data.sequences import histories, user_sequences  # noqa: PLC0415

    ctx = ctrl_context(dataset, config)["test"]
    return ctx.replace(histories=histories(user_sequences(dataset, log_report=False), "serve", config.max_seq_len))


CONTEXTS.register("ctrl", ContextKind(ctrl_context, fields=("max_seq_len", "embeddings", "encoder", "seed",
                                                            "embedding_size", "num_layers", "num_heads",
                                                            "dropout_rate", "seq_norm", "dropout_rng",
                                                            "ctrl_align_epochs", "ctrl_align_lr", "ctrl_temperature",
                                                            "ctrl_proj_dim", "batch_size", "adam_b1", "adam_b2"),
                                      check=check_text_sequences, serve=_serve))


def effective_params(params: Params, aligned: Params) -> Params:
    """The SASRec params the fine-tuned model runs: ``aligned + params["delta"]`` leaf by leaf."""
    return jax.tree.map(jnp.add, aligned, params["delta"])


def ctrl_encoder(config) -> TextSequenceEncoder:
    """Stage 2's encoder: SASRec over ``effective_params`` (``delta`` optimized, ``aligned`` in the context)."""
    chunk = config.eval_chunk

    def arch_of(aligned) -> _sasrec.SASRecArch:
        return _sasrec.arch_from_config(config, aligned["item_embedding"].shape[0] - 1)

    def init(key, num_users, num_items, context_shapes):
        return {"delta": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), context_shapes.aligned)}

    def forward(params, seq, key=None, train=False, context=None):
        p = effective_params(params, context.aligned)
        return _sasrec.sequence_output(p, seq, arch_of(context.aligned), key=key, train=train)

    def embed(params, context):
        return _sasrec.embed(effective_params(params, context.aligned), context.histories, arch_of(context.aligned),
                             chunk_size=chunk)

    def items(params, context):
        return context.aligned["item_embedding"] + params["delta"]["item_embedding"]

    return TextSequenceEncoder(name="ctrl", init=init, forward=forward, embed=embed, items=items)


def make_ctrl(config) -> Model:
    """CTRL over SASRec: stage 1 in the ``"ctrl"`` context, stage 2 ``text_bce_seq`` on the deltas."""
    return Model("ctrl", ctrl_encoder(config), weighted_sum(term("text_bce_seq", config)), context="ctrl")


#: CTRL's protocol defaults for shared keys: SASRec's and the minilm encoder.
CTRL_DEFAULTS = dict(_sasrec.SASREC_DEFAULTS, encoder="minilm")

__all__ = ["CTRLSettings", "CTRLContext", "init_heads", "symmetric_info_nce", "align_loss", "align", "ctrl_context",
           "effective_params", "ctrl_encoder", "make_ctrl", "CTRL_DEFAULTS"]
