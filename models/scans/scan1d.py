"""Exact marginal (1D) scan: per-SNP linear regression with covariates, all SNPs at once.

For every SNP s the model is ``y ~ 1 + C + x_s`` fitted on the samples where x_s is called (as
PLINK 2 ``--glm`` does: a missing call drops that sample for that SNP only). With Q an orthonormal
basis of [1, C] the estimate is a projection::

    beta = x~'y~ / x~'x~,   x~ = x - Q Q'x,   y~ = y - Q Q'y
    RSS  = y~'y~ - beta^2 x~'x~,   se = sqrt(RSS / (m - k - 1) / x~'x~),   t = beta / se

so all SNPs of a chunk come from one GEMM ``X' [y~, Q]`` plus row sums of squares. SNPs with
missing calls get the same formulas with their own (k x k) covariate Gram matrix over the called
samples, computed for the whole chunk by GEMMs of the missing-call mask against covariate
products, then solved as a batch. p-values are two-sided from Student's t with m - k - 1 degrees
of freedom. Arithmetic is float64 on both backends (the GEMMs are memory-bound, so float64 costs
little), which keeps the CPU and GPU paths equal to ~1e-12.

Works with NumPy or CuPy (``xp`` from :mod:`models.backend`); inputs may be host arrays, they
are moved to the device chunk by chunk unless already there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from models.backend import get_xp, is_gpu, synchronize, to_numpy
from models.scans.design import check_phenotype, covariate_basis

__all__ = ["Scan1DResult", "scan_1d", "scan_1d_device", "covariate_basis", "t_pvalues"]


@dataclass
class Scan1DResult:
    """Per-SNP results (numpy, length p; NaN where the SNP is monomorphic in the used samples)."""

    beta: np.ndarray
    se: np.ndarray
    t: np.ndarray
    p: np.ndarray
    n: np.ndarray  # samples used per SNP
    df: np.ndarray  # residual degrees of freedom per SNP
    k_covariates: int  # columns of [1, C] after dropping collinear ones


def t_pvalues(t: np.ndarray, df) -> np.ndarray:
    """Two-sided Student-t p-values (numpy; NaN stays NaN)."""
    t = np.asarray(t, dtype=np.float64)
    return 2.0 * special.stdtr(np.asarray(df, dtype=np.float64), -np.abs(t))


def scan_1d(genotypes, y, covariates=None, xp=None, chunk: int | None = None, snp_major: bool = False,
            device: str | None = None) -> Scan1DResult:
    """Regress ``y`` on each SNP with covariates.

    genotypes: (n, p) dosages (int8 with -1 missing, or float with NaN missing); with
    ``snp_major=True`` a (p, n) array instead (the layout of :func:`pipelines.io.plink.read_bed`'s
    ``dosage.T``, which is what the chunks need; an (n, p) Fortran array is used without copy).
    y: (n,) float, no missing values (drop those samples first). covariates: (n, c) or None.
    xp / device: array module or device name (``auto``, ``cpu``, ``cuda``). chunk: SNPs per GEMM
    (default 4096 on the host, 65536 on a GPU).
    """
    xp = get_xp(xp if xp is not None else device)
    if chunk is None:  # host: float64 chunks of a few tens of MB (fewer page faults than one big one)
        chunk = 65536 if is_gpu(xp) else 4096
    g = genotypes.T if not snp_major else genotypes  # (p, n)
    p, n = g.shape
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"y has shape {y.shape}, expected ({n},)")
    if not np.isfinite(y).all():
        raise ValueError("y contains missing values; drop those samples first")
    check_phenotype(y, covariates)
    Q = covariate_basis(n, covariates)
    k = Q.shape[1]
    yt = y - Q @ (Q.T @ y)
    yty = float(yt @ yt)
    # per-sample covariate products for SNPs with missing calls: [1, C] in the basis Q
    Qd = xp.asarray(Q)
    ytd = xp.asarray(yt)
    prod_cc = xp.asarray((Q[:, :, None] * Q[:, None, :]).reshape(n, k * k))
    cy = xp.asarray(Q * yt[:, None])
    y2 = xp.asarray(yt * yt)
    R = xp.concatenate([ytd[:, None], Qd], axis=1)  # (n, 1 + k)
    out = {name: np.empty(p) for name in ("beta", "se", "t", "n", "df")}
    for a in range(0, p, chunk):
        b = min(p, a + chunk)
        blk = xp.asarray(g[a:b])
        if blk.dtype == xp.int8 or blk.dtype.kind in "iu":
            miss = blk < 0
            x = xp.where(miss, 0, blk).astype(xp.float64)
        else:
            miss = xp.isnan(blk)
            x = xp.where(miss, 0.0, blk.astype(xp.float64))
        gx = x @ R  # (m, 1 + k): x'y~, x'Q
        xy, xq = gx[:, 0], gx[:, 1:]
        xx = (x * x).sum(axis=1)
        nmiss = miss.sum(axis=1)
        m_used = (n - nmiss).astype(xp.float64)
        # complete SNPs: projection with the shared basis
        sxx = xx - (xq * xq).sum(axis=1)
        sxy = xy
        syy = xp.full(b - a, yty)
        anym = bool(to_numpy(nmiss.max()) > 0) if b > a else False
        if anym:
            sxy = _missing_call_sums(miss, nmiss, xx, xy, xq, sxx, sxy, syy, prod_cc, cy, y2, k, xp)
        df = m_used - k - 1
        ok = (sxx > 1e-9 * xp.maximum(xx, 1.0)) & (df > 0)
        sxx_s = xp.where(ok, sxx, 1.0)
        beta = sxy / sxx_s
        rss = xp.maximum(syy - beta * sxy, 0.0)
        se = xp.sqrt(rss / xp.where(df > 0, df, 1.0) / sxx_s)
        t = beta / xp.where(se > 0, se, xp.nan)
        nan = xp.nan
        out["beta"][a:b] = to_numpy(xp.where(ok, beta, nan))
        out["se"][a:b] = to_numpy(xp.where(ok, se, nan))
        out["t"][a:b] = to_numpy(xp.where(ok, t, nan))
        out["n"][a:b] = to_numpy(m_used)
        out["df"][a:b] = to_numpy(df)
    synchronize(xp)
    pv = t_pvalues(out["t"], out["df"])
    return Scan1DResult(out["beta"], out["se"], out["t"], pv, out["n"].astype(np.int64),
                        out["df"].astype(np.int64), k)


def _missing_call_sums(miss, nmiss, xx, xy, xq, sxx, sxy, syy, prod_cc, cy, y2, k, xp):
    """Sums of SNPs with missing calls, each with its own covariate Gram matrix over the called
    samples: overwrites their rows of sxx and syy in place and returns sxy with theirs."""
    rows = xp.nonzero(nmiss > 0)[0]
    called = (~miss[rows]).astype(xp.float64)  # (r, n)
    gcc = (called @ prod_cc).reshape(-1, k, k)  # sum over called samples of q q'
    gcy = called @ cy  # (r, k)
    gyy = called @ y2
    gcx = xq[rows]
    rhs = xp.stack([gcx, gcy], axis=2)  # (r, k, 2)
    # tiny ridge guards SNPs called in almost no samples; results there are NaN anyway
    eye = xp.eye(k)[None] * 1e-12
    sol = xp.linalg.solve(gcc + eye, rhs)
    u, v = sol[..., 0], sol[..., 1]
    sxx_m = xx[rows] - (gcx * u).sum(axis=1)
    sxy_m = xy[rows] - (gcx * v).sum(axis=1)
    syy_m = gyy - (gcy * v).sum(axis=1)
    sxx[rows] = sxx_m
    sxy = sxy.copy()
    sxy[rows] = sxy_m
    syy[rows] = syy_m
    return sxy


def scan_1d_device(g_dev, y, covariates=None, xp=None, chunk: int = 262144):
    """Like :func:`scan_1d` for complete (no missing call) genotypes already on the device.

    g_dev: (p, n) int8 device array. Returns device arrays (beta, se, t) and the residual degrees of
    freedom; no host transfer, so a benchmark can time the arithmetic alone.
    """
    xp = get_xp(xp)
    p, n = g_dev.shape
    y = np.asarray(y, dtype=np.float64)
    Q = covariate_basis(n, covariates)
    k = Q.shape[1]
    yt = y - Q @ (Q.T @ y)
    yty = float(yt @ yt)
    R = xp.asarray(np.concatenate([yt[:, None], Q], axis=1))
    beta = xp.empty(p)
    se = xp.empty(p)
    df = n - k - 1
    for a in range(0, p, chunk):
        b = min(p, a + chunk)
        x = g_dev[a:b].astype(xp.float64)
        gx = x @ R
        xx = (x * x).sum(axis=1)
        sxx = xx - (gx[:, 1:] * gx[:, 1:]).sum(axis=1)
        ok = sxx > 1e-9 * xp.maximum(xx, 1.0)
        sxx = xp.where(ok, sxx, xp.nan)
        bt = gx[:, 0] / sxx
        beta[a:b] = bt
        se[a:b] = xp.sqrt(xp.maximum(yty - bt * gx[:, 0], 0.0) / df / sxx)
    return beta, se, beta / se, df

