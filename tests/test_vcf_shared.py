"""Every file of ../shared/data/vcf (real callers' VCFs and format edge cases) is either read
correctly or refused with a clear message; which one is asserted per file.

"Read correctly" is checked against an independent plain-text parse of the same file: the number
of records, and per record and ALT allele the set of samples whose GT holds that allele.
"""
from __future__ import annotations

import gzip
import re

import pytest

from pipelines.errors import InputError
from pipelines.io.vcf import VcfReader

# file -> ("read", n_records, n_samples, genotypes?) or ("refused", message regex)
EXPECTED = {
    "1kg.sites.vcf.gz": ("read", 171, 0, "no sample columns"),
    "1kg.vcf.gz": ("read", 381, 629, True),
    "FT.vcf.gz": ("read", 10, 5, True),                       # haploid calls on contig 'ref'
    "bad-info-character.vcf": ("read", 1, 1, True),
    "bcftools.vcf.gz": ("read", 752, 1, True),                # ALT '.' records without GT
    "contig_idonly.vcf": ("read", 0, 0, "no sample columns"),
    "example-4.0.vcf": ("read", 6, 3, True),
    "example-4.1-bnd.vcf": ("refused", r"#CHROM header line is not tab-separated"),
    "example-4.1-info-multiple-values.vcf": ("refused", r"FORMAT column but no sample columns"),
    "example-4.1-ploidy.vcf": ("read", 2, 3, True),           # haploid X and a triploid call
    "example-4.1-sv.vcf": ("read", 6, 1, True),
    "example-4.1.vcf": ("read", 5, 3, True),
    "example-4.2.vcf.gz": ("refused", r"#CHROM header line is not tab-separated"),
    "freebayes.vcf.gz": ("read", 104, 7, True),
    "gatk.vcf.gz": ("read", 37, 7, True),
    "gatk_26_meta.vcf": ("refused", r"FORMAT column but no sample columns"),
    "gonl.chr20.release4.gtc.vcf.gz": ("read", 7, 0, "no sample columns"),
    "info-type-character.vcf": ("read", 1, 1, True),
    "issue-140-file1.vcf": ("read", 17, 1, True),
    "issue-140-file2.vcf": ("read", 16, 1, True),
    "issue-140-file3.vcf": ("read", 7, 1, True),
    "issue-16.vcf": ("refused", r"issue-16.vcf:20: malformed record: 9 columns, expected 12"),
    "issue-201.vcf.gz": ("read", 3, 0, "no sample columns"),
    "issue-214.vcf": ("read", 2, 2, True),                    # '*' REF/ALT, haploid calls
    "issue-254.vcf": ("refused", r"issue-254.vcf:9: malformed record: htslib rejected the sample data "
                                 r"\(FORMAT GT:AO\)"),
    "issue_49.vcf.gz": ("refused", r"#CHROM header line is not tab-separated"),
    "metadata-whitespace.vcf.gz": ("refused", r"header line 42 contains a tab"),
    "mixed-filtering.vcf": ("read", 5, 3, True),
    "null_genotype_mono.vcf.gz": ("read", 1, 1, True),
    "parse-meta-line.vcf": ("read", 1, 1, True),
    "samples-space.vcf": ("read", 2, 3, True),
    "samtools.vcf": ("read", 11, 1, True),
    "strelka.vcf.gz": ("refused", r"strelka.vcf.gz:55: malformed record: sample column 2 is empty"),
    "string_as_flag.vcf": ("read", 4, 1, "declares no FORMAT/GT"),
    "tb.vcf.gz": ("read", 5, 3, True),
    "uncalled_genotypes.vcf": ("read", 4, 3, True),
    "walk_left.vcf": ("read", 6, 3, True),
    "walk_refcall.vcf": ("read", 4, 3, True),
}


def _text_carriers(path):
    """Independent reference: per record, per ALT index k>=1, the set of sample indices with k in GT."""
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            alts = [] if cols[4] == "." else cols[4].split(",")
            fmt = cols[8].split(":") if len(cols) > 8 else []
            per = [set() for _ in alts]
            if alts and "GT" in fmt:
                gi = fmt.index("GT")
                for s, val in enumerate(cols[9:]):
                    parts = val.split(":")
                    gt = parts[gi] if gi < len(parts) else "."
                    for a in re.split(r"[/|]", gt):
                        if a.isdigit() and int(a) > 0:
                            per[int(a) - 1].add(s)
            out.append([sorted(p) for p in per])
    return out


