"""Small, fast synthetic gene x class count cohorts with planted signals (tests, benchmarks).

The full embedded cohort (VCF, annotation, truth file) is models/simulate/cohort.py; this module
produces the encoder's output format directly: a CSR (n, C*G) matrix of integer counts with
column ``c*G + g``, for unit tests of the models and for speed benchmarks at scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class SyntheticCohort:
    X: sp.csr_matrix               # (n, C*G) counts
    y: np.ndarray                  # (n,) 0/1
    n_classes: int
    gene_pathways: list            # length G, lists of pathway indices
    causal_genes: np.ndarray       # genes with planted effects
    liability: np.ndarray          # (n,) the noiseless score before the threshold


def random_counts(n: int, n_genes: int, n_classes: int, *, rate: float = 0.02,
                  rng: np.random.Generator, geometric_p: float | None = None) -> sp.csr_matrix:
    """Sparse counts: each (sample, class, gene) cell is nonzero with prob. ~``rate`` (gene-
    specific rates drawn around it, heavier in a few classes). Nonzero values are 1 or 2
    (2 with prob. 0.1), or geometric(``geometric_p``) when given (long tail, like intronic
    counts of long genes). Never densifies: O(nnz) memory."""
    f = n_classes * n_genes
    gene_rate = rng.gamma(2.0, rate / 2.0, size=n_genes)
    class_w = rng.dirichlet(np.full(n_classes, 0.7)) * n_classes
    cell_rate = np.clip(np.outer(class_w, gene_rate).ravel(), 0, 0.5)   # (C*G,)
    nnz = rng.binomial(f, min(1.0, cell_rate.mean()), size=n)
    rows = np.repeat(np.arange(n), nnz)
    cols = rng.choice(f, size=int(nnz.sum()), p=cell_rate / cell_rate.sum())
    if geometric_p is None:
        vals = 1 + rng.binomial(1, 0.1, size=cols.size)
    else:
        vals = rng.geometric(geometric_p, size=cols.size)
    X = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, f))
    X.sum_duplicates()
    return X


def planted_burden(n: int = 1000, n_genes: int = 200, n_classes: int = 16, *, n_causal: int = 10,
                   effect: float = 1.0, case_fraction: float = 0.87, rate: float = 0.02,
                   n_pathways: int = 20, n_damaging: int | None = None,
                   seed: int = 0) -> SyntheticCohort:
    """Additive gene-burden liability: sum over causal genes of effect * (variant count in the
    gene's damaging classes), plus logistic noise; top ``case_fraction`` of liability are cases."""
    rng = np.random.default_rng(seed)
    X = random_counts(n, n_genes, n_classes, rate=rate, rng=rng)
    causal = rng.choice(n_genes, size=n_causal, replace=False)
    k = max(1, n_classes // 4) if n_damaging is None else int(n_damaging)
    damaging = rng.choice(n_classes, size=k, replace=False)
    # burden of each causal gene over its damaging classes, read from the sparse columns
    cols = (damaging[:, None] * n_genes + causal[None, :]).ravel()     # (k * n_causal,)
    block = X[:, cols].toarray().reshape(n, k, n_causal)
    burden = block.sum(axis=1)                                         # (n, n_causal)
    signs = rng.choice([-1.0, 1.0], size=n_causal)
    liab = burden @ (effect * signs)
    score = liab + rng.logistic(size=n) * 0.5
    y = (score > np.quantile(score, 1 - case_fraction)).astype(np.int64)
    gp = random_pathways(n_genes, n_pathways, rng=rng)
    return SyntheticCohort(X, y, n_classes, gp, np.sort(causal), liab)


def random_pathways(n_genes: int, n_pathways: int, *, member_fraction: float = 1 / 3,
                    rng: np.random.Generator) -> list:
    """Each gene in a pathway with prob ``member_fraction`` (1-3 pathways each), else none."""
    out = []
    for _ in range(n_genes):
        if rng.random() < member_fraction and n_pathways:
            k = int(rng.integers(1, min(3, n_pathways) + 1))
            out.append(sorted(int(v) for v in rng.choice(n_pathways, size=k, replace=False)))
        else:
            out.append([])
    return out


def xor_pair(n: int = 1000, n_classes: int = 4, *, noise: float = 0.0, seed: int = 0
             ) -> SyntheticCohort:
    """Two genes, balanced carriers (p = 1/2 each, class 0): case iff exactly one gene carries a
    variant (reciprocal-sign epistasis). ``noise`` flips that fraction of labels. Every gene is
    on pathway 0, so a one-pathway net sees both genes through one neuron."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, size=n)
    b = rng.integers(0, 2, size=n)
    y = (a ^ b).astype(np.int64)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    dense = np.zeros((n, n_classes * 2), np.float32)
    dense[:, 0] = a
    dense[:, 1] = b
    return SyntheticCohort(sp.csr_matrix(dense), y, n_classes, [[0], [0]], np.array([0, 1]),
                           (a ^ b).astype(float))
