"""NGG 2D on HLC on one GPU (CuPy): time per repetition at the tuned settings, pairs per second and
the fraction of the device's GEMM peak.

HLC: 427 people x 358,499 SNPs, so one repetition covers ~6.4e10 columns (SNPs and SNP pairs).
Tuned settings (benchmarks/results/bench_ngg_panel.json, best recall on mouse_hs1940):
B=100, d=30, lam = 2 x the noise level, R=10, 200 FISTA iterations.

A full repetition (6.4e8 pieces of 100 columns) takes far longer than one device command may run,
so it is measured on the first ``--pieces`` pieces of a repetition (``max_pieces``; the pieces are
the same random column groups a full run would start with) at two sizes, checked for linear
scaling, and extrapolated: seconds per piece x pieces per repetition, plus the per-super-block
score/top-k pass. Both the measured and the extrapolated numbers are written, flagged as such.

Operation count per column (what "fraction of GEMM peak" divides): the sketch GEMM 2*d*n, the
compressed normal equations 2*d*d*n/B, FISTA 2 batched mat-vecs of d x B per iteration (4*d*iters),
the power iteration for the step size 2*d*d*40/B. Compared with the measured float32 GEMM rate
of the same device (cuBLAS, no TF32: the estimator runs in float32).

    python benchmarks/bench_ngg_gpu.py --data ../shared/data/gemma --pieces 20000 200000

Measured (one NVIDIA H200, CuPy 14.2; --pieces 50000 400000 --fista fused array-ops): 2.7e7
pairs/s, one repetition 2,354 s extrapolated from 400,000 pieces (R=10: 6.5 h), 3.1 % of the
measured fp32 GEMM peak (51 TFLOP/s); with the array-op FISTA 9.8e6 pairs/s, 6,566 s. Split of a
repetition with the fused FISTA: sketch (gather of pair columns + batched GEMMs) 47 %, FISTA 30 %,
index + Gaussian draws 15 %, solve 4 %.
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

TUNED = {"B": 100, "d": 30, "lam_scale": 2.0, "R": 10, "iters": 200}


def gemm_peak_fp32(cp, size=8192, reps=10):
    rng = cp.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=cp.float32)
    b = rng.standard_normal((size, size), dtype=cp.float32)
    c = a @ b
    cp.cuda.Device().synchronize()
    e0, e1 = cp.cuda.Event(), cp.cuda.Event()
    e0.record()
    for _ in range(reps):
        cp.matmul(a, b, out=c)
    e1.record()
    e1.synchronize()
    sec = cp.cuda.get_elapsed_time(e0, e1) / 1e3 / reps
    return 2.0 * size ** 3 / sec / 1e12


def flops_per_column(n, B, d, iters):
    return 2 * d * n + 2 * d * d * n / B + 4 * d * iters + 2 * d * d * 40 / B


def load_hlc(data: Path):
    from pipelines.workflows.genotypes import GenotypeSet, Phenotype

    g = GenotypeSet.load(data / "HLC", unique_ids=False)
    ph = Phenotype.load(data / "HLC.simu.pheno.txt.gz", g, 1)
    X = np.asarray(g.dosage.T[ph.geno_index])
    return X, ph.y


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gemma"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_ngg_gpu.json"))
    ap.add_argument("--pieces", type=int, nargs="+", default=[20000, 200000],
                    help="pieces of one repetition to time (two sizes check linear scaling)")
    ap.add_argument("--batches", type=int, nargs="+", default=[0],
                    help="pieces per FISTA batch to try (0: ngg_fit's default)")
    ap.add_argument("--fista", nargs="+", default=["fused"], choices=["fused", "array-ops"],
                    help="GPU FISTA variants to time: the one-kernel solve and/or the array-op path")
    ap.add_argument("--config", default="", help="override, e.g. B=100,d=30,lam_scale=2,iters=200")
    return ap


def _record(r, wall: float, fista: str, k: int, profile: bool, cfg: dict, peak: float) -> dict:
    """One timed fit: throughput, extrapolation to a full repetition and to R, share of the GEMM peak."""
    t = r.timings
    Beff = r.params["B"]
    cols = t["pieces_done"] * Beff
    per_piece = t["loop_s"] / t["pieces_done"]
    full_pieces = -(-r.n_columns // Beff)
    per_rep = per_piece * full_pieces
    fpc = flops_per_column(r.params["n"], Beff, r.params["d"], r.params["iters"])
    return {"fista": fista, "max_pieces": k, "batch": r.params["batch"], "profile": profile,
            "wall_s": wall, "loop_s": t["loop_s"], "prepare_s": t.get("prepare_s"),
            "pieces_done": t["pieces_done"], "columns_done": cols,
            "columns_per_s": cols / t["loop_s"], "n_columns_per_repetition": r.n_columns,
            "pieces_per_repetition": full_pieces,
            "per_repetition_s_extrapolated": per_rep,
            "per_repetition_h_extrapolated": per_rep / 3600,
            "full_run_R_s_extrapolated": per_rep * cfg["R"],
            "flops_per_column": fpc,
            "tflops_achieved": fpc * cols / t["loop_s"] / 1e12,
            "fraction_of_fp32_gemm_peak": fpc * cols / t["loop_s"] / 1e12 / peak,
            "stages_s": {kk: v for kk, v in t.items() if kk.endswith("_s")}}


def main(argv=None):
    args = _parser().parse_args(argv)

    import cupy as cp

    from models.ngg.ngg import ngg_fit

    cfg = dict(TUNED)
    for part in filter(None, args.config.split(",")):
        k, v = part.split("=")
        cfg[k.strip()] = float(v) if k.strip() == "lam_scale" else int(v)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res = {"benchmark": "ngg_2d_hlc_gpu", "config": cfg,
           "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
           "cupy": cp.__version__, "numpy": np.__version__, "host": platform.node(),
           "cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": []}

    def dump():
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=1, default=float) + "\n")
        os.replace(tmp, out_path)

    peak = gemm_peak_fp32(cp)
    res["gemm_peak_fp32_tflops_measured"] = peak
    t0 = time.perf_counter()
    X, y = load_hlc(Path(args.data))
    res["seconds_load"] = time.perf_counter() - t0
    n, p = X.shape
    res.update(n=int(n), p=int(p))
    print(f"HLC {n} x {p}; fp32 GEMM peak {peak:.1f} TFLOP/s", flush=True)
    kw = dict(mode="2d", B=cfg["B"], d=cfg["d"], lam_scale=cfg["lam_scale"], iters=cfg["iters"],
              R=1, seed=0, xp=cp, top=1000, progress=False)
    ngg_fit(X, y, max_pieces=200, **kw)  # warm-up: kernels, cuBLAS/cuSOLVER handles
    import models.ngg.ngg as ngg_mod

    fused_ok = ngg_mod._fista_fused_ok
    variants = [(f, b) for f in args.fista for b in args.batches]
    for fista, batch in variants:
        ngg_mod._fista_fused_ok = fused_ok if fista == "fused" else (lambda *a, **k: False)
        for k in args.pieces:
            for profile in (False, True):
                t0 = time.perf_counter()
                r = ngg_fit(X, y, max_pieces=k, profile=profile, batch=batch or None, **kw)
                rec = _record(r, time.perf_counter() - t0, fista, k, profile, cfg, peak)
                per_rep = rec["per_repetition_s_extrapolated"]
                res["runs"].append(rec)
                dump()
                print(f"{fista:9s} batch {rec['batch']:>6} pieces {k:>8} profile={profile!s:5}: "
                      f"{rec['columns_per_s']:.3g} pairs/s, {rec['tflops_achieved']:.2f} TFLOP/s "
                      f"({100 * rec['fraction_of_fp32_gemm_peak']:.1f} % of fp32 GEMM peak), "
                      f"repetition {per_rep:.0f} s = {per_rep / 3600:.2f} h (extrapolated)", flush=True)
                if profile:
                    print("   stages: " + ", ".join(f"{kk} {v:.2f}" for kk, v in rec["stages_s"].items()),
                          flush=True)
    ngg_mod._fista_fused_ok = fused_ok
    plain = [r for r in res["runs"] if not r["profile"]]
    best = max(plain, key=lambda r: r["columns_per_s"])
    res["summary"] = {k: best[k] for k in ("fista", "batch", "max_pieces", "columns_per_s",
                                           "per_repetition_s_extrapolated",
                                           "full_run_R_s_extrapolated",
                                           "fraction_of_fp32_gemm_peak")}
    res["summary"]["extrapolated"] = True
    dump()
    s = res["summary"]
    print(f"\nNGG 2D HLC (B={cfg['B']}, d={cfg['d']}, lam x{cfg['lam_scale']}, iters {cfg['iters']}) on "
          f"{res['device']}: {s['columns_per_s']:.3g} pairs/s, {s['per_repetition_s_extrapolated']:.0f} s "
          f"per repetition (extrapolated from {s['max_pieces']} pieces), R={cfg['R']}: "
          f"{s['full_run_R_s_extrapolated'] / 3600:.1f} h; {100 * s['fraction_of_fp32_gemm_peak']:.1f} % "
          f"of the fp32 GEMM peak")
    print(f"wrote {out_path}")
    return res


if __name__ == "__main__":
    main()
