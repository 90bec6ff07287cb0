"""Per-pair statistics of the exact 2D scan from sufficient statistics (numpy or cupy).

* :func:`qt_stats`: linear y ~ 1 + a + b + ab from the pair's moments (sums of a, b, their squares
  and products, and of y times each), Wald chi-square of the interaction (PLINK 1.9 ``--epistasis``);
* :func:`binary_stats`: logistic y ~ 1 + a + b + ab from 3 x 3 genotype cell counts of cases and of
  all samples (PLINK 1.9 ``--epistasis`` on a case/control trait);
* :func:`qt_stats_covariates`: linear y ~ C + a + b + ab with k covariate columns (the intercept
  among them) from the same moments and the projections of a, b, ab and y on the covariates;
* :func:`fast_epistasis_stats`: PLINK 1.9 ``--fast-epistasis`` (its default, Ueki-Cordell
  adjusted variant): the difference of two-locus allelic log odds ratios between cases and
  controls, from the same 3 x 3 cell tables.

The scan engines (:mod:`models.scans.scan2d`, :mod:`models.scans.scan2d_gpu`) compute the
sufficient statistics from tile GEMMs; :mod:`models.scans.statistics` declares which statistic
uses which function.
"""
from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["qt_stats", "qt_stats_covariates", "binary_stats", "fast_epistasis_stats", "chi2_sf1"]


def qt_stats(m: dict, xp=np, tol: float = 1e-10):
    """Interaction effect, Wald chi-square and validity for every pair from its moments.

    m: dict of float64 arrays (broadcastable) named N, Sa, Sb, Saa, Sbb, Sab, Saab, Sabb, Saabb,
    Sy, Say, Sby, Saby, Syy (sums over the pair's complete samples). Returns (beta, stat, valid);
    beta and stat are NaN where not valid.
    """
    N = m["N"]
    ia = 1.0 / xp.maximum(N, 1.0)
    ma, mb, my = m["Sa"] * ia, m["Sb"] * ia, m["Sy"] * ia
    Sab = m["Sab"]
    caa = m["Saa"] - m["Sa"] * ma
    cbb = m["Sbb"] - m["Sb"] * mb
    cab = Sab - m["Sa"] * mb
    cay = m["Say"] - ma * m["Sy"]
    cby = m["Sby"] - mb * m["Sy"]
    cyy = m["Syy"] - m["Sy"] * my
    t1 = m["Saab"] - 2.0 * ma * Sab + ma * ma * m["Sb"]
    t2 = m["Sabb"] - 2.0 * mb * Sab + mb * mb * m["Sa"]
    sAAB = t1 - mb * caa
    sABB = t2 - ma * cbb
    sWW = m["Saabb"] - 2.0 * ma * m["Sabb"] + ma * ma * m["Sbb"] - 2.0 * mb * t1 + mb * mb * caa
    cWy = m["Saby"] - ma * m["Sby"] - mb * m["Say"] + ma * mb * m["Sy"] - my * cab
    w33 = sWW - cab * cab * ia
    return _chol3(caa, cbb, cab, sAAB, sABB, w33, cay, cby, cWy, cyy, N, xp, tol)


