"""Figures of the learning-curve and sparsity-sweep stages (PNG, no date metadata: identical
inputs give identical bytes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.plots.style import MARKERS

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as pyplot

    return pyplot


def save_png(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        # no software/date metadata: identical inputs give identical bytes
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})
    plt().close(fig)
    return path


def learning_curve_figure(summary: dict, cfg: dict, path) -> Path:
    """AUC mean +- sd against training-set size per model, p-values and the crossover."""
    fig, ax = plt().subplots(figsize=(7.0, 4.6))
    sparse = cfg["sparse_model"]
    for k, ((name, mtype, _), colour) in enumerate(zip(cfg["models"], COLOURS)):
        rows = summary["per_model"][name]
        x = np.array([r["n_train_mean"] for r in rows])
        m = np.array([r["auc_mean"] for r in rows])
        sd = np.array([r["auc_sd"] for r in rows])
        lw = 2.4 if name == sparse else 1.6
        # colour, marker and (additive models) dashes: told apart in grey print too
        ls = "-" if name == sparse else "--"
        ax.plot(x, m, ls=ls, marker=MARKERS[k % len(MARKERS)], color=colour, lw=lw, ms=5,
                label=f"{name} ({mtype})" if name != mtype else name)
        ax.fill_between(x, m - sd, m + sd, color=colour, alpha=0.15, lw=0)
    ymax = ax.get_ylim()[1]
    for t in summary["tests"]:
        p = t.get("p_value")
        if p is not None:
            ax.annotate(f"p={fmt_p(p)}", (t["n_train_mean"], ymax), textcoords="offset points",
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
    ax.legend(loc="lower right", fontsize=8, frameon=False, title="model (band: ± 1 sd over folds)",
              title_fontsize=7)
    ax.grid(alpha=0.25)
    return save_png(fig, path)


def sweep_figure(summary: dict, df, path) -> Path:
    """Fold AUCs (jittered) and mean +- sd against the percentage of genes connected."""
    fig, ax = plt().subplots(figsize=(6.0, 4.2))
    rows = summary["per_sparsity"]
    x = np.array([r["sparsity"] for r in rows]) * 100
    m = np.array([r["auc_mean"] for r in rows])
    sd = np.array([r["auc_sd"] for r in rows])
    for s, xs in zip([r["sparsity"] for r in rows], x):
        a = df[df.sparsity == s].auc.to_numpy()
        jitter = (np.random.default_rng(0).random(a.size) - 0.5) * 2.0
        ax.plot(xs + jitter, a, ".", color="0.6", ms=4, alpha=0.7)
    ax.errorbar(x, m, yerr=sd, fmt="o-", color=COLOURS[1], lw=2, capsize=4,
                label=f"{summary['model']} mean ± sd")
    for r, xs in zip(rows, x):
        if r.get("p_vs_ref") is not None:
            ax.annotate(f"p={fmt_p(r['p_vs_ref'])}", (xs, r["auc_mean"] + r["auc_sd"]),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color="0.3")
    ax.set_xlabel("genes connected to the pathway layer (%)")
    ax.set_ylabel("test-fold ROC AUC")
    ax.set_xticks(x)
    ax.set_title(f"Sparsity sweep, {rows[0]['n_folds']} folds; p vs {summary['reference_sparsity']:.0%} "
                 "(corrected t-test)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return save_png(fig, path)
