"""`epiflow compare`: corrected t-test against a hand computation, folds.tsv vs MLflow sources,
refusal of mismatched splits, and run selection by filter/tag/id on a real SQLite MLflow store."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from pipelines import compare, tracking
from pipelines.cli import main

N_TRAIN, N_TEST = 200, 100  # 3-fold CV of 300 samples


def make_folds(seed: int, shift: float = 0.0, repeats: int = 2, folds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"repeat": r, "fold": k, "auc": round(0.70 + shift + 0.03 * rng.standard_normal(), 6),
             "n_train": N_TRAIN, "n_test": N_TEST} for r in range(repeats) for k in range(folds)]
    return pd.DataFrame(rows)


def write_stage(root, name, folds: pd.DataFrame, n_parameters=100, seconds=5.0, mtype=None):
    d = root / "work" / "train" / name
    d.mkdir(parents=True, exist_ok=True)
    folds.to_csv(d / "folds.tsv", sep="\t", index=False, float_format="%.6f")
    (d / "run.json").write_text(json.dumps({"model": name, "type": mtype or name}))
    m = root / "metrics" / "train"
    m.mkdir(parents=True, exist_ok=True)
    (m / f"{name}.json").write_text(json.dumps({"n_parameters": n_parameters, "train_time_s": seconds}))


def log_model(experiment, name, folds: pd.DataFrame, mtype=None, n_parameters=100, extra_tags=None):
    """A parent run with one child per fold, as `epiflow train` logs them."""
    import mlflow

    exp_id = tracking.setup(experiment)
    tags = tracking.run_tags([], extra={"model": name, "model_type": mtype or name, "stage": "train",
                                        **(extra_tags or {})})
    with tracking.parent_run(name, tags, {"model": name, "folds": "3"}) as run:
        for f in folds.itertuples():
            tracking.log_child(run.info.run_id, exp_id, f"{name}-r{f.repeat}f{f.fold}", tags=tags,
                               params={"repeat": f.repeat, "fold": f.fold, "seed": 0},
                               metrics={"auc": f.auc, "n_train": f.n_train, "n_test": f.n_test})
        mlflow.log_metrics({"auc_mean": float(folds["auc"].mean()), "auc_sd": float(folds["auc"].std()),
                            "n_parameters": n_parameters, "train_time_s": 3.0})
    return run.info.run_id


FOLDS_A = make_folds(1, shift=0.03)
FOLDS_B = make_folds(2)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One temporary project: stage outputs and a real SQLite MLflow store with logged runs."""
    root = tmp_path_factory.mktemp("proj")
    (root / "params.yaml").write_text("study: cmp\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("EPIFLOW_ROOT", str(root))
        mp.chdir(root)
        write_stage(root, "a", FOLDS_A, n_parameters=1234)
        write_stage(root, "b", FOLDS_B)
        # an older run of a on another version of the splits file (same fold ids and sizes)
        ids = {"a_old": log_model("cmp", "a", make_folds(9, shift=-0.2), n_parameters=1234,
                                  extra_tags={"dvc.work/splits.npz": "0ld5p1175"})}
        ids["a"] = log_model("cmp", "a", FOLDS_A, n_parameters=1234,  # newer: the one to use
                             extra_tags={"dvc.work/splits.npz": "c0ffee"})
        ids["b"] = log_model("cmp", "b", FOLDS_B, extra_tags={"dvc.work/splits.npz": "c0ffee"})
        # the newest run of b is still training (one fold so far): never the one compared
        import mlflow

        running = mlflow.MlflowClient().create_run(
            tracking.setup("cmp"), run_name="b", tags=tracking.run_tags([], extra={"model": "b", "stage": "train"}))
        tracking.log_child(running.info.run_id, tracking.setup("cmp"), "b-r0f0", tags={}, params={"repeat": 0, "fold": 0},
                           metrics={"auc": 0.9, "n_train": N_TRAIN, "n_test": N_TEST})
        # a second experiment for selection: two sparse nets and an additive model on shared folds,
        # plus one run on other splits (5 folds)
        ids["bs1"] = log_model("sel", "bs1", make_folds(3, 0.05), mtype="biosparse", extra_tags={"cohort": "x"})
        ids["bs2"] = log_model("sel", "bs2", make_folds(4, 0.02), mtype="biosparse", extra_tags={"cohort": "y"})
        ids["lr"] = log_model("sel", "lr", make_folds(5), mtype="logreg", extra_tags={"cohort": "x"})
        ids["other"] = log_model("sel", "other", make_folds(6, folds=5), mtype="logreg", extra_tags={"cohort": "y"})
        # an Optuna study run with two trial runs (inner-CV AUC) and their per-fold step runs
        exp_id = tracking.setup("tune")
        study_tags = tracking.run_tags([], extra={"model": "bs1", "model_type": "biosparse"})
        with tracking.parent_run("tune-bs1", study_tags, {}) as study:
            for trial, auc in ((0, 0.61), (1, 0.66)):
                tr = tracking.log_child(study.info.run_id, exp_id, f"tune-bs1-trial{trial}", tags=study_tags,
                                        params={"trial": trial, "lr": 0.01 * (trial + 1)},
                                        metrics={"inner_auc": auc})
                for step in range(2):
                    tracking.log_child(tr, exp_id, f"tune-bs1-trial{trial}-fold{step}", tags=study_tags,
                                       params={"step": step, "trial": trial}, metrics={"running_inner_auc": auc})
        yield root, ids


@pytest.fixture()
def in_project(project, monkeypatch):
    root, ids = project
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("EPIFLOW_ROOT", str(root))
    monkeypatch.chdir(root)
    return root, ids


def hand_ttest(a, b, n_train, n_test):
    d = np.asarray(a) - np.asarray(b)
    j = d.size
    m = d.sum() / j
    s2 = ((d - m) ** 2).sum() / (j - 1)
    t = m / np.sqrt((1 / j + n_test / n_train) * s2)
    t_naive = m / np.sqrt(s2 / j)
    return m, t, 2 * sps.t.sf(abs(t), j - 1), 2 * sps.t.sf(abs(t_naive), j - 1)


def test_corrected_ttest_matches_hand_computation(in_project, capsys):
    root, _ = in_project
    assert main(["compare", "a", "b", "--out", "out"]) == 0
    tests = pd.read_csv(root / "out" / "tests.tsv", sep="\t")
    assert len(tests) == 1 and tests.loc[0, "comparison"] == "a - b"
    # the CLI reads the 6-decimal folds.tsv; the hand computation uses the same rounded values
    m, t, p, p_naive = hand_ttest(FOLDS_A["auc"], FOLDS_B["auc"], N_TRAIN, N_TEST)
    assert tests.loc[0, "mean_diff"] == pytest.approx(m, rel=1e-5)
    assert tests.loc[0, "t"] == pytest.approx(t, rel=1e-5)
    assert tests.loc[0, "p_corrected"] == pytest.approx(p, rel=1e-5)
    assert tests.loc[0, "p_uncorrected"] == pytest.approx(p_naive, rel=1e-5)
    assert tests.loc[0, "p_corrected"] > tests.loc[0, "p_uncorrected"]  # the correction is conservative
    table = pd.read_csv(root / "out" / "table.tsv", sep="\t")
    assert list(table["model"]) == ["a", "b"] and table.loc[0, "n_parameters"] == 1234
    assert table.loc[0, "auc_mean"] == pytest.approx(FOLDS_A["auc"].mean(), abs=1e-6)
    assert {p.name for p in (root / "out").iterdir()} == {"table.tsv", "table.md", "tests.tsv", "compare.png",
                                                         ".epiflow-output"}   # marked as an epiflow output
    printed = capsys.readouterr().out
    assert "a - b" in printed and "p corrected" in printed


def test_reference_orients_the_differences(in_project):
    root, _ = in_project
    write_stage(root, "c", make_folds(7, shift=-0.05))
    scores = [compare.load_stage_scores(n, "work/train", "metrics/train") for n in ("a", "b", "c")]
    tests = compare.pairwise_tests(scores, reference="b")
    assert list(tests["comparison"]) == ["b - a", "b - c"]
    assert tests.loc[0, "mean_diff"] == pytest.approx(FOLDS_B["auc"].mean() - FOLDS_A["auc"].mean(), abs=1e-6)


def test_mlflow_source_gives_the_same_result(in_project, capsys):
    root, ids = in_project
    assert main(["compare", "a", "b", "--out", "from_tsv"]) == 0
    assert main(["compare", "a", "b", "--mlflow", "--out", "from_mlflow"]) == 0
    t1 = pd.read_csv(root / "from_tsv" / "tests.tsv", sep="\t")
    t2 = pd.read_csv(root / "from_mlflow" / "tests.tsv", sep="\t")
    for col in ("mean_diff", "t", "p_corrected", "p_uncorrected", "n_folds"):
        assert t2.loc[0, col] == pytest.approx(t1.loc[0, col], rel=1e-6), col
    table = pd.read_csv(root / "from_mlflow" / "table.tsv", sep="\t")
    assert list(table["run_id"]) == [ids["a"], ids["b"]]  # the latest run of a, not a_old
    # selecting the same runs by experiment gives the same test
    capsys.readouterr()
    assert main(["compare", "--experiment", "cmp", "--out", "by_exp"]) == 0
    t3 = pd.read_csv(root / "by_exp" / "tests.tsv", sep="\t")
    assert t3.loc[0, "p_corrected"] == pytest.approx(t1.loc[0, "p_corrected"], rel=1e-6)
    out = capsys.readouterr().out
    assert "latest run of each label" in out and "1 run(s) still running" in out


@pytest.mark.parametrize("change", ["missing_fold", "n_train"])
def test_mismatched_folds_refused_and_nothing_written(in_project, capsys, change):
    root, _ = in_project
    bad = FOLDS_B.copy()
    if change == "missing_fold":
        bad = bad.iloc[:-1]
    else:
        bad.loc[4, "n_train"] = N_TRAIN + 1
    write_stage(root, f"bad_{change}", bad)
    out = root / f"never_{change}"
    assert main(["compare", "a", f"bad_{change}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different splits" in err
    assert ("only in a" in err) if change == "missing_fold" else ("n_train/n_test" in err)
    assert not out.exists()


def test_runs_on_another_splits_version_are_not_paired(in_project, capsys):
    _, ids = in_project
    assert main(["compare", "--runs", ids["a_old"], ids["b"]]) == 0
    out = capsys.readouterr().out
    assert "no paired tests" in out and "different versions of work/splits.npz" in out
    assert "p corrected" not in out
    s, _ = compare.select_runs(None, "", None, [ids["a"], ids["b"]])
    assert compare.check_shared_folds(s) is None
    # three runs: the two on the reference's splits are tested, the other only listed
    a, a_old = f"a@{ids['a'][:8]}", f"a@{ids['a_old'][:8]}"
    assert main(["compare", "--runs", ids["a_old"], ids["a"], ids["b"], "--reference", ids["a"][:8]]) == 0
    out = capsys.readouterr().out
    assert f"{a} - b" in out and f"{a} - {a_old}" not in out and f"not tested: {a} and {a_old}" in out


def test_unknown_model_lists_known_ones(in_project, capsys):
    assert main(["compare", "a", "nosuch", "--out", "never"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nosuch'" in err and "a, b" in err
    assert main(["compare", "a", "nosuch", "--mlflow"]) == 2
    assert "known models: a, b" in capsys.readouterr().err


def test_filter_and_tag_selection(in_project):
    compare.connect()
    # the short tag name stands for the project's epiflow.model_type
    s, notes = compare.select_runs(["sel"], "tags.model_type = 'biosparse'")
    assert sorted(x.label for x in s) == ["bs1", "bs2"]
    assert any("epiflow.model_type" in n for n in notes)
    s, _ = compare.select_runs(["sel"], "tags.`epiflow.model_type` = 'logreg'")
    assert sorted(x.label for x in s) == ["lr", "other"]
    s, _ = compare.select_runs(["sel"], "", {"cohort": "x"})
    assert sorted(x.label for x in s) == ["bs1", "lr"]
    s, _ = compare.select_runs(["sel"], "tags.model_type = 'biosparse'", {"cohort": "y"})
    assert [x.label for x in s] == ["bs2"]
    assert len(compare.select_runs(["sel"])[0]) == 4  # no fold child runs among the selection
    # explicit run ids, searched in their own experiment
    _, ids = in_project
    s, _ = compare.select_runs(None, "", None, [ids["lr"], ids["bs1"][:10]])
    assert [x.label for x in s] == ["lr", "bs1"] and all(x.has_folds for x in s)


def test_nested_selection_lists_optuna_trials(in_project):
    s, notes = compare.select_runs(["tune"], nested=True)
    assert sorted((x.label, x.auc_mean) for x in s) == [("tune-bs1-trial0", 0.61), ("tune-bs1-trial1", 0.66)]
    assert any("inner_auc" in n for n in notes)
    assert compare.select_runs(["tune"])[0] == []  # the study run itself carries no AUC


def test_selection_without_shared_folds_lists_metrics_only(in_project, capsys):
    root, _ = in_project
    assert main(["compare", "--experiment", "sel", "--tag", "model_type=logreg", "--out", "nofolds"]) == 0
    out = capsys.readouterr().out
    assert "no paired tests" in out and "only in" in out
    assert not (root / "nofolds" / "tests.tsv").exists()
    assert set(pd.read_csv(root / "nofolds" / "table.tsv", sep="\t")["model"]) == {"lr", "other"}
    # sharing runs are tested
    assert main(["compare", "--experiment", "sel", "--filter", "tags.cohort = 'x'", "--reference", "lr"]) == 0
    assert "lr - bs1" in capsys.readouterr().out
    assert main(["compare", "--experiment", "sel", "--filter", "tags.model = 'nothing'"]) == 2
    assert "matched 0" in capsys.readouterr().err
    assert main(["compare", "--experiment", "sel", "--filter", "tags.model = = 'x'"]) == 2
    assert "bad MLflow filter" in capsys.readouterr().err


def test_log_records_a_compare_run(in_project, capsys):
    import mlflow

    assert main(["compare", "a", "b", "--log"]) == 0
    run_id = capsys.readouterr().out.strip().split()[-1]
    run = mlflow.get_run(run_id)
    assert run.data.tags["epiflow.stage"] == "compare"
    key = "p_corrected.a_vs_b"
    m, t, p, _ = hand_ttest(FOLDS_A["auc"], FOLDS_B["auc"], N_TRAIN, N_TEST)
    assert run.data.metrics[key] == pytest.approx(p, rel=1e-5)
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"table.tsv", "table.md", "tests.tsv", "compare.png"} <= names
    # the compare run carries no AUC, so a later selection skips it
    s, notes = compare.select_runs(["cmp"])
    assert sorted(x.label for x in s) == ["a", "b"]
