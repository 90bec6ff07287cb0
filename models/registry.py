"""The model registry: every model ``type`` of params.yaml declared once.

Each :class:`ModelType` holds its estimator (:meth:`ModelType.fit_predict`, a function of
:mod:`models.estimators` named by the entry), its parameter schema
(a pydantic model: keys typed and ranged, extra keys forbidden; the defaults here are the single
source, ``models.genes.DEFAULT_PARAMS`` is read from :class:`NetParams`), the keys of
``tune.space`` that apply to it (``tunable``), the matrices it reads and, for gene networks, the
flags of its head (sparse gene layer, rewirable by RigL / L1, gene -> pathway graph). A new gene
network head is one head class in ``models.genes.nets`` + one entry of :data:`REGISTRY` + one
entry under ``models:`` in params.yaml.

:func:`validate_model` checks one ``models:`` entry and fails with one line naming the file, the
model, the key and the value. Imports neither torch, scikit-learn, pipelines, mlflow nor optuna:
the estimators are imported when a model is first fitted.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import EpiflowError

SPARSITY_SOURCES = ("pathways", "random", "rigl", "l1")
MEMBER_SOURCES = ("pathways", "random")
STANDARDIZE = ("column", "class")
LR_SCHEDULES = ("constant", "cosine")       # learning rate over the steps: fixed, or cosine to 0
# keys of the shared `train:` section a single model may override
TRAIN_OVERRIDES = ("max_epochs", "batch_size")


def _f(default, what: str, **kw):
    """A field with the phrase its error message uses ('must be <what>')."""
    return Field(default, json_schema_extra={"what": what}, **kw)


PosInt = Annotated[int, Field(ge=1)]


class _Schema(BaseModel):
    # inf and nan are no settings of any model (a learning rate of .inf trains nothing)
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class NetParams(_Schema):
    """A gene network (``models.genes``); max_epochs / batch_size override ``train:``."""
    lr: float = _f(1e-3, "a number > 0", gt=0)
    weight_decay: float = _f(0.0, "a number >= 0", ge=0)
    dropout: float = _f(0.0, "a number in [0, 1)", ge=0, lt=1)
    hidden: int = _f(50, "a positive integer", ge=1)
    focal_gamma: float = _f(2.0, "a number >= 0", ge=0)
    focal_alpha: Union[float, None] = _f(None, "a number in (0, 1) or empty", gt=0, lt=1)   # None: controls share
    pathway_seed: int = _f(0, "an integer >= 0", ge=0)
    sparsity: float = _f(1.0, "in (0, 1]", gt=0, le=1)            # fraction of genes connected
    sparsity_source: Literal[SPARSITY_SOURCES] = _f("pathways", f"one of {', '.join(SPARSITY_SOURCES)}")
    dense_units: int = _f(64, "a positive integer", ge=1)
    init_seed: Union[int, None] = _f(None, "an integer or empty")  # None: the train seed
    gene_gene_edges: Union[str, None] = _f(None, "a file of gene pairs")   # genegene_pathway
    rigl_fraction: float = _f(0.3, "a number in (0, 1]", gt=0, le=1)      # RigL drop fraction
    rigl_interval: Union[int, None] = _f(None, "a positive integer or empty", ge=1)  # None: per epoch
    rigl_stop: float = _f(0.75, "a number in [0, 1]", ge=0, le=1)
    l1: float = _f(1e-4, "a number >= 0", ge=0)                    # L1 source penalty
    gene_l1: float = _f(0.0, "a number >= 0", ge=0)                # L1 on gene -> neuron weights
    l1_warmup: float = _f(0.5, "a number in [0, 1]", ge=0, le=1)
    # gene_l1 as a proximal step (exact zeros) instead of a loss term (models.genes.training.StepRule)
    l1_prox: bool = _f(False, "true or false")
    lr_schedule: Literal[LR_SCHEDULES] = _f("constant", f"one of {', '.join(LR_SCHEDULES)}")
    l1_epochs_fraction: float = _f(0.5, "a number in [0, 1]", ge=0, le=1)
    n_members: int = _f(10, "a positive integer", ge=1)            # ensemble
    member_source: Literal[MEMBER_SOURCES] = _f("pathways", f"one of {', '.join(MEMBER_SOURCES)}")
    member_chunk: Union[int, None] = _f(None, "a positive integer or empty", ge=1)
    standardize: Literal[STANDARDIZE] = _f("column", f"one of {', '.join(STANDARDIZE)}")
    # early stopping: this fraction of the training fold's cases and controls is held out, the
    # net is scored on it (AUC) after every epoch and the best epoch's weights are kept; 0: off
    early_stopping: float = _f(0.0, "a number in [0, 0.5)", ge=0, lt=0.5)
    patience: int = _f(3, "a positive integer", ge=1)              # epochs without a gain
    max_epochs: Union[int, None] = _f(None, "a positive integer", ge=1)
    batch_size: Union[int, None] = _f(None, "a positive integer", ge=1)


class SGDParams(_Schema):
    """SGD logistic regression on the variant matrix (``models.baselines.fit_predict_sgd``)."""
    alpha: float = _f(1e-4, "a number > 0", gt=0)
    max_iter: int = _f(50, "a positive integer", ge=1)
    class_weight: Union[Literal["balanced"], dict, None] = _f("balanced", "'balanced', a mapping or empty")
    tol: Union[float, None] = _f(1e-4, "a number >= 0 or empty", ge=0)
    scale: bool = _f(True, "true or false")
    l1_ratio: float = _f(0.15, "a number in [0, 1]", ge=0, le=1)


class RFParams(_Schema):
    """Random forest (``models.baselines.fit_predict_rf``)."""
    n_estimators: int = _f(300, "a positive integer", ge=1)
    max_features: Union[Literal["sqrt", "log2"], int, float, None] = _f(
        "sqrt", "'sqrt', 'log2', a number or empty")
    min_samples_leaf: int = _f(1, "a positive integer", ge=1)
    max_depth: Union[int, None] = _f(None, "a positive integer or empty", ge=1)
    class_weight: Union[Literal["balanced", "balanced_subsample"], dict, None] = _f(
        "balanced_subsample", "'balanced', 'balanced_subsample', a mapping or empty")
    n_jobs: Union[int, None] = _f(None, "an integer or empty")


class RFActivationsParams(RFParams):
    """A forest on the gene activations of a net (``net``: that net's type and params)."""
    net: dict = _f({"type": "logreg"}, "a mapping with a type, e.g. net: {type: logreg, lr: 0.003}")


NET_DEFAULTS: dict = {k: f.default for k, f in NetParams.model_fields.items() if k not in TRAIN_OVERRIDES}
# search-space keys every gene network understands (``epochs`` sets train.max_epochs)
NET_TUNABLE = ("lr", "weight_decay", "dropout", "epochs", "hidden", "focal_alpha", "focal_gamma", "gene_l1")


@dataclass(frozen=True)
class ModelType:
    """One model type: schema, estimator, tunable keys, inputs and (gene nets) head flags."""
    name: str
    params: type
    estimator: str                     # a function of models.estimators: (type, cfg, data, train, seed)
    tunable: tuple = ()
    reads: tuple = ("counts",)         # 'counts' (gene x class) and/or 'variants'
    gene_net: bool = False             # a models.genes network (fit on the count tensor)
    sparse: bool = False               # has a sparse gene -> neuron layer (sparsity applies)
    rewirable: bool = False            # that layer is one layer RigL / L1 pruning can rewire
    all_pathways: bool = False         # every gene-pathway membership an edge (else one each)
    activations: bool = False          # one set of gene activations (rf_activations can read it)
    members: bool = False              # an ensemble of sparse nets (member graphs: member_source)
    reads_net: bool = False            # trains a gene net inside (rf_activations)
    penalty: str | None = None         # SGD penalty

    @property
    def trains_net(self) -> bool:
        """Whether fitting trains a gene network (on ``train.device``: the GPU where there is one)."""
        return self.gene_net or self.reads_net

    @property
    def needs_pathways(self) -> bool:
        """Whether fitting reads the gene-set (GMT) memberships (every gene net may)."""
        return self.trains_net

    @property
    def keys(self) -> tuple:
        return tuple(self.params.model_fields)

    def default(self, key: str):
        f = self.params.model_fields.get(key)
        return None if f is None else f.default

    def fit_predict(self, cfg: dict, *, counts_train=None, counts_test=None, variants_train=None,
                    variants_test=None, y_train, n_classes: int, gene_pathways=None, train: dict,
                    seed: int):
        """Fit on one training fold; (test probabilities, info with n_parameters)."""
        d = dict(counts_train=counts_train, counts_test=counts_test, variants_train=variants_train,
                 variants_test=variants_test, y_train=y_train, n_classes=n_classes,
                 gene_pathways=gene_pathways)
        return self.fit(self, cfg, d, train, seed)

    @property
    def fit(self) -> Callable:
        """The estimator function. models.estimators (and through it torch / scikit-learn) is
        imported here, on the first fit, so that validating params.yaml does not make every
        stage that reads params depend on the estimators' code."""
        return getattr(importlib.import_module("models.estimators"), self.estimator)


def _net(name, extra_tunable=(), **flags) -> ModelType:
    """A gene network head (its module: ``models.genes.nets.HEADS[name]``)."""
    sparse = ("sparsity",) if flags.get("sparse") or flags.get("members") else ()
    return ModelType(name, NetParams, "fit_gene_net", tunable=NET_TUNABLE + sparse + tuple(extra_tunable),
                     gene_net=True, **flags)


_SGD_KEYS = tuple(SGDParams.model_fields)
_RF_KEYS = tuple(RFParams.model_fields)
REGISTRY: dict[str, ModelType] = {m.name: m for m in (
    _net("logreg", activations=True),
    _net("biosparse", sparse=True, rewirable=True, activations=True),
    _net("linear", sparse=True, rewirable=True, activations=True),
    _net("multipathway", sparse=True, rewirable=True, all_pathways=True, activations=True),
    _net("genegene_pathway", sparse=True, all_pathways=True, activations=True),
    _net("dense", ("dense_units",), activations=True),
    _net("ensemble", members=True),
    ModelType("sgd_l2", SGDParams, "fit_sgd", tunable=_SGD_KEYS, reads=("variants",), penalty="l2"),
    ModelType("sgd_l1", SGDParams, "fit_sgd", tunable=_SGD_KEYS, reads=("variants",), penalty="l1"),
    ModelType("rf_variants", RFParams, "fit_rf_variants", tunable=_RF_KEYS, reads=("variants",)),
    ModelType("rf_genes", RFParams, "fit_rf_genes", tunable=_RF_KEYS),
    ModelType("rf_activations", RFActivationsParams, "fit_rf_activations", tunable=("net",) + _RF_KEYS,
              reads_net=True),
)}


def gene_net_types() -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if m.gene_net)


