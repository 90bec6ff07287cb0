"""Partial results of an exact 2D scan: run some tile pairs of a :class:`~models.scans.scan2d.Scan2D`
in one process and fold them into the scan of another.

This is how a scan is spread over the workers of a cluster (``epiflow scan --executor dask``):
every worker builds the same scan from the same inputs (same fingerprint, same tiles and blocks)
and computes :func:`tile_partial` for the tile pairs it is given; the driver folds the partials
into its own scan with :func:`merge_partial`, in block and tile order. The accumulators are
order-independent (exact top-k with a total tie order, maxima with a tie rule, integer counts), and
every tile's reductions are the ones the single-process scan computes, so the merged scan's
results, checkpoints and output files are byte-identical to ``Scan2D.run``.

A partial is plain numpy (picklable): ``{"tiles": [reductions of each tile pair]}`` on the CPU
path (and the GPU case/control path), ``{"engine": GpuEngine.state()}`` of an engine reset before
the tile pairs on the GPU quantitative path (only the entries its tiles wrote: a few MB, not the
whole pyramid and best-partner arrays).
"""
from __future__ import annotations

import numpy as np

from models.scans.scan2d import Scan2D, _blas_threads, _torch_threads
from models.scans.topk import TopK

__all__ = ["tile_partial", "merge_partial", "merge_engine_partial", "split_block"]


def split_block(tile_pairs: list, parts: int) -> list[list]:
    """A block's tile pairs cut into at most ``parts`` contiguous chunks of near-equal size (in order)."""
    parts = max(1, min(int(parts), len(tile_pairs)))
    bounds = np.linspace(0, len(tile_pairs), parts + 1).round().astype(int)
    return [list(tile_pairs[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def tile_partial(scan: Scan2D, tile_pairs) -> dict:
    """The reductions of ``tile_pairs`` (a list of (ti, tj)) of ``scan``, without touching its
    accumulators (the CPU path) or from a reset device engine (the GPU path)."""
    tile_pairs = [tuple(int(t) for t in tp) for tp in tile_pairs]
    if scan.engine is not None:
        scan.engine.reset()
        scan.engine.run_block(tile_pairs)
        return {"engine": _sparse_state(scan.engine)}
    if scan.gpu:  # case/control on the GPU: device arithmetic, host reductions
        return {"tiles": [scan._reduce(*scan._cpu_tile(*tp, xp=scan.xp)) for tp in tile_pairs]}
    with _blas_threads(1), _torch_threads():
        return {"tiles": [scan._tile_reduce(tp) for tp in tile_pairs]}


def merge_partial(scan: Scan2D, part: dict) -> None:
    """Fold one :func:`tile_partial` result into ``scan``'s accumulators."""
    if "tiles" in part:
        if scan.engine is not None:
            raise ValueError("a CPU partial cannot be merged into a GPU scan (different backends)")
        for red in part["tiles"]:
            scan._merge(red)
        return
    if scan.engine is None:
        raise ValueError("a GPU partial cannot be merged into a CPU scan (different backends)")
    merge_engine_partial(scan.engine, part["engine"])


# GPU engine accumulators: (attribute, merge) -- pyramid cells hold float32 bits of non-negative
# statistics and best partners pack (statistic bits, 0xFFFFFFFF - partner) in 64 bits, so both
# merge by maximum exactly as the kernel's atomics do (0 = never written); counts add
_ENGINE_ARRAYS = (("pyr", "max"), ("rowbest", "max"), ("colbest", "max"), ("cp_invalid", "add"), ("cp_sig", "add"))


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, dict) else np.asarray(a)  # CuPy or NumPy


def _sparse_state(engine) -> dict:
    """An engine's accumulators after a reset and some tiles, as the entries those tiles wrote
    (flat index, value; found on the device), with the threshold and the top-k (host arrays)."""
    xp = engine.cp
    out = {}
    for name, _ in _ENGINE_ARRAYS:
        flat = getattr(engine, name).reshape(-1)
        idx = xp.flatnonzero(flat)
        if int(idx.size) * (4 + flat.itemsize) < flat.nbytes and flat.size < 2**32:
            out[name] = (_host(idx.astype(xp.uint32)), _host(flat[idx]))
        else:  # most entries written: the whole array is smaller
            out[name] = (None, _host(flat))
    out.update({"gpu_thr": _host(engine.thr), "topk_i": _host(engine.top_i), "topk_j": _host(engine.top_j),
                "topk_stat": _host(engine.top_stat), "topk_effect": _host(engine.top_beta)})
    return out


def merge_engine_partial(engine, part: dict) -> None:
    """Fold a :func:`_sparse_state` partial into an engine's device accumulators in place: maxima
    and sums at the written entries, the exact top-k merge, and the larger candidate threshold
    (both are lower bounds of the final one)."""
    xp = engine.cp
    for name, op in _ENGINE_ARRAYS:
        idx, vals = part[name]
        flat = getattr(engine, name).reshape(-1)  # a view: writes go to the accumulator
        v = xp.asarray(vals)
        if idx is None:  # the whole array
            if op == "max":
                xp.maximum(flat, v, out=flat)
            else:
                flat += v
            continue
        if not len(idx):
            continue
        i = xp.asarray(idx).astype(xp.int64)
        flat[i] = xp.maximum(flat[i], v) if op == "max" else flat[i] + v  # indices are unique
    t = TopK(engine.k)
    t.i, t.j = _host(engine.top_i), _host(engine.top_j)
    t.stat, t.effect = _host(engine.top_stat), _host(engine.top_beta)
    t.offer(part["topk_i"], part["topk_j"], part["topk_stat"], part["topk_effect"])
    engine.top_i, engine.top_j = xp.asarray(t.i), xp.asarray(t.j)
    engine.top_stat, engine.top_beta = xp.asarray(t.stat), xp.asarray(t.effect)
    thr = max(float(_host(engine.thr).reshape(-1)[0]), float(np.asarray(part["gpu_thr"]).reshape(-1)[0]))
    if len(t) >= t.k:
        thr = max(thr, float(t.stat[-1]))
    engine.thr[...] = thr
