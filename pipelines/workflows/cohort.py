"""The encoded cohort and its shared CV splits as typed objects: ONE loader each.

:meth:`Cohort.load` reads an ``epiflow encode`` folder (gene x class counts, variant matrix,
labels, sample and gene ids) and, optionally, a GMT of gene sets (gene -> pathway index);
:func:`load_splits` reads ``epiflow splits`` output and checks it was made for this cohort.
Everything that fits models on the cohort (train, tune, learning curve, sweep, benchmarks) gets
its data here.
"""
from __future__ import annotations

import hashlib
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pipelines.io.encoded import load_encoded
from pipelines.errors import EpiflowError
from pipelines.io.gmt import gene_pathway_index, read_gmt
from pipelines.splits import Splits
from pipelines.splits import check_labels, label_hash, load_splits as _load_splits_file
from pipelines.zoo import load_gene_gene_edges


@dataclass(frozen=True)
class Cohort:
    """Samples x features of one cohort, with ids; validated at construction."""
    counts: sp.csr_matrix          # (n, C*G) class x gene counts, column c*G + g
    variants: sp.csr_matrix        # (n, variants)
    y: np.ndarray                  # (n,) int64 0/1 (1 = case)
    sample_ids: np.ndarray         # (n,) str
    genes: tuple                   # G gene ids
    classes: tuple                 # C functional classes
    gene_pathways: list | None = None   # per gene, indices of its gene sets (None: no GMT)
    pathway_names: tuple = ()
    inputs: tuple = field(default=())   # files read (for the data-version tags)

    def __post_init__(self):
        n = len(self.y)
        if self.counts.shape != (n, len(self.classes) * len(self.genes)):
            raise EpiflowError(f"cohort: counts {self.counts.shape} do not match {n} samples x "
                               f"{len(self.classes)} classes x {len(self.genes)} genes")
        if self.variants.shape[0] != n or len(self.sample_ids) != n:
            raise EpiflowError(f"cohort: {self.variants.shape[0]} variant rows and {len(self.sample_ids)} "
                               f"sample ids for {n} labels")
        if not np.isin(self.y, (0, 1)).all():
            raise EpiflowError("cohort: labels must be 0/1")
        if self.gene_pathways is not None and len(self.gene_pathways) != len(self.genes):
            raise EpiflowError(f"cohort: gene_pathways has {len(self.gene_pathways)} entries for "
                               f"{len(self.genes)} genes")

    @property
    def n_samples(self) -> int:
        return int(len(self.y))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @classmethod
    def load(cls, encoded, gmt=None) -> "Cohort":
        """The cohort of an ``epiflow encode`` folder; with ``gmt``, its gene -> pathway index."""
        enc = load_encoded(encoded)
        y = check_labels(enc.samples, Path(encoded) / "samples.tsv")
        inputs = [str(encoded)]
        gene_pathways, names = None, ()
        if gmt:
            gene_pathways, names = gene_pathway_index(enc.genes, read_gmt(gmt))
            inputs.append(str(gmt))
        return cls(counts=enc.counts.tocsr(), variants=enc.variants.tocsr(),
                   y=y,
                   sample_ids=enc.samples["sample_id"].astype(str).to_numpy(),
                   genes=tuple(enc.genes), classes=tuple(enc.classes), gene_pathways=gene_pathways,
                   pathway_names=tuple(names), inputs=tuple(inputs))

    def subset(self, idx) -> "Cohort":
        """The samples ``idx`` only (rows of every matrix, labels and ids)."""
        idx = np.asarray(idx)
        return replace(self, counts=self.counts[idx], variants=self.variants[idx], y=self.y[idx],
                       sample_ids=self.sample_ids[idx])

    def fit_config(self, cfg: dict) -> dict:
        """A model config as the estimator takes it: a ``gene_gene_edges`` file read into
        (E, 2) gene index pairs of this cohort."""
        if isinstance(cfg.get("gene_gene_edges"), str):
            return {**cfg, "gene_gene_edges": load_gene_gene_edges(cfg["gene_gene_edges"], self.genes)}
        return cfg

    def fold_data(self, train_idx, test_idx, reads=("counts", "variants")) -> dict:
        """The keyword arguments of ``ModelType.fit_predict`` for one fold (only the matrices
        in ``reads`` are sliced). Slices come from :func:`fold_rows` (kept for the next model
        on the same fold, within its memory budget); a variant matrix that is the count matrix
        is sliced once."""
        counts = variants = (None, None)
        if "counts" in reads:
            counts = (fold_rows(self.counts, train_idx), fold_rows(self.counts, test_idx))
        if "variants" in reads:
            variants = (counts if self.variants is self.counts and counts[0] is not None else
                        (fold_rows(self.variants, train_idx), fold_rows(self.variants, test_idx)))
        return dict(counts_train=counts[0], counts_test=counts[1],
                    variants_train=variants[0], variants_test=variants[1],
                    y_train=self.y[train_idx], n_classes=self.n_classes,
                    gene_pathways=self.gene_pathways)


