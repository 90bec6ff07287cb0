"""NGG (compressed-sensing estimator) vs the exact exhaustive 2D scan on the same planted data.

Genotypes: GEMMA's 1,000-SNP panel of mouse_hs1940 (1,940 mice, 499,500 pairs; no missing calls).

Part 1, recovery. For ``--phenotypes`` simulations (seeds 1..K; 5 additive SNPs and 5 interacting
pairs, models.simulate.pheno.simulate_phenotype, h2_add 0.1, h2_int 0.2 (0.04 per pair), planted
loci >= 20 columns apart, as benchmarks/bench_ngg_tiled_recovery.py) three estimators rank all
pairs of the same phenotype:

* ``exact``: models.scans.scan2d.Scan2D, the PLINK-equal OLS y ~ a + b + ab Wald statistic of
  every pair, top 200;
* ``ngg_default``: models.ngg.ngg.ngg_fit at the library defaults (B 1000, d 30, lam_scale 1,
  200 FISTA iterations), top 1000;
* ``ngg_tuned``: the setting of params.yaml (ngg.ngg: B 100, d 30, lam_scale 2, 200 iterations).

Both NGG runs use ``--R`` repetitions (default 10, as the library and params.yaml; ~3.5 s per
repetition on 2 CPU cores here) and seed 0. Metrics at the locus level (a reported
pair within ``--window`` SNP columns of both planted SNPs, models.simulate.recovery.recall_metrics):
recall@10, recall@100, MRR (mean over planted pairs of 1 / rank of the first hit; 0 when not in the
reported list) and wall seconds, with the mean and standard error over phenotypes.

Part 2, LD shadows. For ``--ld-phenotypes`` seeds, one interacting pair (a, b) (product model,
h2_int ``--ld-h2``, no additive effect) is planted between two SNPs on different chromosomes, each
with at least one other SNP within ``--ld-span`` columns in LD r^2 >= ``--ld-r2``. A "shadow" is a
pair (a', b') != (a, b) with a' in {a} + LD(a) and b' in {b} + LD(b). For each method: the rank of
the exact pair (a, b) and the best rank of any shadow in its top list (both scans report 1000
pairs here), and whether the true pair is ranked above all its shadows. The exact scan tests pairs
one at a time, so a shadow's statistic is the true one shrunk by about r^2(a, a') r^2(b, b') plus
correlated noise; NGG fits pieces of B randomly drawn columns jointly, and a shadow shares a piece
with the true pair with probability ~B / 499,500 per repetition.

    nice -n 5 .venv/bin/python benchmarks/bench_ngg_vs_exact.py            # ~12 min on 2 cores

Results: benchmarks/results/ngg_vs_exact.json (settings, per-seed numbers, means, load average).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_ngg_tiled_recovery import load_panel  # noqa: E402
from models.ngg.ngg import ngg_fit  # noqa: E402
from models.scans.scan2d import Scan2D, Scan2DOptions  # noqa: E402
from models.simulate.pheno import simulate_phenotype  # noqa: E402
from models.simulate.recovery import found_pairs, recall_metrics  # noqa: E402

NGG_SETTINGS = {
    "ngg_default": {"B": 1000, "d": 30, "lam_scale": 1.0, "iters": 200},  # ngg_fit's defaults (the paper's)
    "ngg_tuned": {"B": 100, "d": 30, "lam_scale": 2.0, "iters": 200},  # params.yaml ngg.ngg
}
METRICS = ("recall@10", "recall@100", "mrr", "seconds")
SIM = {"n_snps": 5, "n_pairs": 5, "h2_add": 0.1, "h2_int": 0.2, "min_gap": 20, "pair_model": "product"}


def run_exact(G_snp_major, y, chrom, top_k):
    t0 = time.perf_counter()
    res = Scan2D(G_snp_major, y, chrom, Scan2DOptions(top_k=top_k)).run().results()
    wall = time.perf_counter() - t0
    return found_pairs(res["top"]), wall


def run_ngg(X, y, cfg, R, top):
    t0 = time.perf_counter()
    r = ngg_fit(X, y, mode="2d", B=cfg["B"], d=cfg["d"], lam_scale=cfg["lam_scale"], iters=cfg["iters"],
                R=R, seed=0, top=top, xp="cpu", progress=False)
    wall = time.perf_counter() - t0
    return found_pairs(r.top_pairs), wall


def mean_se(v):
    v = np.asarray(v, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None)


# ---------------------------------------------------------------------------------------------
# part 2: LD shadows


def ld_sets(X, chrom, span: int, r2_min: float) -> list:
    """For each SNP column, the other columns within ``span`` on its chromosome with r^2 >= r2_min."""
    Xf = X.astype(np.float64)
    Xf -= Xf.mean(axis=0)
    sd = np.sqrt((Xf ** 2).sum(axis=0))
    sd[sd == 0] = np.inf
    Z = Xf / sd
    p = X.shape[1]
    out = []
    for a in range(p):
        lo, hi = max(0, a - span), min(p, a + span + 1)
        r2 = (Z[:, lo:hi].T @ Z[:, a]) ** 2
        cols = np.arange(lo, hi)
        keep = (r2 >= r2_min) & (cols != a) & (chrom[cols] == chrom[a])
        out.append(cols[keep])
    return out


def rank_of(found, pairs) -> int | None:
    """1-based rank of the first found pair among ``pairs`` (a set of (i, j), i < j); None: absent."""
    for k, (i, j) in enumerate(found):
        if (min(i, j), max(i, j)) in pairs:
            return k + 1
    return None


def shadow_outcome(found, a, b, LD):
    true = {(min(a, b), max(a, b))}
    A = [a, *LD[a].tolist()]
    Bs = [b, *LD[b].tolist()]
    shadows = {(min(u, v), max(u, v)) for u in A for v in Bs} - true
    rt, rs = rank_of(found, true), rank_of(found, shadows)
    if rt is None and rs is None:
        outcome = "neither"
    elif rs is None or (rt is not None and rt < rs):
        outcome = "true_first"
    else:
        outcome = "shadow_first"
    return {"true_rank": rt, "best_shadow_rank": rs, "n_shadows": len(shadows), "outcome": outcome}


def ld_shadow_case(X, G, chrom, args, methods, log):
    LD = ld_sets(X, chrom, args.ld_span, args.ld_r2)
    maf = X.mean(axis=0) / 2.0
    maf = np.minimum(maf, 1.0 - maf)
    eligible = np.flatnonzero((maf >= 0.1) & np.array([s.size >= 1 for s in LD]))
    rows = []
    for s in range(1, args.ld_phenotypes + 1):
        rng = np.random.default_rng(1000 + s)
        while True:
            a, b = sorted(int(v) for v in rng.choice(eligible, size=2, replace=False))
            if chrom[a] != chrom[b]:
                break
        sim = simulate_phenotype(X, n_snps=0, n_pairs=1, h2_add=0.0, h2_int=args.ld_h2, seed=s,
                                 pairs=[[a, b]], pair_model="product")
        row = {"seed": s, "pair": [a, b], "ld_a": LD[a].tolist(), "ld_b": LD[b].tolist()}
        for name in methods:
            if name == "exact":
                found, wall = run_exact(G, sim.y, chrom, args.top)
            else:
                found, wall = run_ngg(X, sim.y, NGG_SETTINGS[name], args.R, args.top)
            row[name] = dict(shadow_outcome(found, a, b, LD), seconds=wall)
        rows.append(row)
        log(f"LD seed {s} pair ({a}, {b}) |LD| {LD[a].size}/{LD[b].size}: " + "  ".join(
            f"{m} true #{row[m]['true_rank']} shadow #{row[m]['best_shadow_rank']} ({row[m]['outcome']})"
            for m in methods))
    summ = {}
    for name in methods:
        oc = [r[name]["outcome"] for r in rows]
        summ[name] = {k: oc.count(k) for k in ("true_first", "shadow_first", "neither")}
        summ[name]["true_pair_reported"] = sum(r[name]["true_rank"] is not None for r in rows)
        summ[name]["seconds"] = mean_se([r[name]["seconds"] for r in rows])[0]
    return rows, summ


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "gemma")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ngg_vs_exact.json")
    ap.add_argument("--phenotypes", type=int, default=5, help="recovery phenotypes (seeds 1..K)")
    ap.add_argument("--R", type=int, default=10, help="NGG repetitions for both settings (library default 10)")
    ap.add_argument("--window", type=int, default=2, help="locus window in SNP columns")
    ap.add_argument("--exact-top", type=int, default=200, help="pairs the exact scan reports (part 1)")
    ap.add_argument("--top", type=int, default=1000, help="pairs NGG reports; also the exact scan in part 2")
    ap.add_argument("--methods", nargs="+", default=["exact", *NGG_SETTINGS],
                    choices=["exact", *NGG_SETTINGS])
    ap.add_argument("--ld-phenotypes", type=int, default=5, help="LD-shadow phenotypes (0: skip part 2)")
    ap.add_argument("--ld-methods", nargs="+", default=["exact", *NGG_SETTINGS], choices=["exact", *NGG_SETTINGS])
    ap.add_argument("--ld-h2", type=float, default=0.04, help="variance share of the one planted pair")
    ap.add_argument("--ld-r2", type=float, default=0.8, help="r^2 that makes a SNP an LD neighbour")
    ap.add_argument("--ld-span", type=int, default=10, help="LD neighbours searched within this many columns")
    args = ap.parse_args(argv)
    if not (args.data / "mouse_hs1940.bed.gz").exists() and not (args.data / "mouse_hs1940.bed").exists():
        print(f"skipped: no mouse_hs1940 genotypes under {args.data}")
        return None
    t_start = time.perf_counter()
    X, chrom = load_panel(args.data)
    if (X < 0).any():
        raise SystemExit("the panel has missing calls; this benchmark assumes complete genotypes")
    G = np.ascontiguousarray(X.T)  # (p, n) int8, SNP-major, for Scan2D
    out = {"benchmark": "ngg_vs_exact", "panel": "GEMMA mouse_hs1940 1,000-SNP panel", "n": int(X.shape[0]),
           "p": int(X.shape[1]), "pairs": int(X.shape[1] * (X.shape[1] - 1) // 2),
           "settings": {"exact": {"statistic": "OLS y ~ a + b + ab, Wald (PLINK --epistasis)",
                                  "top_k": args.exact_top},
                        **{k: dict(v, R=args.R, seed=0, top=args.top) for k, v in NGG_SETTINGS.items()},
                        "R_note": f"NGG run at R={args.R} repetitions (library default and params.yaml: 10)"},
           "window": args.window, "simulation": dict(SIM, h2_per_pair=SIM["h2_int"] / SIM["n_pairs"],
                                                     seeds=list(range(1, args.phenotypes + 1))),
           "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                    "loadavg_start": list(os.getloadavg())},
           "per_phenotype": []}

    def save():
        tmp = args.out.with_name(args.out.name + ".tmp")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp, args.out)

    def log(msg):
        print(msg, flush=True)

    for s in range(1, args.phenotypes + 1):
        sim = simulate_phenotype(X, n_snps=SIM["n_snps"], n_pairs=SIM["n_pairs"], h2_add=SIM["h2_add"],
                                 h2_int=SIM["h2_int"], seed=s, min_gap=SIM["min_gap"], pair_model=SIM["pair_model"])
        row = {"seed": s, "pairs": sim.pairs.tolist(), "loadavg": list(os.getloadavg())}
        for name in args.methods:
            if name == "exact":
                found, wall = run_exact(G, sim.y, chrom, args.exact_top)
            else:
                found, wall = run_ngg(X, sim.y, NGG_SETTINGS[name], args.R, args.top)
            m = recall_metrics(found, sim.pairs, args.window, ks=(10, 100), chrom=chrom)
            row[name] = {"recall@10": m["recall@10"], "recall@100": m["recall@100"], "mrr": m["mrr"],
                         "first_hit_rank": m["first_hit_rank"], "seconds": wall, "reported": int(found.shape[0])}
        out["per_phenotype"].append(row)
        log(f"seed {s}: " + "  ".join(f"{k} r@10 {row[k]['recall@10']:.1f} r@100 {row[k]['recall@100']:.1f} "
                                      f"MRR {row[k]['mrr']:.3f} ({row[k]['seconds']:.1f} s)" for k in args.methods))
        out["summary"] = {k: {mk: mean_se([r[k][mk] for r in out["per_phenotype"]]) for mk in METRICS}
                          for k in args.methods}
        save()

    if args.ld_phenotypes > 0:
        out["ld_shadow"] = {"settings": {"h2_int": args.ld_h2, "r2_min": args.ld_r2, "span": args.ld_span,
                                         "pair_model": "product", "top": args.top,
                                         "seeds": list(range(1, args.ld_phenotypes + 1))}}
        rows, summ = ld_shadow_case(X, G, chrom, args, args.ld_methods, log)
        out["ld_shadow"].update(per_phenotype=rows, summary=summ)
    out["host"]["loadavg_end"] = list(os.getloadavg())
    out["total_seconds"] = time.perf_counter() - t_start
    save()
    print_table(out, args)
    return out


def print_table(out, args):
    K = len(out["per_phenotype"])
    print(f"\nmouse_hs1940 1,000-SNP panel, {out['pairs']:,} pairs; {K} phenotypes (5 SNPs + 5 pairs, "
          f"h2 0.1 + 0.2); locus window {args.window}; NGG R={args.R}; mean +- s.e.")
    print(f"{'method':<34}{'recall@10':>14}{'recall@100':>14}{'MRR':>14}{'seconds':>12}")
    label = {"exact": "exact scan (OLS Wald, all pairs)",
             "ngg_default": "NGG defaults B1000 lam x1",
             "ngg_tuned": "NGG tuned B100 lam x2"}
    for k, v in out.get("summary", {}).items():
        cells = [f"{v[m][0]:.2f} +- {v[m][1]:.2f}" if v[m][1] is not None else f"{v[m][0]:.2f}"
                 for m in ("recall@10", "recall@100", "mrr")]
        print(f"{label[k]:<34}" + "".join(f"{c:>14}" for c in cells) + f"{v['seconds'][0]:>12.1f}")
    if "ld_shadow" in out:
        ld = out["ld_shadow"]
        st = ld["settings"]
        print(f"\nLD shadows: 1 planted pair (h2 {st['h2_int']}), both loci with LD neighbours r^2 >= "
              f"{st['r2_min']}; {len(ld['per_phenotype'])} seeds")
        print(f"{'method':<34}{'true first':>12}{'shadow first':>14}{'neither':>10}{'true listed':>13}")
        for k, v in ld["summary"].items():
            print(f"{label[k]:<34}{v['true_first']:>12}{v['shadow_first']:>14}{v['neither']:>10}"
                  f"{v['true_pair_reported']:>13}")
    print(f"\ntotal {out['total_seconds']:.0f} s; load average start {out['host']['loadavg_start'][0]:.2f}, "
          f"end {out['host']['loadavg_end'][0]:.2f}")


if __name__ == "__main__":
    main()
