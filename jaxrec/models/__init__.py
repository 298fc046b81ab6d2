"""Backbones: encoders + objectives over a context (see ``jaxrec.models.base``), registered by name.

``register_model(name, builder, settings=...)`` adds a backbone (``builder(config) -> Model``,
``settings`` its own frozen settings dataclass); from then on ``Config(model=name)``,
``get_model``, ``jaxrec.fit``, the experiments and ``jaxrec train --plugin <module> --model
<name>`` all know it. The built-in backbones are registered below, one line each. The models
of a paper's method (A-LLMRec's stages) live in its package (``jaxrec.methods.allmrec``) and
register in its ``register()`` call, not here.
"""

from __future__ import annotations

from typing import Callable, Mapping

from jaxrec.config import Config, ModelSettings
from jaxrec.models.base import (
    Encoder,
    Model,
    Params,
    SequenceEncoder,
    TableSettings,
    TableSpec,
    dot_scores,
    init_tables,
    xavier_uniform_table,
)
from jaxrec.models.bert4rec import BERT4REC_DEFAULTS, BERT4RecSettings, make_bert4rec
from jaxrec.models.ctrl import CTRL_DEFAULTS, CTRLSettings, make_ctrl
from jaxrec.models.gru4rec import GRU4REC_DEFAULTS, GRU4RecSettings, make_gru4rec
from jaxrec.models.lightgcn import LightGCNSettings, lightgcn_encoder, make_lightgcn
from jaxrec.models.mf import MFSettings, make_mf, mf_encoder
from jaxrec.models.morec import MOREC_DEFAULTS, MoRecSettings, make_morec
from jaxrec.models.neumf import NEUMF_DEFAULTS, NeuMFSettings, check_neumf, make_neumf
from jaxrec.models.nextitnet import NEXTITNET_DEFAULTS, NextItNetSettings, make_nextitnet
from jaxrec.models.recformer import RECFORMER_DEFAULTS, RecformerSettings, make_recformer
from jaxrec.models.sasrec import SASREC_DEFAULTS, SASRecSettings, check_no_graph, make_sasrec, sasrec_encoder
from jaxrec.models.sgcl import SGCLSettings, make_sgcl
from jaxrec.models.sgl import SGLSettings, check_in_batch, make_sgl
from jaxrec.registry import MODELS, ModelSpec


def register_model(name: str, builder: Callable[[Config], Model], *, settings: type = ModelSettings,
                   defaults: Mapping | None = None, check: Callable[[Config], None] | None = None,
                   replace: bool = False) -> Callable:
    """Make backbone ``name`` known everywhere (``builder(config) -> Model``); returns ``builder``.

    settings: the model's own frozen settings dataclass (a ``jaxrec.config.ModelSettings``
      subclass; default: no settings of its own). Its fields are the config keys only this
      model reads (``config.settings``, also readable flat as ``config.<key>``).
    defaults: values of *shared* config keys for this backbone's protocol (e.g. SASRec's batch
      size and split), applied by ``Config.for_model(name)``, ``build_config`` and ``jaxrec train
      --model name`` beneath the user's own settings.
    check: ``(config) -> None`` raising ``ConfigError`` for settings that do not fit shared keys.
    Raises ``ValueError`` for a settings class that is not a ``ModelSettings`` dataclass, a
    default that is not a shared key, or a taken name (unless ``replace``).
    """
    from jaxrec.config import shared_field_names  # noqa: PLC0415

    if not (isinstance(settings, type) and issubclass(settings, ModelSettings)):
        raise ValueError(f"register_model({name!r}): settings must be a jaxrec.config.ModelSettings dataclass, "
                         f"got {settings!r}")
    unknown = sorted(set(defaults or {}) - set(shared_field_names()))
    if unknown:
        raise ValueError(f"register_model({name!r}): defaults may set shared config keys only; {unknown} are not "
                         f"(a model's own keys take their defaults from its settings class)")
    MODELS.register(name, ModelSpec(builder, settings, dict(defaults or {}), check), replace=replace)
    return builder


def get_model(config: Config) -> Model:
    """The backbone ``config.model`` built from ``config`` (its settings and the shared keys)."""
    model = MODELS.get(config.model, "model").build(config)
    if not isinstance(model, Model):
        raise TypeError(f"model builder {config.model!r} returned {type(model).__name__}, expected jaxrec.models.Model")
    return model


# The built-in backbones: one line each.
register_model("mf", make_mf, settings=MFSettings)
register_model("lightgcn", make_lightgcn, settings=LightGCNSettings)
register_model("sgl", make_sgl, settings=SGLSettings, check=check_in_batch)
register_model("sgcl", make_sgcl, settings=SGCLSettings, check=check_in_batch)
register_model("sasrec", make_sasrec, settings=SASRecSettings, defaults=SASREC_DEFAULTS, check=check_no_graph)
register_model("gru4rec", make_gru4rec, settings=GRU4RecSettings, defaults=GRU4REC_DEFAULTS, check=check_no_graph)
register_model("nextitnet", make_nextitnet, settings=NextItNetSettings, defaults=NEXTITNET_DEFAULTS,
               check=check_no_graph)
register_model("bert4rec", make_bert4rec, settings=BERT4RecSettings, defaults=BERT4REC_DEFAULTS,
               check=check_no_graph)
register_model("neumf", make_neumf, settings=NeuMFSettings, defaults=NEUMF_DEFAULTS, check=check_neumf)
register_model("morec", make_morec, settings=MoRecSettings, defaults=MOREC_DEFAULTS, check=check_no_graph)
register_model("ctrl", make_ctrl, settings=CTRLSettings, defaults=CTRL_DEFAULTS, check=check_no_graph)
register_model("recformer_like", make_recformer, settings=RecformerSettings, defaults=RECFORMER_DEFAULTS,
               check=check_no_graph)

__all__ = ["Model", "Encoder", "SequenceEncoder", "TableSpec", "TableSettings", "Params", "get_model",
           "register_model", "init_tables", "xavier_uniform_table", "dot_scores", "lightgcn_encoder", "mf_encoder",
           "sasrec_encoder", "make_lightgcn", "make_mf", "make_sgl", "make_sgcl", "make_sasrec", "make_gru4rec",
           "make_nextitnet", "make_neumf", "make_bert4rec", "MFSettings", "LightGCNSettings", "SGLSettings",
           "SGCLSettings", "SASRecSettings", "GRU4RecSettings", "NextItNetSettings", "NeuMFSettings",
           "BERT4RecSettings", "MoRecSettings", "make_morec", "CTRLSettings", "make_ctrl", "RecformerSettings",
           "make_recformer"]
