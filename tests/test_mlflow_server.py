"""Tracking for many workers: a real ``mlflow server`` (PostgreSQL backend store, local artifact
root, loopback port) and three ``epiflow tune`` processes on one Optuna study in PostgreSQL, each
from its own project folder as if on its own machine (no shared lock file): every trial is logged
exactly once, no run is left RUNNING, and the workers elect one study run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from test_tune import postgres_url, write_cohort  # noqa: F401  (the PostgreSQL server fixture)

N_WORKERS, N_EACH = 3, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _create_db(url: str, name: str) -> str:
    import psycopg2
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = psycopg2.connect(host=u.hostname, port=u.port, user=u.username, dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return u._replace(path=f"/{name}").geturl()


@pytest.fixture
def mlflow_server(postgres_url, tmp_path):  # noqa: F811
    """``mlflow server`` on a free loopback port, runs in PostgreSQL, artifacts under tmp_path."""
    from pipelines.tune import _postgres_driver

    backend = _postgres_driver(_create_db(postgres_url, "mlflow"))  # postgresql+psycopg2://
    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "2", "--backend-store-uri", backend,
                             "--artifacts-destination", str(tmp_path / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("mlflow server did not start:\n" + (tmp_path / "mlflow-server.log").read_text()[-3000:])
            time.sleep(0.3)
        yield uri
    finally:
        import signal

        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.mark.postgres
def test_three_tune_workers_on_postgres_and_an_mlflow_server(tmp_path, postgres_url, mlflow_server):  # noqa: F811
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from pipelines.tune import _postgres_driver

    procs = []
    for i in range(N_WORKERS):
        root = tmp_path / f"machine{i}"
        write_cohort(root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(MLFLOW_TRACKING_URI=mlflow_server, EPIFLOW_ROOT=str(root), PYTHONWARNINGS="ignore")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "tune", "--quiet", "--model", "sgd_l2", "--n-trials",
             str(N_EACH), "--study-name", "many", "--storage", postgres_url, "--metrics", f"metrics/w{i}.json"],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    total = N_WORKERS * N_EACH

    study = optuna.load_study(study_name="many", storage=optuna.storages.RDBStorage(_postgres_driver(postgres_url)))
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(total))
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert sum(bool(t.user_attrs.get("default")) for t in trials) == 1

    c = MlflowClient(tracking_uri=mlflow_server)
    exp = c.get_experiment_by_name("tiny-tune")
    runs = c.search_runs([exp.experiment_id], max_results=5000, run_view_type=ViewType.ACTIVE_ONLY)
    kinds: dict = {}
    for r in runs:
        kinds.setdefault(r.data.tags.get("epiflow.optuna.run"), []).append(r)
    assert len(kinds["study"]) == 1                                   # elected once
    sid = kinds["study"][0].info.run_id
    trial_runs = kinds["trial"]
    assert sorted(int(r.data.params["trial"]) for r in trial_runs) == list(range(total))   # each exactly once
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {sid}
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []               # none left RUNNING
    state = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
    by_number = {int(r.data.params["trial"]): r for r in trial_runs}
    for t in trials:
        assert by_number[t.number].info.status == state[t.state.name]
        if t.state.name == "COMPLETE":
            assert by_number[t.number].data.metrics["inner_auc"] == pytest.approx(t.value)
    # the study run's artifacts went through the server to its local artifact root
    names = {f.path for f in c.list_artifacts(sid)}
    assert {"best_params.json", "trials.tsv"} <= names
    assert any((tmp_path / "artifacts").rglob("best_params.json"))
