"""A-LLMRec Tables 1/2 layout: Hit@1 overall, on cold / warm items, cold users, few-shot K users
and across domains.

Rows are *methods* (``METHODS``): the collaborative-filtering baselines (SASRec, the backbone
A-LLMRec pretrains; GRU4Rec, NextItNet, NCF / NeuMF, and BERT4Rec beside them), A-LLMRec stage 1
(the frozen SASRec aligned with item text: joint embedding e, the "SBERT" variant q, frozen
MPNet or MiniLM text, fine-tuned MiniLM) and A-LLMRec stage 2 (``allmrec``: projectors into a
frozen LM that ranks the candidate titles). Columns are the evaluation scenarios of A-LLMRec
(DESIGN.md 2.2; the harness ``jaxrec.eval.scenarios``), each Hit@1 on the stored 20-candidate
test lists (the held-out item + 19 never-interacted items; ``evaluation="candidates"``), mean ±
sample std over seeds:

- ``overall``: every test user (``Standard``); ``cold items`` / ``warm items``: the test users
  whose target is among the 35% least / most interacted items (``ColdWarmItems``), scored by
  the same trained model;
- ``cold users``: users with exactly 3 interactions, kept out of training, evaluated with
  their first two items as history (``ColdUsers``; not applicable where no user has 3);
- ``few-shot K``: trained (and selected on validation) on K seeded users only, evaluated on
  every test user (``FewShot``; K = 128 and 256 by default);
- ``cross-domain → T`` (``--target T``, a dataset given by name or folder, split the same way):
  the standard setting's stage-1 runs score T's test users from T's item text alone
  (``Stage1Run.cross_domain``: target items are the decoded text latents, a target user the
  frozen SASRec run over them); an id-based model such as SASRec is "n/a" (``CrossDomain``).

Stage 2 (row ``allmrec``, needs rows ``sasrec`` and ``stage1``) reads the stage-1 run of the same
setting and seed, trains on a seeded sample of ``--stage2-train-users`` users and is tested by
the LM on a seeded sample of ``--stage2-eval-users`` test users (an LM forward per candidate
title: the CPU budget); its cells in the main table are on those users, and a second table
puts **every row on exactly those users and candidate lists** (from each row's stored per-user
ranks), with A-LLMRec's ranking by summed and per-token mean log-likelihood and its greedy
generation (exact title; the reference's substring rule). It runs in ``--stage2-scenarios``
(default ``standard``).

On one of the paper's datasets (Movies & TV, Video Games, Beauty, Toys; matched on the dataset
name) the paper's numbers stand beside. Every training run is a cell of ``experiments.grid``
(``--resume`` reuses finished cells); a setting's scenarios are scored by the method's
``score`` on the scenario's evaluation dataset. A new row is one ``Method`` in ``METHODS``:
its registered backbone (trained by ``jaxrec.fit`` with that backbone's defaults and the
row's ``overrides``) and how it scores candidate lists (default: dot products of the
embeddings the model computes from the evaluation dataset's test histories).

    python -m experiments.allmrec_table --dataset ml-100k
    python -m experiments.allmrec_table --dataset ml-100k --seeds 2020,2021,2022 --few-shot 128,256
    # A-LLMRec beside SASRec and stage 1 (SmolLM2 on a user sample), fine-tuned vs frozen text:
    python -m experiments.allmrec_table --dataset ml-100k --scenarios standard \
        --methods sasrec,stage1,stage1_sbert,stage1_minilm,stage1_ft,allmrec
    # cross-domain: trained on ml-100k, scored on another dataset's files
    python -m experiments.allmrec_table --dataset ml-100k --target /data/amazon-movies --scenarios standard

Writes ``allmrec_table.csv`` (every method x column, all candidate metrics), ``cells.csv``,
``same_users.csv`` (with stage 2), ``allmrec_table.png``, ``table.txt`` and ``results.json``
into ``checkpoints/allmrec_table/<run-name>/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from experiments import cli, grid, plots, report
from jaxrec.config import Config, ConfigError, model_defaults
from jaxrec.data import DataError
from jaxrec.eval.candidates import (
    DEFAULT_METRICS,
    CandidateSet,
    candidate_ranks,
    candidates_for,
    dot_scores,
    metrics_from_ranks,
)
from jaxrec.eval.scenarios import (
    ColdUsers,
    ColdWarmItems,
    CrossDomain,
    FewShot,
    ScenarioData,
    Standard,
    scenario_metrics,
)

log = logging.getLogger("experiments")
EXPERIMENT = "allmrec_table"
METRIC = "hit@1"
TABLE_METRICS = DEFAULT_METRICS  # hit@1, hit@5, ndcg@5, mrr


def embedding_scores(ctx: grid.CellContext, eval_dataset, cands: CandidateSet) -> np.ndarray:
    """float [M, C]: ``user_emb . item_emb`` of the trained model for ``cands``, the users'
    representations computed from ``eval_dataset``'s test-stage context (a sequence model: the
    test histories, so a cold user's first two items)."""
    import jax

    from jaxrec.train import prepare

    context = prepare(eval_dataset).contexts(ctx.model.context, ctx.cell.config)["test"]
    user_emb, item_emb = jax.jit(ctx.model.embed)(ctx.result.params, context)
    return dot_scores(np.asarray(user_emb), np.asarray(item_emb), cands)


def stage1_scores(ctx: grid.CellContext, eval_dataset, cands: CandidateSet) -> np.ndarray:
    """float [M, C]: the stage-1 recommender's ``u . f_I^dec(z_i)`` (``jaxrec.methods.allmrec.stage1``):
    the frozen SASRec and text of the cell's training data, the users' test histories of
    ``eval_dataset`` (a cold user's first two items)."""
    import jax

    from jaxrec.methods.allmrec.stage1 import evaluation_context

    context = evaluation_context(ctx.prepared.contexts(ctx.model.context, ctx.cell.config)["test"], eval_dataset,
                                 ctx.cell.config)
    user_emb, item_emb = jax.jit(ctx.model.embed)(ctx.result.params, context)
    return dot_scores(np.asarray(user_emb), np.asarray(item_emb), cands)


def ctrl_scores(ctx: grid.CellContext, eval_dataset, cands: CandidateSet) -> np.ndarray:
    """float [M, C]: the fine-tuned CTRL model (``jaxrec.models.ctrl``) on ``eval_dataset``'s test
    histories, with the cell's own context (its stage-1 aligned SASRec: never re-aligned)."""
    import jax

    from jaxrec.data.sequences import histories, user_sequences

    context = ctx.prepared.contexts(ctx.model.context, ctx.cell.config)["test"]
    context = context.replace(histories=histories(user_sequences(eval_dataset, log_report=False), "test",
                                                  ctx.cell.config.max_seq_len))
    user_emb, item_emb = jax.jit(ctx.model.embed)(ctx.result.params, context)
    return dot_scores(np.asarray(user_emb), np.asarray(item_emb), cands)


