"""The streaming VCF reader and the sample sheet."""
from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import InputError
from pipelines.io.samples import join_samples, read_sample_sheet
from pipelines.io.vcf import VcfReader, parse_region

DATA = Path(__file__).parent / "data" / "vcf"
VCF = DATA / "small_csq.vcf"

HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=X>\n"
          '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC\tD\n")


def _write(tmp_path, body, name="t.vcf", header=HEADER):
    p = tmp_path / name
    p.write_text(header + "".join("\t".join(r.split()) + "\n" for r in body))
    return p


def _calls(path, dosage=False, **kw):
    r = VcfReader(path, **kw)
    return [(s.pos, [(i.tolist(), v.tolist()) for i, v in s.calls(dosage)]) for s in r], r


def test_calls_multiallelic_missing_half_missing(tmp_path):
    p = _write(tmp_path, [
        "1 10 . A G . PASS . GT 0/1 1/1 ./. ./1",
        "1 20 . A C,T . PASS . GT 1/2 2/2 0/. 2|.",
        "1 30 . A G . PASS . GT 0|0 0/0 . 0/0",
    ])
    got, r = _calls(p)
    assert got == [
        (10, [([0, 1, 3], [1, 1, 1])]),
        (20, [([0], [1]), ([0, 1, 3], [1, 1, 1])]),
        (30, [([], [])]),
    ]
    got, _ = _calls(p, dosage=True)
    assert got[0][1] == [([0, 1, 3], [1, 2, 1])]
    assert got[1][1] == [([0], [1]), ([0, 1, 3], [1, 2, 1])]
    assert r.n_records == 3 and r.haploid_calls == {}
    s = next(iter(VcfReader(p)))
    np.testing.assert_array_equal(s.called(), [True, True, False, False])
    np.testing.assert_array_equal(s.dosage(), [1, 2, -1, -1])


def test_haploid_calls_reported_not_doubled(tmp_path):
    p = _write(tmp_path, [
        "X 10 . A G . PASS . GT 1 0/1 . 1/1",
        "X 20 . A G . PASS . GT 1 0 1 0",
    ])
    got, r = _calls(p, dosage=True)
    assert got == [(10, [([0, 1, 3], [1, 1, 2])]), (20, [([0, 2], [1, 1])])]
    assert r.haploid_calls == {"X": 5}
    with pytest.raises(InputError, match=r"t.vcf:6: 1 haploid call\(s\) on X"):
        list(s.calls() for s in VcfReader(p, haploid="error"))


def test_pass_only_and_sample_subset(tmp_path):
    p = _write(tmp_path, [
        "1 10 . A G . PASS . GT 0/1 1/1 0/0 0/1",
        "1 20 . A G . q10 . GT 0/1 1/1 0/0 0/1",
        "1 30 . A G . . . GT 0/0 0/0 0/1 0/1",
    ])
    got, r = _calls(p, pass_only=True, samples=["D", "B"])
    assert r.samples == ["B", "D"]
    assert got == [(10, [([0, 1], [1, 1])]), (30, [([1], [1])])]
    assert r.n_filtered == 1 and r.n_records == 3
    with pytest.raises(InputError, match="1 requested sample.*not in the VCF: Z"):
        VcfReader(p, samples=["A", "Z"])


def test_allele_index_beyond_alts(tmp_path):
    p = _write(tmp_path, ["1 10 . A G . PASS . GT 0/1 0/2 0/0 0/0"])
    with pytest.raises(InputError, match=r"t.vcf:6: GT refers to allele 2 but the record has 1 ALT"):
        [s.calls() for s in VcfReader(p)]


@pytest.mark.parametrize("line,why", [
    ("1 20 . A G . PASS . GT 0/1 1/1 0/0", "12 columns, expected 13 (9 + 4 samples)"),
    ("1 2x0 . A G . PASS . GT 0/1 1/1 0/0 0/0", "POS is not a number: '2x0'"),
    ("1 20 . A", "4 tab-separated columns, a VCF record needs at least 8"),
    ("1 20 . A G . PASS . GT 0/1 1/x 0/0 0/0", "sample column 2 has an invalid GT '1/x'"),
])
def test_malformed_lines(tmp_path, line, why):
    p = _write(tmp_path, ["1 10 . A G . PASS . GT 0/1 1/1 0/0 0/0", line,
                          "1 30 . A G . PASS . GT 0/1 1/1 0/0 0/0"])
    with pytest.raises(InputError) as ei:
        [s.calls() for s in VcfReader(p)]
    assert str(ei.value) == f"{p}:7: malformed record: {why}"


