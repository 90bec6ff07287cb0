"""The encoder against a hand-written VCF whose counts were worked out by hand.

tests/data/vcf/small_csq.vcf (6 samples; CSQ fields in a non-standard order):

=========  =====================================  ==========================================
record     annotation                             genotypes S1..S6 -> carriers
=========  =====================================  ==========================================
chr1:100   GA missense&splice_region (+ intron    0/1 1/1 ./. ./1 0/. 0/0 -> S1 S2 S4 (S4 half-
           on another transcript) -> nonsyn SNV   missing ./1 carries; S5 0/. does not)
chr1:200   GA synonymous -> not counted           -
chr1:300   G>A stop_gained GA; G>GTT frameshift   1/2 0/2 2/2 0/1 ./. 0/0 -> A: S1 S4;
           (multi-allelic)                        GTT: S1 S2 S3 (S3 hom, dosage 2)
chr2:400   GB downstream+intron -> intronic;      0/0 0/1 0/0 0/0 1|1 0|1 -> S2 S5 S6
           GC upstream (one variant, two genes)
chr2:500   GB coding_sequence_variant, TCA>T      S3 -> frameshift_deletion (length -2)
chr2:600   GB protein_altering_variant, TCAG>T    S1, S6 (hom) -> nonframeshift_deletion (-3)
chr3:700   intergenic, no gene -> skipped         -
chr3:800   GD 3'UTR, FILTER LowQual               S2 (dropped with pass_only)
chr3:900   intron + non_coding_transcript, no     S4 -> ncRNA_intronic of ENSG0004
           SYMBOL (Gene id used)
=========  =====================================  ==========================================
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.annotate import DEFAULT_CLASSES
from pipelines.encode import encode_vcf, load_encoded
from pipelines.errors import EpiflowError, InputError

DATA = Path(__file__).parent / "data" / "vcf"
VCF = DATA / "small_csq.vcf"
SHEET = DATA / "small_samples.tsv"

# (class, gene) -> per-sample counts S1..S6 (carrier counting)
EXPECTED = {
    ("nonsynonymous_SNV", "GA"): [1, 1, 0, 1, 0, 0],
    ("stopgain", "GA"): [1, 0, 0, 1, 0, 0],
    ("frameshift_insertion", "GA"): [1, 1, 1, 0, 0, 0],
    ("intronic", "GB"): [0, 1, 0, 0, 1, 1],
    ("upstream", "GC"): [0, 1, 0, 0, 1, 1],
    ("frameshift_deletion", "GB"): [0, 0, 1, 0, 0, 0],
    ("nonframeshift_deletion", "GB"): [1, 0, 0, 0, 0, 1],
    ("UTR3", "GD"): [0, 1, 0, 0, 0, 0],
    ("ncRNA_intronic", "ENSG0004"): [0, 0, 0, 1, 0, 0],
}
# the same under dosage counting: hom-alt carriers count 2
EXPECTED_DOSAGE = dict(EXPECTED)
EXPECTED_DOSAGE.update({
    ("nonsynonymous_SNV", "GA"): [1, 2, 0, 1, 0, 0],
    ("frameshift_insertion", "GA"): [1, 1, 2, 0, 0, 0],
    ("intronic", "GB"): [0, 1, 0, 0, 2, 1],
    ("upstream", "GC"): [0, 1, 0, 0, 2, 1],
    ("nonframeshift_deletion", "GB"): [1, 0, 0, 0, 0, 2],
})


def _check_counts(enc, expected):
    dense = enc.dense3d()
    seen = np.zeros(dense.shape, bool)
    for (cls, gene), want in expected.items():
        c, g = enc.classes.index(cls), enc.genes.index(gene)
        np.testing.assert_array_equal(dense[:, c, g], want, err_msg=f"{cls} {gene}")
        seen[:, c, g] = True
    assert not dense[~seen].any(), "counts outside the expected (class, gene) cells"


def test_encode_hand_counted(tmp_path):
    out = tmp_path / "enc"
    s = encode_vcf(VCF, SHEET, out, progress=False, log=lambda m: None)
    enc = load_encoded(out)
    assert enc.classes == list(DEFAULT_CLASSES)
    assert enc.genes == ["ENSG0004", "GA", "GB", "GC", "GD"]
    assert enc.samples["sample_id"].tolist() == ["S1", "S2", "S3", "S4", "S5", "S6"]
    assert enc.samples["y"].tolist() == [1, 0, 1, 0, 1, 0]          # S3 coded PLINK 2 = case
    assert enc.samples["sex"].tolist() == ["F", "M", "F", "M", "NA", "F"]
    assert enc.counts.shape == (6, 16 * 5)
    assert np.issubdtype(enc.counts.dtype, np.unsignedinteger)
    _check_counts(enc, EXPECTED)
    # the variant matrix: one column per counted ALT allele, in file order
    vt = enc.variant_table
    assert list(vt.columns) == ["chrom", "pos", "id", "ref", "alt", "gene", "class"]
    assert vt["alt"].tolist() == ["G", "A", "GTT", "C", "T", "T", "C", "G"]
    assert vt.loc[3, "gene"] == "GB;GC" and vt.loc[3, "class"] == "intronic;upstream"
    assert vt.loc[0, "id"] == "rs1"
    want_v = np.array([[1, 1, 1, 0, 0, 1, 0, 0],
                       [1, 0, 1, 1, 0, 0, 1, 0],
                       [0, 0, 1, 0, 1, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0, 0, 1],
                       [0, 0, 0, 1, 0, 0, 0, 0],
                       [0, 0, 0, 1, 0, 1, 0, 0]])
    assert enc.variants.dtype == np.uint8
    np.testing.assert_array_equal(enc.variants.toarray(), want_v)
    # summary
    assert s["n_samples"] == 6 and s["n_records"] == 9 and s["n_alleles"] == 10
    assert s["n_counted"] == 8 and s["n_genes"] == 5
    assert s["skipped"] == {"no_gene": 1, "synonymous": 1}
    assert s["class_counts"]["intronic"] == 1 and s["class_counts"]["upstream"] == 1
    assert sum(s["class_counts"].values()) == 9           # 8 alleles, one of them in two genes
    assert s["samples_join"]["sheet_not_in_vcf"] == ["S7"]
    assert json.loads((out / "summary.json").read_text())["n_counted"] == 8


def test_encode_dosage_and_pass_only(tmp_path):
    encode_vcf(VCF, SHEET, tmp_path / "d", count="dosage", progress=False, log=lambda m: None)
    _check_counts(load_encoded(tmp_path / "d"), EXPECTED_DOSAGE)
    s = encode_vcf(VCF, SHEET, tmp_path / "p", pass_only=True, progress=False, log=lambda m: None)
    assert s["n_filtered"] == 1 and s["n_counted"] == 7
    enc = load_encoded(tmp_path / "p")
    assert "GD" not in enc.genes
    exp = {k: v for k, v in EXPECTED.items() if k[1] != "GD"}
    _check_counts(enc, exp)


def test_encode_class_subset_and_sample_subset(tmp_path):
    classes = ["intronic", "nonsynonymous_SNV", "startloss"]
    s = encode_vcf(VCF, SHEET, tmp_path / "c", classes=classes, samples=["S2", "S5", "S6"],
                   progress=False, log=lambda m: None)
    enc = load_encoded(tmp_path / "c")
    assert enc.classes == classes and enc.genes == ["GA", "GB"]
    assert enc.samples["sample_id"].tolist() == ["S2", "S5", "S6"]
    assert s["skipped"]["class_not_listed"] == 6
    np.testing.assert_array_equal(enc.class_gene("intronic", "GB"), [1, 1, 1])
    np.testing.assert_array_equal(enc.class_gene("nonsynonymous_SNV", "GA"), [1, 0, 0])


def test_encode_rejects_bad_params(tmp_path):
    with pytest.raises(EpiflowError, match="count must be"):
        encode_vcf(VCF, SHEET, tmp_path / "x", count="sum", progress=False)
    with pytest.raises(EpiflowError, match="unknown class name"):
        encode_vcf(VCF, SHEET, tmp_path / "x", classes=["intronic", "synonymous"], progress=False)
    with pytest.raises(InputError, match="INFO/ANN missing from the VCF header"):
        encode_vcf(VCF, SHEET, tmp_path / "x", annotation="ann", progress=False, log=lambda m: None)
    assert not (tmp_path / "x").exists()


def _sheet(tmp_path, rows):
    p = tmp_path / "sheet.tsv"
    p.write_text("sample_id\tstatus\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    return p


def test_sheet_missing_vcf_samples(tmp_path):
    sheet = _sheet(tmp_path, [("S1", "case"), ("S2", "control"), ("S3", "case")])
    with pytest.raises(InputError) as ei:
        encode_vcf(VCF, sheet, tmp_path / "out", progress=False)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(sheet) in msg and "3 VCF sample(s)" in msg and "S4, S5, S6" in msg
    assert not (tmp_path / "out").exists()


def test_malformed_vcf_line_names_file_and_line(tmp_path):
    lines = VCF.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.vcf"
    # line 12 (the 3rd record) loses its last two sample columns
    n = 12
    cols = lines[n - 1].rstrip("\n").split("\t")
    lines[n - 1] = "\t".join(cols[:-2]) + "\n"
    bad.write_text("".join(lines))
    out = tmp_path / "out"
    with pytest.raises(InputError) as ei:
        encode_vcf(bad, SHEET, out, progress=False, log=lambda m: None)
    msg = str(ei.value)
    assert msg.startswith(f"{bad}:{n}: malformed record") and "13 columns, expected 15" in msg
    assert "\n" not in msg
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_vcf_without_gt(tmp_path):
    text = VCF.read_text().replace("\tGT:DP\t", "\tDP\t").replace("GT\t", "DP\t")
    text = text.replace('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n', "")
    text = "\n".join(ln if ln.startswith("#") else ln.replace("/", "").replace("|", "").replace(".", "1")
                     for ln in text.splitlines()) + "\n"
    p = tmp_path / "nogt.vcf"
    p.write_text(text)
    with pytest.raises(InputError, match="no FORMAT/GT"):
        encode_vcf(p, SHEET, tmp_path / "out", progress=False, log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_cli_errors_exit_2_without_outputs(tmp_path):
    lines = VCF.read_text().splitlines(keepends=True)
    lines[9] = lines[9].replace("\t100\t", "\t1o0\t")
    bad = tmp_path / "bad.vcf"
    bad.write_text("".join(lines))
    out, metrics = tmp_path / "enc", tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "encode", "--vcf", str(bad), "--samples",
                        str(SHEET), "--out", str(out), "--metrics", str(metrics), "--quiet",
                        "--params", str(_no_params(tmp_path))],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"epiflow encode: error: {bad}:10: malformed record: POS is not a number: '1o0'"
    assert not out.exists() and not metrics.exists()


def test_cli_encode_writes_metrics(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"encode:\n  vcf: {VCF}\n  samples: {SHEET}\n  count: dosage\n")
    out, metrics = tmp_path / "enc", tmp_path / "metrics" / "encode.json"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "encode", "--params", str(params),
                        "--out", str(out), "--metrics", str(metrics), "--quiet"],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr
    m = json.loads(metrics.read_text())
    assert m["count"] == "dosage" and m["n_counted"] == 8
    _check_counts(load_encoded(out), EXPECTED_DOSAGE)


def test_filters_gene_list_maf_call_rate(tmp_path):
    # gene list
    s = encode_vcf(VCF, SHEET, tmp_path / "g", genes=["GB", "GC"], progress=False, log=lambda m: None)
    enc = load_encoded(tmp_path / "g")
    assert enc.genes == ["GB", "GC"] and s["skipped"]["gene_not_listed"] == 5
    _check_counts(enc, {k: v for k, v in EXPECTED.items() if k[1] in ("GB", "GC")})
    # allele frequencies among called alleles (hand-counted, 6 samples):
    # chr1:100 G AC=4 AN=8 (S3 ./., S4 ./1, S5 0/.) -> 0.5; chr1:300 A AC=2 (0.2, kept), GTT AC=4, AN=10;
    # chr2:400 AC=4 AN=12; chr2:500 AC=1/12; chr2:600 AC=3/12; chr3:800 AC=1/12; chr3:900 AC=1/12
    s = encode_vcf(VCF, SHEET, tmp_path / "m", min_maf=0.2, progress=False, log=lambda m: None)
    vt = load_encoded(tmp_path / "m").variant_table
    assert list(zip(vt["pos"], vt["alt"])) == [(100, "G"), (300, "A"), (300, "GTT"), (400, "C"), (600, "T")]
    assert s["skipped"]["maf"] == 3
    s = encode_vcf(VCF, SHEET, tmp_path / "r", max_maf=0.1, progress=False, log=lambda m: None)
    vt = load_encoded(tmp_path / "r").variant_table
    assert list(vt["pos"]) == [500, 800, 900]
    # call rate: chr1:100 has 3 of 6 samples fully called, chr1:300 has 5 of 6
    s = encode_vcf(VCF, SHEET, tmp_path / "c", min_call_rate=0.9, progress=False, log=lambda m: None)
    vt = load_encoded(tmp_path / "c").variant_table
    assert 100 not in set(vt["pos"]) and 300 not in set(vt["pos"]) and len(vt) == 5
    assert s["skipped"]["call_rate"] == 3
    enc = load_encoded(tmp_path / "c")
    np.testing.assert_array_equal(enc.class_gene("intronic", "GB"), EXPECTED[("intronic", "GB")])


def test_encode_from_annovar_multianno(tmp_path):
    s = encode_vcf(VCF, SHEET, tmp_path / "a", annotation=f"annovar:{DATA / 'small.hg38_multianno.txt'}",
                   progress=False, log=lambda m: None)
    enc = load_encoded(tmp_path / "a")
    _check_counts(enc, EXPECTED)
    assert s["annotation"] == "ANNOVAR small.hg38_multianno.txt"
    assert s["skipped"] == {"intergenic": 1, "synonymous": 1}


def test_dosage_matrix_mask_and_mean(tmp_path):
    from pipelines.encode import dosage_matrix_vcf, save_dosage

    dm = dosage_matrix_vcf(VCF)
    # SNP alleles only (indels GTT, TCA>T, TCAG>T dropped): 100 G, 200 T, 300 A, 400 C, 700 A, 800 C, 900 G
    assert list(dm.snps["pos"]) == [100, 200, 300, 400, 700, 800, 900]
    assert dm.X.dtype == np.int8 and dm.X.shape == (6, 7)
    np.testing.assert_array_equal(dm.X[:, 0], [1, 2, -1, -1, -1, 0])     # ./1 and 0/. are missing here
    np.testing.assert_array_equal(dm.X[:, 2], [1, 0, 0, 1, -1, 0])       # 300 A of G>A,GTT
    np.testing.assert_array_equal(dm.mask[:, 0], [False, False, True, True, True, False])
    assert dm.snps.loc[0, "call_rate"] == pytest.approx(0.5) and dm.snps.loc[0, "af"] == pytest.approx(0.5)
    mean = dosage_matrix_vcf(VCF, missing="mean")
    assert mean.X.dtype == np.float32
    np.testing.assert_allclose(mean.X[:, 0], [1, 2, 1, 1, 1, 0])          # mean of 1, 2, 0 = 1
    np.testing.assert_allclose(mean.X[:, 2], [1, 0, 0, 1, 0.4, 0])
    flt = dosage_matrix_vcf(VCF, min_call_rate=0.9, min_maf=0.1)
    assert list(flt.snps["pos"]) == [200, 400, 700]          # 800, 900: AF 1/12 < 0.1
    save_dosage(dm, tmp_path / "d")
    np.testing.assert_array_equal(np.load(tmp_path / "d" / "X.npy"), dm.X)


def _no_params(d):
    """An empty params file: every setting at its default (a --params FILE must exist)."""
    p = d / "none.yaml"
    p.write_text("")
    return p


def _cli(tmp_path, *extra):
    out, metrics = tmp_path / "enc", tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "encode", "--out", str(out), "--metrics",
                        str(metrics), "--quiet", "--params", str(_no_params(tmp_path)), *map(str, extra)],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return r, out, metrics


def test_cli_snp_dosage(tmp_path):
    r, out, metrics = _cli(tmp_path, "--vcf", VCF, "--samples", SHEET, "--snp-dosage", tmp_path / "snp")
    assert r.returncode == 0, r.stderr
    X = np.load(tmp_path / "snp" / "X.npy")
    assert X.dtype == np.int8 and X.shape == (6, 7)
    assert json.loads(metrics.read_text())["snp_dosage"]["n_snps"] == 7


@pytest.mark.parametrize("case", ["truncated_gzip", "no_gt", "dup_sheet", "dup_vcf", "no_annotation",
                                  "sheet_missing"])
def test_cli_bad_inputs(tmp_path, case):
    import gzip as gz

    vcf, sheet = VCF, SHEET
    text = VCF.read_text()
    if case == "truncated_gzip":
        vcf = tmp_path / "t.vcf.gz"
        data = gz.compress((text + "".join(text.splitlines(keepends=True)[9:]) * 50).encode())
        vcf.write_bytes(data[: len(data) // 2])
        want = r"t.vcf.gz(:\d+: malformed record)?: (truncated or corrupt compressed file \((gzip|BGZF)\): )?the compressed file is truncated"
    elif case == "no_gt":
        vcf = tmp_path / "nogt.vcf"
        vcf.write_text(text.replace('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n', ""))
        want = r"nogt.vcf: VCF header declares no FORMAT/GT field"
    elif case == "dup_sheet":
        sheet = tmp_path / "s.tsv"
        sheet.write_text(SHEET.read_text() + "S2\tcase\tM\n")
        want = r"s.tsv:9: duplicate sample id 'S2' \(first on line 3\)"
    elif case == "dup_vcf":
        vcf = tmp_path / "dup.vcf"
        vcf.write_text(text.replace("\tS5\tS6\n", "\tS5\tS1\n"))
        want = r"dup.vcf: duplicate sample ids in the header: S1"
    elif case == "no_annotation":
        vcf = tmp_path / "noann.vcf"
        vcf.write_text("\n".join(ln for ln in text.splitlines() if "ID=CSQ" not in ln) + "\n")
        want = r"noann.vcf: annotation field INFO/CSQ or INFO/ANN missing from the VCF header"
    else:
        sheet = tmp_path / "s.tsv"
        sheet.write_text("sample_id\tstatus\nS1\tcase\nS2\tcontrol\n")
        want = r"s.tsv: 4 VCF sample\(s\) of .* missing from the sample sheet: S3, S4, S5, S6"
    r, out, metrics = _cli(tmp_path, "--vcf", vcf, "--samples", sheet)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("epiflow encode: error: ")
    import re
    assert re.search(want, last), last
    assert not out.exists() and not metrics.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".enc")]


@pytest.mark.parametrize("case", ["header_only", "all_filtered"])
def test_cohort_with_no_gene_is_an_error(tmp_path, case):
    """A header-only VCF, or filters that drop every allele, used to write an encoded cohort with
    0 genes and exit 0 (logreg then reported AUC 0.500 +- 0)."""
    from pipelines.errors import EpiflowError

    vcf = DATA / "small_csq.vcf"
    kw = {}
    if case == "header_only":
        text = "".join(line for line in vcf.read_text().splitlines(keepends=True) if line.startswith("#"))
        vcf = tmp_path / "header_only.vcf"
        vcf.write_text(text)
    else:
        kw = {"min_call_rate": 1.0, "min_maf": 0.5}   # no allele passes both
    with pytest.raises(EpiflowError, match="no variant was counted in any gene") as e:
        encode_vcf(vcf, DATA / "small_samples.tsv", tmp_path / "out", progress=False, log=lambda m: None, **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_alleles_the_annotation_does_not_name_are_tallied_apart(tmp_path):
    """An ALT allele that no CSQ entry names (its Allele string matches no ALT) is not an allele
    without a gene: it is tallied as allele_not_in_annotation; intergenic stays no_gene."""
    text = VCF.read_text().replace(
        "frameshift_variant|GTT|ENSG0001", "frameshift_variant|GTTT|ENSG0001")   # names no ALT now
    vcf = tmp_path / "in.vcf"
    vcf.write_text(text)
    s = encode_vcf(vcf, SHEET, tmp_path / "enc", progress=False, log=lambda m: None)
    assert s["skipped"] == {"no_gene": 1, "synonymous": 1, "allele_not_in_annotation": 1}
    assert s["n_counted"] == 7
