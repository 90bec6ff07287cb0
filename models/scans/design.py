"""Shared design-matrix helpers of the scans, NGG, the heritability proxy and the simulators.

One home for the three operations every consumer used to reimplement:

* :func:`as_float_dosage`: float64 dosages with NaN for missing calls (integer inputs mark missing
  calls with negative values, as the PLINK readers' int8 ``-1``);
* :func:`standardize_columns`: column centring and scaling (mean-imputed missing values, population
  standard deviation; columns whose sd is at most ``tol`` become zeros);
* :func:`covariate_basis`: the orthonormal basis of ``[1, covariates]`` (collinear columns dropped)
  that the exact 1D scan, the 2D phenotype residualisation and NGG project on.

* :func:`standardize_genotypes`: the chunked, device-side (NumPy or CuPy) variant of
  :func:`standardize_columns` for genotype matrices too large to hold in float64, optionally
  residualised on a covariate basis (NGG's preprocessing).
"""
from __future__ import annotations

import numpy as np

from models.backend import to_numpy

__all__ = ["as_float_dosage", "standardize_columns", "standardize_genotypes", "covariate_basis"]


def as_float_dosage(X) -> np.ndarray:
    """Float dosages with NaN for missing (integer inputs use negative values for missing)."""
    X = np.asarray(X)
    if X.dtype.kind in "iu":
        out = X.astype(np.float64)
        out[X < 0] = np.nan
        return out
    return X.astype(np.float64)