@dataclasses.dataclass(frozen=True)
class Method:
    """A row: ``model`` (a registered backbone) trained by ``jaxrec.fit`` with that backbone's
    defaults, then ``overrides``, then ``--set``; ``score(ctx, eval_dataset, cands) -> [M, C]``;
    ``paper``: its key in ``PAPER`` (None: no published numbers). ``on_sasrec``: the row reads
    the SASRec run of the same setting and seed (A-LLMRec's stage 1 aligns that frozen model:
    ``sasrec_run`` points at its saved run folder, the SASRec-only keys come from that run).
    ``on_stage1``: the row is A-LLMRec's stage 2 on the stage-1 run (row ``stage1``) of the same
    setting and seed (``stage1_run``), evaluated by the LM on a seeded sample of test users
    (``score`` None: its metrics are ``fit``'s own ``lm_candidates`` test metrics).
    ``cross_domain``: the row can score another dataset's users from its items' text
    (``Stage1Run.cross_domain``; the ``--target`` column). ``backbone_row``: the row whose run an
    ``on_sasrec`` row aligns (default ``sasrec``; A-LLMRec's Table 9 rows align GRU4Rec's,
    NextItNet's and NeuMF's). ``stage1_row``: the stage-1 row whose run an ``on_stage1`` row with
    stage-1 inputs reads (default ``stage1``; Table 9's stage-2 rows read ``stage1_gru4rec`` ...)."""

    name: str
    label: str
    model: str
    overrides: dict = dataclasses.field(default_factory=dict)
    paper: str | None = None
    score: Callable[[grid.CellContext, Any, CandidateSet], np.ndarray] | None = embedding_scores
    on_sasrec: bool = False
    on_stage1: bool = False
    cross_domain: bool = False
    inputs: str = "stage1"  # a stage-2 row's inputs: the stage-1 run ("stage1") or SASRec's own tables ("sasrec")
    backbone_row: str = "sasrec"  # an on_sasrec row aligns this row's run (Table 9: "gru4rec", "nextitnet", "neumf")
    stage1_row: str = "stage1"  # an on_stage1 row with inputs "stage1" reads this stage-1 row's run (Table 9)


#: Text of the frozen-encoder stage-1 rows: the dataset's reference MPNet embeddings when present
#: (ml-100k), else MiniLM through the embedding cache (``jaxrec.init.resolve_embedding_source``).
#: The fine-tuned row fine-tunes MiniLM end to end (the paper fine-tunes SBERT nq-distilbert-base-v1,
#: which jaxrec.text does not implement); "frozen MiniLM" is its equal-budget frozen counterpart.
_S1 = dict(score=stage1_scores, on_sasrec=True, cross_domain=True)
#: The index-answer stage 2 with its input and output scaling fixed (issue 22's diagnostics).
_INDEX = {"lm": "smollm2", "answer": "index", "input_norm": "standardize", "token_norm": "match"}
#: The score probe with soft tokens only (the 30-minute command's ``probe_soft``; issue 22).
_PROBE_SOFT = {**_INDEX, "score_probe": True, "prompt_titles": False, "batch_size": 8, "learning_rate": 1e-3}
_PROBE_SOFT_S1 = {**_PROBE_SOFT, "probe_std": 5.0}
METHODS = (
    Method("sasrec", "SASRec", "sasrec", paper="sasrec"),
    # the CF rows of A-LLMRec's Table 1 (issue 24): each registered backbone with its own defaults
    # (RecBole's hyperparameters; the shared protocol of SASRec: loo_time, 20 candidates, NDCG@10)
    Method("gru4rec", "GRU4Rec", "gru4rec"),
    Method("nextitnet", "NextItNet", "nextitnet"),
    Method("neumf", "NCF (NeuMF)", "neumf"),
    Method("bert4rec", "BERT4Rec", "bert4rec"),
    Method("stage1", "A-LLMRec stage 1 (e, frozen text)", "allmrec_stage1", **_S1),
    Method("stage1_sbert", "stage 1, SBERT variant (q)", "allmrec_stage1", {"align_items": "text"}, **_S1),
    # A-LLMRec Table 9: stage 1 over another sequential backbone (GRU4Rec, RecBole's form; max_seq_len 50)
    Method("gru4rec", "GRU4Rec", "gru4rec"),
    Method("stage1_gru4rec", "A-LLMRec stage 1 over GRU4Rec (e, frozen text)", "allmrec_stage1",
           backbone_row="gru4rec", **_S1),
    # ... over NextItNet (sequential: last-position output, ID table) and NCF / NeuMF (general: the
    # GMF user vector times predict's GMF weights and the GMF item vector, stage1.GeneralBackbone;
    # no cross-domain column: another dataset's users have no NeuMF user row)
    Method("stage1_nextitnet", "A-LLMRec stage 1 over NextItNet (e, frozen text)", "allmrec_stage1",
           backbone_row="nextitnet", **_S1),
    Method("stage1_neumf", "A-LLMRec stage 1 over NCF (NeuMF GMF vectors; e, frozen text)", "allmrec_stage1",
           backbone_row="neumf", **{**_S1, "cross_domain": False}),
    Method("stage1_minilm", "stage 1 (e, frozen MiniLM)", "allmrec_stage1", {"encoder": "minilm"}, **_S1),
    Method("stage1_ft", "stage 1 (e, fine-tuned MiniLM)", "allmrec_stage1", {"encoder": "minilm",
                                                                             "text_finetune": True}, **_S1),
    Method("stage1_minilm_sbert", "stage 1, SBERT variant (q), frozen MiniLM", "allmrec_stage1",
           {"encoder": "minilm", "align_items": "text"}, **_S1),
    Method("stage1_ft_sbert", "stage 1, SBERT variant (q), fine-tuned MiniLM", "allmrec_stage1",
           {"encoder": "minilm", "text_finetune": True, "align_items": "text"}, **_S1),
    # text-based sequence baselines of A-LLMRec's Table 1 (issue 24), item text by frozen MiniLM
    Method("morec", "MoRec (frozen MiniLM + projection)", "morec", {"encoder": "minilm"}),
    Method("morec_vectors", "MoRec (MiniLM-initialized trainable text vectors)", "morec",
           {"encoder": "minilm", "text_tuning": "vectors"}),
    Method("ctrl", "CTRL (InfoNCE pre-alignment, SASRec fine-tuned)", "ctrl", {"encoder": "minilm"},
           score=ctrl_scores),
    Method("recformer_like", "RECFORMER-like (MiniLM item sentences; no Longformer)", "recformer_like",
           {"encoder": "minilm"}),
    Method("allmrec", "A-LLMRec (stage 2, LM rank)", "allmrec_stage2", {"lm": "smollm2"},
           paper="allmrec", score=None, on_stage1=True),
    # stage-2 variants (issue 22): the index answer (labelled candidates, one scored position),
    # standardized projector inputs and LM-norm soft tokens, LoRA on the frozen LM, LLaRA's curriculum
    Method("allmrec_index", "A-LLMRec, index answer (+ input/token norm)", "allmrec_stage2", _INDEX,
           score=None, on_stage1=True),
    Method("allmrec_lora", "A-LLMRec, index answer + LoRA r=8", "allmrec_stage2", {**_INDEX, "lora_rank": 8},
           score=None, on_stage1=True),
    Method("allmrec_curriculum", "A-LLMRec, index + LoRA + curriculum", "allmrec_stage2",
           {**_INDEX, "lora_rank": 8, "curriculum_steps": 100}, score=None, on_stage1=True),
    Method("allmrec_probe", "probe: index + SASRec score as item input", "allmrec_stage2",
           {**_INDEX, "score_probe": True}, score=None, on_stage1=True),
    # the 30-minute command's setting (experiments.allmrec_stage2 --variant probe_soft): soft tokens only,
    # batch 8, lr 1e-3; over stage 1 the probe is scale-free (the stage-1 recommender's scores spread ~5x
    # less than SASRec's over 20 options: probe_std rescales them to SASRec's spread, ~5)
    Method("allmrec_probe_soft", "A-LLMRec + score probe, soft tokens only (stage-1 inputs, scale-free)",
           "allmrec_stage2", _PROBE_SOFT_S1, score=None, on_stage1=True),
    Method("probe_sasrec", "score probe, soft tokens only, SASRec's own tables (the 30-min command's row)",
           "allmrec_stage2", _PROBE_SOFT, score=None, on_stage1=True, inputs="sasrec"),
    # A-LLMRec Table 9, stage 2: the same row over stage 1 on another backbone
    Method("allmrec_probe_gru4rec", "A-LLMRec + probe (soft) over GRU4Rec's stage 1", "allmrec_stage2",
           _PROBE_SOFT_S1, score=None, on_stage1=True, stage1_row="stage1_gru4rec"),
    Method("allmrec_probe_nextitnet", "A-LLMRec + probe (soft) over NextItNet's stage 1", "allmrec_stage2",
           _PROBE_SOFT_S1, score=None, on_stage1=True, stage1_row="stage1_nextitnet"),
    Method("allmrec_probe_neumf", "A-LLMRec + probe (soft) over NCF's stage 1", "allmrec_stage2",
           _PROBE_SOFT_S1, score=None, on_stage1=True, stage1_row="stage1_neumf"),
    Method("mlp_llm", "MLP-LLM (no stage 1: SASRec tables, index + LoRA)", "allmrec_stage2",
           {**_INDEX, "lora_rank": 8}, score=None, on_stage1=True, inputs="sasrec"),
    Method("tallrec", "TALLRec (titles only, index + LoRA r=8)", "allmrec_stage2",
           {"lm": "smollm2", "answer": "index", "soft_tokens": False, "lora_rank": 8}, score=None, on_stage1=True),
    Method("llm_only", "LLM-Only (titles only, frozen LM, zero-shot)", "allmrec_stage2",
           {"lm": "smollm2", "answer": "index", "soft_tokens": False, "epochs": 1, "train_users": 8},
           score=None, on_stage1=True),
)
#: The default rows (the fine-tuned-encoder row costs an encoder forward and backward per step).
DEFAULT_METHODS = ("sasrec", "stage1", "stage1_sbert")

