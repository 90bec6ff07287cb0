"""Fault injection: SIGKILL ``encode``, ``scan --mode 2d``, ``train`` and ``tune`` at seeded random
points, rerun them in the same place, and check that nothing was lost or left behind.

For every command a reference run goes undisturbed into a project folder of its own (its wall
time, from process start to exit, is measured). Each seed then starts the same command in a fresh
copy of the project, SIGKILLs its whole process group after ``random.Random(seed)`` draws a delay
between 5 % and 95 % of the reference wall time, and reruns it to completion. Then:

- the rerun exits 0;
- every file of the project is byte-identical to the reference's, except what by design holds
  timings, run ids or per-process counts (``VOLATILE``: the named JSON keys are dropped before the
  comparison; ``EXCLUDED``: whole files/folders left out);
- no temporary sibling of an atomic write (``.NAME.tmp.<pid>.*``, ``.NAME.old.<pid>.*``,
  ``.NAME.<pid>.*``), no SQLite hot journal and no scan checkpoint is left anywhere in the project
  or in the shared input folder;
- tune: the study holds exactly the trials asked for (the killed process's finished trials plus
  ``--n-trials`` of the rerun) plus at most one failed trial for the kill, retried once, nothing
  RUNNING or WAITING, the untuned defaults trial exactly once; the killed process's trials are
  the reference study's first trials (same parameters, states and values).

Kill points a random delay hits only by luck (a few SQL statements or one rename wide) are
reached deterministically: a runner SIGKILLs the process itself at the nth call of a function
(``KILL_AT``): tune while it labels or starts a trial, train at each ``os.replace`` of its
outputs, and a scan whose checkpoint write was killed is simulated by its temp file.

Default suite: 3 seeds per command without MLflow (and a few narrow kill points); ``slow``: more
seeds and kill points, and train/tune with the MLflow store on.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
VCF_HEADER = (TESTS / "data" / "vcf" / "small_csq.vcf").read_text().split("#CHROM")[0]

# temporary siblings of pipelines.atomic (``.NAME.tmp.<pid>.<8>``, ``.NAME.old.<pid>.<8>``,
# ``.NAME.<pid>.<8>[suffix]``), SQLite hot journals and a 2D/NGG scan checkpoint
STRAY = re.compile(r"^\..+\.(tmp\.|old\.)?\d+\.[a-z0-9_]{8}(\.[^/]*)?$|\.tmp\.|-journal$|-wal$|"
                   r"^\.scan2d\.ckpt\.npz$|^\.ngg\.ckpt\.npz$")

# random.Random(seed).uniform(0.05, 0.95): seeds 1, 5, 2 kill at 17 %, 61 % and 91 % of the
# reference wall time; the slow seeds at 15 %, 38 %, 66 %, 87 % and 92 %
DEFAULT_SEEDS = [1, 5, 2]
SLOW_SEEDS = [14, 16, 19, 20, 15]


# ------------------------------------------------------------------------------------ helpers
def _env(root: Path) -> dict:
    env = dict(os.environ)
    for k in ("MLFLOW_TRACKING_URI", "EPIFLOW_OWN_TRACKING_URI"):
        env.pop(k, None)
    env.update(EPIFLOW_ROOT=str(root), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _spawn(argv: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], cwd=cwd, env=_env(cwd),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        fh.close()


def _run(argv: list[str], cwd: Path, log: Path, timeout: float = 300) -> float:
    """Run to completion; returns the wall time (process start to exit)."""
    t0 = time.perf_counter()
    p = _spawn(argv, cwd, log)
    rc = p.wait(timeout=timeout)
    wall = time.perf_counter() - t0
    assert rc == 0, f"epiflow {' '.join(argv)} exited {rc}:\n{log.read_text()[-3000:]}"
    return wall


def _run_killed(argv: list[str], cwd: Path, log: Path, delay: float) -> bool:
    """Start the command and SIGKILL its process group after ``delay`` s; False if it ended first."""
    p = _spawn(argv, cwd, log)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        return True


def _kill_delay(seed: int, ref_wall: float) -> float:
    return random.Random(seed).uniform(0.05, 0.95) * ref_wall


def _tree(root: Path, excluded=(), volatile: dict | None = None) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root`` (hidden ones too), without
    ``excluded`` (paths or folder prefixes); JSON files of ``volatile`` lose the named keys."""
    volatile = volatile or {}
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in excluded):
            continue
        data = p.read_bytes()
        if rel in volatile:
            obj = json.loads(data)
            for k in volatile[rel]:
                obj.pop(k, None)
            data = json.dumps(obj, sort_keys=True).encode()
        out[rel] = data
    return out


