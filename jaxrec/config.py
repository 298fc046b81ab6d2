"""Run configuration: the shared part of a run, plus the chosen model's own settings.

A run is (dataset, split, initializer, backbone, loss, optimizer, seed). ``Config`` holds what
every run has (data, split, training, evaluation, LLM initialization, checkpoints, sharding)
and ``config.settings``: the frozen settings dataclass the chosen model registered
(``jaxrec.registry.ModelSpec.settings``, a ``ModelSettings`` subclass: LightGCN's
``embedding_size`` / ``num_layers`` / ``kernel``, SASRec's ``max_seq_len`` / ``num_heads``, ...).
Each settings class declares its fields, their defaults and the validation of its own fields;
the shared validation here knows no model by name.

Keys are flat everywhere a user writes them: ``Config("sasrec", max_seq_len=100)``,
``--set max_seq_len=100``, ``max_seq_len = 100`` in a TOML/JSON file, ``config.replace(...)``.
Each key goes to the shared part or to the model's settings; a key neither has is a
``ConfigError`` naming the model whose settings lack it (and the models that have it). Reading
is flat too: ``config.max_seq_len`` is ``config.settings.max_seq_len`` (``AttributeError``
naming the model when its settings have no such field).

``Config.for_model(name)`` adds the protocol defaults the model registered for shared keys
(e.g. SASRec's batch size and split); ``to_dict()`` is flat (shared keys, then the model's) and
``from_dict`` reads it back, also the flat dicts of jaxrec 0.1 runs, whose keys for other
models sit at their old defaults (``LEGACY_DEFAULTS``; such keys are dropped, any other value
is refused).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from jaxrec import registry as R
from jaxrec.errors import JaxrecError


class ConfigError(JaxrecError, ValueError):
    """A configuration value or key is invalid; the message names the field."""


# ----------------------------------------------------------------------------- model settings
@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Base of a model's own settings: a frozen dataclass of typed fields with defaults.

    A subclass declares its fields (the config keys only that model reads) and overrides
    ``validate`` for checks of its own fields (raise ``ConfigError`` naming the field; call
    ``super().validate()``). Checks against shared keys (e.g. "batch_size >= 2 for in-batch
    contrast") go in the model's registered ``check`` instead. Values are normalized as
    ``Config``'s are (paths -> str, sequences -> tuples, ints in float fields -> float) and
    type-checked before ``validate`` runs.

    ``reads_item_text`` (a class attribute, default False): the model reads item text embeddings
    through the shared ``embeddings`` / ``encoder`` keys even without an LLM ``init`` (A-LLMRec's
    stage 1); ``jaxrec train`` then resolves a default text source for it as for an LLM init.
    """

    reads_item_text: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _normalize(self)
        _check_types(self)
        self.validate()

    def validate(self) -> None:
        """``ConfigError`` naming a field whose value this model cannot use (none here)."""

    def expect(self, field: str, ok: bool, expected: str) -> None:
        """``ConfigError("<field>=<value>: expected <expected>")`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"{field}={getattr(self, field)!r}: expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def settings_fields(cls: type) -> tuple[str, ...]:
    """Field names of a settings class (``ModelSettings`` subclass)."""
    return tuple(f.name for f in dataclasses.fields(cls))


# ----------------------------------------------------------------------------- the run config
@dataclasses.dataclass(frozen=True, init=False)
class Config:
    # --- run ------------------------------------------------------------------
    model: str = "lightgcn"  # a registered backbone (jaxrec.registry.MODELS); its settings are `settings`
    dataset: str = "ml-100k"
    seed: int = 2020
    plugins: tuple[str, ...] = ()  # modules (or .py files) imported first: they register components
    # --- data -----------------------------------------------------------------
    split: str = "loo_random"  # loo_random | loo_time | ratio
    split_ratios: tuple[float, ...] = (0.8, 0.1, 0.1)
    rating_threshold: float | None = None  # keep rating >= threshold (Amazon: 4)
    dedup: bool = False  # drop repeated (user, item) pairs, keeping the earliest
    kcore: int = 0  # iterative k-core on users and items (Amazon: 5); 0 = off
    data_dirs: tuple[str, ...] = ()  # extra folders searched for datasets
    missing: str = "error"  # empty id / missing or non-finite rating or timestamp: error | drop (reported)
    data_cache: bool = True  # cache parsed datasets under $JAXREC_CACHE/datasets
    # --- optimisation ---------------------------------------------------------
    epochs: int = 300
    batch_size: int = 2048
    learning_rate: float = 1e-3
    adam_b1: float = 0.9  # Adam's beta1 / beta2 (make_optimizer; SASRec: 0.98)
    adam_b2: float = 0.999
    # --- evaluation / selection -----------------------------------------------
    evaluation: str = "full"  # evaluation protocol (jaxrec.registry.EVALUATIONS)
    topk: tuple[int, ...] = (10, 20, 50)
    metrics: tuple[str, ...] = ("recall", "ndcg", "hit", "mrr", "precision")
    valid_metric: str = "ndcg@10"
    eval_every: int = 1
    patience: int = 10  # evaluations without improvement before stopping
    min_epochs: int = 0  # no early stop before this many epochs (0: RecBole's rule as is)
    time_budget_minutes: float = 0.0  # > 0: stop after an epoch when another (of the mean length so far) would overrun
    eval_chunk: int = 1024  # users per full-ranking chunk
    # Candidate evaluation (evaluation="candidates", A-LLMRec's protocol): the held-out item + this
    # many never-interacted items, drawn once per (split, stage, seed) and stored in candidates_dir
    # (None: $JAXREC_CACHE/candidates); full ranking at full_view_topk reported beside as full_*.
    candidate_negatives: int = 19
    candidates_dir: str | None = None
    full_view_topk: tuple[int, ...] = (10, 20)  # () = no full-ranking view
    # --- item text and LLM initialization (LLMInit, TF-LLMER: any backbone with tables) ----
    init: str = "none"  # none | random | uniform | variance | full | pca | recpca (jaxrec.registry.INITIALIZERS)
    encoder: str | None = None  # item text encoder name or path (minilm, mpnet, folder)
    embeddings: str | None = None  # precomputed item text embeddings .npy (item id list beside it)
    variance_fraction: float = 0.2  # share of most popular items used for variance
    init_scale: str = "none"  # none | match_random | standardize | minmax (LLMInit code)
    random_with_replacement: bool = False
    init_norm: str = "none"  # none | unit | typical: item rows after selection (jaxrec.registry.INIT_NORMS)
    recpca_lambda: float = 0.5  # Rec-PCA's Laplacian penalty (init recpca); 0 = plain PCA
    # --- checkpoints and tracking -----------------------------------------------
    checkpoint_every: int = 1  # epochs between "latest" checkpoints
    # Experiment trackers (jaxrec.registry.TRACKERS: tensorboard | mlflow | wandb); () = none.
    # How a run is watched, not what it computes: not part of a run folder's identity.
    track: tuple[str, ...] = ("tensorboard",)
    # --- sharding ---------------------------------------------------------------
    # See jaxrec.train.partition. "none": one device. "feature": embedding tables split
    # along the embedding dimension, graph replicated (no communication in propagation).
    # "row": nodes and their incoming edges split across devices.
    sharding: str = "none"  # none | feature | row (jaxrec.registry.SHARDINGS)
    mesh_shape: tuple[int, ...] = ()  # () = every device on the first axis of mesh_axes
    mesh_axes: tuple[str, ...] = ("data",)
    data_axis: str = "data"  # mesh axis the batches are split along
    model_axis: str = "data"  # mesh axis the tables (feature) or nodes/edges (row) are split along
    row_comm: str = "ring"  # row strategy: ring (bounded memory) | direct (only needed blocks) | allgather
    coordinator_address: str | None = None  # multi-host: host:port of process 0
    num_processes: int = 1
    process_id: int = 0
    # --- the model's own settings (jaxrec.registry.ModelSpec.settings) -----------
    settings: ModelSettings | None = None

    # ------------------------------------------------------------------------
    def __init__(self, model: str = "lightgcn", *, settings: ModelSettings | None = None, **keys: Any) -> None:
        """``Config(model, **keys)``: each key is shared or a setting of ``model`` (module docstring)."""
        shared = {k: keys.pop(k) for k in list(keys) if k in _SHARED}
        for f in _shared_fields():
            object.__setattr__(self, f.name, shared.get(f.name, f.default))
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "settings", None)
        _normalize(self)
        if not isinstance(self.plugins, tuple) or not all(isinstance(p, str) for p in self.plugins):
            raise ConfigError(f"plugins={self.plugins!r}: expected a list of module names or .py paths")
        import_plugins(self.plugins)
        if not isinstance(model, str):
            raise ConfigError(f"model={model!r}: expected the name of a registered backbone")
        spec = model_spec(model)
        if settings is not None and not isinstance(settings, spec.settings):
            raise ConfigError(f"settings: a {type(settings).__name__}; model {model!r} takes "
                              f"{spec.settings.__name__}")
        misplaced = [k for k in keys if k not in settings_fields(spec.settings)]
        if misplaced:
            raise misplaced_key_error(model, misplaced)
        try:
            settings = spec.settings(**keys) if settings is None else dataclasses.replace(settings, **keys)
        except TypeError as e:  # a settings class whose fields lack defaults
            raise ConfigError(f"model {model!r} settings ({spec.settings.__name__}): {e}") from None
        object.__setattr__(self, "settings", settings)
        _validate(self)
        if spec.check is not None:
            spec.check(self)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a key of the model's settings, read flat.
        if name.startswith("__") or name == "settings":
            raise AttributeError(name)
        settings = self.__dict__.get("settings")
        if settings is not None and name in settings_fields(type(settings)):
            return getattr(settings, name)
        raise AttributeError(f"Config has no {name!r}: not a shared key, and model {self.__dict__.get('model')!r} "
                             f"has no such setting ({_settings_list(type(settings)) if settings else 'none'})")

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> "Config":
        """``model`` with its registered protocol defaults for shared keys (``ModelSpec.defaults``:
        e.g. SASRec's batch size and split) plus ``overrides``."""
        import_plugins(overrides.get("plugins", ()))
        return cls(model, **{**model_defaults(model), **overrides})

    def replace(self, **kw: Any) -> "Config":
        """A copy with ``kw`` changed (shared keys or settings of the resulting model). Changing
        ``model`` keeps the shared keys, and the settings changed from the old model's defaults
        that the new model also has (e.g. ``embedding_size=64`` from LightGCN to SGL); every other
        setting takes the new model's default."""
        model = kw.pop("model", self.model)
        base = {k: getattr(self, k) for k in _SHARED if k != "model"}
        if model == self.model:
            return Config(model, settings=self.settings, **{**base, **kw})
        cls_new = model_spec(model).settings
        old_defaults = type(self.settings)()
        carried = {k: getattr(self.settings, k) for k in settings_fields(cls_new)
                   if k in settings_fields(type(self.settings)) and getattr(self.settings, k) != getattr(old_defaults, k)}
        return Config(model, **{**base, **carried, **kw})

    def with_overrides(self, assignments: Iterable[str], source: str = "--set") -> "Config":
        """Apply ``key=value`` strings, parsing each value by the field's type (validated once)."""
        parsed = parse_assignments(assignments, source, model=self.model)
        if "model" in parsed and parsed["model"] != self.model:
            parsed = parse_assignments(assignments, source, model=parsed["model"])
        return self.replace(**parsed)

    def with_mapping(self, mapping: Mapping[str, Any], source: str = "config") -> "Config":
        return self.replace(**coerce_mapping(mapping, source, model=mapping.get("model", self.model)))

    def to_dict(self) -> dict[str, Any]:
        """Flat ``{key: JSON value}``: the shared keys, then the model's settings."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in _shared_fields()}
        out.update(self.settings.to_dict())
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config dict") -> "Config":
        """The config of a stored ``to_dict()`` (a results.json / run.json); keys it lacks take their
        defaults. A key of neither the shared part nor the model's settings is dropped when it holds
        its jaxrec 0.1 default (``LEGACY_DEFAULTS``: 0.1 wrote every key for every model) and
        refused otherwise."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: expected a table of key = value, got {type(d).__name__}")
        import_plugins(d.get("plugins", ()) or ())
        model = d.get("model", _DEFAULT_MODEL)
        own = settings_fields(model_spec(model).settings)
        kept = {k: v for k, v in d.items() if k in _SHARED or k in own or k == "model" or not _legacy_default(k, v)}
        return cls(**coerce_mapping(kept, source, model=model))


