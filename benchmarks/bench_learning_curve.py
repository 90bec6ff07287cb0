"""The paper's learning-curve finding on ground truth: additive models are as good on small
training sets, the pathway-sparse net is better on the full one.

The embedded-cohort generator (``epiflow simulate``) writes a cohort with planted pathway
epistasis; the pipeline's own commands then encode it and draw the shared repeated stratified
splits, and the learning-curve workflow of ``epiflow learning-curve`` runs in this process
(``pipelines.curves`` on a ``pipelines.workflows.cohort.Cohort``: every model on the same nested, stratified subsets
of each training fold, scored on the whole test fold; Nadeau-Bengio corrected resampled t-test
of the sparse model against the best additive model at each size; interpolated crossover).
Everything runs in a scratch project folder; the repository's own data and stores are not
touched. The models and their settings are the ones in the repository's params.yaml
(``learning_curve.models``), so this measures the shipped defaults, not settings tuned here.

Cohort (defaults): 4,000 samples (the size of a typical exome case/control study) x 2,000 genes;
liability shares: 5 additive burden genes 15 %, two gene pairs (one XOR-like) 5 %, four pathway
threshold modules 60 % (3 genes of one KEGG pathway each; the module adds liability in the 10 %
of samples with the highest summed burden), noise 20 %; case fraction 0.5.

The finding is met when, at the smallest fraction, the best additive model's mean AUC is at least
the sparse model's, and at the full training fold the sparse model's mean AUC is higher with
corrected p < 0.05. The JSON (benchmarks/results/bench_learning_curve.json) records every
fraction's AUCs, the tests, the crossover training-set size, the cohort's oracle AUCs (from the
liability the generator recorded) and the wall time of each step.

    python benchmarks/bench_learning_curve.py                  # about 6 minutes on 2 cores (341 s measured)
    python benchmarks/bench_learning_curve.py --n-samples 2000 --fractions 0.1 1.0
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _epiflow(root: Path, *args: str) -> float:
    env = dict(os.environ)
    env["EPIFLOW_ROOT"] = str(root)
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=root, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stdout[-2000:] + r.stderr[-4000:])
        raise SystemExit(f"bench_learning_curve: `epiflow {' '.join(args)}` failed (exit {r.returncode})")
    return time.perf_counter() - t0


def _learning_curve(root: Path, project: dict) -> tuple[dict, str]:
    """The learning-curve workflow on the scratch project's encoded cohort: (summary, table)."""
    from pipelines import curves
    from pipelines.workflows.cohort import Cohort, load_splits

    cfg = curves.learning_curve_config(project, str(root / "params.yaml"))
    cohort = Cohort.load(root / "work" / "encoded", root / project["encode"]["gmt"])
    splits = load_splits(root / "work" / "splits.npz", cohort, cfg["repeats"], "learning_curve")
    df, _ = curves.learning_curve_fits(cfg, cohort, splits, dict(project["train"]))
    summary = curves.compare_learning_curve(df, cfg)
    return summary, curves.learning_curve_table(summary, cfg)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=4000)
    ap.add_argument("--n-genes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=None, help="cohort seed (default: simulate.seed of params.yaml)")
    ap.add_argument("--h2-additive", type=float, default=0.15)
    ap.add_argument("--h2-epistatic", type=float, default=0.05)
    ap.add_argument("--h2-pathway", type=float, default=0.6)
    ap.add_argument("--modules", type=int, default=4, help="pathway threshold modules")
    ap.add_argument("--module-prevalence", type=float, default=0.1)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the 3-fold splits used")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch project (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_learning_curve.json")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sim = dict(params["simulate"])
    sim.update(n_samples=args.n_samples, n_genes=args.n_genes, h2_additive=args.h2_additive,
               h2_epistatic=args.h2_epistatic, h2_pathway=args.h2_pathway,
               n_pathway_modules=args.modules, module_prevalence=args.module_prevalence)
    if args.seed is not None:
        sim["seed"] = args.seed
    lc = dict(params["learning_curve"], fractions=sorted(args.fractions), repeats=args.repeats)
    project = {
        "study": "bench-learning-curve",
        "simulate": sim,
        "encode": {**params["encode"], "snp_dosage": None},
        "splits": params["splits"],
        "train": params["train"],
        "models": {m: params["models"][m] for m in lc["models"]},
        "learning_curve": lc,
    }
    keep = args.workdir is not None
    root = args.workdir or Path(tempfile.mkdtemp(prefix="epiflow-lc-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    times = {}
    try:
        times["simulate"] = _epiflow(root, "simulate", "--out", "data", "--no-progress")
        times["encode"] = _epiflow(root, "encode")
        times["splits"] = _epiflow(root, "splits")
        t0 = time.perf_counter()
        summary, table = _learning_curve(root, project)
        times["learning_curve"] = time.perf_counter() - t0
        truth = json.loads((root / "data" / "truth.json").read_text())
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    sparse = summary["sparse_model"]
    tests = {round(t["fraction"], 6): t for t in summary["tests"]}
    fr = sorted(tests)
    per = {m: {round(r["fraction"], 6): r for r in rows} for m, rows in summary["per_model"].items()}
    lo, hi = tests[fr[0]], tests[fr[-1]]
    small_ok = lo["mean_diff"] <= 0.0
    full_ok = hi["mean_diff"] > 0.0 and hi["p_value"] < 0.05
    result = {
        "benchmark": "learning_curve",
        "cohort": {k: sim[k] for k in ("n_samples", "n_genes", "seed", "h2_additive", "h2_epistatic",
                                       "h2_pathway", "n_pathway_modules", "module_size", "module_prevalence")},
        "oracle_auc": truth["liability"]["oracle_auc"],
        "models": lc["models"], "sparse_model": sparse, "additive_models": summary["additive_models"],
        "n_folds": lo["n_folds"],
        "fractions": [{"fraction": f, "n_train": tests[f]["n_train_mean"],
                       "auc": {m: per[m][f]["auc_mean"] for m in per},
                       "auc_sd": {m: per[m][f]["auc_sd"] for m in per},
                       "best_additive": tests[f]["best_additive"], "diff_vs_best_additive": tests[f]["mean_diff"],
                       "p_corrected": tests[f]["p_value"], "p_naive": tests[f]["p_value_naive"]} for f in fr],
        "crossover_n_train": summary.get("crossover_n_train"),
        "crossover_fraction": summary.get("crossover_fraction"),
        "finding": {"additive_at_least_as_good_at_smallest": small_ok,
                    "sparse_better_at_full_p_lt_0.05": full_ok, "met": small_ok and full_ok},
        "seconds": times,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_end": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(table.strip())
    print()
    print(f"cohort: {sim['n_samples']} samples x {sim['n_genes']} genes; oracle AUC "
          + ", ".join(f"{k} {v:.3f}" for k, v in truth["liability"]["oracle_auc"].items()))
    print(f"{sparse} - best additive: {lo['mean_diff']:+.3f} at {fr[0]:.0%} (n_train {lo['n_train_mean']:.0f}), "
          f"{hi['mean_diff']:+.3f} at {fr[-1]:.0%} (n_train {hi['n_train_mean']:.0f}, corrected p {hi['p_value']:.3g})")
    cx = summary.get("crossover_n_train")
    print(f"crossover training-set size: {cx:.0f}" if cx else "crossover: none")
    print(f"finding met: {result['finding']['met']} "
          f"(additive >= sparse at {fr[0]:.0%}: {small_ok}; sparse better at {fr[-1]:.0%} with p < 0.05: {full_ok})")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + f"  -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
