"""Faults a trusted system survives (issue 26, items 5-8), with real processes and ``kill -9``:
a reader never disturbs a writer and only sees published, complete runs; a killed
``update --overwrite`` leaves the old run or a complete new one; one writer per run folder (a
lock a killed process does not leave stuck); a full disk, a damaged run folder or checkpoint
ends as ``jaxrec: error:`` naming the file, never a traceback, and leaves no partial output;
``recommend --users-file`` for long id lists."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import jaxrec
from helpers import clustered_interactions
from jaxrec.cli import main
from jaxrec.data import write_atomic

REPO = Path(__file__).resolve().parents[1]
INTER_TYPES = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
ITEM_TYPES = {"item_id": "token", "movie_title": "token_seq"}
TRAIN = ["--model", "mf", "--no-progress", "--set", "embedding_size=8", "--set", "batch_size=32",
         "--set", "topk=5,10", "--set", "patience=10000", "--set", "checkpoint_every=1"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(REPO)
    return env


def _inter(rows):
    return {"user_id": np.array([f"u{r[0]}" for r in rows]), "item_id": np.array([f"i{r[1]}" for r in rows]),
            "rating": np.array([r[2] for r in rows]), "timestamp": np.array([r[3] for r in rows])}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A parent dataset (items < 36, users < 55), the new rows of an update, and a parent run P."""
    root = tmp_path_factory.mktemp("faults")
    rows = clustered_interactions(0)
    is_new = np.array([r[1] >= 36 or r[0] >= 55 for r in rows])
    old = [r for r, m in zip(rows, is_new) if not m]
    new = [r for r, m in zip(rows, is_new) if m]
    folder = root / "parent" / "tiny"
    write_atomic(folder / "tiny.inter", _inter(old), INTER_TYPES)
    items = sorted({r[1] for r in rows})
    write_atomic(folder / "tiny.item", {"item_id": np.array([f"i{i}" for i in items if i < 36]),
                                        "movie_title": [["Movie", str(i)] for i in items if i < 36]}, ITEM_TYPES)
    write_atomic(root / "new.inter", _inter(new), INTER_TYPES)
    write_atomic(root / "new.item", {"item_id": np.array([f"i{i}" for i in items if i >= 36]),
                                     "movie_title": [["Movie", str(i)] for i in items if i >= 36]}, ITEM_TYPES)
    cfg = jaxrec.Config.for_model("mf", dataset=str(folder), epochs=2, embedding_size=8, batch_size=32,
                                  topk=(5, 10))
    jaxrec.train_run(cfg, out_dir=root / "P", progress=False)
    return {"root": root, "folder": folder, "P": root / "P"}


def _update_cmd(data, out, *extra):
    r = data["root"]
    return [sys.executable, "-m", "jaxrec", "update", "--run", str(data["P"]), "--interactions", str(r / "new.inter"),
            "--items", str(r / "new.item"), "--out", str(out), "--no-progress", *extra]


