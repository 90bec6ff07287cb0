"""CPU benchmark of the exact 2D scan against PLINK 1.9 ``--epistasis`` on the same machine and inputs.

(a) mouse_hs1940 (GEMMA example data), phenotype column 1 (CD8, 1,410 mice), every SNP PLINK
    tests (9,282 polymorphic autosomal SNPs with a position, 43 million pairs). PLINK 1.9 runs with
    its defaults (``--epi1 0.0001`` report threshold) and as many threads as this package; this
    package runs the full scan with a top-1000 list, per-SNP best partners, chromosome-pair
    summaries and the map pyramid. Goal: >= 10x faster. Also times ``plink2 --glm`` against the
    1D scan. Both tools see the same machine in the same run; the load average is recorded,
    because other work on a shared machine slows both.

    python benchmarks/bench_scan_cpu.py --data ../shared/data/gemma --out benchmarks/results

The two tools run interleaved (``--repeats`` times each) and the fastest run of each counts, for
wall-clock and for CPU time (user + system, children included) separately. Library imports of this
package (NumPy, SciPy, PyTorch for the int8 GEMMs) happen once before timing and are reported as
``ours_seconds_imports``; PLINK's process start is inside its time. ``--cpus 0,1`` pins both tools
to those cores (for a like-for-like 2-core run on a larger host).

Writes ``scan_cpu.json``; prints a table last. Needs the Debian packages plink1.9 and plink2.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd):
    c0, t0 = _child_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0, _child_cpu() - c0


def _bench_2d(args, tmp: Path, inp, threads: int, t_load: float) -> dict:
    """PLINK 1.9 --epistasis and run_scan (2D), interleaved; the fastest run of each counts."""
    from pipelines.workflows.scan import ScanSpec, run_scan  # imported (and timed) by main

    G = inp.genotypes.dosage
    plink1 = shutil.which(args.plink1)
    plink_runs, ours = [], []
    for _ in range(args.repeats):
        wall, cpu = _run([plink1, "--bfile", str(tmp / "m"), "--pheno", str(tmp / "cd8.txt"), "--epistasis",
                          "--allow-no-sex", "--threads", str(threads), "--out", str(tmp / "epi")])
        plink_runs.append({"wall": wall, "cpu": cpu, "load": os.getloadavg()[0]})
        print(f"  plink1.9 --epistasis: {wall:.1f} s wall, {cpu:.1f} s CPU, load {os.getloadavg()[0]:.1f}", flush=True)
        for workers in args.workers.split(","):
            c0, t0, k0 = time.process_time(), time.perf_counter(), _child_cpu()
            spec = ScanSpec(mode="2d", top=1000, device="cpu", threads=threads, workers=workers)
            r = run_scan(inp.genotypes, inp.phenotype, spec, log=lambda msg: None)
            ours.append({"workers": workers, "wall": time.perf_counter() - t0,
                         "cpu": time.process_time() - c0 + _child_cpu() - k0, "load": os.getloadavg()[0]})
            print(f"  epiflow exact 2D ({workers}): {ours[-1]['wall']:.1f} s wall, {ours[-1]['cpu']:.1f} s CPU, "
                  f"load {ours[-1]['load']:.1f}", flush=True)
    log = (tmp / "epi.log").read_text()
    n_valid = int(next(ln for ln in log.splitlines() if "valid tests performed" in ln).split()[0])
    ref = pd.read_csv(tmp / "epi.epi.qt", sep=r"\s+")
    # agreement with PLINK on the pairs it reports
    top = r.top.rename(columns={"snp1": "SNP1", "snp2": "SNP2", "beta_int": "beta"})[["SNP1", "SNP2", "stat", "beta"]]
    m = top.merge(ref, on=["SNP1", "SNP2"], how="left")
    rel_stat = (m["stat"] - m["STAT"]).abs() / m["STAT"]
    rel_beta = (m["beta"] - m["BETA_INT"]).abs() / m["BETA_INT"].abs()
    pw = min(x["wall"] for x in plink_runs)
    ow = min(x["wall"] for x in ours)
    return {
        "n_snps": int(G.shape[0]), "n_samples": int(G.shape[1]), "n_pairs": int(r.numbers["n_pairs"]),
        "tile": r.numbers["tile"], "plink_valid_tests": n_valid, "ours_tested": int(r.numbers["n_tested"]),
        "plink_runs": plink_runs, "ours_runs": ours,
        "ours_seconds_load_inputs": t_load, "plink_wall": pw, "ours_wall": ow, "speedup_wall": pw / ow,
        "plink_cpu": min(x["cpu"] for x in plink_runs), "ours_cpu": min(x["cpu"] for x in ours),
        "speedup_cpu_time": min(x["cpu"] for x in plink_runs) / min(x["cpu"] for x in ours),
        "ours_pairs_per_second": r.numbers["n_pairs"] / ow, "plink_pairs_per_second": n_valid / pw,
        "top1000_found_in_plink_output": int(m["STAT"].notna().sum()),
        "top1000_max_rel_diff_stat": float(rel_stat.max()), "top1000_max_rel_diff_beta": float(rel_beta.max()),
        "goal_speedup": 10.0,
    }


def _bench_1d(plink2: str, tmp: Path, inp, threads: int) -> dict:
    """plink2 --glm against the exact 1D scan."""
    from pipelines.workflows.scan import ScanSpec, run_scan

    wall2, cpu2 = _run([plink2, "--bfile", str(tmp / "m"), "--pheno", str(tmp / "cd8.txt"), "--glm",
                        "allow-no-covars", "--threads", str(threads), "--out", str(tmp / "glm")])
    spec1 = ScanSpec(mode="1d", top=10, device="cpu")
    run_scan(inp.genotypes.subset(snps=np.arange(10)), inp.phenotype, spec1)  # imports and first-call costs
    t0 = time.perf_counter()
    r1 = run_scan(inp.genotypes, inp.phenotype, spec1)
    t1 = time.perf_counter() - t0
    return {"n_snps": int(inp.genotypes.p), "plink2_wall": wall2, "ours_wall": t1,
            "speedup_wall": wall2 / t1, "n_tests": r1.numbers["n_tests"]}


def _report(res: dict, threads: int, int8: bool, t_imp: float) -> None:
    s = res["scan_2d"]
    print(f"2D exact, mouse_hs1940 ({s['n_snps']} SNPs, {s['n_samples']} mice, {s['n_pairs']:,} pairs, {threads} threads)")
    print(f"  PLINK 1.9 --epistasis  {s['plink_wall']:8.1f} s wall {s['plink_cpu']:8.1f} s CPU  "
          f"({s['plink_pairs_per_second']:.3g} pairs/s)")
    print(f"  epiflow exact 2D       {s['ours_wall']:8.1f} s wall {s['ours_cpu']:8.1f} s CPU  "
          f"({s['ours_pairs_per_second']:.3g} pairs/s; int8 GEMMs: {int8}; imports before timing {t_imp:.1f} s)")
    print(f"  speedup {s['speedup_wall']:.1f}x wall, {s['speedup_cpu_time']:.1f}x CPU time (goal >= 10x); "
          f"top-1000 vs PLINK: {s['top1000_found_in_plink_output']} found, max rel diff stat "
          f"{s['top1000_max_rel_diff_stat']:.1e}, beta {s['top1000_max_rel_diff_beta']:.1e}")
    if "scan_1d" in res:
        d = res["scan_1d"]
        print(f"1D: plink2 --glm {d['plink2_wall']:.2f} s, epiflow {d['ours_wall']:.2f} s ({d['speedup_wall']:.1f}x)")
    print(f"load average start {res['load_avg_start'][0]:.1f}, end {res['load_avg_end'][0]:.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gemma"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--threads", type=int, default=0, help="threads for both tools (0: all cores)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each tool, interleaved; the fastest counts")
    ap.add_argument("--plink1", default="plink1.9", help="PLINK 1.9 executable")
    ap.add_argument("--workers", default="auto", help="comma list of CPU worker modes to time: auto, process, thread")
    ap.add_argument("--plink2", default="plink2", help="PLINK 2 executable (1D comparison; skipped if absent)")
    ap.add_argument("--cpus", default="", help="comma list of CPU ids to pin both tools to (default: no pinning)")
    args = ap.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # inherited by PLINK
    plink1 = shutil.which(args.plink1)
    plink2 = shutil.which(args.plink2)
    if plink1 is None:
        print(f"{args.plink1} not found (apt-get install plink1.9); skipping")
        return 0
    t_imp = time.perf_counter()
    import scipy.special  # noqa: F401

    from models.scans.scan2d import int8_matmul
    from pipelines.workflows.scan import load_scan_inputs, run_scan  # noqa: F401

    int8 = int8_matmul() is not None  # imports PyTorch when present
    t_imp = time.perf_counter() - t_imp

    threads = args.threads or len(os.sched_getaffinity(0))
    data = Path(args.data)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"host": platform.node(), "cpu_count": os.cpu_count(), "threads": threads,
           "cpus": sorted(os.sched_getaffinity(0)), "load_avg_start": os.getloadavg(), "numpy": np.__version__,
           "int8_gemm": int8, "ours_seconds_imports": t_imp}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for ext in ("bed", "bim", "fam"):
            with gzip.open(data / f"mouse_hs1940.{ext}.gz", "rb") as s, open(tmp / f"m.{ext}", "wb") as d:
                shutil.copyfileobj(s, d)
        fam = pd.read_csv(tmp / "m.fam", sep=r"\s+", header=None, dtype=str, keep_default_na=False)
        pd.DataFrame({0: fam[0], 1: fam[1], 2: fam[5].replace("NA", "-9")}).to_csv(
            tmp / "cd8.txt", sep=" ", header=False, index=False)

        # ---- inputs of this package: the same samples and SNPs
        t0 = time.perf_counter()  # polymorphic SNPs with a position, samples with CD8 (as PLINK scans)
        inp = load_scan_inputs(data / "mouse_hs1940", pheno=data / "mouse_hs1940.pheno.txt.gz", pheno_col="1",
                               trait="qt", log=lambda msg: None)
        t_load = time.perf_counter() - t0
        res["scan_2d"] = _bench_2d(args, tmp, inp, threads, t_load)
        if plink2:
            res["scan_1d"] = _bench_1d(plink2, tmp, inp, threads)
    res["load_avg_end"] = os.getloadavg()
    (out_dir / "scan_cpu.json").write_text(json.dumps(res, indent=1) + "\n")
    _report(res, threads, int8, t_imp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
