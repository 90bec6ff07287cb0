"""``epiflow ngg STEP``: the NGG part of the pipeline as DVC stages.

    epiflow ngg pheno           # ngg_pheno:    planted SNP / SNP-pair phenotype over the cohort's genotypes
    epiflow ngg 1d              # ngg_1d:       exact per-SNP regression and NGG 1D scores
    epiflow ngg 2d              # ngg_2d:       exhaustive exact pair scan (or NGG 2D), map pyramid
    epiflow ngg heritability    # heritability: PCR adjusted R^2 of top SNPs, + top pairs, + random pairs

Every setting comes from the ``ngg:`` section of params.yaml (each key is documented there).
Genotypes (``ngg.input``) are a SNP dosage directory (``epiflow encode --snp-dosage`` /
``encode.snp_dosage``, or ``epiflow ingest-bed``) or a PLINK 1 fileset (prefix or .bed path). The
phenotype (``ngg.pheno``) is a file (PLINK, GEMMA or a TSV with a header, column ``ngg.pheno_col``;
a sample sheet's ``case``/``control`` column is read as 1/0) or a directory written by
``epiflow ngg pheno`` (``pheno.tsv`` plus ``truth.json``). When the planted truth is known, the
stages report recall of the planted SNPs and pairs.

Outputs (each written atomically; a failed step leaves the previous outputs untouched):
``work/ngg_pheno``, ``work/ngg_1d``, ``work/ngg_2d``, ``work/heritability`` (tables, pyramid,
``summary.json`` without timings, so reruns give identical bytes), ``metrics/ngg_<step>.json``
(numbers, timings, MLflow run id) and figures copied to ``plots/ngg/``. Each step is one MLflow
run in the study's experiment with the ``ngg`` params, the metrics, and the tables and figures as
artifacts, tagged with the git commit and the DVC hashes of its inputs.
"""
from __future__ import annotations

import json
import math
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_dir, atomic_path, write_metrics
from pipelines.executor import add_executor_arguments, open_executor, spec_from
from pipelines.params import load_params
from pipelines.workflows.ngg import DEFAULTS, OUT, STEPS, load_config, run_step  # noqa: F401  (DEFAULTS: tests)
from pipelines.workflows.scan import flat_metrics

STAGE = {"pheno": "ngg_pheno", "1d": "ngg_1d", "2d": "ngg_2d", "heritability": "heritability"}
METRICS = {s: f"metrics/ngg_{s}.json" for s in STEPS}
PLOTS = "plots/ngg"
DEPS = {"pheno": ("input",), "1d": ("input", "pheno"), "2d": ("input", "pheno"), "heritability": ("input", "pheno")}


def add_arguments(p) -> None:
    p.add_argument("step", choices=STEPS, help="which stage to run")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    add_executor_arguments(p)


def _log_mlflow(step: str, cfg: dict, experiment: str, tmp: Path, metrics: dict) -> str:
    import mlflow
    import yaml

    from pipelines import tracking

    tracking.setup(experiment)
    root = tracking.store_root().resolve()
    inputs, extra = [], {"stage": STAGE[step]}
    paths = [cfg[k] for k in DEPS[step]] + ([OUT["1d"], OUT["2d"]] if step == "heritability" else [])
    for x in paths:
        f = Path(x).resolve()
        if f.exists() and (f == root or root in f.parents):
            inputs.append(f)
        else:
            extra[f"input.{Path(x).name}"] = str(x)
    tags = tracking.run_tags(inputs, params_text=yaml.safe_dump(cfg, sort_keys=True), extra=extra)
    with tracking.parent_run(STAGE[step], tags, tracking.flatten_params(cfg)) as run:
        mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in flat_metrics(metrics).items()})
        for f in sorted(tmp.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                mlflow.log_artifacts(str(f), artifact_path=f.name)
            else:
                mlflow.log_artifact(str(f))
        return run.info.run_id


def run(args) -> int:
    cfg, experiment = load_config(args.params)
    step = args.step
    out = Path(OUT[step])
    t0, c0 = time.perf_counter(), _cpu_seconds()
    ex = spec_from(args, load_params(args.params), device="cuda" if cfg.get("device") == "cuda" else "cpu")
    with atomic_dir(out) as tmp:
        with open_executor(ex):  # --executor dask: the exact 2D scan's blocks as cluster tasks
            summary, metrics, figs = run_step(step, cfg, tmp)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=_json) + "\n")
        metrics["seconds"]["total"] = time.perf_counter() - t0
        metrics["seconds"]["cpu"] = _cpu_seconds() - c0   # all threads and worker processes
        if not args.no_mlflow:
            metrics["mlflow_run_id"] = _log_mlflow(step, cfg, experiment, tmp, metrics)
        figs = {k: out / v.relative_to(tmp) for k, v in figs.items()}
    for name, src in figs.items():
        with atomic_path(Path(PLOTS) / name, suffix=".png") as dst:
            shutil.copyfile(src, dst)
    write_metrics(METRICS[step], metrics)
    print(f"ngg {step}: wrote {out}/ and {METRICS[step]} ({metrics['seconds']['total']:.1f} s)")
    return 0


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
