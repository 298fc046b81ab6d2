"""Cost at MovieLens-1M size: seconds per training epoch and per evaluation of each backbone,
peak memory, and ml-1m's load time from the atomic files and from jaxrec's cache.

Each backbone trains ``--epochs`` epochs (default 2) with ``jaxrec.fit`` at its registered
protocol (LightGCN / SGL / SGCL: the LLMInit reference protocol, batch 2048, full ranking;
SASRec: A-LLMRec's pretraining protocol with the SASRec paper's ML-1M length 200, 20
candidates + full ranking at 10, 20) in its own process, so its peak resident memory
(``ru_maxrss``) is its own. s/epoch is ``train_seconds`` of the last epoch (the first includes
compiling the step), eval s is that epoch's validation (``eval_seconds``). Load times: the
median of ``--rounds`` loads with ``cache=False`` (parse ``ml-1m.inter/.item/.user``, filters,
split) and with the parsed-dataset cache warm.

    python benchmarks/ml1m_cost.py                          # all four backbones
    python benchmarks/ml1m_cost.py --backbones lightgcn,sasrec --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETS = {"sasrec": {"max_seq_len": 200}}


def one(backbone: str, epochs: int) -> dict:
    import tempfile

    import jaxrec
    from jaxrec.config import Config

    cfg = Config.for_model(backbone, dataset="ml-1m", epochs=epochs, track=(), **SETS.get(backbone, {}))
    t = time.perf_counter()
    ds = jaxrec.load_dataset("ml-1m", cfg)
    load = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        jaxrec.fit(jaxrec.get_model(cfg), ds, cfg, out_dir=out)
        wall = time.perf_counter() - t
        log = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines() if line.strip()]
    last = log[-1]
    return {"backbone": backbone, "epochs": len(log), "batch_size": cfg.batch_size, "steps": last.get("steps"),
            "first_epoch_s": log[0]["train_seconds"], "epoch_s": last["train_seconds"],
            "eval_s": last["eval_seconds"], "fit_wall_s": wall, "load_s": load,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="lightgcn,sgl,sgcl,sasrec")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.epochs)), flush=True)
        return 0
    from benchmarks.common import machine_line, versions_line
    from jaxrec.config import Config
    from jaxrec.data import load_dataset

    print(machine_line())
    print(versions_line())
    cfg = Config(dataset="ml-1m")
    load_dataset("ml-1m", cfg)  # fetch / fill the cache first
    times = {}
    for cache in (False, True):
        ts = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            load_dataset("ml-1m", cfg, cache=cache)
            ts.append(time.perf_counter() - t)
        times["cache" if cache else "raw"] = statistics.median(ts)
    print(f"ml-1m load (median of {args.rounds}): from the atomic files {times['raw']:.2f} s, "
          f"from jaxrec's cache {times['cache']:.2f} s", flush=True)
    rows = []
    for b in args.backbones.split(","):
        res = subprocess.run([sys.executable, __file__, "--one", b, "--epochs", str(args.epochs)],
                             capture_output=True, text=True, env=os.environ)
        line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
        if res.returncode or not line:
            print(f"{b}: failed (exit {res.returncode}): {res.stderr[-800:]}", flush=True)
            continue
        r = json.loads(line[0][7:])
        rows.append(r)
        print(f"{b:9s} batch {r['batch_size']:5d} steps/epoch {r['steps']:4d}  epoch {r['epoch_s']:7.1f} s "
              f"(first {r['first_epoch_s']:.1f} s)  eval {r['eval_s']:6.1f} s  peak RSS {r['peak_rss_mib']:7.0f} MiB",
              flush=True)
    print("RESULTS " + json.dumps({"load": times, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
