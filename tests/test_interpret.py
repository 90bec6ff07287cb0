"""models.interpret: attributions, interaction scores and the burden interaction test
against planted truths and closed forms (small cohorts, CPU, deterministic)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats as sps
from torch import nn

from models import interpret as I
from models.genes.data import Standardiser
from models.genes.nets import GeneNet, build_topology
from models.genes.training import fit_predict
from models.simulate.genes import planted_burden, random_counts

C = 4
TRAIN = {"batch_size": 64, "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small ops: one intra-op thread (OpenMP spin-waits make 2 threads several times slower
    on a shared machine); restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fit(model_type, X_tr, y_tr, X_te, *, epochs, gene_pathways=None, **params):
    torch.manual_seed(0)
    p = {"lr": 0.01, "focal_gamma": 0.0, **params}
    _, info = fit_predict(model_type, X_tr, y_tr, X_te, n_classes=C, gene_pathways=gene_pathways,
                          params=p, train={**TRAIN, "max_epochs": epochs}, return_model=True)
    return info["model"], info["standardiser"]


# --------------------------------------------------------------------------- cohorts and nets


@pytest.fixture(scope="module")
def additive():
    """Additive burden cohort: 40 genes x 4 classes, 4 causal genes (2 damaging classes)."""
    co = planted_burden(n=1000, n_genes=40, n_classes=C, n_causal=4, effect=1.5,
                        case_fraction=0.5, rate=0.08, n_pathways=5, n_damaging=2, seed=3)
    X_tr, X_te, y_tr = co.X[:750], co.X[750:], co.y[:750]
    nets = {mt: _fit(mt, X_tr, y_tr, X_te, epochs=20, gene_pathways=co.gene_pathways, dense_units=16)
            for mt in ("logreg", "biosparse", "dense", "linear")}
    return {"co": co, "X_te": X_te, "nets": nets}


XOR_A, XOR_B = 3, 17


def xor_cohort(n=1200, G=30, noise=0.1, seed=2):
    """Genes A and B carry one class-0 variant with probability 1/2 each (independently); case
    iff exactly one of them does (reciprocal sign, no marginal effect), ``noise`` of labels
    flipped; background counts in every gene."""
    rng = np.random.default_rng(seed)
    X = random_counts(n, G, C, rate=0.05, rng=rng).tolil()
    a = rng.integers(0, 2, n)
    b = rng.integers(0, 2, n)
    X[:, XOR_A] = a[:, None].astype(np.float32)      # column 0 * G + A: class 0 of gene A
    X[:, XOR_B] = b[:, None].astype(np.float32)
    y = (a ^ b).astype(np.int64)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    return X.tocsr(), y


@pytest.fixture(scope="module")
def xor():
    X, y = xor_cohort()
    X_tr, X_te, y_tr = X[:900], X[900:], y[:900]
    nets = {"dense": _fit("dense", X_tr, y_tr, X_te, epochs=30, lr=0.03, dense_units=16),
            "logreg": _fit("logreg", X_tr, y_tr, X_te, epochs=10)}
    return {"X_te": X_te, "y": y, "nets": nets}


# --------------------------------------------------------------------------- inputs


def test_standardised_rows_and_baseline():
    rng = np.random.default_rng(0)
    X = random_counts(50, 12, C, rate=0.1, rng=rng)
    st = Standardiser(X)
    rows = np.array([3, 0, 49, 3])
    z = I.standardised_rows(st, X, rows)
    assert z.dtype == np.float32 and z.shape == (4, C * 12)
    np.testing.assert_allclose(z, st.transform_dense(X.toarray()[rows]), rtol=1e-6)
    base = I.baseline_row(st)
    assert base.dtype == np.float32 and base.shape == (C * 12,)
    np.testing.assert_allclose(base, st.transform_dense(np.zeros((1, C * 12)))[0], rtol=1e-6)
    empty = sp.csr_matrix((2, C * 12))
    np.testing.assert_array_equal(I.standardised_rows(st, empty, [1]), base[None])


def test_gene_burden():
    rng = np.random.default_rng(1)
    X = random_counts(40, 9, C, rate=0.2, rng=rng)
    D = X.toarray()
    for g in (0, 4, 8):
        np.testing.assert_array_equal(I.gene_burden(X, C, g), D[:, [c * 9 + g for c in range(C)]].sum(1))
    with pytest.raises(ValueError):
        I.gene_burden(X, C, 9)


# --------------------------------------------------------------------------- attributions


def _logit_diffs(net, st, X):
    with torch.no_grad():
        net.eval()
        x = torch.as_tensor(I.standardised_rows(st, X, np.arange(X.shape[0])))
        return (net(x) - net(torch.as_tensor(I.baseline_row(st))[None])).double().numpy()


def test_ig_completeness_biosparse_and_dense(additive):
    X_te = additive["X_te"]
    net, st = additive["nets"]["biosparse"]
    net.train()
    ga = I.gene_attributions(net, st, X_te, C)               # default 32 steps
    assert net.training and net.gene.training                # mode restored
    assert ga.completeness_rel_err < 0.01                    # measured 1.6e-5
    # completeness on average, from the returned means: sum_g gene_signed = mean(f(x) - f(b))
    np.testing.assert_allclose(ga.gene_signed.sum(), _logit_diffs(net, st, X_te).mean(), rtol=1e-3)
    assert ga.class_abs.sum() >= ga.gene_abs.sum() - 1e-9     # |sum| <= sum ||
    assert ga.gene_abs.shape == (40,) and ga.class_abs.shape == (C,)

    net, st = additive["nets"]["dense"]
    net.eval()
    # the dense net's logit bends sharply near the zero-count end of the path (standardised rare
    # columns reach z ~ 15-30): 32 Gauss-Legendre steps gave 0.18 here, 128 steps 6.4e-5
    ga = I.gene_attributions(net, st, X_te, C, n_steps=128)
    assert not net.training
    assert ga.completeness_rel_err < 0.01
    np.testing.assert_allclose(ga.gene_signed.sum(), _logit_diffs(net, st, X_te).mean(), rtol=1e-3)


def test_gradshap_equals_ig_on_affine_net_and_is_seeded(additive):
    """The linear head is affine in its input: every gradient is the same, so GradientShap from
    the zero-count row equals IG exactly whatever its random points."""
    net, st = additive["nets"]["linear"]
    X_te = additive["X_te"][:60]
    ig = I.gene_attributions(net, st, X_te, C)
    state = np.random.get_state()
    torch_state = torch.get_rng_state()
    gs = I.gene_attributions(net, st, X_te, C, method="gradshap", n_samples=5, seed=3)
    assert np.array_equal(np.random.get_state()[1], state[1])   # caller's RNGs untouched
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_allclose(gs.gene_abs, ig.gene_abs, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gs.class_abs, ig.class_abs, rtol=1e-4, atol=1e-7)
    assert np.isnan(gs.completeness_rel_err)
    # a nonlinear net: seeded, reproducible
    net, st = additive["nets"]["biosparse"]
    g1 = I.gene_attributions(net, st, X_te, C, method="gradshap", seed=7)
    g2 = I.gene_attributions(net, st, X_te, C, method="gradshap", seed=7)
    np.testing.assert_array_equal(g1.gene_abs, g2.gene_abs)
    with pytest.raises(ValueError):
        I.gene_attributions(net, st, X_te, C, method="saliency")


def test_batching_does_not_change_results(additive):
    net, st = additive["nets"]["dense"]
    X_te = additive["X_te"][:50]
    a = I.gene_attributions(net, st, X_te, C, batch=64)
    b = I.gene_attributions(net, st, X_te, C, batch=7)
    np.testing.assert_allclose(a.gene_abs, b.gene_abs, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(a.completeness_rel_err, b.completeness_rel_err, rtol=1e-3, atol=1e-6)
    s1 = I.interaction_scores(net, st, X_te, C, [1, 5, 9], n_null=20, batch=128)
    s2 = I.interaction_scores(net, st, X_te, C, [1, 5, 9], n_null=20, batch=7)
    np.testing.assert_allclose(s1.score, s2.score, rtol=1e-5)
    np.testing.assert_array_equal(s1.p, s2.p)


def test_additive_truth_recovered_by_logreg(additive):
    co = additive["co"]
    net, st = additive["nets"]["logreg"]
    ga = I.gene_attributions(net, st, additive["X_te"], C)
    names = [f"G{g}" for g in np.argsort(-ga.gene_abs, kind="stable")]
    truth = {"additive_genes": [{"gene": f"G{g}"} for g in co.causal_genes]}
    m4 = I.truth_metrics(names, [], [], truth, k=4)
    m8 = I.truth_metrics(names, [], [], truth, k=8)
    # measured: the 4 planted genes are ranks 1-4 (precision@4 = 1.0)
    assert m4["precision_at_k"] >= 0.75
    assert m8["recall_at_k"] == 1.0
    assert ga.completeness_rel_err < 0.01


# --------------------------------------------------------------------------- neuron importance


def test_pathway_importance_shapes_and_linear_closed_form(additive):
    X_te = additive["X_te"]
    net, st = additive["nets"]["logreg"]
    assert I.pathway_importance(net, st, X_te, C) is None
    assert I.weight_activation_importance(net, st, X_te, C) is None
    net, st = additive["nets"]["dense"]
    pi = I.pathway_importance(net, st, X_te, C)
    wa = I.weight_activation_importance(net, st, X_te, C)
    assert pi.shape == wa.shape == (16,) and np.all(pi >= 0) and np.all(np.isfinite(pi))
    net, st = additive["nets"]["biosparse"]
    assert I.pathway_importance(net, st, X_te, C).shape == (net.path.n_out,)
    # linear head: logit = sum_k w_k pre_k + c, so neuron k's IG attribution is exactly
    # w_k (pre_k(x) - pre_k(baseline)) and its activation is pre_k itself
    net, st = additive["nets"]["linear"]
    net.eval()
    with torch.no_grad():
        x = torch.as_tensor(I.standardised_rows(st, X_te, np.arange(X_te.shape[0])))
        b = torch.as_tensor(I.baseline_row(st))[None]
        pre = net.path(net.layer_input(x)).double()
        pre_b = net.path(net.layer_input(b)).double()
        w = net.out.weight.detach().double()[0]
    want = ((pre - pre_b) * w).abs().mean(0).numpy()
    np.testing.assert_allclose(I.pathway_importance(net, st, X_te, C), want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(I.weight_activation_importance(net, st, X_te, C),
                               (w.abs() * pre.abs().mean(0)).numpy(), rtol=1e-5)


# --------------------------------------------------------------------------- interactions


def test_xor_pair_found_by_dense_net_not_by_logreg(xor):
    X_te = xor["X_te"]
    net, st = xor["nets"]["dense"]
    ga = I.gene_attributions(net, st, X_te, C)
    top = np.argsort(-ga.gene_abs, kind="stable")[:10]
    assert {XOR_A, XOR_B} <= set(top.tolist())          # measured: ranks 1 and 2
    df = I.interaction_scores(net, st, X_te, C, top, n_null=200, seed=0)
    assert list(df.columns) == ["gene_a", "gene_b", "score", "p"] and len(df) == 45
    assert np.all(np.diff(df.score) <= 0)
    first = df.iloc[0]
    # measured: the planted pair first, score 3.98 vs 0.27 for the next, p = 1/201
    assert (int(first.gene_a), int(first.gene_b)) == (XOR_A, XOR_B)
    assert first.p < 0.05
    assert first.score > 3 * df.score.iloc[1]

    lr_net, lr_st = xor["nets"]["logreg"]
    genes = sorted(set(top.tolist()))
    s = I.interaction_scores(lr_net, lr_st, X_te, C, genes, n_null=50, seed=0)
    pair = s[(s.gene_a == XOR_A) & (s.gene_b == XOR_B)]
    assert len(pair) == 1 and pair.score.iloc[0] < 1e-5     # additive in genes: delta = 0 (measured ~2e-8)
    assert s.score.max() < 1e-5
    # rounding is no interaction: none of the additive net's pairs is significant
    assert (s.p == 1.0).all()


def test_additive_linear_head_has_no_interactions(additive):
    net, st = additive["nets"]["linear"]
    df = I.interaction_scores(net, st, additive["X_te"], C, [4, 9, 16, 19, 0], n_null=30)
    assert len(df) == 10 and df.score.max() < 1e-5


class _Wrapped(nn.Module):
    """A GeneNet hidden behind a plain module: interaction_scores then knocks out input columns
    instead of gene neurons (the generic path)."""

    def __init__(self, net):
        super().__init__()
        self.inner = net

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("model_type,broken_linear", [
    ("dense", False), ("biosparse", False), ("genegene_pathway", False), ("logreg", False),
    ("linear", False), ("dense", True), ("biosparse", True)])
def test_gene_neuron_knockout_equals_input_knockout(model_type, broken_linear, monkeypatch):
    """The fast knockout modes (first-layer update; gene-neuron replacement) give the scores of
    knocking out input columns; a fast mode that disagrees on the first batch is dropped."""
    if broken_linear:
        monkeypatch.setattr(I._Knockouts, "_linear",
                            lambda self, state, sets: torch.zeros(len(sets), state[1].shape[0]))
    G = 14
    rng = np.random.default_rng(5)
    X = random_counts(60, G, C, rate=0.15, rng=rng)
    st = Standardiser(X)
    gp = [[g % 3] for g in range(G)]
    params = {"gene_gene_edges": [[0, 1], [2, 5], [5, 9]]} if model_type == "genegene_pathway" else {}
    topo, gg = build_topology(model_type, G, gp, params)
    torch.manual_seed(0)
    net = GeneNet(model_type, C, G, topo=topo, gg_topo=gg, dense_units=8, init_seed=3)
    with torch.no_grad():                      # larger weights: visible interactions
        for p in net.parameters():
            p.mul_(3.0)
    genes = [0, 1, 2, 5, 9]
    used = []
    for mode in ("_linear", "_gene", "_input"):
        orig = getattr(I._Knockouts, mode)
        monkeypatch.setattr(I._Knockouts, mode,
                            lambda self, *a, _o=orig, _m=mode: (used.append(_m), _o(self, *a))[1])
    fast = I.interaction_scores(net, st, X, C, genes, n_null=15, seed=1, batch=16)
    expect = "_gene" if broken_linear or model_type == "genegene_pathway" else "_linear"
    assert used[-1] == expect and "_input" not in used      # (the first batch probes both)
    used.clear()
    slow = I.interaction_scores(_Wrapped(net), st, X, C, genes, n_null=15, seed=1, batch=16)
    assert set(used) == {"_input"}
    # compare pair by pair (pairs with no interaction tie near 0 and may sort either way)
    fast, slow = (d.sort_values(["gene_a", "gene_b"]).reset_index(drop=True) for d in (fast, slow))
    np.testing.assert_array_equal(fast[["gene_a", "gene_b"]].to_numpy(), slow[["gene_a", "gene_b"]].to_numpy())
    np.testing.assert_allclose(fast.score, slow.score, rtol=2e-4, atol=1e-5)
    if model_type in ("logreg", "linear"):
        assert fast.score.max() < 1e-5
    else:
        assert fast.score.max() > 1e-3


def test_interaction_null_needs_other_carried_genes():
    G = 6
    X = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0] + [0] * 18,
                                [0, 1, 0, 0, 0, 0] + [0] * 18,
                                [1, 1, 0, 0, 0, 0] + [0] * 18], dtype=np.float32))
    st = Standardiser(X)
    net = GeneNet("dense", C, G, dense_units=4, init_seed=0)
    df = I.interaction_scores(net, st, X, C, [0, 1], n_null=50)
    assert len(df) == 1 and np.isnan(df.p.iloc[0])          # no other gene carries a variant
    assert I.interaction_scores(net, st, X, C, [0]).empty


# --------------------------------------------------------------------------- burden x burden test


def _newton_logit(X, y, iters=100):
    beta = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ beta))
        H = X.T @ (X * (p * (1 - p))[:, None])
        step = np.linalg.solve(H, X.T @ (y - p))
        beta += step
        if np.max(np.abs(step)) < 1e-12:
            break
    p = 1 / (1 + np.exp(-X @ beta))
    cov = np.linalg.inv(X.T @ (X * (p * (1 - p))[:, None]))
    return beta, np.sqrt(np.diag(cov))


def _burdens(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(0.6, n).astype(float), rng.poisson(0.6, n).astype(float), rng


def test_burden_interaction_matches_newton_raphson():
    a, b, rng = _burdens()
    cov = rng.normal(size=(a.size, 2))
    lin = -0.2 + 0.3 * a - 0.2 * b + 0.7 * a * b + cov @ [0.4, -0.1]
    y = (rng.random(a.size) < 1 / (1 + np.exp(-lin))).astype(float)
    r = I.burden_interaction_test(a, b, y, covariates=cov)
    beta, se = _newton_logit(np.column_stack([np.ones(a.size), a, b, a * b, cov]), y)
    assert r["n"] == a.size
    np.testing.assert_allclose(r["beta_int"], beta[3], rtol=1e-8)
    np.testing.assert_allclose(r["se"], se[3], rtol=1e-6)
    np.testing.assert_allclose(r["p"], 2 * sps.norm.sf(abs(beta[3] / se[3])), rtol=1e-5)
    assert r["p"] < 1e-6                                          # planted interaction


def test_burden_interaction_null_and_degenerate(capfd):
    a, b, rng = _burdens(seed=1)
    y = (rng.random(a.size) < 1 / (1 + np.exp(-(-0.3 + 0.2 * a - 0.1 * b)))).astype(float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        null = I.burden_interaction_test(a, b, y)
        assert null["p"] > 0.01 and np.isfinite(null["beta_int"])
        carriers = (a > 0) & (b > 0)
        quasi = y.copy()
        quasi[carriers] = 1.0                                     # every double carrier a case
        a01 = (a > 0).astype(float)
        cases = {
            "constant a": (np.ones_like(a), b, y),
            "constant y": (a, b, np.zeros_like(y)),
            "complete separation": (a, b, carriers.astype(float)),
            "quasi-complete separation": (a, b, quasi),
            "separation on a": (a, b, a01),
            "collinear product": (a01, a01, y),
            "too few rows": (a[:4], b[:4], y[:4]),
        }
        for name, (aa, bb, yy) in cases.items():
            r = I.burden_interaction_test(aa, bb, yy)
            assert all(np.isnan(r[k]) for k in ("beta_int", "se", "p")), (name, r)
    assert not caught, [str(w.message) for w in caught]
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""
    # rows with a missing value are dropped
    a2 = a.copy()
    a2[:10] = np.nan
    assert I.burden_interaction_test(a2, b, y)["n"] == a.size - 10


# --------------------------------------------------------------------------- truth metrics


def test_truth_metrics_hand_made():
    truth = {
        "additive_genes": [{"gene": "A1", "effect": 0.3}, {"gene": "A2"}, {"gene": "A3"}],
        "epistatic_pairs": [{"genes": ["P1", "P2"], "type": "xor", "sign": 1, "pathway": "PW1"},
                            {"genes": ["P3", "P4"], "type": "product", "sign": -1}],
        "pathway_modules": [{"pathway": "MOD", "genes": ["M1", "M2", "M3"]}],
    }
    genes = ["A2", "X", "P1", "M2", "A1", "Y", "P2", "Z", "A3", "M1"]
    pairs = [("X", "Y"), ("P2", "P1"), ("A1", "A2")]
    pathways = ["PW0", "MOD"]
    m = I.truth_metrics(genes, pairs, pathways, truth, k=5)
    assert m["precision_at_k"] == pytest.approx(2 / 5)           # A2, A1 in the top 5
    # planted: A1 A2 A3 P1 P2 P3 P4 M1 M2 M3 (10); top 5 holds A2 P1 M2 A1
    assert m["recall_at_k"] == pytest.approx(4 / 10)
    assert m["n_additive"] == 3 and m["n_planted_genes"] == 10
    assert m["additive_gene_ranks"] == [5, 1, 9]
    assert m["pair_ranks"] == [2, None]                          # unordered match
    assert m["module_pathway_ranks"] == [2]
    assert m["module_gene_ranks"] == [[10, 4, None]]
    # sections missing; k beyond the list
    m = I.truth_metrics(genes[:3], [], [], {"additive_genes": [{"gene": "A2"}]}, k=20)
    assert m["precision_at_k"] == pytest.approx(1 / 3) and m["recall_at_k"] == 1.0
    assert m["pair_ranks"] == [] and m["module_pathway_ranks"] == [] and m["module_gene_ranks"] == []
    m = I.truth_metrics(genes, pairs, [], {}, k=5)
    assert np.isnan(m["precision_at_k"]) and np.isnan(m["recall_at_k"])


def test_truth_metrics_reads_simulate_layout():
    """The layout ``epiflow simulate`` writes (pairs also carry gene_a/gene_b records)."""
    truth = {"additive_genes": [{"gene": "MAGED1", "effect": 0.2, "pathways": []}],
             "epistatic_pairs": [{"effect": 0.2, "gene_a": {"gene": "AKT1"}, "gene_b": {"gene": "HLA-DOB"},
                                  "genes": ["AKT1", "HLA-DOB"], "pathway": "Toxoplasmosis",
                                  "sign": 1, "type": "xor"},
                                 {"gene_a": {"gene": "PIK3R1"}, "gene_b": {"gene": "PIK3CA"}}],
             "pathway_modules": [{"genes": ["KRT15", "KRT17"], "pathway": "Staphylococcus aureus infection",
                                  "gene_info": [{"gene": "KRT15"}, {"gene": "KRT17"}]}],
             "liability": {"threshold": 0.0}}
    m = I.truth_metrics(["PIK3CA", "KRT17", "MAGED1"], [("PIK3CA", "PIK3R1"), ("HLA-DOB", "AKT1")],
                        ["Staphylococcus aureus infection"], truth, k=2)
    assert m["pair_ranks"] == [2, 1]
    assert m["module_pathway_ranks"] == [1] and m["module_gene_ranks"] == [[None, 2]]
    assert m["additive_gene_ranks"] == [3] and m["precision_at_k"] == 0.0
    assert m["recall_at_k"] == pytest.approx(2 / 7)
