"""Fused gene module of N networks on a CUDA device (Triton): no (rows x N*H) hidden tensor.

For every row z_u (a standardised class-count vector, C values) and every member m the shared
gene module computes ``v[u, m] = w2_m . act(W1_m z_u + b1_m) + b2_m`` (H hidden units). With
plain tensor ops the (U, N*H) hidden layer goes through device memory several times per step
(forward, activation, reduction, and again in the backward pass): for 100 members, H = 50 and a
million rows per batch that is 20 GB per pass. Here one kernel computes the hidden layer of a
tile of rows for one member in registers and writes only v (U, N); the backward kernel
recomputes it and reduces the weight gradients over the rows in registers, writing
(split, N, H, C) partial sums that torch adds up (a fixed order: deterministic).

Arithmetic is float32; the small dots run on the tensor cores as three TF32 passes (float32-level
accuracy, see ``precision``), so the result equals the tensor-op path to float32 rounding. Used by :class:`models.genes.ensemble.BatchedEnsemble` on CUDA when Triton
imports; ``available()`` says whether it can be used. Gradients flow to the weights only (the
inputs are data).
"""
from __future__ import annotations

import os

import torch

from models.genes.layers import _private_copies

_ACTS = {"tanh": 0, "identity": 1, "relu": 2}
GRID_Y_MAX = 65535        # CUDA's limit on grid axes 1 and 2 (axis 0: 2**31 - 1)
_KERNELS = None


# the fused gene-module kernels: forward and backward of class -> hidden -> gene value
def _build_gene_kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def _act(pre, ACT: tl.constexpr):
        if ACT == 0:
            t = 2.0 * tl.sigmoid(2.0 * pre) - 1.0
        elif ACT == 1:
            t = pre
        else:
            t = tl.maximum(pre, 0.0)
        return t

    @triton.jit
    def _fwd(z_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr, U, C, H, NM, stride_z,
             ACT: tl.constexpr, BU: tl.constexpr, BC: tl.constexpr, BH: tl.constexpr,
             PREC: tl.constexpr):
        m = tl.program_id(0)            # member fastest: neighbouring programs share a z tile
        oc = tl.arange(0, BC)
        oh = tl.arange(0, BH)
        mc, mh = oc < C, oh < H
        w1 = tl.load(w1_ptr + m * H * C + oh[:, None] * C + oc[None, :],
                     mask=mh[:, None] & mc[None, :], other=0.0)
        b1 = tl.load(b1_ptr + m * H + oh, mask=mh, other=0.0)
        w2 = tl.load(w2_ptr + m * H + oh, mask=mh, other=0.0)
        b2 = tl.load(b2_ptr + m)
        # row tiles pu, pu + grid_y, ...: grid axis 1 stays under CUDA's 65,535 at any U
        for pu in range(tl.program_id(1), tl.cdiv(U, BU), tl.num_programs(1)):
            ou = pu.to(tl.int64) * BU + tl.arange(0, BU)
            mu = ou < U
            z = tl.load(z_ptr + ou[:, None] * stride_z + oc[None, :],
                        mask=mu[:, None] & mc[None, :], other=0.0)
            pre = tl.dot(z, tl.trans(w1), input_precision=PREC) + b1[None, :]
            t = _act(pre, ACT)
            v = tl.sum(t * w2[None, :], axis=1) + b2
            tl.store(out_ptr + m.to(tl.int64) * U + ou, v, mask=mu)

    @triton.jit
    def _bwd(z_ptr, w1_ptr, b1_ptr, w2_ptr, g_ptr, gw1_ptr, gb1_ptr, gw2_ptr, gb2_ptr,
             U, C, H, NM, SPLIT, stride_z,
             ACT: tl.constexpr, BU: tl.constexpr, BC: tl.constexpr, BH: tl.constexpr,
             PREC: tl.constexpr):
        m = tl.program_id(0)
        s = tl.program_id(1)
        oc = tl.arange(0, BC)
        oh = tl.arange(0, BH)
        mc, mh = oc < C, oh < H
        w1 = tl.load(w1_ptr + m * H * C + oh[:, None] * C + oc[None, :],
                     mask=mh[:, None] & mc[None, :], other=0.0)
        b1 = tl.load(b1_ptr + m * H + oh, mask=mh, other=0.0)
        w2 = tl.load(w2_ptr + m * H + oh, mask=mh, other=0.0)
        acc_w1 = tl.zeros((BH, BC), dtype=tl.float32)
        acc_b1 = tl.zeros((BH,), dtype=tl.float32)
        acc_w2 = tl.zeros((BH,), dtype=tl.float32)
        acc_b2 = tl.zeros((BU,), dtype=tl.float32)
        for u0 in range(s * BU, U, SPLIT * BU):
            ou = u0.to(tl.int64) + tl.arange(0, BU)
            mu = ou < U
            z = tl.load(z_ptr + ou[:, None] * stride_z + oc[None, :],
                        mask=mu[:, None] & mc[None, :], other=0.0)
            g = tl.load(g_ptr + m.to(tl.int64) * U + ou, mask=mu, other=0.0)
            pre = tl.dot(z, tl.trans(w1), input_precision=PREC) + b1[None, :]
            t = _act(pre, ACT)
            if ACT == 0:
                dact = 1.0 - t * t
            elif ACT == 1:
                dact = pre * 0.0 + 1.0
            else:
                dact = (pre > 0).to(tl.float32)
            dpre = g[:, None] * w2[None, :] * dact            # (BU, BH)
            acc_w1 += tl.dot(tl.trans(dpre), z, input_precision=PREC)
            acc_b1 += tl.sum(dpre, axis=0)
            acc_w2 += tl.sum(t * g[:, None], axis=0)
            acc_b2 += g
        base = m * SPLIT + s
        tl.store(gw1_ptr + base * BH * BC + oh[:, None] * BC + oc[None, :], acc_w1)
        tl.store(gb1_ptr + base * BH + oh, acc_b1)
        tl.store(gw2_ptr + base * BH + oh, acc_w2)
        tl.store(gb2_ptr + base, tl.sum(acc_b2, axis=0))

    return _fwd, _bwd


