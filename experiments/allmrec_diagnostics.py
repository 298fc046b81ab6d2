"""What A-LLMRec's stage 2 reads and can learn, measured (issue 22): five diagnostics on one dataset.

    python -m experiments.allmrec_diagnostics --dataset ml-100k --stage1-run DIR --which spread
    python -m experiments.allmrec_diagnostics --which synthetic --steps 300 --lora 0,8
    python -m experiments.allmrec_diagnostics --dataset ml-100k --stage1-run DIR --which overfit --users 32
    python -m experiments.allmrec_diagnostics --dataset ml-100k --stage1-run DIR --which ablate --stage2-run DIR2
    python -m experiments.allmrec_diagnostics --dataset ml-100k --which probe --inputs A.npz,B.npz --probe-std 0,5

- ``spread``: how much the stage-1 joint item embeddings, the SASRec user representations and the
  projected soft tokens differ between items / users (mean and std of pairwise cosine, per-dimension
  std against the mean, row norms) against SmolLM2's own token-embedding rows; with the inputs
  as they are and standardized per dimension (``input_norm="standardize"``); and the popularity
  ranking of the stored test candidate lists (what the item tokens could tell the LM for free).
- ``synthetic``: can soft tokens steer the frozen LM at all? Items are random 128-d vectors, a
  user's vector a fixed random linear map of one target item's vector plus noise; the prompt is
  the index prompt without titles (so only the soft tokens carry the answer) over the target and
  19 random items; the same two projectors, trained with the index loss; held-out users' Hit@1
  against training steps, frozen LM and with LoRA adapters (``--lora``).
- ``overfit``: ``--users`` real users (their last training item as target, candidates drawn once),
  trained for ``--steps`` steps on exactly those prompts; Hit@1 on the same prompts (training
  set) against steps: far above chance means the pipeline can fit; at chance, it cannot even
  memorize.
- ``ablate``: a trained index-answer stage-2 run (``--stage2-run``) evaluated on its test users
  as trained, with the user inputs shuffled across users, and with every item's input replaced
  by the mean item input: if Hit@1 does not move, the LM is not reading those tokens. A run with
  the score probe also gets two probe ablations: the recommender's scores of another user
  (shuffled), and every option scored the same (the probe input 0).
- ``probe``: what the score probe gives the item projector, from saved stage-2 inputs
  (``--inputs``: the ``stage2_inputs.npz`` of ``experiments.allmrec_stage2`` runs), no LM: over
  the training prompts (each user's last training item + 19 never-interacted items drawn as
  stage 2 draws them) and the stored test lists, how often the probe's top option is the target,
  and, for each ``--probe-std`` (x ``--probe-weight``), the probe column's variance over a
  prompt's options against the summed variance of the standardized item inputs beside it: its
  share of the item projector's first-layer input variance at initialization (i.i.d. weights).

Prints the numbers and writes ``diagnostics_<which>.json`` into ``--out``
(default ``checkpoints/allmrec_diagnostics/<dataset>``).
"""

from __future__ import annotations

import argparse
import json
import logging
import string
import sys
import time
from pathlib import Path

import numpy as np

from experiments import cli, report

