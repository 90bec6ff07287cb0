"""Table 1: p vs the best additive model against a direct corrected t-test, the files of the
report folder, the extra stages' results, and the MLflow report run's artifacts."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pipelines import report

R, K, N_TRAIN, N_TEST = 4, 3, 200, 100


def _folds(mean, sd, seed, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(seed)
    rows = [{"repeat": r, "fold": k, "auc": float(np.clip(mean + sd * rng.standard_normal(), 0, 1)),
             "n_train": n_train, "n_test": n_test} for r in range(R) for k in range(K)]
    return pd.DataFrame(rows)


MODELS = {  # name -> (type, mean, sd, seed)
    "logreg": ("logreg", 0.70, 0.02, 1),
    "sgd_l2": ("sgd_l2", 0.66, 0.03, 2),
    "biosparse": ("biosparse", 0.76, 0.03, 3),
    "rf_genes": ("rf_genes", 0.69, 0.02, 4),
}


def _direct_p(a, b, n_train, n_test):
    """Nadeau-Bengio by hand: t = mean(d) / sqrt((1/J + n_test/n_train) var(d)), J-1 df."""
    d = np.asarray(a) - np.asarray(b)
    J = d.size
    t = d.mean() / np.sqrt((1 / J + n_test / n_train) * d.var(ddof=1))
    return 2 * sps.t.sf(abs(t), J - 1)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    models = {}
    for name, (mtype, mean, sd, seed) in MODELS.items():
        ft = _folds(mean, sd, seed)
        if name == "rf_genes":          # stored in another order: matched by (repeat, fold)
            ft = ft.iloc[::-1]
        d = tmp_path / "work" / "train" / name
        d.mkdir(parents=True)
        ft.to_csv(d / "folds.tsv", sep="\t", index=False)
        m = tmp_path / "metrics" / "train"
        m.mkdir(parents=True, exist_ok=True)
        (m / f"{name}.json").write_text(json.dumps({
            "auc_mean": float(ft["auc"].mean()), "auc_sd": float(ft["auc"].std(ddof=1)),
            "n_folds": len(ft), "n_parameters": 100 + seed, "train_time_s": 1.5}))
        roc = tmp_path / "plots" / "roc"
        roc.mkdir(parents=True, exist_ok=True)
        (roc / f"{name}.json").write_text(json.dumps([{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.3, "tpr": mean},
                                                      {"fpr": 1.0, "tpr": 1.0}]))
        # a valid entry of each type (params.yaml is validated by the model registry on load)
        key = "alpha" if mtype.startswith("sgd_") else "n_estimators" if mtype.startswith("rf_") else "lr"
        models[name] = {"type": mtype, key: 10 if key == "n_estimators" else 0.01}
    lc = tmp_path / "work" / "learning_curve"
    lc.mkdir(parents=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(lc / "learning_curve.png")
    plt.close(fig)
    (lc / "table.md").write_text("| size | logreg | biosparse |\n|---|---|---|\n| 100 | 0.6 | 0.55 |\n")
    (lc / "ignored.json").write_text("{}")
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"study": "rep", "models": models}))
    return tmp_path


def _args(*extra):
    from pipelines.stages import report as stage

    p = argparse.ArgumentParser()
    stage.add_arguments(p)
    return p.parse_args(list(extra))


def test_p_vs_best_additive_matches_direct_ttest(project):
    models = {n: {"type": t} for n, (t, *_rest) in MODELS.items()}
    df = report.add_p_vs_best_additive(report.table_from_stage_outputs(models))
    assert report.best_additive(df) == "logreg"        # higher mean than sgd_l2; biosparse is not additive
    ref = _folds(*MODELS["logreg"][1:])
    by = df.set_index("model")
    assert by.loc["logreg", "reference"] and np.isnan(by.loc["logreg", "p_vs_best_additive"])
    assert by["reference"].sum() == 1
    for name in ("sgd_l2", "biosparse", "rf_genes"):
        other = _folds(*MODELS[name][1:])
        expected = _direct_p(other["auc"], ref["auc"], N_TRAIN, N_TEST)
        assert by.loc[name, "p_vs_best_additive"] == pytest.approx(expected, rel=1e-10), name
        assert by.loc[name, "auc_diff_vs_best_additive"] == pytest.approx(
            (other["auc"] - ref["auc"]).mean(), abs=1e-12)
    # the naive paired test would be far more confident: the correction matters here
    bio = _folds(*MODELS["biosparse"][1:])["auc"] - ref["auc"]
    naive = 2 * sps.t.sf(abs(bio.mean() / np.sqrt(bio.var(ddof=1) / bio.size)), bio.size - 1)
    assert naive < by.loc["biosparse", "p_vs_best_additive"]


def test_paired_test_uses_only_shared_folds():
    a, b = _folds(0.7, 0.02, 1), _folds(0.6, 0.02, 2)
    res = report.paired_test(a.iloc[:6], b)
    assert res.n_folds == 6
    assert res.p_value == pytest.approx(_direct_p(a["auc"][:6], b["auc"][:6], N_TRAIN, N_TEST), rel=1e-10)
    assert report.paired_test(a.iloc[:1], b) is None


def test_no_additive_model_gives_no_reference():
    df = pd.DataFrame([{"model": "b", "type": "biosparse", "auc_mean": 0.7, "folds": _folds(0.7, 0.01, 0)}])
    out = report.add_p_vs_best_additive(df)
    assert not out["reference"].any() and out["p_vs_best_additive"].isna().all()


def test_report_stage_files_and_mlflow_artifacts(project, capsys):
    from pipelines.stages import report as stage

    assert stage.run(_args()) == 0
    printed = capsys.readouterr().out
    assert "p vs best additive" in printed and "logreg *" in printed and "+-" in printed
    out = project / "reports"
    for f in ("table.md", "table.tsv", "report.md", "fold_auc.png", "roc.png",
              "learning_curve/learning_curve.png", "learning_curve/table.md"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert not (out / "learning_curve" / "ignored.json").exists()
    assert not (out / "sweep").exists()              # no sweep results: no section
    tsv = pd.read_csv(out / "table.tsv", sep="\t")
    assert list(tsv["model"]) == ["biosparse", "logreg", "rf_genes", "sgd_l2"]     # by mean AUC
    assert tsv.loc[tsv["model"] == "logreg", "reference"].item()
    md = (out / "table.md").read_text()
    assert "**logreg** (ref)" in md and "p vs best additive" in md and "± " in md and "worst fold" in md
    for name in tsv["model"]:  # the worst fold of each model: the minimum of its fold table
        worst = pd.read_csv(project / "work" / "train" / name / "folds.tsv", sep="\t")["auc"].min()
        assert tsv.loc[tsv["model"] == name, "auc_min"].item() == pytest.approx(worst, abs=1e-5), name
        assert f"| {worst:.3f} |" in md
    rep = (out / "report.md").read_text()
    assert "| 100 | 0.6 | 0.55 |" in rep and "learning_curve/learning_curve.png" in rep and "fold_auc.png" in rep
    metrics = json.loads((project / "metrics" / "report.json").read_text())
    assert metrics["best_model"] == "biosparse" and metrics["best_additive"] == "logreg"
    assert metrics["n_models"] == 4 and metrics["extras"] == ["learning_curve"]
    p_bio = tsv.loc[tsv["model"] == "biosparse", "p_vs_best_additive"].item()
    assert metrics["p_vs_best_additive.biosparse"] == pytest.approx(p_bio, rel=1e-5)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("rep")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`epiflow.stage` = 'report'")
    assert len(runs) == 1 and runs["tags.mlflow.runName"].item() == "report"
    client = mlflow.MlflowClient()
    rid = runs["run_id"].item()
    top = {a.path for a in client.list_artifacts(rid)}
    assert {"table.md", "table.tsv", "report.md", "fold_auc.png", "roc.png", "learning_curve"} <= top
    assert {a.path for a in client.list_artifacts(rid, "learning_curve")} == {
        "learning_curve/learning_curve.png", "learning_curve/table.md"}
    assert runs["params.best_additive"].item() == "logreg"


def test_report_from_mlflow_store_has_p_values(project):
    """--source mlflow rebuilds the table, fold tables included, from the train runs alone."""
    import mlflow

    from pipelines import tracking

    tracking.setup("rep")
    for name, (mtype, mean, sd, seed) in MODELS.items():
        ft = _folds(mean, sd, seed)
        with mlflow.start_run(run_name=name, tags={"epiflow.stage": "train", "epiflow.model": name,
                                                   "epiflow.model_type": mtype}):
            mlflow.log_params({"lr": 0.01})
            mlflow.log_metrics({"auc_mean": ft["auc"].mean(), "auc_sd": ft["auc"].std(ddof=1),
                                "n_folds": len(ft), "n_parameters": 10, "train_time_s": 1.0})
            mlflow.log_text(ft.to_csv(sep="\t", index=False), "folds.tsv")
    from pipelines.stages import report as stage

    assert stage.run(_args("--source", "mlflow", "--out", "rep_ml", "--metrics", "m.json", "--no-mlflow",
                           "--roc-dir", "none")) == 0
    tsv = pd.read_csv(project / "rep_ml" / "table.tsv", sep="\t").set_index("model")
    ref = _folds(*MODELS["logreg"][1:])
    bio = _folds(*MODELS["biosparse"][1:])
    assert tsv.loc["biosparse", "p_vs_best_additive"] == pytest.approx(
        _direct_p(bio["auc"], ref["auc"], N_TRAIN, N_TEST), rel=1e-5)


def test_bad_report_section_is_one_line_error(project):
    import yaml

    from pipelines.errors import EpiflowError
    from pipelines.stages import report as stage

    p = yaml.safe_load((project / "params.yaml").read_text())
    p["report"] = {"additive": ["logreg"]}
    (project / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(EpiflowError, match="unknown key"):
        stage.run(_args())
    assert not (project / "reports").exists()


def test_report_leaves_out_models_trained_on_other_splits(project, capsys):
    """A user's own cohort after the demo: metrics of models not yet retrained (committed demo
    rows) come from other splits; the report leaves them out, names them, and refuses an empty
    table."""
    from pipelines.errors import EpiflowError
    from pipelines.splits import make_splits, save_splits
    from pipelines.stages import report as stage

    y = np.tile([0, 1], 30)
    ids = [f"s{i}" for i in range(60)]
    mine = make_splits(y, ids, repeats=2, folds=3, seed=1)
    other = make_splits(y[::-1], ids, repeats=2, folds=3, seed=1)    # same ids, other labels
    assert mine.fingerprint != other.fingerprint
    save_splits(mine, project / "work" / "splits.npz")
    for name in MODELS:
        m = project / "metrics" / "train" / f"{name}.json"
        met = json.loads(m.read_text())
        met["splits"] = mine.fingerprint if name in ("logreg", "biosparse") else other.fingerprint
        m.write_text(json.dumps(met))
    before = {p: p.read_bytes() for p in (project / "metrics" / "train").iterdir()}
    assert stage.run(_args("--no-mlflow")) == 0
    err = capsys.readouterr().err
    assert "left out 2 model(s)" in err and "sgd_l2" in err and "rf_genes" in err
    tsv = pd.read_csv(project / "reports" / "table.tsv", sep="\t")
    assert sorted(tsv["model"]) == ["biosparse", "logreg"]
    assert before == {p: p.read_bytes() for p in (project / "metrics" / "train").iterdir()}
    save_splits(make_splits(y, ids, repeats=2, folds=3, seed=2), project / "work" / "splits.npz")
    with pytest.raises(EpiflowError, match="no model has metrics to report for these splits"):
        stage.run(_args("--no-mlflow", "--out", "r2"))
    assert not (project / "r2").exists()
