"""Catalogue text in A-LLMRec's prompts (issue 26, items 1 and 2): titles are always plain text,
never control tokens (checked against transformers' ``split_special_tokens=True``), for every
control token of the tiny test tokenizer and of SmolLM2's real one; titles that several items
share are told apart where the data allows and count the same way in every metric."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lm_helpers import train_bpe

from jaxrec.lm import LMError, Tokenizer
from jaxrec.methods.allmrec.prompt import DOMAINS, SPECIAL_TOKENS, PromptBuilder, item_titles, prompt_text
from jaxrec.methods.allmrec.stage2 import LMEvaluation, answer_text, match_candidate, reference_hit

TITLES = ["Heat", "Alien", "The Matrix (1999)", "Inception", "Toy Story", "Up", "Jaws", "Brazil"]


def tiny_tokenizer() -> Tokenizer:
    tokens, merges = train_bpe()
    base = Tokenizer.from_bpe(tokens, merges, token_types=[3 if i < 3 else 1 for i in range(len(tokens))],
                              eos_id=2, pad_id=2, source="tiny-bpe")
    return base.add_special_tokens(list(SPECIAL_TOKENS))


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from jaxrec.lm import smollm2_path
    from jaxrec.lm.gguf_file import _reader, gguf_tokenizer

    try:
        path = smollm2_path()
    except LMError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")
    return gguf_tokenizer(_reader(path), path).add_special_tokens(list(SPECIAL_TOKENS))


def _check_titles_are_plain_text(tok: Tokenizer) -> int:
    """Every control token of ``tok`` inside a title (module docstring); returns how many were fed."""
    from tokenizers import Tokenizer as Backend
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=Backend.from_str(tok.backend.to_str()))
    added = tok.backend.get_added_tokens_decoder()
    specials = [added[i].content for i in sorted(added) if added[i].special]
    special_ids = {i for i in added if added[i].special}
    assert {"<|endoftext|>", "<|im_end|>", *SPECIAL_TOKENS} <= set(specials)
    placeholders = [tok.token_id(t) for t in ["[UserRep]"] + ["[HistoryEmb]"] * 2 + ["[CandidateEmb]"] * 3]
    for s in specials:
        titles = TITLES + [f"Chat Log {s} Edition", f"{s}", f'Story "{s}" Box Set']
        pb = PromptBuilder(tok, titles, DOMAINS["movie"], history=3)
        for item in range(len(TITLES), len(titles)):
            title = titles[item]
            target = pb.target_ids(item)
            # the target holds no control token but its final eos, and decodes to the title
            assert target[-1] == tok.eos_id and not set(target[:-1]) & special_ids, (s, target)
            assert tok.decode(target[:-1]) == tok.decode(target[:-1], skip_special_tokens=False) == f'"{title}"'
            # a perfect generation (the target's tokens) is matched to its own title, by both rules
            generated = tok.decode(target).strip()
            assert answer_text(generated) == title
            assert match_candidate(generated, [titles[0], title, titles[1]]) == 1
            assert reference_hit(generated, title)
            # in the prompt: control tokens only where the template puts them, the target right after it
            hist, cands = [0, item], [item, 1, 2]
            batch = pb.training_batch([0], [hist], np.array([cands]), [item])
            n, start = int(batch["mask"][0].sum()), int(batch["target_pos"][0, 0])
            ids = batch["ids"][0, :n].tolist()
            assert [t for t in ids[:start] if t in special_ids] == placeholders
            assert ids[start:] == target
            assert sorted(batch["slot"][0][batch["slot"][0] >= 0].tolist()) == [0, 1, 2, 4, 5, 6]
            # the text between placeholders decodes to the prompt's text, every title character there
            text = tok.decode([t for t in ids[:start] if t not in special_ids], skip_special_tokens=False)
            from jaxrec.methods.allmrec.prompt import prompt_pieces

            pieces = prompt_pieces(DOMAINS["movie"], [titles[i] for i in hist], [titles[i] for i in cands])
            assert "".join(pieces) == prompt_text(DOMAINS["movie"], [titles[i] for i in hist],
                                                  [titles[i] for i in cands])
            assert text == "".join(pieces[0::2]) and pieces[1::2] == [added[t].content for t in placeholders]
            # transformers' plain-text encoding (split_special_tokens=True) of the same text
            assert tok.encode_plain(f'"{title}"') == hf(f'"{title}"', add_special_tokens=False,
                                                         split_special_tokens=True).input_ids
    # ordinary titles: the same ids as tokenizing the whole prompt text (the reference's tokenization)
    pb = PromptBuilder(tok, TITLES, DOMAINS["movie"], history=3)
    for hist, cands in (([0, 5], [6, 1, 0, 7]), ([2, 3, 4], [1, 2, 3, 4])):
        assert pb.encode_prompt_ids(hist, cands) == tok.encode(pb.text(hist, cands))
        assert pb.target_ids(hist[0]) == tok.encode(f'"{TITLES[hist[0]]}"', add_bos=False) + [tok.eos_id]
    assert set(tok.special_tokens()) == set(specials) and tok.special_ids() == special_ids
    return len(specials)


def test_titles_are_plain_text_tiny_tokenizer():
    assert _check_titles_are_plain_text(tiny_tokenizer()) == 6


def test_titles_are_plain_text_smollm2(smollm2_tokenizer):
    assert _check_titles_are_plain_text(smollm2_tokenizer) == 17 + 3


# ------------------------------------------------------------------------------ shared titles
def test_shared_titles_get_the_year_and_count_alike_in_every_metric(caplog):
    feats = {"movie_title": ["Cape Fear", "Heat", "Cape Fear", "Chasing Amy", "Chasing Amy", "Up"],
             "release_year": ["1991", "1995", "1962", "1997", "1997", "2009"]}
    with caplog.at_level(logging.WARNING, "jaxrec.methods.allmrec"):
        titles, missing = item_titles(feats, 6, source="ml-x")
    # only shared titles change; the year tells Cape Fear apart, not the twice-listed Chasing Amy
    assert titles == ["Cape Fear (1991)", "Heat", "Cape Fear (1962)", "Chasing Amy (1997)", "Chasing Amy (1997)", "Up"]
    assert missing == 0
    assert "ml-x: 2 titles are shared by 4 items; 'release_year' appended to theirs; 1 titles (2 items) still" in \
        caplog.text
    assert item_titles(feats, 6, distinguish=None)[0][0] == "Cape Fear"
    tok = tiny_tokenizer()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "jaxrec.methods.allmrec"):
        pb = PromptBuilder(tok, titles, DOMAINS["movie"], history=2)
    assert pb.shared == {"chasing amy (1997)": [3, 4]}
    assert "prompt set: 1 titles are shared by 2 of 6 items" in caplog.text
    # user 0's target (item 3) shares its title with candidate column 2 (item 4); user 1's does not
    cands = np.array([[3, 1, 4], [0, 1, 2]])
    perfect = [tok.decode(pb.target_ids(c[0])) for c in cands]
    choice = np.array([match_candidate(g, [titles[i] for i in row]) for g, row in zip(perfect, cands)])
    assert choice.tolist() == [-2, 0]  # ambiguous: names two candidates
    # identical texts get identical likelihoods: a pessimistic tie, a miss for the ranking too
    scores = np.array([[-1.0, -5.0, -1.0], [-1.0, -5.0, -3.0]], np.float32)
    substring = np.array([reference_hit(g, titles[c[0]]) for g, c in zip(perfect, cands)]) & ~np.array([True, False])
    from jaxrec.methods.allmrec.stage2 import same_title, shared_target

    same = np.stack([same_title([titles[i] for i in row]) for row in cands])
    assert same.tolist() == [[True, False, True], [True, False, False]]
    res = LMEvaluation(np.array([0, 1]), scores, np.ones((2, 3), np.int32), perfect, choice.astype(np.int32),
                       substring, {}, same)
    m = res.metrics(metrics=("hit@1", "mrr"))
    assert shared_target([titles[i] for i in cands[0]]) and not shared_target([titles[i] for i in cands[1]])
    assert m["hit@1"] == m["hit@1_generate"] == m["hit@1_generate_substring"] == 0.5
    assert m["generate_on_list"] == 1.0 and m["shared_title_targets"] == 0.5
    # a title that reads the same but scores lower (another spelling of it) is a tie all the same
    low = LMEvaluation(np.array([0, 1]), np.array([[-1.0, -5.0, -2.0], [-1.0, -5.0, -3.0]], np.float32),
                       np.ones((2, 3), np.int32), None, None, None, {}, same)
    assert low.ranks().tolist() == [1, 0] and low.metrics(metrics=("hit@1",))["hit@1"] == 0.5


def test_evaluate_lm_reports_shared_targets():
    """``evaluate_lm`` marks rows whose target title another candidate shares (its own code path)."""
    import jax

    from jaxrec.lm import LanguageModel, LMConfig
    from jaxrec.methods.allmrec.stage2 import evaluate_lm, init_params, make_context, project

    tok = tiny_tokenizer()
    cfg = LMConfig(arch="llama", vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2,
                   num_kv_heads=1, head_dim=8, intermediate_size=24, max_position_embeddings=512)
    lm = LanguageModel(cfg)
    params = lm.init(jax.random.PRNGKey(0))
    titles = ["Twin", "Heat", "Twin", "Up"]
    pb = PromptBuilder(tok, titles, DOMAINS["movie"], history=2)
    rng = np.random.default_rng(0)
    ctx = make_context(lm, params, rng.normal(size=(2, 4)), rng.normal(size=(4, 3)), pb)
    tokens = project(init_params(jax.random.PRNGKey(1), ctx.settings), ctx.settings, ctx.user_rep, ctx.item_emb)
    res = evaluate_lm(ctx, tokens, np.array([0, 1]), [[1], [3]], np.array([[0, 1, 2], [1, 3, 0]]), generate=True,
                      max_new_tokens=2, batch_size=2)
    assert res.scores[0, 0] == res.scores[0, 2] and res.ranks()[0] >= 1  # same text, same score: a miss
    if res.generated[0] and match_candidate(res.generated[0], ["Twin", "Heat", "Twin"]) >= 0:
        assert match_candidate(res.generated[0], ["Twin", "Heat", "Twin"]) != 0
    assert not res.substring_hit[0]  # the target's title is the other candidate's too: a miss by every rule
    assert res.shared.tolist() == [True, False]
    assert res.metrics(metrics=("hit@1",))["shared_title_targets"] == 0.5


def test_ml100k_shared_titles(shared_data):
    """ml-100k: 22 titles of 45 items are shared; the release year tells 4 of them apart (8 items:
    Cape Fear 1962 / 1991, ...); 18 titles of 36 items are the same film listed twice."""
    from jaxrec import Config
    from jaxrec.data import load_dataset
    from jaxrec.methods.allmrec.prompt import shared_titles

    ds = load_dataset(shared_data / "ml-100k", Config())
    plain, _ = item_titles(ds.item_features, ds.num_items, distinguish=None)
    titles, _ = item_titles(ds.item_features, ds.num_items)
    before, after = shared_titles(plain), shared_titles(titles)
    assert (len(before), sum(map(len, before.values()))) == (22, 45)
    assert (len(after), sum(map(len, after.values()))) == (18, 36)
    assert sum(a != b for a, b in zip(plain, titles)) == 45  # only the shared titles changed
    assert {"Cape Fear (1962)", "Cape Fear (1991)"} <= set(titles)
