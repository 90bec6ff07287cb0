"""Shared machinery of the learning-curve and sparsity-sweep stages.

Both stages cross-validate zoo models on the saved splits (first N repeats) under some variation
of the training fold (a nested subset, or a model parameter), score the test fold by ROC AUC and
summarise each variation over folds. The pieces here: loading the encoded cohort once
(:class:`Cohort`), fitting one model on one fold (:func:`fit_fold`), per-group summaries with
normal-theory and Nadeau-Bengio intervals (:func:`summarise`), a markdown table writer and the
figure helpers. Fold seeds follow ``epiflow train`` (``train.seed + 1000 * repeat + fold``), so a
model fitted on a whole training fold here gives exactly the AUC the train stage reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines import zoo
from pipelines.atomic import atomic_path
from pipelines.errors import EpiflowError


@dataclass
class Cohort:
    counts: object            # csr (samples, C*G) class x gene counts
    variants: object          # csr (samples, variants)
    y: np.ndarray             # 0/1
    sample_ids: np.ndarray
    n_classes: int
    n_genes: int
    gene_pathways: list | None
    splits: object            # pipelines.splits.Splits
    inputs: list              # paths, for the data-version tags


def stage_setup(args, what: str, resolve_config):
    """The common start of the learning-curve and sweep stages: params, the stage's resolved
    config, the train section (seed popped), the study name, the cohort and the folds of the
    first ``repeats`` repeats. Returns (params, cfg, train_cfg, base_seed, study, cohort, folds)."""
    from pipelines.params import load_params, section

    params = load_params(args.params)
    cfg = resolve_config(params, args.params, args.repeats)
    train_cfg = dict(section(params, "train", args.params))
    base_seed = int(train_cfg.pop("seed", 0))
    study = params.get("study", "epiflow")
    gmt = args.gmt or section(params, "encode", args.params).get("gmt")
    cohort = load_cohort(args.encoded, args.splits, gmt)
    if cfg["repeats"] > cohort.splits.repeats:
        raise EpiflowError(f"{what}: repeats={cfg['repeats']} but {args.splits} holds "
                           f"{cohort.splits.repeats} repeats")
    folds = list(cohort.splits.iter_folds(cfg["repeats"]))
    return params, cfg, train_cfg, base_seed, study, cohort, folds


def load_cohort(encoded, splits_path, gmt=None) -> Cohort:
    from pipelines.encode import load_encoded
    from pipelines.io.gmt import gene_pathway_index, read_gmt
    from pipelines.splits import load_splits

    enc = load_encoded(encoded)
    sample_ids = enc.samples["sample_id"].astype(str).to_numpy()
    y = enc.samples["y"].to_numpy().astype(np.int64)
    splits = load_splits(splits_path, sample_ids)
    inputs = [str(encoded), str(splits_path)]
    gene_pathways = None
    if gmt:
        gene_pathways, _ = gene_pathway_index(enc.genes, read_gmt(gmt))
        inputs.append(str(gmt))
    return Cohort(counts=enc.counts.tocsr(), variants=enc.variants.tocsr(), y=y,
                  sample_ids=sample_ids, n_classes=len(enc.classes), n_genes=len(enc.genes),
                  gene_pathways=gene_pathways, splits=splits, inputs=inputs)


def check_repeats(repeats, what: str) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise EpiflowError(f"{what}: repeats must be a positive integer, got {repeats!r}")
    return int(repeats)


def check_models(names, models_section: dict, what: str, params_path="params.yaml") -> list:
    """[(name, type, config)] for model names of params.yaml, or a one-line error."""
    if not isinstance(names, (list, tuple)) or not names:
        raise EpiflowError(f"{what}: models must be a non-empty list of model names under "
                           f"`models:` in {params_path}")
    if len(set(names)) != len(names):
        raise EpiflowError(f"{what}: models lists a model twice: {', '.join(map(str, names))}")
    out = []
    for name in names:
        try:
            mtype, cfg = zoo.resolve(str(name), models_section, params_path)
        except EpiflowError as exc:
            raise EpiflowError(f"{what}: {exc}") from None
        out.append((str(name), mtype, cfg))
    return out


def fold_seed(base_seed: int, repeat: int, fold: int) -> int:
    return int(base_seed) + 1000 * int(repeat) + int(fold)


def fit_fold(cohort: Cohort, mtype: str, cfg: dict, train_idx, test_idx, *, train: dict,
             seed: int) -> tuple[float, dict]:
    """(test AUC, fit info) of one model trained on ``train_idx`` and scored on ``test_idx``."""
    from sklearn.metrics import roc_auc_score

    c = cohort
    proba, info = zoo.fit_predict(
        mtype, cfg, counts_train=c.counts[train_idx], counts_test=c.counts[test_idx],
        variants_train=c.variants[train_idx], variants_test=c.variants[test_idx],
        y_train=c.y[train_idx], n_classes=c.n_classes, gene_pathways=c.gene_pathways,
        train=train, seed=seed)
    proba = np.asarray(proba, dtype=np.float64).reshape(-1)
    return float(roc_auc_score(c.y[test_idx], proba)), info


def summarise(aucs, n_train, n_test) -> dict:
    """Mean, sd and two 95 % intervals of fold AUCs: the naive t interval (folds independent) and
    the Nadeau-Bengio corrected one (variance factor 1/J + n_test/n_train), which accounts for
    the overlap of training sets between folds."""
    from scipy import stats as sps

    a = np.asarray(aucs, np.float64)
    j = a.size
    m = float(a.mean())
    sd = float(a.std(ddof=1)) if j > 1 else 0.0
    out = {"auc_mean": m, "auc_sd": sd, "n_folds": int(j),
           "n_train_mean": float(np.mean(n_train)), "n_test_mean": float(np.mean(n_test))}
    if j > 1:
        q = float(sps.t.ppf(0.975, j - 1))
        half = q * sd * np.sqrt(1.0 / j)
        half_c = q * sd * np.sqrt(1.0 / j + out["n_test_mean"] / out["n_train_mean"])
        out.update(ci95=[m - half, m + half], ci95_corrected=[m - half_c, m + half_c])
    return out


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def fmt_p(p) -> str:
    if p is None or not np.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as pyplot

    return pyplot


def save_png(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        # no software/date metadata: identical inputs give identical bytes
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})
    plt().close(fig)
    return path


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
