"""Whole-command CPU benchmark of ``epiflow scan`` against PLINK on the same files and machine.

Both tools run as whole commands from a shell, on the same decompressed PLINK fileset and the same
phenotype file, interleaved (``--repeats`` rounds: PLINK, then each epiflow variant); wall-clock
time and CPU time (user + system of the child process and its children, from
``getrusage(RUSAGE_CHILDREN)``) are recorded for every run, and the fastest run of each counts.
Everything a command does is inside its time: interpreter start, imports, reading and filtering
the .bed, the scan, writing every output.

(a) 2D, quantitative trait: mouse_hs1940 (GEMMA example data) phenotype column 1 (CD8, 1,410
    mice), every SNP PLINK tests (9,282 polymorphic autosomal SNPs with a position; 43 million
    pairs): ``plink1.9 --epistasis`` (its defaults: pairs with p < 1e-4 written) against
    ``epiflow scan --mode 2d --top 1000`` with ``--no-plots`` (tables, per-SNP best partners,
    chromosome-pair summaries, map pyramid, summary.json: more than PLINK writes) and, timed
    too, with its figures (the command's default). Goal: >= 10x (wall). The top 200 pairs must
    be the same and STAT equal within PLINK's printed precision (6 significant digits).
(b) 2D, case/control trait: phenotype column 4 (757 mice with a 0/1 value, coded 1/2 for PLINK),
    the first ``--cc-snps`` SNPs of the .bim (PLINK's logistic ``--epistasis`` is slow): same
    comparison (OR_INT, STAT). PLINK fits this logistic model in single precision, so its STAT
    differs from the float64 fit here by up to ~3e-5 relative (beyond its printed digits) and pairs
    tied that closely at the 200th place may swap.
(c) 1D: ``plink2 --glm allow-no-covars`` against ``epiflow scan --mode 1d --no-plots`` on (a)'s
    phenotype (goal: at least as fast).

    .venv/bin/python benchmarks/bench_scan_cpu.py [--repeats 2] [--cpus 0,1]

The machine may be shared: the load average before and after each run is recorded; other work
slows both tools. ``--cpus 0,1`` pins both to those cores (a like-for-like 2-core run on a larger
host). Writes ``benchmarks/results/scan_cpu.json`` and prints a table last. Needs plink1.9 (and
plink2 for (c)).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
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
EPIFLOW = ROOT / ".venv" / "bin" / "epiflow"


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list, what: str) -> dict:
    """One whole command: wall and CPU seconds (the child and everything it started)."""
    load0 = os.getloadavg()[0]
    c0, t0 = _child_cpu(), time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if p.returncode != 0:
        raise SystemExit(f"{what} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
    run = {"wall": wall, "cpu": cpu, "load_before": load0, "load_after": os.getloadavg()[0]}
    print(f"  {what:34s} {wall:7.2f} s wall {cpu:7.2f} s CPU  (load {load0:.1f} -> {run['load_after']:.1f})",
          flush=True)
    return run


def _printed_tolerance(v: np.ndarray, digits: int = 6) -> np.ndarray:
    """Half a unit in the last place of a number printed with ``digits`` significant digits (%g)."""
    v = np.abs(np.asarray(v, dtype=np.float64))
    e = np.floor(np.log10(np.where(v > 0, v, 1.0)))
    return 0.5 * 10.0 ** (e - digits + 1)


def _agreement(ours: pd.DataFrame, ref_path: Path, effect: str, ref_effect: str, k: int, log_effect: bool) -> dict:
    """Top-k pairs of both tools: same pairs (up to ties at the cut), STAT within PLINK's printed digits."""
    ref = pd.read_csv(ref_path, sep=r"\s+")
    ref = ref[np.isfinite(ref["STAT"])].sort_values("STAT", ascending=False, kind="stable")
    key = lambda a, b: [f"{min(x, y)}\t{max(x, y)}" for x, y in zip(a, b)]  # noqa: E731
    ref["key"] = key(ref["SNP1"], ref["SNP2"])
    ours = ours.copy()
    ours["key"] = key(ours["snp1"], ours["snp2"])
    top_o, top_r = ours.head(k), ref.head(k)
    m = top_o.merge(ref, on="key", how="left")
    found = int(m["STAT"].notna().sum())
    tol = _printed_tolerance(m["STAT"])
    stat_ok = bool((np.abs(m["stat"] - m["STAT"]) <= tol * 1.0001).all())
    eff_ours = m[effect].to_numpy()
    eff_ref = np.log(m[ref_effect].to_numpy()) if log_effect else m[ref_effect].to_numpy()
    eff_tol = (_printed_tolerance(m[ref_effect]) / np.abs(m[ref_effect]) if log_effect
               else _printed_tolerance(m[ref_effect]))
    eff_ok = bool((np.abs(eff_ours - eff_ref) <= eff_tol * 1.0001 + 1e-12).all())
    # same set of pairs: only pairs tied (within printed precision) with the k-th may differ
    cut = float(top_r["STAT"].iloc[-1]) if len(top_r) else math.inf
    diff = set(top_o["key"]) ^ set(top_r["key"])
    stat_of = dict(zip(ref["key"], ref["STAT"])) | dict(zip(ours["key"], ours["stat"]))
    only_ties = all(abs(stat_of.get(d, -1.0) - cut) <= _printed_tolerance(cut) * 1.0001 for d in diff)
    return {"k": k, "found_in_plink_output": found, "same_pairs": only_ties, "pairs_differing": len(diff),
            "stat_within_printed_precision": stat_ok, "effect_within_printed_precision": eff_ok,
            "max_abs_diff_stat": float(np.nanmax(np.abs(m["stat"] - m["STAT"]))) if found else None,
            "max_rel_diff_stat": float(np.nanmax(np.abs(m["stat"] - m["STAT"]) / m["STAT"])) if found else None}


