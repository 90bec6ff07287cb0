"""Pair-index arithmetic and counter-based randomness for the SNP-pair column space.

The pairs (i, j), 0 <= i < j < p, are numbered row by row of the upper triangle::

    K(i, j) = i*p - i*(i+1)/2 + j - i - 1          0 <= K < p*(p-1)/2

so the pairs of SNP 0 come first, then those of SNP 1, and so on. Everything here works on int64
(or uint64) arrays of any shape and takes an array module ``xp`` (numpy or cupy), so the same code
runs on the CPU and on the GPU and gives bit-identical integers on both. It is exact for every p
with p*(p-1)/2 < 2**53 / 8 (p up to ~47 million), far above the largest maps (p ~ 400k,
p*(p-1)/2 ~ 8e10).

Randomness that must agree between numpy and cupy (the column shuffle and the Gaussian sketch
matrices of NGG) is built here from a keyed integer hash (the splitmix64 finaliser) of a counter,
not from either library's generator:

* :class:`FeistelPermutation` is a keyed bijection of ``[0, N)`` computed element-wise (a balanced
  Feistel network over the smallest even-bit power of two >= N, with cycle walking). It shuffles N
  columns without ever holding a permutation of length N, which is what lets a repetition walk
  through 6.4e10 pair columns.
* :func:`counter_normal` turns (key, counter) into standard normal numbers (Box-Muller on the two
  32-bit halves of one 64-bit hash).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "n_pairs",
    "pair_index",
    "pair_from_index",
    "mix64",
    "derive_key",
    "FeistelPermutation",
    "counter_normal",
]

_MASK64 = (1 << 64) - 1


def n_pairs(p: int) -> int:
    """Number of unordered pairs of p items, p*(p-1)/2 (a Python int, never overflows)."""
    p = int(p)
    if p < 0:
        raise ValueError(f"p must be >= 0, got {p}")
    return p * (p - 1) // 2


def _check_p(p: int) -> int:
    p = int(p)
    if p < 2:
        raise ValueError(f"need p >= 2 SNPs to form pairs, got {p}")
    if n_pairs(p) * 8 >= 2**53:
        raise ValueError(f"p={p} too large for exact float64 pair inversion")
    return p


def _row_start(i, p: int):
    """K(i, i+1): index of the first pair whose smaller member is i (i may be an array)."""
    return i * p - (i * (i + 1)) // 2


def pair_index(i, j, p: int, xp=np):
    """K(i, j) for i < j (vectorised, int64). Raises if any i >= j or an index is out of range."""
    p = _check_p(p)
    i = xp.asarray(i, dtype=xp.int64)
    j = xp.asarray(j, dtype=xp.int64)
    if i.size and bool(xp.any((i < 0) | (j >= p) | (i >= j))):
        raise ValueError("pair_index needs 0 <= i < j < p")
    return _row_start(i, p) + j - i - 1


def pair_from_index(k, p: int, xp=np):
    """Inverse of :func:`pair_index`: (i, j) int64 arrays for pair indices k (vectorised).

    i is the largest row with K(i, i+1) <= k, found from the closed form
    i = floor(((2p-1) - sqrt((2p-1)^2 - 8k)) / 2) in float64 and then corrected by integer checks
    (the float estimate is off by at most one for every k < p(p-1)/2 when p(p-1)/2 < 2**50).
    """
    p = _check_p(p)
    k = xp.asarray(k, dtype=xp.int64)
    if k.size and bool(xp.any((k < 0) | (k >= n_pairs(p)))):
        raise ValueError(f"pair index out of range [0, {n_pairs(p)})")
    b = 2.0 * p - 1.0
    disc = b * b - 8.0 * k.astype(xp.float64)
    i = xp.floor((b - xp.sqrt(xp.maximum(disc, 0.0))) / 2.0).astype(xp.int64)
    i = xp.clip(i, 0, p - 2)
    # integer corrections: at most one step each way, done twice for safety
    for _ in range(2):
        i = xp.where(_row_start(i, p) > k, i - 1, i)
        i = xp.where((i + 1 <= p - 2) & (_row_start(i + 1, p) <= k), i + 1, i)
    j = k - _row_start(i, p) + i + 1
    return i, j


# ---------------------------------------------------------------------------------------------
# counter-based hashing (identical on numpy and cupy: pure uint64 arithmetic, wrapping)

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)


def mix64(x, xp=np):
    """splitmix64 finaliser of a uint64 array (returns a new uint64 array; wraps mod 2**64)."""
    x = xp.asarray(x, dtype=xp.uint64).copy()
    x ^= x >> _S30
    x *= _C1
    x ^= x >> _S27
    x *= _C2
    x ^= x >> _S31
    return x


def derive_key(*parts: int) -> int:
    """A 64-bit key from integers (seed, repetition, block, ...), as a Python int."""
    h = 0x243F6A8885A308D3
    for v in parts:
        v = int(v) & _MASK64
        h = (h ^ v) * 0x9E3779B97F4A7C15 & _MASK64
        h ^= h >> 29
        h = h * 0xBF58476D1CE4E5B9 & _MASK64
        h ^= h >> 32
    return h


class FeistelPermutation:
    """A keyed pseudo-random bijection of ``[0, n)``, evaluated element-wise.

    A balanced Feistel network with ``rounds`` rounds over 2**(2h) >= n (2h even, smallest such),
    whose round function is the splitmix64 hash of the half-word xor a round key; values that land
    outside ``[0, n)`` are re-encrypted (cycle walking) until they fall inside, which keeps the map
    a bijection of ``[0, n)``. Since 2**(2h) < 4n, a value needs fewer than 4 walks on average.
    """

    def __init__(self, n: int, key: int, rounds: int = 4):
        n = int(n)
        if n < 1:
            raise ValueError("permutation size must be >= 1")
        self.n = n
        bits = max(2, int(n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half) - 1)
        self.shift = np.uint64(self.half)
        self.round_keys = [np.uint64(derive_key(key, r, 0xFE15)) for r in range(rounds)]

    def _encrypt(self, x, xp):
        left = x >> self.shift
        right = x & self.mask
        for rk in self.round_keys:
            f = mix64(right ^ rk, xp) & self.mask
            left, right = right, left ^ f
        return (left << self.shift) | right

    def __call__(self, k, xp=np):
        """pi(k) for an int array k with values in [0, n); returns int64 of the same shape."""
        k = xp.asarray(k, dtype=xp.int64)
        shape = k.shape
        x = k.reshape(-1).astype(xp.uint64)
        if self.n == 1:
            return xp.zeros(shape, dtype=xp.int64)
        n = np.uint64(self.n)
        x = self._encrypt(x, xp)
        bad = xp.nonzero(x >= n)[0]
        while bad.size:
            v = self._encrypt(x[bad], xp)
            x[bad] = v
            bad = bad[v >= n]
        return x.astype(xp.int64).reshape(shape)


def counter_normal(key: int, start: int, count: int, xp=np, dtype=np.float64):
    """``count`` standard normal numbers for counters start, start+1, ... under ``key``.

    Each 64-bit hash gives two uniforms (its 32-bit halves, shifted off zero) and so two normals by
    Box-Muller (cos for even counters, sin for odd ones). The output depends only on (key, counter),
    not on how a run is batched, and is the same on numpy and cupy up to the rounding of log/cos.
    """
    start = int(start)
    count = int(count)
    first = start // 2
    last = (start + count - 1) // 2
    ctr = xp.arange(first, last + 1, dtype=xp.uint64)
    h = mix64(ctr * _GOLDEN ^ np.uint64(key & _MASK64), xp)
    u1 = ((h >> _S32).astype(xp.float64) + 1.0) * (1.0 / 4294967296.0)
    u2 = ((h & np.uint64(0xFFFFFFFF)).astype(xp.float64) + 0.5) * (1.0 / 4294967296.0)
    r = xp.sqrt(-2.0 * xp.log(u1))
    ang = (2.0 * np.pi) * u2
    z = xp.empty((last - first + 1, 2), dtype=xp.float64)
    z[:, 0] = r * xp.cos(ang)
    z[:, 1] = r * xp.sin(ang)
    z = z.reshape(-1)[start - 2 * first: start - 2 * first + count]
    return z.astype(dtype, copy=False)
