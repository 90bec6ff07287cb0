"""PLINK 1 binary genotypes (.bed/.bim/.fam, plain or gzipped) and BIMBAM mean genotypes.

Dosage convention
-----------------
:func:`read_bed` returns an ``int8`` matrix of **A1 allele counts**, A1 being column 5 of the
.bim file, exactly as PLINK 1.x counts it (``--recode A`` writes the same numbers). The two bits
of a genotype in SNP-major .bed files decode as::

    00 -> 2 (homozygous A1)   10 -> 1 (heterozygous)   11 -> 0 (homozygous A2)   01 -> missing (-1)

The matrix is n samples x p SNPs in Fortran order, i.e. each SNP's column is contiguous (the
.bed file's own layout, so no transpose is done and ``dosage[:, a:b]`` is a cheap view whose
transpose is a C-contiguous SNP-major tile). Missing calls are ``-1`` (``MISSING``); the boolean
mask is ``dosage < 0``.

BIMBAM mean-genotype files (``rsid, allele1, allele2, d_1 ... d_n``; comma and/or whitespace
separated, ``NA`` missing) count **allele1** (column 2, the minor allele in GEMMA's examples).
GEMMA's mouse_hs1940 files agree with the PLINK copy in orientation: BIMBAM allele1 equals BIM
A1 for every SNP and the BIMBAM dosage equals the BED A1 count on every cell that is not
mean-imputed (tests/test_plink.py checks this cell by cell). For files where the orientation
differs, :func:`align_bimbam_to_bim` flips dosages to count the BIM A1 allele.

Decoding uses a 256-entry lookup table on the packed bytes (one gather, no per-genotype Python),
so HLC (427 x 358,499) loads from its .gz in about a second. A .bed whose size disagrees with the
.bim/.fam line counts, a bad magic number or a truncated gzip raise a one-line
:class:`~pipelines.errors.InputError`.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputError

__all__ = [
    "MISSING",
    "Genotypes",
    "plink_paths",
    "read_bim",
    "read_fam",
    "read_bed",
    "decode_bed_bytes",
    "read_bimbam",
    "align_bimbam_to_bim",
]

MISSING = -1
_MAGIC = b"\x6c\x1b"

# code (2 bits, little end first within a byte) -> A1 count
_CODE_TO_DOSAGE = np.array([2, MISSING, 1, 0], dtype=np.int8)
# 256 packed bytes -> 4 dosages each
_LUT = _CODE_TO_DOSAGE[(np.arange(256, dtype=np.uint16)[:, None] >> (2 * np.arange(4))) & 3]
_LUT32 = np.ascontiguousarray(_LUT).view(np.uint32).ravel()  # the 4 dosages of a byte as one 32-bit word


@dataclass
class Genotypes:
    """An int8 dosage matrix with its SNP and sample tables.

    dosage: (n, p) int8, A1 counts 0/1/2, ``-1`` missing; Fortran order (SNP columns contiguous).
    snps: DataFrame ``chrom`` (str), ``snp``, ``cm`` (float), ``bp`` (int64), ``a1``, ``a2``
    (``a1`` is the counted allele).
    samples: DataFrame ``fid``, ``iid``, ``father``, ``mother``, ``sex``, ``pheno`` (strings, as in
    the .fam; extra .fam columns, as GEMMA writes them, are kept as ``pheno2``, ``pheno3``, ...).
    """

    dosage: np.ndarray
    snps: pd.DataFrame
    samples: pd.DataFrame
    source: str = ""
    notes: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.dosage.shape[0])

    @property
    def p(self) -> int:
        return int(self.dosage.shape[1])

    @property
    def missing(self) -> np.ndarray:
        """Boolean (n, p) mask of missing calls."""
        return self.dosage < 0

    def missing_rate(self) -> float:
        return float(np.count_nonzero(self.dosage < 0)) / max(1, self.dosage.size)

    def snp_major(self) -> np.ndarray:
        """The (p, n) C-contiguous view (no copy when the matrix came from :func:`read_bed`)."""
        return self.dosage.T

    def subset(self, samples=None, snps=None) -> "Genotypes":
        """A new object restricted to sample and/or SNP indices (or boolean masks), order kept as given."""
        d = self.dosage
        smp, snp = self.samples, self.snps
        if snps is not None:
            idx = _as_index(snps, self.p)
            d = np.asfortranarray(d[:, idx])
            snp = snp.iloc[idx].reset_index(drop=True)
        if samples is not None:
            idx = _as_index(samples, self.n)
            d = np.asfortranarray(d[idx, :])
            smp = smp.iloc[idx].reset_index(drop=True)
        return Genotypes(d, snp, smp, self.source, list(self.notes))


def _as_index(sel, size: int) -> np.ndarray:
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if sel.shape != (size,):
            raise ValueError(f"boolean selection of length {sel.shape} for {size} items")
        return np.flatnonzero(sel)
    return sel.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------
# files


def _with_gz(path: Path) -> Path | None:
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def plink_paths(prefix) -> tuple[Path, Path, Path]:
    """(bed, bim, fam) paths for a PLINK prefix, each plain or ``.gz``.

    ``prefix`` may also name one of the three files (``data/x.bed`` or ``data/x.bed.gz``).
    """
    prefix = str(prefix)
    for ext in (".bed.gz", ".bim.gz", ".fam.gz", ".bed", ".bim", ".fam"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
            break
    out = []
    for ext in ("bed", "bim", "fam"):
        p = _with_gz(Path(f"{prefix}.{ext}"))
        if p is None:
            raise InputError(f"{prefix}.{ext}", "not found (nor .gz)")
        out.append(p)
    return tuple(out)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with open(path, "rb") as fh:
                raw = fh.read()
            return _gunzip(raw, path)
        return path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None


def _gunzip(raw: bytes, path: Path) -> bytes:
    """Decompress (possibly multi-member / bgzip) gzip data; refuse truncated or corrupt files."""
    out = []
    pos = 0
    while pos < len(raw):
        d = zlib.decompressobj(wbits=31)
        try:
            out.append(d.decompress(raw[pos:]))
            out.append(d.flush())
        except zlib.error as exc:
            raise InputError(path, f"corrupt gzip data ({exc})") from None
        if not d.eof:
            raise InputError(path, "truncated gzip file (unexpected end of data)")
        pos = len(raw) - len(d.unused_data)
        if not d.unused_data.strip(b"\x00"):
            break
    return b"".join(out)


def _text(path: Path) -> io.StringIO:
    return io.StringIO(_read_bytes(path).decode("utf-8", errors="replace"))


def _split_table(path: Path, min_cols: int, what: str) -> list[list[str]]:
    rows = []
    for no, line in enumerate(_text(path), 1):
        f = line.split()
        if not f:
            continue
        if len(f) < min_cols:
            raise InputError(path, f"{what} line has {len(f)} fields, expected {min_cols}", line=no)
        rows.append(f)
    return rows


def read_bim(path) -> pd.DataFrame:
    """The .bim table: chrom (str), snp, cm (float), bp (int64), a1, a2 (a1 is counted)."""
    path = Path(path)
    rows = _split_table(path, 6, ".bim")
    if not rows:
        raise InputError(path, "empty .bim file")
    bad = next((k for k, r in enumerate(rows) if len(r) != 6), None)
    if bad is not None:
        raise InputError(path, f".bim line has {len(rows[bad])} fields, expected 6", line=bad + 1)
    arr = np.array(rows, dtype=object)
    try:
        cm = arr[:, 2].astype(np.float64)
    except ValueError:
        k = next(i for i, v in enumerate(arr[:, 2]) if not _is_float(v))
        raise InputError(path, f"genetic position {arr[k, 2]!r} is not a number", line=k + 1) from None
    try:
        bp = arr[:, 3].astype(np.int64)
    except ValueError:
        k = next(i for i, v in enumerate(arr[:, 3]) if not _is_int(v))
        raise InputError(path, f"base-pair position {arr[k, 3]!r} is not an integer", line=k + 1) from None
    return pd.DataFrame({
        "chrom": arr[:, 0].astype(str), "snp": arr[:, 1].astype(str), "cm": cm, "bp": bp,
        "a1": arr[:, 4].astype(str), "a2": arr[:, 5].astype(str),
    })


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _is_int(v) -> bool:
    try:
        int(v)
        return True
    except ValueError:
        return False


def read_fam(path) -> pd.DataFrame:
    """The .fam table as strings: fid, iid, father, mother, sex, pheno (+ pheno2... for extra columns).

    Duplicate (fid, iid) pairs are refused.
    """
    path = Path(path)
    rows = _split_table(path, 6, ".fam")
    if not rows:
        raise InputError(path, "empty .fam file")
    width = max(len(r) for r in rows)
    ragged = next((k for k, r in enumerate(rows) if len(r) != width), None)
    if ragged is not None:
        raise InputError(path, f".fam line has {len(rows[ragged])} fields, other lines {width}", line=ragged + 1)
    cols = ["fid", "iid", "father", "mother", "sex", "pheno"] + [f"pheno{k}" for k in range(2, width - 4)]
    fam = pd.DataFrame(rows, columns=cols, dtype=str)
    dup = fam.duplicated(["fid", "iid"])
    if dup.any():
        k = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(path, f"duplicate sample id {fam.fid[k]} {fam.iid[k]}", line=k + 1)
    return fam


def decode_bed_bytes(packed: np.ndarray, n: int) -> np.ndarray:
    """(p, ceil(n/4)) uint8 packed SNP-major rows -> (p, n) int8 A1 counts (-1 missing)."""
    packed = np.asarray(packed, dtype=np.uint8)
    p, nb = packed.shape
    out = _LUT32[packed].view(np.int8)  # (p, nb) words -> (p, 4 nb) int8: one lookup per byte
    return out[:, :n] if nb * 4 != n else out


def read_bed(prefix, snps=None, samples=None, chunk_snps: int = 65536) -> Genotypes:
    """Read a PLINK 1 fileset into :class:`Genotypes` (int8 A1 counts, -1 missing).

    prefix: path prefix (``data/x`` for data/x.bed[.gz], .bim[.gz], .fam[.gz]) or one of the files.
    snps / samples: optional indices or boolean masks to keep (decoding only the kept SNPs).
    """
    bed_path, bim_path, fam_path = plink_paths(prefix)
    bim = read_bim(bim_path)
    fam = read_fam(fam_path)
    p, n = len(bim), len(fam)
    raw = _read_bytes(bed_path)
    if len(raw) < 3 or raw[:2] != _MAGIC:
        raise InputError(bed_path, "not a PLINK .bed file (bad magic number)")
    mode = raw[2]
    nb = (n + 3) // 4
    if mode == 1:  # SNP-major (every PLINK since 1.0)
        expected = 3 + p * nb
        if len(raw) != expected:
            raise InputError(
                bed_path,
                f"size {len(raw)} bytes disagrees with {bim_path.name} ({p} SNPs) and {fam_path.name} "
                f"({n} samples): expected {expected}")
        packed = np.frombuffer(raw, dtype=np.uint8, offset=3).reshape(p, nb)
        snp_idx = None if snps is None else _as_index(snps, p)
        rows = packed if snp_idx is None else packed[snp_idx]
        out = np.empty((rows.shape[0], n), dtype=np.int8)
        for a in range(0, rows.shape[0], chunk_snps):
            out[a:a + chunk_snps] = decode_bed_bytes(rows[a:a + chunk_snps], n)
    elif mode == 0:  # individual-major (PLINK < 1.0)
        nbs = (p + 3) // 4
        expected = 3 + n * nbs
        if len(raw) != expected:
            raise InputError(
                bed_path,
                f"size {len(raw)} bytes disagrees with {bim_path.name} ({p} SNPs) and {fam_path.name} "
                f"({n} samples): expected {expected} (individual-major)")
        packed = np.frombuffer(raw, dtype=np.uint8, offset=3).reshape(n, nbs)
        snp_idx = None if snps is None else _as_index(snps, p)
        full = decode_bed_bytes(packed, p)  # (n, p)
        out = np.ascontiguousarray((full if snp_idx is None else full[:, snp_idx]).T)
    else:
        raise InputError(bed_path, f"unknown .bed mode byte {mode} (expected 1, SNP-major)")
    del raw
    if snps is not None:
        bim = bim.iloc[_as_index(snps, p)].reset_index(drop=True)
    g = Genotypes(out.T, bim, fam, source=str(bed_path))
    if samples is not None:
        g = g.subset(samples=samples)
    return g


# ---------------------------------------------------------------------------------------------
# BIMBAM


def read_bimbam(path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a BIMBAM mean-genotype file.

    Returns (snps, dosage): snps has columns ``snp``, ``a1`` (allele1, the counted one), ``a2``;
    dosage is a (p, n) float64 array of allele1 dosages with NaN for ``NA``.
    """
    path = Path(path)
    text = _read_bytes(path).decode("utf-8", errors="replace")
    first = text.split("\n", 1)[0]
    if not first.strip():
        raise InputError(path, "empty BIMBAM file")
    sep = "," if "," in first else r"\s+"
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, header=None, skipinitialspace=True,
                         na_values=["NA", "na", "NaN", "nan", "."], keep_default_na=False,
                         dtype={0: str, 1: str, 2: str}, engine="c" if sep == "," else "python")
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(path, f"not a BIMBAM mean-genotype table ({str(exc).splitlines()[0]})") from None
    if df.shape[1] < 4:
        raise InputError(path, f"BIMBAM rows need rsid, allele1, allele2 and dosages; found {df.shape[1]} fields")
    vals = df.iloc[:, 3:]
    try:
        dos = vals.to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        bad = vals.apply(pd.to_numeric, errors="coerce").isna() & vals.notna()
        r, c = np.argwhere(bad.to_numpy())[0]
        raise InputError(path, f"dosage {vals.iat[r, c]!r} is not a number", line=int(r) + 1) from None
    if np.nanmin(dos, initial=0.0) < 0 or np.nanmax(dos, initial=0.0) > 2:
        raise InputError(path, "BIMBAM dosages must lie in [0, 2]")
    snps = pd.DataFrame({"snp": df[0].str.strip().to_numpy(), "a1": df[1].str.strip().to_numpy(),
                         "a2": df[2].str.strip().to_numpy()})
    return snps, dos


