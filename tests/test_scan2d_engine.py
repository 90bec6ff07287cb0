"""The GPU engine's host logic (GEMM layouts, packed accumulators, top-k merging with overflow,
conversion back to the CPU layout) run on the CPU with NumPy standing in for CuPy and a NumPy
re-statement of the kernel's per-pair semantics. The real kernel is checked against the CPU path
by the gpu-marked test in test_scan_gpu.py; this one catches host-side mistakes without a GPU.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from models.scans import scan2d_gpu
from models.scans.scan2d import Scan2D, Scan2DOptions, qt_stats


class _FakeCupy(types.ModuleType):
    """NumPy under CuPy's names, for the host code of GpuEngine."""

    def __init__(self):
        super().__init__("fakecupy")
        for name in dir(np):
            if not name.startswith("__"):
                setattr(self, name, getattr(np, name))
        self.asnumpy = np.asarray
        self.RawKernel = lambda *a, **k: None
        self.cuda = types.SimpleNamespace(device=types.SimpleNamespace(get_cublas_handle=lambda: 0))


class EmulatedEngine(scan2d_gpu.GpuEngine):
    """GpuEngine whose GEMMs and kernel are NumPy re-statements (same buffers, same packing)."""

    def __init__(self, scan, cap=None):
        import sys

        fake = _FakeCupy()
        saved = sys.modules.get("cupy")
        sys.modules["cupy"] = fake
        try:
            if cap is not None:
                self.CAP = cap
            super().__init__(scan)
        finally:
            if saved is None:
                sys.modules.pop("cupy", None)
            else:
                sys.modules["cupy"] = saved
        self.kernel_calls = []

    def _gemm(self, L, R, out, fp16):
        if fp16:  # fp16 operands, fp32 accumulation: exact for these integers
            assert np.all(L.astype(np.float64) == np.round(L.astype(np.float64)))
            out[...] = (L.astype(np.float64) @ R.astype(np.float64).T).astype(np.float32)
            assert np.abs(out).max() < 2 ** 24
        else:
            out[...] = L @ R.T

    def _launch(self, buf, ti, tj, i0, j0, mode):
        s = self.scan
        self.kernel_calls.append(mode)
        B = float(self.B)
        cnt, cel, ys, yy = (np.asarray(buf[k], dtype=np.float64) for k in ("cnt", "cel", "ys", "yy"))

        def dig(v):
            hi = np.floor(v / B)
            return v - hi * B, hi

        nM1, nM2 = dig(cnt[:ti, tj:])
        n1M, n2M = dig(cnt[ti:, :tj])
        n11, n21 = dig(cel[:, :tj])
        n12, n22 = dig(cel[:, tj:])
        m = {"N": cnt[:ti, :tj], "Sa": n1M + 2 * n2M, "Saa": n1M + 4 * n2M, "Sb": nM1 + 2 * nM2,
             "Sbb": nM1 + 4 * nM2, "Sab": n11 + 2 * (n12 + n21) + 4 * n22, "Saab": n11 + 2 * n12 + 4 * n21 + 8 * n22,
             "Sabb": n11 + 4 * n12 + 2 * n21 + 8 * n22, "Saabb": n11 + 4 * (n12 + n21) + 16 * n22,
             "Sy": ys[:ti, :tj], "Sby": ys[:ti, tj:], "Say": ys[ti:, :tj], "Saby": ys[ti:, tj:], "Syy": yy}
        with np.errstate(all="ignore"):
            beta, stat, ok = qt_stats(m, np, s.opt.tol)
        gi = (i0 + np.arange(ti))[:, None]
        gj = (j0 + np.arange(tj))[None, :]
        valid = (gj > gi) & (gj < s.p) & np.ones((ti, tj), bool)
        ok = ok & valid
        thr = float(self.thr[0])
        cand = ok & (stat >= thr)
        r, c = np.nonzero(cand)
        n = len(r)
        k = min(n, self.CAP)
        self.cand_count[0] = n
        self.cand_i[:k], self.cand_j[:k] = (gi[r, 0])[:k], (gj[0, c])[:k]
        self.cand_stat[:k], self.cand_beta[:k] = stat[r, c][:k], beta[r, c][:k]
        if mode == 0:
            return
        ci = s.chrom_code[np.minimum(gi[:, 0], s.p - 1)]
        cj = s.chrom_code[np.minimum(gj[0], s.p - 1)]
        CI = np.broadcast_to(ci[:, None], (ti, tj))
        CJ = np.broadcast_to(cj[None, :], (ti, tj))
        np.add.at(self.cp_invalid, (CI[valid & ~ok], CJ[valid & ~ok]), 1)
        sg = ok & (stat >= s.sig_stat)
        np.add.at(self.cp_sig, (CI[sg], CJ[sg]), 1)
        sf = np.where(ok, stat, -1.0).astype(np.float32)
        bits = sf.view(np.uint32).astype(np.uint64)
        rr, cc = np.nonzero(ok)
        pr, pc = gi[rr, 0] // self.cell, gj[0, cc] // self.cell
        np.maximum.at(self.pyr, (pr, pc), sf[rr, cc].view(np.uint32))
        pk_col = (bits[rr, cc] << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - gi[rr, 0].astype(np.uint64))
        np.maximum.at(self.colbest, gj[0, cc], pk_col)
        pk_row = (bits[rr, cc] << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - gj[0, cc].astype(np.uint64))
        np.maximum.at(self.rowbest, (gi[rr, 0], cj[cc]), pk_row)


