import numpy as np
import pytest

from pipelines.errors import EpiflowError, InputError
from pipelines.splits import load_splits, make_splits, save_splits


def test_repeated_stratified_partition(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(301) < 0.87).astype(int)
    ids = [f"s{i}" for i in range(len(y))]
    s = make_splits(y, ids, repeats=4, folds=3, seed=11)
    assert s.fold.shape == (4, 301) and s.repeats == 4 and s.folds == 3
    for r in range(4):
        # each sample is in exactly one test fold per repeat; folds partition the cohort
        assert sorted(np.unique(s.fold[r])) == [0, 1, 2]
        sizes = np.bincount(s.fold[r])
        assert sizes.max() - sizes.min() <= 1
        for k in range(3):  # stratified: case fraction of every test fold within 1 sample of the total
            te = s.fold[r] == k
            assert abs(y[te].sum() - y.mean() * te.sum()) <= 1.0
    # repeats differ, seeds reproduce
    assert not np.array_equal(s.fold[0], s.fold[1])
    assert np.array_equal(make_splits(y, ids, repeats=4, folds=3, seed=11).fold, s.fold)
    folds = list(s.iter_folds())
    assert len(folds) == 12
    r, k, tr, te = folds[4]
    assert (r, k) == (1, 1) and len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 301
    path = tmp_path / "splits.npz"
    save_splits(s, path)
    back = load_splits(path, ids)
    assert np.array_equal(back.fold, s.fold) and back.seed == 11
    with pytest.raises(InputError, match="other samples"):
        load_splits(path, ids[::-1])


def test_bad_split_requests():
    with pytest.raises(EpiflowError, match="single class"):
        make_splits(np.ones(10), [str(i) for i in range(10)])
    with pytest.raises(EpiflowError, match="fewer than 3 folds"):
        make_splits(np.r_[np.ones(10), np.zeros(2)], [str(i) for i in range(12)], folds=3)
