"""Quantitative phenotypes with planted additive SNPs and SNP-pair interactions over given genotypes.

y = g_add + g_int + e, where

* g_add = sum_s beta_s z_s over ``n_snps`` planted SNPs (z = standardised dosage), scaled so that its
  sample variance is exactly ``h2_add``;
* g_int = sum_k gamma_k f(x_a, x_b) over ``n_pairs`` planted pairs, each pair term standardised and
  the sum scaled to sample variance ``h2_int``. The two-locus function f follows the usual
  simulation types (Marchini et al. 2005 and the threshold / reciprocal-sign models):
  'product' (z_a z_b: a pure interaction, no marginal effect when the loci are unlinked),
  'multiplicative' (x_a x_b on raw dosages: interaction plus marginal effects),
  'threshold' (1 when both loci carry at least one minor allele), 'xor' (+1 when exactly one locus
  carries a minor allele, -1 otherwise: reciprocal sign);
* e is Gaussian noise scaled to sample variance 1 - h2_add - h2_int.

The truth (planted indices, effects, realised variance components) comes back with y. Locus-level
recall metrics for scan outputs are here too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.scans.design import as_float_dosage, standardize_columns

__all__ = ["SimulatedPhenotype", "simulate_phenotype", "as_float_dosage", "pair_recall", "snp_recall", "pair_hits",
           "clump_pairs"]

PAIR_MODELS = ("product", "multiplicative", "threshold", "xor")


@dataclass
class SimulatedPhenotype:
    y: np.ndarray
    snps: np.ndarray  # (n_snps,) planted additive SNP indices
    snp_effects: np.ndarray  # per-SD effects after scaling
    pairs: np.ndarray  # (n_pairs, 2) planted pairs, i < j
    pair_effects: np.ndarray  # effects of the standardised pair terms after scaling
    h2_add: float  # requested
    h2_int: float
    realized: dict  # sample variances of g_add, g_int, e and their share of var(y)
    pair_model: str
    seed: int


def _standardize(X):
    X = as_float_dosage(X)
    Z, sd, mu = standardize_columns(X)
    return Z, sd, np.where(np.isnan(X), mu, X)


def _pair_term(xa, xb, za, zb, model):
    if model == "product":
        f = za * zb
    elif model == "multiplicative":
        f = xa * xb
    elif model == "threshold":
        f = ((_minor(xa) >= 1) & (_minor(xb) >= 1)).astype(np.float64)
    elif model == "xor":
        f = np.where((_minor(xa) >= 1) ^ (_minor(xb) >= 1), 1.0, -1.0)
    else:
        raise ValueError(f"pair_model must be one of {PAIR_MODELS}, got {model!r}")
    f = np.asarray(f, dtype=np.float64)
    f = f - f.mean()
    s = f.std()
    return f / s if s > 0 else f


def _minor(x):
    """Count of the minor allele from a 0..2 dosage column (rounded)."""
    x = np.rint(np.asarray(x, dtype=np.float64))
    return x if x.mean() <= 1.0 else 2.0 - x


def _choose_loci(rng, eligible, snps, pairs, n_snps, n_pairs, min_gap):
    """Planted SNP indices and (k, 2) pairs: the given ones, or drawn among ``eligible`` SNPs at
    least ``min_gap`` columns apart from each other and from the given ones."""
    need_pairs = 0 if pairs is not None else n_pairs
    need_snps = 0 if snps is not None else n_snps
    chosen: list[int] = []
    taken = set()
    if snps is not None:
        chosen_fixed = list(np.asarray(snps, dtype=np.int64).ravel())
    else:
        chosen_fixed = []
    if pairs is not None:
        chosen_fixed += list(np.asarray(pairs, dtype=np.int64).ravel())
    for c in chosen_fixed:
        taken.add(int(c))

    def far(c):
        return all(abs(c - t) >= min_gap for t in taken)

    order = rng.permutation(eligible)
    for c in order:
        if len(chosen) >= need_snps + 2 * need_pairs:
            break
        if far(int(c)):
            chosen.append(int(c))
            taken.add(int(c))
    if len(chosen) < need_snps + 2 * need_pairs:
        raise ValueError("not enough eligible SNPs far enough apart; lower min_gap or min_maf")
    snp_idx = np.asarray(snps if snps is not None else chosen[:need_snps], dtype=np.int64)
    if pairs is not None:
        pair_idx = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    else:
        pair_idx = np.sort(np.asarray(chosen[need_snps:], dtype=np.int64).reshape(-1, 2), axis=1)
    return snp_idx, pair_idx


def simulate_phenotype(
    X,
    *,
    n_snps: int = 5,
    n_pairs: int = 5,
    h2_add: float = 0.1,
    h2_int: float = 0.3,
    seed: int = 0,
    snps=None,
    pairs=None,
    min_maf: float = 0.1,
    min_gap: int = 50,
    pair_model: str = "product",
    signs: str = "random",
) -> SimulatedPhenotype:
    """Simulate y over genotypes X (n x p dosages 0..2, NaN allowed) with known h2.

    Planted SNPs and pair members are drawn among SNPs with minor allele frequency >= min_maf, all
    at least ``min_gap`` columns apart from each other (so that loci are distinct at the locus
    level), unless given explicitly (``snps``: indices; ``pairs``: (k, 2) indices). Effects have
    equal magnitude and random signs (signs='random') or are all positive ('positive').
    """
    if h2_add < 0 or h2_int < 0 or h2_add + h2_int >= 1:
        raise ValueError("need h2_add >= 0, h2_int >= 0 and h2_add + h2_int < 1")
    rng = np.random.default_rng(seed)
    X = as_float_dosage(X)
    n, p = X.shape
    Z, sd, Xf = _standardize(X)
    maf = np.nanmean(X, axis=0) / 2.0
    maf = np.minimum(maf, 1 - maf)
    eligible = np.flatnonzero((maf >= min_maf) & (sd > 0))

    snp_idx, pair_idx = _choose_loci(rng, eligible, snps, pairs, n_snps, n_pairs, min_gap)

    def draw_signs(k):
        if signs == "positive":
            return np.ones(k)
        if signs == "random":
            return rng.choice([-1.0, 1.0], size=k)
        raise ValueError("signs must be 'random' or 'positive'")

    g_add = np.zeros(n)
    beta = np.zeros(snp_idx.size)
    if snp_idx.size and h2_add > 0:
        beta = draw_signs(snp_idx.size)
        g_add = Z[:, snp_idx] @ beta
        g_add -= g_add.mean()
        scale = np.sqrt(h2_add / g_add.var()) if g_add.var() > 0 else 0.0
        g_add *= scale
        beta = beta * scale
    g_int = np.zeros(n)
    gamma = np.zeros(pair_idx.shape[0])
    if pair_idx.shape[0] and h2_int > 0:
        gamma = draw_signs(pair_idx.shape[0])
        F = np.column_stack([
            _pair_term(Xf[:, a], Xf[:, b], Z[:, a], Z[:, b], pair_model) for a, b in pair_idx
        ])
        g_int = F @ gamma
        g_int -= g_int.mean()
        scale = np.sqrt(h2_int / g_int.var()) if g_int.var() > 0 else 0.0
        g_int *= scale
        gamma = gamma * scale
    e = rng.standard_normal(n)
    e -= e.mean()
    e *= np.sqrt((1.0 - h2_add - h2_int) / e.var())
    y = g_add + g_int + e
    vy = y.var()
    realized = {"var_add": float(g_add.var()), "var_int": float(g_int.var()), "var_e": float(e.var()),
                "var_y": float(vy), "h2_add": float(g_add.var() / vy), "h2_int": float(g_int.var() / vy)}
    return SimulatedPhenotype(y=y, snps=snp_idx, snp_effects=beta, pairs=pair_idx, pair_effects=gamma,
                              h2_add=float(h2_add), h2_int=float(h2_int), realized=realized,
                              pair_model=pair_model, seed=int(seed))


# ---------------------------------------------------------------------------------------------
# recall at the locus level


def _same_locus(a, b, window, chrom):
    close = np.abs(np.asarray(a)[:, None] - np.asarray(b)[None, :]) <= window
    if chrom is not None:
        chrom = np.asarray(chrom)
        close &= chrom[np.asarray(a)][:, None] == chrom[np.asarray(b)][None, :]
    return close


def pair_hits(found, planted, *, window: int = 0, top: int | None = None, chrom=None) -> np.ndarray:
    """For each planted pair, whether a found pair (among the first ``top``) hits it.

    found: (k, 2) pairs, best first. A found pair (i, j) hits planted (a, b) when i is within
    ``window`` SNP columns of a and j within ``window`` of b, or crosswise (i near b, j near a);
    with ``chrom`` (chromosome per SNP column) both matches must also be on the same chromosome.
    """
    planted = np.asarray(planted, dtype=np.int64).reshape(-1, 2)
    found = np.asarray(found, dtype=np.int64).reshape(-1, 2)
    if top is not None:
        found = found[:top]
    if found.shape[0] == 0 or planted.shape[0] == 0:
        return np.zeros(planted.shape[0], dtype=bool)
    fi, fj = found[:, 0], found[:, 1]
    pa, pb = planted[:, 0], planted[:, 1]
    straight = _same_locus(pa, fi, window, chrom) & _same_locus(pb, fj, window, chrom)
    cross = _same_locus(pa, fj, window, chrom) & _same_locus(pb, fi, window, chrom)
    return (straight | cross).any(axis=1)


def pair_recall(found, planted, *, window: int = 0, top: int | None = None, chrom=None) -> float:
    """Fraction of planted pairs recovered at the locus level among the top ``top`` found pairs."""
    hits = pair_hits(found, planted, window=window, top=top, chrom=chrom)
    return float(hits.mean()) if hits.size else float("nan")


def snp_recall(found, planted, *, window: int = 0, top: int | None = None, chrom=None) -> float:
    """Fraction of planted SNPs with a found SNP (first ``top``) within ``window`` columns."""
    planted = np.asarray(planted, dtype=np.int64).ravel()
    found = np.asarray(found, dtype=np.int64).ravel()
    if top is not None:
        found = found[:top]
    if planted.size == 0:
        return float("nan")
    if found.size == 0:
        return 0.0
    return float(_same_locus(planted, found, window, chrom).any(axis=1).mean())


def clump_pairs(found, *, window: int, chrom=None) -> np.ndarray:
    """Indices of the found pairs (best first) kept by greedy locus clumping.

    A pair is dropped when an already kept pair lies within ``window`` SNP columns of both of its
    SNPs (either orientation; same chromosome when ``chrom`` is given), so LD copies of one
    interacting locus pair count once and a top-K list holds K distinct locus pairs.
    """
    found = np.asarray(found, dtype=np.int64).reshape(-1, 2)
    kept: list[int] = []
    ki = np.zeros(0, np.int64)
    kj = np.zeros(0, np.int64)
    c = None if chrom is None else np.asarray(chrom)
    for t, (i, j) in enumerate(found):
        if ki.size:
            near_i = np.abs(ki - i) <= window
            near_j = np.abs(kj - j) <= window
            cross_i = np.abs(kj - i) <= window
            cross_j = np.abs(ki - j) <= window
            if c is not None:
                near_i &= c[ki] == c[i]
                near_j &= c[kj] == c[j]
                cross_i &= c[kj] == c[i]
                cross_j &= c[ki] == c[j]
            if np.any((near_i & near_j) | (cross_i & cross_j)):
                continue
        kept.append(t)
        ki = np.append(ki, i)
        kj = np.append(kj, j)
    return np.asarray(kept, dtype=np.int64)
