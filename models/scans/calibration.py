"""Genotype principal components (randomised SVD) and genomic inflation (lambda_GC) of scans.

* :func:`genotype_pcs`: the top principal components of the standardised genotypes (samples x K,
  unit-norm columns), by a randomised range finder with power iterations (Halko, Martinsson and
  Tropp 2011) that streams the int8 genotypes in SNP chunks, so the standardised matrix is never
  held whole;
* :func:`lambda_gc`: the median 1-df chi-square statistic over its null median (0.4549...);
* :func:`pair_lambda_gc`: lambda_GC of a 2D scan from every pair among a random subset of SNPs
  (all pairs when the subset is all SNPs), computed by the reference pair fits of
  :func:`models.scans.scan2d.dense_pair_stats` with the scan's model and covariates.
"""
from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["genotype_pcs", "lambda_gc", "chi2_from_p", "pair_lambda_gc", "NULL_MEDIAN_CHI2_1DF"]

NULL_MEDIAN_CHI2_1DF = float(special.chdtri(1.0, 0.5))  # 0.45493642...
_CACHE_ELEMENTS = 1 << 26  # standardised genotypes kept in memory up to 512 MB (float64)


def _std_chunks(G, chunk: int):
    """(a, b, Z) with Z the standardised (b - a, n) float64 rows a:b of SNP-major int8 G (mean-imputed
    missing calls; monomorphic rows zero). G may also be the list of those chunks, computed once."""
    if isinstance(G, list):
        yield from G
        return
    for a in range(0, G.shape[0], chunk):
        g = G[a:a + chunk]
        called = g >= 0
        x = np.where(called, g, 0).astype(np.float64)
        cnt = np.maximum(called.sum(axis=1), 1)
        mu = x.sum(axis=1) / cnt
        z = np.where(called, x - mu[:, None], 0.0)
        sd = np.sqrt((z * z).sum(axis=1) / g.shape[1])
        z /= np.where(sd > 1e-8, sd, np.inf)[:, None]
        yield a, a + len(g), z


def genotype_pcs(G, k: int, *, oversample: int = 20, power_iters: int = 5, seed: int = 0,
                 chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` principal components of (p, n) SNP-major int8 genotypes (-1 missing).

    Returns (pcs, singular_values): pcs (n, k) orthonormal columns, the left singular vectors of
    the standardised (n x p) genotype matrix, each signed so that its largest-magnitude entry is
    positive (deterministic for a seed). Randomised SVD with ``oversample`` extra directions and
    ``power_iters`` power iterations (each a pass over the genotypes in ``chunk`` SNPs).
    """
    G = np.asarray(G)
    p, n = G.shape
    if k < 1:
        raise ValueError("the number of principal components must be >= 1")
    if k >= min(n, p):
        raise ValueError(f"{k} principal components need more than {k} samples and SNPs "
                         f"(have {n} samples, {p} SNPs)")
    ell = min(k + oversample, min(n, p))
    if p * n <= _CACHE_ELEMENTS:  # standardise once instead of on every pass
        G = list(_std_chunks(G, chunk))
    rng = np.random.default_rng(seed)
    Y = np.zeros((n, ell))
    for a, b, z in _std_chunks(G, chunk):  # Y = Z' Omega (n x ell), Z the standardised (p x n) rows
        Y += z.T @ rng.standard_normal((b - a, ell))
    for _ in range(power_iters):
        Qn, _ = np.linalg.qr(Y)
        Y = np.zeros((n, ell))
        for a, b, z in _std_chunks(G, chunk):  # Y = Z'(Z Q)
            Y += z.T @ (z @ Qn)
    Qn, _ = np.linalg.qr(Y)
    Bt = np.empty((p, ell))  # B' = Z Qn (p x ell): Z' = Qn B
    for a, b, z in _std_chunks(G, chunk):
        Bt[a:b] = z @ Qn
    # the SVD of the small ell x ell Gram matrix B B' gives B's left singular vectors
    w, V = np.linalg.eigh(Bt.T @ Bt)
    order = np.argsort(w)[::-1][:k]
    U = Qn @ V[:, order]
    sv = np.sqrt(np.maximum(w[order], 0.0))
    if sv[-1] <= 1e-8 * max(sv[0], 1e-300):
        raise ValueError(f"the genotypes have fewer than {k} non-trivial principal components")
    flip = np.sign(U[np.abs(U).argmax(axis=0), np.arange(k)])
    return U * flip, sv


def chi2_from_p(p) -> np.ndarray:
    """1-df chi-square quantiles of p-values (NaN stays NaN)."""
    return special.chdtri(1.0, np.asarray(p, dtype=np.float64))


def lambda_gc(stat) -> float | None:
    """Genomic inflation: median of finite 1-df chi-square statistics / 0.4549; None if none."""
    s = np.asarray(stat, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    return float(np.median(s) / NULL_MEDIAN_CHI2_1DF)


def pair_lambda_gc(G, y, trait: str = "qt", statistic: str | None = None, covariates=None,
                   max_snps: int = 300, seed: int = 0) -> tuple[float | None, int, int]:
    """(lambda_GC, pairs used, SNPs drawn) of the 2D statistic over every pair among ``max_snps``
    random SNPs.

    G: (p, n) int8 dosages; y, trait, statistic, covariates: as the scan's. With p <= max_snps the
    value is that of every pair of the scan; otherwise of the max_snps (max_snps - 1) / 2 pairs
    among a seeded random SNP subset (44,850 pairs by default: the median's standard error is
    about 1 % of lambda).
    """
    from models.scans.scan2d import dense_pair_stats  # (scan2d imports nothing from here)

    p, n = G.shape
    idx = np.arange(p) if p <= max_snps else np.sort(np.random.default_rng(seed).choice(p, max_snps, replace=False))
    g = np.ascontiguousarray(G[idx])
    if covariates is None and trait == "qt" and statistic in (None, "linear_interaction") and (g >= 0).all():
        covariates = np.zeros((n, 0))  # the intercept alone: the same model by fewer GEMMs
    _, stat = dense_pair_stats(g, g, y, trait, statistic=statistic, covariates=covariates)
    iu = np.triu_indices(len(idx), 1)
    s = stat[iu]
    return lambda_gc(s), int(np.isfinite(s).sum()), int(len(idx))
