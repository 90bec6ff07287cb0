"""`epiflow report`: the model comparison table (model, params, AUC mean +- sd) and figures.

By default it reads the train stages' outputs (what `dvc repro` tracks); `--source mlflow` pulls
the latest model-level runs of the study back out of the MLflow store instead.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.atomic import atomic_path, write_json, write_text
from pipelines.params import load_params, section


def add_arguments(p):
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--source", choices=["stages", "mlflow"], default="stages",
                   help="read stage outputs (default) or the MLflow store")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: `study` in params.yaml)")
    p.add_argument("--out", default="reports", help="folder for the table and figures (default: reports)")
    p.add_argument("--metrics", default="metrics/report.json")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")


def run(args) -> int:
    from pipelines import report, tracking

    params = load_params(args.params)
    models = section(params, "models", args.params)
    study = args.experiment or params.get("study", "epiflow")
    if args.source == "mlflow":
        tracking.setup(study)
        df = report.table_from_mlflow(study)
    else:
        df = report.table_from_stage_outputs(models)
    print(report.format_table(df))
    if df.empty:
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = df.drop(columns=["fold_aucs"]).sort_values("auc_mean", ascending=False)
    with atomic_path(out / "comparison.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6f")
    write_text(out / "comparison.md", report.markdown_table(df))
    figures = []
    if args.source == "stages":
        curves = {m: json.loads(Path(f"plots/roc/{m}.json").read_text()) for m in df["model"]
                  if Path(f"plots/roc/{m}.json").is_file()}
        aucs = {r.model: f"AUC {r.auc_mean:.3f}" for r in df.itertuples()}
        for name, fn, arg in (("roc.png", report.plot_roc, (curves, aucs)), ("fold_auc.png", report.plot_fold_aucs, (df,))):
            with atomic_path(out / name) as tmp:
                fn(*arg, tmp)
            figures.append(out / name)
    best = table.iloc[0]
    write_json(args.metrics, {"best_model": best["model"], "best_auc_mean": float(best["auc_mean"]),
                              "n_models": int(len(table)),
                              **{f"auc_mean.{r.model}": float(r.auc_mean) for r in table.itertuples()}})
    if not args.no_mlflow:
        import mlflow

        tracking.setup(study)
        inputs = [p for p in (f"metrics/train/{m}.json" for m in table["model"]) if Path(p).exists()]
        with mlflow.start_run(run_name="report", tags=tracking.run_tags(inputs, extra={"stage": "report"})):
            mlflow.log_artifact(str(out / "comparison.tsv"))
            mlflow.log_artifact(str(out / "comparison.md"))
            for f in figures:
                mlflow.log_artifact(str(f))
            mlflow.log_metric("best_auc_mean", float(best["auc_mean"]))
    print(f"\ntable and figures in {out}/ ; MLflow: mlflow ui --backend-store-uri {tracking.tracking_uri()}")
    return 0
