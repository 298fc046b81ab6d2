"""LoRA adapters for the frozen LM, as their own pytree (Hu et al. 2021, "LoRA", section 4.1).

For a frozen weight ``W`` [in, out] (a ``kernel`` of ``params["layers"][l]``), the adapted
weight is ``W + (alpha / r) * A @ B`` with ``A`` [in, r] ~ N(0, 1/r)... as PEFT's default
(``A`` Kaiming-uniform, ``B`` zeros, so the adapted model starts exactly at the base model).
TALLRec (Bao et al. 2023) adapts the attention's query and value projections (``q_proj``,
``v_proj``) with r = 8, alpha = 16, dropout 0.05; those are the defaults here (no dropout:
the adapters are small and the step is deterministic).

The adapters never touch the base params: ``apply_lora(params, lora)`` returns a *new* params
dict whose adapted kernels are ``W + scale * A @ B`` (computed inside the caller's jit, so
gradients reach ``A`` and ``B`` and XLA fuses the low-rank update), every other leaf shared.
Works with both layer layouts of ``jaxrec.lm.model`` (a list of per-block dicts, or one dict
stacked along [L]).

    lora = init_lora(key, params, rank=8, targets=("q_proj", "v_proj"))
    adapted = apply_lora(params, lora, alpha=16.0)           # inside jit
    logits, _ = model.forward(adapted, input_ids=ids)
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from .errors import LMError

Params = dict
#: TALLRec's adapter: rank 8, alpha 16 on the attention's query and value projections.
DEFAULT_TARGETS = ("q_proj", "v_proj")


def _blocks(params: Params):
    layers = params.get("layers")
    if layers is None:
        raise LMError("lora: params have no 'layers'; expected a jaxrec.lm params dict")
    return layers


def _attn_kernel(block: dict, target: str):
    try:
        return block["self_attn"][target]["kernel"]
    except (KeyError, TypeError):
        raise LMError(f"lora: target {target!r}: the blocks have no self_attn/{target}/kernel; expected one of "
                      "q_proj, k_proj, v_proj, o_proj") from None


def init_lora(key: jax.Array, params: Params, rank: int = 8, targets: Sequence[str] = DEFAULT_TARGETS,
              dtype=jnp.float32) -> Params:
    """Fresh adapters for every block: ``{"layers": [{target: {"a": [in, r], "b": [r, out]}}]}`` (the
    params' layout: a list per block, or arrays stacked along [L]). ``a`` ~ U(-1/sqrt(in), 1/sqrt(in))
    (PEFT's ``kaiming_uniform_(a=sqrt(5))``), ``b`` = 0: the adapted model starts as the base model.
    LMError for rank < 1 or an unknown target."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LMError(f"lora: rank={rank!r}; expected an integer >= 1")
    layers = _blocks(params)
    stacked = not isinstance(layers, (list, tuple))

    def one(k, kernel):
        fan_in, fan_out = kernel.shape[-2], kernel.shape[-1]
        lead = kernel.shape[:-2]
        bound = 1.0 / math.sqrt(fan_in)
        return {"a": jax.random.uniform(k, (*lead, fan_in, rank), dtype, -bound, bound),
                "b": jnp.zeros((*lead, rank, fan_out), dtype)}

    keys = iter(jax.random.split(key, len(targets) * (1 if stacked else len(layers))))
    if stacked:
        return {"layers": {t: one(next(keys), _attn_kernel(layers, t)) for t in targets}}
    return {"layers": [{t: one(next(keys), _attn_kernel(block, t)) for t in targets} for block in layers]}


def apply_lora(params: Params, lora: Params | None, alpha: float = 16.0) -> Params:
    """``params`` with every adapted kernel ``W + (alpha / r) * a @ b`` (a new dict; ``params`` is
    not modified). ``lora=None`` returns ``params``. Pure; call it inside the jitted function."""
    if lora is None:
        return params
    layers = _blocks(params)

    def adapt(block: dict, ad: dict) -> dict:
        attn = dict(block["self_attn"])
        for target, ab in ad.items():
            kernel = _attn_kernel(block, target)
            rank = ab["a"].shape[-1]
            delta = jnp.matmul(ab["a"], ab["b"]) * (alpha / rank)
            attn[target] = {**block["self_attn"][target], "kernel": kernel + delta.astype(kernel.dtype)}
        return {**block, "self_attn": attn}

    if isinstance(layers, (list, tuple)):
        adapted = [adapt(b, a) for b, a in zip(layers, lora["layers"])]
    else:
        adapted = adapt(layers, lora["layers"])
    return {**params, "layers": adapted}


def lora_size(lora: Params | None) -> int:
    """Number of adapter parameters."""
    return 0 if lora is None else sum(int(x.size) for x in jax.tree.leaves(lora))


__all__ = ["init_lora", "apply_lora", "lora_size", "DEFAULT_TARGETS"]
