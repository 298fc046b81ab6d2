"""Curvature of a training loss at init: extreme Hessian eigenvalues from Hessian-vector products.

TF-LLMER (DESIGN 7) argues that LLM-initialized tables with a large norm spread make the
optimization ill-conditioned; the paper's body is not available, so the curvature at init
is measured: the largest Hessian eigenvalue of the loss over a fixed batch.

``hessian_top_eigenvalue(loss_fn, params, *loss_args, key=..., method, which)``:
``loss_fn(params, *loss_args) -> scalar`` for any pytree ``params`` (float leaves); the
batch and graph go in ``loss_args`` (jit arguments, never closed over). The Hessian is
never formed: H v = d/dt grad(params + t v) at t = 0, forward-over-reverse
(``jax.jvp`` of ``jax.grad``; Pearlmutter 1994), jitted once per call.

- ``method="lanczos"`` (default): Lanczos with full re-orthogonalization (Golub and Van
  Loan, "Matrix Computations", 4th ed., alg. 10.1.1 and section 10.3.1); both "LA" and
  "LM" come from the same Ritz values, and the smallest Ritz value (an upper bound of the
  smallest eigenvalue, usually converging more slowly) is reported too. Stops when the Ritz residual
  bound |beta_j s_j| <= ``tol`` |theta| (section 10.1.4). Memory: ``max_iters`` + 1
  vectors of the parameter size.
- ``method="power"``: power iteration, Rayleigh quotient; two vectors of memory. It
  converges to the largest-magnitude eigenvalue; for ``which="LA"`` with a negative
  dominant eigenvalue mu it runs again on H - mu I (all eigenvalues >= 0) and adds mu back.

``which``: ``"LA"`` (default) the largest algebraic eigenvalue (the most positive
curvature, the "sharpness" that bounds stable step sizes: 2 / lr for gradient descent);
``"LM"`` the eigenvalue of largest magnitude (negative when negative curvature dominates).
The result carries both ends when the method yields them (Lanczos), the eigenvector as a
pytree shaped like ``params``, the number of Hessian-vector products, whether the
relative residual ||H v - theta v|| / |theta| reached ``tol``, and its value.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

METHODS = ("lanczos", "power")
WHICH = ("LA", "LM")


@dataclasses.dataclass(frozen=True)
class HessianEigen:
    """Estimate of an extreme Hessian eigenvalue and how it was reached (printable)."""

    eigenvalue: float  # per ``which``
    which: str  # "LA" (largest algebraic) | "LM" (largest magnitude)
    method: str
    largest: float | None  # largest algebraic eigenvalue estimate (None if the method did not give it)
    smallest: float | None  # smallest Ritz value (Lanczos only): >= the smallest eigenvalue, converged
    #                         only if the iteration ran until it did (the stopping test watches ``which``)
    converged: bool
    residual: float  # ||H v - eigenvalue v|| / |eigenvalue| (v unit), measured with one more HVP
    hvps: int  # Hessian-vector products used
    history: tuple[float, ...]  # the estimate after each iteration
    vector: Any = dataclasses.field(repr=False, default=None)  # eigenvector, pytree like params

    def __str__(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        s = (f"Hessian {self.which} eigenvalue {self.eigenvalue:.6g} ({self.method}, {self.hvps} HVPs, "
             f"{state}, relative residual {self.residual:.2g})")
        if self.smallest is not None:
            s += f"; spectrum ends [{self.smallest:.6g}, {self.largest:.6g}]"
        return s


def hvp(loss_fn: Callable[..., jax.Array]) -> Callable:
    """Jitted ``(params, v, *loss_args) -> H v`` (pytree like ``params``), forward-over-reverse."""
    grad = jax.grad(loss_fn)

    @jax.jit
    def fn(params, v, *loss_args):
        return jax.jvp(lambda p: grad(p, *loss_args), (params,), (v,))[1]

    return fn


@partial(jax.jit, static_argnames=("loss_fn", "has_aux"))
def _flat_hvp(loss_fn, params, v, loss_args, has_aux: bool):
    """H v for a flat ``v`` -> flat; compiled once per ``loss_fn`` and argument shapes."""
    flat, unravel = ravel_pytree(params)
    tangent = unravel(v.astype(flat.dtype))
    grad = jax.grad(loss_fn, has_aux=has_aux)
    out = jax.jvp(lambda p: grad(p, *loss_args)[0] if has_aux else grad(p, *loss_args), (params,), (tangent,))[1]
    return ravel_pytree(out)[0]


def _check(params, method: str, which: str, max_iters, tol: float, key) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    if which not in WHICH:
        raise ValueError(f"which={which!r}: expected 'LA' (largest algebraic) or 'LM' (largest magnitude)")
    if max_iters is not None and (int(max_iters) != max_iters or max_iters < 1):
        raise ValueError(f"max_iters={max_iters!r}: expected a positive integer")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r}: expected a number > 0")
    if key is None:
        raise ValueError("key: a jax.random key is required for the start vector")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or any(not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) for x in leaves):
        raise ValueError("params: expected a non-empty pytree of floating-point arrays")


def _unit(v):
    n = jnp.linalg.norm(v)
    return v / n


def _measure(apply, v, theta: float) -> float:
    """Relative residual ||H v - theta v|| / |theta| of a unit vector ``v``."""
    r = float(jnp.linalg.norm(apply(v) - theta * v))
    return r / abs(theta) if theta != 0 else (0.0 if r == 0 else math.inf)


def _power(apply, v0, max_iters: int, tol: float, shift: float = 0.0):
    """Power iteration on H - shift I -> (theta of H - shift I, v, iterations, converged, history)."""
    v = _unit(v0)
    history: list[float] = []
    theta, converged, it = 0.0, False, 0
    for it in range(1, max_iters + 1):
        w = apply(v) - shift * v
        theta = float(jnp.vdot(v, w))
        r = float(jnp.linalg.norm(w - theta * v))
        history.append(theta + shift)
        if r <= tol * abs(theta) or r == 0:
            converged = True
            break
        v = _unit(w)
    return theta, v, it, converged, history


@jax.jit
def _lanczos_step(basis, j, w, q, q_prev, beta_prev):
    """One Lanczos step from w = H q: alpha, the next unit vector (stored in row j + 1), beta."""
    alpha = jnp.vdot(q, w)
    w = w - alpha * q - beta_prev * q_prev
    for _ in range(2):  # full re-orthogonalization, twice (rows > j are zero)
        w = w - basis.T @ (basis @ w)
    beta = jnp.linalg.norm(w)
    q_next = jnp.where(beta > 0, w / jnp.where(beta > 0, beta, 1.0), 0.0)
    return basis.at[j + 1].set(q_next), alpha, beta, q_next


def _lanczos(apply, v0, max_iters: int, tol: float, which: str):
    p = v0.shape[0]
    m = min(max_iters, p)
    basis = jnp.zeros((m + 1, p), v0.dtype)
    q = _unit(v0)
    basis = basis.at[0].set(q)

    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    q_prev = jnp.zeros_like(q)
    beta = 0.0
    converged = False
    vals = vecs = None
    pick = 0
    for j in range(m):
        basis, alpha, beta_new, q_next = _lanczos_step(basis, j, apply(q), q, q_prev, jnp.asarray(beta, v0.dtype))
        alphas.append(float(alpha))
        beta = float(beta_new)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        vals, vecs = np.linalg.eigh(t)
        pick = int(np.argmax(vals)) if which == "LA" else int(np.argmax(np.abs(vals)))
        history.append(float(vals[pick]))
        bound = abs(beta * vecs[-1, pick])
        scale = np.abs(vals).max()
        if bound <= tol * abs(vals[pick]) or beta <= 1e-12 * max(scale, 1e-30):
            converged = True
            break
        betas.append(beta)
        q_prev, q = q, q_next
    k = len(alphas)
    v = basis[:k].T @ jnp.asarray(vecs[:, pick], v0.dtype)
    return vals, _unit(v), k, converged, history, pick


def hessian_top_eigenvalue(
    loss_fn: Callable[..., jax.Array],
    params,
    *loss_args,
    key: jax.Array,
    method: str = "lanczos",
    which: str = "LA",
    max_iters: int | None = None,
    tol: float = 1e-4,
    has_aux: bool = False,
) -> HessianEigen:
    """Largest Hessian eigenvalue (``which``="LA") or largest in magnitude ("LM") of
    ``loss_fn(params, *loss_args)`` at ``params``; see the module docstring.

    ``key``: start vector ~ N(0, I). ``max_iters``: HVP budget of the iteration (default
    100 for Lanczos, 1000 for power, each ``which="LA"`` power stage). ``tol``: relative
    residual target. Computes in the params' dtype (float32 usually), so ``tol`` much
    below 1e-5 may not be reached. ``has_aux``: ``loss_fn`` returns (scalar, aux), as
    ``Model.loss`` does. ``loss_fn`` is a static jit argument: pass the same function
    object again to reuse the compiled HVP. Raises ValueError naming the argument for bad
    ``method``, ``which``, ``max_iters``, ``tol``, ``key`` or non-float ``params``.
    """
    _check(params, method, which, max_iters, tol, key)
    flat, unravel = ravel_pytree(params)
    apply = (lambda v: _flat_hvp(loss_fn, params, v, loss_args, bool(has_aux)))
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    largest = smallest = None
    if method == "lanczos":
        vals, v, hvps, converged, history, pick = _lanczos(apply, v0, int(max_iters or 100), tol, which)
        theta = float(vals[pick])
        largest, smallest = float(vals.max()), float(vals.min())
    else:
        iters = int(max_iters or 1000)
        theta, v, hvps, converged, history = _power(apply, v0, iters, tol)
        if which == "LA":
            if theta < 0:  # negative curvature dominates: the largest algebraic is found on H - theta I
                shift = theta
                t2, v, n2, converged, h2 = _power(apply, v0, iters, tol, shift=shift)
                theta, hvps, history = t2 + shift, hvps + n2, history + h2
            largest = theta
    residual = _measure(apply, v, theta)
    return HessianEigen(theta, which, method, largest, smallest, bool(converged), residual, int(hvps) + 1,
                        tuple(history), unravel(v))
