"""Streaming VCF/BCF reader (cyvcf2) that turns genotypes into per-ALT carrier/dosage vectors.

One record at a time, never the whole cohort: :class:`VcfReader` yields :class:`Site` objects;
``site.calls()`` gives, for each ALT allele, the indices of the samples that carry it and their
values (1 for a carrier, or the ALT allele count 1/2 with ``dosage=True``).

Genotype conventions (from the allele indices of GT, so multi-allelic records are counted per ALT):

* ``./.`` (missing) carries nothing; a half-missing call ``./1`` carries the one observed ALT
  (dosage 1), ``0/.`` carries nothing.
* Haploid calls (chrX/chrY in males, mitochondria) count the allele copies they hold: ``1`` is a
  carrier with dosage 1, never a hom-alt 2. They are counted per chromosome in
  :attr:`VcfReader.haploid_calls` so the caller can report them; ``haploid="error"`` refuses them.
* A GT allele index beyond the record's ALT count is a malformed record.

Errors are :class:`~pipelines.errors.InputError` with the file and line (text VCF) or record
number (BCF, region queries), with a diagnosis of the offending line where htslib gives none.
htslib's own ``[E::...]`` / ``[W::...]`` lines are silenced (:func:`quiet_htslib`); what htslib
lets through is refused as well: a header line among the records, POS beyond int32, an empty REF
or ALT and, in a text VCF read whole (its lines are read beside htslib's), a record with another
number of columns than the header or a QUAL that is not a number. A damaged compressed file is
named as such ("truncated or corrupt compressed file (BGZF)"), a BGZF file without its
end-of-file block gives a warning (:attr:`VcfReader.warnings`).
"""
from __future__ import annotations

import gzip
import io
import re
import warnings
import zlib
from pathlib import Path

import numpy as np

from pipelines.errors import InputError

_REGION_RE = re.compile(r"^([^:]+)(?::([\d,]+)(?:-([\d,]+))?)?$")
MAX_POS = 2**31 - 1          # the largest VCF/BCF position (BCF stores it as int32)
# the 28-byte empty block that ends every complete BGZF file (SAM/BAM spec, 4.1.2)
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_HTSLIB_QUIET = False


def quiet_htslib() -> None:
    """Turn off htslib's own ``[E::...]`` / ``[W::...]`` lines on stderr: every problem they
    describe reaches the user as one :class:`InputError` line instead. htslib is linked into
    cyvcf2's extension module, whose ``hts_set_log_level`` sets the level that copy reads."""
    global _HTSLIB_QUIET
    if _HTSLIB_QUIET:
        return
    _HTSLIB_QUIET = True
    try:
        import ctypes

        import cyvcf2.cyvcf2 as ext

        ctypes.CDLL(ext.__file__).hts_set_log_level(0)      # HTS_LOG_OFF
    except (ImportError, OSError, AttributeError):           # pragma: no cover - other builds
        pass


def _is_bgzf(path: Path) -> bool:
    """Whether the file starts with a BGZF block header (gzip with the ``BC`` extra subfield)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    return len(head) == 16 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC"


def bgzf_eof_missing(path) -> bool:
    """A BGZF file (bgzipped VCF, BCF) without the end-of-file block: possibly truncated."""
    path = Path(path)
    if not _is_bgzf(path):
        return False
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < len(BGZF_EOF):
            return True
        fh.seek(-len(BGZF_EOF), 2)
        return fh.read() != BGZF_EOF


def _open_text(path: Path):
    """Open a VCF as text, transparently decompressing gzip/bgzip."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def file_kind(path: Path) -> str:
    """``bcf``, ``vcf.gz`` or ``vcf`` from the file's content (not its name)."""
    with open(path, "rb") as fh:
        head = fh.read(18)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(5)
        except (OSError, EOFError):
            return "vcf.gz"
        return "bcf" if inner[:3] == b"BCF" else "vcf.gz"
    if head[:3] == b"BCF":
        return "bcf"
    return "vcf"