log = logging.getLogger("experiments")
EXPERIMENT = "allmrec_diagnostics"
WHICH = ("spread", "synthetic", "overfit", "ablate", "probe")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m experiments.{EXPERIMENT}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", required=True, help=f"comma-separated diagnostics: {', '.join(WHICH)}")
    p.add_argument("--dataset", default="ml-100k", help="dataset name or folder (default ml-100k)")
    p.add_argument("--seed", type=int, default=2020, help="seed of the split, samples and training (default 2020)")
    p.add_argument("--stage1-run", type=Path, default=None, help="a finished allmrec_stage1 run folder (required by spread and overfit)")
    p.add_argument("--stage2-run", type=Path, default=None, help="a finished allmrec_stage2 run with the index answer (required by ablate; every variant but "
                        "'reference', e.g. OUT/stage2 of experiments.allmrec_stage2)")
    p.add_argument("--lm", default="smollm2", help="frozen LM: smollm2 | a .gguf file | a HF folder (default smollm2)")
    p.add_argument("--steps", type=int, default=300, help="training steps (synthetic, overfit; default 300)")
    p.add_argument("--batch", type=int, default=8, help="prompts per step (synthetic, overfit; default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (synthetic, overfit; default 1e-3)")
    p.add_argument("--lora", default="0,8", help="LoRA ranks to run (synthetic, overfit; 0 = frozen LM; default 0,8)")
    p.add_argument("--users", type=int, default=32, help="users of the overfit check (default 32)")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="synthetic: leave the LM's label prior in the logits (calibrate=False)")
    p.add_argument("--probe", action="store_true", help="synthetic: the item projector also reads the score")
    p.add_argument("--eval-every", type=int, default=50, help="steps between evaluations (default 50)")
    p.add_argument("--eval-users", type=int, default=160, help="held-out users of the synthetic check (default 160)")
    p.add_argument("--inputs", default=None, metavar="A.npz[,B.npz]",
                   help="probe: saved stage-2 inputs (stage2_inputs.npz of allmrec_stage2 runs; required by probe)")
    p.add_argument("--probe-std", default="0,5", help="probe: probe_std values, comma-separated (default 0,5)")
    p.add_argument("--probe-weight", type=float, default=1.0, help="probe: probe_weight (default 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default checkpoints/allmrec_diagnostics/<dataset>)")
    p.add_argument("--verbose", action="store_true", help="INFO logging")
    return p


def _lm(spec: str):
    from jaxrec.methods.allmrec import stage2 as s2

    loaded = s2.load_lm(spec)
    return s2.prepare_lm(loaded.model, loaded.params, loaded.tokenizer)


