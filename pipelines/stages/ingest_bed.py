"""``epiflow ingest-bed``: a PLINK 1 fileset -> the SNP dosage matrix directory used for VCF input.

    epiflow ingest-bed --bfile data/mouse --out work/snp_dosage [--pheno FILE --pheno-col N|NAME]
                       [--covar FILE] [--maf X] [--min-call-rate X] [--impute mean|none]
                       [--metrics FILE]

The output directory has the layout :func:`pipelines.encode.save_dosage` writes for a VCF
(``epiflow encode --snp-dosage DIR``), so :func:`pipelines.workflows.genotypes.load_dosage` reads either:

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
``summary.json`` the summary :func:`pipelines.workflows.ingest.ingest_bed` returns (also written to ``--metrics``).

With ``--pheno`` / ``--covar`` (PLINK ``FID IID v...``, GEMMA one-column-per-trait in .fam order, or
a TSV with an id column; see :mod:`pipelines.io.pheno`) only genotyped samples with a phenotype
value and complete covariates are kept; who was dropped on either side is printed and saved.
SNP filters then apply on the kept samples: a SNP is dropped for call rate when its fraction of
called samples is below ``--min-call-rate``, otherwise for MAF when its minor allele frequency is
below ``--maf`` (PLINK ``--geno`` / ``--maf`` semantics, thresholds inclusive of the kept side;
frequencies over all kept samples, as PLINK 1.9 computes them with ``--nonfounders``). SNPs with a
negative base-pair position, which PLINK itself skips, are kept and counted (``n_negative_bp``).

Flags left out default from the ``ingest:`` section of params.yaml (keys ``bfile``, ``out``,
``pheno``, ``pheno_col``, ``pheno_format``, ``covar``, ``covar_cols``, ``covar_format``,
``min_maf``, ``min_call_rate``, ``impute``, ``metrics``); without that section the flag defaults apply.
Every output is written atomically; a bad input is a one-line error with no output left behind.
"""
from __future__ import annotations

from pipelines.argtypes import fraction, renamed
from pipelines.atomic import precheck_output_dir, write_metrics
from pipelines.errors import EpiflowError
from pipelines.params import load_params, section
from pipelines.workflows.ingest import IMPUTE, ingest_bed

DEFAULTS = {"pheno_col": "1", "pheno_format": "auto", "covar_format": "auto", "min_maf": 0.0,
            "min_call_rate": 0.0, "impute": "none"}


def add_arguments(p) -> None:
    p.add_argument("--bfile", default=None, help="PLINK 1 prefix (.bed/.bim/.fam, each plain or .gz) "
                                                 "(default: ingest.bfile)")
    p.add_argument("--out", default=None, help="output directory (default: ingest.out)")
    p.add_argument("--pheno", default=None, help="phenotype file: PLINK 'FID IID v...', GEMMA columns in "
                                                 ".fam order, or a TSV with a header")
    p.add_argument("--pheno-col", dest="pheno_col", default=None,
                   help="1-based column among the phenotype values, or a name (default: 1)")
    p.add_argument("--pheno-format", dest="pheno_format", default=None, choices=["auto", "plink", "gemma", "tsv"],
                   help="layout of --pheno (default: auto, told from the file)")
    p.add_argument("--covar", default=None, help="covariate file (same layouts as --pheno)")
    p.add_argument("--covar-cols", dest="covar_cols", default=None,
                   help="comma-separated covariate columns (default: all)")
    p.add_argument("--covar-format", dest="covar_format", default=None, choices=["auto", "plink", "gemma", "tsv"],
                   help="layout of --covar (default: auto, told from the file)")
    p.add_argument("--maf", dest="min_maf", type=fraction, default=None, metavar="MAF",
                   help="drop SNPs whose minor allele frequency is below this (default: ingest.min_maf, else 0)")
    p.add_argument("--min-call-rate", dest="min_call_rate", type=fraction, default=None,
                   help="drop SNPs called in a smaller fraction of the kept samples (default: 0)")
    p.add_argument("--impute", default=None, choices=list(IMPUTE),
                   help="missing calls: none (int8, -1) or mean (float32 SNP mean) (default: none)")
    p.add_argument("--metrics", default=None, help="also write the summary JSON here (default: ingest.metrics)")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    renamed(p, "--min-maf", "--maf")                 # the spelling of earlier releases


def run(args) -> int:
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
    precheck_output_dir(out, [f"{bfile}.bed", f"{bfile}.bim", f"{bfile}.fam", pick("pheno"), pick("covar")])
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
        write_metrics(metrics, summary)
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
