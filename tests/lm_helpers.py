"""Tiny language models for the jaxrec.lm tests: a trained byte-level BPE vocabulary, random
transformers models saved as safetensors folders, and llama GGUF files written the way
llama.cpp's converter writes them (Q/K rows permuted for its rotary layout)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A user who watched The Matrix (1999) may like Inception, Heat and Alien.",
    "Recommend one next movie for this user to watch next from the following set.",
    "Hello world! Hello there, general Kenobi. 12345 + 678 = 13023",
    "naïve café déjà vu, 東京 and emoji 🙂 are bytes too",
] * 4


@functools.lru_cache(maxsize=4)
def train_bpe(vocab_size: int = 320):
    """(tokens [V] in id order, merges ["a b", ...]) of a byte-level BPE trained on CORPUS (cached)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tuple(tokens), tuple(merges)


def perturb(model, seed: int = 0) -> None:
    """Give norms and biases non-trivial values (transformers initializes them to 1 and 0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def tiny_llama(vocab_size: int, tie: bool = False, seed: int = 0, **kw):
    """A random transformers LlamaForCausalLM: 2 layers, width 64, 4 heads / 2 KV heads, SwiGLU 96."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
               rope_theta=10000.0, tie_word_embeddings=tie, initializer_range=0.1, bos_token_id=1,
               eos_token_id=2, pad_token_id=2)
    cfg.update(kw)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    perturb(model, seed)
    return model.eval()


def tiny_opt(vocab_size: int = 101, seed: int = 0, **kw):
    """A random transformers OPTForCausalLM: 2 layers, width 32, 4 heads, ReLU FFN 48."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=64, init_std=0.1, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    cfg.update(kw)
    model = OPTForCausalLM(OPTConfig(**cfg))
    perturb(model, seed)
    return model.eval()


def torch_logits(model, ids, mask=None):
    """float32 logits [B, T, V] of a transformers causal LM."""
    import torch

    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        return model(input_ids=torch.tensor(ids), **kw).logits.float().numpy()


def hf_generate(model, ids, mask=None, *, max_new_tokens, pad=0, **kw):
    """transformers greedy generation: the new tokens [B, max_new_tokens], finished rows padded with ``pad``."""
    import torch

    ids = np.asarray(ids)
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=pad, attention_mask=None if mask is None else torch.tensor(mask), **kw)
    new = out[:, ids.shape[1]:].numpy()
    return np.pad(new, ((0, 0), (0, max_new_tokens - new.shape[1])), constant_values=pad)


def save_hf(model, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py ``LlamaModel.permute`` (HF rotate-half rows -> GGUF interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {  # HF name inside a layer -> GGUF name inside blk.N
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_llama_gguf(path: Path, model, tokens, merges, *, qtype: str = "F32", embed_qtype: str | None = None,
                     arch: str = "llama", pre: str = "gpt2", skip_keys=(), extra_tensors=None) -> Path:
    """Write ``model`` (a transformers Llama) as a llama.cpp-style GGUF file.

    2-D weights are stored as ``qtype`` (F32, Q8_0, Q4_1, ...; 1-D norms stay F32), the token
    embedding as ``embed_qtype`` (default ``qtype``); q/k rows permuted with ``permute_qk``.
    ``skip_keys`` leaves metadata keys out; ``extra_tensors`` {name: (bytes array, GGML type)}
    adds raw tensors.
    """
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    meta = {
        "block_count": lambda: w.add_block_count(cfg.num_hidden_layers),
        "context_length": lambda: w.add_context_length(cfg.max_position_embeddings),
        "embedding_length": lambda: w.add_embedding_length(cfg.hidden_size),
        "feed_forward_length": lambda: w.add_feed_forward_length(cfg.intermediate_size),
        "head_count": lambda: w.add_head_count(cfg.num_attention_heads),
        "head_count_kv": lambda: w.add_head_count_kv(cfg.num_key_value_heads),
        "rope_freq_base": lambda: w.add_rope_freq_base(cfg.rope_parameters["rope_theta"]),
        "rms_eps": lambda: w.add_layer_norm_rms_eps(cfg.rms_norm_eps),
        "rope_dim": lambda: w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads),
        "vocab_size": lambda: w.add_vocab_size(cfg.vocab_size),
        "tokenizer_model": lambda: w.add_tokenizer_model("gpt2"),
        "pre": lambda: w.add_tokenizer_pre(pre),
        "tokens": lambda: w.add_token_list(tokens),
        "token_types": lambda: w.add_token_types([3 if t in SPECIALS else 1 for t in tokens]),
        "merges": lambda: w.add_token_merges(merges),
        "bos": lambda: w.add_bos_token_id(1),
        "eos": lambda: w.add_eos_token_id(2),
        "pad": lambda: w.add_pad_token_id(2),
        "add_bos": lambda: w.add_add_bos_token(False),
        "chat_template": lambda: w.add_chat_template(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    }
    for key, add in meta.items():
        if key not in skip_keys:
            add()

    def put(name, arr, q):
        arr = np.ascontiguousarray(arr, np.float32)
        if arr.ndim == 1 or q == "F32":
            w.add_tensor(name, arr)
        else:
            qt = gguf.GGMLQuantizationType[q]
            w.add_tensor(name, gguf.quants.quantize(arr, qt), raw_dtype=qt)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    put("token_embd.weight", sd["model.embed_tokens.weight"], embed_qtype or qtype)
    put("output_norm.weight", sd["model.norm.weight"], "F32")
    if not cfg.tie_word_embeddings:
        put("output.weight", sd["lm_head.weight"], qtype)
    for i in range(cfg.num_hidden_layers):
        for hf, gg in GGUF_NAMES.items():
            arr = sd[f"model.layers.{i}.{hf}"]
            if gg == "attn_q.weight":
                arr = permute_qk(arr, cfg.num_attention_heads)
            elif gg == "attn_k.weight":
                arr = permute_qk(arr, cfg.num_key_value_heads)
            put(f"blk.{i}.{gg}", arr, qtype)
    for name, (raw, qt) in (extra_tensors or {}).items():
        w.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[qt])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
