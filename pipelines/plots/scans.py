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
from pipelines.plots.style import set_chrom_axis, short_chrom

__all__ = ["manhattan", "map_overview", "map_zoom", "pair_boxplots", "chrom_axis", "genotype_labels"]


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
              ylabel: str = "-log10 p", highlight=None, threshold_label: str | None = None,
              highlight_label: str = "top SNPs") -> Path:
    """Manhattan plot of per-SNP p-values (NaN skipped), chromosome labels on two rows where they
    would overlap. ``threshold``: a dashed line at that p (legend: ``threshold_label``);
    ``highlight``: SNP indices drawn in red (legend: ``highlight_label``)."""
    plt = _plt()
    p = np.asarray(pvalues, dtype=np.float64)
    x, ticks, labels, _ = chrom_axis(chrom, bp)
    ok = np.isfinite(p) & (p > 0)
    yv = -np.log10(np.clip(p[ok], 1e-300, 1.0))
    codes = np.searchsorted(np.asarray(ticks), x[ok]) % 2
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.scatter(x[ok], yv, s=3, c=np.where(codes == 0, "#1f4e79", "#7fa7d1"), linewidths=0, rasterized=True)
    handles = False
    if highlight is not None and len(highlight):
        h = np.asarray(highlight)
        hv = np.isfinite(p[h]) & (p[h] > 0)
        ax.scatter(x[h][hv], -np.log10(p[h][hv]), s=16, c="#c0392b", linewidths=0, label=highlight_label, zorder=3)
        handles = True
    if threshold:
        ax.axhline(-np.log10(threshold), color="#c0392b", lw=0.8, ls="--",
                   label=threshold_label or f"threshold p = {threshold:.2g}")
        handles = True
    if len(x):
        span = float(x.max() - x.min()) or 1.0
        set_chrom_axis(ax, ticks, labels, span)
        ax.set_xlim(x.min() - 0.005 * span, x.max() + 0.005 * span)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("chromosome")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    if handles:
        ax.legend(loc="upper right", fontsize=8, frameon=True, framealpha=0.9)
    return _save(fig, path)


def _neglog10_chi2(stat):
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log10(np.clip(special.chdtrc(1.0, stat), 1e-300, 1.0))