_DEFAULT_MODEL = "lightgcn"


def _shared_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(Config) if f.name != "settings")


_SHARED = frozenset(f.name for f in dataclasses.fields(Config) if f.name != "settings")


def shared_field_names() -> list[str]:
    """The shared config keys (every model has them)."""
    return [f.name for f in _shared_fields()]


def field_names(model: str | None = None) -> list[str]:
    """Every config key: the shared ones, then ``model``'s settings (``model=None``: every
    registered model's, each once)."""
    names = shared_field_names()
    models = [model] if model is not None else list(R.MODELS.names())
    for m in models:
        names += [k for k in settings_fields(model_spec(m).settings) if k not in names]
    return names


def model_spec(model: str) -> "R.ModelSpec":
    """The registered ``ModelSpec`` of ``model``; ``ConfigError`` naming the known models otherwise."""
    return R.MODELS.get(model, "model")


def model_defaults(model: str) -> dict[str, Any]:
    """The shared-key defaults backbone ``model`` registered (``ModelSpec.defaults``)."""
    return dict(model_spec(model).defaults)


def models_with_setting(key: str) -> list[str]:
    """The registered models whose settings have ``key``."""
    return [m for m in R.MODELS.names() if key in settings_fields(model_spec(m).settings)]


def _settings_list(cls: type) -> str:
    names = settings_fields(cls)
    return f"{cls.__name__}: {', '.join(names)}" if names else f"{cls.__name__} has no fields"


