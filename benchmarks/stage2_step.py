"""Benchmark: A-LLMRec stage 2 on SmolLM2-135M, the reference protocol against the index answer, CPU.

    python benchmarks/stage2_step.py                  # ml-100k titles, real SmolLM2, 5 rounds
    python benchmarks/stage2_step.py --rounds 3 --eval-users 32

In one process, with the same LM, item titles and random projectors:

- training: one Adam step (loss, gradient through the 30 frozen layers to the projectors, update)
  of the reference prompt (``PromptBuilder``: history + 20 candidate titles, teacher-forced title
  answer, batch 2 as the reference's ``batch_size2``), and of the index prompt
  (``IndexPromptBuilder``: labelled options, one answer position) with titles and without
  (soft tokens only), each at batch 8; figure: training examples per second;
- evaluation: ranking 20 candidates for one user: the reference (20 title continuations scored
  with the prompt's KV cache shared, ``sequence_logprob``, + greedy generation of up to 48 tokens,
  as ``lm_generate``) against the index prompt (one forward, label logits); seconds per user,
  and the projected time for the 943 test users of ml-100k.

Compilation is excluded (warm-up calls); rounds are interleaved (benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import bench_interleaved, machine_line, median, spread, table, versions_line  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--eval-users", type=int, default=16, help="users per evaluation call (one batch)")
    ap.add_argument("--history", type=int, default=10)
    args = ap.parse_args(argv)

    import jaxrec
    import jaxrec.methods

    jaxrec.methods.register_all()
    from jaxrec.lm import load_gguf, smollm2_path
    from jaxrec.methods.allmrec import prompt as P
    from jaxrec.methods.allmrec import stage2 as s2

    ds = jaxrec.load_dataset("ml-100k", jaxrec.Config.for_model("sasrec"))
    titles, _ = P.item_titles(ds.item_features, ds.num_items)
    lm = load_gguf(smollm2_path())
    model, lp, tok = s2.prepare_lm(lm.model, lm.params, lm.tokenizer)
    rng = np.random.default_rng(0)
    user_rep, item_emb = rng.normal(size=(ds.num_users, 50)), rng.normal(size=(ds.num_items, 128))
    dom = P.DOMAINS["movie"]
    builders = {
        "reference (title answer)": P.PromptBuilder(tok, titles, dom, history=args.history),
        "index, titles": P.IndexPromptBuilder(tok, titles, dom, history=args.history),
        "index, soft tokens only": P.IndexPromptBuilder(tok, titles, dom, history=args.history, item_titles=False),
    }
    batch_of = {"reference (title answer)": 2, "index, titles": 8, "index, soft tokens only": 8}

    def draw(b):
        users = rng.integers(0, ds.num_users, b)
        hist = [list(rng.choice(ds.num_items, args.history, replace=False)) for _ in range(b)]
        cands = np.stack([rng.choice(ds.num_items, 20, replace=False) for _ in range(b)])
        return users, hist, cands, cands[:, 0]

    steps, tokens = {}, {}
    for name, pb in builders.items():
        ctx = s2.make_context(model, lp, user_rep, item_emb, pb)
        params = s2.init_params(jax.random.key(0), ctx.settings)
        opt = optax.adam(1e-3)
        lossf = s2.index_loss if isinstance(pb, P.IndexPromptBuilder) else s2.next_title_loss
        b = batch_of[name]
        u, h, c, t = draw(b)
        batch = pb.training_batch(u, h, c, t, size=b)
        tokens[name] = int(batch["mask"].sum(1).mean())

        @jax.jit
        def step(params, state, ctx, batch, lossf=lossf, opt=opt):
            loss, g = jax.value_and_grad(lambda p: lossf(p, ctx, batch)[0])(params)
            up, state = opt.update(g, state, params)
            return optax.apply_updates(params, up), state, loss

        state = opt.init(params)
        steps[name] = lambda step=step, params=params, state=state, ctx=ctx, batch=batch: \
            jax.block_until_ready(step(params, state, ctx, batch))
    print(machine_line())
    print(versions_line())
    res = bench_interleaved(steps, args.rounds, target_s=0.0, warmup=1)
    base = "reference (title answer)"
    rows = []
    per_ex = {n: median(v) / batch_of[n] for n, v in res.items()}
    for n, v in res.items():
        rows.append([n, batch_of[n], tokens[n], f"{median(v):.2f}", spread(v), f"{1 / per_ex[n]:.2f}",
                     f"{per_ex[base] / per_ex[n]:.2f}x"])
    print("\ntraining step (Adam; loss + gradient through the frozen LM)")
    print(table(["prompt", "batch", "tokens/row", "s/step", "spread", "examples/s", "vs reference"], rows))

    n = args.eval_users
    evals = {}
    for name in (base, "index, titles", "index, soft tokens only"):
        pb = builders[name]
        ctx = s2.make_context(model, lp, user_rep, item_emb, pb)
        params = s2.init_params(jax.random.key(0), ctx.settings)
        u, h, c, _ = draw(n)
        if isinstance(pb, P.IndexPromptBuilder):
            evals[name] = lambda params=params, ctx=ctx, u=u, h=h, c=c: s2.evaluate_index(
                params, ctx, u, h, c, batch_size=16)
        else:
            tok_tables = s2.soft_tables(params, ctx)
            evals[name] = lambda ctx=ctx, tok_tables=tok_tables, u=u, h=h, c=c: s2.evaluate_lm(
                ctx, tok_tables, u, h, c, batch_size=8, generate=True, max_new_tokens=48)
    res = bench_interleaved(evals, max(2, args.rounds // 2), target_s=0.0, warmup=1)
    rows = []
    per_user = {k: median(v) / n for k, v in res.items()}
    for k, v in res.items():
        rows.append([k, f"{per_user[k]:.3f}", f"{per_user[k] * 943 / 60:.1f}", f"{per_user[base] / per_user[k]:.1f}x"])
    print(f"\nevaluation: 20 candidates ranked per user ({n} users per call; the reference also generates)")
    print(table(["prompt", "s/user", "min for 943 users", "vs reference"], rows))


if __name__ == "__main__":
    main()
