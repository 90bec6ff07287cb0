"""The SO-term table term by term, ANNOVAR precedence, and CSQ/ANN parsing."""
from __future__ import annotations

import pytest

from pathlib import Path

from pipelines import annotate as A
from pipelines.annotate import (DEFAULT_CLASSES, SO_TERMS, ann_layout, classify_terms, csq_layout,
                                fields_from_description, parse_info_annotation, vep_allele_strings)

# term -> expected class for an SNV (A>G), a 1-bp deletion (AT>A) and a 3-bp insertion (A>ATTT).
# Written out independently of the table in pipelines/annotate.py.
TERMS = {
    "transcript_ablation": ("nonsynonymous_SNV", "frameshift_deletion", "nonframeshift_insertion"),
    "exon_loss_variant": ("nonsynonymous_SNV", "frameshift_deletion", "nonframeshift_insertion"),
    "stop_gained": ("stopgain",) * 3,
    "frameshift_variant": ("frameshift_deletion", "frameshift_deletion", "frameshift_insertion"),
    "stop_lost": ("stoploss",) * 3,
    "start_lost": ("nonsynonymous_SNV", "frameshift_deletion", "nonframeshift_insertion"),
    "inframe_insertion": ("nonframeshift_insertion",) * 3,
    "conservative_inframe_insertion": ("nonframeshift_insertion",) * 3,
    "disruptive_inframe_insertion": ("nonframeshift_insertion",) * 3,
    "inframe_deletion": ("nonframeshift_deletion",) * 3,
    "conservative_inframe_deletion": ("nonframeshift_deletion",) * 3,
    "disruptive_inframe_deletion": ("nonframeshift_deletion",) * 3,
    "missense_variant": ("nonsynonymous_SNV",) * 3,
    "rare_amino_acid_variant": ("nonsynonymous_SNV",) * 3,
    "protein_altering_variant": ("nonsynonymous_SNV", "frameshift_deletion", "nonframeshift_insertion"),
    "coding_sequence_variant": ("nonsynonymous_SNV", "frameshift_deletion", "nonframeshift_insertion"),
    "incomplete_terminal_codon_variant": ("nonsynonymous_SNV", "frameshift_deletion",
                                          "nonframeshift_insertion"),
    "synonymous_variant": ("synonymous",) * 3,
    "stop_retained_variant": ("synonymous",) * 3,
    "start_retained_variant": ("synonymous",) * 3,
    "initiator_codon_variant": ("synonymous",) * 3,
    "non_canonical_start_codon": ("synonymous",) * 3,
    "splice_acceptor_variant": ("splicing",) * 3,
    "splice_donor_variant": ("splicing",) * 3,
    "splice_region_variant": ("splicing",) * 3,
    "splice_donor_5th_base_variant": ("splicing",) * 3,
    "splice_donor_region_variant": ("splicing",) * 3,
    "splice_polypyrimidine_tract_variant": ("intronic",) * 3,
    "non_coding_transcript_exon_variant": ("ncRNA_exonic",) * 3,
    "non_coding_exon_variant": ("ncRNA_exonic",) * 3,
    "mature_miRNA_variant": ("ncRNA_exonic",) * 3,
    "miRNA": ("ncRNA_exonic",) * 3,
    "non_coding_transcript_variant": ("ncRNA_exonic",) * 3,
    "nc_transcript_variant": ("ncRNA_exonic",) * 3,
    "5_prime_UTR_variant": ("UTR5",) * 3,
    "5_prime_UTR_premature_start_codon_gain_variant": ("UTR5",) * 3,
    "5_prime_UTR_truncation": ("UTR5",) * 3,
    "3_prime_UTR_variant": ("UTR3",) * 3,
    "3_prime_UTR_truncation": ("UTR3",) * 3,
    "intron_variant": ("intronic",) * 3,
    "conserved_intron_variant": ("intronic",) * 3,
    "upstream_gene_variant": ("upstream",) * 3,
    "downstream_gene_variant": ("downstream",) * 3,
    "intergenic_variant": ("intergenic",) * 3,
    "intergenic_region": ("intergenic",) * 3,
    "conserved_intergenic_variant": ("intergenic",) * 3,
    "regulatory_region_variant": ("intergenic",) * 3,
    "regulatory_region_ablation": ("intergenic",) * 3,
    "regulatory_region_amplification": ("intergenic",) * 3,
    "TF_binding_site_variant": ("intergenic",) * 3,
    "TFBS_ablation": ("intergenic",) * 3,
    "TFBS_amplification": ("intergenic",) * 3,
    "intragenic_variant": ("unknown",) * 3,
    "gene_variant": ("unknown",) * 3,
    "transcript_variant": ("unknown",) * 3,
    "exon_variant": ("unknown",) * 3,
    "gene_fusion": ("unknown",) * 3,
    "bidirectional_gene_fusion": ("unknown",) * 3,
    "transcript_amplification": ("unknown",) * 3,
    "sequence_variant": ("unknown",) * 3,
    # modifiers alone name no region
    "NMD_transcript_variant": ("unknown",) * 3,
    "coding_transcript_variant": ("unknown",) * 3,
    "feature_elongation": ("unknown",) * 3,
    "feature_truncation": ("unknown",) * 3,
    "sequence_feature": ("unknown",) * 3,
    "protein_protein_contact": ("unknown",) * 3,
    "structural_interaction_variant": ("unknown",) * 3,
}
ALLELES = (("A", "G"), ("AT", "A"), ("A", "ATTT"))
DATA = Path(__file__).parent / "data" / "vcf"


