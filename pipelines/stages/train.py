"""`epiflow train --model NAME`: cross-validate one model of params.yaml on the shared splits.

Writes (atomically) DIR/oof.parquet (out-of-fold probabilities for every repeat and fold),
DIR/folds.tsv (AUC per fold), the metrics JSON (mean/sd AUC, parameters, time) and the ROC
points of repeat 0 for `dvc plots`; logs a parent MLflow run with one child run per fold.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import tracking, zoo
from pipelines.atomic import atomic_dir, write_json
from pipelines.errors import EpiflowError
from pipelines.params import load_params, section


def add_arguments(p):
    p.add_argument("--model", required=True, help="a model name under `models:` in params.yaml")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--encoded", default="work/encoded", help="output of `epiflow encode`")
    p.add_argument("--splits", default="work/splits.npz", help="output of `epiflow splits`")
    p.add_argument("--gmt", default=None, help="gene sets (default: encode.gmt in params.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: work/train/MODEL)")
    p.add_argument("--metrics", default=None, help="metrics JSON (default: metrics/train/MODEL.json)")
    p.add_argument("--plots", default=None, help="ROC points JSON (default: plots/roc/MODEL.json)")
    p.add_argument("--repeats", type=int, default=None, help="use only the first N repeats of the splits")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=int, default=0,
                   help="folds fitted in parallel processes (default 0: one per CPU core, at most 4; "
                        "1 on a GPU). Results do not depend on it: every fold has its own seed")


def resolve_jobs(jobs: int, n_folds: int, device: str = "auto") -> int:
    """Worker processes for the folds: ``jobs`` if given, else one per core (at most 4), and 1
    when the nets train on a GPU (the device is shared)."""
    if jobs < 0:
        raise EpiflowError(f"--jobs must be >= 0, got {jobs}")
    if jobs == 0:
        import os

        if device == "cuda" or (device in (None, "auto") and _cuda_available()):
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        jobs = min(cores, 4)
    return max(1, min(jobs, n_folds))


def _cuda_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _fit_fold(mtype, cfg, counts_train, counts_test, variants_train, variants_test, y_train,
              n_classes, gene_pathways, train_cfg, seed):
    """One training fold (runs in a worker process when --jobs > 1): (probabilities, parameter
    count, seconds)."""
    t0 = time.perf_counter()
    proba, info = zoo.fit_predict(mtype, cfg, counts_train=counts_train, counts_test=counts_test,
                                  variants_train=variants_train, variants_test=variants_test,
                                  y_train=y_train, n_classes=n_classes, gene_pathways=gene_pathways,
                                  train=train_cfg, seed=seed)
    return (np.asarray(proba, dtype=np.float64).reshape(-1), info.get("n_parameters"),
            time.perf_counter() - t0)


def roc_points(y, p, max_points: int = 400) -> list[dict]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return [{"fpr": round(float(a), 5), "tpr": round(float(b), 5)} for a, b in zip(fpr, tpr)]


def run(args) -> int:
    from sklearn.metrics import roc_auc_score
    from tqdm import tqdm

    from pipelines.encode import load_encoded
    from pipelines.io.gmt import gene_pathway_index, read_gmt
    from pipelines.splits import load_splits

    params = load_params(args.params)
    mtype, cfg = zoo.resolve(args.model, section(params, "models", args.params), args.params)
    train_cfg = dict(section(params, "train", args.params))
    study = params.get("study", "epiflow")
    out = Path(args.out or f"work/train/{args.model}")
    metrics_path = Path(args.metrics or f"metrics/train/{args.model}.json")
    plots_path = Path(args.plots or f"plots/roc/{args.model}.json")

    enc = load_encoded(args.encoded)
    sample_ids = enc.samples["sample_id"].astype(str).to_numpy()
    y = enc.samples["y"].to_numpy().astype(np.int64)
    splits = load_splits(args.splits, sample_ids)
    gmt = args.gmt or section(params, "encode").get("gmt")
    inputs = [args.encoded, args.splits]
    gene_pathways = None
    if zoo.needs_pathways(mtype, cfg) and gmt:
        gene_pathways, pathway_names = gene_pathway_index(enc.genes, read_gmt(gmt))
        inputs.append(gmt)
    fit_cfg = cfg
    if isinstance(cfg.get("gene_gene_edges"), str):
        fit_cfg = {**cfg, "gene_gene_edges": zoo.load_gene_gene_edges(cfg["gene_gene_edges"], enc.genes)}
        inputs.append(cfg["gene_gene_edges"])
    counts = enc.counts.tocsr()
    variants = enc.variants.tocsr()
    base_seed = int(train_cfg.pop("seed", 0))

    folds = list(splits.iter_folds(args.repeats))
    jobs = resolve_jobs(args.jobs, len(folds), train_cfg.get("device", "auto"))
    model_params = {"model": args.model, "type": mtype, **cfg, **{f"train.{k}": v for k, v in train_cfg.items()},
                    "n_samples": len(y), "n_genes": len(enc.genes), "n_variants": variants.shape[1],
                    "repeats": splits.repeats if args.repeats is None else min(args.repeats, splits.repeats),
                    "folds": splits.folds}
    log = not args.no_mlflow
    if log:
        exp_id = tracking.setup(study)
        tags = tracking.run_tags(inputs, params_text=Path(args.params).read_text() if Path(args.params).exists() else None,
                                 extra={"model": args.model, "model_type": mtype, "stage": "train"})
    oof = []
    fold_rows = []
    t_all = time.perf_counter()

    def body(parent_id=None):
        n_parameters = None
        reads = zoo.reads(mtype)
        tasks = [(r, k, tr, te, base_seed + 1000 * r + k) for r, k, tr, te in folds]
        work = [(mtype, fit_cfg, counts[tr] if "counts" in reads else None,
                 counts[te] if "counts" in reads else None,
                 variants[tr] if "variants" in reads else None,
                 variants[te] if "variants" in reads else None,
                 y[tr], len(enc.classes), gene_pathways, train_cfg, seed) for _, _, tr, te, seed in tasks]
        if jobs > 1:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=jobs, return_as="generator")(delayed(_fit_fold)(*w) for w in work)
        else:
            results = (_fit_fold(*w) for w in work)
        bar = tqdm(zip(tasks, results), total=len(tasks), desc=f"train {args.model}", unit="fold",
                   disable=args.quiet, leave=False)
        for (r, k, tr, te, seed), (proba, n_par, seconds) in bar:
            auc = float(roc_auc_score(y[te], proba))
            n_parameters = n_par if n_par is not None else n_parameters
            fold_rows.append({"repeat": r, "fold": k, "auc": auc, "n_train": len(tr), "n_test": len(te),
                              "train_time_s": seconds})
            oof.append(pd.DataFrame({"repeat": r, "fold": k, "sample_id": sample_ids[te], "y": y[te],
                                     "proba": proba}))
            bar.set_postfix(auc=f"{auc:.3f}")
            if parent_id is not None:
                tracking.log_child(parent_id, exp_id, f"{args.model}-r{r}f{k}", tags=tags,
                                   params={"repeat": r, "fold": k, "seed": seed},
                                   metrics={"auc": auc, "n_train": len(tr), "n_test": len(te),
                                            "train_time_s": seconds})
        return n_parameters

    def finish(n_parameters):
        aucs = np.array([f["auc"] for f in fold_rows])
        return (_summary(aucs, n_parameters, time.perf_counter() - t_all, fold_rows),
                roc_points(*_repeat0(oof)))

    run_id = None
    if log:
        import mlflow

        with tracking.parent_run(args.model, tags, tracking.flatten_params(model_params)) as run:
            summary, roc = finish(body(run.info.run_id))
            mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            mlflow.log_dict({"model": args.model, "roc": roc}, "roc_repeat0.json")
            mlflow.log_text(pd.DataFrame(fold_rows).to_csv(sep="\t", index=False), "folds.tsv")
            run_id = run.info.run_id
    else:
        summary, roc = finish(body())

    with atomic_dir(out) as tmp:
        pd.concat(oof, ignore_index=True).to_parquet(tmp / "oof.parquet", index=False)
        # cached outputs hold no timings or run ids (those go to metrics and MLflow), so a rerun
        # on the same inputs gives byte-equal outputs
        pd.DataFrame(fold_rows).drop(columns=["train_time_s"]).to_csv(
            tmp / "folds.tsv", sep="\t", index=False, float_format="%.6f")
        write_json(tmp / "run.json", {"model": args.model, "type": mtype, "params": cfg, "study": study})
    write_json(plots_path, roc)
    write_json(metrics_path, {**summary, "mlflow_run_id": run_id or ""})
    print(f"{args.model} ({mtype}): AUC {summary['auc_mean']:.3f} +- {summary['auc_sd']:.3f} over "
          f"{summary['n_folds']} folds, {summary['n_parameters']} parameters, {summary['train_time_s']:.0f} s")
    return 0


def _repeat0(oof):
    df = pd.concat([d for d in oof if (d["repeat"] == 0).all()], ignore_index=True)
    return df["y"].to_numpy(), df["proba"].to_numpy()


def _summary(aucs, n_parameters, seconds, fold_rows) -> dict:
    return {"auc_mean": float(aucs.mean()), "auc_sd": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0,
            "n_folds": int(len(aucs)), "n_parameters": int(n_parameters or 0),
            "train_time_s": float(seconds),
            "fold_time_mean_s": float(np.mean([f["train_time_s"] for f in fold_rows]))}
