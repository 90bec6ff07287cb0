"""Genotypes, phenotypes and covariates as typed objects: one loader each, one SNP filter.

:class:`GenotypeSet` is an int8 SNP-major dosage matrix (``-1`` missing) with one SNP table schema
(:data:`SNP_COLUMNS`: snp, chrom, bp, cm, a1, a2; ``a1`` is the counted allele) and its sample
table (fid, iid, ...). :meth:`GenotypeSet.load` reads any of the three genotype sources:

* a PLINK 1 fileset (prefix, or the path of its .bed/.bim/.fam, each plain or .gz);
* a SNP dosage folder (``X.npy``, ``samples.txt``, ``snps.tsv``) as ``epiflow encode --snp-dosage``
  and ``epiflow ingest-bed`` write it (:func:`load_dosage`);
* a VCF / VCF.gz / BCF (:func:`pipelines.encode.dosage_matrix_vcf`, ALT allele counts).

:class:`Phenotype` and :class:`Covariates` are values joined to the genotype samples
(:mod:`pipelines.io.pheno`); :func:`align` puts all three on the samples they share.
:class:`SnpFilter` is the MAF / call-rate filter (PLINK ``--maf`` / ``--geno`` semantics) on
:meth:`GenotypeSet.snp_stats`.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from models.jsonio import read_json
from pipelines.encode import DosageMatrix, dosage_matrix_vcf
from pipelines.errors import EpiflowError, InputError
from pipelines.io.pheno import ID_COLUMNS, JoinReport, Table, as_case_control, join, read_table, trait_kind
from pipelines.io.plink import plink_paths, read_bed

__all__ = ["SNP_COLUMNS", "GenotypeSet", "SnpStats", "SnpFilter", "FilterResult", "Phenotype", "Covariates",
           "align", "is_aligned", "load_dosage", "read_id_list", "resolve_trait"]

SNP_COLUMNS = ("snp", "chrom", "bp", "cm", "a1", "a2")
VCF_SUFFIXES = (".vcf", ".vcf.gz", ".vcf.bgz", ".bcf")
_CHUNK = 4096  # SNPs per block of the per-SNP statistics


# ---------------------------------------------------------------------------------------------
# genotypes


@dataclass(frozen=True, eq=False)
class GenotypeSet:
    """SNP-major int8 genotypes with their SNP and sample tables.

    dosage: (p, n) int8 C-contiguous, A1 counts 0/1/2, -1 missing (row k is SNP k).
    snps: :data:`SNP_COLUMNS` (chrom str, bp int64, cm float; NaN when unknown).
    samples: at least fid and iid (strings); a PLINK source keeps every .fam column.
    """

    dosage: np.ndarray
    snps: pd.DataFrame
    samples: pd.DataFrame
    source: str = ""
    kind: str = ""  # plink | dosage | vcf

    def __post_init__(self):
        d = self.dosage
        if not isinstance(d, np.ndarray) or d.ndim != 2 or d.dtype != np.int8:
            raise InputError(self.source, "genotypes must be a (SNPs x samples) int8 matrix with -1 for missing "
                                          "calls (ingest-bed --impute none, or encode with dosage_missing: mask)")
        missing = [c for c in SNP_COLUMNS if c not in self.snps.columns]
        if missing:
            raise ValueError(f"{self.source}: SNP table lacks {', '.join(missing)}")
        if not {"fid", "iid"} <= set(self.samples.columns):
            raise ValueError(f"{self.source}: sample table lacks fid/iid")
        if d.shape != (len(self.snps), len(self.samples)):
            raise InputError(self.source, f"inconsistent genotypes: matrix {d.shape}, {len(self.snps)} SNPs, "
                                          f"{len(self.samples)} samples")

    @property
    def p(self) -> int:
        return int(self.dosage.shape[0])

    @property
    def n(self) -> int:
        return int(self.dosage.shape[1])

    @property
    def sample_ids(self) -> np.ndarray:
        return self.samples["iid"].astype(str).to_numpy()

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path, *, unique_ids: bool = True, vcf_options: dict | None = None) -> "GenotypeSet":
        """Read a PLINK fileset, a SNP dosage folder or a VCF (see the module docstring).

        ``unique_ids`` suffixes repeated SNP ids ``:0``, ``:1``, ... (the NGG stages look SNPs up by
        id); the exact scan reports ids as the .bim has them (``unique_ids=False``).
        """
        p = Path(path)
        if p.is_dir():
            gs = cls.from_dosage_matrix(load_dosage(p), str(p), "dosage")
        elif p.is_file() and p.name.lower().endswith(VCF_SUFFIXES):
            gs = cls.from_dosage_matrix(dosage_matrix_vcf(p, missing="mask", **(vcf_options or {})), str(p), "vcf")
        else:
            try:
                plink_paths(p)
            except (InputError, FileNotFoundError, OSError) as exc:
                if p.exists() or _has_plink_part(p):
                    raise  # a fileset with a part missing: say which
                raise InputError(p, "neither a SNP dosage directory nor a PLINK fileset (.bed/.bim/.fam) nor a "
                                    "VCF: not found") from exc
            g = read_bed(p)
            snps = g.snps[list(SNP_COLUMNS)].reset_index(drop=True)
            gs = cls(g.dosage.T, snps, g.samples.reset_index(drop=True), str(p), "plink")
        return gs.with_unique_ids() if unique_ids else gs

    @classmethod
    def from_dosage_matrix(cls, dm: DosageMatrix, source: str, kind: str) -> "GenotypeSet":
        """From the samples x SNPs :class:`~pipelines.encode.DosageMatrix` of a folder or VCF."""
        if dm.X.dtype != np.int8:
            raise InputError(source, f"dosages are {dm.X.dtype}, the scans need int8 with -1 for missing calls "
                                     "(ingest-bed --impute none, or encode with dosage_missing: mask)")
        s = dm.snps
        ids = s["id"].astype(str).to_numpy()
        derived = np.array([f"{c}:{q}:{r}:{a}" for c, q, r, a in zip(s["chrom"], s["pos"], s["ref"], s["alt"])],
                           dtype=object)
        ids = np.where(np.isin(ids, ["", ".", "nan"]), derived, ids).astype(object)
        cm = pd.to_numeric(s["cm"], errors="coerce").to_numpy(dtype=float) if "cm" in s else np.full(len(s), np.nan)
        snps = pd.DataFrame({"snp": ids, "chrom": s["chrom"].astype(str).to_numpy(),
                             "bp": s["pos"].to_numpy(dtype=np.int64), "cm": cm,
                             "a1": s["alt"].astype(str).to_numpy(), "a2": s["ref"].astype(str).to_numpy()})
        samples = pd.DataFrame({"fid": list(dm.samples), "iid": list(dm.samples)})
        return cls(np.ascontiguousarray(dm.X.T), snps, samples, source, kind)

    # -- views -----------------------------------------------------------------------------------

    def with_unique_ids(self) -> "GenotypeSet":
        """Repeated SNP ids get ``:0``, ``:1``, ... suffixes (ids already unique are unchanged)."""
        s = pd.Series(self.snps["snp"].astype(str).to_numpy(dtype=object))
        dup = s.duplicated(keep=False)
        if dup.any():
            s[dup] = s[dup] + ":" + s[dup].groupby(s[dup]).cumcount().astype(str)
        snps = self.snps.copy()
        snps["snp"] = s.to_numpy(dtype=object)
        return replace(self, snps=snps)

    def subset(self, samples=None, snps=None) -> "GenotypeSet":
        """Rows of ``snps`` and columns of ``samples`` (indices or boolean masks), order as given."""
        d, smp, snp = self.dosage, self.samples, self.snps
        if samples is not None:
            idx = _as_index(samples, self.n)
            d = d[:, idx]
            smp = smp.iloc[idx].reset_index(drop=True)
        if snps is not None:
            idx = _as_index(snps, self.p)
            d = d[idx]
            snp = snp.iloc[idx].reset_index(drop=True)
        return replace(self, dosage=np.ascontiguousarray(d), samples=smp, snps=snp)

    def snp_stats(self) -> "SnpStats":
        """Called samples and A1 allele counts per SNP (exact integers)."""
        n = self.n
        called = np.empty(self.p, np.int64)
        alt = np.empty(self.p, np.int64)
        for a in range(0, self.p, _CHUNK):
            blk = self.dosage[a:a + _CHUNK]
            miss = np.count_nonzero(blk < 0, axis=1)
            called[a:a + _CHUNK] = n - miss
            alt[a:a + _CHUNK] = blk.sum(axis=1, dtype=np.int64) + miss  # each missing call summed as -1
        return SnpStats(n, called, alt)


def _has_plink_part(p: Path) -> bool:
    base = str(p)
    for ext in (".bed.gz", ".bim.gz", ".fam.gz", ".bed", ".bim", ".fam"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return any(Path(base + e).exists() for e in (".bed", ".bim", ".fam", ".bed.gz", ".bim.gz", ".fam.gz"))


def _as_index(sel, size: int) -> np.ndarray:
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if sel.shape != (size,):
            raise ValueError(f"boolean selection of length {sel.shape} for {size} items")
        return np.flatnonzero(sel)
    return sel.astype(np.int64, copy=False)


def load_dosage(path) -> DosageMatrix:
    """Load a SNP dosage directory written by ``epiflow ingest-bed`` or ``epiflow encode --snp-dosage``.

    Returns :class:`pipelines.encode.DosageMatrix`: ``X`` as saved (int8 with ``-1`` missing and
    ``mask = X < 0``, or float32 mean-imputed with ``mask`` None), the sample ids of
    ``samples.txt`` and the ``snps.tsv`` table (allele and id columns as strings).
    """
    d = Path(path)
    need = ["X.npy", "samples.txt", "snps.tsv"]
    missing = [f for f in need if not (d / f).is_file()]
    if missing:
        raise InputError(d, f"not a SNP dosage directory (missing {', '.join(missing)}); run `epiflow "
                            "ingest-bed` or `epiflow encode --snp-dosage`")
    try:
        X = np.load(d / "X.npy", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(d / "X.npy", f"cannot read ({exc})") from None
    samples = (d / "samples.txt").read_text().split("\n")[:-1]
    snps = pd.read_csv(d / "snps.tsv", sep="\t", keep_default_na=False,
                       dtype={"chrom": str, "id": str, "ref": str, "alt": str})
    if X.ndim != 2 or X.shape != (len(samples), len(snps)):
        raise InputError(d, f"inconsistent SNP dosage directory: X {X.shape}, {len(samples)} samples, "
                            f"{len(snps)} SNPs")
    mask = X < 0 if np.issubdtype(X.dtype, np.integer) else None
    return DosageMatrix(X, mask, samples, snps)


def read_id_list(path) -> set:
    """Ids of a list file (first whitespace-separated field per non-empty line; plain or .gz)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "SNP list not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return {ln.split()[0] for ln in f if ln.strip()}


