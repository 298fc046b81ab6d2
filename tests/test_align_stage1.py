"""A-LLMRec stage 1 (jaxrec.methods.allmrec.stage1): losses vs numpy, frozen parts, joint embeddings, the
stage-1 recommender on candidates, fine-tuned encoder, data-parallel shard, bad input (tiny data)."""

from __future__ import annotations

import json
import logging

import jax
import numpy as np
import pytest
from helpers import write_tiny_dataset

from jaxrec.config import Config, ConfigError
from jaxrec.data import DataError, load_dataset
from jaxrec.eval.candidates import candidates_for, dot_scores
from jaxrec.methods.allmrec import register as _register_allmrec  # noqa: E402
from jaxrec.methods.allmrec import stage1 as s1
from jaxrec.models import get_model
from jaxrec.models import sasrec as sr
from jaxrec.train import fit

_register_allmrec()  # A-LLMRec's models, contexts, terms and evaluation are registered explicitly

SASREC_TINY = dict(embedding_size=8, num_heads=2, num_layers=1, max_seq_len=6, batch_size=32, learning_rate=0.01,
                   epochs=1, full_view_topk=())
TEXT_DIM = 12


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny dataset, a finished SASRec run on it, random text embeddings as a precomputed file."""
    root = tmp_path_factory.mktemp("stage1")
    folder = write_tiny_dataset(root, users=40, items=30)
    cands = str(root / "candidates")
    c = Config.for_model("sasrec", dataset=str(folder), candidates_dir=cands, **SASREC_TINY)
    ds = load_dataset(str(folder), c)
    fit(get_model(c), ds, c, out_dir=root / "sasrec", progress=False)
    emb = np.random.default_rng(1).normal(size=(ds.num_items, TEXT_DIM)).astype(np.float32)
    npy = root / "text.npy"
    np.save(npy, emb)
    (root / "text.item_ids.txt").write_text("\n".join(ds.item_ids.tolist()) + "\n")
    config = Config.for_model("allmrec_stage1", dataset=str(folder), candidates_dir=cands, max_seq_len=6,
                              sasrec_run=str(root / "sasrec"), embeddings=str(npy), joint_dim=16, epochs=2,
                              batch_size=8, learning_rate=1e-2, full_view_topk=())
    return root, config, ds, emb


# --------------------------------------------------------------------------- losses vs numpy
def _np_ae(p, x):
    z = 1.0 / (1.0 + np.exp(-(x @ p["fc1"]["kernel"] + p["fc1"]["bias"])))
    return z, z @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def _np_losses(p, user, pi, ni, pt, nt, mask):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    m = mask.astype(bool)
    mse = lambda a, b: np.mean((a[m] - b[m]) ** 2)  # noqa: E731  (torch MSELoss: mean of every element)
    bce = lambda x, y: np.mean(-(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x)))))  # noqa: E731
    e_p, ih_p = _np_ae(p["item_ae"], pi)
    e_n, ih_n = _np_ae(p["item_ae"], ni)
    q_p, th_p = _np_ae(p["text_ae"], pt)
    q_n, th_n = _np_ae(p["text_ae"], nt)
    pos_logit, neg_logit = (user * ih_p).mean(1)[m], (user * ih_n).mean(1)[m]
    return {
        "align_rec": bce(pos_logit, 1.0) + bce(neg_logit, 0.0),
        "align_match": mse(e_p, q_p) + mse(e_n, q_n),
        "align_item_recon": mse(ih_p, pi) + mse(ih_n, ni),
        "align_text_recon": mse(th_p, pt) + mse(th_n, nt),
    }


def test_stage1_losses_match_numpy():
    rng = np.random.default_rng(0)
    params = s1.init_params(jax.random.key(3), 6, 10, 5)
    assert params["item_ae"]["fc1"]["kernel"].shape == (6, 5) and params["text_ae"]["fc2"]["kernel"].shape == (5, 10)
    n = 7
    user, pi, ni = (rng.normal(size=(n, 6)).astype(np.float32) * 3 for _ in range(3))
    pt, nt = (rng.normal(size=(n, 10)).astype(np.float32) for _ in range(2))
    mask = np.array([1, 1, 0, 1, 1, 0, 1], bool)
    got = s1.stage1_losses(params, user, pi, ni, pt, nt, mask)
    want = _np_losses(params, user, pi, ni, pt, nt, mask)
    assert set(got) == set(s1.TERMS)
    for k in s1.TERMS:
        np.testing.assert_allclose(float(got[k]), want[k], rtol=1e-5, err_msg=k)
    # masked rows do not count: dropping them gives the same values
    sub = s1.stage1_losses(params, *(a[mask] for a in (user, pi, ni, pt, nt)))
    for k in s1.TERMS:
        np.testing.assert_allclose(float(sub[k]), float(got[k]), rtol=1e-6)
    # the text reconstruction target is detached: its gradient w.r.t. the text input flows only
    # through the reconstruction f_T(Q), never through the target
    g = jax.grad(lambda t: s1.stage1_losses(params, user, pi, ni, t, nt, mask)["align_text_recon"])(pt)
    ae = jax.tree.map(np.asarray, params["text_ae"])
    z, rec = _np_ae(ae, pt)
    d_rec = 2 * (rec - pt) * mask[:, None] / (mask.sum() * pt.shape[1])
    d_z = d_rec @ ae["fc2"]["kernel"].T
    want_g = (d_z * z * (1 - z)) @ ae["fc1"]["kernel"].T
    np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-4, atol=1e-7)


def test_stage1_joint_embeddings_pick_e_for_warm_items_and_q_for_the_rest():
    params = s1.init_params(jax.random.key(0), 4, 6, 3)
    rng = np.random.default_rng(0)
    items, text = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    warm = np.array([True, False, True, True, False])
    got = np.asarray(s1.joint_item_embeddings(params, items, text, warm))
    p = jax.tree.map(np.asarray, params)
    e, _ = _np_ae(p["item_ae"], items)
    q, _ = _np_ae(p["text_ae"], text)
    np.testing.assert_allclose(got[warm], e[warm], rtol=1e-5)
    np.testing.assert_allclose(got[~warm], q[~warm], rtol=1e-5)
    with pytest.raises(s1.Stage1Error, match=r"text_vectors: shape \(5, 7\); expected \[I, 6\]"):
        s1.joint_item_embeddings(params, items, np.zeros((5, 7), np.float32), warm)


# --------------------------------------------------------------------------- training
def init_of(model, ds, config, key):
    """Fresh stage-1 params: their sizes come from the context (the SASRec run, the text width)."""
    from jaxrec.models.base import abstract_context

    return model.init(key, ds.num_users, ds.num_items, abstract_context(s1.stage1_context(ds, config)["train"]))


@pytest.fixture(scope="module")
def trained(tiny):
    root, config, ds, _ = tiny
    before = s1.load_sasrec_run(config.sasrec_run, ds).params
    model = get_model(config)
    init = init_of(model, ds, config, jax.random.key(0))
    res = fit(model, ds, config, out_dir=root / "stage1", params=init, progress=False)
    return res, before, init


def test_align_stage1_fit_trains_the_autoencoders_only(tiny, trained):
    root, config, ds, emb = tiny
    res, before, init = trained
    assert set(res.history[0]) >= set(s1.TERMS) and res.history[-1]["loss"] < res.history[0]["loss"]
    total = res.history[0]
    np.testing.assert_allclose(total["loss"], total["align_rec"] + total["align_match"]
                               + 0.5 * total["align_item_recon"] + 0.2 * total["align_text_recon"], rtol=1e-4)
    # every autoencoder array moved; the frozen SASRec checkpoint and text file did not
    for a, b in zip(_leaves(init), _leaves(res.params)):
        assert not np.allclose(a, b)
    after = s1.load_sasrec_run(config.sasrec_run, ds).params
    for a, b in zip(_leaves(before), _leaves(after)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.load(config.embeddings), emb)
    assert set(res.params) == {"item_ae", "text_ae"}  # nothing of SASRec or the text is optimized
    results = json.loads((root / "stage1" / "results.json").read_text())
    assert results["model"] == "allmrec_stage1" and "hit@1" in results["test"]


def test_align_stage1_run_api_and_recommender_on_candidates(tiny, trained):
    root, config, ds, emb = tiny
    res, _, _ = trained
    run = s1.load_stage1_run(root / "stage1", ds)
    sas = s1.load_sasrec_run(config.sasrec_run, ds)
    joint = run.joint_item_embeddings()
    assert joint.shape == (ds.num_items, 16) and joint.dtype == np.float32
    warm = np.bincount(ds.train.item, minlength=ds.num_items) > 0
    p = jax.tree.map(np.asarray, res.params)
    e, _ = _np_ae(p["item_ae"], np.asarray(sas.params["item_embedding"][1:]))
    q, _ = _np_ae(p["text_ae"], emb)
    np.testing.assert_allclose(joint, np.where(warm[:, None], e, q), rtol=1e-5, atol=1e-6)
    users = run.user_representations("test")
    hist = run.contexts["test"].histories
    np.testing.assert_allclose(users, np.asarray(sr.user_representation(sas.params, hist, sas.settings)), rtol=1e-5,
                               atol=1e-6)
    assert users.shape == (ds.num_users, 8)
    # the stage-1 recommender: u . f_I^dec(z_i) on the stored candidate lists
    model = get_model(config)
    user_emb, item_emb = model.embed(res.params, run.contexts["test"])
    dec = joint @ p["item_ae"]["fc2"]["kernel"] + p["item_ae"]["fc2"]["bias"]
    np.testing.assert_allclose(np.asarray(item_emb), dec, rtol=1e-5, atol=1e-6)
    cands = candidates_for(config.candidates_dir, ds, "test", config.seed, 19)
    scores = dot_scores(user_emb, item_emb, cands)
    want = np.einsum("md,mcd->mc", users[cands.users], dec[cands.items])
    np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-5)
    # the "SBERT" variant decodes q for every item
    text_side = get_model(config.replace(align_items="text")).embed(res.params, run.contexts["test"])[1]
    np.testing.assert_allclose(np.asarray(text_side), q @ p["item_ae"]["fc2"]["kernel"] + p["item_ae"]["fc2"]["bias"],
                               rtol=1e-5, atol=1e-6)


def test_align_stage1_all_positions_uses_every_window_position(tiny):
    _, config, ds, _ = tiny
    c = config.replace(align_positions="all", epochs=1)
    model = get_model(c)
    from jaxrec.train.batches import batch_source, prepare  # noqa: PLC0415

    prepared = prepare(ds)
    ctx = prepared.contexts(model.context, c)["train"]
    batch = next(batch_source(model, prepared, c).epoch(np.random.default_rng(0)))
    params = init_of(model, ds, config, jax.random.key(1))
    _, aux = model.loss(params, ctx, None, batch, jax.random.key(2))
    sas = ctx.sasrec
    out = np.asarray(sr.sequence_output(sas, batch["seq"], ctx.arch)).reshape(-1, 8)
    pos, neg = batch["pos"].reshape(-1), batch["neg"].reshape(-1)
    m = pos != 0
    assert m.sum() > len(batch["seq"])  # more than one position per window
    table, text = np.asarray(sas["item_embedding"]), ctx.text
    want = _np_losses(params, out, table[pos], table[neg], text[np.maximum(pos - 1, 0)], text[np.maximum(neg - 1, 0)],
                      m)
    for k in s1.TERMS:
        np.testing.assert_allclose(float(aux[k]), want[k], rtol=1e-4, err_msg=k)


# --------------------------------------------------------------------------- sharding
@pytest.mark.slow
def test_shard_stage1_data_parallel_matches_single_device(tiny, trained):
    _, config, ds, _ = tiny
    res, _, init = trained
    c = config.replace(sharding="feature")
    got = fit(get_model(c), ds, c, params=init, progress=False)
    assert len(jax.tree.leaves(got.params)[0].sharding.device_set) == 8
    for a, b in zip(_leaves(res.params), _leaves(got.params)):
        np.testing.assert_allclose(b, a, atol=1e-5)
    assert [r["loss"] for r in got.history] == pytest.approx([r["loss"] for r in res.history], abs=1e-5)
    assert got.test_metrics == pytest.approx(res.test_metrics, abs=1e-6)


# --------------------------------------------------------------------------- fine-tuned encoder
@pytest.mark.slow
def test_align_stage1_finetuned_encoder_trains_it_and_keeps_sasrec(tiny, tmp_path):
    from test_sentence_encoder import write_tiny_folder  # noqa: PLC0415

    _, config, ds, _ = tiny
    folder = write_tiny_folder(tmp_path, "bert", {"pooling_mode_mean_tokens": True}, normalize=False)
    c = config.replace(embeddings=None, encoder=str(folder), text_finetune=True, epochs=1)
    model = get_model(c)
    before = s1.load_sasrec_run(c.sasrec_run, ds).params
    init = init_of(model, ds, c, jax.random.key(0))
    assert init["text_ae"]["fc1"]["kernel"].shape == (32, 16)
    res = fit(model, ds, c, params=init, out_dir=tmp_path / "ft", progress=False)
    moved = [not np.allclose(a, b) for a, b in zip(_leaves(init["text_encoder"]), _leaves(res.params["text_encoder"]))]
    assert sum(moved) > len(moved) // 2  # the encoder is fine-tuned end to end
    for a, b in zip(_leaves(before), _leaves(s1.load_sasrec_run(c.sasrec_run, ds).params)):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(res.test_metrics["hit@1"])
    # another dataset's text goes through the fine-tuned encoder (cross-domain): on the training
    # dataset itself it is exactly the item text the trained model reads, not the initial encoder's
    run = s1.load_stage1_run(tmp_path / "ft", ds)
    want = np.asarray(s1.item_text_vectors(run.params, run.contexts["test"]))
    np.testing.assert_allclose(run.target_text(ds), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(s1.item_text_vectors(init, run.contexts["test"])), want, atol=1e-4)
    target = load_dataset(str(write_tiny_dataset(tmp_path, name="target", seed=5, users=20, items=25)), c)
    assert run.target_text(target).shape == (target.num_items, 32)


# --------------------------------------------------------------------------- bad input
def test_align_stage1_bad_input(tiny, trained, tmp_path, caplog):
    root, config, ds, _ = tiny
    from jaxrec.train import check_run  # noqa: PLC0415

    with pytest.raises(ConfigError, match="sasrec_run=None"):  # checked against the data, before any compute
        c = config.replace(sasrec_run=None)
        check_run(get_model(c), ds, c)
    with pytest.raises(ConfigError, match="align_positions='first'"):  # the settings' own validation
        config.replace(align_positions="first")
    with pytest.raises(ConfigError, match="max_seq_len=5: the SASRec run .* max_seq_len=6"):
        c = config.replace(max_seq_len=5)
        check_run(get_model(c), ds, c)
    with pytest.raises(s1.Stage1Error, match="no run.json; expected a folder written by"):
        s1.load_sasrec_run(tmp_path)
    # a SASRec run of another dataset (other users): refused, naming the fields
    other_folder = write_tiny_dataset(tmp_path, name="other", users=41, items=30)
    other = load_dataset(str(other_folder), config.replace(dataset=str(other_folder)))
    with pytest.raises(DataError, match=r"sasrec_run=.*another dataset.*num_users 40 \(run\) vs 41 \(here\)"):
        c = config.replace(dataset=str(other_folder))
        check_run(get_model(c), other, c)
    # an encoder whose dimension does not match the stage-1 checkpoint
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((ds.num_items, TEXT_DIM + 1), np.float32))
    (tmp_path / "wrong.item_ids.txt").write_text("\n".join(ds.item_ids.tolist()) + "\n")
    with pytest.raises(s1.Stage1Error, match=r"takes 12-d text embeddings, but .* give 13-d"):
        s1.load_stage1_run(root / "stage1", ds, embeddings=str(wrong))
    # items with empty text get the reference's fallback text, counted in a warning
    feats = {k: list(v) for k, v in ds.item_features.items()}
    for k in feats:
        feats[k][3] = None
    import dataclasses  # noqa: PLC0415

    blank = dataclasses.replace(ds, item_features=feats)
    with caplog.at_level(logging.WARNING, logger="jaxrec.methods.allmrec"):
        texts, _, n_empty = s1.item_texts_with_fallback(blank)
    assert n_empty == 1 and texts[3] == s1.FALLBACK_TEXT and texts[4] != s1.FALLBACK_TEXT
    assert "1 of 30 items have no text" in caplog.text


# --------------------------------------------------------------------------- experiment rows
@pytest.mark.slow
def test_stage1_allmrec_table_rows_end_to_end(tmp_path):
    from test_experiments_allmrec import TINY, write_dataset  # noqa: PLC0415

    from experiments import allmrec_table as T  # noqa: PLC0415

    folder = write_dataset(tmp_path / "data")
    ds = load_dataset(str(folder), Config.for_model("sasrec"))
    npy = tmp_path / "text.npy"
    np.save(npy, np.random.default_rng(0).normal(size=(ds.num_items, TEXT_DIM)).astype(np.float32))
    (tmp_path / "text.item_ids.txt").write_text("\n".join(ds.item_ids.tolist()) + "\n")
    out = tmp_path / "run"
    argv = ["--dataset", str(folder), "--seeds", "2020", "--epochs", "2", "--methods", "stage1,sasrec",
            "--scenarios", "standard,cold_users", "--out", str(out), "--set", f"candidates_dir={tmp_path / 'cands'}",
            "--set", f"embeddings={npy}", "--set", "full_view_topk="] + [a for s in TINY for a in ("--set", s)]
    with pytest.raises(ConfigError, match="add sasrec"):
        T.main(argv[:7] + ["stage1"] + argv[8:])
    assert T.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    cells = {(c["key"]["method"], c["key"]["setting"]): c for c in res["cells"]}
    assert set(cells) == {(m, s) for m in ("sasrec", "stage1") for s in ("standard", "cold_users")}
    for s in ("standard", "cold_users"):  # each stage-1 cell aligned the SASRec run of its own setting
        assert cells[("stage1", s)]["config"]["sasrec_run"] == cells[("sasrec", s)]["run_dir"]
    std = cells[("stage1", "standard")]
    for m in T.TABLE_METRICS:  # the harness's scores equal fit's own candidate evaluation
        assert std["extra"]["groups"]["all"][m] == pytest.approx(std["test"][m], abs=1e-9)
    assert cells[("stage1", "cold_users")]["extra"]["counts"] == {"cold_users": 5}
    assert "A-LLMRec stage 1" in (out / "table.txt").read_text()


def test_align_stage1_cross_domain_target_users_and_items_from_text(tiny, trained, tmp_path):
    root, config, ds, _ = tiny
    res, _, _ = trained
    run = s1.load_stage1_run(root / "stage1", ds)
    tfolder = write_tiny_dataset(tmp_path, name="target", seed=5, users=20, items=25)
    target = load_dataset(str(tfolder), config.replace(dataset=str(tfolder)))
    text = np.random.default_rng(7).normal(size=(target.num_items, TEXT_DIM)).astype(np.float32)
    user, items = run.cross_domain(target, text)
    assert user.shape == (target.num_users, 8) and items.shape == (target.num_items, 8)
    p = jax.tree.map(np.asarray, res.params)
    q, _ = _np_ae(p["text_ae"], text)
    dec = q @ p["item_ae"]["fc2"]["kernel"] + p["item_ae"]["fc2"]["bias"]
    np.testing.assert_allclose(items, dec, rtol=1e-5, atol=1e-6)
    # a target user = the frozen source SASRec over their target history, items looked up in the
    # decoded table (row id + 1); checked on one user by hand-building the table
    sas = run.sasrec
    hist = s1.histories(s1.user_sequences(target, log_report=False), "test", 6)
    params = {**jax.tree.map(np.asarray, run.contexts["test"].sasrec),
              "item_embedding": np.vstack([np.zeros((1, 8), np.float32), dec]).astype(np.float32)}
    import dataclasses  # noqa: PLC0415

    want = sr.user_representation(params, hist[:3], dataclasses.replace(sas.settings, num_items=target.num_items))
    np.testing.assert_allclose(user[:3], np.asarray(want), rtol=1e-5, atol=1e-6)
    with pytest.raises(s1.Stage1Error, match=r"target_text: shape \(25, 5\); expected \[I_t, 12\]"):
        s1.cross_domain_embeddings(res.params, params, sas.settings, text[:, :5], hist)
    with pytest.raises(s1.Stage1Error, match="expected one per item"):
        run.cross_domain(target, text[:-1])
    # the run's text is a precomputed file: the target's must be given (rows by item id)
    with pytest.raises(s1.Stage1Error, match="give embeddings of dataset 'target''s items by the same encoder"):
        run.target_text(target)
    ids = target.item_ids.tolist()[::-1]  # a file in another row order is read by id
    np.save(tmp_path / "t.npy", text[::-1])
    (tmp_path / "t.item_ids.txt").write_text("\n".join(ids) + "\n")
    np.testing.assert_array_equal(run.target_text(target, tmp_path / "t.npy"), text)
    u2, _ = run.cross_domain(target, run.target_text(target, tmp_path / "t.npy"))
    np.testing.assert_array_equal(u2, user)


def test_cli_resolves_stage1_text_source_and_the_library_names_a_missing_one(tmp_path):
    """`jaxrec train --model allmrec_stage1` without embeddings/encoder used to hand encoder=None to the
    hub ("encoder 'None': could not be fetched"): the CLI now resolves the default text source for a
    model that reads item text (the dataset's reference MPNet file, else minilm), and the library
    refuses neither-given with an error naming both keys."""
    from jaxrec.cli import with_text_source

    folder = write_tiny_dataset(tmp_path, users=6, items=16, per_user=4)
    cfg = Config.for_model("allmrec_stage1", dataset=str(folder), sasrec_run="x")
    resolved, note = with_text_source(cfg)
    assert resolved.encoder == "minilm" and resolved.embeddings is None and "minilm" in note
    ref = folder / f"{folder.name}.all-mpnet-base-v2.npy"
    np.save(ref, np.zeros((16, 4), np.float32))
    ref.with_name(f"{folder.name}.all-mpnet-base-v2.item_ids.txt").write_text("\n".join(map(str, range(16))) + "\n")
    resolved, note = with_text_source(cfg)
    assert resolved.embeddings == str(ref.resolve()) and "reference MPNet" in note
    assert with_text_source(Config.for_model("sasrec", dataset=str(folder)))[1] is None  # no text read
    with pytest.raises(ConfigError, match="stage 1 needs item text embeddings"):
        s1.frozen_text_embeddings(load_dataset(str(folder)), cfg)


def test_frozen_text_without_a_text_source_is_a_config_error():
    """Neither embeddings nor encoder: a ConfigError naming both keys, never a hub lookup of
    encoder 'None' (what experiments.allmrec_stage2 --train-stage1 hit before it resolved the
    text source)."""
    config = Config.for_model("allmrec_stage1", sasrec_run="x")
    assert config.embeddings is None and config.encoder is None
    with pytest.raises(ConfigError, match=r"embeddings=None, encoder=None: stage 1 needs item text embeddings"):
        s1.frozen_text_embeddings(None, config)


# --------------------------------------------------------------------------- other backbones (Table 9)
def test_align_stage1_over_a_gru4rec_run(tiny, tmp_path):
    """Stage 1 aligns any sequential backbone run of the same interface (A-LLMRec Table 9): a GRU4Rec
    run's last-position outputs are the users and its ID table the items; SASRec dispatches to SASRec."""
    from jaxrec.methods.allmrec.stage2_inputs import sasrec_run_inputs, stage1_inputs
    from jaxrec.models import gru4rec as g4

    root, config, ds, emb = tiny
    assert s1.backbone_module(sr.SASRecArch(num_items=3)) is sr  # the SASRec path is SASRec's own functions
    gc = Config.for_model("gru4rec", dataset=config.dataset, candidates_dir=config.candidates_dir, embedding_size=8,
                          hidden_size=8, max_seq_len=6, batch_size=32, learning_rate=0.01, epochs=1,
                          full_view_topk=())
    fit(get_model(gc), ds, gc, out_dir=tmp_path / "gru4rec", progress=False)
    run = s1.load_sasrec_run(tmp_path / "gru4rec", ds)
    assert run.backbone == "gru4rec" and isinstance(run.settings, g4.GRU4RecArch) and run.max_len == 6
    c = config.replace(sasrec_run=str(tmp_path / "gru4rec"), epochs=1)
    res = fit(get_model(c), ds, c, out_dir=tmp_path / "stage1_gru", progress=False)
    assert np.isfinite(res.history[-1]["loss"]) and set(res.params) == {"item_ae", "text_ae"}
    s1run = s1.load_stage1_run(tmp_path / "stage1_gru", ds)
    hist = s1run.contexts["test"].histories
    np.testing.assert_allclose(s1run.user_representations("test"),
                               np.asarray(g4.user_representation(run.params, hist, run.settings)), rtol=1e-5, atol=1e-6)
    joint = s1run.joint_item_embeddings()
    p = jax.tree.map(np.asarray, res.params)
    e, _ = _np_ae(p["item_ae"], np.asarray(run.params["item_embedding"][1:]))
    q, _ = _np_ae(p["text_ae"], emb)
    warm = np.bincount(ds.train.item, minlength=ds.num_items) > 0
    np.testing.assert_allclose(joint, np.where(warm[:, None], e, q), rtol=1e-5, atol=1e-6)
    inputs = stage1_inputs(s1run, ds)
    assert inputs.user_rep["train"].shape == (ds.num_users, 8) and inputs.kind == "stage1"
    fallback = sasrec_run_inputs(tmp_path / "gru4rec", ds)
    assert "GRU4Rec fallback: no stage 1" in fallback.source
    with pytest.raises(ConfigError, match="max_seq_len=5: the GRU4Rec run"):
        from jaxrec.train import check_run  # noqa: PLC0415

        c5 = c.replace(max_seq_len=5)
        check_run(get_model(c5), ds, c5)


# --------------------------------------------------------------------------- NextItNet and NCF / NeuMF (Table 9)
def _np_nextitnet_last(p, row, dilations, k):
    """float64 [d]: NextItNet's output at the last position of one left-padded history ``row``
    (ids + 1), recomputed in numpy over its real items alone (RecBole's right-padded view: each
    causal convolution reads zeros left of the first item), 0 for an empty history."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    items = row[row > 0]
    if items.size == 0:
        return np.zeros(p["final"]["bias"].shape)
    x = p["item_embedding"][items]  # [n, d]

    def conv(x, c, r):
        out = np.tile(c["bias"], (len(x), 1))
        for j in range(k):
            shift = (k - 1 - j) * r
            shifted = np.concatenate([np.zeros((shift, x.shape[1])), x])[:len(x)]
            out = out + shifted @ c["kernel"][j]
        return out

    def ln(x, n):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-8) * n["scale"] + n["bias"]

    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    for b, r in enumerate(dilations):
        blk = p[f"block_{b}"]
        h = relu(ln(conv(x, blk["conv1"], r), blk["ln1"]))
        x = relu(ln(conv(h, blk["conv2"], 2 * r), blk["ln2"])) + x
    return x[-1] @ p["final"]["kernel"] + p["final"]["bias"]


def test_align_stage1_over_a_nextitnet_run(tiny, tmp_path):
    """Stage 1 over a NextItNet run (A-LLMRec Table 9): its users are NextItNet's last-position
    outputs (equal to a numpy forward over each history's real items), its items NextItNet's ID
    table; stage 2's ``stage1_inputs`` and the SASRec-style fallback take the run."""
    from jaxrec.data.sequences import user_sequences
    from jaxrec.methods.allmrec.stage2_inputs import sasrec_run_inputs, stage1_inputs, stage_histories
    from jaxrec.models import nextitnet as nin

    root, config, ds, emb = tiny
    nc = Config.for_model("nextitnet", dataset=config.dataset, candidates_dir=config.candidates_dir, embedding_size=8,
                          block_num=1, dilations=(1, 2), max_seq_len=6, batch_size=32, learning_rate=0.01, epochs=1,
                          full_view_topk=())
    fit(get_model(nc), ds, nc, out_dir=tmp_path / "nextitnet", progress=False)
    run = s1.load_sasrec_run(tmp_path / "nextitnet", ds)
    assert run.backbone == "nextitnet" and run.sequential and run.max_len == 6
    assert run.settings == nin.NextItNetArch(num_items=ds.num_items, embedding_size=8, dilations=(1, 2), kernel_size=3)
    assert s1.backbone_module(run.settings) is nin
    c = config.replace(sasrec_run=str(tmp_path / "nextitnet"), epochs=1)
    res = fit(get_model(c), ds, c, out_dir=tmp_path / "stage1_nin", progress=False)
    assert np.isfinite(res.history[-1]["loss"]) and set(res.params) == {"item_ae", "text_ae"}
    assert all(np.isfinite(v) for v in res.test_metrics.values())
    s1run = s1.load_stage1_run(tmp_path / "stage1_nin", ds)
    hist = np.asarray(s1run.contexts["test"].histories)
    want = np.stack([_np_nextitnet_last(run.params, r, run.settings.dilations, 3) for r in hist])
    np.testing.assert_allclose(s1run.user_representations("test"), want, rtol=1e-4, atol=1e-5)
    # the stage-1 recommender: those users against f_I^dec of the joint embeddings built on NextItNet's table
    p = jax.tree.map(np.asarray, res.params)
    e, _ = _np_ae(p["item_ae"], np.asarray(run.params["item_embedding"][1:]))
    q, _ = _np_ae(p["text_ae"], emb)
    warm = np.bincount(ds.train.item, minlength=ds.num_items) > 0
    joint = np.where(warm[:, None], e, q)
    np.testing.assert_allclose(s1run.joint_item_embeddings(), joint, rtol=1e-5, atol=1e-6)
    user, items = s1run.recommender_embeddings("test")
    np.testing.assert_allclose(user, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(items, joint @ p["item_ae"]["fc2"]["kernel"] + p["item_ae"]["fc2"]["bias"],
                               rtol=1e-5, atol=1e-5)
    inputs = stage1_inputs(s1run, ds)
    assert inputs.kind == "stage1" and inputs.item_emb.shape == (ds.num_items, 16)
    assert {k: v.shape for k, v in inputs.user_rep.items()} == dict.fromkeys(("train", "valid", "test"),
                                                                             (ds.num_users, 8))
    train_hist, _ = stage_histories(user_sequences(ds, log_report=False), "train", 6)
    want_train = np.stack([_np_nextitnet_last(run.params, r, run.settings.dilations, 3) for r in train_hist])
    np.testing.assert_allclose(inputs.user_rep["train"], want_train, rtol=1e-4, atol=1e-5)
    fallback = sasrec_run_inputs(tmp_path / "nextitnet", ds)
    assert "NextItNet fallback: no stage 1" in fallback.source
    np.testing.assert_array_equal(fallback.item_emb, np.asarray(run.params["item_embedding"][1:]))
    with pytest.raises(ConfigError, match="max_seq_len=5: the NextItNet run"):
        from jaxrec.train import check_run  # noqa: PLC0415

        c5 = c.replace(max_seq_len=5)
        check_run(get_model(c5), ds, c5)


def _np_neumf_logits(p, users, items):
    """float64 [B]: NeuMF's logit of each (users[b], items[b]) pair in numpy (GMF * , MLP ReLU
    tower, predict layer), and its GMF part ``sum_k w_k p_uk q_ik`` alone."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    d_mf = p["user_mf"].shape[1]
    w = p["predict"]["kernel"][:, 0]
    gmf = p["user_mf"][users] * p["item_mf"][items]
    h = np.concatenate([p["user_mlp"][users], p["item_mlp"][items]], -1)
    layer = 0
    while f"mlp_{layer}" in p:
        h = np.maximum(h @ p[f"mlp_{layer}"]["kernel"] + p[f"mlp_{layer}"]["bias"], 0.0)
        layer += 1
    gmf_part = gmf @ w[:d_mf]
    return gmf_part + h @ w[d_mf:] + p["predict"]["bias"][0], gmf_part


NEUMF_TINY = dict(mf_embedding_size=6, mlp_embedding_size=4, mlp_hidden_size=(8, 4), batch_size=32,
                  learning_rate=0.01, epochs=1, full_view_topk=())


def test_align_stage1_over_a_neumf_run(tiny, tmp_path):
    """Stage 1 over an NCF / NeuMF run (A-LLMRec Table 9): the user is NeuMF's GMF user row times
    the GMF half of its prediction layer and the item its GMF item row, so ``u . E_i`` is the GMF
    part of NeuMF's logit (numpy forward of both towers); the user vector does not depend on the
    stage; the training batches broadcast it over the window; stage 2's inputs take the run;
    cross-domain users and another user space are refused."""
    from jaxrec.methods.allmrec.stage2_inputs import sasrec_run_inputs, stage1_inputs
    from jaxrec.models import neumf as nm

    root, config, ds, emb = tiny
    nc = Config.for_model("neumf", dataset=config.dataset, candidates_dir=config.candidates_dir, **NEUMF_TINY)
    fit(get_model(nc), ds, nc, out_dir=tmp_path / "neumf", progress=False)
    run = s1.load_sasrec_run(tmp_path / "neumf", ds)
    assert run.backbone == "neumf" and not run.sequential
    assert run.settings == nm.NeuMFArch(num_users=ds.num_users, num_items=ds.num_items, mf_size=6, mlp_size=4,
                                        hidden=(8, 4), dropout=0.1)
    assert s1.backbone_module(run.settings) is s1.NEUMF_BACKBONE
    params = jax.tree.map(np.asarray, run.params)
    u_np = params["user_mf"] * params["predict"]["kernel"][:6, 0]
    # u . E_i is the GMF part of NeuMF's logit (and the numpy forward is jaxrec's NeuMF)
    uu, ii = np.meshgrid(np.arange(ds.num_users), np.arange(ds.num_items), indexing="ij")
    full, gmf_part = _np_neumf_logits(params, uu.ravel(), ii.ravel())
    np.testing.assert_allclose(np.asarray(nm.pair_logits(run.params, uu.ravel(), ii.ravel(), run.settings)), full,
                               rtol=1e-4, atol=1e-6)
    users, items = s1.NEUMF_BACKBONE.embed(run.params, np.zeros((ds.num_users, 3), np.int32), run.settings)
    np.testing.assert_allclose(np.asarray(users), u_np, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(items), params["item_mf"])
    np.testing.assert_allclose((np.asarray(users) @ np.asarray(items).T).ravel(), gmf_part, rtol=1e-4, atol=1e-7)
    table = np.asarray(s1.backbone_item_table(run.settings, run.params))
    assert table.shape == (ds.num_items + 1, 6) and not table[0].any()
    np.testing.assert_array_equal(table[1:], params["item_mf"])
    # a "sequences" batch (a padding row: user -1) gets each row's user vector at every position
    batch = {"user": np.array([3, 0, -1], np.int32), "seq": np.zeros((3, 6), np.int32)}
    out = np.asarray(s1.backbone_batch_output(run.settings, run.params, batch))
    assert out.shape == (3, 6, 6)
    np.testing.assert_allclose(out[0], np.broadcast_to(u_np[3], (6, 6)), rtol=1e-6)
    np.testing.assert_allclose(out[1], np.broadcast_to(u_np[0], (6, 6)), rtol=1e-6)

    c = config.replace(sasrec_run=str(tmp_path / "neumf"), epochs=1, align_positions="all")
    res = fit(get_model(c), ds, c, out_dir=tmp_path / "stage1_neumf", progress=False)
    assert np.isfinite(res.history[-1]["loss"]) and set(res.params) == {"item_ae", "text_ae"}
    assert all(np.isfinite(v) for v in res.test_metrics.values())
    assert res.params["item_ae"]["fc1"]["kernel"].shape == (6, 16)  # the autoencoder reads d_mf-wide item rows
    s1run = s1.load_stage1_run(tmp_path / "stage1_neumf", ds)
    for stage in ("valid", "test"):
        np.testing.assert_allclose(s1run.user_representations(stage), u_np, rtol=1e-6, atol=1e-9)
    p = jax.tree.map(np.asarray, res.params)
    e, _ = _np_ae(p["item_ae"], params["item_mf"])
    q, _ = _np_ae(p["text_ae"], emb)
    warm = np.bincount(ds.train.item, minlength=ds.num_items) > 0
    joint = np.where(warm[:, None], e, q)
    np.testing.assert_allclose(s1run.joint_item_embeddings(), joint, rtol=1e-5, atol=1e-6)
    decoded = joint @ p["item_ae"]["fc2"]["kernel"] + p["item_ae"]["fc2"]["bias"]
    user, items = s1run.recommender_embeddings("test")
    np.testing.assert_allclose(user, u_np, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(items, decoded, rtol=1e-5, atol=1e-5)
    inputs = stage1_inputs(s1run, ds)
    assert inputs.kind == "stage1" and inputs.item_emb.shape == (ds.num_items, 16)
    assert inputs.score_items.shape == (ds.num_items, 6)
    for stage in ("train", "valid", "test"):
        np.testing.assert_allclose(inputs.user_rep[stage], u_np, rtol=1e-6, atol=1e-9)
    fallback = sasrec_run_inputs(tmp_path / "neumf", ds)
    assert "NCF (NeuMF) fallback: no stage 1" in fallback.source
    np.testing.assert_array_equal(fallback.item_emb, params["item_mf"])
    # a general backbone scores its own users only
    with pytest.raises(s1.Stage1Error, match="general model"):
        s1run.cross_domain(ds, emb)
    with pytest.raises(s1.Stage1Error, match=r"histories: 5 rows; the NCF \(NeuMF\) run has 40 users"):
        s1.NEUMF_BACKBONE.embed(run.params, np.zeros((5, 3), np.int32), run.settings)
    from types import SimpleNamespace  # noqa: PLC0415

    other = SimpleNamespace(name="other", num_users=5, num_items=ds.num_items)
    with pytest.raises(s1.Stage1Error, match="eval_dataset 'other': 5 users; the NCF \\(NeuMF\\) run has 40"):
        s1.evaluation_context(s1run.contexts["test"], other, c)
    same = s1.evaluation_context(s1run.contexts["test"], ds, c)  # cold users: the same user id space
    np.testing.assert_allclose(np.asarray(jax.jit(s1run.model.embed)(s1run.params, same)[0]), u_np, rtol=1e-6)
    # any max_seq_len: NeuMF reads no history (the windows only pick the training pairs)
    from jaxrec.train import check_run  # noqa: PLC0415

    c9 = c.replace(max_seq_len=9)
    check_run(get_model(c9), ds, c9)


def test_align_stage1_over_an_unknown_backbone_names_the_expected_ones(tiny, tmp_path):
    """A run of a model stage 1 cannot align (MF) is refused, naming every backbone it can."""
    root, config, ds, emb = tiny
    mc = Config.for_model("mf", dataset=config.dataset, candidates_dir=config.candidates_dir, embedding_size=4,
                          epochs=1, split="loo_time", evaluation="candidates", topk=(1, 5, 10),
                          metrics=("hit", "ndcg", "mrr"), valid_metric="ndcg@10", full_view_topk=())
    fit(get_model(mc), ds, mc, out_dir=tmp_path / "mf", progress=False)
    with pytest.raises(s1.Stage1Error, match=r"model 'mf'; expected 'sasrec' or 'gru4rec' or 'nextitnet' or "
                                             r"'neumf'"):
        s1.load_sasrec_run(tmp_path / "mf", ds)
    with pytest.raises(s1.Stage1Error, match="backbone 'mf': expected one of sasrec, gru4rec, nextitnet, neumf"):
        s1.sasrec_settings_of({}, ds.num_items, "mf")
    with pytest.raises(s1.Stage1Error, match="NeuMFArch"):
        s1.backbone_module(object())
