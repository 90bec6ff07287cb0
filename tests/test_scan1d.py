"""Exact 1D scan: agreement with PLINK 2 --glm on mouse_hs1940, missing calls, covariates."""
from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from models.scans.scan1d import scan_1d
from pipelines.io.pheno import join, read_table
from pipelines.io.plink import read_bed


def _lstsq(x, y, C):
    m = x >= 0
    A = np.column_stack([np.ones(m.sum()), C[m], x[m]])
    coef, *_ = np.linalg.lstsq(A, y[m], rcond=None)
    res = y[m] - A @ coef
    s2 = res @ res / (m.sum() - A.shape[1])
    se = np.sqrt(s2 * np.linalg.inv(A.T @ A)[-1, -1])
    return coef[-1], se


def test_masked_and_complete_paths_match_least_squares():
    rng = np.random.default_rng(1)
    n, p = 300, 40
    G = rng.integers(0, 3, size=(n, p)).astype(np.int8)
    G[rng.random((n, p)) < 0.07] = -1
    G[:, 5] = np.where(G[:, 5] < 0, -1, 1)  # monomorphic among called samples
    C = rng.normal(size=(n, 2))
    y = 0.3 * np.where(G[:, 0] < 0, 0, G[:, 0]) + C @ [0.5, -0.2] + rng.normal(size=n)
    r = scan_1d(G, y, C, chunk=16)
    for s in range(p):
        if s == 5:
            assert np.isnan(r.beta[s]) and np.isnan(r.p[s])
            continue
        b, se = _lstsq(G[:, s], y, C)
        assert r.beta[s] == pytest.approx(b, rel=1e-9)
        assert r.se[s] == pytest.approx(se, rel=1e-9)
        assert r.n[s] == (G[:, s] >= 0).sum()
    assert r.k_covariates == 3


@pytest.fixture(scope="module")
def mouse_plink(shared_data, tmp_path_factory):
    if shutil.which("plink2") is None:
        pytest.skip("plink2 not installed")
    d = tmp_path_factory.mktemp("mouse1d")
    for ext in ("bed", "bim", "fam"):
        with gzip.open(shared_data / "gemma" / f"mouse_hs1940.{ext}.gz", "rb") as src, open(d / f"m.{ext}", "wb") as dst:
            shutil.copyfileobj(src, dst)
    fam = pd.read_csv(d / "m.fam", sep=r"\s+", header=None, dtype=str, keep_default_na=False)
    ph = pd.DataFrame({"FID": fam[0], "IID": fam[1], "cd8": fam[5], "mch": fam[10]}).replace("NA", "-9")
    ph.to_csv(d / "pheno.txt", sep="\t", index=False)
    return d


@pytest.mark.parametrize("with_covar", [False, True])
def test_agrees_with_plink2_glm(mouse_plink, shared_data, with_covar):
    d = mouse_plink
    cmd = ["plink2", "--bfile", str(d / "m"), "--pheno", str(d / "pheno.txt"), "--pheno-name", "cd8",
           "--out", str(d / f"glm{int(with_covar)}"), "--threads", "1"]
    if with_covar:
        cmd += ["--covar", str(d / "pheno.txt"), "--covar-name", "mch", "--glm", "hide-covar"]
    else:
        cmd += ["--glm", "allow-no-covars"]
    subprocess.run(cmd, check=True, capture_output=True)
    ref = pd.read_csv(d / f"glm{int(with_covar)}.cd8.glm.linear", sep="\t")
    assert (ref["A1"] == ref["ALT"]).all()  # PLINK 2 counts the .bim A1 (ALT) allele, as we do

    g = read_bed(shared_data / "gemma" / "mouse_hs1940")
    t = read_table(d / "pheno.txt", samples=g.samples)
    j = join(g.samples, t, ["cd8", "mch"] if with_covar else ["cd8"])
    cov = j.values[:, 1:] if with_covar else None
    r = scan_1d(g.dosage[j.geno_index], j.values[:, 0], cov)
    idx = pd.Series(np.arange(g.p), index=g.snps["snp"]).reindex(ref["ID"]).to_numpy()
    assert not np.isnan(idx).any()
    idx = idx.astype(int)
    ok = ref["ERRCODE"].eq(".").to_numpy()
    assert ok.sum() > 9000
    np.testing.assert_array_equal(r.n[idx][ok], ref["OBS_CT"][ok])
    for ours, col in ((r.beta, "BETA"), (r.se, "SE"), (r.t, "T_STAT"), (r.p, "P")):
        want = pd.to_numeric(ref[col], errors="coerce").to_numpy()[ok]
        got = ours[idx][ok]
        rel = np.abs(got - want) / np.abs(want)
        assert rel.max() < 1e-4, (col, rel.max())  # PLINK prints 6 significant digits
    # SNPs PLINK could not test are NaN here too
    assert np.isnan(r.beta[idx][~ok]).all()