def _strays(*roots: Path) -> list[str]:
    return sorted(str(p) for r in roots for p in r.rglob("*") if STRAY.search(p.name))


def _assert_same_tree(ref: Path, got: Path, excluded=(), volatile=None, what=""):
    a, b = _tree(ref, excluded, volatile), _tree(got, excluded, volatile)
    assert sorted(a) == sorted(b), f"{what}: files differ: only in reference {sorted(set(a) - set(b))}, " \
                                   f"only after kill+rerun {sorted(set(b) - set(a))}"
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"{what}: bytes differ in {diff}"


# ------------------------------------------------------------------------------ the projects
def _write_vcf(d: Path, n_records: int = 8000, n_samples: int = 40) -> None:
    """A CSQ-annotated VCF big enough that streaming and writing take a good part of the run."""
    r = random.Random(0)
    terms = ["missense_variant", "synonymous_variant", "stop_gained", "intron_variant",
             "3_prime_UTR_variant", "frameshift_variant", "splice_region_variant", "upstream_gene_variant"]
    samples = [f"S{i}" for i in range(1, n_samples + 1)]
    lines = [VCF_HEADER, "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n"]
    for k in range(n_records):
        g = k // 20
        gts = "\t".join(r.choice(["0/0", "0/0", "0/0", "0/1", "1/1", "./."]) for _ in samples)
        lines.append(f"chr{1 + k * 3 // n_records}\t{100 + 10 * k}\t.\tA\tG\t50\tPASS\t"
                     f"CSQ={r.choice(terms)}|G|ENSG{g:05d}|G{g}|protein_coding|T{g}\tGT\t{gts}\n")
    (d / "big.vcf").write_text("".join(lines))
    (d / "big_samples.tsv").write_text("sample_id\tstatus\tsex\n" + "".join(
        f"{s}\t{'case' if i % 2 else 'control'}\tNA\n" for i, s in enumerate(samples)))


def _write_plink(d: Path, n: int = 100, p: int = 300) -> None:
    from plink_files import write_bed

    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(n, p)).astype(np.int8)
    X[rng.random((n, p)) < 0.02] = -1
    y = 0.8 * (X[:, 3] == 2) * (X[:, 7] == 1) + rng.normal(size=n)
    write_bed(d / "g", X)
    (d / "y.txt").write_text("".join(f"S{i:02d} S{i:02d} {float(v)!r}\n" for i, v in enumerate(y)))


@dataclass
class Command:
    argv: list
    make_project: object             # (project folder, inputs folder) -> None
    make_inputs: object = None       # (inputs folder) -> None, shared read-only inputs
    excluded: tuple = ()
    volatile: dict = field(default_factory=dict)


def _empty_project(d: Path, inputs: Path) -> None:
    (d / "params.yaml").write_text("{}\n")


def _train_project(d: Path, inputs: Path) -> None:
    from test_workflows_cv import write_project

    write_project(d)


TRAIN_ARGV = ["train", "--model", "sgd_l2", "--jobs", "1", "--encoded", "encoded", "--splits", "splits.npz",
              "--quiet"]

