"""`epiflow report`: Table 1 (model, type, parameters, AUC mean +- sd, folds, p vs best additive)
and its figures, plus the learning-curve and sparsity-sweep results where those stages ran.

By default it reads the train stages' outputs (what `dvc repro` tracks); `--source mlflow` pulls
the latest model-level runs of the study back out of the MLflow store instead. Writes
reports/table.md, table.tsv, report.md, fold_auc.png, roc.png (and <extra>/ copies), index.html (all
of it and the NGG and interpret results in one self-contained page), the metrics
JSON, and logs the folder as the artifacts of an MLflow run named `report`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.atomic import atomic_dir, precheck_output_dir, precheck_output_file, write_metrics
from pipelines.errors import EpiflowError
from pipelines.params import load_params, section

DEFAULT_EXTRAS = {"learning_curve": "work/learning_curve", "sweep": "work/sweep"}


def add_arguments(p):
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--source", choices=["stages", "mlflow"], default="stages",
                   help="read stage outputs (default) or the MLflow store")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: `study` in params.yaml)")
    p.add_argument("--train-dir", default="work/train", help="train stage outputs (default: work/train)")
    p.add_argument("--metrics-dir", default="metrics/train", help="train stage metrics (default: metrics/train)")
    p.add_argument("--splits", default="work/splits.npz",
                   help="the splits the table must come from: models trained on other splits (another "
                        "cohort, older labels) are left out with a warning (default: work/splits.npz)")
    p.add_argument("--roc-dir", default="plots/roc", help="ROC points of repeat 0 (default: plots/roc)")
    p.add_argument("--out", default="reports", help="folder for the table and figures (default: reports)")
    p.add_argument("--metrics", default="metrics/report.json", help="metrics JSON (default: metrics/report.json)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")


def _settings(params: dict, path) -> tuple[tuple[str, ...], dict[str, str]]:
    from pipelines.report import ADDITIVE_TYPES

    cfg = section(params, "report", path)
    unknown = sorted(set(cfg) - {"additive_types", "extras"})
    if unknown:
        raise EpiflowError(f"{path}: report: unknown key(s) {', '.join(unknown)}; valid: additive_types, extras")
    additive = cfg.get("additive_types", list(ADDITIVE_TYPES))
    if not isinstance(additive, list) or not all(isinstance(t, str) for t in additive):
        raise EpiflowError(f"{path}: report.additive_types must be a list of model types")
    extras = cfg.get("extras", DEFAULT_EXTRAS)
    if not isinstance(extras, dict):
        raise EpiflowError(f"{path}: report.extras must map a section name to a folder")
    return tuple(additive), {str(k): str(v) for k, v in extras.items()}


def run(args) -> int:
    from pipelines import report, tracking

    params = load_params(args.params)
    models = section(params, "models", args.params)
    additive, extra_dirs = _settings(params, args.params)
    study = args.experiment or params.get("study", "epiflow")
    precheck_output_dir(args.out, [args.train_dir, args.metrics_dir, args.roc_dir])
    precheck_output_file(args.metrics, [args.train_dir, args.metrics_dir, args.roc_dir, args.splits], "--metrics")
    if args.source == "mlflow":
        tracking.connect_existing(f"report --source mlflow: experiment {study!r}")
        df = report.table_from_mlflow(study)
    else:
        fingerprint = None
        if Path(args.splits).is_file():
            from pipelines.splits import load_splits

            fingerprint = load_splits(args.splits).fingerprint
        else:
            print(f"report: warning: {args.splits} not found; cannot check that every model was trained "
                  f"on the same cohort and splits", file=sys.stderr)
        df = report.table_from_stage_outputs(models, args.train_dir, args.metrics_dir, fingerprint)
        if df.attrs.get("stale"):
            print(f"report: warning: left out {len(df.attrs['stale'])} model(s) whose metrics come from other "
                  f"splits than {args.splits} (another cohort or older labels): {', '.join(df.attrs['stale'])}; "
                  f"rerun them (`dvc repro`) to include them", file=sys.stderr)
        if df.attrs.get("unverified"):
            print(f"report: warning: cannot tell which splits {', '.join(df.attrs['unverified'])} were trained "
                  f"on (metrics from an older epiflow); rerun them to be sure", file=sys.stderr)
    if df.empty:
        raise EpiflowError("report: no model has metrics to report" + (
            " for these splits (train them: `dvc repro`)" if args.source == "stages" else
            f" in MLflow experiment {study!r}"))
    df = report.add_p_vs_best_additive(df, additive)
    if os.environ.get("EPIFLOW_DEMO") != "1":    # `epiflow demo` prints it in its closing summary
        print(report.format_table(df))
    table = report.tsv_table(df)
    out = Path(args.out)
    curves = {m: _read_roc(Path(args.roc_dir) / f"{m}.json") for m in table["model"]
              if (Path(args.roc_dir) / f"{m}.json").is_file()}
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "table.tsv", sep="\t", index=False, float_format="%.6g")
        (tmp / "table.md").write_text(report.markdown_table(df))
        if not curves and "run_id" in df:      # --source mlflow: the runs' roc_repeat0.json
            curves = _roc_from_mlflow(df)
        figures = ["fold_auc.png"]
        report.plot_fold_aucs(df, tmp / "fold_auc.png", additive)
        if curves:
            aucs = {r.model: f"AUC {r.auc_mean:.3f}" for r in df.itertuples()}
            ordered = {m: curves[m] for m in table["model"] if m in curves}
            report.plot_roc(ordered, aucs, tmp / "roc.png", additive=set(df.loc[df["type"].isin(additive), "model"]))
            figures.append("roc.png")
        extras = report.collect_extras(tmp, extra_dirs)
        (tmp / "report.md").write_text(report.report_markdown(df, figures, extras, study))
        write_html_report(tmp, out, params, df, extras)
    best = table.iloc[0]
    ref = df[df["reference"]]
    metrics = {"best_model": str(best["model"]), "best_auc_mean": float(best["auc_mean"]),
               "n_models": int(len(table)),
               "best_additive": str(ref["model"].iloc[0]) if len(ref) else "",
               **{f"auc_mean.{r.model}": float(r.auc_mean) for r in table.itertuples()},
               **{f"p_vs_best_additive.{r.model}": float(r.p_vs_best_additive)
                  for r in table.itertuples() if r.p_vs_best_additive == r.p_vs_best_additive},
               "extras": sorted(extras)}
    # the tracked file leaves out the per-model AUCs (metrics/train/<model>.json hold them), so that
    # `dvc metrics show` does not list every model twice; the MLflow report run keeps them all
    write_metrics(args.metrics, {k: v for k, v in metrics.items() if not k.startswith("auc_mean.")})
    run_id = ""
    if not args.no_mlflow:
        run_id = log_report(out, df, metrics, study, [f"{args.metrics_dir}/{m}.json" for m in table["model"]])
    print(f"\nTable 1 and figures in {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if run_id:
        print(f"MLflow report run {run_id}. {tracking.ui_hint(study)}")
    return 0


def write_html_report(tmp: Path, out: Path, params: dict, df, extras: dict) -> Path:
    """reports/index.html: Table 1, the verdicts, top SNP pairs and genes, every figure, embedded
    (:mod:`pipelines.html_report`); the NGG and interpret results are read from work/ when present."""
    from pipelines import html_report, summary

    findings = summary.collect(".", params, models=df)
    # this folder's own rows always (whether it existed before this run must not change the page:
    # equal inputs, equal bytes)
    own = [(f"{out}/index.html", "this page"), (str(out), dict(summary.OUTPUTS)["reports"])]
    findings.outputs = own + [o for o in findings.outputs if o[0] not in ("reports/index.html", "reports")]
    return html_report.write(tmp / "index.html", findings, tmp, ".", extras, report_name=str(out))


def _read_roc(path: Path) -> list:
    """ROC points of a train stage (``[{"fpr": .., "tpr": ..}, ...]``), or a one-line error."""
    from models.jsonio import read_json
    from pipelines.errors import InputError

    pts = read_json(path, "ROC points JSON")
    if not isinstance(pts, list) or not all(isinstance(p, dict) and "fpr" in p and "tpr" in p for p in pts):
        raise InputError(path, "not the ROC points of `epiflow train` (a list of {fpr, tpr}); rerun it")
    return pts


def log_report(out: Path, df, metrics: dict, study: str, inputs) -> str:
    """An MLflow run `report` holding the report folder as artifacts; returns its id."""
    import mlflow

    from pipelines import tracking

    tracking.setup(study)
    inputs = [p for p in inputs if Path(p).exists()]
    with mlflow.start_run(run_name="report", tags=tracking.run_tags(inputs, extra={"stage": "report"})) as run:
        mlflow.log_artifacts(str(out))
        mlflow.log_params({"best_model": metrics["best_model"], "best_additive": metrics["best_additive"],
                           "n_models": metrics["n_models"]})
        mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        return run.info.run_id


def _roc_from_mlflow(df) -> dict:
    import mlflow

    curves = {}
    for r in df.itertuples():
        try:
            curves[r.model] = mlflow.artifacts.load_dict(f"runs:/{r.run_id}/roc_repeat0.json")["roc"]
        except Exception:       # a run without the artifact: no curve for that model
            continue
    return curves
