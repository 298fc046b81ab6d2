"""Load a Llama-architecture GGUF file (llama.cpp's format) into a params pytree + tokenizer.

Read with the ``gguf`` package (``GGUFReader``, memory-mapped) and dequantized with
``gguf.quants.dequantize`` to float32, then cast to the requested dtype (float32 or
bfloat16). Every check (architecture, tensor types, names, shapes, tokenizer metadata) runs
before any tensor is dequantized.

llama.cpp's converter (convert_hf_to_gguf.py, ``LlamaModel.permute``) reorders the rows of
the query and key projections so that its interleaved ("GPT-J") rotary layout reproduces
Hugging Face's rotate-half layout: per head, rows ``[0..D/2) | [D/2..D)`` are interleaved as
``0, D/2, 1, D/2+1, ...``. ``unpermute_qk`` undoes this (its inverse), so the weights run
with the rotate-half rotary embedding of ``jaxrec.lm.layers``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import LMConfig
from .errors import LMError
from .model import LanguageModel
from .tokenizer import Tokenizer
from .weights import Dest, LoadedLM, assemble, check_dtype, to_dtype

SUPPORTED_ARCHS = ("llama",)
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                   "Q5_K", "Q6_K")
# GGUF tensor name (per block: after "blk.N.") -> (pure-dict path, transpose, unpermute by "q"/"k" heads)
_BLOCK = {
    "attn_norm.weight": (("layers", "input_layernorm", "scale"), False, None),
    "ffn_norm.weight": (("layers", "post_attention_layernorm", "scale"), False, None),
    "attn_q.weight": (("layers", "self_attn", "q_proj", "kernel"), True, "q"),
    "attn_k.weight": (("layers", "self_attn", "k_proj", "kernel"), True, "k"),
    "attn_v.weight": (("layers", "self_attn", "v_proj", "kernel"), True, None),
    "attn_output.weight": (("layers", "self_attn", "o_proj", "kernel"), True, None),
    "ffn_gate.weight": (("layers", "mlp", "gate_proj", "kernel"), True, None),
    "ffn_up.weight": (("layers", "mlp", "up_proj", "kernel"), True, None),
    "ffn_down.weight": (("layers", "mlp", "down_proj", "kernel"), True, None),
}
_TOP = {
    "token_embd.weight": (("embed_tokens", "embedding"), False, None),
    "output_norm.weight": (("norm", "scale"), False, None),
    "output.weight": (("lm_head", "kernel"), True, None),
}


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a query/key weight ``w`` [n_heads * D, in].

    The converter's permute is ``w.reshape(n, 2, D/2, in).swapaxes(1, 2).reshape(w.shape)``;
    this is its inverse, ``w.reshape(n, D/2, 2, in).swapaxes(1, 2).reshape(w.shape)``.
    ``n_heads`` is the number of query heads for ``attn_q`` and of key/value heads for ``attn_k``.
    """
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise LMError(f"unpermute_qk: {rows} rows are not n_heads={n_heads} heads of an even size")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_size(path: Path) -> int | None:
    """The bytes a GGUF file must hold: the end of its last tensor's data (header, tensor
    infos, alignment and every tensor, as ``gguf.GGUFReader`` lays them out), read from the
    header alone. None when the header itself cannot be read (cut short, or not GGUF)."""
    import gguf

    class _Header(gguf.GGUFReader):  # parses the header as GGUFReader does, maps no tensor data
        end = 0

        def _build_tensors(self, start_offs, fields):
            for field in fields:
                _, _, _, dims, raw_dtype, offset = field.parts
                block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(raw_dtype[0]))]
                n_bytes = int(np.prod(dims, dtype=np.int64)) * size // block
                self.end = max(self.end, int(start_offs + offset[0]) + n_bytes)
            self.end = max(self.end, start_offs)

    try:
        return _Header(str(path)).end
    except (ValueError, IndexError, KeyError, OSError, OverflowError):
        return None