def _build_sparse_kernels():
    """The sparse gene -> neuron layer kernels: forward and backward over runs of edges."""
    import triton
    import triton.language as tl

    @triton.jit
    def _sp_fwd(vt_ptr, ids_ptr, gene_ptr, w_ptr, it_m_ptr, it_e0_ptr, it_e1_ptr, it_p_ptr,
                pre_ptr, U, B, M_OFF, P_OFF, BE: tl.constexpr, BB: tl.constexpr):
        i = tl.program_id(0)            # one work item: a run of edges into one neuron
        ob = tl.program_id(1) * BB + tl.arange(0, BB)
        mb = ob < B
        m = (tl.load(it_m_ptr + i) - M_OFF).to(tl.int64)
        e0 = tl.load(it_e0_ptr + i)
        e1 = tl.load(it_e1_ptr + i)
        p = (tl.load(it_p_ptr + i) - P_OFF).to(tl.int64)
        acc = tl.zeros((BB,), dtype=tl.float32)
        s = e0
        while s < e1:
            oe = s + tl.arange(0, BE)
            s += BE
            me = oe < e1
            g = tl.load(gene_ptr + oe, mask=me, other=0).to(tl.int64)
            w = tl.load(w_ptr + oe, mask=me, other=0.0)
            mm = me[:, None] & mb[None, :]
            u = tl.load(ids_ptr + g[:, None] * B + ob[None, :], mask=mm, other=0).to(tl.int64)
            v = tl.load(vt_ptr + m * U + u, mask=mm, other=0.0)
            acc += tl.sum(v * w[:, None], axis=0)
        tl.atomic_add(pre_ptr + p * B + ob, acc, mask=mb)

    @triton.jit
    def _sp_bwd(vt_ptr, ids_ptr, gene_ptr, w_ptr, it_m_ptr, it_e0_ptr, it_e1_ptr, it_p_ptr,
                gpre_ptr, gw_ptr, gvt_ptr, U, B, NM, NCOPY, M_OFF, P_OFF,
                BE: tl.constexpr, BB: tl.constexpr):
        i = tl.program_id(0)
        ob = tl.program_id(1) * BB + tl.arange(0, BB)
        mb = ob < B
        m = (tl.load(it_m_ptr + i) - M_OFF).to(tl.int64)
        e0 = tl.load(it_e0_ptr + i)
        e1 = tl.load(it_e1_ptr + i)
        p = (tl.load(it_p_ptr + i) - P_OFF).to(tl.int64)
        gp = tl.load(gpre_ptr + p * B + ob, mask=mb, other=0.0)
        # batch column b adds into private copy b % NCOPY: no two lanes of a warp on one address
        base = ((ob % NCOPY).to(tl.int64) * NM + m) * U
        s = e0
        while s < e1:
            oe = s + tl.arange(0, BE)
            s += BE
            me = oe < e1
            g = tl.load(gene_ptr + oe, mask=me, other=0).to(tl.int64)
            w = tl.load(w_ptr + oe, mask=me, other=0.0)
            mm = me[:, None] & mb[None, :]
            u = tl.load(ids_ptr + g[:, None] * B + ob[None, :], mask=mm, other=0).to(tl.int64)
            v = tl.load(vt_ptr + m * U + u, mask=mm, other=0.0)
            tl.atomic_add(gw_ptr + oe, tl.sum(v * gp[None, :], axis=1), mask=me)
            tl.atomic_add(gvt_ptr + base[None, :] + u, w[:, None] * gp[None, :], mask=mm)

    return _sp_fwd, _sp_bwd