def map_overview(path, level: np.ndarray, cell: int, chrom_bounds=None, chrom_labels=None,
                 title: str = "", max_px: int = 128, marks=None) -> Path:
    """Heat map of the pair map (max chi-square per cell shown as -log10 p), upper triangle.

    level: the level-0 grid (or any level), cell: SNPs per pixel of that grid. The grid is
    max-pooled (2 x 2) until at most ``max_px`` cells wide, so that every cell covers several
    screen pixels and a single strong pair stays visible as a dark cell (a finer grid would be
    thinned by the display). The colour scale starts at the median cell, so the background is pale.
    chrom_bounds: SNP-axis boundaries (sorted order) of chromosomes, drawn as lines.
    marks: ``[(row, col, label), ...]`` SNP-axis positions of pairs to circle and label (e.g. the
    top pairs), listed in a key beside the map.
    """
    plt = _plt()
    levels = build_levels(level)
    k = 0
    while levels[k].shape[0] > max_px and k + 1 < len(levels):
        k += 1
    img = _neglog10_chi2(levels[k].astype(np.float64))
    px_snps = cell * (2 ** k)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    finite = img[np.isfinite(img)]
    vmax = float(finite.max()) if finite.size else 1.0
    vmin = float(np.median(finite)) if finite.size else 0.0
    vmin = min(vmin, 0.9 * vmax)
    im = ax.imshow(img, cmap="magma_r", origin="upper", interpolation="nearest", vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, label="max -log10 p of the pairs in a cell", shrink=0.8)
    if chrom_bounds is not None:
        for b in chrom_bounds[1:-1]:
            ax.axhline(b / px_snps - 0.5, color="#bbb", lw=0.3)
            ax.axvline(b / px_snps - 0.5, color="#bbb", lw=0.3)
        if chrom_labels is not None:
            mids = [(a + b) / 2 / px_snps - 0.5 for a, b in zip(chrom_bounds[:-1], chrom_bounds[1:])]
            span = img.shape[1]
            set_chrom_axis(ax, mids, chrom_labels, span, fontsize=6)
            set_chrom_axis(ax, mids, chrom_labels, span, fontsize=6, axis="y")
            ax.set_xlabel("chromosome")
            ax.set_ylabel("chromosome")
    if marks:
        key = []
        pts = [(max(r, c) / px_snps - 0.5, min(r, c) / px_snps - 0.5) for r, c, _ in marks]  # upper triangle
        ax.apply_aspect()
        box = ax.get_position()
        per_pt = img.shape[1] / max(box.width * fig.get_figwidth() * 72, 1.0)   # cells per point
        offsets = ((-15, 5), (8, 5), (8, -13), (-15, -13))
        for n, ((cc, rr), (_, _, label)) in enumerate(zip(pts, marks), start=1):
            ax.plot([cc], [rr], marker="o", ms=13, mfc="none", mec="#0b6e4f", mew=1.6)
            others = [q for q in pts if q != (cc, rr)]

            def room(o):   # distance from the number to the nearest other circle (y grows downwards)
                x, y = cc + o[0] * per_pt, rr - o[1] * per_pt
                return min([np.hypot(x - a, y - b) for a, b in others] + [20 * per_pt])   # ties: first offset

            best = max(offsets, key=room)
            ax.annotate(str(n), (cc, rr), xytext=best, textcoords="offset points", fontsize=8,
                        color="#0b6e4f", fontweight="bold")
            key.append(f"{n}  {label}")
        ax.text(0.02, 0.02, "circled pairs (best first)\n" + "\n".join(key), transform=ax.transAxes,
                va="bottom", ha="left", fontsize=7, family="monospace", color="0.15",
                bbox={"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9, "boxstyle": "round,pad=0.3"})
    ax.set_title(title or "pair map overview", fontsize=10)
    fig.text(0.01, 0.005, f"{px_snps} SNPs per cell side (max over the cell's pairs); colour scale from the "
             f"median cell ({vmin:.1f})", fontsize=7, color="0.35")
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


def _allele(a) -> str:
    a = str(a)
    return a if len(a) <= 3 else a[:2] + "…"


def genotype_labels(a1, a2) -> list[str]:
    """Genotype names for dosages 0, 1, 2 of the counted allele ``a1`` (other allele ``a2``):
    ``a2a2``, ``a2a1``, ``a1a1`` (e.g. ``TT``, ``TC``, ``CC``); alleles longer than 3 characters are cut."""
    x, y = _allele(a1), _allele(a2)
    sep = "/" if max(len(x), len(y)) > 1 else ""
    return [f"{y}{sep}{y}", f"{y}{sep}{x}", f"{x}{sep}{x}"]


def pair_boxplots(path, geno_a, geno_b, y, titles=None, alleles=None) -> Path:
    """Phenotype by two-locus genotype (9 classes) for each pair: one panel per pair.

    geno_a / geno_b: lists of (n,) dosage arrays (-1 missing), one pair per panel; y: (n,).
    alleles: per pair ``((a1, a2), (a1, a2))``, the counted and the other allele of each SNP (as
    in a PLINK .bim): genotypes are then labelled by their alleles, else by the dosage 0/1/2.
    """
    plt = _plt()
    k = len(geno_a)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.9 * rows), squeeze=False)
    for q in range(rows * cols):
        ax = axes[q // cols][q % cols]
        if q >= k:
            ax.axis("off")
            continue
        a, b = np.asarray(geno_a[q]), np.asarray(geno_b[q])
        if alleles is not None and alleles[q] is not None:
            (a1, a2), (b1, b2) = alleles[q]
            names_a, names_b = genotype_labels(a1, a2), genotype_labels(b1, b2)
            xlabel = f"genotype SNP1 (counted {_allele(a1)}) / SNP2 (counted {_allele(b1)})"
        else:
            names_a = names_b = ["0", "1", "2"]
            xlabel = "dosage SNP1 / SNP2"
        data, labels = [], []
        for u in range(3):
            for v in range(3):
                sel = (a == u) & (b == v) & np.isfinite(y)
                data.append(y[sel])
                labels.append(f"{names_a[u]}\n{names_b[v]}\nn={int(sel.sum())}")
        keep = [i for i, d in enumerate(data) if len(d)]
        ax.boxplot([data[i] for i in keep], showfliers=False, medianprops={"color": "#c0392b"})
        ax.set_xticks(range(1, len(keep) + 1))
        ax.set_xticklabels([labels[i] for i in keep], fontsize=7)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("phenotype")
        ax.spines[["top", "right"]].set_visible(False)
        if titles is not None:
            ax.set_title(titles[q], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def overview_marks(top, axis_pos: dict, n: int = 5, sep: int | None = None) -> list[tuple[int, int, str]]:
    """Marks for :func:`map_overview`: the best ``n`` distinct pairs of a top-pairs table (best
    first; columns snp1, snp2, chrom1, bp1, chrom2, bp2 and p or score). A pair is skipped when a
    marked pair lies within ``sep`` SNP-axis positions of both its SNPs (LD copies of one locus
    pair; default 0.5 % of the SNPs). axis_pos: SNP id -> position on the map's sorted SNP axis."""
    sep = max(1, len(axis_pos) // 200) if sep is None else sep
    kept: list[tuple[int, int, str]] = []
    for r in top.itertuples():
        a, b = axis_pos.get(str(r.snp1)), axis_pos.get(str(r.snp2))
        if a is None or b is None:
            continue
        a, b = min(a, b), max(a, b)
        if any(abs(a - ka) <= sep and abs(b - kb) <= sep for ka, kb, _ in kept):
            continue
        val = f"p={r.p:.1e}" if hasattr(r, "p") else f"score={r.score:.3g}"
        loc = (f"{short_chrom(r.chrom1)}:{int(r.bp1) / 1e6:.2f} x {short_chrom(r.chrom2)}:{int(r.bp2) / 1e6:.2f} Mb"
               if hasattr(r, "bp1") else f"{r.snp1} x {r.snp2}")
        kept.append((a, b, f"{loc}  {val}"))
        if len(kept) >= n:
            break
    return kept


def snp_alleles(snps, i: int, j: int):
    """``((a1, a2), (a1, a2))`` of SNP rows ``i`` and ``j`` of a SNP table (``a1`` counted), for
    :func:`pair_boxplots`; None when the table has no allele columns."""
    if "a1" not in snps or "a2" not in snps:
        return None
    a1, a2 = snps["a1"].to_numpy(), snps["a2"].to_numpy()
    return (a1[i], a2[i]), (a1[j], a2[j])
