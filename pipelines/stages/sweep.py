"""`epiflow sweep`: the sparsity-degree sweep of one sparse model on the shared splits.

``sweep.model`` (a model of params.yaml with a sparse gene layer, e.g. biosparse) is
cross-validated on the first ``sweep.repeats`` repeats of work/splits.npz once per value of
``sweep.sparsity``: the fraction of genes that keep their edge to the pathway layer (a random
subset drawn with the model's pathway_seed; the rest are cut off). Each degree is compared with
full connectivity (sparsity 1.0, or the largest value swept) by the Nadeau-Bengio corrected
resampled t-test over the same folds.

Writes (atomically) work/sweep/{folds.tsv, summary.json, table.md, sweep.png},
metrics/sweep.json and plots/sweep.json for `dvc plots`; logs one MLflow run with per-degree
metrics and the table, figure and fold table as artifacts.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import curves, tracking
from pipelines.atomic import atomic_dir, write_json, write_text
from pipelines.errors import EpiflowError
from pipelines.params import section

WHAT = "sweep"
SPARSE_TYPES = ("biosparse", "linear", "multipathway", "genegene_pathway")


def add_arguments(p):
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--out", default="work/sweep", help="output folder (default: work/sweep)")
    p.add_argument("--metrics", default="metrics/sweep.json", help="metrics JSON")
    p.add_argument("--plots", default="plots/sweep.json", help="sweep points for `dvc plots`")
    p.add_argument("--repeats", type=int, default=None, help="override sweep.repeats")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_config(params: dict, params_path="params.yaml", repeats=None) -> dict:
    sw = dict(section(params, WHAT, params_path))
    known = {"model", "sparsity", "repeats"}
    unknown = sorted(set(sw) - known)
    if unknown:
        raise EpiflowError(f"{WHAT}: unknown key '{unknown[0]}' in {params_path} (known: {', '.join(sorted(known))})")
    [(name, mtype, cfg)] = curves.check_models([sw.get("model", "biosparse")],
                                                section(params, "models", params_path), WHAT, params_path)
    if mtype not in SPARSE_TYPES:
        raise EpiflowError(f"{WHAT}: model '{name}' is of type '{mtype}', which has no sparse gene layer "
                           f"(sweepable types: {', '.join(SPARSE_TYPES)})")
    if "sparsity" in cfg:
        raise EpiflowError(f"{WHAT}: model '{name}' fixes sparsity in {params_path}; the sweep sets it")
    values = sw.get("sparsity", [0.25, 0.5, 0.75, 1.0])
    if not isinstance(values, (list, tuple)) or not values:
        raise EpiflowError(f"{WHAT}: sparsity must be a non-empty list of numbers in (0, 1]")
    out = []
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < float(s) <= 1:
            raise EpiflowError(f"{WHAT}: sparsity values must lie in (0, 1], got {s!r}")
        out.append(float(s))
    if len(set(out)) != len(out):
        raise EpiflowError(f"{WHAT}: sparsity lists a value twice")
    reps = curves.check_repeats(sw.get("repeats", 3) if repeats is None else repeats, WHAT)
    return {"model": name, "type": mtype, "config": cfg, "sparsity": sorted(out), "repeats": reps}


def compare(df: pd.DataFrame, cfg: dict) -> dict:
    from models.stats import corrected_resampled_ttest

    ref = max(cfg["sparsity"])
    b = df[df.sparsity == ref].sort_values(["repeat", "fold"])
    rows = []
    for s in cfg["sparsity"]:
        d = df[df.sparsity == s].sort_values(["repeat", "fold"])
        row = {"sparsity": s, **curves.summarise(d.auc, d.n_train, d.n_test),
               "n_edges": int(d.n_edges.iloc[0]), "n_parameters": int(d.n_parameters.iloc[0])}
        if s != ref and len(d) >= 2:
            res = corrected_resampled_ttest(d.auc.to_numpy(), b.auc.to_numpy(),
                                            n_train=float(d.n_train.mean()), n_test=float(d.n_test.mean()))
            row.update(diff_vs_ref=res.mean_diff, p_vs_ref=res.p_value, p_vs_ref_naive=res.p_value_naive)
        rows.append(row)
    best = max(rows, key=lambda r: r["auc_mean"])
    return {"model": cfg["model"], "type": cfg["type"], "reference_sparsity": ref, "per_sparsity": rows,
            "best_sparsity": best["sparsity"], "repeats": cfg["repeats"]}


def table_md(summary: dict) -> str:
    ref = summary["reference_sparsity"]
    header = ["genes connected", "edges", "parameters", "AUC mean ± sd", f"Δ vs {ref:.0%}", "corrected p", "naive p"]
    rows = []
    for r in summary["per_sparsity"]:
        d = r.get("diff_vs_ref")
        rows.append([f"{r['sparsity']:.0%}", r["n_edges"], r["n_parameters"],
                     f"{r['auc_mean']:.3f} ± {r['auc_sd']:.3f}", f"{d:+.3f}" if d is not None else "-",
                     curves.fmt_p(r.get("p_vs_ref")), curves.fmt_p(r.get("p_vs_ref_naive"))])
    n = summary["per_sparsity"][0]["n_folds"]
    return (f"### Sparsity sweep ({summary['model']})\n\n" + curves.md_table(header, rows)
            + f"\nAUC over {n} folds (first {summary['repeats']} repeats of the shared splits); genes "
              f"connected: the fraction of genes keeping their edge to the pathway layer. p: "
              f"Nadeau-Bengio corrected resampled t-test against {ref:.0%} on the same folds.\n")


def figure(summary: dict, df: pd.DataFrame, path) -> Path:
    plt = curves.plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    rows = summary["per_sparsity"]
    x = np.array([r["sparsity"] for r in rows]) * 100
    m = np.array([r["auc_mean"] for r in rows])
    sd = np.array([r["auc_sd"] for r in rows])
    for s, xs in zip([r["sparsity"] for r in rows], x):
        a = df[df.sparsity == s].auc.to_numpy()
        jitter = (np.random.default_rng(0).random(a.size) - 0.5) * 2.0
        ax.plot(xs + jitter, a, ".", color="0.6", ms=4, alpha=0.7)
    ax.errorbar(x, m, yerr=sd, fmt="o-", color=curves.COLOURS[1], lw=2, capsize=4,
                label=f"{summary['model']} mean ± sd")
    for r, xs in zip(rows, x):
        if r.get("p_vs_ref") is not None:
            ax.annotate(f"p={curves.fmt_p(r['p_vs_ref'])}", (xs, r["auc_mean"] + r["auc_sd"]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color="0.3")
    ax.set_xlabel("genes connected to the pathway layer (%)")
    ax.set_ylabel("test-fold ROC AUC")
    ax.set_xticks(x)
    ax.set_title(f"Sparsity sweep, {rows[0]['n_folds']} folds; p vs {summary['reference_sparsity']:.0%} "
                 "(corrected t-test)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return curves.save_png(fig, path)


def run(args) -> int:
    from tqdm import tqdm

    params, cfg, train_cfg, base_seed, study, cohort, folds = curves.stage_setup(
        args, WHAT, resolve_config)
    rows = []
    t_all = time.perf_counter()
    with tqdm(total=len(folds) * len(cfg["sparsity"]), desc=f"sweep {cfg['model']}", unit="fit",
              disable=args.quiet, leave=False) as bar:
        for r, k, tr, te in folds:
            for s in cfg["sparsity"]:
                auc, info = curves.fit_fold(cohort, cfg["type"], {**cfg["config"], "sparsity": s}, tr, te,
                                            train=train_cfg, seed=curves.fold_seed(base_seed, r, k))
                rows.append({"sparsity": s, "repeat": r, "fold": k, "n_train": int(tr.size),
                             "n_test": int(te.size), "n_edges": int(info.get("n_edges", 0)),
                             "n_parameters": int(info.get("n_parameters", 0)), "auc": auc})
                bar.set_postfix(sparsity=f"{s:.0%}", auc=f"{auc:.3f}")
                bar.update(1)
    seconds = time.perf_counter() - t_all
    df = pd.DataFrame(rows)
    summary = compare(df, cfg)
    table = table_md(summary)
    metrics = {f"auc.s{round(100 * r['sparsity']):d}": r["auc_mean"] for r in summary["per_sparsity"]}
    metrics.update({f"p_vs_ref.s{round(100 * r['sparsity']):d}": r["p_vs_ref"]
                    for r in summary["per_sparsity"] if "p_vs_ref" in r})
    metrics.update(best_sparsity=summary["best_sparsity"], n_folds=len(folds), wall_time_s=seconds)
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        df.to_csv(tmp / "folds.tsv", sep="\t", index=False, float_format="%.6f")
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "table.md", table)
        figure(summary, df, tmp / "sweep.png")
    write_json(args.plots, [{"sparsity": r["sparsity"], "auc": round(r["auc_mean"], 5),
                             "auc_sd": round(r["auc_sd"], 5), "n_edges": r["n_edges"]}
                            for r in summary["per_sparsity"]])
    run_id = ""
    if not args.no_mlflow:
        run_id = _log_mlflow(args, study, cfg, summary, metrics, cohort, out)
    write_json(args.metrics, {**metrics, "mlflow_run_id": run_id})
    print(table)
    print(f"sweep: {len(df)} fits in {seconds:.0f} s -> {out}")
    return 0


def _log_mlflow(args, study, cfg, summary, metrics, cohort, out) -> str:
    import mlflow

    tracking.setup(study)
    text = Path(args.params).read_text() if Path(args.params).exists() else None
    tags = tracking.run_tags(cohort.inputs, params_text=text,
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
