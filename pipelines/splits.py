"""Repeated stratified K-fold splits, computed once and shared by every model.

Stored as ``fold[r, s]`` = the test fold of sample ``s`` in repeat ``r`` plus the sample ids, so
every model (networks, baselines, learning curves) sees exactly the same partitions.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.errors import EpiflowError, InputError


def label_hash(y) -> str:
    """SHA-256 of the labels in sample order, as integers (the same labels give the same hash
    whatever their dtype)."""
    import hashlib

    y = np.asarray(y)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise EpiflowError("splits: the labels hold missing values")
    return hashlib.sha256(np.ascontiguousarray(y, dtype="<i8").tobytes()).hexdigest()


def check_labels(samples, path) -> np.ndarray:
    """The ``y`` column of a samples table (``sample_id``, ``y``: 0 control, 1 case) as int64,
    or a one-line :class:`InputError` naming ``path`` and the line of the first bad label or
    repeated sample id."""
    import pandas as pd

    if "y" not in samples or "sample_id" not in samples:
        raise InputError(path, f"expected columns sample_id and y (tab-separated; has: "
                               f"{', '.join(map(str, samples.columns))})")
    y = pd.to_numeric(samples["y"], errors="coerce")
    bad = np.flatnonzero(~y.isin([0, 1]).to_numpy())
    if bad.size:
        i = int(bad[0])
        raise InputError(path, f"y must be 0 (control) or 1 (case), got {str(samples['y'].iloc[i])!r} "
                               f"({bad.size} such row(s))", line=i + 2)
    dup = np.flatnonzero(samples["sample_id"].duplicated().to_numpy())
    if dup.size:
        i = int(dup[0])
        raise InputError(path, f"sample id {str(samples['sample_id'].iloc[i])!r} appears twice", line=i + 2)
    return y.to_numpy().astype(np.int64)


def read_labels(path):
    """A samples table (``epiflow encode``'s ``samples.tsv``): sample ids as text and the 0/1
    labels (:func:`check_labels`) as int64; an empty or binary file is a one-line error."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype={"sample_id": str}, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(path, "empty file; expected a tab-separated table with columns sample_id and y") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        text = str(exc).strip()
        raise InputError(path, f"not a tab-separated samples table ({text.splitlines()[0] if text else exc})") from None
    return df.assign(y=check_labels(df, path))


@dataclass(frozen=True)
class Splits:
    fold: np.ndarray  # (repeats, n_samples) int8: test-fold index of each sample
    sample_ids: np.ndarray  # (n_samples,) str
    seed: int
    label_sha256: str | None = None  # hash of the labels the splits were stratified on (None: older files)

    @property
    def repeats(self) -> int:
        return self.fold.shape[0]

    @property
    def folds(self) -> int:
        return int(self.fold.max()) + 1

    @property
    def fingerprint(self) -> str:
        """A short hash of the partition (samples, folds, labels): results carry it, so a report
        can tell which ones were computed on these splits."""
        import hashlib

        h = hashlib.sha256()
        h.update("\t".join(self.sample_ids.tolist()).encode())
        h.update(np.ascontiguousarray(self.fold, dtype=np.int8).tobytes())
        h.update((self.label_sha256 or "").encode())
        return h.hexdigest()[:16]

    def iter_folds(self, repeats: int | None = None):
        """Yield (repeat, fold, train_index, test_index) in a fixed order."""
        for r in range(self.repeats if repeats is None else min(repeats, self.repeats)):
            for k in range(self.folds):
                test = np.flatnonzero(self.fold[r] == k)
                train = np.flatnonzero(self.fold[r] != k)
                yield r, k, train, test


def make_splits(y, sample_ids, *, repeats: int = 10, folds: int = 3, seed: int = 7) -> Splits:
    """Repeated stratified K-fold (scikit-learn's RepeatedStratifiedKFold, seeded)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    y = np.asarray(y)
    if repeats < 1 or folds < 2:
        raise EpiflowError(f"splits: need repeats >= 1 and folds >= 2 (got {repeats} x {folds})")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise EpiflowError("splits: the phenotype has a single class; nothing to classify")
    if counts.min() < folds:
        raise EpiflowError(f"splits: the smallest class has {counts.min()} samples, fewer than {folds} folds")
    rskf = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    fold = np.full((repeats, len(y)), -1, dtype=np.int8)
    for i, (_, test) in enumerate(rskf.split(np.zeros(len(y)), y)):
        fold[i // folds, test] = i % folds
    assert (fold >= 0).all()
    return Splits(fold=fold, sample_ids=np.asarray(sample_ids, dtype=str), seed=seed,
                  label_sha256=label_hash(y))


def save_splits(splits: Splits, path) -> None:
    from pipelines.npz import save_npz

    with atomic_path(path, suffix=".npz") as tmp:
        arrays = {"fold": splits.fold, "sample_ids": splits.sample_ids, "seed": np.array(splits.seed)}
        if splits.label_sha256 is not None:
            arrays["label_sha256"] = np.array(splits.label_sha256)
        save_npz(tmp, arrays)


def load_splits(path, sample_ids=None) -> Splits:
    """Load splits; with ``sample_ids``, check they cover exactly those samples in that order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "splits file not found (run `epiflow splits` or `dvc repro splits`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            s = Splits(fold=z["fold"], sample_ids=z["sample_ids"].astype(str), seed=int(z["seed"]),
                       label_sha256=str(z["label_sha256"]) if "label_sha256" in z.files else None)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a readable splits file ({type(exc).__name__}: {exc}); rerun "
                               "`epiflow splits`") from None
    if sample_ids is not None and not np.array_equal(s.sample_ids, np.asarray(sample_ids, dtype=str)):
        raise InputError(path, "splits were made for other samples than the encoded cohort; rerun splits")
    return s
