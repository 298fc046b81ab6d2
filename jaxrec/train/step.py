"""One optimisation step and one epoch of batches: the jitted core of training.

``train_step(model, optimizer)`` is the pure function
``step(params, opt_state, context, views, batch, key) -> (params, opt_state, loss, aux)``;
a partitioner jits it (``Partitioner.step``: inputs donated, outputs placed), and
``make_train_step`` does both. ``run_epoch`` feeds an epoch of batches through the step.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from jaxrec.models import Model, Params
from jaxrec.train.batches import Batch, epoch_batches  # noqa: F401  (re-exported)

StepFn = Callable[..., tuple[Params, Any, jax.Array, dict[str, jax.Array]]]


def train_step(model: Model, optimizer: optax.GradientTransformation) -> StepFn:
    """Pure ``(params, opt_state, context, views, batch, key) -> (params, opt_state, loss, aux)``."""

    def step(params, opt_state, context, views, batch, key):
        (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(params, context, views, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, aux

    return step


def make_train_step(model: Model, optimizer: optax.GradientTransformation, partitioner: Any = None) -> StepFn:
    """``train_step`` jitted by ``partitioner`` (default: one device). ``params`` and
    ``opt_state`` are donated: the caller must use the returned ones."""
    from jaxrec.train.partition import SingleDevice  # noqa: PLC0415

    return (partitioner or SingleDevice()).step(train_step(model, optimizer))


def run_epoch(
    step: StepFn,
    params: Params,
    opt_state: Any,
    context: Any,
    views: Any,
    batches: Iterable[Batch],
    key: jax.Array,
) -> tuple[Params, Any, float, dict[str, float], int]:
    """Every batch through ``step``; returns new state, the mean loss and aux values, and the
    number of steps taken."""
    losses = []
    auxes = []
    for batch in batches:
        key, sub = jax.random.split(key)
        params, opt_state, loss, aux = step(params, opt_state, context, views, batch, sub)
        losses.append(loss)
        auxes.append(aux)
    mean_loss = float(jnp.mean(jnp.stack(losses))) if losses else float("nan")
    mean_aux = {k: float(jnp.mean(jnp.stack([a[k] for a in auxes]))) for k in (auxes[0] if auxes else {})}
    return params, opt_state, mean_loss, mean_aux, len(losses)