def _header_info(path: Path) -> tuple[int, list[str] | None, list[str]]:
    """(number of header lines, #CHROM columns or None, problems found) of a text VCF."""
    n = 0
    problems = []
    try:
        with _open_text(path) as fh:
            for line in fh:
                n += 1
                if line.startswith("#CHROM"):
                    raw = line.rstrip("\n").rstrip("\r")
                    cols = raw.split("\t")
                    fixed = ["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"]
                    if cols[:8] != fixed[:8] or (len(cols) > 8 and cols[8] != "FORMAT"):
                        if " " in raw and raw.split()[:8] == fixed[:8]:
                            problems.append("the #CHROM header line is not tab-separated (spaces found)")
                        else:
                            problems.append("the #CHROM header line does not start with the 8 (or 9 with "
                                            "FORMAT) fixed VCF column names")
                    elif len(cols) == 9:
                        problems.append("the #CHROM line has a FORMAT column but no sample columns")
                    elif len(cols) > 9:
                        seen, dup = set(), []
                        for s in cols[9:]:
                            if s in seen:
                                dup.append(s)
                            seen.add(s)
                        if dup:
                            problems.append(f"duplicate sample ids in the header: {_few(dup)}")
                    return n, cols, problems
                if not line.startswith("##"):
                    problems.append(f"line {n} is not a header line but no #CHROM line came before it")
                    return n, None, problems
                if line.startswith("##INFO") or line.startswith("##FORMAT"):
                    if "\t" in line.rstrip("\n"):
                        problems.append(f"header line {n} contains a tab: {line.strip()[:60]!r}")
    except (OSError, EOFError) as exc:
        problems.append(f"cannot decompress the header ({exc})")
        return n, None, problems
    problems.append("no #CHROM header line")
    return n, None, problems


def _few(items, k: int = 5) -> str:
    items = list(items)
    s = ", ".join(map(str, items[:k]))
    return s + (f" (and {len(items) - k} more; {len(items)} in all)" if len(items) > k else "")


def parse_region(text: str) -> tuple[str, int | None, int | None]:
    """``chr1``, ``chr1:1000``, ``chr1:1,000-2,000`` -> (chrom, start, end), 1-based inclusive."""
    m = _REGION_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a region (CHROM[:START[-END]]): {text!r}")
    chrom, a, b = m.groups()
    start = int(a.replace(",", "")) if a else None
    end = int(b.replace(",", "")) if b else (start if a else None)
    if start is not None and end is not None and end < start:
        raise ValueError(f"region end before start: {text!r}")
    return chrom, start, end