#: A-LLMRec (Kim et al., 2024) Tables 1-4, Hit@1 over 20 candidates (DESIGN.md section 3):
#: method -> dataset -> column -> value.
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "sasrec": {
        "movies_tv": {"overall": .6154, "cold items": .2589, "warm items": .6787, "cold users": .2589,
                      "few-shot K=256": .2111},
        "video_games": {"overall": .5402, "cold items": .1991, "warm items": .5764, "cold users": .4048,
                        "few-shot K=256": .1396},
        "beauty": {"overall": .5298, "cold items": .1190, "warm items": .6312, "cold users": .4459,
                   "few-shot K=256": .2243},
        "toys": {"overall": .2359},
    },
    "allmrec": {
        "movies_tv": {"overall": .6237, "cold items": .5714, "warm items": .6880, "cold users": .5272,
                      "few-shot K=256": .2880},
        "video_games": {"overall": .5282, "cold items": .4263, "warm items": .5970, "cold users": .4160,
                        "few-shot K=256": .2495},
        "beauty": {"overall": .5809, "cold items": .5605, "warm items": .6414, "cold users": .5337,
                   "few-shot K=256": .3467},
        "toys": {"overall": .3336},
    },
    "allmrec_sbert": {
        "movies_tv": {"cold items": .5772, "warm items": .6802, "few-shot K=256": .2963},
        "video_games": {"cold items": .4359, "warm items": .5792, "few-shot K=256": .2607},
        "beauty": {"cold items": .5591, "warm items": .6405, "few-shot K=256": .3605},
    },
}
PAPER_DATASETS = {"movies_tv": ("movie",), "video_games": ("game",), "beauty": ("beauty",), "toys": ("toys",)}


def paper_dataset(name: str) -> str | None:
    """Which of A-LLMRec's four Amazon datasets ``name`` is (case-insensitive), else None."""
    low = report.dataset_label(name).lower()
    return next((key for key, marks in PAPER_DATASETS.items() if any(m in low for m in marks)), None)


# ----------------------------------------------------------------------------- settings
def settings(few_shot: list[int]) -> dict[str, Callable[[int], tuple]]:
    """Training setting -> ``seed -> scenarios`` scored by one trained model; the first
    scenario's ``apply`` gives the training data of the setting."""
    out: dict[str, Callable[[int], tuple]] = {
        "standard": lambda seed: (Standard(), ColdWarmItems(0.35)),
        "cold_users": lambda seed: (ColdUsers(3),),
    }
    for k in few_shot:
        out[f"few_shot_{k}"] = lambda seed, k=k: (FewShot(k, seed),)
    return out


