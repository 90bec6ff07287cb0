"""A damaged splits file is a one-line error; a damaged scan or NGG checkpoint is ignored with a
note and the scan starts over (before: EOFError / BadZipFile tracebacks, and only --restart got
past a truncated checkpoint)."""
from __future__ import annotations

import numpy as np
import pytest

from models.ngg.ngg import ngg_fit
from pipelines.errors import InputError
from pipelines.splits import load_splits, make_splits, save_splits


@pytest.mark.parametrize("damage", ["truncate", "empty", "text"])
def test_damaged_splits_file_is_one_line(tmp_path, damage):
    p = tmp_path / "splits.npz"
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    save_splits(make_splits(y, [f"s{i}" for i in range(20)], repeats=2, folds=2, seed=0), p)
    data = p.read_bytes()
    p.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "text": b"fold\n0 1\n"}[damage])
    with pytest.raises(InputError, match="not a readable splits file") as e:
        load_splits(p)
    assert "\n" not in str(e.value)


def test_truncated_ngg_checkpoint_starts_over(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(80, 12)).astype(float)
    y = X[:, 1] + rng.normal(size=80)
    kw = dict(mode="2d", B=8, d=4, R=2, iters=20, seed=3, top=10)
    ref = ngg_fit(X, y, **kw)
    ck = tmp_path / "ngg.ckpt.npz"
    ck.write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        res = ngg_fit(X, y, checkpoint=ck, **kw)
    assert np.array_equal(res.snp_effect, ref.snp_effect)


def test_truncated_scan_checkpoint_is_ignored(tmp_path, capsys):
    from pipelines import cli
    from plink_files import write_bed
    from test_degenerate import _data

    X, y = _data(n=80, p=12)
    write_bed(tmp_path / "g", X)
    (tmp_path / "y.txt").write_text("".join(f"S{i:02d} S{i:02d} {float(v)!r}\n" for i, v in enumerate(y)))
    argv = ["scan", "--bfile", str(tmp_path / "g"), "--pheno", str(tmp_path / "y.txt"), "--mode", "2d",
            "--device", "cpu", "--top", "20"]
    assert cli.main(argv + ["--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / ".scan2d.ckpt.npz").write_bytes(b"PK\x03\x04 truncated by a full disk")
    assert cli.main(argv + ["--out", str(out)]) == 0
    assert "ignoring checkpoint" in capsys.readouterr().out
    assert (out / "top_pairs.tsv").read_bytes() == (tmp_path / "ref" / "top_pairs.tsv").read_bytes()
    assert not (out / ".scan2d.ckpt.npz").exists()
