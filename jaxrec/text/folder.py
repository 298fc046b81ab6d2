"""Read a sentence-transformers model folder (BERT or MPNet) into a checked, static spec.

``read_sentence_folder(path) -> SentenceFolder`` reads, before any weights are touched:

- ``modules.json``: the module chain, which must be ``Transformer -> Pooling`` optionally
  followed by ``Normalize`` (sentence-transformers' ``SentenceTransformer._load_sbert_model``
  loads exactly these entries in ``idx`` order); any other module (``Dense``, ``LayerNorm``,
  ``WordEmbeddings`` ...) is refused;
- the Transformer module's folder (``path`` of that entry, usually ``""``):
  ``config.json`` (``model_type`` ``bert`` or ``mpnet`` and the architecture fields),
  ``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``),
  ``tokenizer.json`` (the `tokenizers` file) and ``model.safetensors``;
- the Pooling module's ``config.json``: the legacy booleans ``pooling_mode_cls_token``,
  ``pooling_mode_max_tokens``, ``pooling_mode_mean_tokens``,
  ``pooling_mode_mean_sqrt_len_tokens``, ``pooling_mode_weightedmean_tokens``,
  ``pooling_mode_lasttoken`` (concatenated in that order; none set means mean, as
  sentence-transformers 6 ``_convert_legacy_pooling_kwargs``), or the newer ``pooling_mode``
  (a name or a list of names, concatenated in the listed order).

Every problem raises ``SentenceModelError`` (a ``ValueError``) naming the file and field and
what was expected.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxrec.errors import JaxrecError

#: Pooling modes of sentence-transformers' ``Pooling`` module (sentence_transformer/modules/pooling.py).
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
#: Legacy boolean keys of ``1_Pooling/config.json`` in sentence-transformers' concatenation order.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: Hidden activations implemented (transformers' ACT2FN names).
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
MODEL_TYPES = ("bert", "mpnet")


class SentenceModelError(JaxrecError, ValueError):
    """A folder is not a usable sentence-transformers BERT/MPNet model; the message names the file and field."""


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the transformer (fields of Hugging Face ``config.json``; hashable, static)."""

    model_type: str  # "bert" | "mpnet"
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    max_position_embeddings: int
    pad_token_id: int
    type_vocab_size: int = 0  # bert: token type table rows; mpnet: 0 (no token types)
    relative_attention_num_buckets: int = 0  # mpnet: relative position buckets; bert: 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_tokens(self) -> int:
        """Longest sequence the position table allows (MPNet positions start at ``pad_token_id + 1``)."""
        if self.model_type == "mpnet":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings


