"""The model zoo as the pipeline sees it: which estimator a ``type`` names and what it reads.

Gene networks (models.genes) read the gene x class count tensor; the additive baselines
(models.baselines) read the sparse variant matrix.
"""
from __future__ import annotations

from pipelines.errors import EpiflowError

BASELINES = {"sgd_l2": "l2", "sgd_l1": "l1"}


def gene_net_types() -> tuple[str, ...]:
    from models.genes import MODEL_TYPES

    return tuple(MODEL_TYPES)


def known_types() -> tuple[str, ...]:
    return gene_net_types() + tuple(BASELINES)


def resolve(name: str, models_section: dict, params_path="params.yaml") -> tuple[str, dict]:
    """(type, config) of the model called ``name`` in params.yaml, or a one-line error."""
    if name not in models_section:
        listed = ", ".join(models_section) or "none"
        raise EpiflowError(f"unknown model '{name}': {params_path} defines models {listed}")
    cfg = dict(models_section[name] or {})
    mtype = cfg.pop("type", name)
    if mtype not in known_types():
        raise EpiflowError(
            f"unknown model type '{mtype}' for model '{name}' in {params_path}; "
            f"known types: {', '.join(known_types())}")
    return mtype, cfg


def fit_predict(mtype: str, cfg: dict, *, counts_train, counts_test, variants_train, variants_test,
                y_train, n_classes: int, gene_pathways, train: dict, seed: int):
    """Fit one model on one training fold, return (test probabilities, info)."""
    if mtype in BASELINES:
        from models.baselines import fit_predict_sgd

        return fit_predict_sgd(variants_train, y_train, variants_test, penalty=BASELINES[mtype],
                               seed=seed, **cfg)
    from models.genes import fit_predict as fit_gene_net

    return fit_gene_net(mtype, counts_train, y_train, counts_test, n_classes=n_classes,
                        gene_pathways=gene_pathways, params=cfg, train={**train, "seed": seed})
