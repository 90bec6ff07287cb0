"""Atomic outputs: write to a temporary sibling, then rename into place.

A failed or interrupted command therefore never leaves a half-written output behind, and outputs
never destroy: an output folder replaces an existing path only when that path is absent, empty,
or a previous output of epiflow (it holds the marker file :data:`MARKER`); anything else, or an
output folder that would hold one of the command's inputs, is refused with a one-line error
before anything is written. Temporary siblings left by a killed run (their names carry the
writer's process id) are removed by the next run that writes the same output.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from models.errors import EpiflowError
from models.jsonio import json_text

MARKER = ".epiflow-output"   # in every output folder; listed in .dvcignore, so DVC hashes skip it


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary file path next to ``path``; rename it to ``path`` on success.

    The temporary file keeps ``suffix`` (e.g. ``.npz``) so libraries that append extensions behave.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path, ("",))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                               suffix=suffix or "".join(path.suffixes[-1:]), dir=path.parent)
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(path: Path, kinds) -> None:
    """Remove temporary siblings of ``path`` (``.NAME.<kind><pid>.<8 random chars>[suffix]``, as
    written by :func:`atomic_path` and :func:`atomic_dir`) whose writing process is dead."""
    for kind in kinds:
        pat = re.compile(re.escape(f".{path.name}.{kind}") + r"(\d+)\.[a-z0-9_]{8}(\.[^/]*)?$")
        for p in path.parent.iterdir():
            m = pat.match(p.name)
            if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def remove_with_temps(path) -> None:
    """Remove ``path`` and the temporary siblings that killed writers of it left (a file written
    with :func:`atomic_path` that a run discards at its end, e.g. a checkpoint)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        _remove_stale(path, ("",))


def check_output_dir(path, inputs=()) -> Path:
    """Refuse (one-line :class:`EpiflowError`) an output folder that would destroy anything:
    an existing file, a non-empty folder that is not a previous epiflow output, the working
    directory or one of its parents, or a folder that holds one of ``inputs``."""
    path = Path(path)
    target = path.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise EpiflowError(f"output folder {path} is the working directory or one of its parents; "
                           "give a new folder")
    for inp in inputs:
        if inp is None:
            continue
        ip = Path(inp).resolve()
        if ip == target or target in ip.parents:
            raise EpiflowError(f"output folder {path} would hold the input {inp}; give another folder")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise EpiflowError(f"output folder {path}: {parent} is a file, not a folder")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise EpiflowError(f"output folder {path} exists and is not a folder; remove it or give another")
    return path


def _replaceable(path: Path, new: Path) -> bool:
    """An existing folder may be replaced when it is empty, carries the marker, or holds nothing
    but names the new output holds too (a previous output of the same command, e.g. restored by
    DVC from its cache without the marker)."""
    if (path / MARKER).is_file():
        return True
    new_names = {p.name for p in new.iterdir()}
    return all(p.name in new_names for p in path.iterdir())


@contextlib.contextmanager
def atomic_dir(path, inputs=()):
    """Yield a temporary directory next to ``path``; it replaces ``path`` on success.

    ``path`` is checked first (:func:`check_output_dir`): an existing folder is replaced only if
    it is empty or a previous epiflow output (:func:`_replaceable`), and only once the new
    contents are complete; otherwise nothing is changed and a one-line error names the folder.
    """
    path = check_output_dir(path, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EpiflowError(f"output folder {path}: cannot create its parent ({exc.strerror})") from None
    _remove_stale(path, ("tmp.", "old."))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.{os.getpid()}.", dir=path.parent))
    except OSError as exc:
        raise EpiflowError(f"output folder {path}: cannot write in {path.parent} ({exc.strerror})") from None
    try:
        yield tmp
        (tmp / MARKER).write_text("written by epiflow; a later run may replace this folder\n")
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() and not _replaceable(path, tmp):
            raise EpiflowError(f"output folder {path} exists and was not written by epiflow; remove "
                               "it or give another folder (nothing was changed)")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.{os.getpid()}.", dir=path.parent))
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
