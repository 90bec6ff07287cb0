"""A PLINK 1 fileset -> the SNP dosage folder (the layout ``epiflow encode --snp-dosage`` writes).

:func:`ingest_bed` reads the fileset (:class:`~pipelines.workflows.genotypes.GenotypeSet`), joins
the phenotype and covariates (:class:`~pipelines.workflows.genotypes.Phenotype`,
:class:`~pipelines.workflows.genotypes.Covariates`), filters SNPs on the kept samples
(:class:`~pipelines.workflows.genotypes.SnpFilter`: call rate, then MAF; PLINK ``--geno`` /
``--maf`` semantics, thresholds inclusive of the kept side, SNPs with a negative position kept and
counted) and writes ``X.npy``, ``samples.txt``, ``snps.tsv`` (:func:`pipelines.encode.save_dosage`),
``samples.tsv`` and ``summary.json`` atomically. See :mod:`pipelines.stages.ingest_bed` for the
folder's layout.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_dir
from pipelines.encode import DosageMatrix, save_dosage
from pipelines.errors import EpiflowError, InputError
from pipelines.io.pheno import trait_kind
from pipelines.io.plink import plink_paths
from pipelines.workflows.genotypes import Covariates, GenotypeSet, Phenotype, SnpFilter

__all__ = ["IMPUTE", "ingest_bed"]

IMPUTE = ("none", "mean")
_CHUNK = 4096          # SNPs per block when filling the output
_MAX_IDS = 100         # dropped sample ids listed per category in the summary


def ingest_bed(bfile, out_dir, *, pheno=None, pheno_col="1", pheno_format: str = "auto", covar=None,
               covar_cols=None, covar_format: str = "auto", min_maf: float = 0.0, min_call_rate: float = 0.0,
               impute: str = "none", log=None) -> dict:
    """Read ``bfile`` (PLINK prefix), join phenotype/covariates, filter SNPs, write ``out_dir``.

    Returns the summary dict (also ``out_dir/summary.json``). Raises EpiflowError / InputError
    (one line) before anything is written when an input or parameter is bad.
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if impute not in IMPUTE:
        raise EpiflowError(f"impute must be one of {', '.join(IMPUTE)}, not {impute!r}")
    flt = SnpFilter(maf_min=min_maf, polymorphic=False, min_call_rate=min_call_rate)
    pheno_col = "1" if pheno_col is None else pheno_col
    bed, bim, fam_file = plink_paths(bfile)
    g = GenotypeSet.load(bfile, unique_ids=False)
    t_read = time.perf_counter() - t0
    keep_idx, extra, pheno_info, covar_info = _join_samples(g, pheno, pheno_col, pheno_format, covar, covar_cols,
                                                            covar_format, log)
    used = g if len(keep_idx) == g.n else g.subset(samples=keep_idx)
    stats = used.snp_stats()
    if not int(stats.called.sum()):
        raise EpiflowError(f"{bed}: no called genotype: every call of the {used.n} samples x {g.p} SNPs "
                           "is missing")
    res = flt.apply(stats, used.snps)
    kept = np.flatnonzero(res.keep)
    P, n, p = g.p, used.n, len(kept)
    n_drop_cr = int(np.count_nonzero(~res.ok_call_rate))
    n_drop_maf = int(np.count_nonzero(res.ok_call_rate & ~res.ok_maf))
    if p == 0:
        raise EpiflowError(f"{bed}: no SNP passes the filters (of {P}: {n_drop_cr} below min_call_rate "
                           f"{min_call_rate}, {n_drop_maf} below min_maf {min_maf})")
    X = _output_matrix(used, kept, stats.freq * 2.0, impute)
    ids, by_iid, sample_table = _sample_table(g, keep_idx, extra, fam_file)
    snps = used.snps.iloc[kept].reset_index(drop=True)
    af, call_rate = stats.freq, stats.call_rate
    snp_table = pd.DataFrame({"chrom": snps["chrom"], "pos": snps["bp"], "id": snps["snp"], "ref": snps["a2"],
                              "alt": snps["a1"], "af": af[kept], "call_rate": call_rate[kept], "cm": snps["cm"]})
    miss_all = int(n * P - stats.called.sum())
    miss_kept = int(n * p - stats.called[kept].sum())
    summary = {
        "bfile": str(bfile), "files": {"bed": str(bed), "bim": str(bim), "fam": str(fam_file)},
        "n_samples_file": g.n, "n_samples": n, "n_samples_dropped": g.n - n,
        "sample_ids": "iid" if by_iid else "fid_iid",
        "n_snps_file": P, "n_snps": p,
        "n_snps_dropped": {"call_rate": n_drop_cr, "maf": n_drop_maf, "total": P - p},
        "filters": {"min_maf": float(min_maf), "min_call_rate": float(min_call_rate)},
        "impute": impute, "dtype": str(X.dtype), "counted_allele": "bim A1 (column 5), written as alt",
        "missing_rate": miss_kept / max(1, n * p), "missing_rate_before_filters": miss_all / max(1, n * P),
        "n_missing_calls": miss_kept, "n_imputed": miss_kept if impute == "mean" else 0,
        "n_monomorphic_kept": int(np.count_nonzero(res.maf[kept] == 0)),
        "n_negative_bp": int(np.count_nonzero(snps["bp"].to_numpy() < 0)),
        "pheno": pheno_info, "covar": covar_info,
    }
    with atomic_dir(out_dir) as tmp:
        save_dosage(DosageMatrix(X, None, ids, snp_table), tmp)   # X.npy, samples.txt, snps.tsv as for a VCF
        sample_table.to_csv(tmp / "samples.tsv", sep="\t", index=False)
        summary["seconds"] = {"read": round(t_read, 3), "total": round(time.perf_counter() - t0, 3)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=_json) + "\n")
    return summary


