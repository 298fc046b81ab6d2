"""Shard a language model's weights over a device mesh (tensor parallelism, Megatron-style).

Along the mesh axis ``axis`` (default "model"):

- column-parallel kernels (q/k/v projections, SwiGLU gate/up, OPT fc1) split their output
  features, i.e. attention heads and MLP hidden units: kernel [(L,) in, out] -> P(.., None, axis),
  their biases [(L,) out] -> P(.., axis);
- row-parallel kernels (attention output, SwiGLU down, OPT fc2) split their input features:
  [(L,) in, out] -> P(.., axis, None) (so XLA inserts one all-reduce after each);
- the token embedding [V, E] splits the vocabulary, an untied head [E, V] likewise;
- norms, positions, projections in/out and row-parallel biases are replicated.

A dimension that the axis size does not divide is replicated instead (logged, and listed by
``param_specs(..., report=...)``). Jitted functions then run sharded by XLA's SPMD
partitioner; outputs equal the single-device ones up to float reassociation.
"""

from __future__ import annotations

import logging

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .errors import LMError
from .model import LanguageModel, Params

log = logging.getLogger("jaxrec.lm")

COLUMN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "fc1")
ROW = ("o_proj", "out_proj", "down_proj", "fc2")


def _spec(names: tuple, ndim: int, axis: str) -> tuple:
    """Per-dimension placement (None or ``axis``) of one leaf, before the divisibility check.
    Block leaves may carry a leading layer axis ("stacked" layout) or not ("list")."""
    if names[0] == "layers":
        module, leaf = names[-2], names[-1]
        if module in COLUMN:
            return (None,) * (ndim - 1) + (axis,)
        if module in ROW and leaf == "kernel":
            return (None,) * (ndim - 2) + (axis, None)
        return (None,) * ndim
    if names == ("embed_tokens", "embedding"):
        return (axis, None)
    if names == ("lm_head", "kernel"):
        return (None, axis)
    return (None,) * ndim


def param_specs(model: LanguageModel, params: Params, axis: str = "model", axis_size: int = 1,
                report: list | None = None) -> Params:
    """A pytree of ``PartitionSpec`` matching ``params`` (rules in the module doc).

    Dimensions not divisible by ``axis_size`` stay replicated; their paths are appended to
    ``report`` when given.
    """
    model.check_params(params)

    def one(path, x):
        names = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
        spec = _spec(names, x.ndim, axis)
        for dim, a in enumerate(spec):
            if a is not None and x.shape[dim] % axis_size:
                msg = (f"{'/'.join(map(str, names))} {tuple(x.shape)}: dim {dim} not divisible by {axis_size} devices; "
                       f"replicated")
                log.warning("shard_params: %s", msg)
                if report is not None:
                    report.append(msg)
                return P()
        return P(*spec)

    return jax.tree_util.tree_map_with_path(one, params)


def shard_params(model: LanguageModel, params: Params, mesh: Mesh, axis: str = "model",
                 report: list | None = None) -> Params:
    """``params`` placed on ``mesh`` with ``NamedSharding``s from ``param_specs`` (other mesh axes
    replicate). Raises LMError when ``axis`` is not a mesh axis."""
    if axis not in mesh.axis_names:
        raise LMError(f"shard_params: mesh axes are {mesh.axis_names}; expected one named {axis!r}")
    specs = param_specs(model, params, axis, mesh.shape[axis], report)
    return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs)
