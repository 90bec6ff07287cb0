"""Batched ensemble vs a loop of single nets, and (optionally) the R x K protocol for the zoo.

    python benchmarks/bench_ensemble.py                       # small CPU run (about a minute)
    python benchmarks/bench_ensemble.py --preset paper --device cuda
    python benchmarks/bench_ensemble.py --zoo --repeats 10 --folds 3 --device cuda

Ensemble mode: one stratified K-fold CV (default 3 folds). Per fold, data preparation
(standardisation, input encoding) is done once and timed separately; then (a) ONE batched model
of N random-sparse members is trained and predicts, and (b) N single ``biosparse`` nets with the
same seeds are trained one after another on the same prepared data. Same device, same epochs,
same batches. Prints the loop/batched time ratio and the AUCs of both (which should agree), and
writes JSON to benchmarks/results/. ``--loop-members k`` times only k loop members and
extrapolates linearly to N (flagged as such in the JSON).

Zoo mode (``--zoo``): every model of the zoo on R x K repeated stratified CV; total time per
model and AUC mean +- sd.

The cohort is synthetic (models.simulate.genes): sparse counts at a realistic cell density
with a planted additive burden signal; nothing is densified.

Measured (one NVIDIA H200, torch 2.11, Triton 3.6; --preset paper --device cuda --input-mode
combos --loop-members 4 --standardize class --profile-after): 100 members, 4,000 x 23,000 genes
x 16 classes, 3-fold CV, 10 epochs, batch 128: batched 12.7 s, loop of single nets 272.2 s (4
members timed per fold, extrapolated to 100), ratio 21.5x; data preparation 97.8 s (shared,
outside both timings). Per step without Lightning: batched 12.9 ms (Triton sparse layer; its
backward 8.7 ms of it), 19.4 ms with the gene values materialised (EPIFLOW_FUSED_SPARSE=0), one
net 3.9 ms. Before the combination backward passes were rewritten, the same run took 28.6 ms
per batched step and 129.9 ms per single-net step (torch's v[ids] backward on the all-zero
count vector). With the default per-column standardisation (a million distinct rows per batch
through the gene module) an earlier build measured 65 ms per batched step, 5.3 ms per net,
ratio 9.5x. At this size the planted burden (50 causal genes among 23,000) is not found in 10
epochs (member AUC 0.50 in both arms; on 2,000 x 400 genes the same generator gives logreg
0.72-0.73 under either standardisation): the benchmark times training, it does not score it. Members start equal to
the single nets (logits within 1.5e-7); after 210 Adam steps on that noise the GPU's
atomic-add order lets their probabilities drift apart (at most 0.44), while on a learnable
cohort tests/test_genes_fused_gpu.py holds them within 1e-4. Zoo (--zoo, 2,000 x 2,000 genes,
10 x 3 CV, 10 epochs, 10-member ensemble): 249 s for all eight models, ~1.1 s per fold per net
(Lightning setup dominates at that size).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRESETS = {
    # ~1 minute on 2 CPU cores
    "small": dict(n_samples=600, n_genes=400, members=8, epochs=3, rate=0.05),
    # the benchmark: 4,000 samples x 23,000 genes, 100 members
    "paper": dict(n_samples=4000, n_genes=23000, members=100, epochs=10, rate=0.076),
}


def _cohort(args):
    from models.simulate.genes import planted_burden, random_pathways

    t0 = time.perf_counter()
    coh = planted_burden(n=args.n_samples, n_genes=args.n_genes, n_classes=args.classes,
                         n_causal=min(50, max(2, args.n_genes // 50)), effect=1.0,
                         rate=args.rate, seed=args.seed, n_pathways=args.pathways)
    rng = np.random.default_rng(args.seed + 1)
    coh.gene_pathways = random_pathways(args.n_genes, args.pathways, rng=rng)
    return coh, time.perf_counter() - t0


def _folds(y, k, repeats, seed):
    from sklearn.model_selection import RepeatedStratifiedKFold

    rskf = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return list(rskf.split(np.zeros(len(y)), y))


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _warm_up(args, coh, tr0, device) -> None:
    """Imports, Lightning's first Trainer, the device context and the fused kernels, outside
    the timings."""
    from models.genes.data import Standardiser, make_source
    from models.genes.ensemble import BatchedEnsemble
    from models.genes.nets import GeneNet, build_topology
    from models.genes.training import predict_logits, train_net

    C, G = args.classes, args.n_genes
    # warm-up outside the timings: imports, Lightning's first Trainer, device context
    w_idx = tr0[: min(64, len(tr0))]
    w_st = Standardiser(coh.X[w_idx], per=args.standardize, n_classes=C)
    w_src = make_source(coh.X[w_idx], w_st, C, device, mode=args.input_mode)
    w_topo, _ = build_topology("biosparse", G, coh.gene_pathways, {"pathway_seed": 0})
    w_nets = [GeneNet("logreg", C, G, hidden=args.hidden),
              GeneNet("biosparse", C, G, hidden=args.hidden, topo=w_topo),
              BatchedEnsemble([GeneNet("biosparse", C, G, hidden=args.hidden, topo=w_topo,
                                       init_seed=i) for i in range(2)])]
    for w_net in w_nets:   # compiles the fused kernels too, outside the timings
        w_net = w_net.to(device)
        train_net(w_net, w_src, coh.y[w_idx].astype(np.float32), lr=1e-3, weight_decay=0.0,
                  alpha=0.5, gamma=2.0, max_epochs=1, batch_size=args.batch_size, seed=0,
                  device=device)
        predict_logits(w_net.to(device), w_src)
    del w_nets


def _loop_of_singles(member, n_loop, src, src_te, y_tr, common, device):
    """(n_test, n_loop) probabilities of the first n_loop members trained one by one."""
    import torch

    from models.genes.training import predict_logits, train_net

    singles = []
    for i in range(n_loop):
        net = member(i).to(device)
        train_net(net, src, y_tr, **common)
        singles.append(torch.sigmoid(predict_logits(net.to(device), src_te).double()))
        del net
    _sync(device)
    return torch.stack(singles, 1)


def _init_logit_diff(member, n_loop, src_te, device) -> float:
    """The untrained batched model computes exactly the members' functions: max |logit diff|."""
    import torch

    from models.genes.ensemble import BatchedEnsemble

    with torch.no_grad():
        xb = src_te(torch.arange(min(256, src_te.n)))
        e0 = BatchedEnsemble([member(i) for i in range(n_loop)]).to(device)
        s0 = torch.stack([member(i).to(device)(xb) for i in range(n_loop)], 1)
        return float((e0(xb) - s0).abs().max())


