"""From sparse (samples x C*G) count matrices to standardised network inputs.

Statistics come from the training fold only. Two batch representations feed the same nets:

- dense: a (B, C*G) float32 tensor of standardised values;
- pairs (:class:`GeneBatch`): rare-variant cohorts leave most (sample, gene) pairs with no
  variant at all, and after standardisation every such pair of gene ``g`` holds the same
  vector ``z0[:, g] = -mean / sd``. A GeneBatch carries ``z0`` once plus only the (sample, gene)
  pairs with at least one variant, so the gene module evaluates G + P class vectors instead of
  B * G (P = pairs with a variant in the batch). Exactly equal to the dense path.

The cohort is never densified as a whole: pairs are O(nnz); the dense path densifies a batch at a
time, or the training fold once when it fits ``cache_bytes``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def as_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        return X.tocsr()
    return sp.csr_matrix(np.asarray(X))


class Standardiser:
    """Per-column mean and sd of a sparse matrix (float64 sums, no densifying); sd 0 -> 1."""

    def __init__(self, X: sp.csr_matrix):
        X = as_csr(X)
        n = X.shape[0]
        if n == 0:
            raise ValueError("cannot standardise an empty training fold")
        s1 = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
        sq = X.copy()
        sq.data = sq.data.astype(np.float64) ** 2
        s2 = np.asarray(sq.sum(axis=0)).ravel()
        self.mean = s1 / n
        var = np.maximum(s2 / n - self.mean ** 2, 0.0)
        sd = np.sqrt(var)
        sd[sd < 1e-12] = 1.0
        self.sd = sd

    def transform_dense(self, Xd: np.ndarray) -> np.ndarray:
        return ((Xd - self.mean) / self.sd).astype(np.float32, copy=False)


class GeneBatch:
    """A batch in pair form: B rows; baseline z0 (C, G); pairs (row, gene, z (P, C))."""

    __slots__ = ("n_rows", "z0", "rows", "genes", "z")

    def __init__(self, n_rows: int, z0: torch.Tensor, rows: torch.Tensor, genes: torch.Tensor,
                 z: torch.Tensor):
        self.n_rows, self.z0, self.rows, self.genes, self.z = int(n_rows), z0, rows, genes, z

    def dense(self) -> torch.Tensor:
        """The equivalent (B, C*G) standardised dense tensor (tests, small inputs)."""
        C, G = self.z0.shape
        out = self.z0.unsqueeze(0).repeat(self.n_rows, 1, 1)          # (B, C, G)
        out[self.rows, :, self.genes] = self.z
        return out.reshape(self.n_rows, C * G)


class PairSource:
    """Standardised (sample, gene) pairs of a CSR count matrix, on ``device``, by row index."""

    mode = "pairs"

    def __init__(self, X, stats: Standardiser, n_classes: int, device: torch.device):
        X = as_csr(X)
        n, f = X.shape
        C = int(n_classes)
        G = f // C
        self.n, self.n_classes, self.n_genes, self.device = n, C, G, device
        coo = X.tocoo()
        cls, gene = coo.col // G, coo.col % G
        key = coo.row.astype(np.int64) * G + gene
        uniq, inv = np.unique(key, return_inverse=True)
        counts = np.zeros((uniq.size, C), np.float64)
        counts[inv, cls] = coo.data
        p_row, p_gene = uniq // G, uniq % G
        mean = stats.mean.reshape(C, G)
        sd = stats.sd.reshape(C, G)
        z = (counts - mean[:, p_gene].T) / sd[:, p_gene].T
        self.pair_density = uniq.size / max(n * G, 1)
        self.z0 = torch.as_tensor(-mean / sd, dtype=torch.float32, device=device)
        self.z = torch.as_tensor(z, dtype=torch.float32, device=device)
        self.genes = torch.as_tensor(p_gene, dtype=torch.long, device=device)
        self.indptr = torch.as_tensor(np.searchsorted(p_row, np.arange(n + 1)), dtype=torch.long,
                                      device=device)

    def __call__(self, idx) -> GeneBatch:
        idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx,
                              dtype=torch.long, device=self.device)
        starts = self.indptr[idx]
        lens = self.indptr[idx + 1] - starts
        b = idx.numel()
        rows = torch.repeat_interleave(torch.arange(b, device=self.device), lens)
        offs = torch.cumsum(lens, 0) - lens
        pid = torch.arange(rows.numel(), device=self.device) - offs[rows] + starts[rows]
        return GeneBatch(b, self.z0, rows, self.genes[pid], self.z[pid])


class BatchSource:
    """Standardised dense rows (B, C*G) of a CSR matrix, on ``device``, by index array.

    Uses a cached dense copy when ``n * F * 4 <= cache_bytes``; otherwise densifies per call.
    """

    mode = "dense"

    def __init__(self, X, stats: Standardiser, device: torch.device, cache_bytes: int = 1 << 30):
        self.X = as_csr(X)
        self.device = device
        self.mean = torch.as_tensor(stats.mean, dtype=torch.float32, device=device)
        self.inv_sd = torch.as_tensor(1.0 / stats.sd, dtype=torch.float32, device=device)
        n, f = self.X.shape
        self.n = n
        self.cache = None
        if n * f * 4 <= cache_bytes:
            self.cache = self._densify(np.arange(n))

    def _densify(self, idx: np.ndarray) -> torch.Tensor:
        rows = self.X[idx].toarray().astype(np.float32, copy=False)
        t = torch.from_numpy(rows).to(self.device)
        return (t - self.mean).mul_(self.inv_sd)

    def __call__(self, idx) -> torch.Tensor:
        if self.cache is not None:
            if not isinstance(idx, torch.Tensor):
                idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
            return self.cache.index_select(0, idx.to(self.cache.device))
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return self._densify(np.asarray(idx))


def make_source(X, stats: Standardiser, n_classes: int, device: torch.device, *,
                mode: str = "auto", cache_bytes: int = 1 << 30, max_pair_density: float = 0.35):
    """A PairSource or BatchSource. ``auto`` picks pairs when few (sample, gene) pairs carry a
    variant (below ``max_pair_density``), which is the rare-variant case, else dense."""
    if mode not in ("auto", "pairs", "dense"):
        raise ValueError(f"unknown input mode '{mode}'; valid: auto, pairs, dense")
    if mode == "dense":
        return BatchSource(X, stats, device, cache_bytes)
    src = PairSource(X, stats, n_classes, device)
    if mode == "auto" and src.pair_density > max_pair_density:
        return BatchSource(X, stats, device, cache_bytes)
    return src


class ShuffledBatches:
    """Epoch iterable of (x, y) batches; a fresh permutation per epoch from a seeded generator.

    A plain iterable with ``__len__`` is all Lightning needs; this avoids DataLoader collation
    overhead. Reproducible: the permutation sequence depends only on ``seed``.
    """

    def __init__(self, source, y: np.ndarray, batch_size: int, seed: int):
        self.source = source
        self.y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=source.device)
        self.batch_size = int(batch_size)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.n = source.n

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.gen)
        for i in range(0, self.n, self.batch_size):
            idx = perm[i:i + self.batch_size]
            yield self.source(idx), self.y[idx.to(self.y.device)]
