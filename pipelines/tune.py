"""Optuna studies for epiflow: storage, the study runner, MLflow logging, and the zoo objective.

The runner (:func:`run_study`) takes a :class:`pipelines.tune_api.StudySpec` and owns everything
around the objective: the storage, the sampler and pruner, ``n_jobs`` threads, the MLflow run
hierarchy (study > trial > step) and the study's artifacts. :func:`zoo_study_spec` builds the
spec for a model of the zoo; ``pipelines.tune_ngg.ngg_study_spec`` the one for NGG.

Storage (``--storage``):

- default ``sqlite:///<repo>/mlruns/optuna.db``, next to the MLflow store;
- ``journal:PATH``: Optuna's journal file (append-only log with a file lock), the safest choice
  for several ``epiflow tune`` processes on one machine;
- any SQLAlchemy URL (``postgresql://user:pw@host/db``, ``mysql+pymysql://...``) for many workers.

Several processes on one study: each process runs ``--n-trials`` trials of the shared study and
logs its own trials under the single MLflow study run. That run is found by the tags
``epiflow.optuna.study`` / ``epiflow.optuna.storage`` or created; processes of one machine
serialise the find-or-create with a file lock in ``mlruns/``; workers on other machines elect the
oldest run carrying the tags (a loser deletes its own), so they converge on one study run too.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models.registry import REGISTRY
from pipelines import tracking, zoo
from pipelines.atomic import pid_alive
from pipelines.cv_record import Record, run_and_record
from pipelines.errors import EpiflowError
from pipelines.params import section
from pipelines.tune_api import StudySpec
from pipelines.workflows.cohort import Cohort, load_splits
from pipelines.workflows.cv import ModelSpec, check_device, cross_validate

STUDY_TAG = f"{tracking.TAG_PREFIX}optuna.study"
STORAGE_TAG = f"{tracking.TAG_PREFIX}optuna.storage"
KIND_TAG = f"{tracking.TAG_PREFIX}optuna.run"     # study | trial | step | rerun

DEFAULT_PRUNER = {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 0}
HEARTBEAT_S, GRACE_S = 30, 120      # database storages: trial heartbeat, and silence that fails it


# ----------------------------------------------------------------------------------- storage
def default_storage_url(start: Path | None = None) -> str:
    store = tracking.store_root(start) / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'optuna.db'}"


def redact(url: str) -> str:
    """The storage URL without a password (for tags, logs and errors)."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def storage_key(url: str) -> str:
    """A stable identity of a storage: absolute path for files, redacted URL otherwise."""
    if url.startswith("journal:"):
        return "journal:" + str(Path(url[len("journal:"):]).expanduser().resolve())
    if url.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).expanduser().resolve())
    return redact(url)


def check_storage(url: str | None) -> None:
    """Refuse, before any lock, study or file is made, a ``--storage`` that cannot work: not
    ``journal:PATH`` nor a URL, a path under a regular file or in a folder that cannot be
    created, a journal that is not an Optuna journal, a file that is not a SQLite database (a
    damaged file is never written to). One line, naming the storage."""
    if not url:
        return
    if url.startswith("journal:"):
        path = Path(url[len("journal:"):]).expanduser()
        if not path.name:
            raise EpiflowError("--storage journal:PATH needs a file path, e.g. journal:mlruns/study.log")
        _check_storage_file(url, path)
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as fh:
                first = fh.readline(1 << 20)
            try:
                head = json.loads(first)
                ok = isinstance(head, dict) and "op_code" in head
            except ValueError:          # JSON errors, binary data
                ok = False
            if not ok:
                raise EpiflowError(f"--storage {url}: {path} is not an Optuna journal file "
                                   "(give a new path, or remove it)")
        return
    if "://" not in url:
        raise EpiflowError(f"--storage {url!r}: expected journal:PATH or a database URL "
                           "(sqlite:///path.db, postgresql://user@host/db)")
    if url.startswith("sqlite"):
        p = url.split(":///", 1)[-1]
        if p and p != ":memory:":
            path = Path(p).expanduser()
            _check_storage_file(redact(url), path)
            if path.is_file() and path.stat().st_size:
                with open(path, "rb") as fh:
                    head = fh.read(16)
                if head != b"SQLite format 3\x00":
                    raise EpiflowError(f"--storage {redact(url)}: {path} is not a SQLite database "
                                       "(give a new path, or remove it)")


def _check_storage_file(shown: str, path: Path) -> None:
    """The file of a storage: not a folder, not under a regular file, in a folder that exists or
    can be created (a folder made here to find out is removed again)."""
    if path.is_dir():
        raise EpiflowError(f"--storage {shown}: {path} is a folder")
    parent = path.absolute().parent
    for p in (parent, *parent.parents):
        if p.exists() and not p.is_dir():
            raise EpiflowError(f"--storage {shown}: {p} is a file, not a folder")
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    if missing:
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise EpiflowError(f"--storage {shown}: cannot create {missing[-1]} "
                               f"({exc.strerror or exc})") from None
        for p in missing:               # deepest first: only what was made here
            try:
                p.rmdir()
            except OSError:
                break


