"""jaxrec.serve on tiny data: load_run, recommend/score against numpy from the exported
embeddings, the "serve" graph against a dense numpy LightGCN, write_recommendations, the CLI
subcommands, init.json, the long-short update (carried rows, stored selection, cache hits)
and every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import jaxrec
from helpers import clustered_interactions, write_tiny_dataset
from jaxrec.cli import main
from jaxrec.data import DataError, load_dataset, write_atomic
from jaxrec.init import save_precomputed
from jaxrec.serve import (Catalog, InitRecordError, Run, ServeError, carry_params, export, item_rows, load_run,
                          recommend, score, update, write_recommendations)
from jaxrec.serve.update import merge_files, new_item_embeddings, old_positions

INTER_TYPES = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
ITEM_TYPES = {"item_id": "token", "movie_title": "token_seq"}
N_TEXT, K = 16, 8


def _inter(rows):
    return {"user_id": np.array([f"u{r[0]}" for r in rows]), "item_id": np.array([f"i{r[1]}" for r in rows]),
            "rating": np.array([r[2] for r in rows]), "timestamp": np.array([r[3] for r in rows])}


def _items(ids):
    return {"item_id": np.array([f"i{i}" for i in ids]), "movie_title": [["Movie", str(i)] for i in ids]}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The tiny data cut in two: the parent dataset (items < 36, users < 55) and the new
    rows (items >= 36 and users >= 55: the latest in time), plus text embeddings of all 40
    items (N=16) as a precomputed file."""
    root = tmp_path_factory.mktemp("serve")
    rows = clustered_interactions(0)
    is_new = np.array([r[1] >= 36 or r[0] >= 55 for r in rows])
    old = [r for r, m in zip(rows, is_new) if not m]
    new = [r for r, m in zip(rows, is_new) if m]
    folder = root / "parent" / "tiny"
    write_atomic(folder / "tiny.inter", _inter(old), INTER_TYPES)
    old_items = sorted({r[1] for r in old})
    write_atomic(folder / "tiny.item", _items(old_items), ITEM_TYPES)
    write_atomic(root / "new.inter", _inter(new), INTER_TYPES)
    new_items = sorted({r[1] for r in new} - set(old_items))
    # one row for an item the parent has (with another title): kept out, counted
    extra = _items(new_items + [old_items[0]])
    extra["movie_title"][-1] = ["Other", "title"]
    write_atomic(root / "new.item", extra, ITEM_TYPES)
    emb = np.random.default_rng(0).standard_normal((40, N_TEXT)).astype(np.float32)
    save_precomputed(root / "emb.npy", emb, [f"i{i}" for i in range(40)])
    return {"root": root, "folder": folder, "emb": emb, "new_items": new_items}


def _config(dataset, **kw):
    base = dict(dataset=str(dataset), epochs=1, embedding_size=K, batch_size=64, topk=(5, 10))
    return jaxrec.Config.for_model(kw.pop("model", "lightgcn"), **{**base, **kw})


@pytest.fixture(scope="module")
def lgcn_run(split):
    """LightGCN with LLM init (variance over the precomputed embeddings), time-ordered split."""
    cfg = _config(split["folder"], init="variance", embeddings=str(split["root"] / "emb.npy"), split="loo_time")
    out = split["root"] / "lgcn"
    jaxrec.train_run(cfg, out_dir=out, progress=False)
    return load_run(out)


@pytest.fixture(scope="module")
def mf_run(tmp_path_factory):
    folder = write_tiny_dataset(tmp_path_factory.mktemp("mf"))
    out = folder.parent / "mf-run"
    jaxrec.train_run(_config(folder, model="mf"), out_dir=out, progress=False)
    return load_run(out)


def known_pairs(dataset) -> set[tuple[str, str]]:
    """Every (user id, item id) of train, valid and test, by original ids."""
    out = set()
    for part in (dataset.train, dataset.valid, dataset.test):
        out |= set(zip(dataset.user_ids[part.user].tolist(), dataset.item_ids[part.item].tolist()))
    return out