def _bench_2d(tag: str, args, tmp: Path, pheno: Path, extract: Path | None, threads: int) -> dict:
    plink1 = shutil.which(args.plink1)
    ext = ["--extract", extract] if extract else []
    plink_cmd = [plink1, "--bfile", tmp / "m", "--pheno", pheno, *ext, "--epistasis", "--allow-no-sex",
                 "--threads", threads, "--out", tmp / f"epi_{tag}"]
    variants = {"no_plots": ["--no-plots"], "with_figures": []}
    if args.skip_figures:
        variants.pop("with_figures")
    runs = {"plink": [], **{v: [] for v in variants}}
    for r in range(args.repeats):
        runs["plink"].append(_timed(plink_cmd, f"{tag} plink1.9 --epistasis"))
        for v, extra in variants.items():
            out = tmp / f"ours_{tag}_{v}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [EPIFLOW, "scan", "--bfile", tmp / "m", "--pheno", pheno, *ext, "--mode", "2d", "--top", "1000",
                   "--device", "cpu", "--jobs", threads, "--out", out, *extra]
            runs[v].append(_timed(cmd, f"{tag} epiflow scan --mode 2d {' '.join(extra)}"))
    cc = tag == "cc"
    ours = pd.read_csv(tmp / f"ours_{tag}_no_plots" / "top_pairs.tsv", sep="\t")
    summary = json.loads((tmp / f"ours_{tag}_no_plots" / "summary.json").read_text())
    log = (tmp / f"epi_{tag}.log").read_text()
    n_valid = int(next(ln for ln in log.splitlines() if "valid tests performed" in ln).split()[0])
    agree = _agreement(ours, tmp / f"epi_{tag}.epi.{'cc' if cc else 'qt'}", "log_or_int" if cc else "beta_int",
                       "OR_INT" if cc else "BETA_INT", 200, cc)
    best = {k: {"wall": min(x["wall"] for x in v), "cpu": min(x["cpu"] for x in v)} for k, v in runs.items()}
    res = {"n_snps": summary["filters"]["n_snps_used"], "n_samples": summary["n_samples"],
           "n_pairs": summary["n_pairs"], "plink_valid_tests": n_valid, "ours_tested": summary["n_tested"],
           "runs": runs, "best": best, "top200": agree, "ours_seconds_scan_in_command": summary["seconds_scan"]}
    for v in variants:
        res[f"speedup_wall_{v}"] = best["plink"]["wall"] / best[v]["wall"]
        res[f"speedup_cpu_{v}"] = best["plink"]["cpu"] / best[v]["cpu"]
    return res


