"""The embedded cohort: a seeded, byte-for-byte deterministic whole-exome-like case/control study.

``simulate_cohort(out_dir)`` writes

* ``cohort.vcf.gz`` (BGZF) and ``cohort.vcf.gz.tbi``: VCFv4.2 on GRCh38 contig names, unphased
  ``GT`` calls with a small fraction of missing calls, and VEP-style ``CSQ`` annotations;
* ``samples.tsv``: ``sample_id``, ``status`` (case/control), ``sex``;
* ``genesets.gmt``: the KEGG 2021 human pathways restricted to the cohort's genes;
* ``truth.json``: every planted effect, the variance components and all parameters.

How the cohort is made
----------------------
Genes are real human symbols from the Enrichr libraries shipped inside the ``blitzgsea`` package:
about a third KEGG 2021 pathway members, the rest GO Biological Process 2023 symbols that are in
no KEGG pathway. They are laid out in a random order along the GRCh38 autosomes (gene counts
proportional to each chromosome's protein-coding gene count), with realistic body lengths, both
strands, a few overlapping gene pairs and a few pairs closer than VEP's 5 kb flank.

Genotypes come from the coalescent (``msprime``): one ancestry simulation per chromosome for
``n_samples`` diploid individuals under recent exponential population growth, so that rare
variants dominate the allele-frequency spectrum as in exome cohorts. Each gene owns a segment of
the simulated sequence (recombination 1e-8 per bp inside, a fixed recombination fraction between
neighbouring genes); the mutation rate is set from the simulated branch lengths so that genes
carry ``variants_per_gene`` sites on average. Every site gets a functional class with exome-like
proportions (loss-of-function classes are rarer among common sites), a position in the matching
part of its gene (UTRs at the ends, flanks within 5 kb outside), REF/ALT alleles whose lengths
agree with the class (frameshift: length change not a multiple of 3), and CSQ entries: its own
gene, plus any neighbouring gene whose body or 5 kb flank holds the position. A few pairs of
coding SNVs of one gene with no haplotype in common are merged into multi-allelic records.

Phenotype: a liability-threshold model on gene burdens. The burden of a gene is the number of
alternate alleles a sample carries among the gene's counted CSQ entries (het and hom-alt count
1; missing calls count 0), each weighted by its class (``class_weights``: loss of function 1,
missense 0.7, ... intronic 0.15; synonymous and intergenic 0), i.e. exactly a weighted sum of
the (class, gene) carrier counts an encoder reads back from the VCF. With z the standardised
burden, ::

    liability = sum_g beta_g z_g                                   (additive genes)
              + sum_p gamma_p std(z_a z_b)                         (pathway pairs, both signs)
              + delta std(damaging_a XOR damaging_b)               (reciprocal-sign pair)
              + sum_m eta_m std(1[sum_{g in m} z_g > t_m])           (pathway threshold modules)
              + noise

each part scaled to its liability-scale variance (``h2_additive``, ``h2_epistatic``,
``h2_pathway``, the rest noise); the top ``case_fraction`` of liabilities are cases. ``damaging_g`` says whether a sample
carries an alternate allele of a damaging class (weight >= 0.5: loss of function, missense,
in-frame indels) in gene g; the XOR-like pair is drawn among genes where that is neither rare nor
universal, so carrying a damaging allele in one gene raises liability only without the other.
Both genes of an epistatic pair are members of one KEGG pathway, and causal genes are drawn
among genes whose burden departs from its most common value in at least
``min_carrier_fraction`` of samples, so that the signal is learnable.

Pathway threshold modules (``n_pathway_modules``, default 0) are the pathway-level form of the
two-locus threshold model: ``module_size`` genes of one KEGG pathway raise liability together,
only in the ``module_prevalence`` fraction of samples whose summed standardised burden over the
module is highest (the liability of the pathway as a unit crosses a threshold). Most of that
variance is not additive in genes (an additive model sees only the linear part of a step), but it
is a monotone function of one pathway's burden, i.e. exactly what a pathway neuron represents.
Module genes are drawn among genes whose only KEGG pathway in ``genesets.gmt`` is the module's
pathway (relaxed to genes with few pathways only when there are not enough), so a pathway-sparse
net puts the whole module on one neuron whichever of its pathways it picks per gene.

Determinism: all randomness flows from ``seed`` through ``numpy.random.SeedSequence`` streams and
msprime seeds derived from them; nothing depends on time, locale, hash ordering or thread count
(BGZF blocks are compressed in parallel but assembled in order). Floating-point values that
steer discrete choices or are written to text are rounded.
"""
from __future__ import annotations

import os
import struct
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import EpiflowError
from models.jsonio import json_text
from models.stats import rank_auc

GENERATOR = "epiflow.simulate"
VERSION = "1.0.0"

# GRCh38 primary assembly: (name, length). All are declared; variants are placed on autosomes.
GRCH38: tuple[tuple[str, int], ...] = (
    ("chr1", 248956422), ("chr2", 242193529), ("chr3", 198295559), ("chr4", 190214555),
    ("chr5", 181538259), ("chr6", 170805979), ("chr7", 159345973), ("chr8", 145138636),
    ("chr9", 138394717), ("chr10", 133797422), ("chr11", 135086622), ("chr12", 133275309),
    ("chr13", 114364328), ("chr14", 107043718), ("chr15", 101991189), ("chr16", 90338345),
    ("chr17", 83257441), ("chr18", 80373285), ("chr19", 58617616), ("chr20", 64444167),
    ("chr21", 46709983), ("chr22", 50818468), ("chrX", 156040895), ("chrY", 57227415),
    ("chrM", 16569),
)
# Approximate protein-coding gene counts of the GRCh38 autosomes (Ensembl): placement weights.
AUTOSOME_GENES: tuple[int, ...] = (
    2050, 1300, 1080, 760, 880, 1040, 930, 690, 780, 730, 1310, 1030,
    320, 610, 600, 850, 1190, 270, 1470, 540, 230, 440,
)
CSQ_FORMAT = "Allele|Consequence|IMPACT|SYMBOL|Gene|Feature_type|Feature|BIOTYPE"
VEP_FLANK = 5000            # VEP's upstream/downstream distance
CHROM_MARGIN = 1_000_000    # no genes within 1 Mb of a chromosome end
INTERGENE_RECOMBINATION = 5e-4   # recombination fraction between neighbouring genes (simulation)
GENE_RECOMBINATION_RATE = 1e-8   # per bp, inside a gene's simulated segment
GENE_SEGMENT_BP = 8000           # median simulated segment per gene (sets relative variant counts)

# The classes the encoder counts (DESIGN section 3), in the order of params.yaml encode.classes.
COUNTED_CLASSES: tuple[str, ...] = (
    "UTR3", "UTR5", "splicing", "upstream", "downstream", "intronic", "ncRNA_intronic",
    "ncRNA_exonic", "ncRNA_splicing", "nonframeshift_insertion", "frameshift_insertion",
    "nonframeshift_deletion", "frameshift_deletion", "stoploss", "stopgain", "nonsynonymous_SNV",
)
DAMAGING_WEIGHT = 0.5    # classes weighted at least this much are "damaging" (XOR-like pair)
DEFAULT_CLASS_WEIGHTS: dict[str, float] = {
    "stopgain": 1.0, "stoploss": 1.0, "frameshift_insertion": 1.0, "frameshift_deletion": 1.0,
    "splicing": 1.0,
    "nonsynonymous_SNV": 0.7, "nonframeshift_insertion": 0.7, "nonframeshift_deletion": 0.7,
    "ncRNA_splicing": 0.4, "ncRNA_exonic": 0.3, "UTR5": 0.3, "UTR3": 0.3,
    "intronic": 0.15, "ncRNA_intronic": 0.15, "upstream": 0.15, "downstream": 0.15,
}


@dataclass(frozen=True)
class _Class:
    name: str              # a COUNTED_CLASSES name, or "synonymous" / "intergenic"
    region: str            # body | utr5 | utr3 | up | down | intergenic
    kind: str              # snv | ins_fs | ins_if | del_fs | del_if | mixed (SNV or small indel)
    biotype: str
    terms: tuple           # ((SO terms joined by '&', IMPACT, probability), ...)
    p_rare: float          # share among sites with alternate allele frequency < 1 %
    p_common: float        # share among the other sites


