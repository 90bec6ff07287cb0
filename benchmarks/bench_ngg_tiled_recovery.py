"""Recovery of planted pairs: the tiled NGG (rectangular or random pieces, tile-shared sketches) vs the
previous NGG (random pieces, one sketch per piece), same genotypes, same phenotypes, same settings.

Genotypes: GEMMA's 1,000-SNP panel of mouse_hs1940 (1,940 mice, 499,500 pairs). Phenotypes:
``--phenotypes`` simulations (seeds 1..K), each with 5 additive SNPs and 5 interacting pairs
(models.simulate.pheno.simulate_phenotype, h2_add 0.1, h2_int 0.2, planted loci >= 20 columns
apart). Both estimators run at B=100, d=30, lam = 2 x the noise level, 200 FISTA iterations and
``--R`` repetitions, seed 0. Metrics at the locus level (a reported pair within ``--window`` SNP
columns of both planted SNPs): recall@10, recall@100 and MRR (mean over planted pairs of 1 / rank of
the first hit). The mean over phenotypes and a paired sign count (phenotypes where the new one is
better / worse in MRR) go to benchmarks/results/ngg_tiled_recovery.json.

    .venv/bin/python benchmarks/bench_ngg_tiled_recovery.py --phenotypes 20 --R 4
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_ngg_gpu import read_bed  # noqa: E402
from models.ngg.ngg import ngg_fit  # noqa: E402
from models.ngg.tiled import ngg_fit_tiled  # noqa: E402
from models.simulate.pheno import simulate_phenotype  # noqa: E402
from models.simulate.recovery import recall_metrics  # noqa: E402


VARIANTS = {"previous": (ngg_fit, {}), "tiled": (ngg_fit_tiled, {"pieces": "rect"}),
            "tiled_piece_sketch": (ngg_fit_tiled, {"pieces": "rect", "shared_sketch": False}),
            "tiled_random": (ngg_fit_tiled, {"pieces": "random"})}


def load_panel(data: Path):
    prefix = data / "mouse_hs1940"
    X = read_bed(prefix)
    with gzip.open(prefix.with_suffix(".bim.gz"), "rt") as f:
        bim = [ln.split() for ln in f if ln.strip()]
    ids = [b[1] for b in bim]
    chrom = np.array([b[0] for b in bim])
    with gzip.open(data / "mouse_hs1940_snps.txt.gz", "rt") as f:
        panel_ids = {ln.strip() for ln in f if ln.strip()}
    cols = np.array([k for k, s in enumerate(ids) if s in panel_ids])
    return X[:, cols], chrom[cols]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "gemma")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ngg_tiled_recovery.json")
    ap.add_argument("--phenotypes", type=int, default=20)
    ap.add_argument("--R", type=int, default=4)
    ap.add_argument("--window", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="estimators to run (tiled: rectangular 10 x 10 pieces; tiled_piece_sketch: the same "
                         "with one sketch per piece; tiled_random: random pieces of each step's pairs)")
    ap.add_argument("--merge", type=Path, default=None,
                    help="a JSON of an earlier run with the same settings whose variants are kept")
    args = ap.parse_args(argv)
    if not (args.data / "mouse_hs1940.bed.gz").exists() and not (args.data / "mouse_hs1940.bed").exists():
        print(f"skipped: no mouse_hs1940 genotypes under {args.data}")
        return None
    X, chrom = load_panel(args.data)
    cfg = {"B": 100, "d": 30, "lam_scale": 2.0, "iters": 200, "R": args.R, "seed": 0, "top": 1000}
    out = {"benchmark": "ngg_tiled_vs_previous_recovery", "panel": "GEMMA mouse_hs1940 1,000-SNP panel",
           "n": int(X.shape[0]), "p": int(X.shape[1]), "pairs": int(X.shape[1] * (X.shape[1] - 1) // 2),
           "settings": cfg, "window": args.window,
           "simulation": {"n_snps": 5, "n_pairs": 5, "h2_add": 0.1, "h2_int": 0.2, "min_gap": 20,
                          "seeds": list(range(1, args.phenotypes + 1))},
           "cpu_count": os.cpu_count(), "per_phenotype": []}
    kw = dict(mode="2d", B=cfg["B"], d=cfg["d"], lam_scale=cfg["lam_scale"], iters=cfg["iters"], R=cfg["R"],
              seed=cfg["seed"], top=cfg["top"], progress=False)
    earlier = {}
    if args.merge is not None:
        old = json.loads(args.merge.read_text())
        if old["settings"] != cfg or old["window"] != args.window or old["p"] != out["p"]:
            raise SystemExit(f"{args.merge}: other settings; not merged")
        earlier = {r["seed"]: r for r in old["per_phenotype"]}
    variants = {k: VARIANTS[k] for k in args.variants}
    for s in range(1, args.phenotypes + 1):
        sim = simulate_phenotype(X, n_snps=5, n_pairs=5, h2_add=0.1, h2_int=0.2, seed=s, min_gap=20)
        row = dict(earlier.get(s, {}), seed=s)
        for name, (fit, extra) in variants.items():
            extra = {("xp" if fit is ngg_fit else "device"): args.device, **extra}
            t0 = time.perf_counter()
            r = fit(X, sim.y, **kw, **extra)
            wall = time.perf_counter() - t0
            found = np.column_stack([r.top_pairs["i"], r.top_pairs["j"]])
            m = recall_metrics(found, sim.pairs, args.window, ks=(10, 100), chrom=chrom)
            row[name] = {"recall@10": m["recall@10"], "recall@100": m["recall@100"], "mrr": m["mrr"],
                         "first_hit_rank": m["first_hit_rank"], "seconds": wall}
        out["per_phenotype"].append(row)
        print(f"seed {s}: " + "  ".join(f"{k} r@10 {row[k]['recall@10']:.1f} r@100 {row[k]['recall@100']:.1f} "
                                         f"MRR {row[k]['mrr']:.3f} ({row[k]['seconds']:.0f} s)"
                                         for k in VARIANTS if k in row), flush=True)
        _summarise(out)
        tmp = args.out.with_name(args.out.name + ".tmp")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp, args.out)
    print(json.dumps(out["summary"], indent=1))
    return out


def _summarise(out):
    """Means over phenotypes; for each new variant the paired difference from 'previous' (mean and
    standard error over phenotypes) of recall@10, recall@100 and MRR."""
    rows = out["per_phenotype"]
    summ = {"phenotypes": len(rows)}
    for name in VARIANTS:
        if not all(name in r for r in rows):
            continue
        summ[name] = {k: float(np.mean([r[name][k] for r in rows])) for k in ("recall@10", "recall@100", "mrr",
                                                                            "seconds")}
        if name == "previous" or not all("previous" in r for r in rows):
            continue
        for k in ("recall@10", "recall@100", "mrr"):
            d = np.array([r[name][k] - r["previous"][k] for r in rows])
            summ[name][f"{k}_minus_previous"] = float(d.mean())
            summ[name][f"{k}_minus_previous_se"] = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else None
    out["summary"] = summ


if __name__ == "__main__":
    main()
