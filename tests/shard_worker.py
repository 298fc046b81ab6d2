"""Child processes for the sharding tests (multi-process training, killed checkpoint saves).

    python tests/shard_worker.py train --data DIR --out OUT.npz --sharding row \
        [--num-processes 2 --process-id 0 --port 12345] --devices 2 [--set key=value ...]
    python tests/shard_worker.py save-loop --ckpt DIR --rows 20000 --devices 8

``train``: fit a backbone on the dataset folder (``jaxrec.distributed.initialize`` first
when ``--num-processes`` > 1); process 0 writes the final parameters (gathered from every
process) and the test metrics to ``OUT.npz``.
``save-loop``: save sharded states ``{"w": full of step, ...}`` at steps 0, 1, 2, ... on an
8-device mesh forever, printing ``saved <step>`` after each (the test kills it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _train(args) -> None:
    from jaxrec import distributed

    distributed.initialize(
        coordinator_address=f"localhost:{args.port}" if args.num_processes > 1 else None,
        num_processes=args.num_processes, process_id=args.process_id, local_device_count=args.devices,
    )
    import jax
    import numpy as np

    from jaxrec.config import Config
    from jaxrec.data import load_dataset
    from jaxrec.models import get_model
    from jaxrec.train import fit
    from jaxrec.train.sharding import gather_tree

    config = Config(dataset=args.data).with_overrides(args.set).replace(sharding=args.sharding)
    dataset = load_dataset(args.data, config)
    result = fit(get_model(config), dataset, config, progress=False)
    params = gather_tree(result.params)
    if jax.process_index() == 0:
        np.savez(args.out, **params, metrics=json.dumps(result.test_metrics),
                 devices=len(jax.devices()), processes=jax.process_count())
    print(f"process {jax.process_index()} done: {len(jax.devices())} devices, "
          f"{len(jax.local_devices())} local", flush=True)


def _save_loop(args) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax
    import jax.numpy as jnp

    from jaxrec.train.checkpoint import RunCheckpoints
    from jaxrec.train.partition import MeshPartitioner
    from jaxrec.train.sharding import make_mesh

    placement = MeshPartitioner("row", make_mesh(shape=(args.devices,), axes=("data",)))
    with RunCheckpoints(args.ckpt) as ck:
        step = 0
        while True:
            state = {"params": {"w": jnp.full((args.rows, 64), float(step)), "v": jnp.arange(8.0) + step},
                     "key": jax.random.PRNGKey(step)}
            ck.save("latest", step, placement.place(state), {"epoch": step})
            print(f"saved {step}", flush=True)
            step += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--sharding", default="row")
    t.add_argument("--num-processes", type=int, default=1)
    t.add_argument("--process-id", type=int, default=0)
    t.add_argument("--port", type=int, default=0)
    t.add_argument("--devices", type=int, default=None)
    t.add_argument("--set", action="append", default=[])
    s = sub.add_parser("save-loop")
    s.add_argument("--ckpt", required=True)
    s.add_argument("--rows", type=int, default=20000)
    s.add_argument("--devices", type=int, default=8)
    args = ap.parse_args()
    if args.cmd == "train":
        _train(args)
    else:
        _save_loop(args)


if __name__ == "__main__":
    main()