PC, LNC = "protein_coding", "lncRNA"
CLASSES: tuple[_Class, ...] = (
    _Class("nonsynonymous_SNV", "body", "snv", PC,
           (("missense_variant", "MODERATE", 0.96),
            ("missense_variant&splice_region_variant", "MODERATE", 0.04)), 0.22, 0.17),
    _Class("synonymous", "body", "snv", PC,
           (("synonymous_variant", "LOW", 0.97),
            ("splice_region_variant&synonymous_variant", "LOW", 0.03)), 0.13, 0.17),
    _Class("stopgain", "body", "snv", PC,
           (("stop_gained", "HIGH", 0.95), ("stop_gained&splice_region_variant", "HIGH", 0.05)),
           0.009, 0.001),
    _Class("stoploss", "body", "snv", PC, (("stop_lost", "HIGH", 1.0),), 0.0015, 0.0003),
    _Class("splicing", "body", "snv", PC,
           (("splice_acceptor_variant", "HIGH", 0.4), ("splice_donor_variant", "HIGH", 0.4),
            ("splice_region_variant&intron_variant", "LOW", 0.2)), 0.010, 0.004),
    _Class("UTR5", "utr5", "snv", PC, (("5_prime_UTR_variant", "MODIFIER", 1.0),), 0.03, 0.03),
    _Class("UTR3", "utr3", "mixed", PC, (("3_prime_UTR_variant", "MODIFIER", 1.0),), 0.08, 0.09),
    _Class("upstream", "up", "snv", PC, (("upstream_gene_variant", "MODIFIER", 1.0),), 0.025, 0.03),
    _Class("downstream", "down", "snv", PC, (("downstream_gene_variant", "MODIFIER", 1.0),),
           0.025, 0.03),
    _Class("intronic", "body", "mixed", PC, (("intron_variant", "MODIFIER", 1.0),), 0.27, 0.33),
    _Class("ncRNA_intronic", "body", "snv", LNC,
           (("intron_variant&non_coding_transcript_variant", "MODIFIER", 1.0),), 0.05, 0.05),
    _Class("ncRNA_exonic", "body", "snv", LNC,
           (("non_coding_transcript_exon_variant", "MODIFIER", 1.0),), 0.04, 0.04),
    _Class("ncRNA_splicing", "body", "snv", LNC,
           (("splice_donor_variant&non_coding_transcript_variant", "HIGH", 0.5),
            ("splice_acceptor_variant&non_coding_transcript_variant", "HIGH", 0.5)), 0.003, 0.001),
    _Class("nonframeshift_insertion", "body", "ins_if", PC, (("inframe_insertion", "MODERATE", 1.0),),
           0.002, 0.001),
    _Class("frameshift_insertion", "body", "ins_fs", PC,
           (("frameshift_variant", "HIGH", 0.95), ("frameshift_variant&splice_region_variant", "HIGH", 0.05)),
           0.004, 0.0005),
    _Class("nonframeshift_deletion", "body", "del_if", PC, (("inframe_deletion", "MODERATE", 1.0),),
           0.003, 0.0015),
    _Class("frameshift_deletion", "body", "del_fs", PC, (("frameshift_variant", "HIGH", 1.0),),
           0.006, 0.0008),
    _Class("intergenic", "intergenic", "snv", "", (("intergenic_variant", "MODIFIER", 1.0),),
           0.03, 0.04),
)
_CLS_INDEX = {c.name: i for i, c in enumerate(CLASSES)}
_INTRONIC = _CLS_INDEX["intronic"]
_INTERGENIC = _CLS_INDEX["intergenic"]
# secondary CSQ entries for a neighbouring gene: (class index, term)
_SECONDARY = {
    "body": (_CLS_INDEX["intronic"], "intron_variant"),
    "up": (_CLS_INDEX["upstream"], "upstream_gene_variant"),
    "down": (_CLS_INDEX["downstream"], "downstream_gene_variant"),
}
_REGION = np.array([c.region for c in CLASSES])
_MERGEABLE = (_CLS_INDEX["nonsynonymous_SNV"], _CLS_INDEX["synonymous"])
_FS_LENGTHS = (np.array([1, 2, 4, 5, 7]), np.array([0.6, 0.2, 0.1, 0.06, 0.04]))
_IF_LENGTHS = (np.array([3, 6, 9]), np.array([0.7, 0.2, 0.1]))
_SMALL_INDEL = (np.array([1, 2, 3, 4]), np.array([0.55, 0.2, 0.15, 0.1]))
BASES = np.array(list("ACGT"))

DEFAULTS: dict = {
    "h2_additive": 0.45,
    "h2_epistatic": 0.3,
    "n_additive_genes": 10,
    "n_epistatic_pairs": 4,
    "h2_pathway": 0.0,
    "n_pathway_modules": 0,
    "module_size": 3,
    "module_prevalence": 0.15,
    "variants_per_gene": 20.0,
    "missing_rate": 0.004,
    "kegg_fraction": 1.0 / 3.0,
    "min_carrier_fraction": 0.05,
    "multiallelic_fraction": 0.004,
    "ne_ancestral": 10_000,
    "ne_present": 200_000,
    "growth_generations": 200,
    "class_weights": None,
}


# ------------------------------------------------------------------------------------ helpers
def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent, reproducible random stream for one purpose (and chromosome)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=key)))


def _r(x: float, digits: int = 9) -> float:
    """Round to ``digits`` significant digits (stable text across platforms' last-ulp noise)."""
    x = float(x)
    return float(f"{x:.{digits}g}") if np.isfinite(x) else x


def _blitzgsea_data() -> Path:
    try:
        import blitzgsea
    except ImportError:  # pragma: no cover - a declared dependency
        raise EpiflowError("the Python package 'blitzgsea' is needed for gene symbols and pathways "
                           "(pip install blitzgsea)") from None
    return Path(blitzgsea.__file__).resolve().parent / "data"


def _read_enrichr(path: Path) -> dict[str, list[str]]:
    """An Enrichr GMT library as {set name: [symbols]} in file order (duplicates dropped)."""
    if not path.is_file():
        raise EpiflowError(f"{path}: gene-set library not found in the installed blitzgsea package")
    sets: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split("\t")
        if len(f) < 3 or not f[0]:
            continue
        seen, genes = set(), []
        for g in f[2:]:
            g = g.split(",")[0].strip()
            if g and g not in seen:
                seen.add(g)
                genes.append(g)
        sets[f[0]] = genes
    return sets


def available_symbols() -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(KEGG symbols, non-KEGG GO BP symbols), both sorted, and the KEGG 2021 pathways."""
    data = _blitzgsea_data()
    kegg = _read_enrichr(data / "KEGG_2021_Human")
    go = _read_enrichr(data / "GO_Biological_Process_2023")
    k = sorted({g for genes in kegg.values() for g in genes})
    kset = set(k)
    other = sorted({g for genes in go.values() for g in genes} - kset)
    return k, other, kegg


class _BGZFWriter:
    """A BGZF (blocked gzip) writer: 64 KiB blocks, each a complete gzip member, then the EOF block.

    Blocks are deflated on a thread pool (zlib releases the GIL) and written in order, so the
    bytes do not depend on the number of threads.
    """

    BLOCK = 0xFF00
    EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")

    def __init__(self, path: Path, level: int = 6, threads: int | None = None):
        self._fh = open(path, "wb")
        self._buf = bytearray()
        self._level = level
        self._pool = ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1))

    def _deflate(self, data: bytes) -> bytes:
        c = zlib.compressobj(self._level, zlib.DEFLATED, -15, 9)
        payload = c.compress(data) + c.flush()
        header = struct.pack("<4BI2BH2BHH", 0x1F, 0x8B, 8, 4, 0, 0, 0xFF, 6, 66, 67, 2,
                             len(payload) + 25)
        return header + payload + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data))

    def write(self, data: bytes) -> None:
        self._buf += data
        n = len(self._buf) // self.BLOCK
        if n >= 8:
            cut = n * self.BLOCK
            view = bytes(self._buf[:cut])
            del self._buf[:cut]
            blocks = [view[i:i + self.BLOCK] for i in range(0, cut, self.BLOCK)]
            for out in self._pool.map(self._deflate, blocks):
                self._fh.write(out)

    def close(self) -> None:
        try:
            data = bytes(self._buf)
            blocks = [data[i:i + self.BLOCK] for i in range(0, len(data), self.BLOCK)]
            for out in self._pool.map(self._deflate, blocks):
                self._fh.write(out)
            self._fh.write(self.EOF)
        finally:
            self._pool.shutdown()
            self._fh.close()


# ---------------------------------------------------------------------------- parameter checks
def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise EpiflowError(f"simulate: {name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise EpiflowError(f"simulate: {name} must be {rng}, got {value}")
    return value


def _check_float(name, value, lo, hi, *, lo_open=False, hi_open=False):
    try:
        if isinstance(value, bool):
            raise TypeError
        value = float(value)
    except (TypeError, ValueError):
        raise EpiflowError(f"simulate: {name} must be a number, got {value!r}") from None
    bad = (not np.isfinite(value) or value < lo or value > hi or (lo_open and value == lo)
           or (hi_open and value == hi))
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise EpiflowError(f"simulate: {name} must be in {lb}{lo:g}, {hi:g}{rb}, got {value:g}")
    return value


def _params(n_samples, n_genes, case_fraction, seed, knobs) -> dict:
    unknown = sorted(set(knobs) - set(DEFAULTS))
    if unknown:
        raise EpiflowError(f"simulate: unknown parameter '{unknown[0]}' (known: "
                           f"n_samples, n_genes, case_fraction, seed, {', '.join(DEFAULTS)})")
    p = dict(DEFAULTS)
    p.update(knobs)
    out = {
        "n_samples": _check_int("n_samples", n_samples, 20, 1_000_000),
        "n_genes": _check_int("n_genes", n_genes, 10),
        "case_fraction": _check_float("case_fraction", case_fraction, 0, 1, lo_open=True, hi_open=True),
        "seed": _check_int("seed", seed, 0, 2**63 - 1),
        "h2_additive": _check_float("h2_additive", p["h2_additive"], 0, 1),
        "h2_epistatic": _check_float("h2_epistatic", p["h2_epistatic"], 0, 1),
        "n_additive_genes": _check_int("n_additive_genes", p["n_additive_genes"], 0),
        "n_epistatic_pairs": _check_int("n_epistatic_pairs", p["n_epistatic_pairs"], 0),
        "h2_pathway": _check_float("h2_pathway", p["h2_pathway"], 0, 1),
        "n_pathway_modules": _check_int("n_pathway_modules", p["n_pathway_modules"], 0),
        "module_size": _check_int("module_size", p["module_size"], 2, 50),
        "module_prevalence": _check_float("module_prevalence", p["module_prevalence"], 0, 0.5,
                                          lo_open=True),
        "variants_per_gene": _check_float("variants_per_gene", p["variants_per_gene"], 1, 1000),
        "missing_rate": _check_float("missing_rate", p["missing_rate"], 0, 0.5),
        "kegg_fraction": _check_float("kegg_fraction", p["kegg_fraction"], 0, 1),
        "min_carrier_fraction": _check_float("min_carrier_fraction", p["min_carrier_fraction"], 0, 0.5),
        "multiallelic_fraction": _check_float("multiallelic_fraction", p["multiallelic_fraction"], 0, 0.1),
        "ne_ancestral": _check_int("ne_ancestral", p["ne_ancestral"], 100),
        "ne_present": _check_int("ne_present", p["ne_present"], 100),
        "growth_generations": _check_int("growth_generations", p["growth_generations"], 0, 100_000),
    }
    if out["h2_additive"] + out["h2_epistatic"] >= 1:
        raise EpiflowError(f"simulate: h2_additive + h2_epistatic must be < 1, got "
                           f"{out['h2_additive']:g} + {out['h2_epistatic']:g}")
    if out["h2_additive"] + out["h2_epistatic"] + out["h2_pathway"] >= 1:
        raise EpiflowError(f"simulate: h2_additive + h2_epistatic + h2_pathway must be < 1, got "
                           f"{out['h2_additive']:g} + {out['h2_epistatic']:g} + {out['h2_pathway']:g}")
    weights = dict(DEFAULT_CLASS_WEIGHTS)
    cw = p["class_weights"]
    if cw is not None:
        if not isinstance(cw, dict):
            raise EpiflowError(f"simulate: class_weights must be a mapping class -> weight, got {cw!r}")
        for k, v in cw.items():
            if k not in weights:
                raise EpiflowError(f"simulate: class_weights: unknown class '{k}' "
                                   f"(one of {', '.join(COUNTED_CLASSES)})")
            weights[k] = _check_float(f"class_weights.{k}", v, 0, 100)
    if not any(w > 0 for w in weights.values()):
        raise EpiflowError("simulate: class_weights are all zero: no burden to plant effects on")
    out["class_weights"] = {k: weights[k] for k in COUNTED_CLASSES}
    return out


# ------------------------------------------------------------------------------- gene layout
@dataclass
class _Layout:
    symbols: list            # per cohort gene, in genome order
    kegg: np.ndarray         # bool, gene is in a KEGG pathway
    gene_num: np.ndarray     # stable number of the symbol (for Ensembl-style ids)
    chrom: np.ndarray        # index into GRCH38
    start: np.ndarray        # 1-based inclusive body
    end: np.ndarray
    strand: np.ndarray       # +1 / -1
    seg_len: np.ndarray      # simulated segment length (bp)
    ig_lo: np.ndarray        # intergenic interval next to the gene (empty when lo > hi)
    ig_hi: np.ndarray
    chrom_ranges: list       # (chrom index, first gene, end gene)


def _apportion(total: int, weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    quota = total * w / w.sum()
    base = np.floor(quota).astype(np.int64)
    rest = total - int(base.sum())
    order = np.lexsort((np.arange(len(w)), -(quota - base)))
    base[order[:rest]] += 1
    return base


def _pick_kegg(rng, kegg_sets: dict, n_k: int) -> list:
    """``n_k`` KEGG symbols, drawn pathway by pathway (about 15 % of each visited pathway).

    A uniform draw from 8,078 symbols leaves small cohorts with almost no two genes in one
    pathway; drawing by pathway keeps the pathway structure that pathway-sparse models need.
    """
    names = list(kegg_sets)
    chosen: list[str] = []
    seen: set[str] = set()
    for pi in rng.permutation(len(names)):
        if len(chosen) >= n_k:
            break
        genes = kegg_sets[names[pi]]
        members = sorted(g for g in set(genes) if g not in seen)
        k = min(len(members), max(2, int(np.ceil(0.15 * len(genes)))), n_k - len(chosen))
        for i in np.sort(rng.choice(len(members), k, replace=False)) if k > 0 else ():
            chosen.append(members[i])
            seen.add(members[i])
    if len(chosen) < n_k:          # large cohorts: the rest uniformly among the remaining members
        rest = sorted({g for genes in kegg_sets.values() for g in genes} - seen)
        chosen += [rest[i] for i in np.sort(rng.choice(len(rest), n_k - len(chosen), replace=False))]
    return sorted(chosen)


def _pick_symbols(rng, p: dict, kegg_syms: list, other_syms: list, kegg_sets: dict):
    """The cohort's symbols in genome order, whether each is a KEGG gene, and symbol numbers."""
    n = p["n_genes"]
    n_k = int(round(n * p["kegg_fraction"]))
    n_o = n - n_k
    # fill from the other list where one runs short
    if n_o > len(other_syms):
        n_o = len(other_syms)
        n_k = n - n_o
    if n_k > len(kegg_syms):
        n_k = len(kegg_syms)
        n_o = n - n_k
    kegg_pick = _pick_kegg(rng, kegg_sets, n_k)
    other_pick = [other_syms[i] for i in np.sort(rng.choice(len(other_syms), n_o, replace=False))]
    all_sorted = sorted(kegg_syms + other_syms)
    number = {s: i + 1 for i, s in enumerate(all_sorted)}
    syms = kegg_pick + other_pick
    is_kegg = np.array([True] * n_k + [False] * n_o)
    order = rng.permutation(n)
    syms = [syms[i] for i in order]
    is_kegg = is_kegg[order]
    return syms, is_kegg, number