def numpy_topk(folder: Path, users, k, seen=None, candidates=None):
    """Top-k from the exported files: float64 scores, seen pairs removed, ties to the lower row."""
    ue, ie = np.load(folder / "user_embeddings.npy"), np.load(folder / "item_embeddings.npy")
    uid = (folder / "user_ids.txt").read_text().split()
    iid = np.array((folder / "item_ids.txt").read_text().split())
    cols = np.arange(len(iid)) if candidates is None else np.array([list(iid).index(c) for c in candidates])
    out_items, out_scores = [], []
    for u in users:
        s = ue[uid.index(u)].astype(np.float64) @ ie[cols].T.astype(np.float64)
        allowed = [j for j in range(len(cols)) if seen is None or (u, iid[cols[j]]) not in seen]
        order = sorted(allowed, key=lambda j: (-s[j], cols[j]))[:k]
        out_items.append(iid[cols[order]].tolist())
        out_scores.append(s[order])
    return out_items, np.array(out_scores)


# ------------------------------------------------------------------------------- load_run
def test_load_run_restores_best_params_and_identity(lgcn_run, split):
    run = lgcn_run
    assert run.config.model == "lightgcn" and run.config.init == "variance"
    assert run.fingerprint == json.loads((run.path / "run.json").read_text())["dataset"]
    assert run.results["test"] == json.loads((run.path / "results.json").read_text())["test"]
    u, i = run.params["user_embedding"], run.params["item_embedding"]
    assert u.shape == (run.dataset.num_users, K) and i.shape == (run.dataset.num_items, K)
    # the best params are the ones fit returned: evaluating them gives results.json's test metrics
    from jaxrec.train import evaluate_params, prepare
    prepared = prepare(run.dataset)
    ctx = prepared.contexts("graph")["test"]
    metrics = evaluate_params(run.model, run.params, ctx, "test", run.config, prepared)
    assert metrics["ndcg@10"] == pytest.approx(run.results["test"]["ndcg@10"], abs=1e-6)


def test_init_json_stores_the_variance_selection(lgcn_run, split):
    rec = json.loads((lgcn_run.path / "init.json").read_text())
    ds = lgcn_run.dataset
    # numpy reference (LLMInit, DESIGN 2.1): variance over the 20% most popular training items
    emb = split["emb"][[int(i[1:]) for i in ds.item_ids]]
    pop = np.bincount(ds.train.item, minlength=ds.num_items)
    top = np.argsort(-pop, kind="stable")[: max(1, int(0.2 * ds.num_items))]
    dims = np.sort(np.argsort(-emb[top].var(axis=0), kind="stable")[:K])
    assert rec["strategy"] == "variance" and rec["k"] == K and rec["n"] == N_TEXT and rec["reusable"]
    assert rec["indices"] == dims.tolist()
    assert rec["source"]["embeddings"] == str(split["root"] / "emb.npy")
    np.testing.assert_array_equal(item_rows(rec, emb), emb[:, dims])


# ----------------------------------------------------------------------- recommend / score
@pytest.mark.parametrize("which", ["lgcn", "mf"])
def test_recommend_and_score_match_numpy_on_exported_embeddings(which, lgcn_run, mf_run, tmp_path):
    run = lgcn_run if which == "lgcn" else mf_run
    files = export(run, tmp_path / "exp")
    users = [run.dataset.user_ids[j] for j in (3, 0, 17)]
    recs = recommend(run, users, k=10)
    ref_items, ref_scores = numpy_topk(tmp_path / "exp", users, 10, seen=known_pairs(run.dataset))
    assert recs.users.tolist() == users
    assert recs.items.tolist() == ref_items
    np.testing.assert_allclose(recs.scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert not any((u, i) in known_pairs(run.dataset) for u, row in zip(users, recs.items.tolist()) for i in row)
    items = [run.dataset.item_ids[j] for j in (5, 1, 30)]
    ue, ie = np.load(files["user_embeddings.npy"]), np.load(files["item_embeddings.npy"])
    ref = ue[[list(run.dataset.user_ids).index(u) for u in users]] @ ie[[list(run.dataset.item_ids).index(i)
                                                                          for i in items]].T
    np.testing.assert_allclose(score(run, users, items), ref, rtol=1e-5, atol=1e-6)
    # the parquet files hold the same rows and ids as the .npy / .txt pair
    users_pq = pq.read_table(files["users.parquet"])
    assert users_pq.column("user_id").to_pylist() == list(run.dataset.user_ids)
    np.testing.assert_array_equal(np.array(users_pq.column("embedding").to_pylist(), np.float32), ue)


def test_served_lightgcn_embeddings_are_dense_numpy_propagation_over_all_known(lgcn_run):
    """The "serve" context: the graph of train + valid + test interactions (repeats merged)."""
    run = lgcn_run
    ds = run.dataset
    U, I = ds.num_users, ds.num_items
    a = np.zeros((U + I, U + I))
    for part in (ds.train, ds.valid, ds.test):
        a[part.user, U + part.item] = a[U + part.item, part.user] = 1.0
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)
    norm = inv[:, None] * a * inv[None, :]
    e0 = np.concatenate([np.asarray(run.params["user_embedding"]), np.asarray(run.params["item_embedding"])]
                        ).astype(np.float64)
    e1 = norm @ e0
    final = (e0 + e1 + norm @ e1) / 3
    np.testing.assert_allclose(run.catalog.user_emb, final[:U], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(run.catalog.item_emb), final[U:], rtol=1e-4, atol=1e-6)