# Row slices of a cohort's matrices, kept for the next model on the same fold: a process that
# fits several models on the same folds (a Table-1 benchmark, the learning curve, tuning) slices
# each fold once instead of once per model (a fold of a 4,000 x 23,000-gene exome is ~1 GB and
# takes seconds to copy). The budget is $EPIFLOW_FOLD_MEMORY_GB (default 2; 0: off); least
# recently used slices go first. The slices are read-only by contract (no fit edits its input).
_FOLD_ROWS: "OrderedDict[tuple, tuple]" = OrderedDict()


def _nbytes(M) -> int:
    if sp.issparse(M):
        M = M.tocsr()
        return int(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes)
    return int(np.asarray(M).nbytes)


def fold_rows(M, idx):
    """``M[idx]``, from the process's fold-slice memory when the same rows of the same matrix
    were sliced before (see ``_FOLD_ROWS``)."""
    budget = float(os.environ.get("EPIFLOW_FOLD_MEMORY_GB", "2") or 0) * 1e9
    if budget <= 0:
        return M[idx]
    idx = np.asarray(idx)
    key = (id(M), idx.dtype.str, idx.shape, hashlib.sha1(np.ascontiguousarray(idx).view(np.uint8)).hexdigest())
    got = _FOLD_ROWS.get(key)
    if got is not None and got[0]() is M:
        _FOLD_ROWS.move_to_end(key)
        return got[1]
    sub = M[idx]
    size = _nbytes(sub)
    if size <= budget:
        _FOLD_ROWS[key] = (weakref.ref(M), sub, size)   # a reused id of a dead M is a miss
        total = sum(e[2] for e in _FOLD_ROWS.values())
        while total > budget and len(_FOLD_ROWS) > 1:
            total -= _FOLD_ROWS.popitem(last=False)[1][2]
    return sub


def clear_fold_rows() -> None:
    _FOLD_ROWS.clear()


def load_splits(path, cohort: Cohort, repeats: int | None = None, what: str | None = None) -> Splits:
    """The shared splits at ``path``, checked against the cohort (same samples in the same
    order; both labels in every test fold, as stratified splits of these labels have) and, with
    ``repeats``, that they hold that many repeats (``what`` names the stage in the error)."""
    splits = _load_splits_file(path, cohort.sample_ids)
    if splits.label_sha256 is not None and splits.label_sha256 != label_hash(cohort.y):
        raise EpiflowError(f"{path}: the cohort's labels differ from those the splits were made on "
                           f"(same samples, other y); rerun splits (`epiflow splits` or `dvc repro`)")
    for r in range(splits.repeats):
        for k in range(splits.folds):
            labels = np.unique(cohort.y[splits.fold[r] == k])
            if labels.size < 2:
                raise EpiflowError(f"{path}: test fold {k} of repeat {r} holds only label {labels.tolist()} "
                                   f"of the cohort; were the labels changed after the splits? rerun splits")
    if repeats is not None and repeats > splits.repeats:
        raise EpiflowError(f"{what or 'splits'}: repeats={repeats} but {path} holds "
                           f"{splits.repeats} repeats")
    return splits
