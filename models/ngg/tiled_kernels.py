"""The tiled NGG's step on a CUDA GPU in fused Triton kernels (:mod:`models.ngg.tiled`).

With torch operations a step of ~8 million pair columns writes the pair columns (pieces x B x n),
their sketches and the FISTA iterates through device memory again and again (200 iterations of two
batched GEMMs plus element-wise passes). Here:

* sketch (per piece): the mean and sd of each pair column z_row z_partner, the sketch
  S = (A / sd)(z_row z_partner - mean) of the centred columns from the genotype rows, V = S S^T and
  h = S y; the pair columns exist only in registers. Random pieces gather their rows
  (:func:`sketch_nu`, which serves any layout); for rectangular pieces (10 rows x 10 partners of one
  tile) :func:`sketch_nu_rect` reads the tile's rows once per chunk of samples and takes the moments
  from two GEMMs (opt-in with EPIFLOW_NGG_RECT_KERNEL=1: checked in Triton's CPU interpreter only);
* solve (batched, 16 pieces a program): (V + ridge tr(V)/d I) w = h by Gauss-Jordan elimination
  in float32 (V is positive definite), then nu = A A^T w over the free columns;
* Lipschitz constant of A A^T by power iteration (:func:`lipschitz`);
* FISTA (:func:`fista_fused`): one program per sketch group and block of pieces keeps both iterates
  in registers for all iterations; its two products per iteration run on the tensor cores.

Same algorithm and the same draws as the torch path (`tests/test_ngg_tiled_kernels.py`); the
differences are precision: float32 solves (the torch path solves in float64) and the products'
``"ieee"`` (float32 FMA), ``"tf32x3"`` (three TF32 passes, float32-level; precision 'fp32') or
``"tf32"`` (one pass; precisions 'tf32' and 'bf16'). Triton is imported lazily: without it (or off
CUDA, unless Triton's interpreter is on), or with EPIFLOW_NGG_KERNELS=0, :func:`available` is False
and the engine runs its torch operations.
"""
from __future__ import annotations

import math
import os

__all__ = ["available", "fista_fused", "momentum_weights", "sketch_nu", "sketch_nu_rect", "lipschitz", "LAUNCH"]

_KERNEL = None
# launch shapes (columns of samples per sketch chunk, pieces per solve / FISTA program, warps);
# one setting for every cohort, measured on an H100 at the tuned piece size (B = 100, d = 30)
LAUNCH = {"sketch_nc": 32, "sketch_warps": 8, "solve_pb": 16, "solve_warps": 4, "fista_bp": 32, "fista_warps": 4,
          "rect_qb": 8, "rect_nc": 32, "rect_warps": 8}
for _kv in filter(None, os.environ.get("EPIFLOW_NGG_LAUNCH", "").split(",")):   # e.g. "fista_bp=32"
    _k, _v = _kv.split("=")
    if _k.strip() not in LAUNCH:
        raise ValueError(f"EPIFLOW_NGG_LAUNCH: unknown key {_k.strip()!r} (known: {', '.join(LAUNCH)})")
    LAUNCH[_k.strip()] = int(_v)


def available(device) -> bool:
    """Whether the kernels can run on ``device`` (CUDA with Triton, or Triton's CPU
    interpreter when TRITON_INTERPRET=1)."""
    if os.environ.get("EPIFLOW_NGG_KERNELS", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if getattr(device, "type", str(device)) == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


def momentum_weights(iters: int) -> list:
    """The FISTA extrapolation weights 1 + (t_k - 1) / t_{k+1}, in the torch loop's float64 order."""
    out, tk = [], 1.0
    for _ in range(iters):
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * tk * tk))
        out.append(1.0 + (tk - 1.0) / t_new)
        tk = t_new
    return out