def sparse_heads() -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if m.sparse)


def rewirable_heads() -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if m.rewirable)


def get(mtype: str) -> ModelType:
    try:
        return REGISTRY[mtype]
    except KeyError:
        raise EpiflowError(f"unknown model type '{mtype}'; known types: {', '.join(REGISTRY)}") from None


def fit_predict(mtype: str, cfg: dict, **data):
    """``REGISTRY[mtype].fit_predict(cfg, **data)``."""
    return get(mtype).fit_predict(cfg, **data)


# ------------------------------------------------------------------------------ validation
def _check_keys(name: str, mt: ModelType, cfg: dict, where: str) -> None:
    valid = mt.keys
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise EpiflowError(f"{where}: model '{name}' (type {mt.name}): unknown key(s) "
                           f"{', '.join(unknown)}; valid: {', '.join(valid)}")


def _check_net(name: str, mt: ModelType, cfg: dict, where: str) -> None:
    """The rules between keys of a gene net (the values alone are checked by :class:`NetParams`)."""
    pre = f"{where}: model '{name}':"
    source = cfg.get("sparsity_source", "pathways")
    sparse, rewire = ", ".join(sparse_heads()), ", ".join(rewirable_heads())
    if mt.members and source != "pathways":
        raise EpiflowError(f"{pre} an ensemble's member graphs are set by member_source "
                           f"({', '.join(MEMBER_SOURCES)}), not sparsity_source")
    if source not in SPARSITY_SOURCES:
        raise EpiflowError(f"{pre} unknown sparsity_source '{source}'; valid: {', '.join(SPARSITY_SOURCES)}")
    if source in ("rigl", "l1") and not mt.rewirable:
        raise EpiflowError(f"{pre} sparsity_source '{source}' applies to {rewire}, not '{mt.name}'")
    sparsity = cfg.get("sparsity", 1.0)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < float(sparsity) <= 1:
        raise EpiflowError(f"{pre} sparsity must be in (0, 1], got {sparsity!r}")
    if not mt.sparse and not mt.members and (source != "pathways" or float(sparsity) != 1.0):
        raise EpiflowError(f"{pre} '{mt.name}' has no sparse gene layer; sparsity_source and "
                           f"sparsity apply to {sparse}")
    member = cfg.get("member_source", "pathways")
    if member not in MEMBER_SOURCES:
        raise EpiflowError(f"{pre} unknown member_source '{member}'; valid: {', '.join(MEMBER_SOURCES)}")
    if cfg.get("gene_gene_edges") is not None:
        if mt.name != "genegene_pathway":
            raise EpiflowError(f"{pre} gene_gene_edges applies to genegene_pathway only")
        if not isinstance(cfg["gene_gene_edges"], str):
            raise EpiflowError(f"{pre} gene_gene_edges must be a file of gene pairs")