def standardize_columns(F, tol: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred, unit-variance columns of a float (n, q) array with NaN for missing values.

    Missing values become the column mean (0 after centring); columns with sd <= ``tol`` become 0.
    Returns (Z, sd, mean); sd is the population standard deviation of the mean-imputed column.
    """
    F = np.asarray(F, dtype=np.float64)
    mu = np.nanmean(F, axis=0) if F.size else np.zeros(F.shape[1])
    Z = np.where(np.isnan(F), 0.0, F - mu)
    sd = Z.std(axis=0)
    return np.where(sd > tol, Z / np.where(sd > tol, sd, 1.0), 0.0), sd, mu


def standardize_genotypes(X, xp=np, dtype=np.float32, covariates_q=None, chunk: int = 8192):
    """Column-standardised genotypes as a (p, n) array of module xp (transposed: rows are SNPs).

    X: (n, p) dosages, float (NaN = missing) or integer (negative = missing, as PLINK readers
    return int8 with -1). Missing dosages are set to the column mean (0 after standardisation). With
    ``covariates_q`` (an n x c orthonormal basis that includes the intercept) each column is
    residualised on it and re-standardised. Returns (ZT, sd) where sd is each column's standard
    deviation after these steps (0 for monomorphic columns, whose rows are all zero).
    """
    X = np.asarray(X)
    n, p = X.shape
    ZT = xp.empty((p, n), dtype=dtype)
    sd_all = np.empty(p, dtype=np.float64)
    Q = None if covariates_q is None else xp.asarray(covariates_q, dtype=dtype)
    for c0 in range(0, p, chunk):
        c1 = min(p, c0 + chunk)
        raw = np.ascontiguousarray(X[:, c0:c1].T)
        miss = xp.asarray(raw < 0 if raw.dtype.kind in "iu" else np.isnan(raw))
        blk = xp.asarray(raw, dtype=xp.float64)
        cnt = (~miss).sum(axis=1)
        blk = xp.where(miss, 0.0, blk)
        mean = blk.sum(axis=1) / xp.maximum(cnt, 1)
        blk = xp.where(miss, 0.0, blk - mean[:, None])
        sd0 = xp.sqrt((blk * blk).sum(axis=1) / n)
        if Q is not None:
            blk = blk - (blk @ Q.astype(xp.float64)) @ Q.astype(xp.float64).T
        sd = xp.sqrt((blk * blk).sum(axis=1) / n)
        ok = (sd > 1e-8) & (sd > 1e-6 * sd0)  # constant, or explained by the covariates
        blk = xp.where(ok[:, None], blk / xp.where(ok, sd, 1.0)[:, None], 0.0)
        ZT[c0:c1] = blk.astype(dtype)
        sd_all[c0:c1] = to_numpy(xp.where(ok, sd, 0.0))
    return ZT, sd_all


def covariate_basis(n: int, covariates=None, tol: float = 1e-10, standardize: bool = True) -> np.ndarray:
    """Orthonormal (n x k) basis of [1, covariates] (numpy float64); collinear columns dropped.

    Covariates must be finite (drop incomplete samples first). ``standardize`` centres and scales
    them before the QR decomposition (the exact scans); NGG projects on the basis of the raw
    columns (``standardize=False``). Both span the same space; the two bases differ in rounding.
    """
    cols = [np.ones((n, 1))]
    if covariates is not None:
        c = np.asarray(covariates, dtype=np.float64)
        if c.ndim == 1:
            c = c[:, None]
        if c.shape[0] != n:
            raise ValueError(f"covariates have {c.shape[0]} rows for {n} samples")
        if not np.isfinite(c).all():
            raise ValueError("covariates contain missing values; drop those samples first")
        if standardize:
            sd = c.std(axis=0)
            c = (c - c.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        cols.append(c)
    m = np.hstack(cols)
    q, r = np.linalg.qr(m)
    d = np.abs(np.diag(r))
    keep = d > tol * max(1.0, d.max())
    if keep.all():
        return np.ascontiguousarray(q)
    # rank-deficient (a constant column: GEMMA's intercept): plain QR's columns after a dependent
    # column need not span the others, so the basis comes from a column-pivoted QR
    from scipy import linalg

    q, r, _ = linalg.qr(m, mode="economic", pivoting=True)
    d = np.abs(np.diag(r))
    rank = int((d > tol * max(1.0, d[0])).sum())
    return np.ascontiguousarray(q[:, :rank])


def collinear_covariates(covariates, tol: float = 1e-8) -> str | None:
    """Why the covariates cannot all be estimated, or None. A constant column is the intercept
    (GEMMA's covariate files carry it as a column of 1s) and is allowed; any other column that
    is a linear combination of the intercept and the columns before it (a duplicate, a sum of
    others) is reported, 1-based: its coefficient would not be defined."""
    c = np.asarray(covariates, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if not np.isfinite(c).all():
        return None   # the caller's own missing-value check speaks
    sd = c.std(axis=0)
    basis = [np.ones(c.shape[0]) / np.sqrt(c.shape[0])]
    for j in range(c.shape[1]):
        if sd[j] == 0:
            continue
        v = (c[:, j] - c[:, j].mean()) / sd[j]
        r = v - np.column_stack(basis) @ (np.column_stack(basis).T @ v)
        norm = float(np.linalg.norm(r))
        if norm <= tol * np.sqrt(c.shape[0]):
            return (f"covariate column {j + 1} of {c.shape[1]} is a linear combination of the intercept "
                    f"and the columns before it (collinear covariates): drop it")
        basis.append(r / norm)
    return None


def phenotype_problem(y, covariates=None, rel_tol: float = 1e-10) -> str | None:
    """Why ``y`` cannot be scanned, or None: a constant phenotype, or one the covariates (with the
    intercept) explain entirely. Either would turn rounding noise into t statistics (p = 0 on
    effects of 1e-15), so scans refuse it instead of reporting a number."""
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if n < 3:
        return f"only {n} samples"
    if not np.isfinite(y).all():
        return None   # the caller's own missing-value check speaks
    centred = y - y.mean()
    tss = float(centred @ centred)
    if tss == 0.0 or tss <= rel_tol * float(y @ y):
        return f"the phenotype is constant over the {n} samples"
    if covariates is not None:
        why = collinear_covariates(covariates)
        if why:
            return why
        Q = covariate_basis(n, covariates)
        r = y - Q @ (Q.T @ y)
        rss = float(r @ r)
        if rss <= rel_tol * tss:
            return (f"the covariates explain the phenotype entirely (residual variance {rss / n:.3g} "
                    f"of {tss / n:.3g}): nothing is left to test")
    return None


def check_phenotype(y, covariates=None) -> None:
    """:func:`phenotype_problem` as a ValueError."""
    why = phenotype_problem(y, covariates)
    if why:
        raise ValueError(why)
