"""Gene-set (GMT) files: one set per line, ``name<TAB>description<TAB>gene<TAB>gene...``."""
from __future__ import annotations

import gzip
from pathlib import Path

from pipelines.errors import InputError


def read_gmt(path) -> dict[str, list[str]]:
    """Read a GMT file (plain or gzipped) into {set name: [genes]} in file order.

    Blank lines are skipped; a line with fewer than two fields or a repeated set name is an error.
    Enrichr-style gene entries such as ``TP53,1.0`` keep only the symbol.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "gene-set file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        sets = _read_sets(path, opener)
    except UnicodeDecodeError:
        raise InputError(path, "not a text gene-set file (binary data)") from None
    return sets


def _read_sets(path: Path, opener) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise InputError(path, "expected name<TAB>description<TAB>genes...", line=lineno)
            name = fields[0].strip()
            if not name:
                raise InputError(path, "empty gene-set name", line=lineno)
            if name in sets:
                raise InputError(path, f"gene set '{name}' appears twice", line=lineno)
            genes = []
            seen = set()
            for g in fields[2:]:
                g = g.split(",")[0].strip()
                if g and g not in seen:
                    seen.add(g)
                    genes.append(g)
            sets[name] = genes
    return sets


def gene_pathway_index(genes, sets: dict[str, list[str]]) -> tuple[list[list[int]], list[str]]:
    """For each gene, the indices of the sets containing it; sets with no cohort gene are dropped.

    Returns (gene_pathways, pathway_names). Genes in no set get an empty list.
    """
    pos = {g: i for i, g in enumerate(genes)}
    names = []
    gene_pathways: list[list[int]] = [[] for _ in genes]
    for name, members in sets.items():
        hit = [pos[g] for g in members if g in pos]
        if not hit:
            continue
        k = len(names)
        names.append(name)
        for i in hit:
            gene_pathways[i].append(k)
    return gene_pathways, names
