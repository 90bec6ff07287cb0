"""Recovery of planted SNP pairs by a ranked list of found pairs, at the locus level.

A found pair (i, j) recovers a planted pair (a, b) when i is within ``window`` SNP columns of a and
j within ``window`` of b, or crosswise (see :func:`models.simulate.pheno.pair_hits`). These
metrics score a scan or an NGG run against the truth of a simulated phenotype
(:func:`models.simulate.pheno.simulate_phenotype`); benchmarks/bench_ngg.py and the NGG
hyperparameter study (pipelines/tune_ngg.py) share them.
"""
from __future__ import annotations

import numpy as np

from models.simulate.pheno import clump_pairs, pair_hits

__all__ = ["recall_metrics", "first_hit_ranks", "found_pairs"]


def found_pairs(top_pairs: dict) -> np.ndarray:
    """The (k, 2) pairs, best first, of an NGG result's ``top_pairs`` (or a scan's top table)."""
    return np.column_stack([np.asarray(top_pairs["i"], dtype=np.int64),
                            np.asarray(top_pairs["j"], dtype=np.int64)]).reshape(-1, 2)


def first_hit_ranks(found, planted, window: int) -> list:
    """For each planted pair, the 1-based rank of the first found pair that hits it (None: none)."""
    found = np.asarray(found, dtype=np.int64).reshape(-1, 2)
    ranks = []
    for a, b in np.asarray(planted, dtype=np.int64).reshape(-1, 2):
        m = ((np.abs(found[:, 0] - a) <= window) & (np.abs(found[:, 1] - b) <= window)) | (
            (np.abs(found[:, 0] - b) <= window) & (np.abs(found[:, 1] - a) <= window))
        ranks.append(int(np.argmax(m)) + 1 if m.any() else None)
    return ranks


def recall_metrics(found, planted, window, ks=(10, 50, 100), min_sep=None, chrom=None):
    """recall@K at the locus level, first-hit rank per planted pair; the same after greedy locus
    clumping (K distinct locus pairs; LD copies of one hit count once) and for distal pairs only
    (found pairs on different chromosomes or >= min_sep SNP columns apart: pairs inside one LD
    block pick up dominance and additive signal and are usually filtered in epistasis scans).

    Also ``mrr``: the mean over planted pairs of 1 / first-hit rank (0 when never hit), a finer
    grained recovery score than recall@K for small numbers of planted pairs.
    """
    out = {}
    found = np.asarray(found, dtype=np.int64).reshape(-1, 2)
    for k in ks:
        out[f"recall@{k}"] = float(pair_hits(found, planted, window=window, top=k).mean())
    clumped = found[clump_pairs(found, window=window, chrom=chrom)]
    for k in ks:
        out[f"clumped_recall@{k}"] = float(pair_hits(clumped, planted, window=window, top=k).mean())
    if min_sep is not None:
        far = np.abs(found[:, 1] - found[:, 0]) >= min_sep
        if chrom is not None:
            c = np.asarray(chrom)
            far |= c[found[:, 0]] != c[found[:, 1]]
        dist = found[far]
        for k in ks:
            out[f"distal_recall@{k}"] = float(pair_hits(dist, planted, window=window, top=k).mean())
    ranks = first_hit_ranks(found, planted, window)
    out["first_hit_rank"] = ranks
    out["mrr"] = float(np.mean([1.0 / r if r else 0.0 for r in ranks])) if ranks else float("nan")
    return out
