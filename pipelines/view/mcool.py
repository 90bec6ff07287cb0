"""A 2D scan's map as a multi-resolution cooler file (``.mcool``) with max aggregation.

HiGlass and other Hi-C browsers read ``FILE.mcool::resolutions/<bp>``. Each resolution here is a
set of uniform base-pair bins per chromosome (chromosome sizes: the last SNP's position + 1) and a
pixel (bin1, bin2) holds the **largest** statistic of the pairs under it, never a sum (cooler's own
``zoomify`` sums, which would turn a lone strong pair into the same colour as many weak ones).
Every resolution is built directly from level 0 of the scan's max pyramid: the value of a bin pair
is the maximum over the level-0 cells that have SNPs in both bins. With one SNP per cell this is
exactly the maximum over the bin pair's SNP pairs; with larger cells it is an upper bound that can
spread a cell's value to the neighbouring bins its SNPs fall in. Either way a planted peak keeps its
value at every resolution. Only the upper triangle is stored (cooler's symmetric-upper layout).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path
from pipelines.errors import EpiflowError
from pipelines.view.data import ScanMap, _neglog10p

__all__ = ["level0_grid", "auto_resolutions", "bin_pixels", "export_mcool"]


def level0_grid(sm: ScanMap) -> np.ndarray:
    """Level 0 of the pyramid as one (side x side) float32 array (NaN where no pair)."""
    side, t = sm.index["levels"][0]["side"], sm.tile_side
    n = math.ceil(side / t)
    grid = np.full((n * t, n * t), np.nan, dtype=np.float32)
    for r in range(n):
        for c in range(r, n):
            a = sm.tile_array(0, r, c)
            if a is not None:
                grid[r * t:(r + 1) * t, c * t:(c + 1) * t] = a
    return grid[:side, :side]


def _chromsizes(sm: ScanMap) -> pd.Series:
    ax = sm.axis
    order = [str(s["chrom"]) for s in sm.segments]
    sizes = ax.groupby("chrom", sort=False)["bp"].max().astype(np.int64) + 1
    return pd.Series([int(sizes[c]) for c in order], index=order, name="length")


def auto_resolutions(sm: ScanMap, base: int | None = None, top_bins: int = 64) -> list[int]:
    """Bin sizes base * 2^k: base (default) the smallest 1 kb * 2^m whose genome-wide bin count does
    not exceed the map's level-0 side; up to the first size with at most ``top_bins`` bins."""
    sizes = _chromsizes(sm)
    side = sm.index["levels"][0]["side"]
    if base is None:
        base = 1000
        while sum(math.ceil(s / base) for s in sizes) > side:
            base *= 2
    out = [int(base)]
    while sum(math.ceil(s / out[-1]) for s in sizes) > top_bins and len(out) < 40:
        out.append(out[-1] * 2)
    return out


def bin_pixels(sm: ScanMap, grid: np.ndarray, res: int, chromsizes: pd.Series | None = None):
    """(bins, pixels) of one resolution: cooler's bin table and the upper-triangle pixel table with
    the max over the level-0 cells touching each bin pair (column ``count``, float64)."""
    import cooler

    sizes = _chromsizes(sm) if chromsizes is None else chromsizes
    bins = cooler.util.binnify(sizes, res)
    offset = np.r_[0, np.cumsum([math.ceil(s / res) for s in sizes])][:-1]
    chrom_off = dict(zip(sizes.index, offset))
    snp_bin = np.array([chrom_off[c] for c in sm.axis["chrom"]], dtype=np.int64) + sm.axis["bp"].to_numpy() // res
    cell_of = np.arange(sm.p) // sm.cell
    cb = np.unique(np.stack([cell_of, snp_bin], axis=1), axis=0)          # (cell, bin) pairs, by cell
    start = np.searchsorted(cb[:, 0], np.arange(grid.shape[0]))
    count = np.diff(np.r_[start, len(cb)])
    r, c = np.nonzero(np.isfinite(grid))
    v = grid[r, c].astype(np.float64)
    # every pixel times its row cell's bins times its column cell's bins
    nr, nc = count[r], count[c]
    rep = nr * nc
    pr = np.repeat(np.arange(len(r)), rep)
    k = np.arange(len(pr)) - np.repeat(np.cumsum(rep) - rep, rep)
    b1 = cb[start[r[pr]] + k // nc[pr], 1]
    b2 = cb[start[c[pr]] + k % nc[pr], 1]
    lo, hi = np.minimum(b1, b2), np.maximum(b1, b2)
    df = pd.DataFrame({"bin1_id": lo, "bin2_id": hi, "count": v[pr]})
    pixels = df.groupby(["bin1_id", "bin2_id"], sort=True, as_index=False)["count"].max()
    return bins, pixels


def export_mcool(scan_dir, out, *, base: int | None = None, value: str = "stat", log=print) -> dict:
    """Write ``out`` (.mcool) from a scan folder; value 'stat' (the chi-square) or 'nlp' (-log10 p)."""
    import cooler
    from tqdm import tqdm

    sm = ScanMap(scan_dir)
    if value not in ("stat", "nlp"):
        raise EpiflowError(f"--value must be stat or nlp, not {value!r}")
    grid = level0_grid(sm)
    if value == "nlp":
        f = np.vectorize(_neglog10p, otypes=[np.float64])
        ok = np.isfinite(grid)
        grid = grid.astype(np.float64)
        grid[ok] = f(grid[ok])
    sizes = _chromsizes(sm)
    resolutions = auto_resolutions(sm, base)
    meta = {"generated-by": "epiflow export-cool", "value": "max " + ("-log10 p" if value == "nlp" else sm.index.get("value", "statistic")),
            "aggregation": "max", "source": str(Path(scan_dir)), "pyramid_cell_snps": sm.cell}
    out = Path(out)
    summary = {"resolutions": resolutions, "pixels": {}}
    with atomic_path(out, suffix=".mcool") as tmp:
        for res in tqdm(resolutions, desc="export-cool", unit="resolution", leave=False):
            bins, pixels = bin_pixels(sm, grid, res, sizes)
            cooler.create_cooler(f"{tmp}::resolutions/{res}", bins, pixels, dtypes={"count": np.float64},
                                 metadata={**meta, "resolution_bp": res}, ordered=True, mode="a")
            summary["pixels"][res] = int(len(pixels))
    log(f"wrote {out}: {len(resolutions)} resolutions, {resolutions[0]:,} to {resolutions[-1]:,} bp")
    return summary
