"""The encoded cohort on disk (the output folder of ``epiflow encode``): gene x class counts and
the variant matrix as sparse npz with sample, gene, class and variant tables. Reading it needs
no VCF machinery, so the model stages depend on this file, not on the encoder."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.errors import InputError
from pipelines.npz import save_npz


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


def save_csr(path, m: sp.csr_matrix, level: int = 1) -> None:
    """Write a CSR matrix in scipy's ``save_npz`` layout (readable by ``scipy.sparse.load_npz``),
    deflated at a fast level: ``savez_compressed`` spends more time than it saves on big cohorts."""
    save_npz(path, {"indices": m.indices, "indptr": m.indptr, "format": np.array(b"csr"),
                    "shape": np.array(m.shape), "data": m.data}, level=level)


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load(path: Path, read):
    """``read(path)``, with a damaged file (truncated, empty, not what it should be) as a
    one-line :class:`InputError` naming it."""
    try:
        return read(path)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:   # (pandas' errors too)
        why = _first_line(exc)
        why = why if len(why) <= 80 else why[:77] + "..."
        raise InputError(path, f"unreadable ({type(exc).__name__}: {why}); the encoded cohort is "
                               "damaged: rerun `epiflow encode`") from None


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def load_encoded(path) -> Encoded:
    """Load the output directory of :func:`encode_vcf`."""
    d = Path(path)
    need = ["gene_counts.npz", "variants.npz", "samples.tsv", "genes.txt", "classes.txt", "variants.tsv"]
    missing = [f for f in need if not (d / f).is_file()]
    if missing:
        raise InputError(d, f"not an encoded cohort (missing {', '.join(missing)}); run `epiflow encode`")
    counts = _load(d / "gene_counts.npz", lambda p: sp.load_npz(p).tocsr())
    variants = _load(d / "variants.npz", lambda p: sp.load_npz(p).tocsr())
    samples = _load(d / "samples.tsv", lambda p: pd.read_csv(p, sep="\t", dtype={"sample_id": str, "sex": str},
                                                            keep_default_na=False))
    genes = _load(d / "genes.txt", _lines)
    classes = _load(d / "classes.txt", _lines)
    vt = _load(d / "variants.tsv", lambda p: pd.read_csv(
        p, sep="\t", dtype={"chrom": str, "id": str, "ref": str, "alt": str, "gene": str, "class": str},
        keep_default_na=False))
    n = len(samples)
    if counts.shape != (n, len(classes) * len(genes)) or variants.shape != (n, len(vt)):
        raise InputError(d, f"inconsistent encoded cohort: counts {counts.shape}, variants {variants.shape}, "
                         f"{n} samples, {len(classes)} classes, {len(genes)} genes, {len(vt)} variants")
    return Encoded(counts, variants, samples, genes, classes, vt)
