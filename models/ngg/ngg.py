"""NGG ("model compression") estimator for 1D SNP effects and 2D SNP-pair interaction effects.

The design is D = [X | X*X]: one column per SNP and one per SNP pair (i < j), the pair column
being the product of the two standardised genotype columns, itself standardised. Every column
of D and the phenotype y are standardised (y to unit variance), so an effect is in units of
SD(y) per SD(column). For each of R repetitions:

1. the columns of D are shuffled and cut into pieces of B columns;
2. for each piece k a Gaussian sketch A (d x B, i.i.d. N(0, 1/d), so columns have unit norm on
   average) compresses it: S = D_k A^T (n x d);
3. the compressed normal equations V w = h, V = S^T S, h = S^T y (with a relative ridge) are solved
   and mapped back to the sketch space, nu = A A^T w (if y ~ D_k theta then nu ~ A theta);
4. theta_k = argmin 1/2 ||A theta - nu||^2 + lam ||theta||_1 is recovered by FISTA, batched over
   many pieces at once (3-D arrays: one kernel sequence per batch of pieces).

Over the R repetitions (fresh shuffles, fresh A) each column gets its mean effect (zeros
included) and its support (fraction of repetitions with theta != 0); the score is
support x |mean effect|.

Pair columns are never stored: a piece's columns are formed from the pair index (models/ngg/pairs)
and discarded after its sketch. Memory is O(n p) for the genotypes plus O(block_cols) for
accumulators, whatever the number of pairs:

* Full-space scan. The column space (p SNP columns, then p(p-1)/2 pair columns) is processed in
  super-blocks of ``block_cols`` consecutive columns. Inside a block, every repetition shuffles
  the block's columns with a keyed Feistel bijection (no permutation array) and streams its
  pieces; the block's per-column sums and nonzero counts over the R repetitions are then turned
  into scores and merged into a running top-k, and the block's accumulators are reused. When the
  whole space fits in one block (e.g. 60 million pairs of mouse_hs1940 with the default 2**26)
  this is exactly the paper's global shuffle; beyond, a column's piece-mates are drawn from its
  block of 67 million columns instead of from all columns, which changes nothing statistically (the
  mates are random either way) and is what lets HLC's 6.4e10 pairs (~960 blocks, 6.4e7 pieces per
  repetition) run in bounded memory with resumable units of work.
* Candidate pairs. ``candidates`` restricts the pair columns to pairs among a SNP subset (e.g. the
  top few thousand SNPs of a 1D scan or of an NGG '1d' run), which turns 6.4e10 columns into
  m(m-1)/2: the usual two-stage strategy when a full scan is too costly. Planted pure interactions
  without marginal effects are invisible to a 1D pre-screen, so the full-space scan remains the
  reference.

Cost of one repetition over N columns (n samples): N*d*n multiply-adds for the sketches (GEMMs),
about 4*N*n memory reads to form and standardise the pair columns, N*d Gaussian numbers, and
iters FISTA steps that each read every sketch matrix twice (2*N*d*iters multiply-adds, bound by
memory bandwidth). For HLC (N = 6.4e10, n = 427, d = 30, float32) that is 8e14 multiply-adds of
sketch and 1.5e13 bytes of sketch matrices read per FISTA iteration, 3e15 bytes for 200
iterations: about 15 minutes per repetition at an H100's memory bandwidth unless a batch's
sketches stay in cache, and days on a CPU. The cost hardly depends on B (smaller pieces = more
of them), so B, lam and R are chosen for recovery, while ``iters`` and d set the price.

Determinism: the column shuffle and the Gaussian matrices come from counter-based hashes of
(seed, block, repetition, piece), not from a library generator, so they are identical on numpy and
cupy and do not depend on the batch size; CPU results are bit-reproducible for a fixed seed and
batch, GPU results agree with them to float tolerance.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models.backend import get_xp, is_gpu, synchronize, to_numpy
from models.ngg.pairs import FeistelPermutation, counter_normal, derive_key, n_pairs, pair_from_index
from models.scans.design import check_phenotype, covariate_basis, standardize_genotypes

__all__ = ["NGGResult", "ngg_fit", "standardize_genotypes", "default_lambda", "resolve_xp", "to_numpy"]

_SALT_PERM = 0x5EED_0001
_SALT_A = 0x5EED_0002


# ---------------------------------------------------------------------------------------------
# array-module helpers


def resolve_xp(xp=None):
    """The array module: a module (numpy, cupy) is used as is; None or a device name ('auto',
    'cpu', 'cuda', also 'numpy'/'cupy') goes through the project switch models.backend
    (None: $EPIFLOW_DEVICE, else 'auto': cupy when a CUDA device is usable, numpy otherwise)."""
    return get_xp(xp)


def _sync(xp):
    synchronize(xp)


# ---------------------------------------------------------------------------------------------
# preprocessing (column standardisation: models.scans.design.standardize_genotypes)


def default_lambda(n: int, B: int, d: int, scale: float = 1.0) -> float:
    """lam = scale * sqrt(B / (d n)): the noise level of one column's sketched estimate.

    With standardised columns and y, nu ~ A c where c = D_k^T y / n carries N(0, 1/n) noise in
    each of the B entries; the sketch folds that noise into each column's correlation with nu with
    standard deviation ~ sqrt(B / (d n)). lam on that scale keeps pure-noise columns at zero.
    """
    return float(scale) * math.sqrt(B / (d * n))


# ---------------------------------------------------------------------------------------------
# result


@dataclass
class NGGResult:
    """What :func:`ngg_fit` returns (numpy arrays, SNP indices into the columns of X).

    snp_effect / snp_support / snp_score: one value per SNP column of X (0 for SNPs not in the
    design: monomorphic ones). top_snps / top_pairs: the best ``top`` columns with a nonzero score,
    best first: dicts of arrays 'snp' (or 'i', 'j' with i < j), 'effect', 'support', 'score'.
    """

    snp_effect: np.ndarray
    snp_support: np.ndarray
    snp_score: np.ndarray
    top_snps: dict
    top_pairs: dict
    params: dict
    timings: dict
    n_columns: int
    pieces_per_repetition: int
    extra: dict = field(default_factory=dict)

    def snps_frame(self, snp_ids=None):
        df = pd.DataFrame(self.top_snps)
        if snp_ids is not None:
            df.insert(1, "snp_id", np.asarray(snp_ids)[df["snp"].to_numpy()])
        return df

    def pairs_frame(self, snp_ids=None):
        df = pd.DataFrame(self.top_pairs)
        if snp_ids is not None:
            ids = np.asarray(snp_ids)
            df.insert(2, "id_i", ids[df["i"].to_numpy()])
            df.insert(3, "id_j", ids[df["j"].to_numpy()])
        return df


# ---------------------------------------------------------------------------------------------
# the batched kernel sequence


def _lipschitz(Am, xp, iters: int = 40):
    """Largest eigenvalue of Am Am^T per piece (batched power iteration), with a 5 % margin."""
    G = Am @ xp.swapaxes(Am, 1, 2)  # (nb, d, d)
    v = xp.ones(G.shape[:2] + (1,), dtype=G.dtype)
    for _ in range(iters):
        v = G @ v
        v /= xp.maximum(xp.sqrt((v * v).sum(axis=1, keepdims=True)), 1e-30)
    lam = ((G @ v) * v).sum(axis=(1, 2))
    return xp.maximum(lam * 1.05, 1e-12)


_FISTA_SRC = r"""
extern "C" __global__ void __launch_bounds__(128)
fista_pieces(const real_t* __restrict__ A, const real_t* __restrict__ nu, real_t* __restrict__ theta_out,
             const int d, const int B, const int iters, const real_t lam)
{
    // one block per piece: A (d x B) stays in shared memory for the power iteration and every
    // FISTA step; the same arithmetic as the array-op path, in the precision real_t
    extern __shared__ unsigned char smem_raw[];
    real_t* sA = reinterpret_cast<real_t*>(smem_raw);
    real_t* sz = sA + d * B;          // B
    real_t* sAtnu = sz + B;           // B
    real_t* sAz = sAtnu + B;          // d
    real_t* sv = sAz + d;             // d
    real_t* sG = sv + d;              // d * d
    real_t* sred = sG + d * d;        // 1
    const long piece = blockIdx.x;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    const real_t* Ap = A + piece * (long)d * B;
    for (int i = tid; i < d * B; i += blockDim.x) sA[i] = Ap[i];
    for (int b = tid; b < B; b += blockDim.x) sz[b] = (real_t)0;
    for (int k = tid; k < d; k += blockDim.x) { sAz[k] = nu[piece * d + k]; sv[k] = (real_t)1; }
    __syncthreads();
    for (int b = tid; b < B; b += blockDim.x) {
        real_t s = 0;
        for (int k = 0; k < d; ++k) s += sA[k * B + b] * sAz[k];
        sAtnu[b] = s;
    }
    // G = A A^real_t, then 40 power iterations for the largest eigenvalue (step size 1/L)
    for (int e = warp; e < d * d; e += nw) {
        const int k = e / d, l = e % d;
        real_t s = 0;
        for (int b = lane; b < B; b += 32) s += sA[k * B + b] * sA[l * B + b];
        for (int o = 16; o; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (lane == 0) sG[e] = s;
    }
    __syncthreads();
    for (int it = 0; it < 40; ++it) {
        real_t gv = 0;
        if (tid < d) for (int l = 0; l < d; ++l) gv += sG[tid * d + l] * sv[l];
        __syncthreads();
        if (tid < d) sAz[tid] = gv;
        __syncthreads();
        if (tid == 0) {
            real_t nrm = 0;
            for (int k = 0; k < d; ++k) nrm += sAz[k] * sAz[k];
            nrm = sqrt(nrm);
            sred[0] = nrm > (real_t)1e-30 ? nrm : (real_t)1e-30;
        }
        __syncthreads();
        if (tid < d) sv[tid] = sAz[tid] / sred[0];
        __syncthreads();
    }
    if (tid == 0) {
        real_t lmax = 0;
        for (int k = 0; k < d; ++k) {
            real_t gv = 0;
            for (int l = 0; l < d; ++l) gv += sG[k * d + l] * sv[l];
            lmax += gv * sv[k];
        }
        real_t L = lmax * (real_t)1.05;
        sred[0] = L > (real_t)1e-12 ? L : (real_t)1e-12;
    }
    __syncthreads();
    const real_t step = (real_t)1 / sred[0];
    const real_t thr = lam * step;
    real_t theta[MAXJ];
#pragma unroll
    for (int j = 0; j < MAXJ; ++j) theta[j] = 0;
    double t = 1.0;
    for (int it = 0; it < iters; ++it) {
        for (int k = warp; k < d; k += nw) {           // Az = A z
            real_t s = 0;
            for (int b = lane; b < B; b += 32) s += sA[k * B + b] * sz[b];
            for (int o = 16; o; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
            if (lane == 0) sAz[k] = s;
        }
        __syncthreads();
        const double tn = 0.5 * (1.0 + sqrt(1.0 + 4.0 * t * t));
        const real_t mom = (real_t)((t - 1.0) / tn);
        t = tn;
#pragma unroll
        for (int j = 0; j < MAXJ; ++j) {               // gradient, prox step, momentum
            const int b = tid + j * blockDim.x;
            if (b < B) {
                real_t g = 0;
                for (int k = 0; k < d; ++k) g += sA[k * B + b] * sAz[k];
                g -= sAtnu[b];
                const real_t u = sz[b] - step * g;
                const real_t a = fabs(u) - thr;
                const real_t nw_ = a > (real_t)0 ? copysign(a, u) : (real_t)0;
                sz[b] = nw_ + mom * (nw_ - theta[j]);
                theta[j] = nw_;
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < MAXJ; ++j) {
        const int b = tid + j * blockDim.x;
        if (b < B) theta_out[piece * B + b] = theta[j];
    }
}
"""
_FISTA_THREADS = 128
_FISTA_MAXJ = 8                      # B <= 128 * 8
_FISTA_SMEM_MAX = 200 * 1024         # bytes of shared memory a block may ask for (Hopper: 227 KB)
_fista_kernels: dict = {}


def _fista_smem(d: int, B: int, itemsize: int) -> int:
    return (d * B + 2 * B + 2 * d + d * d + 1) * itemsize


def _fista_fused_ok(A, xp) -> bool:
    """Whether the one-kernel GPU FISTA applies (CuPy, float32/64, pieces fit in shared memory)."""
    if not is_gpu(xp) or A.dtype not in (np.float32, np.float64):
        return False
    nb, d, B = A.shape
    return d <= _FISTA_THREADS and B <= _FISTA_THREADS * _FISTA_MAXJ and _fista_smem(d, B, A.dtype.itemsize) <= _FISTA_SMEM_MAX


def _fista_fused(A, nu, lam, iters: int, xp):
    """The GPU path of :func:`fista_lasso`: one thread block per piece, A held in shared memory
    for the whole solve (power iteration + all FISTA steps), one kernel launch per batch instead
    of ~10 launches per iteration, each reading every A from device memory."""
    nb, d, B = A.shape
    key = (A.dtype.str, xp.cuda.Device().id)
    kern = _fista_kernels.get(key)
    if kern is None:
        tname = "float" if A.dtype == np.float32 else "double"
        src = f"typedef {tname} real_t;\n#define MAXJ {_FISTA_MAXJ}\n" + _FISTA_SRC
        kern = xp.RawKernel(src, "fista_pieces", options=("-std=c++11",))
        _fista_kernels[key] = kern
    smem = _fista_smem(d, B, A.dtype.itemsize)
    if smem > 48 * 1024:
        kern.max_dynamic_shared_size_bytes = smem
    A = xp.ascontiguousarray(A)
    nu = xp.ascontiguousarray(nu, dtype=A.dtype)
    theta = xp.empty((nb, B), dtype=A.dtype)
    if nb:
        kern((nb,), (_FISTA_THREADS,), (A, nu, theta, np.int32(d), np.int32(B), np.int32(iters),
                                        A.dtype.type(lam)), shared_mem=smem)
    return theta


def fista_lasso(A, nu, lam, iters: int, xp=np, fused: bool | None = None):
    """Batched FISTA for argmin_theta 1/2 ||A theta - nu||^2 + lam ||theta||_1.

    A: (nb, d, B), nu: (nb, d); returns theta (nb, B). Fixed iteration count (no data-dependent
    stopping), so every piece runs the same kernel sequence. On CuPy the whole solve runs as one
    kernel (``fused``; None: wherever it applies), with the same arithmetic as the array-op path.
    """
    if (fused is None or fused) and _fista_fused_ok(A, xp):
        return _fista_fused(A, nu, lam, iters, xp)
    nb, d, B = A.shape
    L = _lipschitz(A, xp)[:, None]  # (nb, 1)
    step = (1.0 / L).astype(A.dtype)
    thr = (lam * step).astype(A.dtype)
    AT = xp.swapaxes(A, 1, 2)  # (nb, B, d) view
    Atnu = (AT @ nu[:, :, None])[:, :, 0]  # (nb, B)
    theta = xp.zeros((nb, B), dtype=A.dtype)
    z = theta.copy()
    t = 1.0
    for _ in range(iters):
        Az = (A @ z[:, :, None])  # (nb, d, 1)
        g = (AT @ Az)[:, :, 0] - Atnu
        u = z - step * g
        new = xp.sign(u) * xp.maximum(xp.abs(u) - thr, 0)
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        z = new + ((t - 1.0) / t_new) * (new - theta)
        theta = new
        t = t_new
    return theta


class _Timer:
    def __init__(self, xp, enabled=True):
        self.xp = xp
        self.t = {}
        self.enabled = enabled

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                if timer.enabled:
                    _sync(timer.xp)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.enabled:
                    _sync(timer.xp)
                timer.t[name] = timer.t.get(name, 0.0) + time.perf_counter() - self.t0

        return _Ctx()


def _topk_merge(cur, ids, scores, eff, sup, k):
    """Merge candidate (ids, scores, effects, supports) into the running top-k (numpy arrays)."""
    if cur is not None:
        ids = np.concatenate([cur[0], ids])
        scores = np.concatenate([cur[1], scores])
        eff = np.concatenate([cur[2], eff])
        sup = np.concatenate([cur[3], sup])
    order = np.lexsort((ids, -scores))[:k]  # best score first, ties by column id
    return ids[order], scores[order], eff[order], sup[order]


# ---------------------------------------------------------------------------------------------
# the estimator


def _bmm(a, b, xp):
    """Batched matrix product; on numpy a loop of 2-D products (numpy's stacked matmul is slow)."""
    if xp is np:
        out = np.empty(a.shape[:-1] + b.shape[-1:], dtype=np.result_type(a, b))
        for k in range(a.shape[0]):
            np.matmul(a[k], b[k], out=out[k])
        return out
    return a @ b


def _sketch_normal_equations(rows, ri, rj, valid, A, yz, chunk, xp):
    """For each piece: the masked sketch Am and the compressed normal equations V, h.

    The piece's columns are rows[ri] * rows[rj] (products of standardised SNP rows; a row of ones
    stands for "no second SNP"), standardised on the fly: D = (P - mu) / s. Rather than forming D,
    the sketch uses A / s and subtracts the mean term: S^T = (A/s) P - (A/s) mu 1^T. Columns that
    are constant (padding, or a product without variance) are masked out of A, so they neither
    enter the sketch nor receive an effect.
    """
    nb, d, B = A.shape
    n = rows.shape[1]
    dtype = A.dtype
    Am = xp.empty_like(A)
    V = xp.empty((nb, d, d), dtype=xp.float64)
    h = xp.empty((nb, d), dtype=xp.float64)
    for k0 in range(0, nb, chunk):
        k1 = min(nb, k0 + chunk)
        P = rows[ri[k0:k1]]  # (c, B, n)
        P *= rows[rj[k0:k1]]
        mu = P.sum(axis=2) / n
        ss = xp.einsum("kbn,kbn->kb", P, P) / n
        s = xp.sqrt(xp.maximum(ss - mu * mu, 0))
        good = valid[k0:k1] & (s > 1e-6)
        inv_s = xp.where(good, 1.0 / xp.where(good, s, 1), 0).astype(dtype)
        Am[k0:k1] = A[k0:k1] * good[:, None, :].astype(dtype)
        As = Am[k0:k1] * inv_s[:, None, :]
        ST = _bmm(As, P, xp)  # (c, d, n)
        del P
        ST -= _bmm(As, mu[:, :, None].astype(dtype), xp)
        V[k0:k1] = _bmm(ST, xp.swapaxes(ST, 1, 2), xp)
        h[k0:k1] = (ST @ yz[:, None])[:, :, 0]
    return Am, V, h


def _signature(X, y, params: dict) -> str:
    """A digest of the data and of every parameter that changes the result (for checkpoints)."""
    hsh = hashlib.blake2b(digest_size=16)
    Xc = np.ascontiguousarray(X)
    hsh.update(str((Xc.shape, Xc.dtype.str)).encode())
    hsh.update(memoryview(Xc).cast("B"))
    hsh.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    hsh.update(json.dumps(params, sort_keys=True, default=str).encode())
    return hsh.hexdigest()


def _save_checkpoint(path, signature, next_block, snp_mean, snp_cnt, best):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    empty = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    ids, scores, eff, sup = best if best is not None else empty
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, signature=np.array(signature), next_block=np.array(next_block),
             snp_mean=snp_mean, snp_cnt=snp_cnt, ids=ids, scores=scores, eff=eff, sup=sup,
             has_best=np.array(best is not None))
    os.replace(tmp, path)


def _open_checkpoint(path, signature, mismatch=ValueError):
    """The open .npz of a checkpoint with this ``signature``; None where there is none or it is
    unreadable (warned: the run starts over). Another signature raises ``mismatch``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        z.files  # noqa: B018  (a truncated zip fails here)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring unreadable checkpoint {path} ({exc}); starting over", stacklevel=4)
        return None
    if str(z["signature"]) != signature:
        z.close()
        raise mismatch(f"checkpoint {path} belongs to other data or parameters; remove it or choose another path")
    return z


def _refuse_if_too_long(elapsed: float, done: int, total: int, R: int, max_seconds: float, mode: str, xp) -> None:
    """One-line refusal when ``total`` pieces at the rate of the first ``done`` exceed the limit."""
    est = elapsed / max(done, 1) * total
    if est <= max_seconds:
        return
    from models.errors import EpiflowError

    where = "the GPU" if is_gpu(xp) else "the CPU"
    r_fit = int(R * max_seconds / est)
    fits = (f"--ngg-repetitions {r_fit} fits the limit; " if r_fit >= 1 else "")
    raise EpiflowError(
        f"NGG {mode}: about {est / 60:.0f} min on {where} ({total:,} pieces at {done / max(elapsed, 1e-9):,.0f}/s, "
        f"R={R}), over the {max_seconds / 60:g} min limit; {fits}a GPU (--device cuda) or fewer SNPs "
        f"(--maf, --extract) shorten it; --ngg-max-minutes 0 runs it anyway")


def _load_checkpoint(path, signature):
    z = _open_checkpoint(path, signature)
    if z is None:
        return None
    with z:
        best = (z["ids"], z["scores"], z["eff"], z["sup"]) if bool(z["has_best"]) else None
        return int(z["next_block"]), z["snp_mean"].copy(), z["snp_cnt"].copy(), best


def ngg_fit(
    X,
    y,
    *,
    mode: str = "2d",
    B: int = 1000,
    d: int = 30,
    lam: float | None = None,
    lam_scale: float = 1.0,
    R: int = 10,
    iters: int = 200,
    seed: int = 0,
    xp=None,
    top: int = 1000,
    covariates=None,
    candidates=None,
    progress: bool = True,
    batch: int | None = None,
    block_cols: int = 2**26,
    ridge: float = 1e-6,
    dtype=np.float32,
    profile: bool = False,
    max_pieces: int | None = None,
    checkpoint=None,
    max_seconds: float | None = None,
) -> NGGResult:
    """Fit NGG on genotypes X (n x p dosages; NaN, or a negative integer, = missing) and y (n,).

    mode: '1d' (SNP columns only) or '2d' (SNP columns and pair columns).
    candidates: in '2d', restrict pair columns to pairs among these SNP indices (1D columns still
        cover every SNP).
    B, d, lam, R, iters: piece size, sketch size, L1 penalty (None: ``default_lambda`` x
        lam_scale), repetitions, FISTA iterations. Pieces never exceed the number of columns.
        The defaults are the paper's (B=1000, d=30). A column's noise level per repetition is
        ~sqrt(B / (d n)), so with n in the low thousands B=1000 only finds pairs explaining
        ~10 % of the variance; on mouse_hs1940 (n=1,940) B=100, lam_scale=2 recovered 9/10
        planted pairs of 4 % variance each in the top 10 where the defaults found 1/10, at the
        same cost (benchmarks/bench_ngg.py).
    top: how many SNPs and pairs to report. covariates: (n, c) array regressed out of y and of
        the genotype columns first (an intercept is always included).
    xp: numpy, cupy, or a device name for models.backend.get_xp ('auto', 'cpu', 'cuda';
        None = $EPIFLOW_DEVICE or 'auto').
    batch: pieces per FISTA batch (default ~65k columns on CPU, ~33M sketch entries on GPU); the
        sketch of a batch runs in chunks whose gathered pair columns take ~16 MB (CPU) or ~1 GB
        (GPU).
    block_cols: columns per super-block (see module docstring).
    max_pieces: stop each repetition after this many pieces (for throughput measurements on
        spaces too large to finish; the result then covers only the columns of those pieces).
    checkpoint: a file path (.npz); the running state is saved after every super-block and a
        rerun with the same data and parameters resumes after the last saved block, giving the
        same result as an uninterrupted run.
    max_seconds: estimate the run time from the first batch of pieces and raise
        :class:`~models.errors.EpiflowError` (one line: the estimate and settings that fit) when
        it exceeds this many seconds; None: no limit.
    """
    xp = resolve_xp(xp)
    if xp is np:
        # the CPU path is many small products (d x B sketches, batched FISTA steps): BLAS worker
        # threads cost more to wake than they save (measured 5-20x slower on 2 busy cores)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return _ngg_fit(X, y, mode=mode, B=B, d=d, lam=lam, lam_scale=lam_scale, R=R, iters=iters,
                            seed=seed, xp=xp, top=top, covariates=covariates, candidates=candidates,
                            progress=progress, batch=batch, block_cols=block_cols, ridge=ridge,
                            dtype=dtype, profile=profile, max_pieces=max_pieces, checkpoint=checkpoint,
                            max_seconds=max_seconds)
    return _ngg_fit(X, y, mode=mode, B=B, d=d, lam=lam, lam_scale=lam_scale, R=R, iters=iters,
                    seed=seed, xp=xp, top=top, covariates=covariates, candidates=candidates,
                    progress=progress, batch=batch, block_cols=block_cols, ridge=ridge,
                    dtype=dtype, profile=profile, max_pieces=max_pieces, checkpoint=checkpoint,
                    max_seconds=max_seconds)


@dataclass
class _Plan:
    """Columns, pieces and blocks of one fit (see :func:`_plan`)."""

    rows: object            # (n1 + 1, n) standardised SNP rows and a row of ones (device)
    yz: object              # standardised residual phenotype (device)
    yr: np.ndarray          # residual phenotype (host)
    kept: np.ndarray        # polymorphic SNPs: the 1D columns, in this order
    n1: int
    ones_row: int
    pair_local: np.ndarray  # rows of `rows` whose pairs are columns
    pair_local_x: object
    m: int
    n2: int
    N: int
    Beff: int
    lam_v: float
    chunk: int
    batch: int
    block_cols: int
    n_blocks: int
    block_pieces: list
    inv_sqrt_d: float


def _ngg_inputs(X, y, covariates, mode, candidates, B, d, R, iters, top):
    """Checked inputs on the samples with a phenotype (and complete covariates): (X, y, Q, p)."""
    if mode not in ("1d", "2d"):
        raise ValueError(f"mode must be '1d' or '2d', got {mode!r}")
    if mode == "1d" and candidates is not None:
        raise ValueError("candidates restrict pair columns: use them with mode='2d'")
    if B < 1 or d < 1 or R < 1 or iters < 1 or top < 1:
        raise ValueError("B, d, R, iters and top must be >= 1")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x SNPs), got shape {X.shape}")
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n_all, p = X.shape
    if y.shape[0] != n_all:
        raise ValueError(f"y has {y.shape[0]} values but X has {n_all} rows")
    ok = np.isfinite(y)
    if covariates is not None:
        C = np.asarray(covariates, dtype=np.float64)
        C = C[:, None] if C.ndim == 1 else C
        ok &= np.isfinite(C).all(axis=1)
    if ok.sum() < 3:
        raise ValueError("fewer than 3 samples with a phenotype value")
    X = X[ok]
    y = y[ok]
    n = X.shape[0]
    check_phenotype(y, None if covariates is None else C[ok])
    Q = covariate_basis(n, None if covariates is None else C[ok], standardize=False)
    return X, y, Q, p


def _pair_snps(candidates, kept, n1, p, mode):
    """Rows whose pairs are columns (all polymorphic SNPs, or the polymorphic candidates)."""
    if mode != "2d":
        return np.arange(0), 0, 0
    if candidates is None:
        pair_local = np.arange(n1)
    else:
        cand = np.unique(np.asarray(candidates, dtype=np.int64))
        if cand.size and (cand.min() < 0 or cand.max() >= p):
            raise ValueError("candidate SNP index out of range")
        pos = np.searchsorted(kept, cand)
        pos = np.clip(pos, 0, n1 - 1)
        pair_local = pos[kept[pos] == cand]  # drop monomorphic candidates
    m = pair_local.size
    return pair_local, m, n_pairs(m) if m >= 2 else 0


def _plan(X, y, Q, p, *, mode, B, d, lam, lam_scale, xp, candidates, batch, block_cols, dtype,
          max_pieces) -> _Plan:
    """Standardise genotypes and phenotype; size pieces, sketch chunks, FISTA batches and blocks."""
    n = X.shape[0]
    ZT, sd = standardize_genotypes(X, xp=xp, dtype=dtype, covariates_q=Q)
    yr = y - Q @ (Q.T @ y)
    ysd = np.sqrt((yr * yr).sum() / n)
    if not ysd > 0:
        raise ValueError("phenotype is constant after removing covariates")
    yz = xp.asarray(yr / ysd, dtype=dtype)
    kept = np.flatnonzero(sd > 0)  # polymorphic SNPs: the 1D columns, in this order
    n1 = kept.size
    if n1 == 0:
        raise ValueError("no polymorphic SNP column")
    rows = xp.concatenate([ZT[xp.asarray(kept)], xp.ones((1, n), dtype=dtype)], axis=0)
    del ZT
    pair_local, m, n2 = _pair_snps(candidates, kept, n1, p, mode)
    N = n1 + n2
    Beff = int(min(B, N))
    lam_v = float(lam) if lam is not None else default_lambda(n, Beff, d, lam_scale)
    # pieces per sketch chunk: the gathered pair columns (chunk x B x n) fit a memory budget;
    # pieces per FISTA batch: many more (its arrays are only batch x d x B)
    budget = (1 << 30) if is_gpu(xp) else (1 << 24)
    chunk = max(1, budget // (Beff * n * dtype.itemsize))
    if batch is None:  # FISTA batch: ~2**25 sketch entries on a GPU, ~2**16 columns on a CPU
        batch = max(1, (2**25 // (d * Beff)) if is_gpu(xp) else (2**16 // Beff))
    batch = max(1, int(batch))
    chunk = min(chunk, batch)
    block_cols = int(max(Beff, block_cols))
    block_cols -= block_cols % Beff  # blocks hold whole pieces
    n_blocks = -(-N // block_cols)
    # pieces per repetition in each block (max_pieces caps the total, taken from the first blocks)
    block_pieces = []
    left = int(max_pieces) if max_pieces else None
    for b in range(n_blocks):
        pb = -(-min(block_cols, N - b * block_cols) // Beff)
        if left is not None:
            pb = min(pb, left)
            left -= pb
        block_pieces.append(pb)
    return _Plan(rows, yz, yr, kept, n1, n1, pair_local, xp.asarray(pair_local), m, n2, N, Beff, lam_v, chunk,
                 batch, block_cols, n_blocks, block_pieces, 1.0 / math.sqrt(d))


def _fit_pieces(pl: _Plan, perm, key_a, c0, Mb, q0, q1, *, d, iters, ridge, dtype, xp, timer):
    """Pieces q0:q1 of one block and repetition: columns, sketch, normal equations, FISTA.
    Returns (column within the block, valid slots, theta)."""
    Beff, ones_row = pl.Beff, pl.ones_row
    nb = q1 - q0
    with timer("index"):
        slots = xp.arange(q0 * Beff, q1 * Beff, dtype=xp.int64).reshape(nb, Beff)
        valid = slots < Mb
        local = perm(xp.where(valid, slots, 0), xp)  # column within block
        col = local + c0
        is_snp = col < pl.n1
        ri = xp.where(is_snp, col, ones_row)
        rj = xp.full(col.shape, ones_row, dtype=xp.int64)
        if pl.n2:
            kp = xp.where(is_snp, 0, col - pl.n1)
            ia, ib = pair_from_index(kp, pl.m, xp)
            ri = xp.where(is_snp, ri, pl.pair_local_x[ia])
            rj = xp.where(is_snp, rj, pl.pair_local_x[ib])
        ri = xp.where(valid, ri, ones_row)
        rj = xp.where(valid, rj, ones_row)
    with timer("rng"):
        A = counter_normal(key_a, q0 * d * Beff, nb * d * Beff, xp, dtype)
        A = A.reshape(nb, d, Beff)
        A *= dtype.type(pl.inv_sqrt_d)
    with timer("sketch"):
        Am, V, h = _sketch_normal_equations(pl.rows, ri, rj, valid, A, pl.yz, pl.chunk, xp)
    with timer("solve"):
        tr = xp.trace(V, axis1=1, axis2=2) / d
        V += (ridge * tr + 1e-12)[:, None, None] * xp.eye(d, dtype=xp.float64)[None]
        w = xp.linalg.solve(V, h[:, :, None])  # (nb, d, 1)
        Am64 = Am.astype(xp.float64)
        nu = (Am64 @ (xp.swapaxes(Am64, 1, 2) @ w))[:, :, 0].astype(dtype)
        del Am64
    with timer("fista"):
        theta = fista_lasso(Am, nu, pl.lam_v, iters, xp)
    return local, valid, theta


def _block_reduce(pl: _Plan, acc_sum, acc_cnt, c0, Mb, R, top, best, snp_mean, snp_cnt, xp):
    """Fold one block's sums into the SNP effects/counts (in place) and the running pair top-k."""
    mean = acc_sum / R
    sup = acc_cnt.astype(xp.float64) / R
    score = sup * xp.abs(mean)
    n1, n2 = pl.n1, pl.n2
    n_snp_here = int(max(0, min(n1 - c0, Mb)))
    if n_snp_here:
        snp_mean[c0:c0 + n_snp_here] = to_numpy(mean[:n_snp_here])
        snp_cnt[c0:c0 + n_snp_here] = to_numpy(acc_cnt[:n_snp_here])
    if n2 and Mb > n_snp_here:
        ps = score[n_snp_here:]
        # only scores that can enter the running top-k (> 0, >= its current k-th score)
        thr = float(best[1][-1]) if best is not None and best[1].size >= top else 0.0
        idx = xp.nonzero((ps >= thr) & (ps > 0))[0]
        if int(idx.size) > top:  # keep the best `top` and every tie with the k-th
            cs = ps[idx]
            kth = -xp.partition(-cs, top - 1)[top - 1]
            idx = idx[cs >= kth]
        ids = to_numpy(idx + (c0 + n_snp_here - n1)).astype(np.int64)  # pair index
        best = _topk_merge(best, ids, to_numpy(ps[idx]), to_numpy(mean[n_snp_here:][idx]),
                           to_numpy(sup[n_snp_here:][idx]), top)
    return best


def _top_tables(pl: _Plan, p, R, top, snp_mean, snp_cnt, best):
    """Per-SNP effect, support and score over all p SNPs, and the top SNP and pair tables."""
    snp_effect = np.zeros(p)
    snp_support = np.zeros(p)
    snp_effect[pl.kept] = snp_mean
    snp_support[pl.kept] = snp_cnt / R
    snp_score = snp_support * np.abs(snp_effect)
    order = np.lexsort((np.arange(p), -snp_score))
    order = order[snp_score[order] > 0][:top]
    top_snps = {
        "snp": order.astype(np.int64),
        "effect": snp_effect[order],
        "support": snp_support[order],
        "score": snp_score[order],
    }
    if best is not None and best[0].size:
        ia, ib = pair_from_index(best[0], pl.m)
        gi, gj = pl.kept[pl.pair_local[ia]], pl.kept[pl.pair_local[ib]]
        top_pairs = {"i": gi, "j": gj, "effect": best[2], "support": best[3], "score": best[1]}
    else:
        e = np.zeros(0)
        top_pairs = {"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "effect": e,
                     "support": e, "score": e}
    return snp_effect, snp_support, snp_score, top_snps, top_pairs


def _start_state(pl: _Plan, checkpoint, signature):
    """(first block, SNP effect sums, SNP support counts, pair top-k): fresh, or from a checkpoint."""
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint, signature)
        if state is not None:
            return state
    return 0, np.zeros(pl.n1), np.zeros(pl.n1, dtype=np.int64), None


def _plan_params(pl: _Plan) -> dict:
    return {"n_snp_columns": int(pl.n1), "n_pair_snps": int(pl.m), "n_pair_columns": int(pl.n2),
            "block_cols": int(pl.block_cols), "n_blocks": int(pl.n_blocks), "batch": int(pl.batch)}


def _ngg_fit(X, y, *, mode, B, d, lam, lam_scale, R, iters, seed, xp, top, covariates, candidates,
             progress, batch, block_cols, ridge, dtype, profile, max_pieces, checkpoint,
             max_seconds=None) -> NGGResult:
    t_start = time.perf_counter()
    X, y, Q, p = _ngg_inputs(X, y, covariates, mode, candidates, B, d, R, iters, top)
    n = X.shape[0]
    dtype = np.dtype(dtype)
    timer = _Timer(xp, enabled=profile)
    with timer("prepare"):  # standardise genotypes and phenotype, size the work
        pl = _plan(X, y, Q, p, mode=mode, B=B, d=d, lam=lam, lam_scale=lam_scale, xp=xp, candidates=candidates,
                   batch=batch, block_cols=block_cols, dtype=dtype, max_pieces=max_pieces)
    Beff, N, n_blocks, block_pieces = pl.Beff, pl.N, pl.n_blocks, pl.block_pieces
    pieces_per_rep = sum(block_pieces)
    total_pieces = pieces_per_rep
    pieces_done = 0
    signature = None
    if checkpoint is not None:
        signature = _signature(X, pl.yr, dict(mode=mode, B=Beff, d=d, lam=pl.lam_v, R=R, iters=iters,
                                              seed=seed, top=top, block_cols=pl.block_cols, m=pl.m,
                                              pair_local=pl.pair_local.tolist() if candidates is not None
                                              else None, ridge=ridge, dtype=dtype.name,
                                              max_pieces=max_pieces))
    first_block, snp_mean, snp_cnt, best = _start_state(pl, checkpoint, signature)
    resumed_blocks = first_block
    total_pieces -= sum(block_pieces[:first_block])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_pieces * R, unit="piece", desc=f"NGG {mode} (R={R})", leave=False)

    t_loop = time.perf_counter()
    try:
        for b in range(first_block, n_blocks):
            c0 = b * pl.block_cols
            Mb = min(pl.block_cols, N - c0)
            pb = block_pieces[b]
            if pb == 0:
                continue
            acc_sum = xp.zeros(Mb, dtype=xp.float64)
            acc_cnt = xp.zeros(Mb, dtype=xp.int32)
            for rep in range(R):
                perm = FeistelPermutation(Mb, derive_key(seed, _SALT_PERM, b, rep))
                key_a = derive_key(seed, _SALT_A, b, rep)
                for q0 in range(0, pb, pl.batch):
                    q1 = min(pb, q0 + pl.batch)
                    local, valid, theta = _fit_pieces(pl, perm, key_a, c0, Mb, q0, q1, d=d, iters=iters, ridge=ridge,
                                                      dtype=dtype, xp=xp, timer=timer)
                    with timer("accumulate"):
                        sel = local[valid]
                        th = theta[valid].astype(xp.float64)
                        acc_sum[sel] += th
                        acc_cnt[sel] += (th != 0).astype(xp.int32)
                    pieces_done += q1 - q0
                    if bar is not None:
                        bar.update(q1 - q0)
                    if max_seconds is not None and pieces_done == q1 - q0:  # first batch: the estimate
                        _sync(xp)
                        _refuse_if_too_long(time.perf_counter() - t_loop, pieces_done, total_pieces * R, R,
                                            max_seconds, mode, xp)
            with timer("topk"):
                best = _block_reduce(pl, acc_sum, acc_cnt, c0, Mb, R, top, best, snp_mean, snp_cnt, xp)
            del acc_sum, acc_cnt
            if checkpoint is not None:
                _save_checkpoint(checkpoint, signature, b + 1, snp_mean, snp_cnt, best)
        _sync(xp)
        t_loop = time.perf_counter() - t_loop
    finally:  # also when a refusal or an error stops the loop
        if bar is not None:
            bar.close()

    snp_effect, snp_support, snp_score, top_snps, top_pairs = _top_tables(pl, p, R, top, snp_mean, snp_cnt, best)
    total = time.perf_counter() - t_start
    timings = {"total_s": total, "loop_s": t_loop, "per_repetition_s": t_loop / R,
               "pieces_per_s": pieces_done / t_loop if t_loop > 0 else float("nan"),
               "columns_per_s": pieces_done * Beff / t_loop if t_loop > 0 else float("nan"),
               "pieces_done": int(pieces_done), "resumed_blocks": int(resumed_blocks)}
    if profile:
        timings.update({f"{k}_s": v for k, v in timer.t.items()})
    params = {"mode": mode, "B": Beff, "B_requested": int(B), "d": int(d), "lam": pl.lam_v,
              "lam_scale": float(lam_scale) if lam is None else None, "R": int(R), "iters": int(iters),
              "seed": int(seed), "top": int(top), "n": int(n), "p": int(p), **_plan_params(pl),
              "ridge": float(ridge), "dtype": dtype.name, "backend": xp.__name__,
              "covariates": 0 if covariates is None else int(Q.shape[1] - 1),
              "candidates": None if candidates is None else int(pl.m), "max_pieces": max_pieces}
    return NGGResult(snp_effect, snp_support, snp_score, top_snps, top_pairs, params, timings,
                     n_columns=int(N), pieces_per_repetition=int(pieces_per_rep))
