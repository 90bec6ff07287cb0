"""Degenerate phenotypes give an error, never a p-value: a constant phenotype and a phenotype the
covariates explain entirely (before: p = 0 for every SNP, t ~ 105 on beta ~ 2.5e-15; p = 1e-21 on
beta 4e-16). Checked in the cores (ValueError) and through `epiflow scan` (one line, exit 2,
nothing written)."""
from __future__ import annotations

import numpy as np
import pytest

from models.ngg.ngg import ngg_fit
from models.scans.design import phenotype_problem
from models.scans.scan1d import scan_1d
from models.scans.scan2d import Scan2D
from pipelines import cli
from plink_files import write_bed


def _data(n=60, p=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, size=(n, p)).astype(np.int8)
    y = X[:, 0] * 0.5 + rng.normal(size=n)
    return X, y


def test_healthy_phenotype_passes():
    X, y = _data()
    assert phenotype_problem(y) is None
    assert phenotype_problem(y, np.c_[np.random.default_rng(1).normal(size=len(y))]) is None
    assert np.isfinite(scan_1d(X, y).p).all()


@pytest.mark.parametrize("value", [0.0, 3.7, 1e6])
def test_constant_phenotype_is_refused_by_every_core(value):
    X, _ = _data()
    y = np.full(X.shape[0], value)
    with pytest.raises(ValueError, match="constant"):
        scan_1d(X, y)
    with pytest.raises(ValueError, match="constant"):
        Scan2D(np.ascontiguousarray(X.T), y, np.array(["1"] * X.shape[1]))
    with pytest.raises(ValueError, match="constant"):
        ngg_fit(X.astype(float), y, mode="1d", B=4, d=3, R=1, iters=5)


def test_covariate_equal_to_phenotype_is_refused():
    X, y = _data()
    for covar in (y, np.c_[y * 2 + 1, np.arange(len(y))]):
        with pytest.raises(ValueError, match="covariates explain the phenotype"):
            scan_1d(X, y, covariates=covar)
        with pytest.raises(ValueError, match="covariates explain the phenotype"):
            ngg_fit(X.astype(float), y, covariates=covar, mode="1d", B=4, d=3, R=1, iters=5)


@pytest.mark.parametrize("mode", ["1d", "2d"])
@pytest.mark.parametrize("case", ["constant", "covariate"])
def test_scan_command_refuses_in_one_line(tmp_path, capsys, mode, case):
    X, y = _data(n=80, p=12)
    write_bed(tmp_path / "g", X)
    ids = [f"S{i:02d}" for i in range(len(y))]
    yv = np.full(len(y), 2.5) if case == "constant" else y
    (tmp_path / "y.txt").write_text("".join(f"{i} {i} {float(v)!r}\n" for i, v in zip(ids, yv)))
    (tmp_path / "c.txt").write_text("".join(f"{i} {i} {float(v)!r}\n" for i, v in zip(ids, y)))
    argv = ["scan", "--bfile", str(tmp_path / "g"), "--pheno", str(tmp_path / "y.txt"), "--mode", mode,
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    if case == "covariate":
        argv += ["--covar", str(tmp_path / "c.txt")]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("constant" in err[0] or "covariates explain" in err[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("make", [
    lambda c: np.c_[c[:, 0], c[:, 0]],                           # a duplicated column
    lambda c: np.c_[c[:, 0], c[:, 1], c[:, 0] - 2 * c[:, 1]],   # one column a combination of two
    lambda c: np.c_[c[:, 0], 3 * c[:, 0] + 1],                   # a rescaled, shifted copy
])
def test_collinear_covariates_are_refused(make):
    X, y = _data()
    c = np.random.default_rng(2).normal(size=(len(y), 2))
    covar = make(c)
    with pytest.raises(ValueError, match="collinear covariates"):
        scan_1d(X, y, covariates=covar)
    with pytest.raises(ValueError, match="collinear covariates"):
        ngg_fit(X.astype(float), y, covariates=covar, mode="1d", B=4, d=3, R=1, iters=5)


def test_intercept_column_of_gemma_covariates_is_allowed():
    """GEMMA's covariate files hold the intercept as a column of 1s: allowed, same results."""
    X, y = _data()
    c = np.random.default_rng(3).normal(size=(len(y), 1))
    a = scan_1d(X, y, covariates=c)
    b = scan_1d(X, y, covariates=np.c_[np.ones(len(y)), c])
    np.testing.assert_allclose(b.p, a.p, rtol=1e-10)


def test_collinear_covariates_through_scan_are_one_line(tmp_path, capsys):
    X, y = _data(n=80, p=12)
    write_bed(tmp_path / "g", X)
    ids = [f"S{i:02d}" for i in range(len(y))]
    c = np.random.default_rng(4).normal(size=len(y))
    (tmp_path / "y.txt").write_text("".join(f"{i} {i} {float(v)!r}\n" for i, v in zip(ids, y)))
    (tmp_path / "c.txt").write_text("".join(f"{i} {i} {float(v)!r} {float(v)!r}\n" for i, v in zip(ids, c)))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["scan", "--bfile", str(tmp_path / "g"), "--pheno", str(tmp_path / "y.txt"), "--covar",
                     str(tmp_path / "c.txt"), "--mode", "1d", "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "collinear covariates" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