def _check_values(name: str, mt: ModelType, cfg: dict, where: str) -> None:
    """The schema's types and ranges; the first error as one line naming key and value."""
    try:
        mt.params.model_validate(cfg)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        field = mt.params.model_fields.get(key)
        what = (field.json_schema_extra or {}).get("what") if field is not None else None
        value = cfg.get(key, err.get("input"))
        raise EpiflowError(f"{where}: model '{name}': {key} must be {what or err['msg'].lower()}, "
                           f"got {value!r}") from None


def _check_activations_net(name: str, cfg: dict, where: str) -> dict:
    net = cfg.get("net", {"type": "logreg"})
    if not isinstance(net, dict):
        raise EpiflowError(f"{where}: model '{name}': net must be a mapping with a type, "
                           f"e.g. net: {{type: logreg, lr: 0.003}}")
    net = dict(net)
    ntype = net.pop("type", "logreg")
    if ntype not in REGISTRY or not REGISTRY[ntype].activations:
        valid = ", ".join(n for n, m in REGISTRY.items() if m.activations)
        raise EpiflowError(f"{where}: model '{name}': net type '{ntype}' has no single set of gene "
                           f"activations; use one of {valid}")
    _validate_entry(f"{name}.net", REGISTRY[ntype], net, where)
    return {"type": ntype, **net}


