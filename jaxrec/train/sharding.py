"""Device meshes: ``make_mesh(config)``, and placing host data on a mesh across processes.

``make_mesh(config)`` lays every device (of every process) out as ``config.mesh_shape``
with axis names ``config.mesh_axes`` (``()`` = all devices on the first axis). How a run's
pieces are split over it is the partitioner's job (``jaxrec.train.partition``).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.config import Config, ConfigError
from jaxrec.graph.sharded import put_global

log = logging.getLogger("jaxrec.train")

__all__ = ["make_mesh", "P", "mesh_from_devices", "gather_tree", "place"]


def make_mesh(
    config: Config | None = None,
    *,
    shape: Sequence[int] | None = None,
    axes: Sequence[str] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh over ``devices`` (default: every device of every process).

    ``shape``/``axes`` default to ``config.mesh_shape``/``config.mesh_axes``; an empty
    shape puts every device on the first axis (others of size 1). Raises ``ConfigError``
    when the shape does not multiply to the number of devices.
    """
    config = config or Config()
    axes = tuple(config.mesh_axes if axes is None else axes)
    shape = tuple(config.mesh_shape if shape is None else shape)
    devices = list(jax.devices() if devices is None else devices)
    if not axes or len(set(axes)) != len(axes):
        raise ConfigError(f"mesh_axes={list(axes)!r}: expected distinct axis names")
    if not shape:
        shape = (len(devices),) + (1,) * (len(axes) - 1)
    if len(shape) != len(axes):
        raise ConfigError(f"mesh_shape={list(shape)}: {len(shape)} sizes for {len(axes)} mesh_axes={list(axes)}")
    if math.prod(shape) != len(devices):
        raise ConfigError(
            f"mesh_shape={list(shape)} holds {math.prod(shape)} devices, but there are {len(devices)} "
            f"({devices[0].platform if devices else '?'}, {jax.process_count()} process(es)); "
            f"use a shape whose product is {len(devices)}, or () for all devices on {axes[0]!r}"
        )
    _warn_cpu_thread_pool(devices)
    return mesh_from_devices(devices, shape, axes)


def _warn_cpu_thread_pool(devices: Sequence[jax.Device]) -> None:
    """XLA:CPU with more host devices than cores can deadlock in collectives: say how to avoid it."""
    local = [d for d in devices if d.process_index == jax.process_index()]
    if not local or local[0].platform != "cpu" or len(local) < 2:
        return
    if os.environ.get("PJRT_NPROC") or os.environ.get("NPROC"):
        return
    cores = os.cpu_count() or 1
    if len(local) >= cores:
        log.warning(
            "%d CPU devices on %d cores: XLA:CPU's thread pools then have about one thread per device, and "
            "a program waiting in a collective can starve another (seen as 'rendezvous ... may be stuck' and an "
            "abort). Set PJRT_NPROC=%d (or more) in the environment before JAX starts.",
            len(local), cores, 4 * len(local),
        )


def mesh_from_devices(devices: Sequence[jax.Device], shape: Sequence[int], axes: Sequence[str]) -> Mesh:
    """``Mesh`` of ``devices`` (in order) reshaped to ``shape``; automatic (GSPMD) axes."""
    arr = np.empty(len(devices), dtype=object)
    arr[:] = list(devices)
    return Mesh(arr.reshape(tuple(shape)), tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def place(x: Any, sharding: NamedSharding) -> jax.Array:
    """Put ``x`` (host or device array, or a PRNG key array) on the mesh with ``sharding``."""
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(put_global(jax.random.key_data(x), _key_data_sharding(sharding)), impl=impl)
    return put_global(x, sharding)


def _key_data_sharding(sharding: NamedSharding) -> NamedSharding:
    return NamedSharding(sharding.mesh, P(*sharding.spec))


def gather_tree(tree: Any) -> Any:
    """Host numpy copy of every leaf, gathered from all processes when needed."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)
    return jax.tree.map(one, tree)
