"""One optimisation step and one epoch of batches: the jitted core of training.

``make_train_step(model, optimizer)`` returns a pure jitted function
``step(params, opt_state, graph, views, batch, key) -> (params, opt_state, loss, aux)``;
``epoch_batches`` draws an epoch's shuffled batches (with negatives) from a numpy
Generator, vectorized; ``run_epoch`` feeds them through the step.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec.data import PositiveIndex, sample_negatives
from jaxrec.graph import BipartiteGraph
from jaxrec.models import Model, Params

Batch = dict[str, np.ndarray]
StepFn = Callable[..., tuple[Params, Any, jax.Array, dict[str, jax.Array]]]


def make_train_step(model: Model, optimizer: optax.GradientTransformation, placement: Any = None) -> StepFn:
    """Jitted ``(params, opt_state, graph, views, batch, key) -> (params, opt_state, loss, aux)``.

    ``params`` and ``opt_state`` are donated: the caller must use the returned ones.
    ``placement`` (a ``jaxrec.train.sharding.Placement``, optional) pins the new params and
    optimizer state to their shardings, so every step sees the same layout.
    """

    def step(params, opt_state, graph, views, batch, key):
        (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(params, graph, views, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if placement is not None:
            params, opt_state = placement.constrain(params), placement.constrain(opt_state)
        return params, opt_state, loss, aux

    return jax.jit(step, donate_argnums=(0, 1))


def epoch_batches(
    rng: np.random.Generator,
    user: np.ndarray,
    item: np.ndarray,
    batch_size: int,
    positives: PositiveIndex | None,
) -> Iterator[Batch]:
    """Shuffled batches of training pairs (int32 [<=B] ``user``, ``pos``, and ``neg``).

    ``positives`` given: one uniform negative per pair that is never a training positive of
    the user, drawn for the whole epoch at once. ``None``: no negatives (SGCL).
    """
    order = rng.permutation(len(user))
    users = user[order].astype(np.int32)
    pos = item[order].astype(np.int32)
    neg = sample_negatives(rng, positives, users) if positives is not None else None
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        batch = {"user": users[sl], "pos": pos[sl]}
        if neg is not None:
            batch["neg"] = neg[sl]
        yield batch


def run_epoch(
    step: StepFn,
    params: Params,
    opt_state: Any,
    graph: BipartiteGraph,
    views: Any,
    batches: Iterator[Batch],
    key: jax.Array,
) -> tuple[Params, Any, float, dict[str, float]]:
    """Run every batch through ``step``; returns new state and the mean loss and aux values."""
    losses = []
    auxes = []
    for batch in batches:
        key, sub = jax.random.split(key)
        params, opt_state, loss, aux = step(params, opt_state, graph, views, batch, sub)
        losses.append(loss)
        auxes.append(aux)
    mean_loss = float(jnp.mean(jnp.stack(losses))) if losses else float("nan")
    mean_aux = {k: float(jnp.mean(jnp.stack([a[k] for a in auxes]))) for k in (auxes[0] if auxes else {})}
    return params, opt_state, mean_loss, mean_aux
