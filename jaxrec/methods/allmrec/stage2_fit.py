"""A-LLMRec stage 2 under ``jaxrec.fit``: a registered backbone like every other.

``Config.for_model("allmrec_stage2", lm=..., stage1_run=...)`` + ``jaxrec.fit`` (or
``jaxrec train --model allmrec_stage2``) trains the projectors with checkpoints, resume, early
stopping and ``results.json``. The pieces, each registered in its registry:

- backbone ``"allmrec_stage2"``: encoder = the projectors (``init`` reads the projector sizes
  from the context's shapes: ``Encoder.init_reads_context``; ``embed(params, ctx)`` = the
  projected user representations [U, E] and joint item embeddings [I, E], i.e. every user's
  and item's soft token); objective = ``next_title``; context ``"allmrec_stage2"``.
- context ``"allmrec_stage2"``: per stage a ``Stage2Context``: the frozen LM (``config.lm``,
  placeholder tokens added), the stage's user representations and the joint item embeddings
  (``resolve_inputs``: ``stage1_run`` / ``sasrec_run``), the prompt builder (item titles,
  ``prompt_domain``, ``prompt_history``).
- batch kind ``"prompts"``: every epoch, the training users (``train_users`` > 0: a sample
  seeded by ``config.seed``) shuffled into batches of ``batch_size`` teacher-forcing rows:
  history = the last ``prompt_history`` items of the training sequence without its last item,
  target = that last item, candidates = the target + ``prompt_candidates - 1`` distinct items
  outside the user's training items, drawn fresh each epoch, in random order (the reference
  draws outside the user's history window; here outside all training items, which also
  keeps the target from appearing twice). The last batch is padded with rows that carry no
  loss (fixed shapes: one compilation per prompt-length bucket).
- term ``"next_title"``: ``jaxrec.methods.allmrec.stage2.next_title_loss``.
- evaluation ``"lm_candidates"``: the stored candidate lists of the stage
  (``jaxrec.eval.candidates.candidates_for``, ``prompt_candidates - 1`` negatives; the same
  lists as SASRec's and stage 1's) for the stage's users with a history (``eval_users`` /
  ``valid_users`` > 0: a seeded sample, the same every epoch), candidates shown in a seeded
  random order; metrics of ``evaluate_lm`` by ``lm_score`` (``hit@1``, ``hit@5``, ``ndcg@5``,
  ``mrr``, their ``_sum`` / ``_mean`` variants) and, at test with ``lm_generate``, the
  generation ones; the same per item group as ``cold_items/...`` and ``warm_items/...``
  (``jaxrec.eval.scenarios.ColdWarmItems``: targets among the 35 % least / most trained items).

Why a hook in the protocol: the projector sizes are those of the stage-1 arrays and of the
LM, which the config cannot know; rather than special-casing stage 2 in the loop, an
encoder may declare ``init_reads_context`` and ``fit`` passes it the context's shapes.
Everything else (the LM as context, prompts as a batch kind, LM scoring as an evaluation
protocol whose "embeddings" are the soft tokens) fits the protocol as it is.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import numpy as np
from flax import struct

from jaxrec.methods.allmrec.prompt import IndexPromptBuilder, PromptBuilder, get_domain, item_titles
from jaxrec.methods.allmrec.stage2 import (Stage2Error, content_free_prior, evaluate_stage2, index_loss, init_params,
                                           lm_token_norm, load_lm, make_context, next_title_loss, prepare_lm)
from jaxrec.methods.allmrec.stage2_inputs import STAGES, StageExamples, resolve_inputs, stage_examples
from jaxrec.config import Config, ConfigError, ModelSettings
from jaxrec.data import DataError
from jaxrec.data.sequences import user_sequences
from jaxrec.fetch import cache_root
from jaxrec.lm.lora import init_lora
from jaxrec.models import Encoder, Model, Params
from jaxrec.objectives import Term, weighted_sum
from jaxrec.registry import BatchKind, ContextKind, EvaluationProtocol

log = logging.getLogger("jaxrec.methods.allmrec")

NAME = "allmrec_stage2"
CONTEXT = "allmrec_stage2"
GROUP_FRACTION = 0.35

#: The reference's stage-2 settings (main.py: batch_size2 2, stage2_lr 1e-4; Adam) and the
#: candidate protocol's metrics; ``epochs`` 10 (the reference trains 10 and keeps epoch 5:
#: here early stopping on validation Hit@1 picks the epoch).
DEFAULTS = dict(split="loo_time", evaluation="lm_candidates", epochs=10, batch_size=2, learning_rate=1e-4,
                metrics=("hit", "ndcg", "mrr"), topk=(1, 5), valid_metric="hit@1", patience=3)


#: ``lm_dtype`` / ``prompt_domain`` / ``lm_score`` values.
LM_DTYPES = ("float32", "bfloat16")
PROMPT_DOMAINS = ("auto", "movie", "game", "item")
LM_SCORES = ("sum", "mean")
#: ``answer``: the LM names the title (the reference) or one candidate label (one scored position).
ANSWERS = ("title", "index")
#: ``input_norm``: the projectors' inputs as given, or standardized per dimension (training users'
#: and all items' mean and std).
INPUT_NORMS = ("none", "standardize")
#: ``token_norm``: soft tokens as projected, or rescaled to the LM's mean token-embedding norm.
TOKEN_NORMS = ("none", "match")
#: ``train_targets``: one prompt per user (the last training item, the reference) or one per
#: training position with at least one history item before it.
TRAIN_TARGETS = ("last", "all")


@dataclasses.dataclass(frozen=True)
class Stage2Settings(ModelSettings):
    """Stage 2's config keys: the frozen LM (``lm``: smollm2 | a .gguf file | a Hugging Face
    safetensors folder; ``lm_dtype`` float32 | bfloat16), its inputs (``stage1_run``: a stage-1
    run folder or saved ``.npz``; else ``sasrec_run``: the fallback on SASRec's own item table),
    the prompt (``prompt_domain`` movie | game | item | auto from the dataset name;
    ``prompt_history`` history titles, the most recent; ``prompt_candidates`` candidate titles:
    the target + that many - 1 others), the LM evaluation (``lm_score`` sum | mean log-likelihood
    of a candidate's title; ``lm_generate`` also decode greedily at test, the paper's Hit@1;
    ``lm_max_new_tokens``; ``lm_repetition_penalty``, the reference's 1.5; ``lm_batch_size``
    prompts per LM call) and the users (``train_users`` / ``eval_users`` / ``valid_users``: a
    seeded sample of that many, 0 = every user; ``valid_users`` 0 = as ``eval_users``)."""

    lm: str = "smollm2"
    lm_dtype: str = "float32"
    stage1_run: str | None = None
    sasrec_run: str | None = None
    prompt_domain: str = "auto"
    prompt_history: int = 10
    prompt_candidates: int = 20
    lm_score: str = "sum"
    lm_generate: bool = True
    lm_max_new_tokens: int = 48
    lm_repetition_penalty: float = 1.5
    lm_batch_size: int = 8
    train_users: int = 0
    eval_users: int = 0
    valid_users: int = 0
    # --- variants (issue 22): the defaults are the reference's protocol -------------------
    answer: str = "title"
    prompt_titles: bool = True
    soft_tokens: bool = True
    input_norm: str = "none"
    token_norm: str = "none"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    curriculum_steps: int = 0
    score_probe: bool = False
    probe_std: float = 0.0
    probe_weight: float = 1.0
    train_targets: str = "last"
    calibrate: bool = True

    def validate(self) -> None:
        super().validate()
        self.expect("answer", self.answer in ANSWERS, f"one of {list(ANSWERS)}")
        self.expect("input_norm", self.input_norm in INPUT_NORMS, f"one of {list(INPUT_NORMS)}")
        self.expect("token_norm", self.token_norm in TOKEN_NORMS, f"one of {list(TOKEN_NORMS)}")
        self.expect("lora_rank", self.lora_rank >= 0, "an integer >= 0 (0: no LoRA)")
        self.expect("lora_alpha", self.lora_alpha > 0, "a number > 0")
        self.expect("probe_std", self.probe_std >= 0, "a number >= 0 (0: the raw scores; > 0: rescaled to that std "
                                                      "over the options)")
        self.expect("probe_std", self.probe_std == 0 or self.score_probe, "0 unless score_probe=True")
        self.expect("probe_weight", self.probe_weight > 0, "a number > 0 (the probe input column's factor)")
        self.expect("probe_weight", self.probe_weight == 1 or self.score_probe, "1 unless score_probe=True")
        self.expect("curriculum_steps", self.curriculum_steps >= 0, "an integer >= 0 (0: no curriculum)")
        self.expect("train_targets", self.train_targets in TRAIN_TARGETS, f"one of {list(TRAIN_TARGETS)}")
        self.expect("soft_tokens", self.soft_tokens or self.prompt_titles,
                    "True when prompt_titles=False (the prompt would hold neither titles nor soft tokens)")
        if self.answer == "title":
            self.expect("prompt_titles", self.prompt_titles, "True with answer='title' (the answer is a title)")
            self.expect("score_probe", not self.score_probe, "False with answer='title' (the probe is an index-answer "
                                                              "diagnostic)")
        self.expect("curriculum_steps", self.curriculum_steps == 0 or self.soft_tokens,
                    "0 when soft_tokens=False (the curriculum moves from title-only to hybrid prompts)")
        self.expect("lm_dtype", self.lm_dtype in LM_DTYPES, f"one of {list(LM_DTYPES)}")
        self.expect("prompt_domain", self.prompt_domain in PROMPT_DOMAINS, f"one of {list(PROMPT_DOMAINS)}")
        self.expect("prompt_history", self.prompt_history >= 1, "an integer >= 1")
        self.expect("prompt_candidates", self.prompt_candidates >= 2,
                    "an integer >= 2 (the target and at least one other item)")
        self.expect("lm_score", self.lm_score in LM_SCORES, f"one of {list(LM_SCORES)}")
        for name in ("lm_max_new_tokens", "lm_batch_size"):
            self.expect(name, getattr(self, name) >= 1, "an integer >= 1")
        self.expect("lm_repetition_penalty", self.lm_repetition_penalty > 0, "a number > 0 (1 = no penalty)")
        for name in ("train_users", "eval_users", "valid_users"):
            self.expect(name, getattr(self, name) >= 0, "an integer >= 0 (0: every user)")


def check_config(config: Config) -> None:
    """Stage 2 is evaluated through its LM (``ModelSpec.check``)."""
    if config.evaluation != "lm_candidates":
        raise ConfigError(f"evaluation={config.evaluation!r}: model {NAME!r} is evaluated through the LM; expected "
                          f"'lm_candidates'")


# ----------------------------------------------------------------------------- context
def stage2_contexts(dataset, config) -> dict:
    """``{"train", "valid", "test"} -> Stage2Context`` (module docstring); the LM is loaded once."""
    inputs = resolve_inputs(config, dataset)
    titles, _ = item_titles(dataset.item_features, dataset.num_items, source=dataset.source)
    loaded = load_lm(config.lm, config.lm_dtype)
    lm, lm_params, tokenizer = prepare_lm(loaded.model, loaded.params, loaded.tokenizer)
    domain = get_domain(config.prompt_domain, dataset.name)
    if config.answer == "index":
        prompts = IndexPromptBuilder(tokenizer, titles, domain, max_positions=lm.config.max_position_embeddings,
                                     history=config.prompt_history, num_candidates=config.prompt_candidates,
                                     soft_tokens=config.soft_tokens, item_titles=config.prompt_titles)
    else:
        prompts = PromptBuilder(tokenizer, titles, domain, max_positions=lm.config.max_position_embeddings,
                                history=config.prompt_history)
    user_rep, item_emb = inputs.user_rep, inputs.item_emb
    if config.input_norm == "standardize":
        user_rep, item_emb = standardize_inputs(user_rep, item_emb)
    if config.score_probe and inputs.score_items is None:
        raise Stage2Error(f"score_probe=True: {inputs.source} has no item vectors to score users against "
                          "(a stage-1 run folder or a SASRec run folder gives them)")
    norm = lm_token_norm(lm, lm_params) if config.token_norm == "match" else 0.0
    prior = calibration_prior(dataset, config, lm, lm_params, prompts) if config.answer == "index" and \
        config.calibrate else None
    log.info("stage 2: %s LM %s (%d layers, width %d), %s inputs from %s (user d=%d, item k=%d), answer %s",
             lm.config.arch, config.lm, lm.config.num_layers, lm.config.embed_dim, inputs.kind, inputs.source,
             inputs.user_dim, inputs.item_dim, config.answer)
    # the probe scores with the raw user vectors: standardized ones do not give the recommender's order
    score = (lambda s: dict(score_items=inputs.score_items, score_users=inputs.user_rep[s])) if config.score_probe \
        else (lambda s: {})
    return {s: make_context(lm, lm_params, user_rep[s], item_emb, prompts, token_norm=norm,
                            lora_alpha=config.lora_alpha, label_prior=prior, probe_std=config.probe_std,
                            probe_weight=config.probe_weight, **score(s)) for s in STAGES}


#: Content-free prompts averaged for the label prior (``calibrate``).
CALIBRATION_PROMPTS = 16


def calibration_prior(dataset, config, lm, lm_params, prompts) -> np.ndarray:
    """The label prior of ``calibrate`` (``stage2.content_free_prior``) over ``CALIBRATION_PROMPTS``
    training prompts (the first users with a training target, candidates drawn with the seed)."""
    ex = stage_examples(user_sequences(dataset, log_report=False), "train", config.prompt_history)
    rows = np.arange(min(CALIBRATION_PROMPTS, len(ex)))
    rng = np.random.default_rng([config.seed, 11])
    seqs = user_sequences(dataset, log_report=False)
    seen = [seqs.items[seqs.indptr[u]:seqs.indptr[u + 1]] for u in ex.users[rows]]
    cands = training_candidates(rng, seen, ex.target[rows], config.prompt_candidates, dataset.num_items)
    prior = content_free_prior(lm, lm_params, prompts, ex.users[rows], [ex.history[r] for r in rows], cands)
    log.info("stage 2: label prior of the frozen LM (content-free prompts): %s", np.round(prior - prior.mean(), 2))
    return prior


def standardize_inputs(user_rep: dict, item_emb: np.ndarray) -> tuple[dict, np.ndarray]:
    """Per-dimension z-scores of the projectors' inputs: users by the training stage's mean and std
    (every stage), items by the whole table's (a std of 0 is left at 1). The stage-1 joint
    embeddings are sigmoid outputs whose dimensions vary little across items; standardized, every
    dimension reaches the projector at unit scale."""
    def stats(x):
        x = np.asarray(x, np.float64)
        sd = x.std(axis=0)
        return x.mean(axis=0), np.where(sd > 0, sd, 1.0)

    mu, sd = stats(user_rep["train"])
    users = {k: ((np.asarray(v, np.float64) - mu) / sd).astype(np.float32) for k, v in user_rep.items()}
    imu, isd = stats(item_emb)
    return users, ((np.asarray(item_emb, np.float64) - imu) / isd).astype(np.float32)


#: The registered context kind ``"allmrec_stage2"``.
STAGE2_CONTEXT = ContextKind(stage2_contexts, fields=("lm", "lm_dtype", "stage1_run", "sasrec_run", "prompt_domain",
                                                      "prompt_history", "prompt_candidates", "answer", "prompt_titles",
                                                      "soft_tokens", "input_norm", "token_norm", "score_probe",
                                                      "probe_std", "probe_weight", "lora_alpha", "calibrate", "seed"))


# ----------------------------------------------------------------------------- users and candidates
def sample_rows(n: int, k: int, seed: int, salt: str) -> np.ndarray:
    """Sorted rows of a seeded sample of ``k`` of ``n`` (all when ``k`` is 0 or >= n)."""
    if k <= 0 or k >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, sum(map(ord, salt))])
    return np.sort(rng.choice(n, size=k, replace=False))


def training_examples(dataset, config) -> StageExamples:
    """The prompts stage 2 trains on (module docstring): per user the last training item as the
    target (``train_targets="last"``) or every training position after the first (``"all"``);
    DataError when there are none."""
    if config.train_targets == "all":
        ex = all_position_examples(user_sequences(dataset), config.prompt_history)
        rows = sample_rows(len(np.unique(ex.users)), config.train_users, config.seed, "train")
        keep_users = np.unique(ex.users)[rows]
        return ex.take(np.flatnonzero(np.isin(ex.users, keep_users)))
    ex = stage_examples(user_sequences(dataset), "train", config.prompt_history)
    if len(ex) == 0:
        raise DataError(f"dataset {dataset.name}: no user has 2 training interactions; stage 2 needs a history item "
                        f"and a target per training prompt")
    rows = sample_rows(len(ex), config.train_users, config.seed, "train")
    if len(rows) < len(ex):
        log.info("stage 2 trains on %d of %d users (train_users=%d, seed %d)", len(rows), len(ex), config.train_users,
                 config.seed)
    return ex.take(rows)


def training_candidates(rng: np.random.Generator, seen: list, targets, num: int, num_items: int) -> np.ndarray:
    """int32 [B, num]: each row the target and ``num - 1`` distinct items outside ``seen[b]`` (the
    user's training items, which include the target), uniform, in random order."""
    out = np.empty((len(targets), num), np.int32)
    for b, t in enumerate(targets):
        free = np.setdiff1d(np.arange(num_items), seen[b], assume_unique=False)
        if free.size < num - 1:
            raise DataError(f"stage 2: a training user has interacted with {num_items - free.size} of {num_items} "
                            f"items; {num - 1} others are needed as candidates (prompt_candidates={num})")
        row = np.concatenate([[t], rng.choice(free, num - 1, replace=False)])
        out[b] = rng.permutation(row)
    return out


def all_position_examples(seqs, history: int) -> StageExamples:
    """One training example per position t >= 1 of each user's training sequence: history = the
    ``history`` items before t (oldest first), target = item t (SASRec's training windows, as
    prompts). The user representation is the one of the stage ("train": the sequence without its
    last item), the same for all of a user's examples."""
    users, hist, target = [], [], []
    for u in range(len(seqs.indptr) - 1):
        items = seqs.items[seqs.indptr[u]:seqs.indptr[u + 1]]
        for t in range(1, len(items)):
            users.append(u)
            hist.append(items[max(0, t - history):t].astype(np.int32))
            target.append(items[t])
    users = np.asarray(users, np.int32)
    return StageExamples(users, hist, np.asarray(target, np.int32), np.asarray(seqs.user_ids)[users])


def prompt_batches(prepared, config, model):
    """Batch kind ``"prompts"`` (module docstring). With ``curriculum_steps`` > 0, a row of batch
    number n (counted from 0 over the whole run) is a text-only prompt (its soft tokens left out)
    with probability ``max(0, 1 - n / curriculum_steps)`` (LLaRA's curriculum, Liao et al. 2024)."""
    from jaxrec.train.batches import BatchSource

    dataset = prepared.dataset
    ctx = prepared.contexts(model.context, config)["train"]
    ex = training_examples(dataset, config)  # logs the sequences' report once per run
    seqs = user_sequences(dataset, log_report=False)
    seen = {u: seqs.items[seqs.indptr[u]:seqs.indptr[u + 1]] for u in np.unique(ex.users)}
    size = config.batch_size
    counter = {"batches": 0}

    def draw(rng: np.random.Generator):
        order = rng.permutation(len(ex))
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            cands = training_candidates(rng, [seen[ex.users[r]] for r in rows], ex.target[rows],
                                        config.prompt_candidates, dataset.num_items)
            batch = ctx.prompts.training_batch(ex.users[rows], [ex.history[r] for r in rows], cands, ex.target[rows],
                                               user_names=ex.user_ids[rows], size=size)
            if config.curriculum_steps:
                p_text = max(0.0, 1.0 - counter["batches"] / config.curriculum_steps)
                batch["use_soft"] = (rng.random(size) >= p_text).astype(np.int32)
                counter["batches"] += 1
            yield batch

    return BatchSource(draw, None, prepared.sizes)


#: The registered batch kind ``"prompts"``.
PROMPTS = BatchKind(prompt_batches)


# ----------------------------------------------------------------------------- objective
def next_title_term(config=None) -> Term:
    """Teacher-forcing cross-entropy of the target title (``next_title_loss``), batch kind "prompts"."""
    return Term("next_title", lambda x: next_title_loss(x.params, x.context, x.batch)[0], batch_kind="prompts")


def next_label_term(config=None) -> Term:
    """Cross-entropy of the target's label among the candidates' labels (``index_loss``), batch kind "prompts"."""
    return Term("next_label", lambda x: index_loss(x.params, x.context, x.batch)[0], batch_kind="prompts")


# ----------------------------------------------------------------------------- evaluation
def candidate_metric_names(config) -> tuple[str, ...]:
    """``mrr`` and ``<m>@<k>`` for the other names of ``config.metrics`` at every k of ``config.topk``."""
    return tuple(n for m in config.metrics for n in ([m] if m == "mrr" else [f"{m}@{k}" for k in config.topk]))


def evaluation_lists(dataset, stage: str, config, folder=None):
    """(examples, candidate items int32 [M, C] target first, shown order [M, C]) of the users
    ``lm_candidates`` evaluates at ``stage`` (module docstring), in user order."""
    from jaxrec.eval.candidates import candidates_for

    folder = folder or getattr(config, "candidates_dir", None) or cache_root() / "candidates"
    cands = candidates_for(folder, dataset, stage, config.seed, config.prompt_candidates - 1)
    ex = stage_examples(user_sequences(dataset, log_report=False), stage, config.prompt_history)
    keep = np.isin(ex.users, cands.users)
    ex = ex.take(np.flatnonzero(keep))
    n = config.eval_users if stage == "test" or not config.valid_users else config.valid_users
    ex = ex.take(sample_rows(len(ex), n, config.seed, stage))
    items = cands.select(ex.users).items
    rng = np.random.default_rng([config.seed, sum(map(ord, "shown-" + stage))])
    shown = np.stack([rng.permutation(items.shape[1]) for _ in range(len(ex))]) if len(ex) else items
    return ex, items, shown


def item_groups(dataset, fraction: float = GROUP_FRACTION) -> dict[str, np.ndarray]:
    """``{"cold_items", "warm_items"}`` -> sorted dense item ids (``ColdWarmItems.item_groups``)."""
    from jaxrec.eval.scenarios import ColdWarmItems

    cold, warm = ColdWarmItems(fraction).item_groups(dataset)
    return {"cold_items": cold, "warm_items": warm}


class LMCandidateEvaluator:
    """Evaluation ``"lm_candidates"`` (module docstring): ``evaluator(embeddings, stage)`` -> metrics;
    ``results[stage]`` keeps the last ``LMEvaluation`` of each stage (per-user scores, ranks and
    generations) and ``lists[stage]`` the (examples, candidates, shown order) it evaluated
    (``jaxrec.train.RunResult.evaluator`` hands it to the caller)."""

    def __init__(self, prepared, config):
        self.prepared, self.config = prepared, config
        self.names = candidate_metric_names(config)
        self.lists: dict[str, tuple] = {}
        self.results: dict[str, Any] = {}
        self.groups = item_groups(prepared.dataset)

    def __call__(self, embeddings, stage: str) -> dict[str, float]:
        config, dataset = self.config, self.prepared.dataset
        if stage not in self.lists:
            self.lists[stage] = evaluation_lists(dataset, stage, config)
        ex, items, shown = self.lists[stage]
        if len(ex) == 0:
            raise DataError(f"dataset {dataset.name}: no {stage} user with a history to evaluate")
        ctx = self.prepared.contexts(CONTEXT, config)[stage]
        res = evaluate_stage2(params_of(embeddings), ctx, ex.users, ex.history, items, shown=shown,
                              user_names=ex.user_ids, batch_size=config.lm_batch_size,
                              generate=config.lm_generate and stage == "test", max_new_tokens=config.lm_max_new_tokens,
                              repetition_penalty=config.lm_repetition_penalty)
        self.results[stage] = res
        out = res.metrics(config.lm_score, metrics=self.names)
        for g, members in self.groups.items():
            sub = res.metrics(config.lm_score, rows=np.isin(ex.target, members), metrics=self.names)
            out.update({f"{g}/{k}": v for k, v in sub.items()})
            out[f"{g}/users"] = float(np.isin(ex.target, members).sum())
        out["users"] = float(len(ex))
        return out


def lm_candidate_protocol(prepared, config, partitioner) -> LMCandidateEvaluator:
    """Evaluation ``"lm_candidates"``: an ``LMCandidateEvaluator``."""
    return LMCandidateEvaluator(prepared, config)


#: The registered evaluation ``"lm_candidates"``.
LM_CANDIDATES = EvaluationProtocol(lm_candidate_protocol)


# ----------------------------------------------------------------------------- backbone
@struct.dataclass
class Stage2Params:
    """What stage 2's ``embed`` hands its evaluation: the trained parameters themselves (its
    "representations" are soft tokens and LoRA adapters that only the LM can score)."""

    params: Any


def params_of(embeddings) -> Params:
    """The stage-2 params inside ``embed``'s output (a ``Stage2Params``)."""
    return embeddings.params if isinstance(embeddings, Stage2Params) else embeddings


def make_stage2(config: Config) -> Model:
    """The ``allmrec_stage2`` backbone (module docstring). Its parameters are the two projectors and,
    with ``lora_rank`` > 0, LoRA adapters of the frozen LM (``jaxrec.lm.lora``; their own pytree
    ``params["lora"]``, the base LM untouched). Its outputs are not dot-product scores
    (``Encoder.dot_scores=False``): it ranks through its LM."""
    rank, seed = config.lora_rank, config.seed

    def init(key, num_users, num_items, context_shapes):
        params = init_params(key, context_shapes.settings)
        if rank:
            params["lora"] = init_lora(jax.random.fold_in(key, seed), context_shapes.lm_params, rank)
        return params

    encoder = Encoder(NAME, init, lambda params, ctx: Stage2Params(params), user_table=None, item_table=None,
                      init_reads_context=True, dot_scores=False)
    term = next_label_term(config) if config.answer == "index" else next_title_term(config)
    return Model(NAME, encoder, weighted_sum(term), context=CONTEXT)

__all__ = ["NAME", "CONTEXT", "DEFAULTS", "Stage2Settings", "check_config", "STAGE2_CONTEXT", "PROMPTS",
           "LM_CANDIDATES", "LM_DTYPES", "PROMPT_DOMAINS", "LM_SCORES", "stage2_contexts", "sample_rows", "training_examples",
           "training_candidates", "prompt_batches", "next_title_term", "candidate_metric_names", "evaluation_lists",
           "item_groups", "lm_candidate_protocol", "LMCandidateEvaluator", "make_stage2", "next_label_term",
           "all_position_examples", "standardize_inputs", "Stage2Params", "params_of"]
