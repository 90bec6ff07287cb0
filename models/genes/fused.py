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

_ACTS = {"tanh": 0, "identity": 1, "relu": 2}
_KERNELS = None


def _build():
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
        pu = tl.program_id(1)
        ou = pu * BU + tl.arange(0, BU)
        oc = tl.arange(0, BC)
        oh = tl.arange(0, BH)
        mu, mc, mh = ou < U, oc < C, oh < H
        z = tl.load(z_ptr + ou[:, None].to(tl.int64) * stride_z + oc[None, :],
                    mask=mu[:, None] & mc[None, :], other=0.0)
        w1 = tl.load(w1_ptr + m * H * C + oh[:, None] * C + oc[None, :],
                     mask=mh[:, None] & mc[None, :], other=0.0)
        b1 = tl.load(b1_ptr + m * H + oh, mask=mh, other=0.0)
        w2 = tl.load(w2_ptr + m * H + oh, mask=mh, other=0.0)
        b2 = tl.load(b2_ptr + m)
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
            ou = u0 + tl.arange(0, BU)
            mu = ou < U
            z = tl.load(z_ptr + ou[:, None].to(tl.int64) * stride_z + oc[None, :],
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

        fwd, _ = _kernels()
        z = z.contiguous() if z.stride(1) != 1 else z
        w1, b1, w2, b2 = (t.contiguous() for t in (w1, b1, w2, b2))
        U, C = z.shape
        NM, H, _ = w1.shape
        BC, BH = _blocks(C, H)
        BU = 128
        out = torch.empty((NM, U), device=z.device, dtype=torch.float32)     # member-major
        if U:
            fwd[(NM, triton.cdiv(U, BU))](z, w1, b1, w2, b2, out, U, C, H, NM, z.stride(0),
                                          ACT=_ACTS[act], BU=BU, BC=BC, BH=BH, PREC=precision(),
                                          num_warps=4)
        ctx.save_for_backward(z, w1, b1, w2)
        ctx.act = act
        return out

    @staticmethod
    def backward(ctx, g):
        import triton

        _, bwd = _kernels()
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
