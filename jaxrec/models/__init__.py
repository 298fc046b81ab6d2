"""Backbones as records of pure functions (see ``jaxrec.models.base``)."""

from __future__ import annotations

from typing import Callable

from jaxrec.config import Config, ConfigError
from jaxrec.models.base import Model, Params, init_tables, xavier_uniform_table
from jaxrec.models.lightgcn import make_lightgcn
from jaxrec.models.mf import make_mf
from jaxrec.models.sgcl import make_sgcl
from jaxrec.models.sgl import make_sgl

_BUILDERS: dict[str, Callable[[Config], Model]] = {
    "mf": make_mf,
    "lightgcn": make_lightgcn,
    "sgl": make_sgl,
    "sgcl": make_sgcl,
}


def register_model(name: str, builder: Callable[[Config], Model]) -> None:
    """Make ``get_model`` know a backbone ``name``."""
    _BUILDERS[name] = builder


def get_model(config: Config) -> Model:
    """The backbone ``config.model`` with ``config``'s hyperparameters."""
    try:
        builder = _BUILDERS[config.model]
    except KeyError:
        raise ConfigError(f"model={config.model!r}: not available; known: {', '.join(sorted(_BUILDERS))}") from None
    return builder(config)


__all__ = ["Model", "Params", "get_model", "register_model", "init_tables", "xavier_uniform_table",
           "make_lightgcn", "make_mf", "make_sgl", "make_sgcl"]
