"""A-LLMRec stage 2: projectors from the alignment network into a frozen LM's token space.

Reference: ghdtjr/A-LLMRec ``models/a_llmrec_model.py`` (``log_emb_proj``, ``item_emb_proj``,
``pre_train_phase2``, ``generate``), ``models/llm4rec.py`` (``replace_hist_candi_token``, the
loss), ``eval.py`` (Hit@1); DESIGN.md 2.2 and 6.

Projectors (Flax NNX behind pure functions; the only trained parameters):

- user: ``Linear(d, E) -> LayerNorm(E) -> LeakyReLU(0.01) -> Linear(E, E)``
- item: ``Linear(k, E) -> LayerNorm(E) -> GELU (exact erf) -> Linear(E, E)``

with E the LM's token-embedding width (``LMConfig.embed_dim``; the reference's
``hidden_size``, equal for OPT-6.7B), both Linear weights xavier-normal
(``nn.init.xavier_normal_``: N(0, 2 / (fan_in + fan_out))), biases as torch's default
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), LayerNorm eps 1e-5 (torch's default).

Soft prompt (``soft_embeds``): the token embeddings of the tokenized prompt
(``jaxrec.methods.allmrec.prompt``) with every placeholder position replaced by its soft token: the
projected user representation at ``[UserRep]``, the projected joint embedding of each
history / candidate item at its ``[HistoryEmb]`` / ``[CandidateEmb]``.

Loss (``next_title_loss``): next-token cross-entropy on the target tokens only (the quoted
title and eos; teacher forcing), averaged over the target tokens of the batch (transformers'
``labels`` with -100 on the prompt, as ``llm4rec.forward``). Logits are computed at the
target positions only. The LM and the stage-1 arrays are inputs, never differentiated.

Evaluation (``evaluate_lm``), two ways over the same prompts:

(a) generation, as the paper: greedy decoding with repetition penalty 1.5 from the soft
    prompt alone (the reference passes ``inputs_embeds`` only, so the penalty sees the
    generated tokens only). ``hit@1_generate``: the answer, normalized (``normalize_title``),
    equals the target's normalized title, where the answer is the text between the first and
    the last double quote when there are two, else the whole text up to the first newline.
    ``hit@1_generate_substring``: the reference's rule (``eval.py``): the lower-cased target
    title is a substring of the lower-cased text between the first and last quote.
    ``generate_on_list``: the share of answers that name one of the 20 candidates.
(b) ranking: every candidate scored by the LM's log-likelihood of its target text
    (``"title"`` + eos) given the prompt (``jaxrec.lm.sequence_logprob``: the prompt runs once,
    its KV cache is shared by the candidates). ``score="sum"`` (the default: the log-probability
    of generating exactly that answer, what greedy decoding approximates) or ``"mean"`` (per
    token; favours long titles whose later tokens are nearly copied from the prompt); both are
    always reported (``hit@1_sum``, ``hit@1_mean``, ...). Metrics as ``jaxrec.eval.candidates``
    (pessimistic ties): ``hit@1``, ``hit@5``, ``ndcg@5``, ``mrr`` — a full ordering that
    generation cannot give.

Titles several items share (``prompt.item_titles`` appends the release year or brand where that
tells them apart; what is left are the same item listed twice): an answer naming a title the
target shares with another candidate names no single item, so it is a miss in every metric —
generation (``match_candidate`` returns ``AMBIGUOUS``, never the target's column), the
reference's substring rule (``hit@1_generate_substring`` is False for such a row) and the
likelihood ranking (a candidate whose title reads the same as the target's, by
``normalize_title``, counts as a tie, and ties are pessimistic; identical texts also score
identically). ``shared_title_targets`` reports the share of such rows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxrec.errors import JaxrecError
from jaxrec.eval.candidates import DEFAULT_METRICS, candidate_ranks, metrics_from_ranks
from jaxrec.lm import (
    LanguageModel,
    LMError,
    greedy_generate,
    load_gguf,
    load_hf,
    resize_vocab,
    sequence_logprob,
    smollm2_path,
)
from jaxrec.lm.lora import apply_lora
from jaxrec.methods.allmrec.prompt import SPECIAL_TOKENS, IndexPromptBuilder, PromptBuilder, normalize_title
from jaxrec.nn import PureModule, torch_uniform, xavier_normal
from jaxrec.nn import init_params as _init_pure

log = logging.getLogger("jaxrec.methods.allmrec")

Params = dict
LN_EPS = 1e-5
LEAKY_SLOPE = 0.01
SCORES = ("sum", "mean")


class Stage2Error(JaxrecError, ValueError):
    """Stage-2 input that cannot be used (settings, shapes, stage-1 outputs of another dataset,
    an LM without a tokenizer); the message names the argument or file and what was expected."""


# ----------------------------------------------------------------------------- projectors
@dataclasses.dataclass(frozen=True)
class Stage2Arch:
    """Projector sizes: ``user_dim`` d (the recommender's user representation), ``item_dim`` k
    (the joint item embedding, 128 in A-LLMRec), ``lm_dim`` E (the LM's token-embedding width)."""

    user_dim: int
    item_dim: int
    lm_dim: int

    def __post_init__(self):
        for name in ("user_dim", "item_dim", "lm_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise Stage2Error(f"Stage2Arch.{name}: expected an integer >= 1, got {v!r}")


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    # xavier_normal_ weight (laid out [in, out]); torch nn.Linear's default bias init
    return nnx.Linear(n_in, n_out, kernel_init=xavier_normal, bias_init=torch_uniform(n_in), rngs=rngs)


class Projector(nnx.Module):
    """``Linear(n_in, E) -> LayerNorm(E) -> activation -> Linear(E, E)`` (module docstring)."""

    def __init__(self, n_in: int, width: int, activation: str, rngs: nnx.Rngs):
        self.fc1 = _linear(n_in, width, rngs)
        self.norm = nnx.LayerNorm(width, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
        self.fc2 = _linear(width, width, rngs)
        self.activation = activation

    def __call__(self, x):
        h = self.norm(self.fc1(x))
        h = jax.nn.leaky_relu(h, LEAKY_SLOPE) if self.activation == "leaky_relu" else jax.nn.gelu(h, approximate=False)
        return self.fc2(h)


class Projectors(nnx.Module):
    """``user`` (LeakyReLU) and ``item`` (GELU) projectors."""

    def __init__(self, s: Stage2Arch, rngs: nnx.Rngs):
        self.user = Projector(s.user_dim, s.lm_dim, "leaky_relu", rngs)
        self.item = Projector(s.item_dim, s.lm_dim, "gelu", rngs)


@functools.lru_cache(maxsize=16)
def _pure(settings: Stage2Arch) -> PureModule:
    return PureModule.of(lambda rngs: Projectors(settings, rngs=rngs))


def init_params(key: jax.Array, settings: Stage2Arch) -> Params:
    """Fresh projector parameters (module docstring): ``{"user": {...}, "item": {...}}``, each
    ``fc1/{kernel [n_in, E], bias [E]}``, ``norm/{scale, bias} [E]``, ``fc2/{kernel [E, E], bias}``."""
    return _init_pure(lambda rngs: Projectors(settings, rngs=rngs), key)


def as_module(params: Params, settings: Stage2Arch) -> Projectors:
    """The NNX module holding ``params["user"]`` / ``params["item"]`` (other keys, e.g. ``lora``, are
    not the projectors'); Stage2Error when a shape does not fit ``settings``."""
    params = {k: params[k] for k in ("user", "item") if k in params}
    return _pure(settings).merge(params, check=True, error=Stage2Error, what="projector params", about=f"{settings}")


def project(params: Params, settings: Stage2Arch, user_rep=None, item_emb=None):
    """(user tokens [..., E] of ``user_rep`` [..., d], item tokens [..., E] of ``item_emb`` [..., k]);
    either input may be None (its output is then None). Pure; jit-compatible."""
    module = as_module(params, settings)
    return (None if user_rep is None else module.user(jnp.asarray(user_rep)),
            None if item_emb is None else module.item(jnp.asarray(item_emb)))


# ----------------------------------------------------------------------------- the frozen LM
def load_lm(spec: str, dtype: str = "float32"):
    """``jaxrec.lm.LoadedLM`` of ``spec``: "smollm2" (SmolLM2-135M-Instruct, ``smollm2_path``), a
    ``.gguf`` file, or a Hugging Face safetensors folder. LMError naming the path otherwise."""
    path = smollm2_path() if spec == "smollm2" else Path(spec)
    if path.is_dir():
        return load_hf(path, dtype=dtype)
    if path.suffix == ".gguf" and path.is_file():
        return load_gguf(path, dtype=dtype)
    raise LMError(f"lm={spec!r}: not 'smollm2', an existing .gguf file or a Hugging Face model folder")


def prepare_lm(model: LanguageModel, params: Params, tokenizer):
    """(model, params, tokenizer) with the placeholder tokens added (``SPECIAL_TOKENS``) and the
    vocabulary grown to hold them (``resize_vocab``; their rows are never read). Idempotent."""
    if tokenizer is None:
        raise Stage2Error(f"{model.config.source}: the language model came without a tokenizer; expected one "
                          f"(a GGUF with tokenizer metadata, or tokenizer.json in the folder)")
    tokenizer.require("eos")
    tokenizer = tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    if tokenizer.vocab_size > model.config.vocab_size:
        model, params = resize_vocab(model, params, tokenizer.vocab_size)
    return model, params, tokenizer


# ----------------------------------------------------------------------------- soft prompts
def soft_embeds(lm: LanguageModel, lm_params: Params, ids, slot, user_vec, item_vecs) -> jax.Array:
    """[B, T, E]: ``embed_tokens(ids)`` with position t replaced by ``user_vec[b]`` where
    ``slot[b, t] == 0`` and by ``item_vecs[b, slot - 1]`` where ``slot[b, t] >= 1``.

    ids, slot: int [B, T] (``PromptBuilder`` arrays); user_vec [B, E]; item_vecs [B, S, E].
    """
    tok = lm.embed_tokens(lm_params, ids)
    soft = jnp.concatenate([user_vec[:, None], item_vecs], axis=1).astype(tok.dtype)  # [B, 1 + S, E]
    slot = jnp.asarray(slot)
    picked = jnp.take_along_axis(soft, jnp.maximum(slot, 0)[..., None], axis=1)
    return jnp.where((slot >= 0)[..., None], picked, tok)


@struct.dataclass
class Stage2Context:
    """What stage 2 reads besides its parameters (a pytree: a jit argument, never closed over).

    lm_params: the frozen LM's params (placeholder rows included); user_rep float32 [U, d]:
    the recommender's user representations for one stage (``Stage2Inputs.user_rep[stage]``);
    item_emb float32 [I, k]: the joint item embeddings; static: ``lm`` (LanguageModel),
    ``settings`` (projector sizes), ``prompts`` (the host-side ``PromptBuilder``, compared by
    identity).
    """

    lm_params: Any
    user_rep: jax.Array
    item_emb: jax.Array
    lm: LanguageModel = struct.field(pytree_node=False)
    settings: Stage2Arch = struct.field(pytree_node=False)
    prompts: PromptBuilder = struct.field(pytree_node=False)
    score_items: Any = None  # float32 [I, d]: items scored against score_users (the score probe), or None
    score_users: Any = None  # float32 [U, d]: the recommender's own user vectors the probe scores with
    label_prior: Any = None  # float32 [C]: the LM's label logits on content-free prompts (subtracted), or None
    token_norm: float = struct.field(pytree_node=False, default=0.0)  # > 0: every soft token has this norm
    lora_alpha: float = struct.field(pytree_node=False, default=16.0)
    probe_std: float = struct.field(pytree_node=False, default=0.0)  # > 0: probe scores rescaled to this std
    probe_weight: float = struct.field(pytree_node=False, default=1.0)  # the probe input column's factor

    @property
    def index(self) -> bool:
        """Whether the prompts answer with a candidate label (``IndexPromptBuilder``)."""
        return isinstance(self.prompts, IndexPromptBuilder)


def make_context(lm: LanguageModel, lm_params: Params, user_rep, item_emb, prompts: PromptBuilder, *,
                 score_items=None, score_users=None, token_norm: float = 0.0, lora_alpha: float = 16.0,
                 label_prior=None, probe_std: float = 0.0, probe_weight: float = 1.0) -> Stage2Context:
    """A ``Stage2Context`` after checking shapes (Stage2Error naming the array).

    ``score_items`` [I, d] (optional): the recommender's item vectors; with them the item projector
    also reads each option's score (the upper-bound probe: ``Stage2Arch.item_dim`` = k + 1) from the
    recommender's own ``s = score_users[u] . score_items[i]`` (``option_scores``).
    ``score_users`` [U, d]: the user vectors as the recommender scores with them (default
    ``user_rep``; pass the raw ones when ``user_rep`` was standardized, whose dot products are not
    the recommender's scores). ``token_norm`` > 0 rescales every soft token to that L2 norm
    (``lm_token_norm``: the LM's own embedding rows' mean norm). ``label_prior`` [C]: subtracted from
    the index answer's label logits (``content_free_prior``). ``probe_std`` > 0: the probe's scores
    over a prompt's options are rescaled to that standard deviation first (``option_scores``).
    ``probe_weight``: the probe input column is multiplied by it (its share of the item projector's
    input variance: with 128 standardized stage-1 dimensions beside it the probe carries 5 % at
    probe_std 5, against 17 % beside SASRec's 50; issue 22 notes)."""
    user_rep, item_emb = jnp.asarray(user_rep, jnp.float32), jnp.asarray(item_emb, jnp.float32)
    if user_rep.ndim != 2 or item_emb.ndim != 2:
        raise Stage2Error(f"user_rep {user_rep.shape}, item_emb {item_emb.shape}: expected [U, d] and [I, k]")
    if item_emb.shape[0] != prompts.num_items:
        raise Stage2Error(f"item_emb has {item_emb.shape[0]} rows; the prompt builder has {prompts.num_items} titles; "
                          f"expected one per item")
    if score_items is not None:
        score_users = user_rep if score_users is None else jnp.asarray(score_users, jnp.float32)
        score_items = jnp.asarray(score_items, jnp.float32)
        if score_users.shape != user_rep.shape:
            raise Stage2Error(f"score_users has shape {score_users.shape}; expected {tuple(user_rep.shape)} "
                              f"(one raw vector per user of user_rep)")
        if score_items.shape != (item_emb.shape[0], user_rep.shape[1]):
            raise Stage2Error(f"score_items has shape {score_items.shape}; expected [{item_emb.shape[0]}, "
                              f"{user_rep.shape[1]}] (items in the user representations' space)")
    elif score_users is not None:
        raise Stage2Error("score_users without score_items: the probe needs both (or neither)")
    k = int(item_emb.shape[1]) + (score_items is not None)
    settings = Stage2Arch(int(user_rep.shape[1]), k, int(lm.config.embed_dim))
    if label_prior is not None:
        label_prior = jnp.asarray(label_prior, jnp.float32)
        if not isinstance(prompts, IndexPromptBuilder) or label_prior.shape != (len(prompts.label_ids),):
            raise Stage2Error(f"label_prior {label_prior.shape}: expected one logit per label of an index prompt")
    return Stage2Context(lm_params, user_rep, item_emb, lm, settings, prompts, score_items,
                         score_users if score_items is not None else None, label_prior,
                         float(token_norm), float(lora_alpha), float(probe_std), float(probe_weight))


def lm_token_norm(lm: LanguageModel, lm_params: Params) -> float:
    """The mean L2 norm of the LM's token-embedding rows (what ``token_norm="match"`` scales soft tokens to)."""
    table = np.asarray(lm_params["embed_tokens"]["embedding"], np.float32)
    return float(np.linalg.norm(table, axis=1).mean())


def batch_vectors(params: Params, ctx: Stage2Context, user, soft_items):
    """(user_vec [B, E], item_vecs [B, S, E]): the projected user representation of ``user`` [B]
    and joint embeddings of ``soft_items`` [B, S] (-1 slots get item 0's; they are never placed).
    With the score probe the item projector also reads each option's score for the row's user
    (``option_scores`` times ``ctx.probe_weight``; 0 on the history slots); with
    ``ctx.token_norm`` every vector is rescaled to that norm."""
    user = jnp.asarray(user)
    items = jnp.maximum(jnp.asarray(soft_items), 0)
    item_in = ctx.item_emb[items]
    if ctx.score_items is not None:
        raw = jnp.einsum("bd,bsd->bs", ctx.score_users[user], ctx.score_items[items])
        score = option_scores(raw, ctx.prompts.history, ctx.probe_std) * ctx.probe_weight
        item_in = jnp.concatenate([item_in, score[..., None]], axis=-1)
    user_vec, item_vecs = project(params, ctx.settings, ctx.user_rep[user], item_in)
    if ctx.token_norm > 0:
        rescale = lambda v: v * (ctx.token_norm / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6))  # noqa: E731
        user_vec, item_vecs = rescale(user_vec), rescale(item_vecs)
    return user_vec, item_vecs


def option_scores(raw, history: int, probe_std: float = 0.0) -> jax.Array:
    """float32 [B, S]: the score probe's input per soft slot from the recommender's scores ``raw``
    [B, S] (columns: ``history`` history slots, then the C options, as ``IndexPromptBuilder``'s
    ``soft_items``): ``C * softmax(raw over the options) - 1`` on the options, 0 on the history.

    The recommender's choice among the shown options is the option with the largest softmax
    share; as ``C p - 1`` it stands out as one large input (up to C - 1) among the others' ~-1,
    which the frozen LM can find by attention, where a z-score of the raw score leaves the top
    options a fraction of a standard deviation apart (measured on ml-100k: the probe did not learn
    in 64 steps with z-scores, issue 22 notes). 0 when all options score the same.

    ``probe_std`` > 0 makes the input scale-free: the options' scores are first rescaled to that
    standard deviation over the row's options (``raw / std(raw over options) * probe_std``; a row
    whose options all score the same is left at 0 spread), so a recommender whose scores spread
    little (A-LLMRec's stage 1: std 1.04 over 20 random options on ml-100k, SASRec's 5.15) marks its
    choice as clearly as SASRec does. 0 (the default) keeps the raw scores (temperature 1)."""
    options = jnp.arange(raw.shape[1]) >= history
    raw = jnp.asarray(raw, jnp.float32)
    if probe_std > 0:
        n_opt = jnp.maximum(jnp.sum(options), 1)
        mean = jnp.sum(jnp.where(options, raw, 0.0), axis=-1, keepdims=True) / n_opt
        var = jnp.sum(jnp.where(options, (raw - mean) ** 2, 0.0), axis=-1, keepdims=True) / n_opt
        sd = jnp.sqrt(var)
        raw = jnp.where(sd > 1e-12, (raw - mean) / jnp.maximum(sd, 1e-12) * probe_std, 0.0)
    masked = jnp.where(options, raw, -jnp.inf)
    p = jax.nn.softmax(masked, axis=-1)
    n = raw.shape[1] - history
    return jnp.where(options, n * p - 1.0, 0.0)


def frozen_lm_params(params: Params, ctx: Stage2Context) -> Params:
    """The LM params the forward uses: the frozen ones, with ``params["lora"]`` applied when present
    (``jaxrec.lm.lora.apply_lora``; the base params are never modified)."""
    return apply_lora(ctx.lm_params, params.get("lora"), ctx.lora_alpha) if "lora" in params else ctx.lm_params


def _hidden(params: Params, ctx: Stage2Context, batch) -> jax.Array:
    """Final hidden states [B, T, E] of a batch's soft prompts (soft tokens where ``slot`` >= 0;
    a row with ``use_soft`` 0 keeps its placeholder tokens: the curriculum's text-only rows)."""
    user_vec, item_vecs = batch_vectors(params, ctx, batch["user"], batch["soft_items"])
    lm_params = frozen_lm_params(params, ctx)
    slot = jnp.asarray(batch["slot"])
    if "use_soft" in batch:
        slot = jnp.where(jnp.asarray(batch["use_soft"])[:, None] > 0, slot, -1)
    embeds = soft_embeds(ctx.lm, lm_params, batch["ids"], slot, user_vec, item_vecs)
    hidden, _ = ctx.lm.forward_hidden(lm_params, inputs_embeds=embeds, attention_mask=batch["mask"])
    return hidden, lm_params


def index_logits(params: Params, ctx: Stage2Context, batch) -> jax.Array:
    """float32 [B, C]: the logit of each candidate's label token at the answer position (the last
    column of an ``IndexPromptBuilder`` batch), in the shown order."""
    hidden, lm_params = _hidden(params, ctx, batch)
    logits = ctx.lm.logits(lm_params, hidden[:, -1])[:, jnp.asarray(ctx.prompts.label_ids)]  # [B, C]
    return logits if ctx.label_prior is None else logits - ctx.label_prior


@functools.partial(jax.jit, static_argnames=("lm",))
def _content_free_logits(lm, lm_params, ids, mask, label_ids):
    hidden, _ = lm.forward_hidden(lm_params, inputs_embeds=lm.embed_tokens(lm_params, ids), attention_mask=mask)
    return lm.logits(lm_params, hidden[:, -1])[:, label_ids]


def content_free_prior(lm: LanguageModel, lm_params: Params, prompts: IndexPromptBuilder, users, histories,
                       candidates) -> np.ndarray:
    """float32 [C]: the frozen LM's mean label logits at the answer position over these prompts with
    every soft slot left as its placeholder token (no user or item information: "content-free").
    The frozen LM prefers early labels by several logits (SmolLM2: "A" ~7 above "T" on ml-100k
    prompts), a prior the soft tokens would have to overcome before they can move the ranking;
    subtracting it (``label_prior``) is Zhao et al.'s contextual calibration ("Calibrate Before
    Use", ICML 2021)."""
    batch = prompts.inference_batch(users, histories, candidates)
    out = _content_free_logits(lm, lm_params, batch["ids"], batch["mask"], jnp.asarray(prompts.label_ids))
    return np.asarray(out, np.float32).mean(axis=0)


def index_loss(params: Params, ctx: Stage2Context, batch) -> tuple[jax.Array, dict]:
    """Cross-entropy of the target's label among the C label tokens at the answer position (a
    C-way softmax; LlamaRec's verbalizer), averaged over the batch's real rows -> (loss [], aux
    ``label_accuracy``)."""
    logits = index_logits(params, ctx, batch)
    target = jnp.asarray(batch["target"])
    valid = (target >= 0).astype(logits.dtype)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.maximum(target, 0)[:, None], axis=1)[:, 0]
    count = jnp.maximum(valid.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == target).astype(logits.dtype)
    return jnp.sum(nll * valid) / count, {"label_accuracy": jnp.sum(correct * valid) / count}


def next_title_loss(params: Params, ctx: Stage2Context, batch) -> tuple[jax.Array, dict]:
    """Teacher-forcing cross-entropy of the target tokens (module docstring) -> (loss [], aux).

    batch: ``PromptBuilder.training_batch`` arrays. aux: ``target_tokens`` (count),
    ``target_accuracy`` (share of target tokens that are the argmax).
    """
    hidden, lm_params = _hidden(params, ctx, batch)
    at = jnp.asarray(batch["target_pos"]) - 1  # the position whose output predicts each target token
    h = jnp.take_along_axis(hidden, at[..., None], axis=1)  # [B, Tt, E]
    logp = jax.nn.log_softmax(ctx.lm.logits(lm_params, h))
    tgt = jnp.asarray(batch["target_ids"])
    nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    mask = jnp.asarray(batch["target_mask"]).astype(nll.dtype)
    count = jnp.maximum(mask.sum(), 1.0)
    correct = (jnp.argmax(logp, axis=-1) == tgt).astype(nll.dtype)
    return jnp.sum(nll * mask) / count, {"target_tokens": mask.sum(), "target_accuracy": jnp.sum(correct * mask) / count}


# ----------------------------------------------------------------------------- inference
@functools.partial(jax.jit, static_argnames=("lm",))
def _prompt_embeds(lm, lm_params, ids, slot, user_vec, item_vecs):
    return soft_embeds(lm, lm_params, ids, slot, user_vec, item_vecs)


def prompt_embeds(ctx: Stage2Context, tokens: tuple, batch, lm_params: Params | None = None) -> jax.Array:
    """[B, T, E] soft prompts of an inference batch from projected tables ``tokens`` =
    (user tokens [U, E], item tokens [I, E]) (``soft_tables``, or ``project``)."""
    user_tok, item_tok = tokens
    user_vec = jnp.asarray(user_tok)[jnp.asarray(batch["user"])]
    item_vecs = jnp.asarray(item_tok)[jnp.maximum(jnp.asarray(batch["soft_items"]), 0)]
    return _prompt_embeds(ctx.lm, ctx.lm_params if lm_params is None else lm_params, batch["ids"], batch["slot"],
                          user_vec, item_vecs)


def soft_tables(params: Params, ctx: Stage2Context) -> tuple[jax.Array, jax.Array]:
    """(user tokens [U, E], item tokens [I, E]): every user's and item's soft token (``batch_vectors``
    over the whole tables). Not defined with the score probe (an item's token depends on the user)."""
    if ctx.score_items is not None:
        raise Stage2Error("soft_tables: with the score probe an item's soft token depends on the user; "
                          "use evaluate_stage2")
    users = jnp.arange(ctx.user_rep.shape[0])
    user_vec, _ = batch_vectors(params, ctx, users, jnp.zeros((users.shape[0], 1), jnp.int32))
    _, item_vecs = batch_vectors(params, ctx, jnp.zeros(1, jnp.int32), jnp.arange(ctx.item_emb.shape[0])[None])
    return user_vec, item_vecs[0]


_index_logits_jit = jax.jit(lambda params, ctx, batch: index_logits(params, ctx, batch))


def _evaluation_rows(users, histories, candidates, shown, user_names):
    """(users int32 [M], candidates int32 [M, C], shown [M, C], names [M]) of an evaluation call,
    checked to hold one row per user (Stage2Error naming the shapes); ``shown`` defaults to the
    given order, ``names`` to the user indices."""
    users = np.asarray(users, np.int32)
    cands = np.asarray(candidates, np.int32)
    m = len(users)
    if cands.shape[0] != m or len(histories) != m:
        raise Stage2Error(f"users {users.shape}, histories {len(histories)}, candidates {cands.shape}: expected "
                          f"one row each")
    shown = np.tile(np.arange(cands.shape[1]), (m, 1)) if shown is None else np.asarray(shown)
    return users, cands, shown, (user_names if user_names is not None else users)


def evaluate_index(params: Params, ctx: Stage2Context, users, histories: Sequence[Sequence[int]], candidates, *,
                   shown=None, user_names=None, batch_size: int = 16, progress: bool = False) -> LMEvaluation:
    """Rank every user's candidates by the label logits of one forward pass (``index_logits``).

    Arguments as ``evaluate_lm`` (``params``: the stage-2 params, LoRA included); ``ctx`` must hold
    an ``IndexPromptBuilder``. Scores are returned in ``candidates``' column order (target in
    column 0); ``lengths`` are 1 and there is no generation. Stage2Error otherwise."""
    if not ctx.index:
        raise Stage2Error("evaluate_index: the context's prompts answer with titles; use evaluate_lm")
    users, cands, shown, names = _evaluation_rows(users, histories, candidates, shown, user_names)
    m = len(users)
    scores = np.zeros(cands.shape, np.float32)
    t0 = time.perf_counter()
    rows_iter = list(_batches(m, batch_size))
    if progress:
        from tqdm.auto import tqdm

        rows_iter = tqdm(rows_iter, desc="LM evaluation", unit="batch")
    for rows in rows_iter:
        shown_rows = shown[rows]
        shown_items = np.take_along_axis(cands[rows], shown_rows, axis=1)
        batch = ctx.prompts.inference_batch(users[rows], [histories[r] for r in rows], shown_items,
                                            user_names=[names[r] for r in rows], size=batch_size)
        logits = np.asarray(_index_logits_jit(params, ctx, batch))[:len(rows)]  # shown order
        out = np.empty_like(logits)
        np.put_along_axis(out, shown_rows, logits, axis=1)  # back to the candidates' column order
        scores[rows] = out
    return LMEvaluation(users, scores, np.ones(cands.shape, np.int32), None, None, None,
                        {"score": time.perf_counter() - t0, "generate": 0.0})


def evaluate_stage2(params: Params, ctx: Stage2Context, users, histories, candidates, *, shown=None, user_names=None,
                    batch_size: int = 8, generate: bool = True, max_new_tokens: int = 48,
                    repetition_penalty: float = 1.5, progress: bool = False) -> LMEvaluation:
    """``evaluate_index`` for index prompts, else ``evaluate_lm`` with the soft tables of ``params``
    and the (LoRA-adapted) LM params: the one evaluation entry of a trained stage 2."""
    if ctx.index:
        return evaluate_index(params, ctx, users, histories, candidates, shown=shown, user_names=user_names,
                              batch_size=batch_size, progress=progress)
    tokens = soft_tables(params, ctx)
    return evaluate_lm(ctx, tokens, users, histories, candidates, shown=shown, user_names=user_names,
                       batch_size=batch_size, generate=generate, max_new_tokens=max_new_tokens,
                       repetition_penalty=repetition_penalty, progress=progress,
                       lm_params=frozen_lm_params(params, ctx))


_QUOTED = re.compile(r'"(.*)"', re.S)


def answer_text(generated: str) -> str:
    """The answer inside generated text: between the first and last double quote when there are
    two, else the first line."""
    m = _QUOTED.search(generated)
    return m.group(1) if m else generated.strip().split("\n", 1)[0]


def reference_hit(generated: str, target_title: str) -> bool:
    """A-LLMRec ``eval.py``: the lower-cased target title is a substring of the lower-cased text
    between the generated text's first and last double quote (empty when there are fewer than two)."""
    low = generated.lower()
    start, end = low.find('"'), low.rfind('"')
    inside = low[start + 1:end] if start != -1 and end > start else ""
    return target_title.lower() in inside


AMBIGUOUS = -2  # match_candidate: the answer names a title several candidates share


def match_candidate(generated: str, titles: Sequence[str]) -> int:
    """Index of the one candidate whose normalized title (``normalize_title``) equals the
    normalized answer (``answer_text``); -1 when none does; ``AMBIGUOUS`` (-2) when several
    candidates share that title (the answer names no single item)."""
    answer = normalize_title(answer_text(generated))
    hits = [c for c, t in enumerate(titles) if normalize_title(t) == answer]
    return hits[0] if len(hits) == 1 else (AMBIGUOUS if hits else -1)


def same_title(titles: Sequence[str]) -> np.ndarray:
    """bool [C]: the candidates whose normalized title (``normalize_title``) is the target's
    (``titles[0]``; column 0 itself included)."""
    key = normalize_title(titles[0])
    return np.array([normalize_title(t) == key for t in titles], bool)


def shared_target(titles: Sequence[str]) -> bool:
    """Whether the target (``titles[0]``) shares its normalized title with another candidate."""
    return bool(same_title(titles)[1:].any())


@dataclasses.dataclass(frozen=True, eq=False)
class LMEvaluation:
    """Per-user results of ``evaluate_lm`` (rows follow ``users``; candidate columns follow the
    given candidate lists, target in column 0).

    users int32 [M]; scores float32 [M, C] (sum log-likelihood); lengths int32 [M, C] (target
    tokens per candidate); generated: M strings or None; choice int32 [M]: the candidate column
    a generation names (-1: none; -2: a title several candidates share; None without
    generation); substring_hit bool [M] or None; same_title bool [M, C]: the candidates whose
    title reads as the target's (column 0 True; another True: the row is a miss in every
    metric, module docstring).
    """

    users: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    generated: list | None
    choice: np.ndarray | None
    substring_hit: np.ndarray | None
    seconds: dict
    same_title: np.ndarray | None = None

    @property
    def shared(self) -> np.ndarray | None:
        """bool [M]: the target's title is also another candidate's."""
        return None if self.same_title is None else self.same_title[:, 1:].any(axis=1)

    def ranks(self, score: str = "sum") -> np.ndarray:
        """int64 [M] 0-based target ranks by ``score`` ("sum" or "mean" log-likelihood),
        pessimistic; a candidate with the target's title counts as a tie (module docstring)."""
        if score not in SCORES:
            raise Stage2Error(f"score={score!r}: expected one of {SCORES}")
        s = self.scores if score == "sum" else self.scores / np.maximum(self.lengths, 1)
        ranks = candidate_ranks(s)
        if self.same_title is not None:  # same-title candidates scored below the target: ties too
            ranks = ranks + (self.same_title[:, 1:] & (s[:, :1] > s[:, 1:])).sum(axis=1)
        return ranks

    def metrics(self, score: str = "sum", rows=None, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
        """Ranking metrics by ``score`` (and ``_sum`` / ``_mean`` variants), and generation ones
        when generated: ``hit@1_generate``, ``hit@1_generate_substring``, ``generate_on_list``.
        ``rows``: a bool mask or indices of users to average over (default all)."""
        sel = np.arange(len(self.users)) if rows is None else np.asarray(rows)
        if sel.dtype == bool:
            sel = np.flatnonzero(sel)
        if sel.size == 0:
            return {}
        c = self.scores.shape[1]
        out = {}
        for s in SCORES:
            m = metrics_from_ranks(self.ranks(s)[sel], c, metrics)
            out.update({f"{k}_{s}": v for k, v in m.items()})
            if s == score:
                out.update(m)
        if self.choice is not None:
            out["hit@1_generate"] = float(np.mean(self.choice[sel] == 0))
            out["hit@1_generate_substring"] = float(np.mean(self.substring_hit[sel]))
            out["generate_on_list"] = float(np.mean((self.choice[sel] >= 0) | (self.choice[sel] == AMBIGUOUS)))
        if self.shared is not None:
            out["shared_title_targets"] = float(np.mean(self.shared[sel]))
        return out


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def evaluate_lm(ctx: Stage2Context, tokens: tuple, users, histories: Sequence[Sequence[int]], candidates, *,
                shown=None, user_names=None, batch_size: int = 8, generate: bool = True, max_new_tokens: int = 48,
                repetition_penalty: float = 1.5, progress: bool = False, lm_params: Params | None = None
                ) -> LMEvaluation:
    """Score (and optionally generate for) every user's candidate list through the frozen LM.

    Args:
      ctx: the stage's ``Stage2Context`` (LM, prompt builder).
      tokens: (user tokens [U, E], item tokens [I, E]) = the projected tables.
      users: int [M] dense user ids; histories: M lists of dense item ids (oldest first).
      candidates: int [M, C] dense item ids, target in column 0 (a ``CandidateSet.items``).
      shown: int [M, C] column permutation: the order the candidates appear in the prompt
        (default: as given). Scores are always returned in ``candidates``' column order.
      batch_size: prompts per LM call (the last batch is padded; padded rows are discarded).
      generate: also decode greedily (paper protocol (a)); max_new_tokens, repetition_penalty.
      lm_params: the LM params to use instead of ``ctx.lm_params`` (LoRA-adapted: ``frozen_lm_params``).
    Returns an ``LMEvaluation``.
    """
    lm_params = ctx.lm_params if lm_params is None else lm_params
    users, cands, shown, names = _evaluation_rows(users, histories, candidates, shown, user_names)
    m = len(users)
    pb = ctx.prompts
    cont_ids, cont_mask = pb.continuations(cands)
    reserve = max(cont_ids.shape[-1], max_new_tokens if generate else 0)
    scores = np.zeros(cands.shape, np.float32)
    generated: list | None = [] if generate else None
    times = {"score": 0.0, "generate": 0.0}
    eos = pb.eos_id
    rows_iter = list(_batches(m, batch_size))
    if progress:
        from tqdm.auto import tqdm

        rows_iter = tqdm(rows_iter, desc="LM evaluation", unit="batch")
    for rows in rows_iter:
        shown_items = np.take_along_axis(cands[rows], shown[rows], axis=1)
        batch = pb.inference_batch(users[rows], [histories[r] for r in rows], shown_items,
                                   user_names=[names[r] for r in rows], reserve=reserve, size=batch_size)
        embeds = prompt_embeds(ctx, tokens, batch, lm_params)
        pad = batch_size - len(rows)
        t0 = time.perf_counter()
        ci = np.concatenate([cont_ids[rows], np.repeat(cont_ids[rows[:1]], pad, 0)])
        cm = np.concatenate([cont_mask[rows], np.repeat(cont_mask[rows[:1]], pad, 0)])
        lp = sequence_logprob(ctx.lm, lm_params, prefix_embeds=embeds, prefix_mask=batch["mask"],
                              continuation_ids=ci, continuation_mask=cm)
        scores[rows] = np.asarray(lp)[:len(rows)]
        times["score"] += time.perf_counter() - t0
        if generate:
            t0 = time.perf_counter()
            out = np.asarray(greedy_generate(ctx.lm, lm_params, None, batch["mask"], inputs_embeds=embeds,
                                             max_new_tokens=max_new_tokens, eos_id=eos, pad_id=eos,
                                             repetition_penalty=repetition_penalty))
            generated += [pb.tokenizer.decode(r).strip() for r in out[:len(rows)]]
            times["generate"] += time.perf_counter() - t0
    choice = substring = None
    titles = [[pb.titles[i] for i in row] for row in cands]
    same = np.array([same_title(t) for t in titles], bool).reshape(cands.shape)
    shared = same[:, 1:].any(axis=1)
    if generate:
        choice = np.array([match_candidate(g, t) for g, t in zip(generated, titles)], np.int32)
        substring = np.array([reference_hit(g, t[0]) for g, t in zip(generated, titles)], bool) & ~shared
    return LMEvaluation(users, scores, cont_mask.sum(-1).astype(np.int32), generated, choice, substring, times,
                        same)


__all__ = ["Stage2Error", "Stage2Arch", "Projector", "Projectors", "init_params", "as_module", "project",
           "load_lm", "prepare_lm", "soft_embeds", "Stage2Context", "make_context", "batch_vectors",
           "next_title_loss", "prompt_embeds", "answer_text", "index_logits", "index_loss", "evaluate_index",
           "evaluate_stage2", "soft_tables", "frozen_lm_params", "lm_token_norm", "content_free_prior",
           "normalize_title", "reference_hit", "match_candidate", "AMBIGUOUS", "same_title", "shared_target",
           "LMEvaluation", "evaluate_lm", "SCORES"]
