"""`epiflow interpret` end to end on a small planted cohort: the refits are the train stage's fits
(same fold AUCs), the planted genes come out on top, the files, metrics and MLflow run exist,
and bad requests are one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.simulate.genes import planted_burden


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from test_workflows_cv import write_project

    import yaml

    from test_workflows_cv import COHORT

    cohort = dict(COHORT, n=600, effect=3.0)
    d = write_project(tmp_path_factory.mktemp("interp"), **cohort)
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["train"]["max_epochs"] = 15                 # enough for logreg to learn the planted genes
    params["models"]["logreg"].update(lr=0.03)
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    # write_project's cohort (same seed): the planted genes become the truth file
    coh = planted_burden(**cohort)
    truth = {"additive_genes": [{"gene": f"G{g}"} for g in coh.causal_genes], "epistatic_pairs": []}
    (d / "truth.json").write_text(json.dumps(truth))
    return d


def _argv(d, *extra):
    return ["interpret", "--model", "logreg", "--params", str(d / "params.yaml"), "--encoded", str(d / "encoded"),
            "--splits", str(d / "splits.npz"), "--out", str(d / "out"), "--metrics", str(d / "m.json"),
            "--truth", str(d / "truth.json"), "--quiet", *extra]


def test_interpret_logreg_finds_the_planted_genes(project, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv("EPIFLOW_ROOT", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--model", "logreg", "--params", str(project / "params.yaml"), "--encoded",
                 str(project / "encoded"), "--splits", str(project / "splits.npz"), "--out", str(project / "tr"),
                 "--metrics", str(project / "tr.json"), "--plots", str(project / "roc.json"), "--quiet",
                 "--jobs", "1"]) == 0
    assert main(_argv(project)) == 0
    out = capsys.readouterr().out
    assert "top genes:" in out and "precision@20" in out
    for f in ("genes.tsv", "pairs.tsv", "folds.tsv", "summary.md", "gene_importance.png", "interactions.png"):
        assert (project / "out" / f).is_file(), f
    assert not (project / "out" / "pathways.tsv").exists()        # logreg: no hidden layer
    # the refits are train's fits: same fold AUCs on repeat 0
    folds = pd.read_csv(project / "out" / "folds.tsv", sep="\t")
    train = pd.read_csv(project / "tr" / "folds.tsv", sep="\t")
    np.testing.assert_allclose(folds["auc"], train[train["repeat"] == 0]["auc"], atol=5e-7)
    assert (folds["completeness_rel_err"] < 0.01).all()
    genes = pd.read_csv(project / "out" / "genes.tsv", sep="\t")
    assert list(genes["rank"]) == list(range(1, len(genes) + 1))
    assert genes["planted"].head(3).all()                        # the 3 planted genes ranked 1-3
    m = json.loads((project / "m.json").read_text())
    assert m["truth"]["precision_at_k"] == pytest.approx(3 / 20)  # all 3 planted within the top 20 of 30
    assert m["truth"]["additive_gene_ranks"] and max(m["truth"]["additive_gene_ranks"]) <= 3
    pairs = pd.read_csv(project / "out" / "pairs.tsv", sep="\t")
    assert (pairs["p"] == 1.0).all() and not pairs["nominated"].any()   # additive: no interaction
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("t").experiment_id],
                              filter_string="tags.`epiflow.stage` = 'interpret'")
    assert len(runs) == 1 and runs["tags.mlflow.runName"].item() == "logreg-interpret"
    parent = mlflow.search_runs([mlflow.get_experiment_by_name("t").experiment_id],
                                filter_string="tags.`epiflow.stage` = 'train' and tags.`epiflow.model` = 'logreg'")
    assert runs["tags.mlflow.parentRunId"].item() in set(parent["run_id"])
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"].item())}
    assert {"genes.tsv", "pairs.tsv", "gene_importance.png"} <= arts


@pytest.mark.parametrize("extra,model,msg", [
    ((), "sgd_l2", "not a single gene network"),
    (("--repeat", "5"), "logreg", "repeat 5 but the splits hold 2"),
])
def test_interpret_refuses_in_one_line(project, capsys, extra, model, msg):
    from pipelines.cli import main

    argv = _argv(project, "--no-mlflow", "--out", str(project / "bad"), *extra)
    argv[2] = model
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
    assert not (project / "bad").exists()
