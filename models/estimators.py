"""The estimators of the model registry: ``fit_*(model_type, cfg, data, train, seed)`` ->
(test probabilities, info). ``data`` holds the fold's matrices (counts_/variants_ train/test),
y_train, n_classes and gene_pathways; ``train`` the ``train:`` section with this model's
overrides still in ``cfg``. A registry entry names its function here; every gene-network head
shares :func:`fit_gene_net` (``models.genes.fit_predict`` dispatches on the head).
"""
from __future__ import annotations

from models.registry import TRAIN_OVERRIDES


def _split_train(cfg: dict, train: dict) -> tuple[dict, dict]:
    """(net params, train settings with this model's overrides)."""
    net = {k: v for k, v in cfg.items() if k not in TRAIN_OVERRIDES}
    return net, {**train, **{k: cfg[k] for k in TRAIN_OVERRIDES if k in cfg}}


def fit_gene_net(mt, cfg, d, train, seed):
    from models.genes import fit_predict

    params, net_train = _split_train(cfg, train)
    return fit_predict(mt.name, d["counts_train"], d["y_train"], d["counts_test"],
                        n_classes=d["n_classes"], gene_pathways=d["gene_pathways"], params=params,
                        train={**net_train, "seed": seed})


def fit_gene_net_model(mt, cfg, d, train, seed):
    """:func:`fit_gene_net`, also returning the trained net and its standardiser in ``info``
    (``model``, ``standardiser``): the same fit, seed for seed, for attributions."""
    from models.genes import fit_predict

    params, net_train = _split_train(cfg, train)
    return fit_predict(mt.name, d["counts_train"], d["y_train"], d["counts_test"],
                       n_classes=d["n_classes"], gene_pathways=d["gene_pathways"], params=params,
                       train={**net_train, "seed": seed}, return_model=True)


def fit_sgd(mt, cfg, d, train, seed):
    from models.baselines import fit_predict_sgd

    return fit_predict_sgd(d["variants_train"], d["y_train"], d["variants_test"],
                           penalty=mt.penalty, seed=seed, **cfg)


def fit_rf_variants(mt, cfg, d, train, seed):
    from models.baselines import fit_predict_rf

    return fit_predict_rf(d["variants_train"], d["y_train"], d["variants_test"], seed=seed, **cfg)


def fit_rf_genes(mt, cfg, d, train, seed):
    from models.baselines import fit_predict_rf, gene_sums

    n = d["n_classes"]
    return fit_predict_rf(gene_sums(d["counts_train"], n), d["y_train"], gene_sums(d["counts_test"], n),
                          seed=seed, **cfg)


def fit_rf_activations(mt, cfg, d, train, seed):
    from models.baselines import fit_predict_rf_activations

    rf = {k: v for k, v in cfg.items() if k != "net"}
    net = dict(cfg.get("net") or {"type": "logreg"})
    ntype = net.pop("type", "logreg")
    net_params, net_train = _split_train(net, train)
    return fit_predict_rf_activations(d["counts_train"], d["y_train"], d["counts_test"],
                                      n_classes=d["n_classes"], model_type=ntype,
                                      gene_pathways=d["gene_pathways"], params=net_params,
                                      train={**net_train, "seed": seed}, rf=rf, seed=seed)
