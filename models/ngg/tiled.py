"""GEMM-shaped NGG: pieces drawn inside steps of genotype tiles, sketches shared by groups of pieces.

Same estimator as :mod:`models.ngg.ngg` (DESIGN section 5: design D = [X | X*X] with standardised
columns, pieces of B columns, Gaussian sketch A (d x B, N(0, 1/d)), compressed normal equations,
nu = A A^T w, lasso by FISTA per piece, R repetitions, score = support x |mean effect|). What
changes is how the B columns of a piece are drawn and sketched, so that the work has the shape of
large products (and, on a CUDA GPU with Triton, of the fused kernels of
:mod:`models.ngg.tiled_kernels`) instead of a gather of pair columns followed by tiny products.

Per repetition the SNPs are shuffled; a step takes a tile of rows against a group of column tiles
(the pairs whose partner comes after the row in the shuffled order), so every pair is in exactly
one step per repetition. SNP columns (1D) are the pieces of a row of ones. Piece layouts
(``pieces``):

* Random (default): the step's valid pairs in a random order, cut into pieces of B, one shared
  sketch per 64 pieces. Like the previous estimator's random pieces, but drawn within a step (512
  rows x ~16,000 partners on a GPU, 256 x ~1,000 on the CPU), so a few of a piece's pairs share a
  SNP. Recovery of planted pairs equals the previous estimator's (README).
* Rectangular: a piece is b1 "row" SNPs times b2 "partner" SNPs of one tile (b1 b2 = B, b1 the
  largest divisor of B <= sqrt(B): 10 x 10 for B = 100); a column's piece-mates share its row SNP
  (b2 - 1 of them) or its partner (b1 - 1), which costs recall at small R. Star pieces (one row SNP,
  B partners) were dropped: for a rare row SNP all B columns are driven by its few carriers and the
  sketch turns singular; so were "latin" pieces (the diagonals of B x B blocks), which put pairs in
  LD on both sides in one piece and split them into large effects of opposite sign.
* Shared sketch matrices. The pieces of a group (one tile pair's rectangles, or 64 random pieces)
  share one Gaussian A (fresh per group and repetition). Each column's estimate depends only on its own piece and
  its A, so the distribution of every column's estimate (and hence of its mean effect, support and
  score) is unchanged; only estimates of columns in different pieces become correlated within a
  repetition. This makes the FISTA steps of a tile pair two GEMMs (A Z, A^T (A Z)) over all its
  pieces at once.
* Sketch as GEMMs. The pair column (z_a z_b - mu_ab) / s_ab has mean mu_ab = <z_a, z_b>/n and sd
  s_ab from two GEMMs per (row tile, column tile), Z_I Z_J^T and Z_I^2 (Z_J^2)^T; the pair columns
  of a step are one broadcast product of the row tile and the column tiles (no index gather), the
  sketch S^T = (A / s) P centred over samples is one batched GEMM (d x B by B x n per piece; bf16 or
  TF32 tensor cores on a GPU), and V = S^T S, h = S^T y are batched products of (d x n) matrices.

Blocks, memory and resume. Polymorphic pair SNPs are split (after a fixed shuffle, so blocks are
random SNP sets, not genomic regions) into super-tiles of ``super_tile`` SNPs; a block is a pair of
super-tiles (U, W), U <= W, whose |U| x |W| pair columns (the upper triangle when U = W) hold
their sums and nonzero counts over the R repetitions; after a block's R repetitions its scores
enter the running top-k and its accumulators are reused. Block 0 holds the SNP columns. Inside a
block, each repetition reshuffles U and W. The state is checkpointed after every block and, when
``checkpoint_every`` seconds have passed, after any repetition inside a block (with the block's
accumulators): a killed run resumes at the next repetition and gives the same result as an
uninterrupted run (same device, same settings).

Everything is torch and runs on any device torch has (CPU here, CUDA on a GPU machine); on CUDA the
sketch products use TF32 or bf16 tensor cores when ``precision`` asks for it, through the fused
kernels where Triton imports (EPIFLOW_NGG_KERNELS=0: torch operations).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import EpiflowError
from models.ngg.ngg import (NGGResult, _ngg_inputs, _open_checkpoint, _pair_snps, _signature, _topk_merge,
                           default_lambda)
from models.ngg import tiled_kernels
from models.ngg.pairs import derive_key
from models.scans.design import standardize_genotypes

__all__ = ["ngg_fit_tiled", "prepare_tiled", "block_repetition", "TiledPlan", "TiledSettings", "resolve_torch_device", "flops_per_column", "estimate_seconds", "piece_dims", "PIECES"]

_SALT_ORDER = 0x711E_0001
_SALT_PERM = 0x711E_0002
_SALT_A = 0x711E_0003


def resolve_torch_device(device=None):
    """A torch.device: None/'auto' (or $EPIFLOW_DEVICE) -> cuda when available, else cpu."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = device if device not in (None, "") else os.environ.get("EPIFLOW_DEVICE", "auto")
    name = {"numpy": "cpu", "cupy": "cuda", "gpu": "cuda"}.get(str(name), str(name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EpiflowError("device 'cuda' asked for but torch sees no CUDA device")
    return torch.device(name)


@dataclass(frozen=True)
class TiledSettings:
    """Work sizes (they change the piece layout, hence the result: part of the checkpoint key)."""

    super_tile: int          # SNPs per super-tile (a block is a pair of super-tiles)
    row_tile: int            # rows (star centres) per tile pair
    group: int               # column tiles per batched step

    @staticmethod
    def default(device, B: int, m: int, n: int, pieces: str = "random") -> "TiledSettings":
        gpu = device.type == "cuda"
        # GPU: blocks of 16384^2 pairs; a step is ~520 rows x ~16k partners (~8M columns: FISTA
        # arrays of 8M entries); CPU: blocks of 2048^2 pairs, steps of ~64k columns
        b2 = piece_dims(B, pieces)[1]
        st = 16384 if gpu else 2048
        st = max(b2, min(st, -(-max(m, 1) // b2) * b2))
        st -= st % b2
        # CPU: random pieces draw from steps of 256 rows x ~1,000 partners (2^18 pairs), so that few of
        # a piece's pairs share a SNP; rectangular pieces keep the smaller steps they were measured with
        rt = 512 if gpu else (256 if pieces == "random" else 64)
        grp = max(1, (2**23 if gpu else (2**18 if pieces == "random" else 2**16)) // (rt * b2))
        return TiledSettings(int(st), int(rt), int(grp))


def flops_per_column(n: int, B: int, d: int, iters: int) -> float:
    """Operations per column of one repetition: sketch GEMM, pair moments, V and h, FISTA (2 GEMMs of
    d x B per iteration) and the solve."""
    return 2 * d * n + 4 * n + 2 * d * d * n / B + 2 * d * n / B + 4 * d * iters + d ** 3 / (3 * B)


class _Stats:
    def __init__(self, device, enabled):
        self.t = {}
        self.enabled = enabled
        self.device = device

    def sync(self):
        if self.enabled and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def __call__(self, name):
        stats = self

        class _C:
            def __enter__(self):
                stats.sync()
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                stats.sync()
                stats.t[name] = stats.t.get(name, 0.0) + time.perf_counter() - self.t0

        return _C()


class _LineProgress:
    """Progress lines on stderr (done, rate, ETA) every 10 s, for machines without tqdm."""

    def __init__(self, total, initial=0, unit="col", desc="", **_):
        self.total, self.n, self.unit, self.desc = total, initial, unit, desc
        self.t0 = self.last = time.perf_counter()
        self.n0 = initial

    def update(self, k):
        import sys

        self.n += k
        now = time.perf_counter()
        if now - self.last >= 10.0:
            rate = (self.n - self.n0) / max(now - self.t0, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            print(f"{self.desc}: {self.n:.3g}/{self.total:.3g} {self.unit}s, {rate:.3g} {self.unit}/s, "
                  f"ETA {eta:.0f} s", file=sys.stderr, flush=True)
            self.last = now

    def close(self):
        pass


def _perm(key: int, n: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(key)).permutation(n)


def _generator(device, key: int):
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(int(key) & ((1 << 63) - 1))
    return g


class _Engine:
    """The batched kernel sequence for the pieces of one block and repetition."""

    def __init__(self, rows, yz, *, B, d, lam, iters, ridge, precision, device, stats, shared=True,
                 pieces="rect"):
        import torch

        self.torch = torch
        self.rows = rows            # (n_rows, n) standardised rows, float32, on device
        self.yz = yz                # (n,)
        self.n = rows.shape[1]
        self.B, self.d, self.lam, self.iters, self.ridge = B, d, float(lam), iters, ridge
        self.precision = precision
        self.device = device
        self.stats = stats
        self.inv_sqrt_d = 1.0 / math.sqrt(d)
        self.shared = bool(shared)
        self.pieces = pieces
        self._layouts = {}
        # pair columns formed per sketch chunk (floats): ~2 GB on a GPU, ~16 MB on a CPU
        self.chunk_floats = 2**29 if device.type == "cuda" else 2**22

    SHARE = 64   # random layout: pieces per shared sketch (one FISTA program's pieces)

    def _pair_moments(self, Zr, Zc, valid):
        """(mu, inv, good) (G, t, b2) of the pair columns z_row z_partner of a step: their means, 1 / sd
        where the slot is valid and the column not constant (else 0), and that mask. Two GEMMs in full
        float32 (ss - mu^2 cancels: no TF32)."""
        torch = self.torch
        n = Zr.shape[1]
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
        mu = torch.matmul(Zr, Zc.transpose(1, 2)) / n                       # (G, t, b2)
        ss = torch.matmul(Zr * Zr, (Zc * Zc).transpose(1, 2)) / n
        sd = torch.sqrt(torch.clamp(ss - mu * mu, min=0.0))
        good = valid & (sd > 1e-6)
        inv = torch.where(good, 1.0 / torch.where(good, sd, torch.ones_like(sd)), torch.zeros_like(sd))
        return mu, inv, good

    def step_pieces(self, t, b1, b2, valid, gen):
        """The pieces of one step (a row tile of t rows against G column tiles of b2 partners): (R, C,
        ok, Pshare, slots). Slot k of piece p holds the pair (row R[p, k], partner row C[p, k] of the
        step's G b2 partners) where ok[p, k]; the pieces share one sketch per group of Pshare
        consecutive pieces; slots[p, k] is the pair's flat index in (G, t, b2) (None: the identity).

        'rect': piece (g, q) = row group q (b1 rows) x the b2 partners of tile g; one sketch per tile.
        'random': the step's valid pairs in a random order (drawn from ``gen``) cut into pieces of B,
        as the previous estimator's random pieces but within the step; one sketch per SHARE pieces."""
        torch = self.torch
        G = valid.shape[0]
        dev = self.device
        if self.pieces == "random" and b1 * b2 > 1 and b1 > 1:
            B = b1 * b2
            idx = torch.nonzero(valid.reshape(-1)).view(-1)
            nv = int(idx.numel())
            slots = idx[torch.randperm(nv, generator=gen, device=dev)] if nv else idx
            ptot = max(1, -(-nv // B))
            share = min(self.SHARE, ptot)
            ptot = -(-ptot // share) * share
            slots = torch.cat([slots, torch.full((ptot * B - nv,), -1, dtype=slots.dtype, device=dev)]).view(ptot, B)
            ok = slots >= 0
            sl = slots.clamp(min=0)
            R = (sl // b2) % t
            C = (sl // (t * b2)) * b2 + sl % b2
            return R, C, ok, share, slots
        key = (t, b1, b2, G)
        if key not in self._layouts:
            Pn = t // b1
            q = torch.arange(Pn).view(1, -1, 1)
            m = torch.arange(b1 * b2).view(1, 1, -1)
            g = torch.arange(G).view(-1, 1, 1)
            R = (q * b1 + m // b2).expand(G, -1, -1).reshape(G * Pn, -1)
            C = (g * b2 + m % b2).expand(-1, Pn, -1).reshape(G * Pn, -1)
            self._layouts[key] = (R.contiguous().to(dev), C.contiguous().to(dev), Pn)
        R, C, Pn = self._layouts[key]
        return R, C, valid.reshape(G * Pn, b1 * b2), Pn, None

    def _to_tile(self, theta_p, slots, G, t, b2):
        """(G, t, b2) effects from the piece layout (Ptot, B) (a view when slots is None)."""
        if slots is None:
            return theta_p.reshape(G, t, b2)
        full = self.torch.zeros(G * t * b2, dtype=theta_p.dtype, device=theta_p.device)
        sel = slots.reshape(-1) >= 0
        full[slots.reshape(-1)[sel]] = theta_p.reshape(-1)[sel]
        return full.view(G, t, b2)

    def tile_pairs(self, Zr, Zc, valid, gen, b1):
        """Pieces of b1 rows x b2 columns for the rows of Zr (t, n), t a multiple of b1, and the
        column tiles of Zc (G, b2, n): piece (q, c) holds the pairs (row, partner) of row group q and
        tile c. valid: (G, t, b2) bool, which slots are real columns. Returns theta (G, t, b2)."""
        torch = self.torch
        st = self.stats
        G, b2, n = Zc.shape
        t = Zr.shape[0]
        Pn = t // b1
        B = b1 * b2
        d = self.d
        cuda = self.device.type == "cuda"
        if self.shared and G * Pn > 1 and tiled_kernels.available(self.device):
            return self._tile_pairs_fused(Zr, Zc, valid, gen, b1)
        if self.pieces == "random" and b1 > 1:
            return self._tile_pairs_gather(Zr, Zc, valid, gen, b1)
        with st("moments"):
            _, inv, good = self._pair_moments(Zr, Zc, valid)
            all_good = bool(good.all())
        with st("rng"):
            nA = 1 if self.shared else Pn      # one A per tile pair, or one per piece
            A = torch.randn((G, nA, d, B), generator=gen, device=self.device, dtype=torch.float32)
            A.mul_(self.inv_sqrt_d)
        V = torch.empty((G * Pn, d, d), dtype=torch.float64, device=self.device)
        h = torch.empty((G * Pn, d), dtype=torch.float64, device=self.device)
        per = max(1, int(self.chunk_floats // max(1, t * b2 * n)))
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
        low = self.precision == "bf16" and cuda
        if low:  # pair columns and sketch operands in bf16 (fp32 accumulation); V, h, FISTA in fp32/64
            Zr, Zc = Zr.to(torch.bfloat16), Zc.to(torch.bfloat16)
        Zr4 = Zr.view(1, Pn, b1, 1, n)
        inv5 = inv.view(G, Pn, 1, b1, b2)
        for g0 in range(0, G, per):
            g1 = min(G, g0 + per)
            g = g1 - g0
            with st("sketch"):
                P = (Zr4 * Zc[g0:g1].view(g, 1, 1, b2, n)).view(g * Pn, B, n)   # pair columns
                As = (A[g0:g1].view(g, nA, d, b1, b2) * inv5[g0:g1]).view(g * Pn, d, B)
                S = torch.bmm(As.to(P.dtype), P).float() if low else torch.bmm(As, P)   # (g Pn, d, n)
                del P, As
                S.sub_(S.mean(dim=2, keepdim=True))
                V[g0 * Pn:g1 * Pn] = torch.matmul(S, S.transpose(1, 2))
                h[g0 * Pn:g1 * Pn] = torch.matmul(S, self.yz)
                del S
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
        with st("solve"):
            tr = torch.diagonal(V, dim1=1, dim2=2).sum(-1) / d
            V.diagonal(dim1=1, dim2=2).add_((self.ridge * tr + 1e-12)[:, None])
            w = torch.linalg.solve(V, h).float()                            # (G Pn, d)
            if self.shared:
                A = A.view(G, d, B)
                w = w.view(G, Pn, d).transpose(1, 2)                         # (G, d, Pn)
                goodT = good.view(G, Pn, B).transpose(1, 2).float()          # (G, B, Pn)
            else:  # one problem per piece: batch G Pn, one column each
                A = A.view(G * Pn, d, B)
                w = w.view(G * Pn, d, 1)
                goodT = good.view(G * Pn, B, 1).float()
            u = torch.matmul(A.transpose(1, 2), w) * goodT                 # Am^T w
            nu = torch.matmul(A, u)                                        # Am Am^T w
            del V, h, w, u
        with st("fista"):
            theta = self._fista(A, nu, None if all_good else goodT)       # (G, B, Pn) or (G Pn, B, 1)
        if not self.shared:
            return theta.view(G, Pn, b1, b2).reshape(G, t, b2)
        # (G, b1, b2, Pn) -> (G, Pn, b1, b2) -> (G, t, b2)
        return theta.view(G, b1, b2, Pn).permute(0, 3, 1, 2).reshape(G, t, b2)

    def _tile_pairs_fused(self, Zr, Zc, valid, gen, b1):
        """:meth:`tile_pairs` through the kernels of :mod:`models.ngg.tiled_kernels`: moments, sketch,
        normal equations and solve per piece without pair columns in memory, the Lipschitz constant
        by power iteration, then FISTA with its iterates in registers. Same draws as the torch path."""
        torch, st = self.torch, self.stats
        G, b2, n = Zc.shape
        t = Zr.shape[0]
        d = self.d
        with st("rng"):
            R, C, ok, share, slots = self.step_pieces(t, b1, b2, valid, gen)
            ptot, B = R.shape
            Gs = ptot // share
            A = torch.randn((Gs, 1, d, B), generator=gen, device=self.device, dtype=torch.float32)
            A = A.mul_(self.inv_sqrt_d).view(Gs, d, B)
        with st("sketch"):
            if slots is None and os.environ.get("EPIFLOW_NGG_RECT_KERNEL") == "1":
                # rectangular pieces: moments by GEMMs, then the tile-reuse kernel (opt-in: checked in
                # Triton's interpreter, not yet run on a GPU); otherwise the gather kernel below
                mu, inv, _ = self._pair_moments(Zr, Zc, valid)
                nu = tiled_kernels.sketch_nu_rect(Zr, Zc, A, mu, inv, self.yz, self.ridge, b1, self.precision)
                inv = inv.view(ptot, B)
            else:
                nu, inv = tiled_kernels.sketch_nu(Zr, Zc.reshape(G * b2, n), A, R, C, ok, self.yz, self.ridge,
                                                  self.precision)
        with st("fista"):
            step, kappa = tiled_kernels.lipschitz(A, self.lam)
            thr = 1.0 if self.lam > 0 else 0.0
            prec = ("tf32x3" if self.precision == "fp32" else "tf32") if self.device.type == "cuda" else "ieee"
            out = torch.empty((Gs, share, B), dtype=torch.float32, device=self.device)
            tiled_kernels.fista_fused(A, nu, inv.view(Gs, share, B).transpose(1, 2), step, kappa, thr, self.iters,
                                      prec, out=out.transpose(1, 2))
        return self._to_tile(out, slots, G, t, b2)

    def _tile_pairs_gather(self, Zr, Zc, valid, gen, b1):
        """:meth:`tile_pairs` for random pieces (torch ops): pair columns gathered by (R, C)."""
        torch, st = self.torch, self.stats
        G, b2, n = Zc.shape
        t = Zr.shape[0]
        d = self.d
        cuda = self.device.type == "cuda"
        R, C, ok, share, slots = self.step_pieces(t, b1, b2, valid, gen)
        ptot, B = R.shape
        with st("moments"):
            _, inv, _ = self._pair_moments(Zr, Zc, valid)
            sl = slots.clamp(min=0).reshape(-1)
            inv = torch.where(ok, inv.reshape(-1)[sl].view(ptot, B), torch.zeros((), device=self.device))
            good = inv != 0                                                  # (Ptot, B) piece layout
            all_good = bool(good.all())
        with st("rng"):
            Gs = ptot // share if self.shared else ptot
            A = torch.randn((Gs, 1, d, B), generator=gen, device=self.device, dtype=torch.float32)
            A.mul_(self.inv_sqrt_d)
        V = torch.empty((ptot, d, d), dtype=torch.float64, device=self.device)
        h = torch.empty((ptot, d), dtype=torch.float64, device=self.device)
        per = max(1, int(self.chunk_floats // max(1, B * n)))                # pieces per sketch chunk
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
        low = self.precision == "bf16" and cuda
        Zp = Zc.reshape(G * b2, n)
        if low:
            Zr, Zp = Zr.to(torch.bfloat16), Zp.to(torch.bfloat16)
        A_of = A.view(Gs, d, B)
        for p0 in range(0, ptot, per):
            p1 = min(ptot, p0 + per)
            with st("sketch"):
                P = Zr[R[p0:p1]] * Zp[C[p0:p1]]                              # (k, B, n) pair columns
                ga = torch.arange(p0, p1, device=self.device) // (share if self.shared else 1)
                As = A_of[ga] * inv[p0:p1].unsqueeze(1)                        # (k, d, B)
                S = torch.bmm(As.to(P.dtype), P).float() if low else torch.bmm(As, P)
                del P, As
                S.sub_(S.mean(dim=2, keepdim=True))
                V[p0:p1] = torch.matmul(S, S.transpose(1, 2))
                h[p0:p1] = torch.matmul(S, self.yz)
                del S
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
        with st("solve"):
            tr = torch.diagonal(V, dim1=1, dim2=2).sum(-1) / d
            V.diagonal(dim1=1, dim2=2).add_((self.ridge * tr + 1e-12)[:, None])
            w = torch.linalg.solve(V, h).float()                            # (Ptot, d)
            if self.shared:
                w = w.view(Gs, share, d).transpose(1, 2)                      # (Gs, d, share)
                goodT = good.view(Gs, share, B).transpose(1, 2).float()      # (Gs, B, share)
            else:
                w = w.view(ptot, d, 1)
                goodT = good.view(ptot, B, 1).float()
            u = torch.matmul(A_of.transpose(1, 2), w) * goodT
            nu = torch.matmul(A_of, u)
            del V, h, w, u
        with st("fista"):
            theta = self._fista(A_of, nu, None if all_good else goodT)       # (Gs, B, share) / (Ptot, B, 1)
        return self._to_tile(theta.transpose(1, 2), slots, G, t, b2)

    def _fista(self, A, nu, mask):
        """theta = argmin 1/2 ||A theta - nu||^2 + lam ||theta||_1 for all pieces of each tile pair
        (nu: (G, d, P), one column per piece), masked columns held at zero. FISTA with step 1/L,
        L = 1.05 x the largest eigenvalue of A A^T (one A per tile pair), run on phi = theta / kappa
        with kappa = lam / L, so that the soft threshold is 1 for every tile pair (one softshrink
        kernel) and each step is two batched GEMMs (A z - nu / kappa, then z - A^T (.) / L), the
        soft threshold and the momentum step."""
        torch = self.torch
        G, d, B = A.shape
        L = torch.linalg.eigvalsh(torch.matmul(A, A.transpose(1, 2)).double())[:, -1]
        step = (1.0 / torch.clamp(L * 1.05, min=1e-12)).float()            # (G,)
        if self.lam > 0:
            kappa, thr = self.lam * step, 1.0
        else:
            kappa, thr = torch.ones_like(step), 0.0
        ATs = A.transpose(1, 2) * (-step)[:, None, None]                   # -A^T / L
        nuk = nu / (-kappa)[:, None, None]                                 # -nu / kappa
        P = nu.shape[2]
        phi = torch.zeros((G, B, P), dtype=A.dtype, device=A.device)
        z = torch.zeros_like(phi)
        soft = torch.nn.functional.softshrink
        tk = 1.0
        for _ in range(self.iters):
            r = torch.baddbmm(nuk, A, z)                                   # A z - nu / kappa
            new = soft(torch.baddbmm(z, ATs, r), thr)                      # prox of the gradient step
            if mask is not None:
                new.mul_(mask)
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * tk * tk))
            z = torch.lerp(phi, new, 1.0 + (tk - 1.0) / t_new)
            phi = new
            tk = t_new
        return phi.mul_(kappa[:, None, None])


PIECES = ("random", "rect")


def piece_dims(B: int, pieces: str) -> tuple:
    """(b1, b2): rows per row group and partners per column tile of the step tiling (the rows of a
    unit are a multiple of b1, the column tiles b2 wide); pieces of B = b1 b2 columns: rectangular
    b1 x b2 ('rect') or random sets of the step's pairs ('random')."""
    if pieces not in PIECES:
        raise EpiflowError(f"pieces must be one of {', '.join(PIECES)}, not {pieces!r}")
    b1 = piece_shape(B)
    return b1, B // b1


def piece_shape(B: int) -> int:
    """Rows b1 of a B-column piece (b1 x B/b1 pairs): the largest divisor of B <= sqrt(B)."""
    b1 = int(math.isqrt(int(B)))
    while B % b1:
        b1 -= 1
    return max(1, b1)


def _block_pieces(nu_, nw, diag, b1, b2) -> int:
    """Pieces (row group, column tile) of a block (diagonal blocks: those with a valid column); the
    random layout has about as many (its pieces hold the same pairs, B to a piece)."""
    groups = -(-nu_ // b1)
    tiles = -(-nw // b2)
    if not diag:
        return groups * tiles
    q = np.arange(groups)
    return int(np.maximum(0, tiles - (q * b1) // b2).sum())


@dataclass
class TiledPlan:
    """Everything one (block, repetition) needs: standardised rows on the device, the blocks, the
    kernel sequence and the work sizes (built by :func:`ngg_fit_tiled`)."""

    dev: object
    rows: object             # (n1, n) standardised polymorphic SNP rows (device)
    ones: object             # (1, n) the row of ones (SNP columns are its pairs)
    eng: _Engine
    blocks: list             # (-1, -1): SNP columns; (a, b): super-tiles a <= b of pair SNPs
    sts: list                # super-tiles: row indices into ``rows``
    n1: int
    B: int
    b1: int
    b2: int
    row_tile: int
    group: int
    seed: int
    stats: _Stats

    def block_ids(self, bk):
        """(U rows or None for the row of ones, W rows, diagonal?) of block ``bk``."""
        a, b = self.blocks[bk]
        if a < 0:
            return None, np.arange(self.n1), False
        return self.sts[a], self.sts[b], a == b


def block_repetition(plan: TiledPlan, bk: int, rep: int, tick=None, on_unit=None):
    """One repetition of NGG on block ``bk``: the effects theta of its columns as a (|U|, |W|)
    tensor on the device (pair (U[i], W[j]); diagonal blocks symmetric, read i < j; the SNP block
    is (1, n1)). It depends only on (seed, block, repetition), so repetitions and blocks can run in
    any order or on different workers and be summed. tick(ncols) after every step; on_unit(cols,
    seconds) after every row tile (may raise to stop)."""
    import torch

    dev, st, n = plan.dev, plan.stats, plan.rows.shape[1]
    a, b = plan.blocks[bk]
    U_ids, W_ids, diag = plan.block_ids(bk)
    nu_ = 1 if U_ids is None else len(U_ids)
    nw = len(W_ids)
    b1, b2 = (1, plan.B) if U_ids is None else (plan.b1, plan.b2)   # piece = b1 rows x b2 partners
    nct = -(-nw // b2)
    tr = b1 * max(1, -(-plan.row_tile // b1))                       # rows per unit, whole row groups
    G = plan.group
    seed = plan.seed
    with st("index"):
        pw = _perm(derive_key(seed, _SALT_PERM, a, b, rep, 1), nw)
        pu = pw if diag else (np.zeros(1, np.int64) if U_ids is None
                              else _perm(derive_key(seed, _SALT_PERM, a, b, rep, 0), nu_))
        Zc = torch.zeros((nct * b2, n), dtype=torch.float32, device=dev)
        Zc[:nw] = plan.rows[torch.from_numpy(W_ids[pw]).to(dev)]
        Zc = Zc.view(nct, b2, n)
        nu_pad = -(-nu_ // b1) * b1
        Zr_all = torch.zeros((nu_pad, n), dtype=torch.float32, device=dev)
        Zr_all[:nu_] = plan.ones if U_ids is None else plan.rows[torch.from_numpy(U_ids[pu]).to(dev)]
        theta_p = torch.zeros((nu_pad, nct * b2), dtype=torch.float32, device=dev)
        colpos = torch.arange(nct * b2, device=dev).view(nct, 1, b2)
    for r0, c_first in _units(nu_pad, nw, diag, tr, b2):
        r1 = min(nu_pad, r0 + tr)
        Zr = Zr_all[r0:r1]
        rowpos = torch.arange(r0, r1, device=dev).view(1, -1, 1)
        t_unit, unit_cols = time.perf_counter(), 0
        gen = _generator(dev, derive_key(seed, _SALT_A, a, b, rep, r0))
        for c0 in range(c_first, nct, G):
            c1 = min(nct, c0 + G)
            cp = colpos[c0:c1]
            valid = (cp < nw) & (rowpos < nu_)
            if diag:
                valid = valid & (cp > rowpos)
            valid = valid.expand(c1 - c0, r1 - r0, b2)
            theta = plan.eng.tile_pairs(Zr, Zc[c0:c1], valid, gen, b1)     # (g, t, b2)
            with st("accumulate"):
                theta_p[r0:r1].view(r1 - r0, nct, b2)[:, c0:c1, :] = theta.permute(1, 0, 2)
            ncols = int(valid.sum())
            unit_cols += ncols
            if tick is not None:
                tick(ncols)
        if on_unit is not None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            on_unit(unit_cols, time.perf_counter() - t_unit)
    with st("accumulate"):
        T = theta_p[:nu_, :nw]
        inv_w = torch.from_numpy(np.argsort(pw)).to(dev)
        if diag:
            T = T[inv_w][:, inv_w]
            T = T + T.T
        else:
            T = T[torch.from_numpy(np.argsort(pu)).to(dev)][:, inv_w]
    return T


def _units(n_u, n_w, diag, t, B):
    """(row-tile start, first column tile) of a block: tiles left of a row tile's first row are
    skipped in diagonal blocks."""
    out = []
    for r0 in range(0, n_u, t):
        out.append((r0, (r0 // B) if diag else 0))
    return out


def _save(path, signature, state):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    ids, scores, eff, sup = state["best"] if state["best"] is not None else (
        np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    arrays = dict(signature=np.array(signature), next_block=np.array(state["block"]),
                  next_rep=np.array(state["rep"]), snp_sum=state["snp_sum"], snp_cnt=state["snp_cnt"],
                  ids=ids, scores=scores, eff=eff, sup=sup, has_best=np.array(state["best"] is not None),
                  has_acc=np.array(state["acc"] is not None))
    if state["acc"] is not None:
        arrays["acc_sum"], arrays["acc_cnt"] = state["acc"]
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(path, signature):
    z = _open_checkpoint(path, signature, mismatch=EpiflowError)
    if z is None:
        return None
    with z:
        best = (z["ids"], z["scores"], z["eff"], z["sup"]) if bool(z["has_best"]) else None
        acc = (z["acc_sum"].copy(), z["acc_cnt"].copy()) if bool(z["has_acc"]) else None
        return {"block": int(z["next_block"]), "rep": int(z["next_rep"]), "snp_sum": z["snp_sum"].copy(),
                "snp_cnt": z["snp_cnt"].copy(), "best": best, "acc": acc}


def _prepare(X, y, *, mode, B, d, lam, lam_scale, R, iters, seed, device, top, covariates, candidates,
             settings, precision, ridge, profile, shared_sketch=True, pieces="random") -> dict:
    """Checked, standardised inputs on the device, the blocks and the kernel sequence."""
    import torch

    X, y, Q, p = _ngg_inputs(X, y, covariates, mode, candidates, B, d, R, iters, top)
    if precision not in ("fp32", "tf32", "bf16"):
        raise EpiflowError(f"precision must be fp32, tf32 or bf16, not {precision!r}")
    dev = resolve_torch_device(device)
    n = X.shape[0]
    stats = _Stats(dev, profile)
    with stats("prepare"):
        ZT, sd = standardize_genotypes(X, xp=np, dtype=np.float32, covariates_q=Q)
        yr = y - Q @ (Q.T @ y)
        ysd = float(np.sqrt((yr * yr).sum() / n))
        if not ysd > 0:
            raise EpiflowError("phenotype is constant after removing covariates")
        kept = np.flatnonzero(sd > 0)
        n1 = kept.size
        if n1 == 0:
            raise EpiflowError("no polymorphic SNP column")
        pair_local, m, n2 = _pair_snps(candidates, kept, n1, p, mode)
        Beff = int(min(B, max(n1, 1)))
        lam_v = float(lam) if lam is not None else default_lambda(n, Beff, d, lam_scale)
        rows = torch.from_numpy(np.ascontiguousarray(ZT[kept])).to(dev)
        del ZT
        ones = torch.ones((1, n), dtype=torch.float32, device=dev)
        yz = torch.from_numpy((yr / ysd).astype(np.float32)).to(dev)
    cfg = settings or TiledSettings.default(dev, Beff, m, n, pieces)
    rb1, rb2 = piece_dims(Beff, pieces)
    st_size = max(rb2, cfg.super_tile - cfg.super_tile % rb2)
    t_r = max(1, cfg.row_tile)
    G = max(1, cfg.group)
    eng = _Engine(rows, yz, B=Beff, d=d, lam=lam_v, iters=iters, ridge=ridge, precision=precision, device=dev,
                  stats=stats, shared=shared_sketch, pieces=pieces)

    # blocks: 0 = SNP columns (row of ones x all SNPs); then pairs of super-tiles of pair SNPs
    order0 = pair_local[_perm(derive_key(seed, _SALT_ORDER), m)] if m >= 2 else np.zeros(0, np.int64)
    sts = [order0[k:k + st_size] for k in range(0, m, st_size)] if m >= 2 else []
    blocks = [(-1, -1)] + [(a, b) for a in range(len(sts)) for b in range(a, len(sts))]

    def block_cols(bk):
        a, b = blocks[bk]
        if a < 0:
            return n1
        return len(sts[a]) * (len(sts[a]) - 1) // 2 if a == b else len(sts[a]) * len(sts[b])

    cols_per_rep = [block_cols(k) for k in range(len(blocks))]
    N = int(sum(cols_per_rep))
    plan = TiledPlan(dev=dev, rows=rows, ones=ones, eng=eng, blocks=blocks, sts=sts, n1=n1, B=Beff, b1=rb1,
                     b2=rb2, row_tile=t_r, group=G, seed=seed, stats=stats)
    return dict(X=X, y=y, Q=Q, p=p, dev=dev, n=n, stats=stats, yr=yr, kept=kept, n1=n1, pair_local=pair_local,
                m=m, n2=n2, Beff=Beff, lam_v=lam_v, rb1=rb1, rb2=rb2, st_size=st_size, t_r=t_r, G=G, sts=sts,
                blocks=blocks, cols_per_rep=cols_per_rep, N=N, plan=plan)


def prepare_tiled(X, y, *, mode="2d", B=100, d=30, lam=None, lam_scale=1.0, iters=200, seed=0, device=None,
                  covariates=None, candidates=None, settings: TiledSettings | None = None, precision="fp32",
                  ridge=1e-6, shared_sketch=True, pieces="random") -> TiledPlan:
    """The :class:`TiledPlan` of a fit (same arguments as :func:`ngg_fit_tiled`), for running its
    (block, repetition) units one by one with :func:`block_repetition` (len(plan.blocks) blocks)."""
    return _prepare(X, y, mode=mode, B=B, d=d, lam=lam, lam_scale=lam_scale, R=1, iters=iters, seed=seed,
                    device=device, top=1, covariates=covariates, candidates=candidates, settings=settings,
                    precision=precision, ridge=ridge, profile=False, shared_sketch=shared_sketch,
                    pieces=pieces)["plan"]


def ngg_fit_tiled(X, y, *, mode="2d", B=100, d=30, lam=None, lam_scale=1.0, R=10, iters=200, seed=0,
                  device=None, top=1000, covariates=None, candidates=None, progress=True, checkpoint=None,
                  checkpoint_every=30.0, settings: TiledSettings | None = None, precision="fp32", ridge=1e-6,
                  profile=False, max_blocks=None, max_seconds=None, on_block=None, threads=1, shared_sketch=True,
                  repetitions=None, on_scores=None, pieces="random") -> NGGResult:
    """Fit NGG with rectangular pieces and tile-shared sketches (module docstring); same inputs and output
    as :func:`models.ngg.ngg.ngg_fit` (an :class:`NGGResult`).

    device: torch device or name (None/'auto': CUDA when available). precision: 'fp32' (exact
    float32 products), 'tf32' or 'bf16' (tensor-core sketch GEMMs on CUDA; CPU always fp32).
    checkpoint: .npz path, saved after every block and after any repetition once
    ``checkpoint_every`` seconds have passed; a rerun with the same inputs resumes from it.
    max_blocks: stop after this many blocks of this call (timing runs; ``extra['complete']`` says
    whether the whole space was covered). max_seconds: estimate the run time from the first block
    of pair columns and raise a one-line EpiflowError (with suggested settings) when it exceeds this.
    on_block(info): called after every block with a dict of progress numbers.
    pieces: 'random' (default: the valid pairs of each step in a random order, B to a piece, as the
    previous estimator's random pieces but within a step; one shared sketch per 64 pieces) or 'rect'
    (b1 x b2 rectangles of row SNPs x partners; one sketch per tile pair). Part of the checkpoint key.
    shared_sketch: one Gaussian A per (row tile, column tile) for all its pieces (FISTA as GEMMs;
    default), or one per piece as in the previous estimator (FISTA as batched mat-vecs, slower).
    threads: torch CPU threads during the fit (default 1: the steps are many mid-sized products, and
    OpenMP workers on shared, busy cores cost 5-10x more than they save; measured).
    repetitions(block, reps): where the (block, repetition) units run (e.g. the tasks of a cluster):
    an iterator over the block's effect arrays (those of :func:`block_repetition`) for ``reps``, in
    order; None: here. Accumulation, checkpoints and results are the same either way.
    on_scores(rows, cols, score): called after every block of pair columns with the SNP indices
    (of X's columns) of its rows and columns and its final (len(rows), len(cols)) score tensor on the
    device (support x |mean effect|, float64; -1 where the slot is no pair: the lower triangle and
    diagonal of a diagonal block), e.g. to max-pool every pair's score into a map.
    """
    import torch

    t_start = time.perf_counter()
    ctx = _prepare(X, y, mode=mode, B=B, d=d, lam=lam, lam_scale=lam_scale, R=R, iters=iters, seed=seed,
                   device=device, top=top, covariates=covariates, candidates=candidates, settings=settings,
                   precision=precision, ridge=ridge, profile=profile, shared_sketch=shared_sketch, pieces=pieces)
    X, Q, p, dev, n, stats, yr, kept = (ctx[k] for k in ("X", "Q", "p", "dev", "n", "stats", "yr", "kept"))
    n1, pair_local, m, n2, Beff, lam_v = (ctx[k] for k in ("n1", "pair_local", "m", "n2", "Beff", "lam_v"))
    rb1, rb2, st_size, t_r, G, sts, blocks = (ctx[k] for k in ("rb1", "rb2", "st_size", "t_r", "G", "sts", "blocks"))
    cols_per_rep, N, plan = ctx["cols_per_rep"], ctx["N"], ctx["plan"]
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    old_threads = torch.get_num_threads()
    if dev.type == "cpu" and threads:
        torch.set_num_threads(int(threads))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    signature = None
    if checkpoint is not None:
        signature = _signature(X, yr, dict(engine="tiled", mode=mode, B=Beff, d=d, lam=lam_v, R=R, iters=iters,
                                           seed=seed, top=top, m=m, ridge=ridge, precision=precision,
                                           device=dev.type, settings=[st_size, t_r, G, rb1, bool(shared_sketch)]
                                           + ([] if pieces == "rect" else [pieces]),
                                           pair_local=pair_local.tolist() if candidates is not None else None))
    state = _load(checkpoint, signature) if checkpoint is not None else None
    if state is None:
        state = {"block": 0, "rep": 0, "snp_sum": np.zeros(n1), "snp_cnt": np.zeros(n1, np.int64),
                 "best": None, "acc": None}
    resumed = (state["block"], state["rep"])
    done_cols = sum(cols_per_rep[:state["block"]]) * R + cols_per_rep[min(state["block"], len(blocks) - 1)] * \
        state["rep"] if state["block"] < len(blocks) else N * R
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # a bare GPU machine: the same numbers as lines on stderr
            tqdm = _LineProgress
        bar = tqdm(total=N * R, initial=done_cols, unit="pair" if mode == "2d" else "SNP", unit_scale=True,
                   desc=f"NGG {mode} (R={R})",
                   leave=False, smoothing=0.05, mininterval=1.0)
    cols_done = 0
    last_save = time.perf_counter()
    t_loop = time.perf_counter()
    blocks_run = 0
    estimated = None
    try:
        for bk in range(state["block"], len(blocks)):
            if max_blocks is not None and blocks_run >= max_blocks:
                break
            a, b = blocks[bk]
            if a < 0:
                U_ids, W_ids, diag = None, np.arange(n1), False
            else:
                U_ids, W_ids, diag = sts[a], sts[b], a == b
            nu_ = 1 if U_ids is None else len(U_ids)
            nw = len(W_ids)
            if state["acc"] is not None and state["block"] == bk:
                acc_sum = torch.from_numpy(state["acc"][0]).to(dev)
                acc_cnt = torch.from_numpy(state["acc"][1]).to(dev)
            else:
                acc_sum = torch.zeros((nu_, nw), dtype=torch.float64, device=dev)
                acc_cnt = torch.zeros((nu_, nw), dtype=torch.int32, device=dev)
            rep0 = state["rep"] if state["block"] == bk else 0
            remote = None if repetitions is None else iter(repetitions(bk, list(range(rep0, R))))
            for rep in range(rep0, R):
                def tick(ncols):
                    nonlocal cols_done
                    cols_done += ncols
                    if bar is not None:
                        bar.update(ncols)

                def on_unit(unit_cols, seconds):
                    nonlocal estimated
                    if max_seconds is not None and estimated is None and a >= 0:
                        # the first row tile of the first pair block gives this machine's rate
                        rate = unit_cols / max(seconds, 1e-9)
                        estimated = (N * R - done_cols - cols_done) / rate
                        if estimated > max_seconds:
                            raise EpiflowError(_refusal(estimated, max_seconds, N, R, rate, dev, mode))

                if remote is None:
                    T = block_repetition(plan, bk, rep, tick=tick, on_unit=on_unit)
                else:  # computed elsewhere (same function, same inputs): the same array
                    T = torch.from_numpy(next(remote)).to(dev)
                    tick(cols_per_rep[bk])
                with stats("accumulate"):
                    acc_sum += T
                    acc_cnt += (T != 0).to(torch.int32)
                    del T
                state["rep"] = rep + 1
                if (checkpoint is not None and rep + 1 < R
                        and time.perf_counter() - last_save >= checkpoint_every):
                    state["block"] = bk
                    state["acc"] = (acc_sum.cpu().numpy(), acc_cnt.cpu().numpy())
                    _save(checkpoint, signature, state)
                    state["acc"] = None
                    last_save = time.perf_counter()
            with stats("topk"):
                state["best"] = _reduce_block(acc_sum, acc_cnt, R, U_ids, W_ids, diag, kept, p, top, state)
            if on_scores is not None and U_ids is not None:
                with stats("scores"):
                    on_scores(kept[U_ids], kept[W_ids], _block_scores(acc_sum, acc_cnt, R, diag))
            del acc_sum, acc_cnt
            state["block"], state["rep"], state["acc"] = bk + 1, 0, None
            blocks_run += 1
            if checkpoint is not None:
                _save(checkpoint, signature, state)
                last_save = time.perf_counter()
            if on_block is not None:
                on_block({"block": bk + 1, "blocks": len(blocks), "columns_done": cols_done,
                          "seconds": time.perf_counter() - t_loop})
    finally:
        if bar is not None:
            bar.close()
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = old_tf32
        torch.set_num_threads(old_threads)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_loop = time.perf_counter() - t_loop
    complete = state["block"] >= len(blocks)
    snp_effect = np.zeros(p)
    snp_support = np.zeros(p)
    snp_effect[kept] = state["snp_sum"] / R
    snp_support[kept] = state["snp_cnt"] / R
    snp_score = snp_support * np.abs(snp_effect)
    order = np.lexsort((np.arange(p), -snp_score))
    order = order[snp_score[order] > 0][:top]
    top_snps = {"snp": order.astype(np.int64), "effect": snp_effect[order], "support": snp_support[order],
                "score": snp_score[order]}
    best = state["best"]
    if best is not None and best[0].size:
        gi, gj = best[0] // p, best[0] % p
        top_pairs = {"i": gi.astype(np.int64), "j": gj.astype(np.int64), "effect": best[2], "support": best[3],
                     "score": best[1]}
    else:
        e = np.zeros(0)
        top_pairs = {"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "effect": e, "support": e, "score": e}
    timings = {"total_s": time.perf_counter() - t_start, "loop_s": t_loop,
               "per_repetition_s": t_loop / R, "columns_done": int(cols_done),
               "columns_per_s": cols_done / t_loop if t_loop > 0 else float("nan"),
               "resumed_block": int(resumed[0]), "resumed_rep": int(resumed[1]),
               "estimated_s": estimated}
    if profile:
        timings.update({f"{k}_s": v for k, v in stats.t.items()})
    params = {"mode": mode, "engine": "tiled", "B": Beff, "B_requested": int(B), "d": int(d), "lam": lam_v,
              "lam_scale": float(lam_scale) if lam is None else None, "R": int(R), "iters": int(iters),
              "seed": int(seed), "top": int(top), "n": int(n), "p": int(p), "n_snp_columns": int(n1),
              "n_pair_snps": int(m), "n_pair_columns": int(n2), "super_tile": int(st_size), "row_tile": int(t_r),
              "piece_rows": int(rb1), "piece_partners": int(rb2), "pieces": pieces,
              "group": int(G), "n_blocks": len(blocks), "ridge": float(ridge), "precision": precision,
              "device": str(dev), "covariates": 0 if covariates is None else int(Q.shape[1] - 1),
              "candidates": None if candidates is None else int(m)}
    n_pieces = -(-n1 // Beff) + sum(_block_pieces(len(sts[a]), len(sts[b]), a == b, rb1, rb2)
                                    for a, b in blocks[1:])
    return NGGResult(snp_effect, snp_support, snp_score, top_snps, top_pairs, params, timings,
                     n_columns=int(N), pieces_per_repetition=int(n_pieces),
                     extra={"complete": bool(complete), "blocks_done": int(state["block"]),
                            "blocks": len(blocks)})


def _block_scores(acc_sum, acc_cnt, R, diag):
    """A block's per-pair scores (support x |mean effect|), -1 on slots that are no pair."""
    import torch

    score = (acc_cnt.double() / R) * (acc_sum / R).abs()
    if diag:
        score = torch.where(torch.ones_like(score, dtype=torch.bool).triu(diagonal=1), score,
                            torch.full_like(score, -1.0))
    return score


def _reduce_block(acc_sum, acc_cnt, R, U_ids, W_ids, diag, kept, p, top, state):
    """Fold a block's R-repetition sums into the SNP arrays (block 0) or the running pair top-k."""
    import torch

    mean = acc_sum / R
    sup = acc_cnt.double() / R
    score = sup * mean.abs()
    if U_ids is None:   # SNP columns
        state["snp_sum"][:] = (acc_sum[0]).cpu().numpy()
        state["snp_cnt"][:] = acc_cnt[0].cpu().numpy().astype(np.int64)
        return state["best"]
    if diag:
        score = torch.triu(score, diagonal=1)
    flat = score.reshape(-1)
    cur = state["best"]
    thr = float(cur[1][-1]) if cur is not None and cur[1].size >= top else 0.0
    idx = torch.nonzero((flat > 0) & (flat >= thr)).reshape(-1)
    if idx.numel() > top:
        vals = flat[idx]
        kth = torch.topk(vals, top).values[-1]
        idx = idx[vals >= kth]
    if idx.numel() == 0:
        return cur
    nw = score.shape[1]
    ii = (idx // nw).cpu().numpy()
    jj = (idx % nw).cpu().numpy()
    gi = kept[U_ids[ii]]
    gj = kept[W_ids[jj]]
    lo, hi = np.minimum(gi, gj), np.maximum(gi, gj)
    keys = lo.astype(np.int64) * int(p) + hi.astype(np.int64)
    return _topk_merge(cur, keys, flat[idx].cpu().numpy(), mean.reshape(-1)[idx].cpu().numpy(),
                       sup.reshape(-1)[idx].cpu().numpy(), top)


def _refusal(left, budget, N, R, rate, dev, mode) -> str:
    """One line: the estimate, the limit, and settings that would fit it at the measured rate."""
    fit_R = int(R * budget / left) if left > 0 else R
    if fit_R >= 1:
        hint = f"--ngg-repetitions {fit_R}"
    else:  # even one repetition is too long: fewer SNPs (pairs grow as p^2 / 2)
        snps = int(math.sqrt(2.0 * rate * budget))
        hint = f"at most ~{snps} SNPs (--extract) for R=1"
    where = "" if dev.type == "cuda" else " or --device cuda"
    return (f"NGG {mode}: {N:.3g} columns x R={R} at {rate:.3g} columns/s on {dev.type} (measured on the first "
            f"block) would take ~{left / 60:.0f} min, over the {budget / 60:.0f}-min limit; use {hint}{where}, "
            f"or raise --ngg-max-minutes")


def estimate_seconds(rate_cols_per_s: float, N: int, R: int) -> float:
    return N * R / rate_cols_per_s
