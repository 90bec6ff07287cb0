"""Reading params.yaml and resolving paths against the repository root."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from pipelines.errors import EpiflowError


def repo_root(start: Path | None = None) -> Path:
    """The project root: the nearest parent holding params.yaml (or dvc.yaml), else the cwd.

    ``EPIFLOW_ROOT`` overrides the search.
    """
    if os.environ.get("EPIFLOW_ROOT"):
        return Path(os.environ["EPIFLOW_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "params.yaml").is_file() or (p / "dvc.yaml").is_file():
            return p
    return here


def read_params(path: str | Path) -> tuple[dict, str]:
    """(parsed mapping, text) of an existing params file; a malformed one is a one-line error."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EpiflowError(f"{path}: not a text (YAML) file") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise EpiflowError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise EpiflowError(f"{path}: expected a mapping at the top level")
    return data, text


def load_params(path: str | Path = "params.yaml") -> dict:
    """Load params.yaml, validated against the schema (:mod:`pipelines.config`; once per file
    version) before any stage works with it; a missing file gives an empty dict (all defaults), a
    malformed or invalid one a one-line error naming the file, the key and the value.

    Returns the user's own values, defaults NOT filled in (stages log these to MLflow and some
    outputs depend on them); :func:`pipelines.config.load_config` gives the typed, defaulted view.
    """
    path = Path(path)
    if path.is_dir():
        raise EpiflowError(f"{path}: is a folder, not a params file")
    if not path.is_file():
        return {}
    data, text = read_params(path)
    from pipelines.config import validate_params

    validate_params(data, path, text)
    return data


DEFAULT_PARAMS = "params.yaml"


def check_params_flag(value) -> None:
    """A ``--params FILE`` the user named must exist; only the default ``params.yaml`` may be
    absent (then every setting has its default). One-line error otherwise."""
    if value is None:
        return
    path = Path(value)
    if path.is_dir():
        raise EpiflowError(f"--params {value}: is a folder, not a params file")
    if not path.exists() and str(value) != DEFAULT_PARAMS:
        raise EpiflowError(f"--params {value}: file not found")


def section(params: dict, name: str, path: str | Path = "params.yaml") -> dict:
    value = params.get(name, {})
    if not isinstance(value, dict):
        raise EpiflowError(f"{path}: section '{name}' must be a mapping")
    return value