def _join_samples(g: GenotypeSet, pheno, pheno_col, pheno_format, covar, covar_cols, covar_format, log):
    """Samples with a phenotype value and complete covariates: (.fam rows, extra samples.tsv
    columns indexed by .fam row, phenotype report, covariate report)."""
    keep_idx = np.arange(g.n)
    extra: dict[str, pd.Series] = {}
    pheno_info = covar_info = None
    if pheno is not None:
        ph = Phenotype.load(pheno, g, pheno_col, pheno_format)
        log(f"ingest-bed: phenotype {ph.column!r} from {pheno}: {ph.join_summary}")
        keep_idx = ph.geno_index
        extra["y"] = pd.Series(ph.y, index=ph.geno_index)
        pheno_info = {"file": str(pheno), "format": ph.fmt, "column": ph.column,
                      "trait": trait_kind(ph.y), **_report(ph.report)}
    if covar is not None:
        cv = Covariates.load(covar, g, covar_cols, covar_format)
        log(f"ingest-bed: covariates from {covar}: {cv.join_summary}")
        common = np.intersect1d(keep_idx, cv.geno_index)
        if len(common) == 0:
            raise InputError(covar, "no sample has both a phenotype value and complete covariates")
        keep_idx = common
        for k, name in enumerate(cv.columns):
            extra[f"covar_{name}"] = pd.Series(cv.values[:, k], index=cv.geno_index)
        covar_info = {"file": str(covar), "format": cv.fmt, "columns": list(cv.columns), **_report(cv.report)}
    return keep_idx, extra, pheno_info, covar_info


def _output_matrix(used: GenotypeSet, kept: np.ndarray, mean: np.ndarray, impute: str) -> np.ndarray:
    """Samples x kept SNPs in C order: int8 (-1 missing) or float32 with the SNP mean for missing."""
    Gt = used.dosage
    X = np.empty((used.n, len(kept)), np.float32 if impute == "mean" else np.int8)
    for j in range(0, len(kept), _CHUNK):
        cols = kept[j:j + _CHUNK]
        rows = Gt[cols]
        if impute == "mean":
            rows = rows.astype(np.float32)
            r, c = np.nonzero(rows < 0)
            rows[r, c] = mean[cols][r].astype(np.float32)
        X[:, j:j + len(cols)] = rows.T
    return X


def _sample_table(g: GenotypeSet, keep_idx, extra: dict, fam_file):
    """(sample ids, whether they are IIDs, the samples.tsv table)."""
    fam = g.samples.iloc[keep_idx].reset_index(drop=True)
    iid = fam["iid"].astype(str)
    by_iid = not iid.duplicated().any()
    ids = iid.tolist() if by_iid else (fam["fid"].astype(str) + "_" + iid).tolist()
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise InputError(fam_file, f"sample id {dup!r} is not unique (as IID or FID_IID)")
    sample_table = pd.concat([pd.DataFrame({"sample_id": ids}), fam], axis=1)
    for name, s in extra.items():
        sample_table[name] = s.reindex(keep_idx).to_numpy()
    return ids, by_iid, sample_table


def _report(rep) -> dict:
    d = rep.as_dict()
    d["summary"] = rep.summary()
    d["dropped"] = {k: [str(x) for x in getattr(rep, k)[:_MAX_IDS]]
                    for k in ("genotyped_only", "table_only", "missing_value")}
    return d


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    return str(o)