def test_candidates_and_include_seen(mf_run, tmp_path):
    run = mf_run
    export(run, tmp_path)
    user = run.dataset.user_ids[2]
    cands = [run.dataset.item_ids[j] for j in (9, 4, 33, 12, 20, 0)]
    recs = recommend(run, [user], k=3, candidates=cands)
    ref, _ = numpy_topk(tmp_path, [user], 3, seen=known_pairs(run.dataset), candidates=cands)
    assert recs.items.tolist() == ref
    all_seen = recommend(run, [user], k=5, exclude_seen=False)
    ref_all, _ = numpy_topk(tmp_path, [user], 5)
    assert all_seen.items.tolist() == ref_all


def test_fewer_rankable_items_than_k_leaves_empty_slots(mf_run):
    run = mf_run
    user = run.dataset.user_ids[0]
    seen = {i for u, i in known_pairs(run.dataset) if u == user}
    cands = sorted(seen)[:2] + [i for i in run.dataset.item_ids if i not in seen][:2]
    recs = recommend(run, [user], k=3, candidates=cands)
    assert recs.item_index[0, 2] == -1 and recs.items[0, 2] == "" and np.isnan(recs.scores[0, 2])
    assert set(recs.items[0, :2]) == set(cands[2:])
    assert recs.to_arrow().num_rows == 2


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_recommendations_in_blocks_matches_recommend(mf_run, tmp_path, suffix):
    run = mf_run
    report = write_recommendations(run, tmp_path / f"recs{suffix}", k=4, block_users=7, progress=False)
    table = pq.read_table(report.path) if suffix == ".parquet" else pcsv.read_csv(report.path)
    assert report.users == run.num_users and report.rows == table.num_rows == 4 * run.num_users
    whole = recommend(run, list(run.dataset.user_ids), k=4)
    assert table.column("user_id").to_pylist() == np.repeat(whole.users, 4).astype(str).tolist()
    assert table.column("item_id").to_pylist() == [str(x) for x in whole.items.ravel()]
    assert table.column("rank").to_pylist() == [1, 2, 3, 4] * run.num_users
    np.testing.assert_allclose(np.asarray(table.column("score"), np.float32), whole.scores.ravel(), rtol=1e-6)


