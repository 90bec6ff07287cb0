"""NGG recovery and speed on real genotypes (GEMMA's mouse_hs1940; HLC for throughput).

A phenotype with planted additive SNPs and interacting SNP pairs (known h2) is simulated over the
real genotypes; NGG is run at the paper's defaults (B=1000, d=30, lam at the noise level, R=10)
and over a small grid of (B, d, lam_scale, R); the exact 2D scan (models/scans/scan2d.py), when
present, is run on the same data in the same process as the reference. Recall counts planted
pairs recovered at the locus level (a reported pair within W SNP columns of both planted SNPs)
among the top K.

Studies (--study):
  panel    GEMMA's own 1,000-SNP subset of mouse_hs1940 (499,500 pairs): grid search, exact
           reference, heritability proxy (discovery half / evaluation half).
  genome   all 10,996 polymorphic SNPs of mouse_hs1940 (60.4 million pairs): time per repetition
           (measured on --genome-pieces pieces and extrapolated, or a full run with
           --genome-full), recall when run in full, exact reference.
  hlc      throughput at HLC's shape (427 samples, 358,499 SNPs, 6.4e10 pairs): pieces per second
           on a sample of pieces, extrapolated to a full repetition.

Writes JSON (and the heritability PNG) to benchmarks/results/ (git-ignored). Timings are CPU
timings of this machine, taken while other work may be running (load average recorded).

    python benchmarks/bench_ngg.py --study panel
    python benchmarks/bench_ngg.py --study genome --genome-full --config B=100,d=30,lam_scale=1,R=10
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.ngg.heritability import heritability_table, summarize_table  # noqa: E402
from models.ngg.ngg import ngg_fit  # noqa: E402
from models.simulate.recovery import recall_metrics  # noqa: E402
from models.simulate.pheno import pair_hits, simulate_phenotype, snp_recall  # noqa: E402
from pipelines.plots.heritability import plot_heritability  # noqa: E402

DEFAULTS = {"B": 1000, "d": 30, "lam_scale": 1.0, "R": 10, "iters": 200}


# --------------------------------------------------------------------------------------------- data


def load_genotypes(prefix: Path):
    """(dosage int8 (n, p), snp ids, chromosomes, reader name), read by the project's PLINK reader."""
    from pipelines.workflows.genotypes import GenotypeSet

    g = GenotypeSet.load(prefix, unique_ids=False)
    return (g.dosage.T, g.snps["snp"].astype(str).tolist(), g.snps["chrom"].astype(str).tolist(),
            "pipelines.workflows.genotypes")


def exact_reference_available() -> bool:
    try:
        from models.scans.scan2d import Scan2D  # noqa: F401

        return True
    except ImportError:
        return False


def exact_scan(X, y, chrom, top):
    """Exact 2D scan (colleague's Scan2D) -> (pairs (k, 2), seconds)."""
    from models.scans.scan2d import Scan2D, Scan2DOptions

    t0 = time.perf_counter()
    scan = Scan2D(np.ascontiguousarray(np.asarray(X).T), y, np.asarray(chrom),
                  Scan2DOptions(top_k=top)).run()
    res = scan.results()["top"]
    return np.column_stack([res["i"], res["j"]]), time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- metrics


def run_ngg(X, y, cfg, top=1000, **kw):
    t0 = time.perf_counter()
    res = ngg_fit(X, y, B=cfg["B"], d=cfg["d"], lam_scale=cfg["lam_scale"], R=cfg["R"],
                  iters=cfg.get("iters", 200), seed=cfg.get("seed", 0), top=top, progress=False, **kw)
    wall = time.perf_counter() - t0
    return res, wall


