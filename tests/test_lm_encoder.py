"""jaxrec.text.lm_encoder: an LM's pooled hidden states as item-text embeddings.

References: a tiny random transformers Llama (torch) run on each text alone, its final hidden
states (``model.model(...).last_hidden_state``, after the last RMSNorm) pooled in numpy; numpy
pooling of random arrays; the LLMInit embedding cache (a registered LM encoder by name).
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lm_helpers import save_hf, tiny_llama, train_bpe  # noqa: E402

from jaxrec.init import embeddings as embeddings_mod  # noqa: E402
from jaxrec.init import encoder_cache_id, item_embeddings, load_encoder  # noqa: E402
from jaxrec.lm import Tokenizer, load_hf  # noqa: E402
from jaxrec.registry import TEXT_ENCODERS, TextEncoderKind  # noqa: E402
from jaxrec.text.lm_encoder import LMTextEncoder, pool_hidden  # noqa: E402

TEXTS = ["Title: Heat, Year: 1995, Genres: Action Crime",
         "Title: Toy Story, Year: 1995, Genres: Animation Children's Comedy",
         "The quick brown fox",
         "naïve café <|im_end|> 12345 + 678 = 13023, a longer text that spans more tokens than the others do"]


def np_pool(h, m, pooling):
    out = []
    for hb, mb in zip(h, m):
        idx = np.nonzero(mb)[0]
        out.append(hb[idx].mean(0) if pooling == "mean" else hb[idx[-1]])
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_lm_encoder_pool_hidden_matches_numpy_left_and_right_padding(pooling):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(4, 7, 5)).astype(np.float32)
    m = np.zeros((4, 7), np.int32)
    m[0, :7] = 1
    m[1, :3] = 1  # right-padded
    m[2, 4:] = 1  # left-padded
    m[3, 2:5] = 1  # both
    np.testing.assert_allclose(np.asarray(pool_hidden(h, m, pooling)), np_pool(h, m, pooling), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="pooling='max'"):
        pool_hidden(h, m, "max")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tokens, merges = train_bpe()
    tok = Tokenizer.from_bpe(tokens, merges, token_types=[3 if i < 3 else 1 for i in range(len(tokens))],
                             bos_id=1, eos_id=2, pad_id=2)
    ref = tiny_llama(len(tokens))
    lm = load_hf(save_hf(ref, tmp_path_factory.mktemp("tiny_llama")))
    return ref, lm, tok


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_lm_encoder_equals_torch_hidden_states_pooled_in_numpy(tiny, pooling):
    ref, lm, tok = tiny
    enc = LMTextEncoder(lm.model, lm.params, tok, pooling=pooling, name="tiny")
    got = enc.encode(TEXTS, batch_size=2, show_progress_bar=False)  # 2 batches, padded rows and lengths
    assert got.shape == (len(TEXTS), 64) and got.dtype == np.float32 and enc.dim == 64
    want = []
    for text in TEXTS:  # each text alone: no padding at all in the reference
        ids = tok.encode_plain(text)[:64]  # truncated to the tiny LM's context of 64
        with torch.no_grad():
            h = ref.model(input_ids=torch.tensor([ids])).last_hidden_state.float().numpy()
        want.append(np_pool(h, np.ones((1, len(ids))), pooling)[0])
    np.testing.assert_allclose(got, np.stack(want), rtol=2e-4, atol=2e-4)
    # the special token's string in the text is data: split into ordinary tokens
    assert tok.token_id("<|im_end|>") not in enc.tokenize(TEXTS)[3]
    # a vector does not depend on the batch it was encoded in
    np.testing.assert_allclose(enc.encode(TEXTS[3:], show_progress_bar=False)[0], got[3], rtol=1e-5, atol=1e-5)


def test_lm_encoder_truncates_and_checks_arguments(tiny):
    _, lm, tok = tiny
    enc = LMTextEncoder(lm.model, lm.params, tok, max_tokens=5)
    assert max(len(t) for t in enc.tokenize(TEXTS)) == 5
    with pytest.raises(ValueError, match="pooling='cls'"):
        LMTextEncoder(lm.model, lm.params, tok, pooling="cls")
    with pytest.raises(ValueError, match="max_tokens=0"):
        LMTextEncoder(lm.model, lm.params, tok, max_tokens=0)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        enc.encode(["a", 3])


def test_lm_encoder_registered_by_name_goes_through_the_llminit_cache(tiny, tmp_path, monkeypatch):
    _, lm, tok = tiny
    loads = []

    def load():
        loads.append(1)
        return LMTextEncoder(lm.model, lm.params, tok, name="tiny-lm-mean")

    TEXT_ENCODERS.register("tiny-lm", TextEncoderKind(load, cache_id="tiny-lm-mean", dim=64))
    try:
        assert encoder_cache_id("tiny-lm") == "tiny-lm-mean" and encoder_cache_id("TINY-LM") == "tiny-lm-mean"
        enc = load_encoder("tiny-lm")
        assert enc.name == "tiny-lm-mean" and enc.dim == 64 and loads == [1]
        ds = types.SimpleNamespace(
            name="ml-100k", train=types.SimpleNamespace(item_ids=np.array(["1", "2"])),
            item_features={"movie_title": [["Toy", "Story"], ["Heat"]], "release_year": ["1995"] * 2,
                           "class": [["Comedy"], ["Action", "Crime"]]})
        config = types.SimpleNamespace(embeddings=None, encoder="tiny-lm")
        emb = item_embeddings(ds, config, cache_dir=tmp_path, progress=False)
        texts = ["Title: Toy Story, Year: 1995, Genres: Comedy", "Title: Heat, Year: 1995, Genres: Action Crime"]
        np.testing.assert_allclose(emb, enc.encode(texts, show_progress_bar=False), atol=1e-6)
        (manifest,) = tmp_path.glob("*.json")
        assert json.loads(manifest.read_text())["encoder"] == "tiny-lm-mean"
        monkeypatch.setattr(embeddings_mod, "load_encoder", lambda *a, **k: pytest.fail("a cache hit must not load"))
        np.testing.assert_array_equal(item_embeddings(ds, config, cache_dir=tmp_path, progress=False), emb)
    finally:
        TEXT_ENCODERS.unregister("tiny-lm")


def test_lm_encoder_smollm2_names_registered():
    assert encoder_cache_id("smollm2") == "SmolLM2-135M-Instruct.Q4_1-mean" == encoder_cache_id("smollm2-mean")
    assert encoder_cache_id("smollm2-last") == "SmolLM2-135M-Instruct.Q4_1-last"
    assert TEXT_ENCODERS.get("smollm2").dim == 576