def test_default_classes_match_params(repo_root):
    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert list(DEFAULT_CLASSES) == params["encode"]["classes"]
    assert len(DEFAULT_CLASSES) == 16


def test_table_covers_exactly_the_tested_terms():
    assert set(SO_TERMS) == set(TERMS)


@pytest.mark.parametrize("term", sorted(TERMS))
def test_term(term):
    for (ref, alt), want in zip(ALLELES, TERMS[term]):
        got = classify_terms([term], ref, alt).cls
        assert got == want, f"{term} {ref}>{alt}: {got} != {want}"


def test_startloss_when_listed():
    classes = list(DEFAULT_CLASSES) + ["startloss"]
    assert classify_terms(["start_lost"], "A", "G", classes=classes).cls == "startloss"
    assert classify_terms(["start_lost", "missense_variant"], "A", "G", classes=classes).cls == "startloss"


@pytest.mark.parametrize("terms,ref,alt,want", [
    ("missense_variant&splice_region_variant", "A", "G", "nonsynonymous_SNV"),
    ("splice_region_variant&intron_variant", "A", "G", "splicing"),
    ("synonymous_variant&splice_region_variant", "A", "G", "synonymous"),     # exonic first: not counted
    ("splice_donor_variant&non_coding_transcript_variant", "A", "G", "ncRNA_splicing"),
    ("intron_variant&non_coding_transcript_variant", "A", "G", "ncRNA_intronic"),
    ("non_coding_transcript_exon_variant&intron_variant", "A", "G", "ncRNA_exonic"),
    ("5_prime_UTR_variant&intron_variant", "A", "G", "UTR5"),
    ("3_prime_UTR_variant&NMD_transcript_variant", "A", "G", "UTR3"),
    ("intron_variant&upstream_gene_variant", "A", "G", "intronic"),
    ("upstream_gene_variant&downstream_gene_variant", "A", "G", "upstream"),
    ("stop_gained&frameshift_variant", "AT", "A", "frameshift_deletion"),
    ("stop_gained&missense_variant", "A", "T", "stopgain"),
    ("stop_lost&inframe_deletion", "ATTT", "A", "stoploss"),
    ("inframe_insertion&splice_region_variant", "A", "ATTT", "nonframeshift_insertion"),
    ("frameshift_variant&splice_donor_variant", "A", "AT", "frameshift_insertion"),
    ("intergenic_variant", "A", "G", "intergenic"),
    ("missense_variant&no_such_term", "A", "G", "nonsynonymous_SNV"),
])
def test_precedence(terms, ref, alt, want):
    assert classify_terms(terms.split("&"), ref, alt).cls == want


