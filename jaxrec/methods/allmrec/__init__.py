"""A-LLMRec (Kim et al., KDD 2024): aligning a frozen collaborative-filtering recommender with a frozen LLM.

A method package: it uses the library (SASRec from ``jaxrec.models``, the LM from
``jaxrec.lm``, the sentence encoder from ``jaxrec.text``, ``jaxrec.fit``) and registers its
own components in one explicit call, ``register()`` (the CLI and the experiment modules make it
through ``jaxrec.methods.register_all()``; importing this package registers nothing):

- backbone ``allmrec_stage1`` (``stage1``): item and text autoencoders that align a frozen
  SASRec's item embeddings with item-text embeddings; its settings ``Stage1Settings``, context
  ``"allmrec_stage1"``, loss terms ``align_rec``, ``align_match``, ``align_item_recon``,
  ``align_text_recon``; ``load_stage1_run`` gives the joint item embeddings and user
  representations stage 2 reads.
- backbone ``allmrec_stage2`` (``stage2_fit``, networks in ``stage2``): projectors of user
  representations and joint item embeddings into the LM's token space, soft prompts
  (``prompt``), teacher-forced training; its settings ``Stage2Settings``, context
  ``"allmrec_stage2"``, batch kind ``"prompts"``, term ``next_title``, evaluation
  ``"lm_candidates"``; ``stage2_inputs`` (what it reads from stage 1), ``rerank``
  (filter-then-rerank of a recommender's top candidates).
- data protocol ``"allmrec"`` of ``jaxrec.data.load_amazon`` (``data``: the reference's
  preprocessing of Amazon 2018 reviews and its item text).
"""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_REGISTERED = False


def register() -> None:
    """Register A-LLMRec's backbones, contexts, loss terms, batch kind, evaluation and data
    protocol (module docstring). Idempotent: a second call does nothing."""
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        from jaxrec.methods.allmrec import data, stage1, stage2_fit
        from jaxrec.models import register_model
        from jaxrec.registry import BATCH_KINDS, CONTEXTS, DATA_PROTOCOLS, EVALUATIONS, OBJECTIVES

        CONTEXTS.register("allmrec_stage1", stage1.STAGE1_CONTEXT)
        for name, builder in stage1.TERM_BUILDERS.items():
            OBJECTIVES.register(name, builder)
        register_model("allmrec_stage1", stage1.make_stage1, settings=stage1.Stage1Settings,
                       defaults=stage1.STAGE1_DEFAULTS, check=stage1.check_config)

        CONTEXTS.register(stage2_fit.CONTEXT, stage2_fit.STAGE2_CONTEXT)
        BATCH_KINDS.register("prompts", stage2_fit.PROMPTS)
        OBJECTIVES.register("next_title", stage2_fit.next_title_term)
        EVALUATIONS.register("lm_candidates", stage2_fit.LM_CANDIDATES)
        register_model(stage2_fit.NAME, stage2_fit.make_stage2, settings=stage2_fit.Stage2Settings,
                       defaults=stage2_fit.DEFAULTS, check=stage2_fit.check_config)

        DATA_PROTOCOLS.register("allmrec", data.ALLMREC_PROTOCOL)
        _REGISTERED = True


__all__ = ["register"]
