"""PLINK 1 BED/BIM/FAM and BIMBAM readers: decoding, orientation, real data, bad files."""
from __future__ import annotations

import gzip
import time

import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.io.plink import align_bimbam_to_bim, decode_bed_bytes, read_bed, read_bimbam, read_bim


def _write_plink(prefix, G, alleles=None, gz=False):
    """Write a SNP-major PLINK fileset for dosage matrix G (n x p, A1 counts, -1 missing)."""
    n, p = G.shape
    code = {2: 0b00, -1: 0b01, 1: 0b10, 0: 0b11}
    nb = (n + 3) // 4
    body = bytearray()
    for j in range(p):
        row = bytearray(nb)
        for i in range(n):
            row[i // 4] |= code[int(G[i, j])] << (2 * (i % 4))
        body += row
    data = b"\x6c\x1b\x01" + bytes(body)
    bim = "".join(f"{1 + j % 2}\trs{j}\t0\t{100 * (j + 1)}\t{(alleles or 'AG')[0]}\t{(alleles or 'AG')[1]}\n"
                  for j in range(p))
    fam = "".join(f"F{i}\tI{i}\t0\t0\t1\t-9\n" for i in range(n))
    op = (lambda path, mode: gzip.open(str(path) + ".gz", mode)) if gz else open
    with op(f"{prefix}.bed", "wb") as fh:
        fh.write(data)
    with op(f"{prefix}.bim", "wb") as fh:
        fh.write(bim.encode())
    with op(f"{prefix}.fam", "wb") as fh:
        fh.write(fam.encode())


def test_lookup_table_decodes_every_code():
    # byte 0b11_10_01_00 holds samples 0..3 = hom A1, missing, het, hom A2
    out = decode_bed_bytes(np.array([[0b11100100]], dtype=np.uint8), 4)
    np.testing.assert_array_equal(out, [[2, -1, 1, 0]])
    # all 256 bytes: each 2-bit field decodes independently
    allb = decode_bed_bytes(np.arange(256, dtype=np.uint8)[:, None], 4)
    want = np.array([2, -1, 1, 0], dtype=np.int8)
    for b in range(256):
        np.testing.assert_array_equal(allb[b], want[[(b >> (2 * k)) & 3 for k in range(4)]])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("n", [1, 4, 7, 13])
def test_roundtrip_synthetic(tmp_path, gz, n):
    rng = np.random.default_rng(n)
    G = rng.integers(-1, 3, size=(n, 9)).astype(np.int8)
    _write_plink(tmp_path / "x", G, gz=gz)
    g = read_bed(tmp_path / "x")
    assert g.dosage.dtype == np.int8 and g.dosage.shape == (n, 9)
    assert g.dosage.flags.f_contiguous
    np.testing.assert_array_equal(g.dosage, G)
    np.testing.assert_array_equal(g.missing, G < 0)
    assert list(g.snps.columns) == ["chrom", "snp", "cm", "bp", "a1", "a2"]
    sub = read_bed(tmp_path / "x", snps=[8, 2], samples=np.arange(n) % 2 == 0)
    np.testing.assert_array_equal(sub.dosage, G[::2][:, [8, 2]])
    assert list(sub.snps.snp) == ["rs8", "rs2"]


def test_size_mismatch_is_refused(tmp_path):
    G = np.zeros((6, 5), dtype=np.int8)
    _write_plink(tmp_path / "x", G)
    with open(tmp_path / "x.bim", "a") as fh:
        fh.write("1\trs_extra\t0\t999\tA\tG\n")
    with pytest.raises(InputError, match=r"size 13 bytes disagrees with x\.bim \(6 SNPs\) and x\.fam \(6 samples\)"):
        read_bed(tmp_path / "x")


def test_bad_magic_and_truncated_gzip(tmp_path):
    G = np.ones((5, 3), dtype=np.int8)
    _write_plink(tmp_path / "x", G)
    raw = (tmp_path / "x.bed").read_bytes()
    (tmp_path / "x.bed").write_bytes(b"\x00\x00" + raw[2:])
    with pytest.raises(InputError, match="bad magic"):
        read_bed(tmp_path / "x")
    (tmp_path / "x.bed").unlink()
    (tmp_path / "x.bed.gz").write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(InputError, match="truncated gzip"):
        read_bed(tmp_path / "x")


def test_missing_files_and_malformed_bim(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_bed(tmp_path / "nothing")
    (tmp_path / "b.bim").write_text("1 rs1 0 100 A G\n1 rs2 0 x A G\n")
    with pytest.raises(InputError, match=r"b\.bim:2: base-pair position 'x'"):
        read_bim(tmp_path / "b.bim")


def test_duplicate_sample_ids(tmp_path):
    _write_plink(tmp_path / "x", np.zeros((3, 2), dtype=np.int8))
    (tmp_path / "x.fam").write_text("F\tI\t0\t0\t1\t-9\nF\tJ\t0\t0\t1\t-9\nF\tI\t0\t0\t1\t-9\n")
    with pytest.raises(InputError, match=r"x\.fam:3: duplicate sample id F I"):
        read_bed(tmp_path / "x")


@pytest.fixture(scope="module")
def mouse_bimbam(shared_data):
    return read_bimbam(shared_data / "gemma" / "mouse_hs1940.geno.txt.gz")


def test_mouse_bed_agrees_with_bimbam_on_every_called_cell(shared_data, mouse_bimbam):
    """BED A1 counts vs GEMMA's BIMBAM mean genotypes for mouse_hs1940.

    Orientation: BIMBAM counts allele1 (column 2); for every SNP of these files allele1 equals the
    BIM's A1 (column 5) and allele2 its A2, so no flip is needed and the dosages must be equal on
    every cell the BIMBAM file did not mean-impute (non-integer values).
    """
    gem = shared_data / "gemma"
    g = read_bed(gem / "mouse_hs1940")
    assert g.dosage.shape == (1940, 12226)
    assert g.missing_rate() == 0.0
    snps, dos = mouse_bimbam
    assert (snps["snp"].to_numpy() == g.snps["snp"].to_numpy()).all()
    assert (snps["a1"].to_numpy() == g.snps["a1"].to_numpy()).all()
    aligned, flipped = align_bimbam_to_bim(snps, dos, g.snps)
    assert not flipped.any()
    called = np.isclose(aligned, np.round(aligned))
    frac = called.mean()
    assert frac > 0.999  # the rest were mean-imputed in the BIMBAM file
    bed = g.dosage.T.astype(np.float64)
    assert np.array_equal(aligned[called], bed[called])


def test_align_bimbam_flips_swapped_alleles(shared_data, mouse_bimbam):
    gem = shared_data / "gemma"
    g = read_bed(gem / "mouse_hs1940", snps=np.arange(50))
    snps, dos = mouse_bimbam
    snps, dos = snps.iloc[:50].copy(), dos[:50]
    snps[["a1", "a2"]] = snps[["a2", "a1"]].to_numpy()
    aligned, flipped = align_bimbam_to_bim(snps, 2.0 - dos, g.snps)
    distinct = (g.snps["a1"] != g.snps["a2"]).to_numpy()  # a few monomorphic SNPs list A1 == A2
    assert flipped[distinct].all() and not flipped[~distinct].any()
    called = np.isclose(aligned, np.round(aligned)) & distinct[:, None]
    assert np.array_equal(aligned[called], g.dosage.T.astype(float)[called])


def test_hlc_loads_fast(shared_data):
    t0 = time.perf_counter()
    g = read_bed(shared_data / "gemma" / "HLC")
    dt = time.perf_counter() - t0
    assert g.dosage.shape == (427, 358499) and g.dosage.dtype == np.int8
    assert 0.03 < g.missing_rate() < 0.04  # 3.5 % missing calls
    assert set(np.unique(g.dosage[:, :1000])) <= {-1, 0, 1, 2}
    assert dt < 30, f"HLC took {dt:.1f} s"
