"""Where the heavy workflows run their independent pieces: in this process (``local``, the default
and the reference) or as tasks of a Dask distributed cluster (``dask``).

    epiflow scan ... --executor dask                        # a LocalCluster on this machine
    epiflow scan ... --executor dask --scheduler tcp://head:8786   # an existing cluster

The pieces are the blocks of the exact 2D scan's tile triangle, the repetitions of an NGG fit and
the (model, fold) pairs of the cross-validation protocol. Each workflow wraps its own per-piece
function; this module only opens the cluster and runs ordered maps on it (:meth:`Executor.map`):
results come back in submission order, so every merge is deterministic and the outputs are
byte-identical to the local path. Tasks are retried (``retries``) when a worker dies; Dask itself
reschedules the tasks of a killed worker on the others.

Without ``--scheduler`` a ``LocalCluster`` of worker processes is started (one per CPU core, one
thread each), or dask-cuda's ``LocalCUDACluster`` (one worker per GPU) when the device is CUDA and
dask-cuda is installed; without dask-cuda a CUDA run starts one worker process that sees the GPUs.

The workflows find the active executor with :func:`current` (set by :func:`use` around a stage's
work), so their signatures do not change; ``None`` or a local executor means the code path of a
single process, untouched.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from pipelines.errors import EpiflowError

__all__ = ["ExecutorSpec", "Executor", "KINDS", "open_executor", "use", "current", "spec_from",
           "add_executor_arguments", "dask_available"]

KINDS = ("local", "dask")
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("epiflow_executor", default=None)


@dataclass(frozen=True)
class ExecutorSpec:
    """How to run (params.yaml ``executor:``; the command line overrides kind and scheduler)."""

    kind: str = "local"              # local | dask
    scheduler: str | None = None     # tcp://host:port of a running scheduler (or a scheduler JSON file)
    n_workers: int = 0               # LocalCluster workers (0: one per core; CUDA: one per GPU)
    threads_per_worker: int = 1
    retries: int = 2                 # extra tries of a task whose worker died
    device: str = "cpu"              # cuda: a LocalCUDACluster when dask-cuda is installed
    timeout: float = 30.0            # seconds to reach a scheduler

    def __post_init__(self):
        if self.kind not in KINDS:
            raise EpiflowError(f"executor must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.scheduler is not None and self.kind != "dask":
            raise EpiflowError("--scheduler needs --executor dask")
        if self.n_workers < 0 or self.threads_per_worker < 1 or self.retries < 0:
            raise EpiflowError("executor: n_workers >= 0, threads_per_worker >= 1 and retries >= 0 are needed")


def dask_available() -> bool:
    return importlib.util.find_spec("distributed") is not None


def add_executor_arguments(p) -> None:
    """``--executor`` and ``--scheduler`` (defaults from params.yaml ``executor:``)."""
    p.add_argument("--executor", choices=list(KINDS), default=None,
                   help="where the independent pieces run: local (this process, default) or dask "
                        "(a Dask cluster; default from params.yaml executor.kind)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (tcp://host:8786) or its scheduler file; "
                        "without it --executor dask starts a local cluster")


def spec_from(args, params: dict | None = None, device: str = "cpu") -> ExecutorSpec:
    """The executor of a stage: params.yaml ``executor:`` overridden by ``--executor`` / ``--scheduler``."""
    sec = dict((params or {}).get("executor") or {})
    kind = getattr(args, "executor", None) or sec.get("kind", "local")
    scheduler = getattr(args, "scheduler", None) or sec.get("scheduler")
    if getattr(args, "scheduler", None) and not getattr(args, "executor", None):
        kind = "dask"
    if kind == "local" and not getattr(args, "scheduler", None):
        scheduler = None  # params.yaml's scheduler is not wanted with --executor local
    return ExecutorSpec(kind=kind, scheduler=scheduler, n_workers=int(sec.get("n_workers") or 0),
                        threads_per_worker=int(sec.get("threads_per_worker") or 1),
                        retries=int(sec.get("retries", 2)), device=device)


class Executor:
    """An open executor. ``distributed`` is False for the local one (callers keep their own path)."""

    def __init__(self, spec: ExecutorSpec, client=None, cluster=None):
        self.spec = spec
        self.client = client
        self.cluster = cluster

    @property
    def distributed(self) -> bool:
        return self.client is not None

    @property
    def n_workers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    @property
    def n_slots(self) -> int:
        """Tasks that can run at once (threads over all workers)."""
        if self.client is None:
            return 1
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))

    def broadcast(self, obj):
        """``obj`` copied once to every worker; pass the handle to :meth:`map` instead of the object."""
        if self.client is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def map(self, fn: Callable, items: Iterable, *args, **kwargs) -> Iterator:
        """``fn(item, *args, **kwargs)`` for every item, yielded in item order (tasks all submitted
        at once; a task whose worker dies is rerun on another one)."""
        items = list(items)
        if self.client is None:
            return (fn(it, *args, **kwargs) for it in items)
        futures = [self.client.submit(fn, it, *args, pure=False, retries=self.spec.retries, **kwargs)
                   for it in items]
        return _in_order(futures)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None


def _in_order(futures) -> Iterator:
    try:
        for f in futures:
            try:
                yield f.result()
            except Exception as exc:  # the cluster's own failures in one line; a task's errors as they are
                if type(exc).__module__.split(".")[0] != "distributed" and not isinstance(exc, (OSError,)):
                    raise
                raise EpiflowError(f"dask: task {f.key} failed on the cluster ({type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'})"
                                   ) from None
    finally:
        for f in futures:  # a stopped consumer (error, interruption) cancels what is left
            if not f.done():
                f.cancel()


@contextlib.contextmanager
def open_executor(spec: ExecutorSpec, log: Callable = print):
    """The executor of ``spec`` (a cluster is started, or the scheduler connected to, and closed after)."""
    if spec.kind == "local":
        yield Executor(spec)
        return
    if not dask_available():
        raise EpiflowError("--executor dask needs dask.distributed: pip install 'dask[distributed]'")
    from distributed import Client

    cluster = None
    try:
        if spec.scheduler:
            sched = spec.scheduler
            if os.path.isfile(sched):
                client = Client(scheduler_file=sched, timeout=f"{spec.timeout}s")
            else:
                client = Client(sched, timeout=f"{spec.timeout}s")
            where = sched
        else:
            cluster = _local_cluster(spec, log)
            client = Client(cluster)
            where = "a local cluster"
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise EpiflowError(f"cannot reach the Dask scheduler {spec.scheduler}: {exc}") from None
    ex = Executor(spec, client, cluster)
    log(f"executor: dask on {where}, {ex.n_workers} workers, {ex.n_slots} task slots")
    token = _CURRENT.set(ex)
    try:
        yield ex
    finally:
        _CURRENT.reset(token)
        ex.close()


def _local_cluster(spec: ExecutorSpec, log):
    silence = logging.ERROR
    if spec.device == "cuda" and importlib.util.find_spec("dask_cuda") is not None:
        from dask_cuda import LocalCUDACluster

        kw = {"n_workers": spec.n_workers} if spec.n_workers else {}
        return LocalCUDACluster(threads_per_worker=spec.threads_per_worker, host="127.0.0.1",
                                dashboard_address=None, silence_logs=silence, **kw)
    from distributed import LocalCluster

    if spec.device == "cuda":
        n = spec.n_workers or 1
        if not spec.n_workers:
            log("executor: dask-cuda is not installed; one worker process shares the GPU(s)")
    else:
        n = spec.n_workers or _cores()
    return LocalCluster(n_workers=n, threads_per_worker=spec.threads_per_worker, processes=True,
                        host="127.0.0.1", dashboard_address=None, silence_logs=silence)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def use(executor: Executor | None):
    """Make ``executor`` the one :func:`current` returns inside the block."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def current() -> Executor | None:
    """The executor opened around this work (None: run in this process)."""
    ex = _CURRENT.get()
    return ex if ex is not None and ex.distributed else None