def columns(few_shot: list[int]) -> list[tuple[str, str, str]]:
    """(column label, setting, scenario group) of the table, in order."""
    return ([("overall", "standard", "all"), ("cold items", "standard", "cold_items"),
             ("warm items", "standard", "warm_items"), ("cold users", "cold_users", "cold_users")]
            + [(f"few-shot K={k}", f"few_shot_{k}", "all") for k in few_shot])


def applied(scenarios: tuple, dataset) -> list[ScenarioData] | str:
    """Every scenario applied to ``dataset``, or why the setting does not apply."""
    out = []
    for sc in scenarios:
        try:
            data = sc.apply(dataset)
        except ValueError as e:  # e.g. FewShot asking for more users than the dataset has
            return str(e)
        if not data.applicable:
            return data.note
        out.append(data)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_args(p, backbones="sasrec", seeds="2020", text_source=False)
    g = p.add_argument_group(EXPERIMENT)
    g.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"rows, any of {', '.join(m.name for m in METHODS)} (default {','.join(DEFAULT_METHODS)}; "
                        "stage-1 rows need sasrec); --backbones is unused")
    g.add_argument("--few-shot", default="128,256", help="K values of the few-shot columns (default 128,256)")
    g.add_argument("--stage1-epochs", type=int, default=None,
                   help="epochs of the stage-1 rows only (default: the backbone's 10, or --epochs)")
    g.add_argument("--scenarios", default=None,
                   help="training settings to run (default all: standard, cold_users, few_shot_<K>)")
    g.add_argument("--target", default=None, metavar="DATASET",
                   help="cross-domain column: score this dataset's test users (name or folder, same split) "
                        "with the rows trained on --dataset, from its items' text alone (stage-1 rows)")
    g.add_argument("--target-embeddings", default=None, metavar="FILE.npy",
                   help="the target's item text embeddings by the encoder of the stage-1 rows' precomputed "
                        "--dataset embeddings (default: encode the target's texts with that encoder)")
    s2 = p.add_argument_group("A-LLMRec stage 2 (row allmrec: needs sasrec and stage1)")
    s2.add_argument("--stage2-scenarios", default="standard",
                    help="settings the stage-2 row runs in (default standard: overall / cold / warm items)")
    s2.add_argument("--stage2-train-users", type=int, default=64,
                    help="stage-2 training users, a seeded sample (0: all; default 64)")
    s2.add_argument("--stage2-valid-users", type=int, default=16, help="stage-2 validation users (default 16)")
    s2.add_argument("--stage2-eval-users", type=int, default=100,
                    help="test users the LM scores, a seeded sample (0: all; default 100); every other row is "
                         "also reported on exactly these users")
    s2.add_argument("--stage2-epochs", type=int, default=1, help="stage-2 epochs at most (reference: 10; default 1)")
    s2.add_argument("--stage2-set", action="append", default=[], metavar="KEY=VALUE",
                    help="stage-2 config overrides (repeatable), e.g. lm=FILE.gguf or lm_max_new_tokens=32")
    return p


def method_config(args: argparse.Namespace, method: Method) -> Config:
    """The method's backbone defaults, its overrides, then the common options (--set, --epochs)."""
    return cli.base_config(args, **{**model_defaults(method.model), "model": method.model, **method.overrides})


def stage1_config(config: Config, sasrec_run: Path) -> Config:
    """A stage-1 row's config: ``sasrec_run`` and a text source (``resolve_embedding_source``)
    unless the row names one."""
    return text_config(config.replace(sasrec_run=str(sasrec_run)))


def text_config(config: Config) -> Config:
    """``config`` with its text source resolved (``resolve_embedding_source``) unless it names one."""
    from jaxrec.init import resolve_embedding_source

    if not (config.embeddings or config.encoder):
        config = config.replace(**resolve_embedding_source(config).config_fields())
    return config


def check_target(args: argparse.Namespace, methods, target) -> None:
    """Before any training: every cross-domain row can get ``target``'s item text by its own
    encoder (``Stage1Run.target_text``): a row whose text is a precomputed file needs
    ``--target-embeddings`` (same width, a row for every target item) unless the file is the
    reference MPNet one (the target is then encoded by ``mpnet``). ConfigError /
    EmbeddingFileError naming the option otherwise."""
    from jaxrec.init.precomputed import load_precomputed
    from jaxrec.init.sources import is_reference_embeddings
    from jaxrec.methods.allmrec.stage1 import text_dim_of, uses_precomputed_text

    given = None
    if args.target_embeddings:
        given = np.asarray(load_precomputed(args.target_embeddings, dataset_item_ids=np.asarray(target.item_ids)))
    rows = [(m, text_config(method_config(args, m))) for m in methods if m.cross_domain]
    if given is not None and not any(uses_precomputed_text(c) for _, c in rows):
        raise ConfigError(f"--target-embeddings {args.target_embeddings}: no row of --methods {args.methods} reads a "
                          "precomputed text file (the others encode the target's texts with their encoder)")
    for m, cfg in rows:
        if not uses_precomputed_text(cfg):
            continue
        if given is None:
            if not is_reference_embeddings(cfg.embeddings):
                raise ConfigError(f"--target {args.target}: row {m.name}'s text is the precomputed file "
                                  f"{cfg.embeddings}; give --target-embeddings FILE.npy (the target's items by the "
                                  "same encoder)")
        elif given.shape[1] != text_dim_of(cfg):
            raise ConfigError(f"--target-embeddings {args.target_embeddings}: {given.shape[1]}-d rows; row "
                              f"{m.name}'s text {cfg.embeddings} is {text_dim_of(cfg)}-d (expected the same encoder)")


def stage2_config(config: Config, run: Path, args: argparse.Namespace, method: Method | None = None) -> Config:
    """A stage-2 row's config: its inputs (``stage1_run``, or ``sasrec_run`` for the MLP-LLM row),
    the user samples and epochs of the --stage2-* options (a row's own ``train_users`` / ``epochs``
    override win: LLM-Only trains nothing), then --stage2-set. ConfigError when its candidate lists
    would not be the table's."""
    own = {k: v for k, v in (method.overrides if method else {}).items() if k in ("train_users", "epochs")}
    inputs = method.inputs if method else "stage1"
    where = {"stage1_run": str(run)} if inputs == "stage1" else {"sasrec_run": str(run), "stage1_run": None}
    config = config.replace(**where, train_users=args.stage2_train_users, valid_users=args.stage2_valid_users,
                            eval_users=args.stage2_eval_users, epochs=args.stage2_epochs)
    config = config.replace(**own).with_overrides(args.stage2_set)
    if config.prompt_candidates - 1 != config.candidate_negatives:
        raise ConfigError(f"prompt_candidates={config.prompt_candidates}: the stage-2 row must score the table's "
                          f"candidate lists (candidate_negatives={config.candidate_negatives} + the target)")
    return config


