"""What the map viewer serves, read from one 2D scan folder.

A scan folder (``epiflow scan --mode 2d``, or the ``ngg_2d`` stage) holds ``pyramid/`` (see
:mod:`models.scans.pyramid`: ``index.json``, ``axis.tsv`` and max-pooled float32 tiles),
``top_pairs.tsv`` and ``summary.json``, and with ``--effect-map`` ``pyramid_effect/`` (the same grid
holding max |interaction effect|). A tiled NGG scan (``--method ngg --ngg-engine tiled``) has no test
statistic: it writes ``pyramid_effect/`` only (max NGG score per pixel), which the viewer shows alone
(``effect_only``: pixel values are NGG scores, the pair under a pixel is the top_pairs.tsv pair in
its level-0 cell with the highest score, else the cell's best exact statistic recomputed from the
genotypes; cards show the listed NGG numbers beside the recomputed exact statistics).
:class:`ScanMap` reads them and answers:

* :meth:`ScanMap.tile`: one tile as little-endian float16 (the browser's compact format; NaN = no
  tested pair);
* :meth:`ScanMap.pixel`: the statistic of a pixel at any level, the SNP ranges it covers and the
  pair that holds its maximum: the pyramid is descended along the child that holds the maximum
  down to level 0, and the pair within that level-0 cell is found by recomputing the cell's
  ``cell x cell`` pair statistics from the genotypes (a cell of one SNP needs no genotypes);
* :meth:`ScanMap.pair`: a pair's card: interaction effect, statistic, p, n recomputed from the
  genotypes with the scan's statistic, the two-locus genotype table and box-plot numbers;
* :meth:`ScanMap.search`: a SNP id, a chromosome, a region ``chr:start-end``, or a gene when a
  GTF is given.

The genotypes and phenotype are found from ``summary.json`` (``bfile``/``input``, ``pheno``,
``pheno_col``, ``covar``, ``trait``), relative to the working directory or to a folder above the
scan; without them the map, hover values and SNP ranges still work and cards fall back to the
scan's own ``top_pairs.tsv`` rows.
"""
from __future__ import annotations

import gzip as _gzip
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

from models.scans.scan2d import dense_pair_stats
from models.scans.statistics import statistic_for
from pipelines.errors import EpiflowError, InputError

__all__ = ["ScanMap", "PYRAMID_FORMAT"]

PYRAMID_FORMAT = "epiflow-pair-pyramid/1"


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"{what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"{what} is not valid JSON ({exc})") from None


class _LRU:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int):
        self.size, self.d, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.d:
                self.d.move_to_end(key)
                return self.d[key]
        v = make()
        with self.lock:
            self.d[key] = v
            if len(self.d) > self.size:
                self.d.popitem(last=False)
        return v


