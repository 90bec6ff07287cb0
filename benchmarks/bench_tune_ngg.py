"""Tuned vs default NGG settings on a held-out simulated phenotype over real genotypes.

An Optuna study (TPE, median pruning on the per-phenotype running score) tunes NGG's B, d,
lam_scale, R and FISTA iterations on phenotypes simulated over mouse_hs1940's real genotypes
(planted additive SNPs and interacting pairs, seeds ``--tune-seeds``), scoring locus-level recall of
the planted pairs among the top 10 (pipelines/tune_ngg.py). The first trial is the defaults. The best
setting and the defaults are then run on a phenotype simulated with ``--holdout-seed`` (other
planted loci, other noise) that the study never saw; the JSON records recall@10/@100 of both, the
trials, pruned counts and wall times.

The study runs in memory through optuna directly (the `epiflow tune --ngg` runner adds storage and
MLflow around the same objective).

    python benchmarks/bench_tune_ngg.py                       # 400-SNP panel, 24 trials
    python benchmarks/bench_tune_ngg.py --max-snps 1000 --trials 30
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from pipelines.tune_ngg import NGG_DEFAULTS, ngg_study_spec  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "gemma")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_tune_ngg.json")
    ap.add_argument("--max-snps", type=int, default=400, help="panel size (drawn evenly from GEMMA's 1,000-SNP panel)")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--tune-seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--holdout-seed", type=int, default=1001)
    ap.add_argument("--sampler-seed", type=int, default=0)
    ap.add_argument("--score", default="recall@10")
    ap.add_argument("--multi-objective", action="store_true", help="score and seconds per repetition")
    ap.add_argument("--device", default="cpu")
    return ap


def _create_study(spec, args):
    """The Optuna study: TPE (with the median pruner) or NSGA-II for two objectives; NGG's defaults first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=args.sampler_seed, multivariate=True)
    if args.multi_objective:
        study = optuna.create_study(directions=spec.directions,
                                    sampler=optuna.samplers.NSGAIISampler(seed=args.sampler_seed))
    else:
        study = optuna.create_study(direction=spec.directions[0], sampler=sampler,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0))
    study.enqueue_trial(dict(NGG_DEFAULTS))
    return study


def _report(args, obj, study, states, best, front, held, t_study, t_rerun) -> dict:
    """The benchmark's JSON record (without the total time)."""
    return {
        "benchmark": "tune_ngg",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "optuna": optuna.__version__,
                    "cpus": os.cpu_count(), "loadavg_end": os.getloadavg(), "platform": platform.platform()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "panel": {"n": int(obj.data.X.shape[0]), "p": int(obj.data.X.shape[1]),
                  "pairs": int(obj.data.X.shape[1] * (obj.data.X.shape[1] - 1) // 2), "window": obj.cfg["window"],
                  "min_gap": obj.min_gap, "h2_add": obj.cfg["h2_add"], "h2_int": obj.cfg["h2_int"],
                  "n_snps": obj.cfg["n_snps"], "n_pairs": obj.cfg["n_pairs"]},
        "tune_phenotypes": [{"seed": s, "pairs": p.pairs.tolist(), "snps": p.snps.tolist(), "realized": p.realized}
                            for s, p in zip(args.tune_seeds, obj.tune_phenos)],
        "holdout_phenotype": {"seed": args.holdout_seed, "pairs": obj.holdout_pheno.pairs.tolist(),
                              "snps": obj.holdout_pheno.snps.tolist(), "realized": obj.holdout_pheno.realized},
        "defaults": dict(NGG_DEFAULTS),
        "study": {"n_trials": len(states), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
                  "wall_s": t_study, "best_number": best.number, "best_params": best.params,
                  "best_values": best.values, "pareto_front": front,
                  "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
                              "intermediate": t.intermediate_values, "user_attrs": t.user_attrs}
                             for t in study.trials]},
        "heldout": held, "rerun_wall_s": t_rerun,
    }


def main(argv=None):
    args = _parser().parse_args(argv)
    prefix = args.data / "mouse_hs1940"
    if not (args.data / "mouse_hs1940.bed.gz").exists() and not (args.data / "mouse_hs1940.bed").exists():
        print(f"bench_tune_ngg: {prefix}.bed not found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    section = {"genotypes": str(prefix), "extract": str(args.data / "mouse_hs1940_snps.txt.gz"),
               "max_snps": args.max_snps, "tune_seeds": args.tune_seeds, "holdout_seed": args.holdout_seed,
               "score": args.score, "multi_objective": args.multi_objective, "device": args.device}
    spec = ngg_study_spec({"tune_ngg": section})
    obj = spec.objective
    log(f"panel {obj.data.X.shape[0]} samples x {obj.data.X.shape[1]} SNPs; tuning seeds {args.tune_seeds}, "
        f"held-out seed {args.holdout_seed}; planted pairs: "
        + "; ".join(f"seed {s}: {p.pairs.tolist()}" for s, p in zip(args.tune_seeds, obj.tune_phenos))
        + f"; held out: {obj.holdout_pheno.pairs.tolist()}")

    study = _create_study(spec, args)

    def objective(trial):
        def report(step, value, metrics=None):
            if len(spec.directions) == 1:
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        t = time.perf_counter()
        try:
            v = spec.objective(trial, report)
        finally:
            trial.set_user_attr("wall_s", time.perf_counter() - t)
        return v

    def cb(study, trial):
        log(f"trial {trial.number} {trial.state.name} {trial.values} {trial.params} "
            f"{trial.user_attrs.get('wall_s', 0):.1f} s")

    t_study = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, callbacks=[cb])
    t_study = time.perf_counter() - t_study
    states = [t.state.name for t in study.trials]
    if args.multi_objective:
        front = [{"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials]
        best = max(study.best_trials, key=lambda t: (t.values[0], -t.values[1]))
    else:
        front = None
        best = study.best_trial
    log(f"study: {len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned) in "
        f"{t_study:.0f} s; best {best.values} {best.params}")
    t_rerun = time.perf_counter()
    held = spec.rerun(best.params)
    t_rerun = time.perf_counter() - t_rerun
    log("held-out phenotype (seed {}): tuned recall@10 {:.2f} @100 {:.2f}, defaults recall@10 {:.2f} @100 {:.2f}".format(
        args.holdout_seed, held["tuned_recall_at_10"], held["tuned_recall_at_100"], held["default_recall_at_10"],
        held["default_recall_at_100"]))
    report = _report(args, obj, study, states, best, front, held, t_study, t_rerun)
    report["total_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