def test_unknown_terms_reported():
    r = classify_terms(["made_up_variant"], "A", "G")
    assert r.cls is None and r.unknown_terms == ("made_up_variant",)
    r = classify_terms(["missense_variant", "made_up_variant"], "A", "G")
    assert r.cls == "nonsynonymous_SNV" and r.unknown_terms == ("made_up_variant",)


def test_biotype_makes_ncRNA():
    assert classify_terms(["intron_variant"], "A", "G", biotype="lncRNA").cls == "ncRNA_intronic"
    assert classify_terms(["intron_variant"], "A", "G", biotype="protein_coding").cls == "intronic"
    assert classify_terms(["splice_acceptor_variant"], "A", "G", biotype="miRNA").cls == "ncRNA_splicing"


def test_precedence_order_is_annovars():
    r = A.RANK
    groups = [["frameshift_insertion", "stopgain", "nonsynonymous_SNV", "synonymous"], ["splicing"],
              ["ncRNA_exonic", "ncRNA_splicing", "ncRNA_intronic"], ["UTR5", "UTR3"], ["intronic"],
              ["upstream", "downstream"], ["intergenic"]]
    for hi, lo in zip(groups, groups[1:]):
        assert max(r[c] for c in hi) < min(r[c] for c in lo)


def test_fields_from_description():
    vep = ("Consequence annotations from Ensembl VEP. Format: "
           "Allele|Consequence|IMPACT|SYMBOL|Gene|Feature_type|Feature|BIOTYPE")
    assert fields_from_description(vep)[:4] == ["Allele", "Consequence", "IMPACT", "SYMBOL"]
    snpeff = ("Functional annotations: 'Allele | Annotation | Annotation_Impact | Gene_Name | Gene_ID | "
              "Feature_Type | Feature_ID | Transcript_BioType | Rank | HGVS.c | HGVS.p | "
              "cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance | "
              "ERRORS / WARNINGS / INFO' ")
    f = fields_from_description(snpeff)
    assert f[0] == "Allele" and f[3] == "Gene_Name" and len(f) == 16
    assert fields_from_description("no format here") is None


def test_csq_layout_requires_fields():
    with pytest.raises(ValueError, match="Consequence"):
        csq_layout(["Allele", "SYMBOL"])
    with pytest.raises(ValueError, match="SYMBOL or Gene"):
        csq_layout(["Allele", "Consequence", "IMPACT"])


def test_vep_allele_strings():
    assert vep_allele_strings("A", ["G"]) == ["G"]
    assert vep_allele_strings("AT", ["A"]) == ["-"]
    assert vep_allele_strings("A", ["AT", "ATT"]) == ["T", "TT"]
    assert vep_allele_strings("G", ["A", "GTT"]) == ["A", "GTT"]
    assert vep_allele_strings("ACG", ["A", "ACGCG"]) == ["-", "CGCG"]


def test_parse_csq_multi_allelic_two_genes():
    lay = csq_layout(["Gene", "Allele", "SYMBOL", "Consequence"])
    value = ("E1|T|G1|intron_variant,E1|T|G1|missense_variant,E2|T||upstream_gene_variant,"
             "E1|TT|G1|frameshift_variant,E3|TT|G3|synonymous_variant")
    per, unk = parse_info_annotation(value, lay, "A", ["AT", "ATT"])
    # VEP trims the shared padding base: AT -> T, ATT -> TT
    assert per == {0: {"G1": "nonsynonymous_SNV", "E2": "upstream"},
                   1: {"G1": "frameshift_insertion", "G3": "synonymous"}}
    assert unk == set()


