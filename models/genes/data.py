"""From sparse (samples x C*G) count matrices to standardised network inputs.

Statistics come from the training fold only. Two batch representations feed the same nets:

- dense: a (B, C*G) float32 tensor of standardised values;
- pairs (:class:`GeneBatch`): rare-variant cohorts leave most (sample, gene) pairs with no
  variant at all, and after standardisation every such pair of gene ``g`` holds the same
  vector ``z0[:, g] = -mean / sd``. A GeneBatch carries ``z0`` once plus only the (sample, gene)
  pairs with at least one variant, so the gene module evaluates G + P class vectors instead of
  B * G (P = pairs with a variant in the batch). Exactly equal to the dense path.

The cohort is never densified as a whole: pairs are O(nnz); the dense path densifies a batch at a
time, or the training fold once when it fits ``cache_bytes``.
"""
from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp
import torch

from models.registry import STANDARDIZE


def as_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        return X.tocsr()
    return sp.csr_matrix(np.asarray(X))




class Standardiser:
    """Mean and sd of a sparse (samples x C*G, class-major) count matrix, from the training fold.

    ``per="column"`` (default): one mean and sd per (class, gene) column. ``per="class"``: one
    mean and sd per functional class, pooled over all genes (the IBD paper's recipe). Then equal
    class-count vectors standardise to the same input whatever the gene, so the combination
    input mode shares them across genes (tens of thousands of distinct rows per batch of a
    23,000-gene exome instead of about a million). Float64 sums, no densifying; sd 0 -> 1.
    ``mean``/``sd`` always have one entry per column.
    """

    def __init__(self, X: sp.csr_matrix, per: str = "column", n_classes: int | None = None):
        X = as_csr(X)
        n = X.shape[0]
        if n == 0:
            raise ValueError("cannot standardise an empty training fold")
        if per not in STANDARDIZE:
            raise ValueError(f"unknown standardisation '{per}'; valid: {', '.join(STANDARDIZE)}")
        s1 = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
        sq = X.copy()
        sq.data = sq.data.astype(np.float64) ** 2
        s2 = np.asarray(sq.sum(axis=0)).ravel()
        self.per = per
        if per == "class":
            if not n_classes or X.shape[1] % int(n_classes):
                raise ValueError(f"per-class standardisation needs n_classes dividing the "
                                 f"{X.shape[1]} columns, got {n_classes!r}")
            C = int(n_classes)
            G = X.shape[1] // C
            s1 = np.repeat(s1.reshape(C, G).sum(axis=1), G)
            s2 = np.repeat(s2.reshape(C, G).sum(axis=1), G)
            n = n * G
        self.mean = s1 / n
        var = np.maximum(s2 / n - self.mean ** 2, 0.0)
        sd = np.sqrt(var)
        sd[sd < 1e-12] = 1.0
        self.sd = sd

    def transform_dense(self, Xd: np.ndarray) -> np.ndarray:
        return ((Xd - self.mean) / self.sd).astype(np.float32, copy=False)


class GeneBatch:
    """A batch in pair form: B rows; baseline z0 (C, G); pairs (row, gene, z (P, C))."""

    __slots__ = ("n_rows", "z0", "rows", "genes", "z")

    def __init__(self, n_rows: int, z0: torch.Tensor, rows: torch.Tensor, genes: torch.Tensor,
                 z: torch.Tensor):
        self.n_rows, self.z0, self.rows, self.genes, self.z = int(n_rows), z0, rows, genes, z

    def dense(self) -> torch.Tensor:
        """The equivalent (B, C*G) standardised dense tensor (tests, small inputs)."""
        C, G = self.z0.shape
        out = self.z0.unsqueeze(0).repeat(self.n_rows, 1, 1)          # (B, C, G)
        out[self.rows, :, self.genes] = self.z
        return out.reshape(self.n_rows, C * G)


