"""dvc.yaml's code deps cannot drift from the code.

For every stage of dvc.yaml (``foreach``/``do`` stages included) the ``epiflow <sub>`` command is
mapped through ``pipelines.cli.COMMANDS`` to its module; grimp gives every first-party module that
module imports, directly or not, function-level imports included. Each of their files must be
covered by a ``deps:`` entry (the file itself or a folder above it), else ``dvc repro`` would not
rerun the stage when that code changes. Entries with ``${...}`` interpolation are data: skipped.

Importing a module also runs the ``__init__.py`` of each package above it: those count when they
hold code (an empty or docstring-only ``__init__.py`` changes nothing, so it is not demanded).
"""
from __future__ import annotations

import ast
import copy
import shlex
from pathlib import Path

import grimp
import pytest
import yaml

from pipelines.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("models", "pipelines")


def _module_file(module: str, root: Path = REPO) -> Path | None:
    base = root.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _has_code(path: Path) -> bool:
    """Whether a module holds anything besides a docstring (an empty __init__.py does not)."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    return bool(body)


def code_closure(module: str, graph, root: Path = REPO) -> set[str]:
    """Repo-relative files of ``module`` and every first-party module it imports, transitively,
    plus the non-empty ``__init__.py`` of the packages above each of them (and what they import)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo.extend(graph.find_upstream_modules(mod))
        parts = mod.split(".")
        for i in range(1, len(parts)):
            pkg = ".".join(parts[:i])
            init = _module_file(pkg, root)
            if init is not None and init.name == "__init__.py" and _has_code(init):
                todo.append(pkg)
    files = set()
    for mod in seen:
        path = _module_file(mod, root)
        assert path is not None, f"no file for module {mod}"
        files.add(path.relative_to(root).as_posix())
    return files


def subcommand(cmd) -> str | None:
    """The epiflow subcommand of a stage's cmd (first non-option word after ``epiflow``), as
    pipelines.cli.main picks it; None for a command that is not ``epiflow ...``."""
    if isinstance(cmd, list):  # a list of commands: the epiflow one
        found = [s for s in (subcommand(c) for c in cmd) if s]
        return found[0] if found else None
    words = shlex.split(str(cmd))
    if not words or Path(words[0]).name != "epiflow":
        return None
    return next((w for w in words[1:] if not w.startswith("-")), None)


def _dep_paths(deps) -> list[str]:
    out = []
    for d in deps or []:
        name = next(iter(d)) if isinstance(d, dict) else str(d)
        if "${" in name:
            continue  # interpolated: data, not code
        out.append(name.strip().removeprefix("./").rstrip("/"))
    return out


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in deps)


def missing_code_deps(dvc: dict, graph=None, root: Path = REPO) -> dict[str, list[str]]:
    """{stage: [code files not covered by its deps]} for every epiflow stage of a parsed dvc.yaml.
    Raises AssertionError for an epiflow subcommand that COMMANDS does not know."""
    graph = graph if graph is not None else grimp.build_graph(*ROOTS)
    missing: dict[str, list[str]] = {}
    for name, stage in (dvc.get("stages") or {}).items():
        if "foreach" in stage:
            name, stage = f"{name} (foreach)", stage.get("do", {})
        sub = subcommand(stage.get("cmd", ""))
        if sub is None:
            continue
        assert sub in COMMANDS, f"stage {name}: `epiflow {sub}` is not in pipelines.cli.COMMANDS"
        files = code_closure(COMMANDS[sub][0], graph, root)
        deps = _dep_paths(stage.get("deps"))
        lost = sorted(f for f in files if not _covered(f, deps))
        if lost:
            missing[name] = lost
    return missing


def format_missing(missing: dict[str, list[str]]) -> str:
    return "dvc.yaml deps do not cover the code each stage runs:\n" + "\n".join(
        f"  stage {stage}: missing {', '.join(files)}" for stage, files in missing.items())


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*ROOTS)


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def test_every_stage_has_an_epiflow_command(dvc_yaml):
    stages = dvc_yaml["stages"]
    assert stages
    for name, stage in stages.items():
        cmd = stage.get("do", stage).get("cmd")
        assert subcommand(cmd) in COMMANDS, f"stage {name}: {cmd!r} maps to no pipelines.cli command"


def test_dvc_deps_cover_the_code(dvc_yaml, graph):
    missing = missing_code_deps(dvc_yaml, graph)
    assert not missing, format_missing(missing)


def stale_code_deps(dvc: dict, root: Path = REPO) -> dict[str, list[str]]:
    """{stage: [code deps (under models/ or pipelines/) that no longer exist]}: a module moved
    and dvc.yaml still names its old path (dvc repro would stop on a missing dependency)."""
    stale: dict[str, list[str]] = {}
    for name, stage in (dvc.get("stages") or {}).items():
        stage = stage.get("do", stage)
        gone = [d for d in _dep_paths(stage.get("deps"))
                if d.split("/")[0] in ROOTS and not (root / d).exists()]
        if gone:
            stale[name] = gone
    return stale


def test_code_deps_exist(dvc_yaml):
    stale = stale_code_deps(dvc_yaml)
    assert not stale, "dvc.yaml names code that is gone (moved?):\n" + "\n".join(
        f"  stage {s}: {', '.join(f)}" for s, f in stale.items())


def test_planted_drift_is_caught(dvc_yaml, graph):
    """A dvc.yaml with one code dep removed (a file dep, then a folder dep) fails the same check."""
    drifted = copy.deepcopy(dvc_yaml)
    deps = drifted["stages"]["encode"]["deps"]
    deps.remove("pipelines/stages/encode.py")
    missing = missing_code_deps(drifted, graph)
    assert "pipelines/stages/encode.py" in missing.get("encode", []), format_missing(missing)
    assert "stage encode: missing" in format_missing(missing)

    drifted = copy.deepcopy(dvc_yaml)
    train = drifted["stages"]["train"]["do"]
    folder = next(d for d in train["deps"] if isinstance(d, str) and d.rstrip("/") == "models/genes")
    train["deps"].remove(folder)
    missing = missing_code_deps(drifted, graph)
    assert any(f.startswith("models/genes/") for f in missing.get("train (foreach)", [])), \
        format_missing(missing)

    drifted = copy.deepcopy(dvc_yaml)
    drifted["stages"]["splits"]["deps"].append("pipelines/moved_away.py")
    assert stale_code_deps(drifted) == {"splits": ["pipelines/moved_away.py"]}


def test_interpolated_deps_are_data_and_folders_cover_their_files():
    assert _dep_paths(["${encode.vcf}", "models/genes/", "./pipelines/zoo.py", {"x.py": {}}]) == \
        ["models/genes", "pipelines/zoo.py", "x.py"]
    assert _covered("models/genes/nets.py", ["models/genes"])
    assert not _covered("models/genes_extra.py", ["models/genes"])
    assert subcommand("epiflow tune --quiet --metrics metrics/tune.json") == "tune"
    assert subcommand("epiflow ngg pheno") == "ngg"
    assert subcommand("python -m something") is None