def make_storage(url: str | None, start: Path | None = None):
    """(optuna storage, url) for ``--storage``; a one-line error for a bad value."""
    import optuna

    url = url or default_storage_url(start)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):]).expanduser()
        if not path.name:
            raise EpiflowError("--storage journal:PATH needs a file path, e.g. journal:mlruns/study.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), url
    if "://" not in url:
        raise EpiflowError(f"--storage {url!r}: expected journal:PATH or a database URL "
                           "(sqlite:///path.db, postgresql://user@host/db)")
    url = _postgres_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # several processes share the file: wait for the write lock instead of failing
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        # a worker that dies (SIGKILL, a lost machine) stops beating: its RUNNING trial is failed
        # after the grace period by the next worker and retried once
        storage = _open_rdb(optuna, url, kwargs)
    except ImportError as exc:
        raise EpiflowError(f"--storage {redact(url)}: database driver missing ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError, ArgumentError...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EpiflowError(f"--storage {redact(url)}: cannot open ({msg})") from None
    return storage, url


def _open_rdb(optuna, url: str, kwargs: dict, tries: int = 6):
    """The RDB storage; workers on several machines that open a fresh database at once race to
    create its schema (one wins, the others fail with "already exists"): try again after it."""
    for k in range(tries):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S, **_retry_once(optuna))
        except Exception as exc:
            text = str(exc).lower()
            if k == tries - 1 or not ("already exists" in text or "duplicate key" in text):
                raise
            time.sleep(0.5 * (k + 1))


def _retry_once(optuna) -> dict:
    """The storage argument that re-queues a heartbeat-stale trial once (Optuna >= 4.9 names it
    heartbeat_stale_trial_callback; earlier releases failed_trial_callback)."""
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; use psycopg2 where only it is
    installed (the project depends on psycopg2-binary)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            import importlib.util

            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
                return "postgresql+psycopg2://" + url[len(prefix):]
    return url


@contextlib.contextmanager
def local_lock(name: str = "tune", start: Path | None = None):
    """An exclusive lock between processes of this machine (fcntl on mlruns/.NAME.lock).

    A block that fails removes the lock file (and mlruns/, when both were made for it and it is
    empty), so a run refused early leaves nothing behind. A process that gets the lock on a file
    another one has just removed retries on the path's current file."""
    import fcntl

    d = tracking.store_root(start) / "mlruns"
    made_dir = not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f".{name}.lock"
    while True:
        created = not path.exists()
        fh = open(path, "a+")
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()                      # removed by a failed holder meanwhile: lock the new file
    ok = False
    try:
        yield
        ok = True
    finally:
        if not ok and created:
            path.unlink(missing_ok=True)
            if made_dir:
                try:
                    d.rmdir()
                except OSError:
                    pass
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


# ----------------------------------------------------------------------------- search space
def parse_space(space: dict, where: str = "params.yaml tune.space") -> dict[str, dict]:
    """``{name: [low, high]}``, ``[low, high, log]`` or ``{choices: [...]}`` -> distributions spec."""
    out = {}
    for name, spec in (space or {}).items():
        if isinstance(spec, dict) and "choices" in spec:
            choices = list(spec["choices"])
            if not choices:
                raise EpiflowError(f"{where}.{name}: empty choices")
            out[name] = {"kind": "categorical", "choices": choices}
            continue
        if not isinstance(spec, (list, tuple)) or len(spec) not in (2, 3):
            raise EpiflowError(f"{where}.{name}: expected [low, high], [low, high, log] or "
                               f"{{choices: [...]}}, got {spec!r}")
        low, high = spec[0], spec[1]
        log = len(spec) == 3 and spec[2] == "log"
        if len(spec) == 3 and spec[2] != "log":
            raise EpiflowError(f"{where}.{name}: third entry must be 'log', got {spec[2]!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise EpiflowError(f"{where}.{name}: bounds must be numbers, got {spec!r}")
        if not low < high:
            raise EpiflowError(f"{where}.{name}: need low < high, got {spec!r}")
        if log and low <= 0:
            raise EpiflowError(f"{where}.{name}: a log range needs low > 0, got {spec!r}")
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        out[name] = {"kind": kind, "low": low, "high": high, "log": log}
    return out


def suggest(trial, name: str, d: dict):
    if d["kind"] == "categorical":
        return trial.suggest_categorical(name, d["choices"])
    if d["kind"] == "int":
        return trial.suggest_int(name, int(d["low"]), int(d["high"]), log=d["log"])
    return trial.suggest_float(name, float(d["low"]), float(d["high"]), log=d["log"])


def in_space(value, d: dict) -> bool:
    if d["kind"] == "categorical":
        return value in d["choices"]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return d["low"] <= value <= d["high"]


def model_space(mtype: str, space: dict[str, dict]) -> dict[str, dict]:
    """The part of ``tune.space`` that applies to a model type (its registry ``tunable`` keys)."""
    keys = REGISTRY[mtype].tunable
    chosen = {k: v for k, v in space.items() if k in keys}
    if not chosen:
        raise EpiflowError(f"tune.space has no parameter for a '{mtype}' model "
                           f"(meaningful here: {', '.join(keys)})")
    return chosen


def make_pruner(cfg: dict | None, multi: bool):
    import optuna

    kind = (cfg or {}).get("type", DEFAULT_PRUNER["type"])
    if kind == "hyperband":   # its own keys (min_resource, max_resource, reduction_factor) only
        cfg = {k: v for k, v in (cfg or {}).items() if k != "type"}
    else:
        cfg = {**DEFAULT_PRUNER, **(cfg or {})}
        cfg.pop("type")
    if multi or kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(**cfg)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**cfg)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**cfg)
    raise EpiflowError(f"tune.pruner.type: unknown pruner '{kind}'; valid: median, percentile, "
                       "hyperband, none")


# ------------------------------------------------------------------------------ zoo objective
def inner_splits(y_outer_train: np.ndarray, n_folds: int, seed: int):
    """Stratified inner folds (indices into the outer training part)."""
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(y_outer_train, return_counts=True)
    if len(classes) < 2 or counts.min() < n_folds:
        raise EpiflowError(f"tune: the outer training part has class counts {counts.tolist()}, "
                           f"too few for {n_folds} inner folds")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(y_outer_train)), y_outer_train))