def misplaced_key_error(model: str, keys: Iterable[str]) -> ConfigError:
    """``ConfigError`` for keys that are neither shared nor settings of ``model``: names the model,
    its settings, and the models that do have each key."""
    keys = sorted(keys)
    cls = model_spec(model).settings
    parts = []
    for k in keys:
        others = models_with_setting(k)
        parts.append(f"{k!r} (a setting of {', '.join(others)})" if others else f"{k!r} (unknown config key)")
    return ConfigError(f"model {model!r} has no setting {', '.join(parts)}; its settings are {_settings_list(cls)} "
                       "(`jaxrec train --help` lists the shared keys and every model's settings)")


def build_config(*layers: Mapping[str, Any], sets: Iterable[str] = (), source: str = "--set") -> Config:
    """One ``Config`` from layers of already typed values (later wins) and ``key=value`` strings
    on top, validated once after every layer is applied (defaults < the chosen model's defaults
    < file < flags < --set)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    sets = list(sets)
    model = merged.get("model", _DEFAULT_MODEL)
    import_plugins(merged.get("plugins", ()))
    parsed = parse_assignments(sets, source, model=model)
    if parsed.get("model", model) != model:
        model = parsed["model"]
        parsed = parse_assignments(sets, source, model=model)
    merged.update(parsed)
    import_plugins(merged.get("plugins", ()))
    return Config(**{**model_defaults(merged.get("model", _DEFAULT_MODEL)), **merged})


def parse_assignments(assignments: Iterable[str], source: str = "--set", model: str | None = None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: typed value}``, each value parsed by its field's type (a shared key,
    or a setting of ``model``; a ``model=...`` among them wins)."""
    pairs = []
    for text in assignments:
        if "=" not in text:
            raise ConfigError(f"{source} {text!r}: expected key=value")
        key, value = text.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    model = next((v for k, v in pairs if k == "model"), model)
    return {k: parse_value(k, v, source=source, model=model) for k, v in pairs}


