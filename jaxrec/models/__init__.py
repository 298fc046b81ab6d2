"""Backbones: encoders + objectives over a context (see ``jaxrec.models.base``), registered by name.

``register_model(name, builder)`` adds a backbone (``builder(config) -> Model``); from then on
``Config(model=name)``, ``get_model``, ``jaxrec.fit``, the experiments and
``jaxrec train --plugin <module> --model <name>`` all know it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from jaxrec.config import Config
from jaxrec.models.base import (Encoder, Model, Params, SequenceEncoder, TableSpec, dot_scores, init_tables,
                                require_defaults, xavier_uniform_table)
from jaxrec.models.lightgcn import lightgcn_encoder, make_lightgcn
from jaxrec.models.mf import make_mf, mf_encoder
from jaxrec.models.sasrec import SASREC_DEFAULTS, make_sasrec, sasrec_encoder
from jaxrec.models.sgcl import make_sgcl
from jaxrec.models.sgl import make_sgl
from jaxrec.registry import CONTEXTS, MODELS


def register_model(name: str, builder: Callable[[Config], Model], *, defaults: dict | None = None,
                   replace: bool = False) -> Callable:
    """Make backbone ``name`` known everywhere (``builder(config) -> Model``); returns ``builder``.

    ``defaults``: config values of this backbone's protocol (e.g. SASRec's batch size and
    split), applied by ``Config.for_model(name)``, ``build_config`` and ``jaxrec train --model
    name`` beneath the user's own settings.
    """
    if defaults is not None:
        unknown = sorted(set(defaults) - {f.name for f in dataclasses.fields(Config)})
        if unknown:
            raise ValueError(f"register_model({name!r}): unknown config keys in defaults: {unknown}")
        builder.config_defaults = dict(defaults)
    return MODELS.register(name, builder, replace=replace)


def get_model(config: Config) -> Model:
    """The backbone ``config.model`` with ``config``'s hyperparameters.

    Raises ``ConfigError`` naming the key when ``config`` changes an option that only models over
    another context kind read (a context builder's ``options``: e.g. ``max_seq_len`` or
    ``dropout_rate`` for a graph backbone), or when the builder refuses a value.
    """
    model = MODELS.get(config.model, "model")(config)
    if not isinstance(model, Model):
        raise TypeError(f"model builder {config.model!r} returned {type(model).__name__}, expected jaxrec.models.Model")
    own = set(getattr(CONTEXTS.get(model.context), "options", ()))
    for kind in CONTEXTS.names():
        options = tuple(o for o in getattr(CONTEXTS.get(kind), "options", ()) if o not in own)
        if kind != model.context and options:
            require_defaults(config, options, f"model={config.model!r} (context {model.context!r}) does not read it; "
                                              f"it is an option of backbones over {kind!r} ({', '.join(options)})")
    return model


register_model("mf", make_mf)
register_model("lightgcn", make_lightgcn)
register_model("sgl", make_sgl)
register_model("sgcl", make_sgcl)
register_model("sasrec", make_sasrec, defaults=SASREC_DEFAULTS)

# The built-in context kinds register with the models.
from jaxrec.models import contexts  # noqa: E402,F401

# A-LLMRec stage 1 (backbone "allmrec_stage1", its context kind and loss terms).
from jaxrec.align import stage1 as _stage1  # noqa: E402,F401
# A-LLMRec stage 2 (projectors into a frozen LM): backbone, context, batch kind, term, evaluation.
from jaxrec.align import stage2_fit  # noqa: E402,F401

__all__ = ["Model", "Encoder", "SequenceEncoder", "TableSpec", "Params", "get_model", "register_model",
           "init_tables", "require_defaults", "xavier_uniform_table", "dot_scores", "lightgcn_encoder", "mf_encoder",
           "sasrec_encoder", "make_lightgcn", "make_mf", "make_sgl", "make_sgcl", "make_sasrec"]