def _files(shared_data):
    d = shared_data / "vcf"
    return sorted(p for p in d.iterdir() if not p.name.endswith((".tbi", ".csi")) and p.name != "COPYRIGHT.debian")


def test_every_file_is_listed(shared_data):
    assert {p.name for p in _files(shared_data)} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_vcf(shared_data, name):
    path = shared_data / "vcf" / name
    want = EXPECTED[name]
    if want[0] == "refused":
        with pytest.raises(InputError) as ei:
            r = VcfReader(path)
            for s in r:
                s.calls()
        msg = str(ei.value)
        assert "\n" not in msg and str(path) in msg
        assert re.search(want[1], msg), msg
        return
    _, n_records, n_samples, genotypes = want
    r = VcfReader(path)
    assert r.n_samples == n_samples
    if genotypes is not True:
        with pytest.raises(InputError, match=genotypes):
            r.require_gt()
        assert sum(1 for _ in r) == n_records
        return
    r.require_gt()
    got = [[idx.tolist() for idx, _ in s.calls()] for s in r]
    assert len(got) == n_records
    assert got == _text_carriers(path)


def test_haploid_and_polyploid_reported(shared_data):
    r = VcfReader(shared_data / "vcf" / "example-4.1-ploidy.vcf")
    calls = [[(i.tolist(), v.tolist()) for i, v in s.calls(dosage=True)] for s in r]
    # X: NA00001 '0|1' ... (file): haploid calls count one copy
    assert r.haploid_calls == {"X": 4} and r.polyploid_calls == 1
    assert all(max(v, default=0) <= 3 for rec in calls for _, v in rec)


def test_1kg_region_and_samples(shared_data, tmp_path):
    import shutil
    import subprocess

    if shutil.which("tabix") is None or shutil.which("bgzip") is None:
        pytest.skip("no tabix/bgzip")
    src = shared_data / "vcf" / "1kg.vcf.gz"          # plain gzip: recompress with bgzip to index
    dst = tmp_path / "1kg.vcf.gz"
    with gzip.open(src, "rb") as fh:
        dst.write_bytes(subprocess.run(["bgzip", "-c"], input=fh.read(), capture_output=True, check=True).stdout)
    subprocess.run(["tabix", "-f", "-p", "vcf", str(dst)], check=True, capture_output=True)
    full = VcfReader(dst)
    keep = full.samples[10:20]
    allrecs = [(s.pos, [i.tolist() for i, _ in s.calls()]) for s in full]
    lo, hi = allrecs[100][0], allrecs[200][0]
    sub = VcfReader(dst, regions=[f"2:{lo}-{hi}"], samples=keep)
    got = [(s.pos, [i.tolist() for i, _ in s.calls()]) for s in sub]
    want = [(p, [[j - 10 for j in idx if 10 <= j < 20] for idx in per]) for p, per in allrecs if lo <= p <= hi]
    assert got == want and len(got) >= 101


@pytest.mark.parametrize("name", ["1kg.vcf.gz", "example-4.1-ploidy.vcf", "FT.vcf.gz", "freebayes.vcf.gz",
                                  "uncalled_genotypes.vcf"])
@pytest.mark.parametrize("dosage", [False, True])
def test_batch_decoder_equals_site_calls(shared_data, name, dosage):
    """The vectorised batch decoder of the encoder gives what Site.calls gives record by record."""
    import numpy as np

    from pipelines.io.vcf import CarrierBatch

    path = shared_data / "vcf" / name
    want = {}
    r1 = VcfReader(path)
    col = 0
    for s in r1:
        for idx, vals in s.calls(dosage):
            for i, v in zip(idx.tolist(), vals.tolist()):
                want[(i, col)] = v
            col += 1
    r2 = VcfReader(path)
    b = CarrierBatch(r2, dosage=dosage, size=7)
    col = 0
    for v, index in r2.raw():
        if not v.ALT:
            continue
        b.add(v, index, [-1] + list(range(col, col + len(v.ALT))))
        col += len(v.ALT)
    samp, cols, vals = b.triples()
    got = {(int(i), int(c)): int(x) for i, c, x in zip(samp, cols, vals)}
    assert got == want
    assert r2.haploid_calls == r1.haploid_calls and r2.polyploid_calls == r1.polyploid_calls
