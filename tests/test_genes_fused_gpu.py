"""The fused (Triton) gene layer of the batched ensemble on a CUDA device: forward and weight
gradients equal the tensor-op path; the ensemble trained on the GPU equals separately trained
single nets on the GPU, on every input path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.genes.ensemble import BatchedEnsemble
from models.genes.nets import GeneNet, build_topology
from models.simulate.genes import planted_burden

pytestmark = pytest.mark.gpu
C = 16


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    from models.genes import fused

    if not fused.available():
        pytest.skip("Triton not available")
    return torch.device("cuda")


@pytest.mark.parametrize("act", ["tanh", "identity", "relu"])
@pytest.mark.parametrize("U,N,H,Cn", [(1000, 7, 50, 16), (37, 3, 20, 5), (5000, 1, 64, 16)])
def test_fused_gene_values_and_gradients(act, U, N, H, Cn):
    from models.genes.fused import gene_values, gene_values_reference

    dev = _cuda()
    g = torch.Generator(device="cpu").manual_seed(U + N)
    z = torch.randn(U, Cn, generator=g).to(dev)
    ws = [torch.randn(*s, generator=g).mul_(0.3).to(dev).requires_grad_()
          for s in ((N, H, Cn), (N, H), (N, H), (N,))]
    out = gene_values(z, *ws, act=act)
    ref = gene_values_reference(z.double(), *(w.double() for w in ws), act=act)
    assert out.shape == (U, N)
    assert torch.isfinite(out).all()
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel < 1e-5, rel
    go = torch.randn(U, N, generator=g).to(dev)
    grads = torch.autograd.grad(out, ws, go)
    ws64 = [w.detach().double().requires_grad_() for w in ws]
    ref = gene_values_reference(z.double(), *ws64, act=act)
    grads_ref = torch.autograd.grad(ref, ws64, go.double())
    for a, b in zip(grads, grads_ref):
        assert a.shape == b.shape
        assert ((a.double() - b).norm() / b.norm().clamp_min(1e-30)) < 1e-5


def test_ensemble_fused_equals_tensor_ops_on_every_input_path():
    from models.genes.data import BatchSource, ComboSource, PairSource, Standardiser

    dev = _cuda()
    coh = planted_burden(n=80, n_genes=30, n_causal=2, seed=1, rate=0.05)
    st = Standardiser(coh.X)
    members = []
    for i in range(4):
        topo, _ = build_topology("biosparse", 30, coh.gene_pathways, {"pathway_seed": i})
        members.append(GeneNet("biosparse", C, 30, topo=topo, init_seed=i))
    ens = BatchedEnsemble(members).to(dev)
    idx = np.arange(0, 80, 3)
    ref_src = BatchSource(coh.X, st, dev)(idx)
    singles = torch.stack([m.to(dev)(ref_src) for m in members], dim=1)
    for S in (ComboSource, PairSource, None):
        x = BatchSource(coh.X, st, dev)(idx) if S is None else S(coh.X, st, C, dev)(idx)
        ens.use_fused = True
        fused_out = ens(x)
        ens.use_fused = False
        plain = ens(x)
        assert torch.allclose(fused_out, plain, atol=1e-5)
        assert torch.allclose(fused_out, singles, atol=1e-5)
        ens.use_fused = True
        acts_fused = ens.gene_activations(x, 1, 3)
        ens.use_fused = False
        assert torch.allclose(acts_fused, ens.gene_activations(x, 1, 3), atol=1e-5)
    ens.use_fused = True


@pytest.mark.parametrize("per,sparsity", [("column", 1.0), ("class", 1.0), ("class", 0.6)])
def test_fused_sparse_layer_equals_tensor_ops_with_gradients(per, sparsity):
    """The Triton sparse layer on combination input (values straight into the neurons) gives
    the logits and every parameter gradient of the tensor-op path, in member chunks too."""
    from models.genes.data import ComboSource, Standardiser

    dev = _cuda()
    coh = planted_burden(n=300, n_genes=60, n_causal=3, seed=2, rate=0.05)
    st = Standardiser(coh.X, per=per, n_classes=C)
    members = []
    for i in range(5):
        topo, _ = build_topology("biosparse", 60, coh.gene_pathways,
                                 {"pathway_seed": i, "sparsity": sparsity})
        members.append(GeneNet("biosparse", C, 60, topo=topo, init_seed=i))
    ens = BatchedEnsemble(members, member_chunk=2).to(dev)
    assert ens.fused_sparse and ens.src_is_perm == (sparsity == 1.0)
    x = ComboSource(coh.X, st, C, dev)(np.arange(0, 300, 2))
    runs = {}
    for name, fz, fs in (("sparse", True, True), ("rows", True, False), ("ops", False, False)):
        ens.use_fused, ens.use_fused_sparse = fz, fs
        ens.zero_grad()
        outs = []
        for m0, m1 in ens.chunks():
            lg = ens.logits(x, m0, m1)
            lg.sin().sum().backward()
            outs.append(lg.detach())
        runs[name] = (torch.cat(outs, 1), [p.grad.clone() for p in ens.parameters()])
    ens.use_fused, ens.use_fused_sparse = True, True
    ref_out, ref_grads = runs["ops"]
    for name in ("sparse", "rows"):
        out, grads = runs[name]
        assert torch.allclose(out, ref_out, atol=1e-5), name
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), name


def test_gather_and_permute_gradients_on_gpu():
    """The contention-free backward passes equal plain autograd, with one column taking a
    quarter of the positions (the all-zero count vector under per-class standardisation)."""
    from models.genes.layers import _private_copies, gather_cols, permute_rows

    dev = _cuda()
    g = torch.Generator().manual_seed(3)
    n, U, J = 7, 500, 40_000
    idx = torch.randint(0, U, (J,), generator=g)
    idx[torch.rand(J, generator=g) < 0.25] = 0
    idx = idx.to(dev)
    v = torch.randn(n, U, generator=g, dtype=torch.float64).to(dev).requires_grad_()
    go = torch.randn(n, J, generator=g, dtype=torch.float64).to(dev)
    assert _private_copies(n, U, idx.device) > 1
    out = gather_cols(v, idx)
    assert torch.equal(out, v[:, idx])
    (gv,) = torch.autograd.grad(out, v, go)
    (ref,) = torch.autograd.grad(v[:, idx], v, go)
    assert torch.allclose(gv, ref, rtol=1e-12, atol=1e-9)
    perm = torch.randperm(U, generator=g).to(dev)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(U, device=dev)
    x = torch.randn(U, 3, generator=g, dtype=torch.float64).to(dev).requires_grad_()
    gp = torch.randn(U, 3, generator=g, dtype=torch.float64).to(dev)
    (gx,) = torch.autograd.grad(permute_rows(x, perm, inv), x, gp)
    (ref,) = torch.autograd.grad(x[perm], x, gp)
    assert torch.equal(gx, ref)


@pytest.mark.parametrize("mode,per", [("combos", "column"), ("combos", "class"),
                                      ("dense", "column")])
def test_batched_ensemble_equals_separate_members_on_gpu(mode, per):
    """Trained on the GPU (fused gene layer) == the members trained one by one on the GPU.
    Calls train_net directly and moves the nets back to the device after each fit (Lightning's
    teardown leaves a GPU-trained module on the CPU)."""
    from models.genes.data import Standardiser, make_source
    from models.genes.training import predict_logits, train_net

    dev = _cuda()
    coh = planted_burden(n=400, n_genes=40, n_causal=4, effect=1.5, seed=8, rate=0.02)
    tr, te = np.arange(300), np.arange(300, 400)
    st = Standardiser(coh.X[tr], per=per, n_classes=C)
    src = make_source(coh.X[tr], st, C, dev, mode=mode)
    src_te = make_source(coh.X[te], st, C, dev, mode=mode)
    assert src.mode == mode

    def member(i):
        topo, _ = build_topology("biosparse", 40, coh.gene_pathways, {"pathway_seed": 5 + i})
        return GeneNet("biosparse", C, 40, topo=topo, init_seed=11 + i)

    y = coh.y[tr].astype(np.float32)
    kw = dict(lr=1e-2, weight_decay=1e-3, alpha=float(1 - y.mean()), gamma=2.0, max_epochs=4,
              batch_size=64, seed=2, device=dev)
    ens = BatchedEnsemble([member(i) for i in range(3)]).to(dev)
    assert ens._fused_on(dev) and ens.src_is_perm
    train_net(ens, src, y, **kw)
    p_ens = torch.sigmoid(predict_logits(ens.to(dev), src_te).double())
    singles = []
    for i in range(3):
        net = member(i).to(dev)
        train_net(net, src, y, **kw)
        singles.append(torch.sigmoid(predict_logits(net.to(dev), src_te).double()))
    singles = torch.stack(singles, 1)
    assert (p_ens - singles).abs().max() < 1e-4
    assert (singles[:, 0] - singles[:, 1]).abs().max() > 1e-3


def test_fused_gene_values_past_the_grid_y_limit():
    """More row tiles than CUDA's 65,535 on grid axis 1 (8.4M rows; the paper-size batch of
    combinations under column standardisation, at prediction batch 512, reaches that): the
    launch works and the values and weight gradients equal the tensor-op path (float64)."""
    from models.genes.fused import GRID_Y_MAX, gene_values_t, gene_values_reference

    dev = _cuda()
    U, N, H, Cn = GRID_Y_MAX * 128 + 4097, 3, 50, 16
    g = torch.Generator(device="cpu").manual_seed(13)
    z = torch.randn(U, Cn, generator=g).to(dev)
    ws = [torch.randn(*s, generator=g).mul_(0.3).to(dev).requires_grad_()
          for s in ((N, H, Cn), (N, H), (N, H), (N,))]
    out = gene_values_t(z, *ws)                                          # (N, U)
    go = torch.randn(N, U, generator=g).to(dev)
    grads = torch.autograd.grad(out, ws, go)
    ws64 = [w.detach().double().requires_grad_() for w in ws]
    num = den = 0.0
    grads_ref = [torch.zeros_like(w) for w in ws64]
    for u0 in range(0, U, 1 << 20):                                       # float64 reference in chunks
        u1 = min(U, u0 + (1 << 20))
        ref = gene_values_reference(z[u0:u1].double(), *ws64)            # (rows, N)
        num += float((out[:, u0:u1].t().double() - ref.detach()).pow(2).sum())
        den += float(ref.detach().pow(2).sum())
        for acc, gr in zip(grads_ref, torch.autograd.grad(ref, ws64, go[:, u0:u1].t().double())):
            acc += gr
    assert (num / den) ** 0.5 < 1e-5
    assert torch.isfinite(out[:, -1]).all() and out[:, -1].abs().sum() > 0   # the last tile ran
    for a, b in zip(grads, grads_ref):
        assert ((a.double() - b).norm() / b.norm()) < 1e-5


def test_ensemble_at_paper_size_equals_tensor_ops():
    """23,000 genes x 16 classes at exome density, column standardisation (about a million
    distinct combinations per batch): logits and parameter gradients of the fused ensemble
    equal those of the tensor-op path, at training batch 128 and prediction batch 512."""
    from models.genes.data import ComboSource, Standardiser
    from models.simulate.exome import exome_cohort

    dev = _cuda()
    coh = exome_cohort(n_samples=800, n_genes=23_000, seed=5)
    G = coh.n_genes
    st = Standardiser(coh.X[:600], per="column", n_classes=C)
    src = ComboSource(coh.X[:600], st, C, dev)
    members = []
    for i in range(3):
        topo, _ = build_topology("biosparse", G, coh.gene_pathways,
                                 {"pathway_seed": i, "sparsity_source": "random"})
        members.append(GeneNet("biosparse", C, G, topo=topo, init_seed=i))
    ens = BatchedEnsemble(members).to(dev)
    for b in (128, 512):
        x = src(np.arange(b))
        assert x.z.shape[0] > 100_000 * b // 128
        runs = {}
        for name, fz in (("fused", True), ("ops", False)):
            ens.use_fused = fz
            ens.zero_grad()
            lg = ens(x)
            lg.sin().sum().backward()
            runs[name] = (lg.detach(), [p.grad.clone() for p in ens.parameters()])
        ens.use_fused = True
        (out, grads), (ref, ref_grads) = runs["fused"], runs["ops"]
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
        for a, r in zip(grads, ref_grads):
            assert ((a - r).norm() / r.norm().clamp_min(1e-30)) < 1e-4


def test_dense_batches_expanded_on_the_gpu_equal_the_host_path():
    from models.genes.data import BatchSource, Standardiser

    dev = _cuda()
    coh = planted_burden(n=300, n_genes=200, n_causal=2, seed=3, rate=0.08)
    st = Standardiser(coh.X, n_classes=C)
    src = BatchSource(coh.X, st, dev, cache_bytes=0)
    idx = np.arange(0, 300, 2)
    assert torch.equal(src(idx), src._densify(idx, on_device=False))


@pytest.mark.parametrize("model_type", ["logreg", "linear", "biosparse", "dense"])
def test_single_net_fused_gene_layer_equals_tensor_ops(model_type, monkeypatch):
    """A single net's gene module on a CUDA device goes through the fused kernel (no hidden
    layer in memory): logits and every weight gradient equal the tensor-op path, on the dense,
    combination and pair inputs; an input that asks for its gradient (attributions) keeps the
    tensor-op path."""
    from models.genes.data import BatchSource, ComboSource, PairSource, Standardiser

    dev = _cuda()
    coh = planted_burden(n=90, n_genes=40, n_causal=2, seed=2, rate=0.05)
    st = Standardiser(coh.X)
    topo, _ = build_topology(model_type, 40, coh.gene_pathways, {"pathway_seed": 0})
    net = GeneNet(model_type, C, 40, topo=topo, init_seed=3).to(dev)
    idx = np.arange(0, 90, 2)
    for S in (ComboSource, PairSource, None):
        x = BatchSource(coh.X, st, dev)(idx) if S is None else S(coh.X, st, C, dev)(idx)
        outs = {}
        for flag in ("1", "0"):
            monkeypatch.setenv("EPIFLOW_FUSED_GENE", flag)
            net.zero_grad(set_to_none=True)
            out = net(x)
            out.square().sum().backward()
            outs[flag] = (out.detach(), [p.grad.detach().clone() for p in net.parameters()])
        assert torch.allclose(outs["1"][0], outs["0"][0], atol=1e-5)
        for a, b in zip(outs["1"][1], outs["0"][1]):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    monkeypatch.setenv("EPIFLOW_FUSED_GENE", "1")
    xd = BatchSource(coh.X, st, dev)(idx).requires_grad_()
    assert not net.gene._fused_ok(xd)
    g, = torch.autograd.grad(net(xd).sum(), xd)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_single_net_fused_at_paper_size_trains_like_tensor_ops():
    """4,000 x 23,000 genes x 16 (dense rows of 128 samples: 2.9 million gene rows a step):
    one Adam step through the fused gene layer equals the tensor-op step."""
    from models.genes.data import BatchSource, Standardiser
    from models.simulate.exome import exome_cohort

    dev = _cuda()
    ex = exome_cohort(600, 23000, seed=1)
    st = Standardiser(ex.X)
    x = BatchSource(ex.X, st, dev, cache_bytes=0)(np.arange(128))
    y = torch.as_tensor(ex.y[:128], dtype=torch.float32, device=dev)
    res = {}
    for flag in ("1", "0"):
        import os

        os.environ["EPIFLOW_FUSED_GENE"] = flag
        net = GeneNet("logreg", C, 23000, init_seed=0).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        res[flag] = (float(loss), torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    os.environ.pop("EPIFLOW_FUSED_GENE", None)
    assert abs(res["1"][0] - res["0"][0]) < 1e-5
    assert torch.allclose(res["1"][1], res["0"][1], atol=1e-5)
