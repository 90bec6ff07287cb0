"""`make ui` / `make dashboard` (scripts/serve.py) and the demo's own output: a missing store is one
line, a real store is served with the links to open; `dvc repro` inside the demo prints the stages'
output without DVC's git-add / autostage / dvc-push hints."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "scripts" / "serve.py"
PY = sys.executable


def _env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "EPIFLOW_OWN_TRACKING_URI")}
    env["EPIFLOW_ROOT"] = str(root)
    return env


@pytest.mark.parametrize("what,needle", [("mlflow", "no MLflow store at"), ("optuna", "no Optuna studies at")])
def test_missing_store_is_one_line(tmp_path, what, needle):
    r = subprocess.run([PY, str(SERVE), what], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "make demo" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(tmp_path.iterdir()) == []                    # nothing created


def test_empty_optuna_file_is_one_line_and_untouched(tmp_path):
    (tmp_path / "mlruns").mkdir()
    db = tmp_path / "mlruns" / "optuna.db"
    db.write_bytes(b"")                                       # what optuna-dashboard itself leaves
    r = subprocess.run([PY, str(SERVE), "optuna"], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert db.stat().st_size == 0


def test_dvc_hints_filtered_from_the_demo_repro(tmp_path, capfd):
    from pipelines.stages.demo import _repro

    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_COMMITTER_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
               GIT_COMMITTER_EMAIL="t@example.org", DVC_NO_ANALYTICS="1")
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: echo stage-output-line > out.txt && echo ran-a\n"
                                       "    outs:\n      - out.txt\n")
    (tmp_path / ".dvc").mkdir()                       # what `dvc init` writes, without its start-up time
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (tmp_path / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "i"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    capfd.readouterr()
    assert _repro([], tmp_path) == 0
    out = capfd.readouterr().out
    assert "Running stage 'a'" in out and "ran-a" in out
    for hint in ("git add", "autostage", "dvc push", "To track the changes"):
        assert hint not in out, out
    assert "\n\n\n" not in out
    assert (tmp_path / "out.txt").read_text() == "stage-output-line\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_and_probe(argv, env, port, timeout=300) -> tuple[str, bytes]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
                    return proc, r.read()
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read()}")
                time.sleep(0.5)
        raise AssertionError("server did not answer")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_ui_and_dashboard_serve_a_real_project_store(tmp_path):
    """A tiny trained model and a 2-trial study: `serve.py mlflow` prints the model link and the UI
    answers; `serve.py optuna` names the study and optuna-dashboard answers."""
    from test_workflows_cv import write_project

    import yaml

    write_project(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["tune"] = {"space": {"alpha": [1.0e-5, 0.1, "log"]}, "inner_folds": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = _env(tmp_path)
    epiflow = str(Path(PY).parent / "epiflow")
    for argv in ([epiflow, "train", "--model", "sgd_l2", "--jobs", "1", "--encoded", "encoded", "--splits",
                  "splits.npz", "--quiet"],
                 [epiflow, "tune", "--model", "sgd_l2", "--n-trials", "2", "--encoded", "encoded", "--splits",
                  "splits.npz", "--quiet", "--study-name", "demo-sgd_l2", "--no-mlflow"]):
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    port = _free_port()
    proc, body = _serve_and_probe([PY, str(SERVE), "mlflow", "--port", str(port)], env, port)
    assert b"<html" in body.lower()
    printed = proc.stdout.read()
    assert f"http://127.0.0.1:{port}/#/experiments/" in printed and "orderByKey=metrics.%60auc_mean%60" in printed
    port = _free_port()
    proc, body = _serve_and_probe([PY, str(SERVE), "optuna", "--port", str(port)], env, port)
    assert "demo-sgd_l2" in proc.stdout.read()
