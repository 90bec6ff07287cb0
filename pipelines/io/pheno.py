"""Phenotype and covariate tables, joined to genotyped samples by id.

Three layouts are read (``fmt``; ``auto`` decides from the file and the genotype samples):

``plink``  PLINK ``--pheno`` / ``--covar`` files: ``FID IID v1 v2 ...``, whitespace separated, an
           optional header line starting ``FID IID`` that names the columns. Missing: ``NA``,
           ``-9`` (PLINK's default missing phenotype), ``nan``, ``.`` and empty fields.
``gemma``  GEMMA ``-p`` / ``-c`` files: one column per phenotype (or covariate), no ids, one row
           per sample **in .fam order** (so the genotype samples must be given); ``NA`` missing.
           ``-9`` is a number here, as in GEMMA.
``tsv``    a tab- (or whitespace-) separated table with a header: one id column (``iid``,
           ``sample_id``, ``sample``, ``id``; optionally ``fid`` as well), the rest values.

``auto`` picks ``tsv`` when the header names an id column, ``plink`` when the first two fields of
the rows match genotype sample ids, and ``gemma`` when every field is numeric and the row count
equals the number of genotyped samples.

:func:`join` aligns a table to the genotype samples and reports who was dropped on either side;
no overlap at all raises a one-line :class:`~pipelines.errors.InputError`. Binary traits follow
PLINK: values {1, 2} mean control/case (0 and -9 missing), {0, 1} are read as control/case too.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import InputError

__all__ = ["Table", "JoinReport", "Joined", "read_table", "join", "select_column", "trait_kind",
           "as_case_control"]

FORMATS = ("auto", "plink", "gemma", "tsv")
ID_COLUMNS = ("iid", "sample_id", "sample", "id", "indiv", "individual")
MISSING_TOKENS = {"", "na", "nan", ".", "none", "null", "missing"}


@dataclass
class Table:
    """Values (float64, NaN missing) with their sample ids.

    fid is None when the file names samples by IID alone (tsv without fid) and for ``gemma``
    files, whose rows are the .fam samples in order (``row_aligned`` is then True and fid/iid are
    copied from the .fam).
    """

    path: str
    fmt: str
    iid: np.ndarray
    fid: np.ndarray | None
    values: pd.DataFrame
    row_aligned: bool = False

    @property
    def columns(self) -> list[str]:
        return list(self.values.columns)


@dataclass
class JoinReport:
    """Who was kept and who was dropped when a table met the genotype samples."""

    n_genotyped: int
    n_table: int
    n_matched: int
    n_complete: int
    genotyped_only: list = field(default_factory=list)
    table_only: list = field(default_factory=list)
    missing_value: list = field(default_factory=list)
    key: str = "fid+iid"

    def summary(self) -> str:
        def few(ids):
            s = ", ".join(map(str, ids[:3]))
            return f" (e.g. {s})" if ids else ""
        return (f"{self.n_complete} samples used: {self.n_genotyped} genotyped, {self.n_table} in the "
                f"table, {self.n_matched} in both (matched on {self.key}); dropped "
                f"{len(self.genotyped_only)} genotyped samples absent from the table{few(self.genotyped_only)}, "
                f"{len(self.table_only)} table rows without genotypes{few(self.table_only)}, "
                f"{len(self.missing_value)} matched samples with a missing value{few(self.missing_value)}")

    def as_dict(self) -> dict:
        return {"n_genotyped": self.n_genotyped, "n_table": self.n_table, "n_matched": self.n_matched,
                "n_used": self.n_complete, "n_genotyped_only": len(self.genotyped_only),
                "n_table_only": len(self.table_only), "n_missing_value": len(self.missing_value),
                "key": self.key}


@dataclass
class Joined:
    """A table aligned to genotype samples.

    geno_index: indices into the genotype sample list (ascending: genotype order) of the samples
    with a genotype, a table row and no missing value in the selected columns.
    values: (len(geno_index), k) float64 in that order.
    """

    geno_index: np.ndarray
    values: np.ndarray
    columns: list
    report: JoinReport


# ---------------------------------------------------------------------------------------------
# reading


def _to_float(tokens: np.ndarray, path, minus9_missing: bool, first_line: int, col_names) -> np.ndarray:
    low = np.char.lower(np.char.strip(tokens.astype(str)))
    miss = np.isin(low, list(MISSING_TOKENS))
    if minus9_missing:
        miss |= np.isin(low, ["-9", "-9.0", "-9.00"])
    safe = np.where(miss, "0", low)
    try:
        vals = safe.astype(np.float64)
    except ValueError:
        bad = None
        for r in range(safe.shape[0]):
            for c in range(safe.shape[1]):
                try:
                    float(safe[r, c])
                except ValueError:
                    bad = (r, c)
                    break
            if bad:
                break
        r, c = bad
        raise InputError(path, f"value {tokens[r, c]!r} in column {col_names[c]!r} is not a number",
                         line=first_line + r) from None
    vals[miss] = np.nan
    inf = np.isinf(vals)
    if inf.any():
        r, c = (int(k[0]) for k in np.nonzero(inf))
        raise InputError(path, f"value {tokens[r, c]!r} in column {col_names[c]!r} is not a finite number "
                               "(write NA for a missing value)", line=first_line + r)
    return vals


def _lines(path: Path, tabs: bool = False) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-empty lines: whitespace-split, or tab-split when ``tabs``
    (empty fields kept as missing values, trailing empty fields dropped)."""
    if not path.is_file():
        raise InputError(path, "file not found")
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(path, f"cannot decompress ({exc})") from None
    text = raw.decode("utf-8-sig", errors="replace")
    out = []
    for no, line in enumerate(io.StringIO(text), 1):
        if not line.strip() or line.startswith("##"):
            continue
        if tabs:
            f = line.rstrip("\r\n").split("\t")
            while f and not f[-1].strip():
                f.pop()
            out.append((no, f))
        else:
            out.append((no, line.split()))
    if not out:
        raise InputError(path, "empty table")
    return out