# ---------------------------------------------------------------------------------------------
# the SNP filter


@dataclass(frozen=True)
class SnpStats:
    """Per-SNP counts over the samples of a :class:`GenotypeSet`."""

    n: int
    called: np.ndarray  # samples with a call
    alt: np.ndarray     # A1 alleles among the calls

    @property
    def freq(self) -> np.ndarray:
        """A1 frequency among called alleles (0 without calls)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.called > 0, self.alt / (2.0 * np.maximum(self.called, 1)), 0.0)

    @property
    def maf(self) -> np.ndarray:
        f = self.freq
        return np.minimum(f, 1 - f)

    @property
    def call_rate(self) -> np.ndarray:
        return self.called / max(self.n, 1)

    @property
    def n_missing(self) -> int:
        return int(self.n * len(self.called) - self.called.sum())


@dataclass(frozen=True)
class FilterResult:
    """Which SNPs pass (``keep``) and why the others do not (masks over all SNPs)."""

    keep: np.ndarray
    ok_call_rate: np.ndarray
    ok_maf: np.ndarray
    ok_bp: np.ndarray
    in_extract: np.ndarray | None
    maf: np.ndarray

    @property
    def n_used(self) -> int:
        return int(self.keep.sum())


@dataclass(frozen=True)
class SnpFilter:
    """MAF / call-rate filter with PLINK semantics (``--maf``, ``--geno``; kept side inclusive).

    maf_min: drop SNPs with minor allele frequency below this; with ``polymorphic`` also SNPs
        without calls or with MAF 0 (monomorphic among the samples).
    min_call_rate: drop SNPs called in a smaller fraction of the samples (``ingest-bed``), or
    max_missing: drop SNPs whose missing-call rate exceeds this (PLINK ``--geno``; NGG stages).
    positive_bp: drop SNPs with a negative base-pair position (PLINK's mark of excluded variants).
    extract: keep only these SNP ids (``--extract``).
    """

    maf_min: float = 0.0
    polymorphic: bool = True
    min_call_rate: float | None = None
    max_missing: float | None = None
    positive_bp: bool = False
    extract: frozenset | None = field(default=None)

    def __post_init__(self):
        if not 0.0 <= self.maf_min <= 0.5:
            raise EpiflowError(f"min_maf must lie in [0, 0.5], not {self.maf_min}")
        if self.min_call_rate is not None and not 0.0 <= self.min_call_rate <= 1.0:
            raise EpiflowError(f"min_call_rate must lie in [0, 1], not {self.min_call_rate}")

    def apply(self, stats: SnpStats, snps: pd.DataFrame) -> FilterResult:
        maf = stats.maf
        p = len(maf)
        ok_cr = np.ones(p, bool)
        if self.min_call_rate is not None:
            ok_cr &= stats.call_rate >= self.min_call_rate
        if self.max_missing is not None:
            ok_cr &= (1.0 - stats.called / max(stats.n, 1)) <= self.max_missing + 1e-12
        if self.polymorphic:
            ok_maf = (stats.called > 0) & (maf > 0) & (maf >= self.maf_min)
        else:
            ok_maf = maf >= self.maf_min
        ok_bp = snps["bp"].to_numpy() >= 0 if self.positive_bp else np.ones(p, bool)
        keep = ok_cr & ok_maf & ok_bp
        listed = None
        if self.extract is not None:
            listed = snps["snp"].isin(self.extract).to_numpy()
            keep &= listed
        return FilterResult(keep, ok_cr, ok_maf, ok_bp, listed, maf)


# ---------------------------------------------------------------------------------------------
# phenotypes and covariates


@dataclass(frozen=True, eq=False)
class Phenotype:
    """Phenotype values joined to the samples of a :class:`GenotypeSet`.

    geno_index: the genotype samples (columns) with a value, ascending; y: their values (float64).
    trait: None until :meth:`with_trait` resolves it to 'qt' or 'binary' (then y is 0/1 coded).
    truth: the planted truth of an ``epiflow ngg pheno`` directory, else None.
    """

    geno_index: np.ndarray
    y: np.ndarray
    column: str
    path: str
    report: JoinReport
    trait: str | None = None
    truth: dict | None = None
    fmt: str = ""

    def __post_init__(self):
        if self.y.shape != self.geno_index.shape:
            raise ValueError("phenotype values and sample index differ in length")

    @property
    def join(self) -> dict:
        return self.report.as_dict()

    @property
    def join_summary(self) -> str:
        return self.report.summary()

    @classmethod
    def load(cls, spec, genotypes: GenotypeSet | pd.DataFrame, column="1", fmt: str = "auto") -> "Phenotype":
        """Read a phenotype: a PLINK / GEMMA / TSV file (:func:`pipelines.io.pheno.read_table`), a
        sample sheet whose ``column`` holds case/control words (read as 1/0), a directory written by
        ``epiflow ngg pheno`` (``pheno.tsv`` and ``truth.json``), or None: the .fam phenotype column
        of a PLINK fileset (-9 missing). ``genotypes``: the GenotypeSet or its sample table."""
        samples, source = _samples_of(genotypes)
        truth = None
        if spec is None:
            if "pheno" not in samples:
                raise InputError(source, "no phenotype file given and the genotypes carry no .fam phenotype")
            vals = pd.to_numeric(samples["pheno"], errors="coerce").to_numpy(dtype=float, copy=True)
            vals[vals == -9] = np.nan
            table = Table(source + ".fam", "fam", samples["iid"].to_numpy(), samples["fid"].to_numpy(),
                          pd.DataFrame({"pheno": vals}), row_aligned=True)
            name, path = "pheno", source
        else:
            p = Path(spec)
            if p.is_dir():
                if (p / "truth.json").is_file():
                    truth = read_json(p / "truth.json", "planted-truth JSON of `epiflow ngg pheno`")
                    if not isinstance(truth, dict):
                        raise InputError(p / "truth.json", "not the planted truth of `epiflow ngg pheno` "
                                                           "(a JSON object); rerun it")
                p = p / "pheno.tsv"
                if not p.is_file():
                    raise InputError(spec, "phenotype directory without pheno.tsv (run `epiflow ngg pheno`)")
            if not p.is_file():
                raise InputError(p, "phenotype file not found")
            words = _case_control_sheet(p, str(column))
            if words is not None:
                table = Table(str(p), "tsv", words[0], None, pd.DataFrame({str(column): words[1]}))
                name = str(column)
            else:
                table = read_table(p, fmt, samples=samples, columns=[column])
                name = table.columns[0]
            path = str(p)
        jn = join(samples, table, [name])
        return cls(jn.geno_index, jn.values[:, 0], name, path, jn.report, truth=truth, fmt=table.fmt)

    def with_trait(self, trait: str = "auto", *, where=None, require_variation: bool = False) -> "Phenotype":
        """Resolve ``auto`` and code a case/control trait 0/1 (see :func:`resolve_trait`)."""
        y, t = resolve_trait(self.y, trait, where=where or self.path, require_variation=require_variation,
                             column=self.column)
        return replace(self, y=y, trait=t)


def _samples_of(genotypes) -> tuple[pd.DataFrame, str]:
    if isinstance(genotypes, GenotypeSet):
        return genotypes.samples, str(genotypes.source)
    return genotypes, ""


def resolve_trait(y: np.ndarray, trait: str = "auto", *, where="", require_variation: bool = False,
                  column: str = "") -> tuple[np.ndarray, str]:
    """(y, 'qt' | 'binary'): ``auto`` is binary for two levels {1, 2} or {0, 1}; binary is coded 0/1."""
    if trait == "auto":
        trait = "binary" if trait_kind(y) == "binary" else "qt"
    if trait == "binary":
        try:
            y = as_case_control(y)
        except ValueError:
            raise InputError(where, "trait binary needs two levels coded 1/2 or 0/1 (or case/control)") from None
        if y.min() == y.max():
            raise InputError(where, "case/control phenotype has only one class among the used samples")
    elif trait != "qt":
        raise EpiflowError(f"trait must be auto, qt or binary, not {trait!r}")
    elif require_variation and np.nanstd(y) == 0:
        raise InputError(where, f"phenotype {column!r} is constant")
    return y, trait


def _case_control_sheet(path: Path, col: str):
    """(ids, values) when ``col`` of a tab-separated sheet holds case/control words, else None."""
    try:
        with open(path) as fh:
            head = fh.readline().rstrip("\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return None
    names = [h.strip().lower() for h in head]
    if col.lower() not in names:
        return None
    idc = next((head[names.index(c)] for c in ID_COLUMNS if c in names), None)
    if idc is None:
        return None
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    v = df[head[names.index(col.lower())]].str.strip().str.lower()
    if not v.isin(["case", "control", "", "na", "unknown", "."]).all() or not v.isin(["case", "control"]).any():
        return None
    y = np.where(v == "case", 1.0, np.where(v == "control", 0.0, np.nan))
    return df[idc].astype(str).to_numpy(), y


@dataclass(frozen=True, eq=False)
class Covariates:
    """Covariate values (complete rows) joined to the samples of a :class:`GenotypeSet`."""

    geno_index: np.ndarray
    values: np.ndarray  # (len(geno_index), c) float64
    columns: list
    path: str
    report: JoinReport
    fmt: str = ""

    @property
    def join(self) -> dict:
        return self.report.as_dict()

    @property
    def join_summary(self) -> str:
        return self.report.summary()

    def __post_init__(self):
        if self.values.ndim != 2 or self.values.shape[0] != len(self.geno_index):
            raise ValueError("covariate values and sample index differ in length")
        if not np.isfinite(self.values).all():
            raise InputError(self.path, "covariates contain missing values after the join")

    @classmethod
    def load(cls, path, genotypes: GenotypeSet | pd.DataFrame, columns=None, fmt: str = "auto") -> "Covariates":
        samples, _ = _samples_of(genotypes)
        ct = read_table(path, fmt, samples=samples, columns=columns)
        cj = join(samples, ct, None, what="covariate")
        return cls(cj.geno_index, cj.values, list(cj.columns), str(path), cj.report, fmt=ct.fmt)


def align(genotypes: GenotypeSet, phenotype: Phenotype, covariates: Covariates | None = None):
    """Genotypes, phenotype and covariates restricted to the samples with all three, in genotype
    order: (GenotypeSet, Phenotype, Covariates or None) whose sample k is the same everywhere
    (``geno_index`` of the returned phenotype and covariates is 0..n-1)."""
    idx, y = phenotype.geno_index, phenotype.y
    covar = None
    if covariates is not None:
        common = np.intersect1d(idx, covariates.geno_index)
        if len(common) == 0:
            raise InputError(covariates.path, "no sample has both a phenotype value and complete covariates")
        y = y[np.searchsorted(idx, common)]
        covar = covariates.values[np.searchsorted(covariates.geno_index, common)]
        idx = common
    ar = np.arange(len(idx))
    ph = replace(phenotype, geno_index=ar, y=y)
    cov = None if covariates is None else replace(covariates, geno_index=ar, values=covar)
    return genotypes.subset(samples=idx), ph, cov


def is_aligned(genotypes: GenotypeSet, phenotype: Phenotype, covariates: Covariates | None = None) -> bool:
    """True when phenotype (and covariate) row k is genotype sample k (as :func:`align` returns them)."""
    n = genotypes.n
    ok = len(phenotype.y) == n and np.array_equal(phenotype.geno_index, np.arange(n))
    if covariates is not None:
        ok = ok and np.array_equal(covariates.geno_index, np.arange(n))
    return bool(ok)
