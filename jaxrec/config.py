"""Run configuration: one flat, typed, immutable record of every knob of a run.

A run is (dataset, split, initializer, backbone, loss, optimizer, seed); each is a field
here, so a results file that stores ``Config.to_dict()`` reproduces the run exactly.

``Config.for_model(name)`` gives the defaults of a backbone (the LLMInit reference
protocol, DESIGN.md 2.1); ``config.replace(**kw)`` and ``config.with_overrides(["k=v"])``
change fields with type checking; ``load_config_file`` reads TOML or JSON.
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
from typing import Any, Iterable, Mapping

from jaxrec import registry as R

#: ``seq_norm`` values: LayerNorm placement in a SASRec block (``jaxrec.models.sasrec``).
SEQ_NORMS = ("reference", "prenorm")
#: ``dropout_rng`` values: where dropout masks come from (``jaxrec.models.dropout``).
DROPOUT_RNGS = ("hash", "threefry")


#: ``lm_dtype`` / ``prompt_domain`` / ``lm_score`` values (A-LLMRec stage 2, ``jaxrec.align``).
LM_DTYPES = ("float32", "bfloat16")
PROMPT_DOMAINS = ("auto", "movie", "game", "item")
LM_SCORES = ("sum", "mean")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Config:
    # --- run ------------------------------------------------------------------
    model: str = "lightgcn"  # a registered backbone (jaxrec.registry.MODELS)
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
    # --- model ----------------------------------------------------------------
    embedding_size: int = 128
    num_layers: int = 2
    kernel: str = "bcsr"  # propagation kernel (jaxrec.registry.KERNELS)
    # --- optimisation ---------------------------------------------------------
    epochs: int = 300
    batch_size: int = 2048
    learning_rate: float = 1e-3
    reg_weight: float = 1e-5
    require_pow: bool = False  # L2 as sum of squared norms (True) or of norms (RecBole's default)
    # --- evaluation / selection -----------------------------------------------
    evaluation: str = "full"  # evaluation protocol (jaxrec.registry.EVALUATIONS)
    topk: tuple[int, ...] = (10, 20, 50)
    metrics: tuple[str, ...] = ("recall", "ndcg", "hit", "mrr", "precision")
    valid_metric: str = "ndcg@10"
    eval_every: int = 1
    patience: int = 10  # evaluations without improvement before stopping
    min_epochs: int = 0  # no early stop before this many epochs (0: RecBole's rule as is)
    eval_chunk: int = 1024  # users per full-ranking chunk
    # --- contrastive backbones (SGL / SGCL) -----------------------------------
    ssl_aug: str = "ED"  # ED | ND | RW (jaxrec.registry.AUGMENTATIONS)
    ssl_ratio: float = 0.1
    ssl_tau: float = 0.2
    ssl_weight: float = 0.05
    ssl_negatives: str = "batch"  # batch: the batch's users/items | all: every user/item (SGL's code)
    sgcl_tau: float = 0.2
    # bucket: the batch's distinct ids found on the host, padded to a multiple of 64 (fast);
    # table: found inside the step, padded to min(batch, table rows) (the form before 0.2)
    contrast_unique: str = "bucket"
    # --- sequential (SASRec, A-LLMRec) ---------------------------------------
    # Sequence-only keys (a graph backbone refuses changes to them): max_seq_len, num_heads,
    # dropout_rate, seq_norm, dropout_rng. Their defaults are SASRec's (DESIGN.md 6).
    max_seq_len: int = 50  # longest history kept (the most recent items; also the learned positions)
    num_heads: int = 1  # attention heads (embedding_size must be a multiple)
    dropout_rate: float = 0.5  # embeddings, attention weights, feed-forward
    seq_norm: str = "reference"  # reference: LayerNorm on the queries only (A-LLMRec) | prenorm
    dropout_rng: str = "hash"  # dropout masks: hash (keyed counter hash, fast on CPU) | threefry
    # Candidate evaluation (evaluation="candidates", A-LLMRec): the held-out item + this many
    # never-interacted items, drawn once per (split, stage, seed) and stored in candidates_dir
    # (None: $JAXREC_CACHE/candidates); full ranking at full_view_topk reported beside as full_*.
    candidate_negatives: int = 19
    candidates_dir: str | None = None
    full_view_topk: tuple[int, ...] = (10, 20)  # () = no full-ranking view
    adam_b1: float = 0.9  # Adam's beta1 / beta2 (make_optimizer; SASRec: 0.98)
    adam_b2: float = 0.999
    # A-LLMRec stage 1 (model="allmrec_stage1", jaxrec.align.stage1). Stage-1-only keys (other
    # backbones refuse changes to them): the frozen SASRec run folder; loss weights of the item
    # (alpha) and text (beta) reconstruction; the joint latent size; the text encoder frozen
    # (item text embeddings precomputed once: ``embeddings`` file or ``encoder`` through the
    # cache) or fine-tuned end to end (``encoder`` a jaxrec.text folder or minilm/mpnet);
    # training positions (last: the reference; all: the paper's section 5.4.2 variant); items
    # scored through the joint embedding (joint: e for items with training interactions, q
    # from text otherwise) or through q for every item (text: the "SBERT" variant).
    # sasrec_run is read by stage 2 too (without stage1_run: the fallback on SASRec's own item table).
    sasrec_run: str | None = None
    align_alpha: float = 0.5
    align_beta: float = 0.2
    joint_dim: int = 128
    text_finetune: bool = False
    align_positions: str = "last"  # last | all
    align_items: str = "joint"  # joint | text
    # --- LLMInit ---------------------------------------------------------------
    init: str = "none"  # none | random | uniform | variance | full | pca | recpca (jaxrec.registry.INITIALIZERS)
    encoder: str | None = None  # encoder name or path (minilm, mpnet, folder)
    embeddings: str | None = None  # precomputed .npy (item id list beside it)
    variance_fraction: float = 0.2  # share of most popular items used for variance
    init_scale: str = "none"  # none | match_random | standardize | minmax (LLMInit code)
    random_with_replacement: bool = False
    # --- A-LLMRec stage 2 (jaxrec.align.stage2: projectors into a frozen LM) ------
    lm: str = "smollm2"  # smollm2 | a .gguf file | a Hugging Face safetensors folder
    lm_dtype: str = "float32"  # float32 | bfloat16 (the frozen LM's weights)
    stage1_run: str | None = None  # stage-1 run folder: joint item embeddings + user representations
    prompt_domain: str = "auto"  # movie | game | item | auto (from the dataset name): the prompt's words
    prompt_history: int = 10  # history titles per prompt (the most recent)
    prompt_candidates: int = 20  # candidate titles per prompt (the target + prompt_candidates - 1 others)
    lm_score: str = "sum"  # candidates ranked by the sum | mean (per token) log-likelihood of their title
    lm_generate: bool = True  # test evaluation also decodes greedily (the paper's Hit@1)
    lm_max_new_tokens: int = 48  # generated tokens at most
    lm_repetition_penalty: float = 1.5  # the reference's generate(repetition_penalty=1.5)
    lm_batch_size: int = 8  # prompts per LM call when evaluating
    train_users: int = 0  # stage 2 trains on a seeded sample of this many users (0: every user)
    eval_users: int = 0  # stage 2 evaluates (test) a seeded sample of this many users (0: every user)
    valid_users: int = 0  # ... and validates on this many (0: as eval_users)
    # --- TF-LLMER ----------------------------------------------------------------
    init_norm: str = "none"  # none | unit | typical: item rows after selection (jaxrec.registry.INIT_NORMS)
    recpca_lambda: float = 0.5  # Rec-PCA's Laplacian penalty (init recpca); 0 = plain PCA
    # --- checkpoints ------------------------------------------------------------
    checkpoint_every: int = 1  # epochs between "latest" checkpoints
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

    # ------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _normalize(self)
        import_plugins(self.plugins)
        _validate(self)

    @classmethod
    def for_model(cls, model: str, **overrides: Any) -> "Config":
        """The defaults of backbone ``model`` (``model_defaults``: e.g. SASRec's protocol; the
        LLMInit reference protocol for the CF backbones) plus ``overrides``."""
        import_plugins(overrides.get("plugins", ()))
        return cls(**{**model_defaults(model), "model": model, **overrides})

    def replace(self, **kw: Any) -> "Config":
        unknown = sorted(set(kw) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {', '.join(field_names())}")
        return dataclasses.replace(self, **kw)

    def with_overrides(self, assignments: Iterable[str], source: str = "--set") -> "Config":
        """Apply ``key=value`` strings, parsing each value by the field's type (validated once)."""
        return self.replace(**parse_assignments(assignments, source))

    def with_mapping(self, mapping: Mapping[str, Any], source: str = "config") -> "Config":
        return self.replace(**coerce_mapping(mapping, source))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config dict") -> "Config":
        """The config of a stored ``to_dict()`` (a results.json); keys it lacks take their defaults."""
        import_plugins(d.get("plugins", ()) or ())
        return cls(**coerce_mapping(d, source))


