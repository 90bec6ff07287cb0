"""Figures of the NGG and exact scans: Manhattan plots, 2D map overview and zoom, two-locus box plots.

Every function writes one PNG atomically (``pipelines.atomic``) and returns its path. Inputs are
plain arrays so the same functions serve the exact scans and NGG results.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import special

from models.scans.pyramid import build_levels
from models.scans.scan2d import chrom_order
from pipelines.atomic import atomic_path

__all__ = ["manhattan", "map_overview", "map_zoom", "pair_boxplots", "chrom_axis"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def chrom_axis(chrom, bp=None):
    """x coordinates for a genome-wide plot: chromosomes side by side in natural order.

    Returns (x, ticks, labels, bounds): within a chromosome SNPs are placed by base pair (or by
    rank when positions are missing or zero), each chromosome getting a width proportional to its
    SNP count.
    """
    chrom = np.asarray(chrom).astype(str)
    order = chrom_order(chrom)
    x = np.empty(len(chrom))
    ticks, labels, bounds = [], [], [0.0]
    start = 0.0
    seen = []
    for c in chrom[order]:
        if not seen or seen[-1] != c:
            seen.append(c)
    for c in seen:
        idx = np.flatnonzero(chrom == c)
        width = float(len(idx))
        if bp is not None:
            pos = np.asarray(bp, dtype=np.float64)[idx]
            span = pos.max() - pos.min() if len(pos) else 0.0
            rel = (pos - pos.min()) / span if span > 0 else np.argsort(np.argsort(idx)) / max(1, len(idx) - 1)
        else:
            rel = np.argsort(np.argsort(idx)) / max(1, len(idx) - 1)
        x[idx] = start + rel * width
        ticks.append(start + width / 2)
        labels.append(c)
        start += width
        bounds.append(start)
    return x, ticks, labels, bounds


def manhattan(path, chrom, bp, pvalues, title: str = "", threshold: float | None = None,
              ylabel: str = "-log10 p", highlight=None) -> Path:
    """Manhattan plot of per-SNP p-values (NaN skipped). ``threshold``: a horizontal line at that p."""
    plt = _plt()
    p = np.asarray(pvalues, dtype=np.float64)
    x, ticks, labels, _ = chrom_axis(chrom, bp)
    ok = np.isfinite(p) & (p > 0)
    yv = -np.log10(np.clip(p[ok], 1e-300, 1.0))
    codes = np.searchsorted(np.asarray(ticks), x[ok]) % 2
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.scatter(x[ok], yv, s=3, c=np.where(codes == 0, "#1f4e79", "#7fa7d1"), linewidths=0, rasterized=True)
    if highlight is not None and len(highlight):
        h = np.asarray(highlight)
        hv = np.isfinite(p[h]) & (p[h] > 0)
        ax.scatter(x[h][hv], -np.log10(p[h][hv]), s=14, c="#c0392b", linewidths=0, label="top")
    if threshold:
        ax.axhline(-np.log10(threshold), color="#c0392b", lw=0.8, ls="--")
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlim(x.min() - 1, x.max() + 1) if len(x) else None
    ax.set_ylabel(ylabel)
    ax.set_xlabel("chromosome")
    ax.set_title(title)
    return _save(fig, path)


def _neglog10_chi2(stat):
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log10(np.clip(special.chdtrc(1.0, stat), 1e-300, 1.0))


def map_overview(path, level: np.ndarray, cell: int, chrom_bounds=None, chrom_labels=None,
                 title: str = "", max_px: int = 1024) -> Path:
    """Heat map of a pyramid level (max chi-square per cell shown as -log10 p), upper triangle.

    level: the level-0 grid (or any level), cell: SNPs per pixel of that grid; coarsened by 2 x 2
    max-pools until it is at most ``max_px`` pixels wide. chrom_bounds: SNP-axis boundaries
    (sorted order) of chromosomes, drawn as lines.
    """
    plt = _plt()
    levels = build_levels(level)
    k = 0
    while levels[k].shape[0] > max_px and k + 1 < len(levels):
        k += 1
    img = _neglog10_chi2(levels[k].astype(np.float64))
    px_snps = cell * (2 ** k)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    vmax = np.nanmax(img) if np.isfinite(img).any() else 1.0
    im = ax.imshow(img, cmap="magma_r", origin="upper", interpolation="nearest", vmin=0, vmax=vmax)
    if chrom_bounds is not None:
        for b in chrom_bounds[1:-1]:
            ax.axhline(b / px_snps - 0.5, color="#888", lw=0.3)
            ax.axvline(b / px_snps - 0.5, color="#888", lw=0.3)
        if chrom_labels is not None:
            mids = [(a + b) / 2 / px_snps for a, b in zip(chrom_bounds[:-1], chrom_bounds[1:])]
            ax.set_xticks(mids)
            ax.set_xticklabels(chrom_labels, fontsize=6)
            ax.set_yticks(mids)
            ax.set_yticklabels(chrom_labels, fontsize=6)
    fig.colorbar(im, ax=ax, label="max -log10 p in cell")
    ax.set_title(title or f"pair map overview ({px_snps} SNPs per pixel)")
    return _save(fig, path)


def map_zoom(path, stat: np.ndarray, row_labels, col_labels, title: str = "", mark=None) -> Path:
    """Heat map of exact pair statistics for a window of SNPs (NaN = not tested)."""
    plt = _plt()
    img = _neglog10_chi2(np.asarray(stat, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(img, cmap="magma_r", origin="upper", interpolation="nearest", vmin=0)
    step_r = max(1, len(row_labels) // 12)
    step_c = max(1, len(col_labels) // 12)
    ax.set_yticks(range(0, len(row_labels), step_r))
    ax.set_yticklabels([row_labels[k] for k in range(0, len(row_labels), step_r)], fontsize=6)
    ax.set_xticks(range(0, len(col_labels), step_c))
    ax.set_xticklabels([col_labels[k] for k in range(0, len(col_labels), step_c)], fontsize=6, rotation=90)
    if mark is not None:
        ax.plot([mark[1]], [mark[0]], marker="s", mfc="none", mec="#2ecc71", ms=9)
    fig.colorbar(im, ax=ax, label="-log10 p")
    ax.set_title(title)
    return _save(fig, path)


def pair_boxplots(path, geno_a, geno_b, y, titles=None) -> Path:
    """Phenotype by two-locus genotype (9 classes) for each pair: one panel per pair.

    geno_a / geno_b: lists of (n,) dosage arrays (-1 missing), one pair per panel; y: (n,).
    """
    plt = _plt()
    k = len(geno_a)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for q in range(rows * cols):
        ax = axes[q // cols][q % cols]
        if q >= k:
            ax.axis("off")
            continue
        a, b = np.asarray(geno_a[q]), np.asarray(geno_b[q])
        data, labels = [], []
        for u in range(3):
            for v in range(3):
                sel = (a == u) & (b == v) & np.isfinite(y)
                data.append(y[sel])
                labels.append(f"{u}{v}\nn={int(sel.sum())}")
        keep = [i for i, d in enumerate(data) if len(d)]
        ax.boxplot([data[i] for i in keep], showfliers=False)
        ax.set_xticks(range(1, len(keep) + 1))
        ax.set_xticklabels([labels[i] for i in keep], fontsize=7)
        ax.set_xlabel("genotypes (SNP1 SNP2)")
        ax.set_ylabel("phenotype")
        if titles is not None:
            ax.set_title(titles[q], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
