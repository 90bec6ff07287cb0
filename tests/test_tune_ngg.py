"""The NGG hyperparameter study (pipelines/tune_ngg.py), driven by optuna directly.

Ground truth: planted pairs of simulated phenotypes over real mouse_hs1940 genotypes (skipped when
../shared is absent) or over a simulated genotype matrix written as a SNP dosage directory.
"""
from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from pipelines.errors import EpiflowError
from pipelines.tune_ngg import NGG_DEFAULTS, load_study_data, ngg_study_spec, recall_eval, resolve_config

optuna.logging.set_verbosity(optuna.logging.WARNING)

# a cheap search space: trials take well under a second on ~100 SNPs
CHEAP = {"B": [20, 2000], "d": [10, 40], "lam_scale": [0.25, 8.0], "R": [3, 6], "iters": [50, 150]}
# deliberately bad settings: a penalty far above the noise level and tiny sketches keep every effect at 0
BAD = {"B": 2000, "d": 10, "lam_scale": 8.0, "R": 3, "iters": 50}


def _dosage_dir(path, n=600, p=120, seed=0, with_y=False):
    """A SNP dosage directory (the layout of `epiflow ingest-bed`) of simulated genotypes."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    maf = rng.uniform(0.15, 0.5, p)
    X = rng.binomial(2, maf, size=(n, p)).astype(np.int8)
    X[rng.random((n, p)) < 0.01] = -1
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "X.npy", X)
    ids = [f"s{k}" for k in range(n)]
    (path / "samples.txt").write_text("".join(f"{s}\n" for s in ids))
    pd.DataFrame({"chrom": ["1"] * p, "pos": np.arange(p) * 1000 + 1, "id": [f"rs{k}" for k in range(p)],
                  "ref": "A", "alt": "G", "af": maf, "call_rate": 0.99, "cm": 0.0}).to_csv(
        path / "snps.tsv", sep="\t", index=False)
    if with_y:
        g = X.astype(float)
        g[X < 0] = np.nan
        g = np.where(np.isnan(g), np.nanmean(g, axis=0), g)
        y = (g[:, 3] - g[:, 3].mean()) + 0.8 * (g[:, 10] - 1) * (g[:, 70] - 1) + rng.standard_normal(n)
        pd.DataFrame({"sample_id": ids, "fid": ids, "iid": ids, "y": y}).to_csv(path / "samples.tsv", sep="\t",
                                                                                 index=False)
    return path


@pytest.fixture(params=["mouse_hs1940", "simulated"])
def genotypes(request, tmp_path_factory):
    """A section of params.yaml pointing at a small genotype panel (real when available)."""
    if request.param == "mouse_hs1940":
        shared = request.getfixturevalue("shared_data")
        prefix = shared / "gemma" / "mouse_hs1940"
        if not (prefix.parent / "mouse_hs1940.bed.gz").exists():
            pytest.skip("mouse_hs1940 not in the shared data")
        return {"genotypes": str(prefix), "extract": str(shared / "gemma" / "mouse_hs1940_snps.txt.gz"),
                "max_snps": 100}
    return {"genotypes": str(_dosage_dir(tmp_path_factory.mktemp("dosage"))), "max_snps": 120}


def _section(genotypes, **kw):
    return {**genotypes, "n_snps": 2, "n_pairs": 3, "h2_add": 0.05, "h2_int": 0.4, "tune_seeds": [11, 12],
            "holdout_seed": 99, "device": "cpu", "search": CHEAP, "top": 200, **kw}


def _optimize(spec, n_trials, enqueue=None, seed=0):
    """A plain in-memory study around the spec's objective (what the runner does, minus storage and MLflow)."""
    steps = []
    if len(spec.directions) == 1:
        study = optuna.create_study(direction=spec.directions[0], sampler=optuna.samplers.TPESampler(seed=seed))
    else:
        study = optuna.create_study(directions=spec.directions, sampler=optuna.samplers.RandomSampler(seed=seed))
    if enqueue:
        study.enqueue_trial(enqueue)

    def objective(trial):
        def report(step, value, metrics=None):
            steps.append((trial.number, step, value, dict(metrics or {})))
            if len(spec.directions) == 1:
                trial.report(value, step)
        return spec.objective(trial, report)

    study.optimize(objective, n_trials=n_trials)
    return study, steps


def test_study_beats_bad_defaults_on_heldout_phenotype(genotypes):
    spec = ngg_study_spec({"tune_ngg": _section(genotypes)})
    obj = spec.objective
    assert spec.directions == ["maximize"] and spec.metric_names == ["recall_at_10"]
    assert spec.defaults == NGG_DEFAULTS
    # the held-out phenotype is another seed with other planted loci
    assert obj.cfg["holdout_seed"] not in obj.cfg["tune_seeds"]
    held = {tuple(p) for p in obj.holdout_pheno.pairs.tolist()}
    for ph in obj.tune_phenos:
        assert held != {tuple(p) for p in ph.pairs.tolist()}
        assert not np.allclose(ph.y, obj.holdout_pheno.y)

    study, steps = _optimize(spec, n_trials=8, enqueue=BAD)
    bad = study.trials[0]
    assert bad.params == BAD and bad.value == 0.0  # nothing survives the penalty
    # one report per tuning phenotype, with the running mean
    s0 = [s for s in steps if s[0] == study.best_trial.number]
    assert [s[1] for s in s0] == [0, 1]
    assert s0[-1][2] == pytest.approx(study.best_value)
    assert s0[0][3]["seed"] == 11 and "seconds_per_repetition" in s0[0][3]
    assert study.best_value >= 0.5 > bad.value

    best = {**NGG_DEFAULTS, **study.best_params}
    held_best = recall_eval(obj.data, obj.holdout_pheno, best, obj.cfg)
    held_bad = recall_eval(obj.data, obj.holdout_pheno, BAD, obj.cfg)
    assert held_best["recall_at_10"] > held_bad["recall_at_10"]
    assert held_best["recall_at_10"] >= 0.5

    out = spec.rerun(study.best_params)
    assert out["holdout_seed"] == 99
    assert out["tuned_recall_at_10"] == pytest.approx(held_best["recall_at_10"])
    for k in ("tuned_recall_at_100", "default_recall_at_10", "default_recall_at_100", "tuned_seconds_per_repetition"):
        assert math.isfinite(out[k])


