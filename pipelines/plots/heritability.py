"""Figure of the heritability proxy: adjusted R^2 of principal component regression against the
number of components, one line per feature set (:mod:`models.ngg.heritability`)."""
from __future__ import annotations

from pathlib import Path

from models.ngg.heritability import FEATURE_SETS, summarize_table

__all__ = ["plot_heritability"]


def plot_heritability(table, path, *, title: str | None = None, value: str = "adj_r2",
                      planted: dict | None = None) -> Path:
    """Write a PNG of ``value`` (adjusted R^2 by default) against the number of components.

    One line per feature set; the random-pairs line is the mean over draws with a +-1 sd band.
    planted: the simulated trait's realised ``h2_add`` and ``h2_int`` (truth.json): horizontal
    lines at the planted additive h2 and at the total, what the SNPs and pairs could explain.
    Uses matplotlib's Agg canvas directly (no global backend change, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize_table(table)
    fig = Figure(figsize=(6.8, 5.4 if planted else 5.0), dpi=120)
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
            n_draws = table.loc[table["feature_set"] == name, "draw"].nunique() if "draw" in table else 0
            draws = f" over {n_draws} draws" if n_draws else ""
            ax.fill_between(x, v - s, v + s, color=color, alpha=0.25, lw=0,
                            label=f"random pairs: mean ± 1 sd{draws}")
    if planted:
        h_add, h_int = float(planted.get("h2_add", 0.0)), float(planted.get("h2_int", 0.0))
        if h_add + h_int > 0:
            ax.axhline(h_add + h_int, color="k", ls="--", lw=1.1,
                       label=f"planted h$^2$ total = {h_add + h_int:.2f} (SNPs {h_add:.2f} + pairs {h_int:.2f})")
        if h_add > 0 and h_int > 0:
            ax.axhline(h_add, color="tab:blue", ls=":", lw=1.1, label=f"planted h$^2$ of the SNPs = {h_add:.2f}")
    ax.set_xlabel("number of principal components")
    ax.set_ylabel({"adj_r2": "adjusted R$^2$", "r2": "R$^2$", "r2_test": "held-out R$^2$"}.get(value, value))
    ax.axhline(0, color="k", lw=0.5)
    ax.grid(alpha=0.3)
    # below the axes: the curves fill the plot, a legend inside would hide them
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
