"""One registry per component kind: the single source of truth for every name a config may use.

A registry maps names to components (a backbone builder, an initializer, a propagation
kernel, an objective term, a graph augmentation, a metric, ...). Config validation asks the
registry (``Config(model="x")`` is valid exactly when ``MODELS`` knows ``"x"``), the code that
dispatches asks the same registry, and a user's own component becomes a first-class citizen
by registering it once::

    import jaxrec
    jaxrec.register_model("my_mf", build_my_mf)          # a builder: Config -> Model
    jaxrec.Config(model="my_mf")                          # now valid everywhere

Built-in components register themselves when the module that defines them is imported.
Each registry names that module (``loader``) and imports it the first time it is asked, so
``import jaxrec.config`` stays light and no list of names is written twice.

``Registry.get`` raises ``jaxrec.config.ConfigError`` naming the config field, the unknown
value and the known names.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

__all__ = [
    "Registry", "MODELS", "INITIALIZERS", "KERNELS", "OBJECTIVES", "AUGMENTATIONS", "METRICS",
    "INIT_SCALES", "INIT_NORMS", "SHARDINGS", "ROW_COMMS", "CONTRASTS", "SPLITS", "BATCH_KINDS", "CONTEXTS",
    "EVALUATIONS", "CONTRAST_UNIQUE", "all_registries",
]


class Registry(Generic[T]):
    """Names -> components of one kind.

    Args:
      kind: what the components are, for messages ("backbone", "propagation kernel").
      field: the ``Config`` field whose values this registry checks (None if no field).
      loader: module that registers the built-in components when imported (lazily, once).
    """

    def __init__(self, kind: str, field: str | None = None, loader: str | None = None):
        self.kind = kind
        self.field = field
        self.loader = loader
        self._entries: dict[str, T] = {}
        self._loaded = loader is None
        self._lock = threading.RLock()

    # -- registering -------------------------------------------------------------------
    def register(self, name: str, value: T | None = None, *, replace: bool = False) -> Any:
        """Add ``value`` under ``name``; without ``value``, a decorator that registers its target.

        Raises ``ValueError`` if ``name`` is taken and ``replace`` is False (registering the
        very same object again is allowed: importing a plugin twice is harmless).
        """
        if value is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, replace=replace)
                return obj

            return decorator
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"{self.kind} name {name!r}: expected a non-empty string without surrounding spaces")
        with self._lock:
            old = self._entries.get(name)
            if old is not None and old is not value and not replace:
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered; pass replace=True to override it"
                )
            self._entries[name] = value
        return value

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and interactive sessions)."""
        with self._lock:
            self._entries.pop(name, None)

    # -- looking up ----------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # set first: the loader's own imports may ask this registry
            try:
                importlib.import_module(self.loader)
            except BaseException:
                self._loaded = False
                raise

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (built-ins first)."""
        self._load()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def get(self, name: str, field: str | None = None) -> T:
        """The component ``name``; ``ConfigError`` naming ``field`` and the known names if unknown."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.error(name, field) from None

    def check(self, name: str, field: str | None = None) -> str:
        """``name`` if registered, else the ``ConfigError`` of ``get``."""
        self.get(name, field)
        return name

    def error(self, name: Any, field: str | None = None) -> Exception:
        from jaxrec.config import ConfigError  # noqa: PLC0415 (config imports this module)

        where = field or self.field
        head = f"{where}={name!r}" if where else f"{self.kind} {name!r}"
        return ConfigError(f"{head}: unknown {self.kind}; expected one of {', '.join(self.names())}")

    def __repr__(self) -> str:
        state = ", ".join(self._entries) if self._loaded else f"not loaded ({self.loader})"
        return f"Registry({self.kind!r}: {state})"


#: Backbones: name -> builder ``(Config) -> jaxrec.models.Model``.
MODELS: Registry[Callable[..., Any]] = Registry("backbone", "model", "jaxrec.models")
#: LLM initializers: name -> ``jaxrec.init.strategies.Initializer``.
INITIALIZERS: Registry[Any] = Registry("initializer", "init", "jaxrec.init.strategies")
#: Propagation kernels: name -> ``jaxrec.graph.kernels.Kernel``.
KERNELS: Registry[Any] = Registry("propagation kernel", "kernel", "jaxrec.graph.kernels")
#: Objective terms: name -> builder ``(Config) -> jaxrec.objectives.Term``.
OBJECTIVES: Registry[Callable[..., Any]] = Registry("objective", None, "jaxrec.objectives")
#: Graph augmentations (SGL views): name -> ``(graph, key, ratio, num_layers) -> view``.
AUGMENTATIONS: Registry[Callable[..., Any]] = Registry("augmentation", "ssl_aug", "jaxrec.graph.augment")
#: Ranking metrics: name -> per-user ``(hits [M, k] bool, num_truth [M]) -> [M] float``.
METRICS: Registry[Callable[..., Any]] = Registry("metric", "metrics", "jaxrec.eval.metrics")
#: How LLM tables are rescaled (``init_scale``).
INIT_SCALES: Registry[Any] = Registry("init scale", "init_scale", "jaxrec.init.scaling")
#: How LLM-initialized item rows are normalized (``init_norm``, TF-LLMER): name ->
#: ``jaxrec.init.normalize.Normalization``.
INIT_NORMS: Registry[Any] = Registry("item normalization", "init_norm", "jaxrec.init.normalize")
#: Where a run lives: name -> partitioner factory ``(Config, devices) -> Partitioner``.
SHARDINGS: Registry[Callable[..., Any]] = Registry("sharding strategy", "sharding", "jaxrec.train.partition")
#: Row-sharded propagation communication schemes.
ROW_COMMS: Registry[Any] = Registry("row communication", "row_comm", "jaxrec.graph.sharded")
#: SGL contrast forms (``ssl_negatives``): name -> ``(a_table, b_table, ids, tau, ...) -> loss``.
CONTRASTS: Registry[Callable[..., Any]] = Registry("contrast form", "ssl_negatives", "jaxrec.objectives.contrast")
#: How distinct ids of a batch are found for the by-id contrastive losses.
CONTRAST_UNIQUE: Registry[Any] = Registry("distinct-id mode", "contrast_unique", "jaxrec.objectives.contrast")
#: Data splits: name -> ``(Interactions, config, rng) -> (train, valid, test, report)``.
SPLITS: Registry[Callable[..., Any]] = Registry("split", "split", "jaxrec.data.split")
#: Training batch kinds: name -> factory ``(dataset, config, prepared) -> BatchSource``.
BATCH_KINDS: Registry[Callable[..., Any]] = Registry("batch kind", None, "jaxrec.train.batches")
#: Model contexts built from a dataset: name -> ``(dataset, config, stage) -> pytree``.
CONTEXTS: Registry[Callable[..., Any]] = Registry("model context", None, "jaxrec.models.contexts")
#: Evaluation protocols: name -> factory ``(dataset, config, partitioner) -> Evaluator``.
EVALUATIONS: Registry[Callable[..., Any]] = Registry("evaluation", "evaluation", "jaxrec.eval.protocols")


def all_registries() -> dict[str, Registry]:
    """Every registry of this module by its variable name (for docs and ``--help``)."""
    return {k: v for k, v in globals().items() if isinstance(v, Registry)}
