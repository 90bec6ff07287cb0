"""The one array-module switch of models/ngg: CuPy on a CUDA device, NumPy everywhere else.

Every numerical routine of the NGG package takes an array module ``xp`` and uses only the part of
the NumPy API that CuPy shares, so the same code runs on the CPU and on the GPU::

    from models.backend import get_xp, to_numpy
    xp = get_xp("auto")        # cupy when a CUDA device is usable, else numpy
    a = xp.asarray(x)
    ...
    host = to_numpy(a)

CuPy is imported lazily, only when a GPU is asked for or probed, so importing this module (and
anything built on it) works on machines without CuPy or without a GPU. ``device="cuda"`` on such a
machine raises :class:`BackendUnavailable` with a one-line reason; ``"auto"`` silently falls back
to NumPy. The environment variable ``EPIFLOW_DEVICE`` (auto|cpu|cuda) sets the default.
"""
from __future__ import annotations

import os
import types
from functools import lru_cache

import numpy as np

__all__ = [
    "BackendUnavailable",
    "get_xp",
    "resolve_device",
    "gpu_available",
    "is_gpu",
    "to_numpy",
    "synchronize",
    "device_name",
]

DEVICES = ("auto", "cpu", "cuda")


class BackendUnavailable(RuntimeError):
    """The requested device (``cuda``) cannot be used here; the message says why."""


@lru_cache(maxsize=1)
def _probe_cupy() -> tuple[object | None, str]:
    """(cupy module or None, reason when None). Cached: probing a driver is slow."""
    try:
        import cupy  # noqa: PLC0415
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not installed ({type(exc).__name__}: {exc})".splitlines()[0]
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy finds no usable CUDA driver ({type(exc).__name__}: {exc})".splitlines()[0]
    if count < 1:
        return None, "CuPy finds no CUDA device"
    return cupy, ""


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _probe_cupy()[0] is not None


def resolve_device(device: str | None = None) -> str:
    """Map ``auto``/``cpu``/``cuda`` (default: ``$EPIFLOW_DEVICE`` or ``auto``) to ``cpu`` or ``cuda``.

    Raises :class:`BackendUnavailable` when ``cuda`` is asked for and cannot be used, and
    ``ValueError`` for an unknown name.
    """
    if device is None:
        device = os.environ.get("EPIFLOW_DEVICE", "auto")
    name = str(device).strip().lower()
    if name in ("gpu", "cupy"):
        name = "cuda"
    if name in ("numpy", "host"):
        name = "cpu"
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if name == "cpu":
        return "cpu"
    cupy, why = _probe_cupy()
    if cupy is None:
        if name == "cuda":
            raise BackendUnavailable(f"device 'cuda' requested but {why}")
        return "cpu"
    return "cuda"


def get_xp(device: str | None = None):
    """The array module for ``device`` (``auto``, ``cpu`` or ``cuda``): ``cupy`` or ``numpy``.

    A module passed in (numpy or cupy) is returned unchanged, so functions can accept either.
    """
    if device is not None and not isinstance(device, str):
        return device
    if resolve_device(device) == "cuda":
        return _probe_cupy()[0]
    return np


def is_gpu(xp) -> bool:
    """True when ``xp`` is the CuPy module (or a CuPy array)."""
    name = xp.__name__ if isinstance(xp, types.ModuleType) else type(xp).__module__
    return str(name).split(".")[0] == "cupy"


def to_numpy(a):
    """A NumPy array from a NumPy or CuPy array (or a scalar); NumPy arrays pass through."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def synchronize(xp) -> None:
    """Wait for queued device work (a no-op on NumPy); use before reading a host clock."""
    if is_gpu(xp):
        xp.cuda.Stream.null.synchronize()


def device_name(xp) -> str:
    """A short human-readable name of the device behind ``xp`` (GPU model or 'cpu')."""
    if not is_gpu(xp):
        return "cpu"
    try:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = props.get("name", b"cuda")
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "cuda"
