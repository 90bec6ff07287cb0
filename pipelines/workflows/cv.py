"""Cross-validation of one model of the registry on a cohort's shared splits.

:func:`cross_validate` is the fold loop every caller shares (``epiflow train``, the tuning
objective and its outer re-run, learning curves, sparsity sweeps, benchmarks): fold ``(r, k)``
is fitted with seed ``train.seed + 1000 * r + k`` in this process or in ``jobs`` worker
processes (results do not depend on it) and scored by ROC AUC on its test part. Nothing is
logged or written here; ``on_fold`` sees each fold as it completes (MLflow child runs, pruning).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

import models.estimators  # noqa: F401  (what REGISTRY[...].fit_predict runs: a real dependency)
from models.registry import REGISTRY
from pipelines import executor
from pipelines.errors import EpiflowError
from pipelines.workflows.cohort import Cohort


@dataclass(frozen=True)
class ModelSpec:
    """A model of params.yaml: its name, registry type and config (as the user wrote it)."""
    name: str
    type: str
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.type not in REGISTRY:
            raise EpiflowError(f"unknown model type '{self.type}' for model '{self.name}'")


@dataclass
class FoldResult:
    repeat: int
    fold: int
    seed: int
    auc: float
    proba: np.ndarray        # float64 test probabilities
    test: np.ndarray         # test indices into the cohort
    n_train: int
    seconds: float
    info: dict

    @property
    def n_test(self) -> int:
        return int(self.test.size)


@dataclass
class CVResult:
    spec: ModelSpec
    folds: list
    seconds: float = 0.0

    @property
    def aucs(self) -> np.ndarray:
        return np.array([f.auc for f in self.folds])

    @property
    def n_parameters(self):
        """The last fold's parameter count that is known (None: none reported)."""
        n = None
        for f in self.folds:
            n = f.info.get("n_parameters") if f.info.get("n_parameters") is not None else n
        return n

    def fold_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"repeat": f.repeat, "fold": f.fold, "auc": f.auc, "n_train": f.n_train,
                              "n_test": f.n_test, "train_time_s": f.seconds} for f in self.folds])

    def oof(self, cohort: Cohort) -> pd.DataFrame:
        """Out-of-fold probabilities: repeat, fold, sample_id, y, proba."""
        return pd.concat([pd.DataFrame({"repeat": f.repeat, "fold": f.fold,
                                        "sample_id": cohort.sample_ids[f.test], "y": cohort.y[f.test],
                                        "proba": f.proba}) for f in self.folds], ignore_index=True)


def fold_seed(base_seed: int, repeat: int, fold: int) -> int:
    return int(base_seed) + 1000 * int(repeat) + int(fold)


def resolve_jobs(jobs: int, n_folds: int, device: str = "auto", uses_device: bool = True) -> int:
    """Worker processes for the folds: ``jobs`` if given, else one per core (at most 4), and 1
    when the nets train on a GPU (the device is shared). A model that never touches the GPU
    (``uses_device`` False: the scikit-learn baselines) gets the cores whatever the device."""
    if jobs < 0:
        raise EpiflowError(f"--jobs must be >= 0, got {jobs}")
    if jobs == 0:
        if uses_device and (device == "cuda" or (device in (None, "auto") and _cuda_available())):
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        jobs = min(cores, 4)
    return max(1, min(jobs, n_folds))


def check_device(device: str | None, where: str = "train.device") -> None:
    """Refuse, before any work, a torch device this machine does not have (one line)."""
    if device == "cuda" and not _cuda_available():
        raise EpiflowError(f"{where}: device 'cuda' requested but no CUDA device is available")


def _cuda_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _fit_fold(mtype: str, cfg: dict, data: dict, train_cfg: dict, seed: int):
    """One training fold (a worker process's task with jobs > 1): (probabilities, info, seconds)."""
    t0 = time.perf_counter()
    proba, info = REGISTRY[mtype].fit_predict(cfg, **data, train=train_cfg, seed=seed)
    return np.asarray(proba, dtype=np.float64).reshape(-1), info, time.perf_counter() - t0


