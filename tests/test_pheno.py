"""Phenotype/covariate tables: PLINK, GEMMA and TSV layouts, missing codes, joins and their reports."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import InputError
from pipelines.io.pheno import as_case_control, join, read_table, trait_kind


@pytest.fixture
def fam():
    return pd.DataFrame({"fid": ["f1", "f1", "f2", "f3", "f4"], "iid": ["a", "b", "c", "d", "e"]})


def test_plink_with_header_and_missing_codes(tmp_path, fam):
    p = tmp_path / "ph.txt"
    p.write_text("FID IID height bmi\nf1 a 1.5 20\nf1 b -9 21\nf2 c NA 22\nf3 d 2.5 nan\nzz q 3 3\n")
    t = read_table(p, samples=fam)
    assert t.fmt == "plink" and t.columns == ["height", "bmi"]
    j = join(fam, t, ["height"])
    np.testing.assert_array_equal(j.geno_index, [0, 3])
    np.testing.assert_allclose(j.values[:, 0], [1.5, 2.5])
    r = j.report
    assert (r.n_genotyped, r.n_table, r.n_matched, r.n_complete) == (5, 5, 4, 2)
    assert r.genotyped_only == ["e"] and r.table_only == ["q"] and sorted(r.missing_value) == ["b", "c"]
    assert "2 samples used" in r.summary() and "matched on fid+iid" in r.summary()
    j2 = join(fam, t, [1, 2])  # both columns: d misses bmi
    np.testing.assert_array_equal(j2.geno_index, [0])


def test_plink_without_header(tmp_path, fam):
    p = tmp_path / "ph.txt"
    p.write_text("f2 c 0.5\nf1 a 1.0\n")
    t = read_table(p, samples=fam)
    assert t.fmt == "plink" and t.columns == ["V1"]
    j = join(fam, t, [1])
    np.testing.assert_array_equal(j.geno_index, [0, 2])  # genotype order, not file order
    np.testing.assert_allclose(j.values[:, 0], [1.0, 0.5])


def test_gemma_rows_follow_fam_order(tmp_path, fam):
    p = tmp_path / "ph.txt"
    p.write_text("1.0\t2\nNA\t3\n-9\t4\n0.5\tNA\n7\t8\n")
    t = read_table(p, samples=fam)
    assert t.fmt == "gemma" and t.row_aligned
    j = join(fam, t, [1])
    np.testing.assert_array_equal(j.geno_index, [0, 2, 3, 4])
    np.testing.assert_allclose(j.values[:, 0], [1.0, -9.0, 0.5, 7.0])  # -9 is a number for GEMMA
    (tmp_path / "short.txt").write_text("1\n2\n")
    with pytest.raises(InputError, match="2 rows but the genotypes have 5 samples"):
        read_table(tmp_path / "short.txt", fmt="gemma", samples=fam)
    with pytest.raises(InputError, match=r"all-numeric table of 2 rows: .* one row per genotyped sample \(5\)"):
        read_table(tmp_path / "short.txt", samples=fam)


def test_tsv_by_iid_and_duplicates(tmp_path, fam):
    p = tmp_path / "ph.tsv"
    p.write_text("sample_id\tage\ttrait\ne\t50\t1\na\t\t2\nc\t40\t\n")
    t = read_table(p, samples=fam)
    assert t.fmt == "tsv" and t.columns == ["age", "trait"]
    j = join(fam, t, ["trait"])
    np.testing.assert_array_equal(j.geno_index, [0, 4])
    assert j.report.key == "iid"
    p.write_text("iid\tv\na\t1\na\t2\n")
    with pytest.raises(InputError, match=r"ph\.tsv:3: duplicate sample id a"):
        read_table(p, samples=fam)


def test_no_overlap_is_one_line_error(tmp_path, fam):
    p = tmp_path / "ph.txt"
    p.write_text("FID IID y\nx1 z1 1\nx2 z2 2\n")
    t = read_table(p, samples=fam)
    with pytest.raises(InputError) as e:
        join(fam, t, [1])
    msg = str(e.value)
    assert "\n" not in msg and "no sample of the phenotype table" in msg and "ph.txt" in msg


def test_bad_values_and_columns(tmp_path, fam):
    p = tmp_path / "ph.txt"
    p.write_text("FID IID y\nf1 a 1\nf1 b oops\n")
    with pytest.raises(InputError, match=r"ph\.txt:3: value 'oops' in column 'y' is not a number"):
        read_table(p, samples=fam)
    p.write_text("FID IID y\nf1 a 1\n")
    with pytest.raises(InputError, match="column 3 requested but the table has 1 value columns"):
        read_table(p, samples=fam, columns=[3])


def test_binary_coding():
    assert trait_kind(np.array([1.0, 2.0, np.nan, 2.0])) == "binary"
    assert trait_kind(np.array([0.0, 1.0, 1.0])) == "binary"
    assert trait_kind(np.array([0.0, 1.0, 2.0])) == "quantitative"
    np.testing.assert_array_equal(as_case_control(np.array([1.0, 2.0])), [0.0, 1.0])
    np.testing.assert_array_equal(as_case_control(np.array([0.0, 1.0])), [0.0, 1.0])


def test_real_gemma_and_plink_files(shared_data):
    from pipelines.io.plink import read_fam

    gem = shared_data / "gemma"
    fam = read_fam(gem / "mouse_hs1940.fam.gz")
    t = read_table(gem / "mouse_hs1940.pheno.txt.gz", samples=fam)
    assert t.fmt == "gemma" and len(t.columns) == 6
    j = join(fam, t, [1])
    assert j.report.n_complete == 1410  # CD8 measured in 1,410 mice
    assert join(fam, t, [6]).report.n_complete == 1580
    # GEMMA's HLC phenotype file has 137 rows where two columns ran together: column 1 is intact,
    # column 13 cannot be aligned and is refused with the line number
    hfam = read_fam(gem / "HLC.fam.gz")
    ok = read_table(gem / "HLC.simu.pheno.txt.gz", samples=hfam, columns=[1])
    assert ok.values.shape == (427, 1) and np.isfinite(ok.values.to_numpy()).all()
    with pytest.raises(InputError, match=r"HLC\.simu\.pheno\.txt\.gz:1: 21 fields where other rows have 22"):
        read_table(gem / "HLC.simu.pheno.txt.gz", samples=hfam, columns=[13])
    cov = read_table(gem / "HLC_covariates.txt", samples=hfam)
    assert cov.fmt == "gemma" and cov.values.shape == (427, 1)
