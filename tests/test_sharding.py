"""Sharded training on a Mesh: every sharded path against the single-device result.

Runs on the 8 host CPU devices that conftest.py asks for
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``). Sizes are chosen so the node
count is not a multiple of the device count. Every test name contains ``shard``.
"""

from __future__ import annotations

import json
import os

# More XLA:CPU pool threads than devices: with 8 host devices on 2 cores, a program waiting
# in a collective can starve another (a rare abort). Effective only if JAX has not started
# its CPU backend yet (tests/conftest.py is the place that surely comes first).
os.environ.setdefault("PJRT_NPROC", "32")
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import write_tiny_dataset
from jaxrec import distributed
from jaxrec.config import Config, ConfigError
from jaxrec.data import load_dataset
from jaxrec.eval import evaluate, topk_full_ranking
from jaxrec.eval.sharded import evaluate_sharded, topk_full_ranking_sharded
from jaxrec.graph import build_graph, light_propagate, propagate
from jaxrec.graph.augment import edge_dropout, node_dropout
from jaxrec.graph.sharded import FeatureShardedGraph, RowShardedGraph, shard_graph, unshard_graph
from jaxrec.models import get_model
from jaxrec.train import CheckpointMismatchError, RunCheckpoints, fit
from jaxrec.train.partition import MeshPartitioner, SingleDevice, make_partitioner
from jaxrec.train.sharding import make_mesh, mesh_from_devices

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "shard_worker.py"

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")


def _mesh(n: int, axis: str = "d"):
    return mesh_from_devices(jax.devices()[:n], (n,), (axis,))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(0)
    num_users, num_items = 37, 24  # 61 nodes: not a multiple of 2, 4 or 8
    u = rng.integers(0, num_users, 400)
    i = np.minimum(rng.zipf(1.6, 400) - 1, num_items - 1)  # power-law item popularity
    return build_graph(u, i, num_users, num_items)


# ----------------------------------------------------------------------- propagation


@pytest.mark.parametrize("strategy, comm, ndev", [
    ("feature", "ring", 8), ("feature", "ring", 2), ("row", "ring", 8), ("row", "ring", 3),
    ("row", "direct", 8), ("row", "direct", 3), ("row", "allgather", 8), ("row", "ring", 1),
])
def test_shard_propagation_and_gradient_match_single_device(graph, strategy, comm, ndev):
    x = jax.random.normal(jax.random.PRNGKey(0), (graph.num_nodes, 16))
    sg = shard_graph(graph, _mesh(ndev), strategy, "d", comm)
    assert isinstance(sg, FeatureShardedGraph if strategy == "feature" else RowShardedGraph)
    assert sg.num_nodes == graph.num_nodes

    def loss(xx, g):
        return jnp.sum(light_propagate(g, xx, 2) ** 2)

    out = jax.jit(propagate)(sg, x)
    np.testing.assert_allclose(out, propagate(graph, x), atol=1e-5)
    grad = jax.jit(jax.grad(loss))(x, sg)
    np.testing.assert_allclose(grad, jax.grad(loss)(x, graph), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["segment_sum", "bcoo", "dense"])
def test_shard_row_propagation_runs_every_kernel(graph, kernel):
    x = jax.random.normal(jax.random.PRNGKey(1), (graph.num_nodes, 8))
    sg = shard_graph(graph, _mesh(8), "row", "d")
    out = jax.jit(propagate, static_argnums=2)(sg, x, kernel)
    np.testing.assert_allclose(out, propagate(graph, x, kernel), atol=1e-5)


