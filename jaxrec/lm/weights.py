"""Assemble a params pytree from named checkpoint tensors (shared by the GGUF and HF loaders).

A loader maps each file tensor to a destination: ``Dest(path, layer, transpose)`` where
``path`` is the pure-dict path (e.g. ``("layers", "self_attn", "q_proj", "kernel")``) and
``layer`` the block index (None outside the layers). ``assemble`` checks that every leaf of
``model.param_shapes()`` is filled exactly once with the right shape and lays the blocks out
as a list (or stacked); loaders cast each tensor to the requested dtype as they read it
(``to_dtype``). Nothing is dropped: tensors a loader cannot place are an error
unless the loader lists them as ignorable (reported in ``LoadedLM.report["ignored"]``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import LMError
from .model import LanguageModel


class Dest(NamedTuple):
    path: tuple[str, ...]
    layer: int | None = None
    transpose: bool = False  # torch Linear.weight [out, in] -> kernel [in, out]


class LoadedLM(NamedTuple):
    """What a loader returns: the model (config), its params pytree, the tokenizer (None when
    the source has none) and a report dict (source, seconds, tensor counts by type, ignored)."""

    model: LanguageModel
    params: dict
    tokenizer: Any
    report: dict


def check_dtype(dtype, source: str):
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise LMError(f"{source}: dtype {dtype} requested; expected float32 or bfloat16")
    return dtype


def assemble(model: LanguageModel, tensors: dict[str, tuple[Dest, np.ndarray]], source: str,
             layout: str = "list") -> dict:
    """Params pytree (``layout`` "list" or "stacked", see jaxrec.lm.model) from
    ``{file tensor name: (Dest, array already in the target dtype)}``.

    Raises LMError naming the file tensor for a shape mismatch or a leaf filled twice, and
    listing every leaf no tensor filled.
    """
    cfg = model.config
    want = model.param_shapes()
    flat_want = {tuple(k.key for k in p): s.shape for p, s in jax.tree_util.tree_leaves_with_path(want)}
    top: dict[tuple, np.ndarray] = {}
    layers: dict[tuple, list] = {}
    for name, (dest, arr) in tensors.items():
        if dest.transpose:
            arr = arr.T
        if dest.path not in flat_want:
            raise LMError(f"{source}: tensor {name} maps to {'/'.join(dest.path)}, which a {cfg.arch} model "
                          f"with this config does not have")
        shape = flat_want[dest.path]
        if dest.layer is None:
            if arr.shape != shape:
                raise LMError(f"{source}: tensor {name} has shape {arr.shape} (after layout conversion); "
                              f"expected {shape}")
            if dest.path in top:
                raise LMError(f"{source}: tensor {name} fills {'/'.join(dest.path)} a second time")
            top[dest.path] = arr
        else:
            if not 0 <= dest.layer < cfg.num_layers:
                raise LMError(f"{source}: tensor {name} belongs to layer {dest.layer}; the model has "
                              f"{cfg.num_layers} layers")
            if arr.shape != shape[1:]:
                raise LMError(f"{source}: tensor {name} has shape {arr.shape} (after layout conversion); "
                              f"expected {shape[1:]}")
            slots = layers.setdefault(dest.path, [None] * cfg.num_layers)
            if slots[dest.layer] is not None:
                raise LMError(f"{source}: tensor {name} fills {'/'.join(dest.path)} of layer {dest.layer} twice")
            slots[dest.layer] = arr
    missing = []
    for path in flat_want:
        if path[0] == "layers":
            slots = layers.get(path, [None] * cfg.num_layers)
            missing += [f"{'/'.join(path)} (layer {i})" for i, a in enumerate(slots) if a is None]
        elif path not in top:
            missing.append("/".join(path))
    if missing:
        raise LMError(f"{source}: no tensor for {len(missing)} parameter(s): " + ", ".join(missing[:12])
                      + (" ..." if len(missing) > 12 else ""))
    if layout not in ("list", "stacked"):
        raise LMError(f"{source}: layout {layout!r}; expected 'list' or 'stacked'")

    def put(tree, path, value):
        for key in path[:-1]:
            tree = tree.setdefault(key, {})
        tree[path[-1]] = jnp.asarray(value)

    out: dict = {"layers": [{} for _ in range(cfg.num_layers)] if layout == "list" else {}}
    for path in flat_want:
        if path[0] != "layers":
            put(out, path, top[path])
        elif layout == "stacked":
            put(out["layers"], path[1:], np.stack(layers[path]))
        else:
            for i, arr in enumerate(layers[path]):
                put(out["layers"][i], path[1:], arr)
    return out


def to_dtype(arr, dtype) -> np.ndarray:
    """A float numpy array (f32/f16/bf16) in the target ``dtype`` (float32 or bfloat16), copying only if needed."""
    arr = np.asarray(arr)
    if arr.dtype == dtype:
        return arr
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)  # f16 -> f32 (exact) -> bf16
    return arr.astype(dtype)