def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def _fista_kernel(a_ptr, nu_ptr, mask_ptr, coef_ptr, w_ptr, out_ptr,
                      d, B, P, thr, smg, smb, smp, sog, sob, sop,
                      ITERS: tl.constexpr, HAS_MASK: tl.constexpr, DP: tl.constexpr, BB: tl.constexpr, BP: tl.constexpr,
                      PREC: tl.constexpr):
        g = tl.program_id(0)
        pb = tl.program_id(1)
        od = tl.arange(0, DP)
        ob = tl.arange(0, BB)
        op = pb * BP + tl.arange(0, BP)
        md, mb, mp = od < d, ob < B, op < P
        g64 = g.to(tl.int64)
        # coefficients of tile pair g: -step (A^T scale) and -1/kappa (nu scale), kappa (output)
        c_at = tl.load(coef_ptr + g64 * 3)
        c_nu = tl.load(coef_ptr + g64 * 3 + 1)
        kap = tl.load(coef_ptr + g64 * 3 + 2)
        a = tl.load(a_ptr + g64 * d * B + od[:, None] * B + ob[None, :],
                    mask=md[:, None] & mb[None, :], other=0.0)                 # (DP, BB)
        at = tl.trans(a) * c_at                                                 # (BB, DP) = -A^T / L
        nuk = tl.load(nu_ptr + g64 * d * P + od[:, None] * P + op[None, :],
                      mask=md[:, None] & mp[None, :], other=0.0) * c_nu        # (DP, BP) = -nu / kappa
        if HAS_MASK:
            keep = tl.load(mask_ptr + g64 * smg + ob[:, None] * smb + op[None, :] * smp,
                           mask=mb[:, None] & mp[None, :], other=0.0)          # (BB, BP)
            keep = tl.where(keep != 0.0, 1.0, 0.0)
        phi = tl.zeros((BB, BP), dtype=tl.float32)
        z = tl.zeros((BB, BP), dtype=tl.float32)
        for k in range(ITERS):
            r = tl.dot(a, z, input_precision=PREC) + nuk                       # A z - nu / kappa
            v = tl.dot(at, r, input_precision=PREC) + z                        # z - A^T r / L
            new = v - tl.minimum(tl.maximum(v, -thr), thr)                      # soft threshold
            if HAS_MASK:
                new = new * keep
            wk = tl.load(w_ptr + k)
            z = phi + wk * (new - phi)
            phi = new
        tl.store(out_ptr + g64 * sog + ob[:, None] * sob + op[None, :] * sop, phi * kap,
                 mask=mb[:, None] & mp[None, :])

    global _gram_chunk, _centred   # helpers the kernels call: Triton resolves them in the module's globals

    @triton.jit
    def _gram_chunk(a, w, y_ptr, on, mn, V, hv, ssum, LOWP: tl.constexpr, PREC_S: tl.constexpr,
                    PREC_V: tl.constexpr):
        """One chunk of samples: S = a w (DP x NC), accumulated into V += S S^T, h += S y, sum(S)."""
        if LOWP:
            S = tl.dot(a, w.to(tl.bfloat16))
        else:
            S = tl.dot(a, w, input_precision=PREC_S)
        yv = tl.load(y_ptr + on, mask=mn, other=0.0)
        ssum += tl.sum(S, axis=1)
        hv += tl.sum(S * yv[None, :], axis=1)
        V += tl.dot(S, tl.trans(S), input_precision=PREC_V)
        return V, hv, ssum

    @triton.jit
    def _centred(V, hv, ssum, ysum, n):
        """V and h of S centred over the n samples (what is left of the centring after subtracting mu)."""
        sbar = ssum / n
        return V - n * sbar[:, None] * sbar[None, :], hv - sbar * ysum

    @triton.jit
    def _sketch_kernel(zr_ptr, zc_ptr, a_ptr, r_ptr, c_ptr, ok_ptr, inv_ptr, y_ptr, v_ptr, h_ptr,
                       B, Pshare, ysum,
                       n: tl.constexpr, d: tl.constexpr, DP: tl.constexpr, BB: tl.constexpr,
                       NC: tl.constexpr, LOWP: tl.constexpr, PREC_S: tl.constexpr, PREC_V: tl.constexpr):
        p = tl.program_id(0).to(tl.int64)                       # piece
        ga = p // Pshare                                         # its shared sketch
        od = tl.arange(0, DP)
        ok = tl.arange(0, BB)
        md, mk = od < d, ok < B
        # slot k of piece p: the pair (row R[p, k] of the row tile, partner row C[p, k] of the partners)
        ppos = p * B + ok
        rrow = tl.load(r_ptr + ppos, mask=mk, other=0).to(tl.int64)
        crow = tl.load(c_ptr + ppos, mask=mk, other=0).to(tl.int64)
        slot = tl.load(ok_ptr + ppos, mask=mk, other=0)
        # pass 1: mean and sd of every pair column (float32 sums, as the torch path's GEMMs)
        s1 = tl.zeros((BB,), dtype=tl.float32)
        s2 = tl.zeros((BB,), dtype=tl.float32)
        for c0 in range(0, n, NC):
            on = c0 + tl.arange(0, NC)
            m2 = mk[:, None] & (on < n)[None, :]
            zr = tl.load(zr_ptr + rrow[:, None] * n + on[None, :], mask=m2, other=0.0).to(tl.float32)
            zc = tl.load(zc_ptr + crow[:, None] * n + on[None, :], mask=m2, other=0.0).to(tl.float32)
            s1 += tl.sum(zr * zc, axis=1)
            s2 += tl.sum((zr * zr) * (zc * zc), axis=1)
        mu = s1 / n
        sd = tl.sqrt(tl.maximum(s2 / n - mu * mu, 0.0))
        good = (slot != 0) & (sd > 1e-6) & mk
        inv = tl.where(good, 1.0 / tl.where(good, sd, 1.0), 0.0)
        tl.store(inv_ptr + ppos, inv, mask=mk)
        a = tl.load(a_ptr + ga * d * B + od[:, None] * B + ok[None, :],
                    mask=md[:, None] & mk[None, :], other=0.0)               # (DP, BB) shared sketch
        a_s = a * inv[None, :]                                                # columns scaled 1 / sd
        if LOWP:
            a_s = a_s.to(tl.bfloat16)
        # pass 2: sketch of the centred pair columns, V = S S^T, h = S y
        V = tl.zeros((DP, DP), dtype=tl.float32)
        hv = tl.zeros((DP,), dtype=tl.float32)
        ssum = tl.zeros((DP,), dtype=tl.float32)
        for c0 in range(0, n, NC):
            on = c0 + tl.arange(0, NC)
            mn = on < n
            m2 = mk[:, None] & mn[None, :]
            zr = tl.load(zr_ptr + rrow[:, None] * n + on[None, :], mask=m2, other=0.0).to(tl.float32)
            zc = tl.load(zc_ptr + crow[:, None] * n + on[None, :], mask=m2, other=0.0).to(tl.float32)
            pc = tl.where(m2, zr * zc - mu[:, None], 0.0)                      # centred pair columns
            V, hv, ssum = _gram_chunk(a_s, pc, y_ptr, on, mn, V, hv, ssum, LOWP, PREC_S, PREC_V)
        V, hv = _centred(V, hv, ssum, ysum, n)
        tl.store(v_ptr + p * DP * DP + od[:, None] * DP + od[None, :], V)
        tl.store(h_ptr + p * DP + od, hv)

    @triton.jit
    def _sketch_rect_kernel(zr_ptr, zc_ptr, a_ptr, mu_ptr, inv_ptr, y_ptr, v_ptr, h_ptr,
                            B, b1, b2, Pn, t, ysum,
                            QB: tl.constexpr, n: tl.constexpr, d: tl.constexpr, DP: tl.constexpr, R1: tl.constexpr,
                            C1: tl.constexpr, NC: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr):
        """Rectangular pieces: program (g, block of QB row groups) of tile pair g. The tile pair's sketch A
        is loaded once; a piece's pair columns are the broadcast product of its b1 rows and the tile's
        b2 partners, centred and scaled by the (torch) moments, and enter one (DP x R1 C1) x (R1 C1 x NC)
        product per chunk of samples: no gather of pair columns, every genotype row read once per chunk."""
        g = tl.program_id(0).to(tl.int64)
        od = tl.arange(0, DP)
        ri = tl.arange(0, R1)
        ci = tl.arange(0, C1)
        md = od < d
        mr, mc = ri < b1, ci < b2
        kk = tl.arange(0, R1 * C1)
        kr, kc = kk // C1, kk % C1
        a = tl.load(a_ptr + g * d * B + od[:, None] * B + (kr * b2 + kc)[None, :],
                    mask=md[:, None] & ((kr < b1) & (kc < b2))[None, :], other=0.0)       # (DP, R1 C1)
        if LOWP:
            a = a.to(tl.bfloat16)
        q0 = tl.program_id(1) * QB
        for qq in range(QB):
            q = q0 + qq
            qok = q < Pn
            rows = q * b1 + ri
            m2 = mr[:, None] & mc[None, :] & qok
            cidx = g * t * b2 + rows[:, None] * b2 + ci[None, :]
            mu = tl.load(mu_ptr + cidx, mask=m2, other=0.0)                                # (R1, C1)
            inv = tl.load(inv_ptr + cidx, mask=m2, other=0.0)
            V = tl.zeros((DP, DP), dtype=tl.float32)
            hv = tl.zeros((DP,), dtype=tl.float32)
            ssum = tl.zeros((DP,), dtype=tl.float32)
            for c0 in range(0, n, NC):
                on = c0 + tl.arange(0, NC)
                mn = on < n
                zr = tl.load(zr_ptr + rows.to(tl.int64)[:, None] * n + on[None, :],
                             mask=(mr & qok)[:, None] & mn[None, :], other=0.0).to(tl.float32)  # (R1, NC)
                zc = tl.load(zc_ptr + (g * b2 + ci)[:, None] * n + on[None, :],
                             mask=mc[:, None] & mn[None, :], other=0.0).to(tl.float32)     # (C1, NC)
                w = (zr[:, None, :] * zc[None, :, :] - mu[:, :, None]) * inv[:, :, None]   # (R1, C1, NC)
                w = tl.where(mn[None, None, :], w, 0.0)
                V, hv, ssum = _gram_chunk(a, tl.reshape(w, (R1 * C1, NC)), y_ptr, on, mn, V, hv, ssum, LOWP,
                                          PREC, PREC)
            V, hv = _centred(V, hv, ssum, ysum, n)
            p = g * Pn + q
            tl.store(v_ptr + p * DP * DP + od[:, None] * DP + od[None, :], V, mask=qok)
            tl.store(h_ptr + p * DP + od, hv, mask=qok)

    @triton.jit
    def _solve_kernel(v_ptr, h_ptr, a_ptr, inv_ptr, nu_ptr, B, Pn, ridge,
                      d: tl.constexpr, DP: tl.constexpr, BB: tl.constexpr, PB: tl.constexpr,
                      PREC: tl.constexpr):
        """nu = A A^T w for PB pieces of tile pair g at once, w = (V + ridge tr(V)/d I)^-1 h by
        Gauss-Jordan elimination on the (PB, DP, DP) block (SPD: no pivoting)."""
        g = tl.program_id(0)
        g64 = g.to(tl.int64)
        oq = tl.program_id(1) * PB + tl.arange(0, PB)
        mq = oq < Pn
        od = tl.arange(0, DP)
        ob = tl.arange(0, BB)
        md = od < d
        piece = g64 * Pn + oq                                                 # (PB,)
        i3 = od[None, :, None]
        j3 = od[None, None, :]
        V = tl.load(v_ptr + piece[:, None, None] * DP * DP + i3 * DP + j3, mask=mq[:, None, None], other=0.0)
        h = tl.load(h_ptr + piece[:, None] * DP + od[None, :], mask=mq[:, None], other=0.0)   # (PB, DP)
        eye = i3 == j3
        tr = tl.sum(tl.sum(tl.where(eye, V, 0.0), axis=2), axis=1) / d      # (PB,)
        V = V + tl.where(eye, tl.where(md[None, :, None], ridge * tr[:, None, None] + 1e-12, 1.0), 0.0)
        for j in range(d):
            rowj = tl.sum(tl.where(i3 == j, V, 0.0), axis=1)                  # (PB, DP): V[:, j, :]
            colj = tl.sum(tl.where(j3 == j, V, 0.0), axis=2)                  # (PB, DP): V[:, :, j]
            piv = tl.sum(tl.where(od[None, :] == j, rowj, 0.0), axis=1)       # (PB,)
            hj = tl.sum(tl.where(od[None, :] == j, h, 0.0), axis=1)
            f = tl.where(od[None, :] == j, 0.0, colj / piv[:, None])          # (PB, DP)
            V = V - f[:, :, None] * rowj[:, None, :]
            h = h - f * hj[:, None]
        dg = tl.sum(tl.where(eye, V, 0.0), axis=2)                            # (PB, DP)
        w = tl.where(md[None, :] & mq[:, None], h / dg, 0.0)
        a = tl.load(a_ptr + g64 * d * B + od[:, None] * B + ob[None, :],
                    mask=md[:, None] & (ob < B)[None, :], other=0.0)            # (DP, BB)
        inv = tl.load(inv_ptr + g64 * Pn * B + oq[:, None] * B + ob[None, :],
                      mask=mq[:, None] & (ob < B)[None, :], other=0.0)         # (PB, BB)
        u = tl.dot(w, a, input_precision=PREC) * tl.where(inv != 0.0, 1.0, 0.0)   # A^T w on free columns
        nu = tl.dot(u, tl.trans(a), input_precision=PREC)                      # (PB, DP) = A A^T w
        tl.store(nu_ptr + g64 * d * Pn + od[None, :] * Pn + oq[:, None], nu, mask=mq[:, None] & md[None, :])

    @triton.jit
    def _lipschitz_kernel(a_ptr, coef_ptr, lam, d, B,
                          DP: tl.constexpr, BB: tl.constexpr, ITERS: tl.constexpr, PREC: tl.constexpr):
        """coef[g] = (-step, -1/kappa, kappa) with step = 1 / (1.05 L), L the largest eigenvalue of
        A_g A_g^T by power iteration, kappa = lam step (1 when lam = 0)."""
        g = tl.program_id(0)
        g64 = g.to(tl.int64)
        od = tl.arange(0, DP)
        ob = tl.arange(0, BB)
        md = od < d
        a = tl.load(a_ptr + g64 * d * B + od[:, None] * B + ob[None, :],
                    mask=md[:, None] & (ob < B)[None, :], other=0.0)
        M = tl.dot(a, tl.trans(a), input_precision=PREC)                    # (DP, DP)
        v = tl.where(md, 1.0 + 0.01 * od.to(tl.float32), 0.0)
        for _ in range(ITERS):
            v = tl.sum(M * v[None, :], axis=1)
            v = v / tl.sqrt(tl.sum(v * v))
        L = tl.sum(v * tl.sum(M * v[None, :], axis=1))
        step = 1.0 / tl.maximum(L * 1.05, 1e-12)
        kap = tl.where(lam > 0, lam * step, 1.0)
        tl.store(coef_ptr + g64 * 3, -step)
        tl.store(coef_ptr + g64 * 3 + 1, -1.0 / kap)
        tl.store(coef_ptr + g64 * 3 + 2, kap)

    return _fista_kernel, _sketch_kernel, _lipschitz_kernel, _solve_kernel, _sketch_rect_kernel


