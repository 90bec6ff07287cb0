"""Atomic outputs: write to a temporary sibling, then rename into place.

A failed or interrupted command therefore never leaves a half-written output behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from models.jsonio import json_text


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary file path next to ``path``; rename it to ``path`` on success.

    The temporary file keeps ``suffix`` (e.g. ``.npz``) so libraries that append extensions behave.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes[-1:]),
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary directory next to ``path``; it replaces ``path`` on success.

    An existing ``path`` is only removed once the new contents are complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path, obj, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON (sorted keys, trailing newline)."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json_text(obj, indent=indent))


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