def build_cells(args, methods, seeds, setting_names, datasets: grid.DatasetCache, setups: dict,
                skipped: dict, out: Path | None = None) -> list[grid.Cell]:
    cells = []
    stage2_settings = cli.parse_list(getattr(args, "stage2_scenarios", None) or "standard")
    for seed in seeds:
        for m in methods:
            config = method_config(args, m).replace(seed=seed)
            base = datasets.base(config, grid.split_seed(grid.Cell({}, config), datasets.fixed))
            for s in setting_names:
                if m.on_stage1 and s not in stage2_settings:
                    continue  # reported as "not run" (--stage2-scenarios)
                data = applied(setups[s](seed), base)
                if isinstance(data, str):
                    skipped.setdefault(s, {})[seed] = data
                    log.warning("%s, seed %d: not applicable: %s", s, seed, data)
                    continue
                cell_config = config
                runs = (out or Path(".")).resolve() / "runs"
                if m.on_sasrec:  # the SASRec (backbone_row) cell of this setting and seed, saved by run_grid
                    cell_config = stage1_config(config, runs / grid._slug({"method": m.backbone_row, "setting": s,
                                                                           "seed": seed}))
                    if getattr(args, "stage1_epochs", None):
                        cell_config = cell_config.replace(epochs=args.stage1_epochs)
                if m.on_stage1:  # the stage-1 cell (frozen text, e) of this setting and seed, or SASRec's
                    source = m.stage1_row if m.inputs == "stage1" else "sasrec"
                    cell_config = stage2_config(config, runs / grid._slug({"method": source, "setting": s,
                                                                          "seed": seed}), args, m)
                cells.append(grid.Cell({"method": m.name, "setting": s, "seed": seed}, cell_config,
                                       {} if s == "standard" else {"setting": s}))
    return cells


def scorer(methods: dict[str, Method], setups: dict, datasets: grid.DatasetCache, target: str | None = None,
           target_embeddings: str | None = None):
    """``on_result``: every scenario of the cell's setting, scored on its evaluation dataset's
    stored test candidate lists (drawn once per dataset split and seed), with the per-user
    target ranks (``ranks``); a stage-2 cell reports ``fit``'s LM test metrics and its user
    sample (``stage2_extra``); with ``target``, a cross-domain row's standard cell also scores
    the target dataset's test users (group ``cross_domain``)."""
    from jaxrec.data.locate import cache_root
    from jaxrec.methods.allmrec.stage1 import uses_precomputed_text

    def on_result(ctx: grid.CellContext) -> dict:
        config, key = ctx.cell.config, ctx.cell.key
        method = methods[key["method"]]
        if method.on_stage1:
            return stage2_extra(ctx)
        folder = config.candidates_dir or cache_root() / "candidates"
        base = datasets.base(config, grid.split_seed(ctx.cell, datasets.fixed))
        out: dict[str, Any] = {"groups": {}, "counts": {}, "notes": [], "ranks": {}}
        for data in applied(setups[key["setting"]](key["seed"]), base):
            cands = candidates_for(folder, data.eval, "test", config.seed, config.candidate_negatives)
            cands = cands.select(np.unique(np.concatenate([np.asarray(v) for v in data.groups.values()])))
            scores = method.score(ctx, data.eval, cands)
            out["groups"].update(scenario_metrics(data, cands, scores, TABLE_METRICS))
            out["counts"].update({g: int(len(u)) for g, u in data.groups.items()})
            out["notes"].append(f"{data.name}: {data.note}")
            # per-user target ranks: any row can be compared on another row's users (same_users_rows)
            out["ranks"][data.name] = {"users": cands.users.tolist(), "ranks": candidate_ranks(scores).tolist()}
        if target and method.cross_domain and key["setting"] == "standard":
            tds = datasets.base(config.replace(dataset=str(target)), grid.split_seed(ctx.cell, datasets.fixed))
            cands, ranks = cross_domain_ranks(ctx, tds, folder,
                                              target_embeddings if uses_precomputed_text(config) else None)
            out["groups"]["cross_domain"] = metrics_from_ranks(ranks, cands.num_candidates, TABLE_METRICS)
            out["counts"]["cross_domain"] = int(len(ranks))
            out["ranks"]["cross_domain"] = {"users": cands.users.tolist(), "ranks": ranks.tolist()}
            out["notes"].append(f"cross_domain: trained on {ctx.dataset.name}, scored on {tds.name}'s test users "
                                f"from its items' text (Stage1Run.cross_domain)")
        return out

    return on_result


def cross_domain_ranks(ctx: grid.CellContext, target, candidates_dir, target_embeddings=None):
    """(CandidateSet, int [M] target ranks) of ``target``'s test users scored by the cell's
    stage-1 run folder: target users = the frozen SASRec over the decoded text latents of their
    target history, items = the decoded text latents (``jaxrec.methods.allmrec.stage1.Stage1Run.cross_domain``)."""
    from jaxrec.methods.allmrec.stage1 import load_stage1_run

    run = load_stage1_run(ctx.result.out_dir, ctx.dataset)
    user, items = run.cross_domain(target, run.target_text(target, target_embeddings))
    config = ctx.cell.config
    cands = candidates_for(candidates_dir, target, "test", config.seed, config.candidate_negatives)
    return cands, candidate_ranks(dot_scores(user, items, cands))


#: Stage-2 test metrics reported beside the headline LM ranking (``lm_score``, by default the
#: summed log-likelihood): the per-token mean ranking and the paper's generation Hit@1.
LM_EXTRA = ("hit@1_mean", "hit@5_mean", "ndcg@5_mean", "hit@1_generate", "hit@1_generate_substring",
            "generate_on_list")


