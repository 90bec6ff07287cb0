"""Learned sparsity for the gene -> neuron layer: RigL rewiring and L1-then-prune.

Both keep the edge count of the pathway graph they replace, so a comparison against
``pathways`` and ``random`` isolates *which* edges matter, not how many.

RigL (Evci et al. 2020): every ``interval`` steps until ``stop`` of training, drop the
``fraction * (1 + cos(pi t / stop)) / 2`` smallest-magnitude edges and grow as many new ones
where the loss gradient of a (gene, neuron) pair is largest in magnitude. New edges start at
zero with fresh Adam moments. The dense gradient ``|a^T delta|`` is formed in gene chunks, so
memory stays O(chunk x neurons), never genes x neurons.

L1 (:func:`prune_dense_to_sparse`): a dense gene -> neuron layer is trained under a heavy L1
penalty, then its ``n_edges`` largest-magnitude weights become the sparse layer (the dense
matrix exists only in that first phase, by definition of the method).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from models.genes import topology as T
from models.genes.layers import SparseLinear


def _chunk_topk(a: torch.Tensor, delta: torch.Tensor, existing: torch.Tensor, n_dst: int, k: int,
                chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (gene, neuron) pairs by |a^T delta| excluding existing edges; chunked over genes.

    a: (B, G) layer input, delta: (B, P) loss gradient at the layer output, existing: sorted
    flat keys gene * P + neuron. Returns (genes, neurons) of the k best new pairs.
    """
    G = a.shape[1]
    best_v = torch.empty(0, device=a.device)
    best_k = torch.empty(0, dtype=torch.long, device=a.device)
    for g0 in range(0, G, chunk):
        g1 = min(G, g0 + chunk)
        score = (a[:, g0:g1].t() @ delta).abs_()                          # (chunk, P)
        lo = torch.searchsorted(existing, torch.tensor(g0 * n_dst, device=a.device))
        hi = torch.searchsorted(existing, torch.tensor(g1 * n_dst, device=a.device))
        ex = existing[lo:hi] - g0 * n_dst
        score.view(-1)[ex] = -1.0
        kk = min(k, score.numel())
        v, i = torch.topk(score.view(-1), kk)
        best_v = torch.cat([best_v, v])
        best_k = torch.cat([best_k, i + g0 * n_dst])
        if best_v.numel() > k:
            v, j = torch.topk(best_v, k)
            best_v, best_k = v, best_k[j]
    keep = best_v >= 0
    best_k = best_k[keep]
    return best_k // n_dst, best_k % n_dst


class RigL:
    """Drop/regrow schedule for one SparseLinear inside a LightningModule's training loop."""

    def __init__(self, layer: SparseLinear, *, total_steps: int, interval: int,
                 fraction: float = 0.3, stop: float = 0.75, chunk: int = 4096):
        self.layer = layer
        self.total_steps = int(total_steps)
        self.interval = max(1, int(interval))
        self.fraction = float(fraction)
        self.stop_step = int(stop * total_steps)
        self.chunk = int(chunk)
        self.step = 0
        self.n_updates = 0
        self.n_rewired = 0

    def drop_count(self) -> int:
        f = self.fraction * (1 + math.cos(math.pi * self.step / max(self.stop_step, 1))) / 2
        return int(f * self.layer.n_edges)

    def __call__(self, lit, batch, loss_fn) -> None:
        """Call after each optimiser step with the step's batch."""
        self.step += 1
        if self.step % self.interval or self.step >= self.stop_step:
            return
        k = self.drop_count()
        if k <= 0:
            return
        net, layer = lit.net, self.layer
        x, y = batch
        with torch.enable_grad():
            a = net.layer_input(x).detach()
            pre = layer(a).detach().requires_grad_(True)
            loss = loss_fn(net.head(pre), y)
            (delta,) = torch.autograd.grad(loss, pre)
        with torch.no_grad():
            P = layer.n_out
            w = layer.weight
            drop = torch.topk(w.abs(), k, largest=False).indices
            keep_mask = torch.ones_like(w, dtype=torch.bool)
            keep_mask[drop] = False
            # pairs that stay, and the dropped ones, are excluded from regrowth
            existing = torch.sort(layer.src * P + layer.dst).values
            new_src, new_dst = _chunk_topk(a, delta, existing, P, k, self.chunk)
            n = new_src.numel()
            if n == 0:
                return
            slots = drop[:n]
            layer.src[slots] = new_src
            layer.dst[slots] = new_dst
            w[slots] = 0.0
            opt = lit.optimizers()
            opt = getattr(opt, "optimizer", opt)
            state = opt.state.get(w, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][slots] = 0.0
        self.n_updates += 1
        self.n_rewired += int(n)


def prune_dense_to_sparse(weight: torch.Tensor, n_edges: int) -> T.Topology:
    """Topology of the ``n_edges`` largest |w| of a dense (neurons, genes) weight matrix."""
    P, G = weight.shape
    flat = weight.detach().abs().reshape(-1)
    idx = torch.topk(flat, min(int(n_edges), flat.numel())).indices.cpu().numpy()
    dst, src = idx // G, idx % G
    order = np.lexsort((src, dst))
    return T.Topology(src=src[order].astype(np.int64), dst=dst[order].astype(np.int64),
                      n_src=G, n_dst=P, neuron_ids=np.arange(P, dtype=np.int64))
