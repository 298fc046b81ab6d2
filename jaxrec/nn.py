"""Flax NNX modules behind a pure boundary, and the torch-style initializers, in one place.

Every model with weight layers (SASRec, GRU4Rec, the sentence encoder, the language model, the
A-LLMRec networks) is an NNX module on the inside and a plain nested dict of arrays on the
outside: optax, Orbax, ``jit`` and the partitioners only ever see the dict. Two calls make the
boundary::

    spec = PureModule.of(lambda rngs: Net(settings, rngs=rngs))   # shapes only, nothing allocated
    params = init_params(lambda rngs: Net(settings, rngs=rngs), key)  # {"layer": {"kernel": ...}, ...}
    module = spec.merge(params)          # inside a jitted function: the module holding ``params``
    y = module(x)

``PureModule`` is ``nnx.split`` of ``nnx.eval_shape`` of the module (graphdef + abstract state,
no weights); ``merge`` fills a fresh copy of the abstract state with ``nnx.replace_by_pure_dict``
and ``nnx.merge``s it, so no Python state escapes a traced function. ``check`` compares a
params dict with the module's layout and raises the caller's error type naming the first
leaf whose path or shape differs.

Initializers (weights laid out ``[in, out]`` as ``nnx.Linear``'s kernel, tables ``[rows, d]``),
each the formula of the torch function named:

- ``xavier_normal(key, shape)``: ``nn.init.xavier_normal_``, N(0, 2 / (shape[0] + shape[1]));
- ``xavier_uniform(key, shape)``: ``nn.init.xavier_uniform_``, U(-b, b), b = sqrt(6 / (shape[0] + shape[1]));
- ``torch_uniform(fan_in)``: ``nn.Linear`` / ``nn.Conv1d``'s default weight and bias init,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))`` gives the same bound);
- ``normal(std)``: N(0, std^2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

Params = dict
Build = Callable[[nnx.Rngs], nnx.Module]


# ----------------------------------------------------------------------------- the bridge
def pure_dict(module: nnx.Module) -> Params:
    """The parameters of ``module`` as a plain nested dict of arrays (``nnx.to_pure_dict``)."""
    return nnx.to_pure_dict(nnx.split(module)[1])


def init_params(build: Build, key: jax.Array) -> Params:
    """Fresh parameters of ``build(nnx.Rngs(params=key))`` as a plain nested dict."""
    return pure_dict(build(nnx.Rngs(params=key)))


@dataclasses.dataclass(frozen=True, eq=False)
class PureModule:
    """An NNX module at fixed settings, as a graphdef and an abstract state (shapes, no arrays)."""

    graphdef: Any
    abstract_state: Any

    @classmethod
    def of(cls, build: Build) -> "PureModule":
        """The layout of ``build(rngs)`` without allocating it (``nnx.eval_shape`` + ``nnx.split``)."""
        return cls(*nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0)))))

    def shapes(self) -> Params:
        """The params layout: a nested dict of ``jax.ShapeDtypeStruct`` leaves."""
        return nnx.to_pure_dict(self.abstract_state)

    def check(self, params: Params, error: type[Exception] = ValueError, what: str = "params",
              about: str = "") -> None:
        """Raise ``error`` naming the first leaf of ``params`` whose path or shape is not the module's.

        Messages: ``"<what>: structure does not match <about> ..."`` (leaves missing or extra) and
        ``"<what><path>: shape (a, b); expected (c, d) <about>"``.
        """
        want = {jax.tree_util.keystr(p): tuple(s.shape)
                for p, s in jax.tree_util.tree_leaves_with_path(self.shapes())}
        got = {jax.tree_util.keystr(p): tuple(jnp.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(params)}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            raise error(f"{what}: structure does not match {about or 'the module'}; expected the dict its init "
                        f"returns ({len(want)} arrays), got {len(got)} leaves (missing {missing[:3]}, "
                        f"unexpected {extra[:3]})")
        for path, shape in want.items():
            if got[path] != shape:
                raise error(f"{what}{path}: shape {got[path]}; expected {shape}" + (f" for {about}" if about else ""))

    def merge(self, params: Params, *, check: bool = False, error: type[Exception] = ValueError,
              what: str = "params", about: str = "") -> nnx.Module:
        """The module holding ``params`` (jit-safe: a fresh state each call). ``check=True`` runs
        ``check`` first (shapes are static under jit, so the check costs nothing at run time)."""
        if check:
            self.check(params, error, what, about)
        state = jax.tree.map(lambda x: x, self.abstract_state)  # a fresh State: the stored one stays abstract
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state)


# ----------------------------------------------------------------------------- initializers
def xavier_normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """torch ``xavier_normal_`` on a 2-d weight: N(0, 2 / (shape[0] + shape[1]))."""
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (shape[0] + shape[1]))


def xavier_uniform(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """torch ``xavier_uniform_`` on a 2-d weight: U(-b, b), b = sqrt(6 / (shape[0] + shape[1]))."""
    bound = (6.0 / (shape[0] + shape[1])) ** 0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_uniform(fan_in: int) -> Callable[..., jax.Array]:
    """Initializer U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch ``nn.Linear`` / ``nn.Conv1d`` default
    for weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def normal(std: float) -> Callable[..., jax.Array]:
    """Initializer N(0, std^2) (``jax.nn.initializers.normal``)."""
    return jax.nn.initializers.normal(stddev=std)


__all__ = ["PureModule", "pure_dict", "init_params", "xavier_normal", "xavier_uniform", "torch_uniform", "normal"]
