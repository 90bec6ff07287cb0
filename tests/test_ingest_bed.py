"""``epiflow ingest-bed``: PLINK 1 fileset -> SNP dosage directory (decoding, filters, joins, bad input)."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.workflows.genotypes import load_dosage

REPO = Path(__file__).resolve().parents[1]

# Five samples, five SNPs, SNP-major. Two bits per genotype, first sample in the low bits:
# 00 hom A1 (2), 01 missing (-1), 10 het (1), 11 hom A2 (0); the last byte of each SNP holds
# sample 4 and three 00 padding fields.
BED = b"\x6c\x1b\x01" + bytes([
    0b11_10_01_00, 0b00,   # rs0: 00 01 10 11 | 00  -> 2 -1  1  0  2
    0b10_11_11_11, 0b11,   # rs1: 11 11 11 10 | 11  -> 0  0  0  1  0
    0b10_00_01_01, 0b11,   # rs2: 01 01 00 10 | 11  -> -1 -1 2  1  0
    0b00_00_00_00, 0b00,   # rs3: 00 00 00 00 | 00  -> 2  2  2  2  2
    0b00_11_10_10, 0b01,   # rs4: 10 10 11 00 | 01  -> 1  1  0  2 -1
])
# decoded by hand from the bytes above: samples x SNPs
EXPECTED = np.array([
    [2, 0, -1, 2, 1],
    [-1, 0, -1, 2, 1],
    [1, 0, 2, 2, 0],
    [0, 1, 1, 2, 2],
    [2, 0, 0, 2, -1],
], dtype=np.int8)
# A1 frequency among called alleles and call rate over all five samples
AF = [5 / 8, 1 / 10, 3 / 6, 1.0, 4 / 8]
CALL_RATE = [0.8, 1.0, 0.6, 1.0, 0.8]
BIM = "".join(f"{1 + j // 3}\trs{j}\t0.{j}\t{100 * (j + 1)}\t{a1}\t{a2}\n"
              for j, (a1, a2) in enumerate(["AG", "CT", "GA", "TC", "AC"]))
FAM = "".join(f"F{i}\tI{i}\t0\t0\t{1 + i % 2}\t-9\n" for i in range(5))


def _write(tmp_path, bed=BED, gz=False, name="x") -> Path:
    prefix = tmp_path / name
    for ext, data in (("bed", bed), ("bim", BIM.encode()), ("fam", FAM.encode())):
        if gz:
            Path(f"{prefix}.{ext}.gz").write_bytes(gzip.compress(data))
        else:
            Path(f"{prefix}.{ext}").write_bytes(data)
    return prefix


def _no_params(d):
    """An empty params file: every setting at its default (a --params FILE must exist)."""
    p = d / "absent.yaml"
    p.write_text("")
    return p


def _run(tmp_path, *args, out="out", metrics="m.json", params=None):
    argv = ["ingest-bed", "--out", str(tmp_path / out), "--metrics", str(tmp_path / metrics),
            "--params", str(params or _no_params(tmp_path)), *map(str, args)]
    return main(argv)


def _one_line_error(tmp_path, capsys, *args):
    rc = _run(tmp_path, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("epiflow ingest-bed: error: "), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]     # no temporary left
    return err[0]


@pytest.mark.parametrize("gz", [False, True])
def test_hand_written_fileset_decodes_exactly(tmp_path, gz):
    prefix = _write(tmp_path, gz=gz)
    assert _run(tmp_path, "--bfile", prefix) == 0
    X = np.load(tmp_path / "out" / "X.npy")
    assert X.dtype == np.int8 and X.flags.c_contiguous
    np.testing.assert_array_equal(X, EXPECTED)
    dm = load_dosage(tmp_path / "out")
    np.testing.assert_array_equal(dm.X, EXPECTED)
    np.testing.assert_array_equal(dm.mask, EXPECTED < 0)
    assert dm.samples == [f"I{i}" for i in range(5)]
    s = dm.snps
    assert list(s.columns[:7]) == ["chrom", "pos", "id", "ref", "alt", "af", "call_rate"]
    assert list(s["id"]) == [f"rs{j}" for j in range(5)]
    assert list(s["chrom"]) == ["1", "1", "1", "2", "2"]
    assert list(s["pos"]) == [100, 200, 300, 400, 500]
    assert list(s["alt"]) == list("ACGTA") and list(s["ref"]) == list("GTACC")   # alt = counted A1
    np.testing.assert_allclose(s["af"], AF)
    np.testing.assert_allclose(s["call_rate"], CALL_RATE)
    table = pd.read_csv(tmp_path / "out" / "samples.tsv", sep="\t", dtype=str)
    assert list(table["fid"]) == [f"F{i}" for i in range(5)] and list(table["iid"]) == dm.samples
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_samples"] == 5 and m["n_snps"] == 5 and m["n_snps_file"] == 5
    assert m["n_snps_dropped"] == {"call_rate": 0, "maf": 0, "total": 0}
    assert m["missing_rate"] == pytest.approx(4 / 25) and m["n_missing_calls"] == 4
    assert m["n_monomorphic_kept"] == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the tracked metrics hold the results; wall times go to metrics/timings/ (not results)
    assert m == {k: v for k, v in summary.items() if k != "seconds"} and "read" in summary["seconds"]


@pytest.mark.parametrize("flags, kept, dropped", [
    (["--min-call-rate", "0.8"], [0, 1, 3, 4], {"call_rate": 1, "maf": 0}),          # rs2: 3/5 called
    (["--min-maf", "0.2"], [0, 2, 4], {"call_rate": 0, "maf": 2}),                   # rs1 0.1, rs3 0
    (["--min-maf", "0.1"], [0, 1, 2, 4], {"call_rate": 0, "maf": 1}),                # inclusive threshold
    (["--min-call-rate", "0.8", "--min-maf", "0.2"], [0, 4], {"call_rate": 1, "maf": 2}),
    (["--min-call-rate", "1"], [1, 3], {"call_rate": 3, "maf": 0}),
])
def test_filters_drop_the_right_snps(tmp_path, flags, kept, dropped):
    prefix = _write(tmp_path)
    assert _run(tmp_path, "--bfile", prefix, *flags) == 0
    dm = load_dosage(tmp_path / "out")
    assert list(dm.snps["id"]) == [f"rs{j}" for j in kept]
    np.testing.assert_array_equal(dm.X, EXPECTED[:, kept])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_snps"] == len(kept)
    assert m["n_snps_dropped"] == {**dropped, "total": 5 - len(kept)}
    assert m["missing_rate"] == pytest.approx(np.mean(EXPECTED[:, kept] < 0))
    assert m["missing_rate_before_filters"] == pytest.approx(4 / 25)


def test_mean_imputation(tmp_path):
    prefix = _write(tmp_path)
    assert _run(tmp_path, "--bfile", prefix, "--impute", "mean") == 0
    dm = load_dosage(tmp_path / "out")
    assert dm.X.dtype == np.float32 and dm.mask is None
    want = EXPECTED.astype(np.float32)
    want[1, 0] = 1.25              # mean of 2, 1, 0, 2
    want[0:2, 2] = 1.0             # mean of 2, 1, 0
    want[4, 4] = 1.0               # mean of 1, 1, 0, 2
    np.testing.assert_allclose(dm.X, want)
    assert json.loads((tmp_path / "m.json").read_text())["n_imputed"] == 4


def test_phenotype_and_covariate_join(tmp_path, capsys):
    prefix = _write(tmp_path)
    pheno = tmp_path / "pheno.txt"     # I1 missing height, I4 absent, F9/I9 not genotyped
    pheno.write_text("FID IID height status\nF0 I0 1.5 2\nF1 I1 NA 1\nF2 I2 2.5 -9\nF3 I3 3.0 1\nF9 I9 4.0 2\n")
    assert _run(tmp_path, "--bfile", prefix, "--pheno", pheno, "--pheno-col", "height") == 0
    err = capsys.readouterr().err
    assert "3 samples used" in err and "1 table rows without genotypes (e.g. I9)" in err
    dm = load_dosage(tmp_path / "out")
    assert dm.samples == ["I0", "I2", "I3"]
    np.testing.assert_array_equal(dm.X, EXPECTED[[0, 2, 3]])
    # statistics are those of the kept samples: rs0 = 2, 1, 0; rs2 = -1, 2, 1
    assert dm.snps["af"][0] == pytest.approx(0.5) and dm.snps["call_rate"][2] == pytest.approx(2 / 3)
    table = pd.read_csv(tmp_path / "out" / "samples.tsv", sep="\t")
    np.testing.assert_allclose(table["y"], [1.5, 2.5, 3.0])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_samples"] == 3 and m["n_samples_file"] == 5 and m["n_samples_dropped"] == 2
    p = m["pheno"]
    assert (p["column"], p["n_used"], p["n_genotyped_only"], p["n_table_only"], p["n_missing_value"]) == \
        ("height", 3, 1, 1, 1)
    assert p["dropped"] == {"genotyped_only": ["I4"], "table_only": ["I9"], "missing_value": ["I1"]}
    assert "3 samples used" in p["summary"]

    covar = tmp_path / "covar.tsv"     # tab-separated with an id column; I2's age is empty (missing)
    covar.write_text("iid\tage\tsite\nI0\t30\t1\nI2\t\t2\nI3\t40\t1\nI1\t50\t2\n")
    assert _run(tmp_path, "--bfile", prefix, "--pheno", pheno, "--pheno-col", "2",
                "--covar", covar, "--covar-cols", "age") == 0
    dm = load_dosage(tmp_path / "out")
    assert dm.samples == ["I0", "I1", "I3"]    # status: I2 is -9 (missing), I4 absent; I2 also lacks age
    np.testing.assert_array_equal(dm.X, EXPECTED[[0, 1, 3]])
    table = pd.read_csv(tmp_path / "out" / "samples.tsv", sep="\t")
    np.testing.assert_allclose(table["y"], [2, 1, 1])
    np.testing.assert_allclose(table["covar_age"], [30, 50, 40])
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["pheno"]["column"] == "status" and m["pheno"]["trait"] == "binary"
    assert m["covar"]["columns"] == ["age"] and m["covar"]["n_missing_value"] == 1
    assert m["covar"]["n_genotyped_only"] == 1 and m["n_samples"] == 3


def test_bed_size_disagreeing_with_bim_fam(tmp_path, capsys):
    prefix = _write(tmp_path, bed=BED[:-2])
    line = _one_line_error(tmp_path, capsys, "--bfile", prefix)
    assert "x.bed: size 11 bytes disagrees with x.bim (5 SNPs) and x.fam (5 samples): expected 13" in line


def test_bed_size_error_through_the_console_entry(tmp_path):
    prefix = _write(tmp_path, bed=BED + b"\x00")
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest-bed", "--bfile", str(prefix),
                        "--out", str(tmp_path / "out"), "--params", str(_no_params(tmp_path))],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "disagrees with x.bim" in r.stderr
    assert not (tmp_path / "out").exists()


def test_phenotype_without_overlapping_samples(tmp_path, capsys):
    prefix = _write(tmp_path)
    pheno = tmp_path / "other.txt"
    pheno.write_text("X1 Y1 1.5\nX2 Y2 2.0\nX3 Y3 0.5\n")
    line = _one_line_error(tmp_path, capsys, "--bfile", prefix, "--pheno", pheno)
    assert "other.txt: no sample of the phenotype table (e.g. Y1, Y2) is among the 5 genotyped samples" in line


@pytest.mark.parametrize("args, text", [
    (["--min-call-rate", "0.9", "--min-maf", "0.2"], "no SNP passes the filters"),
    (["--min-maf", "0.7"], "min_maf must lie in [0, 0.5]"),
    (["--pheno-col", "2"], "--pheno-col given without a phenotype file"),
])
def test_other_refusals(tmp_path, capsys, args, text):
    prefix = _write(tmp_path)
    assert text in _one_line_error(tmp_path, capsys, "--bfile", prefix, *args)


def test_missing_fileset(tmp_path, capsys):
    assert "x.bed: not found (nor .gz)" in _one_line_error(tmp_path, capsys, "--bfile", tmp_path / "x")


def test_defaults_from_params(tmp_path):
    prefix = _write(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(f"ingest:\n  bfile: {prefix}\n  min_maf: 0.2\n  impute: none\n")
    assert main(["ingest-bed", "--out", str(tmp_path / "a"), "--params", str(params)]) == 0
    assert list(load_dosage(tmp_path / "a").snps["id"]) == ["rs0", "rs2", "rs4"]
    assert main(["ingest-bed", "--out", str(tmp_path / "b"), "--params", str(params), "--min-maf", "0"]) == 0
    assert load_dosage(tmp_path / "b").X.shape == (5, 5)         # the flag wins over params.yaml


def test_load_dosage_reads_the_vcf_form(tmp_path):
    from pipelines.encode import dosage_matrix_vcf, save_dosage

    dm = dosage_matrix_vcf(REPO / "tests" / "data" / "vcf" / "small_csq.vcf")
    save_dosage(dm, tmp_path / "d")
    back = load_dosage(tmp_path / "d")
    np.testing.assert_array_equal(back.X, dm.X)
    np.testing.assert_array_equal(back.mask, dm.mask)
    assert back.samples == dm.samples
    pd.testing.assert_frame_equal(back.snps, dm.snps, check_dtype=False)


def test_mouse_hs1940_agrees_with_read_bed(tmp_path, shared_data):
    from pipelines.io.plink import read_bed

    prefix = shared_data / "gemma" / "mouse_hs1940"
    if not Path(f"{prefix}.bed.gz").is_file():
        pytest.skip("mouse_hs1940 PLINK files absent")
    assert _run(tmp_path, "--bfile", prefix) == 0
    g = read_bed(prefix)
    dm = load_dosage(tmp_path / "out")
    assert dm.X.shape == (1940, 12226) == g.dosage.shape
    np.testing.assert_array_equal(dm.X, g.dosage)
    assert dm.samples == list(g.samples["iid"])
    assert list(dm.snps["id"]) == list(g.snps["snp"]) and list(dm.snps["alt"]) == list(g.snps["a1"])
    m = json.loads((tmp_path / "m.json").read_text())
    assert (m["n_samples"], m["n_snps"]) == (1940, 12226)

    # phenotype (GEMMA layout, .fam order) and a MAF filter: PLINK 1.9's --maf keeps the same SNPs
    # (PLINK also drops SNPs with a negative position, 1926 here, which ingest-bed keeps and counts)
    pheno = shared_data / "gemma" / "mouse_hs1940.pheno.txt.gz"
    assert _run(tmp_path, "--bfile", prefix, "--pheno", pheno, "--min-maf", "0.1", out="f") == 0
    m = json.loads((tmp_path / "m.json").read_text())
    y = pd.read_csv(pheno, sep=r"\s+", header=None, na_values="NA")[0]
    assert m["n_samples"] == int(y.notna().sum()) and m["pheno"]["format"] == "gemma"
    if shutil.which("plink1.9") is None:
        return
    plain = tmp_path / "plain"
    for ext in ("bed", "bim", "fam"):
        Path(f"{plain}.{ext}").write_bytes(gzip.decompress(Path(f"{prefix}.{ext}.gz").read_bytes()))
    keep = tmp_path / "keep.txt"
    kept = g.samples[y.notna().to_numpy()]
    keep.write_text("".join(f"{a} {b}\n" for a, b in zip(kept["fid"], kept["iid"])))
    r = subprocess.run(["plink1.9", "--bfile", str(plain), "--keep", str(keep), "--maf", "0.1", "--nonfounders",
                        "--make-just-bim", "--allow-no-sex", "--out", str(tmp_path / "pl")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:]
    want = pd.read_csv(tmp_path / "pl.bim", sep=r"\s+", header=None)[1].astype(str).tolist()
    snps = load_dosage(tmp_path / "f").snps
    assert sorted(snps.loc[snps["pos"] >= 0, "id"]) == sorted(want)     # PLINK re-sorts by position
    assert m["n_negative_bp"] == int((snps["pos"] < 0).sum()) > 0
