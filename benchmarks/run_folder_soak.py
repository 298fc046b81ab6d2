"""Soak test of run-folder publication (issue 26): one writer, four readers, random ``kill -9``.

One writer runs ``jaxrec update --run P --out U --overwrite`` in a loop (a fresh process each
time); with probability ``--kill-prob`` it is killed with SIGKILL after a random delay (uniform
in [0, 1.3 x the last finished update's duration]: before, during or after its data merge,
training or publication). Four reader processes read U all along, each read either through the
command line (``jaxrec.cli.main(["recommend", ...])``, exit status checked) or through the
library (``load_run`` + ``recommend``, with the version it served recorded and checked).

What is checked, for every read:

- it succeeded (exit 0 / no exception);
- it served a complete published run: ``results.json`` with the update's ``parent`` and
  ``update`` sections and ``update.json`` in the version read, the stopped epoch the last one;
- the run it served is the initial U or one the writer published (a finished update), never
  anything else (a killed update is never served).

and after every writer process:

- a finished update (exit 0) is what U serves from then on (nothing lost);
- a killed one left U serving the last published run, byte for byte (``results.json``).

Run (about 5 minutes; nice it on a shared machine)::

    nice -n 10 .venv/bin/python benchmarks/run_folder_soak.py --minutes 5

Prints a summary and writes it as JSON (``--out``). Not part of CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def setup(root: Path) -> dict:
    """A tiny dataset cut in two (the parent's rows, the update's new rows), the parent run P and
    a first update U."""
    import numpy as np

    import jaxrec
    from jaxrec.data import write_atomic
    from jaxrec.serve import load_run, update

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import clustered_interactions

    inter_t = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
    item_t = {"item_id": "token", "movie_title": "token_seq"}

    def inter(rows):
        return {"user_id": np.array([f"u{r[0]}" for r in rows]), "item_id": np.array([f"i{r[1]}" for r in rows]),
                "rating": np.array([r[2] for r in rows]), "timestamp": np.array([r[3] for r in rows])}

    rows = clustered_interactions(0, users=200, items=120, per_user=12)
    new = [r[1] >= 100 or r[0] >= 180 for r in rows]
    folder = root / "parent" / "tiny"
    write_atomic(folder / "tiny.inter", inter([r for r, m in zip(rows, new) if not m]), inter_t)
    items = sorted({r[1] for r in rows})
    write_atomic(folder / "tiny.item", {"item_id": np.array([f"i{i}" for i in items if i < 100]),
                                        "movie_title": [["Movie", str(i)] for i in items if i < 100]}, item_t)
    write_atomic(root / "new.inter", inter([r for r, m in zip(rows, new) if m]), inter_t)
    write_atomic(root / "new.item", {"item_id": np.array([f"i{i}" for i in items if i >= 100]),
                                     "movie_title": [["Movie", str(i)] for i in items if i >= 100]}, item_t)
    cfg = jaxrec.Config.for_model("lightgcn", dataset=str(folder), epochs=2, embedding_size=16, batch_size=256,
                                  topk=(5, 10))
    jaxrec.train_run(cfg, out_dir=root / "P", progress=False)
    update(load_run(root / "P"), root / "new.inter", root / "U", items=root / "new.item", epochs=1, progress=False)
    return {"P": str(root / "P"), "U": str(root / "U"), "inter": str(root / "new.inter"),
            "items": str(root / "new.item")}


def reader(index: int, paths: dict, stop_at: float, queue) -> None:
    """Reads U until ``stop_at``; puts one record per read on ``queue``."""
    import contextlib
    import io

    from jaxrec.cli import main
    from jaxrec.serve import load_run, recommend

    users = ["u1", "u2", "u150"]
    n = 0
    while time.time() < stop_at:
        t0 = time.time()
        rec = {"reader": index, "t": t0}
        try:
            if n % 2 == 0:  # the command line, as a user runs it
                err = io.StringIO()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = main(["recommend", "--run", paths["U"], "--users", ",".join(users), "--k", "5"])
                rec.update(kind="cli", ok=code == 0, error=err.getvalue()[-500:] if code else None)
            else:  # the library, recording which published run it served and checking it whole
                run = load_run(paths["U"])
                try:
                    version = run.folder.path
                    results = version / "results.json"
                    complete = (run.results is not None and "update" in run.results and "parent" in run.results
                                and (version / "update.json").is_file()
                                and run.results["stopped_epoch"] == run.config.epochs - 1)
                    recs = recommend(run, users, k=5)
                    rec.update(kind="lib", ok=bool(complete) and recs.items.shape == (3, 5),
                               served=_digest(results), version=version.name,
                               error=None if complete else "incomplete run served")
                finally:
                    run.folder.close()
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            rec.update(kind=rec.get("kind", "lib"), ok=False, error=f"{type(e).__name__}: {e}"[-500:])
        rec["seconds"] = time.time() - t0
        queue.put(rec)
        n += 1
        time.sleep(0.2)


def writer(paths: dict, stop_at: float, kill_prob: float, epochs: int, rng: random.Random) -> dict:
    """The update loop (module docstring); returns what it did and what it checked."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    U = Path(paths["U"])
    published = {_digest(U / "results.json")}
    last = _digest(U / "results.json")
    done = killed = lost = 0
    duration = 20.0
    problems = []
    kill_delays = []
    phases: dict[str, int] = {}
    while time.time() < stop_at:
        cmd = [sys.executable, "-m", "jaxrec", "update", "--run", paths["P"], "--interactions", paths["inter"],
               "--items", paths["items"], "--out", paths["U"], "--overwrite", "--epochs", str(epochs),
               "--no-progress", "--set", "checkpoint_every=1"]
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        kill_after = rng.uniform(0, 1.3 * duration) if rng.random() < kill_prob else None
        phase = None
        while proc.poll() is None:
            if kill_after is not None and time.time() - t0 >= kill_after:
                phase = _phase(U)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        _, err = proc.communicate()
        now = _digest(U / "results.json")
        if proc.returncode == 0:
            done += 1
            duration = time.time() - t0
            published.add(now)
            if now == last:
                lost += 1
                problems.append("a finished update is not what U serves")
            last = now
        elif proc.returncode == -signal.SIGKILL:
            killed += 1
            kill_delays.append(round(kill_after, 2))
            if now != last:  # killed after its publication: the complete new run (allowed), else a loss
                phase = "after publication"
                if (U / "current").exists() and (U / "current" / "update.json").is_file():
                    published.add(now)
                    last = now
                else:
                    problems.append("a killed update changed U to something incomplete")
            phases[phase] = phases.get(phase, 0) + 1
        else:
            problems.append(f"writer exit {proc.returncode}: {err[-800:]}")
    return {"finished": done, "killed": killed, "lost": lost, "published": sorted(published), "problems": problems,
            "kill_delays": kill_delays, "killed_while": phases, "update_seconds": round(duration, 1)}


