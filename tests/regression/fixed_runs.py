"""Fixed short runs whose every number must survive a refactor (issue 21: "what must not change").

Runs the command line of the jaxrec tree at ``--tree`` (default: this checkout) on ml-100k:
LightGCN, SGL, SGCL, MF, SASRec, an LLMInit (variance) and a Rec-PCA init, A-LLMRec stage 1 on
the SASRec run, one stage-2 epoch of one step on a tiny random Llama, ``recommend`` (two users
and every user) and ``update`` + ``recommend`` on the updated run. Writes one JSON file of every
test/valid metric, every per-epoch loss and every recommendation list (ids and scores)::

    .venv/bin/python tests/regression/fixed_runs.py --tree /path/to/old/checkout --out old.json
    .venv/bin/python tests/regression/fixed_runs.py --out new.json
    .venv/bin/python tests/regression/fixed_runs.py --compare old.json new.json

The comparison is exact (bit-identical floats, identical lists) and prints each difference.
Both trees run with the same interpreter, environment and tiny LM folder, so a difference is the
code's. It uses only the CLI (``python -m jaxrec``, ``--set key=value``), which both the old and
the new layout accept, so the same script measures both. Takes about 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data" / "ml-100k"
MPNET = DATA / "ml-100k.all-mpnet-base-v2.npy"


def tiny_lm(folder: Path) -> Path:
    """A tiny random Llama (seeded) with the tests' BPE tokenizer, saved once as a safetensors folder."""
    if (folder / "tokenizer.json").is_file():
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    from lm_helpers import save_hf, tiny_llama, train_bpe  # noqa: PLC0415

    from jaxrec.lm import Tokenizer  # noqa: PLC0415

    tokens, merges = train_bpe()
    tok = Tokenizer.from_bpe(tokens, merges, token_types=[3 if i < 3 else 1 for i in range(len(tokens))],
                             bos_id=None, eos_id=2, pad_id=2, source="tiny-bpe")
    ref = tiny_llama(tok.vocab_size + 3, tie=False, max_position_embeddings=1024, hidden_size=32,
                     intermediate_size=48)
    folder.mkdir(parents=True, exist_ok=True)
    save_hf(ref, folder)
    tok.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}))
    return folder