@pytest.mark.parametrize("compressor", ["gzip", "bgzip"])
def test_truncated_gzip(tmp_path, compressor):
    if compressor == "bgzip" and shutil.which("bgzip") is None:
        pytest.skip("no bgzip")
    p = _write(tmp_path, [f"1 {10 * i + 1} . A G . PASS . GT 0/1 1/1 0/0 0/{i % 2}" for i in range(3000)])
    gz = tmp_path / "t.vcf.gz"
    if compressor == "gzip":
        with open(p, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        subprocess.run(["bgzip", "-k", str(p)], check=True)
    data = gz.read_bytes()
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(data[: len(data) // 2])
    assert sum(1 for _ in VcfReader(gz)) == 3000
    with pytest.raises(InputError, match=r"cut.vcf.gz(:\d+: malformed record)?: (truncated or corrupt compressed file \((gzip|BGZF)\): )?the compressed file is truncated"):
        list(VcfReader(cut))


def test_no_gt_and_sites_only(tmp_path):
    hdr = HEADER.replace("GT,Number=1,Type=String", "DP,Number=1,Type=Integer")
    p = _write(tmp_path, ["1 10 . A G . PASS . DP 3 4 5 6"], header=hdr)
    with pytest.raises(InputError, match="declares no FORMAT/GT"):
        VcfReader(p).require_gt()
    with pytest.raises(InputError, match=r"t.vcf:6: record has no GT field"):
        [s.calls() for s in VcfReader(p)]
    so = tmp_path / "so.vcf"
    so.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n1\t1\t.\tA\tG\t.\t.\t.\n")
    with pytest.raises(InputError, match="no sample columns"):
        VcfReader(so).require_gt()


def test_duplicate_vcf_samples(tmp_path):
    p = _write(tmp_path, ["1 10 . A G . PASS . GT 0/1 1/1 0/0 0/0"],
               header=HEADER.replace("\tC\tD", "\tB\tD"))
    with pytest.raises(InputError, match="duplicate sample ids in the header: B"):
        VcfReader(p)


def test_header_with_spaces(tmp_path):
    p = _write(tmp_path, [], header=HEADER.replace("\tPOS\tID", " POS ID"))
    with pytest.raises(InputError, match="not tab-separated"):
        VcfReader(p)


def test_parse_region():
    assert parse_region("chr1") == ("chr1", None, None)
    assert parse_region("chr1:1,000-2,000") == ("chr1", 1000, 2000)
    assert parse_region("2:5") == ("2", 5, 5)
    with pytest.raises(ValueError):
        parse_region("chr1:9-3")


@pytest.mark.skipif(shutil.which("bgzip") is None or shutil.which("tabix") is None, reason="no bgzip/tabix")
def test_regions_and_bcf(tmp_path):
    body = [f"1 {p} . A G . PASS . GT 0/1 0/0 0/0 1/1" for p in (10, 20, 30, 40)] + \
           [f"X {p} . A G . PASS . GT 0/1 0/0 0/0 0/0" for p in (15, 25)]
    p = _write(tmp_path, body)
    subprocess.run(["bgzip", "-f", str(p)], check=True)
    gz = tmp_path / "t.vcf.gz"
    with pytest.raises(InputError, match="region queries need an index"):
        VcfReader(gz, regions=["1:10-20"])
    subprocess.run(["tabix", "-p", "vcf", str(gz)], check=True)
    pos = [s.pos for s in VcfReader(gz, regions=["1:15-30", "X", "1:25-40"])]
    assert pos == [20, 30, 40, 15, 25]
    bcf = tmp_path / "t.bcf"
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(gz)], check=True)
    r = VcfReader(bcf)
    assert r.kind == "bcf"
    got = [(s.pos, s.calls()[0][0].tolist()) for s in r]
    assert got[:2] == [(10, [0, 3]), (20, [0, 3])] and len(got) == 6


# ------------------------------------------------------------------ sample sheet
def _sheet(tmp_path, text):
    p = tmp_path / "s.tsv"
    p.write_text(text)
    return p


def test_sheet_codings(tmp_path):
    t = read_sample_sheet(_sheet(tmp_path, "sample_id\tstatus\tsex\na\tcase\tF\nb\tCONTROL\tmale\nc\tNA\t2\n"))
    assert t["y"].tolist() == [1, 0, -1] and t["sex"].tolist() == ["F", "M", "F"]
    t = read_sample_sheet(_sheet(tmp_path, "IID\tphenotype\na\t2\nb\t1\nc\t-9\n"))
    assert t["y"].tolist() == [1, 0, -1] and t["sex"].tolist() == ["NA"] * 3
    t = read_sample_sheet(_sheet(tmp_path, "sample_id\tstatus\na\t1\nb\t0\n"))
    assert t["y"].tolist() == [1, 0]


@pytest.mark.parametrize("text,match", [
    ("sample_id\tstatus\na\tcase\nb\tcontrol\na\tcase\n", r"s.tsv:4: duplicate sample id 'a' \(first on line 2\)"),
    ("sample_id\tstatus\na\tcase\nb\tsick\n", r"s.tsv:3: unknown status 'sick'"),
    ("sample_id\tstatus\na\t0\nb\t2\n", r"s.tsv:3: status mixes 0 and 2"),
    ("sample_id\tstatus\na\t1\nb\t1\n", r"s.tsv: status is 1 for every"),
    ("id\tclass\na\t1\n", r"s.tsv:1: header lacks column\(s\) status"),
    ("sample_id\tstatus\tsex\na\tcase\tQ\n", r"s.tsv:2: unknown sex 'Q'"),
    ("sample_id\tstatus\n", r"header but no samples"),
])
def test_sheet_errors(tmp_path, text, match):
    with pytest.raises(InputError, match=match):
        read_sample_sheet(_sheet(tmp_path, text))


def test_join(tmp_path):
    sheet = read_sample_sheet(_sheet(tmp_path, "sample_id\tstatus\nc\tcase\na\tcontrol\nz\tcase\nb\tNA\n"))
    j = join_samples(["a", "b", "c"], sheet, "s.tsv")
    assert j.table["sample_id"].tolist() == ["a", "c"] and j.table["y"].tolist() == [0, 1]
    assert j.dropped_not_in_vcf == ["z"] and j.dropped_unknown_status == ["b"]
    many = [f"v{i}" for i in range(12)]
    with pytest.raises(InputError) as ei:
        join_samples(["a"] + many, sheet, "s.tsv", vcf_path="c.vcf")
    assert str(ei.value) == ("s.tsv: 12 VCF sample(s) of c.vcf missing from the sample sheet: "
                             "v0, v1, v2, v3, v4 ... (12 in all)")