def cos_stats(x, n: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean and std of the pairwise cosine of (at most ``n`` sampled) rows of ``x``, the mean row
    norm, the mean absolute column mean and the mean column std."""
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed)
    y = x[rng.choice(len(x), min(n, len(x)), replace=False)]
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    c = (y @ y.T)[np.triu_indices(len(y), 1)]
    return {"cos_mean": float(c.mean()), "cos_std": float(c.std()), "row_norm": float(np.linalg.norm(x, axis=1).mean()),
            "abs_col_mean": float(np.abs(x.mean(0)).mean()), "col_std": float(x.std(0).mean())}


def spread(args, ds, inputs, lm) -> dict:
    import jax

    from jaxrec.eval.candidates import candidate_ranks, candidates_for
    from jaxrec.fetch import cache_root
    from jaxrec.methods.allmrec import stage2 as s2
    from jaxrec.methods.allmrec.stage2_fit import standardize_inputs

    model, lp, _ = lm
    out = {"stage-1 joint item embeddings (sigmoid outputs)": cos_stats(inputs.item_emb),
           "SASRec user representations (test)": cos_stats(inputs.user_rep["test"]),
           "SmolLM2 token-embedding rows": cos_stats(np.asarray(lp["embed_tokens"]["embedding"])[:49152])}
    arch = s2.Stage2Arch(inputs.user_dim, inputs.item_dim, model.config.embed_dim)
    su, si = standardize_inputs(inputs.user_rep, inputs.item_emb)
    for seed in (0, 1):
        p = s2.init_params(jax.random.key(seed), arch)
        u, i = s2.project(p, arch, inputs.user_rep["test"], inputs.item_emb)
        out[f"projected user tokens, init seed {seed}"] = cos_stats(u)
        out[f"projected item tokens, init seed {seed}"] = cos_stats(i)
        u, i = s2.project(p, arch, su["test"], si)
        out[f"projected user tokens from standardized inputs, seed {seed}"] = cos_stats(u)
        out[f"projected item tokens from standardized inputs, seed {seed}"] = cos_stats(i)
    out["standardized joint item embeddings"] = cos_stats(si)
    cands = candidates_for(cache_root() / "candidates", ds, "test", args.seed, 19)
    counts = np.bincount(ds.train.item, minlength=ds.num_items).astype(float)
    ranks = candidate_ranks(counts[cands.items])
    out["popularity on the stored test candidates"] = {"hit@1": float(np.mean(ranks == 0)), "users": int(len(ranks))}
    rows = [[name] + [f"{v[k]:.4f}" for k in ("cos_mean", "cos_std", "row_norm", "abs_col_mean", "col_std")]
            for name, v in out.items() if "cos_mean" in v]
    print(report.format_table(["array", "pairwise cos mean", "cos std", "row norm", "|col mean|", "col std"], rows,
                              title=f"spread of stage 2's inputs and soft tokens ({ds.name})"))
    print(f"popularity Hit@1 on the stored test lists: {out['popularity on the stored test candidates']['hit@1']:.4f}")
    return out


def _train_loop(ctx, params, batches, steps: int, lr: float, evaluate, every: int, label: str) -> list[dict]:
    import jax
    import optax

    from jaxrec.methods.allmrec import stage2 as s2

    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state, ctx, batch):
        (loss, _), g = jax.value_and_grad(lambda p: s2.index_loss(p, ctx, batch), has_aux=True)(params)
        up, state = opt.update(g, state, params)
        return optax.apply_updates(params, up), state, loss

    log_ = [{"step": 0, "hit@1": evaluate(params), "loss": None, "seconds": 0.0}]
    print(f"{label}: step 0 hit@1 {log_[-1]['hit@1']:.4f}", flush=True)
    spent = 0.0
    for s in range(1, steps + 1):
        batch = batches(s)
        t0 = time.perf_counter()
        params, state, loss = step(params, state, ctx, batch)
        loss = float(loss)
        spent += time.perf_counter() - t0
        if s % every == 0 or s == steps:
            log_.append({"step": s, "hit@1": evaluate(params), "loss": loss, "seconds": spent})
            print(f"{label}: step {s} loss {loss:.3f} hit@1 {log_[-1]['hit@1']:.4f} ({spent / s:.2f} s/step)", flush=True)
    return log_


def synthetic(args, lm) -> dict:
    import jax

    from jaxrec.lm.lora import init_lora
    from jaxrec.methods.allmrec import prompt as P
    from jaxrec.methods.allmrec import stage2 as s2

    model, lp, tok = lm
    rng = np.random.default_rng(args.seed)
    num_items, k, d, cands_n, noise = 500, 128, 50, 20, 0.3
    items = rng.normal(size=(num_items, k)).astype(np.float32)
    mix = (rng.normal(size=(k, d)) / np.sqrt(k)).astype(np.float32)

    def users_for(n):
        t = rng.integers(0, num_items, n)
        u = items[t] @ mix + noise * rng.normal(size=(n, d)).astype(np.float32)
        c = np.stack([np.concatenate([[x], rng.choice(np.setdiff1d(np.arange(num_items), [x]), cands_n - 1,
                                                      replace=False)]) for x in t])
        return u.astype(np.float32), t, c

    titles = ["".join(rng.choice(list(string.ascii_lowercase), 6)) for _ in range(num_items)]
    ntrain = 4096
    u_tr, t_tr, c_tr = users_for(ntrain)
    u_ev, t_ev, c_ev = users_for(args.eval_users)
    pb = P.IndexPromptBuilder(tok, titles, P.DOMAINS["movie"], history=1, num_candidates=cands_n, item_titles=False)
    # contextual calibration (as stage2_fit): the content-free label prior of 64 training prompts
    prior = (s2.content_free_prior(model, lp, pb, np.arange(64), [[] for _ in range(64)], c_tr[:64])
             if args.calibrate else None)
    # the probe: the item projector also reads <u, items[i] @ mix> (the "recommender's" score)
    ctx = s2.make_context(model, lp, np.concatenate([u_tr, u_ev]), items, pb, token_norm=s2.lm_token_norm(model, lp),
                          label_prior=prior, score_items=(items @ mix) if args.probe else None)
    shown = np.stack([rng.permutation(cands_n) for _ in range(args.eval_users)])
    eval_users = np.arange(ntrain, ntrain + args.eval_users)

    def evaluate(params):
        res = s2.evaluate_index(params, ctx, eval_users, [[] for _ in eval_users], c_ev, shown=shown, batch_size=16)
        return float(np.mean(res.ranks() == 0))

    def batches(s, rng=np.random.default_rng(args.seed + 1)):
        rows = rng.integers(0, ntrain, args.batch)
        cand = np.stack([rng.permutation(c_tr[r]) for r in rows])
        return pb.training_batch(rows, [[] for _ in rows], cand, t_tr[rows], size=args.batch)

    out = {}
    for rank in cli.parse_list(args.lora, int):
        key = jax.random.key(args.seed)
        params = s2.init_params(key, ctx.settings)
        if rank:
            params["lora"] = init_lora(jax.random.fold_in(key, 1), lp, rank)
        label = (f"synthetic, {'frozen LM' if not rank else f'LoRA r={rank}'}"
                 f"{', calibrated' if args.calibrate else ''}{', score probe' if args.probe else ''}")
        out[label] = _train_loop(ctx, params, batches, args.steps, args.lr, evaluate, args.eval_every, label)
    return out


def overfit(args, ds, inputs, lm) -> dict:
    import jax

    from jaxrec.lm.lora import init_lora
    from jaxrec.methods.allmrec import prompt as P
    from jaxrec.methods.allmrec import stage2 as s2
    from jaxrec.methods.allmrec.stage2_fit import standardize_inputs, training_candidates, training_examples

    model, lp, tok = lm
    from jaxrec import Config

    config = Config.for_model("allmrec_stage2", dataset=ds.name, seed=args.seed, stage1_run="x",
                              train_users=args.users)
    ex = training_examples(ds, config)
    titles, _ = P.item_titles(ds.item_features, ds.num_items)
    pb = P.IndexPromptBuilder(tok, titles, P.get_domain("auto", ds.name), history=10)
    su, si = standardize_inputs(inputs.user_rep, inputs.item_emb)
    ctx = s2.make_context(model, lp, su["train"], si, pb, token_norm=s2.lm_token_norm(model, lp))
    rng = np.random.default_rng(args.seed)
    from jaxrec.data.sequences import user_sequences

    seqs = user_sequences(ds, log_report=False)
    seen = [seqs.items[seqs.indptr[u]:seqs.indptr[u + 1]] for u in ex.users]
    cands = training_candidates(rng, seen, ex.target, 20, ds.num_items)  # drawn once: the same prompts every step
    target_first = np.stack([np.concatenate([[t], row[row != t]]) for t, row in zip(ex.target, cands)])
    # shown[b, j]: the column of target_first whose item is displayed j-th (the training prompt's order)
    shown = np.stack([[list(tf).index(c) for c in row] for tf, row in zip(target_first, cands)])

    def evaluate(params):
        res = s2.evaluate_index(params, ctx, ex.users, ex.history, target_first, shown=shown, batch_size=16)
        return float(np.mean(res.ranks() == 0))

    def batches(s, rng=np.random.default_rng(args.seed + 1)):
        rows = rng.choice(len(ex), args.batch, replace=False)
        return pb.training_batch(ex.users[rows], [ex.history[r] for r in rows], cands[rows], ex.target[rows],
                                 size=args.batch)

    out = {}
    for rank in cli.parse_list(args.lora, int):
        key = jax.random.key(args.seed)
        params = s2.init_params(key, ctx.settings)
        if rank:
            params["lora"] = init_lora(jax.random.fold_in(key, 1), lp, rank)
        label = f"overfit {len(ex)} users, {'frozen LM' if not rank else f'LoRA r={rank}'}"
        out[label] = _train_loop(ctx, params, batches, args.steps, args.lr, evaluate, args.eval_every, label)
    return out


def ablate(args, ds) -> dict:
    """Test-time ablations of a trained stage-2 run (module docstring)."""
    import jax
    import jax.numpy as jnp

    import jaxrec
    from jaxrec.methods.allmrec import stage2 as s2
    from jaxrec.methods.allmrec import stage2_fit
    from jaxrec.train import prepare
    from jaxrec.train.runfolder import RunFolder

    folder = RunFolder.read(args.stage2_run, "--stage2-run")
    config = folder.config
    model = jaxrec.get_model(config)
    ctx = prepare(ds).contexts(model.context, config)["test"]
    from jaxrec.models.base import abstract_context

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ds.num_users, ds.num_items, abstract_context(ctx)))
    params = folder.restore_params(shapes)
    ex, items, shown = stage2_fit.evaluation_lists(ds, "test", config)
    perm = np.random.default_rng(args.seed).permutation(ctx.user_rep.shape[0])
    variants = {"as trained": ctx,
                "user tokens shuffled across users": ctx.replace(user_rep=ctx.user_rep[perm]),
                "item inputs replaced by their mean": ctx.replace(
                    item_emb=jnp.broadcast_to(ctx.item_emb.mean(0, keepdims=True), ctx.item_emb.shape))}
    if ctx.score_items is not None:  # the score probe: another user's scores, or no score at all
        variants["probe scores of another user (shuffled)"] = ctx.replace(score_users=ctx.score_users[perm])
        variants["probe scores all equal (no score)"] = ctx.replace(score_items=jnp.zeros_like(ctx.score_items))
    out = {}
    for name, c in variants.items():
        res = s2.evaluate_stage2(params, c, ex.users, ex.history, items, shown=shown, batch_size=16, generate=False)
        out[name] = {"hit@1": float(np.mean(res.ranks() == 0)), "users": int(len(ex))}
        print(f"ablation: {name}: hit@1 {out[name]['hit@1']:.4f} ({len(ex)} users)", flush=True)
    return out


def probe(args, ds) -> dict:
    """The score probe's input from saved stage-2 inputs (module docstring); numpy and
    ``stage2.option_scores`` only."""
    import jax.numpy as jnp

    from jaxrec.config import Config, ConfigError
    from jaxrec.methods.allmrec import stage2_fit
    from jaxrec.methods.allmrec.stage2 import option_scores
    from jaxrec.methods.allmrec.stage2_inputs import load_inputs, stage_examples, user_sequences

    seqs = user_sequences(ds, log_report=False)
    train = stage_examples(seqs, "train", 10)
    rng = np.random.default_rng([args.seed, 11])
    seen = [seqs.items[seqs.indptr[u]:seqs.indptr[u + 1]] for u in train.users]
    train_cands = stage2_fit.training_candidates(rng, seen, train.target, 20, ds.num_items)
    config = Config.for_model("allmrec_stage2", dataset=str(args.dataset), seed=args.seed, eval_users=0)
    test, test_items, _ = stage2_fit.evaluation_lists(ds, "test", config)
    stds = cli.parse_list(args.probe_std, float)
    out = {}
    for path in cli.parse_list(args.inputs):
        inp = load_inputs(path, ds)
        if inp.score_items is None:
            raise ConfigError(f"--inputs {path}: no score_items (the probe's item vectors); expected the "
                              "stage2_inputs.npz of a stage-1 run or of the SASRec fallback")
        _, items_std = stage2_fit.standardize_inputs(inp.user_rep, inp.item_emb)
        res = {"kind": inp.kind, "item_dims": int(items_std.shape[1])}
        scores = {}
        for stage, ex, cands in (("train", train, train_cands), ("test", test, test_items)):
            sc = scores[stage] = np.einsum("md,mcd->mc", inp.user_rep[stage][ex.users], inp.score_items[cands])
            top = cands[np.arange(len(cands)), sc.argmax(1)]
            res[f"{stage}/probe_top_is_target"] = float(np.mean(top == ex.target))
            res[f"{stage}/score_std_over_options"] = float(sc.std(1).mean())
            res[f"{stage}/prompts"] = int(len(ex))
        sc = scores["train"]
        emb_var = float(items_std[train_cands].var(axis=1).sum(-1).mean())
        for pstd in stds:
            f = args.probe_weight * np.asarray(option_scores(jnp.asarray(sc, jnp.float32), 0, pstd))
            var = float(f.var(axis=1).mean())
            res[f"probe_std={pstd:g}"] = {"probe_variance": var, "item_inputs_variance": emb_var,
                                          "probe_share": var / (var + emb_var), "top_input": float(f.max(1).mean())}
        out[path] = res
        print(f"probe: {path} ({inp.kind}, {res['item_dims']} item dims): top option is the target on "
              f"{res['train/probe_top_is_target']:.3f} of training / {res['test/probe_top_is_target']:.3f} of test "
              f"prompts; score std over the options {res['train/score_std_over_options']:.2f}", flush=True)
        for pstd in stds:
            r = res[f"probe_std={pstd:g}"]
            print(f"  probe_std {pstd:g}, probe_weight {args.probe_weight:g}: probe variance {r['probe_variance']:.2f} "
                  f"vs item inputs {r['item_inputs_variance']:.1f}: share {r['probe_share']:.3f}; "
                  f"top input {r['top_input']:.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from jaxrec.methods.allmrec import register

    register()
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    from jaxrec.config import Config, ConfigError

    which = cli.parse_list(args.which)
    bad = [w for w in which if w not in WHICH]
    if bad or not which:
        raise ConfigError(f"--which {args.which!r}: expected a subset of {', '.join(WHICH)}")
    if any(w in ("spread", "overfit") for w in which) and args.stage1_run is None:
        raise ConfigError("--stage1-run DIR: spread and overfit read a finished allmrec_stage1 run")
    if "ablate" in which and args.stage2_run is None:
        raise ConfigError("--stage2-run DIR: ablate evaluates a finished allmrec_stage2 run")
    if "probe" in which and not args.inputs:
        raise ConfigError("--inputs A.npz[,B.npz]: probe reads saved stage-2 inputs (stage2_inputs.npz of "
                          "experiments.allmrec_stage2 runs)")
    try:
        cli.parse_list(args.probe_std, float)
    except ValueError:
        raise ConfigError(f"--probe-std {args.probe_std!r}: expected comma-separated numbers >= 0") from None
    out = args.out or cli.default_out_dir(EXPERIMENT, report.dataset_label(args.dataset))
    out.mkdir(parents=True, exist_ok=True)
    import jaxrec
    from jaxrec.methods.allmrec.stage2_inputs import stage1_inputs

    ds = inputs = lm = None
    if any(w != "synthetic" for w in which):
        ds = jaxrec.load_dataset(args.dataset, Config.for_model("sasrec", dataset=str(args.dataset), seed=args.seed))
    if args.stage1_run is not None and any(w in ("spread", "overfit") for w in which):
        inputs = stage1_inputs(args.stage1_run, ds)
    if any(w in ("spread", "synthetic", "overfit") for w in which):
        lm = _lm(args.lm)
    for w in which:
        t0 = time.perf_counter()
        res = {"spread": lambda: spread(args, ds, inputs, lm), "synthetic": lambda: synthetic(args, lm),
               "overfit": lambda: overfit(args, ds, inputs, lm), "ablate": lambda: ablate(args, ds),
               "probe": lambda: probe(args, ds)}[w]()
        record = {"which": w, "args": {k: str(v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - t0,
                  "results": res, "command": cli.command_line(f"experiments.{EXPERIMENT}", argv)}
        (out / f"diagnostics_{w}.json").write_text(json.dumps(record, indent=1, default=str))
        print(f"wrote {out / f'diagnostics_{w}.json'} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.main_wrapper(main))
