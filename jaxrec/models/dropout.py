"""Dropout whose masks come from a keyed counter hash: the same masks on one device or a mesh, cheap on CPU.

``jax.random.bernoulli`` draws every mask element through threefry2x32 (20 rounds per pair of
words) plus a float conversion: on this project's CPUs about 90 ns per element, so the five
dropout sites of a SASRec step (B x L x d and B x H x L x L elements each) cost about half of
the step. Here one threefry call per dropout site turns the site's key into two 32-bit words
``s0, s1``, and element ``n`` (row-major index over the whole, global array) draws

    ``u_n = h(h(n ^ s0) + s1)``,  ``h`` = the "lowbias32" integer hash (C. Wellons, hash
    prospector: ``x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``)

and is kept when ``u_n >= round(rate * 2**32)`` (probability ``1 - rate`` up to 2**-32), kept
elements scaled by ``1 / (1 - rate)`` (inverted dropout, as ``torch.nn.Dropout`` and
``nnx.Dropout``). About 12 integer operations per element instead of threefry's ~100: masks
for 2.24M elements (the sites of one SASRec step at batch 128) took 4.7 ms against 197 ms for
``jax.random.bernoulli`` on this project's 2-core CPU (jitted, median of 20; load ~10). The
counter is the global element index, so a batch split over a device mesh draws exactly the
masks of the one-device run.

``HashDropout`` has ``nnx.Dropout``'s call signature (``x, deterministic, rngs``) and takes one
key per call from the ``dropout`` stream of ``rngs``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["HashDropout", "hash_bits", "dropout_mask"]

_M1 = 0x7FEB352D
_M2 = 0x846CA68B


def _lowbias32(x: jax.Array) -> jax.Array:
    x = x ^ (x >> 16)
    x = x * jnp.uint32(_M1)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(_M2)
    return x ^ (x >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 ``shape``: ``h(h(n ^ s0) + s1)`` for the row-major element index ``n`` (module
    docstring); ``s0, s1`` = ``jax.random.bits(key, (2,))``. Arrays of up to 2**32 elements."""
    size = 1
    for n in shape:
        size *= int(n)
    if size > 2**32:
        raise ValueError(f"shape {shape}: {size} elements; hash_bits counts elements in 32 bits")
    seed = jax.random.bits(key, (2,), jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, size).reshape(shape) if shape else jnp.zeros((), jnp.uint32)
    return _lowbias32(_lowbias32(counter ^ seed[0]) + seed[1])


def dropout_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """bool ``shape``: True (kept) with probability ``1 - rate`` per element, from ``hash_bits``."""
    threshold = min(int(round(float(rate) * 2.0**32)), 2**32 - 1)
    return hash_bits(key, shape) >= jnp.uint32(threshold)


class HashDropout(nnx.Module):
    """Inverted dropout at ``rate`` with ``dropout_mask`` (a drop-in for ``nnx.Dropout``)."""

    def __init__(self, rate: float):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"rate: expected a dropout rate in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def __call__(self, x: jax.Array, deterministic: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if rngs is None:
            raise ValueError("HashDropout: rngs with a 'dropout' stream are required when deterministic=False")
        keep = dropout_mask(rngs.dropout(), self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))
