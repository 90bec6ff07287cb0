"""epiflow tune: concurrent workers on SQLite / journal / PostgreSQL storage, pruning, the MLflow
study > trial > fold hierarchy, no leakage of outer-test samples, rerun-best + model registry."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from pipelines.splits import make_splits, save_splits

CLASSES = ["UTR3", "nonsynonymous_SNV"]


def write_cohort(root: Path, *, n: int = 120, n_genes: int = 12, n_variants: int = 60, seed: int = 0,
                 plant_outer_test: bool = False, signal: float = 0.0) -> dict:
    """A tiny encoded cohort + splits + params.yaml under ``root`` (a project folder).

    ``signal``: strength of a real additive effect of variants 0-4 in every sample.
    ``plant_outer_test``: variants 50-59 equal the label in the test samples of outer fold
    (repeat 0, fold 0) only; in every other sample they are coin flips (pure noise).
    """
    rng = np.random.default_rng(seed)
    V = (rng.random((n, n_variants)) < 0.3).astype(np.float32)
    liab = signal * V[:, :5].sum(1) + rng.normal(size=n)
    y = (liab > np.quantile(liab, 0.4)).astype(int)
    ids = [f"s{i:03d}" for i in range(n)]
    splits = make_splits(y, ids, repeats=2, folds=3, seed=7)
    outer_test = splits.fold[0] == 0
    V[:, 50:60] = (rng.random((n, 10)) < 0.5)
    if plant_outer_test:
        V[outer_test, 50:60] = y[outer_test, None]
    genes = [f"G{g}" for g in range(n_genes)]
    gene_of = np.arange(n_variants) % n_genes
    class_of = np.arange(n_variants) % len(CLASSES)
    C = np.zeros((n, len(CLASSES) * n_genes), np.float32)
    for j in range(n_variants):
        C[:, class_of[j] * n_genes + gene_of[j]] += V[:, j]
    enc = root / "work" / "encoded"
    enc.mkdir(parents=True, exist_ok=True)
    sp.save_npz(enc / "gene_counts.npz", sp.csr_matrix(C))
    sp.save_npz(enc / "variants.npz", sp.csr_matrix(V))
    pd.DataFrame({"sample_id": ids, "y": y, "sex": "NA"}).to_csv(enc / "samples.tsv", sep="\t", index=False)
    (enc / "genes.txt").write_text("".join(g + "\n" for g in genes))
    (enc / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    pd.DataFrame({"chrom": "1", "pos": np.arange(n_variants) + 100, "id": [f"v{j}" for j in range(n_variants)],
                  "ref": "A", "alt": "G", "gene": [genes[g] for g in gene_of],
                  "class": [CLASSES[c] for c in class_of]}).to_csv(enc / "variants.tsv", sep="\t", index=False)
    save_splits(splits, root / "work" / "splits.npz")
    params = {
        "study": "tiny",
        "encode": {"gmt": None},
        "train": {"max_epochs": 2, "batch_size": 64, "seed": 0, "device": "cpu"},
        "models": {"sgd_l2": {"type": "sgd_l2", "alpha": 0.01, "max_iter": 20},
                   "logreg": {"type": "logreg", "lr": 0.01, "hidden": 4}},
        "tune": {"model": "sgd_l2", "n_trials": 4, "seed": 0, "outer_repeat": 0, "outer_fold": 0,
                 "inner_folds": 3,
                 "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
                 "space": {"alpha": [1e-5, 1.0, "log"], "lr": [1e-3, 0.1, "log"], "epochs": [1, 3]}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return {"y": y, "outer_test": outer_test, "V": V}


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env["EPIFLOW_ROOT"] = str(root)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _epiflow(root: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "tune", "--quiet", *args],
                            cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _two_workers(root: Path, storage_args: list[str], n_each: int = 4, study="conc"):
    procs = [_epiflow(root, "--model", "sgd_l2", "--n-trials", str(n_each), "--study-name", study,
                      "--metrics", f"metrics/w{i}.json", *storage_args) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


def _check_study(storage, study_name: str, total: int, root: Path):
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == total
    assert sorted(t.number for t in trials) == list(range(total))
    states = {t.state for t in trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}, states
    assert sorted({t.user_attrs["worker"] for t in trials}) == [0, 1]
    assert sum(bool(t.user_attrs.get("default")) for t in trials) == 1   # defaults enqueued once
    # the two workers drew different configurations (per-worker sampler seeds)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == total

    from mlflow import MlflowClient

    # explicit URI: an earlier test of the session may have set MLflow's process-wide tracking URI,
    # which takes precedence over the environment variable
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        c = MlflowClient(tracking_uri=uri)
        exp = c.get_experiment_by_name("tiny-tune")
        runs = c.search_runs([exp.experiment_id], max_results=1000)
        kinds = {}
        for r in runs:
            kinds.setdefault(r.data.tags.get("epiflow.optuna.run"), []).append(r)
        assert len(kinds["study"]) == 1                      # one study run shared by both
        sid = kinds["study"][0].info.run_id
        assert len(kinds["trial"]) == total
        assert {r.data.tags["mlflow.parentRunId"] for r in kinds["trial"]} == {sid}
        assert sorted(int(r.data.params["trial"]) for r in kinds["trial"]) == list(range(total))
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_two_processes_sqlite(tmp_path):
    write_cohort(tmp_path)
    _two_workers(tmp_path, [])
    import optuna

    url = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    _check_study(optuna.storages.RDBStorage(url), "conc", 8, tmp_path)


def test_two_processes_journal(tmp_path):
    write_cohort(tmp_path)
    log = tmp_path / "studies" / "conc.log"
    _two_workers(tmp_path, ["--storage", f"journal:{log}"])
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    _check_study(JournalStorage(JournalFileBackend(str(log))), "conc", 8, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth), removed afterwards."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    bindir = Path(shutil.which("initdb")).parent if shutil.which("initdb") else (bins[-1] if bins else None)
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("no PostgreSQL server binary")
    prefix: list[str] = []
    d = Path(tempfile.mkdtemp(prefix="epiflow-pg-"))
    if os.geteuid() == 0:  # initdb/postgres refuse to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run the server")
        runuser = shutil.which("runuser") or shutil.which("su")
        if runuser is None:
            pytest.skip("running as root without runuser")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    port = _free_port()
    data = d / "data"
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                             "-E", "UTF8"], check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={d}"
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(d / "log"),
                             "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        import psycopg2

        for _ in range(50):
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE optuna")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.postgres
def test_two_processes_postgres(tmp_path, postgres_url):
    write_cohort(tmp_path)
    _two_workers(tmp_path, ["--storage", postgres_url])
    import optuna

    from pipelines.tune import _postgres_driver

    _check_study(optuna.storages.RDBStorage(_postgres_driver(postgres_url)), "conc", 8, tmp_path)


def _planted_spec(n_steps=3):
    """Objective x, reported unchanged at every step: the median pruner's decisions are known."""
    from pipelines.tune_api import StudySpec

    def objective(trial, report):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("noise", 0.0, 1.0)
        for step in range(n_steps):
            report(step, x, {"auc": x})
        return x

    return StudySpec(name="planted", directions=["maximize"], metric_names=["score"],
                     objective=objective, defaults={"x": 0.5, "noise": 0.5}, step_name="fold")


