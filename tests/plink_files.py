"""Writing small PLINK 1 filesets for tests (one writer instead of one per test module)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

_CODE = {2: 0b00, 1: 0b10, 0: 0b11, -1: 0b01}   # A1 copies -> the two-bit SNP-major code


def write_bed(prefix: Path, X, chrom=None, bp=None, fam_ids=None) -> None:
    """PREFIX.bed/.bim/.fam whose A1 counts are X (n samples x p SNPs; -1 missing).

    chrom, bp: per SNP (default chromosome 1 at 10, 110, 210, ...); SNP ids rs0, rs1, ...;
    A1 G, A2 A. fam_ids: (FID, IID) per sample (default S00 S00, S01 S01, ...)."""
    X = np.asarray(X)
    n, p = X.shape
    chrom = ["1"] * p if chrom is None else list(chrom)
    bp = [100 * j + 10 for j in range(p)] if bp is None else list(bp)
    fam_ids = [(f"S{i:02d}", f"S{i:02d}") for i in range(n)] if fam_ids is None else list(fam_ids)
    out = bytearray(b"\x6c\x1b\x01")
    for j in range(p):
        col = np.full(-(-n // 4) * 4, 0b11, np.uint8)
        col[:n] = [_CODE[int(v)] for v in X[:, j]]
        q = col.reshape(-1, 4)
        out += (q[:, 0] | q[:, 1] << 2 | q[:, 2] << 4 | q[:, 3] << 6).astype(np.uint8).tobytes()
    prefix = Path(prefix)
    (prefix.parent / (prefix.name + ".bed")).write_bytes(bytes(out))
    (prefix.parent / (prefix.name + ".bim")).write_text(
        "".join(f"{c}\trs{j}\t0\t{b}\tG\tA\n" for j, (c, b) in enumerate(zip(chrom, bp))))
    (prefix.parent / (prefix.name + ".fam")).write_text("".join(f"{f} {i} 0 0 0 -9\n" for f, i in fam_ids))
