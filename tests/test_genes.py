"""Gene networks: parameter counts, exactness of the fast paths, planted signals, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import roc_auc_score

from models.genes import MODEL_TYPES, fit_predict, focal_bce
from models.genes import topology as T
from models.genes.data import ComboSource, PairSource, Standardiser, _combinations, make_source
from models.genes.layers import GeneModule, SparseLinear
from models.genes.nets import GeneNet, build_topology, closed_form_n_parameters, n_trainable
from models.simulate.genes import planted_burden, random_counts


def test_gene_module_has_901_parameters():
    m = GeneModule(16, 50, gen=torch.Generator().manual_seed(0))
    assert n_trainable(m) == 16 * 50 + 50 + 51 == 901


@pytest.mark.parametrize("G", [7, 300])
def test_logreg_parameter_count(G):
    net = GeneNet("logreg", 16, G)
    # gene module + one weight per gene + output bias
    assert n_trainable(net) == 901 + G + 1 == closed_form_n_parameters("logreg", 16, G)


def test_biosparse_parameter_count_closed_form():
    G, P = 12, 4
    # genes 0..7 in exactly one pathway each (two per pathway), genes 8..11 in none
    gp = [[i // 2] for i in range(8)] + [[] for _ in range(4)]
    topo, _ = build_topology("biosparse", G, gp, {"pathway_seed": 3})
    net = GeneNet("biosparse", 16, G, topo=topo)
    n_neurons = P + 1   # four pathways + the dummy neuron
    assert topo.n_dst == n_neurons and topo.n_edges == G
    # one weight per gene, a bias per pathway neuron, an output weight per pathway neuron, output bias
    assert n_trainable(net) == 901 + G + n_neurons + n_neurons + 1
    assert n_trainable(net) == closed_form_n_parameters("biosparse", 16, G, n_edges=G,
                                                        n_neurons=n_neurons)


def test_biosparse_assignment_uses_own_pathways_and_dummy():
    rng = np.random.default_rng(1)
    G = 5000
    gp = [sorted(rng.choice(300, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(G)]
    topo = T.one_pathway(gp, seed=11)
    assert topo.n_edges == G and np.array_equal(np.sort(topo.src), np.arange(G))
    pathway_of = np.empty(G, np.int64)
    pathway_of[topo.src] = topo.neuron_ids[topo.dst]
    for g in range(G):
        if gp[g]:
            assert pathway_of[g] in gp[g]
        else:
            assert pathway_of[g] == T.DUMMY
    # exactly one dummy neuron, and the pick is random among a gene's pathways (not always first)
    assert (topo.neuron_ids == T.DUMMY).sum() == 1
    multi = [g for g in range(G) if len(gp[g]) >= 2]
    firsts = np.mean([pathway_of[g] == gp[g][0] for g in multi])
    assert 0.3 < firsts < 0.7
    # seeded: same seed same graph, other seed another graph
    again = T.one_pathway(gp, seed=11)
    assert np.array_equal(again.src, topo.src) and np.array_equal(again.dst, topo.dst)
    other = T.one_pathway(gp, seed=12)
    assert not np.array_equal(other.neuron_ids[other.dst], topo.neuron_ids[topo.dst])


def test_sparse_layer_equals_dense_matrix_product():
    rng = np.random.default_rng(0)
    gp = [rng.choice(6, size=rng.integers(0, 3), replace=False).tolist() for _ in range(40)]
    topo = T.all_pathways(gp)
    layer = SparseLinear(topo, gen=torch.Generator().manual_seed(0))
    W = torch.zeros(topo.n_dst, topo.n_src)
    W[layer.dst, layer.src] = layer.weight.detach()
    x = torch.randn(9, 40)
    assert torch.allclose(layer(x), x @ W.T + layer.bias.detach(), atol=1e-6)


def test_standardiser_matches_numpy_on_training_rows_only():
    rng = np.random.default_rng(0)
    X = random_counts(60, 30, 4, rate=0.1, rng=rng)
    st = Standardiser(X[:40])
    D = X[:40].toarray()
    sd = D.std(axis=0)
    sd[sd == 0] = 1
    assert np.allclose(st.mean, D.mean(axis=0)) and np.allclose(st.sd, sd)


def test_pair_batches_equal_dense_batches():
    rng = np.random.default_rng(2)
    C, G = 5, 40
    X = random_counts(50, G, C, rate=0.05, rng=rng)
    st = Standardiser(X)
    pairs = PairSource(X, st, C, torch.device("cpu"))
    combos = ComboSource(X, st, C, torch.device("cpu"))
    dense = make_source(X, st, C, torch.device("cpu"), mode="dense")
    idx = np.array([3, 17, 0, 49, 22])
    expect = torch.as_tensor(st.transform_dense(X[idx].toarray()))
    assert torch.allclose(pairs(idx).dense(), expect, atol=1e-5)
    assert torch.allclose(combos(idx).dense(), expect, atol=1e-5)
    assert torch.allclose(dense(idx), expect, atol=1e-5)
    gp = [[g % 3] if g % 2 else [] for g in range(G)]
    for mtype in ("logreg", "biosparse", "dense"):
        topo, _ = build_topology(mtype, G, gp, {})
        net = GeneNet(mtype, C, G, topo=topo, init_seed=4)
        ref = net(dense(idx))
        assert torch.allclose(net(pairs(idx)), ref, atol=1e-5)
        assert torch.allclose(net(combos(idx)), ref, atol=1e-5)


def test_sources_leave_the_input_matrix_untouched():
    rng = np.random.default_rng(3)
    X = random_counts(80, 25, 4, rate=0.1, rng=rng)
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    st = Standardiser(X)
    for mode in ("combos", "pairs", "dense"):
        make_source(X, st, 4, torch.device("cpu"), mode=mode)
        assert all(np.array_equal(a, b) for a, b in zip(before, (X.data, X.indices, X.indptr)))


def test_combinations_match_unique_rows():
    rng = np.random.default_rng(5)
    C, G = 4, 30
    X = random_counts(200, G, C, rate=0.08, rng=rng)
    X.data = rng.integers(1, 4, size=X.data.size).astype(np.float32)
    c_gene, c_counts, p_row, p_gene, combo_of_pair = _combinations(X, C)
    D = X.toarray().reshape(200, C, G)
    has = D.sum(axis=1) > 0
    rows, genes = np.nonzero(has)
    assert np.array_equal(rows, p_row) and np.array_equal(genes, p_gene)
    table = np.concatenate([genes[:, None], D[rows, :, genes]], axis=1)
    expect = np.unique(table, axis=0)
    got = np.concatenate([c_gene[:, None], c_counts], axis=1)
    assert got.shape == expect.shape and np.array_equal(np.unique(got, axis=0), expect)  # distinct
    assert np.array_equal(got[combo_of_pair], table)
    # far fewer combinations than pairs for small integer counts
    assert c_gene.size < 0.8 * p_row.size


def test_focal_bce_closed_forms():
    z = torch.tensor([0.3, -1.2, 2.0])
    y = torch.tensor([1.0, 0.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert torch.allclose(focal_bce(z, y, 0.5, 0.0), 0.5 * bce.mean())
    p = torch.sigmoid(z)
    p_t = torch.where(y == 1, p, 1 - p)
    a = torch.where(y == 1, torch.tensor(0.2), torch.tensor(0.8))
    expect = (-a * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert torch.allclose(focal_bce(z, y, 0.2, 2.0), expect, atol=1e-6)


def _fit(mtype, coh, tr, te, **kw):
    params = {"lr": 3e-3, **kw.pop("params", {})}
    train = {"max_epochs": 15, "seed": 0, **kw.pop("train", {})}
    return fit_predict(mtype, coh.X[tr], coh.y[tr], coh.X[te], n_classes=coh.n_classes,
                       gene_pathways=coh.gene_pathways, params=params, train=train, **kw)


def test_logreg_recovers_planted_additive_burden():
    coh = planted_burden(n=1200, n_genes=150, n_causal=8, effect=1.5, seed=3, rate=0.03)
    tr, te = np.arange(800), np.arange(800, 1200)
    proba, info = _fit("logreg", coh, tr, te)
    auc = roc_auc_score(coh.y[te], proba)
    assert auc > 0.75, auc
    assert info["n_parameters"] == 901 + 150 + 1 and info["epochs"] == 15
    assert info["focal_alpha"] == pytest.approx(1 - coh.y[tr].mean())
    assert proba.shape == (400,) and np.all((proba > 0) & (proba < 1))


def test_biosparse_learns_planted_signal_and_reports_graph():
    coh = planted_burden(n=1200, n_genes=150, n_causal=8, effect=1.5, seed=3, rate=0.03)
    tr, te = np.arange(800), np.arange(800, 1200)
    proba, info = _fit("biosparse", coh, tr, te, params={"lr": 1e-2}, train={"max_epochs": 20})
    # causal genes share tanh pathway neurons (mostly the dummy), so less than logreg's 0.75
    assert roc_auc_score(coh.y[te], proba) > 0.62
    k = info["n_pathway_neurons"]
    assert info["n_edges"] == 150 and info["n_parameters"] == 901 + 150 + 2 * k + 1


def test_unknown_model_type_names_value_and_valid_ones():
    coh = planted_burden(n=50, n_genes=5, n_causal=2, seed=0)
    with pytest.raises(ValueError) as err:
        fit_predict("bogus_net", coh.X, coh.y, coh.X, n_classes=16, params={}, train={})
    msg = str(err.value)
    assert "bogus_net" in msg and all(t in msg for t in MODEL_TYPES)
    with pytest.raises(ValueError, match="lrr"):
        fit_predict("logreg", coh.X, coh.y, coh.X, n_classes=16, params={"lrr": 1}, train={})


def test_cpu_runs_are_exactly_reproducible():
    coh = planted_burden(n=300, n_genes=40, n_causal=4, seed=5)
    tr, te = np.arange(200), np.arange(200, 300)
    for mtype in ("logreg", "biosparse"):
        kw = dict(params={"dropout": 0.2}, train={"max_epochs": 3, "seed": 9})
        p1, _ = _fit(mtype, coh, tr, te, **kw)
        p2, _ = _fit(mtype, coh, tr, te, **kw)
        assert np.array_equal(p1, p2)
        p3, _ = _fit(mtype, coh, tr, te, params={"dropout": 0.2}, train={"max_epochs": 3, "seed": 10})
        assert not np.array_equal(p1, p3)


def test_fit_predict_leaves_no_files_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    coh = planted_burden(n=100, n_genes=10, n_causal=2, seed=1)
    fit_predict("logreg", coh.X, coh.y, coh.X, n_classes=16, params={}, train={"max_epochs": 1})
    assert list(tmp_path.iterdir()) == []


def test_dense_pair_and_combination_inputs_train_identically():
    coh = planted_burden(n=300, n_genes=30, n_causal=4, seed=6, rate=0.05)
    tr, te = np.arange(200), np.arange(200, 300)
    out = {}
    for mode in ("pairs", "dense", "combos"):
        out[mode], info = _fit("biosparse", coh, tr, te, train={"max_epochs": 3, "input_mode": mode})
        assert info["input_mode"] == mode
    assert np.allclose(out["pairs"], out["dense"], atol=1e-4)
    assert np.allclose(out["combos"], out["dense"], atol=1e-4)


def test_sparse_input_shape_errors():
    X = sp.csr_matrix(np.ones((4, 10)))
    with pytest.raises(ValueError, match="multiple of n_classes"):
        fit_predict("logreg", X, [0, 1, 0, 1], X, n_classes=3, params={}, train={})


def test_per_class_standardiser_pools_each_class_over_genes():
    rng = np.random.default_rng(11)
    C, G = 4, 30
    X = random_counts(60, G, C, rate=0.1, rng=rng)
    st = Standardiser(X[:40], per="class", n_classes=C)
    D = X[:40].toarray().reshape(40, C, G)
    mean = D.mean(axis=(0, 2))
    sd = D.std(axis=(0, 2))
    assert np.allclose(st.mean.reshape(C, G), mean[:, None]) and np.allclose(st.sd.reshape(C, G), sd[:, None])
    with pytest.raises(ValueError, match="n_classes"):
        Standardiser(X, per="class")
    with pytest.raises(ValueError, match="unknown standardisation 'gene'"):
        Standardiser(X, per="gene", n_classes=C)


def test_per_class_combinations_are_shared_across_genes_and_exact():
    rng = np.random.default_rng(12)
    C, G = 5, 60
    X = random_counts(80, G, C, rate=0.06, rng=rng)
    col = ComboSource(X, Standardiser(X), C, torch.device("cpu"))
    st = Standardiser(X, per="class", n_classes=C)
    combos = ComboSource(X, st, C, torch.device("cpu"))
    D = X.toarray().reshape(80, C, G).transpose(0, 2, 1).reshape(-1, C)
    assert combos.n_combos == len(np.unique(D, axis=0))          # distinct vectors, zero included
    assert combos.n_combos < col.n_combos / 5
    dense = make_source(X, st, C, torch.device("cpu"), mode="dense")
    pairs = PairSource(X, st, C, torch.device("cpu"))
    idx = np.array([5, 0, 79, 33, 12, 61])
    expect = torch.as_tensor(st.transform_dense(X[idx].toarray()))
    assert torch.allclose(combos(idx).dense(), expect, atol=1e-5)
    assert torch.allclose(pairs(idx).dense(), expect, atol=1e-5)
    assert torch.allclose(dense(idx), expect, atol=1e-5)


def test_per_class_standardize_trains_identically_on_every_input_path():
    coh = planted_burden(n=300, n_genes=30, n_causal=4, seed=6, rate=0.05)
    tr, te = np.arange(200), np.arange(200, 300)
    out = {}
    for mode in ("pairs", "dense", "combos"):
        out[mode], info = _fit("biosparse", coh, tr, te, params={"standardize": "class"},
                               train={"max_epochs": 3, "input_mode": mode})
    assert np.allclose(out["pairs"], out["dense"], atol=1e-4)
    assert np.allclose(out["combos"], out["dense"], atol=1e-4)
    col, _ = _fit("biosparse", coh, tr, te, train={"max_epochs": 3, "input_mode": "dense"})
    assert not np.allclose(col, out["dense"], atol=1e-4)          # the option changes the inputs
    with pytest.raises(ValueError, match="unknown standardize 'gene'"):
        _fit("logreg", coh, tr, te, params={"standardize": "gene"}, train={"max_epochs": 1})


def test_gather_cols_private_copies_sum_like_index_add(monkeypatch):
    """The interleaved-copies backward of gather_cols (used on CUDA) sums exactly what a plain
    index_add sums; forced on here with 5 copies on the CPU."""
    from models.genes import layers

    g = torch.Generator().manual_seed(0)
    n, U, J = 3, 11, 400
    idx = torch.randint(0, U, (J,), generator=g)
    idx[::3] = 4                                   # one heavily shared column
    v = torch.randn(n, U, generator=g, dtype=torch.float64, requires_grad=True)
    go = torch.randn(n, J, generator=g, dtype=torch.float64)
    (ref,) = torch.autograd.grad(v.index_select(1, idx), v, go)
    for copies in (1, 5):
        monkeypatch.setattr(layers, "_private_copies", lambda *a, c=copies: c)
        out = layers.gather_cols(v, idx)
        assert torch.equal(out, v[:, idx])
        (gv,) = torch.autograd.grad(out, v, go)
        assert torch.allclose(gv, ref, rtol=1e-12, atol=1e-12)


def test_ensemble_sparse_layer_is_a_permutation_only_with_one_edge_per_gene():
    from models.genes.ensemble import BatchedEnsemble
    from models.genes.nets import GeneNet, build_topology
    from models.simulate.genes import planted_burden

    coh = planted_burden(n=20, n_genes=30, n_causal=2, seed=1, rate=0.05)

    def ens(**params):
        nets = []
        for i in range(3):
            topo, _ = build_topology("biosparse", 30, coh.gene_pathways,
                                     {"pathway_seed": i, **params})
            nets.append(GeneNet("biosparse", 16, 30, topo=topo, init_seed=i))
        return BatchedEnsemble(nets)

    full = ens()
    assert full.src_is_perm
    inv = full.src_inv
    assert torch.equal(full.src[inv], torch.arange(90))
    assert not ens(sparsity=0.5).src_is_perm


def test_sparse_work_items_split_long_runs_and_reject_ungrouped_edges():
    from models.genes.fused import sparse_work_items

    # member 0: neurons 0 (2 edges), 1 (5 edges); member 1: neuron 2 (3 edges)
    dst = np.array([0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    (m, e0, e1, p), ptr = sparse_work_items(dst, [0, 7, 10], max_run=2)
    assert ptr == [0, 4, 6]
    assert m.tolist() == [0, 0, 0, 0, 1, 1]
    assert list(zip(e0.tolist(), e1.tolist())) == [(0, 2), (2, 4), (4, 6), (6, 7), (7, 9), (9, 10)]
    assert p.tolist() == [0, 1, 1, 1, 2, 2]
    assert sparse_work_items(np.array([0, 1, 0]), [0, 3]) is None


def test_combinations_numbered_by_hash_and_exact():
    """Every pair maps to a combination with exactly its gene and class counts, and the
    combinations are distinct (grouping by hash table, checked against the dense matrix)."""
    coh = planted_burden(n=120, n_genes=15, n_causal=2, seed=4, rate=0.08)
    C, G = 16, 15
    dense = coh.X.toarray().reshape(120, C, G)
    for by_gene in (True, False):
        c_gene, counts, p_row, p_gene, combo = _combinations(coh.X, C, by_gene=by_gene)
        assert np.array_equal(counts[combo], dense[p_row, :, p_gene])
        key = np.c_[c_gene, counts] if by_gene else counts
        assert np.unique(key, axis=0).shape[0] == key.shape[0]
        if by_gene:
            assert np.array_equal(c_gene[combo], p_gene)
        assert (dense.sum(1) > 0).sum() == p_row.size


# ------------------------------------------------------------------ early stopping
def test_inner_split_is_stratified_disjoint_and_seeded():
    from models.genes.training import inner_split

    y = np.r_[np.ones(40), np.zeros(160)]
    fit, val = inner_split(y, 0.25, seed=3)
    assert np.intersect1d(fit, val).size == 0 and np.union1d(fit, val).size == 200
    assert y[val].sum() == 10 and (y[val] == 0).sum() == 40          # a quarter of each class
    f2, v2 = inner_split(y, 0.25, seed=3)
    assert np.array_equal(val, v2) and not np.array_equal(val, inner_split(y, 0.25, seed=4)[1])
    with pytest.raises(ValueError, match="at least 2 cases"):
        inner_split(np.r_[np.ones(3), np.zeros(100)], 0.2, seed=0)


def test_early_stopper_keeps_the_best_epoch_and_waits_out_the_warmup():
    from models.genes.training import EarlyStopper

    net = torch.nn.Linear(2, 1)
    st = EarlyStopper(source=None, y=np.zeros(1), patience=2)
    st.hold = 4                                     # e.g. the L1 warm-up ends at epoch 4
    scores = iter([0.60, 0.70, 0.65, 0.64, 0.63, 0.62, 0.61])
    st.score = lambda _net: next(scores)
    weights = []
    stops = []
    for epoch in range(7):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        weights.append(float(epoch))
        stops.append(st.epoch_end(net))
        if stops[-1]:
            break
    # no gain after epoch 2, but no stop before epoch hold + patience = 6
    assert stops == [False] * 5 + [True]
    assert st.best_epoch == 2 and st.best == pytest.approx(0.70)
    st.restore(net)
    assert torch.all(net.weight == 1.0)             # the weights of epoch 2 (set to 1.0)


def test_early_stopping_scores_a_part_of_the_training_fold_and_restores_the_best():
    from models.stats import rank_auc

    coh = planted_burden(n=1200, n_genes=150, n_causal=8, effect=1.5, seed=3, rate=0.03)
    tr, te = np.arange(800), np.arange(800, 1200)
    proba, info = _fit("logreg", coh, tr, te, params={"early_stopping": 0.25, "patience": 3},
                       train={"max_epochs": 30})
    assert roc_auc_score(coh.y[te], proba) > 0.7       # fit on 3/4 of the fold (0.75 on all of it)
    hist = info["val_auc_by_epoch"]
    assert len(hist) == info["epochs"] <= 30 and 1 <= info["best_epoch"] <= info["epochs"]
    assert info["val_auc"] == pytest.approx(max(hist), abs=1e-6)
    assert hist.index(max(hist)) + 1 == info["best_epoch"]
    # the prediction is that of the best epoch's weights: rescoring the validation rows of the
    # training fold with the returned net gives the recorded best AUC
    from models.genes.data import make_source
    from models.genes.training import inner_split, predict_proba

    proba2, info2 = _fit("logreg", coh, tr, te, params={"early_stopping": 0.25, "patience": 3},
                         train={"max_epochs": 30}, return_model=True)
    assert np.array_equal(proba, proba2)
    _, val = inner_split(coh.y[tr].astype(np.float32), 0.25, seed=0)
    src = make_source(coh.X[tr][val], info2["standardiser"], coh.n_classes, torch.device("cpu"))
    assert rank_auc(coh.y[tr][val], predict_proba(info2["model"], src)) == pytest.approx(info["val_auc"], abs=1e-6)
    # off (the schema's default): the full fold, every epoch, no validation keys
    _, off = _fit("logreg", coh, tr, te, train={"max_epochs": 3})
    assert off["epochs"] == 3 and "best_epoch" not in off


def test_early_stopping_on_the_ensemble_and_the_l1_source():
    coh = planted_burden(n=600, n_genes=60, n_causal=6, effect=1.5, seed=4, rate=0.04)
    tr, te = np.arange(400), np.arange(400, 600)
    for mtype, params in (("ensemble", {"n_members": 3}), ("biosparse", {"sparsity_source": "l1"})):
        proba, info = _fit(mtype, coh, tr, te, params=dict(params, early_stopping=0.2, patience=2),
                           train={"max_epochs": 6})
        assert proba.shape == (200,) and np.all(np.isfinite(proba))
        assert 1 <= info["best_epoch"] <= info["epochs"] <= 6