@dataclass(frozen=True)
class ZooTuneInputs:
    """Where a zoo study reads its data, and how its outer re-run records (from `epiflow tune`)."""
    params_path: str = "params.yaml"
    encoded: str = "work/encoded"
    splits: str = "work/splits.npz"
    gmt: str | None = None              # None: encode.gmt of params.yaml
    seed: int | None = None             # inner-fold seed (None: tune.seed)
    device: str | None = None           # overrides train.device
    out: str | None = None              # re-run outputs (None: work/tune/<model>)
    repeats: int | None = None          # re-run: first N repeats of the outer splits
    mlflow: bool = True
    quiet: bool = False


def _configure(cfg: dict, train_cfg: dict, values: dict) -> tuple[dict, dict]:
    """(model cfg, train cfg) of a trial's (or the defaults') values; ``epochs`` sets max_epochs."""
    c, t = dict(cfg), dict(train_cfg)
    for k, v in values.items():
        if k == "epochs":
            c.pop("max_epochs", None)
            t["max_epochs"] = int(v)
        else:
            c[k] = v
    return c, t


def _study_defaults(mtype: str, cfg: dict, train_cfg: dict, space: dict, y) -> dict:
    """The untuned configuration, as values of the search space (the first, enqueued trial)."""
    defaults = {}
    for name, d in space.items():
        if name == "epochs":
            value = int(cfg.get("max_epochs", train_cfg.get("max_epochs", 30)))
        else:
            value = cfg.get(name, REGISTRY[mtype].default(name))
        if name == "focal_alpha" and value is None:
            # the nets' default: fraction of controls (of each training fold; here of the outer one)
            value = round(float(1.0 - y.mean()), 4)
        if value is not None and in_space(value, d):
            defaults[name] = int(value) if d["kind"] == "int" else value
    return defaults


def _zoo_objective(spec: ModelSpec, outer: Cohort, inner: list, train_cfg: dict, space: dict):
    """objective(trial, report): mean AUC over the inner folds; each fold's running mean is
    reported (a diverged net scores as chance)."""
    folds = [(0, step, itr, ite) for step, (itr, ite) in enumerate(inner)]

    def objective(trial, report):
        values = {name: suggest(trial, name, d) for name, d in space.items()}
        c, t = _configure(spec.config, train_cfg, values)
        aucs = []

        def on_fold(f):
            aucs.append(f.auc)
            report(f.fold, float(np.mean(aucs)),
                   {"auc": f.auc, "n_train": f.n_train, "n_test": f.n_test, "train_time_s": f.seconds,
                    "n_parameters": float(f.info.get("n_parameters", 0))})

        cross_validate(ModelSpec(spec.name, spec.type, c), outer, folds, train_cfg=t, on_fold=on_fold,
                       nonfinite_auc=0.5)
        return float(np.mean(aucs))

    return objective


def zoo_study_spec(model: str, params: dict, inputs: ZooTuneInputs) -> StudySpec:
    """The study for one zoo model: mean ROC AUC over inner stratified folds of the training part
    of ONE outer fold (``tune.outer_repeat`` / ``tune.outer_fold``) of the shared splits.

    The outer fold's test samples are dropped before anything else is built, so no model, no
    standardisation and no score of a trial ever reads them; they stay untouched for the outer
    CV of ``--rerun-best``.
    """
    mtype, cfg = zoo.resolve(model, section(params, "models", inputs.params_path), inputs.params_path)
    tcfg = dict(section(params, "tune", inputs.params_path))
    train_cfg = dict(section(params, "train", inputs.params_path))
    if inputs.device:
        train_cfg["device"] = inputs.device
    if REGISTRY[mtype].trains_net:
        check_device(train_cfg.get("device"), "--device" if inputs.device else f"{inputs.params_path}: train.device")
    space = model_space(mtype, parse_space(tcfg.get("space", {})))
    n_inner = int(tcfg.get("inner_folds", 3))
    r0, k0 = int(tcfg.get("outer_repeat", 0)), int(tcfg.get("outer_fold", 0))
    seed = int(inputs.seed if inputs.seed is not None else tcfg.get("seed", 0))
    gmt = inputs.gmt or section(params, "encode").get("gmt")
    gmt = gmt if REGISTRY[mtype].needs_pathways else None
    cohort = Cohort.load(inputs.encoded, gmt)
    splits = load_splits(inputs.splits, cohort)
    if not (0 <= r0 < splits.repeats and 0 <= k0 < splits.folds):
        raise EpiflowError(f"tune.outer_repeat/outer_fold = {r0}/{k0} outside the "
                           f"{splits.repeats} x {splits.folds} splits in {inputs.splits}")
    outer_train = np.flatnonzero(splits.fold[r0] != k0)
    outer = cohort.subset(outer_train)      # only the outer training part is read by trials
    inner = inner_splits(outer.y, n_inner, seed)
    spec = ModelSpec(model, mtype, cfg)
    return StudySpec(
        name=f"tune-{model}", directions=["maximize"], metric_names=["inner_auc"],
        objective=_zoo_objective(spec, outer, inner, train_cfg, space),
        defaults=_study_defaults(mtype, cfg, train_cfg, space, outer.y),
        rerun=lambda best: rerun_zoo(spec, best, params, cohort, splits, inputs),
        tags={"model": model, "model_type": mtype, "objective": "inner_cv_auc",
              "outer_repeat": r0, "outer_fold": k0, "inner_folds": n_inner,
              "n_outer_train": len(outer_train), "space": json.dumps(tcfg.get("space", {}))[:4000],
              "_inputs": [inputs.encoded, inputs.splits] + ([gmt] if gmt else [])},
        step_name="fold")


