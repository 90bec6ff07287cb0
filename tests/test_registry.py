"""The model registry: one entry per type, typed and ranged params, one-line errors naming file,
model, key and value, defaults in one place, and a new head as one head class + one entry."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from models.errors import EpiflowError
from models.registry import (NET_DEFAULTS, REGISTRY, ModelType, NetParams, RFParams, SGDParams,
                             validate_model)


def test_every_type_has_schema_estimator_and_tunable_keys():
    assert set(REGISTRY) == {"logreg", "biosparse", "linear", "multipathway", "genegene_pathway", "dense",
                             "ensemble", "sgd_l2", "sgd_l1", "rf_variants", "rf_genes", "rf_activations"}
    for name, mt in REGISTRY.items():
        assert mt.name == name and callable(mt.fit) and mt.tunable
        # a tunable key is a param of the type (epochs: the train section's max_epochs)
        assert set(mt.tunable) - {"epochs"} <= set(mt.params.model_fields), name
    assert "sparsity" in REGISTRY["biosparse"].tunable and "sparsity" not in REGISTRY["logreg"].tunable
    assert "dense_units" in REGISTRY["dense"].tunable
    assert REGISTRY["sgd_l1"].reads == ("variants",) and REGISTRY["rf_genes"].reads == ("counts",)


def test_repository_params_validate():
    from pipelines.params import load_params, repo_root

    models = load_params(repo_root() / "params.yaml")["models"]
    for name, entry in models.items():
        mtype, cfg = validate_model(name, entry, "params.yaml")
        assert mtype == entry.get("type", name)
        # the user's settings, not filled with defaults (what is logged and written stays theirs)
        assert set(cfg) == set(entry) - {"type"}


@pytest.mark.parametrize("entry,key,shown", [
    ({"type": "biosparse", "lr": "fast"}, "lr", "'fast'"),
    ({"type": "biosparse", "lr": -1.0}, "lr", "-1.0"),
    ({"type": "logreg", "dropout": 1.0}, "dropout", "1.0"),
    ({"type": "logreg", "hidden": True}, "hidden", "True"),
    ({"type": "dense", "dense_units": 2.5}, "dense_units", "2.5"),
    ({"type": "sgd_l2", "alpha": "0.01"}, "alpha", "'0.01'"),
    ({"type": "rf_genes", "n_estimators": 0}, "n_estimators", "0"),
    ({"type": "biosparse", "standardize": "rows"}, "standardize", "'rows'"),
    ({"type": "rf_activations", "net": {"type": "logreg", "lr": 0}}, "lr", "0"),
])
def test_bad_values_are_one_line_errors_naming_file_key_value(entry, key, shown):
    with pytest.raises(EpiflowError) as exc:
        validate_model("m", entry, "params.yaml")
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith("params.yaml: model 'm") and f"{key} must be" in text and text.endswith(f"got {shown}")


def test_error_wording():
    with pytest.raises(EpiflowError, match=r"^params.yaml: model 'biosparse': lr must be a number > 0, got 'fast'$"):
        validate_model("biosparse", {"lr": "fast"}, "params.yaml")
    with pytest.raises(EpiflowError, match="unknown key"):
        validate_model("logreg", {"type": "logreg", "learning_rate": 0.1}, "p.yaml")


def test_defaults_have_one_source():
    from models.baselines import fit_predict_rf, fit_predict_sgd
    from models.genes import DEFAULT_PARAMS

    assert DEFAULT_PARAMS == NET_DEFAULTS == {k: f.default for k, f in NetParams.model_fields.items()
                                             if k not in ("max_epochs", "batch_size")}
    # the baseline functions' keyword defaults agree with the schemas
    for fn, schema in ((fit_predict_sgd, SGDParams), (fit_predict_rf, RFParams)):
        for k, f in schema.model_fields.items():
            assert inspect.signature(fn).parameters[k].default == f.default, (fn.__name__, k)


def test_a_new_head_is_one_head_class_and_one_registry_entry(monkeypatch):
    """A head of gene neurons -> output with a bias-free sum: a Head subclass + a REGISTRY entry
    make it resolvable from params, fittable by cross_validate and tunable."""
    from torch import nn

    from models import registry
    from models.genes import nets
    from models.simulate.genes import planted_burden
    from pipelines import tune, zoo
    from pipelines.workflows.cohort import Cohort
    from pipelines.workflows.cv import ModelSpec, cross_validate

    class SumHead(nets.LogregHead):
        def build(self, net, n_genes, topo, gg_topo, dense_units, gen):
            net.out = nets.DenseLinear(n_genes, 1, gen=gen)
            nn.init.constant_(net.out.bias, 0.0)

    entry = ModelType("sumhead", NetParams, "fit_gene_net", tunable=registry.NET_TUNABLE,
                      gene_net=True, activations=True)
    monkeypatch.setitem(registry.REGISTRY, "sumhead", entry)
    monkeypatch.setitem(nets.HEADS, "sumhead", SumHead())

    mtype, cfg = zoo.resolve("mine", {"mine": {"type": "sumhead", "lr": 0.01, "hidden": 4}})
    assert (mtype, cfg) == ("sumhead", {"lr": 0.01, "hidden": 4})
    coh = planted_burden(n=240, n_genes=20, n_causal=3, effect=2.0, seed=1, rate=0.05, n_damaging=8)
    X = coh.X.tocsr()
    cohort = Cohort(counts=X, variants=X, y=np.asarray(coh.y, np.int64),
                    sample_ids=np.array([f"s{i}" for i in range(X.shape[0])]),
                    genes=tuple(f"G{g}" for g in range(X.shape[1] // coh.n_classes)),
                    classes=tuple(f"c{c}" for c in range(coh.n_classes)), gene_pathways=coh.gene_pathways)
    idx = np.arange(240)
    folds = [(0, 0, idx[:160], idx[160:])]
    res = cross_validate(ModelSpec("mine", mtype, cfg), cohort, folds,
                         train_cfg={"max_epochs": 2, "device": "cpu", "seed": 0})
    assert len(res.folds) == 1 and 0 <= res.folds[0].auc <= 1 and res.folds[0].proba.shape == (80,)
    assert set(tune.model_space("sumhead", {"lr": {}, "alpha": {}})) == {"lr"}
