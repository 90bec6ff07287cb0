"""Comparison tables and figures: from the train stages' outputs or pulled back out of MLflow."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def _fmt_params(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "type")


def table_from_stage_outputs(models: dict, train_dir="work/train", metrics_dir="metrics/train") -> pd.DataFrame:
    rows = []
    for name, cfg in models.items():
        m = Path(metrics_dir) / f"{name}.json"
        folds = Path(train_dir) / name / "folds.tsv"
        if not m.is_file():
            continue
        met = json.loads(m.read_text())
        fold_auc = pd.read_csv(folds, sep="\t")["auc"].to_numpy() if folds.is_file() else np.array([])
        rows.append({"model": name, "type": (cfg or {}).get("type", name), "params": _fmt_params(cfg or {}),
                     "auc_mean": met["auc_mean"], "auc_sd": met["auc_sd"], "n_folds": met["n_folds"],
                     "n_parameters": met["n_parameters"], "train_time_s": met["train_time_s"],
                     "fold_aucs": fold_auc})
    return pd.DataFrame(rows)


def table_from_mlflow(experiment: str) -> pd.DataFrame:
    """Latest parent (model-level) train run per model in ``experiment``."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`epiflow.stage` = 'train'",
                              order_by=["start_time DESC"])
    if runs.empty:
        return pd.DataFrame()
    if "tags.mlflow.parentRunId" in runs:
        runs = runs[runs["tags.mlflow.parentRunId"].isna()]
    rows = []
    for name, grp in runs.groupby("tags.epiflow.model", sort=False):
        r = grp.iloc[0]
        params = {c[len("params."):]: r[c] for c in grp.columns
                  if c.startswith("params.") and isinstance(r[c], str) and not c.startswith("params.train.")
                  and c[len("params."):] not in ("model", "type", "n_samples", "n_genes", "n_variants", "repeats", "folds")}
        rows.append({"model": name, "type": r.get("tags.epiflow.model_type"), "params": _fmt_params(params),
                     "auc_mean": r["metrics.auc_mean"], "auc_sd": r["metrics.auc_sd"],
                     "n_folds": int(r["metrics.n_folds"]), "n_parameters": int(r["metrics.n_parameters"]),
                     "train_time_s": r["metrics.train_time_s"], "run_id": r["run_id"],
                     "fold_aucs": np.array([])})
    return pd.DataFrame(rows)


def format_table(df: pd.DataFrame) -> str:
    """Plain-text table: model, params, AUC mean +- sd, parameters, time; best AUC first."""
    if df.empty:
        return "(no trained models found)"
    df = df.sort_values("auc_mean", ascending=False)
    head = ["model", "AUC mean +- sd", "folds", "parameters", "time (s)", "params"]
    rows = [[r.model, f"{r.auc_mean:.3f} +- {r.auc_sd:.3f}", str(r.n_folds), f"{r.n_parameters:,}",
             f"{r.train_time_s:.0f}", r.params] for r in df.itertuples()]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(df: pd.DataFrame) -> str:
    df = df.sort_values("auc_mean", ascending=False)
    out = ["| model | type | AUC mean ± sd | folds | parameters | train time (s) | params |",
           "|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        out.append(f"| {r.model} | {r.type} | {r.auc_mean:.3f} ± {r.auc_sd:.3f} | {r.n_folds} | "
                   f"{r.n_parameters:,} | {r.train_time_s:.0f} | {r.params} |")
    return "\n".join(out) + "\n"


def plot_roc(curves: dict[str, list[dict]], aucs: dict[str, str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    for name, pts in curves.items():
        ax.plot([p["fpr"] for p in pts], [p["tpr"] for p in pts], label=f"{name} ({aucs.get(name, '')})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, out-of-fold (repeat 1)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fold_aucs(df: pd.DataFrame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.sort_values("auc_mean", ascending=True)
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(df)))
    ax.boxplot([r.fold_aucs for r in df.itertuples()], orientation="horizontal", tick_labels=list(df["model"]))
    ax.axvline(0.5, ls=":", c="grey")
    ax.set_xlabel("ROC AUC per CV fold")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
