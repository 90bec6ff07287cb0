"""Heritability proxy: principal component regression on selected SNPs and SNP pairs.

Three feature sets are compared, as in the Next-Gen GWAS paper:

* ``1d``: the selected SNPs (standardised dosages);
* ``1d+top_pairs``: the same SNPs plus the product columns of the top 2D pairs;
* ``1d+random_pairs``: the same SNPs plus as many random pairs (several draws; mean and sd).

Each feature matrix is standardised, decomposed by SVD, and y is regressed on its first k
principal components for k = 1, 2, ...; since the components are orthogonal, R^2(k) is the
cumulative sum of the squared correlations of y with the components. The adjusted R^2,
1 - (1 - R^2)(n - 1)/(n - k - 1), is the heritability proxy as a function of k.

In-sample R^2 of features that were *selected on the same phenotype* is inflated by the selection
(pairs picked for their fit to y fit y, signal or not). For an honest comparison select the SNPs
and pairs on one part of the samples and pass ``rows`` = the other part, or use ``test_rows`` to
also get out-of-sample R^2 (components and coefficients from the other rows).

Pair columns are products of standardised SNP columns, standardised again, the same columns that
the NGG estimator scores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from models.ngg.pairs import n_pairs, pair_from_index, pair_index
from models.scans.design import as_float_dosage, standardize_columns

__all__ = [
    "snp_features",
    "pair_features",
    "pcr_curve",
    "random_pairs",
    "heritability_table",
    "summarize_table",
]

FEATURE_SETS = ("1d", "1d+top_pairs", "1d+random_pairs")


def _standardize_cols(F):
    return standardize_columns(F, tol=1e-12)[0]


def snp_features(X, snps) -> np.ndarray:
    """Standardised dosage columns of the given SNPs (missing = column mean)."""
    snps = np.asarray(snps, dtype=np.int64).ravel()
    return _standardize_cols(as_float_dosage(np.asarray(X)[:, snps]))


def pair_features(X, pairs) -> np.ndarray:
    """Standardised products of standardised SNP columns for (k, 2) pairs."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.shape[0] == 0:
        return np.zeros((np.asarray(X).shape[0], 0))
    Z = _standardize_cols(as_float_dosage(np.asarray(X)[:, np.unique(pairs)]))
    pos = {s: k for k, s in enumerate(np.unique(pairs))}
    ia = np.array([pos[a] for a in pairs[:, 0]])
    ib = np.array([pos[b] for b in pairs[:, 1]])
    return _standardize_cols(Z[:, ia] * Z[:, ib])


def pcr_curve(F, y, max_components: int | None = None, test_F=None, test_y=None) -> dict:
    """R^2 and adjusted R^2 of y on the first k principal components of F, k = 1..K.

    F: (n, q) features (standardised here), y: (n,). K = min(q, n - 2, max_components).
    With test_F / test_y, also the out-of-sample R^2 of the same fits on those rows (features
    standardised with the training rows' statistics).
    """
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    n, q = F.shape
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} values, F has {n} rows")
    mu = F.mean(axis=0)
    sd = F.std(axis=0)
    sd_safe = np.where(sd > 1e-12, sd, 1.0)
    Fs = np.where(sd > 1e-12, (F - mu) / sd_safe, 0.0)
    yc = y - y.mean()
    U, S, Vt = np.linalg.svd(Fs, full_matrices=False)
    rank = int(np.sum(S > S.max() * 1e-10)) if S.size else 0
    K = min(rank, n - 2)
    if max_components is not None:
        K = min(K, int(max_components))
    k = np.arange(1, K + 1)
    proj = U[:, :K].T @ yc
    sst = float(yc @ yc)
    r2 = np.cumsum(proj**2) / sst if sst > 0 else np.zeros(K)
    adj = 1.0 - (1.0 - r2) * (n - 1) / (n - k - 1)
    out = {"n_components": k, "r2": r2, "adj_r2": adj}
    if test_F is not None:
        Ft = np.asarray(test_F, dtype=np.float64)
        yt = np.asarray(test_y, dtype=np.float64).ravel()
        Fts = np.where(sd > 1e-12, (Ft - mu) / sd_safe, 0.0)
        scores = Fts @ Vt[:K].T  # (nt, K) test scores on the training components
        coef = proj / S[:K]  # regression of yc on each training score column U S
        pred = y.mean() + np.cumsum(scores * coef, axis=1)  # prediction with the first k PCs
        sst_t = float(((yt - yt.mean()) ** 2).sum())
        sse = ((yt[:, None] - pred) ** 2).sum(axis=0)
        out["r2_test"] = 1.0 - sse / sst_t if sst_t > 0 else np.zeros(K)
    return out


