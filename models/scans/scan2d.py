"""Exact exhaustive 2D interaction scan: y ~ 1 + x_i + x_j + x_i x_j for every SNP pair i < j.

Sufficient statistics
---------------------
A pair's least-squares fit depends on the data only through sums over the samples called at both
SNPs (pairwise-complete cases, as PLINK 1.9 ``--epistasis`` uses)::

    N, Sa, Sb, Saa, Sbb, Sab, Saab, Sabb, Saabb         (genotype moments, a = x_i, b = x_j)
    Sy, Say, Sby, Saby, Syy                             (phenotype moments)

For a tile of SNPs I against a tile J all of them are GEMMs of small-integer matrices:

* complete genotypes (no missing call among the used samples), CPU with PyTorch's int8 GEMM
  (``torch._int_mm``; the default where available): per-SNP sums broadcast, and two int8 GEMMs
  with exact int32 sums per tile pair, ``[X; X^2]_I [X; X^2]_J^T`` (Sab, Sabb, Saab, Saabb) and
  ``[X o d_0; ...; X o d_5]_I X_J^T`` with yq = sum_k 128^k d_k split into balanced base-128
  digits (|X d_k| <= 128 fits int8), recombined exactly in float64. At about 16 times the float64
  BLAS rate, these ten int8 GEMM units cost less than the two float64 GEMMs below;
* complete genotypes otherwise: two float64 GEMMs per tile pair: cell counts
  ``(I1 + B I2)_I (I1 + B^2 I2)_J^T`` (B a power of two > n, so the four cells n11, n21, n12,
  n22 are the base-B digits of one exact float64 number) and ``(X o yq)_I X_J^T`` for Saby;
* missing calls: the same with the called-mask M: ``(M + B I1 + B^2 I2)_I [M, I1, I2]_J^T``,
  ``[M o yq, X o yq]_I [M, X]_J^T`` and ``(M o yq^2)_I M_J^T``.

The phenotype enters as ``yq``, y centred and rounded to ``y_bits`` (default 40) signed integer
levels with an exact zero sum, so every GEMM output is an exact integer (the GPU path splits
operands into fp16-exact digits for the tensor cores). A regression with an intercept is invariant
to the affine map y -> yq, so the statistic is that of y rounded to 2^-39 of its range (a change
far below float64 round-off of the fit; the interaction effect is scaled back to y units).

Per pair, the moments are centred and the 4 x 4 normal equations of [1, a, b, ab] are reduced to
the 3 x 3 system of the centred [A, B, W] (W = AB) and solved by an unrolled Cholesky with forward
substitution only: with L the factor and z = L^-1 c, ``beta_int = z3 / L33``, ``RSS = cyy - |z|^2``
and the Wald statistic ``(beta_int / se)^2 = z3^2 / (RSS / (N - 4))``, PLINK 1.9's STAT (a
1-df chi-square; P = chi2.sf(STAT, 1)). Pairs whose design is rank-deficient (a SNP monomorphic
among the pair's samples, or the product collinear with the main effects) are not tested. The
int8 CPU path uses the equivalent elimination of a, then b, from W and y (see
:meth:`Scan2D._int8_tile`), about 60 vector operations per pair on cache-sized slabs, and folds
each band of slabs into the tile's reductions while it is in cache; effects are computed only for
top-k candidates.

Streaming
---------
The upper triangle is walked in tiles of ``tile`` SNPs, grouped into blocks of tile pairs. Per
tile the scan keeps: a global top-k (ids, effect, statistic), each SNP's best partner, per
chromosome-pair summaries (pairs tested, pairs over a significance threshold, the best pair), and
the level-0 grid of the map pyramid. Every accumulator is order-independent (max with a total
tie order, integer counts, exact top-k), so a scan stopped after any block and resumed from its
checkpoint (``state()`` / ``load_state()``) ends with identical results.

Case/control traits use the cell counts of cases and of all samples (3 x 3 tables, again from
exact GEMMs) and fit the logistic model of PLINK 1.9 ``--epistasis`` by Newton's method per pair
(see ``binary_stats``): OR_INT and STAT agree with PLINK wherever the maximum-likelihood estimate
exists; pairs with (quasi-)complete separation, for which PLINK prints arbitrary finite numbers,
are reported as untestable. PLINK's ``--fast-epistasis`` statistic (its default, Ueki-Cordell
adjusted test: the case/control difference of two-locus allelic log odds ratios) comes from the
same tables (``statistic="fast_epistasis"``, see
:func:`~models.scans.pair_stats.fast_epistasis_stats`); it needs no iterations, so it runs at
the cost of the cell GEMMs alone.

Statistics: the per-pair statistic is a declared :class:`models.scans.statistics.ScanStatistic`
(the trait's default, or ``Scan2D(..., statistic=name)``): its ``inputs`` say which sufficient
statistics the tiles compute (moments, or case/total cell tables) and its ``fit`` turns them into
(effect, Wald chi-square, validity). The int8 / complete-genotype / GPU kernels are specialised
implementations of the linear interaction (``fast_kernels``); any other statistic runs the generic
tile path. The per-pair functions themselves live in :mod:`models.scans.pair_stats`.

Parallelism: the CPU path splits each block's tile pairs over worker threads (forked worker
processes from 4 cores, or with ``workers="process"``) that return only tile reductions, with one
BLAS / PyTorch thread each; the GPU path (CuPy) is in
:mod:`models.scans.scan2d_gpu`. Quantitative traits only need the genotypes of the samples with a
phenotype.

Covariates
----------
``Scan2D(..., covariates=C)`` fits y ~ C + x_i + x_j + x_i x_j exactly (quantitative traits,
complete genotypes). With Q the orthonormal basis of [1, C] (k columns), the interaction's
estimate and Wald statistic are those of the residuals of y on the residuals of a, b and ab
(Frisch-Waugh-Lovell), and residual cross products are raw ones minus projected ones:
``u~'v~ = u'v - (Q'u)'(Q'v)``. The raw moments come from the exact tile GEMMs above; the
projections Q'a, Q'b, Q'y are per-SNP vectors, and Q'(ab) takes k float64 tile GEMMs
``(X_I o q_c) X_J^T``, one per covariate column (see :func:`~models.scans.pair_stats.qt_stats_covariates`).
Residual degrees of freedom are n - k - 3. These runs use the generic moments path on the host
(also when the device is a GPU).
"""
from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import numpy as np
from scipy import special

from models.backend import get_xp, is_gpu, to_numpy
from models.scans.design import check_phenotype, covariate_basis
from models.scans.pair_stats import _chi2_sf1, binary_stats, qt_stats, qt_stats_covariates
from models.scans.pyramid import PyramidGrid
from models.scans.scan2d_gpu import GpuEngine
from models.scans.statistics import statistic_for
from models.scans.topk import TopK

__all__ = [
    "Scan2DOptions",
    "Scan2D",
    "qt_stats",
    "binary_stats",
    "pair_regression",
    "pair_logistic",
    "chrom_order",
    "quantize_phenotype",
    "dense_pair_stats",
    "int8_matmul",
]

TRAITS = ("qt", "binary")
_SLAB = 16384  # elements per slab of the CPU pair kernel (keeps its ~20 buffers in L2)
_ENC_CACHE_BYTES = 1 << 30  # CPU tile operands kept across tile pairs


@dataclass
class Scan2DOptions:
    """Tunable numbers of the exact 2D scan (all have defaults)."""

    tile: int | None = None  # SNPs per tile side (default 1024 on the CPU, 8192 on the GPU)
    top_k: int = 1000
    trait: str = "qt"  # qt | binary
    pyramid_side: int = 4096  # largest level-0 grid side
    block_pairs: int | None = None  # pairs per checkpoint block (default 2^27 CPU, 2^32 GPU)
    sig_p: float | None = None  # significance threshold for the summaries (default 0.05 / pairs)
    y_bits: int = 40  # phenotype quantisation (signed levels), see the module doc
    threads: int = 0  # CPU workers (0 = all available cores)
    workers: str = "auto"  # CPU parallelism: "process" (forked, Linux), "thread", or auto (processes from 4 cores)
    max_iter: int = 25  # Newton iterations for case/control fits
    tol: float = 1e-10  # relative pivot tolerance for rank deficiency
    cpu_gemm: str = "auto"  # CPU GEMMs of complete genotypes: int8 (PyTorch), float64 (BLAS), or auto

    def resolved_tile(self, gpu: bool) -> int:
        return int(self.tile) if self.tile else (8192 if gpu else 1024)


# ---------------------------------------------------------------------------------------------
# helpers


def chrom_order(chrom) -> np.ndarray:
    """A stable permutation putting SNPs in natural chromosome order (1, 2, ..., 22, X, Y, MT, others).

    Within a chromosome the file order is kept. Already sorted input gives the identity.
    """
    chrom = np.asarray(chrom).astype(str)
    labels, first = np.unique(chrom, return_index=True)
    special = {"X": 1001, "23": 1001, "Y": 1002, "24": 1002, "XY": 1003, "25": 1003, "MT": 1004, "M": 1004, "26": 1004}

    def rank(lab: str, pos: int):
        s = lab[3:] if lab.lower().startswith("chr") else lab
        if s.upper() in special:
            return (special[s.upper()], pos)
        if s.isdigit():
            return (int(s), pos)
        return (2000, pos)

    ranks = {lab: rank(lab, pos) for lab, pos in zip(labels, first)}
    keys = np.array([ranks[c] for c in labels], dtype=[("r", np.int64), ("f", np.int64)])
    code_of = dict(zip(labels, np.argsort(np.argsort(keys, order=("r", "f")))))
    code = np.array([code_of[c] for c in chrom], dtype=np.int64)
    return np.argsort(code, kind="stable")