def stage2_extra(ctx: grid.CellContext) -> dict:
    """A stage-2 cell's ``extra``: ``groups`` / ``counts`` from ``fit``'s ``lm_candidates`` test
    metrics (overall, cold and warm items: the same 35 % item groups as ``ColdWarmItems``),
    ``lm`` the LM_EXTRA metrics per group, ``sample`` the dense test users the LM scored per
    group (``stage2_fit.evaluation_lists``: the table's stored candidate lists for them), and the
    per-user views for the same-users table: ``lm_ranks`` (by ``lm_score``; ``lm_ranks_mean``,
    ``generate_hit``, ``substring_hit`` for a title answer) and ``popularity_ranks`` (the
    candidates ranked by their training interaction counts)."""
    from jaxrec.methods.allmrec import stage2_fit

    t, config = ctx.result.test_metrics, ctx.cell.config
    ex, items, _ = stage2_fit.evaluation_lists(ctx.dataset, "test", config)
    sample = {"all": ex.users, **{g: ex.users[np.isin(ex.target, m)]
                                  for g, m in stage2_fit.item_groups(ctx.dataset).items()}}
    what = "zero-shot (nothing trained)" if not config.soft_tokens and not config.lora_rank else \
        f"trained on {config.train_users or 'all'} users"
    out: dict[str, Any] = {"groups": {}, "counts": {}, "lm": {}, "sample": {g: u.tolist() for g, u in sample.items()},
                           "notes": [f"{ctx.cell.key['method']}: LM {config.lm}, answer {config.answer}, {what}, "
                                     f"tested on {len(ex)} sampled users"]}
    for g, users in sample.items():
        p = "" if g == "all" else f"{g}/"
        if len(users) == 0 or f"{p}{METRIC}" not in t:
            continue
        out["groups"][g] = {m: float(t[f"{p}{m}"]) for m in TABLE_METRICS}
        out["counts"][g] = int(len(users))
        out["lm"][g] = {m: (float(t[f"{p}{m}"]) if f"{p}{m}" in t else None) for m in LM_EXTRA}
    res = getattr(ctx.result.evaluator, "results", {}).get("test")
    if res is not None:
        out["lm_ranks"] = res.ranks(config.lm_score).tolist()
        if res.choice is not None:
            out["lm_ranks_mean"] = res.ranks("mean").tolist()
            out["generate_hit"] = (res.choice == 0).astype(int).tolist()
            out["substring_hit"] = res.substring_hit.astype(int).tolist()
    counts = np.bincount(ctx.dataset.train.item, minlength=ctx.dataset.num_items).astype(np.float64)
    out["popularity_ranks"] = candidate_ranks(counts[items]).tolist()
    return out


def transform(setups: dict):
    def apply(dataset, cell: grid.Cell):
        data = applied(setups[cell.data["setting"]](cell.config.seed), dataset)[0]
        return data.train, {"note": data.note, "train_interactions": int(len(data.train.train))}

    return apply


def summarize(records, methods, cols, paper_key: str | None) -> list[dict]:
    rows = []
    for m in methods:
        for label, setting, group in cols:
            recs = [r for r in records if r["key"]["method"] == m.name and r["key"]["setting"] == setting
                    and group in r.get("extra", {}).get("groups", {})]
            row: dict[str, Any] = {"method": m.name, "label": m.label, "column": label, "setting": setting,
                                   "group": group, "n": len(recs), "seeds": [r["key"]["seed"] for r in recs],
                                   "users": [r["extra"]["counts"][group] for r in recs]}
            for metric in TABLE_METRICS:
                row[f"{metric}_mean"], row[f"{metric}_std"] = report.mean_std(
                    [r["extra"]["groups"][group][metric] for r in recs])
            paper = PAPER.get(m.paper or "", {}).get(paper_key or "", {})
            row["paper_hit@1"] = paper.get(label)
            rows.append(row)
    return rows


SAME_GROUPS = (("overall", "all"), ("cold items", "cold_items"), ("warm items", "warm_items"))
#: Bootstrap resamples of the same-users confidence intervals and paired differences.
BOOTSTRAP = 2000


def _hits(ranks) -> dict[str, np.ndarray]:
    """Per-user hit@1, hit@5, ndcg@5, mrr of 0-based target ranks (``jaxrec.eval.candidates``)."""
    r = np.asarray(ranks, np.float64)
    return {"hit@1": (r < 1).astype(float), "hit@5": (r < 5).astype(float),
            "ndcg@5": np.where(r < 5, 1 / np.log2(r + 2), 0.0), "mrr": 1 / (r + 1)}


def bootstrap_ci(x: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``x`` (resampling users)."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (reps, x.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired comparison of per-user Hit@1 of two rows on the same users: mean difference a - b, its
    95% bootstrap interval, and the exact McNemar p-value (two-sided binomial test on the
    discordant users, ``scipy.stats.binomtest``)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, float), np.asarray(b, float)
    lo, hi = bootstrap_ci(a - b, seed=1)
    wins, losses = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"diff": float(np.mean(a - b)), "diff_lo": lo, "diff_hi": hi, "wins": wins, "losses": losses,
            "p": float(p)}


