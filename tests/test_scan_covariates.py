"""Covariates in the exact 2D pair model (y ~ C + a + b + ab), genotype PCs and lambda_GC."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from models.scans.calibration import NULL_MEDIAN_CHI2_1DF, genotype_pcs, lambda_gc, pair_lambda_gc
from models.scans.scan2d import Scan2D, Scan2DOptions, dense_pair_stats
from pipelines import cli


def _data(n=320, p=50, c=3, seed=1):
    rng = np.random.default_rng(seed)
    G = rng.binomial(2, rng.uniform(0.1, 0.5, p)[:, None], size=(p, n)).astype(np.int8)
    C = rng.normal(size=(n, c))
    C[:, 0] += 0.8 * G[3]          # a covariate correlated with a SNP
    C[:, 1] = np.round(C[:, 1] > 0)  # a binary one (sex, batch)
    y = 0.8 * G[5] * G[9] + C @ rng.normal(size=c) + rng.normal(size=n)
    chrom = np.repeat(["1", "2"], p // 2)
    return G, y, C, chrom


def _all_pairs_scan(G, y, C, chrom, tile=16):
    p = G.shape[0]
    s = Scan2D(G, y, chrom, Scan2DOptions(tile=tile, top_k=p * (p - 1) // 2), covariates=C)
    return s.run().results()


def test_pair_model_with_covariates_equals_statsmodels_ols():
    """1,000 sampled pairs: the interaction's estimate and Wald chi-square equal OLS with C included."""
    G, y, C, chrom = _data()
    r = _all_pairs_scan(G, y, C, chrom)["top"]
    assert len(r["i"]) == 50 * 49 // 2  # every pair is tested
    pick = np.random.default_rng(0).choice(len(r["i"]), 1000, replace=False)
    n = len(y)
    stat_ref, beta_ref = np.empty(1000), np.empty(1000)
    for q, t in enumerate(pick):
        a, b = G[r["i"][t]].astype(float), G[r["j"][t]].astype(float)
        fit = sm.OLS(y, np.column_stack([np.ones(n), C, a, b, a * b])).fit()
        beta_ref[q] = fit.params[-1]
        stat_ref[q] = (fit.params[-1] / fit.bse[-1]) ** 2
        assert fit.df_resid == n - C.shape[1] - 4
    np.testing.assert_allclose(r["stat"][pick], stat_ref, rtol=1e-8)
    np.testing.assert_allclose(r["effect"][pick], beta_ref, rtol=1e-8)
    # the planted pair is the top one, and the reference pair fits (map zoom) agree with the scan
    assert (r["i"][0], r["j"][0]) == (5, 9)
    be, st = dense_pair_stats(G[:20], G[20:40], y, covariates=C)
    lookup = {(i, j): (s, e) for i, j, s, e in zip(r["i"], r["j"], r["stat"], r["effect"])}
    i, j = 7, 31
    np.testing.assert_allclose([st[i, j - 20], be[i, j - 20]], lookup[(i, j)], rtol=1e-9)


def test_covariates_change_the_statistic_and_tiles_do_not():
    G, y, C, chrom = _data(seed=2)
    a = _all_pairs_scan(G, y, C, chrom, tile=16)
    b = _all_pairs_scan(G, y, C, chrom, tile=64)
    np.testing.assert_array_equal(a["top"]["i"], b["top"]["i"])
    np.testing.assert_allclose(a["top"]["stat"], b["top"]["stat"], rtol=1e-9, atol=1e-10)
    plain = Scan2D(G, y, chrom, Scan2DOptions(tile=16, top_k=5, cpu_gemm="float64")).run().results()["top"]
    assert not np.allclose(plain["stat"][:5], a["top"]["stat"][:5])


def test_covariates_refused_where_the_model_is_not_exact():
    G, y, C, chrom = _data()
    with pytest.raises(ValueError, match="case/control 2D scan takes none"):
        Scan2D(G, (y > 0).astype(float), chrom, Scan2DOptions(trait="binary"), covariates=C)
    Gm = G.copy()
    Gm[4, 7] = -1
    with pytest.raises(ValueError, match="need complete genotypes"):
        Scan2D(Gm, y, chrom, covariates=C)
    with pytest.raises(ValueError, match="collinear"):
        Scan2D(G, y, chrom, covariates=np.c_[C, C[:, 0] * 2 + C[:, 2]])


