"""Heritability proxy: PCR curves against closed forms, and top pairs vs random pairs."""
from __future__ import annotations

import numpy as np
import pytest

from models.ngg.heritability import (
    heritability_table,
    pair_features,
    pcr_curve,
    random_pairs,
    summarize_table,
)
from models.ngg.ngg import ngg_fit
from models.simulate.pheno import simulate_phenotype
from pipelines.plots.heritability import plot_heritability


def _cohort(seed, n=1000, p=60):
    rng = np.random.default_rng(seed)
    return rng.binomial(2, rng.uniform(0.1, 0.5, p), (n, p)).astype(np.float32)


def test_pcr_with_all_components_is_ols():
    rng = np.random.default_rng(0)
    n, q = 200, 12
    F = rng.standard_normal((n, q)) @ rng.standard_normal((q, q))
    y = F[:, :3] @ np.array([1.0, -0.5, 0.2]) + rng.standard_normal(n)
    c = pcr_curve(F, y)
    assert c["n_components"].tolist() == list(range(1, q + 1))
    assert np.all(np.diff(c["r2"]) >= -1e-12)
    M = np.column_stack([np.ones(n), F])
    beta, *_ = np.linalg.lstsq(M, y, rcond=None)
    r2_ols = 1 - np.sum((y - M @ beta) ** 2) / np.sum((y - y.mean()) ** 2)
    assert c["r2"][-1] == pytest.approx(r2_ols, abs=1e-10)
    k = c["n_components"]
    np.testing.assert_allclose(c["adj_r2"], 1 - (1 - c["r2"]) * (n - 1) / (n - k - 1))
    # out-of-sample: predicting the training rows themselves gives the in-sample R^2
    c2 = pcr_curve(F, y, test_F=F, test_y=y)
    np.testing.assert_allclose(c2["r2_test"], c["r2"], atol=1e-10)
    assert pcr_curve(F, y, max_components=4)["r2"].size == 4


def test_planted_snps_explain_their_h2():
    X = _cohort(1, n=3000)
    sim = simulate_phenotype(X, n_snps=4, n_pairs=2, h2_add=0.3, h2_int=0.2, seed=1, min_gap=3)
    t = heritability_table(X, sim.y, sim.snps, sim.pairs, n_random=3)
    s = summarize_table(t)
    last = s.groupby("feature_set").tail(1).set_index("feature_set")
    assert last.loc["1d", "adj_r2"] == pytest.approx(sim.realized["h2_add"], abs=0.03)
    total = sim.realized["h2_add"] + sim.realized["h2_int"]
    assert last.loc["1d+top_pairs", "adj_r2"] == pytest.approx(total, abs=0.03)
    assert last.loc["1d+random_pairs", "adj_r2"] == pytest.approx(sim.realized["h2_add"], abs=0.03)


def test_top_ngg_pairs_beat_random_pairs_on_held_out_samples(tmp_path):
    X = _cohort(2)
    sim = simulate_phenotype(X, n_snps=3, n_pairs=3, h2_add=0.2, h2_int=0.4, seed=2, min_gap=3)
    disc, ev = np.arange(0, 500), np.arange(500, 1000)
    res = ngg_fit(X[disc], sim.y[disc], B=50, R=10, seed=0, progress=False)
    snps = res.top_snps["snp"][:5]
    pairs = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])[:5]
    t = heritability_table(X, sim.y, snps, pairs, n_random=5, rows=ev, seed=3)
    s = summarize_table(t)
    last = s.groupby("feature_set").tail(1).set_index("feature_set")
    assert last.loc["1d+top_pairs", "n_features"] == 10
    gain_top = last.loc["1d+top_pairs", "adj_r2"] - last.loc["1d", "adj_r2"]
    gain_rand = last.loc["1d+random_pairs", "adj_r2"] - last.loc["1d", "adj_r2"]
    assert gain_top > 0.25  # the planted pairs carry h2_int = 0.4
    assert abs(gain_rand) < 0.03
    best_random_draw = t[t.feature_set == "1d+random_pairs"].groupby("draw")["adj_r2"].max().max()
    assert last.loc["1d+top_pairs", "adj_r2"] > best_random_draw + 0.2
    png = plot_heritability(t, tmp_path / "h2.png", title="planted")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_null_phenotype_top_pairs_do_not_beat_random_when_held_out():
    X = _cohort(3)
    y = np.random.default_rng(4).standard_normal(X.shape[0])
    disc, ev = np.arange(0, 500), np.arange(500, 1000)
    res = ngg_fit(X[disc], y[disc], B=50, R=10, seed=0, progress=False)
    pairs = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])[:5]
    t = heritability_table(X, y, res.top_snps["snp"][:5], pairs, n_random=5, rows=disc,
                           test_rows=ev)
    last = summarize_table(t).groupby("feature_set").tail(1).set_index("feature_set")
    # in-sample on the selection rows the top pairs look good (selection bias) ...
    assert last.loc["1d+top_pairs", "adj_r2"] > last.loc["1d+random_pairs", "adj_r2"] + 0.01
    # ... but on held-out rows they predict no better than random pairs
    assert last.loc["1d+top_pairs", "r2_test"] < last.loc["1d+random_pairs", "r2_test"] + 0.02


def test_random_pairs_and_pair_features():
    rng = np.random.default_rng(0)
    ex = np.array([[0, 1], [2, 5]])
    rp = random_pairs(6, 13, rng, exclude=ex)  # 15 pairs minus 2 excluded: all the rest
    assert rp.shape == (13, 2) and np.all(rp[:, 0] < rp[:, 1])
    got = {tuple(r) for r in rp.tolist()}
    assert len(got) == 13 and not got & {(0, 1), (2, 5)}
    with pytest.raises(ValueError):
        random_pairs(4, 7, rng)
    ids = np.array([3, 10, 20])
    assert set(np.unique(random_pairs(ids, 3, rng))) == {3, 10, 20}
    X = _cohort(5, n=300, p=6)
    F = pair_features(X, [[1, 4]])
    X = X.astype(np.float64)
    Z = (X - X.mean(0)) / X.std(0)
    f = Z[:, 1] * Z[:, 4]
    np.testing.assert_allclose(F[:, 0], (f - f.mean()) / f.std(), atol=1e-10)