def _combinations(X: sp.csr_matrix, n_classes: int, by_gene: bool = True):
    """Distinct (gene, class-count vector) combinations of the nonzero (sample, gene) pairs
    (``by_gene=False``: distinct class-count vectors, whatever the gene).

    O(nnz) plus per-row sorts, no dense (pairs x C) table: entries run by (sample, gene, class),
    each pair gets a 64-bit hash of its (class, count) entries, pairs are grouped by hash and
    the grouping is then verified entry by entry (exact; a hash collision raises).
    Returns (combo gene (U,), combo counts (U, C) float64, pair row, pair gene, combo of pair);
    with ``by_gene=False`` the combo gene is that of one of its pairs. Combinations are numbered
    in the order of their hashes.
    """
    C = int(n_classes)
    n, f = X.shape
    G = f // C
    val = np.asarray(X.data)
    if not np.array_equal(val, np.rint(val)):
        raise ValueError("the combination input mode needs integer counts; use input_mode "
                         "'pairs' or 'dense' for non-integer values")
    # renumber columns gene-major (g*C + c) and let scipy sort each row: entries then run by
    # (sample, gene, class) without a global sort over all nonzeros
    it = np.int32 if f < 2**31 and n * G < 2**31 else np.int64
    col = np.asarray(X.indices).astype(it)
    Y = sp.csr_matrix((val.copy(), (col % G) * C + col // G, X.indptr.copy()), shape=(n, f))
    Y.sort_indices()
    gc = np.asarray(Y.indices).astype(it, copy=False)
    rows = np.repeat(np.arange(n, dtype=it), np.diff(Y.indptr))
    gene, cl = gc // C, gc % C
    pk = rows * it(G) + gene
    va = np.rint(np.asarray(Y.data)).astype(np.int64)
    if pk.size == 0:
        e = np.empty(0, np.int64)
        return e, np.zeros((0, C)), e, e, e
    new = np.empty(pk.size, bool)
    new[0] = True
    np.not_equal(pk[1:], pk[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    pair_of_entry = np.cumsum(new, dtype=it) - 1
    pairs = pk[starts]
    p_row, p_gene = pairs // G, pairs % G
    rng = np.random.default_rng(0x5EED)
    wc = rng.integers(1, 2**62, size=C, dtype=np.uint64)
    wv = rng.integers(1, 2**62, dtype=np.uint64)
    wg = rng.integers(1, 2**62, dtype=np.uint64)
    with np.errstate(over="ignore"):
        e_hash = (va.astype(np.uint64) * wv + np.uint64(1)) * wc[cl]
        e_hash ^= e_hash >> np.uint64(29)
        h = np.add.reduceat(e_hash, starts, dtype=np.uint64)
        if by_gene:
            h += p_gene.astype(np.uint64) * wg
    # group pairs by hash, numbered in hash order (a hash table, then a sort of the distinct
    # hashes only; any member may represent its group: the check below is exact)
    import pandas as pd

    combo_of_pair, uniq = pd.factorize(h, sort=True)
    combo_of_pair = combo_of_pair.astype(np.int64, copy=False)
    first = np.empty(len(uniq), np.int64)
    first[combo_of_pair] = np.arange(h.size, dtype=np.int64)
    # exact check: every pair has the same gene, entry count and entries as its representative
    n_entries = np.diff(np.append(starts, pk.size))
    rep = first[combo_of_pair]
    ok = (not by_gene or np.array_equal(p_gene, p_gene[rep])) and np.array_equal(n_entries, n_entries[rep])
    if ok:
        rep_entry = np.arange(pk.size, dtype=np.int64)
        rep_entry += (starts[rep] - starts)[pair_of_entry]
        ok = np.array_equal(cl, cl[rep_entry]) and np.array_equal(va, va[rep_entry])
    if not ok:
        raise RuntimeError("hash collision while grouping count vectors; use input_mode 'pairs'")
    counts = np.zeros((first.size, C))
    is_rep_entry = np.zeros(pairs.size, bool)
    is_rep_entry[first] = True
    sel = is_rep_entry[pair_of_entry]
    counts[combo_of_pair[pair_of_entry[sel]], cl[sel]] = va[sel]
    return (p_gene[first].astype(np.int64), counts, p_row.astype(np.int64),
            p_gene.astype(np.int64), combo_of_pair)


class ComboBatch:
    """A batch as indices into distinct (gene, class-count vector) combinations.

    ``z`` (U, C) holds the standardised class vector of every combination of the source (each
    gene's all-zero vector included); ``ids`` (B, G) says which combination sample b has at gene
    g. The gene module runs once per combination, then a gather fills (B, G).
    """

    __slots__ = ("ids", "z", "n_genes")

    def __init__(self, ids: torch.Tensor, z: torch.Tensor):
        self.ids, self.z = ids, z
        self.n_genes = ids.shape[1]

    @property
    def n_rows(self) -> int:
        return int(self.ids.shape[0])

    def dense(self) -> torch.Tensor:
        b, g = self.ids.shape
        return self.z[self.ids].permute(0, 2, 1).reshape(b, -1)


class ComboSource:
    """Standardised inputs of a CSR count matrix as distinct (gene, count vector) combinations.

    Counts are small integers, so a training fold of n samples x G genes holds far fewer distinct
    (gene, class-count vector) combinations than (sample, gene) pairs (the embedded 2,000-gene
    cohort: ~41k combinations vs ~1.8M pairs with a variant in a 1,333-sample fold). The shared
    gene module is evaluated once per combination per step; exactly equal to the dense path.
    """

    mode = "combos"

    def __init__(self, X, stats: Standardiser, n_classes: int, device: torch.device):
        X = as_csr(X)
        n, f = X.shape
        C = int(n_classes)
        G = f // C
        self.n, self.n_classes, self.n_genes, self.device = n, C, G, device
        shared = getattr(stats, "per", "column") == "class"   # same input for every gene
        combos_gene, combos_counts, p_row, p_gene, combo_of_pair = _combinations(X, C, by_gene=not shared)
        u_nz = combos_gene.size
        mean = stats.mean.reshape(C, G)
        sd = stats.sd.reshape(C, G)
        pairs = p_row
        if shared:
            # combination ids: u_nz is the all-zero vector of every gene
            ids = np.full((n, G), u_nz, dtype=np.int32)
            ids[p_row, p_gene] = combo_of_pair
            c_counts = np.concatenate([combos_counts, np.zeros((1, C))])
            z = (c_counts - mean[:, 0]) / sd[:, 0]
        else:
            # combination ids: u_nz + g is gene g's all-zero vector
            ids = np.tile(np.arange(u_nz, u_nz + G, dtype=np.int32), (n, 1))
            ids[p_row, p_gene] = combo_of_pair
            c_gene = np.concatenate([combos_gene, np.arange(G)])
            c_counts = np.concatenate([combos_counts, np.zeros((G, C))])
            z = (c_counts - mean[:, c_gene].T) / sd[:, c_gene].T
        self.n_combos = int(z.shape[0])
        self.pair_density = pairs.size / max(n * G, 1)
        self.z = torch.as_tensor(z, dtype=torch.float32, device=device)
        self.ids = torch.as_tensor(ids, device=device)

    def __call__(self, idx) -> ComboBatch:
        idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx,
                              dtype=torch.long, device=self.device)
        ids = self.ids.index_select(0, idx).long()
        # keep only the combinations this batch uses (about half of a fold's at batch size 128)
        used = torch.zeros(self.n_combos, dtype=torch.bool, device=self.device)
        used[ids.view(-1)] = True
        used = used.nonzero().squeeze(1)
        remap = torch.empty(self.n_combos, dtype=torch.long, device=self.device)
        remap[used] = torch.arange(used.numel(), device=self.device)
        return ComboBatch(remap[ids], self.z.index_select(0, used))


class PairSource:
    """Standardised (sample, gene) pairs of a CSR count matrix, on ``device``, by row index."""

    mode = "pairs"

    def __init__(self, X, stats: Standardiser, n_classes: int, device: torch.device):
        X = as_csr(X)
        n, f = X.shape
        C = int(n_classes)
        G = f // C
        self.n, self.n_classes, self.n_genes, self.device = n, C, G, device
        coo = X.tocoo()
        cls, gene = coo.col // G, coo.col % G
        key = coo.row.astype(np.int64) * G + gene
        uniq, inv = np.unique(key, return_inverse=True)
        counts = np.zeros((uniq.size, C), np.float64)
        counts[inv, cls] = coo.data
        p_row, p_gene = uniq // G, uniq % G
        mean = stats.mean.reshape(C, G)
        sd = stats.sd.reshape(C, G)
        z = (counts - mean[:, p_gene].T) / sd[:, p_gene].T
        self.pair_density = uniq.size / max(n * G, 1)
        self.z0 = torch.as_tensor(-mean / sd, dtype=torch.float32, device=device)
        self.z = torch.as_tensor(z, dtype=torch.float32, device=device)
        self.genes = torch.as_tensor(p_gene, dtype=torch.long, device=device)
        self.indptr = torch.as_tensor(np.searchsorted(p_row, np.arange(n + 1)), dtype=torch.long,
                                      device=device)

    def __call__(self, idx) -> GeneBatch:
        idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx,
                              dtype=torch.long, device=self.device)
        starts = self.indptr[idx]
        lens = self.indptr[idx + 1] - starts
        b = idx.numel()
        rows = torch.repeat_interleave(torch.arange(b, device=self.device), lens)
        offs = torch.cumsum(lens, 0) - lens
        pid = torch.arange(rows.numel(), device=self.device) - offs[rows] + starts[rows]
        return GeneBatch(b, self.z0, rows, self.genes[pid], self.z[pid])


class BatchSource:
    """Standardised dense rows (B, C*G) of a CSR matrix, on ``device``, by index array.

    Uses a cached dense copy when ``n * F * 4 <= cache_bytes``; otherwise densifies per call.
    """

    mode = "dense"

    def __init__(self, X, stats: Standardiser, device: torch.device, cache_bytes: int = 1 << 30):
        self.X = as_csr(X)
        self.device = device
        self.mean = torch.as_tensor(stats.mean, dtype=torch.float32, device=device)
        self.inv_sd = torch.as_tensor(1.0 / stats.sd, dtype=torch.float32, device=device)
        n, f = self.X.shape
        self.n = n
        self.cache = None
        self.nz = None
        if n * f * 4 <= cache_bytes:
            self.cache = self._densify(np.arange(n))
        elif device.type == "cuda":
            self.nz = self._nonzeros(device)

    def _nonzeros(self, device):
        """The CSR arrays on ``device`` (duplicates summed): batches expand there, no host work."""
        X = self.X.copy()
        X.sum_duplicates()
        return (torch.as_tensor(X.indptr.astype(np.int64), device=device),
                torch.as_tensor(X.indices.astype(np.int32), device=device),
                torch.as_tensor(X.data.astype(np.float32), device=device))

    def _densify_nz(self, idx, nz) -> torch.Tensor:
        crow, col, val = nz
        dev = crow.device
        idx = torch.as_tensor(idx, dtype=torch.long).to(dev)
        starts = crow[idx]
        lens = crow[idx + 1] - starts
        b = idx.numel()
        rows = torch.repeat_interleave(torch.arange(b, device=dev), lens)
        offs = torch.cumsum(lens, 0) - lens
        pos = torch.arange(rows.numel(), device=dev) - offs[rows] + starts[rows]
        t = torch.zeros((b, self.X.shape[1]), dtype=torch.float32, device=dev)
        t[rows, col[pos].long()] = val[pos]
        return (t - self.mean.to(dev)).mul_(self.inv_sd.to(dev))

    def _densify(self, idx: np.ndarray, on_device: bool | None = None) -> torch.Tensor:
        sub = self.X[idx]
        if on_device if on_device is not None else self.device.type == "cuda":
            # send the batch's nonzeros and expand them there (a 128-row batch of a 23,000-gene
            # exome is 47M cells dense, 3M nonzeros); the same float32 values as toarray()
            import warnings

            sub.sum_duplicates()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
                t = torch.sparse_csr_tensor(
                    torch.as_tensor(sub.indptr.astype(np.int64)),
                    torch.as_tensor(sub.indices.astype(np.int64)),
                    torch.as_tensor(sub.data.astype(np.float32)), size=sub.shape,
                    check_invariants=False).to(self.device).to_dense()
        else:
            t = torch.from_numpy(sub.toarray().astype(np.float32, copy=False)).to(self.device)
        return (t - self.mean).mul_(self.inv_sd)

    def __call__(self, idx) -> torch.Tensor:
        if self.cache is not None:
            if not isinstance(idx, torch.Tensor):
                idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
            return self.cache.index_select(0, idx.to(self.cache.device))
        if self.nz is not None:
            return self._densify_nz(idx, self.nz)
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return self._densify(np.asarray(idx))


INPUT_MODES = ("auto", "combos", "pairs", "dense")


def make_source(X, stats: Standardiser, n_classes: int, device: torch.device, *,
                mode: str = "auto", cache_bytes: int = 1 << 30, batch_size: int = 128):
    """A ComboSource, PairSource or BatchSource (all give identical network outputs).

    ``auto``: combinations when the gene module would run on fewer combinations per step than
    the (sample, gene) pairs with a variant in a batch, else pairs when those are under a third
    of the batch, else dense. Non-integer inputs skip the combination mode.
    """
    if mode not in INPUT_MODES:
        raise ValueError(f"unknown input mode '{mode}'; valid: {', '.join(INPUT_MODES)}")
    if mode == "dense":
        return BatchSource(X, stats, device, cache_bytes)
    if mode == "pairs":
        return PairSource(X, stats, n_classes, device)
    X = as_csr(X)
    integer = bool(np.all(np.asarray(X.data) == np.rint(X.data)))
    if mode == "combos" or (mode == "auto" and integer):
        src = ComboSource(X, stats, n_classes, device)
        per_batch_pairs = src.pair_density * min(batch_size, src.n) * src.n_genes
        if mode == "combos" or src.n_combos <= max(per_batch_pairs, src.n_genes * 2):
            return src
        density = src.pair_density
    else:
        density = X.nnz / max(X.shape[0] * (X.shape[1] // n_classes), 1)
    if density < 1 / 3:
        return PairSource(X, stats, n_classes, device)
    return BatchSource(X, stats, device, cache_bytes)


class ShuffledBatches:
    """Epoch iterable of (x, y) batches; a fresh permutation per epoch from a seeded generator.

    A plain iterable with ``__len__`` is all Lightning needs; this avoids DataLoader collation
    overhead. Reproducible: the permutation sequence depends only on ``seed``.
    """

    def __init__(self, source, y: np.ndarray, batch_size: int, seed: int):
        self.source = source
        self.y = torch.as_tensor(np.asarray(y, dtype=np.float32), device=source.device)
        self.batch_size = int(batch_size)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.n = source.n

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.gen)
        for i in range(0, self.n, self.batch_size):
            idx = perm[i:i + self.batch_size]
            yield self.source(idx), self.y[idx.to(self.y.device)]


# ------------------------------------------------------------------ per-fold preparation cache
class FoldPrep:
    """A fold's prepared inputs: training-fold statistics and the train / test sources."""

    __slots__ = ("stats", "train", "test", "key", "seconds", "hit")

    def __init__(self, stats, train, test, key, seconds, hit):
        self.stats, self.train, self.test = stats, train, test
        self.key, self.seconds, self.hit = key, seconds, hit


_PREP_MEMORY: "dict[tuple, FoldPrep]" = {}
PREP_VERSION = 1          # bump when a source's numbers change: old disk entries are not read


def _digest(h, X: sp.csr_matrix) -> None:
    h.update(repr((X.shape, X.nnz, str(X.data.dtype))).encode())
    for a in (X.indptr, X.indices, X.data):
        h.update(np.ascontiguousarray(a).view(np.uint8))


_KEY_MEMO: dict = {}


def _arrays_at(X) -> tuple:
    return (X.shape, X.nnz, X.data.ctypes.data, X.indices.ctypes.data, X.indptr.ctypes.data)


def prep_key(X_train, X_test, *, per: str, n_classes: int, mode: str, cache_bytes: int,
             batch_size: int) -> str:
    """Content key of a fold's preparation: the bytes of both count matrices (the data
    version and the split/fold they come from) and every setting the numbers depend on.

    Hashing a fold of a 23,000-gene exome takes about a second, and every model of a run asks
    for the same fold slices (``pipelines.workflows.cohort.fold_rows``): the key of the very
    same matrix objects (same arrays at the same addresses) is remembered while they live."""
    settings = (per, int(n_classes), mode, int(cache_bytes), int(batch_size))
    mkey = (id(X_train), id(X_test), settings)
    got = _KEY_MEMO.get(mkey)
    if (got is not None and got[0]() is X_train and got[1]() is X_test
            and got[2] == (_arrays_at(X_train), _arrays_at(X_test))):
        return got[3]
    key = _prep_key(X_train, X_test, settings)
    for k in [k for k, v in _KEY_MEMO.items() if v[0]() is None or v[1]() is None]:
        del _KEY_MEMO[k]                        # forget the keys of dead matrices
    _KEY_MEMO[mkey] = (weakref.ref(X_train), weakref.ref(X_test),
                       (_arrays_at(X_train), _arrays_at(X_test)), key)
    return key


def _prep_key(X_train, X_test, settings) -> str:
    per, n_classes, mode, cache_bytes, batch_size = settings
    try:                     # xxh3 where installed (about 10 GB/s), else SHA-1 (about 1 GB/s)
        import xxhash

        h, tag = xxhash.xxh3_128(), "x"
    except ImportError:
        import hashlib

        h, tag = hashlib.sha1(), "s"
    h.update(repr((PREP_VERSION, per, int(n_classes), mode, int(cache_bytes), int(batch_size))).encode())
    _digest(h, X_train)
    _digest(h, X_test)
    return tag + h.hexdigest()


def _moved(v, device):
    """``v`` with every tensor in it (also inside tuples and lists, e.g. a source's CSR arrays)
    on ``device``."""
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, (tuple, list)):
        return type(v)(_moved(u, device) for u in v)
    return v


def _state(src) -> dict:
    return {k: _moved(v, "cpu") for k, v in ((s, getattr(src, s)) for s in vars(src)) if k != "device"}


def _restore(cls, state: dict, device: torch.device):
    obj = cls.__new__(cls)
    for k, v in state.items():
        setattr(obj, k, _moved(v, device))
    obj.device = device
    return obj


def _load_disk(path, device):
    try:
        d = torch.load(path, map_location="cpu", weights_only=False)
        if d.get("version") != PREP_VERSION:
            return None
        stats = Standardiser.__new__(Standardiser)
        stats.per, stats.mean, stats.sd = d["stats"]
        classes = {c.__name__: c for c in (ComboSource, PairSource, BatchSource)}
        return (stats, _restore(classes[d["train_cls"]], d["train"], device),
                _restore(classes[d["test_cls"]], d["test"], device))
    except Exception:       # a truncated or foreign file is a miss, never an error
        return None


def _save_disk(path, stats, tr, te) -> None:
    import os
    import tempfile

    d = {"version": PREP_VERSION, "stats": (stats.per, stats.mean, stats.sd),
         "train_cls": type(tr).__name__, "train": _state(tr),
         "test_cls": type(te).__name__, "test": _state(te)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(d, f)
        os.replace(tmp, path)          # atomic: concurrent stages read a whole entry or none
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def prep_cache_dir(given=None):
    """The on-disk cache folder: ``given`` (train.prep_cache), else $EPIFLOW_PREP_CACHE; None: off."""
    import os
    from pathlib import Path

    v = given if given else os.environ.get("EPIFLOW_PREP_CACHE", "")
    return Path(v) if v else None


def prepare_fold(X_train, X_test, *, per: str, n_classes: int, device: torch.device,
                 mode: str = "auto", cache_bytes: int = 1 << 30, batch_size: int = 128,
                 cache_dir=None, memory_items: int | None = None) -> FoldPrep:
    """Standardiser (training-fold statistics) and train / test sources of one fold, made once:
    kept in this process (the last ``memory_items`` folds, on ``device``) and, with
    ``cache_dir``, on disk for other processes (every train stage of the zoo reads the same
    folds; ``memory_items`` None: $EPIFLOW_PREP_MEMORY, default 2). Keyed by :func:`prep_key`; the cached objects are the ones a fresh preparation
    makes, so the numbers are exactly those of ``Standardiser`` + ``make_source``."""
    import os
    import time
    from pathlib import Path

    t0 = time.perf_counter()
    if memory_items is None:
        memory_items = int(os.environ.get("EPIFLOW_PREP_MEMORY", "2") or 0)
    X_train, X_test = as_csr(X_train), as_csr(X_test)
    key = prep_key(X_train, X_test, per=per, n_classes=n_classes, mode=mode,
                   cache_bytes=cache_bytes, batch_size=batch_size)
    mkey = (key, str(device))
    got = _PREP_MEMORY.get(mkey)
    if got is not None:
        _PREP_MEMORY[mkey] = _PREP_MEMORY.pop(mkey)          # most recent last
        return FoldPrep(got.stats, got.train, got.test, key, time.perf_counter() - t0, "memory")
    path = Path(cache_dir) / f"{key}.pt" if cache_dir else None
    made = _load_disk(path, device) if path is not None and path.is_file() else None
    hit = "disk" if made is not None else None
    if made is None:
        stats = Standardiser(X_train, per=per, n_classes=n_classes)
        tr = make_source(X_train, stats, n_classes, device, mode=mode, cache_bytes=cache_bytes,
                         batch_size=batch_size)
        te = make_source(X_test, stats, n_classes, device, mode=tr.mode, cache_bytes=0)
        made = (stats, tr, te)
        if path is not None:
            _save_disk(path, *made)
    prep = FoldPrep(*made, key, time.perf_counter() - t0, hit)
    if memory_items > 0:
        _PREP_MEMORY[mkey] = prep
        while len(_PREP_MEMORY) > memory_items:
            _PREP_MEMORY.pop(next(iter(_PREP_MEMORY)))
    return prep


def clear_prep_memory() -> None:
    _PREP_MEMORY.clear()
