"""The contract between `epiflow tune` (study runner: storage, MLflow, pruning, n_jobs) and the
objectives it can optimise (a zoo model over inner CV folds, or NGG hyperparameters).

An objective module builds a :class:`StudySpec`; the runner owns everything else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class StudySpec:
    """What one kind of study needs from the runner.

    name: default study name (e.g. ``"tune-biosparse"`` or ``"tune-ngg"``).
    directions: one entry per objective value, ``"maximize"`` or ``"minimize"``.
    metric_names: names for the objective values as logged to MLflow (same length as directions).
    objective: ``objective(trial, report) -> float | tuple[float, ...]``. ``report(step, value,
        metrics=None)`` is given by the runner: it logs a per-step child run (a fold, a
        repetition...) under the trial's MLflow run and calls ``trial.report``/``trial.should_prune``
        for single-objective studies, raising ``optuna.TrialPruned`` when the pruner says so.
    defaults: the untuned configuration (logged on the study run; the baseline to beat).
    rerun: optional ``rerun(best_params) -> dict`` that re-evaluates the best configuration
        (outer CV for zoo models, held-out phenotype for NGG) and returns metrics to log.
    tags: extra MLflow tags for the study run (data versions, model type...); keys starting with
        ``_`` are not tags: ``_inputs`` lists input paths whose data versions tag the study run.
    step_name: what one ``report`` step is ("fold", "repetition"...), used in run names.
    """

    name: str
    directions: list[str]
    metric_names: list[str]
    objective: Callable[..., Any]
    defaults: dict = field(default_factory=dict)
    rerun: Callable[[dict], dict] | None = None
    tags: dict = field(default_factory=dict)
    step_name: str = "step"
