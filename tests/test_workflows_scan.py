"""The genotype/scan seam: one GenotypeSet loader for BED, dosage folders and VCF; run_scan equal to
``epiflow scan``; declared scan statistics; one-line errors for bad genotype inputs."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from models.scans import statistics
from models.scans.design import covariate_basis
from models.scans.scan2d import Scan2D, Scan2DOptions
from pipelines import cli
from pipelines.encode import DosageMatrix, save_dosage
from pipelines.errors import EpiflowError, InputError
from pipelines.workflows.genotypes import (GenotypeSet, Phenotype, SnpFilter, align, is_aligned, load_dosage)
from pipelines.workflows.scan import ScanSpec, load_scan_inputs, run_scan
from plink_files import write_bed

N, P = 30, 12


def _genotypes(seed=3):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 3, size=(N, P)).astype(np.int8)
    X[rng.random((N, P)) < 0.05] = -1
    X[:, 4] = 0  # monomorphic
    chrom = np.array(["1"] * 6 + ["2"] * 6)
    bp = np.r_[np.arange(6), np.arange(6)] * 100 + 10
    return X, chrom, bp


def _write_vcf(path, X, chrom, bp):
    gt = {0: "0/0", 1: "0/1", 2: "1/1", -1: "./."}
    lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    lines += [f"##contig=<ID={c}>" for c in dict.fromkeys(chrom)]
    lines.append("\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]
                           + [f"S{i:02d}" for i in range(X.shape[0])]))
    for j in range(X.shape[1]):  # ALT is the counted allele, as the .bim A1 (G)
        lines.append("\t".join([chrom[j], str(bp[j]), f"rs{j}", "A", "G", ".", "PASS", ".", "GT"]
                               + [gt[int(v)] for v in X[:, j]]))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def sources(tmp_path):
    X, chrom, bp = _genotypes()
    write_bed(tmp_path / "c", X, chrom, bp)
    snps = pd.DataFrame({"chrom": chrom, "pos": bp, "id": [f"rs{j}" for j in range(P)], "ref": "A", "alt": "G",
                         "af": 0.5, "call_rate": 1.0})
    save_dosage(DosageMatrix(X, X < 0, [f"S{i:02d}" for i in range(N)], snps), tmp_path / "folder")
    _write_vcf(tmp_path / "c.vcf", X, chrom, bp)
    return SimpleNamespace(X=X, bed=tmp_path / "c", folder=tmp_path / "folder", vcf=tmp_path / "c.vcf", dir=tmp_path)


def test_one_loader_three_sources_same_genotypes(sources):
    pytest.importorskip("cyvcf2")
    sets = [GenotypeSet.load(s) for s in (sources.bed, sources.bed.with_suffix(".bed"), sources.folder, sources.vcf)]
    assert [g.kind for g in sets] == ["plink", "plink", "dosage", "vcf"]
    for g in sets:
        assert g.dosage.dtype == np.int8 and g.dosage.flags.c_contiguous
        assert np.array_equal(g.dosage, sources.X.T)
        assert g.sample_ids.tolist() == [f"S{i:02d}" for i in range(N)]
        for col in ("snp", "chrom", "bp", "a1", "a2"):
            assert g.snps[col].astype(str).tolist() == sets[0].snps[col].astype(str).tolist(), col


def test_snp_filter_semantics(sources):
    g = GenotypeSet.load(sources.bed)
    st = g.snp_stats()
    called = (sources.X >= 0).sum(axis=0)
    assert np.array_equal(st.called, called)
    assert np.array_equal(st.alt, np.where(sources.X >= 0, sources.X, 0).sum(axis=0))
    keep = SnpFilter(maf_min=0.0).apply(st, g.snps).keep            # polymorphic (scans, NGG)
    assert not keep[4] and keep.sum() == P - 1
    keep = SnpFilter(polymorphic=False).apply(st, g.snps).keep      # ingest-bed keeps monomorphic SNPs
    assert keep.all()
    rate = called / N
    cut = float(np.sort(rate)[3])
    keep = SnpFilter(polymorphic=False, min_call_rate=cut).apply(st, g.snps).keep
    assert np.array_equal(keep, rate >= cut)
    keep = SnpFilter(polymorphic=False, max_missing=1 - cut).apply(st, g.snps).keep
    assert np.array_equal(keep, rate >= cut)
    res = SnpFilter(extract=frozenset({"rs1", "rs4"})).apply(st, g.snps)
    assert res.keep.tolist() == [j == 1 for j in range(P)]


def test_phenotype_join_and_align(sources):
    g = GenotypeSet.load(sources.folder)
    y = np.arange(N, dtype=float)
    y[3] = np.nan
    pd.DataFrame({"sample_id": [f"S{i:02d}" for i in range(N)][::-1], "y": y[::-1]}).to_csv(
        sources.dir / "p.tsv", sep="\t", index=False)
    ph = Phenotype.load(sources.dir / "p.tsv", g, "y").with_trait("auto")
    assert ph.trait == "qt" and 3 not in ph.geno_index and ph.join["n_used"] == N - 1
    used, pha, cov = align(g, ph)
    assert cov is None and is_aligned(used, pha) and used.n == N - 1
    assert np.array_equal(pha.y, np.delete(y, 3))
    assert np.array_equal(used.dosage, np.delete(sources.X, 3, axis=0).T)


def test_bad_genotype_inputs_are_one_line_errors(sources, tmp_path):
    with pytest.raises(InputError, match="neither a SNP dosage directory nor a PLINK fileset") as e:
        GenotypeSet.load(tmp_path / "nothing")
    assert "\n" not in str(e.value)
    bad = tmp_path / "short"
    write_bed(bad, sources.X, *_genotypes()[1:])
    bad.with_suffix(".bed").write_bytes(bad.with_suffix(".bed").read_bytes()[:-3])
    with pytest.raises(InputError) as e:
        GenotypeSet.load(bad)
    assert "\n" not in str(e.value)
    Xf = np.where(sources.X < 0, 1, sources.X).astype(np.float32)
    dm = load_dosage(sources.folder)
    save_dosage(DosageMatrix(Xf, None, dm.samples, dm.snps), tmp_path / "float")
    with pytest.raises(InputError, match="int8") as e:
        GenotypeSet.load(tmp_path / "float")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="int8"):
        GenotypeSet(sources.X.T.astype(np.int16), GenotypeSet.load(sources.bed).snps,
                    pd.DataFrame({"fid": [], "iid": []}))


@pytest.fixture(scope="module")
def mouse(mouse_panel):
    return mouse_panel(250, "wf")


def _as_tsv(df):
    return df.to_csv(sep="\t", index=False, float_format="%.10g", na_rep="NA")


@pytest.mark.parametrize("mode", ["1d", "2d"])
def test_run_scan_equals_the_stage(mouse, tmp_path, mode):
    out = tmp_path / "stage"
    argv = ["scan", "--bfile", mouse.bfile, "--pheno", mouse.pheno, "--pheno-col", "1", "--extract",
            str(mouse.dir / "extract.txt"), "--out", str(out), "--device", "cpu", "--mode", mode, "--top", "20",
            "--tile", "64", "--no-plots"]
    assert cli.main(argv) == 0
    inp = load_scan_inputs(mouse.bfile, pheno=mouse.pheno, pheno_col="1", extract=mouse.dir / "extract.txt",
                           log=lambda msg: None)
    res = run_scan(inp.genotypes, inp.phenotype, ScanSpec(mode=mode, top=20, tile=64), log=lambda msg: None)
    name = "top_snps.tsv" if mode == "1d" else "top_pairs.tsv"
    assert _as_tsv(res.top) == (out / name).read_text()
    if mode == "2d":
        assert _as_tsv(res.chrom_pairs) == (out / "chrom_pairs.tsv").read_text()
        pd.testing.assert_frame_equal(res.snp_best, pd.read_parquet(out / "snp_best.parquet"))
    else:
        pd.testing.assert_frame_equal(res.snps, pd.read_parquet(out / "snps.parquet"))


def test_fam_phenotype_when_no_file_is_given(mouse):
    g = GenotypeSet.load(mouse.bfile, unique_ids=False)
    ph = Phenotype.load(None, g)
    fam = pd.to_numeric(g.samples["pheno"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(fam) & (fam != -9)
    assert ph.column == "pheno" and np.array_equal(ph.geno_index, np.flatnonzero(ok))
    assert np.array_equal(ph.y, fam[ok])


def test_on_block_is_a_keyword_and_resume_is_exact(mouse, tmp_path):
    inp = load_scan_inputs(mouse.bfile, pheno=mouse.pheno, pheno_col="1", extract=mouse.dir / "extract.txt",
                           log=lambda msg: None)
    spec = ScanSpec(mode="2d", top=30, tile=64, block_pairs=64 * 64 * 3, checkpoint_every=0)
    ref = run_scan(inp.genotypes, inp.phenotype, spec, log=lambda msg: None)

    class Stop(Exception):
        pass

    def stop(scan):
        if scan.next_block == 2:
            raise Stop

    with pytest.raises(Stop):
        run_scan(inp.genotypes, inp.phenotype, spec, checkpoint_dir=tmp_path, on_block=stop, log=lambda msg: None)
    assert (tmp_path / ".scan2d.ckpt.npz").exists()
    again = run_scan(inp.genotypes, inp.phenotype, spec, checkpoint_dir=tmp_path, log=lambda msg: None)
    assert again.numbers["resumed_from_block"] == 2 and not (tmp_path / ".scan2d.ckpt.npz").exists()
    assert _as_tsv(again.top) == _as_tsv(ref.top)


def test_run_scan_refuses_unaligned_inputs(sources):
    g = GenotypeSet.load(sources.bed)
    with pytest.raises(EpiflowError, match="missing value"):  # the .fam phenotype: all -9
        Phenotype.load(None, g)
    y = np.linspace(0, 1, N)
    ph = Phenotype(np.arange(0, N, 2), y[::2], "y", "x", None, trait="qt")
    with pytest.raises(ValueError, match="align"):
        run_scan(g, ph, ScanSpec())


def test_statistics_are_declared_objects():
    st = statistics.statistic_for("2d", "binary")
    assert st.name == "logistic_interaction" and st.effect == "log_or_int" and st.case_control
    assert statistics.statistic_for("2d", "qt").fast_kernels
    assert statistics.statistic_for("1d", "qt").columns == ("beta", "se", "t", "p", "n")
    with pytest.raises(ValueError, match="unknown trait"):
        statistics.statistic_for("2d", "ordinal")


def test_a_new_statistic_is_one_object_and_one_entry():
    """A statistic declared from the linear model's moments, without the fast kernels, runs through
    the generic CPU path and gives the fast path's numbers."""
    rng = np.random.default_rng(0)
    G = rng.integers(0, 3, size=(40, 300)).astype(np.int8)
    y = rng.normal(size=300) + 0.5 * (G[3] - 1.0) * (G[17] - 1.0)
    chrom = np.repeat(["1", "2"], 20)
    plain = statistics.register(replace(statistics.LINEAR_INTERACTION, name="linear_interaction_generic",
                                        fast_kernels=False))
    try:
        fast = Scan2D(G, y, chrom, Scan2DOptions(top_k=20, tile=16)).run().results()
        slow = Scan2D(G, y, chrom, Scan2DOptions(top_k=20, tile=16), statistic=plain.name).run().results()
    finally:
        statistics.STATISTICS.pop(plain.name)
    assert np.array_equal(fast["top"]["i"], slow["top"]["i"]) and np.array_equal(fast["top"]["j"], slow["top"]["j"])
    assert np.allclose(fast["top"]["stat"], slow["top"]["stat"], rtol=1e-8)
    assert np.allclose(fast["top"]["effect"], slow["top"]["effect"], rtol=1e-8)


def test_one_covariate_basis_checks_missing_values():
    c = np.c_[np.arange(10.0), np.ones(10) * 3]
    for standardize in (True, False):
        Q = covariate_basis(10, c, standardize=standardize)
        assert Q.shape == (10, 2) and np.allclose(Q.T @ Q, np.eye(2))
    c[2, 0] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        covariate_basis(10, c, standardize=False)
