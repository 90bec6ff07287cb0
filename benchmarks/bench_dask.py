"""Strong scaling of ``--executor dask`` against the single-process path, and its per-task overhead.

(a) Exact 2D scan, mouse_hs1940 (GEMMA example data, ../shared/data/gemma), phenotype column 1
    (1,410 mice), every polymorphic SNP with a position (9,282 SNPs, 43 million pairs),
    ``--top 1000``: the local path (``Scan2D.run``, its own threads over tiles) against a Dask
    LocalCluster of 1 and 2 single-threaded worker processes. The top-pair table must be identical.
(b) The CV protocol: ``cross_validate`` of a gene-burden network (``logreg``, a torch net) on a
    planted-burden cohort (``--cv-n`` samples, 200 genes), ``--cv-repeats`` x 3 folds: the local
    path (1 process; and ``--jobs 2`` worker processes) against 1 and 2 Dask workers. Fold AUCs
    must be identical.
(c) Per-task overhead: ``--noop-tasks`` empty tasks through the cluster (submit to result, per
    task), and for each workflow the wall seconds of the Dask run minus the local one per task.

Each Dask configuration starts its cluster once (start-up time reported apart), runs a cold pass
(workers import and build the scan) and ``--repeats`` warm passes; the fastest warm pass counts,
as for the local path. The machine may be shared: the load average is recorded.

    .venv/bin/python benchmarks/bench_dask.py                       # CPU: 1 and 2 workers
    .venv/bin/python benchmarks/bench_dask.py --device cuda         # one GPU: 1 worker vs plain path

CPU writes ``benchmarks/results/dask_scaling_cpu.json``; ``--device cuda`` writes
``benchmarks/results/dask_overhead_gpu.json`` (the executor's overhead on one GPU must stay under
5 % of the plain path's time).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.executor import ExecutorSpec, open_executor  # noqa: E402

DATA = Path(os.environ.get("EPIFLOW_SHARED_DATA", ROOT.parent / "shared" / "data")) / "gemma" / "mouse_hs1940"


def _noop(x):
    return x


def _load_scan(bfile: str, max_snps: int | None, pheno: str | None = None):
    from pipelines.workflows.scan import load_scan_inputs

    inp = load_scan_inputs(bfile, pheno=pheno, min_snps=2, log=lambda m: None)
    if max_snps:
        inp.genotypes = inp.genotypes.subset(snps=np.arange(min(max_snps, inp.genotypes.p)))
    return inp


def _scan_once(inp, device: str, top: int, threads: int = 0):
    from pipelines.workflows.scan import ScanSpec, run_scan

    t0 = time.perf_counter()
    res = run_scan(inp.genotypes, inp.phenotype, ScanSpec(mode="2d", top=top, device=device, threads=threads),
                   log=lambda m: None)
    return time.perf_counter() - t0, res


def _cv_inputs(n: int, repeats: int, device: str):
    from models.simulate.genes import planted_burden
    from pipelines.splits import make_splits
    from pipelines.workflows.cohort import Cohort

    coh = planted_burden(n=n, n_genes=200, n_causal=10, effect=1.0, seed=3)
    C = coh.n_classes
    G = coh.X.shape[1] // C
    X = coh.X.tocsr()
    ids = np.array([f"s{i}" for i in range(n)])
    cohort = Cohort(counts=X, variants=X, y=np.asarray(coh.y), sample_ids=ids, genes=tuple(f"G{g}" for g in range(G)),
                    classes=tuple(f"c{c}" for c in range(C)))
    folds = list(make_splits(coh.y, list(ids), repeats=repeats, folds=3, seed=7).iter_folds())
    train = {"max_epochs": 10, "batch_size": 64, "seed": 0, "device": device}
    return cohort, folds, train


def _cv_once(cohort, folds, train, jobs: int = 1):
    from pipelines.workflows.cv import ModelSpec, cross_validate

    t0 = time.perf_counter()
    res = cross_validate(ModelSpec("logreg", "logreg", {"lr": 0.01, "hidden": 16}), cohort, folds, train_cfg=train,
                         jobs=jobs)
    return time.perf_counter() - t0, res


def _best(times):
    return float(min(times)) if times else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--bfile", default=str(DATA), help="PLINK prefix of the 2D scan (default mouse_hs1940)")
    ap.add_argument("--pheno", default=None, help="phenotype file (default: the .fam column; HLC: HLC.simu.pheno.txt.gz)")
    ap.add_argument("--max-snps", type=int, default=None, help="scan only the first N usable SNPs")
    ap.add_argument("--top", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2, help="warm passes per configuration")
    ap.add_argument("--workers", default=None, help="comma-separated Dask worker counts (CPU 1,2; CUDA 1)")
    ap.add_argument("--cv-n", type=int, default=1500)
    ap.add_argument("--cv-repeats", type=int, default=2)
    ap.add_argument("--noop-tasks", type=int, default=200)
    ap.add_argument("--skip-cv", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    workers = [int(w) for w in (args.workers or ("1" if args.device == "cuda" else "1,2")).split(",")]
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               ("dask_overhead_gpu.json" if args.device == "cuda" else "dask_scaling_cpu.json"))
    report = {"device": args.device, "host": platform.node(), "cpus": len(os.sched_getaffinity(0)),
              "python": platform.python_version(), "load_before": os.getloadavg()[0], "scan": {}, "cv": {},
              "noop": {}}
    if args.device == "cuda":
        import cupy

        report["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    import dask
    import distributed

    report["dask"] = {"dask": dask.__version__, "distributed": distributed.__version__}

    # ------------------------------------------------------------------ (a) exact 2D scan
    inp = _load_scan(args.bfile, args.max_snps, args.pheno)
    scan = report["scan"]
    scan["dataset"] = {"bfile": args.bfile, "pheno": args.pheno, "n": int(len(inp.phenotype.y)), "snps": int(inp.genotypes.p),
                       "pairs": int(inp.genotypes.p * (inp.genotypes.p - 1) // 2)}
    cold, ref = _scan_once(inp, args.device, args.top)
    local = [_scan_once(inp, args.device, args.top)[0] for _ in range(args.repeats)]
    scan["local"] = {"cold_s": cold, "warm_s": local, "best_s": _best(local)}
    if args.device == "cpu":  # the local path on one core: what one single-threaded worker does
        one = [_scan_once(inp, args.device, args.top, threads=1)[0] for _ in range(args.repeats)]
        scan["local_1thread"] = {"warm_s": one, "best_s": _best(one)}
    print(f"scan local ({args.device}): {scan['local']['best_s']:.2f} s  ({scan['dataset']['pairs']:,} pairs)",
          flush=True)
    cv_in = None if args.skip_cv else _cv_inputs(args.cv_n, args.cv_repeats, args.device)
    cv = report["cv"]
    if cv_in is not None:
        cv["dataset"] = {"n": args.cv_n, "genes": 200, "folds": len(cv_in[1]), "model": "logreg (torch net)",
                         "max_epochs": 10}
        _cv_once(*cv_in)  # warms the imports like the scan's cold pass
        t = [_cv_once(*cv_in)[0] for _ in range(args.repeats)]
        ref_cv = _cv_once(*cv_in)[1]
        cv["local"] = {"warm_s": t, "best_s": _best(t)}
        if args.device == "cpu":
            t2 = [_cv_once(*cv_in, jobs=2)[0] for _ in range(args.repeats)]
            cv["local_jobs2"] = {"warm_s": t2, "best_s": _best(t2)}
        print(f"cv local: {cv['local']['best_s']:.2f} s ({len(cv_in[1])} folds)", flush=True)

    for w in workers:
        t0 = time.perf_counter()
        with open_executor(ExecutorSpec(kind="dask", n_workers=w, device=args.device), log=lambda m: None) as ex:
            start = time.perf_counter() - t0
            key = f"dask_{w}"
            # (c) empty tasks: the cluster's own cost per task (submit, schedule, run, result)
            list(ex.map(_noop, range(20)))
            t1 = time.perf_counter()
            list(ex.map(_noop, range(args.noop_tasks)))
            report["noop"][key] = {"tasks": args.noop_tasks,
                                   "per_task_ms": 1e3 * (time.perf_counter() - t1) / args.noop_tasks}
            c, res = _scan_once(inp, args.device, args.top)
            same = res.top.equals(ref.top)
            warm, tasks = [], []
            for _ in range(args.repeats):
                t, res = _scan_once(inp, args.device, args.top)
                warm.append(t)
                tasks.append(res.numbers["executor"])
                same = same and res.top.equals(ref.top)
            best = _best(warm)
            n_tasks = tasks[0]["tasks"]
            if "local_1thread" in scan:
                scan.setdefault("dask_1_vs_local_1thread_pct", None)
                if w == 1:
                    scan["dask_1_vs_local_1thread_pct"] = 100 * (best / scan["local_1thread"]["best_s"] - 1)
            scan[key] = {"cluster_start_s": start, "cold_s": c, "warm_s": warm, "best_s": best,
                         "speedup_vs_local": scan["local"]["best_s"] / best, "tasks": n_tasks,
                         "task_seconds": [x["task_seconds"] for x in tasks],
                         "overhead_vs_local_s_per_task": (best - scan["local"]["best_s"]) / n_tasks,
                         "overhead_vs_local_pct": 100 * (best / scan["local"]["best_s"] - 1),
                         "top_identical": bool(same)}
            print(f"scan dask x{w}: start {start:.1f} s, cold {c:.2f} s, warm {best:.2f} s "
                  f"(x{scan[key]['speedup_vs_local']:.2f} vs local, {n_tasks} tasks, "
                  f"{scan[key]['overhead_vs_local_pct']:+.1f} %), identical={same}; "
                  f"empty task {report['noop'][key]['per_task_ms']:.2f} ms", flush=True)
            if cv_in is not None:
                c, res = _cv_once(*cv_in)
                t, aucs = [], []
                for _ in range(args.repeats):
                    tt, res = _cv_once(*cv_in)
                    t.append(tt)
                    aucs.append(res.aucs.tolist() == ref_cv.aucs.tolist())
                best = _best(t)
                cv[key] = {"cold_s": c, "warm_s": t, "best_s": best, "speedup_vs_local": cv["local"]["best_s"] / best,
                           "tasks": len(cv_in[1]), "overhead_vs_local_s_per_task": (best - cv["local"]["best_s"]) /
                           len(cv_in[1]), "overhead_vs_local_pct": 100 * (best / cv["local"]["best_s"] - 1),
                           "aucs_identical": bool(all(aucs))}
                print(f"cv dask x{w}: cold {c:.2f} s, warm {best:.2f} s (x{cv[key]['speedup_vs_local']:.2f} vs "
                      f"local, {cv[key]['overhead_vs_local_pct']:+.1f} %), identical AUCs={all(aucs)}", flush=True)
    report["load_after"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
