"""One registry per component kind: the single source of truth for every name a config may use.

A registry maps names to components (a backbone builder, an initializer, a propagation
kernel, an objective term, a graph augmentation, a metric, ...). Config validation asks the
registry (``Config(model="x")`` is valid exactly when ``MODELS`` knows ``"x"``), the code that
dispatches asks the same registry, and a user's own component becomes a first-class citizen
by registering it once::

    import jaxrec
    jaxrec.register_model("my_mf", build_my_mf)          # a builder: Config -> Model
    jaxrec.Config(model="my_mf")                          # now valid everywhere

Built-in components of the library register themselves when the module that defines them is
imported. Each registry names that module (``loader``) and imports it the first time it is
asked, so ``import jaxrec.config`` stays light and no list of names is written twice. A method
package (``jaxrec.methods.<paper>``) registers its components in one explicit call
(``jaxrec.methods.allmrec.register()``; ``jaxrec.methods.register_all()``), never on import.

``Registry.get`` raises ``jaxrec.config.ConfigError`` naming the config field, the unknown
value and the known names.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")

__all__ = [
    "Registry", "MODELS", "INITIALIZERS", "KERNELS", "OBJECTIVES", "AUGMENTATIONS", "METRICS",
    "INIT_SCALES", "INIT_NORMS", "SHARDINGS", "ROW_COMMS", "CONTRASTS", "SPLITS", "BATCH_KINDS", "CONTEXTS",
    "EVALUATIONS", "CONTRAST_UNIQUE", "DATA_PROTOCOLS", "TRACKERS", "TEXT_ENCODERS", "all_registries",
    "ModelSpec", "ContextKind", "BatchKind", "EvaluationProtocol", "TextEncoderKind",
]


# ----------------------------------------------------------------------------- component records
# What a registry holds for the kinds the training loop dispatches on: records with named
# fields, so the loop reads a field instead of probing a function for attributes.

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered backbone (``MODELS``).

    build: ``(Config) -> jaxrec.models.Model``; never reads files (shapes that depend on data
      or on other runs come from the context: ``Encoder.init_reads_context``).
    settings: the model's own frozen settings dataclass (a ``jaxrec.config.ModelSettings``
      subclass): its fields are the config keys only this model reads, with their defaults
      and their validation. ``Config(model=name).settings`` is an instance of it.
    defaults: protocol defaults for *shared* keys (e.g. SASRec's batch size and split), applied
      by ``Config.for_model``, ``build_config`` and ``jaxrec train --model`` beneath the user's.
    check: ``(Config) -> None``, checks of the model's settings against shared keys (raises
      ``ConfigError`` naming the key), run when a ``Config`` is built.
    """

    build: Callable[..., Any]
    settings: type
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check: Callable[..., None] | None = None


@dataclasses.dataclass(frozen=True)
class ContextKind:
    """A registered model context (``CONTEXTS``): what a model reads from the dataset besides the batch.

    build: ``(dataset, config) -> {"train": ctx, "valid": ctx, "test": ctx}`` (pytrees).
    fields: config keys the contexts depend on (the cache key of ``PreparedData.contexts``).
    check: ``(dataset, config) -> None``, raises ``DataError`` / ``ConfigError`` before any
      compute when the dataset cannot give this context (``jaxrec.train.check_run``).
    serve: ``(dataset, config) -> ctx`` of the ``"serve"`` stage (everything known), or None
      (``jaxrec.models.contexts.serve_context`` then serves from ``"test"``).
    """

    build: Callable[..., dict]
    fields: tuple[str, ...] = ()
    check: Callable[..., None] | None = None
    serve: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class BatchKind:
    """A registered batch kind (``BATCH_KINDS``).

    build: ``(prepared, config, model) -> jaxrec.train.batches.BatchSource``.
    check: ``(dataset, config) -> None``, raises ``DataError`` before any compute when the
      dataset cannot give such batches.
    """

    build: Callable[..., Any]
    check: Callable[..., None] | None = None


@dataclasses.dataclass(frozen=True)
class EvaluationProtocol:
    """A registered evaluation protocol (``EVALUATIONS``, config ``evaluation``).

    build: ``(prepared, config, partitioner) -> evaluator``; an evaluator maps
      ``(user_emb, item_emb)`` and a stage to ``{metric: float}``.
    check: ``(dataset, config) -> None`` (``DataError`` / ``ConfigError`` before any compute).
    check_config: ``(config) -> None``, ``ConfigError`` when ``valid_metric`` / ``topk`` /
      ``metrics`` do not fit the protocol (None: ``<metric>@<k>`` of ``metrics`` x ``topk``).
    per_user: the evaluator also takes ``per_user=True`` and then returns ``(metrics, per_user)``,
      ``per_user`` = ``{"user": int [M] dense ids, "<metric>": float [M], ...}`` over the same
      users the means average (``fit`` keeps the test stage's in ``RunResult.test_per_user``;
      paired significance tests read them).
    """

    build: Callable[..., Any]
    check: Callable[..., None] | None = None
    check_config: Callable[..., None] | None = None
    per_user: bool = False