def _gene_gaps(rng, b: np.ndarray, usable: int) -> tuple[np.ndarray, np.ndarray]:
    """The gap before each of one chromosome's ``m`` genes (and after the last: ``m + 1`` gaps),
    and the bodies, shrunk where they do not fit. Negative gaps overlap the previous gene."""
    m = len(b)
    # internal gaps: a few overlapping gene pairs, a few closer than the VEP flank
    u = rng.random(m)
    kind = np.where(u < 0.04, 1, np.where(u < 0.12, 2, 0))
    kind[0] = 0
    special = np.zeros(m, np.int64)
    prev_body = np.concatenate([[0], b[:-1]])
    special[kind == 1] = -np.round(prev_body[kind == 1] * rng.uniform(0.1, 0.6, m)[kind == 1])
    special[kind == 2] = np.round(rng.uniform(200, 6_000, m)[kind == 2])
    w = rng.exponential(1.0, m + 1)
    normal = np.concatenate([kind == 0, [True]])
    free = usable - int(b.sum()) - int(special.sum())
    if free < 20_000 * (m + 1):   # too many genes for this chromosome: shrink the bodies
        scale = max(0.05, (usable - 20_000 * (m + 1) - int(special.clip(0).sum())) / max(1, b.sum()))
        b = np.maximum(1_000, np.floor(b * scale)).astype(np.int64)
        special[kind == 1] = -np.floor(prev_body[kind == 1] * scale * 0.3).astype(np.int64)
        free = usable - int(b.sum()) - int(special.sum())
    gaps = np.zeros(m + 1, np.int64)
    wn = np.where(normal, w, 0.0)
    gaps[normal] = np.floor(free * wn[normal] / wn.sum()).astype(np.int64)
    gaps[:m][kind != 0] = special[kind != 0]
    return gaps, b


def _place_chrom(rng, c: int, b: np.ndarray):
    """Start, end, (possibly shrunk) body and intergenic interval of one chromosome's genes, whose
    bodies in genome order are ``b``."""
    m = len(b)
    usable_lo, usable_hi = CHROM_MARGIN, GRCH38[c][1] - CHROM_MARGIN
    usable = usable_hi - usable_lo
    gaps, b = _gene_gaps(rng, b, usable)
    s = np.zeros(m, np.int64)
    e = np.zeros(m, np.int64)
    pos = usable_lo
    for i in range(m):          # one step per gene (not per genotype)
        s[i] = pos + gaps[i] + 1
        e[i] = s[i] + b[i] - 1
        pos = e[i]
    cum_end = np.maximum.accumulate(e)
    nxt = np.concatenate([s[1:], [usable_hi + VEP_FLANK]])
    lo = cum_end + VEP_FLANK + 1
    hi = nxt - VEP_FLANK - 1
    # where the gap after a gene is too small, use the gap before it
    prev_lo = np.concatenate([[usable_lo], lo[:-1]])
    prev_hi = np.concatenate([[s[0] - VEP_FLANK - 1], hi[:-1]])
    use_prev = hi < lo
    return s, e, b, np.where(use_prev, prev_lo, lo), np.where(use_prev, prev_hi, hi)


def _layout(p: dict, kegg_syms: list, other_syms: list, kegg_sets: dict) -> _Layout:
    rng = _stream(p["seed"], 1)
    n = p["n_genes"]
    syms, is_kegg, number = _pick_symbols(rng, p, kegg_syms, other_syms, kegg_sets)

    counts = _apportion(n, AUTOSOME_GENES)
    chrom = np.repeat(np.arange(22), counts)
    body = np.clip(np.round(rng.lognormal(np.log(20_000), 0.9, n)), 2_000, 500_000).astype(np.int64)
    strand = np.where(rng.random(n) < 0.5, 1, -1)
    seg = np.maximum(500, np.round(GENE_SEGMENT_BP * rng.lognormal(0.0, 0.6, n))).astype(np.int64)
    start = np.zeros(n, np.int64)
    end = np.zeros(n, np.int64)
    ig_lo = np.zeros(n, np.int64)
    ig_hi = np.full(n, -1, np.int64)
    ranges = []
    first = 0
    for c in range(22):
        m = int(counts[c])
        if m == 0:
            continue
        sl = slice(first, first + m)
        ranges.append((c, first, first + m))
        start[sl], end[sl], body[sl], ig_lo[sl], ig_hi[sl] = _place_chrom(rng, c, body[sl].copy())
        first += m
    return _Layout(symbols=syms, kegg=is_kegg, gene_num=np.array([number[s] for s in syms]),
                   chrom=chrom, start=start, end=end, strand=strand, seg_len=seg,
                   ig_lo=ig_lo, ig_hi=ig_hi, chrom_ranges=ranges)


