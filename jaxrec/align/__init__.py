"""A-LLMRec (Kim et al., KDD 2024): aligning a frozen collaborative-filtering recommender with a frozen LLM.

- stage 1 (``jaxrec.align.stage1``): item and text autoencoders that align a frozen SASRec's
  item embeddings with item-text embeddings; the registered ``allmrec_stage1`` backbone;
  ``load_stage1_run`` gives the joint item embeddings and user representations stage 2 reads.
- stage 2 (``jaxrec.align.stage2``): projectors of user representations and joint item
  embeddings into the LM's token space, soft prompts (``jaxrec.align.prompt``), teacher-forced
  training and LM evaluation; ``jaxrec.align.stage2_inputs`` (what it reads from stage 1),
  ``jaxrec.align.stage2_fit`` (the registered ``allmrec_stage2`` backbone for ``jaxrec.fit``),
  ``jaxrec.align.rerank`` (filter-then-rerank of a recommender's top candidates).
"""