def _reader(path: Path):
    import gguf

    if not path.is_file():
        raise LMError(f"{path}: no such file; expected a GGUF model file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise LMError(f"{path}: cannot read ({e.strerror}); expected a GGUF model file") from None
    if magic != b"GGUF":
        what = f"{size} bytes" if size < 4 else f"starts with {magic!r}"
        raise LMError(f"{path}: cannot read as GGUF: not a GGUF file ({what}); expected a GGUF v2/v3 file "
                      f"(magic b'GGUF')")
    want = expected_size(path)
    if want is None:
        raise LMError(f"{path}: truncated or damaged GGUF header (the file has {size:,} bytes and its header cannot "
                      f"be read to the end); expected a complete GGUF file: download or copy it again")
    if size < want:
        raise LMError(f"{path}: truncated or incomplete: {size:,} bytes, expected {want:,} bytes (the header's "
                      f"tensors end there; {want - size:,} bytes missing); download or copy the file again")
    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, IndexError, KeyError, OSError) as e:
        raise LMError(f"{path}: cannot read as GGUF ({e}); expected a GGUF v2/v3 file") from None


def _field(reader, path: Path, key: str, default=None, required: bool = False):
    field = reader.get_field(key)
    if field is None:
        if required:
            raise LMError(f"{path}: metadata {key} missing; expected it in a llama GGUF file")
        return default
    return field.contents()