def test_shard_row_layout_keeps_rows_and_edges_local(graph):
    mesh = _mesh(8)
    sg = shard_graph(graph, mesh, "row", "d")
    rows = sg.rows_per_device
    assert rows == 8 and sg.padded_nodes == 64  # 61 nodes padded to 8 x 8
    # Each device's chunk of the edge arrays holds only edges ending in its own rows.
    ecap = sg.edges_per_device
    row = np.asarray(sg.row)
    mask = np.asarray(sg.edge_mask)
    for p in range(8):
        chunk_rows, chunk_mask = row[p * ecap:(p + 1) * ecap], mask[p * ecap:(p + 1) * ecap]
        assert np.all((chunk_rows[chunk_mask > 0] // rows) == p)
    assert [s.data.shape for s in sg.weight.addressable_shards] == [(ecap,)] * 8
    assert np.isclose(mask.sum(), graph.num_edges)
    # Ring: one [P * S, E_s] array per kind, S = P loop steps.
    assert sg.step_perm[0].shape[0] == 8 * 8 and len(sg.step_perm) == 1
    # Direct exchange: a block of users reads no other block of users, so those pairs
    # exchange nothing.
    direct = shard_graph(graph, mesh, "row", "d", "direct")
    pairs = {pq for step in direct.step_pairs for pq in step}
    assert pairs
    user_blocks = range(graph.num_users // rows)
    assert not any(q in user_blocks and p in user_blocks for q, p in pairs)
    # Round trip to the single-device graph.
    back = unshard_graph(sg)
    for name in ("indptr", "indices", "row", "weight", "degree"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(graph, name)))


@pytest.mark.parametrize("strategy", ["feature", "row"])
def test_shard_graph_augmentations_match_single_device(graph, strategy):
    sg = shard_graph(graph, _mesh(8), strategy, "d")
    key = jax.random.PRNGKey(7)
    x = jax.random.normal(key, (graph.num_nodes, 8))
    for aug in (edge_dropout, node_dropout):
        view = jax.jit(lambda g, k: aug(g, k, 0.3))(sg, key)
        assert type(view) is type(sg)
        ref = aug(graph, key, 0.3)
        np.testing.assert_allclose(jax.jit(propagate)(view, x), propagate(ref, x), atol=1e-5)
        np.testing.assert_allclose(np.asarray(unshard_graph(view).weight), np.asarray(ref.weight), atol=1e-6)


# ------------------------------------------------------------------------ evaluation


@pytest.mark.parametrize("ndev", [8, 3])
def test_shard_topk_and_metrics_equal_single_device_exactly(ndev):
    rng = np.random.default_rng(3)
    num_users, num_items, d = 45, 29, 6
    # Small integer embeddings: many exactly tied scores, so the tie order is tested too.
    ue = jnp.asarray(rng.integers(-2, 3, (num_users, d)).astype(np.float32))
    ie = jnp.asarray(rng.integers(-2, 3, (num_items, d)).astype(np.float32))
    ex_u = rng.integers(0, num_users, 300)
    ex_i = rng.integers(0, num_items, 300)
    keys = np.unique(ex_u * num_items + ex_i)
    ex_u, ex_i = keys // num_items, keys % num_items
    users = np.arange(num_users)
    mesh = _mesh(ndev)
    for k in (1, 10, num_items):
        ref = topk_full_ranking(ue, ie, users, ex_u, ex_i, k=k, chunk_size=16)
        got = topk_full_ranking_sharded(ue, ie, users, ex_u, ex_i, k=k, chunk_size=16, mesh=mesh, axis="d")
        np.testing.assert_array_equal(got, ref)
    truth_items = rng.integers(0, num_items, num_users)
    truth_ = (users.astype(np.int32), np.arange(num_users + 1, dtype=np.int32), truth_items.astype(np.int32))
    a = evaluate(ue, ie, None, (ex_u, ex_i), truth_, ks=(5, 10), chunk_size=16)
    b = evaluate_sharded(ue, ie, None, (ex_u, ex_i), truth_, ks=(5, 10), chunk_size=16, mesh=mesh, axis="d")
    assert a == b


# -------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = write_tiny_dataset(tmp_path_factory.mktemp("shard"), users=61, items=37)
    config = Config(dataset=str(folder), epochs=2, batch_size=64, embedding_size=8, learning_rate=0.01,
                    topk=(5, 10), valid_metric="ndcg@10", patience=100)
    return folder, config, load_dataset(str(folder), config)


_REFERENCE: dict = {}


def _reference(tiny, model_name):
    _, config, ds = tiny
    if model_name not in _REFERENCE:
        c = config.replace(model=model_name)
        _REFERENCE[model_name] = fit(get_model(c), ds, c, progress=False)
    return _REFERENCE[model_name]


@pytest.mark.parametrize("model_name, overrides", [
    ("lightgcn", {"sharding": "feature"}),
    ("lightgcn", {"sharding": "row"}),
    ("lightgcn", {"sharding": "row", "row_comm": "allgather", "mesh_shape": (2, 4),
                  "mesh_axes": ("data", "model"), "model_axis": "model"}),
    ("sgl", {"sharding": "row"}),
    ("sgcl", {"sharding": "feature", "mesh_shape": (4, 2), "mesh_axes": ("data", "model"), "model_axis": "model"}),
    ("mf", {"sharding": "row"}),
])
def test_shard_training_matches_single_device(tiny, model_name, overrides):
    _, config, ds = tiny
    ref = _reference(tiny, model_name)
    c = config.replace(model=model_name, **overrides)
    res = fit(get_model(c), ds, c, progress=False)
    for a, b in zip(_leaves(ref.params), _leaves(res.params)):
        np.testing.assert_allclose(b, a, atol=1e-4)
    assert [r["loss"] for r in res.history] == pytest.approx([r["loss"] for r in ref.history], abs=1e-4)
    assert res.test_metrics == ref.test_metrics
    assert res.valid_metrics == ref.valid_metrics
    # Tables live split over the mesh: no device holds a whole one.
    table = res.params["item_embedding"]
    assert len(table.sharding.device_set) == 8
    assert all(s.data.size < table.size for s in table.addressable_shards)


def test_shard_fit_checkpoints_and_resumes_sharded_state(tiny, tmp_path):
    _, config, ds = tiny
    c = config.replace(sharding="row")
    model = get_model(c)
    fit(model, ds, c.replace(epochs=1), out_dir=tmp_path, progress=False)  # "interrupted" after epoch 0
    resumed = fit(model, ds, c, out_dir=tmp_path, resume=True, progress=False)
    ref = _reference(tiny, "lightgcn")
    for a, b in zip(_leaves(ref.params), _leaves(resumed.params)):
        np.testing.assert_allclose(b, a, atol=1e-4)
    assert resumed.test_metrics == ref.test_metrics
    assert resumed.params["item_embedding"].sharding.num_devices == 8


@pytest.mark.slow
def test_shard_sasrec_data_parallel_matches_single_device(tiny, tmp_path):
    """SASRec under sharding="feature": batches split over the 8 devices, [rows, 16] tables split
    along d; the same losses, parameters and metrics as one device (hash dropout masks are drawn
    per global element, so they do not depend on the layout)."""
    folder, _, _ = tiny
    c = Config.for_model("sasrec", dataset=str(folder), candidates_dir=str(tmp_path), embedding_size=16, num_heads=2,
                         num_layers=1, max_seq_len=6, batch_size=32, learning_rate=0.01, epochs=3)
    ds = load_dataset(str(folder), c)  # split loo_time (SASRec's protocol)
    ref = fit(get_model(c), ds, c, progress=False)
    assert ref.history[-1]["loss"] < ref.history[0]["loss"]  # it learns
    sharded = c.replace(sharding="feature")
    res = fit(get_model(sharded), ds, sharded, progress=False)
    flat_ref = jax.tree_util.tree_flatten_with_path(ref.params)[0]
    for (path, a), b in zip(flat_ref, jax.tree.leaves(res.params)):
        if "key" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path):
            continue  # exact gradient 0 (softmax ignores a shift of all logits): Adam amplifies rounding noise
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4, err_msg=jax.tree_util.keystr(path))
    assert [r["loss"] for r in res.history] == pytest.approx([r["loss"] for r in ref.history], abs=1e-5)
    assert res.test_metrics == pytest.approx(ref.test_metrics, abs=1e-6)
    table = res.params["item_embedding"]
    assert table.sharding.spec == jax.sharding.PartitionSpec(None, "data") and len(table.sharding.device_set) == 8
    part = make_partitioner(sharded)
    batch = part.place_batch({"seq": np.zeros((32, 6), np.int32), "user": np.zeros(32, np.int32)})
    assert batch["seq"].sharding.spec == jax.sharding.PartitionSpec("data")


