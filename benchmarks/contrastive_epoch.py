"""Training-epoch cost of the contrastive backbones: LightGCN vs SGL (in-batch and all-node
negatives) vs SGCL on ml-100k.

All in one process run, same config (``Config.for_model`` defaults: batch 2048, d 128,
2 layers, Adam 1e-3) and the same batches: one epoch's batches are drawn once with
``jaxrec.train.batches.epoch_batches`` (seeded; SGCL gets the same pairs without the
negatives), every model starts from the same embedding tables, and each trains full epochs
through ``make_train_step`` + ``run_epoch`` (what ``jaxrec.train.fit`` runs). A warm-up
epoch compiles each step first. Epochs are interleaved over ``--rounds`` rounds (order
rotated) and medians reported, with ratios to LightGCN.

Also reported:

- propagation count per step, read from the jaxpr of ``value_and_grad(model.loss)``: the
  number of sparse products (``bcsr_dot_general``; forward and backward). SGL must cost
  at most two extra propagations (one per view) per step: 3x LightGCN's count.
- ``epoch_views`` (SGL's two augmented graphs, once per epoch) time;
- a per-step profile of the parts: the in-batch loss alone (fwd + bwd at [B, d]) and the
  propagations alone.

    python benchmarks/contrastive_epoch.py             # 5 rounds
    python benchmarks/contrastive_epoch.py --rounds 3 --aug RW
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.common import machine_line, median, table, versions_line  # noqa: E402
from jaxrec.config import Config  # noqa: E402
from jaxrec.data import PositiveIndex, load_dataset  # noqa: E402
from jaxrec.graph import build_graph, light_propagate  # noqa: E402
from jaxrec.losses import (host_distinct, info_nce, info_nce_all, info_nce_by_id, sgcl_loss,  # noqa: E402
                           sgcl_loss_by_id)
from jaxrec.models import get_model  # noqa: E402
from jaxrec.models.lightgcn import node_table  # noqa: E402
from jaxrec.train.batches import Sizes, epoch_batches  # noqa: E402
from jaxrec.train.step import make_train_step, run_epoch  # noqa: E402

# name -> (backbone, config overrides); "sgl_all" is SGL with ssl_negatives="all" (the
# reference code's every-node denominator) instead of the in-batch default.
VARIANTS = {"lightgcn": ("lightgcn", {}), "sgl": ("sgl", {}), "sgl_all": ("sgl", {"ssl_negatives": "all"}),
            "sgcl": ("sgcl", {}),
            # the distinct ids found inside the step, padded to min(B, rows): jaxrec 0.1's form
            "sgl_table": ("sgl", {"contrast_unique": "table"}), "sgcl_table": ("sgcl", {"contrast_unique": "table"})}
MODELS = tuple(VARIANTS)


def count_primitives(fn, *args) -> Counter:
    """Primitive names in the jaxpr of ``fn(*args)``, sub-jaxprs included."""

    def walk(jaxpr, c):
        for e in jaxpr.eqns:
            c[e.primitive.name] += 1
            for v in e.params.values():
                for sub in v if isinstance(v, (list, tuple)) else [v]:
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr, c)
                    elif hasattr(sub, "eqns"):
                        walk(sub, c)
        return c

    return walk(jax.make_jaxpr(fn)(*args).jaxpr, Counter())


def timeit(fn, number: int) -> float:
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(number):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / number


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (one epoch per model each)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--aug", default=None, help="SGL augmentation (default: the config's, ED)")
    p.add_argument("--batch-size", type=int, default=None)
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    overrides = {"seed": args.seed}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    configs = {m: Config.for_model(VARIANTS[m][0], **overrides, **VARIANTS[m][1]) for m in MODELS}
    if args.aug:
        for m in ("sgl", "sgl_all"):
            configs[m] = configs[m].replace(ssl_aug=args.aug)
    base = configs["lightgcn"]
    ds = load_dataset("ml-100k", base)
    tr = ds.train
    graph = build_graph(tr.user, tr.item, ds.num_users, ds.num_items)
    positives = PositiveIndex.build(tr.user, tr.item, ds.num_items)
    batches = list(epoch_batches(np.random.default_rng(args.seed), tr.user, tr.item, base.batch_size, positives))
    no_neg = [{"user": b["user"], "pos": b["pos"]} for b in batches]

    print("# Contrastive backbones: training-epoch time on ml-100k (LightGCN, SGL, SGCL)")
    print(f"machine: {machine_line()}")
    print(f"versions: {versions_line()}; jax backend {jax.default_backend()}")
    print(f"data: {ds.num_users} users, {ds.num_items} items, {len(tr)} train pairs, "
          f"{graph.num_edges} directed edges; {len(batches)} batches of {base.batch_size} "
          f"(last {len(batches[-1]['user'])})")
    c = configs["sgl"]
    print(f"config: d {base.embedding_size}, {base.num_layers} layers, kernel {base.kernel}, lr {base.learning_rate}; "
          f"SGL {c.ssl_aug} ratio {c.ssl_ratio} tau {c.ssl_tau} weight {c.ssl_weight}; "
          f"SGCL tau {configs['sgcl'].sgcl_tau}; rounds {args.rounds}")

    init_key, train_key = jax.random.split(jax.random.PRNGKey(args.seed))
    models = {m: get_model(configs[m]) for m in MODELS}
    params0 = models["lightgcn"].init(init_key, ds.num_users, ds.num_items)
    optimizer = optax.adam(base.learning_rate)
    sizes = Sizes(ds.num_users, ds.num_items)
    state = {}
    for name, model in models.items():
        views_t0 = time.perf_counter()
        views = model.epoch_views(graph, jax.random.PRNGKey(1))
        jax.block_until_ready(views)
        # the objective's host-side additions (distinct ids), as the training loop makes them
        own = [model.objective.prepare_batch(b, sizes) for b in (batches if model.needs_negatives else no_neg)]
        state[name] = {
            "step": make_train_step(model, optimizer),
            "params": jax.tree.map(jnp.copy, params0),
            "views": views,
            "key": train_key,
            "batches": own,
            "first_views_s": time.perf_counter() - views_t0,
        }
        state[name]["opt"] = optimizer.init(state[name]["params"])

    def run(name):
        s = state[name]
        s["key"], k = jax.random.split(s["key"])
        s["params"], s["opt"], loss, _, _ = run_epoch(s["step"], s["params"], s["opt"], graph, s["views"],
                                                     iter(s["batches"]), k)
        return loss

    first = {}
    for name in MODELS:  # warm-up: compiles the step (full and last partial batch)
        t0 = time.perf_counter()
        run(name)
        first[name] = time.perf_counter() - t0

    samples = {n: [] for n in MODELS}
    for r in range(args.rounds):
        order = MODELS[r % len(MODELS):] + MODELS[: r % len(MODELS)]
        for n in order:
            time.sleep(0.05)
            t0 = time.perf_counter()
            run(n)
            samples[n].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {samples[n][-1]:.2f}s" for n in MODELS),
              file=sys.stderr)

    # --- propagation counts (static, from the jaxpr) --------------------------------------------
    b0 = {k: jnp.asarray(v) for k, v in batches[0].items()}
    counts = {}
    for name, model in models.items():
        bb = jax.tree.map(jnp.asarray, state[name]["batches"][0])
        cnt = count_primitives(jax.value_and_grad(model.loss, has_aux=True), params0, graph, state[name]["views"],
                               bb, jax.random.PRNGKey(0))
        counts[name] = cnt.get("bcsr_dot_general", 0)

    # --- per-step parts ------------------------------------------------------------------------
    views_jit_s = timeit(lambda: models["sgl"].epoch_views(graph, jax.random.PRNGKey(3)), 5)
    L, kernel = base.num_layers, base.kernel
    prop = jax.jit(jax.grad(lambda p, g: jnp.sum(light_propagate(g, node_table(p), L, kernel) ** 2)))
    prop_s = timeit(lambda: prop(params0, graph), 10)
    # The contrastive terms on a real batch: the reference in-batch form over gathered rows
    # ([B, B] logits), the distinct-id form the models run (same value), and SGL's
    # every-node form; tables are the propagated embeddings of the initial parameters.
    u_tab, i_tab = jax.jit(models["lightgcn"].embed)(params0, graph)
    bu, bp = b0["user"], b0["pos"]
    tau = configs["sgl"].ssl_tau

    def grad_time(loss) -> float:
        g = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return timeit(lambda: g(u_tab, i_tab), 5)

    nce_gather_s = grad_time(lambda u, i: info_nce(u[bu], u[bu], tau) + info_nce(i[bp], i[bp], tau))
    nce_id_s = grad_time(lambda u, i: info_nce_by_id(u, u, bu, tau) + info_nce_by_id(i, i, bp, tau))
    du, di = host_distinct(np.asarray(bu), ds.num_users), host_distinct(np.asarray(bp), ds.num_items)
    nce_host_s = grad_time(lambda u, i: info_nce_by_id(u, u, bu, tau, distinct=du)
                           + info_nce_by_id(i, i, bp, tau, distinct=di))
    nce_all_s = grad_time(lambda u, i: info_nce_all(u, u, bu, tau) + info_nce_all(i, i, bp, tau))
    sgc_gather_s = grad_time(lambda u, i: sgcl_loss(u[bu], i[bp], configs["sgcl"].sgcl_tau))
    sgc_id_s = grad_time(lambda u, i: sgcl_loss_by_id(u, i, bu, bp, configs["sgcl"].sgcl_tau))
    sgc_host_s = grad_time(lambda u, i: sgcl_loss_by_id(u, i, bu, bp, configs["sgcl"].sgcl_tau, distinct=(du, di)))
    n_u, n_i = len(np.unique(np.asarray(bu))), len(np.unique(np.asarray(bp)))
    B, d = base.batch_size, base.embedding_size

    # --- report ----------------------------------------------------------------------------------
    lg = median(samples["lightgcn"])
    steps = len(batches)
    print(f"\nEpoch time, seconds (median of {args.rounds} interleaved rounds; {steps} steps per epoch):\n")
    rows = []
    for n in MODELS:
        t = median(samples[n])
        rows.append([n, f"{t:.3f}", f"{min(samples[n]):.3f}", f"{1e3 * t / steps:.1f}", f"{t / lg:.2f}",
                     str(counts[n]), f"{counts[n] / max(counts['lightgcn'], 1):.0f}x",
                     f"{first[n]:.2f}"])
    print(table(["model", "s/epoch (median)", "min", "ms/step", "/ LightGCN", "sparse products/step",
                 "/ LightGCN", "first epoch s (compile)"], rows))
    extra = (counts["sgl"] - counts["lightgcn"]) / max(counts["lightgcn"], 1)
    verdict = "MEETS" if extra <= 2 else "MISSES"
    print(f"\nSGL propagation cost: {counts['sgl']} sparse products per step vs LightGCN's {counts['lightgcn']} "
          f"-> {extra:.0f} extra propagations (fwd+bwd of {L} layers each) per step: {verdict} "
          f"the limit of 2 (one per view).")
    print(f"\nParts (seconds; B={B}, d={d}):\n")
    print(f"batch 0: {B} pairs, {n_u} distinct users, {n_i} distinct items\n")
    print(table(["part", "s", "per epoch-equivalent s"], [
        ["LightGCN propagation fwd+bwd (one graph, all nodes)", f"{prop_s:.4f}", f"{prop_s * steps:.3f}"],
        ["InfoNCE users + items, gathered rows ([B,B] logits x2)", f"{nce_gather_s:.4f}", f"{nce_gather_s * steps:.3f}"],
        ["InfoNCE users + items, by distinct id, padded to min(B, rows)", f"{nce_id_s:.4f}", f"{nce_id_s * steps:.3f}"],
        [f"InfoNCE users + items, by distinct id, host-padded to {len(du.ids)}/{len(di.ids)} (SGL default)",
         f"{nce_host_s:.4f}", f"{nce_host_s * steps:.3f}"],
        ["InfoNCE users + items vs all nodes (ssl_negatives=all)", f"{nce_all_s:.4f}", f"{nce_all_s * steps:.3f}"],
        ["SGCL loss, gathered rows ([B,2B] logits)", f"{sgc_gather_s:.4f}", f"{sgc_gather_s * steps:.3f}"],
        ["SGCL loss, by distinct id, padded to min(B, rows)", f"{sgc_id_s:.4f}", f"{sgc_id_s * steps:.3f}"],
        ["SGCL loss, by distinct id, host-padded (SGCL default)", f"{sgc_host_s:.4f}", f"{sgc_host_s * steps:.3f}"],
        ["SGL epoch_views (2 ED views, once per epoch)", f"{views_jit_s:.4f}", f"{views_jit_s:.3f}"],
    ]))
    print(f"\nby-id speed-up on this batch: InfoNCE {nce_gather_s / nce_id_s:.2f}x (host-padded "
          f"{nce_gather_s / nce_host_s:.2f}x), SGCL {sgc_gather_s / sgc_id_s:.2f}x (host-padded "
          f"{sgc_gather_s / sgc_host_s:.2f}x) (same loss values; tests/test_losses.py)")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