def test_parse_csq_allele_num():
    lay = csq_layout(["Allele", "Consequence", "SYMBOL", "ALLELE_NUM"])
    per, _ = parse_info_annotation("X|missense_variant|G1|2,Y|stop_gained|G1|1", lay, "A", ["C", "G"])
    assert per == {1: {"G1": "nonsynonymous_SNV"}, 0: {"G1": "stopgain"}}


def test_parse_ann():
    fields = list(A.ANN_DEFAULT_FIELDS)
    lay = ann_layout(fields)
    def entry(allele, ann, gene, biotype="protein_coding"):
        return "|".join([allele, ann, "MODERATE", gene, gene + "_id", "transcript", "T1", biotype,
                         "1/2", "c.1A>G", "", "", "", "", "", ""])
    value = ",".join([entry("G", "missense_variant&splice_region_variant", "G1"),
                      entry("T", "intron_variant", "G2", "lincRNA"),
                      entry("T", "upstream_gene_variant", "G1")])
    per, _ = parse_info_annotation(value, lay, "A", ["G", "T"])
    assert per == {0: {"G1": "nonsynonymous_SNV"}, 1: {"G2": "ncRNA_intronic", "G1": "upstream"}}


def test_parse_rejects_short_entries():
    lay = csq_layout(["Allele", "Consequence", "IMPACT", "SYMBOL"])
    with pytest.raises(ValueError, match="fields"):
        parse_info_annotation("G|missense_variant", lay, "A", ["G"])


# ---------------------------------------------------------------- ANNOVAR multianno
def test_annovar_key():
    from pipelines.annotate import annovar_key

    assert annovar_key("chr1", 100, "A", "G") == ("1", 100, "A", "G")
    assert annovar_key("1", 500, "TCA", "T") == ("1", 501, "CA", "-")
    assert annovar_key("1", 300, "G", "GTT") == ("1", 300, "-", "TT")
    assert annovar_key("X", 10, "AC", "GT") == ("X", 10, "AC", "GT")


def test_multianno_classes(tmp_path):
    from pipelines.annotate import MultiannoAnnotator

    m = MultiannoAnnotator(DATA / "small.hg38_multianno.txt")
    assert m.table[("1", 100, "A", "G")] == [("GA", "nonsynonymous_SNV")]
    assert m.table[("1", 200, "C", "T")] == [("GA", "synonymous")]
    assert m.table[("1", 300, "-", "TT")] == [("GA", "frameshift_insertion")]
    assert m.table[("2", 400, "T", "C")] == [("GB", "intronic"), ("GC", "upstream")]
    assert m.table[("3", 700, "C", "A")] == [("GX", "intergenic"), ("GY", "intergenic")]
    assert m.table[("3", 900, "T", "G")] == [("ENSG0004", "ncRNA_intronic")]
    p = tmp_path / "x_multianno.txt"
    p.write_text("Chr\tStart\tEnd\tRef\tAlt\tFunc.refGene\tGene.refGene\tExonicFunc.refGene\n"
                 "1\t5\t5\tA\tG\texonic;splicing\tG1\tnonsynonymous SNV\n"
                 "1\t6\t6\tA\tG\tsplicing\tG1\t.\n"
                 "1\t7\t9\tACG\tTTT\texonic\tG1\tnonframeshift substitution\n")
    m = MultiannoAnnotator(p)
    assert m.table[("1", 5, "A", "G")] == [("G1", "nonsynonymous_SNV")]
    assert m.table[("1", 6, "A", "G")] == [("G1", "splicing")]
    assert m.table[("1", 7, "ACG", "TTT")] == [("G1", "nonsynonymous_SNV")]


def test_multianno_missing_column(tmp_path):
    from pipelines.annotate import MultiannoAnnotator
    from pipelines.errors import InputError

    p = tmp_path / "bad_multianno.txt"
    p.write_text("Chr\tStart\tEnd\tRef\tAlt\tFunc.refGene\tGene.refGene\n1\t5\t5\tA\tG\texonic\tG1\n")
    with pytest.raises(InputError, match=r"bad_multianno.txt:1: annotation column\(s\) ExonicFunc.refGene missing"):
        MultiannoAnnotator(p)
