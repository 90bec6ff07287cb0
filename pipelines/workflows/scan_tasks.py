"""The exact 2D scan's blocks as tasks of a distributed executor (:mod:`pipelines.executor`).

The driver keeps the scan of :func:`pipelines.workflows.scan.run_scan` (its static list of blocks
of the tile triangle, its accumulators and its checkpoint). Every block still to do is cut into
chunks of tile pairs, all submitted at once; a worker builds the same scan once from the broadcast
recipe (checked by fingerprint) and returns the chunk's reductions
(:func:`models.scans.partial.tile_partial`). The driver folds them in block and tile order, then
advances ``next_block`` and calls ``on_block`` (the checkpoint) exactly as ``Scan2D.run`` does: the
results and the checkpoints are byte-identical to the single-process scan, a checkpoint written by
either path resumes on the other, and a killed worker costs only the chunks it held (rerun).
"""
from __future__ import annotations

import time
from typing import Callable

from models.scans.partial import merge_partial, split_block, tile_partial

__all__ = ["run_blocks"]

_WORKER_SCANS: dict = {}  # fingerprint -> the scan built on this worker (one kept)


def _worker_scan(recipe: Callable, fingerprint: str):
    scan = _WORKER_SCANS.get(fingerprint)
    if scan is None:
        _WORKER_SCANS.clear()
        scan = recipe()
        if scan.fingerprint != fingerprint:
            raise RuntimeError("a worker built a different scan than the driver's (inputs or options differ)")
        _WORKER_SCANS[fingerprint] = scan
    return scan


def _chunk_task(chunk, recipe, fingerprint: str) -> dict:
    """Worker body: the reductions of one chunk of tile pairs."""
    t0 = time.perf_counter()
    part = tile_partial(_worker_scan(recipe, fingerprint), chunk)
    part["seconds"] = time.perf_counter() - t0
    return part


def run_blocks(scan, recipe: Callable, executor, *, on_block: Callable | None = None,
               chunks_per_worker: int = 4, progress: bool = True) -> dict:
    """Run ``scan``'s remaining blocks on ``executor`` (a distributed one).

    recipe(): builds an identical scan on a worker (picklable; e.g. a ``functools.partial`` of the
    constructor with the tile pinned). Returns timing numbers: tasks, seconds summed inside the
    tasks and wall seconds of the loop.
    """
    if scan.done:
        return {"tasks": 0, "task_seconds": 0.0, "wall_seconds": 0.0}
    t_wall = time.perf_counter()
    parts = max(1, executor.n_slots * chunks_per_worker // 2) if scan.engine is None else executor.n_slots
    todo = list(range(scan.next_block, len(scan.blocks)))
    chunks, owner = [], []
    for b in todo:
        for c in split_block(scan.blocks[b], parts):
            chunks.append(c)
            owner.append(b)
    handle = executor.broadcast(recipe)
    results = executor.map(_chunk_task, chunks, handle, scan.fingerprint)
    bar = _bar(len(todo), progress)
    task_seconds = 0.0
    remaining = {b: owner.count(b) for b in todo}
    t_last = time.perf_counter()
    try:
        for b, part in zip(owner, results):
            task_seconds += part.pop("seconds", 0.0)
            merge_partial(scan, part)
            remaining[b] -= 1
            if remaining[b] == 0:
                scan.next_block = b + 1
                scan.elapsed += time.perf_counter() - t_last  # wall time of the block, as Scan2D.run counts
                t_last = time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if on_block is not None:
                    on_block(scan)
    finally:
        results.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_wall
    # slot-seconds not spent inside a task (scheduling, transfers, merging, idle slots) per task
    return {"tasks": len(chunks), "task_seconds": task_seconds, "wall_seconds": wall,
            "slot_seconds_outside_tasks_per_task": max(0.0, wall * executor.n_slots - task_seconds) / len(chunks)}


def _bar(total: int, on: bool):
    if not on or total <= 1:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="2D scan blocks (dask)", unit="block", leave=False, smoothing=0.1)


# ------------------------------------------------------------------------------- NGG repetitions

_WORKER_PLANS: dict = {}  # key -> the NGG plan built on this worker (one kept)


def _ngg_task(unit, recipe: Callable, key: str, threads: int):
    """Worker body: one (block, repetition) unit of the tiled NGG (pipelines.workflows.ngg.ngg_repetition)."""
    import torch

    from pipelines.workflows.ngg import ngg_repetition

    plan = _WORKER_PLANS.get(key)
    if plan is None:
        _WORKER_PLANS.clear()
        plan = _WORKER_PLANS[key] = recipe()
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))  # as the single-process fit: same products, same bits
    try:
        return ngg_repetition(plan, *unit)
    finally:
        torch.set_num_threads(old)


def ngg_repetitions(executor, recipe: Callable, key: str, threads: int = 1) -> Callable:
    """The ``repetitions`` argument of :func:`models.ngg.tiled.ngg_fit_tiled` that runs a block's
    repetitions as tasks of ``executor`` (results in repetition order). recipe(): builds the fit's
    plan on a worker (:func:`models.ngg.tiled.prepare_tiled` with the fit's arguments); key names it."""
    handle = executor.broadcast(recipe)

    def run(block: int, reps: list):
        return executor.map(_ngg_task, [(int(block), int(r)) for r in reps], handle, key, threads)

    return run
