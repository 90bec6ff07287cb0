"""Learning curves and sparsity sweeps: their configs, fits, statistics and tables.

Both cross-validate zoo models (:func:`pipelines.workflows.cv.cross_validate`) on the first N
repeats of the shared splits under some variation of the training fold (a nested subset, or a
model parameter), score the test fold by ROC AUC and summarise each variation over folds with
normal-theory and Nadeau-Bengio intervals. Fold seeds are those of ``epiflow train``, so a model
fitted on a whole training fold here gives exactly the AUC the train stage reports. Figures are
in :mod:`pipelines.plots.curves`; the stages only read params, call these and write.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.registry import REGISTRY
from models.stats import corrected_resampled_ttest, crossover_size, learning_curve_subsets
from pipelines import zoo
from pipelines.errors import EpiflowError
from pipelines.params import section
from pipelines.plots.curves import fmt_p
from pipelines.workflows.cv import ModelSpec, cross_validate, fold_seed

LC, SWEEP = "learning_curve", "sweep"


# ------------------------------------------------------------------------------ shared checks
def check_repeats(repeats, what: str) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise EpiflowError(f"{what}: repeats must be a positive integer, got {repeats!r}")
    return int(repeats)


def check_models(names, models_section: dict, what: str, params_path="params.yaml") -> list:
    """[(name, type, config)] for model names of params.yaml, or a one-line error."""
    if not isinstance(names, (list, tuple)) or not names:
        raise EpiflowError(f"{what}: models must be a non-empty list of model names under "
                           f"`models:` in {params_path}")
    if len(set(names)) != len(names):
        raise EpiflowError(f"{what}: models lists a model twice: {', '.join(map(str, names))}")
    out = []
    for name in names:
        try:
            mtype, cfg = zoo.resolve(str(name), models_section, params_path)
        except EpiflowError as exc:
            raise EpiflowError(f"{what}: {exc}") from None
        out.append((str(name), mtype, cfg))
    return out


def _check_keys(sec: dict, known: set, what: str, params_path) -> None:
    unknown = sorted(set(sec) - known)
    if unknown:
        raise EpiflowError(f"{what}: unknown key '{unknown[0]}' in {params_path} (known: {', '.join(sorted(known))})")


def _check_fractions(values, what: str, name: str, message: str) -> list[float]:
    """Sorted distinct numbers in (0, 1]."""
    if not isinstance(values, (list, tuple)) or not values:
        raise EpiflowError(f"{what}: {name} must be a non-empty list of numbers in (0, 1]")
    out = []
    for f in values:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < float(f) <= 1:
            raise EpiflowError(f"{what}: {message}, got {f!r}")
        out.append(float(f))
    if len(set(out)) != len(out):
        raise EpiflowError(f"{what}: {name} lists a value twice")
    return sorted(out)


def summarise(aucs, n_train, n_test) -> dict:
    """Mean, sd and two 95 % intervals of fold AUCs: the naive t interval (folds independent) and
    the Nadeau-Bengio corrected one (variance factor 1/J + n_test/n_train), which accounts for
    the overlap of training sets between folds."""
    from scipy import stats as sps

    a = np.asarray(aucs, np.float64)
    j = a.size
    m = float(a.mean())
    sd = float(a.std(ddof=1)) if j > 1 else 0.0
    out = {"auc_mean": m, "auc_sd": sd, "n_folds": int(j),
           "n_train_mean": float(np.mean(n_train)), "n_test_mean": float(np.mean(n_test))}
    if j > 1:
        q = float(sps.t.ppf(0.975, j - 1))
        half = q * sd * np.sqrt(1.0 / j)
        half_c = q * sd * np.sqrt(1.0 / j + out["n_test_mean"] / out["n_train_mean"])
        out.update(ci95=[m - half, m + half], ci95_corrected=[m - half_c, m + half_c])
    return out


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- learning curve
def learning_curve_config(params: dict, params_path="params.yaml", repeats=None) -> dict:
    """The validated learning_curve section: models [(name, type, cfg)], fractions, repeats,
    seed, sparse model and additive models. One-line EpiflowError on bad values."""
    lc = dict(section(params, LC, params_path))
    _check_keys(lc, {"models", "fractions", "repeats", "seed", "sparse_model"}, LC, params_path)
    models = check_models(lc.get("models"), section(params, "models", params_path), LC, params_path)
    fractions = _check_fractions(lc.get("fractions", [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]), LC, "fractions",
                                 "fractions must lie in (0, 1]")
    reps = check_repeats(lc.get("repeats", 3) if repeats is None else repeats, LC)
    seed = lc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EpiflowError(f"{LC}: seed must be a non-negative integer, got {seed!r}")
    names = [m[0] for m in models]
    sparse = lc.get("sparse_model", "biosparse" if "biosparse" in names else names[-1])
    if sparse not in names:
        raise EpiflowError(f"{LC}: sparse_model '{sparse}' is not one of models ({', '.join(names)})")
    additive = [n for n in names if n != sparse]
    if not additive:
        raise EpiflowError(f"{LC}: models needs at least one additive model besides '{sparse}'")
    return {"models": models, "fractions": fractions, "repeats": reps, "seed": int(seed),
            "sparse_model": sparse, "additive_models": additive}


def learning_curve_fits(cfg: dict, cohort, splits, train_cfg: dict, quiet: bool = True):
    """Every model on every nested subset of every training fold, scored on the whole test fold.
    Returns (fold table: model, fraction, repeat, fold, n_train, n_test, auc; fit seconds per
    model)."""
    folds = list(splits.iter_folds(cfg["repeats"]))
    subsets = {(r, k): learning_curve_subsets(tr, cohort.y, cfg["fractions"], seed=fold_seed(cfg["seed"], r, k))
               for r, k, tr, _ in folds}
    rows, timings = [], {}
    for mi, (name, mtype, mcfg) in enumerate(cfg["models"]):
        for fi, f in enumerate(cfg["fractions"]):
            res = cross_validate(ModelSpec(name, mtype, mcfg), cohort, folds, train_cfg=train_cfg,
                                 train_subset=lambda r, k, tr, f=f: subsets[(r, k)][f],
                                 progress=None if quiet else f"learning curve {name} {f:.0%}")
            timings[name] = timings.get(name, 0.0) + sum(x.seconds for x in res.folds)
            rows += [((x.repeat, x.fold, fi, mi), {"model": name, "fraction": f, "repeat": x.repeat,
                                                   "fold": x.fold, "n_train": int(x.n_train),
                                                   "n_test": int(x.n_test), "auc": x.auc}) for x in res.folds]
    # rows in fold order, then fraction, then model (as the table has always been written)
    return pd.DataFrame([row for _, row in sorted(rows, key=lambda t: t[0])]), timings


def _lc_test(df, f, sparse: str, best: str) -> dict:
    a = df[(df.model == sparse) & (df.fraction == f)].sort_values(["repeat", "fold"])
    b = df[(df.model == best) & (df.fraction == f)].sort_values(["repeat", "fold"])
    row = {"fraction": f, "n_train_mean": float(a.n_train.mean()), "best_additive": best}
    if len(a) >= 2:
        res = corrected_resampled_ttest(a.auc.to_numpy(), b.auc.to_numpy(),
                                        n_train=float(a.n_train.mean()), n_test=float(a.n_test.mean()))
        row.update({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                    for k, v in res.as_dict().items()})
    return row


def compare_learning_curve(df: pd.DataFrame, cfg: dict) -> dict:
    """Per-model, per-fraction summaries; per-fraction corrected t-test of the sparse model vs the
    best additive model at that fraction; crossover training-set size of the mean curves."""
    sparse, additive = cfg["sparse_model"], cfg["additive_models"]
    per_model = {}
    for name, _, _ in cfg["models"]:
        per_model[name] = [{"fraction": f, **summarise(d.auc, d.n_train, d.n_test)}
                           for f in cfg["fractions"]
                           for d in [df[(df.model == name) & (df.fraction == f)]]]
    tests = [_lc_test(df, f, sparse, max(additive, key=lambda n: per_model[n][i]["auc_mean"]))
             for i, f in enumerate(cfg["fractions"])]
    sizes = [r["n_train_mean"] for r in per_model[sparse]]
    sparse_curve = [r["auc_mean"] for r in per_model[sparse]]
    best_curve = [max(per_model[n][i]["auc_mean"] for n in additive) for i in range(len(sizes))]
    cross = crossover_size(sizes, sparse_curve, best_curve)
    cross_frac = None
    if cross is not None:
        cross_frac = float(np.interp(cross, sizes, cfg["fractions"]))
    return {"per_model": per_model, "tests": tests, "crossover_n_train": cross,
            "crossover_fraction": cross_frac, "sparse_model": sparse, "additive_models": additive}


def learning_curve_table(summary: dict, cfg: dict) -> str:
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
        cells += [f"{diff:+.3f}" if diff is not None else "-", fmt_p(t.get("p_value")),
                  fmt_p(t.get("p_value_naive"))]
        rows.append(cells)
    cross = summary["crossover_n_train"]
    n_folds = summary["per_model"][sparse][0]["n_folds"]
    note = (f"\nAUC mean ± sd over {n_folds} folds (first {cfg['repeats']} repeats of the shared splits); "
            f"the same nested training subsets for every model. `*` best additive model at that size; "
            f"p: Nadeau-Bengio corrected resampled t-test of {sparse} vs it (two-sided), naive: plain "
            f"paired t-test. Crossover ({sparse} reaches the best additive model and stays above): "
            + (f"n_train ≈ {cross:.0f} ({summary['crossover_fraction']:.0%} of a training fold).\n"
               if cross is not None else f"none ({sparse} ends below).\n"))
    return "### Learning curves\n\n" + md_table(header, rows) + note


def learning_curve_metrics(summary: dict, cfg: dict) -> dict:
    pct = lambda f: f"{round(100 * f):d}"  # noqa: E731
    m = {}
    for name, rows in summary["per_model"].items():
        for s in rows:
            m[f"auc.{name}.f{pct(s['fraction'])}"] = s["auc_mean"]
    for t in summary["tests"]:
        if t.get("p_value") is not None:
            m[f"p_corrected.f{pct(t['fraction'])}"] = t["p_value"]
            m[f"diff_vs_best_additive.f{pct(t['fraction'])}"] = t["mean_diff"]
    m["crossover_n_train"] = summary["crossover_n_train"]
    m["crossover_fraction"] = summary["crossover_fraction"]
    m["n_folds"] = summary["per_model"][cfg["sparse_model"]][0]["n_folds"]
    return m


# ---------------------------------------------------------------------------- sparsity sweep
def sweep_config(params: dict, params_path="params.yaml", repeats=None) -> dict:
    sw = dict(section(params, SWEEP, params_path))
    _check_keys(sw, {"model", "sparsity", "repeats"}, SWEEP, params_path)
    [(name, mtype, cfg)] = check_models([sw.get("model", "biosparse")],
                                        section(params, "models", params_path), SWEEP, params_path)
    if not REGISTRY[mtype].sparse:
        sweepable = ", ".join(n for n, m in REGISTRY.items() if m.sparse)
        raise EpiflowError(f"{SWEEP}: model '{name}' is of type '{mtype}', which has no sparse gene layer "
                           f"(sweepable types: {sweepable})")
    if "sparsity" in cfg:
        raise EpiflowError(f"{SWEEP}: model '{name}' fixes sparsity in {params_path}; the sweep sets it")
    values = _check_fractions(sw.get("sparsity", [0.25, 0.5, 0.75, 1.0]), SWEEP, "sparsity",
                              "sparsity values must lie in (0, 1]")
    reps = check_repeats(sw.get("repeats", 3) if repeats is None else repeats, SWEEP)
    return {"model": name, "type": mtype, "config": cfg, "sparsity": values, "repeats": reps}


def sweep_fits(cfg: dict, cohort, splits, train_cfg: dict, quiet: bool = True) -> pd.DataFrame:
    """The model at every sparsity on every fold: sparsity, repeat, fold, n_train, n_test,
    n_edges, n_parameters, auc (fold order, then sparsity)."""
    folds = list(splits.iter_folds(cfg["repeats"]))
    rows = []
    for si, s in enumerate(cfg["sparsity"]):
        spec = ModelSpec(cfg["model"], cfg["type"], {**cfg["config"], "sparsity": s})
        res = cross_validate(spec, cohort, folds, train_cfg=train_cfg,
                             progress=None if quiet else f"sweep {cfg['model']} {s:.0%}")
        rows += [((x.repeat, x.fold, si), {"sparsity": s, "repeat": x.repeat, "fold": x.fold,
                                           "n_train": int(x.n_train), "n_test": int(x.n_test),
                                           "n_edges": int(x.info.get("n_edges", 0)),
                                           "n_parameters": int(x.info.get("n_parameters", 0)), "auc": x.auc})
                 for x in res.folds]
    return pd.DataFrame([row for _, row in sorted(rows, key=lambda t: t[0])])


def compare_sweep(df: pd.DataFrame, cfg: dict) -> dict:
    ref = max(cfg["sparsity"])
    b = df[df.sparsity == ref].sort_values(["repeat", "fold"])
    rows = []
    for s in cfg["sparsity"]:
        d = df[df.sparsity == s].sort_values(["repeat", "fold"])
        row = {"sparsity": s, **summarise(d.auc, d.n_train, d.n_test),
               "n_edges": int(d.n_edges.iloc[0]), "n_parameters": int(d.n_parameters.iloc[0])}
        if s != ref and len(d) >= 2:
            res = corrected_resampled_ttest(d.auc.to_numpy(), b.auc.to_numpy(),
                                            n_train=float(d.n_train.mean()), n_test=float(d.n_test.mean()))
            row.update(diff_vs_ref=res.mean_diff, p_vs_ref=res.p_value, p_vs_ref_naive=res.p_value_naive)
        rows.append(row)
    best = max(rows, key=lambda r: r["auc_mean"])
    return {"model": cfg["model"], "type": cfg["type"], "reference_sparsity": ref, "per_sparsity": rows,
            "best_sparsity": best["sparsity"], "repeats": cfg["repeats"]}


def sweep_table(summary: dict) -> str:
    ref = summary["reference_sparsity"]
    header = ["genes connected", "edges", "parameters", "AUC mean ± sd", f"Δ vs {ref:.0%}", "corrected p", "naive p"]
    rows = []
    for r in summary["per_sparsity"]:
        d = r.get("diff_vs_ref")
        rows.append([f"{r['sparsity']:.0%}", r["n_edges"], r["n_parameters"],
                     f"{r['auc_mean']:.3f} ± {r['auc_sd']:.3f}", f"{d:+.3f}" if d is not None else "-",
                     fmt_p(r.get("p_vs_ref")), fmt_p(r.get("p_vs_ref_naive"))])
    n = summary["per_sparsity"][0]["n_folds"]
    return (f"### Sparsity sweep ({summary['model']})\n\n" + md_table(header, rows)
            + f"\nAUC over {n} folds (first {summary['repeats']} repeats of the shared splits); genes "
              f"connected: the fraction of genes keeping their edge to the pathway layer. p: "
              f"Nadeau-Bengio corrected resampled t-test against {ref:.0%} on the same folds.\n")


def sweep_metrics(summary: dict, n_folds: int) -> dict:
    metrics = {f"auc.s{round(100 * r['sparsity']):d}": r["auc_mean"] for r in summary["per_sparsity"]}
    metrics.update({f"p_vs_ref.s{round(100 * r['sparsity']):d}": r["p_vs_ref"]
                    for r in summary["per_sparsity"] if "p_vs_ref" in r})
    metrics.update(best_sparsity=summary["best_sparsity"], n_folds=n_folds)
    return metrics
