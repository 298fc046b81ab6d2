"""Load a Hugging Face safetensors folder (Llama or OPT layout) into a params pytree.

The folder is what ``model.save_pretrained(folder, safe_serialization=True)`` writes:
``config.json`` plus ``model.safetensors`` or ``model.safetensors.index.json`` and its shards;
``tokenizer.json`` (+ ``tokenizer_config.json``) when present gives the tokenizer. Tensors
are read with the ``safetensors`` package; torch ``Linear.weight`` [out, in] becomes the
kernel [in, out]. Tensor names follow transformers' LlamaForCausalLM / OPTForCausalLM
(``model.`` prefix optional, as in older OPT checkpoints).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from .config import LMConfig
from .errors import LMError
from .model import LanguageModel
from .tokenizer import Tokenizer
from .weights import Dest, LoadedLM, assemble, check_dtype, to_dtype

_LAYER = re.compile(r"^(?:model\.)?(?:decoder\.)?layers\.(\d+)\.(.+)$")
# HF tensor suffix inside a layer -> pure-dict path below "layers" (".weight" of a Linear is transposed).
_LLAMA_LAYER = {
    "input_layernorm.weight": ("input_layernorm", "scale"),
    "post_attention_layernorm.weight": ("post_attention_layernorm", "scale"),
    **{f"self_attn.{p}.weight": ("self_attn", p, "kernel") for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
    **{f"self_attn.{p}.bias": ("self_attn", p, "bias") for p in ("q_proj", "k_proj", "v_proj", "o_proj")},
    **{f"mlp.{p}.weight": ("mlp", p, "kernel") for p in ("gate_proj", "up_proj", "down_proj")},
    **{f"mlp.{p}.bias": ("mlp", p, "bias") for p in ("gate_proj", "up_proj", "down_proj")},
}
_OPT_LAYER = {
    **{f"{n}.weight": (n, "scale") for n in ("self_attn_layer_norm", "final_layer_norm")},
    **{f"{n}.bias": (n, "bias") for n in ("self_attn_layer_norm", "final_layer_norm")},
    **{f"self_attn.{p}.weight": ("self_attn", p, "kernel") for p in ("q_proj", "k_proj", "v_proj", "out_proj")},
    **{f"self_attn.{p}.bias": ("self_attn", p, "bias") for p in ("q_proj", "k_proj", "v_proj", "out_proj")},
    **{f"{p}.weight": (p, "kernel") for p in ("fc1", "fc2")},
    **{f"{p}.bias": (p, "bias") for p in ("fc1", "fc2")},
}
_TOP = {
    "llama": {"embed_tokens.weight": ("embed_tokens", "embedding"), "norm.weight": ("norm", "scale"),
              "lm_head.weight": ("lm_head", "kernel")},
    "opt": {"decoder.embed_tokens.weight": ("embed_tokens", "embedding"),
            "decoder.embed_positions.weight": ("embed_positions", "embedding"),
            "decoder.project_in.weight": ("project_in", "kernel"),
            "decoder.project_out.weight": ("project_out", "kernel"),
            "decoder.final_layer_norm.weight": ("final_layer_norm", "scale"),
            "decoder.final_layer_norm.bias": ("final_layer_norm", "bias"),
            "lm_head.weight": ("lm_head", "kernel")},
}
_IGNORABLE = re.compile(r"(rotary_emb\.inv_freq|\.masked_bias|\.attn\.bias)$")


def hf_destination(arch: str, name: str, tied: bool) -> Dest | None:
    """Where HF tensor ``name`` goes (None: an ignorable buffer, or ``lm_head`` of a tied model)."""
    m = _LAYER.match(name)
    if m:
        table = _LLAMA_LAYER if arch == "llama" else _OPT_LAYER
        suffix = m.group(2)
        if suffix not in table:
            raise KeyError(name)
        path = ("layers", *table[suffix])
        return Dest(path, int(m.group(1)), transpose=path[-1] == "kernel")
    if _IGNORABLE.search(name):
        return None
    short = name[len("model."):] if name.startswith("model.") else name
    if short == "lm_head.weight" and tied:
        return None  # the same matrix as embed_tokens (kept by some exporters)
    path = _TOP[arch].get(short)
    if path is None:
        raise KeyError(name)
    return Dest(path, None, transpose=path[-1] == "kernel")


def _weight_files(folder: Path) -> list[Path]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise LMError(f"{index}: cannot read its weight_map ({e}); expected a safetensors index") from None
        files = [folder / f for f in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise LMError(f"{index}: names shard(s) not in the folder: {', '.join(absent)}")
        return files
    raise LMError(f"{folder}: no model.safetensors or model.safetensors.index.json; expected a Hugging Face "
                  f"folder written by save_pretrained(..., safe_serialization=True)")


def load_hf(folder: str | Path, dtype=np.float32, layout: str = "list") -> LoadedLM:
    """Load a local HF safetensors folder of a Llama or OPT causal LM.

    Returns ``LoadedLM(model, params, tokenizer or None, report)``; params are float32 or
    bfloat16 (``dtype``), in the "list" or "stacked" ``layout`` (see jaxrec.lm.model).
    Raises LMError naming the file for a missing/invalid config, an unsupported model type,
    an unknown tensor, or a tensor of the wrong shape.
    """
    from safetensors import safe_open

    t0 = time.perf_counter()
    folder = Path(folder)
    dtype = check_dtype(dtype, str(folder))
    cfg_path = folder / "config.json"
    try:
        raw = json.loads(cfg_path.read_text())
    except OSError as e:
        raise LMError(f"{cfg_path}: cannot read ({e.strerror}); expected a Hugging Face config.json") from None
    except ValueError as e:
        raise LMError(f"{cfg_path}: not valid JSON ({e})") from None
    config = LMConfig.from_hf(raw, source=str(cfg_path))
    model = LanguageModel(config)
    tensors, ignored, dtypes = {}, [], {}
    for path in _weight_files(folder):
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                try:
                    dest = hf_destination(config.arch, name, config.tie_word_embeddings)
                except KeyError:
                    raise LMError(f"{path}: tensor {name} is not part of a {config.arch} causal LM as jaxrec "
                                  f"knows it; expected transformers' {config.arch} tensor names") from None
                if dest is None:
                    ignored.append(name)
                    continue
                arr = f.get_tensor(name)
                dtypes[str(arr.dtype)] = dtypes.get(str(arr.dtype), 0) + 1
                tensors[name] = (dest, to_dtype(arr, dtype))
    params = assemble(model, tensors, str(folder), layout)
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()
    tokenizer = Tokenizer.from_hf_folder(folder, config) if has_tokenizer else None
    report = {"source": str(folder), "seconds": time.perf_counter() - t0, "tensor_dtypes": dtypes,
              "ignored": ignored, "dtype": str(dtype)}
    return LoadedLM(model, params, tokenizer, report)