class Runner:
    def __init__(self, tree: Path, work: Path):
        self.tree, self.work = tree, work
        self.env = {**os.environ, "PYTHONPATH": str(tree), "JAXREC_CACHE": str(work / "cache"),
                    "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}

    def jaxrec(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "jaxrec", *args]
        print("$", " ".join(cmd[2:]), flush=True)
        p = subprocess.run(cmd, cwd=self.tree, env=self.env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"failed ({p.returncode}): {' '.join(args)}\n{p.stdout}\n{p.stderr}")
        return p.stdout

    def train(self, name: str, *args: str) -> dict:
        out = self.work / name
        self.jaxrec("train", "--dataset", "ml-100k", "--out", str(out), "--no-progress", *args)
        return read_run(out)


def read_run(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    keep = ("epoch", "loss")
    return {"test": res["test"], "valid": res["valid"], "best_epoch": res["best_epoch"],
            "log": [{k: v for k, v in rec.items() if k in keep or k.startswith(("bpr", "reg", "ssl", "sgcl", "bce",
                                                                                  "align", "next"))}
                    | ({"valid": rec["valid"]} if "valid" in rec else {}) for rec in log]}


def table_digest(path: Path) -> dict:
    import pyarrow.parquet as pq  # noqa: PLC0415

    t = pq.read_table(path)
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    blob = json.dumps(cols, sort_keys=True).encode()
    return {"rows": t.num_rows, "sha256": hashlib.sha256(blob).hexdigest(), "first": {c: v[:20] for c, v in cols.items()}}


def record(tree: Path, work: Path, lm_folder: Path) -> dict:
    r = Runner(tree, work)
    out: dict = {}
    base = ("--set", "eval_every=1")
    out["lightgcn"] = r.train("lightgcn", "--model", "lightgcn", "--epochs", "3", *base)
    out["sgl"] = r.train("sgl", "--model", "sgl", "--epochs", "2", *base)
    out["sgcl"] = r.train("sgcl", "--model", "sgcl", "--epochs", "2", *base)
    out["mf"] = r.train("mf", "--model", "mf", "--epochs", "3", *base)
    out["llminit_variance"] = r.train("llminit", "--model", "lightgcn", "--epochs", "2", "--init", "variance",
                                      "--embeddings", str(MPNET))
    out["recpca"] = r.train("recpca", "--model", "lightgcn", "--epochs", "2", "--init", "recpca",
                            "--embeddings", str(MPNET), "--set", "recpca_lambda=1", "--set", "init_norm=typical")
    out["sasrec"] = r.train("sasrec", "--model", "sasrec", "--epochs", "3", "--set",
                            f"candidates_dir={work / 'candidates'}")
    out["stage1"] = r.train("stage1", "--model", "allmrec_stage1", "--epochs", "1", "--embeddings", str(MPNET),
                            "--set", f"sasrec_run={work / 'sasrec'}", "--set", f"candidates_dir={work / 'candidates'}")
    out["stage2"] = r.train("stage2", "--model", "allmrec_stage2", "--epochs", "1",
                            "--set", f"stage1_run={work / 'stage1'}", "--set", f"lm={lm_folder}",
                            "--set", "train_users=2", "--set", "eval_users=6", "--set", "valid_users=6",
                            "--set", "lm_generate=true", "--set", "lm_max_new_tokens=4",
                            "--set", f"candidates_dir={work / 'candidates'}")
    # serving: two users as a table, every user to parquet, an update and its recommendations
    run = work / "llminit"
    out["recommend_users"] = r.jaxrec("recommend", "--run", str(run), "--users", "196,186,1", "--k", "10")
    r.jaxrec("recommend", "--run", str(run), "--all", "--k", "10", "--out", str(work / "recs.parquet"),
             "--no-progress")
    out["recommend_all"] = table_digest(work / "recs.parquet")
    new_inter = work / "new.inter"
    new_inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                         "196\t9001\t5\t893286638\n186\t9001\t4\t893286639\n1\t9002\t3\t893286640\n"
                         "9999\t242\t4\t893286641\n9999\t9001\t5\t893286642\n9999\t302\t3\t893286643\n"
                         "9999\t1\t3\t893286644\n")
    new_item = work / "new.item"
    new_item.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                        "9001\tA Brand New Space Film\t1998\tAction Sci-Fi\n9002\tQuiet Little Drama\t1998\tDrama\n")
    new_user = work / "new.user"
    new_user.write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                        "9999\t30\tF\tengineer\t02139\n")
    r.jaxrec("update", "--run", str(work / "lightgcn"), "--interactions", str(new_inter), "--items", str(new_item),
             "--users", str(new_user), "--out", str(work / "updated"), "--epochs", "2", "--no-progress")
    out["update"] = read_run(work / "updated")
    out["recommend_updated"] = r.jaxrec("recommend", "--run", str(work / "updated"), "--users", "196,9999",
                                        "--k", "10")
    return out


def compare(a: dict, b: dict, path: str = "") -> list[str]:
    diffs: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                diffs.append(f"{path}/{k}: only in {'new' if k in b else 'old'}")
            else:
                diffs += compare(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diffs += compare(x, y, f"{path}[{i}]")
    elif a != b:
        diffs.append(f"{path}: {a!r} != {b!r}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--lm", type=Path, default=Path(tempfile.gettempdir()) / "jaxrec-fixed-runs-lm")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = ap.parse_args()
    if args.compare:
        old, new = (json.loads(p.read_text()) for p in args.compare)
        diffs = compare(old["runs"], new["runs"])
        for d in diffs:
            print(d)
        n = sum(1 for _ in json.dumps(old["runs"]))
        print(f"{len(diffs)} differences ({len(old['runs'])} runs compared, {n} characters of results)")
        return 1 if diffs else 0
    work = args.work or Path(tempfile.mkdtemp(prefix="jaxrec-fixed-runs-"))
    lm = tiny_lm(args.lm)
    runs = record(args.tree.resolve(), work, lm)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.tree, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "jaxrec"], cwd=args.tree, capture_output=True,
                                text=True).stdout.strip())
    args.out.write_text(json.dumps({"tree": str(args.tree), "commit": commit, "dirty": dirty, "runs": runs},
                                   indent=1, sort_keys=True))
    print(f"wrote {args.out} ({len(runs)} runs; work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