COMMANDS = {
    # metrics/timings/encode.json: "seconds" is the run's wall time (metrics/encode.json and
    # work/encoded/summary.json have none)
    "encode": Command(
        argv=["encode", "--vcf", "{inputs}/big.vcf", "--samples", "{inputs}/big_samples.tsv", "--out",
              "work/encoded", "--snp-dosage", "work/snp_dosage", "--metrics", "metrics/encode.json",
              "--quiet"],
        make_project=_empty_project, make_inputs=_write_vcf,
        volatile={"metrics/timings/encode.json": ["seconds"]}),
    # out/summary.json: timings, throughput and the block the scan resumed from
    "scan2d": Command(
        argv=["scan", "--bfile", "{inputs}/g", "--pheno", "{inputs}/y.txt", "--mode", "2d", "--method", "exact",
              "--top", "50", "--out", "out", "--device", "cpu", "--tile", "32", "--block-pairs", "1024",
              "--checkpoint-every", "0", "--threads", "1", "--workers", "thread"],
        make_project=_empty_project, make_inputs=_write_plink,
        volatile={"out/summary.json": ["seconds_scan", "seconds_scan_total", "seconds_total", "seconds_lambda_gc",
                                       "pairs_per_second", "resumed_from_block"]}),
    # metrics/timings/train/sgd_l2.json: wall times and the MLflow run id (none in metrics/train/)
    "train": Command(
        argv=TRAIN_ARGV + ["--no-mlflow"], make_project=_train_project,
        volatile={"metrics/timings/train/sgd_l2.json": ["train_time_s", "fold_time_mean_s", "mlflow_run_id"]}),
    # with MLflow: mlruns/ (run ids, timestamps, the SQLite store) is not compared byte for byte
    "train-mlflow": Command(
        argv=TRAIN_ARGV, make_project=_train_project, excluded=("mlruns",),
        volatile={"metrics/timings/train/sgd_l2.json": ["train_time_s", "fold_time_mean_s", "mlflow_run_id"]}),
}


@dataclass
class Reference:
    root: Path
    inputs: Path
    wall: float
    argv: list


_REFS: dict[str, Reference] = {}


def _argv(cmd: Command, inputs: Path) -> list[str]:
    return [a.format(inputs=inputs) for a in cmd.argv]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


def _reference(name: str, base: Path) -> Reference:
    if name not in _REFS:
        cmd = COMMANDS[name]
        inputs = base / f"{name}-inputs"
        inputs.mkdir()
        if cmd.make_inputs:
            cmd.make_inputs(inputs)
        pristine = base / f"{name}-pristine"
        pristine.mkdir()
        cmd.make_project(pristine, inputs)
        root = base / f"{name}-reference"
        shutil.copytree(pristine, root)
        argv = _argv(cmd, inputs)
        wall = _run(argv, root, base / "logs" / f"{name}-reference.log")
        _REFS[name] = Reference(root, inputs, wall, argv)
    return _REFS[name]


def _params(names, seeds, slow_seeds):
    out = [pytest.param(n, s, id=f"{n}-seed{s}") for n in names for s in seeds]
    out += [pytest.param(n, s, id=f"{n}-seed{s}", marks=pytest.mark.slow) for n in names for s in slow_seeds]
    return out


@pytest.mark.parametrize("name,seed", _params(["encode", "scan2d", "train"], DEFAULT_SEEDS, SLOW_SEEDS)
                         + _params(["train-mlflow"], [], DEFAULT_SEEDS))
def test_killed_and_rerun_gives_the_reference_outputs(base, name, seed):
    cmd = COMMANDS[name]
    ref = _reference(name, base)
    root = base / f"{name}-seed{seed}"
    shutil.copytree(base / f"{name}-pristine", root)
    delay = _kill_delay(seed, ref.wall)
    log = base / "logs" / f"{name}-seed{seed}.log"
    killed = _run_killed(ref.argv, root, log, delay)
    print(f"{name} seed {seed}: kill at {delay:.2f} s of {ref.wall:.2f} s "
          f"({100 * delay / ref.wall:.0f} %), {'killed' if killed else 'had already exited'}")
    with open(log, "a") as fh:
        fh.write(f"\n==== SIGKILL at {delay:.3f} s (killed={killed}); rerun ====\n")
    _run(ref.argv, root, log)
    _assert_same_tree(ref.root, root, cmd.excluded, cmd.volatile,
                      what=f"{name} seed {seed}, killed at {delay:.2f} s")
    assert not _strays(root, ref.inputs), f"stray files after kill at {delay:.2f} s"


