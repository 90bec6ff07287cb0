"""The tiled (GEMM-shaped) NGG: planted pairs recovered, every column covered once per repetition,
a run killed with SIGKILL resumes to the same output, the CPU time estimate refuses in one line."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from models.errors import EpiflowError
from models.ngg.tiled import TiledSettings, ngg_fit_tiled, piece_shape

ROOT = Path(__file__).resolve().parents[1]


def _data(n=300, p=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.binomial(2, rng.uniform(0.2, 0.5, p), size=(n, p)).astype(np.int8)
    Z = (X - X.mean(0)) / X.std(0)
    y = 0.6 * Z[:, 3] * Z[:, 41] + 0.5 * Z[:, 17] * Z[:, 29] + 0.4 * Z[:, 8] + rng.normal(size=n)
    return X, y


# small pieces (B = 20: 4 rows x 5 partners) and super-tiles of 20 SNPs: 3 x 4 / 2 + 3 = 6 pair
# blocks (3 diagonal, 3 off-diagonal) besides the SNP block
KW = dict(B=20, d=10, lam_scale=1.0, R=2, iters=100, seed=3, top=50, progress=False, device="cpu", pieces="rect",
          settings=TiledSettings(super_tile=20, row_tile=8, group=2))


def test_planted_pairs_and_coverage():
    X, y = _data()
    r = ngg_fit_tiled(X, y, **KW)
    p = X.shape[1]
    assert r.n_columns == p + p * (p - 1) // 2
    assert r.timings["columns_done"] == KW["R"] * r.n_columns      # every column once per repetition
    assert r.extra["complete"] and r.params["n_blocks"] == 7
    top = list(zip(r.top_pairs["i"][:2].tolist(), r.top_pairs["j"][:2].tolist()))
    assert sorted(top) == [(3, 41), (17, 29)]
    assert np.all(r.top_pairs["i"] < r.top_pairs["j"])
    assert 8 in r.top_snps["snp"][:2]          # the additive SNP (the previous estimator: same top 2)
    assert np.all(r.top_pairs["support"] <= 1) and np.all(np.diff(r.top_pairs["score"]) <= 0)
    q = ngg_fit_tiled(X, y, shared_sketch=False, **KW)       # one sketch per piece: same planted top 2
    assert sorted(zip(q.top_pairs["i"][:2].tolist(), q.top_pairs["j"][:2].tolist())) == [(3, 41), (17, 29)]


def test_random_pieces_partition_the_valid_pairs_of_a_step():
    """Random pieces: the valid (row, partner) slots of a step in a random order, B to a piece (the last
    ones padded), every valid slot exactly once; rectangular pieces are the identity order."""
    import torch

    from models.ngg.tiled import _Engine, piece_dims

    eng = _Engine.__new__(_Engine)
    eng.torch, eng.pieces, eng._layouts, eng.device = torch, "random", {}, torch.device("cpu")
    G, t, b1, b2 = 3, 8, 4, 5
    valid = torch.rand(G, t, b2, generator=torch.Generator().manual_seed(0)) > 0.3
    R, C, ok, share, slots = eng.step_pieces(t, b1, b2, valid, torch.Generator().manual_seed(1))
    B = b1 * b2
    assert R.shape[1] == B and R.shape[0] % share == 0
    real = slots[ok]
    assert sorted(real.tolist()) == torch.nonzero(valid.reshape(-1)).view(-1).tolist()
    flat = real                                                  # slot = g t b2 + r b2 + c
    assert torch.equal(R[ok], (flat // b2) % t) and torch.equal(C[ok], (flat // (t * b2)) * b2 + flat % b2)
    assert not torch.equal(real, torch.sort(real).values)        # shuffled
    R2, C2, ok2, share2, slots2 = eng.step_pieces(t, b1, b2, valid, torch.Generator().manual_seed(1))
    assert torch.equal(slots2, slots)                            # the generator decides the order
    eng.pieces = "rect"
    R, C, ok, share, slots = eng.step_pieces(t, b1, b2, valid, None)
    assert slots is None and share == t // b1
    assert torch.equal(((R * b2) + C % b2 + (C // b2) * t * b2).view(-1), torch.arange(G * t * b2))
    assert piece_dims(100, "random") == (10, 10) == piece_dims(100, "rect")
    with pytest.raises(EpiflowError, match="pieces"):
        piece_dims(100, "stars")


def test_random_pieces_planted_pairs_coverage_and_resume(tmp_path):
    X, y = _data()
    kw = dict(KW, pieces="random", R=4)
    r = ngg_fit_tiled(X, y, **kw)
    p = X.shape[1]
    assert r.params["pieces"] == "random"
    assert r.timings["columns_done"] == 4 * (p + p * (p - 1) // 2)
    assert {(3, 41), (17, 29)} <= set(zip(r.top_pairs["i"][:5].tolist(), r.top_pairs["j"][:5].tolist()))
    assert not np.array_equal(r.top_pairs["score"], ngg_fit_tiled(X, y, **KW).top_pairs["score"])
    ck = tmp_path / "l.npz"
    _stop_after_block(X, y, ck, 2, kw)
    with pytest.raises(EpiflowError, match="other data or parameters"):   # the layout is part of the key
        ngg_fit_tiled(X, y, checkpoint=ck, **KW)
    resumed = ngg_fit_tiled(X, y, checkpoint=ck, **kw)
    assert resumed.timings["resumed_block"] == 2
    for k, v in _top(r).items():
        np.testing.assert_array_equal(v, _top(resumed)[k])


def test_piece_shape():
    assert piece_shape(100) == 10 and piece_shape(1000) == 25 and piece_shape(20) == 4 and piece_shape(7) == 1


_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from tests.test_ngg_tiled import _data, KILL_KW
    from models.ngg.tiled import ngg_fit_tiled
    X, y = _data()
    ngg_fit_tiled(X, y, checkpoint=sys.argv[1], checkpoint_every=0.0, **KILL_KW)
    open(sys.argv[2], "w").write("finished")
""")
KILL_KW = dict(KW, R=3, iters=400)


