"""``epiflow scan``: exact or NGG scans of one phenotype over a PLINK fileset.

    epiflow scan --bfile data/mouse --pheno pheno.txt --pheno-col 1 --mode 2d --method exact \\
                 --top 1000 --out results/scan2d [--covar cov.txt] [--device auto|cpu|cuda] [--tile N]

1D writes ``DIR/top_snps.tsv`` (best first: rank, snp, chrom, bp, a1, beta, se, t, p, n), all SNPs
in ``DIR/snps.parquet`` and ``DIR/manhattan.png``. 2D writes ``DIR/top_pairs.tsv`` (rank, snp1,
chrom1, bp1, snp2, chrom2, bp2, beta_int, se, stat, p, n; STAT is the Wald chi-square of the
interaction, as PLINK 1.9 ``--epistasis`` reports it), each SNP's best partner
(``DIR/snp_best.parquet``), chromosome-pair summaries (``DIR/chrom_pairs.tsv``), the map pyramid
(``DIR/pyramid/``), a Manhattan plot of per-SNP best pair p-values, map overview and zoom images and
two-locus box plots of the top pairs. NGG (``--method ngg``) writes the same table names with
``score``, ``support`` and ``effect`` columns. ``DIR/summary.json`` records the inputs, sample join
report, filters and timings.

SNPs with a negative base-pair position are skipped (PLINK's convention for excluded variants),
as are SNPs monomorphic among the analysed samples (and below ``--maf``). A 2D scan checkpoints
after every block of tiles to ``DIR/.scan2d.ckpt.npz`` and resumes from it when rerun with the
same inputs and options (``--restart`` discards it); the final outputs are identical to an
uninterrupted run. Covariates (``--covar``, and ``--pcs K`` genotype principal components) enter
the model exactly: y ~ C + x in 1D, y ~ C + a + b + ab in 2D (quantitative traits, complete
genotypes; PLINK ``--epistasis`` takes none). ``summary.json`` records lambda_GC, the genomic
inflation of the statistics (2D: over the pairs among 300 random SNPs). ``--fast-epistasis``
(case/control) reports PLINK 1.9 ``--fast-epistasis``'s statistic (column ``delta_log_or``: the
case minus control difference of two-locus allelic log odds ratios).
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from models.scans.scan2d import prewarm_int8_matmul
from pipelines.argtypes import count, number, renamed
from pipelines.atomic import mark_output_dir, precheck_output_dir, precheck_output_file, write_json, write_metrics
from pipelines.errors import EpiflowError
from pipelines.executor import add_executor_arguments, open_executor, spec_from
from pipelines.workflows.scan import (CKPT_NAME, NGG_CKPT_NAME, NGGSettings, ScanSpec, device_or_error,  # noqa: F401
                                      flat_metrics, load_scan_inputs, run_scan, write_scan)


def add_arguments(p) -> None:
    p.add_argument("--bfile", required=True, help="PLINK 1 prefix (.bed/.bim/.fam, each plain or .gz); a SNP "
                                                   "dosage folder or a VCF is read as well")
    p.add_argument("--pheno", help="phenotype file: PLINK 'FID IID v...', GEMMA columns in .fam order, "
                                   "or a TSV with a header (default: the .fam phenotype column)")
    p.add_argument("--pheno-col", default="1", help="1-based column among the phenotype values, or a name")
    p.add_argument("--pheno-format", default="auto", choices=["auto", "plink", "gemma", "tsv"],
                   help="layout of --pheno (auto: told from the file)")
    p.add_argument("--covar", help="covariate file (same layouts as --pheno)")
    p.add_argument("--covar-cols", help="comma-separated covariate columns (default: all)")
    p.add_argument("--covar-format", default="auto", choices=["auto", "plink", "gemma", "tsv"],
                   help="layout of --covar (auto: told from the file)")
    p.add_argument("--pcs", type=count(0), default=0, metavar="K",
                   help="add the top K genotype principal components (randomised SVD) to the covariates")
    p.add_argument("--fast-epistasis", action="store_true",
                   help="2D case/control: PLINK 1.9's --fast-epistasis statistic (difference of allelic log odds "
                        "ratios between cases and controls) instead of the logistic interaction model")
    p.add_argument("--mode", choices=["1d", "2d"], default="1d", help="single SNPs (1d) or SNP pairs (2d)")
    p.add_argument("--method", choices=["exact", "ngg"], default="exact",
                   help="exact regressions, or the NGG compressed-sensing estimator")
    p.add_argument("--trait", choices=["auto", "qt", "binary"], default="auto",
                   help="quantitative or case/control (auto: two levels {1,2} or {0,1} mean case/control)")
    p.add_argument("--top", type=count(1), default=100, help="number of SNPs / pairs to report")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="array backend (auto: the CUDA GPU when CuPy sees one, else the CPU)")
    p.add_argument("--tile", type=count(1), default=None, help="SNPs per tile side of the 2D scan")
    p.add_argument("--maf", type=number(0.0, 0.5), default=0.0, metavar="MAF",
                   help="drop SNPs with minor allele frequency below this")
    p.add_argument("--extract", help="file of SNP ids to keep (first whitespace-separated field per line)")
    p.add_argument("--jobs", dest="threads", type=count(0), default=0, metavar="N",
                   help="CPU workers (0: all available cores)")
    p.add_argument("--parallel", dest="workers", choices=["auto", "process", "thread"], default="auto",
                   help="how the 2D scan's CPU workers run (auto: forked processes from 4 cores)")
    p.add_argument("--block-pairs", type=count(1), default=None,
                   help="pairs per block of tiles (2D; default 2^27 on the CPU, 2^32 on the GPU)")
    p.add_argument("--checkpoint-every", type=number(0.0), default=30.0,
                   help="seconds between checkpoints (written after the block that crosses the interval; 0: every block)")
    p.add_argument("--pyramid-side", type=count(1), default=4096, help="largest side of the map pyramid's level 0")
    p.add_argument("--pyramid-tile", type=count(1), default=256, help="side of the stored pyramid tiles")
    p.add_argument("--effect-map", action="store_true",
                   help="2D exact scan on the CPU: also write DIR/pyramid_effect/, the map of max |interaction "
                        "effect| per pixel (the viewer's 'colour by |effect|'; the scan runs in threads)")
    p.add_argument("--restart", action="store_true", help="ignore an existing 2D checkpoint")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--metrics", help="also write a flat JSON of the run's numbers here (DVC metrics)")
    p.add_argument("--log", action="store_true",
                   help="log parameters, metrics, tables and figures to MLflow (the project store)")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="MLflow experiment of --log (implies --log; default: scan)")
    p.add_argument("--seed", type=count(0), default=0, help="NGG seed")
    p.add_argument("--ngg-piece-size", dest="ngg_B", type=count(1), default=1000, metavar="B",
                   help="NGG piece size B")
    p.add_argument("--ngg-sketch-size", dest="ngg_d", type=count(1), default=30, metavar="D",
                   help="NGG sketch size d")
    p.add_argument("--ngg-repetitions", dest="ngg_R", type=count(1), default=10, metavar="R",
                   help="NGG repetitions R")
    p.add_argument("--ngg-lam-scale", type=number(0.0, lo_open=True), default=1.0, metavar="X",
                   help="NGG lambda scale")
    p.add_argument("--ngg-engine", choices=["pieces", "tiled"], default="pieces",
                   help="2D NGG estimator: pieces (random pair pieces, the reference) or tiled (random pieces "
                        "drawn inside genotype tiles, shared sketches; fused kernels on a CUDA GPU with Triton; "
                        "writes a map of every pair's score)")
    p.add_argument("--ngg-pieces", choices=["random", "rect"], default="random",
                   help="tiled engine's pieces: random (random sets of B of each step's pairs) or rect (10 x 10 "
                        "rectangles of row SNPs x partners: on a GPU the sketch reads each tile once; fewer planted "
                        "pairs recovered at low R)")
    p.add_argument("--ngg-max-minutes", type=number(0.0), default=10.0, metavar="M",
                   help="NGG: estimate the run time from the first block of pieces and refuse, naming "
                        "settings that fit, when it exceeds M minutes (0: no limit)")
    # spellings of earlier releases
    renamed(p, "--threads", "--jobs")
    renamed(p, "--workers", "--parallel")
    renamed(p, "--mlflow", "--experiment")
    for old, new in (("--ngg-B", "--ngg-piece-size"), ("--ngg-d", "--ngg-sketch-size"), ("--ngg-R", "--ngg-repetitions")):
        renamed(p, old, new)
    add_executor_arguments(p)


def run(args, *, on_block=None) -> int:
    """``epiflow scan``; ``on_block(scan)`` runs after every block of a 2D exact scan."""
    out = Path(args.out)
    if args.top < 1:
        raise EpiflowError("--top must be >= 1")
    device = device_or_error(args.device)
    inputs = [args.bfile and f"{args.bfile}.bed", args.bfile and f"{args.bfile}.bim",
              args.bfile and f"{args.bfile}.fam", args.pheno, args.covar, args.extract]
    precheck_output_dir(out, inputs)
    for name in (CKPT_NAME, NGG_CKPT_NAME):
        ck = out / name
        if (ck.exists() or ck.is_symlink()) and not ck.is_file():
            raise EpiflowError(f"{ck}: the scan checkpoint is not a file (a folder?); remove it")
    if args.metrics:
        precheck_output_file(args.metrics, inputs, "--metrics")
    t0 = time.perf_counter()
    if (args.mode == "2d" and args.method == "exact" and device == "cpu" and not (args.covar or args.pcs)
            and not args.fast_epistasis and args.trait != "binary"):
        prewarm_int8_matmul()  # the int8 GEMM's PyTorch import (quantitative traits), beside reading the inputs
    inp = load_scan_inputs(args.bfile, pheno=args.pheno, pheno_col=args.pheno_col, pheno_format=args.pheno_format,
                           covar=args.covar, covar_cols=args.covar_cols.split(",") if args.covar_cols else None,
                           covar_format=args.covar_format, trait=args.trait, maf=args.maf, extract=args.extract,
                           min_snps=2 if args.mode == "2d" else 1)
    ph = inp.phenotype
    if args.fast_epistasis and (args.mode != "2d" or args.method != "exact" or ph.trait != "binary"):
        raise EpiflowError(f"--fast-epistasis is a 2D exact scan of a case/control trait (this run: --mode {args.mode}, "
                           f"--method {args.method}, trait {ph.trait})")
    summary = {"bfile": str(args.bfile), "pheno": args.pheno, "pheno_col": ph.column, "covar": args.covar,
               "covar_cols": args.covar_cols.split(",") if args.covar_cols else None,
               "mode": args.mode, "method": args.method, "trait": ph.trait, "device": device,
               "n_samples": int(len(ph.y)), "join": ph.join, "covar_join": inp.covar_join,
               "filters": inp.filters, "missing_call_rate": inp.missing_rate, "top": args.top}
    spec = ScanSpec(mode=args.mode, method=args.method, top=args.top, device=device, tile=args.tile,
                    block_pairs=args.block_pairs, threads=args.threads, workers=args.workers,
                    pyramid_side=args.pyramid_side, checkpoint_every=args.checkpoint_every, restart=args.restart,
                    pcs=args.pcs, effect_map=getattr(args, "effect_map", False),
                    statistic="fast_epistasis" if args.fast_epistasis else None,
                    ngg=NGGSettings(B=args.ngg_B, d=args.ngg_d, R=args.ngg_R, lam_scale=args.ngg_lam_scale,
                                    seed=args.seed, engine=args.ngg_engine, pieces=args.ngg_pieces,
                                    max_minutes=args.ngg_max_minutes or None))
    with open_executor(spec_from(args, device=device), log=lambda msg: print(msg, flush=True)):
        result = run_scan(inp.genotypes, ph, spec, covariates=inp.covariates, checkpoint_dir=out, on_block=on_block,
                          on_start=lambda: mark_output_dir(out),
                          log=lambda msg: print(msg, flush=True))
    write_scan(result, out, plots=not args.no_plots, pyramid_tile=args.pyramid_tile)
    summary.update(result.numbers)
    summary["seconds_total"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    metrics = flat_metrics(summary)
    if args.metrics:
        write_metrics(args.metrics, metrics)
    if args.log or args.experiment:
        _log_mlflow(args, out, summary, metrics)
    print(f"wrote {out}/ ({summary['seconds_total']:.1f} s)")
    return 0


def _log_mlflow(args, out: Path, summary: dict, metrics: dict) -> None:
    from pipelines import tracking
    from pipelines.io.plink import plink_paths

    tracking.setup(args.experiment or "scan")
    import mlflow

    files = [Path(p).resolve() for p in (*plink_paths(args.bfile), args.pheno, args.covar) if p]
    root = tracking.store_root().resolve()
    inside = [f for f in files if root in f.parents]
    extra = {"stage": f"scan-{args.mode}-{args.method}"}
    extra.update({f"md5.{f.name}": tracking.file_md5(f) for f in files if f not in inside})
    params = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command",)}
    name = f"scan-{args.mode}-{args.method}"
    with tracking.parent_run(name, tracking.run_tags(inside, extra=extra), tracking.flatten_params(params)):
        mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in metrics.items()})
        for f in sorted(out.iterdir()):
            if f.is_file() and f.suffix in (".tsv", ".json", ".png"):
                mlflow.log_artifact(str(f))
        if any((out / d / "index.json").is_file() for d in ("pyramid", "pyramid_effect")):  # a 2D map: the viewer
            view = f"epiflow view {shlex.quote(str(out.resolve()))}"
            mlflow.set_tag("epiflow.view", view)
            mlflow.log_text(view + "\n", "view_command.txt")
