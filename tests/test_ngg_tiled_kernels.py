"""The fused FISTA kernel of the tiled NGG equals the torch loop it replaces.

On a CUDA machine (``gpu``): on random problems of the engine's shapes, with and without the
column mask, at float32-level precision (three TF32 passes) and with one TF32 pass; and a whole
tiled fit recovers the same top pairs with the kernel as with the torch loop. Without a GPU the
kernel's logic runs in Triton's CPU interpreter where Triton is installed (a subprocess, so that
the interpreter switch cannot leak into other tests); otherwise those tests skip.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.ngg import tiled_kernels  # noqa: E402
from models.ngg.tiled import _Engine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _problem(G, d, B, P, seed, device):
    g = torch.Generator().manual_seed(seed)
    A = (torch.randn(G, d, B, generator=g) / math.sqrt(d)).to(device)
    nu = (torch.randn(G, d, P, generator=g) * 0.3).to(device)
    mask = (torch.rand(G, B, P, generator=g) > 0.05).float().to(device)
    return A, nu, mask


def _torch_loop(A, nu, mask, lam, iters):
    e = _Engine.__new__(_Engine)
    e.torch, e.lam, e.iters, e.precision = torch, lam, iters, "fp32"
    return e._fista(A, nu, mask)


def _fused(A, nu, mask, lam, iters, prec):
    L = torch.linalg.eigvalsh(torch.matmul(A, A.transpose(1, 2)).double())[:, -1]
    step = (1.0 / torch.clamp(L * 1.05, min=1e-12)).float()
    kappa = lam * step
    return tiled_kernels.fista_fused(A, nu, mask, step, kappa, 1.0, iters, prec)


def test_momentum_weights_follow_the_fista_sequence():
    w = tiled_kernels.momentum_weights(4)
    t = [1.0]
    for _ in range(4):
        t.append(0.5 * (1 + math.sqrt(1 + 4 * t[-1] ** 2)))
    assert w == pytest.approx([1 + (t[k] - 1) / t[k + 1] for k in range(4)], rel=0, abs=0)
    assert w[0] == 1.0  # the first step has no momentum


def test_unavailable_without_triton_or_when_switched_off(monkeypatch):
    monkeypatch.setenv("EPIFLOW_NGG_KERNELS", "0")
    assert not tiled_kernels.available(torch.device("cuda"))
    monkeypatch.delenv("EPIFLOW_NGG_KERNELS")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not tiled_kernels.available(torch.device("cpu"))   # CPU: only through the interpreter


def test_kernel_equals_torch_loop_in_the_triton_interpreter():
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import math, torch
        from tests.test_ngg_tiled_kernels import _problem, _torch_loop, _fused
        from models.ngg import tiled_kernels
        assert tiled_kernels.available(torch.device("cpu"))
        for (G, d, B, P, lam, masked) in ((3, 30, 100, 51, 0.05, True), (2, 20, 64, 16, 0.02, False),
                                          (1, 30, 100, 70, 0.1, True)):
            A, nu, mask = _problem(G, d, B, P, 7, "cpu")
            m = mask if masked else None
            ref = _torch_loop(A, nu, m, lam, 120)
            got = _fused(A, nu, m, lam, 120, "ieee")
            assert got.shape == ref.shape
            scale = float(ref.abs().max())
            assert scale > 0.1
            assert float((got - ref).abs().max()) <= 1e-5 * scale, float((got - ref).abs().max())
            assert bool(((got != 0) == (ref != 0)).float().mean() > 0.999)
            if masked:
                assert bool((got[mask == 0] == 0).all())
            # Lipschitz constant by power iteration against the eigenvalue solver
            step, kappa = tiled_kernels.lipschitz(A, lam)
            L = torch.linalg.eigvalsh(torch.matmul(A, A.transpose(1, 2)).double())[:, -1]
            ref_step = 1.0 / (1.05 * L)
            assert float(((step.double() - ref_step).abs() / ref_step).max()) < 1e-4
            assert float(((kappa.double() - lam * ref_step).abs() / (lam * ref_step)).max()) < 1e-4
            assert bool((tiled_kernels.lipschitz(A, 0.0)[1] == 1.0).all())
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_tiled_fit_with_kernels_equals_torch_path_in_the_triton_interpreter():
    """Sketch, normal equations, solve and FISTA through the kernels (interpreted on the CPU) give
    the torch path's top pairs and scores, at small pieces and at the tuned B = 100, d = 30."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import os, numpy as np
        from tests.test_ngg_tiled import KW, _data
        from models.ngg.tiled import ngg_fit_tiled, TiledSettings
        X, y = _data()
        cases = (dict(KW), dict(KW, B=100, d=30, settings=TiledSettings(super_tile=40, row_tile=30, group=3)),
                 dict(KW, pieces="random", R=4))
        for kw, rect_kernel in [(c, "0") for c in cases] + [(c, "1") for c in cases[:2]]:
            os.environ["EPIFLOW_NGG_RECT_KERNEL"] = rect_kernel
            os.environ["EPIFLOW_NGG_KERNELS"] = "1"
            a = ngg_fit_tiled(X, y, **kw)
            os.environ["EPIFLOW_NGG_KERNELS"] = "0"
            b = ngg_fit_tiled(X, y, **kw)
            assert a.top_pairs["i"][:6].tolist() == b.top_pairs["i"][:6].tolist()
            assert a.top_pairs["j"][:6].tolist() == b.top_pairs["j"][:6].tolist()
            np.testing.assert_allclose(a.top_pairs["score"][:10], b.top_pairs["score"][:10], rtol=5e-3)  # fp32 solve
            assert {(3, 41), (17, 29)} <= set(zip(a.top_pairs["i"][:5].tolist(), a.top_pairs["j"][:5].tolist()))
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("masked", [True, False])
def test_kernel_equals_torch_loop_on_cuda(masked):
    pytest.importorskip("triton")
    A, nu, mask = _problem(64, 30, 100, 52, 3, "cuda")
    m = mask if masked else None
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = _torch_loop(A, nu, m, 0.05, 200)
    scale = float(ref.abs().max())
    for prec, tol in (("tf32x3", 1e-4), ("ieee", 1e-5), ("tf32", 2e-2)):
        got = _fused(A, nu, m, 0.05, 200, prec)
        err = float((got - ref).abs().max())
        assert err <= tol * scale, (prec, err, scale)
        if prec != "tf32":
            assert float(((got != 0) == (ref != 0)).float().mean()) > 0.999
        if masked:
            assert bool((got[mask == 0] == 0).all())


