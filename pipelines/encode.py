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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.annotate import (DEFAULT_CLASSES, NOT_COUNTED, RANK, ann_layout, csq_layout,
                                fields_from_description, ANN_DEFAULT_FIELDS, parse_info_annotation)
from pipelines.atomic import atomic_dir
from pipelines.errors import EpiflowError, InputError
from pipelines.io.samples import join_samples, read_sample_sheet
from pipelines.io.vcf import VcfReader

COUNT_MODES = ("carrier", "dosage")
ANNOTATION_SOURCES = ("auto", "csq", "ann")


@dataclass
class Encoded:
    """What :func:`load_encoded` returns."""

    counts: sp.csr_matrix          # (n_samples, n_classes * n_genes)
    variants: sp.csr_matrix        # (n_samples, n_variants)
    samples: pd.DataFrame          # sample_id, y, sex
    genes: list[str]
    classes: list[str]
    variant_table: pd.DataFrame    # chrom, pos, id, ref, alt, gene, class

    @property
    def n_samples(self) -> int:
        return self.counts.shape[0]

    def class_gene(self, cls: str, gene: str) -> np.ndarray:
        """Dense count vector (per sample) of one (class, gene)."""
        c, g = self.classes.index(cls), self.genes.index(gene)
        return self.counts[:, c * len(self.genes) + g].toarray().ravel()

    def dense3d(self) -> np.ndarray:
        """(n, C, G) dense array; only for small cohorts and tests."""
        return self.counts.toarray().reshape(self.n_samples, len(self.classes), len(self.genes))


def _layout(reader: VcfReader, annotation: str):
    if annotation not in ANNOTATION_SOURCES:
        raise EpiflowError(f"annotation must be one of {', '.join(ANNOTATION_SOURCES)}, not {annotation!r}")
    order = {"auto": ("CSQ", "ANN"), "csq": ("CSQ",), "ann": ("ANN",)}[annotation]
    for key in order:
        desc = reader.info_description(key)
        if desc is None:
            continue
        try:
            if key == "CSQ":
                fields = fields_from_description(desc)
                if fields is None:
                    raise ValueError(f"INFO/CSQ Description has no 'Format: Allele|Consequence|...' list")
                return csq_layout(fields)
            return ann_layout(fields_from_description(desc, default=ANN_DEFAULT_FIELDS))
        except ValueError as exc:
            raise InputError(reader.path, f"INFO/{key} header: {exc}") from None
    want = " or ".join(f"INFO/{k}" for k in order)
    raise InputError(reader.path, f"annotation field {want} missing from the VCF header "
                     f"(annotation={annotation}); annotate with VEP or snpEff first")