def test_shard_placement_specs_and_batches():
    mesh = make_mesh(shape=(8,), axes=("data",))
    row = MeshPartitioner("row", mesh)
    feat = MeshPartitioner("feature", mesh)
    P = jax.sharding.PartitionSpec
    assert row.spec((64, 10)) == P("data", None)  # rows divide: split rows
    assert row.spec((61, 16)) == P(None, "data")  # uneven rows: split the embedding dimension
    assert row.spec((61, 10)) == P()  # neither divides: replicated
    assert feat.spec((61, 16)) == P(None, "data") and feat.spec((7,)) == P()
    batch = row.place_batch({"user": np.arange(64), "pos": np.arange(64)})
    assert batch["user"].sharding.spec == P("data")
    assert row.place_batch({"user": np.arange(13)})["user"].sharding.spec == P()  # uneven last batch
    assert SingleDevice().place_batch({"u": 1}) == {"u": 1}


# ----------------------------------------------------------------------- checkpoints


def _train_state(num_users=61, num_items=40, dim=16):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"user_embedding": jax.random.normal(k1, (num_users, dim)),
              "item_embedding": jax.random.normal(k2, (num_items, dim))}
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)
    _, opt_state = opt.update(params, opt_state, params)
    return {"params": params, "opt_state": opt_state, "key": jax.random.PRNGKey(5)}