def _top(r):
    return {"i": r.top_pairs["i"], "j": r.top_pairs["j"], "s": r.top_pairs["score"], "e": r.top_pairs["effect"],
            "snp": r.snp_effect}


def test_kill9_resume_identical(tmp_path):
    """SIGKILL between two repetitions of a block (a checkpoint holding the block's sums), then a
    rerun: the same top pairs, scores, effects and SNP effects as an uninterrupted run."""
    X, y = _data()
    ref = _top(ngg_fit_tiled(X, y, **KILL_KW))
    ckpt = tmp_path / "run.ckpt.npz"
    done = tmp_path / "finished"
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT.format(root=str(ROOT)), str(ckpt), str(done)], cwd=ROOT)
    t0 = time.time()
    state = None
    while time.time() - t0 < 120 and proc.poll() is None:
        if ckpt.exists():
            try:
                with np.load(ckpt) as z:
                    if bool(z["has_acc"]) and int(z["next_block"]) >= 1:
                        state = (int(z["next_block"]), int(z["next_rep"]))
                        break
            except Exception:                # noqa: BLE001  (file being replaced)
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert state is not None and not done.exists(), "the run ended before a mid-block checkpoint"
    r = ngg_fit_tiled(X, y, checkpoint=ckpt, checkpoint_every=0.0, **KILL_KW)
    assert (r.timings["resumed_block"], r.timings["resumed_rep"]) >= state and r.timings["resumed_rep"] > 0
    got = _top(r)
    for k in ref:
        np.testing.assert_array_equal(ref[k], got[k])


def _stop_after_block(X, y, ck, block, kw):
    """A checkpointed fit stopped (by an exception from on_block) once ``block`` blocks are done."""
    class Stop(Exception):
        pass

    def stop(info):
        if info["block"] == block:
            raise Stop
    with pytest.raises(Stop):
        ngg_fit_tiled(X, y, checkpoint=ck, on_block=stop, **kw)


def test_resume_after_block_identical(tmp_path):
    X, y = _data()
    ref = ngg_fit_tiled(X, y, **KW)
    ck = tmp_path / "c.npz"
    _stop_after_block(X, y, ck, 3, KW)
    r = ngg_fit_tiled(X, y, checkpoint=ck, **KW)
    assert r.timings["resumed_block"] == 3
    for k, v in _top(ref).items():
        np.testing.assert_array_equal(v, _top(r)[k])
    with pytest.raises(EpiflowError, match="other data or parameters"):
        ngg_fit_tiled(X, y, checkpoint=ck, **dict(KW, seed=4))