def _kernels():
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    return _KERNEL


def sketch_nu(Zr, Zp, A, R, C, ok, yz, ridge: float, precision: str = "fp32"):
    """(nu, inv) of every piece of a step, one kernel program per piece: the mean and sd of its pair
    columns z_row z_partner (inv = 1 / sd; 0 for empty slots and constant columns), the sketch
    S = (A / sd) (z_row z_partner - mean) of the centred columns gathered from the rows Zr (t, n) and
    the partners Zp (m, n) without forming them in memory, V = S S^T and h = S y (S centred over
    samples); then, batched over pieces, V + ridge tr(V)/d I solved by Gauss-Jordan elimination in
    float32 and nu = A A^T w over the free columns.

    A (G, d, B): one sketch per group of Pshare = Ptot / G consecutive pieces. R, C (Ptot, B): slot k
    of piece p is the pair (row R[p, k] of Zr, partner C[p, k] of Zp), ok (Ptot, B) bool whether the
    slot holds a pair. Returns nu (G, d, Pshare) and inv (Ptot, B) float32. precision: 'bf16' (pair
    columns and sketch in bfloat16, float32 sums), 'tf32' or 'fp32' (float32-level: three TF32
    passes); V = S S^T in float32-level precision except for 'tf32'."""
    import torch

    n = Zr.shape[1]
    G, d, B = A.shape
    Ptot = R.shape[0]
    if Ptot % G:
        raise ValueError(f"{Ptot} pieces do not split into {G} sketch groups")
    Pshare = Ptot // G
    dev = A.device
    cuda = dev.type == "cuda"
    low = precision == "bf16" and cuda
    prec = ("tf32" if precision == "tf32" else "tf32x3") if cuda else "ieee"
    zdt = torch.bfloat16 if low else torch.float32
    Zr = Zr.to(zdt).contiguous()
    Zp = Zp.to(zdt).contiguous()
    nu = torch.empty((G, d, Pshare), dtype=torch.float32, device=dev)
    inv = torch.empty((Ptot, B), dtype=torch.float32, device=dev)
    DP, BB = _pow2(d), _pow2(B)
    V = torch.empty((Ptot, DP, DP), dtype=torch.float32, device=dev)
    h = torch.empty((Ptot, DP), dtype=torch.float32, device=dev)
    A = A.contiguous()
    _kernels()[1][(Ptot,)](Zr, Zp, A, R.to(torch.int32).contiguous(), C.to(torch.int32).contiguous(),
                           ok.to(torch.int8).contiguous(), inv, yz.contiguous(), V, h,
                           B, Pshare, float(yz.sum()),
                           n=int(n), d=int(d), DP=DP, BB=BB, NC=LAUNCH["sketch_nc"], LOWP=low, PREC_S=prec,
                           PREC_V=prec, num_warps=LAUNCH["sketch_warps"])
    PB = LAUNCH["solve_pb"]
    _kernels()[3][(G, triton_cdiv(Pshare, PB))](V, h, A, inv, nu, B, Pshare, float(ridge), d=int(d), DP=DP,
                                                BB=BB, PB=PB, PREC=prec, num_warps=LAUNCH["solve_warps"])
    return nu, inv


