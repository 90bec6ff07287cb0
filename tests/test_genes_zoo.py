"""The rest of the zoo: closed-form sizes, linearity, XOR expressivity, learned sparsity and the
batched ensemble against separately trained members."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.genes import fit_predict
from models.genes import topology as T
from models.genes.ensemble import BatchedEnsemble
from models.genes.nets import GeneNet, build_topology, closed_form_n_parameters, n_trainable
from models.genes.sparsity import _chunk_topk, prune_dense_to_sparse
from models.simulate.genes import planted_burden, xor_pair

C = 16


def _gp(G, P=5, seed=0):
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(P, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(G)]


def test_closed_form_sizes_of_every_head():
    G = 40
    gp = _gp(G)
    edges = np.array([[0, 1], [1, 2], [5, 7], [7, 5], [3, 3]])   # a duplicate and a self loop
    for mtype in ("linear", "biosparse", "multipathway", "genegene_pathway"):
        topo, gg = build_topology(mtype, G, gp, {"gene_gene_edges": edges})
        net = GeneNet(mtype, C, G, topo=topo, gg_topo=gg)
        n_gg = 0
        if mtype == "genegene_pathway":
            n_gg = G + 2 * 3          # self loops + both directions of 3 distinct pairs
            assert gg.n_edges == n_gg
        expect = (901 + topo.n_edges + 2 * topo.n_dst + 1
                  + (n_gg + G if mtype == "genegene_pathway" else 0))
        assert n_trainable(net) == expect == closed_form_n_parameters(
            mtype, C, G, n_edges=topo.n_edges, n_neurons=topo.n_dst, n_gg_edges=n_gg)
    n_memberships = sum(max(len(p), 1) for p in gp)
    assert build_topology("multipathway", G, gp, {})[0].n_edges == n_memberships
    net = GeneNet("dense", C, G, dense_units=7)
    assert n_trainable(net) == 901 + G * 7 + 7 + 7 + 1 == closed_form_n_parameters(
        "dense", C, G, dense_units=7)


def test_linear_is_exactly_affine_by_finite_differences():
    G = 30
    gp = _gp(G)
    topo, _ = build_topology("linear", G, gp, {})
    lin = GeneNet("linear", C, G, topo=topo, init_seed=1).double()
    bio = GeneNet("biosparse", C, G, topo=topo, init_seed=1).double()
    rng = np.random.default_rng(0)
    x0, x1 = (torch.as_tensor(rng.normal(size=(4, C * G))) for _ in range(2))
    d = torch.as_tensor(rng.normal(size=(1, C * G)))
    h = 1e-3

    def fd(net, x):                      # directional finite difference at each row of x
        return (net(x + h * d) - net(x - h * d)) / (2 * h)

    with torch.no_grad():
        g_lin = torch.cat([fd(lin, x0), fd(lin, x1)])
        # the same slope everywhere, and f(x + d) - f(x) equals that slope exactly
        assert torch.allclose(g_lin, g_lin[0].expand_as(g_lin), rtol=1e-9, atol=1e-9)
        assert torch.allclose(lin(x0 + d) - lin(x0), g_lin[:4], rtol=1e-8, atol=1e-9)
        # superposition: f(a x0 + (1-a) x1) = a f(x0) + (1-a) f(x1)
        a = 0.3
        assert torch.allclose(lin(a * x0 + (1 - a) * x1), a * lin(x0) + (1 - a) * lin(x1),
                              rtol=1e-9, atol=1e-9)
        # the tanh net on the same graph fails the same check: the test can tell
        g_bio = torch.cat([fd(bio, x0), fd(bio, x1)])
        assert (g_bio - g_bio[0]).abs().max() > 1e-3


def _xor_auc(mtype, seed=0):
    coh = xor_pair(n=1200, seed=seed)
    tr, te = np.arange(800), np.arange(800, 1200)
    params = {"lr": 3e-2, "dense_units": 8, "focal_gamma": 0.0}
    proba, info = fit_predict(mtype, coh.X[tr], coh.y[tr], coh.X[te], n_classes=coh.n_classes,
                              gene_pathways=coh.gene_pathways, params=params,
                              train={"max_epochs": 40, "seed": seed})
    return roc_auc_score(coh.y[te], proba), info


def test_xor_expressivity_dense_fits_biosparse_cannot():
    """Reciprocal-sign epistasis between two genes: a hidden layer mixing both genes fits it;
    one tanh pathway neuron over both genes is monotone in an additive score and cannot."""
    auc_dense, _ = _xor_auc("dense")
    auc_bio, info = _xor_auc("biosparse")
    assert info["n_pathway_neurons"] == 1         # both genes on pathway 0, no dummy
    assert auc_dense > 0.95, auc_dense
    assert auc_bio <= 0.8, auc_bio


def test_random_graph_keeps_counts_and_has_no_duplicates():
    gp = _gp(500, P=30, seed=2)
    ref = T.one_pathway(gp, seed=0)
    rnd = T.random_like(ref, seed=5)
    assert rnd.n_edges == ref.n_edges and rnd.n_dst == ref.n_dst
    keys = rnd.src * rnd.n_dst + rnd.dst
    assert np.unique(keys).size == keys.size
    assert np.array_equal(np.unique(rnd.dst), np.arange(rnd.n_dst))


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75, 1.0])
def test_sparsity_degree_connects_that_fraction_of_genes(sparsity):
    G = 400
    topo, _ = build_topology("biosparse", G, _gp(G), {"sparsity": sparsity})
    assert topo.n_edges == round(sparsity * G)
    assert np.unique(topo.src).size == topo.n_edges


def test_rigl_candidate_search_matches_brute_force():
    rng = np.random.default_rng(0)
    B, G, P = 16, 50, 6
    a = torch.as_tensor(rng.normal(size=(B, G)), dtype=torch.float32)
    delta = torch.as_tensor(rng.normal(size=(B, P)), dtype=torch.float32)
    ex_src = rng.choice(G, size=30, replace=False)
    ex_dst = rng.integers(0, P, size=30)
    existing = torch.sort(torch.as_tensor(ex_src * P + ex_dst)).values
    genes, neurons = _chunk_topk(a, delta, existing, P, k=7, chunk=8)
    S = (a.T @ delta).abs().numpy()
    S[ex_src, ex_dst] = -1
    best = np.argsort(S.ravel())[::-1][:7]
    assert set((genes * P + neurons).tolist()) == set(best.tolist())


def test_prune_keeps_largest_weights():
    W = torch.tensor([[0.1, -2.0, 0.0], [0.5, 0.05, -0.7]])
    topo = prune_dense_to_sparse(W, 3)
    got = {(int(d), int(s)) for s, d in zip(topo.src, topo.dst)}
    assert got == {(0, 1), (1, 2), (1, 0)} and topo.n_dst == 2


def test_rigl_and_l1_keep_edge_count_and_learn():
    coh = planted_burden(n=900, n_genes=80, n_causal=6, effect=1.5, seed=4, rate=0.03)
    tr, te = np.arange(600), np.arange(600, 900)
    base, _ = build_topology("biosparse", 80, coh.gene_pathways, {})
    auc = {}
    for source in ("random", "rigl", "l1"):
        proba, info = fit_predict("biosparse", coh.X[tr], coh.y[tr], coh.X[te], n_classes=C,
                                  gene_pathways=coh.gene_pathways,
                                  params={"lr": 1e-2, "sparsity_source": source,
                                          "rigl_interval": 2},
                                  train={"max_epochs": 20, "seed": 0}, return_model=True)
        net = info["model"]
        assert info["n_edges"] == base.n_edges == net.path.n_edges
        assert info["n_parameters"] == 901 + base.n_edges + 2 * base.n_dst + 1
        keys = (net.path.src * net.path.n_out + net.path.dst).numpy()
        assert np.unique(keys).size == keys.size            # no duplicate edges
        if source == "rigl":
            assert info["rigl_rewired"] > 0
        auc[source] = roc_auc_score(coh.y[te], proba)
    # learned sparsity finds the planted genes; the random graph it started from does not
    assert auc["rigl"] > 0.6 and auc["l1"] > 0.6, auc
    assert auc["rigl"] > auc["random"] + 0.05, auc
    with pytest.raises(ValueError, match="rigl"):
        fit_predict("logreg", coh.X[tr], coh.y[tr], coh.X[te], n_classes=C,
                    params={"sparsity_source": "rigl"}, train={"max_epochs": 1})


def test_batched_ensemble_equals_separately_trained_members():
    coh = planted_burden(n=400, n_genes=40, n_causal=4, effect=1.5, seed=8, rate=0.02)
    tr, te = np.arange(300), np.arange(300, 400)
    N, ps, init = 3, 5, 11
    common = dict(n_classes=C, gene_pathways=coh.gene_pathways)
    train = {"max_epochs": 4, "seed": 2, "input_mode": "combos"}
    p_ens, info = fit_predict("ensemble", coh.X[tr], coh.y[tr], coh.X[te], **common,
                              params={"n_members": N, "pathway_seed": ps, "init_seed": init,
                                      "lr": 1e-2, "weight_decay": 1e-3},
                              train=train, return_model=True)
    singles = []
    n_single = 0
    for i in range(N):
        p_i, info_i = fit_predict("biosparse", coh.X[tr], coh.y[tr], coh.X[te], **common,
                                  params={"pathway_seed": ps + i, "init_seed": init + i,
                                          "lr": 1e-2, "weight_decay": 1e-3}, train=train)
        singles.append(p_i)
        n_single += info_i["n_parameters"]
    singles = np.stack(singles, axis=1)
    assert info["n_parameters"] == n_single and info["n_members"] == N
    assert np.allclose(info["member_proba"], singles, atol=2e-5)
    assert np.allclose(p_ens, singles.mean(axis=1), atol=2e-5)
    # members differ (different graphs and inits), so the check is not vacuous
    assert np.abs(singles[:, 0] - singles[:, 1]).max() > 1e-3
    # member chunks: same result, bounded memory
    p_chunk, _ = fit_predict("ensemble", coh.X[tr], coh.y[tr], coh.X[te], **common,
                             params={"n_members": N, "pathway_seed": ps, "init_seed": init,
                                     "lr": 1e-2, "weight_decay": 1e-3, "member_chunk": 2},
                             train=train)
    assert np.allclose(p_chunk, p_ens, atol=2e-5)


def test_ensemble_forward_same_on_every_input_path():
    coh = planted_burden(n=60, n_genes=20, n_causal=2, seed=1, rate=0.05)
    from models.genes.data import BatchSource, ComboSource, PairSource, Standardiser

    st = Standardiser(coh.X)
    cpu = torch.device("cpu")
    members = []
    for i in range(3):
        topo, _ = build_topology("biosparse", 20, coh.gene_pathways, {"pathway_seed": i})
        members.append(GeneNet("biosparse", C, 20, topo=topo, init_seed=i))
    ens = BatchedEnsemble(members)
    idx = np.arange(0, 60, 7)
    outs = [ens(S(coh.X, st, C, cpu)(idx)) for S in (ComboSource, PairSource)]
    outs.append(ens(BatchSource(coh.X, st, cpu)(idx)))
    singles = torch.stack([m(BatchSource(coh.X, st, cpu)(idx)) for m in members], dim=1)
    for o in outs:
        assert torch.allclose(o, singles, atol=1e-5)
