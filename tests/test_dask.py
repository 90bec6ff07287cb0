"""``--executor dask``: the exact 2D scan's blocks and the CV protocol's (model, fold) pairs as tasks
of a real dask.distributed cluster (two worker processes on loopback) give byte-identical outputs
to the single-process path; a SIGKILLed worker costs only its tasks; a checkpoint written before a
driver crash resumes on either path."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from pipelines import executor  # noqa: E402
from pipelines.cli import main  # noqa: E402
from pipelines.errors import EpiflowError  # noqa: E402
from plink_files import write_bed  # noqa: E402

pytestmark = pytest.mark.dask

N, P = 240, 300


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (with nannies, which restart a killed worker)."""
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None,
                                  silence_logs=logging.ERROR) as c:
        yield c


@pytest.fixture(scope="module")
def cohort2d(tmp_path_factory):
    """Genotypes on three chromosomes with a planted interaction: complete (int8 kernel), with
    missing calls (moment kernel), and a case/control phenotype."""
    d = tmp_path_factory.mktemp("dask2d")
    rng = np.random.default_rng(11)
    X = rng.binomial(2, rng.uniform(0.1, 0.5, P), size=(N, P)).astype(np.int8)
    chrom = np.repeat(["1", "2", "X"], [120, 110, 70])
    bp = np.concatenate([np.arange(120), np.arange(110), np.arange(70)]) * 1000 + 5
    y = 1.5 * (X[:, 7] - X[:, 7].mean()) * (X[:, 200] - X[:, 200].mean()) + rng.normal(size=N)
    write_bed(d / "full", X, chrom, bp)
    Xm = X.copy()
    Xm[rng.random(Xm.shape) < 0.03] = -1
    write_bed(d / "miss", Xm, chrom, bp)
    ids = [f"S{i:02d}" for i in range(N)]
    (d / "qt.txt").write_text("".join(f"{i} {i} {v:.6f}\n" for i, v in zip(ids, y)))
    cov = rng.normal(size=(N, 2))
    (d / "cov.txt").write_text("".join(f"{i} {i} {a:.6f} {b:.6f}\n" for i, (a, b) in zip(ids, cov)))
    case = (y > np.median(y)).astype(int) + 1
    (d / "cc.txt").write_text("".join(f"{i} {i} {v}\n" for i, v in zip(ids, case)))
    return d


SCAN_ARGS = ["--mode", "2d", "--top", "50", "--tile", "64", "--block-pairs", "8192", "--no-plots",
             "--checkpoint-every", "0", "--pyramid-side", "64", "--pyramid-tile", "16", "--threads", "2"]


def _scan(d: Path, geno: str, pheno: str, out: Path, *extra) -> Path:
    assert main(["scan", "--bfile", str(d / geno), "--pheno", str(d / pheno), "--out", str(out),
                 *SCAN_ARGS, *extra]) == 0
    return out


