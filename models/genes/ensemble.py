"""An ensemble of N randomly sparsified gene networks trained as ONE batched model.

Member i is a ``biosparse``-style net (own gene module, own gene -> neuron graph, own output)
built exactly like ``GeneNet('biosparse', init_seed=s_i, topo=t_i)``; the ensemble stacks their
parameters into single tensors:

- gene module: the N first layers side by side, one GEMM (U, C) @ (C, N*H) per step;
- sparse layer: the N edge lists concatenated with member offsets, one gather + one
  scatter-add over (B, N*G) -> (B, sum of neuron counts);
- output: per-neuron weights scatter-added into (B, N) logits.

Members are independent, so the sum of their losses gives each member exactly the gradient it
would get alone, and Adam/weight decay act elementwise: one optimiser step updates all members
as N separate runs would (same batches, same seeds), up to float summation order.
``member_chunk`` bounds memory by running the forward/backward in member chunks before the one
optimiser step (identical result).

On a CUDA device (Triton available) the gene layer of all members is one fused kernel
(models/genes/fused.py) over the rows of the batch (distinct combinations, variant pairs, or
B*G dense gene vectors): the (rows x N*H) hidden layer never reaches device memory; the gene
values come out as (member, gene) rows with the batch along each row, and the sparse layer runs
on that transposed layout (whole-row gathers and scatter-adds). With combination input (and no
dropout active) the sparse layer is a second Triton kernel (``fused.sparse_pre``) that reads each
sample's combination ids and gathers the member's combination values straight into the pathway
neurons, so not even the (N*G, B) gene values are formed. On a CPU the tensor-op path below is
used (same arithmetic).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch import nn

from models.genes import fused
from models.genes.data import ComboBatch, GeneBatch
from models.genes.layers import activation, gather_cols, permute_rows
from models.genes.nets import GeneNet


class BatchedEnsemble(nn.Module):
    def __init__(self, members: Sequence[GeneNet], *, dropout: float = 0.0,
                 member_chunk: int | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        m0 = members[0]
        for m in members:
            if m.model_type not in ("biosparse", "linear") or m.gg is not None:
                raise ValueError("ensemble members must be one-sparse-layer nets (biosparse/linear)")
            if (m.n_classes, m.n_genes, m.gene.hidden) != (m0.n_classes, m0.n_genes, m0.gene.hidden):
                raise ValueError("ensemble members must share classes, genes and hidden size")
        self.n_members = N = len(members)
        self.n_classes, self.n_genes, self.hidden = m0.n_classes, m0.n_genes, m0.gene.hidden
        self.gene_act_name = m0.gene.act_name
        self.gene_act = activation(m0.gene.act_name)
        self.use_fused = True      # the Triton gene layer where the device allows it
        # and the Triton sparse layer on combination input ($EPIFLOW_FUSED_SPARSE=0: off)
        self.use_fused_sparse = os.environ.get("EPIFLOW_FUSED_SPARSE", "1") != "0"
        self._fused_ok = {}
        self.act = m0.act
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.member_chunk = int(member_chunk or N)
        G = self.n_genes
        cat = lambda f: torch.stack([f(m).detach().clone() for m in members])  # noqa: E731
        self.w1 = nn.Parameter(cat(lambda m: m.gene.w1))               # (N, H, C)
        self.b1 = nn.Parameter(cat(lambda m: m.gene.b1))               # (N, H)
        self.w2 = nn.Parameter(cat(lambda m: m.gene.w2))               # (N, H)
        self.b2 = nn.Parameter(cat(lambda m: m.gene.b2).view(N))       # (N,)
        edges = [m.path.n_edges for m in members]
        neurons = [m.path.n_out for m in members]
        # offsets as Python ints: slicing per member chunk never waits on the device
        self.edge_ptr = [0] + np.cumsum(edges).tolist()
        self.neuron_ptr = [0] + np.cumsum(neurons).tolist()
        src = [m.path.src + i * G for i, m in enumerate(members)]
        dst = [m.path.dst + self.neuron_ptr[i] for i, m in enumerate(members)]
        self.register_buffer("src", torch.cat(src))
        self.register_buffer("dst", torch.cat(dst))
        # every member with one edge per gene (biosparse at full sparsity): the gather of the
        # sparse layer is a permutation of the (member, gene) rows, whose backward is a gather
        self.src_is_perm = bool(all(e == G for e in edges) and all(
            np.array_equal(np.sort(m.path.src.cpu().numpy()), np.arange(G)) for m in members))
        if self.src_is_perm:
            cat_src = torch.cat(src)
            inv = torch.empty_like(cat_src)
            inv[cat_src] = torch.arange(cat_src.numel())
            self.register_buffer("src_inv", inv)
        # the fused sparse layer (combination input on CUDA): runs of edges into one neuron
        dst_np = self.dst.numpy()
        made = fused.sparse_work_items(dst_np, self.edge_ptr)
        self.fused_sparse = made is not None
        if made is not None:
            items, self.item_ptr = made
            for name, a in zip(("item_member", "item_e0", "item_e1", "item_neuron"), items):
                self.register_buffer(name, torch.as_tensor(a))
            edge_member = np.repeat(np.arange(N), edges)
            self.register_buffer("edge_gene", torch.as_tensor(
                (self.src.numpy() - edge_member * G).astype(np.int32)))
        self.register_buffer("neuron_member", torch.repeat_interleave(
            torch.arange(N), torch.as_tensor(neurons)))
        self.edge_w = nn.Parameter(torch.cat([m.path.weight.detach().clone() for m in members]))
        self.neuron_b = nn.Parameter(torch.cat([m.path.bias.detach().clone() for m in members]))
        self.out_w = nn.Parameter(torch.cat([m.out.weight.detach().view(-1).clone() for m in members]))
        self.out_b = nn.Parameter(torch.cat([m.out.bias.detach().clone() for m in members]))

    # ------------------------------------------------------------------ pieces per member range
    def _fused_on(self, device: torch.device) -> bool:
        if not self.use_fused or device.type != "cuda":
            return False
        if device not in self._fused_ok:
            self._fused_ok[device] = fused.available(device)
        return self._fused_ok[device]

    def _values_t(self, z: torch.Tensor, m0: int, m1: int) -> torch.Tensor:
        """(m1 - m0, U) fused gene-module outputs of members m0..m1-1 for rows z (U, C)."""
        return fused.gene_values_t(z, self.w1[m0:m1], self.b1[m0:m1], self.w2[m0:m1],
                                   self.b2[m0:m1], act=self.gene_act_name)

    def gene_rows(self, x, m0: int = 0, m1: int | None = None) -> torch.Tensor:
        """(n*G, B) gene neurons of members m0..m1-1 through the fused kernel, one row per
        (member, gene) -- row i*G + g, the numbering of ``src`` -- and the batch along the row,
        so the sparse layer gathers and scatters whole rows (coalesced, no atomics on one
        address from a warp)."""
        m1 = self.n_members if m1 is None else m1
        n, C, G = m1 - m0, self.n_classes, self.n_genes
        if isinstance(x, ComboBatch):
            vt = self._values_t(x.z, m0, m1)                                  # (n, U)
            B = x.ids.shape[0]
            return gather_cols(vt, x.ids.t().reshape(-1)).view(n * G, B)
        if isinstance(x, GeneBatch):
            B = x.n_rows
            base = self._values_t(x.z0.t(), m0, m1)                           # (n, G)
            vals = self._values_t(x.z, m0, m1)                                # (n, P)
            out = base.unsqueeze(2).expand(n, G, B).reshape(n, G * B)
            return out.index_copy(1, x.genes * B + x.rows, vals).view(n * G, B)
        B = x.shape[0]
        z = x.view(B, C, G).permute(2, 0, 1).reshape(G * B, C)              # row g*B + b
        return self._values_t(z, m0, m1).view(n * G, B)

    def gene_activations(self, x, m0: int = 0, m1: int | None = None) -> torch.Tensor:
        """(B, n, G) gene neurons of members m0..m1-1."""
        m1 = self.n_members if m1 is None else m1
        if self._fused_on(self.w1.device):
            n, G = m1 - m0, self.n_genes
            return self.gene_rows(x, m0, m1).view(n, G, -1).permute(2, 0, 1)
        n, H, C, G = m1 - m0, self.hidden, self.n_classes, self.n_genes
        w1 = self.w1[m0:m1].reshape(n * H, C)
        b1 = self.b1[m0:m1].reshape(n * H)
        w2, b2 = self.w2[m0:m1], self.b2[m0:m1]
        if isinstance(x, ComboBatch):
            h = self.gene_act(torch.addmm(b1, x.z, w1.t())).view(-1, n, H)   # (U, n, H)
            vals = (h * w2).sum(-1) + b2                                      # (U, n)
            return vals[x.ids].permute(0, 2, 1)                               # (B, n, G)
        if isinstance(x, GeneBatch):
            base = self.gene_act(torch.addmm(b1[:, None], w1, x.z0)).view(n, H, G)
            base = torch.einsum("nhg,nh->ng", base, w2) + b2[:, None]          # (n, G)
            h = self.gene_act(torch.addmm(b1, x.z, w1.t())).view(-1, n, H)
            vals = (h * w2).sum(-1) + b2                                      # (P, n)
            out = base.unsqueeze(0).repeat(x.n_rows, 1, 1)
            return self._put_pairs(out, x.rows, x.genes, vals)
        xb = x.view(x.shape[0], C, G)
        if not xb.is_cuda:
            # dense input on a CPU: (B, n*H, G) tensors overflow the caches; member by member
            # is ~4x faster there (measured), and the same arithmetic
            outs = [torch.matmul(w2[i], self.gene_act(torch.matmul(w1[i * H:(i + 1) * H], xb)
                                                      + b1[i * H:(i + 1) * H, None])) + b2[i]
                    for i in range(n)]
            return torch.stack(outs, dim=1)
        h = self.gene_act(torch.matmul(w1, xb) + b1[:, None]).view(x.shape[0], n, H, G)
        return torch.matmul(w2.unsqueeze(1), h).squeeze(2) + b2[:, None]

    @staticmethod
    def _put_pairs(out, rows, genes, vals):
        B, n, G = out.shape
        flat = out.permute(0, 2, 1).reshape(B * G, n)                         # (B*G, n)
        flat = flat.index_put((rows * G + genes,), vals)
        return flat.view(B, G, n).permute(0, 2, 1)

    def logits(self, x, m0: int = 0, m1: int | None = None) -> torch.Tensor:
        """(B, n) logits of members m0..m1-1."""
        m1 = self.n_members if m1 is None else m1
        n, G = m1 - m0, self.n_genes
        e0, e1 = self.edge_ptr[m0], self.edge_ptr[m1]
        p0, p1 = self.neuron_ptr[m0], self.neuron_ptr[m1]
        src = self.src[e0:e1] - m0 * G
        dst = self.dst[e0:e1] - p0
        if self._fused_on(self.w1.device):
            # rows = (member, gene), columns = batch: the same layer, transposed
            if (isinstance(x, ComboBatch) and self.fused_sparse and self.use_fused_sparse
                    and (isinstance(self.drop, nn.Identity) or not self.training)):
                # combination values straight into the neurons: no (n*G, B) tensor at all
                vt = self._values_t(x.z, m0, m1)                                  # (n, U)
                i0, i1 = self.item_ptr[m0], self.item_ptr[m1]
                items = (self.item_member[i0:i1], self.item_e0[i0:i1], self.item_e1[i0:i1],
                         self.item_neuron[i0:i1])
                ids_t = x.ids.t().to(torch.int32).contiguous()                    # (G, B)
                pre = fused.sparse_pre(vt, self.edge_w, ids_t, self.edge_gene, items, p1 - p0,
                                       m0, p0)
                return self._head(pre, n, m0, m1, p0, p1)
            at = self.drop(self.gene_rows(x, m0, m1))                            # (n*G, B)
            if self.src_is_perm:
                # edges e0..e1 are the rows m0*G..m1*G in another order (e0 == m0*G)
                at_src = permute_rows(at, src, self.src_inv[e0:e1] - e0)
            else:
                at_src = at.index_select(0, src)
            contrib = at_src * self.edge_w[e0:e1, None]                         # (E, B)
            pre = at.new_zeros(p1 - p0, at.shape[1]).index_add_(0, dst, contrib)
            return self._head(pre, n, m0, m1, p0, p1)
        a = self.drop(self.gene_activations(x, m0, m1)).reshape(-1, n * G)     # (B, n*G)
        contrib = a.index_select(1, src) * self.edge_w[e0:e1]
        pre = a.new_zeros(a.shape[0], p1 - p0).index_add_(1, dst, contrib) + self.neuron_b[p0:p1]
        h = self.drop(self.act(pre)) * self.out_w[p0:p1]
        member = self.neuron_member[p0:p1] - m0
        return a.new_zeros(a.shape[0], n).index_add_(1, member, h) + self.out_b[m0:m1]

    def _head(self, pre, n, m0, m1, p0, p1) -> torch.Tensor:
        """(B, n) logits from the transposed pre-activations (neurons of m0..m1-1, B)."""
        h = self.drop(self.act(pre + self.neuron_b[p0:p1, None])) * self.out_w[p0:p1, None]
        member = self.neuron_member[p0:p1] - m0
        out = pre.new_zeros(n, pre.shape[1]).index_add_(0, member, h) + self.out_b[m0:m1, None]
        return out.t()

    def forward(self, x) -> torch.Tensor:
        return self.logits(x)

    def chunks(self):
        for m0 in range(0, self.n_members, self.member_chunk):
            yield m0, min(self.n_members, m0 + self.member_chunk)