def test_multi_objective_returns_score_and_time(tmp_path):
    sec = _section({"genotypes": str(_dosage_dir(tmp_path / "d", p=80)), "max_snps": 80}, multi_objective=True,
                   tune_seeds=[3], search={**CHEAP, "R": 2, "iters": 40})
    spec = ngg_study_spec({"tune_ngg": sec})
    assert spec.directions == ["maximize", "minimize"]
    assert spec.metric_names == ["recall_at_10", "seconds_per_repetition"]
    study, steps = _optimize(spec, n_trials=2)
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert len(t.values) == 2
        assert 0.0 <= t.values[0] <= 1.0 and t.values[1] > 0
        assert t.values[1] == pytest.approx(t.user_attrs["seconds_per_repetition"])
        assert set(t.params) == {"B", "d", "lam_scale"}  # R and iters fixed
    assert spec.defaults == {"B": 1000, "d": 30, "lam_scale": 1.0}
    assert len(steps) == 2


def test_r2_mode_dosage_dir_phenotype(tmp_path):
    d = _dosage_dir(tmp_path / "d", n=500, p=80, with_y=True)
    sec = {"genotypes": str(d), "mode": "r2", "tune_seeds": [1, 2], "holdout_seed": 7, "device": "cpu",
           "search": {**CHEAP, "R": 3, "iters": 60}, "r2_snps": 5, "r2_pairs": 5}
    spec = ngg_study_spec({"tune_ngg": sec})
    assert spec.metric_names == ["r2_validation"]
    obj = spec.objective
    assert np.intersect1d(obj.tune_rows, obj.holdout_rows).size == 0
    study, _ = _optimize(spec, n_trials=2)
    assert all(math.isfinite(t.value) for t in study.trials)
    out = spec.rerun(study.best_params)
    assert math.isfinite(out["tuned_r2_heldout"]) and math.isfinite(out["default_r2_heldout"])
    # the planted SNP and pair explain a real share of the variance out of sample
    assert max(out["tuned_r2_heldout"], out["default_r2_heldout"]) > 0.1


def test_r2_mode_plink_real_phenotype(shared_data):
    prefix = shared_data / "gemma" / "mouse_hs1940"
    if not (prefix.parent / "mouse_hs1940.bed.gz").exists():
        pytest.skip("mouse_hs1940 not in the shared data")
    sec = {"genotypes": str(prefix), "pheno": str(shared_data / "gemma" / "mouse_hs1940.pheno.txt.gz"),
           "pheno_col": 1, "mode": "r2", "max_snps": 60, "tune_seeds": [1], "holdout_seed": 2, "device": "cpu",
           "search": {**CHEAP, "R": 2, "iters": 40}}
    spec = ngg_study_spec({"tune_ngg": sec})
    assert spec.objective.data.y.shape == (1940,)
    study, _ = _optimize(spec, n_trials=1)
    assert math.isfinite(study.trials[0].value)
    out = spec.rerun(study.best_params)
    assert math.isfinite(out["tuned_r2_heldout"]) and math.isfinite(out["default_r2_heldout"])


def test_default_genotypes_from_pipeline_params(tmp_path):
    d = _dosage_dir(tmp_path / "dosage", p=40)
    cfg = resolve_config({"max_snps": 30})
    data = load_study_data(cfg, {"ingest": {"out": str(d)}})
    assert data.X.shape == (600, 30) and data.source == str(d)
    with pytest.raises(EpiflowError, match="tune_ngg.genotypes is not set"):
        load_study_data(cfg, {})


@pytest.mark.parametrize("section, msg", [
    ({"tune_seeds": [1, 2], "holdout_seed": 2}, "also a tuning seed"),
    ({"bogus": 1}, "unknown key"),
    ({"search": {"B": [100, 10]}}, "low <= high"),
    ({"search": {"alpha": [1, 2]}}, "unknown setting"),
    ({"mode": "auc"}, "mode must be"),
    ({"score": "recall@x"}, "score must be"),
])
def test_config_errors(section, msg):
    with pytest.raises(EpiflowError, match=msg):
        resolve_config(section)


def test_bad_genotype_path(tmp_path):
    with pytest.raises(EpiflowError, match="neither a SNP dosage directory nor a PLINK"):
        ngg_study_spec({"tune_ngg": {"genotypes": str(tmp_path / "nothing")}})