@dataclasses.dataclass(frozen=True)
class TextEncoderKind:
    """A registered item-text encoder (``TEXT_ENCODERS``, config ``encoder``) beside the
    sentence-transformers ones ``jaxrec.init.load_encoder`` resolves itself (minilm, mpnet, folders).

    load: ``() -> model`` with ``.encode(texts, batch_size=, show_progress_bar=) -> float32 [n, N]``,
      ``.dim``, ``.name``, ``.source`` and ``batches_itself = True`` (e.g. an LM's pooled hidden
      states: ``jaxrec.text.lm_encoder``); called only on an embedding-cache miss.
    cache_id: the id its embeddings are cached under (changes whenever its outputs would).
    dim: N, the width of its vectors (known without loading it).
    """

    load: Callable[[], Any]
    cache_id: str
    dim: int
    description: str = ""


class Registry(Generic[T]):
    """Names -> components of one kind.

    Args:
      kind: what the components are, for messages ("backbone", "propagation kernel").
      field: the ``Config`` field whose values this registry checks (None if no field).
      loader: module that registers the built-in components when imported (lazily, once).
      method_kinds: method packages register components of this kind (error messages say how).
    """

    def __init__(self, kind: str, field: str | None = None, loader: str | None = None, method_kinds: bool = False):
        self.kind = kind
        self.method_kinds = method_kinds  # method packages register components of this kind
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
        hint = (" (a method package's components are known once it is registered: jaxrec.methods.register_all(), "
                "which the CLI and the experiments call)") if self.method_kinds else ""
        return ConfigError(f"{head}: unknown {self.kind}; expected one of {', '.join(self.names())}{hint}")

    def __repr__(self) -> str:
        state = ", ".join(self._entries) if self._loaded else f"not loaded ({self.loader})"
        return f"Registry({self.kind!r}: {state})"


#: Backbones: name -> ``ModelSpec`` (builder, settings class, protocol defaults).
MODELS: Registry[ModelSpec] = Registry("backbone", "model", "jaxrec.models", method_kinds=True)
#: LLM initializers: name -> ``jaxrec.init.strategies.Initializer``.
INITIALIZERS: Registry[Any] = Registry("initializer", "init", "jaxrec.init.strategies")
#: Propagation kernels: name -> ``jaxrec.graph.kernels.Kernel``.
KERNELS: Registry[Any] = Registry("propagation kernel", "kernel", "jaxrec.graph.kernels")
#: Objective terms: name -> builder ``(Config) -> jaxrec.objectives.Term``.
OBJECTIVES: Registry[Callable[..., Any]] = Registry("objective", None, "jaxrec.objectives", method_kinds=True)
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
#: Training batch kinds: name -> ``BatchKind``.
BATCH_KINDS: Registry[BatchKind] = Registry("batch kind", None, "jaxrec.train.batches", method_kinds=True)
#: Model contexts built from a dataset: name -> ``ContextKind``.
CONTEXTS: Registry[ContextKind] = Registry("model context", None, "jaxrec.models.contexts", method_kinds=True)
#: Evaluation protocols: name -> ``EvaluationProtocol``.
EVALUATIONS: Registry[EvaluationProtocol] = Registry("evaluation", "evaluation", "jaxrec.eval.protocols", method_kinds=True)
#: Preprocessing protocols of the Amazon review reader (``jaxrec.data.amazon.load_amazon``):
#: name -> ``jaxrec.data.amazon.AmazonProtocol``. Built in: "kcore" (LLMInit); a method package
#: registers its own (A-LLMRec's "allmrec", ``jaxrec.methods.allmrec.register``).
DATA_PROTOCOLS: Registry[Any] = Registry("Amazon preprocessing protocol", None, "jaxrec.data.amazon", method_kinds=True)

#: Experiment trackers (config ``track``): name -> ``jaxrec.train.tracking.TrackerKind``
#: (tensorboard, mlflow, wandb built in).
TRACKERS: Registry[Any] = Registry("tracker", "track", "jaxrec.train.tracking")
#: Item-text encoders beyond the sentence-transformers folders (config ``encoder``): name ->
#: ``TextEncoderKind``; built-ins: the SmolLM2 LM encoders (``jaxrec.text.lm_encoder``). No field: ``encoder``
#: also takes the names, folders and hub names ``jaxrec.init.load_encoder`` resolves itself.
TEXT_ENCODERS: Registry[TextEncoderKind] = Registry("text encoder", None, "jaxrec.text.lm_encoder")


def all_registries() -> dict[str, Registry]:
    """Every registry of this module by its variable name (for docs and ``--help``)."""
    return {k: v for k, v in globals().items() if isinstance(v, Registry)}