def extrapolate(res, cfg):
    """Time of one full repetition from a run capped with max_pieces (R=1, profile=True).

    Per-piece work (index, sketch matrices, sketch, solve, FISTA, accumulation) scales with the
    number of pieces; the per-block score/top-k pass runs once per super-block after R
    repetitions, so a repetition carries 1/R of it for every block.
    """
    t = res.timings
    stages = ("index_s", "rng_s", "sketch_s", "solve_s", "fista_s", "accumulate_s")
    per_piece = sum(t.get(k, 0.0) for k in stages) / t["pieces_done"]
    full_pieces = -(-res.n_columns // res.params["B"])
    n_blocks = res.params["n_blocks"]
    blocks_touched = max(1, -(-t["pieces_done"] * res.params["B"] // res.params["block_cols"]))
    topk_per_block = t.get("topk_s", 0.0) / blocks_touched
    per_rep = per_piece * full_pieces + topk_per_block * n_blocks / cfg["R"]
    return {"n_columns": res.n_columns, "pieces_measured": t["pieces_done"],
            "pieces_per_repetition": full_pieces, "seconds_per_piece": per_piece,
            "topk_seconds_per_block": topk_per_block, "n_blocks": n_blocks,
            "per_repetition_s_extrapolated": per_rep, "timings": t}


def parse_config(text):
    cfg = dict(DEFAULTS)
    for part in text.split(","):
        if part.strip():
            k, v = part.split("=")
            cfg[k.strip()] = float(v) if k.strip() == "lam_scale" else int(v)
    return cfg


def machine_info():
    return {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "platform": platform.platform(),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}


# --------------------------------------------------------------------------------------------- studies


def _panel_exact(X, sims, chrom, W, defaults, best, log) -> dict:
    """The exact 2D scan's recall and time on the panel phenotypes (None when unavailable)."""
    out = {}
    if exact_reference_available():
        ex_rows = []
        for sim in sims:
            found, secs = exact_scan(X, sim.y, chrom, 1000)
            m = recall_metrics(found, sim.pairs, W, min_sep=20, chrom=chrom)
            m["wall_s"] = secs
            ex_rows.append(m)
        out["exact"] = {"recall@10": float(np.mean([r["recall@10"] for r in ex_rows])),
                        "distal_recall@10": float(np.mean([r["distal_recall@10"] for r in ex_rows])),
                        "clumped_recall@10": float(np.mean([r["clumped_recall@10"] for r in ex_rows])),
                        "recall@100": float(np.mean([r["recall@100"] for r in ex_rows])),
                        "wall_s": float(np.mean([r["wall_s"] for r in ex_rows])), "per_phenotype": ex_rows}
        out["time_ratio_ngg_default_over_exact"] = defaults["wall_s"] / out["exact"]["wall_s"]
        out["time_ratio_ngg_best_over_exact"] = best["wall_s"] / out["exact"]["wall_s"]
        log(f"panel exact: recall@10 {out['exact']['recall@10']:.2f} in {out['exact']['wall_s']:.2f} s")
    else:
        out["exact"] = None
    return out


def _panel_heritability(args, X, sim, best, W, log) -> dict:
    """PCR adjusted R^2 of NGG's selection (defaults and best) on a random half, scored on the other."""
    n = X.shape[0]
    perm = np.random.default_rng(0).permutation(n)
    disc, ev = np.sort(perm[: n // 2]), np.sort(perm[n // 2:])
    her = {}
    for name, cfg in (("defaults", dict(DEFAULTS)), ("best", best["config"])):
        res, _ = run_ngg(X[disc], sim.y[disc], cfg, top=args.h2_pairs)
        snps = res.top_snps["snp"][: args.h2_snps]
        pairs = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])[: args.h2_pairs]
        t = heritability_table(X, sim.y, snps, pairs, n_random=args.h2_random, rows=ev, test_rows=None)
        s = summarize_table(t)
        png = plot_heritability(t, args.out.parent / f"ngg_heritability_panel_{name}.png",
                                title=f"mouse_hs1940 panel, planted h2 add {args.h2_add} int {args.h2_int}, NGG {name}")
        last = s.groupby("feature_set").tail(1).set_index("feature_set")
        her[name] = {"config": cfg, "n_snps": int(len(snps)), "n_pairs": int(len(pairs)), "png": str(png),
                     "final": {k: {"n_components": int(last.loc[k, "n_components"]),
                                   "adj_r2": float(last.loc[k, "adj_r2"]),
                                   "adj_r2_sd": float(last.loc[k, "adj_r2_sd"])} for k in last.index},
                     "max_adj_r2": {k: float(s[s.feature_set == k]["adj_r2"].max()) for k in last.index},
                     "selected_pairs_at_planted_loci": int(pair_hits(sim.pairs, pairs, window=W).sum()),
                     "planted_pairs_selected": int(pair_hits(pairs, sim.pairs, window=W).sum())}
        log(f"heritability ({name}): " + ", ".join(f"{k} {v['adj_r2']:.3f}" for k, v in her[name]["final"].items()))
    return her


def study_panel(args, X_all, ids, chrom_all, log):
    with gzip.open(args.data / "mouse_hs1940_snps.txt.gz", "rt") as f:
        panel_ids = [ln.strip() for ln in f if ln.strip()]
    pos = {s: k for k, s in enumerate(ids)}
    panel = np.array(sorted(pos[s] for s in panel_ids if s in pos))
    X = X_all[:, panel]
    chrom = np.asarray(chrom_all)[panel]
    W = args.window_panel
    out = {"n": int(X.shape[0]), "p": int(X.shape[1]), "pairs": int(X.shape[1] * (X.shape[1] - 1) // 2),
           "window": W, "phenotypes": []}
    grid = [dict(DEFAULTS)]
    for B in args.grid_B:
        for ls in args.grid_lam:
            c = {**DEFAULTS, "B": B, "lam_scale": ls}
            if c not in grid:
                grid.append(c)
    sims = [simulate_phenotype(X, n_snps=args.n_snps, n_pairs=args.n_pairs, h2_add=args.h2_add,
                               h2_int=args.h2_int, seed=s, min_gap=20) for s in args.pheno_seeds]
    results = {}

    def evaluate(cfg):
        key = json.dumps(cfg, sort_keys=True)
        if key in results:
            return results[key]
        rows = []
        for sim in sims:
            res, wall = run_ngg(X, sim.y, cfg)
            found = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])
            m = recall_metrics(found, sim.pairs, W, min_sep=20, chrom=chrom)
            m["snp_recall@10"] = snp_recall(res.top_snps["snp"], sim.snps, window=W, top=10)
            m["wall_s"] = wall
            m["per_repetition_s"] = res.timings["per_repetition_s"]
            rows.append(m)
        agg = {"config": cfg,
               "recall@10": float(np.mean([r["recall@10"] for r in rows])),
               "recall@50": float(np.mean([r["recall@50"] for r in rows])),
               "recall@100": float(np.mean([r["recall@100"] for r in rows])),
               "distal_recall@10": float(np.mean([r["distal_recall@10"] for r in rows])),
               "clumped_recall@10": float(np.mean([r["clumped_recall@10"] for r in rows])),
               "snp_recall@10": float(np.mean([r["snp_recall@10"] for r in rows])),
               "per_repetition_s": float(np.mean([r["per_repetition_s"] for r in rows])),
               "wall_s": float(np.mean([r["wall_s"] for r in rows])), "per_phenotype": rows}
        results[key] = agg
        log(f"panel {cfg}: recall@10 {agg['recall@10']:.2f} @100 {agg['recall@100']:.2f} "
            f"clumped@10 {agg['clumped_recall@10']:.2f} distal@10 {agg['distal_recall@10']:.2f} "
            f"snp@10 {agg['snp_recall@10']:.2f} {agg['per_repetition_s']:.2f} s/rep")
        return agg

    for cfg in grid:
        evaluate(cfg)

    def rank_key(a):
        return (a["recall@10"], a["recall@50"], a["recall@100"], -a["wall_s"])

    best = max(results.values(), key=rank_key)
    # second stage around the best (B, lam_scale): sketch size and repetitions
    for d in args.grid_d:
        evaluate({**best["config"], "d": d})
    for R in args.grid_R:
        evaluate({**best["config"], "R": R})
    best = max(results.values(), key=rank_key)
    out["grid"] = list(results.values())
    out["defaults"] = results[json.dumps(dict(DEFAULTS), sort_keys=True)]
    out["best"] = best
    for s, sim in zip(args.pheno_seeds, sims):
        out["phenotypes"].append({"seed": s, "snps": sim.snps.tolist(), "pairs": sim.pairs.tolist(),
                                  "realized": sim.realized})

    # exact reference, same phenotypes, same process
    out.update(_panel_exact(X, sims, chrom, W, out["defaults"], best, log))
    # heritability proxy: select on one half of the families' order, evaluate on the other half
    sim = sims[0]
    her = _panel_heritability(args, X, sim, best, W, log)
    out["heritability"] = her
    out["heritability_note"] = ("NGG selection on a random half of the mice, PCR adjusted R^2 on the other "
                                f"half; realized h2_add {sim.realized['h2_add']:.3f}, h2_int {sim.realized['h2_int']:.3f}")
    return out


def study_genome(args, X, ids, chrom, log):
    cfgs = [dict(DEFAULTS)] if args.genome_configs in ("defaults", "both") else []
    if args.config and args.genome_configs in ("config", "both"):
        cfgs.append(parse_config(args.config))
    sim = simulate_phenotype(X, n_snps=args.n_snps, n_pairs=args.n_pairs, h2_add=args.h2_add,
                             h2_int=args.h2_int, seed=args.pheno_seeds[0], min_gap=50)
    W = args.window_genome
    out = {"n": int(X.shape[0]), "p": int(X.shape[1]), "window": W, "phenotype": {
        "seed": args.pheno_seeds[0], "snps": sim.snps.tolist(), "pairs": sim.pairs.tolist(),
        "realized": sim.realized}, "runs": []}
    for cfg in cfgs:
        if args.genome_full:
            if args.genome_R:
                cfg = {**cfg, "R": args.genome_R}
            res, wall = run_ngg(X, sim.y, cfg, checkpoint=args.out.parent / f"ngg_genome_B{cfg['B']}_R{cfg['R']}.ckpt.npz")
            found = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])
            m = recall_metrics(found, sim.pairs, W, min_sep=50, chrom=chrom)
            m["snp_recall@10"] = snp_recall(res.top_snps["snp"], sim.snps, window=W, top=10)
            rec = {"config": cfg, "full": True, "wall_s": wall, "timings": res.timings,
                   "pieces_per_repetition": res.pieces_per_repetition, "params": res.params, **m}
        else:
            res, wall = run_ngg(X, sim.y, {**cfg, "R": 1}, max_pieces=args.genome_pieces,
                                profile=True)
            rec = {"config": cfg, "full": False, **extrapolate(res, cfg)}
        out["runs"].append(rec)
        log(f"genome {cfg}: " + (f"recall@10 {rec.get('recall@10')} @100 {rec.get('recall@100')} "
                                 f"{rec['timings']['per_repetition_s']:.1f} s/rep" if rec["full"] else
                                 f"{rec['per_repetition_s_extrapolated']:.0f} s/rep (extrapolated from "
                                 f"{rec['pieces_measured']} pieces)"))
    if args.genome_exact and exact_reference_available():
        found, secs = exact_scan(X, sim.y, chrom, 1000)
        out["exact"] = {"wall_s": secs, **recall_metrics(found, sim.pairs, W, min_sep=50, chrom=chrom)}
        log(f"genome exact: recall@10 {out['exact']['recall@10']} in {secs:.1f} s")
    return out