def _bench_1d(args, tmp: Path, pheno: Path, threads: int) -> dict:
    plink2 = shutil.which(args.plink2)
    runs = {"plink2": [], "ours": []}
    for _ in range(args.repeats):
        runs["plink2"].append(_timed([plink2, "--bfile", tmp / "m", "--pheno", pheno, "--glm", "allow-no-covars",
                                      "--threads", threads, "--out", tmp / "glm"], "1d plink2 --glm"))
        out = tmp / "ours_1d"
        shutil.rmtree(out, ignore_errors=True)
        runs["ours"].append(_timed([EPIFLOW, "scan", "--bfile", tmp / "m", "--pheno", pheno, "--mode", "1d",
                                    "--top", "100", "--device", "cpu", "--no-plots", "--out", out],
                                   "1d epiflow scan --mode 1d --no-plots"))
    ref = pd.read_csv(next(tmp.glob("glm*.glm.linear")), sep="\t")
    ours = pd.read_parquet(tmp / "ours_1d" / "snps.parquet")
    m = ours.merge(ref, left_on="snp", right_on="ID")
    rel = np.abs(m["t"] - m["T_STAT"]) / np.abs(m["T_STAT"])
    best = {k: {"wall": min(x["wall"] for x in v), "cpu": min(x["cpu"] for x in v)} for k, v in runs.items()}
    return {"runs": runs, "best": best, "speedup_wall": best["plink2"]["wall"] / best["ours"]["wall"],
            "speedup_cpu": best["plink2"]["cpu"] / best["ours"]["cpu"], "snps_compared": int(len(m)),
            "max_rel_diff_t": float(rel.max())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gemma"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--threads", type=int, default=0, help="threads for both tools (0: all cores)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each command; the fastest counts")
    ap.add_argument("--plink1", default="plink1.9")
    ap.add_argument("--plink2", default="plink2")
    ap.add_argument("--cc-snps", type=int, default=2500, help="SNPs of the case/control comparison (0: skip it)")
    ap.add_argument("--skip-figures", action="store_true", help="do not time the command with its figures")
    ap.add_argument("--cpus", default="", help="comma list of CPU ids to pin both tools to")
    args = ap.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # inherited by the children
    if shutil.which(args.plink1) is None:
        print(f"{args.plink1} not found (apt-get install plink1.9); skipping")
        return 0
    threads = args.threads or len(os.sched_getaffinity(0))
    data, out_dir = Path(args.data), Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = {"host": platform.node(), "cpu_count": os.cpu_count(), "threads": threads,
           "cpus": sorted(os.sched_getaffinity(0)), "load_avg_start": os.getloadavg(),
           "method": "whole commands, interleaved; fastest of --repeats; CPU = user + system of the children"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for ext in ("bed", "bim", "fam"):
            with gzip.open(data / f"mouse_hs1940.{ext}.gz", "rb") as s, open(tmp / f"m.{ext}", "wb") as d:
                shutil.copyfileobj(s, d)
        fam = pd.read_csv(tmp / "m.fam", sep=r"\s+", header=None, dtype=str, keep_default_na=False)
        ph = pd.read_csv(data / "mouse_hs1940.pheno.txt.gz", sep=r"\s+", header=None, dtype=str,
                         keep_default_na=False)
        qt = ph[0].replace("NA", "-9")  # column 1: CD8
        cc = ph[3].map({"0": "1", "1": "2"}).fillna("-9")  # column 4: 0/1 -> PLINK's 1 control / 2 case
        pd.DataFrame({0: fam[0], 1: fam[1], 2: qt}).to_csv(tmp / "qt.txt", sep=" ", header=False, index=False)
        pd.DataFrame({0: fam[0], 1: fam[1], 2: cc}).to_csv(tmp / "cc.txt", sep=" ", header=False, index=False)
        print(f"2D quantitative (CD8), {threads} threads:", flush=True)
        res["qt_2d"] = _bench_2d("qt", args, tmp, tmp / "qt.txt", None, threads)
        if args.cc_snps:
            bim = pd.read_csv(tmp / "m.bim", sep=r"\s+", header=None, dtype={1: str})
            (tmp / "cc_snps.txt").write_text("\n".join(bim[1].head(args.cc_snps)) + "\n")
            print(f"2D case/control (column 4), first {args.cc_snps} SNPs:", flush=True)
            res["cc_2d"] = _bench_2d("cc", args, tmp, tmp / "cc.txt", tmp / "cc_snps.txt", threads)
        if shutil.which(args.plink2):
            print("1D quantitative (CD8):", flush=True)
            res["qt_1d"] = _bench_1d(args, tmp, tmp / "qt.txt", threads)
    res["load_avg_end"] = os.getloadavg()
    (out_dir / "scan_cpu.json").write_text(json.dumps(res, indent=1) + "\n")
    _report(res)
    return 0


def _report(res: dict) -> None:
    print(f"\nwhole commands, {res['threads']} threads, load average {res['load_avg_start'][0]:.1f} -> "
          f"{res['load_avg_end'][0]:.1f} (fastest of the repeats)")
    for tag, ref in (("qt_2d", "plink1.9 --epistasis"), ("cc_2d", "plink1.9 --epistasis (case/control)")):
        if tag not in res:
            continue
        s = res[tag]
        b = s["best"]
        print(f"{tag}: {s['n_snps']} SNPs, {s['n_samples']} samples, {s['n_pairs']:,} pairs")
        print(f"  {ref:38s} {b['plink']['wall']:7.2f} s wall {b['plink']['cpu']:7.2f} s CPU")
        for v in ("no_plots", "with_figures"):
            if v in b:
                print(f"  epiflow scan --mode 2d ({v:12s}) {b[v]['wall']:7.2f} s wall {b[v]['cpu']:7.2f} s CPU  "
                      f"-> {s[f'speedup_wall_{v}']:.1f}x wall, {s[f'speedup_cpu_{v}']:.1f}x CPU")
        a = s["top200"]
        print(f"  top 200: same pairs {a['same_pairs']} ({a['pairs_differing']} differ), STAT within printed "
              f"precision {a['stat_within_printed_precision']} (max rel diff {a.get('max_rel_diff_stat') or 0:.1e}), "
              f"effect {a['effect_within_printed_precision']}")
    if "qt_1d" in res:
        d = res["qt_1d"]
        print(f"qt_1d: plink2 --glm {d['best']['plink2']['wall']:.2f} s wall, epiflow {d['best']['ours']['wall']:.2f} s "
              f"-> {d['speedup_wall']:.2f}x wall, {d['speedup_cpu']:.2f}x CPU (max rel diff t {d['max_rel_diff_t']:.1e})")


if __name__ == "__main__":
    sys.exit(main())
