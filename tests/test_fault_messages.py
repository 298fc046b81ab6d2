"""Messages (issue 26, item 4): ids in errors read as plain text (never ``np.str_('greedy')``), and a
truncated GGUF file says it is truncated and how many bytes were expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lm_helpers import tiny_llama, train_bpe, write_llama_gguf

from jaxrec import Config
from jaxrec.data import DataError, load_dataset
from jaxrec.data.atomic import write_atomic


def _greedy_dataset(tmp_path: Path) -> Path:
    """User 'greedy' has every item in training (and two repeats held out); the others a few each."""
    users, items, ts = [], [], []
    for i in range(8):
        users.append("greedy"), items.append(f"i{i % 6}"), ts.append(i)
    for u in range(6):
        for k in range(4):
            users.append(f"u{u}"), items.append(f"i{(u + k) % 6}"), ts.append(k)
    folder = tmp_path / "greedy"
    write_atomic(folder / "greedy.inter", {"user_id": users, "item_id": items, "timestamp": np.array(ts, float)},
                 {"user_id": "token", "item_id": "token", "timestamp": "float"})
    return folder


def test_ids_in_errors_are_plain_text(tmp_path):
    from jaxrec.models import get_model
    from jaxrec.train import check_run

    folder = _greedy_dataset(tmp_path)
    config = Config("lightgcn", split="loo_time", data_cache=False, topk=(1, 2), valid_metric="ndcg@2")
    ds = load_dataset(folder, config)
    with pytest.raises(DataError) as err:
        check_run(get_model(config), ds, config)
    assert "user 'greedy' has interacted with every one of the 6 items" in str(err.value)
    assert "np.str_" not in str(err.value)
    from jaxrec.data.sequences import training_windows, user_sequences

    with pytest.raises(DataError) as err:
        training_windows(user_sequences(ds, log_report=False), max_len=4)
    assert "user 'greedy'" in str(err.value) and "np.str_" not in str(err.value)
    from jaxrec.data.sequences import held_out_items

    bad = ds.__class__(ds.name, ds.train, ds.test.take(np.r_[np.arange(len(ds.test)), 0]), ds.test, ds.item_features,
                       ds.user_features, ds.reports, ds.source)
    with pytest.raises(DataError) as err:
        held_out_items(bad, "valid")
    assert "interactions of user '" in str(err.value) and "np.str_" not in str(err.value)


def test_prompt_errors_name_numpy_user_ids_as_text():
    from test_catalogue_text import TITLES, tiny_tokenizer

    from jaxrec.methods.allmrec.prompt import DOMAINS, PromptBuilder, PromptError

    pb = PromptBuilder(tiny_tokenizer(), TITLES, DOMAINS["movie"], history=3, max_positions=40)
    with pytest.raises(PromptError) as err:
        pb.training_batch([0], [[1]], np.array([[0, 1, 2]]), [1], user_names=np.array(["u7"]))
    assert str(err.value).startswith("user 'u7': the prompt has")


def test_truncated_gguf_says_so_with_the_expected_size(tmp_path):
    from jaxrec.lm import LMError, load_gguf

    tokens, merges = train_bpe()
    path = write_llama_gguf(tmp_path / "full.gguf", tiny_llama(len(tokens)), list(tokens), list(merges))
    data = path.read_bytes()
    n = len(data)
    load_gguf(path)  # the complete file loads
    for cut in (n - 1, n - 100, n // 2):
        short = tmp_path / f"cut{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(LMError, match=rf"cut{cut}\.gguf: truncated or incomplete: {cut:,} bytes, expected {n:,} "
                                          rf"bytes .*{n - cut:,} bytes missing"):
            load_gguf(short)
    for cut in (200, 20):  # cut inside the header: no size to expect, but said
        short = tmp_path / f"head{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(LMError, match=rf"head{cut}\.gguf: truncated or damaged GGUF header \(the file has {cut} "
                                          r"bytes"):
            load_gguf(short)
