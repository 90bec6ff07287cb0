"""The model zoo as the pipeline sees it: which estimator a ``type`` names, which keys it accepts,
and what it reads.

Types (the ``type:`` of an entry under ``models:`` in params.yaml):

- gene networks (models.genes, on the gene x class count tensor): ``logreg``, ``linear``,
  ``biosparse``, ``multipathway``, ``genegene_pathway``, ``dense``, ``ensemble``. Keys: any of
  ``models.genes.DEFAULT_PARAMS`` (``sparsity_source: pathways | random | rigl | l1``,
  ``sparsity``, ``n_members``, ...) plus per-model ``max_epochs`` / ``batch_size`` overriding the
  shared ``train:`` section. ``gene_gene_edges`` is a file of gene pairs (two columns of gene
  names; see :func:`load_gene_gene_edges`).
- additive baselines on the sparse variant matrix: ``sgd_l1``, ``sgd_l2`` (keys of
  ``models.baselines.fit_predict_sgd``).
- random forests: ``rf_variants`` (variant matrix), ``rf_genes`` (per-gene sums over the
  functional classes), ``rf_activations`` (gene activations of a net trained on the same training
  fold; ``net:`` holds that net's ``type`` and params). Keys of ``models.baselines.fit_predict_rf``.

Every check here fails with a one-line :class:`EpiflowError` before any data is read.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from pipelines.errors import EpiflowError

BASELINES = {"sgd_l2": "l2", "sgd_l1": "l1"}
FORESTS = ("rf_variants", "rf_genes", "rf_activations")
# keys of the shared `train:` section a single model may override
TRAIN_OVERRIDES = ("max_epochs", "batch_size")
# what each net type needs from a sparse/choice param, checked before training
_SPARSE_HEADS = ("biosparse", "linear", "multipathway", "genegene_pathway")
_REWIRABLE = ("biosparse", "linear", "multipathway")


def gene_net_types() -> tuple[str, ...]:
    from models.genes import MODEL_TYPES

    return tuple(MODEL_TYPES)


def known_types() -> tuple[str, ...]:
    return gene_net_types() + tuple(BASELINES) + FORESTS


def is_gene_net(mtype: str) -> bool:
    return mtype not in BASELINES and mtype not in FORESTS


def needs_pathways(mtype: str, cfg: dict) -> bool:
    """Whether fitting reads the gene-set (GMT) memberships."""
    if mtype == "rf_activations":
        return True
    return is_gene_net(mtype)


def reads(mtype: str) -> tuple[str, ...]:
    """Which matrices a type fits on: 'counts' (gene x class) and/or 'variants'."""
    if mtype in BASELINES or mtype == "rf_variants":
        return ("variants",)
    return ("counts",)


def _keys_of(fn, drop) -> tuple[str, ...]:
    return tuple(k for k in inspect.signature(fn).parameters if k not in drop)


def _sgd_keys() -> tuple[str, ...]:
    from models.baselines import fit_predict_sgd

    return _keys_of(fit_predict_sgd, {"X_train", "y_train", "X_test", "penalty", "seed"})


def _rf_keys() -> tuple[str, ...]:
    from models.baselines import fit_predict_rf

    return _keys_of(fit_predict_rf, {"X_train", "y_train", "X_test", "seed"})


def _net_keys() -> tuple[str, ...]:
    from models.genes import DEFAULT_PARAMS

    return tuple(DEFAULT_PARAMS) + TRAIN_OVERRIDES


def valid_keys(mtype: str) -> tuple[str, ...]:
    if mtype in BASELINES:
        return _sgd_keys()
    if mtype in ("rf_variants", "rf_genes"):
        return _rf_keys()
    if mtype == "rf_activations":
        return ("net",) + _rf_keys()
    return _net_keys()


def _check_net(name: str, mtype: str, cfg: dict, where: str) -> None:
    """Enumerated and ranged values of a gene-net config (the rest is checked by models.genes)."""
    from models.genes.nets import SPARSITY_SOURCES
    from models.genes.training import MEMBER_SOURCES

    source = cfg.get("sparsity_source", "pathways")
    if mtype == "ensemble" and source != "pathways":
        raise EpiflowError(f"{where}: model '{name}': an ensemble's member graphs are set by "
                           f"member_source ({', '.join(MEMBER_SOURCES)}), not sparsity_source")
    if source not in SPARSITY_SOURCES:
        raise EpiflowError(f"{where}: model '{name}': unknown sparsity_source '{source}'; "
                           f"valid: {', '.join(SPARSITY_SOURCES)}")
    if source in ("rigl", "l1") and mtype not in _REWIRABLE:
        raise EpiflowError(f"{where}: model '{name}': sparsity_source '{source}' applies to "
                           f"{', '.join(_REWIRABLE)}, not '{mtype}'")
    sparsity = cfg.get("sparsity", 1.0)
    if not isinstance(sparsity, (int, float)) or not 0 < float(sparsity) <= 1:
        raise EpiflowError(f"{where}: model '{name}': sparsity must be in (0, 1], got {sparsity!r}")
    if mtype not in _SPARSE_HEADS and mtype != "ensemble" and (source != "pathways" or float(sparsity) != 1.0):
        raise EpiflowError(f"{where}: model '{name}': '{mtype}' has no sparse gene layer; "
                           f"sparsity_source and sparsity apply to {', '.join(_SPARSE_HEADS)}")
    member = cfg.get("member_source", "pathways")
    if member not in MEMBER_SOURCES:
        raise EpiflowError(f"{where}: model '{name}': unknown member_source '{member}'; "
                           f"valid: {', '.join(MEMBER_SOURCES)}")
    if "gene_gene_edges" in cfg and cfg["gene_gene_edges"] is not None:
        if mtype != "genegene_pathway":
            raise EpiflowError(f"{where}: model '{name}': gene_gene_edges applies to genegene_pathway only")
        if not isinstance(cfg["gene_gene_edges"], str):
            raise EpiflowError(f"{where}: model '{name}': gene_gene_edges must be a file of gene pairs")
    for k in ("n_members", "max_epochs", "batch_size", "hidden", "dense_units"):
        if k in cfg and (not isinstance(cfg[k], int) or isinstance(cfg[k], bool) or cfg[k] < 1):
            raise EpiflowError(f"{where}: model '{name}': {k} must be a positive integer, got {cfg[k]!r}")


def _check_keys(name: str, mtype: str, cfg: dict, where: str) -> None:
    valid = valid_keys(mtype)
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise EpiflowError(f"{where}: model '{name}' (type {mtype}): unknown key(s) "
                           f"{', '.join(unknown)}; valid: {', '.join(valid)}")


def resolve(name: str, models_section: dict, params_path="params.yaml") -> tuple[str, dict]:
    """(type, config) of the model called ``name`` in params.yaml, or a one-line error."""
    if name not in models_section:
        listed = ", ".join(models_section) or "none"
        raise EpiflowError(f"unknown model '{name}': {params_path} defines models {listed}")
    raw = models_section[name] or {}
    if not isinstance(raw, dict):
        raise EpiflowError(f"{params_path}: model '{name}' must be a mapping of settings")
    cfg = dict(raw)
    mtype = cfg.pop("type", name)
    if mtype not in known_types():
        raise EpiflowError(
            f"unknown model type '{mtype}' for model '{name}' in {params_path}; "
            f"known types: {', '.join(known_types())}")
    _check_keys(name, mtype, cfg, params_path)
    if is_gene_net(mtype):
        _check_net(name, mtype, cfg, params_path)
    elif mtype == "rf_activations":
        net = cfg.get("net", {"type": "logreg"})
        if not isinstance(net, dict):
            raise EpiflowError(f"{params_path}: model '{name}': net must be a mapping with a type, "
                               f"e.g. net: {{type: logreg, lr: 0.003}}")
        net = dict(net)
        ntype = net.pop("type", "logreg")
        if ntype not in gene_net_types() or ntype == "ensemble":
            raise EpiflowError(f"{params_path}: model '{name}': net type '{ntype}' has no single set "
                               f"of gene activations; use one of "
                               f"{', '.join(t for t in gene_net_types() if t != 'ensemble')}")
        _check_keys(f"{name}.net", ntype, net, params_path)
        _check_net(f"{name}.net", ntype, net, params_path)
        cfg["net"] = {"type": ntype, **net}
    return mtype, cfg


def load_gene_gene_edges(path, genes) -> np.ndarray:
    """(E, 2) gene index pairs from a text file of gene pairs: two whitespace-separated columns
    of gene names (as in the encoded cohort's genes.txt); '#' lines and a header line naming
    no cohort gene are skipped, pairs with a gene outside the cohort are dropped."""
    p = Path(path)
    if not p.is_file():
        raise EpiflowError(f"{p}: gene-gene edge file not found")
    pos = {g: i for i, g in enumerate(genes)}
    pairs = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise EpiflowError(f"{p}:{lineno}: expected two gene names, got {line.strip()!r}")
        a, b = pos.get(parts[0]), pos.get(parts[1])
        if a is not None and b is not None:
            pairs.append((a, b))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def _split_train(cfg: dict, train: dict) -> tuple[dict, dict]:
    """(net params, train settings with this model's overrides)."""
    net = {k: v for k, v in cfg.items() if k not in TRAIN_OVERRIDES}
    return net, {**train, **{k: cfg[k] for k in TRAIN_OVERRIDES if k in cfg}}


def fit_predict(mtype: str, cfg: dict, *, counts_train, counts_test, variants_train, variants_test,
                y_train, n_classes: int, gene_pathways, train: dict, seed: int):
    """Fit one model on one training fold, return (test probabilities, info)."""
    if mtype in BASELINES:
        from models.baselines import fit_predict_sgd

        return fit_predict_sgd(variants_train, y_train, variants_test, penalty=BASELINES[mtype],
                               seed=seed, **cfg)
    if mtype == "rf_variants":
        from models.baselines import fit_predict_rf

        return fit_predict_rf(variants_train, y_train, variants_test, seed=seed, **cfg)
    if mtype == "rf_genes":
        from models.baselines import fit_predict_rf, gene_sums

        return fit_predict_rf(gene_sums(counts_train, n_classes), y_train,
                              gene_sums(counts_test, n_classes), seed=seed, **cfg)
    if mtype == "rf_activations":
        from models.baselines import fit_predict_rf_activations

        rf = {k: v for k, v in cfg.items() if k != "net"}
        net = dict(cfg.get("net") or {"type": "logreg"})
        ntype = net.pop("type", "logreg")
        net_params, net_train = _split_train(net, train)
        return fit_predict_rf_activations(counts_train, y_train, counts_test, n_classes=n_classes,
                                          model_type=ntype, gene_pathways=gene_pathways,
                                          params=net_params, train={**net_train, "seed": seed},
                                          rf=rf, seed=seed)
    from models.genes import fit_predict as fit_gene_net

    params, net_train = _split_train(cfg, train)
    return fit_gene_net(mtype, counts_train, y_train, counts_test, n_classes=n_classes,
                        gene_pathways=gene_pathways, params=params, train={**net_train, "seed": seed})
