"""Table 1 at the paper's scale: every model of params.yaml, R x K CV, MLflow logging, on the
planted exome cohort (models.simulate.exome: 4,000 samples x 23,000 genes x 16 classes).

    .venv/bin/python benchmarks/bench_table1.py                          # the full run (GPU)
    .venv/bin/python benchmarks/bench_table1.py --repeats 1 --old-models logreg --old-folds 1
    .venv/bin/python benchmarks/bench_table1.py --n-samples 300 --n-genes 400 --repeats 1 --epochs 2

Each model runs as ``epiflow train`` runs it (pipelines.cv_record.run_and_record: the fold loop,
a parent MLflow run with a child run per fold, oof/folds/metrics files under a temporary
folder), after the data preparation the benchmark times too (cohort generation, splits). Per
model it prints the fold-AUC mean and minimum and the seconds, then the total; it writes
benchmarks/results/table1_paper.json (device, n_samples, n_genes, n_models, n_folds, total_s,
per model auc_mean, auc_min, seconds).

The per-fold preparation (standardisation, combination encoding) is made once per fold and
shared by the models (models.genes.data.prepare_fold, kept in memory for all folds of the run).
``--old-models`` also times the previous path on a subset in the same run: the Lightning
Trainer and a fresh preparation per model and fold (``train.loop: lightning``, no prep cache),
on the first ``--old-folds`` folds; the ratio to the new path on those same folds is reported,
and ``old_total_s_extrapolated`` scales the old per-fold time of each timed model to all folds
(flagged as an extrapolation).

The variant-level models (sgd_*, rf_variants) read the (class, gene) count columns as their
variant matrix: the generator writes no per-variant genotypes (``variants_are_gene_class_cells``
in the JSON). ``--write-project DIR`` writes the cohort as an encoded project input instead
(DIR/encoded, DIR/genesets.gmt, DIR/truth.json) for ``epiflow train --encoded DIR/encoded``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--n-samples", type=int, default=4000)
    ap.add_argument("--n-genes", type=int, default=23000)
    ap.add_argument("--seed", type=int, default=0, help="cohort seed")
    ap.add_argument("--models", default="", help="comma-separated subset of params.yaml's models")
    ap.add_argument("--repeats", type=int, default=None, help="CV repeats (default: params.yaml splits)")
    ap.add_argument("--folds", type=int, default=None, help="CV folds (default: params.yaml splits)")
    ap.add_argument("--epochs", type=int, default=None, help="override every net's max_epochs (quick checks)")
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                    help="train.device (default: params.yaml)")
    ap.add_argument("--input-mode", default=None, choices=["auto", "combos", "pairs", "dense"],
                    help="train.input_mode (default: params.yaml). At 23,000 genes under column "
                         "standardisation auto ends at dense after building the combinations: "
                         "dense gives the same numbers without that work")
    ap.add_argument("--cache-gb", type=float, default=None,
                    help="train.cache_bytes in GB (dense input kept whole on the device below it)")
    ap.add_argument("--jobs", type=int, default=0,
                    help="fold worker processes per model (0: as epiflow train, one on a GPU). "
                         "With more than one, the folds' preparations go through an on-disk cache "
                         "in the run's temporary folder so every worker reads each fold once made")
    ap.add_argument("--cpu-jobs", type=int, default=0,
                    help="with a GPU: worker threads for the folds of the scikit-learn models, "
                         "which run beside the nets (0: the cores less the nets' workers and one)")
    ap.add_argument("--overlap", default="auto", choices=["auto", "on", "off"],
                    help="run the scikit-learn models in a thread beside the nets (auto: with a GPU)")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    ap.add_argument("--mlruns", default=None,
                    help="MLflow tracking URI (default: an SQLite store in a temporary folder; "
                         "file:DIR needs only mlflow-skinny)")
    ap.add_argument("--old-models", default="", help="also time the previous path on these models")
    ap.add_argument("--old-folds", type=int, default=1, help="folds of the previous path timed per model")
    ap.add_argument("--write-project", default=None, help="write the cohort as project input to DIR and stop")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "table1_paper.json"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def make_cohort(args):
    from models.simulate.exome import exome_cohort
    from pipelines.workflows.cohort import Cohort

    ex = exome_cohort(args.n_samples, args.n_genes, seed=args.seed)
    ids = np.array([f"S{i + 1:05d}" for i in range(args.n_samples)])
    coh = Cohort(counts=ex.X, variants=ex.X, y=ex.y, sample_ids=ids, genes=ex.genes,
                 classes=ex.classes, gene_pathways=ex.gene_pathways,
                 pathway_names=ex.pathway_names, inputs=(f"exome_cohort(seed={args.seed})",))
    return ex, coh


def write_project(ex, out: Path) -> None:
    """The encoder's output files for the cohort (what ``epiflow train`` reads), its gene sets
    and its truth, written atomically."""
    import pandas as pd
    import scipy.sparse as sp

    from pipelines.atomic import atomic_dir, write_json

    names = ex.pathway_names
    with atomic_dir(out / "encoded") as tmp:
        sp.save_npz(tmp / "gene_counts.npz", ex.X.tocsr())
        sp.save_npz(tmp / "variants.npz", ex.X.tocsr())
        G = ex.n_genes
        pd.DataFrame({"sample_id": [f"S{i + 1:05d}" for i in range(ex.X.shape[0])], "y": ex.y,
                      "sex": "NA"}).to_csv(tmp / "samples.tsv", sep="\t", index=False)
        (tmp / "genes.txt").write_text("\n".join(ex.genes) + "\n")
        (tmp / "classes.txt").write_text("\n".join(ex.classes) + "\n")
        # one pseudo-variant per (class, gene) cell: the variant-level baselines read the cells
        cls = np.repeat(np.array(ex.classes), G)
        gene = np.tile(np.array(ex.genes), len(ex.classes))
        pd.DataFrame({"chrom": "NA", "pos": np.arange(1, cls.size + 1), "id": ".", "ref": "N",
                      "alt": "N", "gene": gene, "class": cls}).to_csv(
            tmp / "variants.tsv", sep="\t", index=False)
        write_json(tmp / "summary.json", {"generator": ex.truth["generator"], "seed": ex.truth["seed"],
                                          "counts_nnz": int(ex.X.nnz),
                                          "variants_are_gene_class_cells": True})
    members = {k: [] for k in range(len(names))}
    for g, pws in enumerate(ex.gene_pathways):
        for k in pws:
            members[k].append(ex.genes[g])
    gmt = "".join(f"{names[k]}\tplanted exome cohort\t" + "\t".join(m) + "\n"
                  for k, m in members.items() if m)
    tmp = out / ".genesets.gmt.tmp"
    tmp.write_text(gmt)
    os.replace(tmp, out / "genesets.gmt")
    write_json(out / "truth.json", ex.truth)


def _specs(params, names):
    from pipelines import zoo
    from pipelines.workflows.cv import ModelSpec

    models = params["models"]
    chosen = [m.strip() for m in names.split(",") if m.strip()] or list(models)
    specs = []
    for name in chosen:
        mtype, cfg = zoo.resolve(name, models)
        specs.append(ModelSpec(name, mtype, cfg))
    return specs


def _with_epochs(spec, epochs):
    from models.registry import REGISTRY
    from pipelines.workflows.cv import ModelSpec

    if epochs is None:
        return spec
    cfg = dict(spec.config)
    mt = REGISTRY[spec.type]
    if mt.gene_net:
        cfg["max_epochs"] = epochs
    if isinstance(cfg.get("net"), dict):
        cfg["net"] = {**cfg["net"], "max_epochs": epochs}
    return ModelSpec(spec.name, spec.type, cfg)


def main(argv=None):
    args = _parser().parse_args(argv)
    t_start = time.perf_counter()
    import pandas as pd
    import torch

    from models.genes import data as D
    from models.genes.training import resolve_device
    from models.registry import REGISTRY
    from pipelines.atomic import write_text
    from pipelines.cv_record import Record, run_and_record
    from pipelines.errors import EpiflowError
    from pipelines.params import load_params
    from pipelines.splits import make_splits
    from pipelines.workflows.cv import cross_validate

    params = load_params(args.params)
    t0 = time.perf_counter()
    ex, coh = make_cohort(args)
    cohort_s = time.perf_counter() - t0
    print(f"cohort: {coh.n_samples} x {coh.n_genes} genes x {coh.n_classes} classes, "
          f"{ex.X.nnz:,} nonzero cells ({ex.truth['density']:.3f}), oracle AUC "
          f"{ex.truth['oracle_auc']:.3f}, additive oracle {ex.truth['additive_oracle_auc']:.3f}; "
          f"{cohort_s:.1f} s", flush=True)
    if args.write_project:
        write_project(ex, Path(args.write_project))
        print(f"wrote {args.write_project}/encoded, genesets.gmt, truth.json")
        return 0
    sp_cfg = params.get("splits", {})
    repeats = args.repeats or int(sp_cfg.get("repeats", 10))
    folds = args.folds or int(sp_cfg.get("folds", 3))
    splits = make_splits(coh.y, coh.sample_ids, repeats=repeats, folds=folds,
                         seed=int(sp_cfg.get("seed", 7)))
    train_cfg = dict(params.get("train", {}))
    train_cfg.pop("prep_cache", None)          # in memory for the whole run (below)
    if args.device:
        train_cfg["device"] = args.device
    if args.input_mode:
        train_cfg["input_mode"] = args.input_mode
    if args.cache_gb is not None:
        train_cfg["cache_bytes"] = int(args.cache_gb * 1e9)
    device = resolve_device(train_cfg.get("device", "auto"))
    n_folds = repeats * folds
    specs = [_with_epochs(s, args.epochs) for s in _specs(params, args.models)]
    old_names = [m.strip() for m in args.old_models.split(",") if m.strip()]
    unknown = sorted(set(old_names) - {s.name for s in specs})
    if unknown:
        raise EpiflowError(f"--old-models {', '.join(unknown)}: not among the models run")
    os.environ["EPIFLOW_PREP_MEMORY"] = str(n_folds + 1)    # every fold's preparation, once
    if "EPIFLOW_FOLD_MEMORY_GB" not in os.environ:          # every fold's slices, once: half the RAM
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
        os.environ["EPIFLOW_FOLD_MEMORY_GB"] = f"{ram / 2:.1f}"
    use_mlflow = not args.no_mlflow
    tmpdir = tempfile.TemporaryDirectory(prefix="epiflow-table1-")
    tmp = Path(tmpdir.name)
    if use_mlflow:
        uri = args.mlruns or f"sqlite:///{tmp / 'mlflow.db'}"       # the project's own kind of store
        if uri.startswith("file:"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        os.environ["MLFLOW_TRACKING_URI"] = uri
    if args.jobs > 1:
        train_cfg["prep_cache"] = str(tmp / "prep_cache")
    results = {}
    import threading

    lock = threading.Lock()
    base = {"benchmark": "table1_paper", "device": str(device),
            "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.machine(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "n_samples": coh.n_samples, "n_genes": coh.n_genes, "n_classes": coh.n_classes,
            "n_models": len(specs), "n_folds": n_folds, "repeats": repeats, "folds": folds,
            "epochs_override": args.epochs, "mlflow": use_mlflow, "jobs": args.jobs,
            "input_mode": train_cfg.get("input_mode", "auto"), "cache_bytes": train_cfg.get("cache_bytes"),
            "cohort_s": cohort_s, "oracle_auc": ex.truth["oracle_auc"],
            "additive_oracle_auc": ex.truth["additive_oracle_auc"],
            "variants_are_gene_class_cells": True, "command": " ".join(["bench_table1.py"] + sys.argv[1:])}
    out = Path(args.out)

    def write_doc(extra):
        write_text(out, json.dumps({**base, **extra, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))

    def run_model(spec, jobs):
        rec = Record(out=tmp / "train" / spec.name, metrics=tmp / "metrics" / f"{spec.name}.json",
                     plots=tmp / "plots" / f"{spec.name}.json", study="table1-paper",
                     mlflow=use_mlflow, inputs=())
        t0 = time.perf_counter()
        s = run_and_record(spec, coh, splits, rec, train_cfg=train_cfg, jobs=jobs, quiet=args.quiet)
        sec = time.perf_counter() - t0
        ft = pd.read_csv(tmp / "train" / spec.name / "folds.tsv", sep="\t")
        aucs = ft["auc"].to_numpy()
        results[spec.name] = {"type": spec.type, "auc_mean": float(aucs.mean()),
                              "auc_min": float(aucs.min()), "auc_sd": s["auc_sd"],
                              "seconds": sec, "n_folds": int(aucs.size),
                              "on_device": REGISTRY[spec.type].trains_net}
        print(f"{spec.name:18s} AUC {aucs.mean():.3f} (min {aucs.min():.3f}) {sec:7.1f} s", flush=True)
        with lock:      # what is done so far, in case the run is cut short
            write_doc({"partial": True, "models_done": len(results),
                       "elapsed_s": time.perf_counter() - t_start, "models": dict(results)})

    # with a GPU, the scikit-learn baselines (CPU only) run in a thread beside the nets, their
    # folds in --cpu-jobs worker processes: the two kinds of work share no resource
    overlap = args.overlap == "on" or (args.overlap == "auto" and device.type == "cuda")
    cpu_specs = [s for s in specs if overlap and not REGISTRY[s.type].trains_net]
    dev_specs = [s for s in specs if s not in cpu_specs]
    cpu_jobs = args.cpu_jobs or max(1, min(n_folds, (os.cpu_count() or 2) - max(1, args.jobs) - 1))
    errors = []

    def cpu_side():
        from joblib import parallel_config

        # the folds of the scikit-learn models in threads (their fits release the interpreter
        # lock): no copy of the fold matrices per worker, and no second user of the process pool
        # that the nets' folds run in (one pool per process; two users resize it under each other)
        try:
            with parallel_config(backend="threading"):
                for spec in cpu_specs:
                    run_model(spec, cpu_jobs)
        except BaseException as exc:          # re-raised in the main thread
            errors.append(exc)

    t_models = time.perf_counter()
    th = threading.Thread(target=cpu_side, name="cpu-models") if cpu_specs else None
    if th is not None:
        th.start()
    for spec in dev_specs:
        run_model(spec, args.jobs)
    if th is not None:
        th.join()
    if errors:
        raise errors[0]
    total = time.perf_counter() - t_models
    results = {s.name: results[s.name] for s in specs}
    old = {}
    if old_names:
        # same folds, no MLflow: the previous path (Lightning Trainer, a fresh preparation per
        # model and fold) vs this one (plain loop, preparation from the run's cache, plus its
        # cost shared among the run's gene-net models)
        sub = list(splits.iter_folds())[:args.old_folds]
        t0 = time.perf_counter()
        import lightning.pytorch  # noqa: F401  (its import, once per process, timed apart)

        lightning_import_s = time.perf_counter() - t0
        n_nets = max(1, sum(1 for s in specs if REGISTRY[s.type].trains_net))
        prep_fold_s = 0.0
        for spec in (s for s in specs if s.name in old_names):
            os.environ["EPIFLOW_PREP_MEMORY"] = "0"
            D.clear_prep_memory()
            t0 = time.perf_counter()
            res_old = cross_validate(spec, coh, sub, train_cfg={**train_cfg, "loop": "lightning"})
            old_s = time.perf_counter() - t0
            os.environ["EPIFLOW_PREP_MEMORY"] = str(n_folds + 1)
            if REGISTRY[spec.type].gene_net and not prep_fold_s:
                cross_validate(spec, coh, sub, train_cfg={**train_cfg, "loop": "torch"})   # warm
                prep_fold_s = float(np.mean([f.info.get("prep_s", 0.0) for f in res_old.folds]))
            t0 = time.perf_counter()
            res_new = cross_validate(spec, coh, sub, train_cfg={**train_cfg, "loop": "torch"})
            new_s = time.perf_counter() - t0
            shared = prep_fold_s / n_nets if REGISTRY[spec.type].gene_net else 0.0
            new_per_fold = new_s / len(sub) + shared
            same = bool(np.array_equal(res_old.aucs, res_new.aucs))
            old[spec.name] = {"folds_timed": len(sub), "old_per_fold_s": old_s / len(sub),
                              "new_per_fold_s": new_per_fold, "prep_per_fold_s": prep_fold_s,
                              "prep_shared_by": n_nets,
                              "ratio_old_over_new": old_s / len(sub) / new_per_fold, "same_aucs": same}
            print(f"old path {spec.name}: {old_s / len(sub):.2f} s/fold, new {new_per_fold:.2f} s/fold "
                  f"(preparation {prep_fold_s:.2f} s/fold shared by {n_nets} nets): "
                  f"{old[spec.name]['ratio_old_over_new']:.1f}x, same AUCs: {same}", flush=True)
    total_s = time.perf_counter() - t_start
    doc = {"overlap_cpu_models": bool(cpu_specs), "cpu_jobs": cpu_jobs if cpu_specs else None,
           "total_s": total_s, "models_s": total, "models": results}
    if old:
        doc["old_path"] = old
        doc["old_path_lightning_import_s"] = lightning_import_s   # paid by every train stage's process
        doc["old_total_s_extrapolated"] = {
            "models": sorted(old), "note": "old per-fold time x n_folds, timed models only",
            "seconds": sum(o["old_per_fold_s"] * n_folds for o in old.values()),
            "new_seconds_same_models_in_table": sum(results[m]["seconds"] for m in old)}
    write_doc(doc)
    print(f"Table 1: {len(specs)} models x {n_folds} folds on {coh.n_samples} x {coh.n_genes} genes, "
          f"{device}: {total_s:.1f} s total ({total:.1f} s in the models, {cohort_s:.1f} s cohort)")
    print(f"wrote {out}")
    tmpdir.cleanup()
    return 0


def _main():
    from pipelines.errors import EpiflowError

    try:
        return main()
    except (EpiflowError, ValueError) as exc:       # bad settings: one line, no traceback
        print(f"bench_table1: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main())
