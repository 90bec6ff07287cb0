"""The layering of models/ and pipelines/, enforced by import-linter.

The contracts live in pyproject.toml ([tool.importlinter]). ``lint-imports`` builds the import
graph with grimp, which reads every ``import`` statement, function-level (lazy) ones included, so
an import hidden inside a function still breaks a contract. ``importlib.import_module`` (how
pipelines.cli reaches the stages) is invisible to it, by design.

The second group of tests copies the packages to a temporary folder, plants one violation per
contract (as a function-level import) and checks that lint-imports fails there, naming the contract
and the planted import: the contracts are not vacuous.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess:
    """Run the venv's lint-imports in ``cwd`` (its pyproject.toml), only ``contracts`` if given."""
    assert LINT_IMPORTS.exists(), f"import-linter is not installed in this venv ({LINT_IMPORTS})"
    cmd = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for c in contracts:
        cmd += ["--contract", c]
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the packages under cwd, never the installed ones
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    r = lint_imports(REPO)
    out = r.stdout + r.stderr
    assert "Contracts:" in out, out                     # it ran and read the contracts
    assert r.returncode == 0, f"import-linter contracts broken:\n{out}"
    assert "BROKEN" not in out, out


# (file to plant in, planted import, contract id, contract name fragment, expected report line)
PLANTED = [
    ("models/stats.py", "import mlflow", "models-no-tracking",
     "models stays free of mlflow, optuna and dvc", "models.stats -> mlflow"),
    ("models/stats.py", "import optuna", "models-no-tracking",
     "models stays free of mlflow, optuna and dvc", "models.stats -> optuna"),
    ("models/stats.py", "from pipelines import errors", "models-no-pipelines",
     "models imports nothing of pipelines", "models.stats -> pipelines.errors"),
    ("pipelines/atomic.py", "from pipelines.stages import train", "stages-only-from-cli",
     "pipelines.stages is imported only by pipelines.cli", "pipelines.atomic -> pipelines.stages.train"),
    ("pipelines/atomic.py", "from pipelines import cli", "cli-on-top",
     "nothing in models or pipelines imports pipelines.cli", "pipelines.atomic -> pipelines.cli"),
    ("pipelines/stages/splits.py", "from pipelines.stages import report", "stages-independent",
     "stage modules do not import each other", "pipelines.stages.splits -> pipelines.stages.report"),
    ("pipelines/atomic.py", "import cupy", "cupy-in-backend",
     "cupy is imported only by models.backend", "pipelines.atomic -> cupy"),
]


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("models", "pipelines"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("target, statement, contract, name, report", PLANTED,
                         ids=[f"{p[2]}:{p[1]}" for p in PLANTED])
def test_planted_violation_breaks_its_contract(tree_copy, target, statement, contract, name, report):
    path = tree_copy / target
    assert path.exists(), f"{target} moved: pick another module to plant the violation in"
    # function-level on purpose: lazy imports must count as much as module-level ones
    path.write_text(path.read_text() + f"\n\ndef _planted_violation():\n    {statement}  # planted\n")
    r = lint_imports(tree_copy, contract)
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"planted `{statement}` in {target} was not caught:\n{out}"
    assert "BROKEN" in out and name in out, out
    assert report in out, f"the report does not name the planted import {report!r}:\n{out}"


def test_planted_module_level_import_is_caught_too(tree_copy):
    path = tree_copy / "models" / "stats.py"
    path.write_text(path.read_text() + "\nimport dvc  # planted\n")
    r = lint_imports(tree_copy, "models-no-tracking")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "models.stats -> dvc" in out, out