def test_refusal_is_one_line():
    X, y = _data()
    with pytest.raises(EpiflowError) as exc:
        ngg_fit_tiled(X, y, max_seconds=1e-6, **dict(KW, R=10))
    msg = str(exc.value)
    assert "\n" not in msg and "--ngg-max-minutes" in msg and "SNPs (--extract)" in msg and "columns/s" in msg


def test_bad_precision():
    X, y = _data()
    with pytest.raises(EpiflowError, match="precision"):
        ngg_fit_tiled(X, y, precision="fp8", **KW)


@pytest.mark.gpu
def test_cuda_equals_cpu_on_the_same_draws_and_resumes(tmp_path, monkeypatch):
    """The CUDA path is the CPU computation: fed the CPU generator's Gaussian sketches it gives the
    same effects (float32 rounding); its own draws recover the planted pairs; a stopped run resumes."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    import models.ngg.tiled as T

    X, y = _data()
    cpu = ngg_fit_tiled(X, y, **KW)
    kw = dict(KW, device="cuda")
    r = ngg_fit_tiled(X, y, **kw)
    planted = {(3, 41), (17, 29)}
    assert planted <= set(zip(r.top_pairs["i"][:5].tolist(), r.top_pairs["j"][:5].tolist()))
    ck = tmp_path / "g.npz"
    part = ngg_fit_tiled(X, y, checkpoint=ck, max_blocks=3, **kw)
    assert not part.extra["complete"]
    full = ngg_fit_tiled(X, y, checkpoint=ck, **kw)
    assert full.timings["resumed_block"] == 3
    np.testing.assert_allclose(full.top_pairs["score"][:10], r.top_pairs["score"][:10], rtol=1e-5)
    for prec in ("tf32", "bf16"):      # tensor-core sketches: the planted pairs stay on top
        q = ngg_fit_tiled(X, y, precision=prec, **kw)
        assert planted <= set(zip(q.top_pairs["i"][:5].tolist(), q.top_pairs["j"][:5].tolist())), prec
    # the same Gaussian draws as the CPU run (drawn on the CPU, moved to the GPU)
    make_gen, randn = T._generator, torch.randn
    monkeypatch.setattr(T, "_generator", lambda dev, key: make_gen(torch.device("cpu"), key))
    monkeypatch.setattr(torch, "randn", lambda *a, generator=None, device=None, dtype=None, **k:
                        randn(*a, generator=generator, device="cpu", dtype=dtype, **k).to(device))
    same = ngg_fit_tiled(X, y, **kw)
    np.testing.assert_allclose(same.snp_effect, cpu.snp_effect, rtol=1e-4, atol=1e-6)
    assert same.top_pairs["i"][:10].tolist() == cpu.top_pairs["i"][:10].tolist()
    assert same.top_pairs["j"][:10].tolist() == cpu.top_pairs["j"][:10].tolist()
    np.testing.assert_allclose(same.top_pairs["score"][:10], cpu.top_pairs["score"][:10], rtol=1e-4)


def test_block_repetitions_sum_to_the_fit():
    """The (block, repetition) units, run separately and in reverse order, sum to the fit's effects."""
    from models.ngg.tiled import block_repetition, prepare_tiled

    X, y = _data()
    r = ngg_fit_tiled(X, y, **KW)
    plan = prepare_tiled(X, y, **{k: v for k, v in KW.items() if k not in ("R", "top", "progress")})
    R = KW["R"]
    sums = [sum(block_repetition(plan, b, rep).numpy().astype(np.float64) for rep in reversed(range(R)))
            for b in reversed(range(len(plan.blocks)))][::-1]
    np.testing.assert_allclose(sums[0][0] / R, r.snp_effect, rtol=1e-6, atol=1e-9)
    i, j = int(r.top_pairs["i"][0]), int(r.top_pairs["j"][0])
    for b in range(1, len(plan.blocks)):
        U, W, diag = plan.block_ids(b)
        hit = np.argwhere((U[:, None] == i) & (W[None, :] == j) | (U[:, None] == j) & (W[None, :] == i))
        if hit.size:
            assert sums[b][tuple(hit[0])] / R == pytest.approx(r.top_pairs["effect"][0], rel=1e-6)
            break
    else:
        raise AssertionError("top pair not in any block")