def _same_outputs(a: Path, b: Path) -> None:
    for name in ("top_pairs.tsv", "chrom_pairs.tsv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    files_a = sorted(p.relative_to(a) for p in (a / "pyramid").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in (b / "pyramid").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 3
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    pd.testing.assert_frame_equal(pd.read_parquet(a / "snp_best.parquet"), pd.read_parquet(b / "snp_best.parquet"))


@pytest.mark.parametrize("geno,pheno,covar", [("full", "qt.txt", False), ("full", "qt.txt", True),
                                              pytest.param("miss", "qt.txt", False, marks=pytest.mark.slow),
                                              pytest.param("full", "cc.txt", False, marks=pytest.mark.slow)])
def test_scan2d_dask_is_byte_identical(cohort2d, cluster, tmp_path, geno, pheno, covar):
    extra = ["--covar", str(cohort2d / "cov.txt")] if covar else []
    local = _scan(cohort2d, geno, pheno, tmp_path / "local", *extra)
    dask = _scan(cohort2d, geno, pheno, tmp_path / "dask", "--executor", "dask",
                 "--scheduler", cluster.scheduler_address, *extra)
    _same_outputs(local, dask)
    top = pd.read_csv(local / "top_pairs.tsv", sep="\t")
    if pheno == "qt.txt":  # the planted pair is found (and the comparison is not of empty tables)
        assert {top.snp1[0], top.snp2[0]} == {"rs7", "rs200"}
    import json

    numbers = json.loads((dask / "summary.json").read_text())["executor"]
    assert numbers["tasks"] >= 8  # 8 blocks of 2 tile pairs (15 tile pairs of 64 SNPs)


@pytest.mark.gpu
def test_scan2d_dask_gpu_is_byte_identical(cohort2d, cluster, tmp_path):
    """The GPU kernel's accumulators travel as the entries each task wrote and are merged on the
    driver's device: the outputs equal the plain GPU scan's."""
    local = _scan(cohort2d, "full", "qt.txt", tmp_path / "local", "--device", "cuda")
    dask = _scan(cohort2d, "full", "qt.txt", tmp_path / "dask", "--device", "cuda", "--executor", "dask",
                 "--scheduler", cluster.scheduler_address)
    _same_outputs(local, dask)


def test_gpu_engine_partials_merge_like_one_engine():
    """The merge rule of the GPU engine's partials (run here on NumPy arrays standing in for the
    device ones): maxima of packed (value, partner) words and pyramid bits, sums of counts, the
    exact top-k, taken over disjoint halves of a stream of updates, equal one engine fed them all."""
    from types import SimpleNamespace

    from models.scans.partial import _sparse_state, merge_engine_partial
    from models.scans.topk import TopK

    rng = np.random.default_rng(0)
    shapes = {"pyr": (16, 16), "rowbest": (40, 3), "colbest": (40,), "cp_invalid": (3, 3), "cp_sig": (3, 3)}

    def engine():
        e = SimpleNamespace(cp=np, k=5, thr=np.full(1, -1.0), top_i=np.zeros(0, np.int64),
                            top_j=np.zeros(0, np.int64), top_stat=np.zeros(0), top_beta=np.zeros(0))
        for name, shp in shapes.items():
            setattr(e, name, np.zeros(shp, dtype=np.uint64 if name != "pyr" else np.uint32))
        return e

    def feed(e, updates):
        for name, flat_idx, val in updates:
            flat = getattr(e, name).reshape(-1)
            flat[flat_idx] = max(flat[flat_idx], val) if name in ("pyr", "rowbest", "colbest") else flat[flat_idx] + val
        return e

    updates = [(name, int(rng.integers(np.prod(shp))), int(rng.integers(1, 2**31)))
               for _ in range(400) for name, shp in [list(shapes.items())[rng.integers(5)]]]
    stats = rng.normal(size=60) ** 2
    stats[10] = stats[11]  # a tie
    one = feed(engine(), updates)
    t = TopK(5)
    t.offer(np.arange(60), np.arange(60) + 100, stats, -stats)
    one.top_i, one.top_j, one.top_stat, one.top_beta = t.i, t.j, t.stat, t.effect
    driver = engine()
    for half in (slice(0, 200), slice(200, 400)):
        part_engine = feed(engine(), updates[half])
        q = slice(0, 30) if half.start == 0 else slice(30, 60)
        tk = TopK(5)
        tk.offer(np.arange(60)[q], np.arange(60)[q] + 100, stats[q], -stats[q])
        part_engine.top_i, part_engine.top_j, part_engine.top_stat, part_engine.top_beta = tk.i, tk.j, tk.stat, tk.effect
        merge_engine_partial(driver, _sparse_state(part_engine))
    for name in shapes:
        np.testing.assert_array_equal(getattr(driver, name), getattr(one, name))
    kinds = {name: _sparse_state(feed(engine(), updates[:200]))[name][0] is None for name in shapes}
    assert set(kinds.values()) == {True, False}  # both encodings (entries, whole array) were merged
    np.testing.assert_array_equal(driver.top_i, one.top_i)
    np.testing.assert_array_equal(driver.top_stat, one.top_stat)
    assert driver.thr[0] == one.top_stat[-1]


def _scan_workflow(d: Path, sched: str | None, on_block=None, out: Path | None = None):
    from pipelines.workflows.scan import ScanSpec, load_scan_inputs, run_scan, write_scan

    inp = load_scan_inputs(d / "full", pheno=str(d / "qt.txt"), min_snps=2, log=lambda m: None)
    spec = ScanSpec(mode="2d", top=50, tile=64, block_pairs=8192, pyramid_side=64, checkpoint_every=0.0)
    ex = executor.ExecutorSpec(kind="dask", scheduler=sched) if sched else executor.ExecutorSpec()
    with executor.open_executor(ex, log=lambda m: None):
        res = run_scan(inp.genotypes, inp.phenotype, spec, checkpoint_dir=out, on_block=on_block, log=lambda m: None)
    if out is not None:
        write_scan(res, out, plots=False, pyramid_tile=16)
    return res


def test_killed_worker_costs_only_its_tasks(cohort2d, cluster, tmp_path):
    """SIGKILL to one worker process after the first block: its tasks rerun elsewhere (or on the
    worker its nanny restarts) and the outputs are those of the local scan."""
    ref = _scan_workflow(cohort2d, None, out=tmp_path / "ref")
    client = distributed.Client(cluster.scheduler_address)
    try:
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = []

        def kill_once(scan):
            if not killed and scan.next_block == 1:
                os.kill(victim, signal.SIGKILL)
                killed.append(scan.next_block)

        _scan_workflow(cohort2d, cluster.scheduler_address, on_block=kill_once, out=tmp_path / "dask")
        assert killed == [1]
        deadline = time.time() + 30
        while time.time() < deadline:  # the nanny restarts a worker in a new process
            now = client.run(os.getpid)
            if len(now) == 2 and victim not in now.values():
                break
            time.sleep(0.2)
        assert victim not in client.run(os.getpid).values()
    finally:
        client.close()
    _same_outputs(tmp_path / "ref", tmp_path / "dask")
    assert ref.numbers["n_tested"] > 0


@pytest.mark.slow
def test_checkpoint_of_a_crashed_driver_resumes_on_either_path(cohort2d, cluster, tmp_path):
    """A driver stopped after block 3 leaves the local path's checkpoint; a Dask run resumes it
    (and a Dask driver's checkpoint resumes locally): outputs identical to an uninterrupted run."""
    from pipelines.workflows.scan import CKPT_NAME

    _scan_workflow(cohort2d, None, out=tmp_path / "ref")

    class Crash(Exception):
        pass

    def crash_at(k):
        def hook(scan):
            if scan.next_block == k:
                raise Crash

        return hook

    for first, second, name in ((None, cluster.scheduler_address, "l2d"), (cluster.scheduler_address, None, "d2l")):
        out = tmp_path / name
        out.mkdir()
        with pytest.raises(Crash):
            _scan_workflow(cohort2d, first, on_block=crash_at(3), out=out)
        assert (out / CKPT_NAME).is_file()
        res = _scan_workflow(cohort2d, second, out=out)
        assert res.numbers["resumed_from_block"] == 3
        assert not (out / CKPT_NAME).exists()
        _same_outputs(tmp_path / "ref", out)


# ------------------------------------------------------------------------------------------ NGG


@pytest.mark.slow  # cheap once the workers have imported the NGG engine (1.4 s), 9 s cold
@pytest.mark.parametrize("pieces", ["random", "rect"])
def test_ngg_repetitions_as_tasks_identical(cohort2d, cluster, tmp_path, pieces):
    """The tiled 2D NGG with its (block, repetition) units as tasks: the same top pairs, scores and
    effects, to the bit, as the single-process fit."""
    from pipelines.workflows.scan import NGGSettings, ScanSpec, load_scan_inputs, run_scan

    inp = load_scan_inputs(cohort2d / "full", pheno=str(cohort2d / "qt.txt"), min_snps=2, log=lambda m: None)
    spec = ScanSpec(mode="2d", method="ngg", top=30, ngg=NGGSettings(B=16, d=8, R=3, iters=30, lam_scale=1.0, engine="tiled",
                                                                     pieces=pieces))
    local = run_scan(inp.genotypes, inp.phenotype, spec, log=lambda m: None)
    with executor.open_executor(executor.ExecutorSpec(kind="dask", scheduler=cluster.scheduler_address),
                                log=lambda m: None):
        dask = run_scan(inp.genotypes, inp.phenotype, spec, log=lambda m: None)
    assert len(local.top) == 30
    pd.testing.assert_frame_equal(local.top, dask.top, check_exact=True)
    # the map of every pair's score (pyramid_effect/) is accumulated here either way: the same bits
    np.testing.assert_array_equal(local.pyramid["effect_level0"], dask.pyramid["effect_level0"])
    assert np.isfinite(local.pyramid["effect_level0"]).any()


# ------------------------------------------------------------------------------------------- CV


def test_cv_folds_as_tasks_identical_aucs(cluster, tmp_path):
    """cross_validate with the (model, fold) pairs as tasks: the same fold AUCs and the same bytes
    of out-of-fold probabilities as the local loop (a scikit-learn model here: the workers' first
    import of the torch nets costs seconds; the slow test below runs a torch net)."""
    from test_workflows_cv import write_project

    from pipelines.params import load_params
    from pipelines.workflows.cohort import Cohort, load_splits
    from pipelines.workflows.cv import ModelSpec, cross_validate

    proj = write_project(tmp_path / "p")
    params = load_params(proj / "params.yaml")
    cohort = Cohort.load(proj / "encoded")
    folds = list(load_splits(proj / "splits.npz", cohort).iter_folds(1))
    spec = ModelSpec("sgd_l2", "sgd_l2", {"alpha": 0.01, "max_iter": 20})
    local = cross_validate(spec, cohort, folds, train_cfg=params["train"], jobs=1)
    seen = []
    with executor.open_executor(executor.ExecutorSpec(kind="dask", scheduler=cluster.scheduler_address),
                                log=lambda m: None):
        dask = cross_validate(spec, cohort, folds, train_cfg=params["train"], on_fold=seen.append)
    assert [(f.repeat, f.fold) for f in seen] == [(0, 0), (0, 1), (0, 2)]  # in fold order, as local
    assert local.aucs.tolist() == dask.aucs.tolist() and 0.5 < local.aucs.mean() < 1
    for a, b in zip(local.folds, dask.folds):
        assert a.proba.tobytes() == b.proba.tobytes() and a.seed == b.seed


@pytest.mark.slow
def test_train_stage_dask_identical_child_runs(cluster, tmp_path, monkeypatch):
    """``epiflow train --executor dask``: fold AUCs, out-of-fold probabilities and the MLflow child
    runs (names, params, metrics but the fit time) equal to the local run, for a torch net and two
    scikit-learn models; one repeat of 3 folds each."""
    MODELS = ("logreg", "sgd_l2", "rf_genes")
    import mlflow
    import yaml

    from test_workflows_cv import write_project

    proj = write_project(tmp_path / "p")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {}
    for how in ("local", "dask"):
        params = yaml.safe_load((proj / "params.yaml").read_text())
        params["study"] = f"study-{how}"
        (proj / f"{how}.yaml").write_text(yaml.safe_dump(params))
        for model in MODELS:
            out = tmp_path / how / model
            extra = ["--executor", "dask", "--scheduler", cluster.scheduler_address] if how == "dask" else ["--jobs", "1"]
            assert main(["train", "--model", model, "--params", str(proj / f"{how}.yaml"), "--encoded",
                         str(proj / "encoded"), "--splits", str(proj / "splits.npz"), "--out", str(out),
                         "--metrics", str(out / "m.json"), "--plots", str(out / "r.json"), "--quiet",
                         "--repeats", "1", *extra]) == 0
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
        df = mlflow.search_runs(experiment_names=[f"study-{how}"])
        kids = df[df["tags.mlflow.parentRunId"].notna()].sort_values("tags.mlflow.runName")
        cols = ["tags.mlflow.runName", "params.repeat", "params.fold", "params.seed", "metrics.auc",
                "metrics.n_train", "metrics.n_test"]
        runs[how] = kids[cols].reset_index(drop=True)
    for model in MODELS:
        a = pd.read_csv(tmp_path / "local" / model / "folds.tsv", sep="\t")
        b = pd.read_csv(tmp_path / "dask" / model / "folds.tsv", sep="\t")
        assert a.auc.tolist() == b.auc.tolist() and len(a) == 3
        pa = pd.read_parquet(tmp_path / "local" / model / "oof.parquet")
        pb = pd.read_parquet(tmp_path / "dask" / model / "oof.parquet")
        assert pa.proba.to_numpy().tobytes() == pb.proba.to_numpy().tobytes()
    assert len(runs["local"]) == 3 * len(MODELS)
    pd.testing.assert_frame_equal(runs["local"], runs["dask"])


# ----------------------------------------------------------------------------------- settings


def test_executor_settings_and_errors(tmp_path):
    from types import SimpleNamespace

    from pipelines.config import validate_params

    args = SimpleNamespace(executor=None, scheduler=None)
    assert executor.spec_from(args, {}).kind == "local"
    params = {"executor": {"kind": "dask", "n_workers": 3}}
    validate_params(params)
    s = executor.spec_from(args, params)
    assert (s.kind, s.n_workers, s.scheduler) == ("dask", 3, None)
    assert executor.spec_from(SimpleNamespace(executor="local", scheduler=None), params).kind == "local"
    assert executor.spec_from(SimpleNamespace(executor=None, scheduler="tcp://h:1"), {}).kind == "dask"
    with pytest.raises(EpiflowError, match="executor.kind: must be one of local, dask"):
        validate_params({"executor": {"kind": "spark"}}, "params.yaml")
    with pytest.raises(EpiflowError, match="--scheduler needs --executor dask"):
        executor.spec_from(SimpleNamespace(executor="local", scheduler="tcp://h:1"), {})
    assert executor.spec_from(SimpleNamespace(executor="local", scheduler=None),
                              {"executor": {"kind": "dask", "scheduler": "tcp://h:1"}}).scheduler is None
    with pytest.raises(EpiflowError, match="cannot reach the Dask scheduler") as e:
        with executor.open_executor(executor.ExecutorSpec(kind="dask", scheduler="tcp://127.0.0.1:9", timeout=1.0)):
            pass
    assert "\n" not in str(e.value)
    assert executor.current() is None


def test_slurm_job_script_renders_from_the_docs_config(repo_root, tmp_path):
    """docs/dask-jobqueue.yaml gives a SLURM job script (nothing submitted: no SLURM here)."""
    import subprocess
    import sys

    pytest.importorskip("dask_jobqueue")
    env = {**os.environ, "DASK_CONFIG": str(repo_root / "docs" / "dask-jobqueue.yaml")}
    out = subprocess.run([sys.executable, "-m", "pipelines.executor", "slurm", "--print-job-script"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    script = out.stdout
    for line in ("#SBATCH -p gpu", "#SBATCH --cpus-per-task=8", "#SBATCH --gres=gpu:1", "#SBATCH -t 04:00:00"):
        assert line in script
    assert ".venv/bin/python -m distributed.cli.dask_worker tcp://" in script and "--nthreads 1" in script