@pytest.mark.parametrize("save_n, restore_ns", [(8, (1, 4)), (1, (8,)), (4, (8,))])
def test_shard_checkpoint_restores_onto_other_meshes(tmp_path, save_n, restore_ns):
    state = _train_state()
    host = _leaves(state)
    placements = {n: MeshPartitioner("row", _mesh(n, "data")) for n in (save_n, *restore_ns)}
    saved = placements[save_n].place(state)
    assert saved["params"]["item_embedding"].sharding.num_devices == save_n
    with RunCheckpoints(tmp_path) as ck:
        ck.save("latest", 3, saved, {"epoch": 3})
    for n in restore_ns:
        target = placements[n].abstract(state)
        with RunCheckpoints(tmp_path) as ck:
            restored, meta = ck.restore("latest", target)
        assert meta == {"epoch": 3}
        for a, b in zip(host, _leaves(restored)):
            np.testing.assert_array_equal(a, b)
        emb = restored["params"]["item_embedding"]
        assert emb.sharding.num_devices == n and emb.sharding.spec == placements[n].spec(emb.shape)


def test_shard_checkpoint_restore_rejects_other_shapes_before_compute(tmp_path):
    state = _train_state()
    place = MeshPartitioner("feature", _mesh(8, "data"))
    with RunCheckpoints(tmp_path) as ck:
        ck.save("best", 0, place.place(state), {})
        bad = place.abstract(_train_state(num_items=41))
        with pytest.raises(CheckpointMismatchError, match=r"item_embedding has shape \(40, 16\).*\(41, 16\)"):
            ck.restore("best", bad)


