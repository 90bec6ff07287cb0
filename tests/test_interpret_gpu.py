"""models.interpret on a CUDA device: the same net on the GPU gives the CPU's gene attributions,
pathway importance and interaction scores (the CPU results are the reference), and a net trained
on the GPU passes IG's completeness check and finds the planted genes."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models import interpret as I
from models.genes.training import fit_predict
from models.simulate.genes import planted_burden

pytestmark = pytest.mark.gpu
C = 4


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def cohort():
    return planted_burden(n=1000, n_genes=40, n_classes=C, n_causal=4, effect=1.5, case_fraction=0.5,
                          rate=0.08, n_pathways=5, n_damaging=2, seed=3)


@pytest.mark.parametrize("model_type", ["logreg", "biosparse", "dense"])
def test_gpu_equals_cpu(cohort, model_type):
    dev = _cuda()
    co = cohort
    _, info = fit_predict(model_type, co.X[:750], co.y[:750], co.X[750:], n_classes=C,
                          gene_pathways=co.gene_pathways, params={"lr": 0.01, "dense_units": 16},
                          train={"max_epochs": 10, "batch_size": 64, "seed": 0, "device": "cpu"},
                          return_model=True)
    net, st = info["model"], info["standardiser"]
    gnet = copy.deepcopy(net).to(dev)
    X_te = co.X[750:]
    a = I.gene_attributions(net, st, X_te, C, n_steps=64)
    b = I.gene_attributions(gnet, st, X_te, C, n_steps=64)
    np.testing.assert_allclose(b.gene_abs, a.gene_abs, rtol=1e-3, atol=1e-6)
    assert b.completeness_rel_err < 0.01
    pa, pb = I.pathway_importance(net, st, X_te, C), I.pathway_importance(gnet, st, X_te, C)
    if pa is None:
        assert pb is None
    else:
        np.testing.assert_allclose(pb, pa, rtol=1e-3, atol=1e-6)
    top = np.argsort(-a.gene_abs)[:8]
    sa = I.interaction_scores(net, st, X_te, C, top, n_null=50, seed=1)
    sb = I.interaction_scores(gnet, st, X_te, C, top, n_null=50, seed=1)
    merged = sa.merge(sb, on=["gene_a", "gene_b"], suffixes=("_cpu", "_gpu"))
    assert len(merged) == len(sa)
    np.testing.assert_allclose(merged["score_gpu"], merged["score_cpu"], rtol=1e-3, atol=1e-5)


def test_net_trained_on_the_gpu_finds_the_planted_genes(cohort):
    dev = _cuda()
    co = cohort
    _, info = fit_predict("logreg", co.X[:750], co.y[:750], co.X[750:], n_classes=C,
                          params={"lr": 0.01}, train={"max_epochs": 20, "batch_size": 64, "seed": 0,
                                                      "device": "cuda"}, return_model=True)
    net, st = info["model"], info["standardiser"]
    assert next(net.parameters()).device.type == dev.type
    a = I.gene_attributions(net, st, co.X[750:], C, n_steps=32)
    assert a.completeness_rel_err < 0.01
    top4 = set(np.argsort(-a.gene_abs)[:4].tolist())
    assert len(top4 & set(co.causal_genes.tolist())) >= 3