# ---------------------------------------------------------------------------- MLflow logging

def _set_tag_shared(client, run_id: str, key: str, value: str, attempts: int = 5) -> None:
    """``client.set_tag`` on a run that several workers of one study update at once: MLflow's
    SQL store inserts a new tag after checking that it is absent, so two workers finishing
    together can both insert (seen on PostgreSQL: UniqueViolation on tag_pk). The loser retries;
    the tag then exists and is updated."""
    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            client.set_tag(run_id, key, value)
            return
        except MlflowException as exc:
            text = str(exc)
            if i == attempts - 1 or not any(m in text for m in ("UniqueViolation", "UNIQUE constraint",
                                                                "already exists", "IntegrityError")):
                raise
            time.sleep(0.05 * (i + 1))


class StudyLog:
    """The MLflow side of one study in this process: the study run, trial and step runs."""

    def __init__(self, experiment: str, study_name: str, url: str, tags: dict, defaults: dict,
                 spec: StudySpec, enabled: bool = True):
        self.enabled = enabled
        self.study_name = study_name
        self.key = storage_key(url)
        self.spec = spec
        self.client = None
        self.run_id = None
        self.exp_id = None
        if not enabled:
            return
        from mlflow import MlflowClient

        self.exp_id = tracking.setup(experiment)
        self.client = MlflowClient()
        self.tags = tags
        self.run_id = self._find_or_create(tags, defaults)

    def _search(self):
        from mlflow.entities import ViewType

        flt = (f"tags.`{STUDY_TAG}` = '{self.study_name}' and "
               f"tags.`{STORAGE_TAG}` = '{self.key.replace(chr(39), '')}'")
        runs = self.client.search_runs([self.exp_id], filter_string=flt,
                                       run_view_type=ViewType.ACTIVE_ONLY,
                                       order_by=["attributes.start_time ASC"], max_results=50)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def _find_or_create(self, tags: dict, defaults: dict) -> str:
        found = self._search()
        if found:
            return found[0].info.run_id
        all_tags = {**tags, STUDY_TAG: self.study_name,
                    STORAGE_TAG: self.key.replace("'", ""), KIND_TAG: "study",
                    "mlflow.runName": self.study_name}
        run = self.client.create_run(self.exp_id, run_name=self.study_name, tags=all_tags)
        rid = run.info.run_id
        if defaults:
            from mlflow.entities import Param

            self.client.log_batch(rid, params=[Param(f"default.{k}", str(v)[:500])
                                               for k, v in defaults.items()])
        # another machine may have created one at the same time: the oldest wins
        winner = self._search()[0].info.run_id
        if winner != rid:
            self.client.delete_run(rid)
        return winner

    def start_trial(self, trial) -> str | None:
        if not self.enabled:
            return None
        run = self.client.create_run(
            self.exp_id, run_name=f"{self.study_name}-trial{trial.number}",
            tags={**self.tags, "mlflow.parentRunId": self.run_id, KIND_TAG: "trial",
                  STUDY_TAG: self.study_name, f"{tracking.TAG_PREFIX}optuna.trial": str(trial.number)})
        return run.info.run_id

    def log_step(self, trial_run: str | None, trial_number: int, step: int, value: float,
                 metrics: dict | None):
        if not self.enabled or trial_run is None:
            return
        names = self.spec.metric_names
        m = {f"running_{names[0]}" if len(names) == 1 else "running_value": value}
        m.update({k: float(v) for k, v in (metrics or {}).items() if _is_number(v)})
        tracking.log_child(trial_run, self.exp_id, f"{self.study_name}-trial{trial_number}-{self.spec.step_name}{step}",
                           tags={**self.tags, KIND_TAG: "step", STUDY_TAG: self.study_name},
                           params={"step": step, "trial": trial_number}, metrics=m)

    def end_trial(self, trial_run: str | None, trial, state: str, values, seconds: float):
        if not self.enabled or trial_run is None:
            return
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [Metric("trial_time_s", float(seconds), now, 0)]
        if values is not None:
            for name, v in zip(self.spec.metric_names, values):
                metrics.append(Metric(name, float(v), now, 0))
        params = [Param(k, str(v)[:500]) for k, v in trial.params.items()]
        params.append(Param("trial", str(trial.number)))
        self.client.log_batch(trial_run, metrics=metrics, params=params)
        self.client.set_tag(trial_run, f"{tracking.TAG_PREFIX}optuna.state", state)
        status = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}[state]
        self.client.set_terminated(trial_run, status=status)

    def finish(self, study, extra_tags: dict | None = None):
        """Best params, counts and artifacts of the whole study (every process's trials)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        summary = study_summary(study, self.spec)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary["metrics"].items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        for k, v in {**summary["tags"], **(extra_tags or {})}.items():
            _set_tag_shared(self.client, self.run_id, f"{tracking.TAG_PREFIX}{k}", str(v)[:5000])
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "best_params.json").write_text(json.dumps(summary["best"], indent=2, default=str) + "\n")
            trials_table(study, self.spec).to_csv(d / "trials.tsv", sep="\t", index=False)
            for f in study_plots(study, self.spec, d):
                self.client.log_artifact(self.run_id, str(f))
            self.client.log_artifact(self.run_id, str(d / "best_params.json"))
            self.client.log_artifact(self.run_id, str(d / "trials.tsv"))
        self.client.set_terminated(self.run_id, status="FINISHED")


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(float(v))


def study_summary(study, spec: StudySpec) -> dict:
    import optuna

    TS = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == getattr(TS, s.upper()) for t in trials)
              for s in ("complete", "pruned", "fail", "running")}
    metrics = {f"n_{k}": v for k, v in counts.items()}
    tags: dict[str, Any] = {}
    best: dict[str, Any] = {"study": study.study_name, "directions": spec.directions,
                            "metric_names": spec.metric_names, "defaults": spec.defaults}
    default_trial = next((t for t in trials if t.user_attrs.get("default") and t.state == TS.COMPLETE), None)
    if len(spec.directions) == 1:
        if counts["complete"]:
            bt = study.best_trial
            best.update(best_trial=bt.number, best_value=bt.value, best_params=bt.params)
            metrics[f"best_{spec.metric_names[0]}"] = bt.value
            tags.update({f"best.{k}": v for k, v in bt.params.items()})
            tags["best.trial"] = bt.number
        if default_trial is not None:
            best["default_value"] = default_trial.value
            metrics[f"default_{spec.metric_names[0]}"] = default_trial.value
    else:
        pareto = study.best_trials if counts["complete"] else []
        best["pareto"] = [{"trial": t.number, "values": t.values, "params": t.params} for t in pareto]
        metrics["n_pareto"] = len(pareto)
        if default_trial is not None:
            best["default_values"] = default_trial.values
    return {"metrics": metrics, "tags": tags, "best": best}


def trials_table(study, spec: StudySpec):
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name.lower(),
               "duration_s": t.duration.total_seconds() if t.duration else None,
               "worker": t.user_attrs.get("worker"), "default": bool(t.user_attrs.get("default"))}
        vals = t.values or [None] * len(spec.directions)
        for name, v in zip(spec.metric_names, vals):
            row[name] = v
        if t.intermediate_values:
            row["last_step"] = max(t.intermediate_values)
        row.update({f"param.{k}": v for k, v in t.params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def study_plots(study, spec: StudySpec, outdir: Path) -> list[Path]:
    """Optimisation history (or Pareto front), parameter importances, intermediate values (PNG)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    files = []
    multi = len(spec.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    jobs = [("optimization_history.png", lambda: ovm.plot_optimization_history(
        study, target=target, target_name=spec.metric_names[0]))]
    if multi:
        jobs.append(("pareto_front.png", lambda: ovm.plot_pareto_front(study, target_names=spec.metric_names)))
    if len(done) >= 2 and any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        jobs.append(("param_importances.png", lambda: ovm.plot_param_importances(
            study, target=target, target_name=spec.metric_names[0])))
    if not multi:
        jobs.append(("intermediate_values.png", lambda: ovm.plot_intermediate_values(study)))
    # Optuna's matplotlib plots switch the process-wide style (ggplot): keep that inside, so
    # figures drawn later in the same process (scans, curves) are not restyled
    with matplotlib.rc_context():
        for name, fn in jobs:
            if not done:
                break
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = fn()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                fig.savefig(outdir / name, dpi=110)
                plt.close(fig)
                files.append(outdir / name)
            except Exception as exc:  # a plot is optional; the study is not
                print(f"tune: plot {name} skipped ({type(exc).__name__}: {exc})")
    return files


# ------------------------------------------------------------------------------- the runner
def open_study(spec: StudySpec, storage, study_name: str, seed: int, pruner_cfg: dict | None):
    """Create or load the study; returns (study, worker index of this process)."""
    import optuna

    multi = len(spec.directions) > 1
    pruner = make_pruner(pruner_cfg, multi)
    study = None
    for attempt in range(5):  # first creation of a database by several processes at once
        try:
            study = optuna.create_study(study_name=study_name, storage=storage,
                                        directions=spec.directions, pruner=pruner,
                                        load_if_exists=True)
            break
        except ValueError as exc:
            raise EpiflowError(f"study '{study_name}': {exc}") from None
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    if [d.name.lower() for d in study.directions] != [d.lower() for d in spec.directions]:
        raise EpiflowError(f"study '{study_name}' exists with directions "
                           f"{[d.name.lower() for d in study.directions]}, not {spec.directions}; "
                           f"choose another --study-name")
    worker = int(study.user_attrs.get("workers_started", 0))
    # the defaults go in before the count: a worker killed in between leaves a study that the
    # next worker still sees as new (worker 0, no trials), so the defaults are never lost
    if worker == 0 and not study.get_trials(deepcopy=False) and spec.defaults:
        study.enqueue_trial(spec.defaults, user_attrs={"default": True})
    study.set_user_attr("workers_started", worker + 1)
    # each process draws its own random sequence (constant_liar keeps running trials in view)
    study.sampler = optuna.samplers.TPESampler(seed=seed + 7919 * worker, constant_liar=True,
                                               multivariate=True)
    study.pruner = pruner
    return study, worker


def recover_dead_trials(study, *, orphans: bool = False) -> int:
    """Fail the RUNNING trials whose worker process on this machine is dead (killed, crashed),
    mark their MLflow trial runs FAILED, and enqueue each once more with the same parameters (a
    retried trial is not retried again). Workers on other machines are covered by the database
    heartbeat. Returns the number of trials recovered.

    ``orphans``: the caller holds the local ask lock of a file-backed storage, whose workers are
    all processes of this machine that label the trial they asked (host, pid) before they let go
    of that lock (:func:`_serialise_ask`); a RUNNING trial without that label was then asked by a
    process that died before labelling it, and is recovered too."""
    import optuna

    TS = optuna.trial.TrialState
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if not isinstance(pid, int) or "host" not in t.user_attrs:
            if not orphans:
                continue
            reason = f"its worker on {host} died before labelling it"
        elif t.user_attrs["host"] != host or pid_alive(pid):
            continue
        else:
            reason = f"worker {pid} on {host} died"
        try:
            study._storage.set_trial_system_attr(t._trial_id, "fail_reason", reason)
            study._storage.set_trial_state_values(t._trial_id, TS.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        n += 1
        _fail_mlflow_run(t.user_attrs.get("mlflow_run"), study.user_attrs.get("mlflow_run_id"), t.number)
        # an enqueued trial (the defaults, a retry) killed before it drew every parameter keeps
        # its whole configuration in fixed_params
        params = t.system_attrs.get("fixed_params") or t.params
        if "retry_of" not in t.user_attrs and params:
            study.enqueue_trial(params, user_attrs={"retry_of": t.number,
                                                      **({"default": True} if t.user_attrs.get("default") else {})})
    return n


def _fail_mlflow_run(run_id: str | None, study_run: str | None = None, number: int | None = None) -> None:
    """Mark a dead trial's MLflow run FAILED, and the step runs it left RUNNING. Without the
    trial's ``mlflow_run`` (killed before it was recorded) the run is found under the study run
    by its trial number."""
    if not run_id and not study_run:
        return
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient()
        exp = client.get_run(run_id or study_run).info.experiment_id
        ids = [run_id] if run_id else [
            r.info.run_id for r in client.search_runs(
                [exp], filter_string=f"tags.`mlflow.parentRunId` = '{study_run}' and "
                                     f"tags.`{tracking.TAG_PREFIX}optuna.trial` = '{number}' and "
                                     "attributes.status = 'RUNNING'")]
        for rid in ids:
            client.set_tag(rid, f"{tracking.TAG_PREFIX}optuna.state", "failed")
            client.set_terminated(rid, status="FAILED")
            for step in client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{rid}' and "
                                                                "attributes.status = 'RUNNING'"):
                client.set_terminated(step.info.run_id, status="FAILED")
    except Exception:  # the store may be elsewhere now: the Optuna state is what counts
        pass


_ASK_LOCK = threading.Lock()


def _is_file_backed(url: str) -> bool:
    return url.startswith("sqlite") or url.startswith("journal")


def _serialise_ask(study, url: str, start: Path | None, label=None) -> None:
    """Make ``study.ask`` atomic between the threads of this process and, for file-backed storage
    (SQLite, journal), between the processes of this machine. ``label(trial)`` runs on the new
    trial before the locks are released (see :func:`recover_dead_trials`).

    Optuna pops an enqueued trial by reading it as WAITING and then marking it RUNNING; SQLite
    has no ``SELECT ... FOR UPDATE``, so two threads or processes asking at once can both pop the
    same trial and the second ``tell`` fails ("Cannot tell a COMPLETE trial"). A server database
    (PostgreSQL, MySQL) locks the row itself and needs nothing here but the thread lock.
    """
    file_backed = _is_file_backed(url)
    plain_ask = study.ask

    def ask(*a, **k):
        with _ASK_LOCK, (local_lock("ask", start=start) if file_backed else contextlib.nullcontext()):
            trial = plain_ask(*a, **k)
            if label is not None:
                label(trial)
            return trial

    study.ask = ask


def _trial_runner(spec: StudySpec, log: "StudyLog"):
    """The objective Optuna calls: the spec's objective with an MLflow run per trial, its steps
    reported (and pruned) through ``report``, and the trial's end state logged."""
    import optuna

    multi = len(spec.directions) > 1
    lock = threading.Lock()

    def wrapped(trial):
        t0 = time.perf_counter()
        with lock:
            trial_run = log.start_trial(trial)
        if trial_run is not None:
            trial.set_user_attr("mlflow_run", trial_run)

        def report(step: int, value: float, metrics: dict | None = None):
            log.log_step(trial_run, trial.number, step, value, metrics)
            if not multi:
                trial.report(float(value), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (running value {value:.4f})")

        try:
            result = spec.objective(trial, report)
        except optuna.TrialPruned:
            log.end_trial(trial_run, trial, "pruned", None, time.perf_counter() - t0)
            raise
        except Exception:
            log.end_trial(trial_run, trial, "failed", None, time.perf_counter() - t0)
            raise
        values = list(result) if isinstance(result, (tuple, list)) else [result]
        log.end_trial(trial_run, trial, "complete", values, time.perf_counter() - t0)
        return tuple(values) if multi else values[0]

    return wrapped


def run_study(spec: StudySpec, *, storage_url: str | None, study_name: str | None, n_trials: int | None,
              timeout: float | None, n_jobs: int, seed: int, pruner_cfg: dict | None,
              experiment: str, mlflow_on: bool = True, progress: bool = True,
              inputs=(), params_text: str | None = None, start: Path | None = None) -> dict:
    """Run ``n_trials`` trials (or until ``timeout``) of the study; returns the study summary."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # multivariate TPE and constant_liar are marked experimental; the marking is not news to users
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study_name = study_name or spec.name
    spec_tags = {k: v for k, v in spec.tags.items() if not k.startswith("_")}
    inputs = list(inputs) + list(spec.tags.get("_inputs", []))
    with local_lock(start=start):
        storage, url = make_storage(storage_url, start)
        study, worker = open_study(spec, storage, study_name, seed, pruner_cfg)
        log = None
        if mlflow_on:
            tags = tracking.run_tags(inputs, params_text=params_text,
                                     extra={"stage": "tune", **spec_tags})
            log = StudyLog(experiment, study_name, url, tags, spec.defaults, spec)
            study.set_user_attr("mlflow_run_id", log.run_id)
        else:
            log = StudyLog(experiment, study_name, url, {}, spec.defaults, spec, enabled=False)
        if _is_file_backed(url):
            with local_lock("ask", start=start):
                n_recovered = recover_dead_trials(study, orphans=True)
        else:
            n_recovered = recover_dead_trials(study)
    def label(trial):
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())

    _serialise_ask(study, url, start, label)
    wrapped = _trial_runner(spec, log)

    t_start = time.perf_counter()
    if n_trials is None or n_trials > 0 or timeout:
        study.optimize(wrapped, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs,
                       show_progress_bar=progress, gc_after_trial=False)
    seconds = time.perf_counter() - t_start
    with local_lock(start=start):
        log.finish(study)
    summary = study_summary(study, spec)
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker]
    summary.update(study=study_name, storage=redact(url), worker=worker, seconds=seconds,
                   mlflow_run_id=log.run_id, n_trials_this_process=len(mine), n_recovered_at_start=n_recovered,
                   n_pruned_this_process=sum(t.state == optuna.trial.TrialState.PRUNED for t in mine))
    return summary


def load_study(storage_url: str | None, study_name: str, start: Path | None = None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, url = make_storage(storage_url, start)
    try:
        return optuna.load_study(study_name=study_name, storage=storage), url
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise EpiflowError(f"no study '{study_name}' in {redact(url)} (studies: "
                           f"{', '.join(names) or 'none'}); run `epiflow tune` first") from None


def rerun_best(spec: StudySpec, study, experiment: str, mlflow_on: bool = True) -> dict:
    """Re-evaluate the best configuration with ``spec.rerun``; logs a 'rerun' child of the study run."""
    import optuna

    if spec.rerun is None:
        raise EpiflowError(f"study '{study.study_name}': this objective has no rerun")
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise EpiflowError(f"study '{study.study_name}' has no complete trial yet")
    if len(spec.directions) == 1:
        best = study.best_trial
    else:  # the Pareto trial best in the first objective
        sign = 1 if spec.directions[0] == "maximize" else -1
        best = max(study.best_trials, key=lambda t: sign * t.values[0])
    result = dict(spec.rerun(dict(best.params)) or {})
    result.setdefault("best_trial", best.number)
    parent = study.user_attrs.get("mlflow_run_id")
    if mlflow_on and parent:
        exp_id = tracking.setup(experiment)
        nums = {k: float(v) for k, v in result.items() if _is_number(v)}
        strs = {f"{tracking.TAG_PREFIX}rerun.{k}": str(v)[:5000] for k, v in result.items() if not _is_number(v)}
        tracking.log_child(parent, exp_id, f"{study.study_name}-rerun-best",
                           tags={KIND_TAG: "rerun", STUDY_TAG: study.study_name, **strs},
                           params={k: v for k, v in best.params.items()}, metrics=nums)
    return result


# ---------------------------------------------------------------------- rerun of a zoo model
def _tuned_config(spec: ModelSpec, best_params: dict, params: dict) -> tuple[dict, dict]:
    """(params.yaml entry of ``<model>-tuned``, its train section) for the best trial's values."""
    new_cfg = {"type": spec.type, **{k: v for k, v in spec.config.items() if k != "max_epochs"}}
    new_train = dict(params.get("train", {}))
    for k, v in best_params.items():
        if k == "epochs":
            new_train["max_epochs"] = int(v)
        else:
            new_cfg[k] = v
    if "epochs" not in best_params and "max_epochs" in spec.config:
        new_cfg["max_epochs"] = spec.config["max_epochs"]
    return new_cfg, new_train


def rerun_zoo(spec: ModelSpec, best_params: dict, params: dict, cohort: Cohort, splits,
              inputs: ZooTuneInputs) -> dict:
    """Outer CV of the best configuration exactly as ``epiflow train`` runs it (same splits,
    seeds, outputs and logging, as model ``<model>-tuned``), then the final model fitted on every
    sample, logged to that run and registered in the MLflow model registry."""
    tuned = f"{spec.name}-tuned"
    new_cfg, new_train = _tuned_config(spec, best_params, params)
    tuned_params = {**params, "models": {tuned: new_cfg}, "train": new_train}
    outdir = Path(inputs.out or f"work/tune/{spec.name}")
    outdir.mkdir(parents=True, exist_ok=True)
    ptext = yaml.safe_dump(tuned_params, sort_keys=False)
    (outdir / "tuned_params.yaml").write_text(ptext)     # a record of what was run
    mtype, cfg = zoo.resolve(tuned, tuned_params["models"], str(outdir / "tuned_params.yaml"))
    rec_inputs = [inputs.encoded, inputs.splits, *cohort.inputs[1:]]
    if isinstance(cfg.get("gene_gene_edges"), str):
        rec_inputs.append(cfg["gene_gene_edges"])
    rec = Record(out=outdir / "outer_cv", metrics=outdir / "outer_cv_metrics.json",
                 plots=outdir / "outer_cv_roc.json", study=params.get("study", "epiflow"),
                 mlflow=inputs.mlflow, params_text=ptext, inputs=tuple(rec_inputs))
    summary = run_and_record(ModelSpec(tuned, mtype, cfg), cohort, splits, rec, train_cfg=new_train,
                             repeats=inputs.repeats or None, jobs=0, quiet=inputs.quiet)
    print(f"{tuned} ({mtype}): AUC {summary['auc_mean']:.3f} +- {summary['auc_sd']:.3f} over "
          f"{summary['n_folds']} folds, {summary['n_parameters']} parameters, {summary['train_time_s']:.0f} s")
    result = {"outer_auc_mean": summary["auc_mean"], "outer_auc_sd": summary["auc_sd"],
              "outer_n_folds": summary["n_folds"], "train_run_id": summary.get("mlflow_run_id", "")}
    if inputs.mlflow and summary.get("mlflow_run_id"):
        result.update(register_final_model(tuned, mtype, new_cfg, new_train, cohort,
                                           summary["mlflow_run_id"]))
    return result


class GeneNetModel:
    """An MLflow pyfunc model: gene x class counts (n, C*G) -> probability of case."""

    def __init__(self, net, standardiser, n_classes: int, input_mode: str):
        self.net, self.standardiser = net.cpu(), standardiser
        self.n_classes, self.input_mode = n_classes, input_mode

    def predict(self, X):
        import scipy.sparse as sp
        import torch

        from models.genes.data import make_source
        from models.genes.training import predict_proba

        X = X.to_numpy() if hasattr(X, "to_numpy") else X
        X = sp.csr_matrix(np.asarray(X, dtype=np.float32)) if not sp.issparse(X) else X.tocsr()
        src = make_source(X, self.standardiser, self.n_classes, torch.device("cpu"),
                          mode=self.input_mode, cache_bytes=0)
        return predict_proba(self.net, src)


def _final_gene_net(mtype: str, c: dict, t: dict, seed: int, cohort: Cohort):
    """(pyfunc-able model, probabilities, seed used) of a gene net fitted on every sample."""
    from models.genes import fit_predict as fit_gene_net

    c = cohort.fit_config(c)
    # a net can collapse to a constant output (seen for biosparse on some training folds);
    # such a fit is useless as a registered model, so refit with the next seeds (at most 3)
    for attempt in range(3):
        fit_seed = seed + attempt
        proba, info = fit_gene_net(mtype, cohort.counts, cohort.y, cohort.counts, n_classes=cohort.n_classes,
                                   gene_pathways=cohort.gene_pathways, params=c,
                                   train={**t, "seed": fit_seed}, return_model=True)
        if float(np.std(proba)) > 1e-6:
            break
        print(f"tune: the final fit with seed {fit_seed} predicts a constant; refitting")
    return (GeneNetModel(info["model"], info["standardiser"], cohort.n_classes, info["input_mode"]),
            proba, fit_seed)


def _final_sgd(mtype: str, c: dict, seed: int, cohort: Cohort):
    """(pyfunc-able model, probabilities, seed) of an SGD baseline fitted on every sample."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    mt = REGISTRY[mtype]
    kw = {**{k: mt.default(k) for k in mt.keys}, **c}
    scale = kw.pop("scale", True)
    clf = SGDClassifier(loss="log_loss", penalty=mt.penalty, random_state=seed, **kw)
    pipe = make_pipeline(MaxAbsScaler(), clf) if scale else make_pipeline(clf)
    pipe.fit(cohort.variants, cohort.y)
    return _SklearnProba(pipe), pipe.predict_proba(cohort.variants)[:, 1], seed


def register_final_model(name: str, mtype: str, cfg: dict, train_cfg: dict, cohort: Cohort,
                         run_id: str) -> dict:
    """Fit the configuration on every sample, log it as an MLflow pyfunc model to ``run_id`` and
    register it as a new version of the registered model ``epiflow-<name>``."""
    import mlflow
    import mlflow.pyfunc
    from sklearn.metrics import roc_auc_score

    c = {k: v for k, v in cfg.items() if k not in ("type", "max_epochs")}
    t = dict(train_cfg)
    if "max_epochs" in cfg:
        t["max_epochs"] = cfg["max_epochs"]
    seed = int(t.pop("seed", 0))
    mt = REGISTRY[mtype]
    if mt.gene_net:
        wrapped, proba, fit_seed = _final_gene_net(mtype, c, t, seed, cohort)
    elif mt.penalty is not None:
        wrapped, proba, fit_seed = _final_sgd(mtype, c, seed, cohort)
    else:
        return {"registered": "no (forest models are not registered)"}
    degenerate = float(np.std(proba)) <= 1e-6
    reg_name = f"epiflow-{name}"
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=_pyfunc(wrapped),
                                       pip_requirements=["epiflow", "torch", "scikit-learn", "scipy", "numpy"])
    y = cohort.y
    in_sample = float(roc_auc_score(y, proba)) if len(np.unique(y)) > 1 else float("nan")
    mv = mlflow.register_model(info.model_uri, reg_name,
                               tags={"final_fit_seed": str(fit_seed), "in_sample_auc": f"{in_sample:.4f}",
                                     "degenerate": str(degenerate).lower()})
    if degenerate:
        print(f"tune: warning: {reg_name} version {mv.version} predicts a constant (every fit collapsed)")
    return {"registered_model": reg_name, "model_version": str(mv.version), "model_uri": info.model_uri,
            "final_fit_seed": fit_seed, "final_in_sample_auc": in_sample, "final_degenerate": str(degenerate)}


class _SklearnProba:
    def __init__(self, pipe):
        self.pipe = pipe

    def predict(self, X):
        X = X.to_numpy() if hasattr(X, "to_numpy") else X
        return self.pipe.predict_proba(X)[:, 1]


def _pyfunc(model):
    """Wrap an object with ``predict(X) -> probabilities`` as an MLflow pyfunc PythonModel."""
    import mlflow.pyfunc

    class EpiflowModel(mlflow.pyfunc.PythonModel):
        """``predict(model_input)`` -> case probabilities."""

        def __init__(self, model):
            self.model = model

        def predict(self, context, model_input, params=None):
            return self.model.predict(model_input)

    return EpiflowModel(model)
