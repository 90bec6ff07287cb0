"""Figures of ``epiflow interpret``: gene importance along the genome, top pathways, and the
interaction heatmap of the top genes. Each function writes one PNG atomically and returns its path;
planted truth (when known) is marked so a reader sees at once what the network found."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.plots.scans import _plt, _save, chrom_axis
from pipelines.plots.style import set_chrom_axis


def gene_importance(genes: pd.DataFrame, path, *, title: str, planted: set[str] = frozenset(),
                    n_labels: int = 10) -> Path:
    """Manhattan-style: one point per gene at its genomic position (by rank when positions are
    unknown), height = importance (share of the net's attribution); the top genes labelled,
    planted genes ringed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.8))
    df = genes.reset_index(drop=True)
    known = df["chrom"].notna().all() and np.isfinite(df["pos"].to_numpy(dtype=float)).all()
    if known:
        x, ticks, labels, bounds = chrom_axis(df["chrom"].astype(str).to_numpy(), df["pos"].to_numpy(dtype=float))
        chrom = df["chrom"].astype(str).to_numpy()
        ranks = {c: i for i, c in enumerate(labels)}
        colour = np.array(["#1f4e79" if ranks.get(c, 0) % 2 == 0 else "#6fa8dc" for c in chrom])
        set_chrom_axis(ax, ticks, labels, float(x.max() - x.min()) or 1.0, fontsize=7)
        ax.set_xlabel("chromosome (genes at the median position of their variants)")
        for b in bounds[1:-1]:
            ax.axvline(b, color="0.92", lw=0.6, zorder=0)
    else:
        x = np.arange(len(df), dtype=float)
        colour = np.full(len(df), "#1f4e79")
        ax.set_xlabel("gene (cohort order; positions unknown)")
    y = df["importance"].to_numpy(dtype=float)
    ax.scatter(x, y, s=9, c=colour, linewidths=0)
    is_planted = df["gene"].isin(planted).to_numpy()
    if is_planted.any():
        ax.scatter(x[is_planted], y[is_planted], s=60, facecolors="none", edgecolors="#d62728", linewidths=1.2,
                   label="planted gene (truth.json)")
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    top = np.argsort(-y, kind="stable")[:n_labels]
    for i in top:
        ax.annotate(str(df["gene"].iloc[i]), (x[i], y[i]), xytext=(3, 3), textcoords="offset points", fontsize=7,
                    color="#d62728" if is_planted[i] else "0.15")
    ax.set_ylabel("importance (share of |attribution|)")
    ax.set_ylim(0, max(float(y.max()) * 1.15, 1e-9))
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def top_pathways(pathways: pd.DataFrame, path, *, title: str, planted: set[str] = frozenset(), n: int = 20) -> Path:
    """Horizontal bars: the ``n`` most important hidden neurons (pathways), with the weight x
    activation reference as dots; planted pathway modules in red."""
    plt = _plt()
    df = pathways.head(n).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(df) + 1.2))
    colours = ["#d62728" if p in planted else "#1f4e79" for p in df["pathway"]]
    yy = np.arange(len(df))
    ax.barh(yy, df["importance"], color=colours, xerr=df["importance_sd"].fillna(0), ecolor="0.6",
            error_kw={"lw": 0.8}, label="layer Integrated Gradients")
    wa = df["weight_x_activation"].to_numpy(dtype=float)
    if np.isfinite(wa).any():
        ax.scatter(wa, yy, color="0.2", s=12, zorder=3, label="|output weight| x mean |activation|")
    ax.set_yticks(yy)
    ax.set_yticklabels([p if len(p) <= 45 else p[:42] + "..." for p in df["pathway"]], fontsize=7)
    ax.set_xlim(left=0)
    ax.set_xlabel("importance (share, mean over folds; whiskers: sd)")
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if any(p in planted for p in df["pathway"]):
        from matplotlib.patches import Patch

        handles.append(Patch(color="#d62728"))
        labels.append("planted pathway module")
    ax.legend(handles, labels, fontsize=7, loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def interaction_heatmap(pairs: pd.DataFrame, genes_order: list[str], path, *, title: str,
                        planted_pairs: set[frozenset] = frozenset(), alpha: float = 0.05) -> Path:
    """Symmetric heatmap of the interaction scores among the top genes (in importance order);
    pairs whose p stays below ``alpha`` in every fold get a dot, planted pairs a red frame."""
    plt = _plt()
    names = [g for g in genes_order if g in set(pairs["gene_a"]) | set(pairs["gene_b"])]
    pos = {g: i for i, g in enumerate(names)}
    n = len(names)
    M = np.full((n, n), np.nan)
    for r in pairs.itertuples():
        i, j = pos[r.gene_a], pos[r.gene_b]
        M[i, j] = M[j, i] = r.score
    # an additive model's scores are float rounding (p = 1 for every pair): shown as zeros, not as
    # a colour scale stretched over noise of 1e-8
    rounding = bool(len(pairs)) and bool((pairs["p"] >= 1.0).all())
    if rounding:
        M = np.where(np.isfinite(M), 0.0, M)
    fig, ax = plt.subplots(figsize=(0.32 * n + 2.6, 0.32 * n + 1.6))
    top = np.nanmax(M) if np.isfinite(M).any() else 0.0
    im = ax.imshow(M, cmap="magma_r", vmin=0, vmax=top if top > 0 else 1.0)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label("interaction score (RMS 2nd difference of the logit)", fontsize=7)
    for r in pairs.itertuples():
        i, j = pos[r.gene_a], pos[r.gene_b]
        if r.p < alpha:
            ax.plot([i, j], [j, i], "o", color="#2ca02c", ms=3)
        if frozenset((r.gene_a, r.gene_b)) in planted_pairs:
            for a, b in ((i, j), (j, i)):
                ax.add_patch(plt.Rectangle((a - 0.5, b - 0.5), 1, 1, fill=False, ec="#d62728", lw=1.5))
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_title(title, fontsize=10)
    note = f"green dot: p < {alpha:g} in every fold (random-pair null)"
    if rounding:
        note = "no interaction: every score is float rounding (the model is additive in these genes); " + note
    if planted_pairs:
        note += "; red frame: planted pair"
    fig.text(0.01, 0.005, note, fontsize=7, color="0.3")
    return _save(fig, path)