def _raw_head(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip() and not line.startswith("##"):
                return [line]
    return []


def _is_number(tok: str) -> bool:
    if tok.strip().lower() in MISSING_TOKENS:
        return True
    try:
        float(tok)
        return True
    except ValueError:
        return False


def read_table(path, fmt: str = "auto", samples: pd.DataFrame | None = None, columns=None) -> Table:
    """Read a phenotype/covariate table (see the module doc for the layouts).

    samples: the genotype sample table (``fid``, ``iid`` columns, .fam order); needed for
    ``gemma`` files and used by ``auto`` to recognise headerless PLINK files.
    columns: value columns to read (1-based numbers or header names); default all. Rows with fewer
    fields than the others are accepted only when every requested column lies before the first
    unreadable field of each short row (GEMMA's HLC.simu.pheno has 137 rows where two columns
    ran together); otherwise the short row is reported.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(path, f"unknown table format {fmt!r} (use {', '.join(FORMATS)})")
    rows = _lines(path)
    head = [t.strip().lstrip("#").lower() for t in rows[0][1]]
    if fmt == "auto":
        fmt = _detect(path, rows, head, samples)
    rows, body, id_cols, n_id, header, raw_head = _layout(path, fmt, rows, head, samples)
    if not body:
        raise InputError(path, "no data rows")
    width = _row_width(path, fmt, body, header)
    if fmt == "tsv":
        val_pos = [k for k in range(len(raw_head)) if k not in id_cols]
        names = [raw_head[k] for k in val_pos]
        if not val_pos:
            raise InputError(path, "header names no value column besides the ids", line=rows[0][0])
        if len(raw_head) != width:
            raise InputError(path, f"header has {len(raw_head)} fields, data rows up to {width}", line=rows[0][0])
    else:
        val_pos = list(range(n_id, width))
        names = list(header) if header is not None else [f"V{k}" for k in range(1, width - n_id + 1)]
        if len(names) != len(val_pos):
            raise InputError(path, f"header names {len(names)} value columns, data rows have {len(val_pos)}",
                             line=rows[0][0])
    names = _unique(names)
    if columns is None:
        sel = list(range(len(names)))
    else:
        sel = [names.index(_resolve(path, names, c)) for c in columns]
    pos = [val_pos[k] for k in sel]
    need = max(pos + [k for k in id_cols if k is not None] + [0]) + 1
    for no, f in body:
        if len(f) == width:
            continue
        bad = next((k for k, t in enumerate(f) if k not in id_cols and not _is_number(t)), len(f))
        trusted = min(len(f), bad)
        if need > trusted or columns is None:
            raise InputError(path, f"{len(f)} fields where other rows have {width}"
                                   + (f" (unreadable field {f[bad]!r})" if bad < len(f) else ""), line=no)
    tok = np.array([[f[k] for k in pos] for _, f in body], dtype=object).reshape(len(body), len(pos))
    vals = _to_float(tok, path, fmt != "gemma", body[0][0], [names[k] for k in sel])
    frame = pd.DataFrame(vals, columns=[names[k] for k in sel])
    if fmt == "gemma":
        return Table(str(path), "gemma", samples["iid"].astype(str).to_numpy(),
                     samples["fid"].astype(str).to_numpy(), frame, row_aligned=True)
    fidc, iidc = id_cols
    iid = np.array([f[iidc].strip() for _, f in body], dtype=object).astype(str)
    fid = None if fidc is None else np.array([f[fidc].strip() for _, f in body], dtype=object).astype(str)
    _check_dups(path, fid, iid, [no for no, _ in body])
    return Table(str(path), fmt, iid, fid, frame)


def _row_width(path, fmt, body, header) -> int:
    """The number of fields of a complete data row. With a header, the longest row (checked
    against the header by :func:`read_table`); without one, the most common row length, and a
    row with MORE fields is an error naming its line (its values would be read into the wrong
    columns). Shorter rows are judged by :func:`read_table`."""
    if fmt == "tsv" or header is not None:
        return max(len(f) for _, f in body)
    from collections import Counter

    lengths = Counter(len(f) for _, f in body)
    width = max(lengths, key=lambda k: (lengths[k], k))
    for no, f in body:
        if len(f) > width:
            raise InputError(path, f"{len(f)} fields where other rows have {width}", line=no)
    return width


def _layout(path, fmt, rows, head, samples):
    """Where the ids, header and data rows of a table of format ``fmt`` are: (rows, body, id
    columns, number of leading id columns, header value names, raw header)."""
    header = raw_head = None
    if fmt == "plink":
        has_header = len(head) >= 2 and head[0] == "fid" and head[1] == "iid"
        if len(rows[0][1]) < 3:
            raise InputError(path, "a PLINK table needs FID, IID and at least one value column", line=rows[0][0])
        n_id, header = 2, (rows[0][1][2:] if has_header else None)
        body = rows[1:] if has_header else rows
        id_cols = (0, 1)
    elif fmt == "tsv":
        if any("\t" in ln for ln in _raw_head(path)):
            rows = _lines(path, tabs=True)
            rows = [rows[0]] + [(no, f + [""] * (len(rows[0][1]) - len(f))) for no, f in rows[1:]]
            head = [t.strip().lstrip("#").lower() for t in rows[0][1]]
        raw_head = [t.strip().lstrip("#") for t in rows[0][1]]
        id_col = next((k for k, h in enumerate(head) if h in ID_COLUMNS), None)
        if id_col is None:
            raise InputError(path, f"header names no id column ({', '.join(ID_COLUMNS)})", line=rows[0][0])
        fid_col = head.index("fid") if "fid" in head else None
        body = rows[1:]
        id_cols = (fid_col, id_col)
        n_id = None
    else:
        body, id_cols, n_id, header = rows, (), 0, None
        if samples is None:
            raise InputError(path, "a GEMMA-style table has no ids: give the genotype samples to align it")
        if len(rows) != len(samples):
            raise InputError(path, f"GEMMA-style table has {len(rows)} rows but the genotypes have "
                                   f"{len(samples)} samples (rows must follow .fam order)")
    return rows, body, id_cols, n_id, header, raw_head


def _resolve(path, names, col) -> str:
    if isinstance(col, (int, np.integer)) or (isinstance(col, str) and col.strip().isdigit()):
        k = int(col)
        if not 1 <= k <= len(names):
            raise InputError(path, f"column {k} requested but the table has {len(names)} value columns")
        return names[k - 1]
    if col in names:
        return col
    low = {n.lower(): n for n in names}
    if str(col).lower() in low:
        return low[str(col).lower()]
    raise InputError(path, f"no column named {col!r} (columns: {', '.join(names[:10])})")


def _detect(path, rows, head, samples) -> str:
    if len(head) >= 2 and head[0] == "fid" and head[1] == "iid":
        return "plink"
    if any(h in ID_COLUMNS for h in head):
        return "tsv"
    all_numeric = all(_is_number(t) for _, f in rows[:200] for t in f)
    if samples is not None and len(rows[0][1]) >= 3:
        keys = set(zip(samples["fid"].astype(str), samples["iid"].astype(str)))
        hits = sum((f[0], f[1]) in keys for _, f in rows)
        if hits > 0 and (not all_numeric or hits >= 0.5 * min(len(rows), len(samples))):
            return "plink"
    if samples is not None and len(rows) == len(samples) and \
            sum(_is_number(t) for _, f in rows[:200] for t in f) >= 0.9 * sum(len(f) for _, f in rows[:200]):
        return "gemma"
    if all_numeric:
        if samples is None:
            raise InputError(path, "all-numeric table without ids: a GEMMA-style file needs the genotype "
                                   "samples (.fam) to align its rows")
        raise InputError(path, f"all-numeric table of {len(rows)} rows: neither PLINK ids of the genotyped "
                               f"samples nor one row per genotyped sample ({len(samples)})")
    if len(rows[0][1]) >= 3:
        return "plink"
    raise InputError(path, "cannot tell the table layout: expected 'FID IID values...', a header with an "
                           "id column, or GEMMA's one-column-per-phenotype rows")


def _unique(names):
    seen, out = {}, []
    for n in names:
        k = seen.get(n, 0)
        out.append(n if k == 0 else f"{n}.{k}")
        seen[n] = k + 1
    return out


def _check_dups(path, fid, iid, line_nos):
    key = pd.Series(iid) if fid is None else pd.Series([f"{a}\t{b}" for a, b in zip(fid, iid)])
    dup = key.duplicated().to_numpy()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        who = iid[k] if fid is None else f"{fid[k]} {iid[k]}"
        raise InputError(path, f"duplicate sample id {who}", line=line_nos[k])


# ---------------------------------------------------------------------------------------------
# selecting and joining


def select_column(table: Table, col) -> str:
    """Resolve a column given as a 1-based number (PLINK ``--mpheno``/GEMMA ``-n``) or a name."""
    return _resolve(table.path, table.columns, col)


def join(samples: pd.DataFrame, table: Table, columns=None, what: str = "phenotype") -> Joined:
    """Align ``table`` to the genotype ``samples`` (fid/iid, genotype order).

    Samples are matched on (FID, IID) when the table has FIDs and at least one pair matches,
    otherwise on IID alone (IIDs must then be unique among the genotypes). Samples missing a
    value in any selected column are dropped. Raises InputError when nothing overlaps or no
    sample is left.
    """
    columns = table.columns if columns is None else [select_column(table, c) for c in columns]
    g_fid = samples["fid"].astype(str).to_numpy()
    g_iid = samples["iid"].astype(str).to_numpy()
    n_g = len(g_iid)
    if table.row_aligned:
        pos = np.arange(n_g)
        key = ".fam order"
    else:
        pos, key = None, "iid"
        if table.fid is not None:
            gk = pd.Series(np.arange(n_g), index=[f"{a}\t{b}" for a, b in zip(g_fid, g_iid)])
            tk = [f"{a}\t{b}" for a, b in zip(table.fid, table.iid)]
            cand = gk.reindex(tk).to_numpy()
            if np.isfinite(cand).any():
                pos, key = cand, "fid+iid"
        if pos is None:
            if pd.Series(g_iid).duplicated().any():
                raise InputError(table.path, f"{what} table ids match no FID+IID pair and genotype IIDs are "
                                             "not unique, so samples cannot be matched on IID alone")
            gk = pd.Series(np.arange(n_g), index=g_iid)
            pos = gk.reindex(table.iid).to_numpy()
    pos = np.asarray(pos, dtype=np.float64)
    matched = np.isfinite(pos)
    if not matched.any():
        ex_t = ", ".join(map(str, table.iid[:2]))
        ex_g = ", ".join(map(str, g_iid[:2]))
        raise InputError(table.path, f"no sample of the {what} table (e.g. {ex_t}) is among the "
                                     f"{n_g} genotyped samples (e.g. {ex_g})")
    vals = table.values[columns].to_numpy(dtype=np.float64)
    gi = pos[matched].astype(np.int64)
    v = vals[matched]
    complete = ~np.isnan(v).any(axis=1)
    order = np.argsort(gi[complete], kind="stable")
    geno_index = gi[complete][order]
    out_vals = v[complete][order]
    in_table = np.zeros(n_g, dtype=bool)
    in_table[gi] = True
    rep = JoinReport(
        n_genotyped=n_g, n_table=len(table.iid), n_matched=int(matched.sum()), n_complete=int(complete.sum()),
        genotyped_only=list(g_iid[~in_table]), table_only=list(np.asarray(table.iid)[~matched]),
        missing_value=list(g_iid[gi[~complete]]), key=key)
    if rep.n_complete == 0:
        raise InputError(table.path, f"{rep.n_matched} samples match the genotypes but all have a missing "
                                     f"value in {', '.join(columns)}")
    return Joined(geno_index, out_vals, columns, rep)


def trait_kind(y: np.ndarray) -> str:
    """'binary' when the non-missing values are a subset of {1, 2} or {0, 1} (two levels), else 'quantitative'."""
    v = np.unique(y[np.isfinite(y)])
    if len(v) == 2 and (set(v.tolist()) <= {1.0, 2.0} or set(v.tolist()) <= {0.0, 1.0}):
        return "binary"
    return "quantitative"


def as_case_control(y: np.ndarray) -> np.ndarray:
    """Binary values to 0 (control) / 1 (case): PLINK 1/2 coding or 0/1 coding."""
    v = set(np.unique(y[np.isfinite(y)]).tolist())
    if v <= {0.0, 1.0}:
        return y.astype(np.float64)
    if v <= {1.0, 2.0}:
        return y - 1.0
    raise ValueError(f"not a binary trait: values {sorted(v)[:5]}")