def sketch_nu_rect(Zr, Zc, A, mu, inv, yz, ridge: float, b1: int, precision: str = "fp32"):
    """:func:`sketch_nu` for rectangular pieces (piece (g, q) = row group q of Zr (t, n), b1 rows, x the b2
    partners of tile g of Zc (G, b2, n)), with the pair columns' means ``mu`` and inverse sds ``inv``
    (G, t, b2) given (0 for slots that are no pair): the tile's genotype rows are read once per chunk
    of samples and the sketch is one product per piece and chunk. Returns nu (G, d, Pn)."""
    import torch

    G, b2, n = Zc.shape
    t = Zr.shape[0]
    d, B = A.shape[1], A.shape[2]
    Pn = t // b1
    dev = A.device
    cuda = dev.type == "cuda"
    low = precision == "bf16" and cuda
    prec = ("tf32" if precision == "tf32" else "tf32x3") if cuda else "ieee"
    zdt = torch.bfloat16 if low else torch.float32
    DP = _pow2(d)
    V = torch.empty((G * Pn, DP, DP), dtype=torch.float32, device=dev)
    h = torch.empty((G * Pn, DP), dtype=torch.float32, device=dev)
    QB = LAUNCH["rect_qb"]
    A = A.contiguous()
    _kernels()[4][(G, triton_cdiv(Pn, QB))](Zr.to(zdt).contiguous(), Zc.to(zdt).contiguous(), A,
                                            mu.contiguous().float(), inv.contiguous().float(), yz.contiguous(), V, h,
                                            B, b1, b2, Pn, t, float(yz.sum()),
                                            QB=QB, n=int(n), d=int(d), DP=DP, R1=_pow2(b1, 2), C1=_pow2(b2, 2),
                                            NC=LAUNCH["rect_nc"], LOWP=low, PREC=prec,
                                            num_warps=LAUNCH["rect_warps"])
    nu = torch.empty((G, d, Pn), dtype=torch.float32, device=dev)
    PB = LAUNCH["solve_pb"]
    _kernels()[3][(G, triton_cdiv(Pn, PB))](V, h, A, inv.reshape(G * Pn, B), nu, B, Pn, float(ridge), d=int(d),
                                            DP=DP, BB=_pow2(B), PB=PB, PREC=prec, num_warps=LAUNCH["solve_warps"])
    return nu


