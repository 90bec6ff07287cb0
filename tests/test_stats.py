"""Corrected resampled t-test, learning-curve subsets and crossover against hand computations."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from models.stats import (auc_summary, corrected_resampled_ttest, crossover_size,
                          learning_curve_subsets)


def test_corrected_ttest_matches_hand_computation():
    a = np.array([0.70, 0.72, 0.68, 0.71, 0.69, 0.73])
    b = np.array([0.66, 0.70, 0.67, 0.66, 0.68, 0.69])
    d = a - b                      # 0.04 0.02 0.01 0.05 0.01 0.04
    m, s2 = d.mean(), d.var(ddof=1)
    n_train, n_test = 1333.0, 667.0
    t = m / np.sqrt((1 / 6 + n_test / n_train) * s2)
    res = corrected_resampled_ttest(a, b, n_train=n_train, n_test=n_test)
    assert res.t == pytest.approx(t) and res.df == 5
    assert res.p_value == pytest.approx(2 * sps.t.sf(t, 5))
    # the naive paired t-test is scipy's ttest_rel, and is more liberal than the correction
    assert res.p_value_naive == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert res.p_value > res.p_value_naive
    one = corrected_resampled_ttest(a, b, n_train=n_train, n_test=n_test, alternative="greater")
    assert one.p_value == pytest.approx(res.p_value / 2)
    rev = corrected_resampled_ttest(b, a, n_train=n_train, n_test=n_test)
    assert rev.t == pytest.approx(-t) and rev.p_value == pytest.approx(res.p_value)


def test_corrected_ttest_edge_cases_and_errors():
    same = corrected_resampled_ttest([0.6] * 5, [0.6] * 5, n_train=2, n_test=1)
    assert same.t == 0 and same.p_value == 1.0
    shift = corrected_resampled_ttest([0.7] * 5, [0.6] * 5, n_train=2, n_test=1)
    assert shift.p_value == 0.0
    with pytest.raises(ValueError, match="paired"):
        corrected_resampled_ttest([0.1, 0.2], [0.1], n_train=2, n_test=1)
    with pytest.raises(ValueError, match="alternative"):
        corrected_resampled_ttest([0.1, 0.2], [0.1, 0.3], n_train=2, n_test=1, alternative="up")


def test_corrected_ttest_controls_type_one_error_on_overlapping_cv():
    """Two equally good models on repeated 2:1 splits of one small data set: the naive test
    rejects far too often, the corrected one stays near its nominal 5 %."""
    rng = np.random.default_rng(0)
    rej_c = rej_n = 0
    trials = 300
    for _ in range(trials):
        # fold differences share a data-set-level component (training sets overlap)
        common = rng.normal(0, 0.02 * np.sqrt(0.5))   # fold correlation n_test/n_train-like
        d = common + rng.normal(0, 0.02, size=30)
        r = corrected_resampled_ttest(d, np.zeros(30), n_train=2, n_test=1)
        rej_c += r.p_value < 0.05
        rej_n += r.p_value_naive < 0.05
    assert rej_n / trials > 0.3
    assert rej_c / trials < 0.12


def test_learning_curve_subsets_nested_stratified_seeded():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.87).astype(int)
    train = np.sort(rng.choice(3000, size=2000, replace=False))
    subs = learning_curve_subsets(train, y, seed=4)
    assert list(subs) == [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert np.array_equal(subs[1.0], train)
    prev = np.empty(0, np.int64)
    frac_cases = y[train].mean()
    for f, idx in subs.items():
        assert np.isin(idx, train).all() and np.isin(prev, idx).all()      # nested, inside fold
        assert abs(idx.size - f * train.size) <= 2
        assert abs(y[idx].mean() - frac_cases) < 0.01                       # stratified
        prev = idx
    again = learning_curve_subsets(train, y, seed=4)
    assert all(np.array_equal(again[f], subs[f]) for f in subs)
    other = learning_curve_subsets(train, y, seed=5)
    assert not np.array_equal(other[0.1], subs[0.1])
    with pytest.raises(ValueError):
        learning_curve_subsets(train, y, fractions=[0.0, 1.0])


def test_crossover_size_interpolates():
    sizes = [100, 200, 400, 800]
    additive = [0.60, 0.62, 0.64, 0.65]
    sparse = [0.55, 0.60, 0.66, 0.70]
    # a - b: -0.05, -0.02, +0.02, +0.05 -> crosses halfway between 200 and 400
    assert crossover_size(sizes, sparse, additive) == pytest.approx(300.0)
    assert crossover_size(sizes, additive, sparse) is None
    assert crossover_size(sizes, [0.7] * 4, [0.6] * 4) == 100


def test_auc_summary():
    s = auc_summary([0.6, 0.7, 0.8])
    assert s["auc_mean"] == pytest.approx(0.7) and s["auc_sd"] == pytest.approx(0.1)
    assert s["n_folds"] == 3


def test_rank_auc_equals_sklearn_with_ties_and_is_nan_for_one_class():
    from sklearn.metrics import roc_auc_score

    from models.stats import rank_auc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)           # many ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert rank_auc(y == 1, s) == rank_auc(y, s)
    assert rank_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75        # closed form: 3 of 4 pairs
    assert np.isnan(rank_auc(np.ones(5), np.arange(5)))
