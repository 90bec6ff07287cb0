"""Gene-net settings on the paper-size planted exome cohort: test AUC per fold for each setting.

    .venv/bin/python benchmarks/bench_exome_nets.py --device cuda \\
        --configs '[["logreg", {}], ["logreg", {"l1_prox": false, "gene_l1": 0.003}]]'
    .venv/bin/python benchmarks/bench_exome_nets.py --n-samples 600 --n-genes 800 --folds 2 --device cpu \\
        --configs '[["logreg", {"max_epochs": 3}]]' --out /tmp/exome_nets.json

Each setting is a model of params.yaml (its settings there) with some keys replaced; keys of
train: (max_epochs, batch_size, input_mode, ...) go to the training settings. Every setting
is fitted with ``models.genes.training.fit_predict`` on the same random 2:1 splits of the cohort
(split f: permutation seeded 1 + f, the first third held out) and scored by AUC on the held-out
third. ``input_mode`` defaults to dense (at 23,000 genes under column standardisation the
automatic choice builds the combinations and then drops them). Prints one line per setting
(mean, worst fold, seconds; per-fold training seconds) and writes JSON after every setting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAIN_KEYS = ("max_epochs", "batch_size", "input_mode", "cache_bytes", "loop")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", required=True,
                    help='JSON list of [model, {key: value}] (a file name or the JSON itself)')
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--n-samples", type=int, default=4000)
    ap.add_argument("--n-genes", type=int, default=23000)
    ap.add_argument("--seed", type=int, default=0, help="cohort seed")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "exome_nets.json"))
    args = ap.parse_args(argv)
    from models.genes.training import fit_predict
    from models.simulate.exome import exome_cohort
    from models.stats import rank_auc
    from pipelines.atomic import write_text
    from pipelines.params import load_params

    raw = Path(args.configs).read_text() if os.path.isfile(args.configs) else args.configs
    configs = json.loads(raw)
    models = load_params(args.params)["models"]
    train_base = dict(load_params(args.params).get("train", {}))
    t0 = time.perf_counter()
    ex = exome_cohort(args.n_samples, args.n_genes, seed=args.seed)
    n = ex.X.shape[0]
    print(f"cohort {n} x {ex.n_genes} genes, {time.perf_counter() - t0:.1f} s; oracle AUC "
          f"{ex.truth['oracle_auc']:.3f}", flush=True)
    splits = []
    for f in range(args.folds):
        perm = np.random.default_rng(1 + f).permutation(n)
        splits.append((perm[n // 3:], perm[:n // 3]))
    doc = {"benchmark": "exome_nets", "n_samples": n, "n_genes": ex.n_genes, "seed": args.seed,
           "folds": args.folds, "device": args.device, "results": []}
    for model, over in configs:
        if model not in models:
            raise SystemExit(f"bench_exome_nets: model '{model}' is not in {args.params}")
        entry = dict(models[model])
        mtype = entry.pop("type")
        entry.update({k: v for k, v in over.items() if k not in TRAIN_KEYS})
        train = {"max_epochs": train_base.get("max_epochs", 15), "batch_size": train_base.get("batch_size", 128),
                 "device": args.device, "input_mode": "dense"}
        for k in TRAIN_KEYS:
            if k in entry:
                train[k] = entry.pop(k)
            if k in over:
                train[k] = over[k]
        aucs, secs = [], []
        t = time.perf_counter()
        for trn, te in splits:
            p, info = fit_predict(mtype, ex.X[trn], ex.y[trn], ex.X[te], n_classes=ex.n_classes,
                                  gene_pathways=ex.gene_pathways, params=entry, train=train)
            aucs.append(float(rank_auc(ex.y[te], p)))
            secs.append(float(info["train_time_s"]))
        r = {"model": model, "type": mtype, "over": over, "train": train, "aucs": aucs,
             "mean": float(np.mean(aucs)), "min": float(np.min(aucs)),
             "seconds": time.perf_counter() - t, "train_seconds": secs}
        doc["results"].append(r)
        print(f"{model:14s} {json.dumps(over)}: AUC {r['mean']:.3f} (worst {r['min']:.3f}; "
              f"{', '.join(f'{a:.3f}' for a in aucs)}) {r['seconds']:.0f} s "
              f"(training {', '.join(f'{s:.1f}' for s in secs)} s)", flush=True)
        write_text(args.out, json.dumps(doc, indent=2))     # after every setting: a cut-short run keeps it
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