# ------------------------------------------------------------------------------ SLURM launcher


def slurm_main(argv=None) -> int:
    """``python -m pipelines.executor slurm --jobs N --scheduler-file F``: a Dask scheduler here
    (the login node) and N SLURM jobs of workers through dask-jobqueue (settings from the Dask
    config, e.g. ``DASK_CONFIG=docs/dask-jobqueue.yaml``); writes the scheduler file that
    ``--scheduler F`` of epiflow's commands connects to, and runs until interrupted."""
    import argparse
    import json
    import signal
    import time

    ap = argparse.ArgumentParser(prog="python -m pipelines.executor slurm", description=slurm_main.__doc__)
    ap.add_argument("--jobs", type=int, default=1, help="SLURM jobs (each one worker process)")
    ap.add_argument("--scheduler-file", default="work/dask-scheduler.json")
    ap.add_argument("--print-job-script", action="store_true", help="print the job script and exit (submits nothing)")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("dask_jobqueue") is None:
        raise SystemExit("python -m pipelines.executor slurm: needs dask-jobqueue (pip install dask-jobqueue)")
    from dask_jobqueue import SLURMCluster

    with SLURMCluster() as cluster:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        path = os.path.abspath(args.scheduler_file)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"type": "Scheduler", "address": cluster.scheduler_address}, f)
        os.replace(tmp, path)
        cluster.scale(jobs=args.jobs)
        print(f"scheduler {cluster.scheduler_address} (file {path}); {args.jobs} SLURM job(s) submitted; "
              "Ctrl-C stops the workers", flush=True)
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        try:
            while not stop:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            os.remove(path)
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1] != "slurm":
        raise SystemExit("usage: python -m pipelines.executor slurm --jobs N [--scheduler-file F]")
    sys.exit(slurm_main(sys.argv[2:]))
