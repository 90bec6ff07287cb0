"""Scan statistics: each one is a single declared object that the engines and writers consume.

A :class:`ScanStatistic` names a regression model, the sufficient statistics it is computed from,
the function that turns them into (effect, test statistic, validity), the p-value of the test
statistic and the columns it reports. The exact 1D scan (:mod:`models.scans.scan1d`), the CPU
and GPU 2D engines (:mod:`models.scans.scan2d`, :mod:`models.scans.scan2d_gpu`) and the output
writers (:mod:`pipelines.workflows.scan`) look a statistic up by name or by (mode, trait) instead
of branching on the trait, so a new statistic is one object here and one entry in
:data:`STATISTICS`.

Sufficient statistics (``inputs``):

* ``"per_snp"`` (1D): ``fit(genotypes, y, covariates, device=...)`` returns a
  :class:`~models.scans.scan1d.Scan1DResult` (effect, se, t, p per SNP);
* ``"moments"`` (2D): a dict of per-pair sums (N, Sa, Sb, Saa, ..., Saby, Syy; see
  :func:`~models.scans.pair_stats.qt_stats`) from tile GEMMs over the integer-quantised phenotype;
  ``fit(m, xp, tol, max_iter)`` returns (effect, stat, valid);
* ``"cells"`` (2D): 3 x 3 genotype cell counts of cases and of all samples (0/1 phenotype);
  ``fit((cases, total), xp, tol, max_iter)`` returns (effect, stat, valid).

``fast_kernels`` marks the statistic that the specialised kernels implement (the int8 CPU GEMM
path, the complete-genotype float64 path and the CuPy engine): they compute the linear
interaction's numbers directly from GEMM blocks without materialising the moments. Other
statistics run the generic moments / cells path on either device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.scans.pair_stats import binary_stats, chi2_sf1, fast_epistasis_stats, qt_stats
from models.scans.scan1d import scan_1d, t_pvalues

__all__ = ["ScanStatistic", "STATISTICS", "get_statistic", "statistic_for", "register"]

MODES = ("1d", "2d")
INPUTS = ("per_snp", "moments", "cells")


@dataclass(frozen=True)
class ScanStatistic:
    """One scan statistic (see the module docstring)."""

    name: str
    mode: str                    # "1d" | "2d"
    trait: str                   # phenotype it is the default for: "qt" | "binary"
    model: str                   # the fitted model, for humans
    inputs: str                  # "per_snp" | "moments" | "cells"
    fit: Callable                # sufficient statistics -> results (see the module docstring)
    test: str                    # "t" (Student t, per-SNP df) | "chi2_1df" (Wald chi-square)
    effect: str                  # output column of the effect
    columns: tuple               # output columns of the statistic, in order, after the ids
    effect_in_phenotype_units: bool = True  # effect scales with y (undo the phenotype quantisation)
    fast_kernels: bool = False   # the int8 / complete / GPU kernels implement this statistic

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"statistic {self.name}: mode must be one of {MODES}")
        if self.inputs not in INPUTS:
            raise ValueError(f"statistic {self.name}: inputs must be one of {INPUTS}")
        if (self.mode == "1d") != (self.inputs == "per_snp"):
            raise ValueError(f"statistic {self.name}: 1D statistics take per_snp inputs, 2D ones moments or cells")
        if self.effect not in self.columns:
            raise ValueError(f"statistic {self.name}: the effect column {self.effect!r} is not among its columns")

    @property
    def case_control(self) -> bool:
        """True when the phenotype must be coded 0 (control) / 1 (case)."""
        return self.inputs == "cells"

    def pvalue(self, stat, df=None) -> np.ndarray:
        """p-values of the test statistic (``df``: residual degrees of freedom of a t test)."""
        if self.test == "chi2_1df":
            return chi2_sf1(stat)
        return t_pvalues(stat, df)


def _moments_fit(m, xp, tol, max_iter):
    return qt_stats(m, xp, tol)


def _cells_fit(cells, xp, tol, max_iter):
    cases, total = cells
    return binary_stats(cases, total, xp, max_iter, tol)


LINEAR_1D = ScanStatistic(
    name="linear", mode="1d", trait="qt", model="y ~ 1 + C + x (plink2 --glm)", inputs="per_snp",
    fit=scan_1d, test="t", effect="beta", columns=("beta", "se", "t", "p", "n"))
# the 1D scan of a case/control trait is the same least-squares fit on 0/1 (linear probability model)
LINEAR_1D_BINARY = ScanStatistic(
    name="linear_probability", mode="1d", trait="binary", model="0/1 ~ 1 + C + x (linear probability model)",
    inputs="per_snp", fit=scan_1d, test="t", effect="beta", columns=("beta", "se", "t", "p", "n"))
LINEAR_INTERACTION = ScanStatistic(
    name="linear_interaction", mode="2d", trait="qt", model="y ~ 1 + a + b + ab (plink1.9 --epistasis)",
    inputs="moments", fit=_moments_fit, test="chi2_1df", effect="beta_int",
    columns=("beta_int", "se", "stat", "p", "n"), fast_kernels=True)
LOGISTIC_INTERACTION = ScanStatistic(
    name="logistic_interaction", mode="2d", trait="binary",
    model="logit P(case) ~ 1 + a + b + ab (plink1.9 --epistasis, case/control)", inputs="cells",
    fit=_cells_fit, test="chi2_1df", effect="log_or_int", columns=("log_or_int", "se", "stat", "p", "n"),
    effect_in_phenotype_units=False)

def _fast_epi_fit(cells, xp, tol, max_iter):
    cases, total = cells
    return fast_epistasis_stats(cases, total, xp)


# not a trait's default (the logistic model is): chosen by name, ``epiflow scan --fast-epistasis``
FAST_EPISTASIS = ScanStatistic(
    name="fast_epistasis", mode="2d", trait="binary",
    model="case vs control difference of two-locus allelic log odds ratios (plink1.9 --fast-epistasis)",
    inputs="cells", fit=_fast_epi_fit, test="chi2_1df", effect="delta_log_or",
    columns=("delta_log_or", "se", "stat", "p", "n"), effect_in_phenotype_units=False)

STATISTICS: dict[str, ScanStatistic] = {
    s.name: s for s in (LINEAR_1D, LINEAR_1D_BINARY, LINEAR_INTERACTION, LOGISTIC_INTERACTION, FAST_EPISTASIS)}


def register(stat: ScanStatistic) -> ScanStatistic:
    """Add a statistic to :data:`STATISTICS` (names are unique)."""
    if stat.name in STATISTICS and STATISTICS[stat.name] is not stat:
        raise ValueError(f"a scan statistic named {stat.name!r} exists already")
    STATISTICS[stat.name] = stat
    return stat


def get_statistic(name: str) -> ScanStatistic:
    try:
        return STATISTICS[name]
    except KeyError:
        raise ValueError(f"unknown scan statistic {name!r}: use one of {', '.join(STATISTICS)}") from None


def statistic_for(mode: str, trait: str, name: str | None = None) -> ScanStatistic:
    """The statistic ``name``, or the default one of a mode and trait ('qt' or 'binary')."""
    if name:
        s = get_statistic(name)
        if s.mode != mode:
            raise ValueError(f"scan statistic {name!r} is a {s.mode} statistic, not {mode}")
        return s
    for s in STATISTICS.values():
        if s.mode == mode and s.trait == trait:
            return s
    traits = list(dict.fromkeys(s.trait for s in STATISTICS.values() if s.mode == mode))
    raise ValueError(f"unknown trait {trait!r}: use {' or '.join(traits)}")
