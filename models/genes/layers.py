"""Network building blocks: the shared gene module and edge-list sparse layers.

Every parameter is initialised from an explicit ``torch.Generator`` in a fixed order, so a net
built with init seed ``s`` is reproducible and the batched ensemble can rebuild exactly the
same members.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn

from models.genes.data import ComboBatch, GeneBatch
from models.genes.topology import Topology

class _FastTanh(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1. On CPU, torch's float32 tanh kernel runs ~10x slower than
    its sigmoid kernel (measured: 2.4 ms vs 0.24 ms per 1M values on one core), and the gene
    module spends most of its time here. Agrees with torch.tanh to ~2e-7."""

    @staticmethod
    def forward(ctx, x):
        t = torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, t)


def tanh(x: torch.Tensor) -> torch.Tensor:
    if x.is_cuda:
        return torch.tanh(x)
    return _FastTanh.apply(x)


def _private_copies(n: int, u: int, device: torch.device, budget: int = 1 << 26) -> int:
    """How many interleaved copies (at most 32, at most ``budget`` floats in all) of an (n, u)
    gradient a CUDA scatter sums into; 1 off CUDA."""
    if device.type != "cuda":
        return 1
    return int(max(1, min(32, budget // max(n * u, 1))))


class _GatherCols(torch.autograd.Function):
    """``v.index_select(1, idx)`` for v (n, U), with a backward built for heavy repetition.

    The backward sums the gradient of every position into its column. Under per-class
    standardisation a batch's (sample, gene) cells share few count vectors -- the all-zero vector
    alone is about a quarter of them -- and atomic adds to one address serialise on a GPU
    (measured on an H200, 100 members x 2.9M positions into 27k columns: 14 ms for one
    ``index_add_``; torch's indexing backward for ``v[idx]`` took 125 ms for one member). On CUDA,
    position j adds into copy ``j % P`` of P interleaved private copies, which are then summed, so
    neighbouring threads never hit one address. Same sums up to float rounding order."""

    @staticmethod
    def forward(ctx, v, idx):
        ctx.save_for_backward(idx)
        ctx.n_cols = v.shape[1]
        return v.index_select(1, idx)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        n, u = g.shape[0], ctx.n_cols
        g = g.contiguous()
        p = _private_copies(n, u, g.device)
        if p == 1:
            return g.new_zeros(n, u).index_add_(1, idx, g), None
        lane = torch.arange(idx.numel(), device=idx.device).remainder_(p).mul_(u).add_(idx)
        return g.new_zeros(n, p * u).index_add_(1, lane, g).view(n, p, u).sum(1), None


def gather_cols(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(n, len(idx)) = v[:, idx], differentiable in v (see :class:`_GatherCols`)."""
    return _GatherCols.apply(v, idx)


class _PermuteRows(torch.autograd.Function):
    """``x.index_select(0, perm)`` for a permutation ``perm`` whose inverse is ``inv``: the
    backward is the inverse gather, not an atomic scatter."""

    @staticmethod
    def forward(ctx, x, perm, inv):
        ctx.save_for_backward(inv)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, g):
        (inv,) = ctx.saved_tensors
        return g.index_select(0, inv), None, None


def permute_rows(x: torch.Tensor, perm: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
    return _PermuteRows.apply(x, perm, inv)


ACTIVATIONS = {"tanh": tanh, "identity": lambda t: t, "relu": torch.relu}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; valid: {', '.join(ACTIVATIONS)}") from None


def uniform_(t: torch.Tensor, bound: float, gen: torch.Generator) -> torch.Tensor:
    """In-place U(-bound, bound) drawn on the CPU from ``gen`` (device independent)."""
    with torch.no_grad():
        vals = torch.rand(t.shape, generator=gen, dtype=torch.float64) * (2 * bound) - bound
        t.copy_(vals.to(t.dtype))
    return t


class GeneModule(nn.Module):
    """Shared per-gene network: C class counts -> H hidden (activation) -> 1 gene neuron.

    The same weights serve every gene. Input (B, C, G) -> output (B, G). Computed as one
    broadcast GEMM (H, C) @ (B, C, G) -> (B, H, G), so no per-gene loop and no transpose of the
    input. Parameters: C*H + H weights and H + 1 biases.
    """

    def __init__(self, n_classes: int, hidden: int = 50, act: str = "tanh", *, gen: torch.Generator):
        super().__init__()
        self.n_classes, self.hidden = int(n_classes), int(hidden)
        self.act_name = act
        self.act = activation(act)
        self.w1 = nn.Parameter(torch.empty(hidden, n_classes))
        self.b1 = nn.Parameter(torch.empty(hidden))
        self.w2 = nn.Parameter(torch.empty(hidden))
        self.b2 = nn.Parameter(torch.empty(1))
        b_in, b_hid = 1 / math.sqrt(n_classes), 1 / math.sqrt(hidden)
        uniform_(self.w1, b_in, gen)
        uniform_(self.b1, b_in, gen)
        uniform_(self.w2, b_hid, gen)
        uniform_(self.b2, b_hid, gen)

    def _fused_ok(self, x: torch.Tensor) -> bool:
        """On a CUDA device with Triton, and no gradient asked of the input (attributions ask
        for one; the fused kernel gives gradients to the weights only): the fused gene layer of
        models/genes/fused.py, which never writes the (rows x H) hidden layer to memory (the
        same function to float32 rounding). Opt-in ($EPIFLOW_FUSED_GENE=1) until it has been
        timed and tested on a GPU for single nets (the kernel itself is the ensemble's, tested)."""
        if not x.is_cuda or x.requires_grad or os.environ.get("EPIFLOW_FUSED_GENE", "0") != "1":
            return False
        from models.genes import fused

        return fused.available(x.device)

    def _fused_values(self, z: torch.Tensor) -> torch.Tensor:
        """(U,) gene-module outputs for rows z (U, C) through the fused kernel."""
        from models.genes import fused

        return fused.gene_values_t(z, self.w1[None], self.b1[None], self.w2[None], self.b2,
                                   act=self.act_name)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense input (B, C, G) -> (B, G)."""
        if self._fused_ok(x):
            B, C, G = x.shape
            z = x.permute(0, 2, 1).reshape(B * G, C)                        # row b*G + g
            return self._fused_values(z).view(B, G)
        h = self.act(torch.matmul(self.w1, x) + self.b1[:, None])   # (B, H, G)
        return torch.matmul(self.w2, h) + self.b2                    # (B, G)

    def forward_combos(self, batch: ComboBatch) -> torch.Tensor:
        """Combination input -> (B, G): one evaluation per distinct (gene, count vector)."""
        if self._fused_ok(batch.z):
            vals = self._fused_values(batch.z)                                  # (U,)
        else:
            h = self.act(torch.addmm(self.b1, batch.z, self.w1.t()))            # (U, H)
            vals = torch.mv(h, self.w2) + self.b2                               # (U,)
        if vals.is_cuda:
            b, g = batch.ids.shape
            return gather_cols(vals.view(1, -1), batch.ids.reshape(-1)).view(b, g)
        return vals[batch.ids]

    def forward_pairs(self, batch: GeneBatch) -> torch.Tensor:
        """Pair input -> (B, G): baseline per gene from z0, overwritten at the variant pairs."""
        if self._fused_ok(batch.z):
            base = self._fused_values(batch.z0.t().contiguous())                # (G,)
            vals = self._fused_values(batch.z)
            out = base.unsqueeze(0).repeat(batch.n_rows, 1)
            return out.index_put_((batch.rows, batch.genes), vals)
        base = torch.matmul(self.w2, self.act(torch.matmul(self.w1, batch.z0) + self.b1[:, None]))
        base = base + self.b2                                                  # (G,)
        vals = torch.mv(self.act(torch.addmm(self.b1, batch.z, self.w1.t())), self.w2) + self.b2
        out = base.unsqueeze(0).repeat(batch.n_rows, 1)
        return out.index_put_((batch.rows, batch.genes), vals)


class SparseLinear(nn.Module):
    """y[:, d] = b[d] + sum_{e: dst_e = d} w_e * x[:, src_e], from an edge list (no dense matrix).

    Forward is a gather (index_select) then a scatter-add (index_add), both O(B * E).
    Weights are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per destination neuron; biases likewise.
    An optional ``mask`` (bool per edge) switches edges off without changing shapes (RigL, L1
    pruning reuse the same layer).
    """

    def __init__(self, topo: Topology, *, gen: torch.Generator, bias: bool = True):
        super().__init__()
        self.n_in, self.n_out = int(topo.n_src), int(topo.n_dst)
        self.register_buffer("src", torch.as_tensor(topo.src, dtype=torch.long))
        self.register_buffer("dst", torch.as_tensor(topo.dst, dtype=torch.long))
        self.weight = nn.Parameter(torch.empty(topo.n_edges))
        self.bias = nn.Parameter(torch.empty(self.n_out)) if bias else None
        fan_in = np.bincount(topo.dst, minlength=self.n_out).astype(np.float64)
        bound = 1.0 / np.sqrt(np.maximum(fan_in, 1.0))
        with torch.no_grad():
            u = torch.rand(topo.n_edges, generator=gen, dtype=torch.float64) * 2 - 1
            self.weight.copy_((u * torch.as_tensor(bound[topo.dst])).float())
            if self.bias is not None:
                u = torch.rand(self.n_out, generator=gen, dtype=torch.float64) * 2 - 1
                self.bias.copy_((u * torch.as_tensor(bound)).float())

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        contrib = x.index_select(1, self.src) * self.weight            # (B, E)
        out = x.new_zeros(x.shape[0], self.n_out).index_add_(1, self.dst, contrib)
        return out + self.bias if self.bias is not None else out


class DenseLinear(nn.Module):
    """Fully connected layer with the same init rule as SparseLinear (U(+-1/sqrt(fan_in)))."""

    def __init__(self, n_in: int, n_out: int, *, gen: torch.Generator):
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out))
        bound = 1 / math.sqrt(max(n_in, 1))
        uniform_(self.weight, bound, gen)
        uniform_(self.bias, bound, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight.t())
