"""NGG estimator: planted recovery, exact building blocks, determinism, streaming and resume."""
from __future__ import annotations

import numpy as np
import pytest

from models.ngg import ngg as ngg_mod
from models.ngg.ngg import _sketch_normal_equations, fista_lasso, ngg_fit
from models.ngg.pairs import pair_index
from models.simulate.pheno import pair_recall, simulate_phenotype, snp_recall


def _cohort(seed, n=500, p=60):
    rng = np.random.default_rng(seed)
    maf = rng.uniform(0.1, 0.5, p)
    return rng.binomial(2, maf, (n, p)).astype(np.float32)


def _planted(seed, n=500, p=60, **kw):
    X = _cohort(1000 + seed, n, p)
    kw = {"n_snps": 3, "n_pairs": 3, "h2_add": 0.2, "h2_int": 0.4, "min_gap": 3, **kw}
    return X, simulate_phenotype(X, seed=seed, **kw)


def _pairs(res):
    return np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])


# --------------------------------------------------------------------------- building blocks


def test_sketch_matches_explicit_design():
    """The on-the-fly sketch equals D_k A^T built from explicit standardised product columns."""
    rng = np.random.default_rng(0)
    n, p, d, B = 80, 12, 5, 9
    Z = rng.standard_normal((n, p))
    Z = (Z - Z.mean(0)) / Z.std(0)
    rows = np.vstack([Z.T, np.ones((1, n))])
    ones = p
    # a piece mixing SNP columns, pair columns, a padded slot and a constant column
    ri = np.array([[0, 3, 1, 2, 5, 7, ones, 4, 4]])
    rj = np.array([[ones, ones, 2, 9, 11, 8, ones, 6, 6]])
    valid = np.array([[True] * 6 + [False, True, True]])
    A = rng.standard_normal((1, d, B))
    y = rng.standard_normal(n)
    y = (y - y.mean()) / y.std()
    Am, V, h = _sketch_normal_equations(rows, ri, rj, valid, A, y, chunk=1, xp=np)
    D = np.zeros((n, B))
    good = np.zeros(B, bool)
    for t in range(B):
        if not valid[0, t]:
            continue
        col = rows[ri[0, t]] * rows[rj[0, t]]
        if col.std() > 1e-6:
            D[:, t] = (col - col.mean()) / col.std()
            good[t] = True
    A_ref = A[0] * good
    S = D @ A_ref.T
    np.testing.assert_allclose(Am[0], A_ref)
    np.testing.assert_allclose(V[0], S.T @ S, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(h[0], S.T @ y, rtol=1e-10, atol=1e-9)


def test_fista_matches_coordinate_descent_lasso():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    d, B = 30, 200
    A = rng.standard_normal((3, d, B)) / np.sqrt(d)
    theta = np.zeros((3, B))
    theta[:, [5, 40, 77]] = [0.6, -0.5, 0.4]
    nu = np.einsum("kdb,kb->kd", A, theta) + 0.02 * rng.standard_normal((3, d))
    lam = 0.05
    est = fista_lasso(A, nu, lam, 3000, np)
    for k in range(3):
        ref = sklearn.Lasso(alpha=lam / d, fit_intercept=False, tol=1e-14, max_iter=200_000)
        ref.fit(A[k], nu[k])
        np.testing.assert_allclose(est[k], ref.coef_, atol=1e-8)


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_planted_snps_and_pairs(seed):
    X, sim = _planted(seed)
    res = ngg_fit(X, sim.y, B=50, d=30, R=10, seed=0, progress=False)
    assert res.n_columns == 60 + 1770
    found = _pairs(res)
    # every planted pair and SNP is in the top 3 (as many as planted): no false positive there
    assert pair_recall(found, sim.pairs, top=3) == 1.0
    assert snp_recall(res.top_snps["snp"], sim.snps, top=3) == 1.0
    # effects carry the planted signs
    for (a, b), g in zip(sim.pairs, sim.pair_effects):
        k = np.flatnonzero((found[:, 0] == a) & (found[:, 1] == b))[0]
        assert np.sign(res.top_pairs["effect"][k]) == np.sign(g)
    # few false positives: non-planted pairs score well below the weakest planted pair
    is_true = np.array([any((a == i and b == j) for a, b in sim.pairs) for i, j in found])
    weakest = res.top_pairs["score"][is_true].min()
    assert np.sum(res.top_pairs["score"][~is_true] > 0.5 * weakest) <= 1


def test_null_phenotype_scores_stay_below_planted_signal():
    X, sim = _planted(0)
    planted = ngg_fit(X, sim.y, B=50, R=10, seed=0, progress=False)
    y0 = np.random.default_rng(5).standard_normal(X.shape[0])
    null = ngg_fit(X, y0, B=50, R=10, seed=0, progress=False)
    assert null.top_pairs["score"][0] < 0.5 * planted.top_pairs["score"][2]
    assert null.top_snps["score"][0] < 0.5 * planted.top_snps["score"][2]


def test_mode_1d_and_candidates():
    X, sim = _planted(3)
    r1 = ngg_fit(X, sim.y, mode="1d", B=50, R=10, seed=0, progress=False)
    assert r1.n_columns == 60 and r1.top_pairs["i"].size == 0
    assert snp_recall(r1.top_snps["snp"], sim.snps, top=3) == 1.0
    cand = np.unique(np.concatenate([sim.pairs.ravel(), np.arange(0, 60, 7)]))
    r2 = ngg_fit(X, sim.y, B=50, R=10, seed=0, progress=False, candidates=cand)
    assert r2.n_columns == 60 + cand.size * (cand.size - 1) // 2
    found = _pairs(r2)
    assert np.isin(found, cand).all()
    assert pair_recall(found, sim.pairs, top=3) == 1.0


def test_indices_refer_to_original_columns_with_monomorphic_and_missing():
    X, sim = _planted(4)
    n = X.shape[0]
    # interleave monomorphic SNPs and use int8 dosages with -1 for a few missing calls
    Xi = np.rint(X).astype(np.int8)
    mono = np.zeros((n, 1), np.int8)
    Xb = np.hstack([mono, Xi[:, :30], np.full((n, 1), 2, np.int8), Xi[:, 30:]])
    rng = np.random.default_rng(0)
    miss = rng.random(Xb.shape) < 0.01
    Xb[miss] = -1
    shift = lambda c: c + 1 + (c >= 30)  # noqa: E731
    res = ngg_fit(Xb, sim.y, B=50, R=10, seed=0, progress=False)
    assert res.params["n_snp_columns"] == 60
    assert res.snp_score[0] == 0 and res.snp_score[31] == 0
    assert pair_recall(_pairs(res), shift(sim.pairs), top=3) == 1.0
    assert snp_recall(res.top_snps["snp"], shift(sim.snps), top=3) == 1.0


def test_covariates_are_regressed_out():
    X, sim = _planted(5)
    s0 = sim.snps[0]
    # a covariate equal to one planted SNP's genotype removes that SNP from the design
    res = ngg_fit(X, sim.y, B=50, R=10, seed=0, progress=False, covariates=X[:, [s0]])
    assert res.snp_score[s0] == 0
    assert snp_recall(res.top_snps["snp"], sim.snps[1:], top=2) == 1.0
    assert pair_recall(_pairs(res), sim.pairs, top=3) == 1.0
    # an unrelated covariate with a huge effect on y changes nothing once regressed out
    c = np.random.default_rng(9).standard_normal(X.shape[0])
    res2 = ngg_fit(X, sim.y + 50 * c, B=50, R=10, seed=0, progress=False, covariates=c)
    base = ngg_fit(X, sim.y, B=50, R=10, seed=0, progress=False)
    np.testing.assert_array_equal(res2.top_pairs["i"][:3], base.top_pairs["i"][:3])
    np.testing.assert_allclose(res2.top_pairs["score"][:3], base.top_pairs["score"][:3], rtol=0.05)


# --------------------------------------------------------------------------- determinism, streaming


def test_deterministic_given_seed_and_independent_of_batching():
    X, sim = _planted(6)
    kw = dict(B=50, R=4, progress=False, top=50)
    a = ngg_fit(X, sim.y, seed=11, **kw)
    b = ngg_fit(X, sim.y, seed=11, **kw)
    for k in ("i", "j", "effect", "support", "score"):
        np.testing.assert_array_equal(a.top_pairs[k], b.top_pairs[k])
    np.testing.assert_array_equal(a.snp_effect, b.snp_effect)
    # batch size only changes float rounding (shuffles and sketches are counter-based)
    c = ngg_fit(X, sim.y, seed=11, batch=3, **kw)
    np.testing.assert_array_equal(a.top_pairs["i"][:10], c.top_pairs["i"][:10])
    np.testing.assert_allclose(a.top_pairs["score"][:10], c.top_pairs["score"][:10], rtol=1e-4)
    d = ngg_fit(X, sim.y, seed=12, **kw)
    assert not np.array_equal(a.snp_effect, d.snp_effect)


def test_streaming_blocks_keep_an_exact_running_top_k():
    X, sim = _planted(7)
    kw = dict(B=50, R=6, seed=3, progress=False, block_cols=400)  # 5 super-blocks
    full = ngg_fit(X, sim.y, top=2000, **kw)
    assert full.params["n_blocks"] == 5
    small = ngg_fit(X, sim.y, top=25, **kw)
    np.testing.assert_array_equal(small.top_pairs["i"], full.top_pairs["i"][:25])
    np.testing.assert_array_equal(small.top_pairs["j"], full.top_pairs["j"][:25])
    np.testing.assert_array_equal(small.top_pairs["score"], full.top_pairs["score"][:25])
    # scores are sorted, pairs are valid and unique, and the planted pairs are still found
    s = full.top_pairs["score"]
    assert np.all(np.diff(s) <= 0) and np.all(s > 0)
    k = pair_index(full.top_pairs["i"], full.top_pairs["j"], 60)
    assert np.unique(k).size == k.size
    assert np.allclose(full.top_pairs["score"], full.top_pairs["support"] * np.abs(full.top_pairs["effect"]))
    assert pair_recall(_pairs(full), sim.pairs, top=3) == 1.0


def test_checkpoint_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    X, sim = _planted(8)
    kw = dict(B=50, R=3, seed=2, progress=False, block_cols=400, top=30)
    ref = ngg_fit(X, sim.y, **kw)
    ck = tmp_path / "ngg.npz"
    real_save = ngg_mod._save_checkpoint
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed after block 2")

    monkeypatch.setattr(ngg_mod, "_save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ngg_fit(X, sim.y, checkpoint=ck, **kw)
    monkeypatch.setattr(ngg_mod, "_save_checkpoint", real_save)
    res = ngg_fit(X, sim.y, checkpoint=ck, **kw)
    assert res.timings["resumed_blocks"] == 2
    for k in ("i", "j", "effect", "support", "score"):
        np.testing.assert_array_equal(res.top_pairs[k], ref.top_pairs[k])
    np.testing.assert_array_equal(res.snp_effect, ref.snp_effect)
    with pytest.raises(ValueError, match="other data or parameters"):
        ngg_fit(X, sim.y, checkpoint=ck, **{**kw, "seed": 99})


def test_max_pieces_and_timings_and_frames():
    X, sim = _planted(9)
    res = ngg_fit(X, sim.y, B=50, R=2, progress=False, max_pieces=5, profile=True)
    assert res.timings["pieces_done"] == 10 and res.pieces_per_repetition == 5
    for key in ("per_repetition_s", "sketch_s", "fista_s", "pieces_per_s"):
        assert res.timings[key] >= 0
    ids = np.array([f"rs{k}" for k in range(60)])
    full = ngg_fit(X, sim.y, B=50, R=2, progress=False)
    df = full.pairs_frame(ids)
    assert list(df.columns[:4]) == ["i", "j", "id_i", "id_j"]
    assert df["id_i"].iloc[0] == ids[df["i"].iloc[0]]
    assert full.snps_frame(ids)["snp_id"].iloc[0] == ids[full.top_snps["snp"][0]]


def test_run_time_estimate_refuses_in_one_line_or_runs():
    """max_seconds: the estimate from the first batch refuses a fit that would run too long (one
    line naming what fits) before doing the work, and lets one that fits finish unchanged."""
    from models.errors import EpiflowError

    X, sim = _planted(5)
    kw = dict(B=50, R=4, batch=2, progress=False, seed=2)
    with pytest.raises(EpiflowError) as err:
        ngg_fit(X, sim.y, max_seconds=1e-9, **kw)
    msg = str(err.value)
    assert "\n" not in msg and "over the" in msg and "--ngg-max-minutes 0" in msg and "R=4" in msg
    ref = ngg_fit(X, sim.y, **kw)
    ok = ngg_fit(X, sim.y, max_seconds=3600.0, **kw)
    np.testing.assert_array_equal(_pairs(ok), _pairs(ref))
    np.testing.assert_array_equal(ok.top_pairs["score"], ref.top_pairs["score"])


def test_input_validation():
    X, sim = _planted(0)
    with pytest.raises(ValueError, match="mode"):
        ngg_fit(X, sim.y, mode="3d", progress=False)
    with pytest.raises(ValueError, match="rows"):
        ngg_fit(X, sim.y[:-1], progress=False)
    with pytest.raises(ValueError, match="candidate"):
        ngg_fit(X, sim.y, candidates=[0, 60], progress=False)
    with pytest.raises(ValueError, match="mode='2d'"):
        ngg_fit(X, sim.y, mode="1d", candidates=[0, 1], progress=False)


# --------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_matches_cpu():
    cupy = pytest.importorskip("cupy")
    X, sim = _planted(0, n=800, p=80)
    kw = dict(B=50, R=6, seed=4, progress=False, top=200, dtype=np.float64, iters=300)
    cpu = ngg_fit(X, sim.y, xp=np, **kw)
    gpu = ngg_fit(X, sim.y, xp=cupy, **kw)
    assert gpu.params["backend"] == "cupy"
    np.testing.assert_allclose(gpu.snp_effect, cpu.snp_effect, atol=1e-6)
    np.testing.assert_allclose(gpu.snp_support, cpu.snp_support, atol=0.2)
    np.testing.assert_array_equal(gpu.top_pairs["i"][:20], cpu.top_pairs["i"][:20])
    np.testing.assert_array_equal(gpu.top_pairs["j"][:20], cpu.top_pairs["j"][:20])
    np.testing.assert_allclose(gpu.top_pairs["score"][:20], cpu.top_pairs["score"][:20], rtol=1e-4,
                               atol=1e-6)
    # float32 (the default) agrees on the strong hits
    g32 = ngg_fit(X, sim.y, xp=cupy, **{**kw, "dtype": np.float32})
    assert pair_recall(_pairs(g32), sim.pairs, top=3) == 1.0
    assert pair_recall(_pairs(cpu), sim.pairs, top=3) == 1.0


def test_locus_level_recall_and_clumping():
    from models.simulate.pheno import clump_pairs, pair_hits

    planted = np.array([[10, 50], [100, 200]])
    found = np.array([[11, 51], [12, 49], [49, 9], [30, 80], [101, 203], [100, 200]])
    np.testing.assert_array_equal(pair_hits(found, planted, window=0), [False, True])
    np.testing.assert_array_equal(pair_hits(found, planted, window=1), [True, True])
    np.testing.assert_array_equal(pair_hits(found[:5], planted, window=1), [True, False])
    np.testing.assert_array_equal(pair_hits(found, planted, window=3), [True, True])
    assert pair_recall(found, planted, window=3, top=4) == 0.5
    # crosswise orientation counts, and a chromosome mismatch does not
    chrom = np.zeros(300, int)
    chrom[45:] = 1
    assert pair_hits([[51, 11]], planted, window=1, chrom=chrom)[0]
    assert not pair_hits([[44, 11]], [[44, 46]], window=5, chrom=chrom)[0]
    np.testing.assert_array_equal(clump_pairs(found, window=3), [0, 3, 4])
    np.testing.assert_array_equal(clump_pairs(found, window=2), [0, 3, 4, 5])
    np.testing.assert_array_equal(clump_pairs(found, window=0), np.arange(6))