class Site:
    """One VCF record with lazy genotype decoding."""

    __slots__ = ("chrom", "pos", "id", "ref", "alts", "filter", "index", "variant", "_x", "_reader")

    def __init__(self, reader, variant, index):
        self._reader = reader
        self.variant = variant
        self.chrom = variant.CHROM
        self.pos = variant.POS
        self.id = variant.ID or "."
        self.ref = variant.REF
        self.alts = variant.ALT
        self.filter = variant.FILTER          # None for PASS / '.'
        self.index = index                    # 0-based record index in the file (or region query)
        self._x = None

    @property
    def where(self) -> str:
        """``file:line`` (text VCF read whole) or ``file: chrom:pos``, for messages."""
        return self._reader.where(self.variant, self.index)

    @property
    def line(self) -> int | None:
        return self._reader.line_of(self.index)

    def info(self, key):
        return self.variant.INFO.get(key)

    def alleles(self) -> np.ndarray:
        """GT allele indices, shape (n_samples, ploidy), int16: -1 missing, -2 absent (haploid)."""
        if self._x is None:
            self._x = self._reader._decode(self)
        return self._x

    def calls(self, dosage: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per ALT allele: (int32 sample indices of carriers, uint8 values).

        Values are 1 (carrier) or, with ``dosage=True``, the number of copies of that ALT.
        """
        if not self.alts:
            return []                         # ALT '.': nothing to carry (GT may be absent)
        x = self.alleles()
        p = x.shape[1]
        out = []
        for k in range(1, len(self.alts) + 1):
            flat = np.flatnonzero(x.ravel() == k) if len(self.alts) > 1 else np.flatnonzero(x.ravel() > 0)
            if p == 1:
                idx = flat.astype(np.int32)
                vals = np.ones(len(idx), np.uint8)
            else:
                s = flat // p
                if len(s) > 1:
                    first = np.empty(len(s), bool)
                    first[0] = True
                    np.not_equal(s[1:], s[:-1], out=first[1:])
                    starts = np.flatnonzero(first)
                    idx = s[starts].astype(np.int32)
                    if dosage:
                        vals = np.diff(np.append(starts, len(s))).astype(np.uint8)
                    else:
                        vals = np.ones(len(idx), np.uint8)
                else:
                    idx = s.astype(np.int32)
                    vals = np.ones(len(idx), np.uint8)
            out.append((idx, vals))
        return out

    def called(self) -> np.ndarray:
        """Boolean per sample: every allele of the call is present (not ``.``)."""
        x = self.alleles()
        return ~((x == -1).any(axis=1))

    def dosage(self, k: int = 1) -> np.ndarray:
        """int8 copies of ALT ``k`` per sample, -1 where the call is missing or half-missing."""
        x = self.alleles()
        d = (x == k).sum(axis=1, dtype=np.int8)
        d[(x == -1).any(axis=1)] = -1
        return d


class VcfReader:
    """Stream a VCF / VCF.gz / BCF with cyvcf2.

    Parameters
    ----------
    path: the file (plain, bgzipped, or BCF).
    samples: keep only these samples, in the file's order (htslib subsets while parsing).
    regions: ``["chr1:100-200", "chr2"]``; needs a .tbi/.csi index; overlapping regions are merged.
    pass_only: skip records whose FILTER is neither PASS nor ``.`` (counted in :attr:`n_filtered`).
    haploid: ``"count"`` (count allele copies and report, the default) or ``"error"``.
    threads: htslib decompression threads.
    """

    def __init__(self, path, *, samples=None, regions=None, pass_only: bool = False,
                 haploid: str = "count", threads: int | None = None, check_text: bool = True):
        import cyvcf2

        quiet_htslib()
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(self.path, "is a folder, not a VCF file")
        if not self.path.is_file():
            raise InputError(self.path, "VCF not found")
        if haploid not in ("count", "error"):
            raise ValueError(f"haploid must be 'count' or 'error', not {haploid!r}")
        self.kind = file_kind(self.path)
        self.pass_only = pass_only
        self.haploid = haploid
        self.n_header_lines = None
        self._n_columns = None        # columns of the #CHROM line (text VCF)
        # what the user should hear about without an error (a BGZF file without its EOF block)
        self.warnings: list[str] = []
        if self.kind != "bcf":
            n, cols, problems = _header_info(self.path)
            self.n_header_lines = n
            if problems:
                raise InputError(self.path, problems[0])
            self._n_columns = len(cols)
        if self.kind != "vcf" and bgzf_eof_missing(self.path):
            self.warnings.append(f"{self.path}: no BGZF end-of-file block: the file may be truncated")
        try:
            self._vcf = cyvcf2.VCF(str(self.path), gts012=False, lazy=True,
                                   threads=threads if threads and threads > 1 else None)
        except Exception as exc:  # cyvcf2 raises bare Exception for header trouble
            why = _gzip_problem(self.path) if self.kind != "vcf" else None
            raise InputError(self.path, why or f"cannot parse the VCF header ({_first_line(exc)})") from None
        all_samples = list(self._vcf.samples)
        self._n_file_samples = len(all_samples)
        if len(set(all_samples)) != len(all_samples):
            dup = sorted({s for s in all_samples if all_samples.count(s) > 1})
            raise InputError(self.path, f"duplicate sample ids in the header: {_few(dup)}")
        if samples is not None:
            samples = list(samples)
            have = set(all_samples)
            missing = [s for s in samples if s not in have]
            if missing:
                raise InputError(self.path, f"{len(missing)} requested sample(s) not in the VCF: {_few(missing)}")
            keep = set(samples)
            ordered = [s for s in all_samples if s in keep]
            if ordered != all_samples:
                self._vcf.set_samples(ordered)
            self.samples = ordered
        else:
            self.samples = all_samples
        self.n_samples = len(self.samples)
        self.regions = self._merge_regions(regions) if regions else None
        # the text VCF read whole is also read line by line beside htslib, to refuse what htslib
        # lets through: extra sample columns, a QUAL that is not a number
        self.check_text = bool(check_text) and self.kind != "bcf" and self.regions is None
        self._fmt = {h["ID"] for h in self._vcf.header_iter() if h["HeaderType"] == "FORMAT"}
        self.n_records = 0        # records read (all, before filters)
        self.n_filtered = 0       # records dropped by pass_only
        self.haploid_calls: dict[str, int] = {}
        self.polyploid_calls = 0

    # -------------------------------------------------------------- header
    def info_description(self, key: str) -> str | None:
        """Description of an INFO field, or None when the header has no such field."""
        for h in self._vcf.header_iter():
            if h["HeaderType"] == "INFO" and h["ID"] == key:
                return h.info().get("Description", "").strip('"')
        return None

    def require_gt(self) -> None:
        if self.n_samples == 0:
            raise InputError(self.path, "VCF has no sample columns (a sites-only file): genotypes are needed")
        if "GT" not in self._fmt:
            raise InputError(self.path, "VCF header declares no FORMAT/GT field: genotypes are needed")

    # -------------------------------------------------------------- iteration
    def _merge_regions(self, regions):
        if isinstance(regions, str):
            regions = [r for r in regions.split(",") if r.strip()]
        parsed = []
        for r in regions:
            try:
                parsed.append(parse_region(r))
            except ValueError as exc:
                raise InputError(self.path, str(exc)) from None
        idx_ok = any(Path(str(self.path) + s).is_file() for s in (".tbi", ".csi"))
        if not idx_ok:
            raise InputError(self.path, "region queries need an index (.tbi or .csi): run `tabix -p vcf` "
                             "or `bcftools index` on it")
        big = 1 << 31
        parsed.sort(key=lambda t: (t[0], t[1] or 0))
        merged = []
        for chrom, a, b in parsed:
            a, b = a or 1, b or big
            if merged and merged[-1][0] == chrom and a <= merged[-1][2] + 1:
                merged[-1][2] = max(merged[-1][2], b)
            else:
                merged.append([chrom, a, b])
        return [f"{c}:{a}-{b}" if b != big else (f"{c}:{a}-" if a > 1 else c) for c, a, b in merged]

    def _where(self, index: int, last=None) -> tuple[int | None, str]:
        if self.regions is None and self.n_header_lines is not None:
            line = self.n_header_lines + index + 1
            return line, f"{self.path}:{line}"
        tail = f" (after {last[0]}:{last[1]})" if last else ""
        return None, f"{self.path}: record {index + 1}{tail}"

    def raw(self):
        """Yield ``(variant, index)``: cyvcf2 records (FILTER applied) and their 0-based record
        index, for hot loops that want no :class:`Site`; :meth:`where` names a record."""
        iters = [self._vcf(r) for r in self.regions] if self.regions else [self._vcf]
        index = 0
        prev = None
        pass_only = self.pass_only
        lines = self._text_lines() if self.check_text else None
        try:
            for it in iters:
                first = self.regions is not None
                while True:
                    try:
                        if first:
                            first = False
                            with warnings.catch_warnings():
                                # a region without records: the caller reports what was read
                                warnings.filterwarnings("ignore", message="no intervals found",
                                                        category=UserWarning)
                                v = next(it)
                        else:
                            v = next(it)
                    except StopIteration:
                        break
                    except Exception as exc:
                        self._raise_bad_record(index, prev, exc)
                    chrom = v.CHROM
                    if not chrom:
                        # htslib turns an empty line into a record without alleles (touching its
                        # REF would crash): refuse it here
                        self._raise_bad_record(index, prev, Exception("empty line or record without CHROM"))
                    why = self._check_record(v, chrom, lines)
                    if why:
                        self._refuse(index, prev, why)
                    self.n_records += 1
                    prev = v
                    index += 1
                    if pass_only:
                        f = v.FILTER
                        if f is not None and f != "PASS" and f != ".":
                            self.n_filtered += 1
                            continue
                    yield v, index - 1
        finally:
            if lines is not None:
                lines.close()

    def _text_lines(self):
        """The record lines of a text VCF (bytes), one per htslib record."""
        if self.kind != "vcf":
            fh = io.BufferedReader(gzip.GzipFile(self.path, "rb"), buffer_size=1 << 20)
        else:
            fh = open(self.path, "rb", buffering=1 << 20)
        try:
            for _ in range(self.n_header_lines):
                fh.readline()
            yield from fh
        except (OSError, EOFError, zlib.error):
            return                    # htslib reports a damaged stream itself
        finally:
            fh.close()

    def _check_record(self, v, chrom: str, lines) -> str | None:
        """What makes a record htslib parsed malformed anyway (None: nothing): a header line
        among the records, in a text VCF a column count other than the header's or a QUAL that
        is not a number, POS beyond int32, an empty REF or ALT."""
        if chrom[0] == "#":
            return (f"a header line ({chrom[:20]}...) among the records; is the #CHROM line "
                    "repeated?")
        if lines is not None:
            line = next(lines, None)
            if line is not None:
                n_cols = line.count(b"\t") + 1
                if n_cols != self._n_columns:
                    if n_cols < 8:
                        return f"{n_cols} tab-separated columns, a VCF record needs at least 8"
                    n_s = self._n_columns - 9
                    return (f"{n_cols} columns, expected {self._n_columns}"
                            + (f" (9 + {n_s} samples)" if n_s > 0 else ""))
                i = -1
                for _ in range(5):
                    i = line.index(b"\t", i + 1)
                qual = line[i + 1:line.index(b"\t", i + 1)]
                if qual != b".":
                    try:
                        float(qual)
                    except ValueError:
                        return f"QUAL is not a number: {qual.decode('utf-8', 'replace')[:30]!r}"
        if v.start >= MAX_POS:
            return f"POS {v.start + 1} is beyond {MAX_POS}, the largest VCF position"
        alts = v.ALT
        if alts:                      # (a record htslib left without alleles crashes on REF)
            ref = v.REF
            if not ref or ref == ".":
                return "REF is empty"
            for alt in alts:
                if not alt or alt == ".":
                    return "an ALT allele is empty"
        return None

    def _refuse(self, index, prev, reason: str):
        line, where = self._where(index, (prev.CHROM, prev.POS) if prev is not None else None)
        if line is not None:
            raise InputError(self.path, f"malformed record: {reason}", line=line)
        raise InputError(where, f"malformed record: {reason}")

    def line_of(self, index: int) -> int | None:
        """Line number of record ``index`` in a text VCF read whole, else None."""
        if self.regions is None and self.n_header_lines is not None:
            return self.n_header_lines + index + 1
        return None

    def where(self, v, index: int) -> str:
        line = self.line_of(index)
        return f"{self.path}:{line}" if line is not None else f"{self.path}: {v.CHROM}:{v.POS}"

    def __iter__(self):
        for v, index in self.raw():
            yield Site(self, v, index)

    def _raise_bad_record(self, index, prev, exc):
        line, where = self._where(index, (prev.CHROM, prev.POS) if prev is not None else None)
        msg = _first_line(exc)
        if self.regions and "index" in msg.lower() and "load" in msg.lower():
            idx = next((f"{self.path}{s}" for s in (".tbi", ".csi") if Path(f"{self.path}{s}").is_file()),
                       f"{self.path}.tbi")
            raise InputError(self.path, f"cannot load the index {idx} (damaged? rebuild it with "
                                        "`tabix -p vcf` or `bcftools index`)")
        if self.kind != "vcf":
            why = _gzip_problem(self.path)
            if why:
                raise InputError(self.path, why)
        reason = None
        if self.kind != "bcf" and line is not None:
            reason = self._diagnose_line(line, rejected=True)
        if reason is None:
            reason = "htslib could not parse the record" + (f" ({msg})" if msg else "")
        raise InputError(self.path, f"malformed record: {reason}", line=line) if line is not None else \
            InputError(where, f"malformed record: {reason}")

    def _diagnose_line(self, line_no: int, rejected: bool = False) -> str | None:
        """What is wrong with line ``line_no`` of a text VCF, or None if nothing is found.

        ``rejected``: htslib refused the line, so a well-formed-looking line gets a generic
        reason naming its FORMAT.
        """
        try:
            with _open_text(self.path) as fh:
                text = None
                for i, text in enumerate(fh, 1):
                    if i == line_no:
                        break
                else:
                    return "file ends in the middle of a record"
        except EOFError:
            return "the compressed file is truncated (gzip stream ends early)"
        except OSError as exc:
            return f"corrupt compressed data ({exc})"
        if text is None:
            return None
        raw = text.rstrip("\n").rstrip("\r")
        cols = raw.split("\t")
        if not text.endswith("\n"):
            # the last line; a truncated gzip stream often ends here
            try:
                with _open_text(self.path) as fh:
                    for _ in fh:
                        pass
            except EOFError:
                return "the compressed file is truncated (gzip stream ends early)"
            except OSError as exc:
                return f"corrupt compressed data ({exc})"
        all_cols = 9 + self._n_file_samples if self._n_file_samples else None
        if len(cols) < 8:
            return f"{len(cols)} tab-separated columns, a VCF record needs at least 8"
        if not cols[1].isdigit():
            return f"POS is not a number: {cols[1]!r}"
        if all_cols is not None and len(cols) != all_cols:
            return f"{len(cols)} columns, expected {all_cols} (9 + {all_cols - 9} samples)"
        if all_cols is None and len(cols) > 8:
            return None
        if len(cols) > 9:
            fmt = cols[8].split(":")
            empty = [j + 1 for j, val in enumerate(cols[9:]) if not val.strip()]
            if empty:
                return f"sample column {empty[0]} is empty"
            for j, val in enumerate(cols[9:]):
                parts = val.split(":")
                if "GT" in fmt and fmt.index("GT") < len(parts):
                    gt = parts[fmt.index("GT")]
                    if not re.fullmatch(r"(\.|\d+)([/|](\.|\d+))*", gt):
                        return f"sample column {j + 1} has an invalid GT {gt!r}"
            if rejected:
                return f"htslib rejected the sample data (FORMAT {cols[8]})"
        return None

    def genotype_array(self, v, index: int) -> np.ndarray:
        """cyvcf2's GT array (n_samples, ploidy + 1) int16 for record ``v``, or a one-line error."""
        try:
            return v.genotype.array()
        except Exception:
            # (cyvcf2 may crash if the record is touched again after this failure)
            line = self.line_of(index)
            where = f"{self.path}:{line}" if line is not None else f"{self.path}: record {index + 1}"
            why = _gzip_problem(self.path) if self.kind != "vcf" else None
            if why:
                raise InputError(self.path, why) from None
            why = self._diagnose_line(line) if line is not None and self.kind != "bcf" else None
            if why:
                raise InputError(where, f"malformed record: {why}") from None
            raise InputError(where, "record has no GT field: genotypes are needed") from None

    def check_gt(self, v, index: int) -> None:
        """Refuse a record's GT as decoding it would (an allele beyond the ALTs, a haploid call
        with ``haploid="error"``) without counting anything: for records a caller skips, so a
        later pass over the same file never meets a call this one let through."""
        a = self.genotype_array(v, index)
        x = a[:, :-1]
        if x.shape[1] == 0:
            raise InputError(self.where(v, index), "record has an empty GT field")
        n_alt = len(v.ALT)
        mx = x.max(initial=-1)
        if mx > n_alt:
            raise InputError(self.where(v, index), f"GT refers to allele {int(mx)} but the record has "
                             f"{n_alt} ALT allele(s)")
        if self.haploid == "error" and (x.shape[1] != 2 or x.min(initial=0) < -1):
            p = x.shape[1]
            hap = int(np.count_nonzero(x[:, 0] >= 0)) if p == 1 else \
                int(np.count_nonzero((x[:, 1] == -2) & (x[:, 0] >= 0)))
            if hap:
                raise InputError(self.where(v, index), f"{hap} haploid call(s) on {v.CHROM}; "
                                 "use haploid='count' to count allele copies")

    def _note_ploidy(self, x: np.ndarray, chrom: str, where: str) -> None:
        """Count haploid (and >2-ploid) calls of one record's allele array ``x`` (n, ploidy)."""
        p = x.shape[1]
        hap = int(np.count_nonzero(x[:, 0] >= 0)) if p == 1 else \
            int(np.count_nonzero((x[:, 1] == -2) & (x[:, 0] >= 0)))
        if hap:
            if self.haploid == "error":
                raise InputError(where, f"{hap} haploid call(s) on {chrom}; "
                                 "use haploid='count' to count allele copies")
            self.haploid_calls[chrom] = self.haploid_calls.get(chrom, 0) + hap
        if p > 2:
            self.polyploid_calls += int(np.count_nonzero(x[:, 2] >= 0))

    def _decode(self, site: Site) -> np.ndarray:
        a = self.genotype_array(site.variant, site.index)
        x = a[:, :-1]
        if x.shape[1] == 0:
            raise InputError(site.where, "record has an empty GT field")
        n_alt = len(site.alts)
        mx = x.max(initial=-1)
        if mx > n_alt:
            raise InputError(site.where, f"GT refers to allele {int(mx)} but the record has {n_alt} ALT allele(s)")
        if x.shape[1] != 2 or x.min(initial=0) < -1:
            self._note_ploidy(x, site.chrom, site.where)
        return x

    def close(self):
        self._vcf.close()


def _gzip_problem(path: Path) -> str | None:
    """Why a gzip/bgzip file cannot be decompressed to its end, or None if it can."""
    kind = "BGZF" if _is_bgzf(path) else "gzip"
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except EOFError:
        return f"truncated or corrupt compressed file ({kind}): the compressed file is truncated (its data ends early)"
    except (OSError, zlib.error) as exc:
        return f"truncated or corrupt compressed file ({kind}): {_first_line(exc)}"
    return None


def _first_line(exc) -> str:
    s = str(exc).strip()
    return s.splitlines()[0] if s else ""


class CarrierBatch:
    """Decode the genotypes of many records at once into sparse (sample, column, value) triples.

    The hot path of the encoders: per record only cyvcf2's GT array is fetched and queued with a
    map ``ALT index -> output column`` (-1: not kept); every ``size`` records one set of numpy
    operations finds all carriers. Semantics equal :meth:`Site.calls` (half-missing ``./1``
    carries, haploid calls count one copy and are reported on the reader, GT allele indices
    beyond the ALT count are refused).
    """

    def __init__(self, reader: VcfReader, dosage: bool = False, size: int = 256, stats: bool = False):
        self.reader = reader
        self.stats = stats                    # also count called alleles/samples and ALT copies
        self.called_alleles: list[np.ndarray] = []   # per queued record (stats=True)
        self.called_samples: list[np.ndarray] = []
        self.copies: list[np.ndarray] = []           # per output triple: ALT copies (stats=True)
        self.n = reader.n_samples
        self.dosage = dosage
        self.size = size
        self._arrays: list[np.ndarray] = []
        self._colmaps: list[list[int]] = []
        self._recs: list[tuple] = []          # (variant, index) for messages
        self.samples: list[np.ndarray] = []   # output chunks
        self.columns: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def add(self, v, index: int, colmap: list[int]) -> None:
        """Queue record ``v``; ``colmap[k]`` is the output column of allele k (k=0 is REF: -1)."""
        a = self.reader.genotype_array(v, index)
        if self._arrays and a.shape != self._arrays[0].shape:
            self.flush()
        self._arrays.append(a)
        self._colmaps.append(colmap)
        self._recs.append((v, index))
        if len(self._arrays) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self._arrays:
            return
        arrays, colmaps, recs = self._arrays, self._colmaps, self._recs
        self._arrays, self._colmaps, self._recs = [], [], []
        A = np.stack(arrays)                        # (b, n, P+1) int16
        b, n, w = A.shape
        P = w - 1
        if P == 0:
            v, index = recs[0]
            raise InputError(self.reader.where(v, index), "record has an empty GT field")
        A[:, :, P] = 0                              # drop the phase column
        flat = A.reshape(b, n * w)
        if self.stats:
            x = A[:, :, :P]
            self.called_alleles.append(np.count_nonzero(x >= 0, axis=(1, 2)).astype(np.int64))
            self.called_samples.append(n - np.count_nonzero((x == -1).any(axis=2), axis=1).astype(np.int64))
        if P != 2 or flat.min() < -1:
            x = A[:, :, :P]
            for j in np.flatnonzero((x.reshape(b, -1).min(axis=1) < -1) | (P != 2)):
                v, index = recs[j]
                self.reader._note_ploidy(x[j], v.CHROM, self.reader.where(v, index))
        width = max(len(c) for c in colmaps)
        cmap = np.full((b, width + 1), -1, np.int64)  # last column: allele beyond the ALTs
        for j, c in enumerate(colmaps):
            cmap[j, :len(c)] = c
        nz = np.flatnonzero(flat > 0)
        if not len(nz):
            if self.stats:
                self.copies.append(np.zeros(0, np.uint8))
            self.samples.append(np.zeros(0, np.int32))
            self.columns.append(np.zeros(0, np.int32))
            self.values.append(np.zeros(0, np.uint8))
            return
        allele = flat.ravel()[nz].astype(np.int64)
        rec = nz // (n * w)
        nalt = np.fromiter((len(c) - 1 for c in colmaps), np.int64, count=b)
        bad = allele > nalt[rec]
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            v, index = recs[int(rec[k])]
            raise InputError(self.reader.where(v, index), f"GT refers to allele {int(allele[k])} but the "
                             f"record has {int(nalt[rec[k]])} ALT allele(s)")
        col = cmap[rec, allele]
        keep = col >= 0
        if not keep.all():
            col, nz = col[keep], nz[keep]
        samp = (nz % (n * w)) // w
        key = col * n + samp
        if len(key) > 1:
            first = np.empty(len(key), bool)
            first[0] = True
            np.not_equal(key[1:], key[:-1], out=first[1:])
            starts = np.flatnonzero(first)
        else:
            starts = np.arange(len(key))
        self.samples.append(samp[starts].astype(np.int32))
        self.columns.append(col[starts].astype(np.int32))
        if self.dosage or self.stats:
            copies = np.diff(np.append(starts, len(key))).astype(np.uint8)
            if self.stats:
                self.copies.append(copies)
        self.values.append(copies if self.dosage else np.ones(len(starts), np.uint8))

    def record_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per queued record (stats=True): called alleles (AN) and fully called samples."""
        self.flush()
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
        return cat(self.called_alleles), cat(self.called_samples)

    def column_copies(self, n_columns: int) -> np.ndarray:
        """ALT copies (AC) per output column (stats=True)."""
        self.flush()
        col = np.concatenate(self.columns) if self.columns else np.zeros(0, np.int32)
        cp = np.concatenate(self.copies) if self.copies else np.zeros(0, np.uint8)
        return np.bincount(col, weights=cp, minlength=n_columns).astype(np.int64)

    def triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample, column, value) of every carrier call queued so far."""
        self.flush()
        if not self.samples:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint8)
        out = (np.concatenate(self.samples), np.concatenate(self.columns), np.concatenate(self.values))
        self.samples, self.columns, self.values = [out[0]], [out[1]], [out[2]]
        return out
