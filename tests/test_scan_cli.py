"""``epiflow scan`` end to end: output files, one-line errors, killed-and-resumed 2D scans."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines import cli
from pipelines.stages import scan as stage


@pytest.fixture(scope="module")
def mouse(mouse_panel):
    return mouse_panel(400, "cli")


def _argv(m, out, *extra):
    return ["scan", "--bfile", m.bfile, "--pheno", m.pheno, "--pheno-col", "1", "--extract",
            str(m.dir / "extract.txt"), "--out", str(out), "--device", "cpu", *extra]


def test_1d_outputs(mouse, tmp_path):
    out = tmp_path / "s1"
    assert cli.main(_argv(mouse, out, "--mode", "1d", "--top", "15", "--covar", mouse.pheno, "--covar-cols", "6")) == 0
    top = pd.read_csv(out / "top_snps.tsv", sep="\t")
    assert list(top.columns) == ["rank", "snp", "chrom", "bp", "a1", "a2", "beta", "se", "t", "p", "n"]
    assert len(top) == 15 and (np.diff(top["p"]) >= 0).all()
    allsnps = pd.read_parquet(out / "snps.parquet")
    assert top["snp"].iloc[0] == allsnps.loc[allsnps["p"].idxmin(), "snp"]
    assert (top["n"] == 1197).all()  # CD8 and MCH both measured
    s = json.loads((out / "summary.json").read_text())
    assert s["join"]["n_used"] == 1410 and s["covar_join"]["n_used"] == 1580
    assert s["n_samples"] == 1197
    assert (out / "manhattan.png").stat().st_size > 1000


def test_2d_outputs(mouse, tmp_path):
    out = tmp_path / "s2"
    assert cli.main(_argv(mouse, out, "--mode", "2d", "--top", "25", "--tile", "128")) == 0
    top = pd.read_csv(out / "top_pairs.tsv", sep="\t")
    assert list(top.columns) == ["rank", "snp1", "chrom1", "bp1", "snp2", "chrom2", "bp2", "beta_int", "se",
                                 "stat", "p", "n"]
    assert len(top) == 25 and (np.diff(top["stat"]) <= 0).all()
    assert np.allclose(top["stat"], (top["beta_int"] / top["se"]) ** 2, rtol=1e-4)
    idx = json.loads((out / "pyramid" / "index.json").read_text())
    assert idx["levels"][-1]["side"] == 1
    top_tile = np.load(out / "pyramid" / f"L{idx['n_levels'] - 1}" / "0_0.npz")["v"]
    assert np.nanmax(top_tile) == pytest.approx(top["stat"].iloc[0], rel=1e-5)
    cp = pd.read_csv(out / "chrom_pairs.tsv", sep="\t")
    s = json.loads((out / "summary.json").read_text())
    assert cp["tested"].sum() == s["n_tested"] <= s["n_pairs"]
    best = pd.read_parquet(out / "snp_best.parquet")
    assert best["best_stat"].max() == pytest.approx(top["stat"].iloc[0], rel=1e-9)
    for f in ("manhattan.png", "map_overview.png", "map_zoom.png", "pair_boxplots.png"):
        assert (out / f).stat().st_size > 1000
    assert not (out / stage.CKPT_NAME).exists()


def test_killed_scan_resumes_to_identical_outputs(mouse, tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    args = ("--mode", "2d", "--top", "30", "--tile", "64", "--block-pairs", str(64 * 64 * 6), "--no-plots",
            "--checkpoint-every", "0")
    assert cli.main(_argv(mouse, ref, *args)) == 0
    out = tmp_path / "resumed"
    parser = cli.build_parser(only="scan")
    ns = parser.parse_args(_argv(mouse, out, *args))

    class Killed(BaseException):
        pass

    def kill_after_two(s):
        if s.next_block == 2:
            raise Killed

    with pytest.raises(Killed):
        stage.run(ns, on_block=kill_after_two)
    assert (out / stage.CKPT_NAME).exists() and not (out / "top_pairs.tsv").exists()
    assert cli.main(_argv(mouse, out, *args)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["resumed_from_block"] == 2
    for f in ("top_pairs.tsv", "chrom_pairs.tsv", "pyramid/index.json", "pyramid/L0/0_0.npz"):
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    a = pd.read_parquet(out / "snp_best.parquet")
    b = pd.read_parquet(ref / "snp_best.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_errors_are_one_line(mouse, tmp_path, capsys):
    (tmp_path / "other.txt").write_text("FID IID y\nzz qq 1\n")
    rc = cli.main(["scan", "--bfile", mouse.bfile, "--pheno", str(tmp_path / "other.txt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "no sample of the phenotype table" in err
    rc = cli.main(["scan", "--bfile", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ngg_method_runs(mouse, tmp_path):
    pytest.importorskip("models.ngg.ngg")
    out = tmp_path / "ngg"
    rc = cli.main(_argv(mouse, out, "--mode", "1d", "--method", "ngg", "--top", "10", "--ngg-R", "2", "--no-plots"))
    assert rc == 0
    top = pd.read_csv(out / "top_snps.tsv", sep="\t")
    assert {"snp", "score", "support", "effect"} <= set(top.columns)


def test_metrics_and_mlflow(mouse, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)   # a user-set store without a server keeps artifacts under ./mlruns
    out = tmp_path / "m1"
    rc = cli.main(_argv(mouse, out, "--mode", "1d", "--top", "5", "--metrics", str(tmp_path / "metrics.json"),
                        "--mlflow", "scan-test"))
    assert rc == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["join.n_used"] == 1410 and m["n_tests"] == m["filters.n_snps_used"] > 300
    import mlflow

    runs = mlflow.search_runs(experiment_names=["scan-test"])
    assert len(runs) == 1 and runs["metrics.n_tests"][0] == m["n_tests"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"][0])}
    assert {"top_snps.tsv", "summary.json", "manhattan.png"} <= arts
