"""Shared figure style: a qualitative palette whose colours stay apart for up to 20 series (ROC
curves of every model, learning curves), and chromosome tick labels that do not overlap."""
from __future__ import annotations

import numpy as np

# Ordered so that any prefix is well separated (the first 10 are matplotlib's tab10; then darker or
# more saturated hues that differ from all of those); colour-blind-safe for the first 8.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#000000", "#00008b", "#ff00ff", "#006400", "#ffd700", "#8b0000",
           "#00ced1", "#a0522d", "#7cfc00", "#4b0082")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def colour(i: int) -> str:
    """The i-th series colour (cycles after :data:`PALETTE`)."""
    return PALETTE[i % len(PALETTE)]


def linestyle(i: int) -> str:
    """Solid for the first :data:`PALETTE` series, then other dash patterns (so colours that
    repeat beyond 20 series still differ)."""
    return LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]


def chrom_tick_rows(ticks, labels, units_per_point: float, fontsize: float = 8):
    """Split chromosome labels over two rows so that neighbours do not overlap.

    ticks: label positions in data units, ``units_per_point``: data units per typographic point
    along the axis; a label goes to the first row whose previous label is at least the two labels'
    half-widths (plus a small gap) away, and is left out (tick only) when both rows are taken
    there. Returns ((ticks, labels) of row 0, (ticks, labels) of row 1).
    """
    def half(lb):
        return (0.62 * fontsize * len(str(lb)) / 2 + 1.5) * units_per_point

    last: list = [None, None]
    rows: tuple[list, list] = ([], [])
    for t, lb in zip(ticks, labels):
        for r in (0, 1):
            prev = last[r]
            if prev is None or t - prev[0] >= half(prev[1]) + half(lb):
                rows[r].append((t, lb))
                last[r] = (t, lb)
                break
    return tuple((np.array([t for t, _ in row], dtype=float), [lb for _, lb in row]) for row in rows)


def short_chrom(label) -> str:
    """``chr7`` -> ``7`` (the axis says "chromosome")."""
    s = str(label)
    return s[3:] if s.lower().startswith("chr") and len(s) > 3 else s


def set_chrom_axis(ax, ticks, labels, span: float, fontsize: float = 8, axis: str = "x") -> None:
    """Chromosome labels on the x (or y) axis, on two rows where they would overlap. span: the
    data range the axis shows (its length in points is taken from the axes' current size)."""
    labels = [short_chrom(lb) for lb in labels]
    fig = ax.figure
    ax.apply_aspect()           # an image axes (aspect 1) is smaller than its subplot box
    box = ax.get_position()
    length_pt = (box.width * fig.get_figwidth() if axis == "x" else box.height * fig.get_figheight()) * 72
    (t0, l0), (t1, l1) = chrom_tick_rows(ticks, labels, span / max(length_pt, 1.0), fontsize)
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_labels = ax.set_xticklabels if axis == "x" else ax.set_yticklabels
    set_ticks(t0)
    set_labels(l0, fontsize=fontsize)
    set_ticks(t1, minor=True)
    set_labels(l1, minor=True, fontsize=fontsize)
    ax.tick_params(axis=axis, which="minor", length=3.5 + 1.4 * fontsize, pad=2, width=0.6)