def model_defaults(model: str) -> dict[str, Any]:
    """The config values backbone ``model`` was registered with (``register_model(..., defaults=)``);
    ``ConfigError`` naming ``model`` when it is not registered."""
    builder = R.MODELS.get(model, "model")
    return dict(getattr(builder, "config_defaults", None) or {})


def build_config(*layers: Mapping[str, Any], sets: Iterable[str] = (), source: str = "--set") -> Config:
    """One ``Config`` from layers of already typed values (later wins) and ``key=value`` strings
    on top, validated once after every layer is applied (defaults < the chosen model's defaults
    < file < flags < --set)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    merged.update(parse_assignments(sets, source))
    unknown = sorted(set(merged) - set(field_names()))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known keys: {', '.join(field_names())}")
    import_plugins(merged.get("plugins", ()))
    return Config(**{**model_defaults(merged.get("model", Config.model)), **merged})


def parse_assignments(assignments: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: typed value}``, each value parsed by its field's type."""
    kw: dict[str, Any] = {}
    for text in assignments:
        if "=" not in text:
            raise ConfigError(f"{source} {text!r}: expected key=value")
        key, value = text.split("=", 1)
        key = key.strip()
        kw[key] = parse_value(key, value.strip(), source=source)
    return kw


def coerce_mapping(mapping: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """A mapping of a config file / stored dict -> typed values (``ConfigError`` naming the key)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: expected a table of key = value, got {type(mapping).__name__}")
    return {k: coerce_value(k, v, source=source) for k, v in mapping.items()}


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


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _field_type(key: str) -> Any:
    hints = typing.get_type_hints(Config)
    if key not in hints:
        raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(field_names())}")
    return hints[key]


def parse_value(key: str, text: str, source: str = "--set") -> Any:
    """Parse the string ``text`` for field ``key`` (``1,2,3`` for tuples, ``none`` for None)."""
    tp = _field_type(key)
    return _parse(tp, text, f"{source} {key}")


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


def coerce_value(key: str, value: Any, source: str = "config") -> Any:
    """Check/convert a value from a config file (TOML/JSON) for field ``key``."""
    tp = _field_type(key)
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


def _normalize(c: Config) -> None:
    """Canonical values in place (frozen dataclass): paths -> str, sequences -> tuples,
    ints in float fields -> float, so equal configs compare and serialize equal."""
    hints = _hints()
    for f in dataclasses.fields(c):
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


_HINTS: dict[str, Any] = {}


def _hints() -> dict[str, Any]:
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(Config))
    return _HINTS


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
    """A TOML or JSON file of config keys applied onto ``base`` (default ``Config()``), validated once."""
    data = read_config_file(path)
    layer = coerce_mapping(data, source=f"config file {path}:")
    return build_config(dataclasses.asdict(base) if base is not None else {}, layer)


def _validate(c: Config) -> None:
    def bad(field: str, expected: str) -> None:
        raise ConfigError(f"{field}={getattr(c, field)!r}: expected {expected}")

    _check_types(c)
    # Names: each registry is the one list of what a field may hold.
    for reg in (R.MODELS, R.SPLITS, R.INITIALIZERS, R.KERNELS, R.AUGMENTATIONS, R.CONTRASTS,
                R.CONTRAST_UNIQUE, R.INIT_SCALES, R.INIT_NORMS, R.SHARDINGS, R.ROW_COMMS, R.EVALUATIONS):
        reg.check(getattr(c, reg.field), reg.field)
    for name in ("epochs", "batch_size", "embedding_size", "eval_every", "eval_chunk", "checkpoint_every"):
        if getattr(c, name) < 1:
            bad(name, "an integer >= 1")
    if c.num_layers < 0:
        bad("num_layers", "an integer >= 0")
    if c.patience < 1:
        bad("patience", "an integer >= 1")
    if c.min_epochs < 0:
        bad("min_epochs", "an integer >= 0")
    if not c.learning_rate > 0 or not math.isfinite(c.learning_rate):
        bad("learning_rate", "a finite number > 0")
    if not c.reg_weight >= 0 or not math.isfinite(c.reg_weight):
        bad("reg_weight", "a finite number >= 0")
    if not c.topk or any(k < 1 for k in c.topk):
        bad("topk", "a non-empty list of integers >= 1")
    metrics = R.METRICS.names()
    if not c.metrics:
        bad("metrics", f"a non-empty subset of {list(metrics)}")
    for m in c.metrics:
        R.METRICS.check(m, "metrics")
    # --- sequential (SASRec, A-LLMRec) ---
    if c.max_seq_len < 1:
        bad("max_seq_len", "an integer >= 1 (the longest history a sequence model reads)")
    if c.num_heads < 1:
        bad("num_heads", "an integer >= 1")
    if not (0.0 <= c.dropout_rate < 1.0):
        bad("dropout_rate", "a rate in [0, 1)")
    if c.seq_norm not in SEQ_NORMS:
        bad("seq_norm", f"one of {list(SEQ_NORMS)}")
    if c.dropout_rng not in DROPOUT_RNGS:
        bad("dropout_rng", f"one of {list(DROPOUT_RNGS)}")
    if c.candidate_negatives < 1:
        bad("candidate_negatives", "an integer >= 1 (sampled items beside the held-out one)")
    if any(k < 1 for k in c.full_view_topk):
        bad("full_view_topk", "integers >= 1, or () for no full-ranking view")
    for name in ("adam_b1", "adam_b2"):
        if not (0.0 <= getattr(c, name) < 1.0):
            bad(name, "a number in [0, 1)")
    # valid_metric must be one of the metrics the evaluation protocol reports: a protocol with
    # its own names (candidates: mrr without @k, full_* keys) checks them itself.
    check_metrics = getattr(R.EVALUATIONS.get(c.evaluation, "evaluation"), "check_config", None)
    if check_metrics is not None:
        check_metrics(c)
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
    if not 0 <= c.ssl_ratio < 1:
        bad("ssl_ratio", "a number in [0, 1)")
    if not c.ssl_tau > 0:
        bad("ssl_tau", "a temperature > 0")
    if not c.sgcl_tau > 0:
        bad("sgcl_tau", "a temperature > 0")
    if not c.ssl_weight >= 0:
        bad("ssl_weight", "a number >= 0")
    if c.model in ("sgl", "sgcl") and c.batch_size < 2:
        bad("batch_size", "at least 2 for in-batch contrastive losses")
    if not 0 < c.variance_fraction <= 1:
        bad("variance_fraction", "a number in (0, 1]")
    # --- A-LLMRec stage 2 ---
    if c.lm_dtype not in LM_DTYPES:
        bad("lm_dtype", f"one of {list(LM_DTYPES)}")
    if c.prompt_domain not in PROMPT_DOMAINS:
        bad("prompt_domain", f"one of {list(PROMPT_DOMAINS)}")
    if c.prompt_history < 1:
        bad("prompt_history", "an integer >= 1")
    if c.prompt_candidates < 2:
        bad("prompt_candidates", "an integer >= 2 (the target and at least one other item)")
    if c.lm_score not in LM_SCORES:
        bad("lm_score", f"one of {list(LM_SCORES)}")
    for name in ("lm_max_new_tokens", "lm_batch_size"):
        if getattr(c, name) < 1:
            bad(name, "an integer >= 1")
    if not c.lm_repetition_penalty > 0:
        bad("lm_repetition_penalty", "a number > 0 (1 = no penalty)")
    for name in ("train_users", "eval_users", "valid_users"):
        if getattr(c, name) < 0:
            bad(name, "an integer >= 0 (0: every user)")
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


def _check_types(c: Config) -> None:
    """Every field holds a value of its declared type (Config(...) called with raw values)."""
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if not _is_instance(_hints()[f.name], value):
            raise ConfigError(f"{f.name}={value!r}: expected {_type_name(_hints()[f.name])}")


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