def align_bimbam_to_bim(bimbam_snps: pd.DataFrame, dosage: np.ndarray, bim: pd.DataFrame):
    """Reorder/flip BIMBAM dosages to the .bim SNP order, counting the BIM A1 allele.

    Returns (dosage (p_bim, n) float64 with NaN where the SNP is absent from the BIMBAM file,
    flipped: bool per BIM SNP where allele1 == A2 and allele2 == A1). SNPs whose alleles match in
    neither orientation raise InputError; SNPs whose two alleles are written alike (monomorphic
    markers such as ``A A``) are taken as not flipped.
    """
    pos = pd.Series(np.arange(len(bimbam_snps)), index=bimbam_snps["snp"].to_numpy())
    pos = pos[~pos.index.duplicated()]
    idx = pos.reindex(bim["snp"].to_numpy()).to_numpy()
    present = ~np.isnan(idx)
    out = np.full((len(bim), dosage.shape[1]), np.nan)
    flipped = np.zeros(len(bim), dtype=bool)
    k = idx[present].astype(np.int64)
    b1 = bimbam_snps["a1"].to_numpy()[k]
    b2 = bimbam_snps["a2"].to_numpy()[k]
    p1 = bim["a1"].to_numpy()[present]
    p2 = bim["a2"].to_numpy()[present]
    same = (b1 == p1) & (b2 == p2)
    flip = (b1 == p2) & (b2 == p1) & ~same
    bad = ~(same | flip)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError("BIMBAM", f"SNP {bim['snp'].to_numpy()[present][j]}: alleles {b1[j]}/{b2[j]} "
                                   f"match neither orientation of the BIM's {p1[j]}/{p2[j]}")
    d = dosage[k]
    d = np.where(flip[:, None], 2.0 - d, d)
    out[present] = d
    flipped[np.flatnonzero(present)[flip]] = True
    return out, flipped