# ------------------------------------------------------------------------------------- tune
TUNE_N = 20


def _tune_argv(mlflow: bool) -> list[str]:
    return ["tune", "--model", "sgd_l2", "--n-trials", str(TUNE_N), "--quiet"] + ([] if mlflow else ["--no-mlflow"])


def _study(root: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'mlruns' / 'optuna.db'}")
    return optuna.load_study(study_name="tune-sgd_l2", storage=storage).get_trials(deepcopy=True)


def _tune_reference(base: Path, mlflow: bool) -> Reference:
    name = "tune-mlflow" if mlflow else "tune"
    if name not in _REFS:
        from test_tune import write_cohort

        pristine = base / f"{name}-pristine"
        write_cohort(pristine)
        root = base / f"{name}-reference"
        shutil.copytree(pristine, root)
        argv = _tune_argv(mlflow)
        wall = _run(argv, root, base / "logs" / f"{name}-reference.log")
        _REFS[name] = Reference(root, base, wall, argv)
    return _REFS[name]


@pytest.mark.parametrize("mlflow,seed", [pytest.param(False, s, id=f"tune-seed{s}") for s in DEFAULT_SEEDS]
                         + [pytest.param(False, s, id=f"tune-seed{s}", marks=pytest.mark.slow) for s in SLOW_SEEDS]
                         + [pytest.param(True, s, id=f"tune-mlflow-seed{s}", marks=pytest.mark.slow)
                            for s in DEFAULT_SEEDS])
def test_killed_tune_loses_and_duplicates_no_trial(base, mlflow, seed):
    ref = _tune_reference(base, mlflow)
    name = "tune-mlflow" if mlflow else "tune"
    root = base / f"{name}-seed{seed}"
    shutil.copytree(base / f"{name}-pristine", root)
    delay = _kill_delay(seed, ref.wall)
    log = base / "logs" / f"{name}-seed{seed}.log"
    killed = _run_killed(ref.argv, root, log, delay)
    try:
        before = _study(root) if (root / "mlruns" / "optuna.db").is_file() else []
    except KeyError:  # killed before the study was created
        before = []
    print(f"{name} seed {seed}: kill at {delay:.2f} s of {ref.wall:.2f} s ({100 * delay / ref.wall:.0f} %), "
          f"{'killed' if killed else 'had already exited'}; trials then: "
          f"{[(t.number, t.state.name) for t in before]}")
    _run(ref.argv, root, log)
    _check_tune(root, ref, TUNE_N, f"{name} seed {seed}, killed at {delay:.2f} s", mlflow)