def test_genotype_pcs_match_the_full_svd():
    """Three planted populations: the randomised PCs are the top singular vectors of the
    standardised genotypes, as a dense eigendecomposition gives them."""
    rng = np.random.default_rng(3)
    n, p = 240, 900
    pop = np.repeat([0, 1, 2], n // 3)
    freq = rng.uniform(0.1, 0.9, (3, p))
    G = rng.binomial(2, freq[pop].T).astype(np.int8)
    G[10, :5] = -1  # missing calls are mean-imputed
    pcs, sv = genotype_pcs(G, 4)
    x = np.where(G >= 0, G, 0).astype(float)
    mu = x.sum(1) / (G >= 0).sum(1)
    z = np.where(G >= 0, x - mu[:, None], 0.0)
    z /= z.std(axis=1)[:, None]
    w, V = np.linalg.eigh(z.T @ z)  # dense reference: Z'Z = U S^2 U'
    U, S = V[:, ::-1], np.sqrt(np.maximum(w[::-1], 0.0))
    np.testing.assert_allclose(sv[:2], S[:2], rtol=1e-6)
    assert np.all(np.abs((U[:, :2] * pcs[:, :2]).sum(axis=0)) > 1 - 1e-6)
    np.testing.assert_allclose(pcs.T @ pcs, np.eye(4), atol=1e-10)
    # the two leading PCs separate the populations
    means = np.array([pcs[pop == g, :2].mean(axis=0) for g in range(3)])
    assert np.min(np.linalg.norm(means[:, None] - means[None], axis=2) + np.eye(3)) > 0.1
    with pytest.raises(ValueError, match="more than"):
        genotype_pcs(G[:3], 3)


def test_lambda_gc():
    rng = np.random.default_rng(4)
    chi = rng.chisquare(1, 200_000)
    assert lambda_gc(chi) == pytest.approx(1.0, abs=0.02)
    assert lambda_gc(np.r_[1.7 * chi, np.nan]) == pytest.approx(1.7, abs=0.04)
    assert lambda_gc([np.nan]) is None
    assert NULL_MEDIAN_CHI2_1DF == pytest.approx(0.4549364, rel=1e-6)


def test_pair_lambda_gc_is_the_median_of_every_pair_of_the_scan():
    G, y, C, chrom = _data(p=40, seed=5)
    seen = []
    for cov in (None, C):
        s = Scan2D(G, y, chrom, Scan2DOptions(tile=16, top_k=10, cpu_gemm="float64"), covariates=cov)
        stats = []
        s.tile_hook = lambda i0, j0, st, be: stats.append(st[st >= 0])
        s.run()
        lam, used, drawn = pair_lambda_gc(G, y, covariates=cov)
        assert drawn == 40
        allstat = np.concatenate(stats)
        assert used == len(allstat) == 40 * 39 // 2
        assert lam == pytest.approx(np.median(allstat) / NULL_MEDIAN_CHI2_1DF, rel=1e-9)
        seen.append(lam)
    assert seen[0] != seen[1]


@pytest.fixture(scope="module")
def mouse(mouse_panel):
    return mouse_panel(300, "cov")


def test_cli_pcs_and_lambda_in_the_summary(mouse, tmp_path, capsys):
    out = tmp_path / "pc"
    argv = ["scan", "--bfile", mouse.bfile, "--pheno", mouse.pheno, "--pheno-col", "1", "--extract",
            str(mouse.dir / "extract.txt"), "--mode", "2d", "--top", "20", "--pcs", "3", "--no-plots",
            "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["pcs"]["k"] == 3 and len(s["pcs"]["variance_share"]) == 3
    assert s["lambda_gc"] > 0 and s["lambda_gc_pairs"] > 0 and s["lambda_gc_1d"] > 0
    assert f"lambda_GC (2D, {s['lambda_gc_pairs']:,} tested pairs: every pair): " in printed
    top = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    # the first pair against statsmodels with the same three PCs (the CLI's samples: CD8 measured)
    from pipelines.workflows.scan import load_scan_inputs

    inp = load_scan_inputs(mouse.bfile, pheno=mouse.pheno, pheno_col="1", extract=str(mouse.dir / "extract.txt"),
                           log=lambda m: None)
    pcs, _ = genotype_pcs(inp.genotypes.dosage, 3)
    ids = inp.genotypes.snps["snp"].tolist()
    a = inp.genotypes.dosage[ids.index(top.snp1[0])].astype(float)
    b = inp.genotypes.dosage[ids.index(top.snp2[0])].astype(float)
    y = inp.phenotype.y
    fit = sm.OLS(y, np.column_stack([np.ones(len(y)), pcs, a, b, a * b])).fit()
    assert top.stat[0] == pytest.approx((fit.params[-1] / fit.bse[-1]) ** 2, rel=1e-8)
    assert top.beta_int[0] == pytest.approx(fit.params[-1], rel=1e-8)
    out1 = tmp_path / "pc1"
    assert cli.main([*argv[:argv.index("--mode")], "--mode", "1d", "--top", "5", "--pcs", "3", "--no-plots",
                     "--device", "cpu", "--out", str(out1)]) == 0
    s1 = json.loads((out1 / "summary.json").read_text())
    assert s1["lambda_gc"] > 0 and s1["covariate_columns"] == 4


@pytest.mark.gpu
def test_covariates_on_the_gpu_equal_the_cpu():
    G, y, C, chrom = _data(n=300, p=80, seed=6)
    opt = Scan2DOptions(tile=32, top_k=200)
    cpu = Scan2D(G, y, chrom, opt, covariates=C).run().results()
    gpu_scan = Scan2D(G, y, chrom, opt, device="cuda", covariates=C)
    assert gpu_scan.engine is None  # the host moments path (the fused engine has no covariates)
    gpu = gpu_scan.run().results()
    np.testing.assert_array_equal(cpu["top"]["i"], gpu["top"]["i"])
    np.testing.assert_array_equal(cpu["top"]["j"], gpu["top"]["j"])
    np.testing.assert_allclose(cpu["top"]["stat"], gpu["top"]["stat"], rtol=1e-12)
