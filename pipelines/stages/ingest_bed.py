"""``epiflow ingest-bed``: a PLINK 1 fileset -> the SNP dosage matrix directory used for VCF input.

    epiflow ingest-bed --bfile data/mouse --out work/snp_dosage [--pheno FILE --pheno-col N|NAME]
                       [--covar FILE] [--min-maf X] [--min-call-rate X] [--impute mean|none]
                       [--metrics FILE]

The output directory has the layout :func:`pipelines.encode.save_dosage` writes for a VCF
(``epiflow encode --snp-dosage DIR``), so :func:`load_dosage` reads either:

``X.npy``        samples x SNPs, C order. ``--impute none`` (default): int8 counts of the .bim A1
                 allele (0/1/2), ``-1`` where the call is missing. ``--impute mean``: float32, missing
                 calls replaced by the SNP's mean A1 count over the kept samples.
``samples.txt``  one sample id per line, in matrix row order: the IID, or ``FID_IID`` (as PLINK's VCF
                 export names samples) when IIDs repeat across families.
``snps.tsv``     chrom, pos, id, ref, alt, af, call_rate, cm per column. As in the VCF form ``alt`` is
                 the counted allele: here the .bim A1 (column 5) and ``ref`` the A2 (column 6); ``af``
                 is the A1 frequency among called alleles and ``call_rate`` the fraction of the kept
                 samples with a call, both computed on the kept samples.

and, beyond the VCF form:

``samples.tsv``  sample_id, the .fam columns (fid, iid, father, mother, sex, pheno, ...) and, when
                 given, the joined phenotype (``y``) and covariates (``covar_<name>``).
``summary.json`` the summary this module's :func:`ingest_bed` returns (also written to ``--metrics``).

With ``--pheno`` / ``--covar`` (PLINK ``FID IID v...``, GEMMA one-column-per-trait in .fam order, or
a TSV with an id column; see :mod:`pipelines.io.pheno`) only genotyped samples with a phenotype
value and complete covariates are kept; who was dropped on either side is printed and saved.
SNP filters then apply on the kept samples: a SNP is dropped for call rate when its fraction of
called samples is below ``--min-call-rate``, otherwise for MAF when its minor allele frequency is
below ``--min-maf`` (PLINK ``--geno`` / ``--maf`` semantics, thresholds inclusive of the kept side;
frequencies over all kept samples, as PLINK 1.9 computes them with ``--nonfounders``). SNPs with a
negative base-pair position, which PLINK itself skips, are kept and counted (``n_negative_bp``).

Flags left out default from the ``ingest:`` section of params.yaml (keys ``bfile``, ``out``,
``pheno``, ``pheno_col``, ``pheno_format``, ``covar``, ``covar_cols``, ``covar_format``,
``min_maf``, ``min_call_rate``, ``impute``, ``metrics``); without that section the flag defaults apply.
Every output is written atomically; a bad input is a one-line error with no output left behind.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_dir
from pipelines.errors import EpiflowError, InputError

IMPUTE = ("none", "mean")
DEFAULTS = {"pheno_col": "1", "pheno_format": "auto", "covar_format": "auto", "min_maf": 0.0,
            "min_call_rate": 0.0, "impute": "none"}
_CHUNK = 4096          # SNPs per block when computing statistics and filling the output
_MAX_IDS = 100         # dropped sample ids listed per category in the summary


def add_arguments(p) -> None:
    p.add_argument("--bfile", default=None, help="PLINK 1 prefix (.bed/.bim/.fam, each plain or .gz) "
                                                 "(default: ingest.bfile)")
    p.add_argument("--out", default=None, help="output directory (default: ingest.out)")
    p.add_argument("--pheno", default=None, help="phenotype file: PLINK 'FID IID v...', GEMMA columns in "
                                                 ".fam order, or a TSV with a header")
    p.add_argument("--pheno-col", dest="pheno_col", default=None,
                   help="1-based column among the phenotype values, or a name (default: 1)")
    p.add_argument("--pheno-format", dest="pheno_format", default=None, choices=["auto", "plink", "gemma", "tsv"])
    p.add_argument("--covar", default=None, help="covariate file (same layouts as --pheno)")
    p.add_argument("--covar-cols", dest="covar_cols", default=None,
                   help="comma-separated covariate columns (default: all)")
    p.add_argument("--covar-format", dest="covar_format", default=None, choices=["auto", "plink", "gemma", "tsv"])
    p.add_argument("--min-maf", dest="min_maf", type=float, default=None,
                   help="drop SNPs whose minor allele frequency is below this (default: 0)")
    p.add_argument("--min-call-rate", dest="min_call_rate", type=float, default=None,
                   help="drop SNPs called in a smaller fraction of the kept samples (default: 0)")
    p.add_argument("--impute", default=None, choices=list(IMPUTE),
                   help="missing calls: none (int8, -1) or mean (float32 SNP mean) (default: none)")
    p.add_argument("--metrics", default=None, help="also write the summary JSON here (default: ingest.metrics)")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")


def run(args) -> int:
    from pipelines.atomic import write_json
    from pipelines.params import load_params, section

    cfg = section(load_params(args.params), "ingest", args.params)

    def pick(name):
        v = getattr(args, name, None)
        return v if v is not None else cfg.get(name, DEFAULTS.get(name))

    bfile, out = pick("bfile"), pick("out")
    if args.pheno_col is not None and not pick("pheno"):
        raise EpiflowError("--pheno-col given without a phenotype file (--pheno)")
    if not bfile:
        raise EpiflowError("no PLINK fileset: give --bfile or set ingest.bfile in params.yaml")
    if not out:
        raise EpiflowError("no output directory: give --out or set ingest.out in params.yaml")
    covar_cols = pick("covar_cols")
    if isinstance(covar_cols, str):
        covar_cols = [c.strip() for c in covar_cols.split(",") if c.strip()]
    summary = ingest_bed(
        bfile, out, pheno=pick("pheno"), pheno_col=pick("pheno_col"), pheno_format=pick("pheno_format"),
        covar=pick("covar"), covar_cols=covar_cols, covar_format=pick("covar_format"),
        min_maf=_number(pick("min_maf"), "min_maf"), min_call_rate=_number(pick("min_call_rate"), "min_call_rate"),
        impute=pick("impute"))
    metrics = pick("metrics")
    if metrics:
        write_json(metrics, summary)
    drop = summary["n_snps_dropped"]
    print(f"ingest-bed: {summary['n_samples']} samples x {summary['n_snps']} SNPs ({summary['dtype']}; "
          f"{summary['n_snps_file']} in the file, dropped {drop['call_rate']} for call rate, {drop['maf']} for MAF; "
          f"missing rate {summary['missing_rate']:.4g}) -> {out} ({summary['seconds']['total']:.1f} s)")
    return 0


def _number(v, name) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise EpiflowError(f"{name} must be a number, not {v!r}") from None


# ---------------------------------------------------------------------------------------------
# the work


def ingest_bed(bfile, out_dir, *, pheno=None, pheno_col="1", pheno_format: str = "auto", covar=None,
               covar_cols=None, covar_format: str = "auto", min_maf: float = 0.0, min_call_rate: float = 0.0,
               impute: str = "none", log=None) -> dict:
    """Read ``bfile`` (PLINK prefix), join phenotype/covariates, filter SNPs, write ``out_dir``.

    Returns the summary dict (also ``out_dir/summary.json``). Raises EpiflowError / InputError
    (one line) before anything is written when an input or parameter is bad.
    """
    from pipelines.encode import DosageMatrix, save_dosage
    from pipelines.io.plink import plink_paths, read_bed

    t0 = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if impute not in IMPUTE:
        raise EpiflowError(f"impute must be one of {', '.join(IMPUTE)}, not {impute!r}")
    if not 0.0 <= min_maf <= 0.5:
        raise EpiflowError(f"min_maf must lie in [0, 0.5], not {min_maf}")
    if not 0.0 <= min_call_rate <= 1.0:
        raise EpiflowError(f"min_call_rate must lie in [0, 1], not {min_call_rate}")
    pheno_col = "1" if pheno_col is None else pheno_col

    bed, bim, fam_file = plink_paths(bfile)
    g = read_bed(bfile)
    t_read = time.perf_counter() - t0
    N, P = g.n, g.p
    samples = g.samples.reset_index(drop=True)

    # ---- samples: phenotype / covariate joins
    keep_idx = np.arange(N)
    extra: dict[str, pd.Series] = {}     # extra samples.tsv columns, indexed by .fam row
    pheno_info = covar_info = None
    if pheno is not None:
        from pipelines.io.pheno import join, read_table, trait_kind

        pt = read_table(pheno, pheno_format, samples=samples, columns=[pheno_col])
        col = pt.columns[0]
        jn = join(samples, pt, [col], what="phenotype")
        log(f"ingest-bed: phenotype {col!r} from {pheno}: {jn.report.summary()}")
        keep_idx = jn.geno_index
        extra["y"] = pd.Series(jn.values[:, 0], index=jn.geno_index)
        pheno_info = {"file": str(pheno), "format": pt.fmt, "column": col,
                      "trait": trait_kind(jn.values[:, 0]), **_report(jn.report)}
    if covar is not None:
        from pipelines.io.pheno import join, read_table

        ct = read_table(covar, covar_format, samples=samples, columns=covar_cols)
        cj = join(samples, ct, None, what="covariate")
        log(f"ingest-bed: covariates from {covar}: {cj.report.summary()}")
        common = np.intersect1d(keep_idx, cj.geno_index)
        if len(common) == 0:
            raise InputError(covar, "no sample has both a phenotype value and complete covariates")
        keep_idx = common
        for k, name in enumerate(cj.columns):
            extra[f"covar_{name}"] = pd.Series(cj.values[:, k], index=cj.geno_index)
        covar_info = {"file": str(covar), "format": ct.fmt, "columns": list(cj.columns), **_report(cj.report)}
    n = len(keep_idx)
    sub = None if n == N else keep_idx

    # ---- SNP statistics on the kept samples (SNP-major rows of the .bed layout)
    Gt = g.dosage.T                                   # (P, N) C-contiguous view, no copy
    called = np.empty(P, np.int64)
    a1 = np.empty(P, np.int64)
    for a in range(0, P, _CHUNK):
        blk = Gt[a:a + _CHUNK] if sub is None else np.take(Gt[a:a + _CHUNK], sub, axis=1)
        miss = np.count_nonzero(blk < 0, axis=1)
        called[a:a + _CHUNK] = n - miss
        a1[a:a + _CHUNK] = blk.sum(axis=1, dtype=np.int64) + miss    # each missing call summed as -1
    with np.errstate(invalid="ignore", divide="ignore"):
        af = np.where(called > 0, a1 / (2.0 * np.maximum(called, 1)), 0.0)
    call_rate = called / max(n, 1)
    maf = np.minimum(af, 1.0 - af)
    ok_cr = call_rate >= min_call_rate
    ok_maf = maf >= min_maf
    keep = ok_cr & ok_maf
    kept = np.flatnonzero(keep)
    p = len(kept)
    n_drop_cr = int(np.count_nonzero(~ok_cr))
    n_drop_maf = int(np.count_nonzero(ok_cr & ~ok_maf))
    if p == 0:
        raise EpiflowError(f"{bed}: no SNP passes the filters (of {P}: {n_drop_cr} below min_call_rate "
                           f"{min_call_rate}, {n_drop_maf} below min_maf {min_maf})")
    miss_all = int(n * P - called.sum())
    miss_kept = int(n * p - called[kept].sum())

    # ---- the output matrix, samples x SNPs in C order (the layout of the VCF form)
    mean = af * 2.0
    X = np.empty((n, p), np.float32 if impute == "mean" else np.int8)
    for j in range(0, p, _CHUNK):
        cols = kept[j:j + _CHUNK]
        rows = Gt[cols] if sub is None else Gt[cols][:, sub]
        if impute == "mean":
            rows = rows.astype(np.float32)
            r, c = np.nonzero(rows < 0)
            rows[r, c] = mean[cols][r].astype(np.float32)
        X[:, j:j + len(cols)] = rows.T
    del Gt

    fam = samples.iloc[keep_idx].reset_index(drop=True)
    iid = fam["iid"].astype(str)
    by_iid = not iid.duplicated().any()
    ids = iid.tolist() if by_iid else (fam["fid"].astype(str) + "_" + iid).tolist()
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise InputError(fam_file, f"sample id {dup!r} is not unique (as IID or FID_IID)")
    sample_table = pd.concat([pd.DataFrame({"sample_id": ids}), fam], axis=1)
    for name, s in extra.items():
        sample_table[name] = s.reindex(keep_idx).to_numpy()
    snps = g.snps.iloc[kept].reset_index(drop=True)
    snp_table = pd.DataFrame({"chrom": snps["chrom"], "pos": snps["bp"], "id": snps["snp"], "ref": snps["a2"],
                              "alt": snps["a1"], "af": af[kept], "call_rate": call_rate[kept], "cm": snps["cm"]})
    dm = DosageMatrix(X, None, ids, snp_table)   # save_dosage writes X, samples and snps only

    summary = {
        "bfile": str(bfile), "files": {"bed": str(bed), "bim": str(bim), "fam": str(fam_file)},
        "n_samples_file": N, "n_samples": n, "n_samples_dropped": N - n,
        "sample_ids": "iid" if by_iid else "fid_iid",
        "n_snps_file": P, "n_snps": p,
        "n_snps_dropped": {"call_rate": n_drop_cr, "maf": n_drop_maf, "total": P - p},
        "filters": {"min_maf": float(min_maf), "min_call_rate": float(min_call_rate)},
        "impute": impute, "dtype": str(X.dtype), "counted_allele": "bim A1 (column 5), written as alt",
        "missing_rate": miss_kept / max(1, n * p), "missing_rate_before_filters": miss_all / max(1, n * P),
        "n_missing_calls": miss_kept, "n_imputed": miss_kept if impute == "mean" else 0,
        "n_monomorphic_kept": int(np.count_nonzero(maf[kept] == 0)),
        "n_negative_bp": int(np.count_nonzero(snps["bp"].to_numpy() < 0)),
        "pheno": pheno_info, "covar": covar_info,
    }
    with atomic_dir(out_dir) as tmp:
        save_dosage(dm, tmp)              # X.npy, samples.txt, snps.tsv exactly as for a VCF
        sample_table.to_csv(tmp / "samples.tsv", sep="\t", index=False)
        summary["seconds"] = {"read": round(t_read, 3), "total": round(time.perf_counter() - t0, 3)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=_json) + "\n")
    return summary


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


# ---------------------------------------------------------------------------------------------
# reading back


def load_dosage(path):
    """Load a SNP dosage directory written by ``epiflow ingest-bed`` or ``epiflow encode --snp-dosage``.

    Returns :class:`pipelines.encode.DosageMatrix`: ``X`` as saved (int8 with ``-1`` missing and
    ``mask = X < 0``, or float32 mean-imputed with ``mask`` None), the sample ids of
    ``samples.txt`` and the ``snps.tsv`` table (allele and id columns as strings).
    """
    from pipelines.encode import DosageMatrix

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
