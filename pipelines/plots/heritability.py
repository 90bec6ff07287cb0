"""Figure of the heritability proxy: adjusted R^2 of principal component regression against the
number of components, one line per feature set (:mod:`models.ngg.heritability`)."""
from __future__ import annotations

from pathlib import Path

from models.ngg.heritability import FEATURE_SETS, summarize_table

__all__ = ["plot_heritability"]


def plot_heritability(table, path, *, title: str | None = None, value: str = "adj_r2") -> Path:
    """Write a PNG of ``value`` (adjusted R^2 by default) against the number of components.

    One line per feature set; the random-pairs line is the mean over draws with a +-1 sd band.
    Uses matplotlib's Agg canvas directly (no global backend change, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize_table(table)
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"1d": ("tab:blue", "1D SNPs"), "1d+top_pairs": ("tab:red", "1D + top 2D pairs"),
              "1d+random_pairs": ("tab:gray", "1D + random pairs")}
    for name in FEATURE_SETS:
        sub = summary[summary["feature_set"] == name]
        if sub.empty:
            continue
        color, label = styles[name]
        x = sub["n_components"].to_numpy()
        v = sub[value].to_numpy()
        ax.plot(x, v, color=color, label=label, lw=1.6)
        sdc = f"{value}_sd"
        if name == "1d+random_pairs" and sdc in sub and (sub[sdc] > 0).any():
            s = sub[sdc].to_numpy()
            ax.fill_between(x, v - s, v + s, color=color, alpha=0.25, lw=0)
    ax.set_xlabel("number of principal components")
    ax.set_ylabel({"adj_r2": "adjusted R$^2$", "r2": "R$^2$", "r2_test": "held-out R$^2$"}.get(value, value))
    ax.axhline(0, color="k", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