def qt_stats_covariates(m: dict, pa, pb, pw, py, xp=np, tol: float = 1e-10):
    """Interaction effect, Wald chi-square and validity of y ~ C + a + b + ab (complete genotypes).

    Frisch-Waugh-Lovell: the interaction's estimate and test are those of the regression of the
    residuals of y on the residuals of a, b and w = ab, all residualised on the covariate space
    spanned by the orthonormal (n x k) basis Q (which holds the intercept). Residual cross products
    are raw cross products minus projected ones, u~'v~ = u'v - (Q'u)'(Q'v), so every pair needs
    only the raw moments of :func:`qt_stats` (``N, Saa, Sbb, Sab, Saab, Sabb, Saabb, Say, Sby,
    Saby, Syy``; ``N`` the sample count, the same for every pair) and
    pa = Q'a (ta, k), pb = Q'b (tb, k), pw = Q'(ab) (k, ta, tb) and py = Q'y (k,). The residual
    degrees of freedom are N - k - 3. Returns (beta, stat, valid) as :func:`qt_stats`.
    """
    k = int(py.shape[0])
    caa = m["Saa"] - (pa * pa).sum(axis=1)[:, None]
    cbb = m["Sbb"] - (pb * pb).sum(axis=1)[None, :]
    cab = m["Sab"] - pa @ pb.T
    sAAB = m["Saab"] - xp.einsum("kij,ik->ij", pw, pa)
    sABB = m["Sabb"] - xp.einsum("kij,jk->ij", pw, pb)
    w33 = m["Saabb"] - xp.einsum("kij,kij->ij", pw, pw)
    cay = m["Say"] - (pa @ py)[:, None]
    cby = m["Sby"] - (pb @ py)[None, :]
    cWy = m["Saby"] - xp.tensordot(py, pw, axes=1)
    cyy = m["Syy"] - float(py @ py)
    # a SNP (almost) in the covariate space is untestable: judged against its own centred scale,
    # not the absolute 1.0 of the pivot check, since its residual is round-off of that scale
    na, nb = pa.shape[0], pb.shape[0]
    N = m["N"]
    ca0 = m["Saa"] - m["Sa"] * m["Sa"] / N
    cb0 = m["Sbb"] - m["Sb"] * m["Sb"] / N
    caa = xp.where(caa > 1e-9 * ca0, caa, 0.0) * xp.ones((na, nb))
    cbb = xp.where(cbb > 1e-9 * cb0, cbb, 0.0)
    return _chol3(caa, cbb, cab, sAAB, sABB, w33, cay, cby, cWy, cyy, N - k + 1.0, xp, tol)


def _chol3(caa, cbb, cab, sAAB, sABB, w33, cay, cby, cWy, cyy, N, xp, tol):
    ok = caa > tol * xp.maximum(caa, 1.0)
    l11 = xp.sqrt(xp.where(ok, caa, 1.0))
    i11 = 1.0 / l11
    l21 = cab * i11
    l31 = sAAB * i11
    l22sq = cbb - l21 * l21
    ok = ok & (l22sq > tol * xp.maximum(cbb, 1.0))
    i22 = 1.0 / xp.sqrt(xp.where(ok, l22sq, 1.0))
    l32 = (sABB - l31 * l21) * i22
    l33sq = w33 - l31 * l31 - l32 * l32
    ok = ok & (l33sq > tol * xp.maximum(w33, 1.0))
    l33sq = xp.where(ok, l33sq, 1.0)
    z1 = cay * i11
    z2 = (cby - l21 * z1) * i22
    z3n = cWy - l31 * z1 - l32 * z2  # z3 * L33
    z3sq = z3n * z3n / l33sq
    rss = cyy - z1 * z1 - z2 * z2 - z3sq
    df = N - 4.0
    ok = ok & (df > 0) & (rss > tol * xp.maximum(cyy, 1e-300))
    beta = xp.where(ok, z3n / l33sq, xp.nan)
    stat = xp.where(ok, z3sq * df / xp.where(ok, rss, 1.0), xp.nan)
    return beta, stat, ok


def _chi2_sf1(stat):
    return special.chdtrc(1.0, np.asarray(stat, dtype=np.float64))


_CELL_A = np.repeat([0.0, 1.0, 2.0], 3)


_CELL_B = np.tile([0.0, 1.0, 2.0], 3)


_CELL_X = np.stack([np.ones(9), _CELL_A, _CELL_B, _CELL_A * _CELL_B], axis=1)  # (9, 4): 1, a, b, ab


_HESS_PAIRS = [(r, c) for r in range(4) for c in range(r, 4)]


_CELL_C = np.stack([_CELL_X[:, r] * _CELL_X[:, c] for r, c in _HESS_PAIRS], axis=1)  # (9, 10)


