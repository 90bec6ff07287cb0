"""The model zoo as the pipeline sees it: a model NAME of params.yaml -> (type, config), and the
gene-gene edge file of ``genegene_pathway``.

Types, schemas, estimators and tunable keys live once in :mod:`models.registry`; this module
only looks a name up in the ``models:`` section and reads files. Every check fails with a
one-line :class:`EpiflowError` before any data is read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from models.registry import REGISTRY, fit_predict, validate_model
from pipelines import config
from pipelines.errors import EpiflowError

# every params file loaded in a process that fits models checks each models: entry in depth
config.register_model_check(validate_model)

__all__ = ["REGISTRY", "fit_predict", "known_types", "load_gene_gene_edges", "resolve"]


def known_types() -> tuple[str, ...]:
    return tuple(REGISTRY)


def resolve(name: str, models_section: dict, params_path="params.yaml") -> tuple[str, dict]:
    """(type, config) of the model called ``name`` in params.yaml, or a one-line error."""
    if name not in models_section:
        listed = ", ".join(models_section) or "none"
        raise EpiflowError(f"unknown model '{name}': {params_path} defines models {listed}")
    return validate_model(name, models_section[name] or {}, str(params_path))


def load_gene_gene_edges(path, genes) -> np.ndarray:
    """(E, 2) gene index pairs from a text file of gene pairs: two whitespace-separated columns
    of gene names (as in the encoded cohort's genes.txt); '#' lines and a header line naming
    no cohort gene are skipped, pairs with a gene outside the cohort are dropped."""
    p = Path(path)
    if not p.is_file():
        raise EpiflowError(f"{p}: gene-gene edge file not found")
    pos = {g: i for i, g in enumerate(genes)}
    pairs = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise EpiflowError(f"{p}:{lineno}: expected two gene names, got {line.strip()!r}")
        a, b = pos.get(parts[0]), pos.get(parts[1])
        if a is not None and b is not None:
            pairs.append((a, b))
    return np.asarray(pairs, np.int64).reshape(-1, 2)
