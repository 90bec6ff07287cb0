"""Cached stage outputs are byte-identical across reruns on the same inputs (no timestamps, no
timings, no run ids inside them), so DVC's hashes and dvc.lock stay stable on a fresh clone."""
import hashlib
import time
from pathlib import Path

import numpy as np

from pipelines.encode import encode_vcf, load_encoded
from pipelines.splits import load_splits, make_splits, save_splits

DATA = Path(__file__).parent / "data" / "vcf"


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_encode_output_bytes_are_reproducible(tmp_path):
    encode_vcf(DATA / "small_csq.vcf", DATA / "small_samples.tsv", tmp_path / "a", progress=False, log=lambda m: None)
    time.sleep(2.1)  # zip timestamps have 2-second resolution
    encode_vcf(DATA / "small_csq.vcf", DATA / "small_samples.tsv", tmp_path / "b", progress=False, log=lambda m: None)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a.keys() == b.keys() and "gene_counts.npz" in a
    assert a == b
    enc = load_encoded(tmp_path / "a")  # still a valid scipy npz
    assert enc.counts.shape[0] == len(enc.samples)


def test_splits_file_bytes_are_reproducible(tmp_path):
    y = np.r_[np.ones(40, int), np.zeros(20, int)]
    ids = [f"s{i}" for i in range(60)]
    save_splits(make_splits(y, ids, repeats=2, folds=3, seed=1), tmp_path / "a.npz")
    time.sleep(2.1)
    save_splits(make_splits(y, ids, repeats=2, folds=3, seed=1), tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert np.array_equal(load_splits(tmp_path / "a.npz", ids).fold, make_splits(y, ids, repeats=2, folds=3, seed=1).fold)
