"""Outputs never destroy: an output folder replaces only a previous output of epiflow (or an empty
folder); anything else is a one-line error and nothing changes; temp files of a killed writer
are removed by the next run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.atomic import MARKER, atomic_dir, atomic_path
from pipelines.errors import EpiflowError


def _write(out, name="a.txt", text="1", inputs=()):
    with atomic_dir(out, inputs=inputs) as tmp:
        (tmp / name).write_text(text)


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_unrelated_folder_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    before = _snapshot(tmp_path)
    with pytest.raises(EpiflowError, match="was not written by epiflow") as e:
        _write(out)
    assert "\n" not in str(e.value)
    assert _snapshot(tmp_path) == before


def test_previous_output_is_replaced(tmp_path):
    out = tmp_path / "out"
    _write(out, "a.txt", "1")
    assert (out / MARKER).is_file()
    _write(out, "b.txt", "2")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "b.txt"])
    # restored by DVC from its cache without the marker: same names, still replaceable
    (out / MARKER).unlink()
    _write(out, "b.txt", "3")
    assert (out / "b.txt").read_text() == "3"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_empty_folder_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    _write(tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "1"


@pytest.mark.parametrize("where", ["cwd", "parent"])
def test_working_directory_is_refused(tmp_path, monkeypatch, where):
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "data.vcf").write_text("x")
    monkeypatch.chdir(sub)
    before = _snapshot(tmp_path)
    with pytest.raises(EpiflowError, match="working directory"):
        _write("." if where == "cwd" else "..")
    assert _snapshot(tmp_path) == before


def test_output_holding_an_input_is_refused(tmp_path):
    inputs = tmp_path / "cohort"
    inputs.mkdir()
    (inputs / "cohort.vcf").write_text("x")
    before = _snapshot(tmp_path)
    with pytest.raises(EpiflowError, match="would hold the input"):
        _write(inputs, inputs=[inputs / "cohort.vcf"])
    assert _snapshot(tmp_path) == before


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(EpiflowError, match="is a file"):
        _write(tmp_path / "f" / "out")
    with pytest.raises(EpiflowError, match="not a folder"):
        _write(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


def test_failure_inside_leaves_previous_output(tmp_path):
    out = tmp_path / "out"
    _write(out, "a.txt", "1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temp_of_a_dead_writer_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dir = tmp_path / f".out.tmp.{dead.pid}.abcd1234"
    stale_dir.mkdir()
    (stale_dir / "big.npy").write_bytes(b"0" * 100)
    stale_file = tmp_path / f".m.json.{dead.pid}.abcd1234.json"
    stale_file.write_text("{")
    alive = tmp_path / f".out.tmp.{os.getpid()}.efgh5678"   # this process: in use, kept
    alive.mkdir()
    unrelated = tmp_path / ".out.notes"
    unrelated.write_text("mine")
    _write(tmp_path / "out")
    with atomic_path(tmp_path / "m.json") as t:
        t.write_text("{}")
    assert not stale_dir.exists() and not stale_file.exists()
    assert alive.exists() and unrelated.exists()