# ------------------------------------------------------------------------------- genotypes
def _demography(p: dict):
    import msprime

    dem = msprime.Demography()
    t = p["growth_generations"]
    n0, na = float(p["ne_present"]), float(p["ne_ancestral"])
    rate = _r(np.log(n0 / na) / t, 9) if t > 0 else 0.0
    dem.add_population(name="cohort", initial_size=n0 if t > 0 else na, growth_rate=rate)
    if t > 0:
        dem.add_population_parameters_change(time=t, initial_size=na, growth_rate=0.0,
                                             population="cohort")
    return dem


def _simulate_chrom(p, lay: _Layout, g0: int, g1: int, target_sites: float, ci: int):
    """One chromosome's tree sequence with mutations, and per-site gene index."""
    import msprime

    rng = _stream(p["seed"], 2, ci)
    seg = lay.seg_len[g0:g1]
    m = len(seg)
    pos = np.zeros(2 * m, np.int64)
    pos[0::2] = seg
    pos[1::2] = 1
    breaks = np.concatenate([[0], np.cumsum(pos)])
    rec = np.empty(2 * m)
    rec[0::2] = GENE_RECOMBINATION_RATE
    rec[1::2] = INTERGENE_RECOMBINATION
    rmap = msprime.RateMap(position=breaks.astype(np.float64), rate=rec)
    seed_a, seed_m = (int(x) for x in rng.integers(1, 2**31 - 1, 2))
    ts = msprime.sim_ancestry(samples=p["n_samples"], ploidy=2, demography=_demography(p),
                              recombination_rate=rmap, sequence_length=float(breaks[-1]),
                              random_seed=seed_a)
    branch = ts.segregating_sites(mode="branch", windows=breaks.astype(np.float64),
                                  span_normalise=False)
    total = float(np.sum(branch[0::2]))
    mu = _r(target_sites / total, 6) if total > 0 else 0.0
    mrate = np.zeros(2 * m)
    mrate[0::2] = mu
    mmap = msprime.RateMap(position=breaks.astype(np.float64), rate=mrate)
    ts = msprime.sim_mutations(ts, rate=mmap, random_seed=seed_m, discrete_genome=False,
                               keep=False)
    site_pos = ts.tables.sites.position
    gene = g0 + np.searchsorted(breaks[0::2], site_pos, side="right") - 1
    return ts, gene.astype(np.int64), mu


def _haplotypes(ts) -> np.ndarray:
    """(sites, 2 n) uint8 derived-allele indicators, decoded site by site."""
    h = np.empty((ts.num_sites, ts.num_samples), np.uint8)
    for v in ts.variants(copy=False):
        h[v.site.id] = v.genotypes
    return h


def _allele_counts(ts) -> np.ndarray:
    ac = np.zeros(ts.num_sites, np.int64)
    for tree in ts.trees():
        for site in tree.sites():
            ac[site.id] = sum(tree.num_samples(mu.node) for mu in site.mutations)
    return ac


# ------------------------------------------------------------------------- site annotation
def _choose(rng, probs: np.ndarray, size: int, u=None) -> np.ndarray:
    cdf = np.cumsum(probs / probs.sum())
    cdf[-1] = 1.0
    u = rng.random(size) if u is None else u
    return np.searchsorted(cdf, u, side="right").clip(0, len(probs) - 1)


def _assign_classes(p, site_gene, site_ac, lay: _Layout) -> np.ndarray:
    rng = _stream(p["seed"], 3)
    n_hap = 2 * p["n_samples"]
    common = site_ac >= 0.01 * n_hap
    cls = np.empty(len(site_gene), np.int64)
    for flag, attr in ((False, "p_rare"), (True, "p_common")):
        idx = np.flatnonzero(common == flag)
        probs = np.array([getattr(c, attr) for c in CLASSES])
        cls[idx] = _choose(rng, probs, len(idx))
    # intergenic sites need an intergenic interval next to their gene
    g = site_gene[cls == _INTERGENIC]
    bad = lay.ig_hi[g] < lay.ig_lo[g]
    cls[np.flatnonzero(cls == _INTERGENIC)[bad]] = _INTRONIC
    # every counted class present (where there are enough sites): recruit rare missense/intronic
    need = [i for i, c in enumerate(CLASSES) if c.name in COUNTED_CLASSES and not np.any(cls == i)]
    if need and len(cls) >= 4 * len(CLASSES):
        pool = np.flatnonzero(((cls == _INTRONIC) | (cls == _CLS_INDEX["nonsynonymous_SNV"])) & ~common)
        if len(pool) < len(need):
            pool = np.flatnonzero((cls == _INTRONIC) | (cls == _CLS_INDEX["nonsynonymous_SNV"]))
        take = np.sort(rng.choice(pool, min(len(pool), 2 * len(need)), replace=False))
        for j, i in enumerate(need):
            for t in take[2 * j:2 * j + 2]:
                cls[t] = i
    return cls