def _check_tune(root: Path, ref: Reference, n_rerun: int, where: str, mlflow: bool = False) -> None:
    """The study after a killed process and a rerun of ``n_rerun`` trials: nothing lost, nothing
    duplicated, nothing left RUNNING, and nothing left behind in the project."""
    import optuna

    TS = optuna.trial.TrialState
    trials = sorted(_study(root), key=lambda t: t.number)
    ref_trials = sorted(_study(ref.root), key=lambda t: t.number)
    summary = json.loads((root / "metrics" / "tune" / "tune-sgd_l2.json").read_text())
    states = [t.state for t in trials]
    assert TS.RUNNING not in states and TS.WAITING not in states, (where, states)
    assert [t.number for t in trials] == list(range(len(trials))), where
    rerun_worker = summary["worker"]
    mine = [t for t in trials if t.user_attrs.get("worker") == rerun_worker]
    finished = {TS.COMPLETE, TS.PRUNED}
    # the rerun ran exactly the trials asked for, all finished
    assert len(mine) == n_rerun == summary["n_trials_this_process"], where
    assert all(t.state in finished for t in mine), where
    # the killed process: finished trials + at most one failed (the kill), retried exactly once
    dead = [t for t in trials if t.user_attrs.get("worker") != rerun_worker]
    failed = [t for t in trials if t.state == TS.FAIL]
    assert len(failed) <= 1, (where, failed)
    assert all(t in dead for t in failed), where
    assert sum(t.state in finished for t in dead) == len(dead) - len(failed), where
    for f in failed:
        retries = [t for t in trials if t.user_attrs.get("retry_of") == f.number]
        if f.params or f.system_attrs.get("fixed_params"):
            assert len(retries) == 1 and retries[0].state in finished, (where, f.number, retries)
            assert retries[0].params == ref_trials[f.number].params, where
        else:   # killed before it drew anything: a fresh trial takes its place
            assert not retries, where
    # the untuned configuration was tried once (and finished)
    defaults = [t for t in trials if t.user_attrs.get("default") and t.state in finished]
    assert len(defaults) == 1, (where, [(t.number, t.state, t.user_attrs) for t in trials])
    # the killed process's trials are the reference study's first trials: nothing of them lost
    assert len(dead) <= len(ref_trials), where
    for t in dead:
        r = ref_trials[t.number]
        if t.state == TS.FAIL:
            assert set(t.params.items()) <= set(r.params.items()), (where, t.number)
            continue
        assert (t.params, t.state, t.value) == (r.params, r.state, r.value), (where, t.number)
    # the summary counts the study as it is
    assert summary["n_complete"] + summary["n_pruned"] + summary["n_failed"] == len(trials), where
    assert summary["n_failed"] == len(failed), where
    if mlflow:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("tiny-tune")
        runs = client.search_runs([exp.experiment_id], max_results=5000)
        running = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
        assert not running, (where, running)
    # nothing left behind but the project's own files; metrics/ and mlruns/ hold per-process
    # counts, run ids and timestamps by design
    _assert_same_tree(ref.root, root, excluded=("mlruns", "metrics"), what=where)
    assert sorted(p.relative_to(root).as_posix() for p in (root / "metrics").rglob("*") if p.is_file()) == \
        ["metrics/timings/tune/tune-sgd_l2.json", "metrics/tune/tune-sgd_l2.json"], where
    assert not _strays(root), where


# ------------------------------------------------- kill points too narrow for a random delay
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_scan_rerun_removes_the_checkpoint_temp_of_a_killed_run(base, tmp_path):
    """A scan killed while it wrote its checkpoint leaves ``OUT/..scan2d.ckpt.npz.<pid>.<8>.npz``.
    With the default checkpoint interval (30 s) a short rerun writes no checkpoint, so only the
    end of the scan can remove that temp file."""
    from pipelines import cli

    ref = _reference("scan2d", base)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"..scan2d.ckpt.npz.{_dead_pid()}.k1ll3d_x.npz"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    argv = [a for a in ref.argv if a not in ("--checkpoint-every", "0")]
    argv[argv.index("--out") + 1] = str(out)
    assert cli.main(argv) == 0
    assert not _strays(tmp_path), _strays(tmp_path)
    _assert_same_tree(ref.root / "out", out, volatile={"summary.json": COMMANDS["scan2d"].volatile["out/summary.json"]},
                      what="scan rerun over a killed checkpoint write")