def run_ensemble(args) -> dict:
    import torch
    from sklearn.metrics import roc_auc_score

    from models.genes.data import Standardiser, make_source
    from models.genes.ensemble import BatchedEnsemble
    from models.genes.nets import GeneNet, build_topology
    from models.genes.training import predict_logits, resolve_device, train_net

    device = resolve_device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    coh, t_cohort = _cohort(args)
    C, G, N = args.classes, args.n_genes, args.members
    n_loop = min(N, args.loop_members or N)
    folds = _folds(coh.y, args.folds, 1, args.seed)
    _warm_up(args, coh, folds[0][0], device)
    res = {"prep_s": 0.0, "batched_s": 0.0, "loop_s": 0.0, "auc_batched": [], "auc_loop": [],
           "max_abs_member_diff": 0.0, "n_combos": [], "input_mode": None}
    for f, (tr, te) in enumerate(folds):
        y_tr = coh.y[tr].astype(np.float32)
        alpha = float(1 - y_tr.mean())
        t0 = time.perf_counter()
        stats = Standardiser(coh.X[tr], per=args.standardize, n_classes=C)
        cache = int(args.cache_gb * 2**30)
        src = make_source(coh.X[tr], stats, C, device, mode=args.input_mode,
                          batch_size=args.batch_size, cache_bytes=cache)
        src_te = make_source(coh.X[te], stats, C, device, mode=src.mode, cache_bytes=cache)
        _sync(device)
        res["prep_s"] += time.perf_counter() - t0
        res["input_mode"] = src.mode
        res["n_combos"].append(int(getattr(src, "n_combos", 0)))

        def member(i):
            topo, _ = build_topology("biosparse", G, coh.gene_pathways, {"pathway_seed": i})
            return GeneNet("biosparse", C, G, hidden=args.hidden, topo=topo, init_seed=1000 + i)

        common = dict(lr=args.lr, weight_decay=0.0, alpha=alpha, gamma=2.0,
                      max_epochs=args.epochs, batch_size=args.batch_size, seed=args.seed + f,
                      device=device)
        if f == 0:
            res["init_max_abs_logit_diff"] = _init_logit_diff(member, n_loop, src_te, device)
        # (a) one batched model
        t0 = time.perf_counter()
        ens = BatchedEnsemble([member(i) for i in range(N)],
                              member_chunk=args.member_chunk).to(device)
        train_net(ens, src, y_tr, **common)
        lg = predict_logits(ens.to(device), src_te)
        _sync(device)
        res["batched_s"] += time.perf_counter() - t0
        res["fused_gene_layer"] = bool(ens._fused_on(device))
        res["steps_per_fit"] = args.epochs * -(-len(tr) // args.batch_size)
        p_members = torch.sigmoid(lg.double())
        res["auc_batched"].append(float(roc_auc_score(coh.y[te], p_members.mean(1).numpy())))
        del ens
        # (b) a loop of single nets, same seeds, same batches
        t0 = time.perf_counter()
        S = _loop_of_singles(member, n_loop, src, src_te, y_tr, common, device)
        res["loop_s"] += (time.perf_counter() - t0) * (N / n_loop)
        yte = coh.y[te]
        res.setdefault("member_auc_batched", []).append(float(np.mean(
            [roc_auc_score(yte, p_members[:, i].numpy()) for i in range(n_loop)])))
        res.setdefault("member_auc_loop", []).append(float(np.mean(
            [roc_auc_score(yte, S[:, i].numpy()) for i in range(n_loop)])))
        res["max_abs_member_diff"] = max(res["max_abs_member_diff"],
                                         float((S - p_members[:, :n_loop]).abs().max()))
        if n_loop == N:
            res["auc_loop"].append(float(roc_auc_score(coh.y[te], S.mean(1).numpy())))
        print(f"fold {f}: batched {res['batched_s']:.1f}s cumulative, loop "
              f"{res['loop_s']:.1f}s cumulative{' (extrapolated)' if n_loop < N else ''}",
              flush=True)
    if args.profile_after:
        res["profile"] = profile_steps(args, coh, src, y_tr, device)
    res["ratio_loop_over_batched"] = res["loop_s"] / res["batched_s"]
    res["loop_extrapolated_from"] = n_loop if n_loop < N else None
    res["cohort_s"] = t_cohort
    return res


def run_profile(args) -> dict:
    """Where one training step goes: torch.profiler over a few steps of the batched model and of
    one single net (forward, focal loss, backward, Adam), on the first fold's training source."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from models.genes.data import ShuffledBatches, Standardiser, make_source
    from models.genes.ensemble import BatchedEnsemble
    from models.genes.nets import GeneNet, build_topology
    from models.genes.training import member_loss, resolve_device

    device = resolve_device(args.device)
    coh, _ = _cohort(args)
    tr, _ = _folds(coh.y, args.folds, 1, args.seed)[0]
    stats = Standardiser(coh.X[tr], per=args.standardize, n_classes=args.classes)
    src = make_source(coh.X[tr], stats, args.classes, device, mode=args.input_mode,
                      batch_size=args.batch_size, cache_bytes=int(args.cache_gb * 2**30))
    return profile_steps(args, coh, src, coh.y[tr].astype(np.float32), device)


def profile_steps(args, coh, src, y, device) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from models.genes.data import ShuffledBatches
    from models.genes.ensemble import BatchedEnsemble
    from models.genes.nets import GeneNet, build_topology
    from models.genes.training import member_loss

    def member(i):
        topo, _ = build_topology("biosparse", args.n_genes, coh.gene_pathways, {"pathway_seed": i})
        return GeneNet("biosparse", args.classes, args.n_genes, hidden=args.hidden, topo=topo,
                       init_seed=1000 + i)

    out = {"input_mode": src.mode}
    def variants():
        yield "batched", BatchedEnsemble([member(i) for i in range(args.members)])
        if device.type == "cuda" and getattr(src, "mode", None) == "combos":
            ens = BatchedEnsemble([member(i) for i in range(args.members)])
            ens.use_fused_sparse = False     # gene values materialised, tensor-op sparse layer
            yield "batched_rows", ens
        yield "single", member(0)

    for name, net in variants():
        net = net.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=args.lr)
        epochs = ShuffledBatches(src, y, args.batch_size, 0)
        batches = (b for _ in range(10**6) for b in epochs)

        def step():
            x, yb = next(batches)
            opt.zero_grad()
            loss = member_loss(net(x), yb, 0.5, 2.0)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.profile_steps):
            step()
        _sync(device)
        per_step = (time.perf_counter() - t0) / args.profile_steps
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step()
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=18)
        print(f"\n== {name}: {per_step * 1e3:.1f} ms per step (no Lightning)\n{table}", flush=True)
        out[name] = {"ms_per_step": per_step * 1e3, "table": table}
    return out


def _zoo_cohort(coh, args):
    """The synthetic cohort as a workflow Cohort (the count matrix doubles as the variant
    matrix of the sgd baseline) and its repeated stratified splits."""
    from pipelines.splits import make_splits
    from pipelines.workflows.cohort import Cohort

    X = coh.X.tocsr()
    ids = np.array([f"s{i}" for i in range(X.shape[0])])
    cohort = Cohort(counts=X, variants=X, y=np.asarray(coh.y, np.int64), sample_ids=ids,
                    genes=tuple(f"G{g}" for g in range(args.n_genes)),
                    classes=tuple(f"c{c}" for c in range(args.classes)), gene_pathways=coh.gene_pathways)
    return cohort, make_splits(cohort.y, ids, repeats=args.repeats, folds=args.folds, seed=args.seed)


def _zoo_spec(m: str, args, edges):
    from pipelines.workflows.cv import ModelSpec

    if m.startswith("sgd_"):
        return ModelSpec(m, m, {})
    params = {"lr": args.lr, "hidden": args.hidden, "standardize": args.standardize}
    if m == "genegene_pathway":
        params["gene_gene_edges"] = edges
    if m == "ensemble":
        params.update(n_members=args.members, member_chunk=args.member_chunk)
    return ModelSpec(m, m, params)


def run_zoo(args, on_model=None) -> dict:
    """Every model on R x K repeated stratified CV through the pipeline's cross_validate (fold
    seeds as in `epiflow train`)."""
    from models.genes import MODEL_TYPES, fit_predict
    from pipelines.workflows.cv import cross_validate

    coh, t_cohort = _cohort(args)
    cohort, splits = _zoo_cohort(coh, args)
    rng = np.random.default_rng(args.seed)
    edges = rng.integers(0, args.n_genes, size=(args.n_genes, 2))
    out = {"cohort_s": t_cohort, "models": {}}
    # warm-up outside the timings (imports, Lightning's first Trainer, device context, kernels)
    w = next(splits.iter_folds())[2][:64]
    for m in ("logreg", "ensemble"):
        fit_predict(m, coh.X[w], coh.y[w], coh.X[w], n_classes=args.classes,
                    gene_pathways=coh.gene_pathways, params={"n_members": 2},
                    train={"max_epochs": 1, "device": args.device})
    train = {"max_epochs": args.epochs, "seed": 0, "batch_size": args.batch_size, "device": args.device,
             "input_mode": args.input_mode, "cache_bytes": int(args.cache_gb * 2**30),
             "num_threads": args.threads or None}
    models = args.models.split(",") if args.models else list(MODEL_TYPES) + ["sgd_l2"]
    for m in models:
        t0 = time.perf_counter()
        aucs = cross_validate(_zoo_spec(m, args, edges), cohort, list(splits.iter_folds()), train_cfg=train).aucs
        dt = time.perf_counter() - t0
        n = len(aucs)
        out["models"][m] = {"total_s": dt, "per_fold_s": dt / n,
                            "auc_mean": float(np.mean(aucs)), "auc_sd": float(np.std(aucs, ddof=1))}
        print(f"{m:18s} {dt:8.1f}s  {dt / n:6.2f}s/fold  AUC {np.mean(aucs):.3f} +- "
              f"{np.std(aucs, ddof=1):.3f}", flush=True)
        out["total_s"] = sum(v["total_s"] for v in out["models"].values())
        if on_model is not None:
            on_model(out)
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--n-samples", type=int)
    ap.add_argument("--n-genes", type=int)
    ap.add_argument("--members", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--rate", type=float, help="fraction of nonzero (sample, class, gene) cells")
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--pathways", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="zoo mode: CV repeats")
    ap.add_argument("--member-chunk", type=int, default=None)
    ap.add_argument("--loop-members", type=int, default=None,
                    help="time only this many loop members and extrapolate to --members")
    ap.add_argument("--input-mode", default="auto", choices=["auto", "combos", "pairs", "dense"])
    ap.add_argument("--standardize", default="column", choices=["column", "class"],
                    help="input standardisation: per (class, gene) column, or per class over genes "
                         "(equal count vectors then share one gene-module row across genes)")
    ap.add_argument("--cache-gb", type=float, default=1.0,
                    help="dense input: keep a fold's standardised matrix on the device up to this size")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (0: torch default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zoo", action="store_true", help="time the R x K protocol for every model")
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="profile this many training steps of the batched model and one net")
    ap.add_argument("--profile-after", action="store_true",
                    help="ensemble mode: then profile --profile-steps (default 10) training steps on the last fold")
    ap.add_argument("--models", default="", help="zoo mode: comma-separated subset")
    ap.add_argument("--default-json", action="store_true",
                    help="ensemble mode: also write RESULTS/ensemble_default.json (the ratio and "
                         "every setting used)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    import torch

    from models.genes.training import resolve_device

    device = resolve_device(args.device)
    meta = {"benchmark": "zoo_protocol" if args.zoo else "ensemble_batched_vs_loop",
            "preset": args.preset, "args": vars(args), "device": str(device),
            "device_name": (torch.cuda.get_device_name(0) if device.type == "cuda"
                            else platform.processor() or platform.machine()),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = (f"{meta['benchmark']}-{device.type}-{args.n_samples}x{args.n_genes}"
            f"-N{args.members}.json")
    path = out_dir / name

    def write(result, partial):
        meta["wall_s"] = time.perf_counter() - t0
        meta["result"] = result
        meta["partial"] = partial
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        os.replace(tmp, path)

    t0 = time.perf_counter()
    if args.profile_after and not args.profile_steps:
        args.profile_steps = 10
    if args.profile_steps and not args.profile_after:
        meta["benchmark"] = "ensemble_step_profile"
        path = out_dir / f"ensemble_step_profile-{device.type}-{args.n_samples}x{args.n_genes}.json"
        result = run_profile(args)
        write(result, False)
        return meta
    if args.zoo:
        result = run_zoo(args, on_model=lambda r: write(r, True))
    else:
        result = run_ensemble(args)
    write(result, False)
    if not args.zoo:
        extra = " (loop extrapolated)" if result["loop_extrapolated_from"] else ""
        print(f"\nensemble of {args.members} on {args.n_samples} x {args.n_genes} genes, "
              f"{args.folds}-fold CV, {args.epochs} epochs, {device}: batched "
              f"{result['batched_s']:.1f}s, loop {result['loop_s']:.1f}s{extra}, "
              f"ratio {result['ratio_loop_over_batched']:.1f}x; data prep "
              f"{result['prep_s']:.1f}s; max |member p batched - loop| "
              f"{result['max_abs_member_diff']:.2e} after training (before: logits "
              f"{result.get('init_max_abs_logit_diff', float('nan')):.1e}); mean member AUC "
              f"batched {np.mean(result['member_auc_batched']):.4f}, loop "
              f"{np.mean(result['member_auc_loop']):.4f}")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}))
    print(f"wrote {path}")
    if args.default_json and not args.zoo:
        dflt = out_dir / "ensemble_default.json"
        doc = {"ratio_loop_over_batched": result["ratio_loop_over_batched"],
               "batched_s": result["batched_s"], "loop_s": result["loop_s"],
               "loop_extrapolated_from": result["loop_extrapolated_from"],
               "prep_s": result["prep_s"], "device": meta["device"],
               "device_name": meta["device_name"], "torch": meta["torch"],
               "params": {k: v for k, v in vars(args).items() if k not in ("out", "default_json")},
               "time": meta["time"]}
        tmp = dflt.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, dflt)
        print(f"wrote {dflt}")
    return meta


if __name__ == "__main__":
    main()
