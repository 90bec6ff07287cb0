"""CPU path == GPU path (CuPy) for the exact 1D and 2D scans, on synthetic and real genotypes."""
from __future__ import annotations

import numpy as np
import pytest

from models.scans.scan1d import scan_1d
from models.scans.scan2d import Scan2D, Scan2DOptions

pytestmark = pytest.mark.gpu


def _synthetic(p, n, missing, seed, chrom_sizes):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.5, p)
    G = ((rng.random((p, n)) < f[:, None]).astype(np.int8) + (rng.random((p, n)) < f[:, None]).astype(np.int8))
    G[3] = G[4]
    if missing:
        G[rng.random((p, n)) < missing] = -1
    x = np.where(G < 0, 0, G).astype(float)
    y = 0.8 * x[5] * x[p - 7] + rng.normal(size=n)
    chrom = np.concatenate([[str(k + 1)] * s for k, s in enumerate(chrom_sizes)])
    return G, y, chrom


def _compare(a, b, exact_ids=True):
    ta, tb = a["top"], b["top"]
    np.testing.assert_allclose(ta["stat"], tb["stat"], rtol=1e-9)
    np.testing.assert_allclose(ta["effect"], tb["effect"], rtol=1e-8)
    if exact_ids:
        np.testing.assert_array_equal(ta["i"], tb["i"])
        np.testing.assert_array_equal(ta["j"], tb["j"])
    np.testing.assert_allclose(a["pyramid_level0"], b["pyramid_level0"], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(a["best_stat"], b["best_stat"], rtol=1e-6, equal_nan=True)  # float32 on the GPU
    same = a["best_partner"] == b["best_partner"]
    assert same.mean() > 0.999
    assert a["tested"] == b["tested"]
    for ra, rb in zip(a["chrom_pairs"], b["chrom_pairs"]):
        assert (ra["chrom1"], ra["chrom2"], ra["tested"], ra["significant"]) == \
               (rb["chrom1"], rb["chrom2"], rb["tested"], rb["significant"])
        np.testing.assert_allclose(ra["best_stat"], rb["best_stat"], rtol=1e-6)


@pytest.mark.parametrize("missing,tile,side,sizes", [
    (0.0, 256, 64, (300, 333, 190)),      # pyramid cells of 16 SNPs (< a warp), 3 x 3 tiles
    (0.05, 320, 8, (401, 250, 172)),       # cells of 128 SNPs, chromosome edges inside warps
    (0.02, 1024, 4096, (823,)),            # one tile, one chromosome, cells of 1 SNP
])
def test_2d_gpu_equals_cpu(missing, tile, side, sizes):
    p = sum(sizes)
    G, y, chrom = _synthetic(p, 277, missing, 11, sizes)
    opt = Scan2DOptions(tile=tile, top_k=60, pyramid_side=side, sig_p=1e-4)
    cpu = Scan2D(G, y, chrom, opt, device="cpu").run().results()
    gpu_scan = Scan2D(G, y, chrom, opt, device="cuda")
    gpu_scan.engine.CAP = 500  # small candidate buffer: exercises the overflow rerun
    gpu = gpu_scan.run().results()
    _compare(cpu, gpu)
    assert (gpu["top"]["i"][0], gpu["top"]["j"][0]) == (5, p - 7)


def test_2d_gpu_resume_identical():
    G, y, chrom = _synthetic(700, 150, 0.03, 4, (400, 300))
    opt = Scan2DOptions(tile=128, top_k=30, block_pairs=128 * 128 * 4)
    full = Scan2D(G, y, chrom, opt, device="cuda").run().results()
    part = Scan2D(G, y, chrom, opt, device="cuda")
    part.run(max_blocks=2)
    st = {k: np.array(v, copy=True) for k, v in part.state().items()}
    again = Scan2D(G, y, chrom, opt, device="cuda")
    again.load_state(st)
    res = again.run().results()
    for k in ("i", "j", "stat", "effect"):
        np.testing.assert_array_equal(full["top"][k], res["top"][k])
    np.testing.assert_array_equal(full["pyramid_level0"], res["pyramid_level0"])
    np.testing.assert_array_equal(full["best_stat"], res["best_stat"])


def test_2d_binary_gpu_equals_cpu():
    G, y, chrom = _synthetic(150, 300, 0.02, 8, (80, 70))
    case = (y > np.median(y)).astype(float)
    opt = Scan2DOptions(tile=64, top_k=20, trait="binary")
    cpu = Scan2D(G, case, chrom, opt, device="cpu").run().results()
    gpu = Scan2D(G, case, chrom, opt, device="cuda").run().results()
    np.testing.assert_array_equal(cpu["top"]["i"], gpu["top"]["i"])
    np.testing.assert_allclose(cpu["top"]["stat"], gpu["top"]["stat"], rtol=1e-7)


def test_1d_gpu_equals_cpu():
    rng = np.random.default_rng(0)
    n, p = 500, 3000
    G = rng.integers(0, 3, size=(n, p)).astype(np.int8)
    G[rng.random((n, p)) < 0.03] = -1
    C = rng.normal(size=(n, 3))
    y = rng.normal(size=n)
    a = scan_1d(G, y, C, device="cpu", chunk=700)
    b = scan_1d(G, y, C, device="cuda", chunk=700)
    for k in ("beta", "se", "t", "p"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-9)


def test_real_data_gpu_equals_cpu(shared_data):
    from pipelines.io.pheno import join, read_table
    from pipelines.io.plink import read_bed

    g = read_bed(shared_data / "gemma" / "HLC")
    j = join(g.samples, read_table(shared_data / "gemma" / "HLC.simu.pheno.txt.gz", samples=g.samples, columns=[1]), [1])
    idx = np.arange(0, g.p, 120)
    G = np.ascontiguousarray(g.dosage[j.geno_index][:, idx].T)
    poly = np.array([len(np.unique(r[r >= 0])) > 1 for r in G])
    G = G[poly]
    chrom = g.snps["chrom"].to_numpy()[idx][poly]
    opt = Scan2DOptions(tile=1024, top_k=200)
    cpu = Scan2D(G, j.values[:, 0], chrom, opt, device="cpu").run().results()
    gpu = Scan2D(G, j.values[:, 0], chrom, opt, device="cuda").run().results()
    _compare(cpu, gpu)