def _build():
    return (*_build_gene_kernels(), *_build_sparse_kernels())


PRECISIONS = ("ieee", "tf32x3", "tf32")


def precision() -> str:
    """Float32 product mode of the kernels' dots: 'tf32x3' (default: three tensor-core passes,
    float32-level accuracy), 'ieee' (plain FMA) or 'tf32' (one pass, ~5e-4 relative error);
    $EPIFLOW_FUSED_DOT. Measured on an H200, 1M rows x 100 members, forward + backward: ieee
    41.6 ms, tf32x3 30.4 ms (relative error vs float64 1.4e-7, ieee 1.1e-7), tf32 23.8 ms
    (benchmarks/bench_fused_gene.py)."""
    p = os.environ.get("EPIFLOW_FUSED_DOT", "tf32x3")
    if p not in PRECISIONS:
        raise ValueError(f"EPIFLOW_FUSED_DOT must be one of {', '.join(PRECISIONS)}, got {p!r}")
    return p


def available(device: torch.device | None = None) -> bool:
    """True when Triton imports and ``device`` (default: CUDA) is a CUDA device."""
    if device is not None and torch.device(device).type != "cuda":
        return False
    if not torch.cuda.is_available():
        return False
    try:
        _kernels()
    except Exception:
        return False
    return True


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


def _blocks(C, H):
    import triton

    return max(16, triton.next_power_of_2(C)), max(16, triton.next_power_of_2(H))


class _FusedGene(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, w1, b1, w2, b2, act):
        import triton

        fwd = _kernels()[0]
        z = z.contiguous() if z.stride(1) != 1 else z
        w1, b1, w2, b2 = (t.contiguous() for t in (w1, b1, w2, b2))
        U, C = z.shape
        NM, H, _ = w1.shape
        BC, BH = _blocks(C, H)
        BU = 128
        out = torch.empty((NM, U), device=z.device, dtype=torch.float32)     # member-major
        if U:
            # CUDA caps grid axes 1 and 2 at 65,535: the kernel strides over the row tiles
            fwd[(NM, min(triton.cdiv(U, BU), GRID_Y_MAX))](z, w1, b1, w2, b2, out, U, C, H, NM, z.stride(0),
                                          ACT=_ACTS[act], BU=BU, BC=BC, BH=BH, PREC=precision(),
                                          num_warps=4)
        ctx.save_for_backward(z, w1, b1, w2)
        ctx.act = act
        return out

    @staticmethod
    def backward(ctx, g):
        import triton

        bwd = _kernels()[1]
        z, w1, b1, w2 = ctx.saved_tensors
        g = g.contiguous()
        U, C = z.shape
        NM, H, _ = w1.shape
        BC, BH = _blocks(C, H)
        BU = 64
        split = max(1, min(triton.cdiv(U, BU), triton.cdiv(8 * 132, NM)))
        dev = z.device
        gw1 = torch.empty((NM, split, BH, BC), device=dev, dtype=torch.float32)
        gb1 = torch.empty((NM, split, BH), device=dev, dtype=torch.float32)
        gw2 = torch.empty((NM, split, BH), device=dev, dtype=torch.float32)
        gb2 = torch.empty((NM, split), device=dev, dtype=torch.float32)
        bwd[(NM, split)](z, w1, b1, w2, g, gw1, gb1, gw2, gb2, U, C, H, NM, split, z.stride(0),
                         ACT=_ACTS[ctx.act], BU=BU, BC=BC, BH=BH, PREC=precision(),
                         num_warps=4)
        return (None, gw1.sum(1)[:, :H, :C], gb1.sum(1)[:, :H], gw2.sum(1)[:, :H], gb2.sum(1),
                None)


def gene_values_t(z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                  b2: torch.Tensor, act: str = "tanh") -> torch.Tensor:
    """(N, U) gene-module outputs of N members for rows z (U, C), member-major (coalesced
    stores); w1 (N, H, C), b1/w2 (N, H), b2 (N,). Differentiable in the weights."""
    if act not in _ACTS:
        raise ValueError(f"unknown activation '{act}'; valid: {', '.join(_ACTS)}")
    return _FusedGene.apply(z.float(), w1, b1, w2, b2, act)


def gene_values(z, w1, b1, w2, b2, act: str = "tanh") -> torch.Tensor:
    """(U, N): the transpose (a view) of :func:`gene_values_t`."""
    return gene_values_t(z, w1, b1, w2, b2, act).t()


