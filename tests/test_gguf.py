"""GGUF loading (jaxrec.lm.load_gguf) against the model the file was written from and against
transformers' own GGUF loader, on tiny llama files written here the way llama.cpp writes them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

import jax.numpy as jnp  # noqa: E402

from lm_helpers import (CORPUS, hf_generate, permute_qk, tiny_llama, torch_logits, train_bpe,  # noqa: E402
                        write_llama_gguf)
from jaxrec.lm import LMError, greedy_generate, load_gguf, unpermute_qk  # noqa: E402


@pytest.fixture(scope="module")
def bpe():
    return train_bpe()


@pytest.fixture(scope="module")
def ids():
    rng = np.random.default_rng(0)
    return rng.integers(3, 300, (2, 11))


def test_unpermute_qk_hand_case():
    # one head of size 4: llama.cpp stores rows (0, 2, 1, 3): the two halves interleaved
    rows = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    stored = rows[[0, 2, 1, 3]]
    np.testing.assert_array_equal(unpermute_qk(stored, 1), rows)
    np.testing.assert_array_equal(permute_qk(rows, 1), stored)
    w = np.random.default_rng(0).normal(size=(2 * 8, 5)).astype(np.float32)  # 2 heads of size 8
    np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 2), 2), w)
    assert not np.array_equal(permute_qk(w, 2), w)
    with pytest.raises(LMError, match="not n_heads=3 heads"):
        unpermute_qk(w, 3)


def test_gguf_f32_matches_the_source_model(tmp_path, bpe, ids):
    tokens, merges = bpe
    src = tiny_llama(len(tokens), tie=False)
    path = write_llama_gguf(tmp_path / "tiny.gguf", src, tokens, merges, qtype="F32")
    lm = load_gguf(path)
    cfg = lm.model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (2, 64, 4, 2, 16)
    assert not cfg.tie_word_embeddings and cfg.eos_id == 2 and cfg.max_position_embeddings == 64
    assert lm.report["tensor_types"] == {"F32": 2 * 9 + 3}
    # the permutation is undone exactly: the query kernel is the HF weight transposed
    q = src.model.layers[1].self_attn.q_proj.weight.detach().numpy()
    np.testing.assert_array_equal(np.asarray(lm.params["layers"][1]["self_attn"]["q_proj"]["kernel"]), q.T)
    ref = torch_logits(src, ids)
    got = np.asarray(lm.model.forward(lm.params, ids)[0])
    assert np.abs(ref).max() > 1.0  # logits on a real scale, so the tolerance means something
    np.testing.assert_allclose(got, ref, atol=2e-4 * np.abs(ref).max(), rtol=0)


def test_gguf_quantized_matches_transformers_gguf(tmp_path, bpe, ids):
    tokens, merges = bpe
    src = tiny_llama(len(tokens), tie=True, seed=1)
    path = write_llama_gguf(tmp_path / "tiny-q.gguf", src, tokens, merges, qtype="Q4_1", embed_qtype="Q8_0")
    lm = load_gguf(path)
    assert lm.model.config.tie_word_embeddings
    assert lm.report["tensor_types"] == {"Q8_0": 1, "Q4_1": 2 * 7, "F32": 2 * 2 + 1}
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    mask = np.ones_like(ids)
    mask[1, :4] = 0  # left padding
    ref = torch_logits(ref_model, ids, mask)
    got = np.asarray(lm.model.forward(lm.params, ids, attention_mask=mask)[0])
    keep = mask.astype(bool)
    np.testing.assert_allclose(got[keep], ref[keep], atol=2e-4 * np.abs(ref).max(), rtol=0)
    # quantization changed the weights (so this is not the F32 test again)
    assert np.abs(got[keep] - torch_logits(src, ids, mask)[keep]).max() > 1e-3
    out = greedy_generate(lm.model, lm.params, ids, mask, max_new_tokens=8, eos_id=2, repetition_penalty=1.5)
    np.testing.assert_array_equal(np.asarray(out), hf_generate(ref_model, ids, mask, max_new_tokens=8, pad=2,
                                                                repetition_penalty=1.5))
    # bfloat16 params: same model, coarser numbers
    lm16 = load_gguf(path, dtype=jnp.bfloat16)
    assert lm16.params["layers"][0]["mlp"]["up_proj"]["kernel"].dtype == jnp.bfloat16
    got16 = np.asarray(lm16.model.forward(lm16.params, ids, attention_mask=mask)[0])
    assert got16.dtype == np.float32
    assert np.abs(got16[keep] - got[keep]).max() < 0.05 * np.abs(got).max()


def test_gguf_tokenizer_matches_transformers(tmp_path, bpe):
    tokens, merges = bpe
    path = write_llama_gguf(tmp_path / "tok.gguf", tiny_llama(len(tokens)), tokens, merges)
    tok = load_gguf(path).tokenizer
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    texts = CORPUS[:5] + ["", " ", "  two  spaces\n\nnewlines\ttab", "<|im_start|>user\nhi<|im_end|>\n",
                          "ünïcödé ☃ 🙂", "x<|endoftext|>y"]
    for text in texts:
        assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
        assert tok.decode(tok.encode(text), skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>") == [1] and (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    msgs = [{"role": "user", "content": "Hi"}]
    want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(msgs, add_generation_prompt=True) == want


# ------------------------------------------------------------------------------ bad input
def test_gguf_bad_files_name_the_file_and_the_expectation(tmp_path, bpe):
    tokens, merges = bpe
    src = tiny_llama(len(tokens))
    other = write_llama_gguf(tmp_path / "qwen.gguf", src, tokens, merges, arch="qwen2")
    with pytest.raises(LMError, match=r"qwen\.gguf: general\.architecture is 'qwen2'; expected one of \('llama',\)"):
        load_gguf(other)
    raw = np.zeros((96, 66), np.uint8)  # one IQ2_XXS block (256 values in 66 bytes) per row
    iq = write_llama_gguf(tmp_path / "iq.gguf", src, tokens, merges, extra_tensors={"blk.0.extra": (raw, "IQ2_XXS")})
    with pytest.raises(LMError, match=r"iq\.gguf: 1 tensor\(s\) of an unsupported quantization type: "
                                      r"blk\.0\.extra \(IQ2_XXS\); expected one of F32, F16"):
        load_gguf(iq)
    no_eos = write_llama_gguf(tmp_path / "noeos.gguf", src, tokens, merges, skip_keys=("eos",))
    with pytest.raises(LMError, match=r"noeos\.gguf: metadata tokenizer\.ggml\.eos_token_id missing"):
        load_gguf(no_eos)
    no_layers = write_llama_gguf(tmp_path / "nolayers.gguf", src, tokens, merges, skip_keys=("block_count",))
    with pytest.raises(LMError, match=r"nolayers\.gguf: metadata llama\.block_count missing"):
        load_gguf(no_layers)
    spm = write_llama_gguf(tmp_path / "pre.gguf", src, tokens, merges, pre="deepseek-coder")
    with pytest.raises(LMError, match=r"pre\.gguf: tokenizer\.ggml\.pre is 'deepseek-coder'; expected one of gpt2"):
        load_gguf(spm)
    stray = write_llama_gguf(tmp_path / "stray.gguf", src, tokens, merges,
                             extra_tensors={"rope_freqs.weight": (np.ones(8, np.float32), "F32")})
    with pytest.raises(LMError, match=r"stray\.gguf: tensor rope_freqs\.weight .*rope scaling"):
        load_gguf(stray)
    (tmp_path / "text.gguf").write_text("not a gguf file at all")
    with pytest.raises(LMError, match=r"text\.gguf: cannot read as GGUF"):
        load_gguf(tmp_path / "text.gguf")
    with pytest.raises(LMError, match=r"missing\.gguf: no such file"):
        load_gguf(tmp_path / "missing.gguf")
    with pytest.raises(LMError, match="dtype float16 requested; expected float32 or bfloat16"):
        load_gguf(other, dtype=jnp.float16)


def test_gguf_prompt_longer_than_context(tmp_path, bpe):
    tokens, merges = bpe
    lm = load_gguf(write_llama_gguf(tmp_path / "ctx.gguf", tiny_llama(len(tokens)), tokens, merges))
    ids = np.full((1, 60), 5)
    with pytest.raises(LMError, match=r"ctx\.gguf\); expected at most 59 prompt tokens"):
        greedy_generate(lm.model, lm.params, ids, max_new_tokens=5, eos_id=2)
    with pytest.raises(LMError, match=r"a sequence of 70 tokens exceeds the model's context of 64"):
        lm.model.forward(lm.params, np.full((1, 70), 5))
