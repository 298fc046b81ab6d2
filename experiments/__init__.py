"""Experiment modules: one per table or figure of the papers jaxrec reproduces.

Each is run as ``python -m experiments.<name> ...`` and is a thin shell over public
``jaxrec`` calls; the shared option parsing, grid running, aggregation and output
writing live in :mod:`experiments.cli`, :mod:`experiments.grid`, :mod:`experiments.report` and :mod:`experiments.plots`. See ``experiments/README.md``.

- ``llminit_table``: LLMInit Table 1 (backbones x init strategies, R@10 / N@10, gain).
- ``embedding_collapse``: LLMInit Figure 1 (metrics vs embedding size K) + effective rank.
- ``encoder_choice``: LLMInit Table 4 (encoders x selection strategies).
- ``cold_start``: LLMInit Figure 3 (half of each user's training interactions removed).
"""
