"""`epiflow train --model NAME`: cross-validate one model of params.yaml on the shared splits.

Writes (atomically) DIR/oof.parquet (out-of-fold probabilities for every repeat and fold),
DIR/folds.tsv (AUC per fold), the metrics JSON (mean/sd AUC, parameters, time) and the ROC
points of repeat 0 for `dvc plots`; logs a parent MLflow run with one child run per fold
(:mod:`pipelines.cv_record` around :func:`pipelines.workflows.cv.cross_validate`).
"""
from __future__ import annotations

from pathlib import Path

from models.registry import REGISTRY
from pipelines.argtypes import count
from pipelines.atomic import precheck_output_dir, precheck_output_file
from pipelines import zoo
from pipelines.cv_record import Record, run_and_record
from pipelines.executor import add_executor_arguments, open_executor, spec_from
from pipelines.params import load_params, section
from pipelines.workflows.cohort import Cohort, load_splits
from pipelines.workflows.cv import ModelSpec, _cuda_available, check_device


def add_arguments(p):
    p.add_argument("--model", required=True, help="a model name under `models:` in params.yaml")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: work/train/MODEL)")
    p.add_argument("--metrics", default=None, help="metrics JSON (default: metrics/train/MODEL.json)")
    p.add_argument("--plots", default=None, help="ROC points JSON (default: plots/roc/MODEL.json)")
    p.add_argument("--repeats", type=count(1), default=None, help="use only the first N repeats of the splits")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=count(0), default=0,
                   help="folds fitted in parallel processes (default 0: one per CPU core, at most 4; "
                        "1 on a GPU). Results do not depend on it: every fold has its own seed")
    add_executor_arguments(p)


def run(args) -> int:
    params = load_params(args.params)
    mtype, cfg = zoo.resolve(args.model, section(params, "models", args.params), args.params)
    train_cfg = dict(section(params, "train", args.params))
    study = params.get("study", "epiflow")
    gmt = args.gmt or section(params, "encode").get("gmt")
    needs_gmt = REGISTRY[mtype].needs_pathways and gmt
    if REGISTRY[mtype].trains_net:
        check_device(train_cfg.get("device", "auto"), f"{args.params}: train.device")
    inputs = [args.encoded, args.splits] + ([gmt] if needs_gmt else [])
    if isinstance(cfg.get("gene_gene_edges"), str):
        inputs.append(cfg["gene_gene_edges"])
    params_file = Path(args.params)
    rec = Record(out=Path(args.out or f"work/train/{args.model}"),
                 metrics=Path(args.metrics or f"metrics/train/{args.model}.json"),
                 plots=Path(args.plots or f"plots/roc/{args.model}.json"), study=study,
                 mlflow=not args.no_mlflow, inputs=tuple(inputs),
                 params_text=params_file.read_text() if params_file.is_file() else None)
    precheck_output_dir(rec.out, inputs)
    precheck_output_file(rec.metrics, inputs, "--metrics")
    precheck_output_file(rec.plots, inputs + [rec.metrics], "--plots")
    cohort = Cohort.load(args.encoded, gmt if needs_gmt else None)
    splits = load_splits(args.splits, cohort, args.repeats, "train --repeats")
    device = train_cfg.get("device", "auto")
    ex_spec = spec_from(args, params, device="cuda" if device == "cuda" or (device == "auto" and _cuda_available())
                        else "cpu")
    with open_executor(ex_spec):  # --executor dask: the (model, fold) pairs are tasks of the cluster
        summary = run_and_record(ModelSpec(args.model, mtype, cfg), cohort, splits, rec, train_cfg=train_cfg,
                                 repeats=args.repeats, jobs=args.jobs, quiet=args.quiet)
    print(f"{args.model} ({mtype}): AUC {summary['auc_mean']:.3f} +- {summary['auc_sd']:.3f} over "
          f"{summary['n_folds']} folds, {summary['n_parameters']} parameters, {summary['train_time_s']:.0f} s")
    return 0
