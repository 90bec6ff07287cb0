"""Evaluation statistics for repeated cross-validation.

- :func:`corrected_resampled_ttest`: Nadeau & Bengio (2003) corrected resampled t-test between two
  models scored on the same R x K folds (Bouckaert & Frank 2004 use it for repeated K-fold).
- :func:`learning_curve_subsets`: nested, stratified, seeded training subsets (same for every model).
- :func:`crossover_size`: where one learning curve overtakes another (linear interpolation).
- :func:`auc_summary`: mean and sd of fold AUCs.
- :func:`rank_auc`: ROC AUC by the rank-sum formula.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class TTestResult:
    mean_diff: float           # mean of (a - b) over folds
    sd_diff: float             # sample sd of the differences (ddof=1)
    t: float
    p_value: float             # two-sided unless alternative says otherwise
    df: int
    n_folds: int
    test_train_ratio: float    # n_test / n_train used in the correction
    p_value_naive: float       # the uncorrected paired t-test, for comparison

    def as_dict(self) -> dict:
        return asdict(self)


def corrected_resampled_ttest(scores_a: Sequence[float], scores_b: Sequence[float], *,
                              n_train: float, n_test: float,
                              alternative: str = "two-sided") -> TTestResult:
    """Nadeau-Bengio corrected resampled t-test on paired fold scores.

    With d_j = a_j - b_j over J = R*K folds, mean m and sample variance s^2,
    ``t = m / sqrt((1/J + n_test/n_train) * s^2)`` with J - 1 degrees of freedom. The
    ``n_test/n_train`` term accounts for the overlap of training sets between folds, which makes
    the plain paired t-test (``1/J`` alone) far too liberal. ``n_train``/``n_test`` are the
    (average) fold sizes. ``alternative``: 'two-sided', 'greater' (a > b) or 'less'.
    """
    a = np.asarray(scores_a, np.float64).ravel()
    b = np.asarray(scores_b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"need paired scores on the same folds: {a.size} vs {b.size}")
    j = a.size
    if j < 2:
        raise ValueError("need at least 2 folds")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("fold scores must be finite")
    if n_train <= 0 or n_test <= 0:
        raise ValueError("n_train and n_test must be positive")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"unknown alternative '{alternative}'; valid: two-sided, greater, less")
    d = a - b
    m = float(d.mean())
    s2 = float(d.var(ddof=1))
    ratio = float(n_test) / float(n_train)
    df = j - 1

    def p_of(var_factor: float) -> tuple[float, float]:
        se2 = var_factor * s2
        if se2 <= 0:
            t = 0.0 if m == 0 else float(np.sign(m) * np.inf)
        else:
            t = m / np.sqrt(se2)
        if alternative == "two-sided":
            p = 2 * sps.t.sf(abs(t), df)
        elif alternative == "greater":
            p = sps.t.sf(t, df)
        else:
            p = sps.t.cdf(t, df)
        return float(t), float(min(1.0, p))

    t, p = p_of(1.0 / j + ratio)
    _, p_naive = p_of(1.0 / j)
    return TTestResult(mean_diff=m, sd_diff=float(np.sqrt(s2)), t=t, p_value=p, df=df,
                       n_folds=j, test_train_ratio=ratio, p_value_naive=p_naive)


def rank_auc(y, score) -> float:
    """ROC AUC of ``score`` for 0/1 (or bool) labels ``y`` by the rank-sum formula, ties counted
    half; NaN when ``y`` holds one class."""
    y = np.asarray(y).ravel() == 1
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = sps.rankdata(np.asarray(score, dtype=np.float64).ravel())
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_summary(aucs: Sequence[float]) -> dict:
    a = np.asarray(aucs, np.float64)
    return {"auc_mean": float(a.mean()), "auc_sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "n_folds": int(a.size)}


LEARNING_CURVE_FRACTIONS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def learning_curve_subsets(train_idx: Sequence[int], y: Sequence[int],
                           fractions: Sequence[float] = LEARNING_CURVE_FRACTIONS, *,
                           seed: int = 0) -> dict[float, np.ndarray]:
    """Nested stratified subsets of one training fold: {fraction: sorted sample indices}.

    ``y`` is indexed by sample (``y[train_idx]`` are the fold's labels). Each class is permuted
    once (seeded), and a fraction f keeps the first round(f * n_class) samples of every class, so
    subsets are nested (10 % inside 20 % ...), keep the class ratio, hold at least one sample of
    each class, and are identical for every model given the same fold and seed.
    """
    train_idx = np.asarray(train_idx, np.int64)
    y = np.asarray(y)
    fr = [float(f) for f in fractions]
    if any(not 0 < f <= 1 for f in fr):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    rng = np.random.default_rng(seed)
    labels = y[train_idx]
    perms = {c: rng.permutation(train_idx[labels == c]) for c in np.unique(labels)}
    out = {}
    for f in fr:
        parts = [p[:max(1, int(round(f * p.size)))] for p in perms.values()]
        out[f] = np.sort(np.concatenate(parts))
    return out


def crossover_size(sizes: Sequence[float], curve_a: Sequence[float],
                   curve_b: Sequence[float]) -> float | None:
    """Smallest training size where curve_a (e.g. a sparse net) reaches curve_b (an additive
    model) and stays at or above it, by linear interpolation of a - b between the measured sizes.
    Returns the first size if a >= b everywhere, None if a ends below b."""
    x = np.asarray(sizes, np.float64)
    d = np.asarray(curve_a, np.float64) - np.asarray(curve_b, np.float64)
    if not (x.size == d.size and x.size >= 1):
        raise ValueError("sizes and curves must have the same non-zero length")
    order = np.argsort(x)
    x, d = x[order], d[order]
    if d[-1] < 0:
        return None
    below = np.flatnonzero(d < 0)
    if below.size == 0:
        return float(x[0])
    i = below[-1]                     # last size where a is below b; a >= b from i+1 on
    x0, x1, d0, d1 = x[i], x[i + 1], d[i], d[i + 1]
    return float(x0 + (x1 - x0) * (-d0) / (d1 - d0)) if d1 != d0 else float(x1)
