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
uninterrupted run. Covariates in 2D are regressed out of the phenotype before the pair scan (PLINK
``--epistasis`` takes none); 1D adjusts for them exactly.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_dir, atomic_path, write_json
from pipelines.errors import EpiflowError, InputError

CKPT_NAME = ".scan2d.ckpt.npz"


def add_arguments(p) -> None:
    p.add_argument("--bfile", required=True, help="PLINK 1 prefix (.bed/.bim/.fam, each plain or .gz)")
    p.add_argument("--pheno", help="phenotype file: PLINK 'FID IID v...', GEMMA columns in .fam order, "
                                   "or a TSV with a header (default: the .fam phenotype column)")
    p.add_argument("--pheno-col", default="1", help="1-based column among the phenotype values, or a name")
    p.add_argument("--pheno-format", default="auto", choices=["auto", "plink", "gemma", "tsv"])
    p.add_argument("--covar", help="covariate file (same layouts as --pheno)")
    p.add_argument("--covar-cols", help="comma-separated covariate columns (default: all)")
    p.add_argument("--covar-format", default="auto", choices=["auto", "plink", "gemma", "tsv"])
    p.add_argument("--mode", choices=["1d", "2d"], default="1d")
    p.add_argument("--method", choices=["exact", "ngg"], default="exact")
    p.add_argument("--trait", choices=["auto", "qt", "binary"], default="auto",
                   help="quantitative or case/control (auto: two levels {1,2} or {0,1} mean case/control)")
    p.add_argument("--top", type=int, default=100, help="number of SNPs / pairs to report")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tile", type=int, default=None, help="SNPs per tile side of the 2D scan")
    p.add_argument("--maf", type=float, default=0.0, help="drop SNPs with minor allele frequency below this")
    p.add_argument("--extract", help="file of SNP ids to keep (first whitespace-separated field per line)")
    p.add_argument("--threads", type=int, default=0, help="CPU workers (0: all available cores)")
    p.add_argument("--workers", choices=["auto", "process", "thread"], default="auto",
                   help="CPU parallelism of the 2D scan (auto: forked processes from 4 cores)")
    p.add_argument("--block-pairs", type=int, default=None,
                   help="pairs per block of tiles (2D; default 2^27 on the CPU, 2^32 on the GPU)")
    p.add_argument("--checkpoint-every", type=float, default=30.0,
                   help="seconds between checkpoints (written after the block that crosses the interval; 0: every block)")
    p.add_argument("--pyramid-side", type=int, default=4096, help="largest side of the map pyramid's level 0")
    p.add_argument("--pyramid-tile", type=int, default=256, help="side of the stored pyramid tiles")
    p.add_argument("--restart", action="store_true", help="ignore an existing 2D checkpoint")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--metrics", help="also write a flat JSON of the run's numbers here (DVC metrics)")
    p.add_argument("--mlflow", metavar="EXPERIMENT", help="log parameters, metrics, tables and figures to this "
                                                          "MLflow experiment of the project store")
    p.add_argument("--seed", type=int, default=0, help="NGG seed")
    p.add_argument("--ngg-B", type=int, default=1000, help="NGG piece size")
    p.add_argument("--ngg-d", type=int, default=30, help="NGG sketch size")
    p.add_argument("--ngg-R", type=int, default=10, help="NGG repetitions")
    p.add_argument("--ngg-lam-scale", type=float, default=1.0, help="NGG lambda scale")


# ---------------------------------------------------------------------------------------------
# inputs


