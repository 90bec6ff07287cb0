"""Attributions against planted truth on the demo cohort: what `dvc repro interpret` found.

Reads the metrics of the `interpret@<model>` stages (metrics/interpret/<model>.json, written by
`epiflow interpret` on the embedded cohort with its truth.json) and the genes/pairs tables in
work/interpret/<model>/, and prints, per model: mean fold AUC, precision@k of the planted
additive genes, recall@k of all planted genes, the ranks of the planted pathway modules among
the hidden neurons, the importance ranks of the planted pairs' genes and the pairs' ranks among
the scored pairs, IG's completeness error, and the stage's wall time. Writes
benchmarks/results/interpret_demo.json. With --run, runs `dvc repro interpret` first (about
15 minutes on 2 CPU cores after `make demo`).

    .venv/bin/python benchmarks/bench_interpret.py            # after `dvc repro interpret`
    .venv/bin/python benchmarks/bench_interpret.py --run
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run `dvc repro interpret` first")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "interpret_demo.json"))
    args = ap.parse_args(argv)
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    models = params["interpret"]["models"]
    wall = None
    if args.run:
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "interpret"], cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
    rows = []
    for m in models:
        f = ROOT / "metrics" / "interpret" / f"{m}.json"
        if not f.is_file():
            print(f"{f}: missing; run `dvc repro interpret` (or --run)", file=sys.stderr)
            return 2
        met = json.loads(f.read_text())
        t = met.get("truth", {})
        pairs = pd.read_csv(ROOT / "work" / "interpret" / m / "pairs.tsv", sep="\t")
        # wall time: the stage writes it apart from its tracked metrics (metrics/timings/)
        tf = ROOT / "metrics" / "timings" / "interpret" / f"{m}.json"
        seconds = json.loads(tf.read_text()).get("seconds") if tf.is_file() else met.get("seconds")
        rows.append({"model": m, "type": met["type"], "auc_mean": met["auc_mean"],
                     "precision_at_k": t.get("precision_at_k"), "recall_at_k": t.get("recall_at_k"), "k": t.get("k"),
                     "additive_gene_ranks": t.get("additive_gene_ranks"),
                     "module_pathway_ranks": t.get("module_pathway_ranks"),
                     "pair_gene_ranks": t.get("pair_gene_ranks"), "pair_ranks": t.get("pair_ranks"),
                     "n_pairs_scored": met["n_pairs_scored"], "n_pairs_nominated": met["n_pairs_nominated"],
                     "nominated_confirmed_burden_p_lt_0.05": int(((pairs["nominated"]) & (pairs["burden_p"] < 0.05)).sum()),
                     "completeness_rel_err_max": met["completeness_rel_err_max"], "seconds": seconds})
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df[["model", "auc_mean", "precision_at_k", "recall_at_k", "module_pathway_ranks", "pair_gene_ranks",
                  "pair_ranks", "n_pairs_nominated", "completeness_rel_err_max", "seconds"]].to_string(index=False))
    out = {"cohort": "embedded demo cohort (params.yaml simulate:), data/truth.json",
           "host": platform.node(), "device": "cpu", "python": platform.python_version(),
           "dvc_repro_interpret_wall_s": wall, "settings": params["interpret"], "models": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
