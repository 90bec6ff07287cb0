"""Scans as one workflow: :func:`run_scan` (exact or NGG, 1D or 2D) -> :class:`ScanResult` in memory,
and :func:`write_scan` for the output folder that ``epiflow scan`` and the NGG stages write.

Inputs are the typed objects of :mod:`pipelines.workflows.genotypes`, aligned on samples
(:func:`~pipelines.workflows.genotypes.align`) and filtered; settings are a :class:`ScanSpec`.
The statistic of an exact scan is a :class:`models.scans.statistics.ScanStatistic` (the trait's
default unless ``ScanSpec.statistic`` names one); its declared columns shape the output tables.

Tables (``top``): 1D exact ``rank, snp, chrom, bp, a1, a2, <statistic columns>``; 2D exact
``rank, snp1, chrom1, bp1, snp2, chrom2, bp2, <statistic columns>``; NGG the same ids with
``score, support, effect``. A 2D exact scan checkpoints after blocks of tiles into
``checkpoint_dir`` and resumes from there (``ScanSpec.restart`` discards it).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
from scipy import special

from models.backend import BackendUnavailable, resolve_device
from models.ngg.ngg import ngg_fit
from models.ngg.tiled import ngg_fit_tiled, prepare_tiled
from models.scans.calibration import chi2_from_p, genotype_pcs, lambda_gc, pair_lambda_gc
from models.scans.design import phenotype_problem
from models.scans.pyramid import PyramidGrid, build_levels, cell_size, tile_level
from models.scans.scan2d import Scan2D, Scan2DOptions, chrom_order, dense_pair_stats
from models.scans.statistics import statistic_for
from pipelines import executor
from pipelines.atomic import atomic_dir, atomic_path, remove_with_temps
from pipelines.errors import EpiflowError, InputError
from pipelines.plots.scans import manhattan, map_overview, map_zoom, overview_marks, pair_boxplots, snp_alleles
from pipelines.workflows.genotypes import (Covariates, GenotypeSet, Phenotype, SnpFilter, align, is_aligned,
                                          read_id_list)

__all__ = ["NGGSettings", "ScanSpec", "ScanResult", "ScanInputs", "load_scan_inputs", "run_scan", "write_scan",
           "write_pyramid", "write_tsv",
           "flat_metrics", "device_or_error", "CKPT_NAME", "NGG_CKPT_NAME"]

CKPT_NAME = ".scan2d.ckpt.npz"
NGG_CKPT_NAME = ".ngg.ckpt.npz"


@dataclass(frozen=True)
class NGGSettings:
    """NGG estimator settings (see :func:`models.ngg.ngg.ngg_fit`)."""

    B: int = 1000
    d: int = 30
    R: int = 10
    lam_scale: float = 1.0
    lam: float | None = None
    iters: int = 200
    seed: int = 0
    # 2D: pieces (models.ngg.ngg, the estimator of DESIGN section 5) | tiled (models.ngg.tiled: steps of
    # genotype tiles, shared sketches, fused kernels on a CUDA GPU; progress, an up-front run-time refusal
    # and a map of every pair's score; recall of planted pairs as the pieces engine at R = 10)
    engine: str = "pieces"
    pieces: str = "random"   # tiled engine: random pieces of each step's pairs | rect (10 x 10 rectangles)
    max_minutes: float | None = None  # refuse (one line, with settings that fit) above this run-time estimate


@dataclass(frozen=True)
class ScanSpec:
    """What to scan and how."""

    mode: str = "1d"                 # 1d | 2d
    method: str = "exact"            # exact | ngg
    top: int = 100                   # SNPs / pairs reported
    device: str = "cpu"              # resolved device (see device_or_error)
    statistic: str | None = None     # models.scans.statistics name (default: the trait's)
    tile: int | None = None          # 2D: SNPs per tile side
    block_pairs: int | None = None   # 2D: pairs per checkpoint block
    threads: int = 0
    workers: str = "auto"
    pyramid_side: int = 4096
    checkpoint_every: float = 30.0   # seconds between 2D checkpoints
    restart: bool = False            # ignore an existing 2D checkpoint
    pcs: int = 0                     # genotype principal components added to the covariates
    effect_map: bool = False         # 2D exact (CPU): also the map of max |interaction effect| (pyramid_effect/)
    ngg: NGGSettings = field(default_factory=NGGSettings)

    def __post_init__(self):
        if self.mode not in ("1d", "2d"):
            raise EpiflowError(f"scan mode must be 1d or 2d, not {self.mode!r}")
        if self.method not in ("exact", "ngg"):
            raise EpiflowError(f"scan method must be exact or ngg, not {self.method!r}")
        if self.top < 1:
            raise EpiflowError("--top must be >= 1")
        if self.pcs < 0:
            raise EpiflowError("--pcs must be >= 0")


@dataclass
class ScanResult:
    """Everything a scan produced, in memory (tables as written, numbers for the summary).

    top: the top SNPs (1D) or pairs (2D) table; snps: every SNP (1D exact); snp_best: each SNP's
    best partner (2D exact); chrom_pairs: chromosome-pair summaries (2D exact); pyramid: level 0 of
    the map and its axis (2D exact); numbers: seconds, counts and thresholds for the summary.
    """

    spec: ScanSpec
    genotypes: GenotypeSet
    y: np.ndarray                    # the phenotype scanned
    y_raw: np.ndarray                # the phenotype as given (box plots)
    trait: str
    top: pd.DataFrame
    numbers: dict
    snps: pd.DataFrame | None = None
    snp_best: pd.DataFrame | None = None
    chrom_pairs: pd.DataFrame | None = None
    pyramid: dict | None = None
    plot_data: dict = field(default_factory=dict)
    covariates: np.ndarray | None = None  # 2D exact: the covariates of the pair model (map zoom)


def device_or_error(device: str, what: str = "") -> str:
    """A resolved device name, or a one-line error."""
    try:
        return resolve_device(device)
    except BackendUnavailable as exc:
        raise EpiflowError(f"{what}{exc}") from None


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class ScanInputs:
    """Aligned, filtered inputs of ``epiflow scan`` with the reports of the joins and filters."""

    genotypes: GenotypeSet
    phenotype: Phenotype
    covariates: Covariates | None
    filters: dict
    missing_rate: float
    covar_join: dict | None


def load_scan_inputs(genotypes, *, pheno=None, pheno_col="1", pheno_format: str = "auto", covar=None,
                     covar_cols=None, covar_format: str = "auto", trait: str = "auto", maf: float = 0.0,
                     extract=None, min_snps: int = 1, log: Callable = print) -> ScanInputs:
    """Genotypes (PLINK prefix, dosage folder or VCF), phenotype and covariates on their common
    samples; SNPs with a negative position, monomorphic or below ``maf`` among those samples, or
    not in the ``extract`` list are dropped."""
    gs = genotypes if isinstance(genotypes, GenotypeSet) else GenotypeSet.load(genotypes, unique_ids=False)
    ph = Phenotype.load(pheno, gs, pheno_col, pheno_format)
    cov = None
    if covar:
        cov = Covariates.load(covar, gs, covar_cols, covar_format)
        log(f"covariates: {cov.join_summary}")
    log(f"phenotype {ph.column!r}: {ph.join_summary}")
    gs_used, ph, cov = align(gs, ph, cov)
    ph = ph.with_trait(trait, where=pheno or gs.source)
    wanted = None
    if extract:
        wanted = read_id_list(extract)
    stats = gs_used.snp_stats()
    res = SnpFilter(maf_min=maf, positive_bp=True,
                    extract=None if wanted is None else frozenset(wanted)).apply(stats, gs_used.snps)
    filters = {"n_snps_file": int(gs.p), "negative_bp": int((~res.ok_bp).sum()),
               "monomorphic_or_low_maf": int((res.ok_bp & ~res.ok_maf).sum())}
    if wanted is not None:
        if not res.in_extract.any():
            raise InputError(extract, f"none of its {len(wanted)} SNP ids is in the .bim file")
        filters["not_in_extract"] = int((~res.in_extract).sum())
    filters["n_snps_used"] = res.n_used
    log(f"SNPs: {gs.p} in {Path(gs.source).name}, {filters['negative_bp']} with negative position skipped, "
        f"{filters['monomorphic_or_low_maf']} monomorphic/below MAF {maf} skipped, {filters['n_snps_used']} used")
    if res.n_used < min_snps:
        raise EpiflowError("too few usable SNPs after filtering")
    used = gs_used.subset(snps=res.keep)
    n, k = used.n, used.p
    missing_rate = (n * k - int(stats.called[res.keep].sum())) / (n * k)
    return ScanInputs(used, ph, cov, filters, missing_rate, None if cov is None else cov.join)


# ---------------------------------------------------------------------------------------------
# running


def run_scan(genotypes: GenotypeSet, phenotype: Phenotype, spec: ScanSpec, *, covariates: Covariates | None = None,
             checkpoint_dir=None, on_block: Callable | None = None, log: Callable = print,
             on_start: Callable | None = None) -> ScanResult:
    """Run one scan (``spec.mode`` x ``spec.method``) on aligned, filtered inputs.

    genotypes: SNP-major int8 (-1 missing) of the used samples; phenotype: with its trait resolved
    (:meth:`Phenotype.with_trait`); covariates (with ``spec.pcs`` genotype principal components
    appended): adjusted for exactly, also in the 2D pair model y ~ C + a + b + ab (quantitative
    traits, complete genotypes). checkpoint_dir: where a 2D exact (or NGG) scan keeps
    its checkpoint; on_block(scan): called after every block of a 2D exact scan (after the
    checkpoint), e.g. to stop it. on_start(): called once the inputs are validated, before any
    work (the scan command creates and marks its output folder there).
    """
    if not is_aligned(genotypes, phenotype, covariates):
        raise ValueError("run_scan needs genotypes, phenotype and covariates on the same samples (use align())")
    if phenotype.trait not in ("qt", "binary"):
        raise ValueError("resolve the phenotype's trait first (Phenotype.with_trait)")
    covar = None if covariates is None else covariates.values
    pc_numbers = None
    if spec.pcs:
        covar, pc_numbers = _with_pcs(genotypes, covar, spec.pcs, log)
    why = phenotype_problem(phenotype.y, covar)
    if why:
        raise EpiflowError(f"{phenotype.path}: phenotype '{phenotype.column}': {why}; no scan was run")
    ckdir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if on_start is not None:
        on_start()
    if spec.method == "ngg":
        result = _run_ngg(genotypes, phenotype, covar, spec, ckdir)
    elif spec.mode == "1d":
        result = _run_exact_1d(genotypes, phenotype, covar, spec, log)
    else:
        result = _run_exact_2d(genotypes, phenotype, covar, spec, ckdir, on_block, log,
                               covar_path=None if covariates is None else covariates.path)
    if pc_numbers is not None:
        result.numbers["pcs"] = pc_numbers
    return result


def _with_pcs(gs: GenotypeSet, covar, k: int, log):
    """The covariates with the top k genotype principal components of the scanned samples appended."""
    t0 = time.perf_counter()
    try:
        pcs, sv = genotype_pcs(gs.dosage, k)
    except ValueError as exc:
        raise EpiflowError(f"--pcs {k}: {exc}") from None
    var = sv ** 2 / max(float(gs.p), 1.0)
    log(f"genotype PCs: {k} by randomised SVD of {gs.p} SNPs x {gs.n} samples ({time.perf_counter() - t0:.1f} s), "
        f"variance explained per PC {', '.join(f'{v / gs.n:.3g}' for v in var)} (share of the total)")
    covar = pcs if covar is None else np.column_stack([np.asarray(covar, dtype=np.float64), pcs])
    return covar, {"k": int(k), "variance_share": [float(v / gs.n) for v in var],
                   "seconds": time.perf_counter() - t0}


def _run_exact_1d(gs: GenotypeSet, ph: Phenotype, covar, spec: ScanSpec, log) -> ScanResult:
    st = statistic_for("1d", ph.trait, spec.statistic)
    if ph.trait == "binary":
        log("note: 1D exact scan of a case/control trait uses linear regression on 0/1 (a linear probability model)")
    t0 = time.perf_counter()
    r = st.fit(gs.dosage, ph.y, covar, device=spec.device, snp_major=True)
    t_scan = time.perf_counter() - t0
    snps = gs.snps
    df = pd.DataFrame({"snp": snps["snp"], "chrom": snps["chrom"], "bp": snps["bp"], "a1": snps["a1"], "a2": snps["a2"],
                       **{c: getattr(r, c) for c in st.columns}})
    order = np.lexsort((np.arange(len(df)), np.where(np.isfinite(r.p), r.p, np.inf)))
    top = df.iloc[order[: spec.top]].copy()
    top = top[np.isfinite(top["p"])]
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    numbers = {"seconds_scan": t_scan, "n_tests": int(np.isfinite(r.p).sum()), "covariate_columns": int(r.k_covariates),
               "best": top.iloc[0][["snp", "p"]].to_dict() if len(top) else None,
               "lambda_gc": lambda_gc(chi2_from_p(r.p))}
    if numbers["lambda_gc"] is not None:
        log(f"lambda_GC (1D, {numbers['n_tests']} SNPs): {numbers['lambda_gc']:.3f}")
    return ScanResult(spec, gs, ph.y, ph.y, ph.trait, top, numbers, snps=df,
                      plot_data={"p": r.p, "highlight": order[: min(10, spec.top)]})


def _scan2d(gs: GenotypeSet, y, trait: str, spec: ScanSpec, covariates=None) -> Scan2D:
    opt = Scan2DOptions(tile=spec.tile, top_k=spec.top, trait=trait, pyramid_side=spec.pyramid_side,
                        block_pairs=spec.block_pairs, threads=spec.threads, workers=spec.workers)
    try:
        return Scan2D(gs.dosage, y, gs.snps["chrom"].to_numpy(), opt, device=spec.device, statistic=spec.statistic,
                      covariates=covariates)
    except ValueError as exc:
        raise EpiflowError(str(exc)) from None


def _resume(scan: Scan2D, ckpt: Path | None, restart: bool, log) -> int:
    if ckpt is None or not ckpt.exists() or restart:
        return 0
    try:
        with np.load(ckpt, allow_pickle=False) as z:
            scan.load_state({k: z[k] for k in z.files})
        log(f"resuming from checkpoint: block {scan.next_block} of {len(scan.blocks)}")
        return scan.next_block
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        log(f"ignoring checkpoint {ckpt.name}: {exc}")
        scan.reset()
        return 0


def _checkpointer(ckpt: Path | None, every: float, on_block, log):
    last = [time.perf_counter()]

    def save(s):
        if ckpt is not None and not s.done and time.perf_counter() - last[0] >= every:
            with atomic_path(ckpt, suffix=".npz") as tmp:
                np.savez(tmp, **s.state())
            last[0] = time.perf_counter()
            log(f"  block {s.next_block}/{len(s.blocks)} done, checkpoint saved ({s.elapsed:.1f} s)")
        if on_block is not None:
            on_block(s)

    return save


def _run_exact_2d(gs: GenotypeSet, ph: Phenotype, covar, spec: ScanSpec, ckdir,
                  on_block, log, covar_path=None) -> ScanResult:
    y = ph.y
    if covar is not None:
        if ph.trait == "binary":
            raise InputError(covar_path or "--pcs", "covariates are not supported by the case/control 2D scan")
        log(f"covariates in the pair model: y ~ C + a + b + ab with {np.shape(covar)[1]} covariate columns")
    calibration = None
    if covar is None and spec.device == "cpu":
        # the genomic control numbers do not depend on the scan: computed first, they overlap the
        # import of PyTorch (int8 GEMMs) that the scan waits for; a failure here is left to the
        # computation after the scan, where it always ran
        try:
            calibration = _calibration_numbers(gs, y, ph.trait, spec, covar)
        except Exception:  # noqa: BLE001
            calibration = None
    scan = _scan2d(gs, y, ph.trait, spec, covariates=covar)
    ckpt = None if ckdir is None else ckdir / CKPT_NAME
    resumed_from = _resume(scan, ckpt, spec.restart, log)
    effect_map = _EffectMap.attach(scan, resumed_from, log) if spec.effect_map else None
    log(f"2D exact scan: {scan.p} SNPs, {scan.n_pairs:,} pairs, {scan.n} samples, tile {scan.tile}, "
        f"{len(scan.blocks)} blocks, {'complete' if scan.prep.complete else 'with missing calls'}, "
        f"trait {ph.trait}, device {spec.device}")
    t0 = time.perf_counter()
    dask_numbers = None
    if executor.current() is None:
        scan.run(on_block=_checkpointer(ckpt, spec.checkpoint_every, on_block, log))
    else:  # the blocks as tasks of a cluster: same scan, same merge order, same checkpoints
        from pipelines.workflows.scan_tasks import run_blocks

        light = SimpleNamespace(dosage=gs.dosage, snps=gs.snps[["chrom"]])
        recipe = functools.partial(_scan2d, light, y, ph.trait, dataclasses.replace(spec, tile=scan.tile),
                                   covariates=covar)
        dask_numbers = run_blocks(scan, recipe, executor.current(),
                                  on_block=_checkpointer(ckpt, spec.checkpoint_every, on_block, log))
    t_scan = time.perf_counter() - t0
    res = scan.results()
    result = ScanResult(spec, gs, y, ph.y, ph.trait, _top_pairs_exact(gs, res, scan.statistic), {})
    result.snp_best, result.chrom_pairs = _snp_best(gs, res), _chrom_pairs(gs, res)
    result.pyramid = _pyramid(gs, res)
    if effect_map is not None:
        result.pyramid.update(effect_map.result())
    result.plot_data = {"best_p": special.chdtrc(1.0, res["best_stat"]), "sig_p": res["sig_p"],
                        "n_pairs": res["n_pairs"], "n": scan.n, "i": res["top"]["i"], "j": res["top"]["j"]}
    result.numbers = {"seconds_scan": t_scan, "seconds_scan_total": res["elapsed"], "resumed_from_block": resumed_from,
                      "n_pairs": res["n_pairs"], "n_tested": res["tested"], "sig_p": res["sig_p"], "tile": scan.tile,
                      "pairs_per_second": res["n_pairs"] / max(res["elapsed"], 1e-9), "y_scale": scan.y_scale}
    if dask_numbers is not None:
        result.numbers["executor"] = dask_numbers
    result.numbers["effect_map"] = effect_map is not None
    if calibration is None:
        calibration = _calibration_numbers(gs, y, ph.trait, spec, covar)
    lam, lam_pairs, lam_snps, lam1, seconds = calibration
    result.numbers.update(lambda_gc=lam, lambda_gc_pairs=lam_pairs, lambda_gc_1d=lam1, seconds_lambda_gc=seconds)
    result.covariates = covar
    if lam is not None:
        where = "every pair" if lam_snps == scan.p else f"the pairs among {lam_snps} random SNPs"
        log(f"lambda_GC (2D, {lam_pairs:,} tested pairs: {where}): {lam:.3f}"
            + (f"; 1D, the same SNPs one at a time: {lam1:.3f}" if lam1 is not None else ""))
    if ckpt is not None:
        # with the temp file of a run killed while it saved a checkpoint: a resumed run that
        # saves none (the rest took less than checkpoint_every) would leave it behind
        remove_with_temps(ckpt)
    return result


def _calibration_numbers(gs: GenotypeSet, y, trait: str, spec: ScanSpec, covar):
    """(lambda_GC of the 2D statistic, pairs used, SNPs drawn, lambda_GC of the 1D model, seconds)."""
    t1 = time.perf_counter()
    lam, lam_pairs, lam_snps = pair_lambda_gc(gs.dosage, y, trait, spec.statistic, covar)
    marginal = statistic_for("1d", trait).fit(gs.dosage, y, covar, device=spec.device, snp_major=True)
    lam1 = lambda_gc(chi2_from_p(marginal.p))  # the same model's SNPs one at a time (genome control)
    return lam, lam_pairs, lam_snps, lam1, time.perf_counter() - t1


class _EffectMap:
    """Level 0 of the map of max |interaction effect| (in phenotype units where the statistic's effect
    is), pooled like the statistic's map from every CPU tile of the scan (its ``tile_hook``)."""

    @classmethod
    def attach(cls, scan: Scan2D, resumed_from: int, log) -> "_EffectMap | None":
        why = None
        if scan.gpu:
            why = "the GPU engine keeps no per-pair effects"
        elif executor.current() is not None:
            why = "the blocks run on the cluster's workers"
        elif resumed_from:
            why = "the scan resumed from a checkpoint that holds only the statistic's map"
        if why:
            log(f"no map of |{scan.statistic.effect.upper()}| (--effect-map): {why}")
            return None
        return cls(scan)

    def __init__(self, scan: Scan2D):
        self.grid = PyramidGrid(scan.p, cell=scan.pyr.cell)
        self.scale = scan.y_scale if scan.statistic.effect_in_phenotype_units else 1.0
        self.name = scan.statistic.effect.upper()
        self.lock = threading.Lock()
        # forked worker processes would accumulate in their own copies: threads (same numbers)
        scan.opt = dataclasses.replace(scan.opt, workers="thread")
        scan.tile_hook = self

    def __call__(self, i0, j0, stat, beta):
        with np.errstate(invalid="ignore"):
            v = np.where((stat >= 0) & np.isfinite(beta), np.abs(beta) * self.scale, -1.0)
        pooled = self.grid.pool_tile(i0, j0, v)
        with self.lock:
            self.grid.merge_pooled(*pooled)

    def result(self) -> dict:
        return {"effect_level0": self.grid.level0(),
                "effect_value": f"max |{self.name}| of the pair (interaction effect)"}