@pytest.mark.gpu
@needs_cuda
def test_tiled_fit_same_top_pairs_with_kernel_and_torch_loop(monkeypatch):
    pytest.importorskip("triton")
    from models.ngg.tiled import ngg_fit_tiled
    from tests.test_ngg_tiled import KW, _data

    X, y = _data()
    top = lambda r: [(int(i), int(j)) for i, j in zip(r.top_pairs["i"][:10], r.top_pairs["j"][:10])]  # noqa: E731
    for pieces in ("rect", "random"):
        kw = dict(KW, device="cuda", precision="fp32", pieces=pieces, R=4 if pieces == "random" else 2)
        monkeypatch.setenv("EPIFLOW_NGG_KERNELS", "1")
        with_kernel = ngg_fit_tiled(X, y, **kw)
        monkeypatch.setenv("EPIFLOW_NGG_KERNELS", "0")
        loop = ngg_fit_tiled(X, y, **kw)
        assert top(with_kernel)[:2] == top(loop)[:2], pieces
        assert {(3, 41), (17, 29)} <= set(top(with_kernel)[:5]), pieces
        np.testing.assert_allclose(with_kernel.top_pairs["score"][:2], loop.top_pairs["score"][:2], rtol=2e-3)
        np.testing.assert_allclose(with_kernel.snp_effect, loop.snp_effect, rtol=1e-3, atol=1e-6)
        for prec in ("tf32", "bf16"):                  # tensor-core sketches: the planted pairs stay on top
            monkeypatch.setenv("EPIFLOW_NGG_KERNELS", "1")
            q = ngg_fit_tiled(X, y, **dict(kw, precision=prec))
            assert {(3, 41), (17, 29)} <= set(top(q)[:5]), (pieces, prec)