def quantize_phenotype(y: np.ndarray, bits: int, n: int) -> tuple[np.ndarray, float, float]:
    """(yq int64, scale, offset) with y ~ offset + scale * yq, |yq| < 2^(bits-1) and sum(yq) = 0.

    ``bits`` is lowered where needed so that every phenotype GEMM stays exact in float64: sums of
    |x_a x_b yq| <= 4 n 2^(bits-1) must stay below 2^53. With 40 bits (the default) the rounding
    is 2^-40 of the phenotype's range, far below float64 round-off of the regression itself.
    The centred phenotype is rounded to the nearest integer vector with an exact zero sum (floor,
    then the samples with the largest remainders rounded up; each sample moves by less than one
    level), so the pair kernels need no mean corrections of phenotype sums.
    """
    y = np.asarray(y, dtype=np.float64)
    offset = float(y.mean())
    yc = y - offset
    amp = float(np.abs(yc).max())
    bits = int(min(bits, 53 - 2 - math.ceil(math.log2(max(n, 2))) + 1))
    levels = 2 ** (bits - 1) - 2  # one level of headroom for the zero-sum rounding
    scale = amp / levels if amp > 0 else 1.0
    f = yc / scale
    yq = np.floor(f).astype(np.int64)
    up = int(-yq.sum())  # = sum of the remainders (f sums to ~0); round that many up
    if 0 < up <= len(yq):
        order = np.argsort(-(f - yq), kind="stable")
        yq[order[:up]] += 1
    return yq, scale, offset


