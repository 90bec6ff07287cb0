"""Table 1 and its figures: from the train stages' outputs or pulled back out of MLflow.

The table has one row per model: type, settings, trainable parameters, ROC AUC mean +- sd over
the shared R x K folds, the worst fold's AUC (a fold near 0.5 under a good mean is a training
collapse, not noise), and the Nadeau-Bengio corrected resampled t-test p-value against the best
additive model (the additive type — logreg, linear, sgd_l1, sgd_l2 — with the highest mean AUC),
paired over the folds both models share, with n_train / n_test the mean fold sizes of folds.tsv.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import read_metrics
from pipelines.errors import InputError

ADDITIVE_TYPES = ("logreg", "linear", "sgd_l1", "sgd_l2")
FOLD_KEYS = ["repeat", "fold"]
METRIC_KEYS = ("auc_mean", "auc_sd", "n_folds", "n_parameters")   # train_time_s: in the timings file


def _flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fmt_params(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in _flat(cfg).items() if k != "type")


def _worst_fold(ft: pd.DataFrame) -> float:
    """The lowest fold AUC of a fold table (NaN when it has no scored fold)."""
    a = pd.to_numeric(ft["auc"], errors="coerce").to_numpy(dtype=float) if "auc" in ft else np.array([])
    a = a[np.isfinite(a)]
    return float(a.min()) if a.size else float("nan")


def read_folds(path) -> pd.DataFrame:
    """A train stage's folds.tsv: repeat, fold, auc, n_train, n_test (one row per CV fold)."""
    try:
        df = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a fold table ({str(exc).strip().splitlines()[0]}); rerun "
                               "`epiflow train`") from None
    missing = [c for c in (*FOLD_KEYS, "auc") if c not in df]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; rerun `epiflow train`")
    return df


def table_from_stage_outputs(models: dict, train_dir="work/train", metrics_dir="metrics/train",
                             splits_fingerprint: str | None = None) -> pd.DataFrame:
    """One row per model of ``models`` that has a metrics JSON; ``folds`` holds its fold table.

    With ``splits_fingerprint`` (:attr:`pipelines.splits.Splits.fingerprint` of the current
    splits), a model whose metrics were computed on other splits (another cohort, other labels)
    is left out and named in ``df.attrs["stale"]``; one whose metrics predate the fingerprint is
    kept and named in ``df.attrs["unverified"]``."""
    rows, stale, unverified = [], [], []
    for name, cfg in models.items():
        m = Path(metrics_dir) / f"{name}.json"
        folds = Path(train_dir) / name / "folds.tsv"
        if not m.is_file():
            continue
        met = read_metrics(m)          # with metrics/timings/train/<model>.json: the train time
        lacking = [k for k in METRIC_KEYS if not isinstance(met, dict) or k not in met]
        if lacking:
            raise InputError(m, f"not the metrics of `epiflow train` (no {', '.join(lacking)}); rerun it")
        if splits_fingerprint is not None:
            if "splits" not in met:
                unverified.append(name)
            elif met["splits"] != splits_fingerprint:
                stale.append(name)
                continue
        ft = read_folds(folds) if folds.is_file() else pd.DataFrame(columns=[*FOLD_KEYS, "auc"])
        rows.append({"model": name, "type": (cfg or {}).get("type", name), "params": _fmt_params(cfg or {}),
                     "auc_mean": met["auc_mean"], "auc_sd": met["auc_sd"], "n_folds": met["n_folds"],
                     "n_parameters": met["n_parameters"], "train_time_s": float(met.get("train_time_s", np.nan)),
                     "auc_min": _worst_fold(ft), "fold_aucs": ft["auc"].to_numpy(), "folds": ft})
    df = pd.DataFrame(rows)
    df.attrs["stale"], df.attrs["unverified"] = stale, unverified
    return df


def table_from_mlflow(experiment: str) -> pd.DataFrame:
    """Latest parent (model-level) train run per model in ``experiment``; fold tables come from
    the runs' folds.tsv artifacts (so p-values work from the store alone)."""
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
        try:
            import io

            text = mlflow.artifacts.load_text(f"runs:/{r['run_id']}/folds.tsv")
            ft = pd.read_csv(io.StringIO(text), sep="\t")
        except Exception:  # an older run without the artifact: no fold-level statistics
            ft = pd.DataFrame(columns=[*FOLD_KEYS, "auc"])
        rows.append({"model": name, "type": r.get("tags.epiflow.model_type"), "params": _fmt_params(params),
                     "auc_mean": r["metrics.auc_mean"], "auc_sd": r["metrics.auc_sd"],
                     "n_folds": int(r["metrics.n_folds"]), "n_parameters": int(r["metrics.n_parameters"]),
                     "train_time_s": r["metrics.train_time_s"], "run_id": r["run_id"],
                     "auc_min": _worst_fold(ft), "fold_aucs": ft["auc"].to_numpy(), "folds": ft})
    return pd.DataFrame(rows)