# SIGKILL the process itself at the nth call of a function: kill points a wall-clock delay hits
# only by luck (a few SQL statements wide)
KILL_AT = r"""
import importlib, os, signal, sys
target, nth = sys.argv[1], int(sys.argv[2])
module, _, attr = target.partition(":")
owner_name, _, name = attr.rpartition(".")
owner = importlib.import_module(module)
for part in filter(None, owner_name.split(".")):
    owner = getattr(owner, part)
plain, calls = getattr(owner, name), [0]

def hook(*a, **k):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return plain(*a, **k)

setattr(owner, name, hook)
from pipelines.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _run_kill_at(base: Path, argv: list[str], cwd: Path, log: Path, target: str, nth: int) -> None:
    runner = base / "kill_at.py"
    if not runner.exists():
        runner.write_text(KILL_AT)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        rc = subprocess.run([sys.executable, str(runner), target, str(nth), *argv], cwd=cwd, env=_env(cwd),
                            stdout=fh, stderr=subprocess.STDOUT, timeout=300).returncode
    assert rc == -signal.SIGKILL, f"{target} call {nth} was not reached (exit {rc}):\n{log.read_text()[-2000:]}"


TUNE_KILL_POINTS = [
    # (target, nth call, what the process was doing)
    ("optuna.trial._trial:Trial.set_user_attr", 2, "labelling the defaults trial (worker set, host and pid not)"),
    ("optuna.trial._trial:Trial.suggest_float", 1, "the defaults trial, before it drew its parameter"),
    pytest.param("optuna.study.study:Study.enqueue_trial", 1, "about to enqueue the untuned defaults",
                 marks=pytest.mark.slow),
    pytest.param("optuna.trial._trial:Trial.set_user_attr", 1, "the defaults trial just asked, unlabelled",
                 marks=pytest.mark.slow),
    pytest.param("optuna.trial._trial:Trial.set_user_attr", 3, "labelling the defaults trial (pid not set)",
                 marks=pytest.mark.slow),
    pytest.param("optuna.trial._trial:Trial.set_user_attr", 4, "a sampled trial just asked, unlabelled",
                 marks=pytest.mark.slow),
    # with MLflow (the flag "mlflow" in the description)
    pytest.param("optuna.trial._trial:Trial.set_user_attr", 4,
                 "mlflow: the defaults trial's MLflow run created, not yet recorded in the trial",
                 marks=pytest.mark.slow),
    pytest.param("mlflow.tracking.client:MlflowClient.set_terminated", 1,
                 "mlflow: the first fold's step run created, not yet terminated", marks=pytest.mark.slow),
]


def _kill_point_id(v):
    if not isinstance(v, str):
        return str(v)
    if v.startswith("mlflow:"):
        return "mlflow"
    return v.rsplit(".", 1)[-1] if ":" in v else "nolog"


@pytest.mark.parametrize("target,nth,what", TUNE_KILL_POINTS, ids=_kill_point_id)
def test_tune_killed_at_a_narrow_point_loses_no_trial(base, target, nth, what):
    ref = _tune_reference(base, False)
    mlflow = what.startswith("mlflow:")
    name = f"tune-at-{target.rsplit('.', 1)[-1]}-{nth}{'-mlflow' if mlflow else ''}"
    root = base / name
    shutil.copytree(base / "tune-pristine", root)
    argv = [a if a != str(TUNE_N) else "3" for a in ref.argv if not (mlflow and a == "--no-mlflow")]
    log = base / "logs" / f"{name}.log"
    _run_kill_at(base, argv, root, log, target, nth)
    _run(argv, root, log)
    _check_tune(root, ref, 3, f"tune killed at call {nth} of {target} ({what})", mlflow=mlflow)


@pytest.mark.parametrize("nth", [3, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
                                 pytest.param(4, marks=pytest.mark.slow), pytest.param(5, marks=pytest.mark.slow)])
def test_train_over_its_old_output_killed_at_each_rename(base, nth):
    """Rerun ``train`` over a finished project and SIGKILL it at its nth ``os.replace``: 1 run.json
    into the new folder, 2 old folder aside, 3 new folder in place, 4 ROC points, 5 metrics. A
    rerun restores the reference bytes and removes the folder put aside."""
    ref = _reference("train", base)
    root = base / f"train-rename{nth}"
    shutil.copytree(ref.root, root)
    log = base / "logs" / f"train-rename{nth}.log"
    _run_kill_at(base, ref.argv, root, log, "os:replace", nth)
    if nth == 3:   # killed between the two renames of the swap: the output is only in the old folder
        assert not (root / "work" / "train" / "sgd_l2").exists()
        assert _strays(root)
    _run(ref.argv, root, log)
    cmd = COMMANDS["train"]
    _assert_same_tree(ref.root, root, cmd.excluded, cmd.volatile, what=f"train killed at os.replace #{nth}")
    assert not _strays(root), _strays(root)


def test_killed_train_leaves_no_mlflow_run_running(base):
    ref = _reference("train", base)
    root = base / "train-mlflow-killed-in-fold"
    shutil.copytree(base / "train-pristine", root)
    argv = [a for a in ref.argv if a != "--no-mlflow"]
    log = base / "logs" / "train-mlflow-killed-in-fold.log"
    _run_kill_at(base, argv, root, log, "pipelines.tracking:log_child", 3)
    _run(argv, root, log)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
