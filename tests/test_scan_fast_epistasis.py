"""``--fast-epistasis`` (case/control): PLINK 1.9's statistic, reproduced and compared with plink1.9 itself."""
from __future__ import annotations

import gzip
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from models.scans.pair_stats import fast_epistasis_stats
from models.scans.scan2d import Scan2D, Scan2DOptions, dense_pair_stats
from pipelines import cli

PLINK1 = shutil.which("plink1.9")


def _printed_tol(v):
    """Half a unit in the 6th significant digit (PLINK's %g output)."""
    v = np.abs(np.asarray(v, dtype=np.float64))
    return 0.5 * 10.0 ** (np.floor(np.log10(np.where(v > 0, v, 1.0))) - 5)


def test_allele_coding_flips_the_sign_only_and_empty_cells_are_adjusted():
    rng = np.random.default_rng(0)
    cases = rng.integers(0, 30, (50, 3, 3)).astype(float)
    total = cases + rng.integers(0, 30, (50, 3, 3))
    cases[0, 1, 2] = total[0, 1, 2] = 0  # an empty cell in both groups
    d, s, ok = fast_epistasis_stats(cases, total)
    assert ok.all() and np.isfinite(s).all()
    d2, s2, _ = fast_epistasis_stats(cases[:, ::-1, :], total[:, ::-1, :])  # a -> 2 - a
    np.testing.assert_allclose(s2, s, rtol=1e-12)
    np.testing.assert_allclose(d2, -d, rtol=1e-12)
    d3, s3, _ = fast_epistasis_stats(np.swapaxes(cases, 1, 2), np.swapaxes(total, 1, 2))  # SNP order
    np.testing.assert_allclose(s3, s, rtol=1e-12)
    # no interaction in either group: equal tables give STAT 0
    _, s0, _ = fast_epistasis_stats(cases, 2 * cases)
    np.testing.assert_allclose(s0[1:], 0.0, atol=1e-20)


def test_scan_with_fast_epistasis_equals_the_reference_pair_fits():
    rng = np.random.default_rng(1)
    p, n = 40, 400
    G = rng.binomial(2, 0.4, (p, n)).astype(np.int8)
    G[3, :7] = -1
    case = (rng.random(n) < 0.4).astype(float)
    chrom = np.repeat(["1", "2"], p // 2)
    r = Scan2D(G, case, chrom, Scan2DOptions(trait="binary", tile=16, top_k=p * (p - 1) // 2),
               statistic="fast_epistasis").run().results()["top"]
    be, st = dense_pair_stats(G, G, case, "binary", statistic="fast_epistasis")
    np.testing.assert_allclose(r["stat"], st[r["i"], r["j"]], rtol=1e-12)
    np.testing.assert_allclose(r["effect"], be[r["i"], r["j"]], rtol=1e-12)
    assert len(r["i"]) == p * (p - 1) // 2


@pytest.fixture(scope="module")
def cc_files(shared_data, tmp_path_factory):
    """mouse_hs1940, its first 200 SNPs, phenotype column 4 (0/1) coded 1/2 for PLINK."""
    d = tmp_path_factory.mktemp("fepi")
    g = shared_data / "gemma"
    for ext in ("bed", "bim", "fam"):
        with gzip.open(g / f"mouse_hs1940.{ext}.gz", "rb") as s, open(d / f"m.{ext}", "wb") as o:
            shutil.copyfileobj(s, o)
    fam = pd.read_csv(d / "m.fam", sep=r"\s+", header=None, dtype=str)
    ph = pd.read_csv(g / "mouse_hs1940.pheno.txt.gz", sep=r"\s+", header=None, dtype=str, keep_default_na=False)
    pd.DataFrame({0: fam[0], 1: fam[1], 2: ph[3].map({"0": "1", "1": "2"}).fillna("-9")}).to_csv(
        d / "cc.txt", sep=" ", header=False, index=False)
    bim = pd.read_csv(d / "m.bim", sep=r"\s+", header=None, dtype={1: str})
    (d / "snps.txt").write_text("\n".join(bim[1].head(200)) + "\n")
    return d


@pytest.mark.skipif(PLINK1 is None, reason="plink1.9 not installed")
def test_fast_epistasis_equals_plink19(cc_files, tmp_path):
    d = cc_files
    subprocess.run([PLINK1, "--bfile", d / "m", "--pheno", d / "cc.txt", "--extract", d / "snps.txt",
                    "--fast-epistasis", "--epi1", "1", "--allow-no-sex", "--threads", "1", "--out", tmp_path / "fe"],
                   check=True, capture_output=True)
    ref = pd.read_csv(tmp_path / "fe.epi.cc", sep=r"\s+")
    out = tmp_path / "ours"
    assert cli.main(["scan", "--bfile", str(d / "m"), "--pheno", str(d / "cc.txt"), "--extract", str(d / "snps.txt"),
                     "--mode", "2d", "--fast-epistasis", "--top", "100000", "--no-plots", "--device", "cpu",
                     "--out", str(out)]) == 0
    ours = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    assert list(ours.columns[7:]) == ["delta_log_or", "se", "stat", "p", "n"]
    key = lambda a, b: [f"{min(x, y)} {max(x, y)}" for x, y in zip(a, b)]  # noqa: E731
    ref["key"], ours["key"] = key(ref.SNP1, ref.SNP2), key(ours.snp1, ours.snp2)
    m = ref.merge(ours, on="key", how="outer", indicator=True)
    assert (m["_merge"] == "both").all() and len(m) > 10_000  # every pair PLINK tests, and no other
    assert (np.abs(m["stat"] - m["STAT"]) <= _printed_tol(m["STAT"]) * 1.0001).all()


def test_fast_epistasis_needs_a_case_control_trait(cc_files, tmp_path, capsys):
    d = cc_files
    rc = cli.main(["scan", "--bfile", str(d / "m"), "--pheno", str(d / "cc.txt"), "--extract", str(d / "snps.txt"),
                   "--mode", "1d", "--fast-epistasis", "--no-plots", "--device", "cpu", "--out", str(tmp_path / "x")])
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fast-epistasis is a 2D exact scan of a case/control trait" in err[0]


@pytest.mark.gpu
def test_fast_epistasis_on_the_gpu_equals_the_cpu():
    rng = np.random.default_rng(2)
    p, n = 70, 300
    G = rng.binomial(2, 0.3, (p, n)).astype(np.int8)
    case = (rng.random(n) < 0.5).astype(float)
    chrom = np.repeat(["1", "2"], p // 2)
    opt = Scan2DOptions(trait="binary", tile=32, top_k=300)
    cpu = Scan2D(G, case, chrom, opt, statistic="fast_epistasis").run().results()["top"]
    gpu = Scan2D(G, case, chrom, opt, device="cuda", statistic="fast_epistasis").run().results()["top"]
    np.testing.assert_array_equal(cpu["i"], gpu["i"])
    np.testing.assert_array_equal(cpu["j"], gpu["j"])
    np.testing.assert_allclose(cpu["stat"], gpu["stat"], rtol=1e-12)
