"""Run :func:`pipelines.workflows.cv.cross_validate` for one model and record it the way
``epiflow train`` does: a parent MLflow run with one child run per fold, then (atomically)
OUT/oof.parquet, OUT/folds.tsv, OUT/run.json, the ROC points of repeat 0 and the metrics JSON.

Shared by the train stage and by ``epiflow tune --rerun-best`` (the outer CV of the best
configuration), so both write and log exactly the same things.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.registry import REGISTRY
from pipelines import tracking
from pipelines.atomic import atomic_dir, write_json, write_metrics
from pipelines.splits import Splits
from pipelines.workflows.cohort import Cohort
from pipelines.workflows.cv import CVResult, ModelSpec, cross_validate, resolve_jobs


@dataclass
class Record:
    """Where and how a CV run is recorded."""
    out: Path                      # folder: oof.parquet, folds.tsv, run.json
    metrics: Path                  # metrics JSON
    plots: Path                    # ROC points JSON (repeat 0)
    study: str                     # MLflow experiment
    mlflow: bool = True
    params_text: str | None = None  # params.yaml text (a tag)
    inputs: tuple = ()             # files whose data versions tag the runs


def roc_points(y, p, max_points: int = 400) -> list[dict]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return [{"fpr": round(float(a), 5), "tpr": round(float(b), 5)} for a, b in zip(fpr, tpr)]


def summary_of(res: CVResult, seconds: float) -> dict:
    aucs = res.aucs
    return {"auc_mean": float(aucs.mean()), "auc_sd": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0,
            "n_folds": int(len(aucs)), "n_parameters": int(res.n_parameters or 0),
            "train_time_s": float(seconds),
            "fold_time_mean_s": float(np.mean([f.seconds for f in res.folds]))}


def _roc_repeat0(oof: pd.DataFrame) -> list[dict]:
    df = oof[oof["repeat"] == 0]
    return roc_points(df["y"].to_numpy(), df["proba"].to_numpy())


def run_and_record(spec: ModelSpec, cohort: Cohort, splits: Splits, rec: Record, *, train_cfg: dict,
                   repeats: int | None = None, jobs: int = 0, quiet: bool = False) -> dict:
    """Cross-validate ``spec`` on the first ``repeats`` repeats of ``splits``, log and write it;
    returns the metrics (summary + ``mlflow_run_id``)."""
    folds = list(splits.iter_folds(repeats))
    train = {k: v for k, v in train_cfg.items() if k != "seed"}
    n_jobs = resolve_jobs(jobs, len(folds), train.get("device", "auto"),
                          uses_device=REGISTRY[spec.type].trains_net)
    progress = None if quiet else f"train {spec.name}"
    model_params = {"model": spec.name, "type": spec.type, **spec.config,
                    **{f"train.{k}": v for k, v in train.items()},
                    "n_samples": cohort.n_samples, "n_genes": cohort.n_genes,
                    "n_variants": cohort.variants.shape[1],
                    "repeats": splits.repeats if repeats is None else min(repeats, splits.repeats),
                    "folds": splits.folds}
    t_all = time.perf_counter()
    run_id = None
    if rec.mlflow:
        import mlflow

        exp_id = tracking.setup(rec.study)
        tags = tracking.run_tags(list(rec.inputs), params_text=rec.params_text,
                                 extra={"model": spec.name, "model_type": spec.type, "stage": "train",
                                        "level": "model"})
        fold_tags = {**tags, tracking.LEVEL_TAG: "fold"}
        with tracking.parent_run(spec.name, tags, tracking.flatten_params(model_params)) as run:
            def child(f):
                # the fold's run spans its training (f.seconds, just finished), not the logging
                tracking.log_child(run.info.run_id, exp_id, f"{spec.name}-r{f.repeat}f{f.fold}", tags=fold_tags,
                                   params={"repeat": f.repeat, "fold": f.fold, "seed": f.seed},
                                   metrics={"auc": f.auc, "n_train": f.n_train, "n_test": f.n_test,
                                            "train_time_s": f.seconds}, seconds=f.seconds)

            res = cross_validate(spec, cohort, folds, train_cfg=train_cfg, jobs=n_jobs, on_fold=child,
                                 progress=progress)
            summary, oof = summary_of(res, time.perf_counter() - t_all), res.oof(cohort)
            roc = _roc_repeat0(oof)
            mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            mlflow.log_dict({"model": spec.name, "roc": roc}, "roc_repeat0.json")
            mlflow.log_text(res.fold_table().to_csv(sep="\t", index=False), "folds.tsv")
            _log_figures(oof, res.fold_table(), spec.name)
            run_id = run.info.run_id
    else:
        res = cross_validate(spec, cohort, folds, train_cfg=train_cfg, jobs=n_jobs, progress=progress)
        summary, oof = summary_of(res, time.perf_counter() - t_all), res.oof(cohort)
        roc = _roc_repeat0(oof)
    summary["splits"] = splits.fingerprint
    _write(rec, spec, res, oof, roc, summary, run_id)
    return {**summary, "mlflow_run_id": run_id or ""}


def _log_figures(oof: pd.DataFrame, folds: pd.DataFrame, name: str) -> None:
    """The model's ROC (every repeat) and fold-AUC figures as artifacts of the active run. A
    figure that cannot be drawn costs a warning, not the cross-validation just computed."""
    import sys
    import tempfile

    import mlflow

    from pipelines.plots.model_run import model_run_figures

    with tempfile.TemporaryDirectory(prefix="epiflow-figures-") as tmp:
        try:
            model_run_figures(oof, folds, name, tmp)
        except Exception as exc:         # noqa: BLE001 (matplotlib/sklearn: any failure is a warning)
            print(f"train {name}: warning: figures not drawn ({type(exc).__name__}: {exc})", file=sys.stderr)
            return
        mlflow.log_artifacts(tmp)


def _write(rec: Record, spec: ModelSpec, res: CVResult, oof, roc, summary, run_id) -> None:
    with atomic_dir(Path(rec.out)) as tmp:
        oof.to_parquet(tmp / "oof.parquet", index=False)
        # cached outputs hold no timings or run ids (those go to metrics and MLflow), so a rerun
        # on the same inputs gives byte-equal outputs
        res.fold_table().drop(columns=["train_time_s"]).to_csv(
            tmp / "folds.tsv", sep="\t", index=False, float_format="%.6f")
        write_json(tmp / "run.json", {"model": spec.name, "type": spec.type, "params": spec.config,
                                      "study": rec.study})
    write_json(Path(rec.plots), roc)
    write_metrics(Path(rec.metrics), {**summary, "mlflow_run_id": run_id or ""})
