"""Sparse connectivity between gene neurons and the next layer, as edge lists.

A topology is a pair of integer arrays ``(src, dst)`` (one entry per edge) plus the number of
destination neurons. Nothing here builds a dense genes x pathways matrix, so a 23k-gene x
300-pathway graph costs a few hundred kilobytes.

Destination neurons are compacted: only neurons that receive at least one edge exist, numbered
0..n_dst-1 in order of their original pathway index, with the dummy neuron (genes that belong to
no pathway) last. ``Topology.neuron_ids`` maps them back (-1 = dummy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

DUMMY = -1


@dataclass(frozen=True)
class Topology:
    src: np.ndarray          # (E,) int64 source neuron (gene index)
    dst: np.ndarray          # (E,) int64 destination neuron (compacted)
    n_src: int
    n_dst: int
    neuron_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def n_edges(self) -> int:
        return int(self.src.size)


def _check_gene_pathways(gene_pathways: Sequence[Sequence[int]], n_genes: int) -> None:
    if gene_pathways is None:
        raise ValueError("this model needs gene_pathways (a list of pathway-index lists, one per gene)")
    if len(gene_pathways) != n_genes:
        raise ValueError(f"gene_pathways has {len(gene_pathways)} entries but the input has {n_genes} genes")


def _compact(src: np.ndarray, raw_dst: np.ndarray, n_src: int) -> Topology:
    """Renumber raw destinations (pathway ids, DUMMY last) to 0..n_dst-1."""
    key = np.where(raw_dst == DUMMY, np.iinfo(np.int64).max, raw_dst)
    uniq, dst = np.unique(key, return_inverse=True)
    ids = np.where(uniq == np.iinfo(np.int64).max, DUMMY, uniq)
    order = np.lexsort((src, dst))
    return Topology(src=src[order].astype(np.int64), dst=dst[order].astype(np.int64),
                    n_src=n_src, n_dst=int(uniq.size), neuron_ids=ids.astype(np.int64))


def _kept_genes(n_genes: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the genes that stay connected (a random fraction ``sparsity``)."""
    if not 0.0 < sparsity <= 1.0:
        raise ValueError(f"sparsity must be in (0, 1], got {sparsity}")
    keep = np.ones(n_genes, bool)
    if sparsity < 1.0:
        n_keep = max(1, int(round(sparsity * n_genes)))
        keep[:] = False
        keep[rng.choice(n_genes, size=n_keep, replace=False)] = True
    return keep


def one_pathway(gene_pathways: Sequence[Sequence[int]], *, seed: int = 0,
                sparsity: float = 1.0) -> Topology:
    """Each gene to exactly one pathway neuron drawn uniformly from its own pathways.

    Genes without a pathway go to a single dummy neuron. With ``sparsity`` < 1 only that random
    fraction of genes keeps its edge (the sparsity-degree sweep).
    """
    n = len(gene_pathways)
    rng = np.random.default_rng(seed)
    counts = np.fromiter((len(p) for p in gene_pathways), np.int64, n)
    # one uniform draw per gene, turned into an index into its own list: vectorised pick
    u = rng.random(n)
    pick = np.minimum((u * counts).astype(np.int64), np.maximum(counts - 1, 0))
    flat = np.fromiter((q for p in gene_pathways for q in p), np.int64, int(counts.sum()))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    raw = np.full(n, DUMMY, np.int64)
    has = counts > 0
    raw[has] = flat[starts[has] + pick[has]]
    keep = _kept_genes(n, sparsity, rng)
    src = np.arange(n, dtype=np.int64)[keep]
    return _compact(src, raw[keep], n)


def all_pathways(gene_pathways: Sequence[Sequence[int]], *, seed: int = 0,
                 sparsity: float = 1.0) -> Topology:
    """Every gene-pathway membership is an edge; genes without a pathway go to the dummy neuron."""
    n = len(gene_pathways)
    rng = np.random.default_rng(seed)
    counts = np.fromiter((max(len(p), 1) for p in gene_pathways), np.int64, n)
    src = np.repeat(np.arange(n, dtype=np.int64), counts)
    raw = np.fromiter((q for p in gene_pathways for q in (p if len(p) else (DUMMY,))), np.int64,
                      int(counts.sum()))
    keep = _kept_genes(n, sparsity, rng)[src]
    return _compact(src[keep], raw[keep], n)


def random_like(reference: Topology, *, seed: int = 0) -> Topology:
    """Random graph with the same number of edges and destination neurons as ``reference``.

    Sources are drawn from the genes connected in ``reference`` when every gene has one edge;
    in general (src, dst) pairs are drawn without replacement from all n_src x n_dst pairs.
    Every destination neuron gets at least one edge when there are enough edges.
    """
    rng = np.random.default_rng(seed)
    n_src, n_dst, e = reference.n_src, reference.n_dst, reference.n_edges
    if e > n_src * n_dst:
        raise ValueError("more edges than possible pairs")
    # sample distinct flat pair ids without materialising n_src * n_dst (rejection on collisions)
    chosen = np.empty(0, np.int64)
    while chosen.size < e:
        extra = rng.integers(0, n_src * n_dst, size=2 * (e - chosen.size) + 16, dtype=np.int64)
        chosen = np.unique(np.concatenate([chosen, extra]))
    chosen = rng.permutation(chosen)[:e]
    src, dst = chosen // n_dst, chosen % n_dst
    # make sure each destination neuron has an input (swap in missing ones on random edges)
    missing = np.setdiff1d(np.arange(n_dst), dst)
    if missing.size and e >= n_dst:
        counts = np.bincount(dst, minlength=n_dst)
        donors = np.flatnonzero(counts[dst] > 1)
        take = rng.choice(donors, size=missing.size, replace=False)
        dst[take] = missing
    order = np.lexsort((src, dst))
    return Topology(src=src[order], dst=dst[order], n_src=n_src, n_dst=n_dst,
                    neuron_ids=np.arange(n_dst, dtype=np.int64))


def gene_gene(n_genes: int, edges: np.ndarray | Sequence[Sequence[int]] | None) -> Topology:
    """Gene -> gene layer: every gene keeps itself plus its interaction partners (both directions)."""
    e = np.asarray(edges if edges is not None else np.empty((0, 2)), np.int64).reshape(-1, 2)
    if e.size and (e.min() < 0 or e.max() >= n_genes):
        raise ValueError(f"gene-gene edge index out of range [0, {n_genes})")
    e = e[e[:, 0] != e[:, 1]]
    self_loops = np.arange(n_genes, dtype=np.int64)
    src = np.concatenate([self_loops, e[:, 0], e[:, 1]])
    dst = np.concatenate([self_loops, e[:, 1], e[:, 0]])
    pair = np.unique(src * n_genes + dst)
    src, dst = pair // n_genes, pair % n_genes
    order = np.lexsort((src, dst))
    return Topology(src=src[order], dst=dst[order], n_src=n_genes, n_dst=n_genes,
                    neuron_ids=np.arange(n_genes, dtype=np.int64))
