"""A global top-k of SNP pairs kept while a scan streams over tiles.

Order is total and deterministic: larger statistic first, then smaller i, then smaller j. The
kept set therefore depends only on the pairs offered, never on the order in which tiles arrive,
which is what makes an interrupted and resumed scan end with byte-identical output.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TopK"]


class TopK:
    """The best ``k`` pairs seen so far (host numpy arrays).

    Fields: ``i``, ``j`` (int64 SNP indices, i < j), ``stat`` (float64, larger is better) and
    ``effect`` (float64, carried along). ``threshold`` is the statistic a new pair must reach to
    possibly enter (-inf until k pairs are held); candidates may be pre-filtered with
    ``stat >= threshold`` (ties must be offered: the id order decides between them).
    """

    FIELDS = ("i", "j", "stat", "effect")

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        self.k = int(k)
        self.i = np.empty(0, np.int64)
        self.j = np.empty(0, np.int64)
        self.stat = np.empty(0, np.float64)
        self.effect = np.empty(0, np.float64)

    def __len__(self) -> int:
        return len(self.stat)

    @property
    def threshold(self) -> float:
        return float(self.stat[-1]) if len(self.stat) >= self.k else -np.inf

    def offer(self, i, j, stat, effect) -> None:
        """Merge candidate pairs (1-D arrays of equal length; NaN statistics are ignored)."""
        stat = np.asarray(stat, dtype=np.float64).ravel()
        ok = np.isfinite(stat) & (stat >= self.threshold)
        if not ok.any():
            return
        i = np.asarray(i, dtype=np.int64).ravel()[ok]
        j = np.asarray(j, dtype=np.int64).ravel()[ok]
        effect = np.asarray(effect, dtype=np.float64).ravel()[ok]
        stat = stat[ok]
        if len(stat) > 4 * self.k:  # cheap pre-selection keeping every tie with the k-th value
            kth = np.partition(stat, len(stat) - self.k)[len(stat) - self.k]
            sel = stat >= kth
            i, j, stat, effect = i[sel], j[sel], stat[sel], effect[sel]
        i = np.concatenate([self.i, i])
        j = np.concatenate([self.j, j])
        stat = np.concatenate([self.stat, stat])
        effect = np.concatenate([self.effect, effect])
        order = np.lexsort((j, i, -stat))[: self.k]
        self.i, self.j, self.stat, self.effect = i[order], j[order], stat[order], effect[order]

    def state(self, prefix: str = "topk_") -> dict:
        return {prefix + f: getattr(self, f) for f in self.FIELDS} | {prefix + "k": np.int64(self.k)}

    @classmethod
    def from_state(cls, st: dict, prefix: str = "topk_") -> "TopK":
        t = cls(int(st[prefix + "k"]))
        for f in cls.FIELDS:
            setattr(t, f, np.asarray(st[prefix + f]).copy())
        return t
