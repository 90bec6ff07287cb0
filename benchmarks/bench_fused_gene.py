"""Micro-benchmark of the fused gene layer (models/genes/fused.py) against the tensor-op path:
forward + backward for U rows x N members (defaults: a 4,000 x 23,000-gene combination batch,
~1M rows, 100 members), for each dot precision. CUDA only.

    python benchmarks/bench_fused_gene.py --rows 1000000 --members 100
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_fused_gene.json"))
    args = ap.parse_args(argv)
    from models.genes import fused

    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    U, N, H, C = args.rows, args.members, args.hidden, args.classes
    z = torch.randn(U, C, generator=g).to(dev)
    ws = [torch.randn(*s, generator=g).mul_(0.3).to(dev).requires_grad_()
          for s in ((N, H, C), (N, H), (N, H), (N,))]
    go = torch.randn(N, U, generator=g).to(dev)
    ref = None
    res = {"rows": U, "members": N, "hidden": H, "classes": C,
           "device": torch.cuda.get_device_name(0), "variants": {}}

    def timed(fn):
        fn()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(args.reps):
            fn()
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) / args.reps

    with torch.no_grad():
        ref = fused.gene_values_reference(z[:20000].double(), *(w.double() for w in ws)).t()
    for prec in fused.PRECISIONS:
        os.environ["EPIFLOW_FUSED_DOT"] = prec
        fwd = lambda: fused.gene_values_t(z, *ws)  # noqa: E731
        both = lambda: torch.autograd.backward(fused.gene_values_t(z, *ws), go)  # noqa: E731
        t_f, t_fb = timed(fwd), timed(both)
        with torch.no_grad():
            out = fused.gene_values_t(z, *ws)[:, :20000].double()
            err = float((out - ref).norm() / ref.norm())
        flops = 2 * U * N * H * C * 3  # forward dot, recomputed dot, weight-gradient dot
        res["variants"][prec] = {"fwd_ms": t_f, "fwd_bwd_ms": t_fb, "rel_err_fwd": err,
                                 "dot_tflops": flops / (t_fb / 1e3) / 1e12}
        print(f"{prec:7s} fwd {t_f:7.2f} ms  fwd+bwd {t_fb:7.2f} ms  rel err {err:.1e}", flush=True)
    os.environ.pop("EPIFLOW_FUSED_DOT")
    # the tensor-op path on a member chunk that fits (h is U x n x H floats)
    n = max(1, min(N, int(8e9 // (U * H * 4 * 3))))
    wc = [w[:n].detach().requires_grad_() for w in ws]

    def plain():
        v = fused.gene_values_reference(z, *wc)
        torch.autograd.backward(v, go[:n].t())

    t_p = timed(plain)
    res["tensor_ops"] = {"members_timed": n, "fwd_bwd_ms": t_p, "fwd_bwd_ms_per_member": t_p / n}
    print(f"tensor ops: {t_p:.1f} ms for {n} members = {t_p / n:.2f} ms per member "
          f"(fused ieee {res['variants']['ieee']['fwd_bwd_ms'] / N:.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