def _chol4_solve(H, g, xp):
    """Unrolled Cholesky of stacked SPD 4 x 4 matrices (10 unique entries, (P, 10) in _HESS_PAIRS
    order) solving H x = g (P, 4). Returns (x, L44^2, ok)."""
    h = {pc: H[:, k] for k, pc in enumerate(_HESS_PAIRS)}
    ok = h[(0, 0)] > 0
    l00 = xp.sqrt(xp.where(ok, h[(0, 0)], 1.0))
    l10, l20, l30 = h[(0, 1)] / l00, h[(0, 2)] / l00, h[(0, 3)] / l00
    d1 = h[(1, 1)] - l10 * l10
    ok = ok & (d1 > 1e-12 * xp.abs(h[(1, 1)]))
    l11 = xp.sqrt(xp.where(ok, d1, 1.0))
    l21 = (h[(1, 2)] - l20 * l10) / l11
    l31 = (h[(1, 3)] - l30 * l10) / l11
    d2 = h[(2, 2)] - l20 * l20 - l21 * l21
    ok = ok & (d2 > 1e-12 * xp.abs(h[(2, 2)]))
    l22 = xp.sqrt(xp.where(ok, d2, 1.0))
    l32 = (h[(2, 3)] - l30 * l20 - l31 * l21) / l22
    d3 = h[(3, 3)] - l30 * l30 - l31 * l31 - l32 * l32
    ok = ok & (d3 > 1e-12 * xp.abs(h[(3, 3)]))
    d3 = xp.where(ok, d3, 1.0)
    l33 = xp.sqrt(d3)
    z0 = g[:, 0] / l00
    z1 = (g[:, 1] - l10 * z0) / l11
    z2 = (g[:, 2] - l20 * z0 - l21 * z1) / l22
    z3 = (g[:, 3] - l30 * z0 - l31 * z1 - l32 * z2) / l33
    x3 = z3 / l33
    x2 = (z2 - l32 * x3) / l22
    x1 = (z1 - l21 * x2 - l31 * x3) / l11
    x0 = (z0 - l10 * x1 - l20 * x2 - l30 * x3) / l00
    return xp.stack([x0, x1, x2, x3], axis=1), d3, ok


def binary_stats(cases, total, xp=np, max_iter: int = 25, tol: float = 1e-10):
    """Logistic y ~ 1 + a + b + ab per pair from 3 x 3 genotype cell counts (PLINK 1.9 ``--epistasis``
    on a case/control trait: OR_INT = exp(beta_int), STAT = Wald chi-square).

    cases, total: (..., 3, 3) float64 counts of cases and of all samples with genotypes (a, b)
    (pairwise complete). Newton-Raphson from the intercept-only fit, all pairs at once, with an
    unrolled 4 x 4 Cholesky; var(beta_int) = 1 / L44^2 of the final information matrix. Returns
    (beta_int, wald_chi2, valid). Pairs without a finite maximum-likelihood estimate (complete or
    quasi-complete separation: the fit does not converge or |beta| runs past 30) or with a
    singular information matrix are not valid; PLINK prints arbitrary numbers for those.
    """
    shape = cases.shape[:-2]
    c = cases.reshape(-1, 9)
    t = total.reshape(-1, 9)
    X = xp.asarray(_CELL_X)
    C = xp.asarray(_CELL_C)
    n_all = t.sum(axis=1)
    n_case = c.sum(axis=1)
    P = c.shape[0]
    beta = xp.zeros((P, 4))
    p0 = xp.clip(n_case / xp.maximum(n_all, 1.0), 1e-12, 1 - 1e-12)
    beta[:, 0] = xp.log(p0 / (1 - p0))
    ok = (n_case > 0) & (n_case < n_all)
    conv = ~ok
    act = xp.nonzero(ok)[0]  # pairs still iterating
    for _ in range(max_iter):
        if act.size == 0:
            break
        ca, ta, ba = c[act], t[act], beta[act]
        pr = 1.0 / (1.0 + xp.exp(-(ba @ X.T)))
        grad = (ca - ta * pr) @ X
        H = (ta * pr * (1.0 - pr)) @ C
        step, _, good = _chol4_solve(H, grad, xp)
        ba = ba + xp.where(good[:, None], step, 0.0)
        beta[act] = ba
        done = good & (xp.abs(step).max(axis=1) < 1e-10 * (1.0 + xp.abs(ba).max(axis=1)))
        ok[act[~good]] = False
        conv[act[done]] = True
        act = act[good & ~done]
    pr = 1.0 / (1.0 + xp.exp(-(beta @ X.T)))
    H = (t * pr * (1.0 - pr)) @ C
    _, d3, good = _chol4_solve(H, xp.zeros((P, 4)), xp)
    good = ok & conv & good & (xp.abs(beta).max(axis=1) < 30.0)
    b3 = beta[:, 3]
    stat = xp.where(good, b3 * b3 * d3, xp.nan)
    b3 = xp.where(good, b3, xp.nan)
    return b3.reshape(shape), stat.reshape(shape), good.reshape(shape)


