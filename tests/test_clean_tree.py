"""A rerun on identical inputs leaves every git-tracked file as it was: the metrics JSON that git
and DVC track (metrics/*.json, plots/roc/*.json) and the cached outputs hold results only; wall
times, throughputs and MLflow run ids go to MLflow and to the git-ignored metrics/timings/."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.atomic import VOLATILE_KEY, read_metrics, split_volatile, timings_path, write_metrics

ROOT = Path(__file__).resolve().parents[1]
VCF = Path(__file__).parent / "data" / "vcf"


@pytest.fixture
def project(tmp_path, monkeypatch):
    from test_workflows_cv import write_project

    write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _bytes(root: Path, rels) -> dict[str, bytes]:
    out = {}
    for rel in rels:
        p = root / rel
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            out[f.relative_to(root).as_posix()] = f.read_bytes()
    return out


def test_train_and_report_reruns_leave_tracked_files_byte_identical(project):
    train = ["train", "--model", "sgd_l2", "--jobs", "1", "--encoded", "encoded", "--splits", "splits.npz",
             "--quiet"]
    report = ["report", "--splits", "splits.npz"]
    tracked = ["metrics/train/sgd_l2.json", "plots/roc/sgd_l2.json", "work/train/sgd_l2",
               "metrics/report.json", "reports/table.md", "reports/table.tsv", "reports/report.md"]
    runs = []
    for _ in range(2):
        assert cli.main(train) == 0
        assert cli.main(report) == 0
        runs.append((_bytes(project, tracked), read_metrics("metrics/train/sgd_l2.json")))
    (first, m1), (second, m2) = runs
    assert first.keys() == second.keys() and "work/train/sgd_l2/folds.tsv" in first
    assert first == second, [k for k in first if first[k] != second[k]]
    # the tracked metrics hold the results, not the run: no time, no run id
    tracked_m = json.loads((project / "metrics/train/sgd_l2.json").read_text())
    assert {"auc_mean", "auc_sd", "n_folds", "n_parameters", "splits"} <= set(tracked_m)
    assert not [k for k in tracked_m if VOLATILE_KEY.search(k)]
    # ... which are in the git-ignored timings file, one MLflow run per train
    side = project / "metrics/timings/train/sgd_l2.json"
    assert side == project / timings_path("metrics/train/sgd_l2.json") and side.is_file()
    assert m1["train_time_s"] > 0 and m1["fold_time_mean_s"] > 0
    assert len(m1["mlflow_run_id"]) == 32 and m1["mlflow_run_id"] != m2["mlflow_run_id"]
    assert m1["auc_mean"] == m2["auc_mean"]


def test_encode_and_splits_metrics_reproducible(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    (tmp_path / "params.yaml").write_text("splits: {repeats: 2, folds: 3, seed: 1}\n")
    encode = ["encode", "--vcf", str(VCF / "small_csq.vcf"), "--samples", str(VCF / "small_samples.tsv"),
              "--out", "work/encoded", "--metrics", "metrics/encode.json", "--quiet"]
    got = []
    for _ in range(2):
        assert cli.main(encode) == 0
        assert cli.main(["splits"]) == 0
        got.append(_bytes(tmp_path, ["metrics/encode.json", "metrics/splits.json", "work/splits.npz"]))
    assert got[0] == got[1]
    assert "seconds" not in json.loads(got[0]["metrics/encode.json"])
    assert read_metrics(tmp_path / "metrics/encode.json")["seconds"] > 0


def test_split_volatile_keys_of_every_stage():
    """The key names the stages write: timings, throughputs and run ids move, results stay."""
    m = {"auc_mean": 0.7, "n_folds": 30, "train_time_s": 3.2, "fold_time_mean_s": 0.1,
         "mlflow_run_id": "ab", "wall_time_s": 9.0, "fit_time_s.logreg": 1.0, "pairs_per_second": 1e6,
         "seconds": {"load": 1.0, "total": 2.0}, "host": "x",
         "filters": {"min_call_rate": 0.0, "min_maf": 0.05},
         "exact": {"top_snp": "rs1", "recall_snps": {"top10": 1.0}, "seconds_scan": 0.3},
         "n_tests": 99, "time_limit": None}
    stable, volatile = split_volatile(m)
    assert stable == {"auc_mean": 0.7, "n_folds": 30, "filters": {"min_call_rate": 0.0, "min_maf": 0.05},
                      "exact": {"top_snp": "rs1", "recall_snps": {"top10": 1.0}}, "n_tests": 99,
                      "time_limit": None}
    assert volatile == {"train_time_s": 3.2, "fold_time_mean_s": 0.1, "mlflow_run_id": "ab", "wall_time_s": 9.0,
                        "fit_time_s.logreg": 1.0, "pairs_per_second": 1e6, "seconds": {"load": 1.0, "total": 2.0},
                        "host": "x", "exact": {"seconds_scan": 0.3}}
    assert timings_path("metrics/ngg_2d.json") == Path("metrics/timings/ngg_2d.json")
    assert timings_path("/p/metrics/interpret/logreg.json") == Path("/p/metrics/timings/interpret/logreg.json")
    assert timings_path("out/summary.json") == Path("out/summary.timings.json")


def test_write_metrics_round_trip_and_stale_timings_removed(tmp_path):
    path = tmp_path / "metrics" / "x.json"
    write_metrics(path, {"auc": 0.5, "seconds": 3.0})
    assert json.loads(path.read_text()) == {"auc": 0.5}
    assert read_metrics(path) == {"auc": 0.5, "seconds": 3.0}
    write_metrics(path, {"auc": 0.5})            # nothing volatile any more: no stale timings
    assert not timings_path(path).exists() and read_metrics(path) == {"auc": 0.5}


def test_every_metrics_writer_goes_through_write_metrics():
    """No stage or workflow writes a metrics JSON with plain write_json (which would put the
    timings and run ids back into a tracked file)."""
    offenders = []
    for f in [*sorted((ROOT / "pipelines" / "stages").glob("*.py")), ROOT / "pipelines" / "cv_record.py",
              *sorted((ROOT / "pipelines").glob("tune*.py"))]:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"write_json\([^,]*metric", line, re.I):
                offenders.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_timings_are_ignored_by_git():
    r = subprocess.run(["git", "check-ignore", "-q", "metrics/timings/train/logreg.json"], cwd=ROOT)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.returncode == 0, "metrics/timings/ must be in .gitignore"


@pytest.mark.slow
def test_demo_rerun_leaves_git_status_clean(tmp_path):
    """The acceptance check on a tiny copy of this checkout: `make demo`, commit everything, then
    `epiflow demo --force` (every stage reruns): nothing git tracks changes (no timings, run ids or
    hosts in tracked files; dvc.lock's hashes stay), so runs are not tagged `<commit>-dirty`."""
    from test_readme_commands import _clean_env, _copy_checkout

    project = tmp_path / "main"
    project.mkdir()
    _copy_checkout(project)
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home, project)

    def sh(cmd, check=True):
        r = subprocess.run(["bash", "--noprofile", "--norc", "-c", cmd], cwd=project, env=env, capture_output=True,
                           text=True, timeout=3600)
        if check:
            assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        return r

    sh("git init -q && git add -A && git commit -qm copy")
    sh("make demo")
    sh("git add -A && git commit -qm 'demo outputs'")
    assert sh("git status --porcelain --untracked-files=no").stdout == ""
    sh(".venv/bin/epiflow demo --force --study-trials 0")
    changed = sh("git status --porcelain --untracked-files=no").stdout
    assert changed == "", f"a rerun with identical results changed tracked files:\n{changed}\n" + \
        sh("git diff --stat; git diff -- metrics dvc.lock | head -80").stdout
