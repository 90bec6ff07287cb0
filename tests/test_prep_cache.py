"""Per-fold preparation made once (memory and disk cache), the plain torch training loop, and
the paper-size planted exome cohort: same numbers as the path they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.genes import data as D
from models.genes import fit_predict
from models.simulate.genes import planted_burden

C = 16


def _tensors(src):
    return {k: v for k, v in vars(src).items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("mode,per", [("combos", "column"), ("combos", "class"), ("pairs", "column"),
                                      ("dense", "column")])
def test_prepared_fold_equals_fresh_preparation_from_memory_and_disk(tmp_path, mode, per):
    coh = planted_burden(n=120, n_genes=30, n_causal=3, seed=4, rate=0.05)
    tr, te = np.arange(80), np.arange(80, 120)
    dev = torch.device("cpu")
    st = D.Standardiser(coh.X[tr], per=per, n_classes=C)
    fresh_tr = D.make_source(coh.X[tr], st, C, dev, mode=mode)
    fresh_te = D.make_source(coh.X[te], st, C, dev, mode=fresh_tr.mode, cache_bytes=0)
    D.clear_prep_memory()
    kw = dict(per=per, n_classes=C, device=dev, mode=mode, cache_dir=tmp_path)
    made = D.prepare_fold(coh.X[tr], coh.X[te], **kw)
    assert made.hit is None and len(list(tmp_path.glob("*.pt"))) == 1
    again = D.prepare_fold(coh.X[tr], coh.X[te], **kw)
    assert again.hit == "memory" and again.train is made.train
    D.clear_prep_memory()
    disk = D.prepare_fold(coh.X[tr], coh.X[te], **kw)
    assert disk.hit == "disk"
    for got in (made, disk):
        assert np.array_equal(got.stats.mean, st.mean) and np.array_equal(got.stats.sd, st.sd)
        for a, b in ((got.train, fresh_tr), (got.test, fresh_te)):
            assert type(a) is type(b) and a.mode == mode
            ta, tb = _tensors(a), _tensors(b)
            assert ta.keys() == tb.keys()
            for k in ta:
                assert torch.equal(ta[k], tb[k]), k
            idx = np.arange(0, a.n, 3)
            xa, xb = a(idx), b(idx)
            da = xa if isinstance(xa, torch.Tensor) else xa.dense()
            db = xb if isinstance(xb, torch.Tensor) else xb.dense()
            assert torch.equal(da, db)
    # another fold, or other settings, is another entry
    other = D.prepare_fold(coh.X[te], coh.X[tr], **kw)
    assert other.key != made.key and other.hit is None
    D.clear_prep_memory()


def test_dense_rows_expanded_by_torch_equal_scipy():
    """The GPU path of the dense input (the batch's nonzeros sent, expanded by torch) gives the
    values of scipy's toarray, here on the CPU."""
    coh = planted_burden(n=90, n_genes=20, n_causal=2, seed=3, rate=0.2)
    st = D.Standardiser(coh.X, n_classes=C)
    src = D.BatchSource(coh.X, st, torch.device("cpu"), cache_bytes=0)
    idx = np.array([5, 0, 77, 5, 31])
    ref = src._densify(idx, on_device=False)
    assert torch.equal(src._densify(idx, on_device=True), ref)
    assert torch.equal(src._densify_nz(idx, src._nonzeros(torch.device("cpu"))), ref)


def test_a_broken_cache_file_is_a_miss_and_is_rewritten(tmp_path):
    coh = planted_burden(n=60, n_genes=10, n_causal=1, seed=1, rate=0.05)
    kw = dict(per="column", n_classes=C, device=torch.device("cpu"), cache_dir=tmp_path)
    D.clear_prep_memory()
    first = D.prepare_fold(coh.X[:40], coh.X[40:], **kw)
    path = tmp_path / f"{first.key}.pt"
    path.write_bytes(path.read_bytes()[:100])
    D.clear_prep_memory()
    again = D.prepare_fold(coh.X[:40], coh.X[40:], **kw)
    assert again.hit is None and path.stat().st_size > 100
    D.clear_prep_memory()


def _fit(model, coh, tr, te, **train):
    params = {"lr": 1e-2, "gene_l1": 1e-3, "dropout": 0.1}
    if model == "ensemble":
        params.update(n_members=3, member_chunk=2, member_source="random")
    if model == "biosparse_rigl":
        model, params = "biosparse", {**params, "sparsity_source": "rigl", "rigl_interval": 2}
    p, info = fit_predict(model, coh.X[tr], coh.y[tr], coh.X[te], n_classes=C,
                          gene_pathways=coh.gene_pathways, params=params,
                          train={"max_epochs": 2, "batch_size": 32, "seed": 3, "device": "cpu", **train})
    return p, info


@pytest.mark.parametrize("model", ["logreg", "dense", "biosparse_rigl", "ensemble"])
def test_torch_loop_equals_lightning_trainer_bit_for_bit(model):
    """The plain loop (the default) takes exactly the Lightning Trainer's optimiser steps:
    equal probabilities to the last bit, with dropout, the L1 warm-up, RigL's rewiring and an
    ensemble trained in member chunks (Lightning's manual optimisation)."""
    coh = planted_burden(n=160, n_genes=24, n_causal=3, seed=6, rate=0.05)
    tr, te = np.arange(110), np.arange(110, 160)
    p_torch, info = _fit(model, coh, tr, te, loop="torch")
    p_light, _ = _fit(model, coh, tr, te, loop="lightning")
    assert np.array_equal(p_torch, p_light)
    if model == "biosparse_rigl":
        assert info["rigl_updates"] > 0


def test_fit_with_disk_cache_equals_fit_without(tmp_path):
    coh = planted_burden(n=160, n_genes=24, n_causal=3, seed=2, rate=0.05)
    tr, te = np.arange(110), np.arange(110, 160)
    D.clear_prep_memory()
    p0, i0 = _fit("biosparse", coh, tr, te, prep_cache=None)
    D.clear_prep_memory()
    p1, i1 = _fit("biosparse", coh, tr, te, prep_cache=str(tmp_path))
    D.clear_prep_memory()
    p2, i2 = _fit("logreg", coh, tr, te, prep_cache=str(tmp_path))      # another model, same fold
    p3, _ = _fit("logreg", coh, tr, te, prep_cache=None)
    assert np.array_equal(p0, p1) and np.array_equal(p2, p3)
    assert (i1["prep_cache"], i2["prep_cache"]) == (None, "disk")
    D.clear_prep_memory()


def test_exome_cohort_truth_matches_its_counts_and_is_deterministic():
    from models.simulate.exome import DAMAGING, exome_cohort
    from models.stats import rank_auc

    kw = dict(n_samples=400, n_genes=700, n_modules=4, module_pathway_size=20, seed=9)
    coh = exome_cohort(**kw)
    again = exome_cohort(**kw)
    assert (coh.X != again.X).nnz == 0 and np.array_equal(coh.y, again.y)
    t = coh.truth
    n, G = coh.X.shape[0], coh.n_genes
    assert coh.X.shape == (400, 16 * 700) and abs(t["density"] - 0.076) < 0.01
    assert 0.45 < coh.y.mean() < 0.55
    # recompute the planted score from the count matrix and the truth alone
    gi = {g: i for i, g in enumerate(coh.genes)}
    dmg = [coh.classes.index(c) for c in DAMAGING]

    def burden(g):
        return np.asarray(coh.X[:, [c * G + gi[g] for c in dmg]].sum(axis=1)).ravel()

    add = sum(e * burden(g) for g, e in zip(t["additive_genes"], t["additive_effects"]))
    mods = sum((sum((burden(g) > 0).astype(float) for g in m["genes"]) >= m["min_hits"]).astype(float)
               for m in t["modules"])
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    score = np.sqrt(t["h2_additive"]) * z(add) + np.sqrt(t["h2_pathway"]) * z(mods)
    assert abs(rank_auc(coh.y, score) - t["oracle_auc"]) < 1e-9
    assert t["oracle_auc"] > t["additive_oracle_auc"] + 0.02 > 0.7
    # module genes belong to their module's pathway only
    for k, m in enumerate(t["modules"]):
        for g in m["genes"]:
            assert coh.gene_pathways[gi[g]] == [k]
            assert coh.pathway_names[k] == m["pathway"]


def test_prep_key_of_the_same_matrices_is_remembered_and_equals_a_fresh_hash():
    """The key of one fold's matrix objects is computed once while they live; it is the content
    hash (equal matrices in other objects get the same key); other contents get another key."""
    import scipy.sparse as sp

    kw = dict(per="column", n_classes=2, mode="auto", cache_bytes=0, batch_size=8)
    A = sp.random(40, 10, 0.3, format="csr", random_state=0)
    B = sp.random(20, 10, 0.3, format="csr", random_state=1)
    k = D.prep_key(A, B, **kw)
    assert D._KEY_MEMO and k == D._prep_key(A, B, tuple(kw[x] for x in ("per", "n_classes", "mode",
                                                                         "cache_bytes", "batch_size")))
    assert D.prep_key(A, B, **kw) == k == D.prep_key(A.copy(), B.copy(), **kw)
    A2 = A.copy()
    A2.data = A2.data + 1.0
    assert D.prep_key(A2, B, **kw) != k
    assert D.prep_key(A, B, **{**kw, "per": "class"}) != k


def test_disk_entry_moves_tensors_inside_tuples_to_the_device():
    """A source's CSR arrays are a tuple of tensors (BatchSource.nz on a GPU): saved to the CPU
    and restored onto the reading process's device like its plain tensor attributes (a tuple
    left on the CPU failed a GPU worker's first matmul)."""
    from models.genes.data import BatchSource, _restore, _state

    src = BatchSource.__new__(BatchSource)
    src.device = torch.device("cpu")
    src.mean = torch.zeros(3)
    src.nz = (torch.arange(4), torch.arange(3, dtype=torch.int32), torch.ones(3))
    src.cache = None
    st = _state(src)
    assert "device" not in st and isinstance(st["nz"], tuple)
    back = _restore(BatchSource, st, torch.device("meta"))
    assert back.mean.device.type == "meta"
    assert all(t.device.type == "meta" for t in back.nz) and back.cache is None
