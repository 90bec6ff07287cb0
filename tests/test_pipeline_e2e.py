"""The whole pipeline on a tiny embedded cohort, through a real `dvc repro` and a real MLflow store.

Checks: the run finishes; MLflow holds one parent run per model with a child per fold; a second
`dvc repro` has nothing to do; changing one model's parameter reruns only that model and the report.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NETGUARD = Path(__file__).resolve().parent / "netguard"


def _env(project: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env["EPIFLOW_ROOT"] = str(project)
    # every process (dvc, the stages, MLflow) runs under a guard that refuses and records any
    # connection to a host other than loopback
    # (as in a user's shell: MLflow would silence its telemetry itself under pytest or CI)
    for k in ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        env.pop(k, None)
    env["DVC_NO_ANALYTICS"] = "1"   # the test's own `dvc init`; epiflow sets it for its stages
    env["PYTHONPATH"] = str(NETGUARD)
    env["EPIFLOW_TEST_NET_LOG"] = str(project / "network.log")
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "t"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "t@example.org"
    return env


def _run(cmd, project, check=True):
    r = subprocess.run(cmd, cwd=project, env=_env(project), capture_output=True, text=True)
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("proj")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("models", "pipelines"):
        shutil.copytree(REPO / d, project / d, ignore=ignore)
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / f, project / f)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["study"] = "tiny"
    params["simulate"].update(n_samples=200, n_genes=100)
    params["splits"].update(repeats=2, folds=3)
    params["train"].update(max_epochs=3)
    # three models keep the test fast; the full zoo's types are covered by test_zoo_pipeline.py
    params["models"] = {k: params["models"][k] for k in ("logreg", "biosparse", "sgd_l2")}
    params["learning_curve"].update(models=["logreg", "sgd_l2", "biosparse"], fractions=[0.5, 1.0], repeats=1)
    params["sweep"].update(sparsity=[0.5, 1.0], repeats=1)
    params["ngg"]["top_2d"] = 100
    params["ngg"]["heritability"].update(n_snps=5, n_pairs=5, random_draws=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("/mlruns/\n/work/\n/reports/\n")
    _run(["git", "init", "-q"], project)
    _run([str(BIN / "dvc"), "init", "-q"], project)
    _run([str(BIN / "dvc"), "config", "core.analytics", "false"], project)
    _run(["git", "add", "-A"], project)
    _run(["git", "commit", "-qm", "tiny"], project)
    return project


def test_tiny_pipeline_end_to_end(tiny_project):
    project = tiny_project
    t0 = time.perf_counter()
    r = _run([str(BIN / "epiflow"), "demo"], project)
    elapsed = time.perf_counter() - t0
    assert (project / "data.dvc").is_file()
    # the comparison table is printed: model, AUC mean +- sd, params
    for model in ("logreg", "biosparse", "sgd_l2"):
        assert model in r.stdout
    assert "+-" in r.stdout
    report = json.loads((project / "metrics" / "report.json").read_text())
    assert report["n_models"] == 3
    for model in ("logreg", "biosparse", "sgd_l2"):
        m = json.loads((project / "metrics" / "train" / f"{model}.json").read_text())
        assert m["n_folds"] == 6 and 0.0 <= m["auc_mean"] <= 1.0 and m["n_parameters"] > 0
        roc = json.loads((project / "plots" / "roc" / f"{model}.json").read_text())
        assert roc[0] == {"fpr": 0.0, "tpr": 0.0} and roc[-1] == {"fpr": 1.0, "tpr": 1.0}
    for f in ("table.md", "table.tsv", "report.md", "roc.png", "fold_auc.png"):
        assert (project / "reports" / f).is_file(), f
    assert "p vs best additive" in r.stdout

    # MLflow: study experiment, a parent per model, a child per fold, tags with data versions
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("tiny")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`epiflow.stage` = 'train'")
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert sorted(parents["tags.epiflow.model"]) == ["biosparse", "logreg", "sgd_l2"]
    for pid in parents["run_id"]:
        kids = runs[runs["tags.mlflow.parentRunId"] == pid]
        assert len(kids) == 6 and kids["metrics.auc"].between(0, 1).all()
    assert parents["tags.epiflow.dvc.work/encoded"].str.endswith(".dir").all()
    assert parents["tags.epiflow.git_commit"].str.len().ge(40).all()
    print(f"tiny pipeline: {elapsed:.1f} s")
    # nothing left the machine: no process of the run tried to reach a non-loopback host
    net = project / "network.log"
    assert not net.exists(), net.read_text()

    # nothing to do the second time
    from pipelines.stages.demo import DEMO_TARGETS

    r = _run([str(BIN / "dvc"), "repro", *DEMO_TARGETS], project)
    assert "Running stage" not in r.stdout and "up to date" in r.stdout

    # one model's parameter changed: only that model and the report rerun
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["logreg"]["lr"] = 0.002
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = _run([str(BIN / "dvc"), "repro", *DEMO_TARGETS], project)
    ran = sorted(line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage"))
    # the learning curve and the sweep read the `models:` section too
    assert ran == ["learning_curve", "report", "sparsity_sweep", "train@logreg"]


def test_unknown_model_is_one_line_error(tiny_project):
    r = _run([str(BIN / "epiflow"), "train", "--model", "nosuchnet"], tiny_project, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuchnet" in lines[0] and "params.yaml" in lines[0]


def test_unknown_model_type_is_one_line_error(tiny_project, tmp_path):
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["models"] = {"weird": {"type": "transformer"}}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    r = _run([str(BIN / "epiflow"), "train", "--model", "weird", "--params", str(p)], tiny_project, check=False)
    assert r.returncode == 2
    assert "unknown model type 'transformer'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_every_subcommand_has_help():
    from pipelines.cli import COMMANDS

    for name in COMMANDS:
        r = subprocess.run([str(BIN / "epiflow"), name, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: epiflow" in r.stdout, name


def test_own_cohort_recipe_with_absolute_paths_outside_the_project(tiny_project, tmp_path_factory):
    """README's "To use your own cohort", verbatim, on a cohort in a folder outside the project
    named by absolute paths, after the demo (its metrics in metrics/train/): a subset of the
    models, then `epiflow report`, which leaves out the demo's stale rows with a warning. Runs
    after test_tiny_pipeline_end_to_end in this module (it needs the demo's outputs)."""
    project = tiny_project
    if not (project / "metrics" / "train" / "biosparse.json").is_file():
        pytest.skip("needs the demo's outputs (test_tiny_pipeline_end_to_end runs first)")
    outside = tmp_path_factory.mktemp("my_cohort")
    _run([str(BIN / "epiflow"), "simulate", "--out", str(outside), "--n-samples", "150", "--n-genes", "100",
          "--seed", "99", "--no-progress"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    vcf = next(p for p in outside.iterdir() if p.name.endswith(".vcf.gz"))
    params["encode"].update(vcf=str(vcf.resolve()), samples=str((outside / "samples.tsv").resolve()),
                            gmt=str(next(outside.glob("*.gmt")).resolve()))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    inputs = {p: p.read_bytes() for p in outside.iterdir()}
    recipe = (REPO / "README.md").read_text().split("To use your own cohort")[1].split("```bash\n")[1]
    recipe = recipe.split("```")[0]
    lines = [ln.split("#")[0].strip() for ln in recipe.splitlines()]
    assert lines[:3] == [". .venv/bin/activate", "dvc repro train@logreg train@biosparse", "epiflow report"]
    # `. .venv/bin/activate` is _env's PATH; the next two lines run as the README writes them
    r = _run(["bash", "-c", "set -e; " + "; ".join(lines[1:3])], project)
    assert "left out 1 model(s)" in r.stderr and "sgd_l2" in r.stderr, r.stderr
    table = (project / "reports" / "table.tsv").read_text()
    assert "logreg" in table and "biosparse" in table and "sgd_l2" not in table
    enc = json.loads((project / "metrics" / "encode.json").read_text())
    assert enc["n_samples"] == 150
    # nothing outside the project changed, and the runs are tagged with the outside inputs
    assert inputs == {p: p.read_bytes() for p in outside.iterdir()}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("tiny").experiment_id],
                              filter_string="tags.`epiflow.model` = 'biosparse'", order_by=["start_time DESC"])
    import hashlib

    gmt = next(outside.glob("*.gmt")).resolve()
    assert runs.iloc[0][f"tags.epiflow.dvc.{gmt}"] == hashlib.md5(gmt.read_bytes()).hexdigest()
