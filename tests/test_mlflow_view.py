"""What a user sees in the MLflow UI: experiments labelled as model development (not the GenAI
traces page) with a description, model runs findable by one tag and the link that filters and
sorts them, fold runs whose duration is the fold's training time, ROC and fold-AUC figures on
every model run. Real MLflow store (SQLite) and a real train run."""
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pipelines import cli, tracking


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from test_workflows_cv import write_project

    d = write_project(tmp_path_factory.mktemp("mlflow_view"))
    mp = pytest.MonkeyPatch()
    mp.chdir(d)
    mp.setenv("EPIFLOW_ROOT", str(d))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        for model in ("sgd_l2", "rf_genes"):
            assert cli.main(["train", "--model", model, "--jobs", "1", "--encoded", "encoded",
                             "--splits", "splits.npz", "--quiet"]) == 0
        from mlflow import MlflowClient

        tracking.use_tracking_uri(d)
        client = MlflowClient()
        exp = client.get_experiment_by_name("t")
        yield d, client, exp
    finally:
        mp.undo()


def test_experiment_is_model_development_with_a_description(trained):
    _, _, exp = trained
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    note = exp.tags[tracking.NOTE_TAG]
    assert "one parent run per model" in note and tracking.MODEL_FILTER in note


def test_model_runs_found_by_the_filter_best_first(trained):
    _, client, exp = trained
    runs = client.search_runs([exp.experiment_id], filter_string=tracking.MODEL_FILTER,
                              order_by=[f"{tracking.MODEL_ORDER} DESC"])
    assert sorted(r.data.tags["epiflow.model"] for r in runs) == ["rf_genes", "sgd_l2"]   # no fold run
    aucs = [r.data.metrics["auc_mean"] for r in runs]
    assert aucs == sorted(aucs, reverse=True)
    folds = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.LEVEL_TAG}` = 'fold'",
                               max_results=1000)
    assert len(folds) == 2 * 6                                          # 2 models x 2 repeats x 3 folds
    url = tracking.ui_url(exp.experiment_id)
    parts = urlsplit(url)
    assert parts.fragment.startswith(f"/experiments/{exp.experiment_id}/runs?")
    q = parse_qs(parts.fragment.split("?", 1)[1])
    assert unquote(q["searchFilter"][0]) == tracking.MODEL_FILTER
    assert q["orderByKey"] == ["metrics.`auc_mean`"] and q["orderByAsc"] == ["false"]
    assert q["workflowType"] == ["machine_learning"]


def test_fold_runs_last_as_long_as_the_fold_trained(trained):
    _, client, exp = trained
    folds = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.LEVEL_TAG}` = 'fold'",
                               max_results=1000)
    for r in folds:
        ms = r.info.end_time - r.info.start_time
        assert abs(ms - 1000 * r.data.metrics["train_time_s"]) <= 2, (r.info.run_name, ms)
        assert r.info.status == "FINISHED"
    # and the parent spans its folds
    parents = client.search_runs([exp.experiment_id], filter_string=tracking.MODEL_FILTER)
    for p in parents:
        kids = [f for f in folds if f.data.tags["mlflow.parentRunId"] == p.info.run_id]
        assert min(k.info.start_time for k in kids) >= p.info.start_time - 5
        assert max(k.info.end_time for k in kids) <= p.info.end_time


def test_every_model_run_has_its_figures(trained):
    from PIL import Image

    d, client, exp = trained
    for r in client.search_runs([exp.experiment_id], filter_string=tracking.MODEL_FILTER):
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"roc.png", "fold_auc.png", "folds.tsv", "roc_repeat0.json"} <= names
        local = client.download_artifacts(r.info.run_id, "roc.png", str(d / f"dl-{r.info.run_id}"))
        with Image.open(local) as im:
            assert im.size[0] > 300 and im.size[1] > 300


def test_existing_unlabelled_experiment_gets_labelled(trained):
    """An experiment made before (by an older epiflow or by hand) gets its kind; a description the
    user wrote is kept."""
    _, client, _ = trained
    old = client.create_experiment("old-unlabelled")
    client.set_experiment_tag(old, tracking.NOTE_TAG, "my own notes")
    assert tracking.setup("old-unlabelled") == old
    tags = client.get_experiment(old).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tags[tracking.NOTE_TAG] == "my own notes"                    # the user's text is kept


def test_model_run_figures_from_a_known_cv(tmp_path):
    """The figures' inputs: a perfect and a chance predictor give the ROC AUCs of 1 and ~0.5."""
    import numpy as np
    import pandas as pd

    from pipelines.plots.model_run import _roc, model_run_figures

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.ones(50)]
    oof = pd.concat([pd.DataFrame({"repeat": r, "fold": 0, "y": y,
                                   "proba": y * 0.5 + rng.uniform(0, 0.4, 100) if r == 0 else rng.uniform(0, 1, 100)})
                     for r in range(3)])
    assert _roc(y, oof[oof.repeat == 0]["proba"].to_numpy())[2] == 1.0
    folds = pd.DataFrame({"repeat": [0, 0, 1, 1], "fold": [0, 1, 0, 1], "auc": [0.9, 0.8, 0.7, 0.75]})
    t0 = time.perf_counter()
    paths = model_run_figures(oof, folds, "perfect", tmp_path)
    assert [p.name for p in paths] == ["roc.png", "fold_auc.png"] and all(p.stat().st_size > 5000 for p in paths)
    assert time.perf_counter() - t0 < 10
