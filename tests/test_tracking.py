"""MLflow wiring against a real SQLite-backed store in a temporary project."""
import hashlib
import subprocess

import pytest

from pipelines import tracking


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("study: t\n")
    return tmp_path


def test_store_root_sees_through_dvc_exp_tempdirs(tmp_path, monkeypatch):
    monkeypatch.delenv("EPIFLOW_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    exp.mkdir(parents=True)
    (exp / "params.yaml").write_text("study: x\n")
    assert tracking.store_root(exp) == tmp_path / "repo"
    assert tracking.tracking_uri(exp) == f"sqlite:///{tmp_path / 'repo' / 'mlruns' / 'mlflow.db'}"


def test_data_hashes_match_dvc_conventions(project):
    (project / "data").mkdir()
    (project / "data" / "a.txt").write_bytes(b"hello\n")
    (project / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef.dir\n  path: data\n")
    h = tracking.data_hashes(["data", "data/a.txt"], root=project)
    assert h["data"] == "0123456789abcdef.dir"  # the version DVC recorded
    assert h["data/a.txt"] == hashlib.md5(b"hello\n").hexdigest()  # DVC 3 file md5 = md5 of bytes


def test_inputs_outside_the_project_are_hashed_by_absolute_path(project, tmp_path_factory):
    """A cohort kept outside the project, given by absolute path, crashed every train stage
    ("... is not in the subpath of ..."); it is tagged under its absolute path."""
    elsewhere = tmp_path_factory.mktemp("cohort")
    (elsewhere / "sets.gmt").write_bytes(b"P\tna\tG1\n")
    (elsewhere / "enc").mkdir()
    (elsewhere / "enc" / "x.txt").write_bytes(b"x")
    (project / "inside.txt").write_bytes(b"in")
    h = tracking.data_hashes([elsewhere / "sets.gmt", elsewhere / "enc", project / "inside.txt"], root=project)
    assert h[str(elsewhere / "sets.gmt")] == hashlib.md5(b"P\tna\tG1\n").hexdigest()
    assert h[str(elsewhere / "enc")].endswith(".dir")
    assert h["inside.txt"] == hashlib.md5(b"in").hexdigest()


def test_parent_and_child_runs(project):
    import mlflow

    exp_id = tracking.setup("study-1")
    assert (project / "mlruns" / "mlflow.db").is_file()
    tags = tracking.run_tags([], extra={"model": "m", "stage": "train"})
    with tracking.parent_run("m", tags, {"lr": "0.1"}) as run:
        for k in range(3):
            tracking.log_child(run.info.run_id, exp_id, f"f{k}", tags=tags, params={"fold": k},
                               metrics={"auc": 0.5 + k / 10})
        mlflow.log_metric("auc_mean", 0.6)
    runs = mlflow.search_runs([exp_id])
    children = runs[runs["tags.mlflow.parentRunId"] == run.info.run_id]
    assert len(runs) == 4 and len(children) == 3
    assert sorted(children["metrics.auc"].round(3)) == [0.5, 0.6, 0.7]
    assert (runs["tags.epiflow.model"] == "m").all()
    assert runs["tags.epiflow.git_commit"].notna().all()


def test_git_commit_tag(project):
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=project, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert tracking.git_commit(project) == sha


def test_own_uri_exported_by_mlflow_is_not_taken_for_a_user_setting(tmp_path, monkeypatch):
    """MLflow exports the URI set by ``set_tracking_uri`` as MLFLOW_TRACKING_URI (to this process
    and to children such as the stages ``dvc repro`` starts): that must not pin later projects to
    the first store, nor send artifacts to ./mlruns of whatever the working directory is."""
    import os
    import sys

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.OWN_URI_ENV, raising=False)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "params.yaml").write_text("study: t\n")
        monkeypatch.setenv("EPIFLOW_ROOT", str(root))
        exp_id = tracking.setup("exp")
        assert mlflow.get_tracking_uri() == f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        loc = mlflow.get_experiment(exp_id).artifact_location
        assert loc == (root / "mlruns" / "artifacts" / "exp").as_uri(), loc
    assert os.environ.get("MLFLOW_TRACKING_URI") == mlflow.get_tracking_uri()   # what MLflow does
    # a child process of another project inherits both variables and still uses its own store
    child = tmp_path / "c"
    child.mkdir()
    (child / "params.yaml").write_text("study: t\n")
    env = {**os.environ, "EPIFLOW_ROOT": str(child)}
    out = subprocess.run([sys.executable, "-c", "from pipelines import tracking; print(tracking.tracking_uri())"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"sqlite:///{child / 'mlruns' / 'mlflow.db'}"
    # a URI the user chose still wins
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'server.db'}")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'server.db'}"
    assert not (elsewhere / "mlruns").exists()
