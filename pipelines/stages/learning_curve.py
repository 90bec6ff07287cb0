"""`epiflow learning-curve`: AUC against training-set size for several models on the shared splits.

For every fold of the first ``learning_curve.repeats`` repeats of work/splits.npz, the training
fold is cut into nested, stratified subsets (``models.stats.learning_curve_subsets``, seeded by
the fold, so 10 % lies inside 20 % ... and every model sees exactly the same samples); every
model of ``learning_curve.models`` is fitted on every subset and scored on the whole test fold.
Per fraction, the sparse model (``learning_curve.sparse_model``) is compared with the best
additive model at that fraction by the Nadeau-Bengio corrected resampled t-test over the folds,
and the crossover training-set size (where the sparse model's mean curve reaches the best
additive curve and stays above it) is interpolated (:mod:`pipelines.curves`).

Writes (atomically) work/learning_curve/{folds.tsv, summary.json, table.md, learning_curve.png},
metrics/learning_curve.json and plots/learning_curve/<model>.json for `dvc plots`; logs one
MLflow run with per-fraction metrics (also as curves, step = training-set size) and the table,
figure and fold table as artifacts.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.argtypes import count
from pipelines import curves, tracking
from pipelines.atomic import atomic_dir, precheck_output_dir, write_json, write_metrics, write_text
from pipelines.params import load_params, section
from pipelines.plots.curves import learning_curve_figure
from pipelines.workflows.cohort import Cohort, load_splits
from pipelines.workflows.cv import check_device

WHAT = "learning_curve"


def add_arguments(p):
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--out", default="work/learning_curve", help="output folder (default: work/learning_curve)")
    p.add_argument("--metrics", default="metrics/learning_curve.json", help="metrics JSON")
    p.add_argument("--plots", default="plots/learning_curve", help="folder of per-model curve points for `dvc plots`")
    p.add_argument("--repeats", type=count(1), default=None, help="override learning_curve.repeats")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    params = load_params(args.params)
    cfg = curves.learning_curve_config(params, args.params, args.repeats)
    train_cfg = dict(section(params, "train", args.params))
    check_device(train_cfg.get("device"), f"{args.params}: train.device")
    cohort = Cohort.load(args.encoded, args.gmt or section(params, "encode", args.params).get("gmt"))
    splits = load_splits(args.splits, cohort, cfg["repeats"], WHAT)
    precheck_output_dir(args.out, [args.encoded, args.splits])
    t_all = time.perf_counter()
    df, timings = curves.learning_curve_fits(cfg, cohort, splits, train_cfg, quiet=args.quiet)
    summary = curves.compare_learning_curve(df, cfg)
    seconds = time.perf_counter() - t_all
    summary.update({"models": {n: t for n, t, _ in cfg["models"]}, "fractions": cfg["fractions"],
                    "repeats": cfg["repeats"], "folds": splits.folds, "subset_seed": cfg["seed"]})
    table = curves.learning_curve_table(summary, cfg)
    metrics = curves.learning_curve_metrics(summary, cfg)
    metrics.update(wall_time_s=seconds, **{f"fit_time_s.{n}": t for n, t in timings.items()})
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        df.to_csv(tmp / "folds.tsv", sep="\t", index=False, float_format="%.6f")
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "table.md", table)
        learning_curve_figure(summary, cfg, tmp / "learning_curve.png")
    for name, _, _ in cfg["models"]:
        write_json(Path(args.plots) / f"{name}.json",
                   [{"n_train": round(s["n_train_mean"], 1), "fraction": s["fraction"],
                     "auc": round(s["auc_mean"], 5), "auc_sd": round(s["auc_sd"], 5)}
                    for s in summary["per_model"][name]])
    inputs = [*cohort.inputs, str(args.splits)]
    run_id = "" if args.no_mlflow else _log_mlflow(args.params, params, cfg, summary, metrics, inputs, out)
    write_metrics(args.metrics, {**metrics, "mlflow_run_id": run_id})
    print(table)
    print(f"learning curve: {len(df)} fits in {seconds:.0f} s -> {out}")
    return 0


def _log_mlflow(params_path, params, cfg, summary, metrics, inputs, out) -> str:
    import mlflow

    tracking.setup(params.get("study", "epiflow"))
    text = Path(params_path).read_text() if Path(params_path).exists() else None
    tags = tracking.run_tags(inputs, params_text=text, extra={"stage": WHAT})
    flat = {"models": ",".join(n for n, _, _ in cfg["models"]), "fractions": ",".join(map(str, cfg["fractions"])),
            "repeats": cfg["repeats"], "sparse_model": cfg["sparse_model"], "subset_seed": cfg["seed"]}
    with tracking.parent_run(WHAT, tags, flat) as run:
        mlflow.log_metrics({k.replace(".", "_"): float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and v is not None and np.isfinite(v)})
        for name, rows in summary["per_model"].items():
            for s in rows:   # one MLflow curve per model: AUC against training-set size
                mlflow.log_metric(f"auc_{name}", s["auc_mean"], step=int(round(s["n_train_mean"])))
        for f in ("table.md", "learning_curve.png", "folds.tsv", "summary.json"):
            mlflow.log_artifact(str(out / f))
        return run.info.run_id