def best_additive(df: pd.DataFrame, additive_types=ADDITIVE_TYPES) -> str | None:
    """Name of the additive model with the highest mean AUC (None if the table has none)."""
    add = df[df["type"].isin(additive_types)]
    if add.empty:
        return None
    return str(add.sort_values(["auc_mean", "model"], ascending=[False, True]).iloc[0]["model"])


def paired_test(folds_a: pd.DataFrame, folds_b: pd.DataFrame):
    """Corrected resampled t-test of model a vs b over the folds both were scored on (matched by
    repeat and fold). n_train / n_test: mean fold sizes from the fold tables (equal for shared
    splits). Returns a models.stats.TTestResult, or None with fewer than 2 shared folds."""
    from models.stats import corrected_resampled_ttest

    m = folds_a.merge(folds_b, on=FOLD_KEYS, suffixes=("_a", "_b"))
    if len(m) < 2:
        return None
    n_train = m["n_train_a"].mean() if "n_train_a" in m else None
    n_test = m["n_test_a"].mean() if "n_test_a" in m else None
    if n_train is None or n_test is None or not (n_train > 0 and n_test > 0):
        return None
    return corrected_resampled_ttest(m["auc_a"], m["auc_b"], n_train=float(n_train), n_test=float(n_test))


def add_p_vs_best_additive(df: pd.DataFrame, additive_types=ADDITIVE_TYPES) -> pd.DataFrame:
    """Columns ``reference`` (True on the best additive model), ``p_vs_best_additive`` (two-sided,
    NaN on the reference row or without shared folds) and ``auc_diff_vs_best_additive``."""
    df = df.copy()
    ref = best_additive(df, additive_types) if not df.empty else None
    df["reference"] = df["model"] == ref if ref is not None else False
    p, diff = [], []
    ref_folds = df.loc[df["model"] == ref, "folds"].iloc[0] if ref is not None else None
    for r in df.itertuples():
        res = None
        if ref is not None and r.model != ref:
            res = paired_test(r.folds, ref_folds)
        p.append(res.p_value if res is not None else np.nan)
        diff.append(res.mean_diff if res is not None else np.nan)
    df["p_vs_best_additive"] = p
    df["auc_diff_vs_best_additive"] = diff
    return df


def _p_text(r) -> str:
    if getattr(r, "reference", False):
        return "ref"
    p = getattr(r, "p_vs_best_additive", np.nan)
    if p is None or not np.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["auc_mean", "model"], ascending=[False, True])


def _time_text(seconds) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds:.0f}"


def fmt_auc(v) -> str:
    """An AUC to 3 decimals; '-' for a missing one (None or NaN)."""
    return "-" if v is None or v != v else f"{v:.3f}"


def format_table(df: pd.DataFrame) -> str:
    """Plain-text Table 1: model, type, AUC mean +- sd, folds, p vs best additive, parameters,
    time; best AUC first. The models' settings (hundreds of characters each) are left to
    table.md / table.tsv, so that the printed table fits a terminal."""
    if df.empty:
        return "(no trained models found)"
    if "reference" not in df and "folds" in df:
        df = add_p_vs_best_additive(df)
    df = _sorted(df)
    head = ["model", "type", "AUC mean +- sd", "worst fold", "folds", "p vs best additive", "parameters", "time (s)"]
    rows = [[r.model + (" *" if getattr(r, "reference", False) else ""), str(r.type),
             f"{r.auc_mean:.3f} +- {r.auc_sd:.3f}", fmt_auc(getattr(r, "auc_min", None)), str(r.n_folds),
             _p_text(r), f"{r.n_parameters:,}", _time_text(r.train_time_s)] for r in df.itertuples()]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if "reference" in df and df["reference"].any():
        out.append("* reference: best additive model; p: Nadeau-Bengio corrected resampled t-test "
                   "over the shared folds")
    return "\n".join(out)