def gguf_config(reader, path: Path) -> LMConfig:
    """LMConfig from the ``general.*`` / ``llama.*`` / ``tokenizer.ggml.*`` metadata (read only)."""
    arch = _field(reader, path, "general.architecture", required=True)
    if arch not in SUPPORTED_ARCHS:
        raise LMError(f"{path}: general.architecture is {arch!r}; expected one of {SUPPORTED_ARCHS}")

    def get(key, default=None, required=False):
        return _field(reader, path, f"{arch}.{key}", default, required)

    if int(get("expert_count", 0) or 0) > 0:
        raise LMError(f"{path}: {arch}.expert_count is {get('expert_count')}; expected a dense model (no experts)")
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise LMError(f"{path}: {arch}.rope.scaling.type is {scaling!r}; expected 'none' (rope scaling unsupported)")
    hidden = int(get("embedding_length", required=True))
    heads = int(get("attention.head_count", required=True))
    head_dim = int(get("attention.key_length", hidden // heads))
    rope_dim = int(get("rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise LMError(f"{path}: {arch}.rope.dimension_count is {rope_dim}; expected the head size {head_dim} "
                      f"(partial rotary is unsupported)")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    vocab = get("vocab_size", len(tokens.data) if tokens is not None else None)
    if vocab is None:
        vocab = next(int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight")
    names = {t.name for t in reader.tensors}

    def special(key):
        v = _field(reader, path, f"tokenizer.ggml.{key}_token_id")
        return None if v is None else int(v)

    return LMConfig(
        arch="llama", vocab_size=int(vocab), hidden_size=hidden, num_layers=int(get("block_count", required=True)),
        num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)), head_dim=head_dim,
        intermediate_size=int(get("feed_forward_length", required=True)),
        max_position_embeddings=int(get("context_length", required=True)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", required=True)),
        rope_theta=float(get("rope.freq_base", 10000.0)), tie_word_embeddings="output.weight" not in names,
        bos_id=special("bos"), eos_id=special("eos"), pad_id=special("padding"), source=str(path))


def gguf_tokenizer(reader, path: Path, config: LMConfig | None = None) -> Tokenizer:
    """The byte-level BPE tokenizer of the ``tokenizer.ggml.*`` metadata.

    Requires ``tokenizer.ggml.model`` "gpt2", tokens, merges and an eos id (and a bos id when
    ``add_bos_token`` is set); pad defaults to None. Raises LMError naming the key otherwise.
    """
    kind = _field(reader, path, "tokenizer.ggml.model", required=True)
    if kind != "gpt2":
        raise LMError(f"{path}: tokenizer.ggml.model is {kind!r}; expected 'gpt2' (byte-level BPE)")
    tokens = _field(reader, path, "tokenizer.ggml.tokens", required=True)
    merges = _field(reader, path, "tokenizer.ggml.merges", required=True)
    types = _field(reader, path, "tokenizer.ggml.token_type")
    ids = {}
    for key in ("bos", "eos", "padding"):
        v = _field(reader, path, f"tokenizer.ggml.{key}_token_id")
        ids[key] = None if v is None else int(v)
    add_bos = bool(_field(reader, path, "tokenizer.ggml.add_bos_token", False))
    if ids["eos"] is None:
        raise LMError(f"{path}: metadata tokenizer.ggml.eos_token_id missing; expected the end-of-sequence "
                      f"token id (generation stops on it)")
    if add_bos and ids["bos"] is None:
        raise LMError(f"{path}: tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing; "
                      f"expected the beginning-of-sequence token id")
    if config is not None and len(tokens) > config.vocab_size:
        raise LMError(f"{path}: {len(tokens)} tokens for a model of {config.vocab_size} embeddings")
    return Tokenizer.from_bpe(
        tokens, merges, token_types=[int(t) for t in types] if types is not None else None,
        pre=_field(reader, path, "tokenizer.ggml.pre", "gpt2"), bos_id=ids["bos"], eos_id=ids["eos"],
        pad_id=ids["padding"], add_bos=add_bos, chat_template=_field(reader, path, "tokenizer.chat_template"),
        source=str(path))


def _plan(reader, path: Path, config: LMConfig) -> dict:
    """{tensor name: (Dest, unpermute heads or None)} for every tensor; LMError for unknown names/types."""
    import jax

    bad_types = [f"{t.name} ({t.tensor_type.name})" for t in reader.tensors
                 if t.tensor_type.name not in SUPPORTED_TYPES]
    if bad_types:
        raise LMError(f"{path}: {len(bad_types)} tensor(s) of an unsupported quantization type: "
                      + ", ".join(bad_types[:6]) + (" ..." if len(bad_types) > 6 else "")
                      + f"; expected one of {', '.join(SUPPORTED_TYPES)}")
    plan = {}
    want_shapes = {tuple(k.key for k in p): s.shape for p, s in
                   jax.tree_util.tree_leaves_with_path(LanguageModel(config).param_shapes())}
    for t in reader.tensors:
        if t.name.startswith("blk."):
            _, idx, rest = t.name.split(".", 2)
            entry = _BLOCK.get(rest)
            layer = int(idx) if idx.isdigit() else None
        else:
            entry, layer = _TOP.get(t.name), None
        if entry is None:
            hint = " (rope scaling factors are unsupported)" if t.name == "rope_freqs.weight" else ""
            raise LMError(f"{path}: tensor {t.name} is not part of a llama model as jaxrec knows it{hint}; "
                          f"expected {', '.join(_TOP)} and blk.N.{{{', '.join(_BLOCK)}}}")
        dest_path, transpose, perm = entry
        want = want_shapes.get(dest_path)
        if want is not None and dest_path[0] == "layers":
            want = want[1:]
        got = tuple(int(x) for x in reversed(t.shape))  # GGUF lists dims fastest-first
        if want is not None and (got[::-1] if transpose else got) != want:
            raise LMError(f"{path}: tensor {t.name} has shape {got}; expected "
                          f"{want[::-1] if transpose else want} for this config")
        heads = {"q": config.num_heads, "k": config.num_kv_heads}.get(perm)
        plan[t.name] = (Dest(dest_path, layer, transpose), heads)
    return plan


def load_gguf(path: str | Path, dtype=np.float32, layout: str = "list") -> LoadedLM:
    """Load a llama GGUF file: ``LoadedLM(model, params, tokenizer, report)``.

    ``dtype`` float32 or bfloat16: the params' dtype after dequantization; ``layout`` "list" (one
    dict per block: fastest CPU decoding) or "stacked" (see jaxrec.lm.model). The report holds
    ``source``, ``seconds``, ``tensor_types`` (count per GGUF type) and ``dtype``.
    Raises LMError naming the file (and tensor / metadata key) before dequantizing anything
    for: another architecture, an unsupported quantization type, rope scaling, an unknown
    tensor, a tokenizer that is not byte-level BPE or lacks an eos id.
    """
    import gguf

    t0 = time.perf_counter()
    path = Path(path)
    dtype = check_dtype(dtype, str(path))
    reader = _reader(path)
    config = gguf_config(reader, path)
    model = LanguageModel(config)
    tokenizer = gguf_tokenizer(reader, path, config)
    plan = _plan(reader, path, config)
    tensors, types = {}, {}
    for t in reader.tensors:
        dest, heads = plan[t.name]
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        if heads is not None:
            arr = unpermute_qk(arr, heads)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        tensors[t.name] = (dest, to_dtype(arr, dtype))
    params = assemble(model, tensors, str(path), layout)
    report = {"source": str(path), "seconds": time.perf_counter() - t0, "tensor_types": types, "dtype": str(dtype)}
    return LoadedLM(model, params, tokenizer, report)
