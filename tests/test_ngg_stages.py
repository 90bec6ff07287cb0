"""The NGG DVC stages (``epiflow ngg pheno|1d|2d|heritability``) end to end on a tiny cohort.

A planted SNP pair must come out as the exact 2D scan's top hit, every output must be there, each
stage must log one MLflow run to the test's store, and bad params or inputs must give a one-line
error with nothing written.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import cli
from pipelines.encode import DosageMatrix, save_dosage
from plink_files import write_bed

N, P = 400, 40


def _params(**ngg) -> dict:
    cfg = {"input": "geno", "pheno": "work/ngg_pheno", "maf": 0.05, "geno": 0.1, "device": "cpu",
           "top_1d": 10, "top_2d": 50, "recall_window": 0,
           "ngg": {"B": 20, "d": 10, "R": 3, "iters": 50, "seed": 0},
           "pyramid": {"side": 16, "tile": 8},
           "simulate": {"n_snps": 1, "n_pairs": 1, "h2_add": 0.05, "h2_int": 0.5, "pair_model": "product",
                        "min_maf": 0.2, "min_gap": 5, "seed": 3},
           "heritability": {"n_snps": 5, "n_pairs": 5, "random_draws": 3, "holdout": 0.5, "seed": 0}}
    for k, v in ngg.items():
        cfg[k] = v
    return {"study": "ngg-test", "ngg": cfg}


def _write_params(d, params) -> None:
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _cohort(d) -> None:
    rng = np.random.default_rng(11)
    af = rng.uniform(0.2, 0.5, P)
    X = (rng.random((N, P)) < af).astype(np.int8) + (rng.random((N, P)) < af).astype(np.int8)
    X[rng.random((N, P)) < 0.002] = -1
    X[:, 7] = 0                                         # monomorphic: filtered out
    snps = pd.DataFrame({"chrom": ["chr1"] * (P // 2) + ["chr2"] * (P - P // 2),
                         "pos": np.r_[np.arange(P // 2), np.arange(P - P // 2)] * 1000 + 100,
                         "id": ["."] * P, "ref": ["A"] * P, "alt": ["G"] * P, "af": af, "call_rate": 1.0})
    save_dosage(DosageMatrix(X, X < 0, [f"S{i:03d}" for i in range(N)], snps), d / "geno")


def _run(step, capsys):
    rc = cli.main(["ngg", step])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    d = tmp_path_factory.mktemp("ngg_stages")
    _cohort(d)
    _write_params(d, _params())
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    mp.setenv("EPIFLOW_ROOT", str(d))
    try:
        for step in ("pheno", "1d", "2d", "heritability"):
            assert cli.main(["ngg", step]) == 0, step
        yield d
    finally:
        mp.undo()


def _metrics(d, step):
    """The stage's metrics with its timings file merged back (timings and run ids are kept out of
    the tracked metrics JSON, see pipelines.atomic.write_metrics)."""
    from pipelines.atomic import read_metrics

    tracked = json.loads((d / "metrics" / f"ngg_{step}.json").read_text())
    assert "seconds" not in tracked and "mlflow_run_id" not in tracked
    return read_metrics(d / "metrics" / f"ngg_{step}.json")


def test_planted_pair_is_the_top_hit(stages):
    truth = json.loads((stages / "work/ngg_pheno/truth.json").read_text())
    assert len(truth["pairs"]) == 1 and len(truth["snps"]) == 1
    assert truth["snps"][0].startswith("chr")            # ids derived from chrom:pos:ref:alt
    top = pd.read_csv(stages / "work/ngg_2d/top_pairs.tsv", sep="\t")
    assert sorted([top.snp1[0], top.snp2[0]]) == sorted(truth["pairs"][0])
    assert top["p"][0] < 1e-10 and (np.diff(top["stat"]) <= 0).all()
    m2 = _metrics(stages, "2d")
    assert m2["recall_pairs"]["top10"] == 1.0 and m2["recall_pairs"]["top10_clumped"] == 1.0 and m2["planted_pairs_found"] == 1
    assert m2["n_snps"] == P - 1 and m2["n_pairs"] == (P - 1) * (P - 2) // 2
    s = json.loads((stages / "work/ngg_2d/summary.json").read_text())
    assert s["planted_pair_ranks"][0]["rank"] == 1
    m1 = _metrics(stages, "1d")
    assert m1["exact"]["top_snp"] == truth["snps"][0]
    assert m1["exact"]["recall_snps"]["top10"] == 1.0
    assert m1["n_tests"] == P - 1


def test_outputs_present(stages):
    for f in ("work/ngg_pheno/pheno.tsv", "work/ngg_1d/top_snps.tsv", "work/ngg_1d/snps.parquet",
              "work/ngg_1d/ngg/top_snps.tsv", "work/ngg_1d/summary.json", "work/ngg_2d/top_pairs.tsv",
              "work/ngg_2d/pyramid/index.json", "work/ngg_2d/chrom_pairs.tsv", "work/heritability/pcr_curves.tsv",
              "plots/ngg/manhattan_1d.png", "plots/ngg/manhattan_1d_ngg.png", "plots/ngg/manhattan_2d.png",
              "plots/ngg/map_overview.png", "plots/ngg/pair_boxplots.png", "plots/ngg/heritability.png",
              "plots/ngg/heritability_holdout.png"):
        assert (stages / f).is_file() and (stages / f).stat().st_size > 0, f
    # summaries carry no timings (reruns give identical bytes); metrics do
    assert "seconds" not in (stages / "work/ngg_2d/summary.json").read_text()
    mh = _metrics(stages, "heritability")
    assert mh["seconds"]["total"] > 0
    # the planted pair carries half the variance: adding the top pairs must beat adding random ones
    assert mh["holdout"]["gain_top_pairs"] > mh["holdout"]["gain_random_pairs"] + 0.1
    assert mh["in_sample"]["gain_top_pairs"] > 0.1
    curves = pd.read_csv(stages / "work/heritability/pcr_curves.tsv", sep="\t")
    assert set(curves["selection"]) == {"all_samples", "holdout"}
    assert set(curves["feature_set"]) == {"1d", "1d+top_pairs", "1d+random_pairs"}


def test_mlflow_runs(stages):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{stages / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ngg-test")
    runs = client.search_runs([exp.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"ngg_pheno", "ngg_1d", "ngg_2d", "heritability"}
    r2 = by_name["ngg_2d"]
    assert r2.info.run_id == _metrics(stages, "2d")["mlflow_run_id"]
    assert r2.data.params["method_2d"] == "exact" and r2.data.params["ngg.B"] == "20"
    assert r2.data.metrics["recall_pairs.top10"] == 1.0
    assert any(k.startswith("epiflow.dvc.geno") for k in r2.data.tags)
    arts = {a.path for a in client.list_artifacts(r2.info.run_id)}
    assert {"top_pairs.tsv", "map_overview.png", "pair_boxplots.png", "pyramid"} <= arts
    rh = by_name["heritability"]
    assert "heritability_holdout.png" in {a.path for a in client.list_artifacts(rh.info.run_id)}


@pytest.mark.parametrize("change, message", [
    ({"maf": 0.7}, "ngg.maf: must be <= 0.5"),
    ({"method_2d": "fast"}, "ngg.method_2d: must be one of exact, ngg"),
    ({"colour": 1}, "ngg.colour: unknown key"),
    ({"ngg": {"B": 0}}, "ngg.ngg.B: must be >= 1"),
    ({"pheno": "nowhere.tsv"}, "nowhere.tsv: phenotype file not found"),
    ({"input": "missing_dir"}, "missing_dir: neither a SNP dosage directory nor a PLINK fileset"),
    ({"maf": 0.5}, "SNPs pass ngg.maf"),
])
def test_bad_params_one_line_error_nothing_written(stages, tmp_path, monkeypatch, capsys, change, message):
    import shutil

    shutil.copytree(stages / "geno", tmp_path / "geno")
    shutil.copytree(stages / "work/ngg_pheno", tmp_path / "work/ngg_pheno")
    params = _params()
    for k, v in change.items():
        params["ngg"][k] = {**params["ngg"][k], **v} if isinstance(v, dict) else v
    _write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc, out, err = _run("2d", capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epiflow ngg: error:") and message in lines[0], err
    assert not (tmp_path / "work/ngg_2d").exists() and not (tmp_path / "metrics").exists()
    assert not (tmp_path / "plots").exists()
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["ngg_pheno"]   # no temporary dirs left


def test_failed_rerun_keeps_previous_outputs(stages, tmp_path, monkeypatch, capsys):
    import shutil

    for sub in ("geno", "work", "metrics", "plots"):
        shutil.copytree(stages / sub, tmp_path / sub)
    before = (tmp_path / "work/ngg_2d/top_pairs.tsv").read_bytes()
    m_before = (tmp_path / "metrics/ngg_2d.json").read_bytes()
    (tmp_path / "work/ngg_pheno/pheno.tsv").write_text("sample_id\ty\nnobody\t1.0\n")
    _write_params(tmp_path, _params())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc, out, err = _run("2d", capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "genotyped samples" in err
    assert (tmp_path / "work/ngg_2d/top_pairs.tsv").read_bytes() == before
    assert (tmp_path / "metrics/ngg_2d.json").read_bytes() == m_before
    assert not [p for p in (tmp_path / "work").iterdir() if p.name.startswith(".")]


def test_cohort_case_control_sheet(stages, tmp_path, monkeypatch):
    """ngg.pheno may be a sample sheet with a case/control column (the embedded cohort's own trait)."""
    from pipelines.workflows.ngg import load_data

    sheet = tmp_path / "samples.tsv"
    ids = [f"S{i:03d}" for i in range(N)]
    status = np.where(np.arange(N) % 3 == 0, "case", "control")
    pd.DataFrame({"sample_id": ids, "status": status, "sex": "female"}).to_csv(sheet, sep="\t", index=False)
    cfg = {"input": str(stages / "geno"), "pheno": str(sheet), "pheno_col": "status", "pheno_format": "auto",
           "trait": "auto", "maf": 0.05, "geno": 0.1}
    data = load_data(cfg)
    assert data.trait == "binary" and data.y.sum() == (np.arange(N) % 3 == 0).sum()
    assert data.G.dtype == np.int8 and data.G.shape == (P - 1, N)


def test_stage_deps_in_dvc_yaml():
    """The DVC stages exist and read the ngg params (the embedded cohort's dosage comes from encode)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    for name, cmd in (("ngg_pheno", "epiflow ngg pheno"), ("ngg_1d", "epiflow ngg 1d"),
                      ("ngg_2d", "epiflow ngg 2d"), ("heritability", "epiflow ngg heritability")):
        assert dvc[name]["cmd"] == cmd
    assert "${encode.snp_dosage}" in dvc["encode"]["outs"]
    assert params["ngg"]["input"] == params["encode"]["snp_dosage"]
    from pipelines.workflows.ngg import DEFAULTS

    assert set(params["ngg"]) <= set(DEFAULTS)


def test_plink_input_matches_dosage_dir(stages, tmp_path):
    """ngg.input may be a PLINK fileset (prefix or .bed path): same genotypes, same phenotype join."""
    from pipelines.workflows.genotypes import load_dosage
    from pipelines.workflows.ngg import load_data

    dm = load_dosage(stages / "geno")
    write_bed(tmp_path / "cohort", dm.X, dm.snps["chrom"].str.removeprefix("chr"), dm.snps["pos"],
              fam_ids=[(f"F{i}", f"S{i:03d}") for i in range(dm.X.shape[0])])
    base = {"pheno": str(stages / "work/ngg_pheno"), "pheno_col": "y", "pheno_format": "auto", "trait": "auto",
            "maf": 0.05, "geno": 0.1}
    a = load_data({**base, "input": str(stages / "geno")})
    for spec in (tmp_path / "cohort", tmp_path / "cohort.bed"):
        b = load_data({**base, "input": str(spec)})
        assert np.array_equal(a.G, b.G) and np.array_equal(a.y, b.y)
        assert b.snps["snp"].tolist() == [f"rs{j}" for j in range(P) if j != 7]


def test_ngg_method_2d(stages, tmp_path, monkeypatch):
    """method_2d: ngg runs the NGG estimator over every pair column; the planted pair ranks near the top."""
    import shutil

    shutil.copytree(stages / "geno", tmp_path / "geno")
    shutil.copytree(stages / "work/ngg_pheno", tmp_path / "work/ngg_pheno")
    _write_params(tmp_path, _params(method_2d="ngg", top_2d=20))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    assert cli.main(["ngg", "2d", "--no-mlflow"]) == 0
    top = pd.read_csv(tmp_path / "work/ngg_2d/top_pairs.tsv", sep="\t")
    assert {"score", "support", "effect"} <= set(top.columns)
    m = _metrics(tmp_path, "2d")
    assert m["method"] == "ngg" and "mlflow_run_id" not in m
    assert m["recall_pairs"]["top10"] == 1.0
    assert (tmp_path / "plots/ngg/pair_boxplots.png").is_file()


def test_planting_gap_shrinks_on_a_small_panel(stages, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(stages / "geno", tmp_path / "geno")
    params = _params()
    params["ngg"]["simulate"]["min_gap"] = 1000
    _write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    assert cli.main(["ngg", "pheno", "--no-mlflow"]) == 0
    truth = json.loads((tmp_path / "work/ngg_pheno/truth.json").read_text())
    assert 1 <= truth["min_gap"] < 1000 and len(truth["pairs"]) == 1