def lipschitz(A, lam: float, iters: int = 128):
    """(step, kappa) per tile pair from A (G, d, B): step = 1 / (1.05 L), L = the largest eigenvalue
    of A A^T by ``iters`` power iterations (float32-level products), kappa = lam step (1 if lam = 0)."""
    import torch

    G, d, B = A.shape
    coef = torch.empty((G, 3), dtype=torch.float32, device=A.device)
    prec = "tf32x3" if A.device.type == "cuda" else "ieee"
    _kernels()[2][(G,)](A.contiguous(), coef, float(lam), d, B, DP=_pow2(d), BB=_pow2(B), ITERS=int(iters),
                        PREC=prec, num_warps=4)
    return -coef[:, 0], coef[:, 2]


def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, 1 << (int(x) - 1).bit_length())


def fista_fused(A, nu, mask, step, kappa, thr: float, iters: int, precision: str = "tf32x3", out=None):
    """theta (G, B, P) = kappa * phi of FISTA on phi for every tile pair and piece (see
    :meth:`models.ngg.tiled._Engine._fista`, whose scaled loop this is). A (G, d, B), nu (G, d, P),
    mask (G, B, P) (any strides; nonzero = free column) or None, step and kappa (G,) tensors;
    float32 throughout. out: optional (G, B, P) float32 view (any strides) written in place."""
    import torch

    G, d, B = A.shape
    P = nu.shape[2]
    dev = A.device
    A = A.contiguous().float()
    nu = nu.contiguous().float()
    coef = torch.stack([-step.float(), -1.0 / kappa.float(), kappa.float()], dim=1).contiguous()
    w = torch.tensor(momentum_weights(iters), dtype=torch.float32, device=dev)
    if out is None:
        out = torch.empty((G, B, P), dtype=torch.float32, device=dev)
    DP, BB = _pow2(d), _pow2(B)
    BP = min(LAUNCH["fista_bp"], _pow2(P))
    if mask is not None and mask.dtype != torch.float32:
        mask = mask.float()
    m = mask if mask is not None else out   # any pointer when unused
    grid = (G, triton_cdiv(P, BP))
    _kernels()[0][grid](A, nu, m, coef, w, out, d, B, P, float(thr), *m.stride(), *out.stride(),
                  ITERS=int(iters), HAS_MASK=mask is not None, DP=DP, BB=BB, BP=BP, PREC=precision,
                  num_warps=LAUNCH["fista_warps"] if BB * BP >= 128 * 32 else 4)
    return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))
