"""Baselines: SGD logistic (L1/L2) and random forests on planted additive signals."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from models.baselines import fit_predict_rf, fit_predict_sgd, gene_sums
from models.simulate.genes import planted_burden


def _variants(n=1500, p=400, k=10, seed=0):
    """Sparse carrier matrix (rare variants) with a planted additive signal on k variants."""
    rng = np.random.default_rng(seed)
    maf = rng.beta(0.5, 8, size=p) * 0.3 + 0.01
    X = sp.csr_matrix((rng.random((n, p)) < maf).astype(np.float32))
    beta = np.zeros(p)
    causal = rng.choice(p, size=k, replace=False)
    beta[causal] = rng.choice([-2.0, 2.0], size=k)
    signal = X @ beta
    score = signal + rng.logistic(size=n) * 0.7
    y = (score > np.quantile(score, 0.13)).astype(int)
    return X, y, signal


@pytest.mark.parametrize("penalty", ["l2", "l1"])
def test_sgd_recovers_planted_variants(penalty):
    X, y, signal = _variants()
    tr, te = np.arange(1000), np.arange(1000, 1500)
    proba, info = fit_predict_sgd(X[tr], y[tr], X[te], penalty=penalty, alpha=1e-2, seed=0)
    oracle = roc_auc_score(y[te], signal[te])      # the noiseless planted score
    auc = roc_auc_score(y[te], proba)
    assert auc > 0.7 and auc > oracle - 0.1, (auc, oracle)
    assert info["n_parameters"] == X.shape[1] + 1 and info["train_time_s"] > 0
    if penalty == "l1":
        assert info["n_nonzero"] < X.shape[1]


def test_sgd_is_seeded_and_validates():
    X, y, _ = _variants(n=300, p=50)
    a, _ = fit_predict_sgd(X[:200], y[:200], X[200:], seed=3)
    b, _ = fit_predict_sgd(X[:200], y[:200], X[200:], seed=3)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="penalty 'l3'"):
        fit_predict_sgd(X[:200], y[:200], X[200:], penalty="l3")
    with pytest.raises(ValueError, match="rows"):
        fit_predict_sgd(X[:200], y[:100], X[200:])


def test_gene_sums_add_classes():
    X = sp.csr_matrix(np.arange(12, dtype=float).reshape(1, 12))   # C=3, G=4
    assert np.array_equal(gene_sums(X, 3).toarray(), [[0 + 4 + 8, 1 + 5 + 9, 2 + 6 + 10, 3 + 7 + 11]])
    with pytest.raises(ValueError, match="multiple"):
        gene_sums(X, 5)


def test_random_forest_on_gene_sums_finds_burden_signal():
    coh = planted_burden(n=1200, n_genes=60, n_causal=4, effect=2.0, seed=2, rate=0.05,
                         n_damaging=16)
    S = gene_sums(coh.X, coh.n_classes)
    tr, te = np.arange(800), np.arange(800, 1200)
    proba, info = fit_predict_rf(S[tr], coh.y[tr], S[te], n_estimators=200, seed=0,
                                 min_samples_leaf=5)
    oracle = roc_auc_score(coh.y[te], coh.liability[te])
    auc = roc_auc_score(coh.y[te], proba)
    assert auc > 0.7 and auc > oracle - 0.12, (auc, oracle)
    assert info["n_parameters"] > 200


def test_random_forest_on_learned_gene_activations():
    from models.baselines import fit_predict_rf_activations

    coh = planted_burden(n=900, n_genes=60, n_causal=4, effect=2.0, seed=2, rate=0.03)
    tr, te = np.arange(600), np.arange(600, 900)
    proba, info = fit_predict_rf_activations(coh.X[tr], coh.y[tr], coh.X[te], n_classes=16,
                                             params={"lr": 1e-2}, train={"max_epochs": 10},
                                             rf={"n_estimators": 150, "min_samples_leaf": 5})
    assert roc_auc_score(coh.y[te], proba) > 0.7
    assert info["n_parameters"] > 901 + 60 + 1