def _validate_entry(name: str, mt: ModelType, cfg: dict, where: str) -> None:
    _check_keys(name, mt, cfg, where)
    if mt.gene_net:
        _check_net(name, mt, cfg, where)
    _check_values(name, mt, cfg, where)


def validate_model(name: str, entry, where: str = "params.yaml") -> tuple[str, dict]:
    """(type, config) of the ``models:`` entry ``name`` (a mapping with an optional ``type``,
    default the name), or a one-line :class:`EpiflowError` naming ``where``, the model, the key
    and the value. The config is the entry as given, without ``type`` (defaults are NOT filled
    in: what is logged and written stays the user's); an rf_activations ``net`` gets its type."""
    raw = {} if entry is None else entry
    if not isinstance(raw, dict):
        raise EpiflowError(f"{where}: model '{name}' must be a mapping of settings")
    cfg = dict(raw)
    mtype = cfg.pop("type", name)
    if mtype not in REGISTRY:
        raise EpiflowError(f"unknown model type '{mtype}' for model '{name}' in {where}; "
                           f"known types: {', '.join(REGISTRY)}")
    mt = REGISTRY[mtype]
    _validate_entry(name, mt, cfg, where)
    if "net" in mt.keys:
        cfg["net"] = _check_activations_net(name, cfg, where)
    return mtype, cfg