def test_catalog_of_plain_arrays():
    rng = np.random.default_rng(3)
    ue, ie = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((9, 4)).astype(np.float32)
    cat = Catalog.from_arrays(ue, ie)
    recs = recommend(cat, ["5", "1"], k=3)
    ref = np.argsort(-(ue[[5, 1]].astype(np.float64) @ ie.T.astype(np.float64)), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(recs.item_index, ref)


# ------------------------------------------------------------------------------ bad input
def test_bad_requests_fail_before_any_compute(mf_run, tmp_path):
    run = load_run(mf_run.path)  # a fresh Run: nothing embedded yet
    uid, iid = run.dataset.user_ids[0], run.dataset.item_ids[0]
    cases = [
        (lambda: recommend(run, [uid, "nobody", "ghost"], k=5), "unknown user id(s) 'nobody', 'ghost'"),
        (lambda: recommend(run, [uid], k=run.num_items + 1), f"k={run.num_items + 1}: larger than the catalog"),
        (lambda: recommend(run, [uid], k=0), "k=0: expected an integer >= 1"),
        (lambda: recommend(run, [], k=5), "users: none given"),
        (lambda: recommend(run, [uid], k=3, candidates=[iid, "i999"]), "unknown item id(s) 'i999'"),
        (lambda: recommend(run, [uid], k=3, candidates=[iid, iid]), "repeated item id"),
        (lambda: recommend(run, [uid], k=3, candidates=[iid, run.dataset.item_ids[1]]), "larger than the candidates"),
        (lambda: score(run, [uid], ["i999"]), "unknown item id(s) 'i999'"),
        (lambda: write_recommendations(run, tmp_path / "r.txt"), "expected .parquet or .csv"),
    ]
    for call, message in cases:
        with pytest.raises(ServeError, match=re.escape(message)):
            call()
    assert "catalog" not in run.__dict__  # no embedding was computed for any of them


def test_load_run_refuses_another_dataset_and_bad_folders(mf_run, tmp_path):
    other = write_tiny_dataset(tmp_path, seed=1)
    with pytest.raises(ServeError, match="trained on another dataset.*sha256"):
        load_run(mf_run.path, dataset=other)
    with pytest.raises(ServeError, match="not found"):
        load_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServeError, match="no run.json"):
        load_run(tmp_path / "empty")
    with pytest.raises(ServeError, match="results.json: a file, not a folder"):
        load_run(mf_run.path / "results.json")


