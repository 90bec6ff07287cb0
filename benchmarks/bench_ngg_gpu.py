"""NGG 2D over all of HLC, end to end: seconds per repetition of the tiled (GEMM-shaped) estimator.

HLC: 427 people x 358,499 SNPs, ~6.4e10 columns (SNPs and SNP pairs) per repetition. The whole
column space is run (not a prefix): load -> standardise -> every block of pairs -> top-k, with
models.ngg.tiled at the tuned settings (B=100, d=30, lam = 2 x the noise level, 200 FISTA
iterations; R=1 by default, --R 10 for the full run). The JSON is rewritten after every block, so
a run stopped by a time limit leaves the part it covered (``complete: false``, with an
extrapolation flagged ``extrapolated: true``); a finished run has ``extrapolated: false``.

Reference in the same run (--reference-pieces K, needs CuPy on a GPU): the previous estimator
(models.ngg.ngg.ngg_fit) on the first K pieces of a repetition, its rate extrapolated (flagged),
and the speed ratio.

Operation count per column (what "fraction of peak" divides): models.ngg.tiled.flops_per_column
(sketch GEMM 2 d n, pair moments 4 n, V and h, FISTA 4 d per iteration, solve). Peaks are measured
in the same run: an 8192^3 matmul in fp32 (no TF32), TF32 and bf16 (tensor cores).

    python benchmarks/bench_ngg_gpu.py --data ../shared/data/gemma            # GPU, R=1, all of HLC
    python benchmarks/bench_ngg_gpu.py --data ../shared/data/gemma --R 10
    python benchmarks/bench_ngg_gpu.py --device cpu --snps 600 --out /tmp/ngg.json   # CPU smoke run

The numerical core only (numpy, torch, tqdm): no pipelines imports, so it runs on a bare GPU
machine with the PLINK files copied next to the repository.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TUNED = {"B": 100, "d": 30, "lam_scale": 2.0, "iters": 200}


def _open(path: Path):
    if path.exists():
        return open(path, "rb")
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rb")
    raise FileNotFoundError(path)


def read_bed(prefix: Path, snps: int | None = None):
    """(n, p) int8 dosages (-1 missing), C order, of a PLINK fileset (plain or .gz), first ``snps``:
    the project's own reader (pipelines.io.plink: numpy and pandas only, so it runs on the GPU host)."""
    from pipelines.io.plink import read_bed as read_plink

    g = read_plink(prefix, snps=None if not snps else np.arange(snps))
    return np.ascontiguousarray(g.dosage)


def read_pheno(path: Path, n: int) -> np.ndarray:
    with _open(path) as f:
        rows = [ln.split() for ln in f.read().decode().splitlines() if ln.strip()]
    y = np.array([float(r[0]) if r[0] not in ("NA", "-9") else np.nan for r in rows])
    if y.size != n:
        raise ValueError(f"{path}: {y.size} phenotype rows for {n} samples")
    return y


def matmul_peaks(torch, dev, size=8192, reps=10) -> dict:
    """Measured TFLOP/s of one size^3 matmul in fp32 (TF32 off), TF32 and bf16."""
    out = {}
    if dev.type != "cuda":
        size, reps = 1024, 3
    old = torch.backends.cuda.matmul.allow_tf32
    for name, dt, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                           ("bf16", torch.bfloat16, False)):
        if dev.type != "cuda" and name != "fp32":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(size, size, device=dev, dtype=dt)
        b = torch.randn(size, size, device=dev, dtype=dt)
        c = a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out[name] = 2.0 * size ** 3 * reps / (time.perf_counter() - t0) / 1e12
        del a, b, c
    torch.backends.cuda.matmul.allow_tf32 = old
    return out


