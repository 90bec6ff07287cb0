"""The figures of one model's cross-validation, logged on its MLflow parent run: the out-of-fold
ROC curve of every repeat (with the chance diagonal and the AUCs in the legend) and the fold AUCs
per repeat (with the mean +- sd over all folds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _roc(y: np.ndarray, p: np.ndarray):
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    return fpr, tpr, float(roc_auc_score(y, p))


def plot_model_roc(oof: pd.DataFrame, name: str, path, max_repeats: int = 10) -> Path:
    """ROC of the pooled out-of-fold predictions of each repeat (columns ``repeat``, ``y``,
    ``proba``), at most ``max_repeats`` curves; repeat 0 drawn in colour, the others in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.plots.style import colour

    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    repeats = sorted(oof["repeat"].unique())[:max_repeats]
    aucs = []
    for r in repeats[::-1]:                       # repeat 0 last, on top
        d = oof[oof["repeat"] == r]
        fpr, tpr, auc = _roc(d["y"].to_numpy(), d["proba"].to_numpy())
        aucs.append(auc)
        if r == repeats[0]:
            ax.plot(fpr, tpr, color=colour(0), lw=1.8, label=f"repeat {r}: AUC {auc:.3f}", zorder=3)
        else:
            ax.plot(fpr, tpr, color="0.65", lw=0.8, alpha=0.8, zorder=2,
                    label=f"repeats {repeats[1]}-{repeats[-1]}" if r == repeats[-1] else None)
    ax.plot([0, 1], [0, 1], ls="--", c="0.3", lw=1, label="chance (AUC 0.5)", zorder=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    spread = f", pooled AUC {min(aucs):.3f}-{max(aucs):.3f} over {len(aucs)} repeats" if len(aucs) > 1 else ""
    ax.set_title(f"{name}: out-of-fold ROC{spread}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_model_fold_aucs(folds: pd.DataFrame, name: str, path) -> Path:
    """Each fold's test AUC (columns ``repeat``, ``fold``, ``auc``) as a point per repeat, with the
    mean over all folds and +- 1 sd as a band; chance at 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.plots.style import MARKERS, colour

    aucs = folds["auc"].to_numpy(dtype=float)
    mean = float(np.mean(aucs))
    sd = float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0
    repeats = sorted(folds["repeat"].unique())
    fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * len(repeats) + 4.0), 3.6))
    ax.axhspan(mean - sd, mean + sd, color=colour(0), alpha=0.12, lw=0, label=f"mean ± sd: {mean:.3f} ± {sd:.3f}")
    ax.axhline(mean, color=colour(0), lw=1.2)
    ax.axhline(0.5, color="0.3", ls="--", lw=1, label="chance (0.5)")
    folds_ids = sorted(folds["fold"].unique())
    for j, k in enumerate(folds_ids):
        d = folds[folds["fold"] == k]
        x = d["repeat"].to_numpy() + (j - (len(folds_ids) - 1) / 2) * 0.12
        ax.scatter(x, d["auc"], s=22, marker=MARKERS[j % len(MARKERS)], color=colour(j + 1), zorder=3,
                   label=f"fold {k}")
    ax.set_xticks(repeats)
    ax.set_xlim(min(repeats) - 0.6, max(repeats) + 0.6)
    ax.set_xlabel("repeat of the K-fold split")
    ax.set_ylabel("test ROC AUC")
    lo = min(0.45, float(np.min(aucs)) - 0.02)
    hi = max(0.55, float(np.max(aucs)) + 0.02)
    ax.set_ylim(lo, min(1.0, hi))
    ax.set_title(f"{name}: ROC AUC of each of the {len(aucs)} CV folds", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def model_run_figures(oof: pd.DataFrame, folds: pd.DataFrame, name: str, out_dir) -> list[Path]:
    """``roc.png`` and ``fold_auc.png`` of one model's CV in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [plot_model_roc(oof, name, out_dir / "roc.png"),
            plot_model_fold_aucs(folds, name, out_dir / "fold_auc.png")]
