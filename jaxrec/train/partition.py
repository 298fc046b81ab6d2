"""Partitioners: where a run's pieces live, wrapping whole init, step and embed functions.

The training loop never asks whether it is sharded. It hands its functions to a
``Partitioner`` (the pattern of RecML's ``Partitioner``) and uses what comes back:

- ``init(fn, *args)``: run ``fn`` (e.g. ``model.init``) with its outputs placed;
- ``place(tree)`` / ``place_context(ctx)`` / ``place_batch(batch)``: put parameters and
  optimizer state, the model's context (a graph), and host batches where they belong;
- ``step(fn)``: the jitted training step, inputs ``(params, opt_state)`` donated, outputs
  pinned to their placement;
- ``embed(fn)``: the jitted ``embed`` with its outputs placed like tables;
- ``rank(user_emb, item_emb, users, exclude, truth, ks, metrics, chunk)``: full-ranking
  evaluation (sharded over items on a mesh);
- ``gather(tree)``: host numpy copies (from every process); ``is_primary``: process 0.

Registered strategies (``config.sharding``, ``jaxrec.registry.SHARDINGS``):

- ``none``: one device (``SingleDevice``); jit with donation, nothing else;
- ``feature`` / ``row`` (``MeshPartitioner`` over ``make_mesh(config)``): batches split along
  ``config.data_axis`` (a batch whose size the axis does not divide is replicated; the
  numbers are the same); 2-d tables ``[rows, d]`` split over ``config.model_axis`` (along
  ``d`` for feature; along rows for row when the axis divides the row count, else along
  ``d``; other leaves replicated); the graph laid out by ``jaxrec.graph.sharded.shard_graph``
  (feature: replicated, no communication; row: nodes and incoming edges split); ranking
  with items split over ``model_axis`` (``jaxrec.eval.sharded``). Works across processes
  (``jaxrec.distributed.initialize`` first): host data is cut into the shards each process owns.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrec.config import Config, ConfigError
from jaxrec.graph import BipartiteGraph
from jaxrec.graph.sharded import put_global, shard_graph
from jaxrec.registry import SHARDINGS
from jaxrec.train.sharding import gather_tree, make_mesh, place

__all__ = ["Partitioner", "SingleDevice", "MeshPartitioner", "make_partitioner"]


class Partitioner:
    """The interface (and the single-device behaviour) every strategy provides."""

    strategy = "none"
    mesh: Mesh | None = None

    # -- placing -------------------------------------------------------------------------
    def place(self, tree: Any) -> Any:
        return tree

    def place_replicated(self, tree: Any) -> Any:
        """Small pytrees every device holds whole (RNG keys, scalars)."""
        return tree

    def place_context(self, context: Any) -> Any:
        return context

    def place_batch(self, batch: dict) -> dict:
        return batch

    # -- wrapping functions ----------------------------------------------------------------
    def init(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)

    def step(self, fn: Callable) -> Callable:
        """``fn(params, opt_state, *rest) -> (params, opt_state, *outs)`` jitted; the first two
        inputs are donated (the caller uses the returned ones)."""
        return jax.jit(fn, donate_argnums=(0, 1))

    def embed(self, fn: Callable) -> Callable:
        return jax.jit(fn)  # JAX caches the compilation per function

    def rank(self, user_emb, item_emb, users, exclude, truth, ks, metrics, chunk_size, per_user: bool = False):
        """Full-ranking metrics (``jaxrec.eval.evaluate``; with ``per_user``, also the per-user values)."""
        from jaxrec.eval import evaluate  # noqa: PLC0415

        return evaluate(user_emb, item_emb, users=users, exclude=exclude, truth=truth, ks=ks,
                        metrics=metrics, chunk_size=chunk_size, per_user=per_user)

    # -- processes -------------------------------------------------------------------------
    def gather(self, tree: Any) -> Any:
        return gather_tree(tree)

    @property
    def is_primary(self) -> bool:
        return jax.process_index() == 0


class SingleDevice(Partitioner):
    """One device: jit with donation; placing is a no-op."""


class MeshPartitioner(Partitioner):
    """Feature- or row-sharded training on ``mesh`` (module docstring)."""

    def __init__(self, strategy: str, mesh: Mesh, data_axis: str = "data", model_axis: str = "data",
                 row_comm: str = "ring"):
        if strategy not in ("feature", "row"):
            raise ConfigError(f"sharding={strategy!r}: a mesh partitioner is 'feature' or 'row'")
        for name, ax in (("data_axis", data_axis), ("model_axis", model_axis)):
            if ax not in mesh.axis_names:
                raise ConfigError(f"{name}={ax!r}: unknown mesh axis; the mesh has {list(mesh.axis_names)}")
        self.strategy, self.mesh = strategy, mesh
        self.data_axis, self.model_axis, self.row_comm = data_axis, model_axis, row_comm
        self._embeds: dict[Callable, Callable] = {}

    @property
    def model_size(self) -> int:
        return int(self.mesh.shape[self.model_axis])

    @property
    def data_size(self) -> int:
        return int(self.mesh.shape[self.data_axis])

    # -- specs -----------------------------------------------------------------------------
    def partition_spec(self, *names: str | None) -> P:
        """``PartitionSpec(*names)``, refusing axis names the mesh does not have."""
        known = tuple(self.mesh.axis_names)
        for n in names:
            for a in (n if isinstance(n, tuple) else (n,)):
                if a is not None and a not in known:
                    raise ConfigError(f"partition spec {names}: unknown mesh axis {a!r}; the mesh has {list(known)}")
        return P(*names)

    def spec(self, shape: Sequence[int]) -> P:
        """Partition spec of a parameter / optimizer-state leaf of ``shape``."""
        shape = tuple(shape)
        if len(shape) != 2:
            return P()
        n, (rows, dim) = self.model_size, shape
        if self.strategy == "row" and rows % n == 0:
            return P(self.model_axis, None)
        if dim % n == 0:
            return P(None, self.model_axis)
        return P()

    def sharding(self, shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(shape))

    def specs(self, tree: Any) -> Any:
        """Pytree of the ``PartitionSpec`` of every leaf (arrays or ShapeDtypeStructs)."""
        return jax.tree.map(lambda x: self.spec(np.shape(x)), tree)

    def shardings(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: self.sharding(np.shape(x)), tree)

    def abstract(self, tree: Any) -> Any:
        """``ShapeDtypeStruct``s of ``tree`` carrying this partitioner's shardings (restore targets)."""
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.sharding(np.shape(x))),
                            tree)

    # -- placing -------------------------------------------------------------------------
    def place(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: place(x, self.sharding(np.shape(x))), tree)

    def place_replicated(self, tree: Any) -> Any:
        rep = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: place(x, rep), tree)

    def constrain(self, tree: Any) -> Any:
        """Inside jit: pin parameters / optimizer state to their shardings."""
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.sharding(x.shape)), tree)

    def place_context(self, context: Any) -> Any:
        if isinstance(context, BipartiteGraph):
            return shard_graph(context, self.mesh, self.strategy, self.model_axis, self.row_comm)
        return self.place_replicated(context) if context is not None else None

    def place_batch(self, batch: dict) -> dict:
        """Split a batch's leaves along the data axis (replicate those whose size does not divide)."""
        def one(a):
            a = np.asarray(a)
            spec = P(self.data_axis) if a.ndim >= 1 and a.shape[0] % self.data_size == 0 else P()
            return put_global(a, NamedSharding(self.mesh, spec))
        return jax.tree.map(one, batch)

    # -- wrapping functions ----------------------------------------------------------------
    def init(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` computed straight into its shardings (no full copy on one device); the
        non-array arguments (sizes) are static."""
        is_array = [isinstance(a, (jax.Array, np.ndarray)) for a in args]
        arrays = [a for a, arr in zip(args, is_array) if arr]

        def with_static(*arrs):
            it = iter(arrs)
            return fn(*(next(it) if arr else a for a, arr in zip(args, is_array)))

        shapes = jax.eval_shape(with_static, *arrays)
        return jax.jit(with_static, out_shardings=self.shardings(shapes))(*self.place_replicated(arrays))

    def step(self, fn: Callable) -> Callable:
        def pinned(params, opt_state, *rest):
            params, opt_state, *outs = fn(params, opt_state, *rest)
            return (self.constrain(params), self.constrain(opt_state), *outs)

        return jax.jit(pinned, donate_argnums=(0, 1))

    def embed(self, fn: Callable) -> Callable:
        """``jit(fn)`` with its outputs split like tables of their shapes (without this, XLA may
        return [U, d] / [I, d] replicated when the device count does not divide the rows)."""
        def call(params, context):
            jitted = self._embeds.get(fn)
            if jitted is None:
                shapes = jax.eval_shape(fn, params, context)
                jitted = self._embeds[fn] = jax.jit(fn, out_shardings=self.shardings(shapes))
            return jitted(params, context)

        return call

    def rank(self, user_emb, item_emb, users, exclude, truth, ks, metrics, chunk_size, per_user: bool = False):
        from jaxrec.eval.sharded import evaluate_sharded  # noqa: PLC0415

        return evaluate_sharded(user_emb, item_emb, users, exclude, truth, ks=ks, metrics=metrics,
                                chunk_size=chunk_size, mesh=self.mesh, axis=self.model_axis, per_user=per_user)


def _mesh_partitioner(config: Config, devices: Sequence[jax.Device] | None = None) -> MeshPartitioner:
    mesh = make_mesh(config, devices=devices)
    part = MeshPartitioner(config.sharding, mesh, config.data_axis, config.model_axis, config.row_comm)
    n = part.model_size
    dim = getattr(config.settings, "embedding_size", None)  # a model with embedding tables of that width
    if config.sharding == "feature" and dim is not None and dim % n:
        raise ConfigError(
            f"embedding_size={dim}: feature sharding splits it over the {n} devices of mesh "
            f"axis {config.model_axis!r}; use a multiple of {n}, another mesh_shape, or sharding=row"
        )
    return part


SHARDINGS.register("none", lambda config, devices=None: SingleDevice())
SHARDINGS.register("feature", _mesh_partitioner)
SHARDINGS.register("row", _mesh_partitioner)


def make_partitioner(config: Config, devices: Sequence[jax.Device] | None = None) -> Partitioner:
    """The partitioner of ``config.sharding`` (checks mesh and sizes first)."""
    return SHARDINGS.get(config.sharding, "sharding")(config, devices)