def encode_vcf(vcf, samples_tsv, out_dir, *, classes=DEFAULT_CLASSES, count: str = "carrier",
               pass_only: bool = False, annotation: str = "auto", progress: bool = True,
               regions=None, samples=None, haploid: str = "count", threads: int | None = None,
               log=None) -> dict:
    """Stream ``vcf`` once into gene x class counts and a variant matrix under ``out_dir``.

    Parameters
    ----------
    classes: the class list (column blocks of ``gene_counts``); alleles of other classes are
        skipped (reason ``class_not_listed``).
    count: ``carrier`` (het and hom-alt count 1) or ``dosage`` (ALT copies, 0/1/2).
    pass_only: keep only FILTER PASS/``.`` records.
    annotation: ``auto`` (CSQ, else ANN), ``csq`` or ``ann``.
    regions: optional region strings (``chr1:1-1000``; needs an index).
    samples: optional subset of sample ids (each must be in the VCF and the sheet).
    haploid: ``count`` (haploid calls count allele copies, reported) or ``error``.

    Returns the summary dict (also saved as ``summary.json`` in ``out_dir``).
    """
    t0 = time.perf_counter()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    classes = list(classes)
    if count not in COUNT_MODES:
        raise EpiflowError(f"count must be one of {', '.join(COUNT_MODES)}, not {count!r}")
    if len(set(classes)) != len(classes) or not classes:
        raise EpiflowError(f"classes must be a non-empty list of distinct names, got {classes}")
    unknown_cls = [c for c in classes if c not in RANK or c in NOT_COUNTED]
    if unknown_cls:
        raise EpiflowError(f"unknown class name(s) {', '.join(unknown_cls)}; known: "
                           f"{', '.join(c for c in RANK if c not in NOT_COUNTED)}")
    dosage = count == "dosage"

    sheet = read_sample_sheet(samples_tsv)
    head = VcfReader(vcf, samples=samples)
    head.require_gt()
    join = join_samples(head.samples, sheet, samples_tsv, vcf_path=vcf)
    keep = join.table["sample_id"].tolist()
    head.close()
    reader = VcfReader(vcf, samples=keep, regions=regions, pass_only=pass_only, haploid=haploid,
                       threads=threads)
    if reader.samples != keep:
        raise EpiflowError(f"{vcf}: sample order changed while subsetting")  # cannot happen
    for msg in join.messages():
        log(f"encode: {msg}")
    layout = _layout(reader, annotation)
    log(f"encode: {reader.path} ({reader.kind}), {reader.n_samples} samples, annotation from "
        f"INFO/{layout.key}, count={count}, pass_only={pass_only}")

    class_index = {c: i for i, c in enumerate(classes)}
    gene_ids: dict[str, int] = {}
    idx_chunks: list[np.ndarray] = []
    val_chunks: list[np.ndarray] = []
    nnz: list[int] = []
    pair_allele: list[int] = []
    pair_class: list[int] = []
    pair_gene: list[int] = []
    vrows: list[tuple] = []
    skipped: Counter = Counter()
    class_counts: Counter = Counter()
    unknown_terms: Counter = Counter()
    cache: dict = {}
    n_alleles = 0
    n_counted = 0
    key = layout.key

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc="encode", unit=" rec", file=sys.stderr, mininterval=0.5, unit_scale=True)
    pending = 0
    try:
        for site in reader:
            pending += 1
            if pending == 2048 and bar is not None:
                bar.update(pending)
                pending = 0
            alts = site.alts
            n_alt = len(alts)
            n_alleles += n_alt
            value = site.variant.INFO.get(key)
            if value is None:
                skipped["no_annotation"] += n_alt
                continue
            try:
                per_alt, unk = parse_info_annotation(value, layout, site.ref, alts, classes=classes,
                                                     cache=cache)
            except ValueError as exc:
                raise InputError(site.where, str(exc)) from None
            for t in unk:
                unknown_terms[t] += 1
            calls = None
            for ai in range(n_alt):
                alt = alts[ai]
                if alt == "*" or alt.startswith("<") or "[" in alt or "]" in alt:
                    skipped["symbolic_allele"] += 1
                    continue
                genes = per_alt.get(ai)
                if not genes:
                    skipped["no_gene"] += 1
                    continue
                counted = [(g, c) for g, c in genes.items() if c in class_index]
                if not counted:
                    best = min(genes.values(), key=RANK.__getitem__)
                    skipped[best if best in NOT_COUNTED else "class_not_listed"] += 1
                    continue
                if calls is None:
                    calls = site.calls(dosage)
                idx, vals = calls[ai]
                col = n_counted
                n_counted += 1
                idx_chunks.append(idx)
                val_chunks.append(vals)
                nnz.append(len(idx))
                counted.sort()
                for g, c in counted:
                    gid = gene_ids.get(g)
                    if gid is None:
                        gid = gene_ids[g] = len(gene_ids)
                    pair_allele.append(col)
                    pair_class.append(class_index[c])
                    pair_gene.append(gid)
                    class_counts[c] += 1
                vrows.append((site.chrom, site.pos, site.id, site.ref, alt,
                              ";".join(g for g, _ in counted), ";".join(c for _, c in counted)))
    finally:
        if bar is not None:
            bar.update(pending)
            bar.close()
        reader.close()

    n = reader.n_samples
    genes = sorted(gene_ids)
    remap = np.empty(len(gene_ids), np.int64)
    for new, g in enumerate(genes):
        remap[gene_ids[g]] = new
    G, C = len(genes), len(classes)

    indptr = np.zeros(n_counted + 1, np.int64)
    np.cumsum(np.asarray(nnz, np.int64), out=indptr[1:])
    indices = np.concatenate(idx_chunks) if idx_chunks else np.zeros(0, np.int32)
    data = np.concatenate(val_chunks) if val_chunks else np.zeros(0, np.uint8)
    del idx_chunks, val_chunks
    V = sp.csc_matrix((data, indices, indptr), shape=(n, n_counted)).tocsr()
    V.sort_indices()
    pa = np.asarray(pair_allele, np.int64)
    pc = np.asarray(pair_class, np.int64) * G + remap[np.asarray(pair_gene, np.int64)] if G else pa
    M = sp.csr_matrix((np.ones(len(pa), np.int32), (pa, pc)), shape=(n_counted, C * G))
    counts = (V.astype(np.int32) @ M).tocsr()
    counts.eliminate_zeros()
    counts.sort_indices()
    top = int(counts.data.max()) if counts.nnz else 0
    counts = counts.astype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)

    haploid_total = sum(reader.haploid_calls.values())
    if haploid_total:
        log(f"encode: {haploid_total} haploid call(s) counted as one allele copy: "
            + ", ".join(f"{c}: {k}" for c, k in sorted(reader.haploid_calls.items())))
    if unknown_terms:
        log(f"encode: consequence terms not in the SO table (ignored): "
            + ", ".join(f"{t} ({k})" for t, k in unknown_terms.most_common(10)))
    summary = {
        "vcf": str(vcf), "samples_sheet": str(samples_tsv), "annotation": layout.key,
        "count": count, "pass_only": bool(pass_only), "regions": reader.regions,
        "n_samples": n, "n_cases": int(join.table["y"].sum()),
        "n_controls": int((join.table["y"] == 0).sum()),
        "n_records": reader.n_records, "n_filtered": reader.n_filtered,
        "n_alleles": n_alleles, "n_counted": n_counted, "n_genes": G, "n_classes": C,
        "class_counts": {c: int(class_counts.get(c, 0)) for c in classes},
        "skipped": dict(sorted(skipped.items())),
        "haploid_calls": dict(sorted(reader.haploid_calls.items())),
        "polyploid_calls": reader.polyploid_calls,
        "unknown_terms": dict(unknown_terms.most_common(50)),
        "counts_nnz": int(counts.nnz), "variants_nnz": int(V.nnz),
        "samples_join": join.report(),
    }
    vt = pd.DataFrame(vrows, columns=["chrom", "pos", "id", "ref", "alt", "gene", "class"])
    with atomic_dir(out_dir) as tmp:
        sp.save_npz(tmp / "gene_counts.npz", counts, compressed=True)
        sp.save_npz(tmp / "variants.npz", V, compressed=True)
        join.table.assign(y=join.table["y"].astype(int)).to_csv(tmp / "samples.tsv", sep="\t", index=False)
        (tmp / "genes.txt").write_text("".join(g + "\n" for g in genes))
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
        vt.to_csv(tmp / "variants.tsv", sep="\t", index=False)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log(f"encode: {reader.n_records} records, {n_alleles} ALT alleles, {n_counted} counted in {G} genes "
        f"-> {out_dir} ({summary['seconds']:.1f} s)")
    return summary