@dataclasses.dataclass(frozen=True)
class SentenceFolder:
    """What a sentence-transformers folder says (all checked; see module doc)."""

    path: Path  # the folder
    config: TransformerConfig
    max_seq_length: int  # tokens kept per text, [CLS]/[SEP] (or <s>/</s>) included
    do_lower_case: bool
    pooling_modes: tuple[str, ...]  # concatenated in this order
    normalize: bool  # a Normalize module follows Pooling
    weights: Path  # model.safetensors
    tokenizer: Path  # tokenizer.json

    @property
    def dim(self) -> int:
        """Sentence embedding size: hidden size times the number of pooling modes."""
        return self.config.hidden_size * len(self.pooling_modes)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SentenceModelError(f"{path}: missing; a sentence-transformers model folder needs {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SentenceModelError(f"{path}: not readable JSON ({e}); expected {what}") from e


def _field(data: dict, key: str, path: Path, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in data or (data[key] is None and default is not ...):
        if default is not ...:
            return default
        raise SentenceModelError(f"{path}: field {key!r} missing; expected {_kind_name(kind)}")
    value = data[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise SentenceModelError(f"{path}: field {key!r} is {value!r}; expected {_kind_name(kind)}")
    if not isinstance(value, kind):
        raise SentenceModelError(f"{path}: field {key!r} is {value!r}; expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(k, k.__name__)
                       for k in kinds)


def _positive(value: int, key: str, path: Path) -> int:
    if value < 1:
        raise SentenceModelError(f"{path}: field {key!r} is {value}; expected a positive integer")
    return value


def read_transformer_config(path: Path) -> TransformerConfig:
    """Parse a Hugging Face ``config.json`` of a BERT or MPNet model (raises ``SentenceModelError``)."""
    data = _read_json(path, "a Hugging Face config.json")
    if not isinstance(data, dict):
        raise SentenceModelError(f"{path}: expected a JSON object")
    model_type = _field(data, "model_type", path, str)
    if model_type not in MODEL_TYPES:
        raise SentenceModelError(
            f"{path}: field 'model_type' is {model_type!r}; expected one of {list(MODEL_TYPES)} "
            "(jaxrec.text implements the BERT and MPNet encoders)"
        )
    ints = {k: _positive(_field(data, k, path, int), k, path) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings")}
    if ints["hidden_size"] % ints["num_attention_heads"]:
        raise SentenceModelError(
            f"{path}: hidden_size {ints['hidden_size']} is not a multiple of num_attention_heads "
            f"{ints['num_attention_heads']}"
        )
    act = _field(data, "hidden_act", path, str, "gelu")
    if act not in ACTIVATIONS:
        raise SentenceModelError(f"{path}: field 'hidden_act' is {act!r}; expected one of {list(ACTIVATIONS)}")
    eps = float(_field(data, "layer_norm_eps", path, (int, float), 1e-12))
    drop = float(_field(data, "hidden_dropout_prob", path, (int, float), 0.1))
    att_drop = float(_field(data, "attention_probs_dropout_prob", path, (int, float), 0.1))
    for key, rate in (("hidden_dropout_prob", drop), ("attention_probs_dropout_prob", att_drop)):
        if not 0.0 <= rate < 1.0:
            raise SentenceModelError(f"{path}: field {key!r} is {rate}; expected a rate in [0, 1)")
    if model_type == "bert":
        pos_type = _field(data, "position_embedding_type", path, str, "absolute")
        if pos_type != "absolute":
            raise SentenceModelError(
                f"{path}: field 'position_embedding_type' is {pos_type!r}; expected 'absolute'"
            )
        return TransformerConfig(
            model_type, **ints, hidden_act=act, layer_norm_eps=eps,
            pad_token_id=_field(data, "pad_token_id", path, int, 0),
            type_vocab_size=_positive(_field(data, "type_vocab_size", path, int, 2), "type_vocab_size", path),
            hidden_dropout_prob=drop, attention_probs_dropout_prob=att_drop,
        )
    buckets = _positive(_field(data, "relative_attention_num_buckets", path, int, 32),
                        "relative_attention_num_buckets", path)
    if buckets % 4:
        raise SentenceModelError(
            f"{path}: field 'relative_attention_num_buckets' is {buckets}; expected a multiple of 4 "
            "(half per direction, half of those exact)"
        )
    return TransformerConfig(
        model_type, **ints, hidden_act=act, layer_norm_eps=eps,
        # transformers' MPNetEmbeddings hard-codes padding_idx = 1 (= mpnet-base's pad_token_id)
        pad_token_id=_field(data, "pad_token_id", path, int, 1),
        relative_attention_num_buckets=buckets, hidden_dropout_prob=drop, attention_probs_dropout_prob=att_drop,
    )


def read_pooling_config(path: Path, hidden_size: int) -> tuple[str, ...]:
    """Pooling modes of a ``1_Pooling/config.json`` (see module doc), checked against ``hidden_size``."""
    data = _read_json(path, "the Pooling module's config.json")
    if not isinstance(data, dict):
        raise SentenceModelError(f"{path}: expected a JSON object")
    dim_key = "word_embedding_dimension" if "word_embedding_dimension" in data else "embedding_dimension"
    dim = _field(data, dim_key, path, int, hidden_size)
    if dim != hidden_size:
        raise SentenceModelError(
            f"{path}: field {dim_key!r} is {dim}; expected the transformer's hidden_size {hidden_size}"
        )
    if "pooling_mode" in data:
        raw = data["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else raw
        if not isinstance(modes, (list, tuple)) or not modes or not all(isinstance(m, str) for m in modes):
            raise SentenceModelError(f"{path}: field 'pooling_mode' is {raw!r}; expected a mode name or a list of them")
        modes = tuple(modes)
    else:
        for key in LEGACY_POOLING_KEYS:
            if key in data and not isinstance(data[key], bool):
                raise SentenceModelError(f"{path}: field {key!r} is {data[key]!r}; expected true/false")
        modes = tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if data.get(key, False)) or ("mean",)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad:
        raise SentenceModelError(f"{path}: pooling mode(s) {bad}; expected among {list(POOLING_MODES)}")
    if data.get("include_prompt", True) is not True:
        # prompts are never added by jaxrec, so excluding them would change nothing; refuse to be safe
        raise SentenceModelError(f"{path}: field 'include_prompt' is {data['include_prompt']!r}; only true is supported")
    return modes


def read_sentence_folder(path: str | Path) -> SentenceFolder:
    """Read and check a sentence-transformers BERT/MPNet folder (see module doc).

    Raises ``SentenceModelError`` naming the file and field for a missing file, an unsupported
    module chain, model type, activation or pooling mode, or inconsistent sizes.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise SentenceModelError(f"{root}: not a folder; expected a sentence-transformers model folder")
    modules_path = root / "modules.json"
    modules = _read_json(modules_path, "modules.json (the list of Transformer, Pooling, Normalize modules)")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise SentenceModelError(f"{modules_path}: expected a JSON list of module objects")
    chain = []
    for i, entry in enumerate(sorted(modules, key=lambda m: m.get("idx", 0))):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        chain.append((kind, str(entry.get("path", "")), i))
    kinds = [k for k, _, _ in chain]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise SentenceModelError(
            f"{modules_path}: module types {kinds}; expected ['Transformer', 'Pooling'] optionally followed "
            "by 'Normalize' (other sentence-transformers modules are not implemented)"
        )
    tdir = root / chain[0][1]
    config = read_transformer_config(tdir / "config.json")
    sbert_path = tdir / "sentence_bert_config.json"
    sbert = _read_json(sbert_path, "sentence_bert_config.json (max_seq_length, do_lower_case)")
    if not isinstance(sbert, dict):
        raise SentenceModelError(f"{sbert_path}: expected a JSON object")
    max_len = _field(sbert, "max_seq_length", sbert_path, int, None)
    if max_len is None:  # sentence-transformers then uses the tokenizer's / position table's limit
        tok_cfg_path = tdir / "tokenizer_config.json"
        tok_cfg = _read_json(tok_cfg_path, "tokenizer_config.json") if tok_cfg_path.is_file() else {}
        max_len = min(config.max_tokens, int(tok_cfg.get("model_max_length", config.max_tokens)))
    max_len = _positive(max_len, "max_seq_length", sbert_path)
    if max_len > config.max_tokens:
        raise SentenceModelError(
            f"{sbert_path}: field 'max_seq_length' is {max_len}; the position table of {tdir / 'config.json'} "
            f"allows at most {config.max_tokens} tokens"
        )
    lower = _field(sbert, "do_lower_case", sbert_path, bool, False)
    modes = read_pooling_config(root / chain[1][1] / "config.json", config.hidden_size)
    weights, tokenizer = tdir / "model.safetensors", tdir / "tokenizer.json"
    if not weights.is_file():
        other = [p.name for p in tdir.glob("pytorch_model*.bin")]
        hint = f" ({other} found: convert it to safetensors)" if other else ""
        raise SentenceModelError(f"{weights}: missing; expected the transformer weights as safetensors{hint}")
    if not tokenizer.is_file():
        raise SentenceModelError(f"{tokenizer}: missing; expected the `tokenizers` file of the model")
    return SentenceFolder(root.resolve(), config, max_len, lower, modes, kinds[-1] == "Normalize", weights, tokenizer)
