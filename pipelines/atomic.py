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
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]   # deepest first
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
        _remove_empty(made)
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


def _dvc_outs(root: Path) -> set[Path]:
    """The output paths dvc.lock records in ``root`` (resolved), or none without a dvc.lock."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return set()
    import yaml

    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) or {}
    except yaml.YAMLError:
        return set()
    return {(root / o["path"]).resolve() for st in stages.values() if isinstance(st, dict)
            for o in st.get("outs", []) or [] if isinstance(o, dict) and "path" in o}


def precheck_output_dir(path, inputs=()) -> Path:
    """What :func:`atomic_dir` would refuse at the end, refused before any work starts:
    :func:`check_output_dir`, a folder that cannot be written (a read-only file system), and an
    existing non-empty folder that neither carries the marker nor is an output dvc.lock records
    (DVC restores outputs without the marker)."""
    path = check_output_dir(path, inputs)
    target = path.resolve()
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        import errno

        reason = "read-only file system" if _read_only_fs(existing) else "permission denied"
        raise OSError(errno.EROFS if reason.startswith("read") else errno.EACCES,
                      reason[:1].upper() + reason[1:], str(existing))
    if path.is_dir() and any(not _own_leftover(p.name) for p in path.iterdir()) \
            and not (path / MARKER).is_file() and target not in _dvc_outs(Path.cwd()):
        raise EpiflowError(f"output folder {path} exists and was not written by epiflow; remove "
                           "it or give another folder (nothing was changed)")
    return path


def precheck_output_file(path, inputs=(), what: str = "output") -> Path:
    """Refuse (one-line :class:`EpiflowError`), before any work starts, an output FILE (a metrics
    JSON, a splits file) that :func:`atomic_path` could not write or that would destroy: the path
    of one of ``inputs`` (or a file inside an input folder), an existing folder, a path under a
    regular file. ``what`` names the flag in the message (``--metrics``)."""
    path = Path(path)
    target = path.resolve()
    for inp in inputs:
        if inp is None or inp == "":
            continue
        ip = Path(inp).resolve()
        if ip == target or (ip.is_dir() and ip in target.parents):
            raise EpiflowError(f"{what} {path} would overwrite the input {inp}; give another path")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise EpiflowError(f"{what} {path}: {parent} is a file, not a folder")
    if path.is_dir():
        raise EpiflowError(f"{what} {path} is a folder; give a file path")
    return path


def mark_output_dir(path) -> Path:
    """Create ``path`` (checked with :func:`precheck_output_dir` first) and mark it as an epiflow
    output, for commands that write their files into the folder one by one (a scan, which also
    keeps its checkpoint there): a run killed half-way leaves a folder the rerun may write into."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        write_text(path / MARKER, "written by epiflow; a later run may replace this folder\n")
    return path


def _own_leftover(name: str) -> bool:
    """A file a killed run leaves in its output folder for the next run (a scan checkpoint)."""
    return name.startswith(".") and ".ckpt." in name


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]   # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EpiflowError(f"output folder {path}: cannot create its parent ({exc.strerror})") from None
    _remove_stale(path, ("tmp.", "old."))
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.{os.getpid()}.", dir=path.parent))
    except OSError as exc:
        _remove_empty(made)
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
        _remove_empty(made)
        raise


def _remove_empty(folders) -> None:
    """Remove the folders a failed write created for its output (deepest first), if empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            break


def write_json(path, obj, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON (sorted keys, trailing newline)."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json_text(obj, indent=indent))


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# Metrics JSON that git tracks (metrics/*.json, DVC `metrics:` with cache: false) hold only what a
# rerun on the same inputs reproduces byte for byte. Wall times, throughputs, MLflow run ids and
# host names change every run: they go to MLflow and to an untracked sibling file, so a rerun with
# identical results leaves `git status` clean.
VOLATILE_KEY = re.compile(r"run_id$|seconds|per_second|time(_[a-z]+)?_s(\.|$)|^wall_s$|^host(name)?$|^pid$")


def timings_path(path) -> Path:
    """Where the volatile part of the metrics JSON ``path`` goes: ``metrics/timings/<rest>`` for a
    file under a ``metrics`` folder (``metrics/train/x.json`` -> ``metrics/timings/train/x.json``,
    outside the folders stages depend on), else ``<stem>.timings.json`` beside it."""
    p = Path(path)
    parts = p.parts
    if "metrics" in parts[:-1]:
        i = len(parts) - 1 - parts[:-1][::-1].index("metrics") - 1
        return Path(*parts[: i + 1], "timings", *parts[i + 1:])
    return p.with_name(p.stem + ".timings.json")


def split_volatile(metrics: dict) -> tuple[dict, dict]:
    """(reproducible part, volatile part) of a metrics dict; nested dicts are split key by key."""
    stable, volatile = {}, {}
    for k, v in metrics.items():
        if VOLATILE_KEY.search(str(k)):
            volatile[k] = v
        elif isinstance(v, dict):
            s, t = split_volatile(v)
            if s or not t:
                stable[k] = s
            if t:
                volatile[k] = t
        else:
            stable[k] = v
    return stable, volatile


def write_metrics(path, metrics: dict) -> Path:
    """Write a stage's metrics: the reproducible numbers to ``path`` (tracked by git and DVC), the
    timings and run ids to :func:`timings_path` (ignored by git). Returns the timings file."""
    stable, volatile = split_volatile(metrics)
    write_json(path, stable)
    side = timings_path(path)
    if volatile:
        write_json(side, volatile)
    elif side.is_file():
        side.unlink()
    return side


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def read_metrics(path, what: str = "metrics JSON"):
    """A metrics JSON with its timings file (if any) merged back in: what the stage returned."""
    from models.jsonio import read_json

    data = read_json(path, what)
    side = timings_path(path)
    if isinstance(data, dict) and side.is_file():
        try:
            extra = read_json(side, what)
        except EpiflowError:        # a damaged timings file costs the timings, nothing else
            extra = {}
        if isinstance(extra, dict):
            data = _merge(data, extra)
    return data