def test_pruning_and_mlflow_hierarchy(tmp_path, monkeypatch):
    import optuna
    from mlflow import MlflowClient

    from pipelines import tune

    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    summary = tune.run_study(_planted_spec(), storage_url=None, study_name="planted", n_trials=16,
                             timeout=None, n_jobs=1, seed=3,
                             pruner_cfg={"type": "median", "n_startup_trials": 3, "n_warmup_steps": 0},
                             experiment="tiny-tune", progress=False)
    study = optuna.load_study(study_name="planted", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    # replay the median rule: prune at step 0 iff >= 3 complete trials and x below their median
    done, expected = [], []
    for t in trials:
        x = t.params["x"]
        pruned = len(done) >= 3 and x < np.median(done)
        expected.append(pruned)
        if not pruned:
            done.append(x)
    got = [t.state == optuna.trial.TrialState.PRUNED for t in trials]
    assert got == expected
    assert 3 <= sum(got) < len(got)
    assert all(max(t.intermediate_values) == 0 for t, p in zip(trials, got) if p)  # stopped at fold 0
    assert summary["metrics"]["n_pruned"] == sum(got)
    assert trials[0].params == {"x": 0.5, "noise": 0.5}                     # defaults first

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("tiny-tune")
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    study_run = [r for r in runs if r.data.tags.get("epiflow.optuna.run") == "study"]
    assert len(study_run) == 1
    sid = study_run[0].info.run_id
    trial_runs = [r for r in runs if r.data.tags.get("epiflow.optuna.run") == "trial"]
    fold_runs = [r for r in runs if r.data.tags.get("epiflow.optuna.run") == "step"]
    assert len(trial_runs) == 16 and all(r.data.tags["mlflow.parentRunId"] == sid for r in trial_runs)
    for r in fold_runs:
        assert by_id[r.data.tags["mlflow.parentRunId"]].data.tags["epiflow.optuna.run"] == "trial"
    n_folds = {r.info.run_id: 0 for r in trial_runs}
    for r in fold_runs:
        n_folds[r.data.tags["mlflow.parentRunId"]] += 1
    for r in trial_runs:
        number = int(r.data.params["trial"])
        assert r.data.tags["epiflow.optuna.state"] == ("pruned" if got[number] else "complete")
        assert n_folds[r.info.run_id] == (1 if got[number] else 3)
        assert r.info.status == ("KILLED" if got[number] else "FINISHED")
        if not got[number]:
            assert r.data.metrics["score"] == pytest.approx(trials[number].value)
    best = max(t.value for t in trials if t.value is not None)
    assert study_run[0].data.metrics["best_score"] == pytest.approx(best)
    assert study_run[0].data.params["default.x"] == "0.5"
    arts = {a.path for a in c.list_artifacts(sid)}
    assert {"best_params.json", "trials.tsv", "optimization_history.png",
            "param_importances.png"} <= arts


def _spec_args(root: Path):
    from pipelines.tune import ZooTuneInputs

    return ZooTuneInputs(params_path=str(root / "params.yaml"), encoded=str(root / "work" / "encoded"),
                         splits=str(root / "work" / "splits.npz"), gmt=None, seed=0)


def _trial_values(root: Path, n_trials=6):
    from pipelines import tune
    from pipelines.params import load_params

    params = load_params(root / "params.yaml")
    spec = tune.zoo_study_spec("sgd_l2", params, _spec_args(root))
    s = tune.run_study(spec, storage_url=f"sqlite:///{root}/optuna.db", study_name="leak",
                       n_trials=n_trials, timeout=None, n_jobs=1, seed=0,
                       pruner_cfg={"type": "none"}, experiment="x", mlflow_on=False, progress=False,
                       start=root)
    import optuna

    st = optuna.load_study(study_name="leak", storage=f"sqlite:///{root}/optuna.db")
    return [t.value for t in sorted(st.get_trials(), key=lambda t: t.number)], s


def test_no_leakage_of_outer_test_samples(tmp_path, monkeypatch):
    """Variants 50-59 equal the label in the outer-test samples only (noise elsewhere): a tuner that
    read those samples would see a strong signal; ours scores exactly as on unplanted data."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from models.baselines import fit_predict_sgd

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    clean, planted = tmp_path / "clean", tmp_path / "planted"
    a = write_cohort(clean, n=150)
    b = write_cohort(planted, n=150, plant_outer_test=True)
    assert np.array_equal(a["y"], b["y"])
    differs = np.flatnonzero((a["V"] != b["V"]).any(axis=1))
    assert len(differs) > 0 and b["outer_test"][differs].all()    # only outer-test rows changed

    # the plant is visible to any CV that includes the outer-test samples
    y, V = b["y"], sp.csr_matrix(b["V"])
    leaky = []
    for tr, te in StratifiedKFold(3, shuffle=True, random_state=0).split(V, y):
        p, _ = fit_predict_sgd(V[tr], y[tr], V[te], alpha=0.01, max_iter=20, seed=0)
        leaky.append(roc_auc_score(y[te], p))
    assert np.mean(leaky) > 0.7

    v_clean, _ = _trial_values(clean)
    v_planted, s = _trial_values(planted)
    assert v_planted == v_clean                  # bit-identical: outer-test rows never read
    assert abs(s["best"]["best_value"] - 0.5) < 0.15
    assert s["best"]["best_value"] < np.mean(leaky) - 0.1


def test_rerun_best_registers_model(tmp_path, monkeypatch):
    import mlflow

    from pipelines.cli import main

    write_cohort(tmp_path, signal=1.0)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--model", "sgd_l2", "--n-trials", "3", "--quiet"]) == 0
    assert main(["tune", "--model", "sgd_l2", "--rerun-best", "--repeats", "1", "--quiet"]) == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name = 'epiflow-sgd_l2-tuned'")
    assert [str(v.version) for v in versions] == ["1"]
    model = mlflow.pyfunc.load_model("models:/epiflow-sgd_l2-tuned/1")
    enc = tmp_path / "work" / "encoded"
    V = sp.load_npz(enc / "variants.npz").toarray()
    p = np.asarray(model.predict(pd.DataFrame(V)))
    assert p.shape == (V.shape[0],) and ((p >= 0) & (p <= 1)).all()
    y = pd.read_csv(enc / "samples.tsv", sep="\t")["y"].to_numpy()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, p) > 0.7            # fitted on every sample, planted additive signal
    import json

    outer = json.loads((tmp_path / "work" / "tune" / "sgd_l2" / "outer_cv_metrics.json").read_text())
    assert outer["n_folds"] == 3                 # one repeat of the 3-fold outer splits


def test_bad_storage_is_one_line_error(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    write_cohort(tmp_path)
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--model", "sgd_l2", "--n-trials", "1", "--storage", "nonsense", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--storage" in err[0]
    assert main(["tune", "--model", "nope", "--n-trials", "1", "--no-mlflow"]) == 2


def test_ngg_multi_objective_study_through_the_runner(tmp_path, monkeypatch):
    """The NGG StudySpec under the runner: two objectives, no pruning, Pareto artifacts, rerun."""
    import json

    from mlflow import MlflowClient

    from pipelines import tune
    from pipelines.tune_ngg import ngg_study_spec
    from test_tune_ngg import CHEAP, _dosage_dir, _section

    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    sec = _section({"genotypes": str(_dosage_dir(tmp_path / "d", p=60)), "max_snps": 60},
                   multi_objective=True, tune_seeds=[3], search={**CHEAP, "R": 2, "iters": 40})
    spec = ngg_study_spec({"tune_ngg": sec})
    s = tune.run_study(spec, storage_url=f"journal:{tmp_path / 'ngg.log'}", study_name="ngg", n_trials=3,
                       timeout=None, n_jobs=1, seed=0, pruner_cfg=None, experiment="tiny-tune",
                       progress=False)
    assert s["metrics"]["n_complete"] == 3 and s["metrics"]["n_pruned"] == 0
    assert s["metrics"]["n_pareto"] == len(s["best"]["pareto"]) >= 1
    study, _ = tune.load_study(f"journal:{tmp_path / 'ngg.log'}", "ngg")
    assert all(len(t.values) == 2 for t in study.trials)
    assert study.trials[0].user_attrs.get("default")
    result = tune.rerun_best(spec, study, "tiny-tune")
    assert result["best_trial"] in {p["trial"] for p in s["best"]["pareto"]}
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("tiny-tune")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    kinds = {}
    for r in runs:
        kinds.setdefault(r.data.tags.get("epiflow.optuna.run"), []).append(r)
    sid = kinds["study"][0].info.run_id
    assert len(kinds["trial"]) == 3 and len(kinds["rerun"]) == 1
    assert kinds["rerun"][0].data.tags["mlflow.parentRunId"] == sid
    arts = {a.path for a in c.list_artifacts(sid)}
    assert {"pareto_front.png", "best_params.json", "trials.tsv"} <= arts
    best = json.loads(open(c.download_artifacts(sid, "best_params.json", str(tmp_path))).read())
    assert best["metric_names"] == spec.metric_names


def test_n_jobs_threads_log_every_trial_once(tmp_path, monkeypatch):
    import optuna
    from mlflow import MlflowClient

    from pipelines import tune

    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    s = tune.run_study(_planted_spec(), storage_url=None, study_name="threads", n_trials=6, timeout=None,
                       n_jobs=3, seed=0, pruner_cfg={"type": "none"}, experiment="tiny-tune", progress=False)
    study = optuna.load_study(study_name="threads", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db")
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert s["n_trials_this_process"] == 6
    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("tiny-tune")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    trial_runs = [r for r in runs if r.data.tags.get("epiflow.optuna.run") == "trial"]
    assert sorted(int(r.data.params["trial"]) for r in trial_runs) == list(range(6))
    assert sum(r.data.tags.get("epiflow.optuna.run") == "step" for r in runs) == 18


def test_every_pruner_type_of_the_schema_builds():
    """tune.pruner.type hyperband took the median pruner's default keys and crashed."""
    import optuna

    from pipelines.tune import make_pruner

    assert isinstance(make_pruner({"type": "hyperband"}, False), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner({"type": "hyperband", "min_resource": 2, "reduction_factor": 3}, False),
                      optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner({"type": "median"}, False), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner({"type": "percentile", "percentile": 25.0}, False),
                      optuna.pruners.PercentilePruner)
    assert isinstance(make_pruner(None, True), optuna.pruners.NopPruner)


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from pipelines import tune
from pipelines.tune_api import StudySpec

def objective(trial, report):
    x = trial.suggest_float("x", 0.0, 1.0)
    if sys.argv[2] == "hang":
        time.sleep(300)
    report(0, x)
    return x

spec = StudySpec(name="kill", directions=["maximize"], metric_names=["v"], objective=objective,
                 defaults={"x": 0.25})
s = tune.run_study(spec, storage_url=sys.argv[1], study_name="kill", n_trials=int(sys.argv[3]),
                   timeout=None, n_jobs=1, seed=0, pruner_cfg={"type": "none"}, experiment="kill-tune",
                   progress=False, start=Path.cwd())
print("SUMMARY", s["metrics"]["n_complete"], s["metrics"]["n_fail"], s["n_recovered_at_start"])
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_killed_worker_trial_is_failed_and_retried(tmp_path, kind):
    """SIGKILL a worker in the middle of a trial: the next worker fails that trial (it stayed
    RUNNING forever before, and the summary said 0 failed), marks its MLflow run FAILED and runs
    its parameters once more."""
    import signal

    import optuna
    from mlflow import MlflowClient

    (tmp_path / "params.yaml").write_text("study: kill\n")
    (tmp_path / "k.py").write_text(KILL_SCRIPT)
    url = (f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}" if kind == "sqlite"
           else f"journal:{tmp_path / 'mlruns' / 'kill.log'}")
    storage = (lambda: optuna.storages.RDBStorage(url)) if kind == "sqlite" else (
        lambda: optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[8:])))
    env = _env(tmp_path)
    hung = subprocess.Popen([sys.executable, "k.py", url, "hang", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.3)
        try:
            running = optuna.load_study(study_name="kill", storage=storage()).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
        except Exception:
            running = []
        running = [t for t in running if "mlflow_run" in t.user_attrs]
    assert running, hung.communicate(timeout=10)[0] if hung.poll() is not None else "no running trial"
    hung.send_signal(signal.SIGKILL)
    hung.wait(timeout=30)
    dead = running[0]

    r = subprocess.run([sys.executable, "k.py", url, "ok", "2"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUMMARY 2 1 1" in r.stdout, r.stdout
    trials = optuna.load_study(study_name="kill", storage=storage()).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[dead.number].state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == dead.params and retry[0].user_attrs.get("default")
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert client.get_run(dead.user_attrs["mlflow_run"]).info.status == "FAILED"
