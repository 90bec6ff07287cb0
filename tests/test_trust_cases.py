"""Outputs never destroy, at the command line: for every command that writes a folder, each
dangerous ``--out`` (an unrelated folder holding files, the folder holding the inputs, the
working directory, a path under a regular file, a read-only file system) is refused in one line
with exit status 2, and no file anywhere in the project changes. The last case, a scan without
``--pheno`` (the .fam's phenotype, the documented default), runs.

Each command runs in process through ``pipelines.cli.main`` in a project folder whose inputs sit
in ``inputs/``; the whole project is hashed before and after.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from plink_files import write_bed

TESTS = Path(__file__).resolve().parent
SMALL_VCF = TESTS / "data" / "vcf" / "small_csq.vcf"
SMALL_SHEET = TESTS / "data" / "vcf" / "small_samples.tsv"


def _project(d: Path) -> Path:
    from test_workflows_cv import write_project

    inputs = d / "inputs"
    inputs.mkdir(parents=True)
    shutil.copy(SMALL_VCF, inputs / "in.vcf")
    shutil.copy(SMALL_SHEET, inputs / "samples.tsv")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(60, 40)).astype(np.int8)
    write_bed(inputs / "g", X)
    (inputs / "y.txt").write_text("".join(f"S{i:02d} S{i:02d} {v:.4f}\n" for i, v in enumerate(rng.normal(size=60))))
    write_project(inputs)            # inputs/encoded, inputs/splits.npz, inputs/params.yaml
    (d / "params.yaml").write_text((inputs / "params.yaml").read_text())
    return d


# command -> argv with {out} for the output folder (paths relative to the project folder)
COMMANDS = {
    "encode": ["encode", "--vcf", "inputs/in.vcf", "--samples", "inputs/samples.tsv", "--out", "{out}",
               "--metrics", "m_encode.json", "--quiet"],
    "ingest-bed": ["ingest-bed", "--bfile", "inputs/g", "--out", "{out}", "--metrics", "m_ingest.json"],
    "scan": ["scan", "--bfile", "inputs/g", "--pheno", "inputs/y.txt", "--mode", "1d", "--out", "{out}",
             "--device", "cpu"],
    "train": ["train", "--model", "sgd_l2", "--encoded", "inputs/encoded", "--splits", "inputs/splits.npz",
              "--out", "{out}", "--metrics", "m_train.json", "--plots", "r_train.json", "--no-mlflow",
              "--quiet", "--jobs", "1"],
}


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv, cwd: Path, capsys) -> tuple[int, str]:
    from pipelines.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        rc = main(argv)
    finally:
        os.chdir(old)
    return rc, capsys.readouterr().err


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("EPIFLOW_ROOT", str(tmp_path / "proj"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return _project(tmp_path / "proj")


def _setup_case(case: str, project: Path) -> str:
    if case == "unrelated_folder":
        (project / "mine").mkdir()
        (project / "mine" / "notes.txt").write_text("my notes\n")
        (project / "mine" / "sub").mkdir()
        (project / "mine" / "sub" / "data.csv").write_text("a,b\n1,2\n")
        return "mine"
    if case == "input_folder":
        return "inputs"
    if case == "working_directory":
        return "."
    if case == "under_a_file":
        (project / "afile").write_text("x\n")
        return "afile/out"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unrelated_folder", "input_folder", "working_directory", "under_a_file"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_dangerous_out_is_refused_and_nothing_changes(project, capsys, command, case):
    out = _setup_case(case, project)
    before = _hashes(project)
    rc, err = _run([a.format(out=out) for a in COMMANDS[command]], project, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"epiflow {command}: error:"), err
    assert "Traceback" not in err
    name = out.rstrip("/").split("/")[0] if case != "working_directory" else ""
    assert name in lines[0]
    assert _hashes(project) == before          # nothing written, moved or deleted anywhere


@pytest.fixture
def readonly_dir(tmp_path):
    """A read-only file system (a tmpfs mounted ro); skipped where mounting is not allowed."""
    d = tmp_path / "ro"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
    if r.returncode:
        pytest.skip("cannot mount a read-only file system here (needs root)")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_read_only_output_is_one_line(project, capsys, readonly_dir, command):
    before = _hashes(project)
    rc, err = _run([a.format(out=str(readonly_dir / "out")) for a in COMMANDS[command]], project, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "Read-only file system" in lines[0] and str(readonly_dir) in lines[0]
    after = _hashes(project)
    # the metrics JSON may not be written either (it comes after the folder)
    assert after == before, sorted(set(after) ^ set(before))


def test_scan_without_pheno_uses_the_fam_phenotype(project, capsys):
    """The documented default: no --pheno reads the .fam's sixth column (a read-only array once
    raised `assignment destination is read-only`); -9 there is missing, so a .fam without
    phenotypes is a one-line error."""
    rng = np.random.default_rng(1)
    fam = project / "inputs" / "g.fam"
    rows = [ln.split() for ln in fam.read_text().splitlines()]
    fam.write_text("".join(" ".join(r[:5] + [f"{v:.4f}"]) + "\n" for r, v in zip(rows, rng.normal(size=len(rows)))))
    rc, err = _run(["scan", "--bfile", "inputs/g", "--mode", "1d", "--out", "s1", "--device", "cpu"], project, capsys)
    assert rc == 0, err
    top = (project / "s1" / "top_snps.tsv").read_text().splitlines()
    assert len(top) > 1
    fam.write_text("".join(" ".join(r[:5] + ["-9"]) + "\n" for r in rows))
    before = _hashes(project)
    rc, err = _run(["scan", "--bfile", "inputs/g", "--mode", "1d", "--out", "s2", "--device", "cpu"], project, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert _hashes(project) == before
