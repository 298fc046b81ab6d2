"""Training on a ``jax.sharding.Mesh``: the mesh, partition specs and a ``Placement``.

``make_mesh(config)`` lays every device (of every process) out as ``config.mesh_shape``
with axis names ``config.mesh_axes`` (``()`` = all devices on the first axis);
``make_placement(config)`` returns the ``Placement`` that ``fit`` uses to put each piece
of a run on that mesh:

- batches: split along ``config.data_axis`` (a batch whose size the axis does not divide
  -- the last of an epoch -- is replicated; the numbers are the same);
- parameters and optimizer state, by leaf shape (``Placement.spec``): 2-d tables
  ``[rows, d]`` are split over ``config.model_axis``: along ``d`` for ``"feature"``;
  along rows for ``"row"`` when the axis size divides the row count, else along ``d``
  (arrays cannot be split unevenly; either way no device holds a whole table); other
  leaves are replicated;
- the graph: ``jaxrec.graph.sharded.shard_graph`` (feature: replicated graph, no
  communication in propagation; row: nodes and incoming edges split, blocks exchanged);
- evaluation: ``jaxrec.eval.sharded.evaluate_sharded`` (items split over
  ``model_axis``, merged top-k).

``Placement()`` (``sharding = "none"``) is a no-op everywhere: one device, as before.
Everything works across processes (``jaxrec.distributed.initialize`` first): host data
is cut into the shards each process owns.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.config import Config, ConfigError
from jaxrec.graph import BipartiteGraph
from jaxrec.graph.sharded import put_global, shard_graph

log = logging.getLogger("jaxrec.train")

__all__ = ["make_mesh", "make_placement", "Placement", "P", "mesh_from_devices", "gather_tree"]


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


def make_placement(config: Config, devices: Sequence[jax.Device] | None = None) -> "Placement":
    """The ``Placement`` of ``config.sharding`` on ``make_mesh(config)``; checks sizes first."""
    if config.sharding == "none":
        return Placement()
    mesh = make_mesh(config, devices=devices)
    placement = Placement(
        strategy=config.sharding, mesh=mesh, data_axis=config.data_axis, model_axis=config.model_axis,
        row_comm=config.row_comm,
    )
    n = placement.model_size
    if config.sharding == "feature" and config.embedding_size % n:
        raise ConfigError(
            f"embedding_size={config.embedding_size}: feature sharding splits it over the {n} devices of mesh "
            f"axis {config.model_axis!r}; use a multiple of {n}, another mesh_shape, or sharding=row"
        )
    return placement


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where every piece of a run lives on the mesh; ``Placement()`` is the no-op (one device)."""

    strategy: str = "none"  # none | feature | row
    mesh: Mesh | None = None
    data_axis: str = "data"
    model_axis: str = "data"
    row_comm: str = "ring"
    # jitted embed functions with sharded outputs, one per embed function (``embed``)
    _embed_jits: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.strategy not in ("none", "feature", "row"):
            raise ConfigError(f"sharding={self.strategy!r}: expected one of none, feature, row")
        if self.strategy != "none":
            if self.mesh is None:
                raise ConfigError(f"sharding={self.strategy!r} needs a mesh")
            for name in ("data_axis", "model_axis"):
                ax = getattr(self, name)
                if ax not in self.mesh.axis_names:
                    raise ConfigError(f"{name}={ax!r}: unknown mesh axis; the mesh has {list(self.mesh.axis_names)}")

    # -- sizes and specs -----------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.strategy != "none"

    @property
    def model_size(self) -> int:
        return int(self.mesh.shape[self.model_axis]) if self.active else 1

    @property
    def data_size(self) -> int:
        return int(self.mesh.shape[self.data_axis]) if self.active else 1

    def partition_spec(self, *names: str | None) -> P:
        """``PartitionSpec(*names)``, refusing axis names the mesh does not have."""
        known = tuple(self.mesh.axis_names) if self.active else ()
        for n in names:
            for a in (n if isinstance(n, tuple) else (n,)):
                if a is not None and a not in known:
                    raise ConfigError(f"partition spec {names}: unknown mesh axis {a!r}; the mesh has {list(known)}")
        return P(*names)

    def spec(self, shape: Sequence[int]) -> P:
        """Partition spec of a parameter / optimizer-state leaf of ``shape``."""
        shape = tuple(shape)
        if not self.active or len(shape) != 2:
            return P()
        n, (rows, dim) = self.model_size, shape
        if self.strategy == "row" and rows % n == 0:
            return P(self.model_axis, None)
        if dim % n == 0:
            return P(None, self.model_axis)
        return P()

    def sharding(self, shape: Sequence[int]) -> NamedSharding | None:
        return NamedSharding(self.mesh, self.spec(shape)) if self.active else None

    def specs(self, tree: Any) -> Any:
        """Pytree of the ``PartitionSpec`` of every leaf (arrays or ShapeDtypeStructs)."""
        return jax.tree.map(lambda x: self.spec(np.shape(x)), tree)

    def shardings(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: self.sharding(np.shape(x)), tree)

    # -- placing -------------------------------------------------------------------------
    def place_params(self, tree: Any) -> Any:
        """Put parameters / optimizer state (any pytree of arrays) on the mesh by ``spec``."""
        if not self.active:
            return tree
        return jax.tree.map(lambda x: _place(x, self.sharding(np.shape(x))), tree)

    def place_replicated(self, tree: Any) -> Any:
        """Put a small pytree (RNG keys, scalars) on every device of the mesh."""
        if not self.active:
            return tree
        rep = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: _place(x, rep), tree)

    def constrain(self, tree: Any) -> Any:
        """Inside jit: pin parameters / optimizer state to their shardings (no-op when inactive)."""
        if not self.active:
            return tree
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.sharding(x.shape)), tree)

    def abstract(self, tree: Any) -> Any:
        """``ShapeDtypeStruct``s of ``tree`` carrying this placement's shardings (restore targets)."""
        def one(x):
            shape, dtype = np.shape(x), x.dtype
            if self.active:
                return jax.ShapeDtypeStruct(shape, dtype, sharding=self.sharding(shape))
            sh = x.sharding if isinstance(x, jax.Array) else None
            return jax.ShapeDtypeStruct(shape, dtype, sharding=sh)
        return jax.tree.map(one, tree)

    def place_batch(self, batch: dict) -> dict:
        """Split a batch (dict of [B] arrays) along the data axis (replicate when B does not divide)."""
        if not self.active:
            return batch
        out = {}
        for name, a in batch.items():
            a = np.asarray(a)
            spec = P(self.data_axis) if a.ndim >= 1 and a.shape[0] % self.data_size == 0 else P()
            out[name] = put_global(a, NamedSharding(self.mesh, spec))
        return out

    def place_graph(self, graph: BipartiteGraph) -> BipartiteGraph:
        if not self.active:
            return graph
        return shard_graph(graph, self.mesh, self.strategy, self.model_axis, self.row_comm)

    def init_params(self, init: Callable, key: jax.Array, num_users: int, num_items: int) -> Any:
        """``init(key, num_users, num_items)`` computed straight into its shardings (no full copy)."""
        if not self.active:
            return init(key, num_users, num_items)
        def init_at(k):
            return init(k, num_users, num_items)

        shapes = jax.eval_shape(init_at, key)
        fn = jax.jit(init_at, out_shardings=self.shardings(shapes))
        return fn(self.place_replicated(key))

    # -- evaluation ------------------------------------------------------------------------
    def embed(self, embed_fn: Callable, params: Any, graph: Any) -> Any:
        """``jit(embed_fn)(params, graph)`` with its outputs split like parameters of their shapes.

        Without this, XLA may return the [U, d] / [I, d] embeddings replicated (every device
        holding the whole table) when the device count does not divide the rows.
        """
        if not self.active:
            return jax.jit(embed_fn)(params, graph)  # JAX caches the compilation per function
        fn = self._embed_jits.get(embed_fn)
        if fn is None:
            shapes = jax.eval_shape(embed_fn, params, graph)
            fn = self._embed_jits[embed_fn] = jax.jit(embed_fn, out_shardings=self.shardings(shapes))
        return fn(params, graph)

    def evaluate(self, user_emb, item_emb, users, exclude, truth, ks, metrics, chunk_size) -> dict[str, float]:
        if not self.active:
            from jaxrec.eval import evaluate  # noqa: PLC0415

            return evaluate(user_emb, item_emb, users=users, exclude=exclude, truth=truth, ks=ks,
                            metrics=metrics, chunk_size=chunk_size)
        from jaxrec.eval.sharded import evaluate_sharded  # noqa: PLC0415

        return evaluate_sharded(user_emb, item_emb, users, exclude, truth, ks=ks, metrics=metrics,
                                chunk_size=chunk_size, mesh=self.mesh, axis=self.model_axis)


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
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