def _phase(U: Path) -> str:
    """What the update was doing when killed (seen from the files)."""
    work = U / "in-progress"
    if not work.exists():
        return "starting (no in-progress/ yet)"
    latest = work / "ckpt" / "latest"
    try:
        if latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir()):
            return "training (checkpoints saved)"
    except FileNotFoundError:
        return "publishing"
    if (work / "data").is_dir():
        return "data merged, before its first checkpoint"
    return "preparing in-progress/"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--kill-prob", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jaxrec-soak-"))
    t_setup = time.time()
    paths = setup(root)
    print(f"setup {time.time() - t_setup:.0f} s in {root}", flush=True)
    stop_at = time.time() + 60 * args.minutes
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    readers = [ctx.Process(target=reader, args=(i, paths, stop_at, queue)) for i in range(args.readers)]
    for p in readers:
        p.start()
    w = writer(paths, stop_at, args.kill_prob, args.epochs, random.Random(args.seed))
    reads = []
    while any(p.is_alive() for p in readers) or not queue.empty():
        try:
            reads.append(queue.get(timeout=1))
        except Exception:  # noqa: BLE001 - queue.Empty
            pass
    for p in readers:
        p.join()
    failed = [r for r in reads if not r["ok"]]
    lib = [r for r in reads if r["kind"] == "lib"]
    unknown = [r for r in lib if r.get("served") not in w["published"]]
    versions = sorted({r["version"] for r in lib if "version" in r}, key=lambda v: int(v[1:]))
    summary = {
        "minutes": args.minutes, "readers": args.readers, "reads": len(reads), "cli_reads": len(reads) - len(lib),
        "library_reads": len(lib), "failed_reads": len(failed), "served_unpublished": len(unknown),
        "versions_served": len(versions), "read_seconds_median": sorted(r["seconds"] for r in reads)[len(reads) // 2]
        if reads else None, **{f"writer_{k}": v for k, v in w.items() if k != "published"},
        "published_runs": len(w["published"]), "failures": [r["error"] for r in failed[:5]],
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    ok = not failed and not unknown and not w["problems"] and not w["lost"]
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