def square_digits(yq: np.ndarray, n: int) -> tuple[list, int]:
    """Split integers yq into base-2^h digits (lowest first, the top one signed) so that sums of
    digit products over n samples are exact in float64: (digits as float64 arrays, h)."""
    h = max(1, int((52 - math.ceil(math.log2(max(n, 2)))) // 2))
    digits = []
    v = np.asarray(yq, dtype=np.int64)
    base = 1 << h
    while True:
        if np.all(np.abs(v) < base):
            digits.append(v.astype(np.float64))
            break
        lo = v & (base - 1)
        digits.append(lo.astype(np.float64))
        v = (v - lo) >> h
    return digits, h


def _cell_base(n: int) -> int:
    """Power of two > n: cell counts are base-B digits of one exact float64 number.

    Three digits (B^3 <= 2^53) are always used; four (complete-genotype fast path) need n < 8192.
    """
    b = 1 << max(1, int(n).bit_length())
    if b ** 3 > 2 ** 53:
        raise ValueError(f"{n} samples: too many for the packed cell-count GEMMs (limit 131071)")
    return b


# ---------------------------------------------------------------------------------------------
# per-pair statistics from moments (numpy or cupy, broadcasting)


class _Work:
    """Reusable scratch arrays for one thread (slabs of at most ``size`` elements)."""

    def __init__(self, size: int, k: int = 24):
        self.size = size
        self.buf = [np.empty(size) for _ in range(k)]

    def get(self, shape, k):
        n = shape[0] * shape[1]
        return self.buf[k][:n].reshape(shape)


def qt_complete_slab(v, saby, pi: dict, pj: dict, consts: dict, B: float, tol: float,
                     stat_out, beta_out, work: _Work) -> None:
    """Statistics for a slab of pairs when no genotype is missing (the CPU hot loop).

    v: packed cell counts n11 + B n21 + B^2 n12 + B^3 n22 (R, T); saby: sum of a b yq (R, T).
    pi / pj: per-SNP vectors for the slab's rows (shape (R, 1)) and columns (shape (1, T)): sa, ma,
    caa, cay (cby), sbb (= saa), z1 = cay / sqrt(caa), i11 = 1 / sqrt(caa), rz = cyy - z1^2.
    consts: n, Sy, my, cyy. Writes the Wald statistic (-1 where not valid) and the effect (in yq
    units) into stat_out / beta_out (R, T). Same algebra as :func:`qt_stats`, written with
    in-place operations on cache-sized buffers.
    """
    sh = v.shape
    w = [work.get(sh, k) for k in range(18)]
    n11, n21, n12, n22, q, Sab, Saab, Sabb, Saabb, t1, x, cab, sAAB, sABB, sWW, cWy, l21, l31 = w
    iB = 1.0 / B
    mul, sub, add = np.multiply, np.subtract, np.add
    # base-B digits
    mul(v, iB, out=q); np.floor(q, out=q)
    mul(q, B, out=x); sub(v, x, out=n11)
    mul(q, iB, out=n22); np.floor(n22, out=n22)  # n22 holds the next quotient
    mul(n22, B, out=x); sub(q, x, out=n21)
    mul(n22, iB, out=q); np.floor(q, out=q)
    mul(q, B, out=x); sub(n22, x, out=n12)
    n22, q = q, n22
    # raw moments
    add(n12, n21, out=x); mul(x, 2.0, out=Sab); add(Sab, n11, out=Sab); mul(n22, 4.0, out=x); add(Sab, x, out=Sab)
    mul(n21, 2.0, out=Saab); add(Saab, Sab, out=Saab); add(Saab, x, out=Saab)      # Sab + 2 n21 + 4 n22
    mul(n12, 2.0, out=Sabb); add(Sabb, Sab, out=Sabb); add(Sabb, x, out=Sabb)      # Sab + 2 n12 + 4 n22
    add(Saab, Sabb, out=Saabb); sub(Saabb, Sab, out=Saabb); add(Saabb, x, out=Saabb)  # + 4 n22
    ma, mb = pi["ma"], pj["ma"]
    # centred moments
    mul(pi["sa"], mb, out=x); sub(Sab, x, out=cab)
    mul(Sab, 2.0 * ma, out=x); sub(Saab, x, out=t1); mul(ma * ma, pj["sa"], out=x); add(t1, x, out=t1)
    mul(pi["caa"], mb, out=x); sub(t1, x, out=sAAB)
    mul(Sab, 2.0 * mb, out=x); sub(Sabb, x, out=sABB); mul(pi["sa"], mb * mb, out=x); add(sABB, x, out=sABB)
    mul(ma, pj["caa"], out=x); sub(sABB, x, out=sABB)
    mul(Sabb, 2.0 * ma, out=x); sub(Saabb, x, out=sWW); mul(ma * ma, pj["saa"], out=x); add(sWW, x, out=sWW)
    mul(t1, 2.0 * mb, out=x); sub(sWW, x, out=sWW); mul(pi["caa"], mb * mb, out=x); add(sWW, x, out=sWW)
    mul(cab, cab, out=x); mul(x, 1.0 / consts["n"], out=x); sub(sWW, x, out=sWW)  # w33
    mul(ma, pj["sby_c"], out=x); sub(saby, x, out=cWy); mul(pi["say"], mb, out=x); sub(cWy, x, out=cWy)
    if consts["my"] != 0.0:
        mul(cab, consts["my"], out=x); sub(cWy, x, out=cWy)
    # Cholesky of the centred [A, B, W] system, forward substitution
    mul(cab, pi["i11"], out=l21)
    mul(sAAB, pi["i11"], out=l31)
    l22sq, i22, l32, z2 = n11, n21, n12, n22
    mul(l21, l21, out=x); sub(pj["caa"], x, out=l22sq)
    ok = l22sq > tol * np.maximum(pj["caa"], 1.0)
    np.maximum(l22sq, 1e-300, out=i22); np.sqrt(i22, out=i22); np.divide(1.0, i22, out=i22)
    mul(l31, l21, out=x); sub(sABB, x, out=l32); mul(l32, i22, out=l32)
    l33sq = t1
    mul(l31, l31, out=x); sub(sWW, x, out=l33sq); mul(l32, l32, out=x); sub(l33sq, x, out=l33sq)
    ok &= l33sq > tol * np.maximum(sWW, 1.0)
    np.maximum(l33sq, 1e-300, out=l33sq)
    mul(l21, pi["z1"], out=x); sub(pj["cay"], x, out=z2); mul(z2, i22, out=z2)
    z3n = cWy
    mul(l31, pi["z1"], out=x); sub(z3n, x, out=z3n); mul(l32, z2, out=x); sub(z3n, x, out=z3n)
    np.divide(z3n, l33sq, out=beta_out)
    z3sq = Saab
    mul(z3n, beta_out, out=z3sq)
    rss = Sabb
    mul(z2, z2, out=x); sub(pi["rz"], x, out=rss); sub(rss, z3sq, out=rss)
    ok &= rss > tol * consts["cyy"]
    ok &= pi["ok"]
    np.maximum(rss, 1e-300, out=rss)
    np.divide(z3sq, rss, out=stat_out); mul(stat_out, consts["n"] - 4.0, out=stat_out)
    stat_out[~ok] = -1.0
    beta_out[~ok] = np.nan


# ---------------------------------------------------------------------------------------------
# CPU complete-genotype path on int8 GEMMs


_INT8_MM = None
_INT8_LOCK = threading.Lock()
_PREWARM: threading.Thread | None = None


def prewarm_int8_matmul() -> threading.Thread:
    """Import PyTorch and probe its int8 GEMM (:func:`int8_matmul`) in a background thread.

    The import takes about 1.5 s of interpreter time; a command that will run the CPU 2D scan
    starts it first so that part of it (the shared libraries' loading, with the GIL released)
    overlaps reading the genotypes."""
    global _PREWARM
    t = threading.Thread(target=int8_matmul, name="int8-gemm-import", daemon=True)
    t.start()
    _PREWARM = t
    return t


def int8_matmul():
    """``f(L, R, out=None) -> L @ R.T`` for int8 NumPy matrices (int32 result, exact), or None.

    Uses PyTorch's CPU integer GEMM (``torch._int_mm``: VNNI / AVX-512 int8 kernels, about 16x the
    float64 BLAS rate on current x86 cores). None when PyTorch or that kernel is unavailable; the
    scan then uses float64 BLAS GEMMs.
    """
    global _INT8_MM
    if _INT8_MM is not None:
        return _INT8_MM[0]
    with _INT8_LOCK:
        if _INT8_MM is None:
            _INT8_MM = _probe_int8_matmul()
    return _INT8_MM[0]


def _probe_int8_matmul():
    """(f, torch) of :func:`int8_matmul`, or (None, None)."""
    try:
        import torch

        mm = torch._int_mm
        a = np.arange(-24, 24, dtype=np.int8).reshape(3, 16)
        saved = torch.get_num_threads()
        torch.set_num_threads(1)  # no intra-op thread pool before worker processes fork
        try:
            ok = np.array_equal(mm(torch.from_numpy(a), torch.from_numpy(a).T).numpy(),
                                a.astype(np.int64) @ a.astype(np.int64).T)
        finally:
            torch.set_num_threads(saved)

        def f(L, R, out=None):
            if out is None:
                return mm(torch.from_numpy(L), torch.from_numpy(R).T).numpy()
            mm(torch.from_numpy(L), torch.from_numpy(R).T, out=torch.from_numpy(out))
            return out

        return (f, torch) if ok else (None, None)
    except Exception:  # no torch, or a build without the CPU int8 kernel
        return (None, None)


class _torch_threads:
    """One intra-op thread for PyTorch inside the block (the scan parallelises over tiles)."""

    def __enter__(self):
        self.torch = _INT8_MM[1] if _INT8_MM else None
        if self.torch is not None:
            self.saved = self.torch.get_num_threads()
            self.torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.torch is not None:
            self.torch.set_num_threads(self.saved)
        return False


def balanced_digits(v: np.ndarray, base: int = 128) -> np.ndarray:
    """Digits d_k in [-base/2, base/2) with v = sum_k d_k base^k (lowest first), shape (k, n)."""
    v = np.asarray(v, dtype=np.int64).copy()
    h = base // 2
    out = []
    while True:
        d = ((v + h) % base) - h
        out.append(d)
        v = (v - d) // base
        if not v.any():
            break
    return np.stack(out)


_INT8_SLAB = 16384  # pairs per slab of the int8-path pair kernel (its ~10 float64 buffers stay in L2)
_INT8_BAND = 131072  # pairs per band of slabs reduced together (top-k aside)


def _pool_into(acc, r_lo, c_lo, rows_abs0, h, cols_abs0, o, cell):
    """Max-pool slab ``o`` (h x w; absolute first row/column rows_abs0/cols_abs0) into ``acc``,
    whose cell (0, 0) is absolute cell (r_lo, c_lo)."""
    w = o.shape[1]
    ra, rb = rows_abs0 // cell, (rows_abs0 + h - 1) // cell
    if ra == rb:
        m = o.max(axis=0)[None, :]
    elif rows_abs0 % cell == 0 and h % cell == 0:
        m = o.reshape(h // cell, cell, w).max(axis=1)
    else:
        rc = (rows_abs0 + np.arange(h)) // cell
        m = np.maximum.reduceat(o, np.flatnonzero(np.r_[True, rc[1:] != rc[:-1]]), axis=0)
    ca, cb = cols_abs0 // cell, (cols_abs0 + w - 1) // cell
    if cell == 1:
        pooled = m
    elif cols_abs0 % cell == 0 and w % cell == 0:
        pooled = m.reshape(m.shape[0], w // cell, cell).max(axis=2)
    else:
        cc = (cols_abs0 + np.arange(w)) // cell
        pooled = np.maximum.reduceat(m, np.flatnonzero(np.r_[True, cc[1:] != cc[:-1]]), axis=1)
    sub = acc[ra - r_lo:rb - r_lo + 1, ca - c_lo:cb - c_lo + 1]
    np.maximum(sub, pooled, out=sub)
    return m


# ---------------------------------------------------------------------------------------------
# case/control: logistic regression on 3 x 3 cell tables


# ---------------------------------------------------------------------------------------------
# direct per-pair fits (float64, numpy): reference values for the final top-k and for tests


def pair_regression(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> dict:
    """Least squares of y on [1, a, b, ab] over samples where a, b >= 0 (pairwise complete)."""
    m = (a >= 0) & (b >= 0) & np.isfinite(y)
    A = np.column_stack([np.ones(m.sum()), a[m], b[m], a[m] * b[m]]).astype(np.float64)
    yy = y[m].astype(np.float64)
    n = int(m.sum())
    out = {"n": n, "beta_int": np.nan, "se": np.nan, "stat": np.nan, "p": np.nan}
    if n <= 4:
        return out
    q, r = np.linalg.qr(A)
    d = np.abs(np.diag(r))
    if d.min() <= 1e-9 * d.max():
        return out
    coef = np.linalg.solve(r, q.T @ yy)
    res = yy - A @ coef
    s2 = float(res @ res) / (n - 4)
    rinv = np.linalg.inv(r)
    var = s2 * float((rinv[3] @ rinv[3]))
    se = math.sqrt(var)
    stat = coef[3] ** 2 / var
    out.update(beta_int=float(coef[3]), se=se, stat=float(stat), p=float(_chi2_sf1(stat)))
    return out


def pair_logistic(a: np.ndarray, b: np.ndarray, case: np.ndarray, max_iter: int = 50) -> dict:
    """Logistic fit of case (0/1) on [1, a, b, ab] over pairwise-complete samples (float64 IRLS)."""
    m = (a >= 0) & (b >= 0) & np.isfinite(case)
    cells_c = np.zeros((3, 3))
    cells_t = np.zeros((3, 3))
    np.add.at(cells_t, (a[m].astype(int), b[m].astype(int)), 1.0)
    np.add.at(cells_c, (a[m].astype(int), b[m].astype(int)), case[m])
    b3, stat, ok = binary_stats(cells_c[None], cells_t[None], max_iter=max_iter)
    out = {"n": int(m.sum()), "beta_int": float(b3[0]), "stat": float(stat[0])}
    out["se"] = abs(out["beta_int"]) / math.sqrt(out["stat"]) if ok[0] and out["stat"] > 0 else np.nan
    out["p"] = float(_chi2_sf1(out["stat"])) if ok[0] else np.nan
    return out


def dense_pair_stats(ga: np.ndarray, gb: np.ndarray, y: np.ndarray, trait: str = "qt",
                     tol: float = 1e-10, statistic: str | None = None,
                     max_iter: int = 25, covariates=None) -> tuple[np.ndarray, np.ndarray]:
    """(effect, statistic) of every pair between SNP sets a and b by plain float64 sums.

    ga: (ra, n), gb: (rb, n) int8 dosages (-1 missing); y: (n,) (binary: 0/1). A reference
    implementation independent of tiling and packing (used for map zooms and tests); statistics of
    untestable pairs are NaN. Pairs of a SNP with itself are NaN too when the sets overlap by index
    only (callers mask them). ``covariates`` (n, c): the model y ~ C + a + b + ab (quantitative
    trait, complete genotypes; see :func:`~models.scans.pair_stats.qt_stats_covariates`).
    """
    ca, cb = ga >= 0, gb >= 0
    Ma, Mb = ca.astype(np.float64), cb.astype(np.float64)
    xa = np.where(ca, ga, 0).astype(np.float64)
    xb = np.where(cb, gb, 0).astype(np.float64)
    y = np.asarray(y, dtype=np.float64)
    st = statistic_for("2d", trait, statistic)
    if st.inputs == "cells":
        ia = [(ga == g).astype(np.float64) for g in (0, 1, 2)]
        ib = [(gb == g).astype(np.float64) for g in (0, 1, 2)]
        cases = np.empty((len(ga), len(gb), 3, 3))
        total = np.empty_like(cases)
        for u in range(3):
            for v in range(3):
                cases[:, :, u, v] = (ia[u] * y) @ ib[v].T
                total[:, :, u, v] = ia[u] @ ib[v].T
        beta, stat, _ = st.fit((cases, total), np, tol, max_iter)
        return beta, stat
    yc = y - y.mean()
    if covariates is not None:
        if st.inputs != "moments" or not (ca.all() and cb.all()):
            raise ValueError("covariates need the linear interaction model and complete genotypes")
        Q = covariate_basis(len(y), covariates)
        pw = np.stack([(xa * Q[:, c]) @ xb.T for c in range(Q.shape[1])])
        m = {"N": float(len(y)), "Sa": xa.sum(axis=1)[:, None], "Sb": xb.sum(axis=1)[None, :],
             "Saa": (xa * xa).sum(axis=1)[:, None], "Sbb": (xb * xb).sum(axis=1)[None, :], "Sab": xa @ xb.T,
             "Saab": (xa * xa) @ xb.T, "Sabb": xa @ (xb * xb).T, "Saabb": (xa * xa) @ (xb * xb).T,
             "Say": (xa @ yc)[:, None], "Sby": (xb @ yc)[None, :], "Saby": (xa * yc) @ xb.T, "Syy": float(yc @ yc)}
        with np.errstate(all="ignore"):
            beta, stat, _ = qt_stats_covariates(m, xa @ Q, xb @ Q, pw, Q.T @ yc, np, tol)
        return beta, stat
    m = {"N": Ma @ Mb.T, "Sa": xa @ Mb.T, "Sb": Ma @ xb.T, "Saa": (xa * xa) @ Mb.T, "Sbb": Ma @ (xb * xb).T,
         "Sab": xa @ xb.T, "Saab": (xa * xa) @ xb.T, "Sabb": xa @ (xb * xb).T, "Saabb": (xa * xa) @ (xb * xb).T,
         "Sy": (Ma * yc) @ Mb.T, "Say": (xa * yc) @ Mb.T, "Sby": (Ma * yc) @ xb.T, "Saby": (xa * yc) @ xb.T,
         "Syy": (Ma * yc * yc) @ Mb.T}
    with np.errstate(all="ignore"):
        beta, stat, _ = st.fit(m, np, tol, max_iter)
    return beta, stat


# ---------------------------------------------------------------------------------------------
# the scan


@dataclass
class _Prepared:
    """Per-SNP arrays of the (chromosome-sorted) SNPs used by the tile kernels."""

    G: np.ndarray  # (p, n) int8, -1 missing
    complete: bool
    n: int
    B: int
    yq: np.ndarray  # (n,) float64 integer-valued
    case: np.ndarray | None  # (n,) float64 0/1 for binary traits
    per_snp: dict = field(default_factory=dict)
    ysq_digits: tuple = ()  # digits of yq for the exact pairwise sums of yq^2 (missing calls)
    fast: dict = field(default_factory=dict)  # per-SNP vectors of the complete-genotype kernel
    consts: dict = field(default_factory=dict)


class Scan2D:
    """Exhaustive pair scan with streaming top-k, best partners, chromosome-pair summaries and
    the pyramid's level-0 grid.

    geno: (p, n) int8 SNP-major dosages (-1 missing) of the samples with a phenotype.
    y: (n,) phenotype (binary: 0/1 controls/cases). chrom: (p,) chromosome labels.
    SNPs are processed in natural chromosome order (``order``); all reported indices refer to
    the rows of ``geno``.
    """

    def __init__(self, geno, y, chrom, options: Scan2DOptions | None = None, xp=None, device=None,
                 statistic: str | None = None, covariates=None):
        self.opt = options or Scan2DOptions()
        if self.opt.trait not in TRAITS:
            raise ValueError(f"unknown trait {self.opt.trait!r}: use {' or '.join(TRAITS)}")
        # the pair statistic (models.scans.statistics): the trait's default unless named
        self.statistic = statistic_for("2d", self.opt.trait, statistic)
        self.xp = get_xp(xp if xp is not None else device)
        self.gpu = is_gpu(self.xp)
        geno = np.asarray(geno)
        if geno.ndim != 2 or geno.dtype != np.int8:
            raise ValueError("geno must be a (p, n) int8 array of dosages (-1 missing)")
        p, n = geno.shape
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (n,) or not np.isfinite(y).all():
            raise ValueError(f"y must be ({n},) without missing values")
        check_phenotype(y)
        if p < 2:
            raise ValueError("need at least 2 SNPs")
        self.p, self.n = p, n
        self.chrom = np.asarray(chrom).astype(str)
        self.order = chrom_order(self.chrom)
        self.labels, self.chrom_code = _codes(self.chrom[self.order])
        self.nc = len(self.labels)
        self.tile = self.opt.resolved_tile(self.gpu)
        if covariates is not None and not self.opt.tile:  # host tiles with k GEMM outputs each
            self.tile = min(self.tile, 1024)
        if not self.gpu and not self.opt.tile:  # enough tile pairs to keep every CPU thread busy
            threads = self.opt.threads or _cpu_count()
            while self.tile > 256 and (-(-p // self.tile)) * (-(-p // self.tile) + 1) // 2 < 3 * threads:
                self.tile //= 2
        if self.gpu:  # the kernel's warp-level pyramid pooling needs warp-aligned tile edges
            self.tile = -(-self.tile // 32) * 32
        self.nt = -(-p // self.tile)
        self.tile_pairs = [(a, b) for a in range(self.nt) for b in range(a, self.nt)]
        block_pairs = self.opt.block_pairs or (1 << 32 if self.gpu else 1 << 27)
        per_block = max(1, int(block_pairs // (self.tile * self.tile)))
        self.blocks = [self.tile_pairs[k:k + per_block] for k in range(0, len(self.tile_pairs), per_block)]
        self.n_pairs = p * (p - 1) // 2
        sig_p = self.opt.sig_p if self.opt.sig_p else 0.05 / self.n_pairs
        self.sig_p = float(sig_p)
        self.sig_stat = float(special.chdtri(1.0, self.sig_p))
        G = np.ascontiguousarray(geno[self.order])
        if self.statistic.case_control:
            vals = set(np.unique(y).tolist())
            if not vals <= {0.0, 1.0}:
                raise ValueError("binary trait must be coded 0 (control) / 1 (case)")
            yq, scale, offset = y.copy(), 1.0, 0.0
            case = y.copy()
        else:
            yq, scale, offset = quantize_phenotype(y, self.opt.y_bits, n)
            case = None
        self.y_scale, self.y_offset = scale, offset
        B = _cell_base(n)
        no_missing = not bool((G < 0).any())
        self._cov = None if covariates is None else self._covariates(covariates, G, (y - offset) / scale, no_missing)
        complete = no_missing and float(B) ** 4 <= 2.0 ** 53
        self.prep = _Prepared(G, complete, n, B, yq.astype(np.float64), case)
        if not complete and case is None:
            self.prep.ysq_digits = square_digits(yq, n)
        if self.opt.cpu_gemm not in ("auto", "int8", "float64"):
            raise ValueError(f"unknown cpu_gemm {self.opt.cpu_gemm!r}: use auto, int8 or float64")
        self._int8 = (not self.gpu and self.statistic.fast_kernels and self.opt.cpu_gemm != "float64"
                      and no_missing and self._cov is None and int8_matmul() is not None)
        if self.opt.cpu_gemm == "int8" and not self._int8 and not self.gpu:
            raise ValueError("cpu_gemm='int8' needs PyTorch with torch._int_mm, complete genotypes and a quantitative trait")
        if self._int8:
            self._int8_prepare()
        else:
            self._per_snp()
        self.fingerprint = self._fingerprint(G, yq)
        self._enc_cache, self._enc_bytes, self._enc_lock = {}, 0, threading.Lock()
        self.tile_hook = None  # hook(i0, j0, stat, beta) sees every CPU tile (tests, debugging)
        self.engine = None
        self.reset()
        if self.gpu and self.statistic.fast_kernels and self._cov is None:
            self.engine = GpuEngine(self)

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        self.next_block = 0
        self.topk = TopK(self.opt.top_k)
        self.pyr = PyramidGrid(self.p, self.opt.pyramid_side)
        self.best_stat = np.full(self.p, -1.0)  # per sorted SNP
        self.best_partner = np.full(self.p, -1, dtype=np.int64)
        nc = self.nc
        self.cp_tested = np.zeros((nc, nc), dtype=np.int64)
        self.cp_sig = np.zeros((nc, nc), dtype=np.int64)
        self.cp_best = np.full((nc, nc), -1.0)
        self.cp_best_i = np.full((nc, nc), -1, dtype=np.int64)
        self.cp_best_j = np.full((nc, nc), -1, dtype=np.int64)
        self.elapsed = 0.0
        if getattr(self, "engine", None) is not None:
            self.engine.reset()

    def state(self) -> dict:
        """Everything needed to resume (numpy arrays and scalars)."""
        if self.engine is not None:
            st = self.engine.state()
            st.update({"fingerprint": np.bytes_(self.fingerprint), "next_block": np.int64(self.next_block),
                       "elapsed": np.float64(self.elapsed)})
            return st
        st = {
            "fingerprint": np.bytes_(self.fingerprint), "next_block": np.int64(self.next_block),
            "pyramid": self.pyr.grid, "best_stat": self.best_stat, "best_partner": self.best_partner,
            "cp_tested": self.cp_tested, "cp_sig": self.cp_sig, "cp_best": self.cp_best,
            "cp_best_i": self.cp_best_i, "cp_best_j": self.cp_best_j, "elapsed": np.float64(self.elapsed),
        }
        st.update(self.topk.state())
        return st

    def load_state(self, st: dict) -> None:
        fp = st["fingerprint"]
        fp = fp.item() if hasattr(fp, "item") else fp
        fp = fp.decode() if isinstance(fp, bytes) else str(fp)
        if fp != self.fingerprint:
            raise ValueError("checkpoint belongs to a different scan (inputs or options changed)")
        self.next_block = int(st["next_block"])
        self.elapsed = float(st["elapsed"])
        if self.engine is not None:
            self.engine.load_state(st)
            return
        self.topk = TopK.from_state(st)
        self.pyr.grid = np.asarray(st["pyramid"], dtype=np.float32).copy()
        for k in ("best_stat", "best_partner", "cp_tested", "cp_sig", "cp_best", "cp_best_i", "cp_best_j"):
            setattr(self, k, np.asarray(st[k]).copy())
        self.elapsed = float(st["elapsed"])

    @property
    def done(self) -> bool:
        return self.next_block >= len(self.blocks)

    def _fingerprint(self, G, yq) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(G).tobytes())
        h.update(np.ascontiguousarray(yq).tobytes())
        h.update("\t".join(self.chrom.tolist()).encode())
        if self._cov is not None:  # (runs without covariates keep their fingerprints)
            h.update(b"covariates")
            h.update(np.ascontiguousarray(self._cov["Q"]).tobytes())
        opts = asdict(self.opt)
        opts.pop("threads", None)
        opts.pop("workers", None)
        opts["tile"] = self.tile
        opts["backend"] = "cuda" if self.gpu else "cpu"
        h.update(repr(sorted(opts.items())).encode())
        return h.hexdigest()

    # -- per-SNP preparation ------------------------------------------------------------------

    def _covariates(self, covariates, G, yf, no_missing: bool) -> dict:
        """Basis Q of [1, C], the per-SNP projections Q'x (sorted SNPs) and sums x'yf, and Q'yf.

        yf: the centred phenotype in the units of the quantised one, unrounded: the covariate path
        sums it in float64 (its other moments are exact integers), so its statistics do not carry
        the 2^-39 rounding of the phenotype."""
        st = self.statistic
        if st.inputs != "moments" or not st.fast_kernels:
            raise ValueError(f"covariates are supported by the linear interaction model only, not by "
                             f"{st.name} (the case/control 2D scan takes none)")
        if not no_missing:
            n_miss = int((G < 0).sum())
            raise ValueError(f"covariates in the 2D pair model need complete genotypes ({n_miss:,} missing calls "
                             f"among the scanned samples): impute them or drop those SNPs first")
        c = np.asarray(covariates, dtype=np.float64)
        if c.ndim == 1:
            c = c[:, None]
        if c.shape[0] != self.n:
            raise ValueError(f"covariates have {c.shape[0]} rows for {self.n} samples")
        check_phenotype(yf, c)  # collinear covariates, or ones that explain y
        Q = covariate_basis(self.n, c)
        pa = np.empty((self.p, Q.shape[1]))
        say = np.empty(self.p)
        for a in range(0, self.p, 4096):
            x = G[a:a + 4096].astype(np.float64)
            pa[a:a + 4096] = x @ Q
            say[a:a + 4096] = x @ yf
        return {"Q": Q, "k": int(Q.shape[1]), "pa": pa, "py": Q.T @ yf, "yf": yf, "say": say,
                "syy": float(yf @ yf)}

    def _cov_stats(self, i0, i1, j0, j1):
        """(beta, stat, ok) of the covariate-adjusted pair model for one tile (host, float64)."""
        cv, G = self._cov, self.prep.G
        Q = cv["Q"]
        xi = G[i0:i1].astype(np.float64)
        xjT = G[j0:j1].astype(np.float64).T
        pw = np.empty((cv["k"], i1 - i0, j1 - j0))
        for c in range(cv["k"]):  # Q'(ab), one GEMM per covariate column
            np.matmul(xi * Q[:, c], xjT, out=pw[c])
        # genotype moments exact (cell counts as base-B digits of one float64 GEMM); phenotype sums
        # in float64
        B = float(self.prep.B)
        gi, gj = G[i0:i1], G[j0:j1]
        v = ((gi == 1) + B * (gi == 2)) @ ((gj == 1) + (B * B) * (gj == 2)).T.astype(np.float64)
        n11, n21, n12, n22 = _digits(v, B, 4)
        m = _cell_moments(n11, n12, n21, n22)
        s = self.prep.per_snp
        m.update(N=float(self.n), Sa=s["Sa"][i0:i1, None], Sb=s["Sa"][None, j0:j1], Saa=s["Saa"][i0:i1, None],
                 Sbb=s["Saa"][None, j0:j1], Say=cv["say"][i0:i1, None], Sby=cv["say"][None, j0:j1],
                 Saby=(xi * cv["yf"]) @ xjT, Syy=cv["syy"])
        return qt_stats_covariates(m, cv["pa"][i0:i1], cv["pa"][j0:j1], pw, cv["py"], np, self.opt.tol)

    def _per_snp(self) -> None:
        P = self.prep
        G = P.G
        called = G >= 0
        x = np.where(called, G, 0).astype(np.float64)
        s = P.per_snp
        s["N"] = called.sum(axis=1).astype(np.float64)
        s["Sa"] = x.sum(axis=1)
        s["Saa"] = (x * x).sum(axis=1)
        if self.statistic.inputs == "moments":
            s["Say"] = x @ P.yq
            s["Sy_all"] = float(P.yq.sum())
            s["Syy_all"] = float(np.dot(P.yq, P.yq))
            if P.complete:
                n = float(self.n)
                sy = s["Sy_all"]
                my = sy / n
                cyy = s["Syy_all"] - sy * my
                ma = s["Sa"] / n
                caa = s["Saa"] - s["Sa"] * ma
                cay = s["Say"] - ma * sy
                okc = caa > self.opt.tol * np.maximum(caa, 1.0)
                i11 = np.where(okc, 1.0 / np.sqrt(np.where(okc, caa, 1.0)), 0.0)
                z1 = cay * i11
                P.fast = {"sa": s["Sa"], "ma": ma, "caa": caa, "saa": s["Saa"], "say": s["Say"],
                          "sby_c": cay, "cay": cay, "i11": i11, "z1": z1, "rz": cyy - z1 * z1, "ok": okc}
                P.consts = {"n": n, "Sy": sy, "my": my, "cyy": cyy}
        else:
            s["n_case"] = float(P.case.sum())

    # -- running ------------------------------------------------------------------------------

    def run(self, on_block=None, max_blocks: int | None = None) -> "Scan2D":
        """Process blocks from ``next_block``; ``on_block(self)`` runs after each one (checkpoints)."""
        done = 0
        while not self.done:
            if max_blocks is not None and done >= max_blocks:
                break
            t0 = time.perf_counter()
            self._run_block(self.blocks[self.next_block])
            self.next_block += 1
            self.elapsed += time.perf_counter() - t0
            done += 1
            if on_block is not None:
                on_block(self)
        return self

    def _run_block(self, tile_pairs) -> None:
        if self.engine is not None:
            self.engine.run_block(tile_pairs)
            return
        if self.gpu:  # case/control on the GPU: device arithmetic, host accumulation
            for tp in tile_pairs:
                self._merge(self._reduce(*self._cpu_tile(*tp, xp=self.xp)))
            return
        threads = min(self.opt.threads or _cpu_count(), len(tile_pairs))
        work = self._tile_reduce
        with _blas_threads(1), _torch_threads():  # parallel over tiles, not inside each GEMM
            if threads <= 1:
                for tp in tile_pairs:
                    self._merge(work(tp))
                return
            mode = self.opt.workers if self.opt.workers != "auto" else ("process" if threads >= 4 else "thread")
            ctx = _fork_context() if mode == "process" else None
            if ctx is None:
                with ThreadPoolExecutor(threads) as ex:
                    for red in ex.map(work, tile_pairs):
                        self._merge(red)
                return
            # worker processes (forked: they share the genotypes copy-on-write and return only the
            # tile reductions), so the many small NumPy calls of the pair kernel do not queue on
            # one interpreter lock
            if self._int8:  # GEMM operands built once, before the fork, and shared
                for t in sorted({t for tp in tile_pairs for t in tp}):
                    self._int8_enc(t)
            global _FORKED_SCAN
            _FORKED_SCAN = self
            try:
                with ProcessPoolExecutor(threads, mp_context=ctx) as ex:
                    for red in ex.map(_forked_tile, tile_pairs, chunksize=1):
                        self._merge(red)
            finally:
                _FORKED_SCAN = None

    def _bounds(self, t: int) -> tuple[int, int]:
        return t * self.tile, min(self.p, (t + 1) * self.tile)

    # -- CPU tile, int8 GEMM path (complete genotypes, quantitative trait) --------------------

    def _int8_prepare(self) -> None:
        """Per-SNP vectors of the int8 pair kernel (see :meth:`_int8_tile`)."""
        P = self.prep
        n = float(self.n)
        self._kp = -(-self.n // 8) * 8  # sample axis padded with zeros (aligned int8 rows)
        digits = balanced_digits(P.yq.astype(np.int64))
        self._ydig = digits.astype(np.int8)  # (nd, n), |d| <= 64: |x d| <= 128 fits int8 (x <= 2)
        p = len(P.G)
        sa, saa, say = np.empty(p), np.empty(p), np.empty(p)
        for a in range(0, p, 4096):  # exact: integer sums below 2^53
            x = P.G[a:a + 4096].astype(np.float64)
            sa[a:a + 4096] = x.sum(axis=1)
            saa[a:a + 4096] = np.einsum("ij,ij->i", x, x)
            say[a:a + 4096] = x @ P.yq
        P.per_snp.update(N=np.full(p, n), Sa=sa, Saa=saa, Say=say, Sy_all=0.0, Syy_all=float(np.dot(P.yq, P.yq)))
        ma = sa / n
        caa = saa - sa * ma
        tolc = self.opt.tol * np.maximum(caa, 1.0)
        ok = caa > tolc
        icaa = np.where(ok, 1.0 / np.where(ok, caa, 1.0), 0.0)
        cyy = float(np.dot(P.yq, P.yq))  # sum(yq) = 0: already centred
        tay = say * icaa
        self._f = {"sa": sa, "ma": ma, "caa": caa, "tolc": tolc, "icaa": icaa, "say": say, "tay": tay,
                   "cyy1": cyy - say * tay, "ok": ok}
        self._cyy = cyy

    def _int8_enc(self, t: int) -> np.ndarray:
        """int8 GEMM operand of tile t: rows [x; x^2; x d_0; ...; x d_{nd-1}], (2 + nd) T x kp (cached)."""
        key = ("int8", t)
        hit = self._enc_cache.get(key)
        if hit is not None:
            return hit
        a, b = self._bounds(t)
        g = self.prep.G[a:b]
        T, nd = b - a, len(self._ydig)
        e = np.zeros(((2 + nd) * T, self._kp), dtype=np.int8)
        e[:T, :self.n] = g
        e[T:2 * T, :self.n] = g * g
        for k in range(nd):
            np.multiply(g, self._ydig[k], out=e[(2 + k) * T:(3 + k) * T, :self.n])
        with self._enc_lock:
            if self._enc_bytes + e.nbytes <= _ENC_CACHE_BYTES:
                self._enc_cache[key] = e
                self._enc_bytes += e.nbytes
        return e

    def _int8_effects(self, M1, M2, T1, T2, i0, j0, r, c) -> np.ndarray:
        """Interaction effects (yq units) of the tile pairs (r, c): the algebra of :meth:`_int8_tile`
        evaluated for a few pairs (top-k candidates) only."""
        F, n, nd = self._f, float(self.n), len(self._ydig)
        Sab, Sabb = M1[r, c].astype(np.float64), M1[r, T2 + c]
        Saab, Saabb = M1[T1 + r, c], M1[T1 + r, T2 + c]
        Cwy = M2[(nd - 1) * T1 + r, c].astype(np.float64)
        for k in range(nd - 2, -1, -1):
            Cwy = Cwy * 128.0 + M2[k * T1 + r, c]
        gi, gj = i0 + r, j0 + c
        Cab = Sab - F["sa"][gi] * F["ma"][gj]
        Caw = Saab - Sab * F["ma"][gi]
        Cbw = Sabb - Sab * F["ma"][gj]
        Cww = Saabb - Sab * (1.0 / n) * Sab
        t = Cab * F["icaa"][gi]
        Cbb1 = F["caa"][gj] - t * Cab
        Cbw = Cbw - t * Caw
        Cby1 = F["say"][gj] - t * F["say"][gi]
        Cww = Cww - Caw * F["icaa"][gi] * Caw
        Cwy = Cwy - Caw * F["tay"][gi]
        with np.errstate(all="ignore"):
            u = Cbw * (1.0 / Cbb1)
            return (Cwy - u * Cby1) / (Cww - u * Cbw)

    def _int8_tile(self, ti: int, tj: int) -> dict:
        """Statistics of tile pair (ti, tj) from int8 GEMMs, folded into the tile's reductions (the
        dict of :meth:`_reduce`) band by band while each band is still in cache.

        GEMMs (exact int32): ``[x; x^2]_I [x; x^2]_J^T`` gives Sab, Sabb, Saab, Saabb and
        ``[x d_k]_I x_J^T`` the base-128 digits of Saby (yq = sum_k 128^k d_k). Per pair, with
        A, B, W = ab centred and projected in turn (sum(yq) = 0, so y needs no centring)::

            Cab = Sab - sa mb        Caw = Saab - ma Sab    Cbw = Sabb - mb Sab
            Cww = Saabb - Sab^2 / n  Cwy = Saby
            t = Cab / Caa:   Cbb' = Cbb - t Cab,  Cbw' = Cbw - t Caw,  Cby' = Cby - t Cay
            Cww' = Cww - Caw^2 / Caa,  Cwy' = Cwy - Caw Cay / Caa
            r = 1 / Cbb',  u = r Cbw':  Ww = Cww' - u Cbw',  Wy = Cwy' - u Cby',  Yy = Cyy' - r Cby'^2

        (Ww, Wy, Yy: the interaction column and y residualised on [1, a, b]); beta = Wy / Ww and
        STAT = (n - 4) Wy^2 / (Ww Yy - Wy^2), the numbers of :func:`qt_stats` (same rank checks:
        Cbb', Ww and the residual sum of squares above ``tol`` times their scale). Reductions run
        on rho = STAT / (n - 4); the effect is computed only for top-k candidates.
        """
        c = self._int8_context(ti, tj)
        err = np.seterr(all="ignore")
        try:
            for R0 in range(0, c.T1, c.H):
                R1 = min(c.T1, R0 + c.H)
                c0 = (R0 // c.cell) * c.cell if c.diag else 0  # columns left of c0 are below the diagonal
                w = c.T2 - c0
                band = c.work.band[:(R1 - R0) * w].reshape(R1 - R0, w)
                band_bad = c.work.band_bad[:(R1 - R0) * w].reshape(R1 - R0, w)
                for r0 in range(R0, R1, c.h):
                    self._int8_slab(c, R0, r0, min(R1, r0 + c.h), c0, w, band, band_bad)
                self._int8_band(c, R0, R1, c0, w, band, band_bad)
        finally:
            np.seterr(**err)
        if c.hook is not None:
            c.hook(c.i0, c.j0, c.stat_full, c.beta_full)
        return self._int8_reductions(c)

    def _int8_context(self, ti: int, tj: int) -> SimpleNamespace:
        """GEMMs, scratch buffers, per-column vectors and reduction accumulators of one int8 tile."""
        mm = int8_matmul()
        c = SimpleNamespace()
        c.i0, c.i1 = self._bounds(ti)
        c.j0, c.j1 = self._bounds(tj)
        i0, i1, j0, j1 = c.i0, c.i1, c.j0, c.j1
        c.T1, c.T2 = T1, T2 = i1 - i0, j1 - j0
        c.nd = nd = len(self._ydig)
        Ei, Ej = self._int8_enc(ti), self._int8_enc(tj)
        gout = getattr(self._tls, "gemm_out", None)  # reused GEMM outputs (no page faults per tile)
        if gout is None or gout.size < (4 + nd) * self.tile * self.tile:
            gout = self._tls.gemm_out = np.empty((4 + nd) * self.tile * self.tile, dtype=np.int32)
        # [[Sab, Sabb], [Saab, Saabb]]
        c.M1 = mm(Ei[:2 * T1], Ej[:2 * T2], out=gout[:4 * T1 * T2].reshape(2 * T1, 2 * T2))
        c.M2 = mm(Ei[2 * T1:], Ej[:T2], out=gout[4 * T1 * T2:(4 + nd) * T1 * T2].reshape(nd * T1, T2))  # Saby digits
        c.F, c.tol, c.n = self._f, self.opt.tol, float(self.n)
        c.fs = c.n - 4.0
        c.diag = ti == tj
        c.cell = cell = self.pyr.cell
        c.hook = self.tile_hook
        c.k_top = self.topk.k
        c.thr = max(self.topk.threshold, 0.0) / c.fs * (1.0 - 1e-12)
        c.sig = self.sig_stat / c.fs
        c.tcyy = c.tol * self._cyy
        # slabs of h rows (the kernel's buffers stay in L2) inside bands of H rows (reductions)
        c.h = h = 1 << max(0, (_INT8_SLAB // T2).bit_length() - 1)
        c.H = h * max(1, _INT8_BAND // (h * T2))
        work = getattr(self._tls, "work8", None)
        if work is None or work.size < h * T2 or work.band.size < c.H * T2:
            work = self._tls.work8 = _Work(max(_INT8_SLAB, h * T2), k=10)
            work.tmp = np.empty(h * T2, dtype=bool)
            work.band = np.empty(c.H * T2)
            work.band_bad = np.empty(c.H * T2, dtype=bool)
            work.views = {}
        c.work = work
        # per-column vectors replicated over a slab's rows: same-shape operations run at about
        # twice the speed of broadcasting ones in NumPy
        c.cols_f = {k: np.repeat(c.F[k][None, j0:j1], h, axis=0) for k in ("ma", "caa", "tolc", "say")}
        c.rows_ok = c.F["ok"][i0:i1]
        c.all_rows_ok = bool(c.rows_ok.all())
        c.r_lo, c.c_lo = i0 // cell, j0 // cell
        c.pyr = np.full(((i1 - 1) // cell - c.r_lo + 1, (j1 - 1) // cell - c.c_lo + 1), -1.0)
        c.colv = np.full(T2, -1.0)
        c.cola = np.zeros(T2, dtype=np.int64)
        c.rc = self.chrom_code[i0:i1]
        cc = self.chrom_code[j0:j1]
        c.cc = cc
        c.cb = np.flatnonzero(np.r_[True, cc[1:] != cc[:-1], True])
        c.nb = nb = len(c.cb) - 1
        c.rv_b = np.full((T1, nb), -1.0)  # per row and partner chromosome block: best rho,
        c.ra_b = np.zeros((T1, nb), dtype=np.int64)  # its column,
        c.nv_b = np.zeros((T1, nb), dtype=np.int64)  # valid pairs,
        c.ns_b = np.zeros((T1, nb), dtype=np.int64)  # significant pairs
        c.cand = []
        c.n_cand = 0
        if c.hook is not None:
            c.stat_full = np.full((T1, T2), -1.0)
            c.beta_full = np.full((T1, T2), np.nan)
        return c

    def _int8_slab(self, c, R0: int, r0: int, r1: int, c0: int, w: int, band, band_bad) -> None:
        """rho = STAT / (n - 4) of rows r0:r1 (columns c0:) into the band, invalid pairs -1."""
        mul, sub = np.multiply, np.subtract
        M1, M2, F, T1, T2, nd, n = c.M1, c.M2, c.F, c.T1, c.T2, c.nd, c.n
        i0, tol = c.i0, c.tol
        sh = (r1 - r0, w)
        views = c.work.views.get(sh)
        if views is None:
            views = c.work.views[sh] = tuple(c.work.get(sh, k) for k in range(10)) + (
                c.work.tmp[:sh[0] * w].reshape(sh),)
        x, Cab, Caw, Cbw, Cww, Cwy, t, Cbb1, Cby1, Sab, tmp = views
        bad = band_bad[r0 - R0:r1 - R0]
        mb_j, cbb_j, tolc_j, say_j = (c.cols_f[k][:r1 - r0, c0:] for k in ("ma", "caa", "tolc", "say"))
        o = band[r0 - R0:r1 - R0]
        np.copyto(Sab, M1[r0:r1, c0:T2])
        ri = slice(i0 + r0, i0 + r1)
        sa_i, ma_i, icaa_i, say_i, tay_i = (F[k][ri, None] for k in ("sa", "ma", "icaa", "say", "tay"))
        mul(sa_i, mb_j, out=x); sub(Sab, x, out=Cab)
        mul(Sab, ma_i, out=x); sub(M1[T1 + r0:T1 + r1, c0:T2], x, out=Caw)
        mul(Sab, mb_j, out=x); sub(M1[r0:r1, T2 + c0:], x, out=Cbw)
        mul(Sab, 1.0 / n, out=x); mul(x, Sab, out=x); sub(M1[T1 + r0:T1 + r1, T2 + c0:], x, out=Cww)
        np.copyto(Cwy, M2[(nd - 1) * T1 + r0:(nd - 1) * T1 + r1, c0:])
        for k in range(nd - 2, -1, -1):  # Horner over the base-128 digits (exact)
            mul(Cwy, 128.0, out=Cwy); np.add(Cwy, M2[k * T1 + r0:k * T1 + r1, c0:], out=Cwy)
        mul(Cab, icaa_i, out=t)
        mul(t, Cab, out=x); sub(cbb_j, x, out=Cbb1)
        mul(t, Caw, out=x); sub(Cbw, x, out=Cbw)
        mul(t, say_i, out=x); sub(say_j, x, out=Cby1)
        np.less_equal(Cbb1, tolc_j, out=bad)
        mul(Caw, icaa_i, out=t)
        mul(t, Caw, out=x); sub(Cww, x, out=Cww)
        mul(Caw, tay_i, out=x); sub(Cwy, x, out=Cwy)
        tw = Caw
        mul(Cww, tol, out=tw); np.maximum(tw, tol, out=tw)
        np.divide(1.0, Cbb1, out=Cbb1)
        u = Cab
        mul(Cbw, Cbb1, out=u)
        mul(u, Cbw, out=x); sub(Cww, x, out=Cww)  # Ww
        mul(u, Cby1, out=x); sub(Cwy, x, out=Cwy)  # Wy
        Yy = Cbw
        mul(Cby1, Cby1, out=x); mul(x, Cbb1, out=x); sub(F["cyy1"][ri, None], x, out=Yy)
        np.less_equal(Cww, tw, out=tmp); bad |= tmp  # finite here unless Cbb' failed
        mul(Cww, Yy, out=Yy)  # Ww Yy
        num = Cby1
        mul(Cwy, Cwy, out=num)
        sub(Yy, num, out=Yy)  # Ww * (RSS of the full model)
        mul(Cww, c.tcyy, out=x); np.less_equal(Yy, x, out=tmp); bad |= tmp
        np.divide(num, Yy, out=o)
        if not c.all_rows_ok:
            bad |= ~c.rows_ok[r0:r1, None]
        if c.diag and r1 > c0:  # pairs j <= i of the diagonal tile
            bad[:, :r1 - c0] |= np.arange(c0, r1)[None, :] <= np.arange(r0, r1)[:, None]
        np.copyto(o, -1.0, where=bad)
        if c.hook is not None:
            c.stat_full[r0:r1, c0:] = np.where(bad, -1.0, o * c.fs)
            c.beta_full[r0:r1, c0:] = np.where(bad, np.nan, Cwy / Cww)

    def _int8_band(self, c, R0: int, R1: int, c0: int, w: int, band, band_bad) -> None:
        """Band reductions: top-k candidates, pyramid cells, column maxima, per-row maxima and
        counts per partner chromosome block."""
        hb = R1 - R0
        idx = np.flatnonzero(band >= c.thr)
        if len(idx):
            c.cand.append((R0 + idx // w, c0 + idx % w, band.ravel()[idx]))
            c.n_cand += len(idx)
            if c.n_cand > 4 * c.k_top:
                cr, ccn, cv = (np.concatenate(z) for z in zip(*c.cand))
                kth = np.partition(cv, len(cv) - c.k_top)[len(cv) - c.k_top]
                keep = cv >= kth
                c.cand = [(cr[keep], ccn[keep], cv[keep])]
                c.n_cand = int(keep.sum())
                c.thr = max(c.thr, kth)
        m = _pool_into(c.pyr, c.r_lo, c.c_lo, c.i0 + R0, hb, c.j0 + c0, band, c.cell)
        cm = m.max(axis=0) if m.shape[0] > 1 else m[0]
        cur = c.colv[c0:]
        upd = np.flatnonzero(cm > cur)
        if len(upd):
            cur[upd] = cm[upd]
            c.cola[c0 + upd] = R0 + band[:, upd].argmax(axis=0)
        ar = np.arange(hb)
        cb = c.cb
        for bi in range(c.nb):
            b0, b1 = cb[bi], cb[bi + 1]
            if b1 <= c0:
                continue
            lo = max(b0, c0)
            sub_o = band[:, lo - c0:b1 - c0]
            ra = sub_o.argmax(axis=1)
            rv = sub_o[ar, ra]
            c.rv_b[R0:R1, bi] = rv
            c.ra_b[R0:R1, bi] = lo + ra
            c.nv_b[R0:R1, bi] = (b1 - lo) - np.add.reduce(band_bad[:, lo - c0:b1 - c0], axis=1, dtype=np.int64)
            hot = np.flatnonzero(rv >= c.sig)
            if len(hot):
                c.ns_b[R0 + hot, bi] = np.count_nonzero(sub_o[hot] >= c.sig, axis=1)

    def _int8_reductions(self, c) -> dict:
        """The tile's reductions in STAT units and global indices (the dict of :meth:`_reduce`)."""
        i0, j0, fs, k_top = c.i0, c.j0, c.fs, c.k_top
        if c.cand:
            cr, ccn, cv = (np.concatenate(z) for z in zip(*c.cand))
            if len(cv) > k_top:
                kth = np.partition(cv, len(cv) - k_top)[len(cv) - k_top]
                keep = cv >= kth
                cr, ccn, cv = cr[keep], ccn[keep], cv[keep]
        else:
            cr = ccn = np.empty(0, np.int64)
            cv = np.empty(0)
        cbeta = self._int8_effects(c.M1, c.M2, c.T1, c.T2, i0, j0, cr, ccn)
        scale = lambda v: np.where(v >= 0, v * fs, -1.0)  # noqa: E731
        red = {"i0": i0, "j0": j0, "cand": (cr + i0, ccn + j0, cv * fs, cbeta)}
        red["pyr"] = (slice(c.r_lo, c.r_lo + c.pyr.shape[0]), slice(c.c_lo, c.c_lo + c.pyr.shape[1]),
                      scale(c.pyr).astype(np.float32))
        red["col_best"] = (np.arange(j0, c.j1), scale(c.colv), c.cola + i0)
        kb = c.rv_b.argmax(axis=1)  # first block with the best value: the smallest partner on ties
        ar = np.arange(c.T1)
        red["row_best"] = (np.arange(i0, c.i1), scale(c.rv_b[ar, kb]), c.ra_b[ar, kb] + j0)
        rc, cc, cb = c.rc, c.cc, c.cb
        rseg = np.flatnonzero(np.r_[True, rc[1:] != rc[:-1], True])
        blocks = []
        for a0, a1 in zip(rseg[:-1], rseg[1:]):
            for bi in range(c.nb):
                u, v = rc[a0], cc[cb[bi]]
                if u > v:
                    u, v = v, u
                col = c.rv_b[a0:a1, bi]
                kk = int(np.argmax(col))
                best = float(col[kk])
                blocks.append((u, v, int(c.nv_b[a0:a1, bi].sum()), int(c.ns_b[a0:a1, bi].sum()),
                               best * fs if best >= 0 else -1.0, i0 + a0 + kk, j0 + int(c.ra_b[a0 + kk, bi])))
        red["blocks"] = blocks
        return red

    # -- CPU tile -----------------------------------------------------------------------------

    def _tile_reduce(self, tp) -> dict:
        """The reductions of one tile pair on the CPU (run in the worker threads or processes)."""
        if self._int8:
            if not getattr(self._tls, "one_thread", False):
                # OpenMP keeps its thread count per calling thread: without this, each worker's
                # first int8 GEMM starts a team of all cores that then spins beside the workers
                _INT8_MM[1].set_num_threads(1)
                self._tls.one_thread = True
            return self._int8_tile(*tp)
        i0, j0, stat, beta = self._cpu_tile(*tp)
        if self.tile_hook is not None:
            self.tile_hook(i0, j0, stat, beta)
        return self._reduce(i0, j0, stat, beta)

    def _cpu_tile(self, ti: int, tj: int, xp=np):
        i0, i1 = self._bounds(ti)
        j0, j1 = self._bounds(tj)
        st = self.statistic
        if self._cov is not None:
            with np.errstate(all="ignore"):
                beta, stat, ok = self._cov_stats(i0, i1, j0, j1)
            stat = np.where(ok, stat, -1.0)
        elif st.fast_kernels and self.prep.complete and xp is np:
            stat, beta = self._qt_complete_tile(i0, i1, j0, j1)
            ok = stat >= 0
        else:  # the statistic from its sufficient statistics, on the host or the device
            if st.inputs == "moments":  # host moments (the GPU engine runs the fast statistic)
                beta, stat, ok = st.fit(self._moments_cpu(i0, i1, j0, j1), np, self.opt.tol, self.opt.max_iter)
            else:
                beta, stat, ok = st.fit(self._cells_cpu(i0, i1, j0, j1, xp), xp, self.opt.tol, self.opt.max_iter)
            if xp is not np:
                beta, stat, ok = to_numpy(beta), to_numpy(stat), to_numpy(ok)
            stat = np.where(ok, stat, -1.0)
        if ti == tj:  # keep i < j only
            lower = np.tril(np.ones((i1 - i0, j1 - j0), dtype=bool))
            stat[lower] = -1.0
            beta[lower] = np.nan
        return i0, j0, stat, beta

    _tls = threading.local()

    def _enc(self, role: str, a: int, b: int):
        """float64 GEMM operands of SNPs a:b (complete genotypes), cached across tile pairs.

        role 'row': (I1 + B I2, x yq); role 'col': (I1 + B^2 I2, x). The cache keeps every column
        tile and the current row tiles up to ``_ENC_CACHE_BYTES``.
        """
        key = (role, a)
        cache = self._enc_cache
        hit = cache.get(key)
        if hit is not None:
            return hit
        P = self.prep
        g = P.G[a:b]
        B = float(P.B)
        x = g.astype(np.float64)
        e = (g == 1) + (B if role == "row" else B * B) * (g == 2)
        enc = (np.ascontiguousarray(e, dtype=np.float64), x * P.yq if role == "row" else x)
        size = enc[0].nbytes + enc[1].nbytes
        with self._enc_lock:
            if self._enc_bytes + size <= _ENC_CACHE_BYTES:
                cache[key] = enc
                self._enc_bytes += size
        return enc

    def _qt_complete_tile(self, i0, i1, j0, j1):
        P, f = self.prep, self.prep.fast
        B = float(P.B)
        ei, xyi = self._enc("row", i0, i1)
        ej, xj = self._enc("col", j0, j1)
        v = ei @ ej.T
        saby = xyi @ xj.T
        ti, tj = i1 - i0, j1 - j0
        stat = np.empty((ti, tj))
        beta = np.empty((ti, tj))
        rows = max(1, _SLAB // tj)
        work = getattr(self._tls, "work", None)
        if work is None or work.size < rows * tj:
            work = self._tls.work = _Work(max(_SLAB, rows * tj))
        pj = {k: a[None, j0:j1] for k, a in f.items()}
        for r0 in range(0, ti, rows):
            r1 = min(ti, r0 + rows)
            pi = {k: a[i0 + r0:i0 + r1, None] for k, a in f.items()}
            with np.errstate(all="ignore"):
                qt_complete_slab(v[r0:r1], saby[r0:r1], pi, pj, self.prep.consts, B, self.opt.tol,
                                 stat[r0:r1], beta[r0:r1], work)
        return stat, beta

    def _moments_cpu(self, i0, i1, j0, j1) -> dict:
        P, s = self.prep, self.prep.per_snp
        Gi, Gj = P.G[i0:i1], P.G[j0:j1]
        B = float(P.B)
        if P.complete:
            xi = Gi.astype(np.float64)
            xj = Gj.astype(np.float64)
            ei = (Gi == 1) + B * (Gi == 2)
            ej = (Gj == 1) + (B * B) * (Gj == 2)
            v = ei @ ej.T  # n11 + B n21 + B^2 n12 + B^3 n22, exact
            n11, n21, n12, n22 = _digits(v, B, 4)
            Saby = (xi * P.yq) @ xj.T
            m = _cell_moments(n11, n12, n21, n22)
            col = lambda a: a[i0:i1, None]  # noqa: E731
            row = lambda a: a[None, j0:j1]  # noqa: E731
            m.update(N=float(self.n), Sa=col(s["Sa"]), Sb=row(s["Sa"]), Saa=col(s["Saa"]), Sbb=row(s["Saa"]),
                     Sy=s["Sy_all"], Say=col(s["Say"]), Sby=row(s["Say"]), Saby=Saby, Syy=s["Syy_all"])
            return m
        ci, cj = Gi >= 0, Gj >= 0
        Mi, Mj = ci.astype(np.float64), cj.astype(np.float64)
        xi = np.where(ci, Gi, 0).astype(np.float64)
        xj = np.where(cj, Gj, 0).astype(np.float64)
        ei = Mi + B * (Gi == 1) + (B * B) * (Gi == 2)
        nM = _digits(ei @ Mj.T, B, 3)  # n_MM, n_1M, n_2M
        n1 = _digits(ei @ (Gj == 1).T.astype(np.float64), B, 3)  # n_M1, n_11, n_21
        n2 = _digits(ei @ (Gj == 2).T.astype(np.float64), B, 3)  # n_M2, n_12, n_22
        N = nM[0]
        Sa = nM[1] + 2 * nM[2]
        Saa = nM[1] + 4 * nM[2]
        Sb = n1[0] + 2 * n2[0]
        Sbb = n1[0] + 4 * n2[0]
        m = _cell_moments(n1[1], n2[1], n1[2], n2[2])
        yq = P.yq
        left = np.concatenate([Mi * yq, xi * yq])  # (2t, n)
        right = np.concatenate([Mj, xj])
        yy = left @ right.T
        ti = i1 - i0
        tj = j1 - j0
        Sy, Sby = yy[:ti, :tj], yy[:ti, tj:]
        Say, Saby = yy[ti:, :tj], yy[ti:, tj:]
        digits, h = P.ysq_digits
        Syy = np.zeros((ti, tj))
        for a, da in enumerate(digits):
            left = Mi * da
            for b in range(a, len(digits)):
                c = (2.0 if b > a else 1.0) * float(2 ** (h * (a + b)))
                Syy += c * (left @ (Mj * digits[b]).T)
        m.update(N=N, Sa=Sa, Sb=Sb, Saa=Saa, Sbb=Sbb, Sy=Sy, Say=Say, Sby=Sby, Saby=Saby, Syy=Syy)
        return m

    def _cells_cpu(self, i0, i1, j0, j1, xp=np):
        """(cases, total) 3 x 3 cell tables of each pair, shape (ti, tj, 3, 3)."""
        P = self.prep
        Gi, Gj = xp.asarray(P.G[i0:i1]), xp.asarray(P.G[j0:j1])
        B = float(P.B)
        ind_i = [(Gi == g).astype(xp.float64) for g in (0, 1, 2)]
        ind_j = [(Gj == g).astype(xp.float64) for g in (0, 1, 2)]
        ei = ind_i[0] + B * ind_i[1] + (B * B) * ind_i[2]
        out = []
        for w in (xp.asarray(P.case), None):
            eiw = ei if w is None else ei * w
            cells = xp.empty((i1 - i0, j1 - j0, 3, 3))
            for bj in range(3):
                d = _digits(eiw @ ind_j[bj].T, B, 3, xp)
                for ai in range(3):
                    cells[:, :, ai, bj] = d[ai]
            out.append(cells)
        return out[0], out[1]

    # -- accumulation -------------------------------------------------------------------------


    def _reduce(self, i0: int, j0: int, stat: np.ndarray, beta: np.ndarray) -> dict:
        """Tile-local reductions (run in the worker threads): candidates, pooled pyramid cells,
        best partners and chromosome-pair counts of one tile. Candidates are cut at the top-k
        threshold as it stood when the tile started, which can only be lower than the final one."""
        ti, tj = stat.shape
        thr = max(self.topk.threshold, 0.0)
        r, c = np.nonzero(stat >= thr)
        vals = stat[r, c]
        k = self.topk.k
        if len(vals) > k:  # only this tile's k best (and ties) can enter the global top-k
            kth = np.partition(vals, len(vals) - k)[len(vals) - k]
            keep = vals >= kth
            r, c, vals = r[keep], c[keep], vals[keep]
        red = {"i0": i0, "j0": j0, "cand": (r + i0, c + j0, vals, beta[r, c])}
        red["pyr"] = self.pyr.pool_tile(i0, j0, stat)
        rows = np.arange(i0, i0 + ti)
        cols = np.arange(j0, j0 + tj)
        ca = stat.argmax(axis=0)
        red["col_best"] = (cols, stat[ca, np.arange(tj)], rows[ca])
        rc = self.chrom_code[i0:i0 + ti]
        cc = self.chrom_code[j0:j0 + tj]
        rb = np.flatnonzero(np.r_[True, rc[1:] != rc[:-1], True])
        cb = np.flatnonzero(np.r_[True, cc[1:] != cc[:-1], True])
        row_best_v = np.full(ti, -1.0)
        row_best_p = np.full(ti, -1, dtype=np.int64)
        blocks = []
        for b0, b1 in zip(cb[:-1], cb[1:]):
            sub = stat[:, b0:b1]
            ra = sub.argmax(axis=1)
            rv = sub[np.arange(ti), ra]
            rp = cols[b0 + ra]
            better = rv > row_best_v  # runs are in increasing j: ties keep the smaller partner
            row_best_v[better], row_best_p[better] = rv[better], rp[better]
            valid = np.count_nonzero(sub >= 0, axis=1)
            sig = np.count_nonzero(sub >= self.sig_stat, axis=1)
            for a0, a1 in zip(rb[:-1], rb[1:]):
                u, v = rc[a0], cc[b0]
                if u > v:
                    u, v = v, u
                k = int(np.argmax(rv[a0:a1]))
                blocks.append((u, v, int(valid[a0:a1].sum()), int(sig[a0:a1].sum()), float(rv[a0 + k]),
                               i0 + a0 + k, int(rp[a0 + k])))
        red["row_best"] = (rows, row_best_v, row_best_p)
        red["blocks"] = blocks
        return red

    def _merge(self, red: dict) -> None:
        """Fold a tile's reductions into the scan's accumulators (main thread; cheap)."""
        i, j, st, be = red["cand"]
        if len(st):
            self.topk.offer(i, j, st, be)
        self.pyr.merge_pooled(*red["pyr"])
        self._best(*red["col_best"])
        self._best(*red["row_best"])
        for u, v, valid, sig, val, bi, bj in red["blocks"]:
            self.cp_tested[u, v] += valid
            self.cp_sig[u, v] += sig
            if val < 0:
                continue
            if val > self.cp_best[u, v] or (val == self.cp_best[u, v] and (bi, bj) < (self.cp_best_i[u, v], self.cp_best_j[u, v])):
                self.cp_best[u, v], self.cp_best_i[u, v], self.cp_best_j[u, v] = val, bi, bj

    def _best(self, idx, val, partner) -> None:
        cur = self.best_stat[idx]
        curp = self.best_partner[idx]
        take = (val > cur) | ((val == cur) & (val >= 0) & ((partner < curp) | (curp < 0)))
        self.best_stat[idx[take]] = val[take]
        self.best_partner[idx[take]] = partner[take]

    # -- results ------------------------------------------------------------------------------

    def results(self) -> dict:
        """Top pairs, best partners and chromosome-pair summaries in original SNP indices (numpy)."""
        if self.engine is not None:
            self.engine.to_host()
        o = self.order
        ti, tj = o[self.topk.i], o[self.topk.j]
        lo, hi = np.minimum(ti, tj), np.maximum(ti, tj)
        scale = self.y_scale if self.statistic.effect_in_phenotype_units else 1.0
        top = {"i": lo, "j": hi, "stat": self.topk.stat.copy(), "effect": self.topk.effect * scale,
               "p": self.statistic.pvalue(self.topk.stat)}
        best_stat = np.full(self.p, np.nan)
        best_partner = np.full(self.p, -1, dtype=np.int64)
        has = self.best_stat >= 0
        best_stat[o[has]] = self.best_stat[has]
        best_partner[o[has]] = o[self.best_partner[has]]
        rows = []
        for u in range(self.nc):
            for v in range(u, self.nc):
                if self.cp_tested[u, v] == 0 and self.cp_best[u, v] < 0:
                    continue
                bi, bj = self.cp_best_i[u, v], self.cp_best_j[u, v]
                rows.append({
                    "chrom1": self.labels[u], "chrom2": self.labels[v], "tested": int(self.cp_tested[u, v]),
                    "significant": int(self.cp_sig[u, v]),
                    "best_stat": float(self.cp_best[u, v]) if bi >= 0 else np.nan,
                    "best_i": int(min(o[bi], o[bj])) if bi >= 0 else -1,
                    "best_j": int(max(o[bi], o[bj])) if bi >= 0 else -1,
                })
        return {"top": top, "best_stat": best_stat, "best_partner": best_partner, "chrom_pairs": rows,
                "pyramid_level0": self.pyr.level0(), "pyramid_cell": self.pyr.cell, "sig_p": self.sig_p,
                "sig_stat": self.sig_stat, "n_pairs": self.n_pairs, "order": o, "elapsed": self.elapsed,
                "tested": int(self.cp_tested.sum())}


# ---------------------------------------------------------------------------------------------


def _codes(labels_sorted: np.ndarray):
    """Chromosome labels in order of appearance and the integer code of each SNP."""
    uniq, first, inv = np.unique(labels_sorted, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return list(uniq[np.argsort(first)]), rank[inv].astype(np.int64)


def _digits(v, B: float, k: int, xp=np) -> list:
    """Base-B digits (least significant first) of exact non-negative integer floats."""
    out = []
    inv = 1.0 / B
    for _ in range(k - 1):
        q = xp.floor(v * inv)
        out.append(v - q * B)
        v = q
    out.append(v)
    return out


def _cell_moments(n11, n12, n21, n22) -> dict:
    """Raw pair moments from the cells with both genotypes non-zero (a, b in {1, 2})."""
    return {
        "Sab": n11 + 2.0 * (n12 + n21) + 4.0 * n22,
        "Saab": n11 + 2.0 * n12 + 4.0 * n21 + 8.0 * n22,
        "Sabb": n11 + 4.0 * n12 + 2.0 * n21 + 8.0 * n22,
        "Saabb": n11 + 4.0 * (n12 + n21) + 16.0 * n22,
    }


_FORKED_SCAN = None


def _forked_tile(tp):
    """Worker-process body: one tile pair of the scan inherited through fork."""
    s = _FORKED_SCAN
    with _blas_threads(1), _torch_threads():
        return s._tile_reduce(tp)


def _fork_context():
    if _PREWARM is not None:  # never fork while another thread is inside an import
        _PREWARM.join()
    try:
        return mp.get_context("fork")
    except ValueError:  # platforms without fork
        return None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class _blas_threads:
    """Limit BLAS to n threads inside the block (worker threads parallelise instead)."""

    def __init__(self, n: int):
        self.n = n
        self.ctl = None

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits

            self.ctl = threadpool_limits(self.n, user_api="blas")
        except Exception:
            self.ctl = None
        return self

    def __exit__(self, *exc):
        if self.ctl is not None:
            self.ctl.restore_original_limits()
        return False