def _fit_fold_task(w: tuple):
    """One fold as a cluster task (``w`` = the arguments of :func:`_fit_fold`)."""
    return _fit_fold(*w)


def _score(y, proba, nonfinite_auc) -> float:
    from sklearn.metrics import roc_auc_score

    if nonfinite_auc is not None and not np.isfinite(proba).all():
        return float(nonfinite_auc)     # a diverged net scores as given (tuning: chance)
    return float(roc_auc_score(y, proba))


def _check_pathways(spec: ModelSpec, mt, cohort: Cohort) -> None:
    """A head wired by gene sets on a GMT that names no gene of the cohort would silently send
    every gene to the dummy neuron: refuse it."""
    if (mt.sparse or mt.members) and cohort.gene_pathways is not None and not cohort.pathway_names:
        gmt = next((p for p in cohort.inputs[1:] if p), "the gene-set file")
        raise EpiflowError(f"{gmt}: no gene set names a gene of the cohort ({len(cohort.genes)} genes, "
                           f"e.g. {', '.join(cohort.genes[:3])}); model '{spec.name}' ({spec.type}) "
                           "is wired by gene sets: check the gene identifiers (symbols vs Ensembl ids)")


def cross_validate(spec: ModelSpec, cohort: Cohort, folds: Iterable, *, train_cfg: dict,
                   jobs: int = 1, train_subset: Callable | None = None,
                   on_fold: Callable[[FoldResult], None] | None = None, progress: str | None = None,
                   nonfinite_auc: float | None = None) -> CVResult:
    """Fit ``spec`` on every fold of ``folds`` ((repeat, fold, train, test) tuples, e.g.
    ``splits.iter_folds(repeats)``) and score it on the test part.

    train_cfg: the ``train:`` section; its ``seed`` (default 0) is the base of the fold seeds.
    jobs: worker processes (``resolve_jobs``); 1 fits in this process. train_subset: optional
    ``(repeat, fold, train) -> indices`` fitting on part of each training fold (learning curves).
    on_fold: called with each :class:`FoldResult` in fold order (may raise to stop, e.g. pruning).
    progress: a tqdm label (None: no bar). nonfinite_auc: the AUC of a fold whose probabilities
    are not finite (None: an error).
    """
    t_all = time.perf_counter()
    train = dict(train_cfg)
    base_seed = int(train.pop("seed", 0))
    mt = REGISTRY[spec.type]
    _check_pathways(spec, mt, cohort)
    cfg = cohort.fit_config(spec.config)
    tasks = []
    for r, k, tr, te in folds:
        idx = train_subset(r, k, tr) if train_subset is not None else tr
        tasks.append((r, k, idx, te, fold_seed(base_seed, r, k)))
    # each fold's matrices are sliced when its fit starts (not all folds' up front: at exome
    # scale a fold is ~1 GB); a cluster gets them all as its task list
    work = ((spec.type, cfg, cohort.fold_data(idx, te, mt.reads), train, seed)
            for _, _, idx, te, seed in tasks)
    if executor.current() is not None and len(tasks) > 0:  # the folds as tasks of a cluster, in order
        results = executor.current().map(_fit_fold_task, list(work))
    elif jobs > 1 and len(tasks) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(_fit_fold)(*w) for w in work)
    else:
        results = (_fit_fold(*w) for w in work)
    out = []
    bar = _bar(zip(tasks, results), len(tasks), progress)
    for (r, k, idx, te, seed), (proba, info, seconds) in bar:
        res = FoldResult(repeat=r, fold=k, seed=seed, auc=_score(cohort.y[te], proba, nonfinite_auc),
                         proba=proba, test=te, n_train=len(idx), seconds=seconds, info=info)
        out.append(res)
        if progress is not None:
            bar.set_postfix(auc=f"{res.auc:.3f}")
        if on_fold is not None:
            on_fold(res)
    return CVResult(spec=spec, folds=out, seconds=time.perf_counter() - t_all)


def _bar(it, total: int, label: str | None):
    if label is None:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=label, unit="fold", leave=False)
