"""`epiflow tune`: an Optuna study of a zoo model (``--model NAME``) or of NGG (``--ngg``).

Zoo models are scored by the mean ROC AUC over inner stratified folds of the training part of one
outer fold of the shared splits (the outer test samples are never read); each fold's running mean
is reported to the pruner. NGG studies come from ``pipelines.tune_ngg`` (multi-objective, no
pruning). ``--rerun-best`` re-runs the best configuration on the outer CV and registers it.

Writes metrics/tune/<study>.json (best value, default value, trial counts, wall time); the study
itself lives in the Optuna storage and the MLflow study run.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipelines.argtypes import count, number, renamed
from pipelines.atomic import precheck_output_file, write_metrics
from pipelines.errors import EpiflowError
from pipelines.params import load_params, section


def add_arguments(p):
    what = p.add_mutually_exclusive_group()
    what.add_argument("--model", default=None,
                      help="a model under `models:` in params.yaml (default: tune.model); "
                           "`--model ngg` is the same as --ngg")
    what.add_argument("--ngg", action="store_true", help="tune NGG (B, d, lambda, R, iterations)")
    p.add_argument("--n-trials", type=count(1), default=None,
                   help="trials run by THIS process (default: tune.n_trials); several processes add up")
    p.add_argument("--timeout", type=number(0.0, lo_open=True), default=None, help="stop starting trials after this many seconds")
    p.add_argument("--jobs", dest="n_jobs", type=count(1), default=1, metavar="N",
                   help="trials run in parallel threads in this process")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: sqlite:///PATH.db (default: mlruns/optuna.db next to the "
                        "MLflow store), journal:PATH (journal file, for several local processes) or "
                        "any database URL, e.g. postgresql://user:pw@host/db")
    p.add_argument("--study-name", default=None, help="Optuna study name (default: tune-<model> or tune-ngg)")
    p.add_argument("--seed", type=count(0), default=None, help="sampler seed (default: tune.seed)")
    p.add_argument("--rerun-best", action="store_true",
                   help="re-run the study's best configuration on the outer CV, log it and register "
                        "the final model in the MLflow model registry (no new trials)")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                   help="device for the trials (default: train.device / tune_ngg.device)")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--metrics", default=None, help="summary JSON (default: metrics/tune/<study>.json)")
    p.add_argument("--out", default=None, help="folder for --rerun-best outputs (default: work/tune/<model>)")
    p.add_argument("--repeats", type=count(1), default=None, help="--rerun-best: first N repeats of the splits only")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    renamed(p, "--n-jobs", "--jobs")                     # the spelling of earlier releases


def build_spec(args, params: dict):
    if args.ngg or args.model == "ngg":
        from pipelines.tune_ngg import ngg_study_spec

        return ngg_study_spec(params, device=args.device)
    from pipelines.tune import ZooTuneInputs, zoo_study_spec

    model = args.model or section(params, "tune", args.params).get("model")
    if not model:
        raise EpiflowError(f"no model to tune: pass --model NAME or set tune.model in {args.params}")
    args.model = model
    inputs = ZooTuneInputs(params_path=args.params, encoded=args.encoded, splits=args.splits, gmt=args.gmt,
                           seed=args.seed, device=args.device, out=args.out, repeats=args.repeats,
                           mlflow=not args.no_mlflow, quiet=args.quiet)
    return zoo_study_spec(model, params, inputs)


def _shown_storage(url: str) -> str:
    """A SQLite storage inside the working directory as a relative URL (metrics files travel
    with the project), anything else as given (already without a password)."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        try:
            rel = Path(url[len(prefix):]).resolve().relative_to(Path.cwd().resolve())
            return prefix + rel.as_posix()
        except ValueError:
            pass
    return url


def run(args) -> int:
    from pipelines import tune

    params = load_params(args.params)
    tcfg = section(params, "tune", args.params)
    if args.n_jobs < 1:
        raise EpiflowError(f"--jobs must be >= 1, got {args.n_jobs}")
    n_trials = args.n_trials if args.n_trials is not None else tcfg.get("n_trials")
    n_trials = None if n_trials is None else int(n_trials)
    if n_trials is not None and n_trials < 0:
        raise EpiflowError(f"--n-trials must be >= 0, got {n_trials}")
    if n_trials is None and args.timeout is None:
        raise EpiflowError("give --n-trials or --timeout (or tune.n_trials in params.yaml)")
    seed = int(args.seed if args.seed is not None else tcfg.get("seed", 0))
    args.seed = seed
    study_prefix = params.get("study", "epiflow")
    experiment = tcfg.get("experiment") or f"{study_prefix}-tune"
    if args.storage is None and tcfg.get("storage"):
        args.storage = str(tcfg["storage"])
    inputs = [args.params, args.encoded, args.splits, args.gmt]
    if args.metrics:
        precheck_output_file(args.metrics, inputs, "--metrics")

    t0 = time.perf_counter()
    spec = build_spec(args, params)
    study_name = args.study_name or spec.name
    if not args.metrics:
        precheck_output_file(f"metrics/tune/{study_name}.json", inputs, "metrics")
    tune.check_storage(args.storage)
    if args.rerun_best:
        study, _ = tune.load_study(args.storage, study_name)
        result = tune.rerun_best(spec, study, experiment, mlflow_on=not args.no_mlflow)
        for k, v in result.items():
            print(f"  {k}: {v}")
        return 0
    params_text = Path(args.params).read_text() if Path(args.params).is_file() else None
    summary = tune.run_study(
        spec, storage_url=args.storage, study_name=study_name, n_trials=n_trials,
        timeout=args.timeout, n_jobs=args.n_jobs, seed=seed, pruner_cfg=tcfg.get("pruner"),
        experiment=experiment, mlflow_on=not args.no_mlflow, progress=not args.quiet,
        params_text=params_text)
    m = summary["metrics"]
    best = summary["best"]
    out = {"study": study_name, "storage": _shown_storage(summary["storage"]),
           "worker": summary["worker"],
           "n_trials_this_process": summary["n_trials_this_process"],
           "n_pruned_this_process": summary["n_pruned_this_process"],
           "n_complete": m.get("n_complete", 0), "n_pruned": m.get("n_pruned", 0),
           "n_failed": m.get("n_fail", 0), "wall_time_s": round(time.perf_counter() - t0, 2),
           "mlflow_run_id": summary.get("mlflow_run_id") or ""}
    for k in ("best_value", "default_value", "best_trial", "best_params", "pareto", "default_values"):
        if k in best:
            out[k] = best[k]
    write_metrics(Path(args.metrics or f"metrics/tune/{study_name}.json"), out)
    line = (f"{study_name}: {out['n_trials_this_process']} trials here "
            f"({out['n_pruned_this_process']} pruned); study has {out['n_complete']} complete, "
            f"{out['n_pruned']} pruned, {out['n_failed']} failed")
    if "best_value" in out:
        line += f"; best {spec.metric_names[0]} {out['best_value']:.4f} (trial {out['best_trial']})"
    if "default_value" in out:
        line += f", defaults {out['default_value']:.4f}"
    print(line)
    return 0