def markdown_table(df: pd.DataFrame) -> str:
    df = _sorted(df)
    # no train times: reports/ is a cached DVC output and must be byte-identical on a rerun with
    # the same results (the times are in MLflow, metrics/timings/ and the printed table)
    out = ["| model | type | parameters | AUC mean ± sd | worst fold | folds | p vs best additive "
           "| trainable parameters |",
           "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        name = f"**{r.model}** (ref)" if getattr(r, "reference", False) else r.model
        out.append(f"| {name} | {r.type} | {r.params} | {r.auc_mean:.3f} ± {r.auc_sd:.3f} | "
                   f"{fmt_auc(getattr(r, 'auc_min', None))} | {r.n_folds} | {_p_text(r)} | {r.n_parameters:,} |")
    if "reference" in df and df["reference"].any():
        out.append("")
        out.append("ref: the additive model (" + ", ".join(ADDITIVE_TYPES) + ") with the highest mean AUC; "
                   "p: Nadeau-Bengio corrected resampled t-test against it over the shared folds (two-sided).")
    return "\n".join(out) + "\n"


def tsv_table(df: pd.DataFrame) -> pd.DataFrame:
    """The numeric table for table.tsv (no fold arrays), best AUC first."""
    keep = [c for c in ("model", "type", "params", "auc_mean", "auc_sd", "auc_min", "n_folds", "reference",
                        "p_vs_best_additive", "auc_diff_vs_best_additive", "n_parameters",
                        "run_id") if c in df]
    return _sorted(df)[keep]


def plot_roc(curves: dict[str, list[dict]], aucs: dict[str, str], path, title="ROC, out-of-fold (repeat 0)",
             additive: set[str] = frozenset()) -> None:
    """One ROC curve per model (in the order given, best first) in distinct colours, the AUC in
    the legend, the chance diagonal; models named in ``additive`` dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.plots.style import colour, linestyle

    fig, ax = plt.subplots(figsize=(7.4, 6.0))
    for i, (name, pts) in enumerate(curves.items()):
        ls = "--" if name in additive else linestyle(i)
        ax.plot([p["fpr"] for p in pts], [p["tpr"] for p in pts], lw=1.4, color=colour(i), ls=ls,
                label=f"{name} ({aucs[name]})" if aucs.get(name) else name)
    ax.plot([0, 1], [0, 1], ls=":", c="0.5", lw=1, label="chance (AUC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False,
              title="model (mean CV AUC)" + ("; dashed: additive" if additive else ""), title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def plot_fold_aucs(df: pd.DataFrame, path, additive_types=ADDITIVE_TYPES) -> None:
    """Box plot of the fold AUCs per model with the folds drawn as points; sorted by mean AUC
    (best on top); additive models in one colour, the reference row marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df[df["fold_aucs"].map(len) > 0].sort_values(["auc_mean", "model"], ascending=[True, False])
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.42 * max(1, len(df))))
    labels = [r.model + (" (ref)" if getattr(r, "reference", False) else "") for r in df.itertuples()]
    ax.boxplot([r.fold_aucs for r in df.itertuples()], orientation="horizontal", tick_labels=labels,
               showfliers=False, widths=0.6, medianprops={"color": "black"})
    rng = np.random.default_rng(0)
    for i, r in enumerate(df.itertuples(), start=1):
        additive = r.type in additive_types
        ax.scatter(r.fold_aucs, i + rng.uniform(-0.18, 0.18, len(r.fold_aucs)), s=9, alpha=0.6,
                   color="tab:blue" if additive else "tab:orange", zorder=3)
        ax.plot([r.auc_mean], [i], marker="D", color="black", ms=4, zorder=4)
    ax.axvline(0.5, ls=":", c="grey")
    ax.set_xlabel("ROC AUC per CV fold (diamond: mean)")
    ax.set_title("fold AUCs (blue: additive models, orange: the rest)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def collect_extras(out: Path, sources: dict[str, str]) -> dict[str, dict]:
    """Copy *.png and *.md of each present source folder (e.g. the learning-curve and sparsity
    stages) into ``out/<name>/``; returns {name: {'files': [...], 'table': text of table.md}}."""
    import shutil

    found = {}
    for name, src in sources.items():
        src = Path(src)
        if not src.is_dir():
            continue
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in (".png", ".md"))
        if not files:
            continue
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, dest / f.name)
        table = (src / "table.md").read_text() if (src / "table.md").is_file() else ""
        found[name] = {"files": [dest / f.name for f in files], "table": table}
    return found


def report_markdown(df: pd.DataFrame, figures: list[str], extras: dict[str, dict], study: str) -> str:
    """The whole report: Table 1, its figures, then the extra stages' tables and figures."""
    parts = [f"# {study}: model comparison\n", "## Table 1\n", markdown_table(df)]
    for fig in figures:
        parts.append(f"![{Path(fig).stem}]({Path(fig).name})\n")
    for name, ex in extras.items():
        parts.append(f"## {name.replace('_', ' ')}\n")
        if ex["table"]:
            parts.append(ex["table"].rstrip() + "\n")
        for f in ex["files"]:
            if f.suffix == ".png":
                parts.append(f"![{f.stem}]({name}/{f.name})\n")
    return "\n".join(parts)
