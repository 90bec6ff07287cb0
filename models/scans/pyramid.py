"""The 2D map pyramid: the triangle of pair statistics max-pooled into a fixed-size grid, then
2 x 2 max-pools of it up to one pixel, cut into fixed-size tiles a browser viewer can fetch.

Level 0 is a ``side x side`` grid (``side = ceil(p / cell)``, ``cell`` the smallest power of two
with ``side <= max_side``); pixel (r, c) holds the largest statistic over pairs (i, j), i < j,
with i // cell == r and j // cell == c (NaN where no pair was tested). Level L + 1 max-pools 2 x 2
pixels of level L (NaN-aware). Each level is cut into ``tile x tile`` arrays; the files are::

    pyramid/index.json                 levels, sizes, cell, tile size, value name, SNP axis
    pyramid/L{level}/{row}_{col}.npz   one compressed float32 tile (key "v"), missing tiles omitted

A viewer fetches ``index.json``, draws level ``n_levels - 1`` (one tile) first and descends. The
accumulation is a pure max, so it does not depend on the order in which tiles of the scan arrive.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["PyramidGrid", "cell_size", "build_levels", "tile_level"]

EMPTY = np.float32(-1.0)  # stored while accumulating; statistics are >= 0


def cell_size(p: int, max_side: int) -> int:
    """Smallest power of two c with ceil(p / c) <= max_side."""
    if p < 1 or max_side < 1:
        raise ValueError("need p >= 1 and max_side >= 1")
    c = 1
    while math.ceil(p / c) > max_side:
        c *= 2
    return c


class PyramidGrid:
    """Level-0 accumulator: max of non-negative statistics per (row cell, column cell)."""

    def __init__(self, p: int, max_side: int = 4096, cell: int | None = None):
        self.p = int(p)
        self.cell = int(cell) if cell else cell_size(p, max_side)
        self.side = math.ceil(self.p / self.cell)
        self.grid = np.full((self.side, self.side), EMPTY, dtype=np.float32)


    def pool_tile(self, i0: int, j0: int, stat: np.ndarray):
        """(row cells, column cells, pooled maxima) of one tile, without touching the grid
        (thread-safe; :meth:`merge_pooled` folds the result in)."""
        ti, tj = stat.shape
        c = self.cell
        if i0 % c == 0 and j0 % c == 0 and ti % c == 0 and tj % c == 0:  # aligned: one reshape-max pass
            pooled = stat.reshape(ti // c, c, tj // c, c).max(axis=(1, 3)) if c > 1 else stat
            return slice(i0 // c, (i0 + ti) // c), slice(j0 // c, (j0 + tj) // c), pooled.astype(np.float32)
        rows = np.arange(i0, i0 + ti) // c
        cols = np.arange(j0, j0 + tj) // c
        rb = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        cb = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        pooled = np.maximum.reduceat(np.maximum.reduceat(stat, rb, axis=0), cb, axis=1)
        return rows[rb][:, None], cols[cb][None, :], pooled.astype(np.float32)

    def merge_pooled(self, r, c, pooled) -> None:
        self.grid[r, c] = np.maximum(self.grid[r, c], pooled)


    def level0(self) -> np.ndarray:
        g = self.grid.copy()
        g[g < 0] = np.nan
        return g


def build_levels(level0: np.ndarray) -> list[np.ndarray]:
    """[level0, level1, ...] down to a 1 x 1 grid, each a NaN-aware 2 x 2 max-pool of the one before."""
    levels = [level0.astype(np.float32)]
    while levels[-1].shape[0] > 1 or levels[-1].shape[1] > 1:
        a = levels[-1]
        h, w = a.shape
        pad = np.full((h + h % 2, w + w % 2), np.nan, dtype=np.float32)
        pad[:h, :w] = a
        blocks = pad.reshape(pad.shape[0] // 2, 2, pad.shape[1] // 2, 2)
        with np.errstate(invalid="ignore"):
            m = np.fmax(np.fmax(blocks[:, 0, :, 0], blocks[:, 0, :, 1]), np.fmax(blocks[:, 1, :, 0], blocks[:, 1, :, 1]))
        levels.append(m.astype(np.float32))
    return levels


def tile_level(level: np.ndarray, tile: int):
    """Yield (row, col, array) for the non-empty ``tile x tile`` pieces of one level (edge tiles padded with NaN)."""
    h, w = level.shape
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            a = level[r:r + tile, c:c + tile]
            if np.isnan(a).all():
                continue
            if a.shape != (tile, tile):
                b = np.full((tile, tile), np.nan, dtype=np.float32)
                b[: a.shape[0], : a.shape[1]] = a
                a = b
            yield r // tile, c // tile, a
