"""What an additive model can reach on the paper-size planted exome cohort, from the data alone.

    .venv/bin/python benchmarks/bench_exome_additive.py                  # 4,000 x 23,000 genes, ~3 min
    .venv/bin/python benchmarks/bench_exome_additive.py --n-genes 3000

The reference the gene nets of Table 1 are read against (benchmarks/bench_table1.py): an L1
logistic regression (scikit-learn, liblinear) on one burden per gene, scored on 3 stratified
folds, with no knowledge of which genes are planted. Two burdens: the count over the 5 damaging
classes (what the generator's liability reads) and the count over all 16 classes (what a model
that does not learn class weights sees). It also prints the marginal association z of the 10
additive genes against the largest |z| of the 22,942 genes with no planted role (the null), and
the oracles the generator records (the noiseless liability; a logistic fit told the planted
genes). Writes benchmarks/results/exome_additive.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _z(B: np.ndarray, y: np.ndarray) -> np.ndarray:
    Bc = B - B.mean(0)
    yc = y - y.mean()
    den = np.sqrt((Bc ** 2).sum(0) * (yc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (Bc.T @ yc) / den, 0.0)
    return r * np.sqrt(len(y))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-samples", type=int, default=4000)
    ap.add_argument("--n-genes", type=int, default=23000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", default="0.01,0.02,0.05,0.1", help="inverse L1 strengths tried")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "exome_additive.json"))
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from models.simulate.exome import CLASSES, DAMAGING, exome_cohort
    from pipelines.atomic import write_text

    t0 = time.perf_counter()
    ex = exome_cohort(args.n_samples, args.n_genes, seed=args.seed)
    gen_s = time.perf_counter() - t0
    G, y = ex.n_genes, ex.y
    X = ex.X.tocsc()
    dmg = [CLASSES.index(c) for c in DAMAGING]
    burdens = {"damaging": sum(X[:, k * G:(k + 1) * G] for k in dmg).toarray().astype(np.float32),
               "all_classes": sum(X[:, k * G:(k + 1) * G] for k in range(len(CLASSES))).toarray().astype(np.float32)}
    idx = {g: i for i, g in enumerate(ex.genes)}
    add = [idx[g] for g in ex.truth["additive_genes"]]
    mod = [idx[g] for m in ex.truth["modules"] for g in m["genes"]]
    cv = StratifiedKFold(3, shuffle=True, random_state=args.seed)
    doc = {"benchmark": "exome_additive", "n_samples": ex.X.shape[0], "n_genes": G, "seed": args.seed,
           "generate_s": gen_s, "oracle_auc": ex.truth["oracle_auc"],
           "additive_oracle_auc_told_planted_genes": ex.truth["additive_oracle_auc"],
           "folds": 3, "burdens": {}}
    print(f"cohort {ex.X.shape[0]} x {G} genes ({gen_s:.1f} s): oracle AUC {ex.truth['oracle_auc']:.3f}, "
          f"logistic told the planted genes {ex.truth['additive_oracle_auc']:.3f}")
    for name, B in burdens.items():
        z = np.abs(_z(B, y.astype(float)))
        null = np.delete(z, add + mod)
        res = {"additive_gene_abs_z": sorted((round(float(v), 2) for v in z[add]), reverse=True),
               "module_gene_abs_z_median": float(np.median(z[mod])), "null_max_abs_z": float(null.max()),
               "additive_genes_above_null_max": int((z[add] > null.max()).sum()), "l1_logistic": {}}
        for C in (float(c) for c in args.C.split(",")):
            aucs, nnz = [], []
            for tr, te in cv.split(B, y):
                s = StandardScaler().fit(B[tr])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = LogisticRegression(penalty="l1", C=C, solver="liblinear").fit(s.transform(B[tr]), y[tr])
                aucs.append(float(roc_auc_score(y[te], m.decision_function(s.transform(B[te])))))
                nnz.append(int((m.coef_ != 0).sum()))
            res["l1_logistic"][str(C)] = {"auc_folds": aucs, "auc_mean": float(np.mean(aucs)),
                                          "auc_min": float(np.min(aucs)), "nonzero_genes": nnz}
            print(f"{name:12s} C={C:<5g} AUC {np.mean(aucs):.3f} (folds {', '.join(f'{a:.3f}' for a in aucs)}), "
                  f"{int(np.mean(nnz))} genes kept")
        print(f"{name:12s} additive genes |z| {res['additive_gene_abs_z']}, null max {res['null_max_abs_z']:.2f}, "
              f"module genes median {res['module_gene_abs_z_median']:.2f}")
        doc["burdens"][name] = res
    doc["seconds"] = time.perf_counter() - t0
    write_text(args.out, json.dumps(doc, indent=2))
    print(f"wrote {args.out} ({doc['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