def same_users_rows(records, methods, num_candidates: int) -> list[dict]:
    """Every row on exactly the test users the stage-2 rows scored (standard setting; the users of
    every stage-2 cell of a seed are the same seeded sample): per-user target ranks from each
    row's stored ranks on the same stored candidate lists; the popularity ranking of those lists;
    every stage-2 row's LM ranking (and, for a title answer, its per-token mean ranking and greedy
    generation). Per row and item group: Hit@1 with a 95% bootstrap interval over users (users of
    every seed pooled), hit@5, ndcg@5, mrr, and a paired comparison of Hit@1 with SASRec (mean
    difference, its interval, McNemar's exact p). [] when no stage-2 cell ran."""
    lm_cells = [r for r in records if r["key"]["setting"] == "standard" and "sample" in r.get("extra", {})]
    if not lm_cells:
        return []
    by_method = {m.name: m for m in methods}
    per_row: dict[tuple[str, str], dict[str, list]] = {}

    def add(name, label, seed, group_users, values):
        row = per_row.setdefault((name, label), {})
        for g, users in group_users.items():
            row.setdefault(g, []).extend((seed, u, v) for u, v in zip(users, values[g]))

    seeds_done = set()
    for r2 in lm_cells:
        seed = r2["key"]["seed"]
        sample = r2["extra"]["sample"]
        order = {u: k for k, u in enumerate(sample["all"])}
        groups = {g: sample[g] for _, g in SAME_GROUPS if sample.get(g)}

        def pick(values):
            return {g: [values[order[u]] for u in users] for g, users in groups.items()}

        if seed not in seeds_done:  # the non-LM rows and popularity once per seed
            seeds_done.add(seed)
            for m in methods:
                if m.on_stage1:
                    continue
                rec = next((r for r in records if r["key"] == {"method": m.name, "setting": "standard", "seed": seed}
                            and "ranks" in r.get("extra", {})), None)
                if rec is None:
                    continue
                rank_of: dict[int, int] = {}
                for name, d in rec["extra"]["ranks"].items():
                    if name != "cross_domain":
                        rank_of.update(zip(d["users"], d["ranks"]))
                add(m.name, m.label, seed, groups, {g: [rank_of[u] for u in users] for g, users in groups.items()})
            if "popularity_ranks" in r2["extra"]:
                add("popularity", "Popularity (training interaction counts)", seed, groups,
                    pick(r2["extra"]["popularity_ranks"]))
        m = by_method.get(r2["key"]["method"])
        if m is None or "lm_ranks" not in r2["extra"]:
            continue
        ex = r2["extra"]
        if "generate_hit" in ex:  # a title answer: the reference's views
            add(m.name + "_sum", f"{m.label}: LM rank (sum log-lik)", seed, groups, pick(ex["lm_ranks"]))
            add(m.name + "_mean", f"{m.label}: LM rank (mean log-lik)", seed, groups, pick(ex["lm_ranks_mean"]))
            add(m.name + "_generate", f"{m.label}: generation (exact title)", seed, groups,
                pick([0 if h else num_candidates for h in ex["generate_hit"]]))
            add(m.name + "_substring", f"{m.label}: generation (ref. substring rule)", seed, groups,
                pick([0 if h else num_candidates for h in ex["substring_hit"]]))
        else:
            add(m.name, m.label, seed, groups, pick(ex["lm_ranks"]))
    base = per_row.get(("sasrec", by_method["sasrec"].label)) if "sasrec" in by_method else None
    rows = []
    for (name, label), groups in per_row.items():
        row: dict[str, Any] = {"method": name, "label": label, "n": len({s for s, _, _ in groups.get("all", [])})}
        for _, g in SAME_GROUPS:
            entries = groups.get(g, [])
            row[f"{g}/users"] = len(entries)
            hits = _hits([v for _, _, v in entries])
            for metric in TABLE_METRICS:
                row[f"{g}/{metric}"] = float(hits[metric].mean()) if entries else float("nan")
            row[f"{g}/hit@1_lo"], row[f"{g}/hit@1_hi"] = bootstrap_ci(hits["hit@1"])
            if base is not None and name != "sasrec" and entries:
                mine = {(s, u): v for s, u, v in entries}
                theirs = {(s, u): v for s, u, v in base.get(g, [])}
                both = [k for k in mine if k in theirs]
                if both:
                    test = paired_test(_hits([mine[k] for k in both])["hit@1"],
                                       _hits([theirs[k] for k in both])["hit@1"])
                    row.update({f"{g}/vs_sasrec_{k}": v for k, v in test.items()})
        rows.append(row)
    return rows


def same_users_text(rows: list[dict], title: str) -> str:
    headers = (["on the stage-2 test users"] + [f"{c} hit@1 [95% CI]" for c, _ in SAME_GROUPS]
               + ["hit@5", "ndcg@5", "mrr", "Δ hit@1 vs SASRec [95% CI], McNemar p", "users"])
    body = []
    for r in rows:
        cells = [f"{r[f'{g}/hit@1']:.4f} [{r[f'{g}/hit@1_lo']:.3f}, {r[f'{g}/hit@1_hi']:.3f}]"
                 if r[f"{g}/users"] else "-" for _, g in SAME_GROUPS]
        vs = (f"{r['all/vs_sasrec_diff']:+.4f} [{r['all/vs_sasrec_diff_lo']:+.3f}, {r['all/vs_sasrec_diff_hi']:+.3f}], "
              f"p={r['all/vs_sasrec_p']:.2g}" if "all/vs_sasrec_diff" in r else "-")
        body.append([r["label"]] + cells + [report.fmt(r[f"all/{m}"]) for m in ("hit@5", "ndcg@5", "mrr")]
                    + [vs, str(r["all/users"])])
    return report.format_table(headers, body, title=title)


def table_text(rows, methods, cols, title: str, paper_key: str | None, notes: list[str]) -> str:
    headers = ["method"] + [c[0] for c in cols]
    body = []
    for m in methods:
        mine = {r["column"]: r for r in rows if r["method"] == m.name}
        body.append([m.label] + [report.fmt_mean_std(mine[c]["hit@1_mean"], mine[c]["hit@1_std"]) if mine[c]["n"]
                                 else "n/a" for c, _, _ in cols])
        if paper_key and m.paper:
            body.append([f"  paper ({paper_key})"] + [report.fmt(mine[c]["paper_hit@1"]) for c, _, _ in cols])
    text = report.format_table(headers, body, title=title)
    return text + ("\n" + "\n".join(notes) if notes else "")