def test_shard_checkpoint_killed_during_save_leaves_previous_usable(tmp_path):
    ckpt = tmp_path / "ckpt"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO)
    env["PJRT_NPROC"] = "32"
    proc = subprocess.Popen([sys.executable, str(WORKER), "save-loop", "--ckpt", str(ckpt), "--rows", "100000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    latest = ckpt / "latest"
    killed_mid_save = False
    try:
        last = -1
        deadline = time.time() + 120
        while last < 2 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("saved"):
                last = int(line.split()[1])
        assert last >= 2, "the child never saved"
        while time.time() < deadline:  # kill while the next step is still a temporary folder
            if any("tmp" in p.name for p in latest.iterdir()):
                proc.send_signal(signal.SIGKILL)
                killed_mid_save = True
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed_mid_save and any("tmp" in p.name for p in latest.iterdir()), "not killed during a save"
    with RunCheckpoints(ckpt) as ck:
        step = ck.latest_step()
        assert step is not None and step >= last
        target = {"params": {"w": jax.ShapeDtypeStruct((100000, 64), jnp.float32),
                             "v": jax.ShapeDtypeStruct((8,), jnp.float32)},
                  "key": jax.ShapeDtypeStruct((2,), jnp.uint32)}
        restored, meta = ck.restore("latest", target)
        assert meta == {"epoch": step}
        np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.full((100000, 64), float(step)))
        np.testing.assert_array_equal(np.asarray(restored["params"]["v"]), np.arange(8.0) + step)
        np.testing.assert_array_equal(np.asarray(restored["key"]), np.asarray(jax.random.PRNGKey(step)))
        ck.save("latest", step + 1, jax.tree.map(jnp.zeros_like, restored), {"epoch": step + 1})  # still writable
        assert ck.latest_step() == step + 1


# --------------------------------------------------------------------------- bad input


def test_shard_bad_mesh_and_axis_config_fail_before_compute(tiny):
    _, config, ds = tiny
    with pytest.raises(ConfigError, match=r"mesh_shape=\[3\] holds 3 devices, but there are 8"):
        fit(get_model(config), ds, config.replace(sharding="row", mesh_shape=(3,)), progress=False)
    with pytest.raises(ConfigError, match="mesh_shape"):
        make_partitioner(config.replace(sharding="row", mesh_shape=(2, 2, 2)))  # 3 sizes for 1 axis
    with pytest.raises(ConfigError, match="model_axis='model': unknown mesh axis"):
        config.replace(sharding="row", model_axis="model")
    with pytest.raises(ConfigError, match="data_axis='batch': unknown mesh axis"):
        Config(mesh_axes=("x", "y"), data_axis="batch", model_axis="y")
    with pytest.raises(ConfigError, match="unknown mesh axis 'model'"):
        MeshPartitioner("row", _mesh(8, "data")).partition_spec("data", "model")
    with pytest.raises(ConfigError, match="embedding_size=12: feature sharding"):
        make_partitioner(config.replace(sharding="feature", embedding_size=12))
    with pytest.raises(ConfigError, match="sharding="):
        config.replace(sharding="rows")


def test_shard_distributed_settings_resolve_from_args_config_env():
    assert distributed.resolve(env={}) == (None, 1, 0)
    env = {"JAXREC_COORDINATOR": "h:1234", "JAXREC_NUM_PROCESSES": "4", "JAXREC_PROCESS_ID": "3"}
    assert distributed.resolve(env=env) == ("h:1234", 4, 3)
    cfg = Config(coordinator_address="c:9", num_processes=2, process_id=1)
    assert distributed.resolve(cfg, env=env) == ("c:9", 2, 1)
    assert distributed.resolve(cfg, process_id=0, env=env) == ("c:9", 2, 0)
    with pytest.raises(ConfigError, match="no coordinator_address"):
        distributed.resolve(num_processes=2, env={})
    with pytest.raises(ConfigError, match="process_id=2"):
        distributed.resolve(coordinator_address="h:1", num_processes=2, process_id=2, env={})
    with pytest.raises(ConfigError, match="JAXREC_NUM_PROCESSES"):
        distributed.resolve(env={"JAXREC_NUM_PROCESSES": "two"})
    assert distributed.initialize(num_processes=1) is False  # single process: nothing to join


# --------------------------------------------------------------------------- multi-host


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_shard_two_processes_train_to_single_process_params(tiny, tmp_path):
    folder, config, ds = tiny
    settings = ["epochs=2", "batch_size=64", "embedding_size=8", "learning_rate=0.01", "topk=5,10", "patience=100"]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO)
    env["PJRT_NPROC"] = "8"
    out = tmp_path / "params.npz"
    procs = []
    for pid in range(2):
        cmd = [sys.executable, str(WORKER), "train", "--data", str(folder), "--out", str(out), "--sharding", "row",
               "--num-processes", "2", "--process-id", str(pid), "--port", str(port), "--devices", "2"]
        for s in settings:
            cmd += ["--set", s]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-process run timed out")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert "process 0 done: 4 devices, 2 local" in logs[0] and "process 1 done: 4 devices, 2 local" in logs[1]
    got = np.load(out)
    assert int(got["devices"]) == 4 and int(got["processes"]) == 2
    ref = _reference(tiny, "lightgcn")
    for name in ("user_embedding", "item_embedding"):
        np.testing.assert_allclose(got[name], np.asarray(ref.params[name]), atol=1e-4)
    assert json.loads(str(got["metrics"])) == ref.test_metrics


def test_shard_cli_two_processes_match_one_process(tiny, tmp_path):
    """``jaxrec train`` as 2 localhost processes (2 CPU devices each) writes, from process 0 only,
    the same results as one process with 4 devices."""
    folder, _, _ = tiny
    args = ["-m", "jaxrec", "train", "--dataset", str(folder), "--model", "lightgcn", "--epochs", "2",
            "--no-progress", "--set", "batch_size=64", "--set", "embedding_size=8", "--set", "learning_rate=0.01",
            "--set", "topk=5,10", "--set", "patience=100", "--set", "sharding=feature"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(REPO), PJRT_NPROC="8")
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env={**env, "JAXREC_LOCAL_DEVICES": "4"}, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *args, "--out", str(tmp_path / "two"), "--coordinator-address",
                               f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid)],
                              env={**env, "JAXREC_LOCAL_DEVICES": "2"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for pid in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("two-process CLI run timed out")
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "test metrics" in outs[0][0] and "test metrics" not in outs[1][0]  # only process 0 prints (and writes)
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["best_epoch"] == b["best_epoch"]
    for k, v in a["test"].items():
        assert b["test"][k] == pytest.approx(v, abs=1e-4), k
    assert b["config"]["num_processes"] == 2  # recorded; not part of the run's identity
    with RunCheckpoints(tmp_path / "two" / "ckpt") as ck:
        assert ck.latest_step() == 1
