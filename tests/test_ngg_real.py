"""NGG on real genotypes (GEMMA's mouse_hs1940) with planted phenotypes; skipped without the data."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from models.ngg.ngg import ngg_fit
from models.simulate.pheno import pair_recall, simulate_phenotype, snp_recall


@pytest.fixture(scope="module")
def mouse(shared_data):
    plink = pytest.importorskip("pipelines.io.plink")
    prefix = shared_data / "gemma" / "mouse_hs1940"
    if not (prefix.parent / "mouse_hs1940.bed.gz").exists() and not prefix.with_suffix(".bed").exists():
        pytest.skip("mouse_hs1940 not in the shared data")
    g = plink.read_bed(prefix)
    with gzip.open(shared_data / "gemma" / "mouse_hs1940_snps.txt.gz", "rt") as f:
        panel_ids = [ln.strip() for ln in f if ln.strip()]
    pos = {s: k for k, s in enumerate(g.snps["snp"])}
    panel = np.array(sorted(pos[s] for s in panel_ids if s in pos))
    return g.dosage, panel


def test_planted_pairs_recovered_on_real_genotypes(mouse):
    dosage, panel = mouse
    X = dosage[:, panel[:150]]  # 150 real SNPs (11,175 pairs), 1,940 mice, real LD
    sim = simulate_phenotype(X, n_snps=3, n_pairs=3, h2_add=0.1, h2_int=0.25, seed=4, min_gap=12)
    res = ngg_fit(X, sim.y, B=100, d=30, R=10, seed=0, progress=False)
    found = np.column_stack([res.top_pairs["i"], res.top_pairs["j"]])
    # locus level: a reported pair within 2 panel SNPs of both planted SNPs
    assert pair_recall(found, sim.pairs, window=2, top=10) == 1.0
    assert snp_recall(res.top_snps["snp"], sim.snps, window=2, top=10) >= 2 / 3


@pytest.mark.slow
def test_tuned_settings_beat_defaults_on_the_full_panel(mouse):
    dosage, panel = mouse
    X = dosage[:, panel]  # GEMMA's 1,000-SNP panel: ~405,000 pair columns
    sim = simulate_phenotype(X, n_snps=5, n_pairs=5, h2_add=0.1, h2_int=0.2, seed=1, min_gap=20)
    tuned = ngg_fit(X, sim.y, B=100, d=30, R=10, seed=0, progress=False)
    default = ngg_fit(X, sim.y, seed=0, progress=False)  # B=1000, d=30, R=10
    rec = lambda r: pair_recall(np.column_stack([r.top_pairs["i"], r.top_pairs["j"]]),  # noqa: E731
                                sim.pairs, window=2, top=10)
    assert rec(tuned) >= 0.8
    assert rec(tuned) > rec(default)