def _data(p=300, n=150, missing=0.05, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.1, 0.5, p)
    G = (rng.random((p, n)) < f[:, None]).astype(np.int8) + (rng.random((p, n)) < f[:, None]).astype(np.int8)
    G[rng.random((p, n)) < missing] = -1
    y = 0.4 * (G[3] == 2) * (G[200] >= 1) + rng.normal(size=n)
    chrom = np.repeat(["1", "2", "3"], [120, 100, 80])
    return G, y, chrom


@pytest.mark.parametrize("missing", [0.0, 0.05])
def test_emulated_engine_matches_cpu(missing, monkeypatch):
    G, y, chrom = _data(missing=missing)
    opt = Scan2DOptions(tile=64, top_k=40, pyramid_side=32)
    cpu = Scan2D(G, y, chrom, opt, device="cpu")
    cpu.run()
    ref = cpu.results()

    gpu = Scan2D(G, y, chrom, opt, device="cpu")
    eng = EmulatedEngine(gpu, cap=50)  # tiny buffer: forces the overflow/rerun path
    gpu.engine = eng
    eng.reset()
    gpu.run()
    out = gpu.results()
    assert 0 in eng.kernel_calls  # the candidates-only rerun happened
    np.testing.assert_array_equal(out["top"]["i"], ref["top"]["i"])
    np.testing.assert_array_equal(out["top"]["j"], ref["top"]["j"])
    np.testing.assert_allclose(out["top"]["stat"], ref["top"]["stat"], rtol=1e-9)
    np.testing.assert_allclose(out["top"]["effect"], ref["top"]["effect"], rtol=1e-9)
    np.testing.assert_allclose(out["pyramid_level0"], ref["pyramid_level0"], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(out["best_stat"], ref["best_stat"], rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(out["best_partner"], ref["best_partner"])
    assert out["tested"] == ref["tested"]
    for a, b in zip(out["chrom_pairs"], ref["chrom_pairs"]):
        assert (a["chrom1"], a["chrom2"], a["tested"], a["significant"]) == (b["chrom1"], b["chrom2"], b["tested"], b["significant"])
        assert (a["best_i"], a["best_j"]) == (b["best_i"], b["best_j"])
        np.testing.assert_allclose(a["best_stat"], b["best_stat"], rtol=1e-6)

    # the engine's checkpoint state round-trips
    st = gpu.state()
    again = Scan2D(G, y, chrom, opt, device="cpu")
    again.engine = EmulatedEngine(again, cap=50)
    again.engine.reset()
    again.fingerprint = gpu.fingerprint
    again.load_state(st)
    assert again.done
    np.testing.assert_array_equal(again.results()["top"]["i"], ref["top"]["i"])