def coerce_mapping(mapping: Mapping[str, Any], source: str = "config", model: str | None = None) -> dict[str, Any]:
    """A mapping of a config file / stored dict -> typed values (``ConfigError`` naming the key)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: expected a table of key = value, got {type(mapping).__name__}")
    model = mapping.get("model", model)
    return {k: coerce_value(k, v, source=source, model=model) for k, v in mapping.items()}


def import_plugins(plugins: Iterable[str]) -> None:
    """Import each plugin (a module name, or a path to a ``.py`` file) once; they register components.

    Raises ``ConfigError`` naming the plugin when it cannot be imported.
    """
    if isinstance(plugins, str):
        plugins = (plugins,)
    for plugin in plugins:
        plugin = os.fspath(plugin)
        if plugin in _IMPORTED_PLUGINS:
            continue
        try:
            if plugin.endswith(".py") or os.sep in plugin:
                path = Path(plugin)
                if not path.is_file():
                    raise ConfigError(f"plugins: {plugin!r}: file not found")
                name = f"jaxrec_plugin_{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - any import failure is the plugin's
            raise ConfigError(f"plugins: cannot import {plugin!r}: {type(e).__name__}: {e}") from e
        _IMPORTED_PLUGINS.add(plugin)


_IMPORTED_PLUGINS: set[str] = set()


def _field_type(key: str, model: str | None = None) -> Any:
    if key in _SHARED:
        return _hints(Config)[key]
    if key == "settings":
        raise ConfigError("settings: give the model's settings as flat keys (e.g. max_seq_len=100)")
    model = _DEFAULT_MODEL if model is None else model
    cls = model_spec(model).settings
    if key in settings_fields(cls):
        return _hints(cls)[key]
    raise misplaced_key_error(model, [key])


def parse_value(key: str, text: str, source: str = "--set", model: str | None = None) -> Any:
    """Parse the string ``text`` for key ``key`` (shared, or a setting of ``model``; ``1,2,3`` for
    tuples, ``none`` for None)."""
    return _parse(_field_type(key, model), text, f"{source} {key}")


def _parse(tp: Any, text: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", ""):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _parse(inner[0], text, where)
    if origin is tuple:
        elem = args[0]
        parts = [p for p in text.replace(" ", "").strip("()[]").split(",") if p]
        return tuple(_parse(elem, p, where) for p in parts)
    try:
        if tp is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str:
            return text
    except ValueError:
        raise ConfigError(f"{where}: cannot parse {text!r} as {tp.__name__}") from None
    raise ConfigError(f"{where}: unsupported type {tp}")


def coerce_value(key: str, value: Any, source: str = "config", model: str | None = None) -> Any:
    """Check/convert a value from a config file (TOML/JSON) for key ``key``."""
    tp = _field_type(key, model)
    if isinstance(value, str) and tp is not str and not _accepts_str(tp):
        return _parse(tp, value, f"{source} {key}")
    origin = typing.get_origin(tp)
    if origin is tuple and isinstance(value, (list, tuple)):
        elem = typing.get_args(tp)[0]
        return tuple(coerce_value_scalar(elem, v, f"{source} {key}") for v in value)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if typing.get_origin(inner) is tuple and isinstance(value, (list, tuple)):
            elem = typing.get_args(inner)[0]
            return tuple(coerce_value_scalar(elem, v, f"{source} {key}") for v in value)
        return coerce_value_scalar(inner, value, f"{source} {key}")
    return coerce_value_scalar(tp, value, f"{source} {key}")


def _accepts_str(tp: Any) -> bool:
    return str in typing.get_args(tp)


def coerce_value_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if isinstance(value, str):
        return _parse(tp, value, where)
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _normalize(c: Any) -> None:
    """Canonical values in place (frozen dataclass): paths -> str, sequences -> tuples,
    ints in float fields -> float, so equal configs compare and serialize equal."""
    hints = _hints(type(c))
    for f in dataclasses.fields(c):
        if f.name == "settings":
            continue
        value = getattr(c, f.name)
        fixed = _canonical(hints[f.name], value)
        if fixed is not value:
            object.__setattr__(c, f.name, fixed)


def _canonical(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _canonical(inner, value)
    if origin is tuple:
        if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
            return value  # validation names it
        elem = typing.get_args(tp)[0]
        out = tuple(_canonical(elem, v) for v in value)
        return value if isinstance(value, tuple) and all(a is b for a, b in zip(out, value)) else out
    if tp is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw table of a TOML (``.toml``) or JSON (``.json``) config file (``ConfigError`` naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise ConfigError(f"config file {path}: expected a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table of key = value")
    return data


def load_config_file(path: str | Path, base: Config | None = None) -> Config:
    """A TOML or JSON file of config keys applied onto ``base`` (default ``Config()``), validated once.
    When the file names another model than ``base``'s, only ``base``'s shared keys carry over."""
    data = read_config_file(path)
    base = base if base is not None else Config()
    import_plugins(data.get("plugins", ()) or ())
    model = data.get("model", base.model)
    layer = coerce_mapping(data, source=f"config file {path}:", model=model)
    start = base.to_dict() if model == base.model else {k: getattr(base, k) for k in _SHARED if k != "model"}
    return build_config(start, layer)


# ----------------------------------------------------------------------------- legacy (jaxrec 0.1) dicts
#: The flat keys jaxrec 0.1 stored for every model, with their defaults, that now live in a
#: model's settings. A stored 0.1 config holds each of them; for a model without that setting
#: the value was necessarily the default (0.1 refused other values), so ``from_dict`` drops it.
LEGACY_DEFAULTS: dict[str, Any] = {
    "embedding_size": 128, "num_layers": 2, "kernel": "bcsr", "reg_weight": 1e-5, "require_pow": False,
    "ssl_aug": "ED", "ssl_ratio": 0.1, "ssl_tau": 0.2, "ssl_weight": 0.05, "ssl_negatives": "batch",
    "sgcl_tau": 0.2, "contrast_unique": "bucket", "max_seq_len": 50, "num_heads": 1, "dropout_rate": 0.5,
    "seq_norm": "reference", "dropout_rng": "hash", "sasrec_run": None, "align_alpha": 0.5, "align_beta": 0.2,
    "joint_dim": 128, "text_finetune": False, "align_positions": "last", "align_items": "joint", "lm": "smollm2",
    "lm_dtype": "float32", "stage1_run": None, "prompt_domain": "auto", "prompt_history": 10,
    "prompt_candidates": 20, "lm_score": "sum", "lm_generate": True, "lm_max_new_tokens": 48,
    "lm_repetition_penalty": 1.5, "lm_batch_size": 8, "train_users": 0, "eval_users": 0, "valid_users": 0,
}


def _legacy_default(key: str, value: Any) -> bool:
    if key not in LEGACY_DEFAULTS:
        return False
    want = LEGACY_DEFAULTS[key]
    return value == want or (isinstance(want, float) and isinstance(value, (int, float)) and float(value) == want)


# ----------------------------------------------------------------------------- validation of the shared part
def _validate(c: Config) -> None:
    def bad(field: str, expected: str) -> None:
        raise ConfigError(f"{field}={getattr(c, field)!r}: expected {expected}")

    _check_types(c)
    # Names: each registry is the one list of what a field may hold.
    for reg in (R.SPLITS, R.INITIALIZERS, R.INIT_SCALES, R.INIT_NORMS, R.SHARDINGS, R.ROW_COMMS, R.EVALUATIONS):
        reg.check(getattr(c, reg.field), reg.field)
    for name in ("epochs", "batch_size", "eval_every", "eval_chunk", "checkpoint_every"):
        if getattr(c, name) < 1:
            bad(name, "an integer >= 1")
    if c.patience < 1:
        bad("patience", "an integer >= 1")
    if c.min_epochs < 0:
        bad("min_epochs", "an integer >= 0")
    if not (c.time_budget_minutes >= 0 and math.isfinite(c.time_budget_minutes)):
        bad("time_budget_minutes", "a finite number of minutes >= 0 (0: no budget)")
    if not c.learning_rate > 0 or not math.isfinite(c.learning_rate):
        bad("learning_rate", "a finite number > 0")
    for name in ("adam_b1", "adam_b2"):
        if not (0.0 <= getattr(c, name) < 1.0):
            bad(name, "a number in [0, 1)")
    if not c.topk or any(k < 1 for k in c.topk):
        bad("topk", "a non-empty list of integers >= 1")
    metrics = R.METRICS.names()
    if not c.metrics:
        bad("metrics", f"a non-empty subset of {list(metrics)}")
    for m in c.metrics:
        R.METRICS.check(m, "metrics")
    for t in c.track:
        R.TRACKERS.check(t, "track")
    if len(set(c.track)) != len(c.track):
        bad("track", "distinct tracker names")
    if c.candidate_negatives < 1:
        bad("candidate_negatives", "an integer >= 1 (sampled items beside the held-out one)")
    if any(k < 1 for k in c.full_view_topk):
        bad("full_view_topk", "integers >= 1, or () for no full-ranking view")
    # valid_metric must be one of the metrics the evaluation protocol reports: a protocol with
    # its own names (candidates: mrr without @k, full_* keys) checks them itself.
    protocol = R.EVALUATIONS.get(c.evaluation, "evaluation")
    if protocol.check_config is not None:
        protocol.check_config(c)
    else:
        name, _, k = c.valid_metric.partition("@")
        if name not in metrics or not k.isdigit() or int(k) not in c.topk:
            bad("valid_metric", f"<metric>@<k> with metric in {list(metrics)} and k in topk={list(c.topk)}")
    if c.split == "ratio":
        if (len(c.split_ratios) != 3 or any(not (r >= 0 and math.isfinite(r)) for r in c.split_ratios)
                or sum(c.split_ratios) <= 0):
            bad("split_ratios", "three non-negative numbers (train, valid, test)")
    if c.kcore < 0:
        bad("kcore", "an integer >= 0")
    if c.missing not in ("error", "drop"):
        bad("missing", "error or drop")
    if not 0 < c.variance_fraction <= 1:
        bad("variance_fraction", "a number in (0, 1]")
    if not math.isfinite(c.recpca_lambda) or c.recpca_lambda < 0:
        bad("recpca_lambda", "a finite number >= 0 (Rec-PCA's Laplacian penalty weight; 0 is plain PCA)")
    if c.init_norm != "none":
        if R.INITIALIZERS.get(c.init, "init").build is None:
            raise ConfigError(f"init_norm={c.init_norm!r}: it normalizes LLM-initialized item rows, but init={c.init!r} "
                              "writes none; choose an LLM initializer (init=...) or init_norm='none'")
        if c.init_scale in ("match_random", "standardize"):
            raise ConfigError(f"init_norm={c.init_norm!r} with init_scale={c.init_scale!r}: both set the item rows' "
                              "norms and the rescaling would undo the normalization; use one of them")
    # --- sharding ---
    if not c.mesh_axes or len(set(c.mesh_axes)) != len(c.mesh_axes) or not all(
        isinstance(a, str) and a.isidentifier() for a in c.mesh_axes
    ):
        bad("mesh_axes", "a non-empty list of distinct axis names")
    if c.mesh_shape and (len(c.mesh_shape) != len(c.mesh_axes) or any(n < 1 for n in c.mesh_shape)):
        bad("mesh_shape", f"() or {len(c.mesh_axes)} integers >= 1, one per mesh_axes={list(c.mesh_axes)}")
    for name in ("data_axis", "model_axis"):
        if getattr(c, name) not in c.mesh_axes:
            raise ConfigError(
                f"{name}={getattr(c, name)!r}: unknown mesh axis; the config knows mesh_axes={list(c.mesh_axes)}"
            )
    if c.num_processes < 1:
        bad("num_processes", "an integer >= 1")
    if not 0 <= c.process_id < c.num_processes:
        bad("process_id", f"an integer in [0, num_processes={c.num_processes})")
    if c.num_processes > 1 and not c.coordinator_address:
        bad("coordinator_address", "host:port of process 0 when num_processes > 1")


def _check_types(c: Any) -> None:
    """Every field holds a value of its declared type (a dataclass called with raw values)."""
    hints = _hints(type(c))
    for f in dataclasses.fields(c):
        if f.name == "settings":
            continue
        value = getattr(c, f.name)
        if not _is_instance(hints[f.name], value):
            raise ConfigError(f"{f.name}={value!r}: expected {_type_name(hints[f.name])}")


def _is_instance(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_instance(typing.get_args(tp)[0], v) for v in value)
    if tp is float:
        return isinstance(value, float)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def field_type_name(key: str, model: str | None = None) -> str:
    """The declared type of key ``key`` as text (for ``--help``)."""
    return _type_name(_field_type(key, model))


__all__ = ["Config", "ConfigError", "ModelSettings", "settings_fields", "build_config", "load_config_file",
           "read_config_file", "parse_assignments", "parse_value", "coerce_mapping", "coerce_value",
           "import_plugins", "field_names", "shared_field_names", "model_spec", "model_defaults",
           "models_with_setting", "misplaced_key_error", "LEGACY_DEFAULTS", "field_type_name"]