def load_inputs(args, log=print) -> dict:
    """Genotypes, phenotype, covariates and the SNP filter, aligned on samples."""
    from pipelines.io.pheno import as_case_control, join, read_table, select_column, trait_kind
    from pipelines.io.plink import read_bed

    t0 = time.perf_counter()
    g = read_bed(args.bfile)
    t_read = time.perf_counter() - t0
    if args.pheno:
        table = read_table(args.pheno, args.pheno_format, samples=g.samples, columns=[args.pheno_col])
        col = table.columns[0]
    else:
        vals = pd.to_numeric(g.samples["pheno"], errors="coerce").to_numpy(dtype=float)
        vals[vals == -9] = np.nan
        from pipelines.io.pheno import Table

        table = Table(str(args.bfile) + ".fam", "fam", g.samples["iid"].to_numpy(), g.samples["fid"].to_numpy(),
                      pd.DataFrame({"pheno": vals}), row_aligned=True)
        col = "pheno"
    jn = join(g.samples, table, [col])
    idx, y = jn.geno_index, jn.values[:, 0]
    covar = None
    cov_report = None
    if args.covar:
        cols = args.covar_cols.split(",") if args.covar_cols else None
        ct = read_table(args.covar, args.covar_format, samples=g.samples, columns=cols)
        cj = join(g.samples, ct, None, what="covariate")
        common = np.intersect1d(idx, cj.geno_index)
        if len(common) == 0:
            raise InputError(args.covar, "no sample has both a phenotype value and complete covariates")
        y = y[np.searchsorted(idx, common)]
        covar = cj.values[np.searchsorted(cj.geno_index, common)]
        idx = common
        cov_report = cj.report.as_dict()
        log(f"covariates: {cj.report.summary()}")
    log(f"phenotype {col!r}: {jn.report.summary()}")
    trait = args.trait
    if trait == "auto":
        trait = "binary" if trait_kind(y) == "binary" else "qt"
    if trait == "binary":
        try:
            y = as_case_control(y)
        except ValueError:
            raise InputError(args.pheno or args.bfile, "--trait binary needs two levels coded 1/2 or 0/1") from None
        if y.min() == y.max():
            raise InputError(args.pheno or args.bfile, "case/control phenotype has only one class among the used samples")
    G = g.dosage[idx].T  # (p, n) view rows of the used samples
    G = np.ascontiguousarray(G)
    called = G >= 0
    cnt = called.sum(axis=1)
    alt = np.where(called, G, 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = alt / (2.0 * np.maximum(cnt, 1))
    maf = np.minimum(freq, 1 - freq)
    poly = (cnt > 0) & (maf > 0) & (maf >= args.maf)
    pos_ok = g.snps["bp"].to_numpy() >= 0
    keep = poly & pos_ok
    filters = {"n_snps_file": int(g.p), "negative_bp": int((~pos_ok).sum()),
               "monomorphic_or_low_maf": int((pos_ok & ~poly).sum())}
    if getattr(args, "extract", None):
        path = Path(args.extract)
        if not path.is_file():
            raise InputError(path, "SNP list not found")
        wanted = {ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()}
        listed = g.snps["snp"].isin(wanted).to_numpy()
        if not listed.any():
            raise InputError(path, f"none of its {len(wanted)} SNP ids is in the .bim file")
        filters["not_in_extract"] = int((~listed).sum())
        keep &= listed
    filters["n_snps_used"] = int(keep.sum())
    log(f"SNPs: {g.p} in {Path(g.source).name}, {filters['negative_bp']} with negative position skipped, "
        f"{filters['monomorphic_or_low_maf']} monomorphic/below MAF {args.maf} skipped, {filters['n_snps_used']} used")
    if keep.sum() < (2 if args.mode == "2d" else 1):
        raise EpiflowError("too few usable SNPs after filtering")
    return {"g": g, "G": np.ascontiguousarray(G[keep]), "snps": g.snps[keep].reset_index(drop=True),
            "snp_index": np.flatnonzero(keep), "y": y, "covar": covar, "trait": trait, "sample_index": idx,
            "join": jn.report.as_dict(), "covar_join": cov_report, "filters": filters, "maf": maf[keep],
            "missing_rate": float((~called[keep]).mean()), "t_read": t_read, "pheno_col": col}


# ---------------------------------------------------------------------------------------------
# writing


def _write_tsv(path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.10g", na_rep="NA")


def _write_parquet(path, df: pd.DataFrame) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def write_pyramid(out_dir: Path, level0: np.ndarray, cell: int, tile: int, axis: pd.DataFrame, value: str,
                  chrom_segments: list) -> dict:
    """The map pyramid folder (see models.scans.pyramid): index.json, L{k}/{r}_{c}.npz, axis.tsv."""
    from models.scans.pyramid import build_levels, tile_level

    levels = build_levels(level0)
    index = {"format": "epiflow-pair-pyramid/1", "value": value, "cell_snps": int(cell), "tile": int(tile),
             "n_snps": int(len(axis)), "n_levels": len(levels), "levels": [], "chromosomes": chrom_segments,
             "tile_path": "L{level}/{row}_{col}.npz", "array_key": "v", "empty": "NaN (no tested pair)",
             "axis": "axis.tsv"}
    with atomic_dir(out_dir) as tmp:
        for k, lev in enumerate(levels):
            d = tmp / f"L{k}"
            d.mkdir()
            n_tiles = 0
            for r, c, a in tile_level(lev, tile):
                np.savez_compressed(d / f"{r}_{c}.npz", v=a)
                n_tiles += 1
            index["levels"].append({"level": k, "side": int(lev.shape[0]), "cell_snps": int(cell * 2 ** k),
                                    "tiles_per_side": int(math.ceil(lev.shape[0] / tile)), "n_tiles": n_tiles,
                                    "max": float(np.nanmax(lev)) if np.isfinite(lev).any() else None})
        axis.to_csv(tmp / "axis.tsv", sep="\t", index=False)
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


# ---------------------------------------------------------------------------------------------
# runs


def run(args) -> int:
    out = Path(args.out)
    if args.top < 1:
        raise EpiflowError("--top must be >= 1")
    from models.backend import BackendUnavailable, resolve_device

    try:
        device = resolve_device(args.device)
    except BackendUnavailable as exc:
        raise EpiflowError(str(exc)) from None
    t0 = time.perf_counter()
    data = load_inputs(args)
    summary = {"bfile": str(args.bfile), "pheno": args.pheno, "pheno_col": data["pheno_col"], "covar": args.covar,
               "mode": args.mode, "method": args.method, "trait": data["trait"], "device": device,
               "n_samples": int(len(data["y"])), "join": data["join"], "covar_join": data["covar_join"],
               "filters": data["filters"], "missing_call_rate": data["missing_rate"], "top": args.top}
    summary.update(scan_loaded(args, data, out, device))
    summary["seconds_total"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    metrics = flat_metrics(summary)
    if args.metrics:
        write_json(args.metrics, metrics)
    if args.mlflow:
        _log_mlflow(args, out, summary, metrics)
    print(f"wrote {out}/ ({summary['seconds_total']:.1f} s)")
    return 0


def scan_loaded(args, data: dict, out: Path, device: str) -> dict:
    """Run one scan (``args.mode`` x ``args.method``) on inputs shaped as :func:`load_inputs` returns.

    ``data`` needs ``G`` ((p, n) int8, -1 missing), ``snps`` (snp, chrom, bp, a1, a2), ``y``,
    ``covar`` (or None) and ``trait``; ``args`` the scan options of :func:`add_arguments` (the DVC
    stages of pipelines.stages.ngg build them from params.yaml). Writes the tables and figures into
    ``out`` and returns the numbers for the summary.
    """
    if args.method == "ngg":
        return _run_ngg(args, data, out, device)
    if args.mode == "1d":
        return _run_exact_1d(args, data, out, device)
    return _run_exact_2d(args, data, out, device)


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


def _log_mlflow(args, out: Path, summary: dict, metrics: dict) -> None:
    from pipelines import tracking

    tracking.setup(args.mlflow)
    from pipelines.io.plink import plink_paths

    files = [Path(p).resolve() for p in (*plink_paths(args.bfile), args.pheno, args.covar) if p]
    root = tracking.store_root().resolve()
    inside = [f for f in files if root in f.parents]
    extra = {"stage": f"scan-{args.mode}-{args.method}"}
    extra.update({f"md5.{f.name}": tracking.file_md5(f) for f in files if f not in inside})
    params = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command",)}
    name = f"scan-{args.mode}-{args.method}"
    import mlflow

    with tracking.parent_run(name, tracking.run_tags(inside, extra=extra), tracking.flatten_params(params)):
        mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in metrics.items()})
        for f in sorted(out.iterdir()):
            if f.is_file() and f.suffix in (".tsv", ".json", ".png"):
                mlflow.log_artifact(str(f))


def _run_exact_1d(args, data, out: Path, device: str) -> dict:
    from models.scans.scan1d import scan_1d

    if data["trait"] == "binary":
        print("note: 1D exact scan of a case/control trait uses linear regression on 0/1 (a linear probability model)")
    t0 = time.perf_counter()
    r = scan_1d(data["G"], data["y"], data["covar"], device=device, snp_major=True)
    t_scan = time.perf_counter() - t0
    snps = data["snps"]
    df = pd.DataFrame({"snp": snps["snp"], "chrom": snps["chrom"], "bp": snps["bp"], "a1": snps["a1"], "a2": snps["a2"],
                       "beta": r.beta, "se": r.se, "t": r.t, "p": r.p, "n": r.n})
    order = np.lexsort((np.arange(len(df)), np.where(np.isfinite(r.p), r.p, np.inf)))
    top = df.iloc[order[: args.top]].copy()
    top = top[np.isfinite(top["p"])]
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    _write_tsv(out / "top_snps.tsv", top)
    _write_parquet(out / "snps.parquet", df)
    if not args.no_plots:
        from pipelines.plots.scans import manhattan

        manhattan(out / "manhattan.png", snps["chrom"], snps["bp"], r.p, threshold=0.05 / max(1, len(df)),
                  title=f"1D exact scan ({len(df)} SNPs, n={len(data['y'])})", highlight=order[: min(10, args.top)])
    return {"seconds_scan": t_scan, "n_tests": int(np.isfinite(r.p).sum()), "covariate_columns": int(r.k_covariates),
            "best": top.iloc[0][["snp", "p"]].to_dict() if len(top) else None}


def _residualise(y, covar):
    from models.scans.scan1d import covariate_basis

    Q = covariate_basis(len(y), covar)
    return y - Q @ (Q.T @ y)


def _run_exact_2d(args, data, out: Path, device: str) -> dict:
    from models.scans.scan2d import Scan2D, Scan2DOptions

    y = data["y"]
    if data["covar"] is not None:
        if data["trait"] == "binary":
            raise InputError(args.covar, "covariates are not supported by the case/control 2D scan")
        y = _residualise(y, data["covar"])
        print("covariates regressed out of the phenotype before the pair scan")
    opt = Scan2DOptions(tile=args.tile, top_k=args.top, trait=data["trait"], pyramid_side=args.pyramid_side,
                        block_pairs=args.block_pairs, threads=args.threads, workers=args.workers)
    try:
        scan = Scan2D(data["G"], y, data["snps"]["chrom"].to_numpy(), opt, device=device)
    except ValueError as exc:
        raise EpiflowError(str(exc)) from None
    ckpt = out / CKPT_NAME
    resumed_from = 0
    if ckpt.exists() and not args.restart:
        try:
            with np.load(ckpt, allow_pickle=False) as z:
                scan.load_state({k: z[k] for k in z.files})
            resumed_from = scan.next_block
            print(f"resuming from checkpoint: block {scan.next_block} of {len(scan.blocks)}")
        except (ValueError, KeyError, OSError) as exc:
            print(f"ignoring checkpoint {ckpt.name}: {exc}")
            scan.reset()
    hook = getattr(args, "_on_block", None)

    last = [time.perf_counter()]

    def save(s):
        if not s.done and time.perf_counter() - last[0] >= args.checkpoint_every:
            with atomic_path(ckpt, suffix=".npz") as tmp:
                np.savez(tmp, **s.state())
            last[0] = time.perf_counter()
            print(f"  block {s.next_block}/{len(s.blocks)} done, checkpoint saved ({s.elapsed:.1f} s)", flush=True)
        if hook is not None:
            hook(s)

    print(f"2D exact scan: {scan.p} SNPs, {scan.n_pairs:,} pairs, {scan.n} samples, tile {scan.tile}, "
          f"{len(scan.blocks)} blocks, {'complete' if scan.prep.complete else 'with missing calls'}, "
          f"trait {data['trait']}, device {device}")
    t0 = time.perf_counter()
    scan.run(on_block=save)
    t_scan = time.perf_counter() - t0
    res = scan.results()
    _write_2d_outputs(args, data, out, scan, res, y)
    ckpt.unlink(missing_ok=True)
    return {"seconds_scan": t_scan, "seconds_scan_total": res["elapsed"], "resumed_from_block": resumed_from,
            "n_pairs": res["n_pairs"], "n_tested": res["tested"], "sig_p": res["sig_p"], "tile": scan.tile,
            "pairs_per_second": res["n_pairs"] / max(res["elapsed"], 1e-9), "y_scale": scan.y_scale}


def _pair_counts(G, i, j) -> np.ndarray:
    return ((G[i] >= 0) & (G[j] >= 0)).sum(axis=1)


def _write_2d_outputs(args, data, out: Path, scan, res: dict, y) -> None:
    from pipelines.plots.scans import manhattan, map_overview, map_zoom, pair_boxplots

    snps, G = data["snps"], data["G"]
    top = res["top"]
    i, j = top["i"], top["j"]
    n_used = _pair_counts(G, i, j)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.abs(top["effect"]) / np.sqrt(top["stat"])
    effect_name = "beta_int" if data["trait"] == "qt" else "log_or_int"
    df = pd.DataFrame({
        "rank": np.arange(1, len(i) + 1), "snp1": snps["snp"].to_numpy()[i], "chrom1": snps["chrom"].to_numpy()[i],
        "bp1": snps["bp"].to_numpy()[i], "snp2": snps["snp"].to_numpy()[j], "chrom2": snps["chrom"].to_numpy()[j],
        "bp2": snps["bp"].to_numpy()[j], effect_name: top["effect"], "se": se, "stat": top["stat"], "p": top["p"],
        "n": n_used})
    _write_tsv(out / "top_pairs.tsv", df)
    from scipy import special

    bs = res["best_stat"]
    bpart = res["best_partner"]
    _write_parquet(out / "snp_best.parquet", pd.DataFrame({
        "snp": snps["snp"], "chrom": snps["chrom"], "bp": snps["bp"], "best_stat": bs,
        "best_p": special.chdtrc(1.0, bs),
        "best_partner": np.where(bpart >= 0, snps["snp"].to_numpy()[np.maximum(bpart, 0)], None)}))
    cp = pd.DataFrame(res["chrom_pairs"])
    if len(cp):
        bi, bj = cp["best_i"].to_numpy(), cp["best_j"].to_numpy()
        cp["best_snp1"] = np.where(bi >= 0, snps["snp"].to_numpy()[np.maximum(bi, 0)], None)
        cp["best_snp2"] = np.where(bj >= 0, snps["snp"].to_numpy()[np.maximum(bj, 0)], None)
        cp["best_p"] = special.chdtrc(1.0, cp["best_stat"].to_numpy())
        cp = cp.drop(columns=["best_i", "best_j"])
    _write_tsv(out / "chrom_pairs.tsv", cp)
    order = res["order"]
    chrom_sorted = snps["chrom"].to_numpy()[order]
    bounds = np.flatnonzero(np.r_[True, chrom_sorted[1:] != chrom_sorted[:-1], True])
    segments = [{"chrom": str(chrom_sorted[a]), "start": int(a), "end": int(b)} for a, b in zip(bounds[:-1], bounds[1:])]
    axis = pd.DataFrame({"pos": np.arange(len(order)), "snp": snps["snp"].to_numpy()[order], "chrom": chrom_sorted,
                         "bp": snps["bp"].to_numpy()[order]})
    write_pyramid(out / "pyramid", res["pyramid_level0"], res["pyramid_cell"], args.pyramid_tile, axis,
                  "max Wald chi-square of the interaction (1 df)", segments)
    if args.no_plots:
        return
    manhattan(out / "manhattan.png", snps["chrom"], snps["bp"], special.chdtrc(1.0, bs),
              threshold=res["sig_p"], ylabel="-log10 p of the best pair",
              title=f"best interaction partner per SNP ({res['n_pairs']:,} pairs)")
    map_overview(out / "map_overview.png", res["pyramid_level0"], res["pyramid_cell"],
                 chrom_bounds=list(bounds), chrom_labels=[s["chrom"] for s in segments],
                 title=f"pair map: {res['n_pairs']:,} pairs, {scan.n} samples")
    if len(i):
        from models.scans.scan2d import dense_pair_stats

        w = 40
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(len(order))
        ri, rj = rank_of[i[0]], rank_of[j[0]]
        rows = order[max(0, ri - w): ri + w + 1]
        cols = order[max(0, rj - w): rj + w + 1]
        beta, stat = dense_pair_stats(G[rows], G[cols], y, data["trait"])
        stat = np.where(rows[:, None] == cols[None, :], np.nan, stat)
        map_zoom(out / "map_zoom.png", stat, list(snps["snp"].to_numpy()[rows]), list(snps["snp"].to_numpy()[cols]),
                 title=f"around the top pair {df.snp1[0]} x {df.snp2[0]}",
                 mark=(int(np.flatnonzero(rows == i[0])[0]), int(np.flatnonzero(cols == j[0])[0])))
        k = min(6, len(i))
        pair_boxplots(out / "pair_boxplots.png", [G[i[q]] for q in range(k)], [G[j[q]] for q in range(k)], data["y"],
                      titles=[f"{df.snp1[q]} x {df.snp2[q]}  p={df.p[q]:.2g}" for q in range(k)])


def _run_ngg(args, data, out: Path, device: str) -> dict:
    try:
        from models.ngg.ngg import ngg_fit
    except ImportError as exc:
        raise EpiflowError(f"--method ngg is unavailable: models.ngg.ngg cannot be imported ({exc})") from None
    snps = data["snps"]
    t0 = time.perf_counter()
    res = ngg_fit(data["G"].T, data["y"], mode=args.mode, B=args.ngg_B, d=args.ngg_d, R=args.ngg_R,
                  lam_scale=args.ngg_lam_scale, lam=getattr(args, "ngg_lam", None),
                  iters=getattr(args, "ngg_iters", 200), seed=args.seed, xp=device, top=args.top,
                  covariates=data["covar"], progress=False, checkpoint=str(out / ".ngg.ckpt.npz"))
    t_fit = time.perf_counter() - t0
    ids = snps["snp"].to_numpy()
    if args.mode == "1d":
        t = res.top_snps
        s = np.asarray(t["snp"], dtype=np.int64)
        df = pd.DataFrame({"rank": np.arange(1, len(s) + 1), "snp": ids[s], "chrom": snps["chrom"].to_numpy()[s],
                           "bp": snps["bp"].to_numpy()[s], "score": t["score"], "support": t["support"],
                           "effect": t["effect"]})
        _write_tsv(out / "top_snps.tsv", df)
        if not args.no_plots:
            from pipelines.plots.scans import manhattan

            score = np.asarray(res.snp_score, dtype=float)
            pseudo = np.where(score > 0, 10.0 ** (-score / max(score.max(), 1e-12) * 10), np.nan)
            manhattan(out / "manhattan.png", snps["chrom"], snps["bp"], pseudo, ylabel="NGG score (scaled)",
                      title="NGG 1D scores (support x |effect|, scaled to the maximum)")
    else:
        t = res.top_pairs
        i, j = np.asarray(t["i"], dtype=np.int64), np.asarray(t["j"], dtype=np.int64)
        df = pd.DataFrame({"rank": np.arange(1, len(i) + 1), "snp1": ids[i], "chrom1": snps["chrom"].to_numpy()[i],
                           "bp1": snps["bp"].to_numpy()[i], "snp2": ids[j], "chrom2": snps["chrom"].to_numpy()[j],
                           "bp2": snps["bp"].to_numpy()[j], "score": t["score"], "support": t["support"],
                           "effect": t["effect"]})
        _write_tsv(out / "top_pairs.tsv", df)
    (out / ".ngg.ckpt.npz").unlink(missing_ok=True)
    return {"seconds_scan": t_fit, "ngg_params": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                                                  for k, v in dict(res.params).items()}}
