"""GPU benchmarks of the exact scans (one CUDA device, CuPy).

(b) full exact 2D scan of HLC (427 people x 358,499 SNPs, ~64 billion pairs, 3.5 % missing calls)
    with the global top-k, per-SNP best partners, chromosome-pair summaries and the map pyramid;
    goal < 60 s on one H100. Reports pairs/s, the time split (GEMMs / fused kernel / merges, from a
    synchronised profile of a sample of tile pairs) and the fraction of the device's measured
    fp16 and fp64 GEMM peaks. Reference in the same run: the CPU path of this package on the same
    machine, timed on one full tile pair and extrapolated.
(c) 1D scan of 2,000,000 SNPs x 1,000 samples (goal < 0.5 s): genotypes resident on the device,
    and including the host-to-device copy. Reference: the CPU path on the same machine, timed on
    200,000 SNPs and extrapolated.

    python benchmarks/bench_scan_gpu.py --data ../shared/data/gemma --out benchmarks/results

Writes ``scan_gpu.json`` (and prints a table last).
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


def _events(cp):
    return cp.cuda.Event(), cp.cuda.Event()


def gemm_peaks(cp, size=8192, reps=10):
    """Measured fp16 (fp32 accumulate) and fp64 GEMM rates through the same cuBLAS calls the scan uses."""
    from models.scans.scan2d_gpu import GpuEngine

    eng = GpuEngine.__new__(GpuEngine)
    eng.handle = cp.cuda.device.get_cublas_handle()
    eng._alpha32, eng._beta32 = np.ones(1, np.float32), np.zeros(1, np.float32)
    eng._alpha64, eng._beta64 = np.ones(1, np.float64), np.zeros(1, np.float64)
    out = {}
    rng = cp.random.default_rng(0)
    for name, dt, fp16 in (("fp16_fp32acc", cp.float16, True), ("fp64", cp.float64, False)):
        n = size if fp16 else size // 2
        a = rng.integers(0, 3, (n, n)).astype(dt)
        b = rng.integers(0, 3, (n, n)).astype(dt)
        c = cp.empty((n, n), cp.float32 if fp16 else cp.float64)
        eng._gemm(a, b, c, fp16)
        cp.cuda.Device().synchronize()
        e0, e1 = _events(cp)
        e0.record()
        for _ in range(reps):
            eng._gemm(a, b, c, fp16)
        e1.record()
        e1.synchronize()
        sec = cp.cuda.get_elapsed_time(e0, e1) / 1e3 / reps
        out[name] = 2.0 * n ** 3 / sec / 1e12
    return out


def bench_hlc(cp, data: Path, top_k: int, tile: int, limit_s: float, res: dict, dump):
    from models.scans.scan2d import Scan2D, Scan2DOptions
    from models.scans.pyramid import build_levels
    from pipelines.workflows.genotypes import GenotypeSet, Phenotype, SnpFilter, align

    t0 = time.perf_counter()
    g = GenotypeSet.load(data / "HLC", unique_ids=False)
    t_read = time.perf_counter() - t0
    used, ph, _ = align(g, Phenotype.load(data / "HLC.simu.pheno.txt.gz", g, 1))
    poly = SnpFilter().apply(used.snp_stats(), used.snps).keep  # polymorphic among the phenotyped samples
    G = used.dosage[poly]
    chrom = used.snps["chrom"].to_numpy()[poly]
    y = ph.y
    out = {"n_samples": int(G.shape[1]), "n_snps_file": int(g.p), "n_snps": int(G.shape[0]),
           "missing_rate": float((G < 0).mean()), "seconds_read_bed": t_read}
    res["hlc_2d"] = out
    # warm-up: compile the kernel and touch cuBLAS on a small scan
    Scan2D(G[:3000], y, chrom[:3000], Scan2DOptions(tile=1024, top_k=10), device="cuda").run().results()
    cp.cuda.Device().synchronize()

    opt = Scan2DOptions(tile=tile, top_k=top_k)
    t0 = time.perf_counter()
    scan = Scan2D(G, y, chrom, opt, device="cuda")
    cp.cuda.Device().synchronize()
    t_setup = time.perf_counter() - t0
    out.update(tile=scan.tile, n_pairs=scan.n_pairs, n_tile_pairs=len(scan.tile_pairs), n_blocks=len(scan.blocks),
               seconds_setup=t_setup)
    t0 = time.perf_counter()
    done_pairs = 0
    while not scan.done:
        blk = scan.blocks[scan.next_block]
        scan.run(max_blocks=1)
        cp.cuda.Device().synchronize()
        for a, b in blk:
            ta = min(scan.p, (a + 1) * scan.tile) - a * scan.tile
            tb = min(scan.p, (b + 1) * scan.tile) - b * scan.tile
            done_pairs += ta * tb if a != b else ta * (ta - 1) // 2
        el = time.perf_counter() - t0
        proj = el * scan.n_pairs / max(done_pairs, 1)
        out.update(blocks_done=scan.next_block, seconds_so_far=el, projected_seconds=proj)
        dump()
        print(f"  block {scan.next_block}/{len(scan.blocks)}: {el:.1f} s, projected {proj:.1f} s", flush=True)
        if proj > limit_s and not scan.done:
            out["stopped_early"] = f"projected {proj:.0f} s exceeds the {limit_s:.0f} s limit"
            break
    t_scan = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = scan.results()
    levels = build_levels(r["pyramid_level0"])
    t_post = time.perf_counter() - t1
    covered = done_pairs
    out.update(seconds_scan=t_scan, seconds_results_and_pyramid=t_post, seconds_total=t_scan + t_post + t_setup,
               pairs_done=int(covered), pairs_per_second=covered / t_scan, n_tested=r["tested"],
               pyramid_levels=len(levels), pyramid_side=int(levels[0].shape[0]), pyramid_cell=int(r["pyramid_cell"]),
               top1={"i": int(r["top"]["i"][0]), "j": int(r["top"]["j"][0]), "stat": float(r["top"]["stat"][0]),
                     "p": float(r["top"]["p"][0])},
               gpu_timing_launch_s=dict(scan.engine.timing))
    dump()
    return scan, G, y, chrom


def profile_tiles(cp, scan, n_tiles: int, peaks: dict, out: dict):
    """Synchronised per-phase timing of a sample of full-size tile pairs (off the diagonal)."""
    eng = scan.engine
    full = [(a, b) for a, b in scan.tile_pairs if a != b and (b + 1) * scan.tile <= scan.p][:n_tiles]
    t = {"gemm": 0.0, "kernel": 0.0, "merge": 0.0, "encode": 0.0}
    flops16 = flops64 = 0.0
    n = eng.G.shape[1]
    for a, b in full:
        e = [cp.cuda.Event() for _ in range(5)]
        e[0].record()
        eng._enc_cache.clear()
        ea, eb = eng._encodings(a), eng._encodings(b)
        e[1].record()
        ti, tj = ea["rows"], eb["rows"]
        buf = eng._buffers(ti, tj)
        eng._gemm(ea["ME16"], eb["ME16"], buf["cnt"], True)
        eng._gemm(ea["E16"], eb["I12"], buf["cel"], True)
        eng._gemm(ea["Yl"], eb["MX"], buf["ys"], False)
        eng._gemm(ea["My2"], eb["M"], buf["yy"], False)
        e[2].record()
        eng._launch(buf, ti, tj, a * scan.tile, b * scan.tile, mode=1)
        e[3].record()
        e[3].synchronize()
        t0 = time.perf_counter()
        eng._merge(buf, ti, tj, a * scan.tile, b * scan.tile)
        t["merge"] += time.perf_counter() - t0
        t["encode"] += cp.cuda.get_elapsed_time(e[0], e[1]) / 1e3
        t["gemm"] += cp.cuda.get_elapsed_time(e[1], e[2]) / 1e3
        t["kernel"] += cp.cuda.get_elapsed_time(e[2], e[3]) / 1e3
        flops16 += 2.0 * n * (4 * ti * tj + 2 * ti * tj)
        flops64 += 2.0 * n * (4 * ti * tj + ti * tj)
    pairs = sum((min(scan.p, (a + 1) * scan.tile) - a * scan.tile) * (min(scan.p, (b + 1) * scan.tile) - b * scan.tile)
                for a, b in full)
    gemm_time_16 = flops16 / (peaks["fp16_fp32acc"] * 1e12)
    gemm_time_64 = flops64 / (peaks["fp64"] * 1e12)
    out["profile"] = {
        "tile_pairs": len(full), "pairs": pairs, "seconds": t,
        "ns_per_pair": {k: v / pairs * 1e9 for k, v in t.items()},
        "gemm_tflops_fp16_part": flops16 / 1e12, "gemm_tflops_fp64_part": flops64 / 1e12,
        "gemm_time_at_measured_peaks_s": gemm_time_16 + gemm_time_64,
        "gemm_fraction_of_peak": (gemm_time_16 + gemm_time_64) / max(t["gemm"], 1e-12),
        "kernel_bytes_read_per_pair": 5 * 4 + 5 * 8,
        "kernel_effective_GBps": pairs * 60 / max(t["kernel"], 1e-12) / 1e9,
    }


def cpu_reference_2d(G, y, chrom, tile_gpu: int, out: dict):
    """The CPU path on this machine, one full off-diagonal GPU-sized tile pair, extrapolated."""
    from models.scans.scan2d import Scan2D, Scan2DOptions

    m = 2 * tile_gpu
    sub = Scan2D(G[:m], y, chrom[:m], Scan2DOptions(tile=1024, top_k=100), device="cpu")
    sub.tile_pairs = [(a, b) for a, b in sub.tile_pairs if a < tile_gpu // 1024 <= b]
    sub.blocks = [sub.tile_pairs]
    t0 = time.perf_counter()
    sub.run()
    el = time.perf_counter() - t0
    pairs = tile_gpu * tile_gpu
    out["cpu_reference"] = {"pairs": pairs, "seconds": el, "pairs_per_second": pairs / el,
                            "threads": os.cpu_count()}


def bench_1d(cp, p: int, n: int, out: dict, reps: int = 5):
    from models.scans.scan1d import scan_1d, scan_1d_device

    rng = np.random.default_rng(1)
    y = rng.normal(size=n)
    C = rng.normal(size=(n, 2))
    G_host = rng.integers(0, 3, size=(p, n), dtype=np.int8)
    # device-resident
    G_dev = cp.asarray(G_host)
    scan_1d_device(G_dev[:10000], y, C)
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        beta, se, t, df = scan_1d_device(G_dev, y, C)
        cp.cuda.Device().synchronize()
        times.append(time.perf_counter() - t0)
    # including the host-to-device copy of the int8 matrix
    times_h2d = []
    for _ in range(3):
        del G_dev
        cp.get_default_memory_pool().free_all_blocks()
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        G_dev = cp.asarray(G_host)
        beta, se, t, df = scan_1d_device(G_dev, y, C)
        cp.cuda.Device().synchronize()
        times_h2d.append(time.perf_counter() - t0)
    # correctness spot check against the CPU path
    k = 2000
    ref = scan_1d(G_host[:k], y, C, device="cpu", snp_major=True)
    err = float(np.nanmax(np.abs(cp.asnumpy(beta[:k]) - ref.beta) / np.abs(ref.beta)))
    # CPU reference: the same function on this machine's cores, 200k SNPs, extrapolated
    m = 200_000
    t0 = time.perf_counter()
    scan_1d(G_host[:m], y, C, device="cpu", snp_major=True)
    cpu = (time.perf_counter() - t0) * p / m
    out["scan_1d"] = {"n_snps": p, "n_samples": n, "covariates": 2, "seconds_resident_median": float(np.median(times)),
                      "seconds_resident_all": times, "seconds_with_h2d_median": float(np.median(times_h2d)),
                      "max_rel_err_vs_cpu": err, "cpu_seconds_extrapolated": cpu,
                      "speedup_vs_cpu": cpu / float(np.median(times)), "goal_seconds": 0.5}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gemma"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--top", type=int, default=1000)
    ap.add_argument("--tile", type=int, default=8192)
    ap.add_argument("--limit", type=float, default=300.0, help="stop the HLC scan when projected beyond this")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: peaks,hlc,profile,cpuref,1d")
    args = ap.parse_args(argv)
    import cupy as cp

    skip = set(filter(None, args.skip.split(",")))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(), "cupy": cp.__version__,
           "numpy": np.__version__, "host": platform.node(), "cpu_count": os.cpu_count()}

    def dump():
        (out_dir / "scan_gpu.json").write_text(json.dumps(res, indent=1, default=float) + "\n")

    peaks = gemm_peaks(cp) if "peaks" not in skip else {"fp16_fp32acc": 990.0, "fp64": 67.0}
    res["gemm_peak_tflops_measured"] = peaks
    dump()
    print("GEMM peaks (TFLOP/s):", peaks, flush=True)
    if "1d" not in skip:
        bench_1d(cp, 2_000_000, 1000, res)
        dump()
        print("1D:", {k: v for k, v in res["scan_1d"].items() if not isinstance(v, list)}, flush=True)
    if "hlc" not in skip:
        scan, G, y, chrom = bench_hlc(cp, Path(args.data), args.top, args.tile, args.limit, res, dump)
        h = res["hlc_2d"]
        if "profile" not in skip:
            profile_tiles(cp, scan, 6, peaks, h)
            dump()
        if "cpuref" not in skip:
            cpu_reference_2d(G, y, chrom, scan.tile, h)
            cr = h["cpu_reference"]
            h["cpu_reference"]["projected_seconds_full_scan"] = h["n_pairs"] / cr["pairs_per_second"]
            h["speedup_vs_cpu_path"] = h["pairs_per_second"] / cr["pairs_per_second"]
            dump()
        pr = h.get("profile", {})
        h["gemm_fraction_of_peak_overall"] = (pr.get("gemm_time_at_measured_peaks_s", 0) / max(pr.get("pairs", 1), 1)
                                             * h["n_pairs"]) / max(h["seconds_scan"], 1e-9)
        dump()
        print("\nHLC 2D: {n_pairs:,} pairs in {seconds_scan:.1f} s ({pairs_per_second:.3g} pairs/s), total "
              "{seconds_total:.1f} s incl. setup and results".format(**h))
        if pr:
            print("  per pair (ns): " + ", ".join(f"{k} {v:.3f}" for k, v in pr["ns_per_pair"].items()))
            print(f"  GEMM phase at {100 * pr['gemm_fraction_of_peak']:.0f} % of measured peak; "
                  f"whole scan at {100 * h['gemm_fraction_of_peak_overall']:.0f} % of GEMM peak")
        if "speedup_vs_cpu_path" in h:
            print(f"  vs CPU path on this machine: {h['speedup_vs_cpu_path']:.0f}x")
    if "scan_1d" in res:
        s = res["scan_1d"]
        print(f"1D: {s['n_snps']:,} SNPs x {s['n_samples']}: {s['seconds_resident_median']:.3f} s resident, "
              f"{s['seconds_with_h2d_median']:.3f} s with host copy; CPU {s['cpu_seconds_extrapolated']:.1f} s "
              f"({s['speedup_vs_cpu']:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
