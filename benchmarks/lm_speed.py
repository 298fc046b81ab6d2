"""Benchmark: jaxrec.lm vs transformers on SmolLM2-135M-Instruct (the same Q4_1 GGUF), CPU.

    python benchmarks/lm_speed.py                          # prompt 128, 64 new tokens, batch 1
    python benchmarks/lm_speed.py --prompt 256 --new 32 --batch 4 --rounds 5
    python benchmarks/lm_speed.py --torch-threads 1      # a loaded machine: torch's 2 threads thrash

Both sides load the same file and run float32 weights (dequantized at load), in one process:

- load: ``jaxrec.lm.load_gguf`` vs ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``
  (+ ``AutoTokenizer``), wall seconds, once each (file already in the page cache);
- prompt processing (prefill): a ``--prompt``-token batch fills a KV cache and yields the last
  position's logits: jaxrec ``forward_hidden`` with a cache + ``logits`` (jitted) vs torch
  ``model(ids, use_cache=True, logits_to_keep=1)`` under ``no_grad``; tokens/s = batch * prompt / s;
- generation: greedy, ``--new`` tokens after a 16-token prompt, never stopping early
  (jaxrec ``greedy_generate(eos_id=None)``: prefill + a compiled ``lax.while_loop`` over a
  fixed-size cache; transformers ``generate(do_sample=False, min_new_tokens=new)``);
  tokens/s = batch * new / s.

Compilation is excluded (warm-up calls). Repetitions are interleaved (benchmarks/common.py);
figures are medians with the min/max spread. transformers runs with torch's default threads and with
one thread (on a loaded 2-core machine, two OpenMP threads can thrash).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import (bench_interleaved, machine_line, measure_bandwidth, median, spread, table,  # noqa: E402
                               versions_line)
from jaxrec.lm import greedy_generate, load_gguf, smollm2_path  # noqa: E402

TEXT = ("A user who watched The Matrix, Heat and Alien in the previous weeks asks for one next movie to "
        "watch from a set of twenty titles. ")


def prompt_ids(tokenizer, length: int, batch: int) -> np.ndarray:
    ids = tokenizer.encode(TEXT * (length // 8 + 1))[:length]
    return np.tile(np.asarray(ids, np.int32), (batch, 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens for the prefill measurement")
    ap.add_argument("--new", type=int, default=64, help="generated tokens")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--torch-threads", default="default,1",
                    help="comma-separated torch thread counts to run transformers with ('default' = torch's own)")
    args = ap.parse_args(argv)

    import torch
    import transformers

    path = smollm2_path()
    print(f"# jaxrec.lm vs transformers {transformers.__version__}: {path.name}")
    print(f"machine: {machine_line()}; {versions_line()}; torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    lm = load_gguf(path)
    jax.block_until_ready(lm.params)
    t_jax_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    t_hf_load = time.perf_counter() - t0
    model, params, tok = lm.model, lm.params, lm.tokenizer

    # ---- prefill
    ids = prompt_ids(tok, args.prompt, args.batch)
    cache_len = args.prompt + 1

    @jax.jit
    def prefill(params, ids):
        cache = model.init_cache(ids.shape[0], cache_len)
        hidden, cache = model.forward_hidden(params, ids, cache=cache)
        return model.logits(params, hidden[:, -1]), cache

    ids_t = torch.tensor(ids, dtype=torch.long)

    def jax_prefill():
        jax.block_until_ready(prefill(params, ids))

    def torch_prefill():
        with torch.no_grad():
            ref(ids_t, use_cache=True, logits_to_keep=1)

    with torch.no_grad():
        want = ref(ids_t, logits_to_keep=1).logits[:, -1].numpy()
    got = np.asarray(prefill(params, ids)[0])
    print(f"prefill check: max |logit diff| {np.abs(got - want).max():.2e} (logit scale {np.abs(want).max():.1f})")

    # ---- generation
    gen_ids = prompt_ids(tok, 16, args.batch)
    gen_t = torch.tensor(gen_ids, dtype=torch.long)

    def jax_generate():
        jax.block_until_ready(greedy_generate(model, params, gen_ids, max_new_tokens=args.new, eos_id=None))

    def torch_generate():
        with torch.no_grad():
            ref.generate(gen_t, attention_mask=torch.ones_like(gen_t), do_sample=False, max_new_tokens=args.new,
                         min_new_tokens=args.new, pad_token_id=tok.eos_id)

    default_threads = torch.get_num_threads()

    def threads(fn, n):
        def run():
            torch.set_num_threads(n)
            try:
                fn()
            finally:
                torch.set_num_threads(default_threads)
        return run

    t0 = time.perf_counter()
    jax_prefill()
    jax_generate()
    t_compile = time.perf_counter() - t0
    a = np.asarray(greedy_generate(model, params, gen_ids, max_new_tokens=args.new, eos_id=None))
    with torch.no_grad():
        b = ref.generate(gen_t, attention_mask=torch.ones_like(gen_t), do_sample=False, max_new_tokens=args.new,
                         min_new_tokens=args.new, pad_token_id=tok.eos_id)[:, gen_ids.shape[1]:].numpy()
    same = int((a == b).all(axis=1).sum())
    print(f"generation check: {same}/{args.batch} rows identical to transformers' greedy output "
          f"(first divergence at {int(np.argmax(a[0] != b[0])) if (a[0] != b[0]).any() else 'none'})")

    fns = {"jaxrec prefill": jax_prefill, "jaxrec generate": jax_generate}
    counts = sorted({default_threads if c == "default" else int(c) for c in args.torch_threads.split(",")},
                    reverse=True)
    torch_names = []
    for n in counts:
        name = f"torch {n} thread{'s' if n > 1 else ''}"
        torch_names.append(name)
        fns[f"{name} prefill"] = threads(torch_prefill, n)
        fns[f"{name} generate"] = threads(torch_generate, n)
    s = bench_interleaved(fns, repeats=args.rounds, target_s=0.0, warmup=1)
    n_pre, n_gen = args.batch * args.prompt, args.batch * args.new
    rows = []
    for what, n in (("prefill", n_pre), ("generate", n_gen)):
        js = s[f"jaxrec {what}"]
        rows.append([f"{what}: jaxrec", f"{median(js):.3f} ({spread(js)})", f"{n / median(js):.1f}", "1"])
        for name in torch_names:
            ts = s[f"{name} {what}"]
            rows.append([f"{what}: transformers, {name}", f"{median(ts):.3f} ({spread(ts)})", f"{n / median(ts):.1f}",
                         f"{median(ts) / median(js):.2f}x"])
    rows.append(["load: jaxrec (once)", f"{t_jax_load:.1f}", "", "1"])
    rows.append(["load: transformers (once)", f"{t_hf_load:.1f}", "", f"{t_hf_load / t_jax_load:.2f}x"])
    print(f"\nbatch {args.batch}, prompt {args.prompt} tokens (prefill), {args.new} new tokens after a 16-token "
          f"prompt (generate), {args.rounds} rounds; jaxrec compile (prefill + generate) {t_compile:.1f} s\n")
    print(table(["", "s (median, spread)", "tokens/s", "time / jaxrec time"], rows))
    # decode is memory-bound: each step reads every weight once
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    per_token = median(s["jaxrec generate"]) / args.new
    bw = measure_bandwidth()
    print(f"\njaxrec decode: {1e3 * per_token:.0f} ms/step, reading {weight_bytes / 1e6:.0f} MB of float32 weights "
          f"per step = {weight_bytes / per_token / 1e9:.1f} GB/s; machine streaming bandwidth "
          + ", ".join(f"{k} {v:.1f}" for k, v in bw.items()) + " GB/s")


if __name__ == "__main__":
    main()