def plot(rows, methods, cols, path: Path, title: str) -> Path:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 3.4))
    labels = [c[0] for c in cols]
    series = {}
    for m in methods:
        mine = {r["column"]: r for r in rows if r["method"] == m.name}
        series[m.label] = ([mine[c]["hit@1_mean"] for c in labels], [mine[c]["hit@1_std"] for c in labels])
        paper = [mine[c]["paper_hit@1"] for c in labels]
        if any(p is not None for p in paper):
            series[f"{m.label} (paper)"] = ([np.nan if p is None else p for p in paper], [np.nan] * len(labels))
    plots.grouped_bars(ax, labels, series, "Hit@1 (20 candidates, test)")
    fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from jaxrec.methods.allmrec import register

    register()  # A-LLMRec's stages, contexts, terms and evaluation (explicit; idempotent)
    args = build_parser().parse_args(argv)
    seeds, _ = cli.start(args)
    names = cli.parse_list(args.methods)
    known = {m.name: m for m in METHODS}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"--methods: unknown {bad}; expected a subset of {', '.join(known)}")
    methods = [known[n] for n in names]
    if any(m.on_sasrec or m.on_stage1 for m in methods):
        for need in sorted({m.backbone_row for m in methods if m.on_sasrec} | ({"sasrec"} if any(
                m.on_stage1 for m in methods) else set())):
            if need not in names:
                raise ConfigError(f"--methods {args.methods}: the stage-1 rows align the {need} run of the same "
                                  f"setting and seed; add {need}")
        for need in sorted({m.stage1_row for m in methods if m.on_stage1 and m.inputs == "stage1"} - set(names)):
            raise ConfigError(f"--methods {args.methods}: the stage-2 rows read the {need} run of the same "
                              f"setting and seed; add {need}")
        # SASRec first, stage 2 last: the runs a row reads are saved before it trains
        backbones = {m.backbone_row for m in methods if m.on_sasrec} | {"sasrec"}
        methods = sorted(methods, key=lambda m: (m.name not in backbones, m.on_stage1))
        args.save_runs = True
    if args.stage2_epochs < 1:
        raise ConfigError(f"--stage2-epochs {args.stage2_epochs}: expected an integer >= 1")
    for name in ("stage2_train_users", "stage2_valid_users", "stage2_eval_users"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected an integer >= 0 (0: all)")
    try:
        few_shot = cli.parse_list(args.few_shot, int)
    except ValueError:
        raise ConfigError(f"--few-shot {args.few_shot!r}: expected comma-separated integers") from None
    if any(k < 1 for k in few_shot):
        raise ConfigError(f"--few-shot {args.few_shot!r}: expected integers >= 1")
    setups = settings(few_shot)
    chosen = cli.parse_list(args.scenarios) if args.scenarios else list(setups)
    unknown = [s for s in chosen if s not in setups]
    if unknown:
        raise ConfigError(f"--scenarios: unknown {unknown}; expected a subset of {', '.join(setups)}")
    cols = [c for c in columns(few_shot) if c[1] in chosen]
    if any(m.on_stage1 for m in methods):
        bad = [x for x in cli.parse_list(args.stage2_scenarios) if x not in chosen]
        if bad or not cli.parse_list(args.stage2_scenarios):
            raise ConfigError(f"--stage2-scenarios {args.stage2_scenarios!r}: {bad} not among the settings run "
                              f"({', '.join(chosen)})")
    base = method_config(args, methods[0])
    if args.target_embeddings and not Path(args.target_embeddings).is_file():
        raise ConfigError(f"--target-embeddings {args.target_embeddings}: file not found")
    if args.target_embeddings and not args.target:
        raise ConfigError("--target-embeddings: give --target DATASET too")
    if args.target:
        if "standard" not in chosen:
            raise ConfigError("--target: the cross-domain column scores the standard setting's runs; add standard to "
                              "--scenarios")
        cols.append((f"cross-domain → {report.dataset_label(args.target)}", "standard", "cross_domain"))
    for m in methods:
        want, have = "lm_candidates" if m.on_stage1 else "candidates", method_config(args, m).evaluation
        if have != want:
            raise ConfigError(f"method {m.name}: evaluation={have!r}; the A-LLMRec "
                              f"table scores the stored candidate lists (evaluation={want!r})")
    out = args.out or cli.default_out_dir(EXPERIMENT, cli.run_name(args, "+".join(names)))
    command = cli.command_line(f"experiments.{EXPERIMENT}", argv)
    datasets = grid.DatasetCache(args.split_seed, transform=transform(setups))
    skipped: dict[str, dict[int, str]] = {}
    cells = build_cells(args, methods, seeds, chosen, datasets, setups, skipped, out)
    first = datasets.first(base, seeds)
    notes = [f"{s}: not applicable ({'; '.join(sorted(set(why.values())))})" for s, why in skipped.items()]
    if args.target:
        if not any(m.cross_domain for m in methods):
            raise ConfigError(f"--target {args.target}: no row of --methods {args.methods} scores another dataset "
                              "(the stage-1 rows do)")
        try:
            target = datasets.first(base.replace(dataset=str(args.target)), seeds)
        except DataError as e:
            raise ConfigError(f"--target {args.target}: {e}") from None
        check_target(args, methods, target)
        notes.append(f"cross-domain → {target.name}: stage-1 rows trained on {first.name} score {target.name}'s "
                     f"test users from its items' text alone; SASRec: "
                     f"{CrossDomain(target=target).apply(first).note.split(': ', 1)[-1]}")
    else:
        notes.append(f"cross-domain: not run (--target DATASET: the stage-1 rows score another dataset from its "
                     f"items' text); SASRec: {CrossDomain(target=first).apply(first).note.split(': ', 1)[-1]}")
    if any(m.on_stage1 for m in methods):
        notes.append(f"A-LLMRec (stage 2): run in {args.stage2_scenarios} only (--stage2-scenarios), tested on "
                     f"{args.stage2_eval_users or 'all'} sampled test users (its cells in the table are on those "
                     "users; the second table puts every row on them)")
    out.mkdir(parents=True, exist_ok=True)  # after every check: a refused run leaves no folder behind
    meta = {"methods": names, "seeds": seeds, "settings": chosen, "few_shot": few_shot, "columns": cols,
            "not_applicable": skipped, "notes": notes, "split_seed": args.split_seed}
    records = grid.run_cells(args, EXPERIMENT, command, base, cells, out, datasets, meta,
                             on_result=scorer(known, setups, datasets, args.target, args.target_embeddings))
    paper_key = paper_dataset(base.dataset)
    rows = summarize(records, methods, cols, paper_key)
    same = same_users_rows(records, methods, base.candidate_negatives + 1)
    meta["same_users"] = same
    report.write_results(out, EXPERIMENT, command, base, records, summary=rows, meta=meta)
    name = report.dataset_label(base.dataset)
    title = (f"A-LLMRec Tables 1/2 layout: {name}, Hit@1 over {base.candidate_negatives + 1} candidates (test), "
             f"{report.over_seeds(seeds)}"
             + (f"; paper: {paper_key}" if paper_key else "; not one of the paper's datasets (no paper numbers)"))
    counts = {c: sorted({u for r in rows if r["column"] == c and not known[r["method"]].on_stage1 for u in r["users"]})
              for c, _, _ in cols}
    notes.append("users per column (per seed): " + "; ".join(f"{c} {'/'.join(map(str, u)) or '-'}"
                                                              for c, u in counts.items()))
    text = table_text(rows, methods, cols, title, paper_key, notes)
    if same:
        text += "\n\n" + same_users_text(same, (
            f"Every row on the test users A-LLMRec's stage 2 was tested on (a seeded sample; the same stored "
            f"{base.candidate_negatives + 1}-candidate lists), standard setting; users per seed in the last column"))
    metric_cols = [f"{m}_{s}" for m in TABLE_METRICS for s in ("mean", "std")]
    files = [report.write_csv(out / f"{EXPERIMENT}.csv", rows,
                              ["method", "label", "column", "setting", "group", "n", "seeds", "users", *metric_cols,
                               "paper_hit@1"]),
             report.write_csv(out / "cells.csv", report.cell_rows(records, ("hit@1", "ndcg@10", "mrr",
                                                                             "full_ndcg@10"))),
             plot(rows, methods, cols, out / f"{EXPERIMENT}.png", f"{name}: Hit@1 by scenario"),
             out / "results.json"]
    if same:
        files.append(report.write_csv(out / "same_users.csv", same, list(dict.fromkeys(k for r in same for k in r))))
    report.finish(out, text, files + [out / "table.txt"])
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
