"""`epiflow splits`: repeated stratified K-fold splits, saved once, shared by every model."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.argtypes import count
from pipelines.atomic import precheck_output_file, write_metrics
from pipelines.errors import InputError
from pipelines.params import load_params, section
from pipelines.splits import make_splits, read_labels, save_splits


def add_arguments(p):
    p.add_argument("--samples", default="work/encoded/samples.tsv",
                   help="samples with a 0/1 `y` column (written by `epiflow encode`)")
    p.add_argument("--out", default="work/splits.npz", help="output file (default: work/splits.npz)")
    p.add_argument("--metrics", default="metrics/splits.json", help="metrics JSON")
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    p.add_argument("--repeats", type=count(1), default=None, help="repeats R (default: splits.repeats)")
    p.add_argument("--folds", type=count(2), default=None, help="folds K (default: splits.folds)")
    p.add_argument("--seed", type=count(0, 2**32 - 1), default=None, help="seed (default: splits.seed)")


def run(args) -> int:
    cfg = section(load_params(args.params), "splits", args.params)
    repeats = args.repeats if args.repeats is not None else int(cfg.get("repeats", 10))
    folds = args.folds if args.folds is not None else int(cfg.get("folds", 3))
    seed = args.seed if args.seed is not None else int(cfg.get("seed", 7))
    path = Path(args.samples)
    if path.is_dir():
        raise InputError(path, "is a folder; give the samples table (work/encoded/samples.tsv)")
    if not path.is_file():
        raise InputError(path, "samples table not found (run `epiflow encode` first)")
    out = precheck_output_file(args.out, [args.samples], "--out")
    precheck_output_file(args.metrics, [args.samples, args.out], "--metrics")
    samples = read_labels(path)
    y = samples["y"].to_numpy()
    splits = make_splits(y, samples["sample_id"], repeats=repeats, folds=folds, seed=seed)
    save_splits(splits, out)
    test_case_frac = [float(y[splits.fold[r] == k].mean()) for r in range(repeats) for k in range(folds)]
    write_metrics(args.metrics, {"repeats": repeats, "folds": folds, "n_samples": int(len(y)),
                              "case_fraction": float(np.mean(y)),
                              "test_case_fraction_min": min(test_case_frac),
                              "test_case_fraction_max": max(test_case_frac)})
    print(f"splits: {repeats} x {folds}-fold stratified over {len(y)} samples -> {args.out}")
    return 0