def study_hlc(args, log):
    X, ids, chrom, reader = load_genotypes(args.data / "HLC")
    y = np.random.default_rng(0).standard_normal(X.shape[0])
    out = {"n": int(X.shape[0]), "p": int(X.shape[1]), "reader": reader, "runs": []}
    for cfg in [dict(DEFAULTS)] + ([parse_config(args.config)] if args.config else []):
        if args.hlc_pieces:
            res, _ = run_ngg(X, y, {**cfg, "R": 1}, max_pieces=args.hlc_pieces, profile=True)
            rec = {"config": cfg, "full": False, **extrapolate(res, cfg)}
            per_rep = rec["per_repetition_s_extrapolated"]
        else:  # one complete repetition (a GPU job)
            res, wall = run_ngg(X, y, {**cfg, "R": 1}, profile=True)
            rec = {"config": cfg, "full": True, "wall_s": wall, "timings": res.timings,
                   "pieces_per_repetition": res.pieces_per_repetition, "n_columns": res.n_columns}
            per_rep = res.timings["per_repetition_s"]
        rec["device"] = res.params["backend"]
        out["runs"].append(rec)
        log(f"HLC {cfg} on {rec['device']}: {per_rep:.0f} s per repetition"
            + (" (extrapolated)" if not rec["full"] else ""))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "gemma")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_ngg.json")
    ap.add_argument("--study", nargs="+", default=["panel", "genome", "hlc"], choices=["panel", "genome", "hlc"])
    ap.add_argument("--quick", action="store_true", help="tiny grid, one phenotype (smoke run)")
    ap.add_argument("--pheno-seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n-snps", type=int, default=5)
    ap.add_argument("--n-pairs", type=int, default=5)
    ap.add_argument("--h2-add", type=float, default=0.1)
    ap.add_argument("--h2-int", type=float, default=0.2)
    ap.add_argument("--window-panel", type=int, default=2, help="locus window (SNP columns) on the panel")
    ap.add_argument("--window-genome", type=int, default=10, help="locus window (SNP columns) genome-wide")
    ap.add_argument("--grid-B", type=int, nargs="+", default=[1000, 300, 100, 30])
    ap.add_argument("--grid-lam", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--grid-d", type=int, nargs="+", default=[15, 60])
    ap.add_argument("--grid-R", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--h2-snps", type=int, default=10)
    ap.add_argument("--h2-pairs", type=int, default=20)
    ap.add_argument("--h2-random", type=int, default=10)
    ap.add_argument("--config", default="", help="extra NGG config for genome/hlc, e.g. B=100,lam_scale=1,R=10")
    ap.add_argument("--genome-full", action="store_true", help="run the genome-wide NGG in full (hours on a CPU)")
    ap.add_argument("--genome-R", type=int, default=0, help="repetitions of the full genome-wide runs "
                    "(0: those of each config; 1 measures one complete repetition)")
    ap.add_argument("--genome-pieces", type=int, default=1500)
    ap.add_argument("--genome-configs", choices=["defaults", "config", "both"], default="both",
                    help="which NGG settings the genome study runs (defaults, --config, or both)")
    ap.add_argument("--genome-exact", action="store_true")
    ap.add_argument("--hlc-pieces", type=int, default=600, help="pieces to time (0: one full repetition)")
    args = ap.parse_args(argv)
    if args.quick:
        args.pheno_seeds = args.pheno_seeds[:1]
        args.grid_B, args.grid_lam, args.grid_d, args.grid_R = [100], [1.0], [60], [5]
        args.genome_pieces, args.hlc_pieces = 200, 100
    if not args.data.is_dir():
        print(f"bench_ngg: data folder {args.data} not found", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    report = {"benchmark": "ngg", "machine": machine_info(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                                      for k, v in vars(args).items()}}
    X, ids, chrom, reader = load_genotypes(args.data / "mouse_hs1940")
    report["reader"] = reader
    report["exact_reference"] = exact_reference_available()
    if "panel" in args.study:
        report["panel"] = study_panel(args, X, ids, chrom, log)
    if "genome" in args.study:
        report["genome"] = study_genome(args, X, ids, chrom, log)
    if "hlc" in args.study:
        report["hlc"] = study_hlc(args, log)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_s"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(report, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
