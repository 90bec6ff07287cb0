"""The sample sheet: who is a case, who is a control, and their sex.

A tab-separated file with a header naming at least ``sample_id`` and ``status``, optionally
``sex``::

    sample_id   status   sex
    S0001       case     F
    S0002       control  M

``status`` accepts ``case``/``control`` (any case), ``1``/``0``, or PLINK's ``2``/``1`` coding
(decided per file: a ``2`` anywhere means PLINK coding, a ``0`` means 1/0 coding; a file with only
``1`` is ambiguous and refused). ``NA``, ``-9``, ``.`` and empty mean unknown: such samples are
dropped (and reported). ``sex`` accepts M/F, male/female, 1/2 (PLINK), or unknown (0, NA, empty).
Aliases: ``IID``/``sample``/``id`` for ``sample_id``; ``phenotype``/``y`` for ``status``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines.errors import InputError

ID_ALIASES = ("sample_id", "iid", "sample", "id")
STATUS_ALIASES = ("status", "phenotype", "y")
MISSING = {"", "na", "nan", "-9", ".", "none", "missing"}
_SEX = {"m": "M", "male": "M", "1": "M", "f": "F", "female": "F", "2": "F",
        "0": "NA", "na": "NA", "": "NA", ".": "NA", "u": "NA", "unknown": "NA", "-9": "NA", "nan": "NA"}


def _few(items, k: int = 5) -> str:
    items = list(items)
    s = ", ".join(map(str, items[:k]))
    return s + (f" ... ({len(items)} in all)" if len(items) > k else "")


def read_sample_sheet(path) -> pd.DataFrame:
    """Read and validate a sample sheet.

    Returns a DataFrame with columns ``sample_id`` (str), ``y`` (int8: 1 case, 0 control, -1
    unknown) and ``sex`` (``M``/``F``/``NA``), in file order. Raises :class:`InputError` naming
    the file and line for duplicate ids, unknown status or sex values, or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "sample sheet not found")
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    rows = [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip() and not ln.startswith("##")]
    if not rows:
        raise InputError(path, "sample sheet is empty")
    head_no, head = rows[0]
    cols = [c.strip().lstrip("#").lower() for c in head.split("\t")]
    def find(aliases):
        for a in aliases:
            if a in cols:
                return cols.index(a)
        return None
    ic, sc, xc = find(ID_ALIASES), find(STATUS_ALIASES), find(("sex", "gender"))
    if ic is None or sc is None:
        need = [n for n, c in (("sample_id", ic), ("status", sc)) if c is None]
        raise InputError(path, f"header lacks column(s) {', '.join(need)} (tab-separated; has: "
                         f"{', '.join(cols)})", line=head_no)
    ids, raw_status, sexes, line_of = [], [], [], {}
    for no, ln in rows[1:]:
        parts = ln.split("\t")
        if len(parts) < len(cols):
            parts += [""] * (len(cols) - len(parts))
        if len(parts) > len(cols):
            raise InputError(path, f"{len(parts)} columns, the header has {len(cols)}", line=no)
        sid = parts[ic].strip()
        if not sid:
            raise InputError(path, "empty sample id", line=no)
        if sid in line_of:
            raise InputError(path, f"duplicate sample id {sid!r} (first on line {line_of[sid]})", line=no)
        line_of[sid] = no
        ids.append(sid)
        raw_status.append((no, parts[sc].strip()))
        if xc is not None:
            sx = parts[xc].strip().lower()
            if sx not in _SEX:
                raise InputError(path, f"unknown sex {parts[xc].strip()!r} (expected M/F, male/female, "
                                 "1/2, or 0/NA for unknown)", line=no)
            sexes.append(_SEX[sx])
        else:
            sexes.append("NA")
    if not ids:
        raise InputError(path, "sample sheet has a header but no samples")
    y = _decode_status(path, raw_status)
    return pd.DataFrame({"sample_id": pd.Series(ids, dtype=object), "y": pd.Series(y, dtype="int8"),
                         "sex": pd.Series(sexes, dtype=object)})


def _decode_status(path, raw):
    words = {"case": 1, "control": 0, "affected": 1, "unaffected": 0}
    numeric = set()
    for no, s in raw:
        t = s.lower()
        if t in MISSING or t in words:
            continue
        if t in ("0", "1", "2"):
            numeric.add(t)
            continue
        raise InputError(path, f"unknown status {s!r} (expected case/control, 1/0, or PLINK 2/1; "
                         "NA or -9 for unknown)", line=no)
    if "0" in numeric and "2" in numeric:
        no = next(no for no, s in raw if s == "2")
        raise InputError(path, "status mixes 0 and 2: use 1/0 (case/control) or PLINK's 2/1", line=no)
    if numeric == {"1"}:
        raise InputError(path, "status is 1 for every numbered sample: ambiguous between 1/0 and PLINK "
                         "2/1 coding; write case/control")
    plink = "2" in numeric
    out = []
    for _, s in raw:
        t = s.lower()
        if t in MISSING:
            out.append(-1)
        elif t in words:
            out.append(words[t])
        elif plink:
            out.append(1 if t == "2" else 0)
        else:
            out.append(int(t))
    return out


@dataclass
class SampleJoin:
    """The sample sheet joined to a VCF's samples."""

    table: pd.DataFrame                 # sample_id, y, sex: the samples to use, in VCF order
    dropped_not_in_vcf: list[str] = field(default_factory=list)
    dropped_unknown_status: list[str] = field(default_factory=list)

    def report(self) -> dict:
        return {"n_samples": int(len(self.table)),
                "n_sheet_not_in_vcf": len(self.dropped_not_in_vcf),
                "sheet_not_in_vcf": self.dropped_not_in_vcf[:20],
                "n_unknown_status": len(self.dropped_unknown_status),
                "unknown_status": self.dropped_unknown_status[:20]}

    def messages(self) -> list[str]:
        out = []
        if self.dropped_not_in_vcf:
            out.append(f"{len(self.dropped_not_in_vcf)} sheet sample(s) absent from the VCF, dropped: "
                       f"{_few(self.dropped_not_in_vcf)}")
        if self.dropped_unknown_status:
            out.append(f"{len(self.dropped_unknown_status)} sample(s) with unknown status, dropped: "
                       f"{_few(self.dropped_unknown_status)}")
        return out


def join_samples(vcf_samples, sheet: pd.DataFrame, sheet_path, vcf_path=None) -> SampleJoin:
    """Match VCF samples to the sheet.

    Every VCF sample must be in the sheet (else a one-line error naming the first few and the
    count); sheet samples absent from the VCF and samples of unknown status are dropped and
    reported. The result keeps the VCF's sample order.
    """
    vcf_samples = list(vcf_samples)
    in_sheet = set(sheet["sample_id"])
    missing = [s for s in vcf_samples if s not in in_sheet]
    if missing:
        src = f" of {vcf_path}" if vcf_path else ""
        raise InputError(sheet_path, f"{len(missing)} VCF sample(s){src} missing from the sample sheet: "
                         f"{_few(missing)}")
    in_vcf = set(vcf_samples)
    not_in_vcf = [s for s in sheet["sample_id"] if s not in in_vcf]
    by_id = sheet.set_index("sample_id")
    t = by_id.loc[vcf_samples].reset_index()
    unknown = t.loc[t["y"] < 0, "sample_id"].tolist()
    t = t[t["y"] >= 0].reset_index(drop=True)
    if len(t) == 0:
        raise InputError(sheet_path, "no VCF sample has a known case/control status")
    return SampleJoin(t, not_in_vcf, unknown)