def _parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gemma"),
                    help="folder with HLC.bed/.bim/.fam(.gz) and HLC.simu.pheno.txt(.gz)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ngg_hlc_gpu.json"))
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--R", type=int, default=1, help="repetitions (1: one repetition; 10: the full run)")
    ap.add_argument("--snps", type=int, default=0, help="first SNPs only (0: all; CPU smoke runs)")
    ap.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"],
                    help="sketch GEMMs: fp32, or TF32 / bf16 tensor cores (CUDA)")
    ap.add_argument("--super-tile", type=int, default=0, help="SNPs per super-tile (0: default)")
    ap.add_argument("--row-tile", type=int, default=0, help="star rows per tile pair (0: default)")
    ap.add_argument("--group", type=int, default=0, help="column tiles per step (0: default)")
    ap.add_argument("--max-blocks", type=int, default=0, help="stop after this many blocks (0: all)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="stop after the block that passes this many seconds of fitting (0: none); the JSON "
                         "then reports the covered part, extrapolated and flagged")
    ap.add_argument("--reference-pieces", type=int, default=0,
                    help="also time the previous estimator (CuPy) on this many pieces, extrapolated")
    ap.add_argument("--profile", action="store_true", help="per-stage times (synchronising)")
    ap.add_argument("--checkpoint", default="", help="checkpoint file: a rerun resumes")
    ap.add_argument("--config", default="", help="override, e.g. B=100,d=30,lam_scale=2,iters=200")
    ap.add_argument("--pieces", default="random", choices=["random", "rect"],
                    help="piece layout of the tiled engine (random: random sets of B of a step's pairs; rect: 10 x 10)")
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)
    import torch

    from models.ngg.tiled import TiledSettings, flops_per_column, ngg_fit_tiled, resolve_torch_device

    cfg = dict(TUNED)
    for part in filter(None, args.config.split(",")):
        k, v = part.split("=")
        cfg[k.strip()] = float(v) if k.strip() == "lam_scale" else int(v)
    dev = resolve_torch_device(args.device)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} torch threads)"
    res = {"benchmark": "ngg_2d_hlc", "estimator": f"models.ngg.tiled ({args.pieces} pieces, tile-shared sketches)",
           "device": name, "torch": torch.__version__, "host": platform.node(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "settings": {**cfg, "R": args.R, "precision": args.precision, "seed": 0, "top": 1000,
                        "pieces": args.pieces}}

    def dump():
        tmp = out_path.with_name(out_path.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=float) + "\n")
        os.replace(tmp, out_path)

    res["matmul_peak_tflops"] = peaks = matmul_peaks(torch, dev)
    t0 = time.perf_counter()
    data = Path(args.data)
    X = read_bed(data / "HLC", args.snps or None)
    y = read_pheno(data / "HLC.simu.pheno.txt", X.shape[0])
    res["seconds_load"] = time.perf_counter() - t0
    n, p = X.shape
    res.update(n=int(n), p=int(p), pairs=p * (p - 1) // 2)
    print(f"HLC {n} x {p} ({p * (p - 1) // 2:.3g} pairs) on {name}; matmul peaks (TFLOP/s) "
          + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()), flush=True)
    s0 = TiledSettings.default(dev, cfg["B"], p, n, args.pieces)
    st = TiledSettings(args.super_tile or s0.super_tile, args.row_tile or s0.row_tile, args.group or s0.group)
    kw = dict(mode="2d", B=cfg["B"], d=cfg["d"], lam_scale=cfg["lam_scale"], iters=cfg["iters"], seed=0,
              device=dev, top=1000, precision=args.precision, settings=st, pieces=args.pieces)
    # warm-up on a small panel (kernels, cuBLAS/cuSOLVER handles); not timed
    ngg_fit_tiled(X[:, :min(p, 600)], y, R=1, progress=False, **kw)
    fpc = flops_per_column(n, cfg["B"], cfg["d"], cfg["iters"])
    if args.reference_pieces:  # first: a short run, so its ratio exists even if the main run is cut
        res["reference"] = _reference(X, y, cfg, args.reference_pieces, fpc)
        print(f"previous estimator: {res['reference']['pairs_per_second']:.3g} pairs/s on "
              f"{res['reference']['backend']} (extrapolated from {args.reference_pieces} pieces: "
              f"{res['reference']['seconds_per_repetition_extrapolated']:.0f} s per repetition)", flush=True)
        dump()
    t_start = time.perf_counter()

    class _TimeUp(Exception):
        pass

    def on_block(info):
        sec = time.perf_counter() - t_start
        cols = info["columns_done"]
        res["progress"] = {"blocks_done": info["block"], "blocks": info["blocks"], "columns_done": cols,
                           "seconds": sec, "columns_per_second": cols / sec if sec > 0 else None}
        if info["block"] < info["blocks"]:
            total = res["pairs"] + p
            res["complete"] = False
            res["extrapolated"] = True
            if sec > 0:   # the rate so far, in the operation count of flops_per_column
                res["progress"]["tflops_so_far"] = fpc * cols / sec / 1e12
                res["progress"]["fraction_of_tensor_core_peak_so_far"] = \
                    res["progress"]["tflops_so_far"] / peaks.get("bf16", peaks["fp32"])
            res["seconds_per_repetition_extrapolated"] = sec / cols * total if cols else None
            res["pairs_per_second"] = cols / sec if sec > 0 else None
            dump()
            if args.time_limit and sec > args.time_limit:
                raise _TimeUp

    try:
        r = ngg_fit_tiled(X, y, R=args.R, progress=True, profile=args.profile, on_block=on_block,
                          max_blocks=args.max_blocks or None, checkpoint=args.checkpoint or None, **kw)
    except _TimeUp:
        pr = res["progress"]
        print(f"\nstopped at the time limit after {pr['blocks_done']} of {pr['blocks']} blocks: "
              f"{pr['columns_per_second']:.3g} pairs/s, one repetition ~"
              f"{res['seconds_per_repetition_extrapolated']:.0f} s (extrapolated; R={args.R})")
        res["time_limit_s"] = args.time_limit
        if "reference" in res:
            res["speedup_vs_reference"] = pr["columns_per_second"] / res["reference"]["pairs_per_second"]
            print(f"speed-up over the previous estimator: x{res['speedup_vs_reference']:.1f}")
        dump()
        print(f"wrote {out_path}")
        return res
    wall = time.perf_counter() - t_start
    cols = r.timings["columns_done"]
    complete = bool(r.extra["complete"])
    per_rep = wall / args.R
    res.update({
        "complete": complete, "extrapolated": not complete,
        "seconds_total": wall, "seconds_per_repetition": per_rep if complete else None,
        "seconds_per_repetition_extrapolated": None if complete else wall / cols * r.n_columns,
        "columns_per_repetition": r.n_columns, "columns_done": cols,
        "pairs_per_second": cols / wall, "flops_per_column": fpc,
        "tflops_achieved": fpc * cols / wall / 1e12,
        "settings": {**res["settings"], **{k: r.params[k] for k in ("super_tile", "row_tile", "group", "lam",
                                                                    "n_blocks")}},
        "top_pairs": [[int(i), int(j), float(s)] for i, j, s in zip(r.top_pairs["i"][:10], r.top_pairs["j"][:10],
                                                                    r.top_pairs["score"][:10])],
    })
    for k, v in peaks.items():
        res[f"fraction_of_{k}_peak"] = res["tflops_achieved"] / v
    res["fraction_of_tensor_core_peak"] = res["tflops_achieved"] / peaks.get("bf16", peaks["fp32"])
    if args.profile:
        res["stages_s"] = {k: v for k, v in r.timings.items() if k.endswith("_s")}
    res.pop("progress", None)
    dump()
    if "reference" in res:
        res["speedup_vs_reference"] = res["pairs_per_second"] / res["reference"]["pairs_per_second"]
        dump()
    what = "per repetition" if complete else "per repetition (extrapolated: run incomplete)"
    sec = per_rep if complete else res["seconds_per_repetition_extrapolated"]
    print(f"\nNGG 2D HLC (B={cfg['B']}, d={cfg['d']}, lam x{cfg['lam_scale']}, iters {cfg['iters']}, R={args.R}) on "
          f"{name}: {res['pairs_per_second']:.3g} pairs/s, {sec:.1f} s {what}, {res['tflops_achieved']:.1f} "
          f"TFLOP/s = {100 * res['fraction_of_tensor_core_peak']:.1f} % of the measured tensor-core (bf16) peak")
    if "reference" in res:
        print(f"speed-up over the previous estimator: x{res['speedup_vs_reference']:.1f}")
    print(f"wrote {out_path}")
    return res


def _reference(X, y, cfg, pieces, fpc):
    """The previous estimator (models.ngg.ngg, CuPy on a GPU) on the first pieces of a repetition."""
    from models.ngg.ngg import ngg_fit

    try:
        import cupy  # noqa: F401

        xp = "cuda"
    except ImportError:
        xp = "cpu"
    kw = dict(mode="2d", B=cfg["B"], d=cfg["d"], lam_scale=cfg["lam_scale"], iters=cfg["iters"], R=1, seed=0,
              xp=xp, top=1000, progress=False)
    ngg_fit(X, y, max_pieces=200, **kw)
    t0 = time.perf_counter()
    r = ngg_fit(X, y, max_pieces=pieces, **kw)
    wall = time.perf_counter() - t0
    cols = r.timings["pieces_done"] * r.params["B"]
    rate = cols / r.timings["loop_s"]
    return {"backend": xp, "pieces": pieces, "wall_s": wall, "pairs_per_second": rate,
            "seconds_per_repetition_extrapolated": r.n_columns / rate, "extrapolated": True}


if __name__ == "__main__":
    main()