def _positions(rng, cls, gene, lay: _Layout) -> np.ndarray:
    """A 1-based position for each site inside the region its class names."""
    n = len(cls)
    s, e, st = lay.start[gene], lay.end[gene], lay.strand[gene]
    length = e - s + 1
    u = rng.random(n)
    region = _REGION[cls]
    pos = s + np.floor(u * length).astype(np.int64)          # body
    u5 = np.maximum(50, length // 20)
    u3 = np.maximum(200, length // 10)
    off5 = np.floor(u * u5).astype(np.int64)
    off3 = np.floor(u * u3).astype(np.int64)
    offf = np.floor(u * VEP_FLANK).astype(np.int64)
    plus = st > 0
    r = region == "utr5"
    pos[r] = np.where(plus[r], s[r] + off5[r], e[r] - off5[r])
    r = region == "utr3"
    pos[r] = np.where(plus[r], e[r] - off3[r], s[r] + off3[r])
    r = region == "up"
    pos[r] = np.where(plus[r], s[r] - 1 - offf[r], e[r] + 1 + offf[r])
    r = region == "down"
    pos[r] = np.where(plus[r], e[r] + 1 + offf[r], s[r] - 1 - offf[r])
    r = region == "intergenic"
    lo, hi = lay.ig_lo[gene[r]], lay.ig_hi[gene[r]]
    pos[r] = lo + np.floor(u[r] * (hi - lo + 1)).astype(np.int64)
    return pos


def _alleles(rng, cls) -> tuple[list, list, list]:
    """REF, ALT and the CSQ Allele string of each site, with lengths that match its class."""
    n = len(cls)
    ref_b = rng.integers(0, 4, n)
    alt_b = (ref_b + rng.integers(1, 4, n)) % 4
    kinds = [CLASSES[c].kind for c in cls]
    u_kind = rng.random(n)
    fs = _FS_LENGTHS[0][_choose(rng, _FS_LENGTHS[1], n)]
    inf = _IF_LENGTHS[0][_choose(rng, _IF_LENGTHS[1], n)]
    small = _SMALL_INDEL[0][_choose(rng, _SMALL_INDEL[1], n)]
    seq = BASES[rng.integers(0, 4, 12 * n + 12)]
    refs, alts, vep = [], [], []
    for i in range(n):
        k = kinds[i]
        if k == "mixed":
            k = "snv" if u_kind[i] < 0.88 else ("ins_small" if u_kind[i] < 0.94 else "del_small")
        r0 = BASES[ref_b[i]]
        if k == "snv":
            a = BASES[alt_b[i]]
            refs.append(r0), alts.append(a), vep.append(a)
            continue
        ln = {"ins_fs": fs, "del_fs": fs, "ins_if": inf, "del_if": inf}.get(k, small)[i]
        extra = "".join(seq[12 * i:12 * i + ln])
        if k.startswith("ins"):
            refs.append(r0), alts.append(r0 + extra), vep.append(extra)
        else:
            refs.append(r0 + extra), alts.append(r0), vep.append("-")
    return refs, alts, vep


# ------------------------------------------------------------------------------ VCF writing
_GT_TEXT = np.frombuffer(b"0/00/10/2???1/11/2??????2/2./.", dtype=np.uint8).reshape(10, 3)
_MISSING_CODE = 9


def _header(p: dict, sample_ids: list) -> bytes:
    lines = ["##fileformat=VCFv4.2", f"##source={GENERATOR} {VERSION}", "##reference=GRCh38"]
    lines += [f"##contig=<ID={c},length={ln},assembly=GRCh38>" for c, ln in GRCH38]
    lines += [
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##INFO=<ID=AC,Number=A,Type=Integer,Description="Allele count in called genotypes, for each ALT allele">',
        '##INFO=<ID=AN,Number=1,Type=Integer,Description="Total number of alleles in called genotypes">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency in called genotypes, for each ALT allele">',
        f'##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl VEP. Format: {CSQ_FORMAT}">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        "##epiflow_simulate=<" + ",".join(f"{k}={_fmt_param(p[k])}" for k in sorted(p)) + ">",
        "#" + "\t".join(["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"] + sample_ids),
    ]
    return ("\n".join(lines) + "\n").encode()


def _fmt_param(v) -> str:
    if isinstance(v, dict):
        return "/".join(f"{k}:{_fmt_param(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _gene_ids(num: int) -> tuple[str, str, str]:
    """Ensembl-style ids in a range no real Ensembl record uses (ENSG9..., ENST9...)."""
    return f"ENSG9{num:010d}", f"ENST9{num:09d}1", f"ENST9{num:09d}2"


# ------------------------------------------------------------------------------ the cohort
def simulate_cohort(out_dir, *, n_samples: int = 2000, n_genes: int = 2000,
                    case_fraction: float = 0.87, seed: int = 20240611, progress: bool = True,
                    **knobs) -> dict:
    """Write the simulated cohort into ``out_dir`` and return a summary dict.

    Knobs (keyword arguments, all recorded in ``truth.json``): ``h2_additive`` (0.45),
    ``h2_epistatic`` (0.3), ``n_additive_genes`` (10), ``n_epistatic_pairs`` (4: one
    reciprocal-sign XOR-like pair, the rest products of standardised burdens with alternating
    signs), ``h2_pathway`` (0), ``n_pathway_modules`` (0), ``module_size`` (3),
    ``module_prevalence`` (0.15) (pathway threshold modules), ``variants_per_gene`` (20), ``missing_rate`` (0.004), ``kegg_fraction`` (1/3),
    ``min_carrier_fraction`` (0.05), ``multiallelic_fraction`` (0.004), ``ne_ancestral``,
    ``ne_present``, ``growth_generations`` (demography), ``class_weights`` (burden weight per
    class). Files appear in ``out_dir`` only once all of them are complete.
    """
    p = _params(n_samples, n_genes, case_fraction, seed, knobs)
    kegg_syms, other_syms, kegg_sets = available_symbols()
    n_avail = len(kegg_syms) + len(other_syms)
    if p["n_genes"] > n_avail:
        raise EpiflowError(f"simulate: n_genes={p['n_genes']} is more than the {n_avail} gene symbols "
                           "available from the installed KEGG/GO libraries")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EpiflowError(f"{out_dir}: exists and is not a directory")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    lay = _layout(p, kegg_syms, other_syms, kegg_sets)
    steps = 2 * len(lay.chrom_ranges) + 2
    bar = tqdm(total=steps, desc="simulate", unit="step", disable=not progress, file=sys.stderr,
               leave=False, dynamic_ncols=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".simulate-", dir=out_dir) as tmp:
            tmp = Path(tmp)
            summary = _build(p, lay, kegg_sets, tmp, bar)
            names = ["genesets.gmt", "samples.tsv", "cohort.vcf.gz", "cohort.vcf.gz.tbi", "truth.json"]
            for name in names:
                os.chmod(tmp / name, 0o644)
                os.replace(tmp / name, out_dir / name)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    finally:
        bar.close()
    summary["out_dir"] = str(out_dir)
    summary["files"] = {name: (out_dir / name).stat().st_size for name in names}
    return summary


@dataclass
class _ChromSim:
    """One chromosome's genealogy with mutations, for cohort genes ``g0:g1``."""
    ci: int                  # index into GRCH38
    g0: int
    g1: int
    ts: object               # tskit tree sequence
    gene: np.ndarray         # per site, the cohort gene index
    ac: np.ndarray           # per site, the derived allele count
    mu: float                # mutation rate
    cls: np.ndarray | None = None   # per site, the CLASSES index (set once all sites are known)


@dataclass
class _Accum:
    """What writing the VCF accumulates, chromosome by chromosome."""
    weights: np.ndarray      # burden weight per CLASSES index
    burden: np.ndarray       # (genes, samples) class-weighted carrier counts
    damaging: np.ndarray     # (genes, samples) carries an allele of a damaging class (weight >= 0.5)
    n_entries: np.ndarray    # CSQ entries naming each gene
    class_counts: np.ndarray  # CSQ entries per CLASSES index
    records: int = 0
    multiallelic: int = 0
    two_gene_records: int = 0
    missing_calls: int = 0


def _build(p: dict, lay: _Layout, kegg_sets: dict, tmp: Path, bar) -> dict:
    import pysam

    n, G = p["n_samples"], p["n_genes"]
    sample_ids, sex, miss_weight = _samples(p)

    # 1. ancestry and mutations per chromosome
    sims = _simulate_all(p, lay, bar)
    site_ac, n_sites = _classify_sites(p, lay, sims)
    vcf_path = tmp / "cohort.vcf.gz"
    acc = _write_vcf(p, lay, sims, sample_ids, miss_weight, vcf_path, bar)
    bar.set_description("index")
    pysam.tabix_index(str(vcf_path), preset="vcf", force=True)
    bar.update(1)

    # 2. phenotype
    bar.set_description("phenotype")
    in_vcf = acc.n_entries > 0
    truth = _phenotype(p, lay, kegg_sets, acc.burden, acc.damaging, in_vcf)
    status = truth.pop("_status")
    _write_samples(tmp / "samples.tsv", sample_ids, status, sex)
    n_gene_sets = _write_gmt(tmp / "genesets.gmt", lay, kegg_sets, in_vcf)
    truth.update(_truth_meta(p, lay, sims, site_ac, n_sites, acc, in_vcf, sample_ids, n_gene_sets))
    (tmp / "truth.json").write_text(json_text(truth))
    bar.update(1)
    return {
        "n_samples": n, "n_genes": G, "n_genes_in_vcf": int(in_vcf.sum()), "n_sites": n_sites,
        "n_records": acc.records, "n_multiallelic_records": acc.multiallelic,
        "n_cases": truth["liability"]["n_cases"], "n_controls": truth["liability"]["n_controls"],
        "case_fraction": truth["liability"]["case_fraction_realised"],
        "h2_liability": truth["liability"]["h2"],
    }


def _samples(p: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """Sample ids, sexes and the per-sample weights of missing calls."""
    n = p["n_samples"]
    width = max(4, len(str(n)))
    sample_ids = [f"S{i + 1:0{width}d}" for i in range(n)]
    rng_s = _stream(p["seed"], 4)
    sex = np.where(rng_s.random(n) < 0.5, "female", "male")
    miss_weight = rng_s.gamma(2.0, 0.5, n)
    miss_weight /= miss_weight.sum()
    return sample_ids, sex, miss_weight


def _simulate_all(p: dict, lay: _Layout, bar) -> list[_ChromSim]:
    """Ancestry and mutations of every chromosome that holds cohort genes."""
    mean_seg = float(lay.seg_len.mean())
    sims = []
    for ci, g0, g1 in lay.chrom_ranges:
        bar.set_description(f"simulate {GRCH38[ci][0]}")
        target = p["variants_per_gene"] * float(lay.seg_len[g0:g1].sum()) / mean_seg
        ts, gene, mu = _simulate_chrom(p, lay, g0, g1, target, ci)
        sims.append(_ChromSim(ci, g0, g1, ts, gene, _allele_counts(ts), mu))
        bar.update(1)
    return sims


def _classify_sites(p: dict, lay: _Layout, sims: list[_ChromSim]) -> tuple[np.ndarray, int]:
    """Give every site its class (``sim.cls``); return all sites' allele counts and their number."""
    site_gene = np.concatenate([s.gene for s in sims])
    site_ac = np.concatenate([s.ac for s in sims])
    site_cls = _assign_classes(p, site_gene, site_ac, lay)
    offsets = np.concatenate([[0], np.cumsum([s.ts.num_sites for s in sims])]).astype(np.int64)
    for k, sim in enumerate(sims):
        sim.cls = site_cls[offsets[k]:offsets[k + 1]]
    return site_ac, int(offsets[-1])


def _write_vcf(p: dict, lay: _Layout, sims: list[_ChromSim], sample_ids: list,
               miss_weight: np.ndarray, vcf_path: Path, bar) -> _Accum:
    """Write the BGZF VCF chromosome by chromosome; return the burdens and counts it accumulates."""
    n, G = p["n_samples"], p["n_genes"]
    acc = _Accum(weights=np.array([p["class_weights"].get(c.name, 0.0) for c in CLASSES]),
                 burden=np.zeros((G, n), np.float32), damaging=np.zeros((G, n), bool),
                 n_entries=np.zeros(G, np.int64), class_counts=np.zeros(len(CLASSES), np.int64))
    writer = _BGZFWriter(vcf_path)
    try:
        writer.write(_header(p, sample_ids))
        for sim in sims:
            bar.set_description(f"write {GRCH38[sim.ci][0]}")
            _write_chrom(p, lay, sim, miss_weight, writer, acc)
            bar.update(1)
    finally:
        writer.close()
    return acc


def _write_samples(path: Path, sample_ids: list, status: np.ndarray, sex: np.ndarray) -> None:
    lines = ["sample_id\tstatus\tsex"]
    lines += [f"{s}\t{'case' if c else 'control'}\t{x}" for s, c, x in zip(sample_ids, status, sex)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_gmt(path: Path, lay: _Layout, kegg_sets: dict, in_vcf: np.ndarray) -> int:
    """The KEGG pathways restricted to the genes in the VCF; return how many are not empty."""
    cohort_genes = {lay.symbols[g] for g in np.flatnonzero(in_vcf)}
    gmt = []
    for name, genes in kegg_sets.items():
        hit = [g for g in genes if g in cohort_genes]
        if hit:
            gmt.append("\t".join([name, "KEGG_2021_Human"] + hit))
    path.write_text("\n".join(gmt) + ("\n" if gmt else ""), encoding="utf-8")
    return len(gmt)


def _truth_meta(p: dict, lay: _Layout, sims: list[_ChromSim], site_ac: np.ndarray, n_sites: int,
                acc: _Accum, in_vcf: np.ndarray, sample_ids: list, n_gene_sets: int) -> dict:
    """The generator, parameters and cohort summary sections of truth.json."""
    n, G = p["n_samples"], p["n_genes"]
    counts = {c.name: int(acc.class_counts[i]) for i, c in enumerate(CLASSES)}
    return {
        "generator": {"name": GENERATOR, "version": VERSION},
        "parameters": {**p, "intergene_recombination": INTERGENE_RECOMBINATION,
                       "gene_recombination_rate": GENE_RECOMBINATION_RATE,
                       "gene_segment_bp": GENE_SEGMENT_BP, "vep_flank": VEP_FLANK},
        "cohort": {
            "n_samples": n, "n_genes": G, "n_genes_in_vcf": int(in_vcf.sum()),
            "n_kegg_genes_in_vcf": int((in_vcf & lay.kegg).sum()),
            "n_sites": n_sites, "n_records": acc.records, "n_multiallelic_records": acc.multiallelic,
            "n_two_gene_records": acc.two_gene_records,
            "missing_call_fraction": _r(acc.missing_calls / max(1, acc.records * n), 6),
            "singleton_fraction": _r(float(np.mean(site_ac == 1)) if n_sites else 0.0, 6),
            "rare_fraction_af_below_1pct": _r(float(np.mean(site_ac < 0.01 * 2 * n)) if n_sites else 0.0, 6),
            "csq_entries_per_class": counts,
            "n_gene_sets": n_gene_sets,
            "mutation_rate_per_chrom": {GRCH38[s.ci][0]: s.mu for s in sims},
            "sample_ids": [sample_ids[0], sample_ids[-1]],
        },
    }


# ------------------------------------------------------------------- one chromosome's records
@dataclass
class _Records:
    """One chromosome's VCF records: merges, positions, alleles and missing calls."""
    chrom: str
    merge_b: np.ndarray      # per site: the site merged into its record as second ALT, or -1
    a_sites: np.ndarray      # sites whose record has a second ALT
    b_sites: np.ndarray      # the sites merged into them
    is_b: np.ndarray         # per site: merged into another site's record
    order: np.ndarray        # record -> its (first) site
    rpos: np.ndarray         # record -> POS
    refs: list               # per site REF, ALT and CSQ Allele string
    alts: list
    vep: list
    alt2: dict               # a site -> its record's second ALT base
    term_u: np.ndarray       # per site, the uniform draw that picks its SO term
    miss_r: np.ndarray       # missing calls: record ...
    miss_s: np.ndarray       # ... and sample
    csq: list | None = None  # record -> its CSQ text


def _write_chrom(p: dict, lay: _Layout, sim: _ChromSim, miss_weight: np.ndarray, writer: _BGZFWriter,
                 acc: _Accum) -> None:
    """Annotate, write and accumulate the burdens of one chromosome's sites."""
    H = _haplotypes(sim.ts)
    rec = _records(p, lay, sim, H, miss_weight)
    rec.csq, e_site, e_gene, e_cls, two_gene = _csq(lay, sim, rec)
    carrier, n_missing = _write_records(writer, p["n_samples"], H, rec)
    _add_burdens(acc, sim, carrier, e_site, e_gene, e_cls)
    cls, b_sites = sim.cls, rec.b_sites
    class_counts = np.bincount(e_cls, minlength=len(CLASSES))
    class_counts[_INTERGENIC] += int(np.sum(cls[~rec.is_b] == _INTERGENIC) + np.sum(cls[b_sites] == _INTERGENIC))
    acc.class_counts += class_counts
    acc.records += len(rec.order)
    acc.multiallelic += len(rec.a_sites)
    acc.two_gene_records += two_gene
    acc.missing_calls += n_missing


def _merge_pairs(rng, p: dict, cls: np.ndarray, gene: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Multi-allelic merges: consecutive mergeable SNVs of one gene sharing no haplotype.
    Per site A, the site B merged into A's record, or -1."""
    S = len(gene)
    merge_b = np.full(S, -1, np.int64)
    cand = np.flatnonzero(np.isin(cls, _MERGEABLE))
    k_want = int(np.floor(p["multiallelic_fraction"] * S + rng.random()))
    if len(cand) >= 2 and k_want:
        a, b = cand[0:-1:2], cand[1::2]
        a = a[: len(b)]
        ok = gene[a] == gene[b]
        a, b = a[ok], b[ok]
        if len(a):
            ok = ~np.any(H[a] & H[b], axis=1)
            a, b = a[ok], b[ok]
        if len(a):
            pick = np.sort(rng.choice(len(a), min(k_want, len(a)), replace=False))
            merge_b[a[pick]] = b[pick]
    return merge_b


def _records(p: dict, lay: _Layout, sim: _ChromSim, H: np.ndarray, miss_weight: np.ndarray) -> _Records:
    """Draw one chromosome's records: merges, positions, alleles, SO terms and missing calls."""
    rng = _stream(p["seed"], 5, sim.ci)
    cls, gene = sim.cls, sim.gene
    S = len(gene)
    merge_b = _merge_pairs(rng, p, cls, gene, H)
    a_sites = np.flatnonzero(merge_b >= 0)
    b_sites = merge_b[a_sites]
    is_b = np.zeros(S, bool)
    is_b[b_sites] = True
    # -- positions (sorted, no overlapping REF spans) and alleles
    pos = _positions(rng, cls, gene, lay)
    refs, alts, vep = _alleles(rng, cls)
    term_u = rng.random(S)
    rec_sites = np.flatnonzero(~is_b)
    order = rec_sites[np.lexsort((rec_sites, pos[rec_sites]))]     # record -> its (first) site
    R = len(order)
    span = np.array([len(refs[i]) + 1 for i in order], np.int64)
    c = np.concatenate([[0], np.cumsum(span)[:-1]]).astype(np.int64)
    rpos = c + np.maximum.accumulate(pos[order] - c) if R else np.zeros(0, np.int64)
    alt2 = {}
    for s_a in a_sites:
        choices = [x for x in "ACGT" if x not in (refs[s_a], alts[s_a])]
        alt2[int(s_a)] = choices[int(rng.integers(0, len(choices)))]
    miss_r, miss_s = _missing_calls(rng, p, R, miss_weight)
    return _Records(chrom=GRCH38[sim.ci][0], merge_b=merge_b, a_sites=a_sites, b_sites=b_sites,
                    is_b=is_b, order=order, rpos=rpos, refs=refs, alts=alts, vep=vep, alt2=alt2,
                    term_u=term_u, miss_r=miss_r, miss_s=miss_s)


def _missing_calls(rng, p: dict, R: int, miss_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missing calls: records uniformly, samples with sample-specific rates."""
    n = p["n_samples"]
    n_miss = int(rng.binomial(R * n, p["missing_rate"])) if R and p["missing_rate"] > 0 else 0
    miss_r = rng.integers(0, R, n_miss).astype(np.int64)
    miss_s = rng.choice(n, n_miss, p=miss_weight).astype(np.int64) if n_miss else np.zeros(0, np.int64)
    return miss_r, miss_s


def _neighbours(lay: _Layout, g0: int, g1: int, gp: int, p_r: int) -> list:
    """(gene, region) of the genes near gene ``gp`` whose body or 5 kb flank holds position ``p_r``."""
    sec = []
    for d in (-2, -1, 1, 2):
        kg = gp + d
        if kg < g0 or kg >= g1:
            continue
        s0, e0, st = int(lay.start[kg]), int(lay.end[kg]), int(lay.strand[kg])
        if s0 <= p_r <= e0:
            sec.append((kg, "body"))
        elif s0 - VEP_FLANK <= p_r < s0:
            sec.append((kg, "up" if st > 0 else "down"))
        elif e0 < p_r <= e0 + VEP_FLANK:
            sec.append((kg, "down" if st > 0 else "up"))
    return sec


def _csq(lay: _Layout, sim: _ChromSim, rec: _Records):
    """CSQ entries (own gene, plus neighbours whose body or 5 kb flank holds the position).

    Returns the CSQ text of each record, the counted entries as (site, gene, class) index arrays
    and the number of records that name two or more genes."""
    e_site, e_gene, e_cls = [], [], []
    csq_text = []
    two_gene = 0
    syms = lay.symbols
    for r in range(len(rec.order)):
        s_a = int(rec.order[r])
        gp = int(sim.gene[s_a])
        sec = _neighbours(lay, sim.g0, sim.g1, gp, int(rec.rpos[r]))
        sites = (s_a, int(rec.merge_b[s_a])) if rec.merge_b[s_a] >= 0 else (s_a,)
        entries = []
        genes_here = set()
        for j, s_i in enumerate(sites):
            allele = rec.vep[s_i] if j == 0 else rec.alt2[s_a]
            k_cls = int(sim.cls[s_i])
            cdef = CLASSES[k_cls]
            term, impact, _ = cdef.terms[_choose_term(cdef.terms, rec.term_u[s_i])]
            if k_cls == _INTERGENIC:
                entries.append(f"{allele}|{term}|{impact}|||||")
            else:
                gid, tc, tn = _gene_ids(int(lay.gene_num[gp]))
                tid = tn if cdef.biotype == LNC else tc
                entries.append(f"{allele}|{term}|{impact}|{syms[gp]}|{gid}|Transcript|{tid}|{cdef.biotype}")
                e_site.append(s_i), e_gene.append(gp), e_cls.append(k_cls)
                genes_here.add(gp)
            for kg, where in sec:
                sc, sterm = _SECONDARY[where]
                gid, tc, _ = _gene_ids(int(lay.gene_num[kg]))
                entries.append(f"{allele}|{sterm}|MODIFIER|{syms[kg]}|{gid}|Transcript|{tc}|{PC}")
                e_site.append(s_i), e_gene.append(kg), e_cls.append(sc)
                genes_here.add(kg)
        two_gene += len(genes_here) >= 2
        csq_text.append(",".join(entries))
    return (csq_text, np.asarray(e_site, np.int64), np.asarray(e_gene, np.int64),
            np.asarray(e_cls, np.int64), two_gene)


def _write_records(writer: _BGZFWriter, n: int, H: np.ndarray, rec: _Records) -> tuple[np.ndarray, int]:
    """VCF text, in chunks of records (genotype text built with numpy, one row per record).

    Returns the (site, sample) carriers of each site's own allele (missing calls count 0) and the
    number of missing calls."""
    order, merge_b = rec.order, rec.merge_b
    R = len(order)
    miss_mask_rows = np.zeros(R, np.int64)
    chunk = max(1, (1 << 24) // max(1, 4 * n))
    carrier = np.zeros((len(merge_b), n), np.uint8)
    for r0 in range(0, R, chunk):
        r1 = min(R, r0 + chunk)
        sa = order[r0:r1]
        code, h0, h1, called, sel = _genotype_codes(H, rec, sa, r0, r1)
        ac1 = ((h0 == 1) & called).sum(1) + ((h1 == 1) & called).sum(1)
        ac2 = ((h0 == 2) & called).sum(1) + ((h1 == 2) & called).sum(1)
        an = 2 * called.sum(1)
        miss_mask_rows[r0:r1] = n - called.sum(1)
        # carriers of each site's own allele, missing calls count 0
        carrier[sa] = ((h0 == 1) | (h1 == 1)) & called
        if sel.any():
            carrier[merge_b[sa][sel]] = (((h0 == 2) | (h1 == 2)) & called)[sel]
        gt = np.empty((r1 - r0, n, 4), np.uint8)
        gt[:, :, :3] = _GT_TEXT[code]
        gt[:, :, 3] = 9
        gt[:, -1, 3] = 10
        writer.write(_record_text(rec, r0, ac1, ac2, an, gt))
    return carrier, int(miss_mask_rows.sum())


def _genotype_codes(H: np.ndarray, rec: _Records, sa: np.ndarray, r0: int, r1: int):
    """Records ``r0:r1`` (first sites ``sa``): genotype codes (3 * low allele + high allele, or
    _MISSING_CODE), the allele (0, 1, 2) of each sample's two haplotypes, the called mask, and
    which records are multi-allelic."""
    A = H[sa].copy()
    sel = rec.merge_b[sa] >= 0
    if sel.any():
        A[sel] += 2 * H[rec.merge_b[sa][sel]]
    h0, h1 = A[:, 0::2], A[:, 1::2]
    lo, hi = np.minimum(h0, h1), np.maximum(h0, h1)
    code = (lo * 3 + hi).astype(np.uint8)
    miss_r, miss_s = rec.miss_r, rec.miss_s
    inside = (miss_r >= r0) & (miss_r < r1)
    code[miss_r[inside] - r0, miss_s[inside]] = _MISSING_CODE
    called = code != _MISSING_CODE
    return code, h0, h1, called, sel


def _record_text(rec: _Records, r0: int, ac1: np.ndarray, ac2: np.ndarray, an: np.ndarray,
                 gt: np.ndarray) -> bytes:
    """The VCF lines of records ``r0:r0 + len(gt)``, with genotype text ``gt``."""
    parts = []
    for i in range(len(gt)):
        r = r0 + i
        s_a = int(rec.order[r])
        an_i = int(an[i])
        if rec.merge_b[s_a] >= 0:
            alt = f"{rec.alts[s_a]},{rec.alt2[s_a]}"
            acs = (int(ac1[i]), int(ac2[i]))
        else:
            alt = rec.alts[s_a]
            acs = (int(ac1[i]),)
        ac_s = ",".join(str(x) for x in acs)
        af_s = ",".join((f"{x / an_i:.6g}" if an_i else ".") for x in acs)
        parts.append(f"{rec.chrom}\t{int(rec.rpos[r])}\t.\t{rec.refs[s_a]}\t{alt}\t.\tPASS\t"
                     f"AC={ac_s};AN={an_i};AF={af_s};CSQ={rec.csq[r]}\tGT\t".encode())
        parts.append(gt[i].tobytes())
    return b"".join(parts)


def _add_burdens(acc: _Accum, sim: _ChromSim, carrier: np.ndarray, e_site: np.ndarray,
                 e_gene: np.ndarray, e_cls: np.ndarray) -> None:
    """Burdens: class-weighted carrier counts per (gene, sample), from the counted CSQ entries."""
    import scipy.sparse as sp

    if not len(e_site):
        return
    g0, g1 = sim.g0, sim.g1
    S, n = carrier.shape
    weights = acc.weights
    np.add.at(acc.n_entries, e_gene, 1)
    W = sp.csr_matrix((weights[e_cls], (e_gene - g0, e_site)), shape=(g1 - g0, S))
    dmg = weights[e_cls] >= DAMAGING_WEIGHT
    Wd = sp.csr_matrix((np.ones(int(dmg.sum())), (e_gene[dmg] - g0, e_site[dmg])), shape=(g1 - g0, S))
    step = 1024                      # sample blocks bound the float copy of the carrier matrix
    for s0 in range(0, n, step):
        block = carrier[:, s0:s0 + step]
        acc.burden[g0:g1, s0:s0 + step] += np.asarray(W @ block, dtype=np.float32)
        acc.damaging[g0:g1, s0:s0 + step] |= np.asarray(Wd @ block) > 0


def _choose_term(terms, u: float) -> int:
    acc = 0.0
    for i, t in enumerate(terms):
        acc += t[2]
        if u < acc:
            return i
    return len(terms) - 1


def _standardise(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    x = np.asarray(x, np.float64)
    m, s = float(x.mean()), float(x.std())
    return (x - m) / (s if s > 0 else 1.0), m, s


def _pick_pair(rng, kegg_sets, sym_index, pool: np.ndarray):
    """A KEGG pathway holding >= 2 genes of ``pool`` and two of them, or None."""
    cands = []
    for name, genes in kegg_sets.items():
        members = sorted({sym_index[g] for g in genes if g in sym_index and pool[sym_index[g]]})
        if len(members) >= 2:
            cands.append((name, members))
    if not cands:
        return None
    name, members = cands[int(rng.integers(0, len(cands)))]
    a, b = rng.choice(len(members), 2, replace=False)
    return name, members[int(a)], members[int(b)]


def _pick_module(rng, kegg_sets, sym_index, gene_pathways, pool: np.ndarray, size: int):
    """A KEGG pathway and ``size`` genes of ``pool`` in it, preferring genes whose only pathway it
    is (then at most 2, 4 pathways, then any), or None."""
    n_path = np.array([len(gene_pathways.get(g, ())) for g in range(len(pool))])
    for max_path in (1, 2, 4, None):
        sub = pool & (n_path >= 1) & ((n_path <= max_path) if max_path else True)
        cands = []
        for name, genes in kegg_sets.items():
            members = sorted({sym_index[g] for g in genes if g in sym_index and sub[sym_index[g]]})
            if len(members) >= size:
                cands.append((name, members))
        if cands:
            name, members = cands[int(rng.integers(0, len(cands)))]
            pick = sorted(int(members[i]) for i in rng.choice(len(members), size, replace=False))
            return name, pick
    return None


def _informative_fraction(burden: np.ndarray) -> np.ndarray:
    """Per gene, the fraction of samples whose burden differs from the gene's most common value."""
    out = np.zeros(len(burden))
    for g in range(len(burden)):
        _, counts = np.unique(np.round(burden[g].astype(np.float64) * 1000), return_counts=True)
        out[g] = 1.0 - counts.max() / burden.shape[1]
    return out


@dataclass
class _GeneStats:
    """Per-gene burden statistics, and what the phenotype needs to pick causal genes and describe them."""
    lay: _Layout
    burden: np.ndarray
    damaging: np.ndarray
    carriers: np.ndarray       # fraction of samples with burden > 0
    informative: np.ndarray    # fraction whose burden departs from the gene's most common value
    dmg_frac: np.ndarray       # fraction carrying a damaging allele
    mean: np.ndarray
    sd: np.ndarray
    f: float                   # min_carrier_fraction
    eligible: np.ndarray       # may be causal
    sym_index: dict            # symbol -> gene index
    gene_pathways: dict        # gene index -> its KEGG pathways

    def z(self, g):
        return (self.burden[g].astype(np.float64) - self.mean[g]) / self.sd[g]

    def gene_info(self, g):
        lay = self.lay
        return {"gene": lay.symbols[g], "gene_id": _gene_ids(int(lay.gene_num[g]))[0],
                "chrom": GRCH38[int(lay.chrom[g])][0], "start": int(lay.start[g]), "end": int(lay.end[g]),
                "kegg": bool(lay.kegg[g]), "carrier_fraction": _r(self.carriers[g], 6),
                "informative_fraction": _r(self.informative[g], 6),
                "damaging_carrier_fraction": _r(self.dmg_frac[g], 6),
                "burden_mean": _r(self.mean[g]), "burden_sd": _r(self.sd[g])}


@dataclass
class _Liability:
    """The liability, its parts (scaled to their variance shares) and the case status."""
    A: np.ndarray              # additive
    E: np.ndarray              # epistatic pairs
    PW: np.ndarray             # pathway modules
    noise: np.ndarray
    scale_a: float             # raw -> liability scale of each part
    scale_e: float
    scale_p: float
    n_cases: int
    threshold: float
    status: np.ndarray
    vL: float                  # liability variance


def _phenotype(p, lay: _Layout, kegg_sets, burden: np.ndarray, damaging: np.ndarray,
               in_vcf: np.ndarray) -> dict:
    rng = _stream(p["seed"], 6)
    st = _gene_stats(p, lay, kegg_sets, burden, damaging, in_vcf)
    used = np.zeros(p["n_genes"], bool)
    pairs, E_raw = _plant_pairs(rng, p, st, kegg_sets, used)
    add, beta, A_raw = _plant_additive(rng, p, st, used)
    used[add] = True
    modules, P_raw = _plant_modules(rng, p, st, kegg_sets, used)
    lb = _liability(rng, p, A_raw, E_raw, P_raw)
    additive = []
    for b, g in zip(beta, add):
        additive.append({**st.gene_info(g), "effect": _r(b * lb.scale_a),
                         "pathways": sorted(st.gene_pathways.get(g, []))})
    for pr in pairs:
        pr["effect"] = _r(pr["sign"] * pr.pop("_mag") * lb.scale_e)
    for md in modules:
        md["effect"] = _r(md.pop("_mag") * lb.scale_p)
    return _truth(p, lb, additive, pairs, modules)


def _gene_stats(p, lay: _Layout, kegg_sets, burden: np.ndarray, damaging: np.ndarray,
                in_vcf: np.ndarray) -> _GeneStats:
    G = p["n_genes"]
    carriers = (burden > 0).mean(axis=1)
    informative = _informative_fraction(burden)
    dmg_frac = damaging.mean(axis=1)
    mean = np.zeros(G)
    sd = np.zeros(G)
    for g0 in range(0, G, 256):     # gene blocks: no float64 copy of the whole burden matrix
        block = burden[g0:g0 + 256].astype(np.float64)
        mean[g0:g0 + 256] = block.mean(axis=1)
        sd[g0:g0 + 256] = block.std(axis=1)
    f = p["min_carrier_fraction"]
    eligible = in_vcf & (sd > 0) & (informative >= f)
    sym_index = {s: i for i, s in enumerate(lay.symbols)}
    gene_pathways: dict[int, list[str]] = {}
    for name, genes in kegg_sets.items():
        for g in genes:
            if g in sym_index:
                gene_pathways.setdefault(sym_index[g], []).append(name)
    return _GeneStats(lay=lay, burden=burden, damaging=damaging, carriers=carriers,
                      informative=informative, dmg_frac=dmg_frac, mean=mean, sd=sd, f=f,
                      eligible=eligible, sym_index=sym_index, gene_pathways=gene_pathways)


def _plant_pairs(rng, p, st: _GeneStats, kegg_sets, used: np.ndarray) -> tuple[list, np.ndarray]:
    """Epistatic pairs: the first is reciprocal-sign (XOR-like), then products, signs alternating.
    Marks their genes in ``used``; returns the pair records and the raw epistatic liability."""
    f, dmg_frac, informative = st.f, st.dmg_frac, st.informative
    base = st.eligible & st.lay.kegg
    pairs = []
    E_raw = np.zeros(p["n_samples"])
    for t in range(p["n_epistatic_pairs"]):
        avail = base & ~used
        kind = "xor" if t == 0 else "product"
        sign = 1.0 if t == 0 else (1.0 if t % 2 == 1 else -1.0)
        if kind == "xor":   # damaging carriers neither rare nor universal
            pools = [avail & (dmg_frac >= lo) & (dmg_frac <= 1 - lo) for lo in (0.3, 0.2, 0.1, max(f, 0.02))]
        else:
            pools = [avail & (informative >= max(f, 0.1)), avail]
        got = None
        for pool in pools:
            got = _pick_pair(rng, kegg_sets, st.sym_index, pool)
            if got is not None:
                break
        if got is None:
            raise EpiflowError(
                f"simulate: n_epistatic_pairs={p['n_epistatic_pairs']} but only {t} pairs of genes with enough "
                "carriers share a KEGG pathway; lower n_epistatic_pairs or raise n_genes")
        pathway, ga, gb = got
        used[[ga, gb]] = True
        if kind == "xor":
            raw = (st.damaging[ga] ^ st.damaging[gb]).astype(np.float64)
        else:
            raw = st.z(ga) * st.z(gb)
        term, tm, tsd = _standardise(raw)
        mag = float(rng.uniform(0.75, 1.25))
        E_raw += sign * mag * term
        shared = sorted(set(st.gene_pathways.get(ga, [])) & set(st.gene_pathways.get(gb, [])))
        pairs.append({"genes": [st.lay.symbols[ga], st.lay.symbols[gb]], "pathway": pathway,
                      "shared_pathways": shared,
                      "type": kind, "sign": int(sign), "_mag": mag, "term_mean": _r(tm), "term_sd": _r(tsd),
                      "gene_a": st.gene_info(ga), "gene_b": st.gene_info(gb)})
    return pairs, E_raw


def _plant_additive(rng, p, st: _GeneStats, used: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """Additive genes: any gene with enough carriers that is not in a pair. Returns the genes,
    their raw effects and the raw additive liability."""
    f = st.f
    n_add = p["n_additive_genes"]
    elig_idx = np.flatnonzero(st.eligible & ~used)
    if n_add > len(elig_idx):
        raise EpiflowError(f"simulate: n_additive_genes={n_add} but only {len(elig_idx)} other genes have burden "
                           f"carriers in {f:g}-{1 - f:g} of samples; lower it or raise n_genes/n_samples")
    add = [int(g) for g in rng.choice(elig_idx, n_add, replace=False)] if n_add else []
    beta = rng.uniform(0.5, 1.5, n_add) * np.where(rng.random(n_add) < 0.5, -1.0, 1.0)
    A_raw = np.zeros(p["n_samples"])
    for b, g in zip(beta, add):
        A_raw += b * st.z(g)
    return add, beta, A_raw


def _plant_modules(rng, p, st: _GeneStats, kegg_sets, used: np.ndarray) -> tuple[list, np.ndarray]:
    """Pathway threshold modules: genes specific to one pathway, a step in their summed burden.
    Marks their genes in ``used``; returns the module records and the raw pathway liability."""
    f = st.f
    modules = []
    P_raw = np.zeros(p["n_samples"])
    for m in range(p["n_pathway_modules"]):
        pool = st.eligible & st.lay.kegg & ~used & (st.informative >= max(f, 0.1))
        got = _pick_module(rng, kegg_sets, st.sym_index, st.gene_pathways, pool, p["module_size"])
        if got is None:
            raise EpiflowError(
                f"simulate: n_pathway_modules={p['n_pathway_modules']} but only {m} KEGG pathways hold "
                f"{p['module_size']} more genes with enough carriers; lower n_pathway_modules or "
                "module_size, or raise n_genes")
        pathway, genes = got
        used[genes] = True
        s = np.sum([st.z(g) for g in genes], axis=0)
        threshold = float(np.quantile(s, 1.0 - p["module_prevalence"]))
        term, tm, tsd = _standardise((s > threshold).astype(np.float64))
        mag = float(rng.uniform(0.75, 1.25))
        P_raw += mag * term
        modules.append({"pathway": pathway, "genes": [st.lay.symbols[g] for g in genes],
                        "n_pathways": [len(st.gene_pathways.get(g, [])) for g in genes],
                        "threshold": _r(threshold), "prevalence": _r(float(np.mean(s > threshold)), 6),
                        "_mag": mag, "term_mean": _r(tm), "term_sd": _r(tsd),
                        "gene_info": [st.gene_info(g) for g in genes]})
    return modules, P_raw


def _liability(rng, p, A_raw: np.ndarray, E_raw: np.ndarray, P_raw: np.ndarray) -> _Liability:
    """Scale the parts to their variance shares, add noise, and call the top liabilities cases."""
    n = p["n_samples"]
    h2a, h2e, h2p = p["h2_additive"], p["h2_epistatic"], p["h2_pathway"]
    sa = np.sqrt(h2a / A_raw.var()) if A_raw.var() > 0 else 0.0
    se = np.sqrt(h2e / E_raw.var()) if E_raw.var() > 0 else 0.0
    sp_ = np.sqrt(h2p / P_raw.var()) if P_raw.var() > 0 else 0.0
    A, E, PW = sa * A_raw, se * E_raw, sp_ * P_raw
    noise, _, _ = _standardise(rng.standard_normal(n))
    noise *= np.sqrt(1.0 - h2a - h2e - h2p)
    L = A + E + PW + noise
    n_cases = int(min(n - 1, max(1, round(p["case_fraction"] * n))))
    order = np.argsort(L, kind="stable")
    k = n - n_cases
    threshold = 0.5 * (L[order[k - 1]] + L[order[k]])
    status = L > threshold
    vL = float(L.var())
    return _Liability(A=A, E=E, PW=PW, noise=noise, scale_a=sa, scale_e=se, scale_p=sp_,
                      n_cases=n_cases, threshold=threshold, status=status, vL=vL)


def _truth(p, lb: _Liability, additive: list, pairs: list, modules: list) -> dict:
    """The phenotype's part of truth.json (and ``_status``, the case status, for samples.tsv)."""
    n = p["n_samples"]
    A, E, PW, status, vL = lb.A, lb.E, lb.PW, lb.status, lb.vL
    pathway_parts = {}
    if modules:
        pathway_parts = {"variance": {"pathway": _r(PW.var())},
                         "h2": {"pathway": _r(PW.var() / vL)},
                         "oracle_auc": {"pathway": _r(rank_auc(status, PW), 6),
                                        "all": _r(rank_auc(status, A + E + PW), 6)}}
    return {
        "_status": status,
        "model": ("liability = sum_g effect_g * z_g + sum_pairs effect_p * std(term_p) + noise; "
                  "z_g = (burden_g - burden_mean) / burden_sd; burden_g = sum over the gene's CSQ entries "
                  "of class_weight * carrier (het or hom-alt; missing = 0); product term = z_a * z_b, "
                  "xor term = damaging_a != damaging_b, damaging_g = the sample carries an alternate allele "
                  "of a damaging_classes entry of gene g; std(x) = (x - term_mean) / term_sd; "
                  "pathway module term = 1[sum over the module's genes of z_g > module threshold]; "
                  "case when liability > threshold"),
        "class_weights": p["class_weights"],
        "damaging_classes": [c for c in COUNTED_CLASSES if p["class_weights"][c] >= DAMAGING_WEIGHT],
        "additive_genes": additive,
        "epistatic_pairs": pairs,
        **({"pathway_modules": modules} if modules else {}),
        "liability": {
            "threshold": _r(lb.threshold),
            "case_fraction_target": p["case_fraction"],
            "case_fraction_realised": _r(lb.n_cases / n),
            "n_cases": lb.n_cases, "n_controls": n - lb.n_cases,
            "variance": {"additive": _r(A.var()), "epistatic": _r(E.var()), "noise": _r(lb.noise.var()),
                         "total": _r(vL), **pathway_parts.get("variance", {})},
            "h2": {"additive": _r(A.var() / vL), "epistatic": _r(E.var() / vL),
                   "total": _r((A + E + PW).var() / vL), **pathway_parts.get("h2", {})},
            "oracle_auc": {"additive": _r(rank_auc(status, A), 6), "epistatic": _r(rank_auc(status, E), 6),
                           "additive_plus_epistatic": _r(rank_auc(status, A + E), 6),
                           **pathway_parts.get("oracle_auc", {})},
        },
    }
