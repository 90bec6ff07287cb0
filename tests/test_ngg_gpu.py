"""CPU path (NumPy) == GPU path (CuPy) on the same input, for NGG (every stage and the whole fit),
the exact 1D and 2D scans, and the 2D map pyramid. Runs only where CuPy sees a CUDA device."""
from __future__ import annotations

import numpy as np
import pytest

from models.ngg.ngg import (_lipschitz, _sketch_normal_equations, fista_lasso, ngg_fit,
                            standardize_genotypes)
from models.ngg.pairs import FeistelPermutation, counter_normal, derive_key, pair_from_index
from models.scans.pyramid import build_levels, tile_level
from models.scans.scan1d import scan_1d
from models.scans.scan2d import Scan2D, Scan2DOptions
from models.simulate.pheno import simulate_phenotype

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def _genotypes(n, p, seed, missing=0.0):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.5, p)
    G = ((rng.random((n, p)) < f).astype(np.int8) + (rng.random((n, p)) < f).astype(np.int8))
    if missing:
        G[rng.random((n, p)) < missing] = -1
    return G


def test_counter_streams_and_pair_index_identical(cp):
    key = derive_key(7, 1, 2, 3)
    a = counter_normal(key, 12345, 100_001, np, np.float64)
    b = cp.asnumpy(counter_normal(key, 12345, 100_001, cp, np.float64))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    perm = FeistelPermutation(1_000_003, key)
    k = np.arange(0, 1_000_003, 7)
    np.testing.assert_array_equal(perm(k, np), cp.asnumpy(perm(cp.asarray(k), cp)))
    kk = np.random.default_rng(0).integers(0, 5000 * 4999 // 2, 200_000)
    for u, v in zip(pair_from_index(kk, 5000, np), pair_from_index(cp.asarray(kk), 5000, cp)):
        np.testing.assert_array_equal(u, cp.asnumpy(v))


def test_standardize_and_stages_equal(cp):
    G = _genotypes(300, 400, 1, missing=0.02)
    Q = np.linalg.qr(np.column_stack([np.ones(300), np.random.default_rng(2).normal(size=300)]))[0]
    Zc, sdc = standardize_genotypes(G, np, np.float64, covariates_q=Q)
    Zg, sdg = standardize_genotypes(G, cp, np.float64, covariates_q=Q)
    np.testing.assert_allclose(cp.asnumpy(Zg), Zc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sdg, sdc, rtol=1e-12)
    # sketch + compressed normal equations + FISTA on random pieces, float64
    rng = np.random.default_rng(3)
    nb, B, d = 40, 25, 8
    rows = np.vstack([Zc, np.ones((1, 300))])
    ri = rng.integers(0, 401, (nb, B))
    rj = rng.integers(0, 401, (nb, B))
    valid = rng.random((nb, B)) > 0.05
    A = rng.normal(size=(nb, d, B)) / np.sqrt(d)
    yz = rng.normal(size=300)
    out_c = _sketch_normal_equations(rows, ri, rj, valid, A, yz, 7, np)
    g = [cp.asarray(v) for v in (rows, ri, rj, valid, A, yz)]
    out_g = _sketch_normal_equations(*g, 7, cp)
    for a, b in zip(out_c, out_g):
        np.testing.assert_allclose(cp.asnumpy(b), a, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(cp.asnumpy(_lipschitz(cp.asarray(out_c[0]), cp)),
                               _lipschitz(out_c[0], np), rtol=1e-9)
    nu = rng.normal(size=(nb, d))
    th_c = fista_lasso(out_c[0], nu, 0.05, 150, np)
    th_g = cp.asnumpy(fista_lasso(cp.asarray(out_c[0]), cp.asarray(nu), 0.05, 150, cp))
    np.testing.assert_allclose(th_g, th_c, rtol=1e-7, atol=1e-9)
    assert (th_c != 0).any() and (th_c == 0).any()          # not vacuous: sparse, not empty


@pytest.mark.parametrize("dtype,d,B", [(np.float64, 8, 25), (np.float32, 30, 100),
                                       (np.float32, 30, 1000), (np.float64, 17, 333)])
def test_fused_fista_kernel_equals_array_ops(cp, dtype, d, B):
    from models.ngg.ngg import _fista_fused_ok

    rng = np.random.default_rng(d * B)
    nb = 300
    A = (rng.normal(size=(nb, d, B)) / np.sqrt(d)).astype(dtype)
    theta0 = np.where(rng.random((nb, B)) < 0.03, rng.normal(size=(nb, B)), 0)
    nu = (np.einsum("kdb,kb->kd", A, theta0) + 0.05 * rng.normal(size=(nb, d))).astype(dtype)
    Ag, nug = cp.asarray(A), cp.asarray(nu)
    assert _fista_fused_ok(Ag, cp)
    fused = cp.asnumpy(fista_lasso(Ag, nug, 0.02, 200, cp))
    plain = cp.asnumpy(fista_lasso(Ag, nug, 0.02, 200, cp, fused=False))
    host = fista_lasso(A, nu, 0.02, 200, np)
    if dtype == np.float64:
        np.testing.assert_allclose(fused, plain, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(fused, host, rtol=1e-9, atol=1e-11)
    else:
        # float32: 200 steps of an unconverged lasso amplify rounding where a coordinate sits at
        # the threshold, so compare the bulk tightly and the worst case loosely
        scale = np.abs(host).max()
        for other in (plain, host):
            close = np.isclose(fused, other, rtol=2e-3, atol=2e-5 * scale)
            assert close.mean() > 0.97
            assert np.abs(fused - other).max() < 0.05 * scale
    assert (fused != 0).mean() > 0.005 and (fused == 0).mean() > 0.5


@pytest.mark.parametrize("mode,cands", [("2d", None), ("1d", None), ("2d", "cands")])
def test_ngg_fit_float64_equal(cp, mode, cands):
    G = _genotypes(500, 120, 5)
    sim = simulate_phenotype(G.astype(float), n_snps=3, n_pairs=3, h2_add=0.2, h2_int=0.4, seed=1, min_gap=5)
    cov = np.random.default_rng(9).normal(size=(500, 2))
    kw = dict(mode=mode, B=40, d=12, R=4, iters=150, seed=2, top=300, progress=False,
              dtype=np.float64, covariates=cov, block_cols=1500,
              candidates=np.arange(0, 120, 2) if cands else None)
    a = ngg_fit(G, sim.y, xp=np, **kw)
    b = ngg_fit(G, sim.y, xp=cp, **kw)
    assert b.params["backend"] == "cupy" and a.params["backend"] == "numpy"
    assert a.params["n_blocks"] > 1 or mode == "1d"          # several super-blocks exercised
    np.testing.assert_allclose(b.snp_effect, a.snp_effect, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(b.snp_support, a.snp_support)
    if mode == "2d":
        k = min(50, a.top_pairs["i"].size)
        assert k > 10
        np.testing.assert_array_equal(b.top_pairs["i"][:k], a.top_pairs["i"][:k])
        np.testing.assert_array_equal(b.top_pairs["j"][:k], a.top_pairs["j"][:k])
        np.testing.assert_allclose(b.top_pairs["effect"][:k], a.top_pairs["effect"][:k],
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(b.top_pairs["score"][:k], a.top_pairs["score"][:k],
                                   rtol=1e-6, atol=1e-9)


def test_ngg_fit_float32_close(cp):
    G = _genotypes(400, 90, 6)
    sim = simulate_phenotype(G.astype(float), n_snps=2, n_pairs=3, h2_add=0.1, h2_int=0.6, seed=4, min_gap=5)
    kw = dict(B=50, d=15, R=5, iters=200, seed=1, top=100, progress=False)
    a = ngg_fit(G, sim.y, xp=np, **kw)
    b = ngg_fit(G, sim.y, xp=cp, **kw)
    # float32: the same supports almost everywhere, effects to float tolerance
    assert np.mean(a.snp_support == b.snp_support) > 0.97
    both = (a.snp_support == b.snp_support) & (a.snp_support > 0)
    np.testing.assert_allclose(b.snp_effect[both], a.snp_effect[both], rtol=2e-3, atol=2e-4)
    top_a = {(int(i), int(j)) for i, j in zip(a.top_pairs["i"][:5], a.top_pairs["j"][:5])}
    top_b = {(int(i), int(j)) for i, j in zip(b.top_pairs["i"][:5], b.top_pairs["j"][:5])}
    assert len(top_a & top_b) >= 4


def test_scan1d_equal(cp):
    G = _genotypes(700, 2500, 7, missing=0.03)
    rng = np.random.default_rng(1)
    C = rng.normal(size=(700, 2))
    y = 0.3 * np.where(G[:, 10] < 0, 1, G[:, 10]) + rng.normal(size=700)
    a = scan_1d(G, y, C, device="cpu", chunk=999)
    b = scan_1d(G, y, C, device="cuda", chunk=999)
    for k in ("beta", "se", "t", "p"):
        np.testing.assert_allclose(getattr(b, k), getattr(a, k), rtol=1e-9, equal_nan=True)
    assert a.p[10] < 1e-4                                      # the planted SNP is found


def test_scan2d_exact_and_pyramid_equal(cp):
    G = _genotypes(260, 700, 8, missing=0.02).T.copy()           # (p, n) SNP-major
    x = np.where(G < 0, 0, G).astype(float)
    y = 0.9 * x[20] * x[500] + np.random.default_rng(2).normal(size=260)
    chrom = np.array(["1"] * 350 + ["2"] * 350)
    opt = Scan2DOptions(tile=256, top_k=80, pyramid_side=64)
    a = Scan2D(G, y, chrom, opt, device="cpu").run().results()
    b = Scan2D(G, y, chrom, opt, device="cuda").run().results()
    np.testing.assert_array_equal(b["top"]["i"], a["top"]["i"])
    np.testing.assert_array_equal(b["top"]["j"], a["top"]["j"])
    np.testing.assert_allclose(b["top"]["effect"], a["top"]["effect"], rtol=1e-8)
    np.testing.assert_allclose(b["top"]["p"], a["top"]["p"], rtol=1e-6)
    assert (a["top"]["i"][0], a["top"]["j"][0]) == (20, 500)
    la, lb = build_levels(a["pyramid_level0"]), build_levels(b["pyramid_level0"])
    assert len(la) == len(lb) and la[-1].shape == (1, 1)
    for u, v in zip(la, lb):
        np.testing.assert_allclose(v, u, rtol=1e-6, equal_nan=True)
    ta = {(r, c): t for r, c, t in tile_level(la[0], 16)}
    tb = {(r, c): t for r, c, t in tile_level(lb[0], 16)}
    assert ta.keys() == tb.keys() and ta
    for key in ta:
        np.testing.assert_allclose(tb[key], ta[key], rtol=1e-6, equal_nan=True)