# ------------------------------------------------------------------------------------ CLI
def test_cli_recommend_table_all_and_export(mf_run, tmp_path, capsys):
    run = mf_run
    users = f"{run.dataset.user_ids[1]},{run.dataset.user_ids[4]}"
    assert main(["recommend", "--run", str(run.path), "--users", users, "--k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    recs = recommend(run, users.split(","), k=3)
    assert out[0].split() == ["user", "rank", "item", "score", "title"]
    first = out[2].split()
    assert first[:3] == [recs.users[0], "1", recs.items[0, 0]] and " ".join(first[4:]) == "Movie " + recs.items[0, 0][1:]
    assert len(out) == 2 + 6
    assert main(["recommend", "--run", str(run.path), "--all", "--k", "2", "--out", str(tmp_path / "a.parquet"),
                 "--no-progress"]) == 0
    assert pq.read_table(tmp_path / "a.parquet").num_rows == 2 * run.num_users
    assert main(["export", "--run", str(run.path), "--out", str(tmp_path / "exp")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "exp" / "item_embeddings.npy"), np.asarray(run.catalog.item_emb))
    assert (tmp_path / "exp" / "item_ids.txt").read_text().split() == list(run.dataset.item_ids)


@pytest.mark.parametrize("argv, message", [
    (["--users", "u1,nobody"], "unknown user id(s) 'nobody'"),
    (["--users", "u1", "--k", "999"], "k=999: larger than the catalog (40 items)"),
    (["--all"], "give --out"),
    (["--users", "u1", "--out", "x.json"], "expected .parquet or .csv"),
    (["--users", "u1", "--candidates", "i1,i404"], "unknown item id(s) 'i404'"),
])
def test_cli_recommend_errors(mf_run, capsys, argv, message):
    assert main(["recommend", "--run", str(mf_run.path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrec: error: ") and message in err


def test_cli_errors_for_run_folder_and_dataset(mf_run, tmp_path, capsys):
    other = write_tiny_dataset(tmp_path, seed=1)
    assert main(["recommend", "--run", str(mf_run.path), "--users", "u1", "--dataset", str(other)]) == 2
    assert "trained on another dataset" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2
    assert "run folder" in capsys.readouterr().err and not (tmp_path / "e").exists()


# ------------------------------------------------------------------------- long-short update
@pytest.fixture(scope="module")
def merged(split, lgcn_run, tmp_path_factory):
    folder, reports = merge_files(lgcn_run, split["root"] / "new.inter", split["root"] / "new.item", None,
                                  tmp_path_factory.mktemp("merged"))
    return load_dataset(folder, lgcn_run.config.replace(dataset=str(folder))), reports


def test_merge_appends_rows_and_counts_existing_ids(merged, split):
    dataset, reports = merged
    by_kind = {r.kind: r for r in reports}
    assert by_kind["inter"].appended == len(clustered_interactions(0)) - by_kind["inter"].parent_rows
    assert by_kind["item"].appended == len(split["new_items"])
    assert (by_kind["item"].skipped_existing, by_kind["item"].changed_existing) == (1, 1)
    assert dataset.num_items == 40 and dataset.num_users == 60
    # the run's item keeps its own title
    assert dataset.item_features["movie_title"][list(dataset.item_ids).index("i0")] == "Movie 0"


def test_carry_params_start_from_the_parent_exactly(lgcn_run, merged, split):
    run, (dataset, _) = lgcn_run, merged
    new_dense = np.flatnonzero(old_positions(run.dataset.item_ids, dataset.item_ids) < 0)
    emb, rep = new_item_embeddings(run, dataset, new_dense)
    assert rep.new_items == len(split["new_items"]) and rep.from_file == rep.new_items and rep.encoded == 0
    rows = item_rows(run.init, emb)
    params, carry = carry_params(run, dataset, run.model, jaxrec.train.run_keys(0).init, rows, "llm")
    n_new = len(split["new_items"])
    assert (carry.items_kept, carry.items_new, carry.users_kept, carry.users_new) == (40 - n_new, n_new, 55, 5)
    for side, ids_old, ids_new in (("user", run.dataset.user_ids, dataset.user_ids),
                                   ("item", run.dataset.item_ids, dataset.item_ids)):
        old, new = np.asarray(run.params[f"{side}_embedding"]), np.asarray(params[f"{side}_embedding"])
        for j, oid in enumerate(ids_old):  # every existing row, by original id, exactly
            np.testing.assert_array_equal(new[list(ids_new).index(oid)], old[j])
    # new items: their text embeddings on the run's stored dims (init.json)
    item_table = np.asarray(params["item_embedding"])
    for i in split["new_items"]:
        np.testing.assert_array_equal(item_table[list(dataset.item_ids).index(f"i{i}")],
                                      split["emb"][i, run.init["indices"]])
    # new users: the mean of their training items' rows
    users = np.asarray(params["user_embedding"])
    for uid in [u for u in dataset.user_ids if u not in set(run.dataset.user_ids)]:
        u = list(dataset.user_ids).index(uid)
        mine = dataset.train.item[dataset.train.user == u]
        np.testing.assert_allclose(users[u], item_table[mine].mean(axis=0), rtol=1e-6, atol=1e-7)


def test_carry_params_trained_scale_matches_the_trained_norms(lgcn_run, merged):
    run, (dataset, _) = lgcn_run, merged
    pos_i = old_positions(run.dataset.item_ids, dataset.item_ids)
    pos_u = old_positions(run.dataset.user_ids, dataset.user_ids)
    emb, _ = new_item_embeddings(run, dataset, np.flatnonzero(pos_i < 0))
    rows = item_rows(run.init, emb)
    key = jaxrec.train.run_keys(0).init
    plain, _ = carry_params(run, dataset, run.model, key, rows, "llm")
    scaled, rep = carry_params(run, dataset, run.model, key, rows, "llm", "trained")
    for side, pos in (("item", pos_i), ("user", pos_u)):
        a, b = np.asarray(plain[f"{side}_embedding"]), np.asarray(scaled[f"{side}_embedding"])
        new, kept = pos < 0, pos >= 0
        np.testing.assert_array_equal(a[kept], b[kept])  # carried rows untouched
        norms = np.linalg.norm(b.astype(np.float64), axis=1)
        assert norms[new].mean() == pytest.approx(norms[kept].mean(), rel=1e-5)
    # new items: one factor, directions kept; new users: pooled from the scaled item table, then one factor
    items_a, items_b = np.asarray(plain["item_embedding"]), np.asarray(scaled["item_embedding"])
    np.testing.assert_allclose(items_b[pos_i < 0], items_a[pos_i < 0] * rep.scale_factors["item"], rtol=1e-6)
    users_b = np.asarray(scaled["user_embedding"])
    for u in np.flatnonzero(pos_u < 0):
        pooled = items_b[dataset.train.item[dataset.train.user == u]].mean(axis=0)
        np.testing.assert_allclose(users_b[u], pooled * rep.scale_factors["user"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ServeError, match="new_row_scale"):
        carry_params(run, dataset, run.model, key, rows, "llm", "huge")


@pytest.mark.parametrize("scale, norm", [("none", "none"), ("match_random", "none"), ("standardize", "none"),
                                         ("minmax", "none"), ("none", "unit"), ("none", "typical"),
                                         ("minmax", "unit")])
def test_item_rows_reproduce_the_runs_own_initialization(split, scale, norm):
    ds = load_dataset(split["folder"], _config(split["folder"]))
    cfg = _config(split["folder"], init="variance", init_scale=scale, init_norm=norm,
                  embeddings=str(split["root"] / "emb.npy"))
    model = jaxrec.get_model(cfg)
    params, record = jaxrec.pipeline.llm_initial_params(model, ds, cfg)
    record = json.loads(json.dumps(record))  # as stored in init.json
    emb = split["emb"][[int(i[1:]) for i in ds.item_ids]]
    rows = item_rows(record, emb)
    np.testing.assert_allclose(rows, np.asarray(params["item_embedding"]), rtol=1e-6 if norm != "none" else 0,
                               atol=1e-7 if scale == "standardize" or norm != "none" else 0)


def test_item_rows_refuses_records_without_a_map():
    with pytest.raises(InitRecordError, match="not LLM-initialized"):
        item_rows({"strategy": "none"}, np.zeros((1, 4)))
    with pytest.raises(InitRecordError, match="pca"):
        item_rows({"strategy": "pca", "reusable": False}, np.zeros((1, 4)))
    with pytest.raises(InitRecordError, match="expected"):
        item_rows({"strategy": "uniform", "reusable": True, "n": 4, "indices": [0]}, np.zeros((1, 5)))


class HashEncoder:
    """A deterministic stand-in text encoder (N=16) that counts what it encodes."""

    name = "test-hash-encoder"

    def __init__(self):
        self.texts: list[str] = []

    def encode(self, texts, **kw):
        self.texts += list(texts)
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(N_TEXT) for t in texts]
                        ).astype(np.float32)


def test_new_texts_encoded_once_the_rest_from_the_cache(lgcn_run, merged, tmp_path):
    from jaxrec.init import dataset_item_embeddings
    from jaxrec.init.text import item_texts, template_for

    dataset = merged[0]
    enc = HashEncoder()
    dataset_item_embeddings(lgcn_run.dataset, enc, cache_dir=tmp_path, progress=False)  # the run's texts, cached
    run = Run(lgcn_run.path, lgcn_run.config, lgcn_run.model, lgcn_run.params, lgcn_run.dataset, {}, None,
              {**lgcn_run.init, "source": {"embeddings": None, "encoder": enc.name}})
    new_dense = np.flatnonzero(old_positions(run.dataset.item_ids, dataset.item_ids) < 0)
    enc.texts.clear()
    emb, rep = new_item_embeddings(run, dataset, new_dense, encoder=enc, cache_dir=tmp_path)
    texts, _ = item_texts(dataset.item_features, template_for(dataset.name, dataset.item_features))
    new_texts = [texts[j] for j in new_dense]
    assert rep.encoded == len(enc.texts) == new_dense.size and sorted(enc.texts) == sorted(new_texts)
    assert rep.from_cache == run.dataset.num_items
    np.testing.assert_array_equal(emb, enc.encode(new_texts))
    enc.texts.clear()
    _, again = new_item_embeddings(run, dataset, new_dense, encoder=enc, cache_dir=tmp_path)
    assert again.encoded == 0 and enc.texts == [] and again.from_cache == dataset.num_items


def test_update_cli_end_to_end(lgcn_run, split, tmp_path, capsys):
    out = tmp_path / "run2"
    argv = ["update", "--run", str(lgcn_run.path), "--interactions", str(split["root"] / "new.inter"),
            "--items", str(split["root"] / "new.item"), "--out", str(out), "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"{len(split['new_items'])} new items (llm init), 5 new users" in text and "ndcg@10" in text
    results = json.loads((out / "results.json").read_text())
    assert results["parent"]["run"] == str(lgcn_run.path.resolve())
    assert results["parent"]["dataset"] == lgcn_run.fingerprint
    assert results["update"]["test_seen_by_parent"] == 0  # loo_time: the parent never trained on these
    assert results["config"]["epochs"] == 1 and results["dataset"]["num_items"] == 40
    init = json.loads((out / "init.json").read_text())
    assert init["indices"] == lgcn_run.init["indices"] and init["inherited_from"] == str(lgcn_run.path.resolve())
    child = load_run(out)
    assert child.parent["run"] == str(lgcn_run.path.resolve())
    assert recommend(child, ["u57"], k=3).items.shape == (1, 3)  # a new user is served
    assert main(argv) == 2 and "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("no_items", "item_id(s) have no row in"),
    ("header", "does not match the run's"),
    ("same_folder", "the run's own folder"),
    ("llm_without_init", "was not LLM-initialized"),
    ("bad_set", "unknown config key"),
])
def test_update_bad_inputs(lgcn_run, mf_run, split, tmp_path, case, message):
    root = split["root"]
    kw = dict(items=root / "new.item", epochs=1, progress=False)
    run, inter, out = lgcn_run, root / "new.inter", tmp_path / "u"
    if case == "no_items":
        kw.pop("items")
    elif case == "header":
        inter = tmp_path / "x.inter"
        write_atomic(inter, {"user_id": np.array(["u1"]), "item_id": np.array(["i1"])},
                     {"user_id": "token", "item_id": "token"})
    elif case == "same_folder":
        out = run.path
    elif case == "llm_without_init":
        run, kw = mf_run, {"new_items": "llm", "epochs": 1}
        inter = tmp_path / "y.inter"
        write_atomic(inter, _inter([(1, 2, 4.0, 5.0)]), INTER_TYPES)
    elif case == "bad_set":
        kw["sets"] = ["nope=1"]
    with pytest.raises((ServeError, DataError, jaxrec.ConfigError), match=re.escape(message)):
        update(run, inter, out, **kw)
    assert not (out / "ckpt").exists() or case == "same_folder"


# ------------------------------------------------------------------------------- SASRec
def test_sasrec_run_serves_from_histories_of_everything_known(tmp_path):
    """A sequence model serves through the same calls: the "serve" histories end with the
    validation then the test item (jaxrec.models.contexts.serve_histories), the user
    representation is SASRec's embed over them, and recommend matches numpy on the export."""
    from jaxrec.data.sequences import user_sequences
    from jaxrec.models.contexts import serve_context

    folder = write_tiny_dataset(tmp_path)
    cfg = jaxrec.Config.for_model("sasrec", dataset=str(folder), epochs=1, embedding_size=8, max_seq_len=6,
                                  num_heads=1, num_layers=1, batch_size=32, candidates_dir=str(tmp_path / "c"))
    jaxrec.train_run(cfg, out_dir=tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    hist = serve_context("sequences", run.dataset, run.config)
    seqs = user_sequences(run.dataset, log_report=False)
    has = seqs.test_item >= 0
    np.testing.assert_array_equal(hist[has, -1], seqs.test_item[has] + 1)
    np.testing.assert_array_equal(hist[has, -2], seqs.valid_item[has] + 1)
    last_train = seqs.items[seqs.indptr[1:][has] - 1]
    np.testing.assert_array_equal(hist[has, -3], last_train + 1)
    users = [run.dataset.user_ids[j] for j in np.flatnonzero(has)[:3]]
    export(run, tmp_path / "exp")
    recs = recommend(run, users, k=5)
    ref_items, ref_scores = numpy_topk(tmp_path / "exp", users, 5, seen=known_pairs(run.dataset))
    assert recs.items.tolist() == ref_items
    np.testing.assert_allclose(recs.scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_export_files_are_readable_by_others(mf_run, tmp_path):
    """Atomic writes go through mkstemp (0600): the renamed files are 0644 like the rest."""
    files = export(mf_run, tmp_path / "exp")
    assert {p.name: p.stat().st_mode & 0o777 for p in files.values()}["export.json"] == 0o644
