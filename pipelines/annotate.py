"""Variant annotation -> (gene, functional class), following ANNOVAR's region precedence.

Every annotation source (VEP ``CSQ``, snpEff ``ANN``, ANNOVAR ``*_multianno.txt``, the built-in
positional annotator) ends in the same place: for one ALT allele, a set of ``(gene, class)`` pairs,
one class per gene, picked by :data:`PRECEDENCE` when the allele hits several regions of that gene
(``missense_variant&splice_region_variant`` -> ``nonsynonymous_SNV``).

Sequence Ontology terms (the VEP / snpEff vocabulary) map to classes through one table,
:data:`SO_TERMS`. A few terms name a *kind* of change rather than a class; they are resolved from
the allele lengths of the VCF record (:func:`coding_class`):

* ``CODING``: any protein-coding change (``coding_sequence_variant``, ``protein_altering_variant``,
  ``exon_loss_variant``, ``transcript_ablation``): equal lengths -> ``nonsynonymous_SNV``,
  length change divisible by 3 -> nonframeshift insertion/deletion, otherwise frameshift.
* ``FRAMESHIFT``: ``frameshift_variant``: insertion if ALT is longer than REF, else deletion.
* ``STARTLOSS``: ``start_lost``: ``startloss`` where the class list has it (ANNOVAR >= 2017),
  otherwise resolved as ``CODING`` (older ANNOVAR called these nonsynonymous).

Transcript context: the terms ``non_coding_transcript_variant`` / ``non_coding_transcript_exon_variant``
/ ``mature_miRNA_variant`` (or a non-coding biotype, where the source gives one) turn intronic,
splicing and exonic hits into ``ncRNA_intronic`` / ``ncRNA_splicing`` / ``ncRNA_exonic``.

The splice-region family of VEP (``splice_region_variant``, ``splice_donor_5th_base_variant``,
``splice_donor_region_variant``) counts as ``splicing`` (ANNOVAR's own window is +-2 bp; VEP's
region is wider); the polypyrimidine tract is intronic. Because exonic outranks splicing,
``synonymous_variant&splice_region_variant`` is exonic synonymous and is not counted, as ANNOVAR
(without ``-exonicsplicing``) reports it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# The 16 classes of the IBD paper (names as in params.yaml ``encode.classes``).
DEFAULT_CLASSES: tuple[str, ...] = (
    "UTR3", "UTR5", "splicing", "upstream", "downstream", "intronic", "ncRNA_intronic",
    "ncRNA_exonic", "ncRNA_splicing", "nonframeshift_insertion", "frameshift_insertion",
    "nonframeshift_deletion", "frameshift_deletion", "stoploss", "stopgain", "nonsynonymous_SNV",
)

# Classes that are recognised but never counted.
SYNONYMOUS = "synonymous"
INTERGENIC = "intergenic"
UNKNOWN = "unknown"
NOT_COUNTED = frozenset({SYNONYMOUS, INTERGENIC, UNKNOWN})

# Markers resolved from allele lengths (see module docstring).
CODING = "@coding"
FRAMESHIFT = "@frameshift"
STARTLOSS = "@startloss"
# Context terms: say "this transcript is non-coding" without naming a region themselves.
NC_CONTEXT = "@ncRNA"

# ANNOVAR precedence, best first: exonic (ordered as ANNOVAR's ExonicFunc: frameshift > stop >
# nonframeshift > nonsynonymous > synonymous) > splicing > ncRNA > UTR > intronic >
# upstream/downstream > intergenic > unknown.
PRECEDENCE: tuple[str, ...] = (
    "frameshift_insertion", "frameshift_deletion", "stopgain", "stoploss", "startloss",
    "nonframeshift_insertion", "nonframeshift_deletion", "nonsynonymous_SNV", SYNONYMOUS,
    "splicing",
    "ncRNA_exonic", "ncRNA_splicing", "ncRNA_intronic",
    "UTR5", "UTR3",
    "intronic",
    "upstream", "downstream",
    INTERGENIC,
    UNKNOWN,
)
RANK = {c: i for i, c in enumerate(PRECEDENCE)}

# Sequence Ontology term -> class (or marker). ``None``: a modifier term that names no region
# (it neither counts nor blocks a class named by another term of the same annotation).
# Covers the VEP consequence list (Ensembl 110) and the snpEff 5 annotation vocabulary.
SO_TERMS: dict[str, str | None] = {
    # --- exonic, protein coding
    "transcript_ablation": CODING,
    "exon_loss_variant": CODING,                      # snpEff
    "stop_gained": "stopgain",
    "frameshift_variant": FRAMESHIFT,
    "stop_lost": "stoploss",
    "start_lost": STARTLOSS,
    "inframe_insertion": "nonframeshift_insertion",
    "conservative_inframe_insertion": "nonframeshift_insertion",   # snpEff
    "disruptive_inframe_insertion": "nonframeshift_insertion",     # snpEff
    "inframe_deletion": "nonframeshift_deletion",
    "conservative_inframe_deletion": "nonframeshift_deletion",     # snpEff
    "disruptive_inframe_deletion": "nonframeshift_deletion",       # snpEff
    "missense_variant": "nonsynonymous_SNV",
    "rare_amino_acid_variant": "nonsynonymous_SNV",                # snpEff
    "protein_altering_variant": CODING,
    "coding_sequence_variant": CODING,
    "incomplete_terminal_codon_variant": CODING,
    "synonymous_variant": SYNONYMOUS,
    "stop_retained_variant": SYNONYMOUS,
    "start_retained_variant": SYNONYMOUS,
    "initiator_codon_variant": SYNONYMOUS,            # snpEff: start codon -> alternative start
    "non_canonical_start_codon": SYNONYMOUS,          # snpEff
    # --- splicing
    "splice_acceptor_variant": "splicing",
    "splice_donor_variant": "splicing",
    "splice_region_variant": "splicing",
    "splice_donor_5th_base_variant": "splicing",
    "splice_donor_region_variant": "splicing",
    "splice_polypyrimidine_tract_variant": "intronic",
    # --- non-coding transcripts
    "non_coding_transcript_exon_variant": "ncRNA_exonic",
    "non_coding_exon_variant": "ncRNA_exonic",        # older VEP / snpEff
    "mature_miRNA_variant": "ncRNA_exonic",
    "miRNA": "ncRNA_exonic",                          # snpEff
    "non_coding_transcript_variant": NC_CONTEXT,
    "nc_transcript_variant": NC_CONTEXT,              # older VEP
    # --- UTR
    "5_prime_UTR_variant": "UTR5",
    "5_prime_UTR_premature_start_codon_gain_variant": "UTR5",     # snpEff
    "5_prime_UTR_truncation": "UTR5",                 # snpEff
    "3_prime_UTR_variant": "UTR3",
    "3_prime_UTR_truncation": "UTR3",                 # snpEff
    # --- intronic
    "intron_variant": "intronic",
    "conserved_intron_variant": "intronic",           # snpEff
    # --- flanking
    "upstream_gene_variant": "upstream",
    "downstream_gene_variant": "downstream",
    # --- not counted
    "intergenic_variant": INTERGENIC,
    "intergenic_region": INTERGENIC,                  # snpEff
    "conserved_intergenic_variant": INTERGENIC,       # snpEff
    "regulatory_region_variant": INTERGENIC,
    "regulatory_region_ablation": INTERGENIC,
    "regulatory_region_amplification": INTERGENIC,
    "TF_binding_site_variant": INTERGENIC,
    "TFBS_ablation": INTERGENIC,
    "TFBS_amplification": INTERGENIC,
    "intragenic_variant": UNKNOWN,                    # snpEff: inside a gene, no transcript model
    "gene_variant": UNKNOWN,
    "transcript_variant": UNKNOWN,
    "exon_variant": UNKNOWN,
    "gene_fusion": UNKNOWN,
    "bidirectional_gene_fusion": UNKNOWN,
    "transcript_amplification": UNKNOWN,
    "sequence_variant": UNKNOWN,
    # --- modifiers naming no region
    "NMD_transcript_variant": None,
    "coding_transcript_variant": None,
    "feature_elongation": None,
    "feature_truncation": None,
    "sequence_feature": None,                         # snpEff
    "protein_protein_contact": None,                  # snpEff
    "structural_interaction_variant": None,           # snpEff
}

# Biotypes (VEP BIOTYPE / snpEff Transcript_BioType) of protein-coding transcripts. Any other
# non-empty biotype is treated as a non-coding transcript.
CODING_BIOTYPES = frozenset({
    "protein_coding", "nonsense_mediated_decay", "non_stop_decay", "polymorphic_pseudogene",
    "protein_coding_LoF", "IG_C_gene", "IG_D_gene", "IG_J_gene", "IG_V_gene", "TR_C_gene",
    "TR_D_gene", "TR_J_gene", "TR_V_gene", "Coding", "coding",
})
_NC_REGION = {"intronic": "ncRNA_intronic", "splicing": "ncRNA_splicing",
              "nonsynonymous_SNV": "ncRNA_exonic", SYNONYMOUS: "ncRNA_exonic"}


def coding_class(marker: str, ref: str, alt: str, classes=DEFAULT_CLASSES) -> str:
    """Resolve a length-dependent marker to a class from the VCF REF/ALT alleles."""
    diff = len(alt) - len(ref)
    if marker == STARTLOSS:
        if "startloss" in classes:
            return "startloss"
        marker = CODING
    if marker == FRAMESHIFT:
        return "frameshift_insertion" if diff > 0 else "frameshift_deletion"
    if diff == 0:
        return "nonsynonymous_SNV"
    kind = "insertion" if diff > 0 else "deletion"
    return f"{'nonframeshift' if diff % 3 == 0 else 'frameshift'}_{kind}"


@dataclass(frozen=True)
class TermResult:
    """The class picked for one term list, or ``None`` when no term was recognised."""

    cls: str | None
    unknown_terms: tuple[str, ...] = ()


def classify_terms(terms, ref: str = "", alt: str = "", *, biotype: str = "",
                   classes=DEFAULT_CLASSES) -> TermResult:
    """The class of one (allele, transcript) from its SO terms, e.g. ``["missense_variant",
    "splice_region_variant"]`` -> ``nonsynonymous_SNV``.

    Returns ``TermResult(None, unknown)`` when no term is in :data:`SO_TERMS` (the caller counts
    these as skipped for an unknown consequence).
    """
    best = None
    nc = bool(biotype) and biotype not in CODING_BIOTYPES
    unknown = []
    found = False
    for t in terms:
        t = t.strip()
        if not t:
            continue
        if t not in SO_TERMS:
            unknown.append(t)
            continue
        found = True
        c = SO_TERMS[t]
        if c is None:
            continue
        if c == NC_CONTEXT:
            nc = True
            continue
        if c[0] == "@":
            c = coding_class(c, ref, alt, classes)
        if best is None or RANK[c] < RANK[best]:
            best = c
    if not found:
        return TermResult(None, tuple(unknown))
    if best is None:
        best = "ncRNA_exonic" if nc else UNKNOWN
    elif nc and best in _NC_REGION:
        best = _NC_REGION[best]
    elif nc and RANK[best] < RANK["splicing"]:
        # a coding-exon class on a non-coding transcript: ANNOVAR reports ncRNA_exonic
        best = "ncRNA_exonic"
    return TermResult(best, tuple(unknown))


def pick(a: str, b: str) -> str:
    """The higher-precedence of two classes (for two transcripts of one gene)."""
    return a if RANK[a] <= RANK[b] else b


# ---------------------------------------------------------------- annotation strings in VCF INFO
_FORMAT_RE = re.compile(r"Format:\s*'?([^\"']+)'?", re.IGNORECASE)
ANN_DEFAULT_FIELDS = ("Allele", "Annotation", "Annotation_Impact", "Gene_Name", "Gene_ID",
                      "Feature_Type", "Feature_ID", "Transcript_BioType", "Rank", "HGVS.c",
                      "HGVS.p", "cDNA.pos / cDNA.length", "CDS.pos / CDS.length",
                      "AA.pos / AA.length", "Distance", "ERRORS / WARNINGS / INFO")


def fields_from_description(description: str, *, default=None) -> list[str] | None:
    """Field names of a ``|``-separated INFO annotation from its header Description.

    VEP writes ``... Format: Allele|Consequence|IMPACT|SYMBOL|Gene|...``; snpEff writes
    ``Functional annotations: 'Allele | Annotation | ... '``.
    """
    desc = description.strip().strip('"')
    m = _FORMAT_RE.search(desc)
    if m:
        text = m.group(1)
    elif ":" in desc and "|" in desc.split(":", 1)[1]:
        text = desc.split(":", 1)[1]
    else:
        return list(default) if default is not None else None
    names = [f.strip().strip("'\" ") for f in text.split("|")]
    return names if len(names) > 1 else (list(default) if default is not None else None)


@dataclass(frozen=True)
class InfoLayout:
    """Where the allele, terms, gene and biotype sit in one ``|``-separated annotation."""

    key: str              # INFO key (CSQ or ANN)
    allele: int
    terms: int
    genes: tuple[int, ...]   # first non-empty wins (SYMBOL, then Gene)
    biotype: int | None
    allele_num: int | None   # VEP --allele_number
    n_fields: int


def csq_layout(fields: list[str], key: str = "CSQ") -> InfoLayout:
    idx = {f: i for i, f in enumerate(fields)}
    missing = [f for f in ("Allele", "Consequence") if f not in idx]
    if missing or not ({"SYMBOL", "Gene"} & idx.keys()):
        need = missing + ([] if {"SYMBOL", "Gene"} & idx.keys() else ["SYMBOL or Gene"])
        raise ValueError(f"{key} Format lacks {', '.join(need)} (has {'|'.join(fields)})")
    genes = tuple(idx[f] for f in ("SYMBOL", "Gene") if f in idx)
    return InfoLayout(key, idx["Allele"], idx["Consequence"], genes, idx.get("BIOTYPE"),
                      idx.get("ALLELE_NUM"), len(fields))


def ann_layout(fields: list[str], key: str = "ANN") -> InfoLayout:
    norm = {f.replace(" ", "").lower(): i for i, f in enumerate(fields)}
    def get(*names):
        for n in names:
            if n.lower() in norm:
                return norm[n.lower()]
        return None
    allele, ann = get("Allele"), get("Annotation")
    gene_name, gene_id = get("Gene_Name"), get("Gene_ID")
    if allele is None or ann is None or (gene_name is None and gene_id is None):
        raise ValueError(f"{key} fields lack Allele, Annotation or Gene_Name (has {'|'.join(fields)})")
    genes = tuple(i for i in (gene_name, gene_id) if i is not None)
    return InfoLayout(key, allele, ann, genes, get("Transcript_BioType"), None, len(fields))


def vep_allele_strings(ref: str, alts: list[str]) -> list[str]:
    """The allele strings VEP writes in CSQ ``Allele`` for each ALT of a record.

    VEP drops the first base when REF and every ALT share it (an indel's padding base) and
    writes ``-`` for an emptied allele.
    """
    if alts and all(a and a[0] == ref[:1] for a in alts) and not any(a.startswith("<") for a in alts) \
            and (len(ref) > 1 or any(len(a) > 1 for a in alts)):
        return [a[1:] or "-" for a in alts]
    return list(alts)


def parse_info_annotation(value: str, layout: InfoLayout, ref: str, alts: list[str], *,
                          classes=DEFAULT_CLASSES, cache: dict | None = None, matched: set | None = None):
    """Parse one record's CSQ/ANN string into ``{alt_index: {gene: class}}`` (alt_index 0-based).

    Returns ``(per_alt, unknown_terms)``; entries whose allele matches no ALT are ignored. With
    ``matched``, the index of every ALT that some entry names is added to it (annotated ALTs,
    gene or not).
    Raises ``ValueError`` for an entry with the wrong number of fields (too few to hold the
    needed ones; for CSQ, also more than the header's Format names).
    """
    per_alt: dict[int, dict[str, str]] = {}
    unknown: set[str] = set()
    if not value:
        return per_alt, unknown
    n_alt = len(alts)
    lookup = {}
    if n_alt > 1:
        vep_names = vep_allele_strings(ref, alts) if layout.key != "ANN" else alts
        for i, a in enumerate(alts):
            lookup.setdefault(a, i)
        for i, a in enumerate(vep_names):
            lookup.setdefault(a, i)
    for entry in value.split(","):
        parts = entry.split("|")
        if len(parts) < layout.n_fields:
            # trailing empty fields are sometimes dropped; the needed ones must be present
            need = max((layout.allele, layout.terms) + layout.genes)
            if len(parts) <= need:
                raise ValueError(f"{layout.key} entry has {len(parts)} fields, header Format has "
                                 f"{layout.n_fields}: {entry[:80]!r}")
        elif len(parts) > layout.n_fields and layout.key == "CSQ":
            # more fields than the header names: which one is which cannot be told
            raise ValueError(f"{layout.key} entry has {len(parts)} fields, header Format has "
                             f"{layout.n_fields}: {entry[:80]!r}")
        if n_alt == 1:
            ai = 0
        elif layout.allele_num is not None and parts[layout.allele_num].isdigit():
            ai = int(parts[layout.allele_num]) - 1
        else:
            allele = parts[layout.allele]
            if layout.key == "ANN" and "-" in allele and allele not in lookup:
                allele = allele.split("-", 1)[0]   # snpEff cancer mode: ALT-REF
            ai = lookup.get(allele, -1)
        if not 0 <= ai < n_alt:
            continue
        if matched is not None:
            matched.add(ai)
        gene = ""
        for g in layout.genes:
            if g < len(parts) and parts[g]:
                gene = parts[g]
                break
        terms = parts[layout.terms]
        biotype = parts[layout.biotype] if layout.biotype is not None and layout.biotype < len(parts) else ""
        alt = alts[ai]
        key = (terms, biotype, len(alt) - len(ref))
        res = cache.get(key) if cache is not None else None
        if res is None:
            res = classify_terms(terms.split("&"), ref, alt, biotype=biotype, classes=classes)
            if cache is not None:
                cache[key] = res
        unknown.update(res.unknown_terms)
        cls = res.cls
        if cls is None or not gene:
            continue
        genes = per_alt.setdefault(ai, {})
        prev = genes.get(gene)
        genes[gene] = cls if prev is None else pick(prev, cls)
    return per_alt, unknown


# ---------------------------------------------------------------- ANNOVAR *_multianno.txt
ANNOVAR_FUNC = {
    "exonic": "@exonic", "splicing": "splicing", "ncRNA_exonic": "ncRNA_exonic",
    "ncRNA_intronic": "ncRNA_intronic", "ncRNA_splicing": "ncRNA_splicing", "ncRNA_UTR5": "ncRNA_exonic",
    "ncRNA_UTR3": "ncRNA_exonic", "UTR5": "UTR5", "UTR3": "UTR3", "intronic": "intronic",
    "upstream": "upstream", "downstream": "downstream", "intergenic": INTERGENIC, "unknown": UNKNOWN,
}
ANNOVAR_EXONIC = {
    "nonsynonymous SNV": "nonsynonymous_SNV", "synonymous SNV": SYNONYMOUS,
    "frameshift insertion": "frameshift_insertion", "frameshift deletion": "frameshift_deletion",
    "frameshift substitution": FRAMESHIFT, "frameshift block substitution": FRAMESHIFT,
    "nonframeshift insertion": "nonframeshift_insertion", "nonframeshift deletion": "nonframeshift_deletion",
    "nonframeshift substitution": CODING, "nonframeshift block substitution": CODING,
    "stopgain": "stopgain", "stopgain SNV": "stopgain", "stoploss": "stoploss", "stoploss SNV": "stoploss",
    "startloss": STARTLOSS, "unknown": UNKNOWN, ".": UNKNOWN, "": UNKNOWN,
}


def annovar_key(chrom: str, pos: int, ref: str, alt: str) -> tuple:
    """ANNOVAR's (chrom, start, ref, alt) for a VCF allele: the shared leading bases are dropped,
    an emptied allele becomes ``-`` (convert2annovar's convention); ``chr`` prefixes are ignored."""
    i = 0
    while i < len(ref) and i < len(alt) and ref[i] == alt[i]:
        i += 1
    r, a, start = ref[i:], alt[i:], pos + i
    if not r:
        return (_chrom_key(chrom), start - 1, "-", a)
    return (_chrom_key(chrom), start, r, a or "-")


def _chrom_key(chrom: str) -> str:
    c = str(chrom)
    return c[3:] if c.lower().startswith("chr") else c


class MultiannoAnnotator:
    """Annotation from an ANNOVAR ``*_multianno.txt`` table (``table_annovar.pl`` output).

    Rows are matched to VCF ALT alleles by ANNOVAR's coordinates (:func:`annovar_key`). The
    first ``Func.<db>`` column (refGene, ensGene, ...) is used with its ``Gene.<db>`` and
    ``ExonicFunc.<db>``. ``Func`` and ``Gene`` lists separated by ``;`` pair up when they have the
    same length (``upstream;downstream`` with ``A;B``); otherwise every gene takes the
    higher-precedence region. ``ExonicFunc`` gives the exonic class.
    """

    def __init__(self, path, classes=DEFAULT_CLASSES, db: str | None = None, log=None):
        from pathlib import Path

        from pipelines.errors import InputError

        self.path = Path(path)
        self.classes = classes
        self.name = f"ANNOVAR {self.path.name}"
        if not self.path.is_file():
            raise InputError(self.path, "ANNOVAR multianno table not found")
        self.table: dict[tuple, list[tuple[str, str]]] = {}
        self.unknown: set[str] = set()
        opener = open
        with open(self.path, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                import gzip
                opener = gzip.open
        with opener(self.path, "rt", encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline().rstrip("\n").rstrip("\r").split("\t")
            idx = {h: i for i, h in enumerate(header)}
            if db is None:
                db = next((h[5:] for h in header if h.startswith("Func.")), None)
            need = ["Chr", "Start", "End", "Ref", "Alt", f"Func.{db}", f"Gene.{db}", f"ExonicFunc.{db}"]
            missing = [c for c in need if c not in idx]
            if db is None or missing:
                raise InputError(self.path, f"annotation column(s) {', '.join(missing or ['Func.<db>'])} missing "
                                 f"from the header (has: {', '.join(header[:12])})", line=1)
            ci = [idx[c] for c in need]
            width = max(ci) + 1
            for no, line in enumerate(fh, 2):
                if not line.strip():
                    continue
                cols = line.rstrip("\n").rstrip("\r").split("\t")
                if len(cols) < width:
                    raise InputError(self.path, f"{len(cols)} columns, the header needs at least {width}", line=no)
                chrom, start, _end, ref, alt, func, gene, exf = (cols[i] for i in ci)
                try:
                    start_i = int(start)
                except ValueError:
                    raise InputError(self.path, f"Start is not a number: {start!r}", line=no) from None
                key = (_chrom_key(chrom), start_i, ref, alt)
                self.table[key] = self._classify(func, gene, exf, ref, alt)

    def _classify(self, func: str, gene: str, exf: str, ref: str, alt: str) -> list[tuple[str, str]]:
        funcs = [f for f in func.split(";") if f]
        genes = [g for g in gene.replace(",", ";").split(";") if g and g not in (".", "NONE")]
        if not funcs or not genes:
            return []
        r = "" if ref == "-" else ref
        a = "" if alt == "-" else alt

        def region_class(f):
            c = ANNOVAR_FUNC.get(f)
            if c is None:
                self.unknown.add(f)
                return None
            if c == "@exonic":
                e = ANNOVAR_EXONIC.get(exf.strip())
                if e is None:
                    self.unknown.add(exf)
                    return UNKNOWN
                c = coding_class(e, r, a, self.classes) if e[0] == "@" else e
            return c

        classes = [region_class(f) for f in funcs]
        known = [c for c in classes if c is not None]
        if not known:
            return []
        if len(funcs) == len(genes) and len(funcs) > 1:
            out: dict[str, str] = {}
            for g, c in zip(genes, classes):
                if c is not None:
                    out[g] = c if g not in out else pick(out[g], c)
            return list(out.items())
        best = min(known, key=RANK.__getitem__)
        return [(g, best) for g in dict.fromkeys(genes)]

    def __call__(self, v, alts):
        chrom, pos, ref = v.CHROM, v.POS, v.REF
        per_alt: dict[int, dict[str, str]] = {}
        found = False
        for ai, alt in enumerate(alts):
            hits = self.table.get(annovar_key(chrom, pos, ref, alt))
            if hits is None:
                continue
            found = True
            if hits:
                per_alt[ai] = dict(hits)
        if not found:
            return None
        return per_alt, ()
