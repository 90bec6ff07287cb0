"""Shared test fixtures and marker handling.

Markers: ``slow`` (run with --runslow or EPIFLOW_SLOW=1), ``gpu`` (needs CuPy and a CUDA device),
``postgres`` (needs a PostgreSQL server binary). Each is skipped cleanly where unavailable.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EPIFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def _gpu_available() -> bool:
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _postgres_available() -> bool:
    if shutil.which("initdb") or shutil.which("pg_ctl"):
        return True
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow") or os.environ.get("EPIFLOW_SLOW") == "1"
    gpu = None
    pg = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: use --runslow or EPIFLOW_SLOW=1"))
        if "gpu" in item.keywords:
            gpu = _gpu_available() if gpu is None else gpu
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="gpu: no CuPy/CUDA device here"))
        if "postgres" in item.keywords:
            pg = _postgres_available() if pg is None else pg
            if not pg:
                item.add_marker(pytest.mark.skip(reason="postgres: no PostgreSQL server binary"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public datasets folder (../shared/data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mouse_panel(shared_data, tmp_path_factory):
    """``make(n_snps, name)``: mouse_hs1940 (GEMMA's example data) with an ``--extract`` file of the
    first ``n_snps`` SNPs of its 1,000-SNP panel, as (bfile, pheno, dir) in a fresh folder."""
    from types import SimpleNamespace

    import pandas as pd

    def make(n_snps: int, name: str):
        d = tmp_path_factory.mktemp(name)
        snps = pd.read_csv(shared_data / "gemma" / "mouse_hs1940_snps.txt.gz", header=None)[0]
        (d / "extract.txt").write_text("\n".join(snps[:n_snps]) + "\n")
        return SimpleNamespace(bfile=str(shared_data / "gemma" / "mouse_hs1940"),
                               pheno=str(shared_data / "gemma" / "mouse_hs1940.pheno.txt.gz"), dir=d)

    return make


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
