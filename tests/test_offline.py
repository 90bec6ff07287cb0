"""Nothing leaves the machine: the network guard used by the end-to-end test catches a real
attempt, and an MLflow run started through epiflow's packages makes none (MLflow's telemetry
would contact its host on the first run otherwise)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NETGUARD = Path(__file__).resolve().parent / "netguard"
# MLflow switches its telemetry off by itself under pytest or a CI runner; a user's shell has
# none of these, so the guarded processes run without them
CI_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE")


def _guarded(code: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and k not in ("DO_NOT_TRACK", "DVC_NO_ANALYTICS", *CI_MARKERS)}
    env.update(PYTHONPATH=str(NETGUARD), EPIFLOW_TEST_NET_LOG=str(log))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    return r, (log.read_text() if log.exists() else "")


RUN = """
import time, mlflow
mlflow.set_tracking_uri('sqlite:///' + __import__('os').getcwd() + '/m.db')
with mlflow.start_run():
    mlflow.log_metric('auc', 0.5)
time.sleep(4)   # telemetry is sent from a background thread
"""


def test_guard_records_a_real_attempt(tmp_path):
    r, log = _guarded("import socket\ntry:\n    socket.getaddrinfo('example.org', 443)\n"
                      "except OSError:\n    pass\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "example.org" in log


def test_loopback_is_allowed(tmp_path):
    r, log = _guarded("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\n"
                      "s.listen()\nc = socket.create_connection(s.getsockname())\n", tmp_path)
    assert r.returncode == 0, r.stderr
    assert log == ""


def test_mlflow_run_through_epiflow_makes_no_connection(tmp_path):
    r, log = _guarded("import pipelines.tracking\n" + RUN, tmp_path)
    assert r.returncode == 0, r.stderr
    assert log == "", log


def test_plain_mlflow_would_phone_home(tmp_path):
    """The control: the same run without epiflow's packages tries MLflow's telemetry host, so
    the test above would notice if the switch stopped working."""
    r, log = _guarded(RUN, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "telemetry" in log