class ScanMap:
    """The map pyramid, axis and tables of one 2D scan folder (see the module docstring).

    scan_dir: the folder; bfile/pheno/pheno_col/covar/covar_cols: override what ``summary.json``
    names (scans before ``covar_cols`` was recorded: all of the file's columns are used unless given);
    genes: a GTF whose genes the search box finds.
    """

    def __init__(self, scan_dir, *, bfile=None, pheno=None, pheno_col=None, covar=None, covar_cols=None,
                 genes=None):
        self.dir = Path(scan_dir)
        if not self.dir.is_dir():
            raise InputError(self.dir, "scan folder not found")
        pyr = self.dir / "pyramid"
        self.effect_only = False
        if not (pyr / "index.json").is_file() and (self.dir / "pyramid_effect" / "index.json").is_file():
            pyr, self.effect_only = self.dir / "pyramid_effect", True     # a tiled NGG scan: scores only
        if not (pyr / "index.json").is_file():
            if _is_ngg_scan(self.dir):
                raise InputError(self.dir, "this NGG scan keeps only its top pairs, not a map of all pairs (only "
                                           "`--ngg-engine tiled` writes one), so it cannot be viewed; rerun it with "
                                           "--ngg-engine tiled, or run the exact scan on the same data and view that "
                                           f"folder: {_exact_command(self.dir)}")
            raise InputError(self.dir, "no pyramid/index.json: not the output of a 2D exact scan "
                                       "(`epiflow scan --mode 2d --method exact`)")
        self.pyramid_dir = pyr
        self.index = _read_json(pyr / "index.json", "map pyramid index")
        if not isinstance(self.index, dict) or self.index.get("format") != PYRAMID_FORMAT:
            raise InputError(pyr / "index.json", f"not an {PYRAMID_FORMAT} index")
        try:
            axis = pd.read_csv(pyr / self.index.get("axis", "axis.tsv"), sep="\t", dtype={"snp": str, "chrom": str})
        except FileNotFoundError:
            raise InputError(pyr / "axis.tsv", "SNP axis of the map pyramid not found") from None
        if list(axis.columns[:4]) != ["pos", "snp", "chrom", "bp"] or len(axis) != self.index["n_snps"]:
            raise InputError(pyr / "axis.tsv", f"expected columns pos, snp, chrom, bp and {self.index['n_snps']} rows")
        self.axis = axis
        self.p = len(axis)
        self.cell = int(self.index["cell_snps"])
        self.tile_side = int(self.index["tile"])
        self.n_levels = int(self.index["n_levels"])
        self.summary = _read_json(self.dir / "summary.json", "scan summary") if (self.dir / "summary.json").is_file() else {}
        self.trait = self.summary.get("trait", "qt")
        self.statistic = statistic_for("2d", self.trait, self.summary.get("statistic"))
        self.segments = [dict(s) for s in self.index["chromosomes"]]
        self.effect_index = self._effect_index()
        self._id_pos = {}
        for k, s in enumerate(axis["snp"].to_numpy()):
            self._id_pos.setdefault(s.lower(), k)
        self.top = self._read_top()
        self._arrays = _LRU(256)          # float32 tiles (256 KiB each at the default 256 x 256)
        self._tiles = _LRU(8192)          # float16 bytes as served (gzip: tens of KiB each)
        self.warmed = 0
        self._genes = None
        self._genes_path = genes
        self._over = {"bfile": bfile, "pheno": pheno, "pheno_col": pheno_col, "covar": covar, "covar_cols": covar_cols}
        self._geno = None
        self._geno_error = None
        self._geno_lock = threading.Lock()

    # -- description ---------------------------------------------------------------------------

    def _effect_index(self) -> dict | None:
        """The index of ``pyramid_effect/`` (``epiflow scan --effect-map``: max |effect| per pixel),
        or None when the scan has none; it must share the statistic map's grid."""
        f = self.dir / "pyramid_effect" / "index.json"
        if not f.is_file():
            return None
        idx = _read_json(f, "effect map index")
        same = ("format", "n_snps", "cell_snps", "tile", "n_levels")
        if not isinstance(idx, dict) or any(idx.get(k) != self.index.get(k) for k in same):
            raise InputError(f, f"the effect map does not share the grid of pyramid/index.json ({', '.join(same)})")
        return idx

    def _layer_dir(self, layer: str) -> Path:
        if layer == "stat":
            return self.pyramid_dir
        if layer == "effect" and self.effect_index is not None:
            return self.dir / "pyramid_effect"
        if layer == "effect":
            raise InputError(self.dir, "no effect map (pyramid_effect/): rerun the exact scan with --effect-map")
        raise InputError("layer", f"unknown map layer {layer!r} (stat or effect)")

    def _read_top(self) -> pd.DataFrame | None:
        f = self.dir / "top_pairs.tsv"
        if not f.is_file():
            return None
        top = pd.read_csv(f, sep="\t", dtype={"snp1": str, "snp2": str, "chrom1": str, "chrom2": str})
        i = np.array([self._id_pos.get(str(s).lower(), -1) for s in top["snp1"]])
        j = np.array([self._id_pos.get(str(s).lower(), -1) for s in top["snp2"]])
        top["i"], top["j"] = np.minimum(i, j), np.maximum(i, j)
        return top[(i >= 0) & (j >= 0)].reset_index(drop=True)

    def meta(self) -> dict:
        """What the page needs first: sizes, levels, chromosomes, value range, title."""
        levels = self.index["levels"]
        vmax = max((lv["max"] for lv in levels if lv.get("max") is not None), default=None)
        s = self.summary
        title = f"{s.get('mode', '2d')} {s.get('method', 'exact')} scan of {s.get('pheno_col') or 'the phenotype'}"
        return {"n_snps": self.p, "cell": self.cell, "tile": self.tile_side, "n_levels": self.n_levels,
                "levels": [{"level": lv["level"], "side": lv["side"], "cell": lv["cell_snps"],
                            "tiles_per_side": lv["tiles_per_side"]} for lv in levels],
                "chromosomes": self.segments, "value": self.index.get("value", "statistic"),
                "vmax": vmax, "title": title, "folder": str(self.dir), "trait": self.trait,
                "n_samples": s.get("n_samples"), "n_pairs": s.get("n_pairs"),
                "effect": self.statistic.effect, "has_top": self.top is not None,
                "has_effect": self.effect_index is not None, "effect_only": self.effect_only,
                "vmax_effect": None if self.effect_index is None else max(
                    (lv["max"] for lv in self.effect_index["levels"] if lv.get("max") is not None), default=None)}

    def axis_bp(self) -> bytes:
        """Base-pair position of every SNP of the map axis, little-endian int32 (the page's ticks)."""
        return np.clip(self.axis["bp"].to_numpy(), 0, 2**31 - 1).astype("<i4").tobytes()

    def top_pairs(self, limit: int = 200) -> list[dict]:
        if self.top is None:
            return []
        t = self.top.head(limit)
        cols = [c for c in ("rank", "snp1", "chrom1", "bp1", "snp2", "chrom2", "bp2", "stat", "p", "score", "i", "j")
                if c in t]
        out = t[cols].to_dict("records")
        return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in out]

    # -- tiles ---------------------------------------------------------------------------------

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.n_levels:
            raise InputError(self.pyramid_dir, f"no level {level} (levels 0..{self.n_levels - 1})")

    def tile_array(self, level: int, row: int, col: int, layer: str = "stat") -> np.ndarray | None:
        """One float32 tile (tile x tile, NaN where empty) or None when the tile holds no pair;
        layer: "stat" (the statistic's map) or "effect" (max |effect|, when the scan wrote it)."""
        self._check_level(level)
        d = self._layer_dir(layer)

        def load():
            f = d / f"L{level}" / f"{row}_{col}.npz"
            if not f.is_file():
                return None
            with np.load(f, allow_pickle=False) as z:
                return np.asarray(z[self.index.get("array_key", "v")], dtype=np.float32)

        return self._arrays.get((level, row, col) if layer == "stat" else (layer, level, row, col), load)

    def tile(self, level: int, row: int, col: int, gzip: bool = False, layer: str = "stat") -> bytes | None:
        """One tile as little-endian float16 bytes (gzip-compressed when asked), None when empty."""
        def make():
            a = self.tile_array(level, row, col, layer)
            if a is None:
                return None
            raw = a.astype("<f2").tobytes()
            return _gzip.compress(raw, compresslevel=1, mtime=0) if gzip else raw

        key = ("f16", gzip, level, row, col)
        return self._tiles.get(key if layer == "stat" else (layer, *key), make)

    def warm(self, max_tiles: int = 4000) -> int:
        """Prepare the served (gzip float16) form of the pyramid's tiles, coarse levels first, up to
        ``max_tiles`` (about 50 MB at the default tile size): zoom steps then only send bytes."""
        n = 0
        for level in range(self.n_levels - 1, -1, -1):
            for f in sorted((self.pyramid_dir / f"L{level}").glob("*.npz")):
                if n >= max_tiles:
                    return n
                try:
                    r, c = (int(x) for x in f.stem.split("_"))
                except ValueError:
                    continue
                self.tile(level, r, c, gzip=True)
                n += 1
                self.warmed = n
        return n

    def value(self, level: int, r: int, c: int, layer: str = "stat") -> float:
        side = self.index["levels"][level]["side"]
        if not (0 <= r < side and 0 <= c < side):
            return math.nan
        t = self.tile_side
        a = self.tile_array(level, r // t, c // t, layer)
        return math.nan if a is None else float(a[r % t, c % t])

    def _descend(self, level: int, r: int, c: int, layer: str = "stat") -> tuple[int, int]:
        """The level-0 pixel under (level, r, c) that holds its maximum (of the layer)."""
        for k in range(level, 0, -1):
            kids = [(2 * r + dr, 2 * c + dc) for dr in (0, 1) for dc in (0, 1)]
            vals = [self.value(k - 1, a, b, layer) for a, b in kids]
            best = int(np.nanargmax(vals)) if np.isfinite(vals).any() else 0
            r, c = kids[best]
        return r, c

    def _snp(self, k: int) -> dict:
        a = self.axis.iloc[int(k)]
        return {"pos": int(k), "snp": a["snp"], "chrom": a["chrom"], "bp": int(a["bp"])}

    def _span(self, lo: int, hi: int) -> dict:
        hi = min(hi, self.p) - 1
        return {"first": self._snp(lo), "last": self._snp(hi), "n": int(hi - lo + 1)}

    def pixel(self, level: int, r: int, c: int, layer: str = "stat") -> dict:
        """Statistic of pixel (r, c) of a level, the SNPs it spans and the pair of its maximum;
        with layer "effect", ``effect`` is the pixel's max |effect| and the pair the one that holds it
        (``value`` stays the statistic)."""
        self._check_level(level)
        self._layer_dir(layer)
        v = self.value(level, r, c)
        width = self.cell * 2 ** level
        out = {"level": level, "row": r, "col": c, "value": None if not np.isfinite(v) else v,
               "rows": None, "cols": None, "pair": None, "layer": layer}
        if self.effect_index is not None and not self.effect_only:
            e = self.value(level, r, c, "effect")
            out["effect"] = None if not np.isfinite(e) else e
        if not (0 <= r * width < self.p and 0 <= c * width < self.p):
            return out
        out["rows"] = self._span(r * width, (r + 1) * width)
        out["cols"] = self._span(c * width, (c + 1) * width)
        if not np.isfinite(v):
            return out
        r0, c0 = self._descend(level, r, c, layer)
        out["pair"] = self._best_in_cell(r0, c0, layer)
        return out

    def _best_in_cell(self, r0: int, c0: int, layer: str = "stat") -> dict | None:
        cell = self.cell
        rows = np.arange(r0 * cell, min((r0 + 1) * cell, self.p))
        cols = np.arange(c0 * cell, min((c0 + 1) * cell, self.p))
        if self.effect_only:
            return self._best_ngg_in_cell(r0, c0, rows, cols)
        if cell == 1:
            i, j = int(rows[0]), int(cols[0])
            return self._pair_head(i, j, self.value(0, r0, c0)) if i < j else None
        g = self.genotypes()
        if g is None:
            return None
        beta, stat = self._stats(g, g["G"][g["row"][rows]], g["G"][g["row"][cols]])
        upper = rows[:, None] < cols[None, :]
        stat = np.where(upper, stat, np.nan)
        score = stat if layer == "stat" else np.where(upper & np.isfinite(stat), np.abs(beta), np.nan)
        if not np.isfinite(score).any():
            return None
        a, b = np.unravel_index(int(np.nanargmax(score)), score.shape)
        return self._pair_head(int(rows[a]), int(cols[b]), float(stat[a, b]))

    def _best_ngg_in_cell(self, r0: int, c0: int, rows: np.ndarray, cols: np.ndarray) -> dict | None:
        """The pair of a level-0 cell of an NGG map: the listed pair with the highest score there (the
        map's maximum when it is listed), else, from the genotypes, the cell's best exact statistic."""
        score = self.value(0, r0, c0)
        if self.top is not None and "score" in self.top:
            t = self.top
            hit = t[(t["i"] // self.cell == r0) & (t["j"] // self.cell == c0)]
            if len(hit):
                row = hit.loc[hit["score"].idxmax()]
                return {**self._ngg_head(int(row["i"]), int(row["j"])), "score": float(row["score"]),
                        "source": "top_pairs.tsv"}
        if len(rows) == 1 and len(cols) == 1:
            i, j = int(rows[0]), int(cols[0])
            return {**self._ngg_head(i, j), "score": score, "source": "map"} if i < j else None
        g = self.genotypes()
        if g is None:
            return None
        beta, stat = self._stats(g, g["G"][g["row"][rows]], g["G"][g["row"][cols]])
        stat = np.where(rows[:, None] < cols[None, :], stat, np.nan)
        if not np.isfinite(stat).any():
            return None
        a, b = np.unravel_index(int(np.nanargmax(stat)), stat.shape)
        return {**self._pair_head(int(rows[a]), int(cols[b]), float(stat[a, b])), "score": None,
                "source": "the cell's best exact statistic (its highest-scoring NGG pair is not in top_pairs.tsv)"}

    def _ngg_head(self, i: int, j: int) -> dict:
        """A pair under an NGG map pixel, with its exact statistic when the genotypes are at hand."""
        g = self.genotypes()
        if g is None:
            return {"snp1": self._snp(i), "snp2": self._snp(j), "stat": None, "p": None, "neg_log10_p": None}
        _, stat = self._stats(g, g["G"][g["row"][i]][None], g["G"][g["row"][j]][None])
        return self._pair_head(i, j, float(stat[0, 0]))

    def _pair_head(self, i: int, j: int, stat: float) -> dict:
        return {"snp1": self._snp(i), "snp2": self._snp(j), "stat": stat, "p": float(special.chdtrc(1.0, stat)),
                "neg_log10_p": _neglog10p(stat)}

    # -- genotypes, cards ----------------------------------------------------------------------

    def genotypes_status(self) -> str:
        if self._geno is not None:
            return "loaded"
        return self._geno_error or "not loaded"

    def genotypes(self) -> dict | None:
        """The scan's genotypes (rows matched to the map axis) and phenotype, or None (see the reason
        in :meth:`genotypes_status`). Loaded once, on first use."""
        with self._geno_lock:
            if self._geno is None and self._geno_error is None:
                try:
                    self._geno = self._load_genotypes()
                except (EpiflowError, OSError, ValueError, KeyError) as exc:
                    self._geno_error = f"genotypes unavailable: {exc}"
            return self._geno

    def _resolve(self, name, kind: str) -> Path | None:
        if not name:
            return None
        p = Path(name)
        bases = [Path.cwd(), *self.dir.resolve().parents] if not p.is_absolute() else [Path("/")]

        def ok(c: Path) -> bool:
            return c.exists() or (kind == "bfile" and any(Path(f"{c}{e}").exists() for e in (".bed", ".bed.gz")))

        for b in bases:
            c = b / p
            if ok(c):
                return c
        raise InputError(name, f"the scan's {kind} was not found (give --{kind})")

    def _load_genotypes(self) -> dict:
        from pipelines.workflows.genotypes import Covariates, GenotypeSet, Phenotype, align

        s, o = self.summary, self._over
        bfile = self._resolve(o["bfile"] or s.get("bfile") or s.get("input"), "bfile")
        if bfile is None:
            raise EpiflowError("the scan summary names no genotype file (give --bfile)")
        gs = GenotypeSet.load(bfile, unique_ids=False)
        pheno = self._resolve(o["pheno"] or s.get("pheno"), "pheno")
        ph = Phenotype.load(pheno, gs, str(o["pheno_col"] or s.get("pheno_col") or "1"))
        covar_name = o["covar"] or s.get("covar")
        cols = o["covar_cols"] or s.get("covar_cols")
        cols = cols.split(",") if isinstance(cols, str) else cols
        cov = Covariates.load(self._resolve(covar_name, "covar"), gs, cols) if covar_name else None
        gs, ph, cov = align(gs, ph, cov)
        ph = ph.with_trait(self.trait)
        rows = self._match_rows(gs)
        y = np.asarray(ph.y, dtype=np.float64)
        covar = None if cov is None else np.asarray(cov.values, dtype=np.float64)
        k = int((s.get("pcs") or {}).get("k", 0)) if isinstance(s.get("pcs"), dict) else 0
        if k:       # the scan's genotype principal components, from the SNPs it scanned
            from models.scans.calibration import genotype_pcs

            pcs, _ = genotype_pcs(np.ascontiguousarray(gs.dosage[np.sort(rows)]), k)
            covar = pcs if covar is None else np.column_stack([covar, pcs])
        return {"G": gs.dosage, "row": rows, "y": y, "y_raw": y, "covar": covar, "snps": gs.snps,
                "source": str(bfile), "pheno": str(pheno), "n": gs.n}

    def _stats(self, g: dict, ga: np.ndarray, gb: np.ndarray):
        """(effect, statistic) of every pair of rows of ga x gb with the scan's model (covariates in
        the pair model, y ~ C + a + b + ab, when the scan had any)."""
        if g["covar"] is None:
            return dense_pair_stats(ga, gb, g["y"], self.trait, statistic=self.statistic.name)
        return dense_pair_stats(ga, gb, g["y"], self.trait, statistic=self.statistic.name, covariates=g["covar"])

    def _match_rows(self, gs) -> np.ndarray:
        snps = gs.snps
        for ids in (snps["snp"].astype(str), gs.with_unique_ids().snps["snp"].astype(str)):
            key = pd.Series(np.arange(len(snps)), index=ids + "\t" + snps["chrom"].astype(str) + "\t"
                            + snps["bp"].astype(str))
            key = key[~key.index.duplicated()]
            want = self.axis["snp"] + "\t" + self.axis["chrom"] + "\t" + self.axis["bp"].astype(str)
            rows = key.reindex(want.to_numpy()).to_numpy()
            if np.isfinite(rows).all():
                return rows.astype(np.int64)
        missing = int(np.isnan(rows).sum())
        raise EpiflowError(f"{missing} SNPs of the map are not in {gs.source}")

    def pair(self, i: int, j: int) -> dict:
        """The card of the pair of map-axis SNPs i and j."""
        if not (0 <= i < self.p and 0 <= j < self.p) or i == j:
            raise InputError("pair", f"SNP positions must differ and lie in 0..{self.p - 1}")
        i, j = min(i, j), max(i, j)
        card = {"snp1": self._snp(i), "snp2": self._snp(j), "effect_name": self.statistic.effect,
                "listed": None, "computed": None, "table": None, "note": None, "ngg": self.effect_only}
        if self.top is not None:
            hit = self.top[(self.top["i"] == i) & (self.top["j"] == j)]
            if len(hit):
                row = hit.iloc[0].to_dict()
                card["listed"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
                                  if k not in ("i", "j", "snp1", "snp2", "chrom1", "chrom2", "bp1", "bp2")}
        g = self.genotypes()
        if g is None:
            card["note"] = self.genotypes_status()
            return card
        a, b = g["G"][g["row"][i]], g["G"][g["row"][j]]
        beta, stat = self._stats(g, a[None], b[None])
        beta, stat = float(beta[0, 0]), float(stat[0, 0])
        listed = (card["listed"] or {}).get("stat")
        if listed is not None and np.isfinite(stat) and abs(stat - listed) > 1e-4 * max(abs(listed), 1.0):
            card["note"] = (f"recomputed STAT {stat:.6g} differs from top_pairs.tsv ({listed:.6g}): the scan's "
                            "covariates were not reproduced (give --covar/--covar-cols as the scan had them)")
        both = (a >= 0) & (b >= 0)
        card["computed"] = {"effect": _finite(beta), "stat": _finite(stat),
                            "p": _finite(float(special.chdtrc(1.0, stat))) if np.isfinite(stat) else None,
                            "neg_log10_p": _finite(_neglog10p(stat)), "n": int(both.sum())}
        snps = g["snps"]
        ra, rb = snps.iloc[g["row"][i]], snps.iloc[g["row"][j]]
        card["alleles"] = {"snp1": [str(ra["a1"]), str(ra["a2"])], "snp2": [str(rb["a1"]), str(rb["a2"])]}
        y = g["y_raw"]
        cells = []
        for u in (0, 1, 2):
            for v in (0, 1, 2):
                m = (a == u) & (b == v)
                cells.append({"g1": u, "g2": v, "n": int(m.sum()), **_box(y[m])})
        card["table"] = cells
        card["trait"] = self.trait
        return card

    # -- search --------------------------------------------------------------------------------

    def _chrom_segment(self, name: str):
        want = name.lower().removeprefix("chr")
        for s in self.segments:
            if str(s["chrom"]).lower().removeprefix("chr") == want:
                return s
        return None

    def _gene_table(self):
        if self._genes is None and self._genes_path:
            from pipelines.io.gtf import read_gtf

            models = read_gtf(self._genes_path)
            rows = {}
            for m in models:
                k = m.gene.lower()
                s, e = rows.get(k, (m.chrom, m.start, m.end, m.gene))[1:3]
                rows[k] = (m.chrom, min(s, m.start), max(e, m.end), m.gene)
            self._genes = rows
        return self._genes or {}

    def search(self, q: str) -> dict:
        """Where a query points: {kind, label, start, end (map-axis SNP range, end exclusive), focus}.

        focus: a map pixel in SNP positions (i, j) to centre: for a SNP its best-scoring pair in
        the top list (else its diagonal), for a region or gene the region's diagonal block."""
        q = (q or "").strip()
        if not q:
            raise InputError("search", "empty query")
        k = self._id_pos.get(q.lower())
        if k is not None:
            focus = (k, k)
            if self.top is not None:
                hit = self.top[(self.top["i"] == k) | (self.top["j"] == k)]
                if len(hit):
                    focus = (int(hit["i"].iloc[0]), int(hit["j"].iloc[0]))
            return {"kind": "snp", "label": self.axis["snp"].iat[k], "start": k, "end": k + 1, "focus": list(focus)}
        chrom, _, rng = q.replace(",", "").partition(":")
        seg = self._chrom_segment(chrom)
        if seg is not None:
            if not rng:
                return {"kind": "chromosome", "label": str(seg["chrom"]), "start": seg["start"], "end": seg["end"],
                        "focus": None}
            lo, _, hi = rng.partition("-")
            try:
                lo_bp = _bp(lo)
                hi_bp = _bp(hi) if hi else lo_bp
            except ValueError:
                raise InputError("search", f"{q!r}: a region is CHROM:START-END in bp") from None
            return self._region(seg, lo_bp, hi_bp, q)
        genes = self._gene_table()
        g = genes.get(q.lower())
        if g is not None:
            seg = self._chrom_segment(g[0])
            if seg is None:
                raise InputError("search", f"gene {g[3]} lies on {g[0]}, a chromosome not in the map")
            return {**self._region(seg, g[1], g[2], g[3]), "kind": "gene"}
        hint = "" if self._genes_path else " (start the viewer with --genes GTF to search genes)"
        raise InputError("search", f"{q!r} is neither a SNP id of the map, a chromosome nor a region{hint}")

    def _region(self, seg: dict, lo_bp: int, hi_bp: int, label: str) -> dict:
        bp = self.axis["bp"].to_numpy()[seg["start"]:seg["end"]]
        a = seg["start"] + int(np.searchsorted(bp, lo_bp, side="left"))
        b = seg["start"] + int(np.searchsorted(bp, hi_bp, side="right"))
        if b <= a:          # no SNP inside: the nearest one
            k = min(max(a, seg["start"]), seg["end"] - 1)
            if a > seg["start"] and (a >= seg["end"] or lo_bp - bp[a - 1 - seg["start"]] < bp[a - seg["start"]] - hi_bp):
                k = a - 1
            a, b = k, k + 1
        return {"kind": "region", "label": label, "start": a, "end": b, "focus": None}


def _is_ngg_scan(d: Path) -> bool:
    """Whether a folder without a pyramid is an NGG scan (its summary, or its top-pair columns)."""
    try:
        if json.loads((d / "summary.json").read_text()).get("method") == "ngg":
            return True
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with open(d / "top_pairs.tsv") as fh:
            cols = fh.readline().rstrip("\n").split("\t")
    except OSError:
        return False
    return "score" in cols and "support" in cols and "stat" not in cols


def _exact_command(d: Path) -> str:
    """The exact 2D scan of an NGG scan's inputs (from its summary.json where it names them)."""
    try:
        s = json.loads((d / "summary.json").read_text())
    except (OSError, ValueError):
        s = {}
    s = s if isinstance(s, dict) else {}
    args = ["epiflow scan --mode 2d --method exact"]
    for flag, key in (("--bfile", "bfile"), ("--bfile", "input"), ("--pheno", "pheno"), ("--pheno-col", "pheno_col"),
                      ("--covar", "covar")):
        if s.get(key) and not any(a.startswith(flag + " ") for a in args):
            args.append(f"{flag} {s[key]}")
    if s.get("covar_cols"):
        cols = s["covar_cols"]
        args.append(f"--covar-cols {cols if isinstance(cols, str) else ','.join(map(str, cols))}")
    if isinstance(s.get("pcs"), dict) and s["pcs"].get("k"):
        args.append(f"--pcs {s['pcs']['k']}")
    if len(args) == 1:
        args.append("--bfile GENOTYPES --pheno PHENOTYPE")
    return " ".join(args) + f" --out {d.name}_exact"


def _bp(s: str) -> int:
    s = s.strip().lower()
    mult = 1
    for suf, m in (("kb", 10**3), ("mb", 10**6), ("k", 10**3), ("m", 10**6)):
        if s.endswith(suf):
            s, mult = s[: -len(suf)], m
            break
    return int(round(float(s) * mult))


def _finite(v):
    return float(v) if v is not None and np.isfinite(v) else None


def _neglog10p(stat: float) -> float:
    """-log10 of the chi-square (1 df) upper tail, accurate far beyond double underflow."""
    if not np.isfinite(stat):
        return math.nan
    if stat < 1400:
        p = special.chdtrc(1.0, stat)
        if p > 0:
            return float(-math.log10(p))
    z = math.sqrt(stat / 2.0)       # erfc(z) ~ exp(-z^2) / (z sqrt(pi)) (1 - 1/(2 z^2))
    return float((z * z + math.log(z * math.sqrt(math.pi)) - math.log1p(-1 / (2 * z * z))) / math.log(10))


def _box(v: np.ndarray) -> dict:
    if len(v) == 0:
        return {"mean": None, "q1": None, "median": None, "q3": None, "lo": None, "hi": None, "outliers": []}
    q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
    iqr = q3 - q1
    inside = v[(v >= q1 - 1.5 * iqr) & (v <= q3 + 1.5 * iqr)]
    out = v[(v < q1 - 1.5 * iqr) | (v > q3 + 1.5 * iqr)]
    return {"mean": float(v.mean()), "q1": q1, "median": med, "q3": q3, "lo": float(inside.min()),
            "hi": float(inside.max()), "outliers": [float(x) for x in out[:50]]}