def gene_values_reference(z, w1, b1, w2, b2, act: str = "tanh") -> torch.Tensor:
    """The same function with tensor ops (any device): the tests' reference."""
    f = {"tanh": torch.tanh, "identity": lambda t: t, "relu": torch.relu}[act]
    h = f(torch.einsum("uc,nhc->unh", z, w1) + b1)
    return (h * w2).sum(-1) + b2


# ---------------------------------------------------------------------------- sparse layer
SPARSE_RUN = 256          # edges per work item at most (long neurons, e.g. the dummy, split)


def sparse_work_items(dst: "np.ndarray", edge_ptr: list, max_run: int = SPARSE_RUN):
    """Work items of :func:`sparse_pre` for N members' concatenated edge lists: runs of at most
    ``max_run`` consecutive edges of one member into one neuron. Each member's edges must be
    grouped by destination (the topologies sort them so); returns None when they are not.
    (item member, first edge, end edge, neuron) as int32 arrays, plus the first item of each
    member (N + 1 Python ints)."""
    import numpy as np

    items, item_ptr = [], [0]
    for m in range(len(edge_ptr) - 1):
        a, b = edge_ptr[m], edge_ptr[m + 1]
        d = np.asarray(dst[a:b])
        if d.size:
            starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
            if np.unique(d[starts]).size != starts.size:
                return None
            ends = np.r_[starts[1:], d.size]
            for s0, s1 in zip(starts, ends):
                for c in range(s0, s1, max_run):
                    items.append((m, a + c, a + min(c + max_run, s1), d[s0]))
        item_ptr.append(len(items))
    arr = np.asarray(items, dtype=np.int64).reshape(-1, 4)
    return tuple(arr[:, k].astype(np.int32) for k in range(4)), item_ptr


class _FusedSparse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vt, w, ids_t, gene, it_m, it_e0, it_e1, it_p, n_neurons, m_off, p_off):
        import triton

        k = _kernels()[2]
        NM, U = vt.shape
        B = ids_t.shape[1]
        pre = torch.zeros((n_neurons, B), device=vt.device, dtype=torch.float32)
        n_items = it_m.numel()
        if n_items and B:
            k[(n_items, triton.cdiv(B, 128))](vt, ids_t, gene, w, it_m, it_e0, it_e1, it_p, pre,
                                              U, B, m_off, p_off, BE=16, BB=128, num_warps=4)
        ctx.save_for_backward(vt, w, ids_t, gene, it_m, it_e0, it_e1, it_p)
        ctx.offsets = (m_off, p_off)
        return pre

    @staticmethod
    def backward(ctx, gpre):
        import triton

        k = _kernels()[3]
        vt, w, ids_t, gene, it_m, it_e0, it_e1, it_p = ctx.saved_tensors
        NM, U = vt.shape
        B = ids_t.shape[1]
        ncopy = _private_copies(NM, U, vt.device, budget=1 << 27)
        gw = torch.zeros_like(w)
        gvt = torch.zeros((ncopy, NM, U), device=vt.device, dtype=torch.float32)
        n_items = it_m.numel()
        if n_items and B:
            k[(n_items, triton.cdiv(B, 128))](vt, ids_t, gene, w, it_m, it_e0, it_e1, it_p,
                                              gpre.contiguous(), gw, gvt, U, B, NM, ncopy,
                                              *ctx.offsets, BE=16, BB=128, num_warps=4)
        return gvt.sum(0), gw, None, None, None, None, None, None, None, None, None


def sparse_pre(vt: torch.Tensor, w: torch.Tensor, ids_t: torch.Tensor, gene: torch.Tensor,
               items, n_neurons: int, m_off: int = 0, p_off: int = 0) -> torch.Tensor:
    """Pre-activations (n_neurons, B) of the gene -> neuron layer of N members, straight from the
    combination values: ``pre[p, b] = sum over edges e into p of w[e] * vt[m(e), ids_t[gene[e], b]]``.

    vt (N, U): gene-module values of every combination for each member (from
    :func:`gene_values_t`); ids_t (G, B) int32: the combination of sample b at gene g; gene (E,)
    int32: each edge's source gene; w (E,) edge weights; ``items`` from
    :func:`sparse_work_items` (edge numbers index w and gene; the items' members and neurons
    minus ``m_off`` and ``p_off`` index vt's rows and the output's rows). The
    (N*G, B) gene-value tensor is never formed: one pass reads the ids and gathers from vt
    (which stays in cache). Differentiable in vt and w; the backward adds the combination
    gradients into interleaved private copies (see ``layers._private_copies``), so the all-zero
    count vector that a quarter of the cells share is not one hot address."""
    it_m, it_e0, it_e1, it_p = items
    return _FusedSparse.apply(vt.contiguous(), w.contiguous(), ids_t.contiguous(),
                              gene.contiguous(), it_m, it_e0, it_e1, it_p, int(n_neurons),
                              int(m_off), int(p_off))


