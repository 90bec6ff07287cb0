"""`epiflow sweep`: the sparsity-degree sweep of one sparse model on the shared splits.

``sweep.model`` (a model of params.yaml with a sparse gene layer, e.g. biosparse) is
cross-validated on the first ``sweep.repeats`` repeats of work/splits.npz once per value of
``sweep.sparsity``: the fraction of genes that keep their edge to the pathway layer (a random
subset drawn with the model's pathway_seed; the rest are cut off). Each degree is compared with
full connectivity (sparsity 1.0, or the largest value swept) by the Nadeau-Bengio corrected
resampled t-test over the same folds (:mod:`pipelines.curves`).

Writes (atomically) work/sweep/{folds.tsv, summary.json, table.md, sweep.png},
metrics/sweep.json and plots/sweep.json for `dvc plots`; logs one MLflow run with per-degree
metrics and the table, figure and fold table as artifacts.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.argtypes import count
from pipelines import curves, tracking
from pipelines.atomic import atomic_dir, precheck_output_dir, write_json, write_metrics, write_text
from pipelines.params import load_params, section
from pipelines.plots.curves import sweep_figure
from pipelines.workflows.cohort import Cohort, load_splits
from pipelines.workflows.cv import check_device

WHAT = "sweep"


def add_arguments(p):
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--out", default="work/sweep", help="output folder (default: work/sweep)")
    p.add_argument("--metrics", default="metrics/sweep.json", help="metrics JSON")
    p.add_argument("--plots", default="plots/sweep.json", help="sweep points for `dvc plots`")
    p.add_argument("--repeats", type=count(1), default=None, help="override sweep.repeats")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    params = load_params(args.params)
    cfg = curves.sweep_config(params, args.params, args.repeats)
    train_cfg = dict(section(params, "train", args.params))
    check_device(train_cfg.get("device"), f"{args.params}: train.device")
    cohort = Cohort.load(args.encoded, args.gmt or section(params, "encode", args.params).get("gmt"))
    splits = load_splits(args.splits, cohort, cfg["repeats"], WHAT)
    precheck_output_dir(args.out, [args.encoded, args.splits])
    t_all = time.perf_counter()
    df = curves.sweep_fits(cfg, cohort, splits, train_cfg, quiet=args.quiet)
    seconds = time.perf_counter() - t_all
    summary = curves.compare_sweep(df, cfg)
    table = curves.sweep_table(summary)
    metrics = curves.sweep_metrics(summary, n_folds=len(df) // len(cfg["sparsity"]))
    metrics.update(wall_time_s=seconds)
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        df.to_csv(tmp / "folds.tsv", sep="\t", index=False, float_format="%.6f")
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "table.md", table)
        sweep_figure(summary, df, tmp / "sweep.png")
    write_json(args.plots, [{"sparsity": r["sparsity"], "auc": round(r["auc_mean"], 5),
                             "auc_sd": round(r["auc_sd"], 5), "n_edges": r["n_edges"]}
                            for r in summary["per_sparsity"]])
    inputs = [*cohort.inputs, str(args.splits)]
    run_id = "" if args.no_mlflow else _log_mlflow(args.params, params, cfg, summary, metrics, inputs, out)
    write_metrics(args.metrics, {**metrics, "mlflow_run_id": run_id})
    print(table)
    print(f"sweep: {len(df)} fits in {seconds:.0f} s -> {out}")
    return 0


def _log_mlflow(params_path, params, cfg, summary, metrics, inputs, out) -> str:
    import mlflow

    tracking.setup(params.get("study", "epiflow"))
    text = Path(params_path).read_text() if Path(params_path).exists() else None
    tags = tracking.run_tags(inputs, params_text=text,
                             extra={"stage": WHAT, "model": cfg["model"], "model_type": cfg["type"]})
    flat = {"model": cfg["model"], "sparsity": ",".join(map(str, cfg["sparsity"])), "repeats": cfg["repeats"],
            **tracking.flatten_params(cfg["config"], prefix="model.")}
    with tracking.parent_run(f"{WHAT}-{cfg['model']}", tags, flat) as run:
        mlflow.log_metrics({k.replace(".", "_"): float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and np.isfinite(v)})
        for r in summary["per_sparsity"]:   # AUC against the percentage of genes connected
            mlflow.log_metric("auc_by_sparsity", r["auc_mean"], step=int(round(100 * r["sparsity"])))
        for f in ("table.md", "sweep.png", "folds.tsv", "summary.json"):
            mlflow.log_artifact(str(out / f))
        return run.info.run_id
