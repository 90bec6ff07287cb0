"""`epiflow learning-curve`: AUC against training-set size for several models on the shared splits.

For every fold of the first ``learning_curve.repeats`` repeats of work/splits.npz, the training
fold is cut into nested, stratified subsets (``models.stats.learning_curve_subsets``, seeded by
the fold, so 10 % lies inside 20 % ... and every model sees exactly the same samples); every
model of ``learning_curve.models`` is fitted on every subset and scored on the whole test fold.
Per fraction, the sparse model (``learning_curve.sparse_model``) is compared with the best
additive model at that fraction by the Nadeau-Bengio corrected resampled t-test over the folds,
and the crossover training-set size (where the sparse model's mean curve reaches the best
additive curve and stays above it) is interpolated.

Writes (atomically) work/learning_curve/{folds.tsv, summary.json, table.md, learning_curve.png},
metrics/learning_curve.json and plots/learning_curve/<model>.json for `dvc plots`; logs one
MLflow run with per-fraction metrics (also as curves, step = training-set size) and the table,
figure and fold table as artifacts.
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

WHAT = "learning_curve"


def add_arguments(p):
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--out", default="work/learning_curve", help="output folder (default: work/learning_curve)")
    p.add_argument("--metrics", default="metrics/learning_curve.json", help="metrics JSON")
    p.add_argument("--plots", default="plots/learning_curve", help="folder of per-model curve points for `dvc plots`")
    p.add_argument("--repeats", type=int, default=None, help="override learning_curve.repeats")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_config(params: dict, params_path="params.yaml", repeats=None) -> dict:
    """The validated learning_curve section: models [(name, type, cfg)], fractions, repeats,
    seed, sparse model and additive models. One-line EpiflowError on bad values."""
    lc = dict(section(params, WHAT, params_path))
    known = {"models", "fractions", "repeats", "seed", "sparse_model"}
    unknown = sorted(set(lc) - known)
    if unknown:
        raise EpiflowError(f"{WHAT}: unknown key '{unknown[0]}' in {params_path} (known: {', '.join(sorted(known))})")
    models = curves.check_models(lc.get("models"), section(params, "models", params_path), WHAT, params_path)
    fr = lc.get("fractions", [0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    if not isinstance(fr, (list, tuple)) or not fr:
        raise EpiflowError(f"{WHAT}: fractions must be a non-empty list of numbers in (0, 1]")
    fractions = []
    for f in fr:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < float(f) <= 1:
            raise EpiflowError(f"{WHAT}: fractions must lie in (0, 1], got {f!r}")
        fractions.append(float(f))
    if len(set(fractions)) != len(fractions):
        raise EpiflowError(f"{WHAT}: fractions lists a value twice")
    fractions = sorted(fractions)
    reps = curves.check_repeats(lc.get("repeats", 3) if repeats is None else repeats, WHAT)
    seed = lc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EpiflowError(f"{WHAT}: seed must be a non-negative integer, got {seed!r}")
    names = [m[0] for m in models]
    sparse = lc.get("sparse_model", "biosparse" if "biosparse" in names else names[-1])
    if sparse not in names:
        raise EpiflowError(f"{WHAT}: sparse_model '{sparse}' is not one of models ({', '.join(names)})")
    additive = [n for n in names if n != sparse]
    if not additive:
        raise EpiflowError(f"{WHAT}: models needs at least one additive model besides '{sparse}'")
    return {"models": models, "fractions": fractions, "repeats": reps, "seed": int(seed),
            "sparse_model": sparse, "additive_models": additive}


def compare(df: pd.DataFrame, cfg: dict) -> dict:
    """Per-model, per-fraction summaries; per-fraction corrected t-test of the sparse model vs the
    best additive model at that fraction; crossover training-set size of the mean curves."""
    from models.stats import corrected_resampled_ttest, crossover_size

    sparse, additive = cfg["sparse_model"], cfg["additive_models"]
    per_model = {}
    for name, _, _ in cfg["models"]:
        rows = []
        for f in cfg["fractions"]:
            d = df[(df.model == name) & (df.fraction == f)]
            rows.append({"fraction": f, **curves.summarise(d.auc, d.n_train, d.n_test)})
        per_model[name] = rows
    tests = []
    for i, f in enumerate(cfg["fractions"]):
        best = max(additive, key=lambda n: per_model[n][i]["auc_mean"])
        a = df[(df.model == sparse) & (df.fraction == f)].sort_values(["repeat", "fold"])
        b = df[(df.model == best) & (df.fraction == f)].sort_values(["repeat", "fold"])
        row = {"fraction": f, "n_train_mean": float(a.n_train.mean()), "best_additive": best}
        if len(a) >= 2:
            res = corrected_resampled_ttest(a.auc.to_numpy(), b.auc.to_numpy(),
                                            n_train=float(a.n_train.mean()), n_test=float(a.n_test.mean()))
            row.update({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                        for k, v in res.as_dict().items()})
        tests.append(row)
    sizes = [r["n_train_mean"] for r in per_model[sparse]]
    sparse_curve = [r["auc_mean"] for r in per_model[sparse]]
    best_curve = [max(per_model[n][i]["auc_mean"] for n in additive) for i in range(len(sizes))]
    cross = crossover_size(sizes, sparse_curve, best_curve)
    cross_frac = None
    if cross is not None:
        cross_frac = float(np.interp(cross, sizes, cfg["fractions"]))
    return {"per_model": per_model, "tests": tests, "crossover_n_train": cross,
            "crossover_fraction": cross_frac, "sparse_model": sparse, "additive_models": additive}


def table_md(summary: dict, cfg: dict) -> str:
    names = [m[0] for m in cfg["models"]]
    sparse = cfg["sparse_model"]
    header = ["fraction", "n train"] + [f"{n} AUC" for n in names] + [f"{sparse} - best additive", "corrected p", "naive p"]
    rows = []
    for i, f in enumerate(cfg["fractions"]):
        t = summary["tests"][i]
        cells = [f"{f:.0%}", f"{t['n_train_mean']:.0f}"]
        for n in names:
            s = summary["per_model"][n][i]
            mark = "*" if n == t["best_additive"] else ""
            cells.append(f"{s['auc_mean']:.3f} ± {s['auc_sd']:.3f}{mark}")
        diff = t.get("mean_diff")
        cells += [f"{diff:+.3f}" if diff is not None else "-", curves.fmt_p(t.get("p_value")),
                  curves.fmt_p(t.get("p_value_naive"))]
        rows.append(cells)
    cross = summary["crossover_n_train"]
    n_folds = summary["per_model"][sparse][0]["n_folds"]
    note = (f"\nAUC mean ± sd over {n_folds} folds (first {cfg['repeats']} repeats of the shared splits); "
            f"the same nested training subsets for every model. `*` best additive model at that size; "
            f"p: Nadeau-Bengio corrected resampled t-test of {sparse} vs it (two-sided), naive: plain "
            f"paired t-test. Crossover ({sparse} reaches the best additive model and stays above): "
            + (f"n_train ≈ {cross:.0f} ({summary['crossover_fraction']:.0%} of a training fold).\n"
               if cross is not None else f"none ({sparse} ends below).\n"))
    return f"### Learning curves\n\n" + curves.md_table(header, rows) + note


def figure(summary: dict, cfg: dict, path) -> Path:
    plt = curves.plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    sparse = cfg["sparse_model"]
    for (name, mtype, _), colour in zip(cfg["models"], curves.COLOURS):
        rows = summary["per_model"][name]
        x = np.array([r["n_train_mean"] for r in rows])
        m = np.array([r["auc_mean"] for r in rows])
        sd = np.array([r["auc_sd"] for r in rows])
        lw = 2.4 if name == sparse else 1.6
        ax.plot(x, m, "o-", color=colour, lw=lw, ms=4, label=f"{name} ({mtype})" if name != mtype else name)
        ax.fill_between(x, m - sd, m + sd, color=colour, alpha=0.15, lw=0)
    ymax = ax.get_ylim()[1]
    for t in summary["tests"]:
        p = t.get("p_value")
        if p is not None:
            ax.annotate(f"p={curves.fmt_p(p)}", (t["n_train_mean"], ymax), textcoords="offset points",
                        xytext=(0, -10), ha="center", fontsize=7, color="0.3")
    cross = summary["crossover_n_train"]
    if cross is not None:
        ax.axvline(cross, color="0.4", ls="--", lw=1)
        ax.annotate(f"crossover n≈{cross:.0f}", (cross, ax.get_ylim()[0]), textcoords="offset points",
                    xytext=(4, 6), fontsize=8, color="0.3")
    ax.axhline(0.5, color="0.8", lw=0.8)
    n_folds = summary["per_model"][sparse][0]["n_folds"]
    ax.set_xlabel("training samples (nested subsets of each training fold)")
    ax.set_ylabel("test-fold ROC AUC (mean ± sd)")
    ax.set_title(f"Learning curves, {n_folds} folds; p: {sparse} vs best additive (corrected t-test)",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return curves.save_png(fig, path)


def run(args) -> int:
    from tqdm import tqdm

    from models.stats import learning_curve_subsets

    params, cfg, train_cfg, base_seed, study, cohort, folds = curves.stage_setup(
        args, WHAT, resolve_config)
    out, plots_dir = Path(args.out), Path(args.plots)

    rows, timings = [], {m[0]: 0.0 for m in cfg["models"]}
    t_all = time.perf_counter()
    total = len(folds) * len(cfg["fractions"]) * len(cfg["models"])
    with tqdm(total=total, desc="learning curve", unit="fit", disable=args.quiet, leave=False) as bar:
        for r, k, tr, te in folds:
            subsets = learning_curve_subsets(tr, cohort.y, cfg["fractions"],
                                             seed=curves.fold_seed(cfg["seed"], r, k))
            for f in cfg["fractions"]:
                idx = subsets[f]
                for name, mtype, mcfg in cfg["models"]:
                    t0 = time.perf_counter()
                    auc, _ = curves.fit_fold(cohort, mtype, mcfg, idx, te, train=train_cfg,
                                             seed=curves.fold_seed(base_seed, r, k))
                    timings[name] += time.perf_counter() - t0
                    rows.append({"model": name, "fraction": f, "repeat": r, "fold": k,
                                 "n_train": int(idx.size), "n_test": int(te.size), "auc": auc})
                    bar.set_postfix(model=name, f=f"{f:.0%}", auc=f"{auc:.3f}")
                    bar.update(1)
    df = pd.DataFrame(rows)
    summary = compare(df, cfg)
    seconds = time.perf_counter() - t_all
    summary.update({"models": {n: t for n, t, _ in cfg["models"]}, "fractions": cfg["fractions"],
                    "repeats": cfg["repeats"], "folds": cohort.splits.folds, "subset_seed": cfg["seed"]})
    table = table_md(summary, cfg)
    metrics = _metrics(summary, cfg)
    metrics.update(wall_time_s=seconds, **{f"fit_time_s.{n}": t for n, t in timings.items()})

    with atomic_dir(out) as tmp:
        df.to_csv(tmp / "folds.tsv", sep="\t", index=False, float_format="%.6f")
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "table.md", table)
        figure(summary, cfg, tmp / "learning_curve.png")
    for name, _, _ in cfg["models"]:
        write_json(plots_dir / f"{name}.json",
                   [{"n_train": round(s["n_train_mean"], 1), "fraction": s["fraction"],
                     "auc": round(s["auc_mean"], 5), "auc_sd": round(s["auc_sd"], 5)}
                    for s in summary["per_model"][name]])
    run_id = ""
    if not args.no_mlflow:
        run_id = _log_mlflow(args, params, study, cfg, summary, metrics, cohort, out)
    write_json(args.metrics, {**metrics, "mlflow_run_id": run_id})
    print(table)
    print(f"learning curve: {len(df)} fits in {seconds:.0f} s -> {out}")
    return 0


def _pct(f: float) -> str:
    return f"{round(100 * f):d}"


def _metrics(summary: dict, cfg: dict) -> dict:
    m = {}
    for name, rows in summary["per_model"].items():
        for s in rows:
            m[f"auc.{name}.f{_pct(s['fraction'])}"] = s["auc_mean"]
    for t in summary["tests"]:
        if t.get("p_value") is not None:
            m[f"p_corrected.f{_pct(t['fraction'])}"] = t["p_value"]
            m[f"diff_vs_best_additive.f{_pct(t['fraction'])}"] = t["mean_diff"]
    m["crossover_n_train"] = summary["crossover_n_train"]
    m["crossover_fraction"] = summary["crossover_fraction"]
    m["n_folds"] = summary["per_model"][cfg["sparse_model"]][0]["n_folds"]
    return m


def _log_mlflow(args, params, study, cfg, summary, metrics, cohort, out) -> str:
    import mlflow

    tracking.setup(study)
    text = Path(args.params).read_text() if Path(args.params).exists() else None
    tags = tracking.run_tags(cohort.inputs, params_text=text, extra={"stage": WHAT})
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
