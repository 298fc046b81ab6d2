"""Methods from papers, each a package that uses the library and registers itself explicitly.

The library (data, graph, models, objectives, init, train, eval, lm, text, serve) never imports
a method. A method package (``jaxrec.methods.<name>``) holds a paper's own networks, stages,
prompts and evaluations, and registers its backbones, contexts, loss terms, batch kinds and
evaluations in one call, ``register()``, which the CLI and the experiment modules make
(``register_all()`` registers every method; calling it again is a no-op). Importing ``jaxrec``
or validating a LightGCN config never loads a method or the language model.

- ``allmrec``: A-LLMRec (Kim et al., KDD 2024): stage 1 (alignment autoencoders over a frozen
  SASRec), stage 2 (soft prompts into a frozen LM), candidate re-ranking.

What stays in the library, and why: LLMInit's and TF-LLMER's initializers (``jaxrec.init``:
selection, pooling, normalization, Rec-PCA) are initializers any backbone takes through the
shared ``init`` key, not a model family with its own stages; the frozen LM (``jaxrec.lm``) and
the sentence encoder (``jaxrec.text``) are building blocks a method uses.
"""

from __future__ import annotations

import importlib

#: The method packages ``register_all`` registers, by module name under ``jaxrec.methods``.
METHODS = ("allmrec",)


def register_all() -> None:
    """Register every method package's components (idempotent)."""
    for name in METHODS:
        importlib.import_module(f"jaxrec.methods.{name}").register()


__all__ = ["METHODS", "register_all"]