def load_encoded(path) -> Encoded:
    """Load the output directory of :func:`encode_vcf`."""
    d = Path(path)
    need = ["gene_counts.npz", "variants.npz", "samples.tsv", "genes.txt", "classes.txt", "variants.tsv"]
    missing = [f for f in need if not (d / f).is_file()]
    if missing:
        raise InputError(d, f"not an encoded cohort (missing {', '.join(missing)}); run `epiflow encode`")
    counts = sp.load_npz(d / "gene_counts.npz").tocsr()
    variants = sp.load_npz(d / "variants.npz").tocsr()
    samples = pd.read_csv(d / "samples.tsv", sep="\t", dtype={"sample_id": str, "sex": str},
                          keep_default_na=False)
    genes = (d / "genes.txt").read_text().split("\n")[:-1]
    classes = (d / "classes.txt").read_text().split("\n")[:-1]
    vt = pd.read_csv(d / "variants.tsv", sep="\t", dtype={"chrom": str, "id": str, "ref": str, "alt": str,
                                                          "gene": str, "class": str},
                     keep_default_na=False)
    n = len(samples)
    if counts.shape != (n, len(classes) * len(genes)) or variants.shape != (n, len(vt)):
        raise InputError(d, f"inconsistent encoded cohort: counts {counts.shape}, variants {variants.shape}, "
                         f"{n} samples, {len(classes)} classes, {len(genes)} genes, {len(vt)} variants")
    return Encoded(counts, variants, samples, genes, classes, vt)