def _top_pairs_exact(gs: GenotypeSet, res: dict, st) -> pd.DataFrame:
    snps, G = gs.snps, gs.dosage
    top = res["top"]
    i, j = top["i"], top["j"]
    n_used = ((G[i] >= 0) & (G[j] >= 0)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.abs(top["effect"]) / np.sqrt(top["stat"])
    values = {st.effect: top["effect"], "se": se, "stat": top["stat"], "p": top["p"], "n": n_used}
    ids, chrom, bp = snps["snp"].to_numpy(), snps["chrom"].to_numpy(), snps["bp"].to_numpy()
    return pd.DataFrame({"rank": np.arange(1, len(i) + 1), "snp1": ids[i], "chrom1": chrom[i], "bp1": bp[i],
                         "snp2": ids[j], "chrom2": chrom[j], "bp2": bp[j], **{c: values[c] for c in st.columns}})


def _snp_best(gs: GenotypeSet, res: dict) -> pd.DataFrame:
    snps = gs.snps
    bs, bpart = res["best_stat"], res["best_partner"]
    return pd.DataFrame({
        "snp": snps["snp"], "chrom": snps["chrom"], "bp": snps["bp"], "best_stat": bs,
        "best_p": special.chdtrc(1.0, bs),
        "best_partner": np.where(bpart >= 0, snps["snp"].to_numpy()[np.maximum(bpart, 0)], None)})


def _chrom_pairs(gs: GenotypeSet, res: dict) -> pd.DataFrame:
    ids = gs.snps["snp"].to_numpy()
    cp = pd.DataFrame(res["chrom_pairs"])
    if len(cp):
        bi, bj = cp["best_i"].to_numpy(), cp["best_j"].to_numpy()
        cp["best_snp1"] = np.where(bi >= 0, ids[np.maximum(bi, 0)], None)
        cp["best_snp2"] = np.where(bj >= 0, ids[np.maximum(bj, 0)], None)
        cp["best_p"] = special.chdtrc(1.0, cp["best_stat"].to_numpy())
        cp = cp.drop(columns=["best_i", "best_j"])
    return cp


def _pyramid(gs: GenotypeSet, res: dict) -> dict:
    snps = gs.snps
    order = res["order"]
    chrom_sorted = snps["chrom"].to_numpy()[order]
    bounds = np.flatnonzero(np.r_[True, chrom_sorted[1:] != chrom_sorted[:-1], True])
    segments = [{"chrom": str(chrom_sorted[a]), "start": int(a), "end": int(b)}
                for a, b in zip(bounds[:-1], bounds[1:])]
    axis = pd.DataFrame({"pos": np.arange(len(order)), "snp": snps["snp"].to_numpy()[order], "chrom": chrom_sorted,
                         "bp": snps["bp"].to_numpy()[order]})
    return {"level0": res["pyramid_level0"], "cell": res["pyramid_cell"], "axis": axis, "segments": segments,
            "bounds": list(bounds), "order": order, "value": "max Wald chi-square of the interaction (1 df)"}


def _run_ngg(gs: GenotypeSet, ph: Phenotype, covar, spec: ScanSpec, ckdir) -> ScanResult:
    g = spec.ngg
    ckpt = None if ckdir is None else ckdir / NGG_CKPT_NAME
    t0 = time.perf_counter()
    if spec.mode == "2d" and g.engine == "tiled":
        if ckpt is not None and spec.restart:
            ckpt.unlink(missing_ok=True)
        reps = None
        if executor.current() is not None:  # the (block, repetition) units as tasks of a cluster
            from pipelines.workflows.scan_tasks import ngg_repetitions

            kw = dict(mode="2d", B=g.B, d=g.d, lam=g.lam, lam_scale=g.lam_scale, iters=g.iters, seed=g.seed,
                      device=spec.device, covariates=covar, pieces=g.pieces)
            h = hashlib.sha256(np.ascontiguousarray(gs.dosage).tobytes() + np.asarray(ph.y).tobytes())
            h.update(b"" if covar is None else np.ascontiguousarray(covar, dtype=np.float64).tobytes())
            h.update(repr(sorted((k, v) for k, v in kw.items() if k != "covariates")).encode())
            key = h.hexdigest()
            reps = ngg_repetitions(executor.current(), functools.partial(prepare_tiled, gs.dosage.T, ph.y, **kw), key)
        ngg_map = _NGGMap(gs, spec.pyramid_side)
        res = ngg_fit_tiled(gs.dosage.T, ph.y, mode="2d", B=g.B, d=g.d, R=g.R, lam_scale=g.lam_scale, lam=g.lam,
                            iters=g.iters, seed=g.seed, device=spec.device, top=spec.top, covariates=covar,
                            pieces=g.pieces,
                            progress=True, checkpoint=None if ckpt is None else str(ckpt),
                            checkpoint_every=spec.checkpoint_every,
                            max_seconds=None if not g.max_minutes else 60.0 * g.max_minutes, repetitions=reps,
                            on_scores=ngg_map)
    else:
        res = ngg_fit(gs.dosage.T, ph.y, mode=spec.mode, B=g.B, d=g.d, R=g.R, lam_scale=g.lam_scale, lam=g.lam,
                      iters=g.iters, seed=g.seed, xp=spec.device, top=spec.top, covariates=covar, progress=True,
                      checkpoint=None if ckpt is None else str(ckpt),
                      max_seconds=None if not g.max_minutes else 60.0 * g.max_minutes)
    t_fit = time.perf_counter() - t0
    snps = gs.snps
    ids, chrom, bp = snps["snp"].to_numpy(), snps["chrom"].to_numpy(), snps["bp"].to_numpy()
    plot_data = {}
    if spec.mode == "1d":
        t = res.top_snps
        s = np.asarray(t["snp"], dtype=np.int64)
        df = pd.DataFrame({"rank": np.arange(1, len(s) + 1), "snp": ids[s], "chrom": chrom[s], "bp": bp[s],
                           "score": t["score"], "support": t["support"], "effect": t["effect"]})
        plot_data["snp_score"] = np.asarray(res.snp_score, dtype=float)
    else:
        t = res.top_pairs
        i, j = np.asarray(t["i"], dtype=np.int64), np.asarray(t["j"], dtype=np.int64)
        df = pd.DataFrame({"rank": np.arange(1, len(i) + 1), "snp1": ids[i], "chrom1": chrom[i], "bp1": bp[i],
                           "snp2": ids[j], "chrom2": chrom[j], "bp2": bp[j], "score": t["score"],
                           "support": t["support"], "effect": t["effect"]})
        plot_data.update(i=i, j=j)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    numbers = {"seconds_scan": t_fit, "ngg_params": {k: (v if isinstance(v, (int, float, str, bool)) or v is None
                                                         else str(v)) for k, v in dict(res.params).items()}}
    result = ScanResult(spec, gs, ph.y, ph.y, ph.trait, df, numbers, plot_data=plot_data)
    if spec.mode == "2d" and g.engine == "tiled":
        result.pyramid = ngg_map.result(res, print)
        numbers["effect_map"] = result.pyramid is not None
    return result


class _NGGMap:
    """Level 0 of the map of a tiled NGG 2D scan (``pyramid_effect/``): every pair's final score
    (support x |mean effect|, what the scan ranks by) max-pooled into the grid of the exact scan's map
    (same chromosome order and cell), from each block's scores (``on_scores`` of ngg_fit_tiled)."""

    def __init__(self, gs: GenotypeSet, max_side: int):
        self.order = chrom_order(gs.snps["chrom"].to_numpy())
        self.rank = np.empty(len(self.order), dtype=np.int64)
        self.rank[self.order] = np.arange(len(self.order))
        self.cell = cell_size(len(self.order), max_side)   # the exact scan's grid (PyramidGrid)
        self.side = math.ceil(len(self.order) / self.cell)
        self.grid = None
        self.gs = gs

    def __call__(self, rows, cols, score) -> None:
        import torch

        dev, side = score.device, self.side
        if self.grid is None:   # on the scan's device: a block's scores never leave it
            self.grid = torch.full((side * side,), -1.0, dtype=torch.float32, device=dev)
        ri = torch.as_tensor(self.rank[rows] // self.cell, device=dev)
        rj = torch.as_tensor(self.rank[cols] // self.cell, device=dev)
        step = max(1, 2**25 // max(len(cols), 1))   # rows per scatter: index arrays of <= 32M entries
        for a in range(0, len(rows), step):
            r = ri[a:a + step, None]
            key = torch.minimum(r, rj[None, :]) * side + torch.maximum(r, rj[None, :])
            self.grid.scatter_reduce_(0, key.reshape(-1), score[a:a + step].reshape(-1).float(), reduce="amax")

    def result(self, res, log) -> dict | None:
        why = None
        if res.timings.get("resumed_block", 0) > 1:
            why = "the scan resumed from a checkpoint after its first blocks of pairs"
        elif not res.extra.get("complete", True):
            why = "the scan did not cover every block"
        elif self.grid is None:
            why = "no block of pairs was scanned"
        if why:
            log(f"no map of the NGG scores (pyramid_effect/): {why}")
            return None
        g = self.grid.cpu().numpy().reshape(self.side, self.side)
        g[g < 0] = np.nan
        out = _pyramid(self.gs, {"order": self.order, "pyramid_level0": None, "pyramid_cell": self.cell})
        out.update(effect_level0=g, value=None,
                   effect_value="max NGG score of the pair (support x |mean effect| over the repetitions)")
        return out


# ---------------------------------------------------------------------------------------------
# writing


def write_tsv(path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.10g", na_rep="NA")


def _write_parquet(path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


_PYRAMID_WRITERS = 4  # threads compressing the pyramid's tiles (at most the available cores)


def _save_tile(piece) -> None:
    path, a = piece
    np.savez_compressed(path, v=a)


def write_pyramid(out_dir: Path, level0: np.ndarray, cell: int, tile: int, axis: pd.DataFrame, value: str,
                  chrom_segments: list) -> dict:
    """The map pyramid folder (see models.scans.pyramid): index.json, L{k}/{r}_{c}.npz, axis.tsv."""
    levels = build_levels(level0)
    index = {"format": "epiflow-pair-pyramid/1", "value": value, "cell_snps": int(cell), "tile": int(tile),
             "n_snps": int(len(axis)), "n_levels": len(levels), "levels": [], "chromosomes": chrom_segments,
             "tile_path": "L{level}/{row}_{col}.npz", "array_key": "v", "empty": "NaN (no tested pair)",
             "axis": "axis.tsv"}
    with atomic_dir(out_dir) as tmp:
        pieces = []
        for k, lev in enumerate(levels):
            d = tmp / f"L{k}"
            d.mkdir()
            level_pieces = [(d / f"{r}_{c}.npz", a) for r, c, a in tile_level(lev, tile)]
            pieces += level_pieces
            index["levels"].append({"level": k, "side": int(lev.shape[0]), "cell_snps": int(cell * 2 ** k),
                                    "tiles_per_side": int(math.ceil(lev.shape[0] / tile)),
                                    "n_tiles": len(level_pieces),
                                    "max": float(np.nanmax(lev)) if np.isfinite(lev).any() else None})
        # zlib releases the interpreter lock: the tiles compress in parallel (same bytes per tile)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(1, min(cores, _PYRAMID_WRITERS, len(pieces)))
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                for _ in ex.map(_save_tile, pieces):
                    pass
        else:
            for piece in pieces:
                _save_tile(piece)
        axis.to_csv(tmp / "axis.tsv", sep="\t", index=False)
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def write_scan(result: ScanResult, out: Path, *, plots: bool = True, pyramid_tile: int = 256) -> None:
    """The scan's tables, pyramid and figures in ``out`` (the layout of ``epiflow scan``)."""
    out = Path(out)
    spec = result.spec
    pyramid = effect = None
    if result.pyramid is not None:  # its zlib compression releases the GIL: written beside the rest
        py = result.pyramid
        pyramid = None if py["level0"] is None else _Background(  # NGG maps: the score layer only
            write_pyramid, out / "pyramid", py["level0"], py["cell"], pyramid_tile, py["axis"], py["value"],
            py["segments"])
        if py.get("effect_level0") is not None:  # optional second map (--effect-map): max |effect| per pixel
            effect = _Background(write_pyramid, out / "pyramid_effect", py["effect_level0"], py["cell"],
                                 pyramid_tile, py["axis"], py["effect_value"], py["segments"])
    try:
        name = "top_snps.tsv" if spec.mode == "1d" else "top_pairs.tsv"
        write_tsv(out / name, result.top)
        if result.snps is not None:
            _write_parquet(out / "snps.parquet", result.snps)
        if result.snp_best is not None:
            _write_parquet(out / "snp_best.parquet", result.snp_best)
        if result.chrom_pairs is not None:
            write_tsv(out / "chrom_pairs.tsv", result.chrom_pairs)
        if plots:
            _figures(result, out)
    finally:
        if pyramid is not None:
            pyramid.result()
        if effect is not None:
            effect.result()


class _Background:
    """fn(*args) in a thread; ``result()`` joins it and re-raises its exception."""

    def __init__(self, fn, *args):
        self._out, self._exc = None, None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn, args):
        try:
            self._out = fn(*args)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            self._exc = exc

    def result(self):
        self._thread.join()
        if self._exc is not None:
            raise self._exc
        return self._out


def _figures(result: ScanResult, out: Path) -> None:
    spec, snps, pd_ = result.spec, result.genotypes.snps, result.plot_data
    if spec.method == "ngg":
        if spec.mode == "1d":
            score = pd_["snp_score"]
            pseudo = np.where(score > 0, 10.0 ** (-score / max(score.max(), 1e-12) * 10), np.nan)
            manhattan(out / "manhattan.png", snps["chrom"], snps["bp"], pseudo, ylabel="NGG score (scaled)",
                      title="NGG 1D scores (support x |effect|, scaled to the maximum)")
        return
    if spec.mode == "1d":
        manhattan(out / "manhattan.png", snps["chrom"], snps["bp"], pd_["p"], threshold=0.05 / max(1, len(snps)),
                  title=f"1D exact scan ({len(snps)} SNPs, n={len(result.y)})", highlight=pd_["highlight"],
                  highlight_label=f"top {len(pd_['highlight'])} SNPs",
                  threshold_label=f"Bonferroni: p = 0.05 / {len(snps):,} SNPs")
        return
    py, df, G = result.pyramid, result.top, result.genotypes.dosage
    n_hl = min(10, len(pd_["i"]))
    manhattan(out / "manhattan.png", snps["chrom"], snps["bp"], pd_["best_p"],
              threshold=pd_["sig_p"], ylabel="-log10 p of the best pair",
              title=f"best interaction partner per SNP ({pd_['n_pairs']:,} pairs)",
              highlight=np.unique(np.r_[pd_["i"][:n_hl], pd_["j"][:n_hl]]).astype(np.int64),
              highlight_label=f"SNPs of the top {n_hl} pairs",
              threshold_label=f"Bonferroni: p = 0.05 / {pd_['n_pairs']:,} pairs")
    axis_pos = dict(zip(py["axis"]["snp"].astype(str), py["axis"]["pos"].astype(int)))
    map_overview(out / "map_overview.png", py["level0"], py["cell"],
                 chrom_bounds=py["bounds"], chrom_labels=[s["chrom"] for s in py["segments"]],
                 title=f"pair map: {pd_['n_pairs']:,} pairs, {pd_['n']} samples", marks=overview_marks(df, axis_pos))
    i, j = pd_["i"], pd_["j"]
    if len(i):
        rows, cols, stat = zoom_stats(result)
        ids = snps["snp"].to_numpy()
        map_zoom(out / "map_zoom.png", stat, list(ids[rows]), list(ids[cols]),
                 title=f"around the top pair {df.snp1[0]} x {df.snp2[0]}",
                 mark=(int(np.flatnonzero(rows == i[0])[0]), int(np.flatnonzero(cols == j[0])[0])))
        k = min(6, len(i))
        pair_boxplots(out / "pair_boxplots.png", [G[i[q]] for q in range(k)], [G[j[q]] for q in range(k)],
                      result.y_raw, titles=[f"{df.snp1[q]} x {df.snp2[q]}  p={df.p[q]:.2g}" for q in range(k)],
                      alleles=[snp_alleles(snps, i[q], j[q]) for q in range(k)])


def flat_metrics(summary: dict, prefix: str = "") -> dict:
    """The numbers of a summary, flattened to dotted keys (strings and lists dropped)."""
    out = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, key + "."))
        elif isinstance(v, (bool, np.bool_)):
            continue
        elif isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v):
            out[key] = float(v) if isinstance(v, (float, np.floating)) else int(v)
    return out


def zoom_stats(result: ScanResult, w: int = 40):
    """The statistic around the top pair (rows, cols, stat) for the map zoom, by direct sums."""
    G, order = result.genotypes.dosage, result.pyramid["order"]
    i, j = result.plot_data["i"], result.plot_data["j"]
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    ri, rj = rank_of[i[0]], rank_of[j[0]]
    rows = order[max(0, ri - w): ri + w + 1]
    cols = order[max(0, rj - w): rj + w + 1]
    beta, stat = dense_pair_stats(G[rows], G[cols], result.y, result.trait, statistic=result.spec.statistic,
                                  covariates=result.covariates)
    stat = np.where(rows[:, None] == cols[None, :], np.nan, stat)
    return rows, cols, stat