chi2_sf1 = _chi2_sf1


def _allelic_log_or(t, xp):
    """Two-locus allelic log odds ratio and its variance from 3 x 3 genotype counts t[..., a, b].

    Each sample contributes its 2 x 2 = 4 allele pairs: a double homozygote 4 to one cell, a
    single heterozygote 2 to each of two cells, the double heterozygote 1 to every cell. The
    variance is the delta-method one of Ueki and Cordell (2012), which counts each genotype cell
    once (not the naive 1/c11 + 1/c12 + 1/c21 + 1/c22 of the allele table). A table with an empty
    genotype cell gets 0.5 added to every genotype cell (4.5 to every allele cell).
    """
    n = [[t[..., a, b] for b in range(3)] for a in range(3)]
    c11 = 4 * n[0][0] + 2 * (n[0][1] + n[1][0]) + n[1][1]
    c12 = 4 * n[0][2] + 2 * (n[0][1] + n[1][2]) + n[1][1]
    c21 = 4 * n[2][0] + 2 * (n[1][0] + n[2][1]) + n[1][1]
    c22 = 4 * n[2][2] + 2 * (n[1][2] + n[2][1]) + n[1][1]
    empty = xp.zeros(c11.shape, dtype=bool)
    for a in range(3):
        for b in range(3):
            empty = empty | (n[a][b] == 0)
    add = xp.where(empty, 0.5, 0.0)
    c11, c12, c21, c22 = (c + 9.0 * add for c in (c11, c12, c21, c22))
    r11, r12, r21, r22 = 1.0 / c11, 1.0 / c12, 1.0 / c21, 1.0 / c22
    log_or = xp.log(c11 * c22 * r12 * r21)
    m = [[n[a][b] + add for b in range(3)] for a in range(3)]
    var = (4.0 * (4.0 * (r11 * r11 * m[0][0] + r12 * r12 * m[0][2] + r21 * r21 * m[2][0] + r22 * r22 * m[2][2])
                  + (r11 - r12) ** 2 * m[0][1] + (r11 - r21) ** 2 * m[1][0]
                  + (r22 - r12) ** 2 * m[1][2] + (r22 - r21) ** 2 * m[2][1])
           + (r11 - r12 - r21 + r22) ** 2 * m[1][1])
    return log_or, var


def fast_epistasis_stats(cases, total, xp=np):
    """PLINK 1.9 ``--fast-epistasis`` (default mode) from 3 x 3 cell counts of cases and all samples.

    STAT = (log OR_cases - log OR_controls)^2 / (var_cases + var_controls), a 1-df chi-square,
    where OR is the two-locus allelic odds ratio of each group (:func:`_allelic_log_or`). Returns
    (difference of log odds ratios, STAT, valid); the sign of the difference follows the dosage
    coding (it flips with either SNP's allele coding; STAT does not).
    """
    lc, vc = _allelic_log_or(cases, xp)
    lt, vt = _allelic_log_or(total - cases, xp)
    diff = lc - lt
    with np.errstate(all="ignore"):
        stat = diff * diff / (vc + vt)
    ok = xp.isfinite(stat)
    return xp.where(ok, diff, xp.nan), xp.where(ok, stat, xp.nan), ok