def _wait_for(predicate, proc, what: str, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the writer ended (rc {proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _steps(folder: Path) -> list[int]:
    latest = folder / "ckpt" / "latest"
    try:
        return sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) if latest.is_dir() else []
    except FileNotFoundError:
        return []


def _writing(out: Path) -> Path:
    """Where a run being written keeps its files: ``out/in-progress`` (before issue 26: ``out`` itself)."""
    return out / "in-progress" if (out / "in-progress").exists() or not (out / "run.json").exists() else out


def _recommend(run, capsys, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["recommend", "--run", str(run), "--users", "u1,u2", "--k", "3", *extra])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


# ------------------------------------------------------------------ 5 and 7: readers and writers
def test_readers_never_disturb_a_writer_and_one_writer_per_folder(data, tmp_path, capsys):
    """A training run (a real process) with readers and would-be second writers around it; then
    ``kill -9``: the lock is not left stuck and --resume continues the killed run."""
    out = tmp_path / "U"
    cmd = [sys.executable, "-m", "jaxrec", "train", "--dataset", str(data["folder"]), *TRAIN, "--epochs", "400",
           "--out", str(out)]
    writer = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_steps(_writing(out))) > 0, writer, "its first checkpoint")
        work = _writing(out)
        for _ in range(5):  # readers: told it is being written; they touch nothing
            code, err = _recommend(out, capsys)
            assert code == 2 and f"jaxrec: error: run {out} is still being written (started " in err
            assert f"pid {writer.pid})" in err
        first = _steps(work)[-1]
        _wait_for(lambda: _steps(work) and _steps(work)[-1] >= first + 3, writer, "3 more checkpoints")
        # a second writer, and a --resume, while it trains: refused, naming the first
        argv = ["train", "--dataset", str(data["folder"]), *TRAIN, "--epochs", "400", "--out", str(out)]
        for extra in ([], ["--resume"], ["--overwrite"]):
            capsys.readouterr()
            assert main(argv + extra) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"jaxrec: error: run folder {out.absolute()} is being written by another process "
                                  f"(started "), err
            assert f"pid {writer.pid}" in err and "Traceback" not in err
        assert writer.poll() is None, "the writer died while readers and other writers were refused"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    # killed before publishing: nothing published; readers say it stopped
    code, err = _recommend(out, capsys)
    assert code == 2 and "has not finished: the process writing it stopped" in err and "--resume" in err
    done = _steps(work)[-1]
    # the OS released the killed writer's lock: --resume continues it (epochs may change on resume)
    capsys.readouterr()
    assert main(["train", "--dataset", str(data["folder"]), *TRAIN, "--epochs", str(done + 3), "--out", str(out),
                 "--resume"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(done + 3))  # every epoch once, in order
    results = json.loads((out / "results.json").read_text())
    assert results["stopped_epoch"] == done + 2 and not work.exists()
    assert _recommend(out, capsys)[0] == 0


# ------------------------------------------------------------------ 5 and 6: update --overwrite, kill -9
def _served(run_dir) -> dict:
    run = jaxrec.load_run(run_dir)
    folder = getattr(run, "folder", None)  # the version read (before issue 26: the folder itself)
    path = folder.path if folder is not None else Path(run_dir)
    try:
        update = json.loads((path / "update.json").read_text()) if (path / "update.json").is_file() else None
        return {"results": run.results, "update": update, "num_items": run.num_items}
    finally:
        if folder is not None:
            folder.close()


@pytest.mark.slow
def test_kill_9_during_update_overwrite_leaves_old_or_complete_new(data, tmp_path, capsys):
    """``update --overwrite`` of U (a real process) killed with SIGKILL at several moments, readers
    reading U all along: every read succeeds and serves the old U exactly or, after a finished
    update, a complete new one; the writer is never disturbed by the readers."""
    out = tmp_path / "U"
    from jaxrec.serve import load_run, update

    update(load_run(data["P"]), data["root"] / "new.inter", out, items=data["root"] / "new.item", epochs=1,
           progress=False)
    old = _served(out)
    assert old["update"] is not None and old["results"]["stopped_epoch"] == 0
    long = ["--epochs", "300", "--set", "patience=10000", "--set", "checkpoint_every=1", "--overwrite"]
    def started() -> bool:  # the update is writing (before issue 26 it cleared the old run's files in place)
        return (out / "in-progress" / "data").is_dir() or not (out / "results.json").exists()

    def training() -> bool:
        return started() and max(_steps(_writing(out)), default=-1) >= 3

    kill_points = {"merged data": started, "training": training}
    for name, ready in kill_points.items():
        writer = subprocess.Popen(_update_cmd(data, out, *long), env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            reads = 0
            while not ready():
                if writer.poll() is not None:
                    pytest.fail(f"the update died before {name}: {writer.communicate()[1][-3000:]}")
                code, err = _recommend(out, capsys)  # readers while it writes: the old run, every time
                assert code == 0, err
                assert _served(out) == old
                reads += 1
            for _ in range(3):
                assert _recommend(out, capsys)[0] == 0
            assert writer.poll() is None, f"a reader disturbed the update: {writer.communicate()[1][-3000:]}"
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert _served(out) == old, name  # killed at that moment: the old U, exactly
        assert _recommend(out, capsys)[0] == 0
    # an update that finishes while readers read: each read is the old run or the complete new one
    writer = subprocess.Popen(_update_cmd(data, out, "--epochs", "2", "--overwrite"), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    while writer.poll() is None:
        got = _served(out)
        seen.append("old" if got == old else "new")
        if got != old:
            assert got["update"] is not None and got["results"]["stopped_epoch"] == 1
            assert got["results"]["update"] == {k: v for k, v in got["update"].items() if k != "parent"}
    assert writer.returncode == 0, writer.communicate()[1][-3000:]
    new = _served(out)
    assert new != old and new["results"]["stopped_epoch"] == 1 and "old" in seen
    versions = sorted(p.name for p in out.iterdir() if p.name.startswith("v"))
    # older versions go at publication unless a reader still holds one (then at the next publication)
    assert versions[-1] == os.readlink(out / "current") and len(versions) <= 2 and not (out / "in-progress").exists()


# ------------------------------------------------------------------ 8: a full disk
@pytest.fixture
def tiny_disk(tmp_path):
    """A tmpfs of 400 kB mounted at tmp_path/disk (root only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode()[:200]}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` but ``leave`` bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_full_disk_ends_in_a_clear_error_and_leaves_nothing_partial(data, tiny_disk, capsys):
    run = data["P"]
    # export: a complete one, then another over it on a full disk: the first stays whole
    exp = tiny_disk / "exp"
    assert main(["export", "--run", str(run), "--out", str(exp)]) == 0
    before = {p.name: p.read_bytes() for p in exp.iterdir()}
    filler = _fill(tiny_disk, 1_000)
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--out", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrec: error: ") and "No space left on device" in err and str(tiny_disk) in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in exp.iterdir()} == before  # the earlier export, whole
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["exp", "filler"]  # no partial folder left
    # recommend --all --out: an error naming the file, and no file (not even an empty one)
    recs = tiny_disk / "recs.parquet"
    filler.unlink()
    filler = _fill(tiny_disk, 1_000)
    capsys.readouterr()
    assert main(["recommend", "--run", str(run), "--all", "--k", "10", "--out", str(recs), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxrec: error: {recs}: cannot write (No space left on device)") and "Traceback" not in err
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["exp", "filler"]
    # training: the checkpoint that does not fit is named; nothing is published
    filler.unlink()
    filler = _fill(tiny_disk, 60_000)
    out = tiny_disk / "run"
    capsys.readouterr()
    code = main(["train", "--dataset", str(data["folder"]), "--model", "mf", "--no-progress", "--epochs", "50",
                 "--set", "embedding_size=64", "--set", "topk=5,10", "--set", "checkpoint_every=1",
                 "--set", "patience=10000", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"jaxrec: error: {out}/in-progress/") and "No space left on device" in err, err
    assert "Traceback" not in err and "ERROR:absl" not in err
    assert not (out / "current").exists()


# ------------------------------------------------------------------ damaged run folders
def _corrupt(path: Path, how: str) -> None:
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 8)
    else:
        path.unlink()


@pytest.mark.parametrize("target, how, message", [
    ("run.json", "garbage", "run.json: unreadable run identity"),
    ("results.json", "truncate", "results.json: unreadable results"),
    ("init.json", "garbage", "init.json: unreadable"),
    ("best-data", "truncate", "cannot be read"),
    ("best-data", "garbage", "cannot be read"),
    ("best-metadata", "garbage", "cannot be read"),
    ("best", "delete", "no complete best checkpoint"),
    ("current", "dangling", "points to v9, which is missing"),
])
def test_damaged_run_folder_is_a_clear_error(data, tmp_path, capsys, target, how, message):
    run = tmp_path / "copy"
    shutil.copytree(data["P"], run, symlinks=True)
    version = Path(os.path.realpath(run / "run.json")).parent  # the version read (or the folder itself)
    step = next(p for p in (version / "ckpt" / "best").iterdir() if p.name.isdigit())
    if target == "best-data":
        files = [p for p in (step / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
        for p in files:
            _corrupt(p, how)
    elif target == "best-metadata":
        _corrupt(step / "state" / "_METADATA", how)
    elif target == "best":
        shutil.rmtree(version / "ckpt" / "best")
    elif target == "current":
        if not (run / "current").is_symlink():
            pytest.skip("a folder without publication has no current link")
        (run / "current").unlink()
        os.symlink("v9", run / "current")
    else:
        _corrupt(version / target, how)
    code, err = _recommend(run, capsys)
    assert code == 2 and err.startswith("jaxrec: error: ") and message in err, err


# ------------------------------------------------------------------ --users-file
def test_recommend_users_file_with_100000_ids(data, tmp_path, capsys):
    run = jaxrec.load_run(data["P"])
    ids = np.resize(run.user_ids, 100_000)
    users = tmp_path / "users.txt"
    users.write_text("\ufeff" + "\n".join(ids) + "\n\n")
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(data["P"]), "--users-file", str(users), "--k", "3", "--out", str(out),
                 "--no-progress"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 300_000 and table.column("user_id").to_pylist()[::3] == ids.tolist()
    want = jaxrec.recommend(run, ids[:7].tolist(), k=3)
    assert table.column("item_id").to_pylist()[:21] == want.items.ravel().tolist()
    # a short list prints the table
    (tmp_path / "few.txt").write_text(f"{ids[0]}\n{ids[1]}\n")
    capsys.readouterr()
    assert main(["recommend", "--run", str(data["P"]), "--users-file", str(tmp_path / "few.txt"), "--k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 4
    for content, message in (("", "no user ids"), ("u1\nnobody\n", "unknown user id(s) 'nobody'")):
        (tmp_path / "bad.txt").write_text(content)
        assert main(["recommend", "--run", str(data["P"]), "--users-file", str(tmp_path / "bad.txt")]) == 2
        assert message in capsys.readouterr().err
    assert main(["recommend", "--run", str(data["P"]), "--users-file", str(tmp_path / "absent.txt")]) == 2
    err = capsys.readouterr().err
    assert "--users-file" in err and "absent.txt: not found" in err


# ------------------------------------------------------------------ folders written before publication
def test_a_folder_of_the_old_layout_is_read_then_published_in_place(data, tmp_path, capsys):
    """Run files directly in the folder (jaxrec before publication): read as they are; the next
    writer (--resume) makes them a version (hard links), continues, publishes, and leaves the
    folder's other files alone."""
    old = tmp_path / "old"
    shutil.copytree(data["P"] / os.readlink(data["P"] / "current"), old)
    (old / "notes.txt").write_text("mine")
    assert _recommend(old, capsys)[0] == 0  # readable as it is
    epochs = json.loads((old / "results.json").read_text())["config"]["epochs"]
    capsys.readouterr()
    assert main(["train", "--dataset", str(data["folder"]), "--model", "mf", "--no-progress", "--epochs",
                 str(epochs + 2), "--set", "embedding_size=8", "--set", "batch_size=32", "--set", "topk=5,10",
                 "--out", str(old), "--resume"]) == 0
    assert (old / "current").is_symlink() and (old / "notes.txt").read_text() == "mine"
    assert [r["epoch"] for r in map(json.loads, (old / "log.jsonl").read_text().splitlines())] == list(
        range(epochs + 2))
    assert all((old / n).is_symlink() for n in ("run.json", "results.json", "ckpt", "log.jsonl"))
    assert _recommend(old, capsys)[0] == 0
    # a folder of the old layout left by a killed run (no results.json): resumable, not served
    killed = tmp_path / "killed"
    shutil.copytree(data["P"] / os.readlink(data["P"] / "current"), killed)
    (killed / "results.json").unlink()
    code, err = _recommend(killed, capsys)
    assert code == 2 and "has not finished training" in err


@pytest.mark.parametrize("moment", ["_point_current", "_link_files"])
def test_a_crash_inside_publication_leaves_the_old_run_or_the_new_one(data, tmp_path, monkeypatch, moment):
    """The two steps of publication, interrupted as a ``kill -9`` would (nothing after runs):
    between the rename and the swap of ``current`` the old run is still the one served (the
    renamed folder is an orphan the next writer removes); after the swap, the new one, whole."""
    from jaxrec.train import runfolder

    cfg = jaxrec.Config.for_model("mf", dataset=str(data["folder"]), epochs=1, embedding_size=8, batch_size=32,
                                  topk=(5, 10))
    out = tmp_path / "U"
    jaxrec.train_run(cfg, out_dir=out, progress=False)
    old = _served(out)

    def killed(*a, **k):
        raise SystemExit("killed")  # not an OSError: no clean-up code runs, as after SIGKILL

    monkeypatch.setattr(runfolder, moment, killed)
    with pytest.raises(SystemExit):
        jaxrec.train_run(cfg.replace(epochs=2), out_dir=out, overwrite=True, progress=False)
    monkeypatch.undo()
    now = _served(out)
    if moment == "_point_current":
        assert now == old and (out / "v2").is_dir() and os.readlink(out / "current") == "v1"
    else:
        assert now["results"]["stopped_epoch"] == 1 and os.readlink(out / "current") == "v2"
    jaxrec.train_run(cfg.replace(epochs=3), out_dir=out, overwrite=True, progress=False)  # the next writer
    assert _served(out)["results"]["stopped_epoch"] == 2
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("v")) == ["v3"]  # orphans removed


def test_run_identity_of_the_wrong_shape_is_a_clear_error(data, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(data["P"], run, symlinks=True)
    ident = Path(os.path.realpath(run / "run.json"))
    saved = json.loads(ident.read_text())
    for field, value, message in (("dataset", "x", "field 'dataset' is a str; expected a JSON object"),
                                  ("config", 5, "field 'config' is a int; expected a JSON object"),
                                  ("model", ["mf"], "field 'model' is a list; expected a string")):
        ident.write_text(json.dumps({**saved, field: value}))
        code, err = _recommend(run, capsys)
        assert code == 2 and message in err, err