def random_pairs(n_snps_or_ids, k: int, rng, exclude=None) -> np.ndarray:
    """k distinct pairs drawn uniformly among all pairs of the given SNPs, avoiding ``exclude``.

    n_snps_or_ids: an int p (pairs of 0..p-1) or an array of SNP indices to pair up.
    """
    ids = np.arange(n_snps_or_ids) if np.isscalar(n_snps_or_ids) else np.asarray(n_snps_or_ids)
    m = ids.size
    total = n_pairs(m)
    if k > total:
        raise ValueError(f"cannot draw {k} distinct pairs among {m} SNPs")
    banned = set()
    if exclude is not None and len(exclude):
        ex = np.sort(np.asarray(exclude, dtype=np.int64).reshape(-1, 2), axis=1)
        pos = np.searchsorted(ids, ex)
        pos = np.clip(pos, 0, m - 1)
        ok = (ids[pos] == ex).all(axis=1)
        if ok.any():
            banned = set(pair_index(pos[ok, 0], pos[ok, 1], m).tolist())
    chosen: list[int] = []
    seen = set(banned)
    while len(chosen) < k:
        draw = rng.integers(0, total, size=2 * (k - len(chosen)) + 8)
        for v in draw.tolist():
            if v not in seen:
                seen.add(v)
                chosen.append(v)
                if len(chosen) == k:
                    break
    i, j = pair_from_index(np.asarray(chosen, dtype=np.int64), m)
    return np.column_stack([ids[i], ids[j]])


def heritability_table(
    X,
    y,
    snps,
    top_pairs,
    *,
    n_random: int = 5,
    max_components: int | None = None,
    seed: int = 0,
    rows=None,
    test_rows=None,
    pair_pool=None,
):
    """PCR adjusted R^2 by number of components for the three feature sets (a pandas DataFrame).

    X: (n, p) dosages; y: (n,) phenotype (NaN rows dropped); snps: selected SNP indices; top_pairs:
    (k, 2) selected pairs. Random pairs: k pairs per draw, uniform among pairs of ``pair_pool``
    (default: all SNPs polymorphic in the rows used), never one of the top pairs. rows: the rows
    to fit on (default all); test_rows: rows for out-of-sample R^2 (column 'r2_test').

    Columns: feature_set, draw (0 for 1d and top pairs), n_features, n_components, r2, adj_r2
    [, r2_test]. :func:`summarize_table` averages the random draws.
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.float64).ravel()
    n = X.shape[0]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    rows = rows[np.isfinite(y[rows])]
    if test_rows is not None:
        test_rows = np.asarray(test_rows)
        test_rows = test_rows[np.isfinite(y[test_rows])]
    snps = np.asarray(snps, dtype=np.int64).ravel()
    top_pairs = np.sort(np.asarray(top_pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    rng = np.random.default_rng(seed)
    if pair_pool is None:
        Xr = as_float_dosage(X[rows])
        pair_pool = np.flatnonzero(np.nanstd(Xr, axis=0) > 0)
    pair_pool = np.unique(np.asarray(pair_pool, dtype=np.int64))

    def features(r, pairs):
        cols = [snp_features(X[r], snps)] if snps.size else []
        if pairs is not None and len(pairs):
            cols.append(pair_features(X[r], pairs))
        return np.hstack(cols) if cols else np.zeros((len(r), 0))

    def curve(pairs):
        F = features(rows, pairs)
        if test_rows is None:
            return F.shape[1], pcr_curve(F, y[rows], max_components)
        return F.shape[1], pcr_curve(F, y[rows], max_components, features(test_rows, pairs),
                                     y[test_rows])

    records = []

    def add(name, draw, q, c):
        for t in range(c["n_components"].size):
            rec = {"feature_set": name, "draw": draw, "n_features": q,
                   "n_components": int(c["n_components"][t]), "r2": float(c["r2"][t]),
                   "adj_r2": float(c["adj_r2"][t])}
            if "r2_test" in c:
                rec["r2_test"] = float(c["r2_test"][t])
            records.append(rec)

    add("1d", 0, *curve(None))
    add("1d+top_pairs", 0, *curve(top_pairs))
    for draw in range(n_random):
        rp = random_pairs(pair_pool, top_pairs.shape[0], rng, exclude=top_pairs)
        add("1d+random_pairs", draw, *curve(rp))
    return pd.DataFrame.from_records(records)


def summarize_table(table):
    """Mean and sd over random draws: one row per (feature_set, n_components)."""
    value_cols = [c for c in ("r2", "adj_r2", "r2_test") if c in table.columns]
    g = table.groupby(["feature_set", "n_components"], sort=False)
    out = g[value_cols + ["n_features"]].mean()
    sd = g[value_cols].std(ddof=1).fillna(0.0).add_suffix("_sd")
    out = out.join(sd).reset_index()
    out["n_features"] = out["n_features"].round().astype(int)
    return out
