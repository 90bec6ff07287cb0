"""Interpreting trained gene networks: gene, class and pathway attributions, pairwise gene
interactions, a burden x burden interaction test, and recovery metrics against a simulated truth.

Everything takes numpy / scipy.sparse in and gives numpy / pandas out; torch runs inside, on the
device the net's parameters live on (CPU or CUDA). Count matrices are sparse (n, C*G) with column
``c*G + g`` = functional class ``c`` of gene ``g``; nets read them standardised with the training
fold's :class:`models.genes.data.Standardiser`. No function densifies a whole cohort: rows are
standardised ``batch`` at a time, and the work per forward pass is bounded (``_ELEMENT_BUDGET``).

Reference point. Every attribution here is relative to the *zero-count row*: a sample with no
qualifying variant in any gene, standardised with the same statistics (:func:`baseline_row`).
"Gene g's attribution" is then how much of the logit difference f(x) - f(zero-count row) the
integrated gradients credit to gene g's C class columns.

- :func:`gene_attributions`: Captum IntegratedGradients (or GradientShap) on the logit.
- :func:`pathway_importance`: Captum LayerIntegratedGradients on the gene -> pathway layer
  (``net.path``) or the dense hidden layer (``net.hidden``); :func:`weight_activation_importance`
  the simple |output weight| x mean |activation| reference.
- :func:`interaction_scores`: second finite differences of the logit when genes a and b are set
  to their zero-count values, against a null of random gene pairs.
- :func:`burden_interaction_test`: logistic regression y ~ a + b + a*b (statsmodels), Wald p.
- :func:`truth_metrics`: precision / recall / ranks against an ``epiflow simulate`` truth.json.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from models.genes.data import Standardiser, as_csr
from models.genes.nets import GeneNet

__all__ = ["GeneAttribution", "standardised_rows", "baseline_row", "gene_attributions",
           "pathway_importance", "weight_activation_importance", "interaction_scores",
           "burden_interaction_test", "gene_burden", "truth_metrics"]

# at most about this many float32 values in the largest activation tensor of one forward pass
# (the gene module's (rows, hidden, genes) hidden layer): 2**26 values = 256 MiB
_ELEMENT_BUDGET = 1 << 26
METHODS = ("ig", "gradshap")


# --------------------------------------------------------------------------- inputs


# relative size of float32 rounding in the logit: interaction scores below it are zero
ROUNDING_FLOOR = 1e-5

def standardised_rows(stats: Standardiser, X, rows) -> np.ndarray:
    """float32 (len(rows), C*G): rows ``rows`` of the sparse count matrix X standardised with
    the training-fold statistics ``stats`` (only those rows are densified)."""
    return _rows(as_csr(X), stats, np.asarray(rows, dtype=np.int64).ravel())


def baseline_row(stats: Standardiser) -> np.ndarray:
    """float32 (C*G,): the standardised all-zero count row, i.e. "no qualifying variant"."""
    return (-np.asarray(stats.mean, dtype=np.float64) / np.asarray(stats.sd, dtype=np.float64)
            ).astype(np.float32)


def _rows(X: sp.csr_matrix, stats: Standardiser, rows: np.ndarray) -> np.ndarray:
    dense = X[rows].toarray().astype(np.float64, copy=False)
    return np.ascontiguousarray(stats.transform_dense(dense), dtype=np.float32)


def gene_burden(X, n_classes: int, g: int) -> np.ndarray:
    """(n,) float64: per-sample sum over the C classes of gene g's counts (sparse, no densify)."""
    X = as_csr(X)
    C = int(n_classes)
    if C <= 0 or X.shape[1] % C:
        raise ValueError(f"{X.shape[1]} columns is not a multiple of n_classes={n_classes}")
    G = X.shape[1] // C
    g = int(g)
    if not 0 <= g < G:
        raise ValueError(f"gene index {g} out of range [0, {G})")
    cols = np.arange(C) * G + g
    return np.asarray(X[:, cols].sum(axis=1, dtype=np.float64)).ravel()


def _check_inputs(net, stats: Standardiser, X, n_classes: int) -> tuple[sp.csr_matrix, int, int]:
    X = as_csr(X)
    C = int(n_classes)
    f = X.shape[1]
    if C <= 0 or f % C:
        raise ValueError(f"{f} columns is not a multiple of n_classes={n_classes}")
    if np.asarray(stats.mean).size != f:
        raise ValueError(f"the standardiser has {np.asarray(stats.mean).size} columns, X has {f}")
    G = f // C
    n_genes = getattr(net, "n_genes", None)
    if n_genes is not None and int(n_genes) != G:
        raise ValueError(f"the net reads {n_genes} genes, X has {G} (= {f} / {C})")
    if X.shape[0] == 0:
        raise ValueError("X_test has no rows")
    return X, C, G


def _device(net) -> torch.device:
    return next(net.parameters()).device


def _logit_fn(net):
    """f(x) -> (B,) logits; an ensemble's (B, N) member logits are averaged."""
    def f(x):
        out = net(x)
        return out.mean(dim=1) if out.dim() == 2 else out
    return f


@contextlib.contextmanager
def _eval_mode(net):
    """Every module in eval mode inside; each module's own previous flag restored after."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def _rows_per_pass(net, G: int, C: int) -> int:
    """Network rows per forward/backward pass within the element budget."""
    hidden = int(getattr(getattr(net, "gene", None), "hidden", 50) or 50)
    return max(1, _ELEMENT_BUDGET // max(1, G * (hidden + C)))


def _attribution_setup(net, stats: Standardiser, X_test, n_classes: int):
    """(X, C, G, n, device, logit function, (1, C*G) baseline row, rows per pass) for the
    gradient attributions."""
    X, C, G = _check_inputs(net, stats, X_test, n_classes)
    dev = _device(net)
    base = torch.as_tensor(baseline_row(stats), device=dev).unsqueeze(0)
    return X, C, G, X.shape[0], dev, _logit_fn(net), base, _rows_per_pass(net, G, C)


def _chunks(n: int, size: int) -> Iterable[np.ndarray]:
    size = max(1, int(size))
    for i in range(0, n, size):
        yield np.arange(i, min(i + size, n))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """numpy's global RNG (Captum's GradientShap draws from it) and torch's seeded inside,
    both restored after, so attribution leaves the caller's random streams untouched."""
    state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            np.random.seed(int(seed) % (2 ** 32))
            torch.manual_seed(int(seed))
            yield
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------- gene attributions


@dataclass
class GeneAttribution:
    """Attributions of the logit to genes and classes, relative to the zero-count row.

    gene_abs (G,): mean over test samples of |sum over classes of gene g's attribution|.
    gene_signed (G,): the same without the absolute value (direction: + raises the logit).
    class_abs (C,): mean over test samples of sum over genes of |attribution of (class c, gene g)|.
    completeness_rel_err: IG only (else NaN): max over samples of
        |sum(attr) - (f(x) - f(baseline))| / max(|f(x) - f(baseline)|, 1e-6).
    """
    gene_abs: np.ndarray
    gene_signed: np.ndarray
    class_abs: np.ndarray
    completeness_rel_err: float


def gene_attributions(net, stats: Standardiser, X_test, n_classes: int, *, method: str = "ig",
                      n_steps: int = 32, n_samples: int = 20, batch: int = 64,
                      seed: int = 0) -> GeneAttribution:
    """Attributions of the net's logit to every (class, gene) input over all rows of X_test.

    ``method="ig"``: Captum IntegratedGradients from the zero-count baseline row
    (:func:`baseline_row`), ``n_steps`` Gauss-Legendre points; the completeness error comes from
    Captum's convergence delta. ``method="gradshap"``: Captum GradientShap with the zero-count
    row as the *only* baseline and no input noise (stdevs 0): each of the ``n_samples`` draws
    is input-minus-baseline times the gradient at a uniformly random point of the straight path,
    so GradientShap is an unbiased Monte-Carlo estimate of the same IG attribution (same
    reference point, comparable scales); random training-like baselines would change the
    question from "versus no variant" to "versus a typical sample". Its draws are seeded with
    ``seed`` (numpy's and torch's global generators are restored afterwards).

    Check ``completeness_rel_err``: rare-variant columns standardise to large values (about
    1/sqrt(carrier frequency)), and the logit of a trained net can bend sharply within the first
    few percent of the path from the zero-count row; 32 steps then fall well short of complete
    (seen on small test cohorts: 0.18 for a dense net at 32 steps, 6e-5 at 128; an XOR-trained
    dense net needed ~512). Raise ``n_steps`` until the error is below ~0.01.

    ``batch`` test rows are densified at a time; IG forward passes hold at most ``batch`` x
    ``n_steps`` rows, fewer when the gene module's activations would pass ``_ELEMENT_BUDGET``.
    Runs in eval mode; every module's train/eval flag is restored after.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method '{method}'; valid: {', '.join(METHODS)}")
    from captum.attr import GradientShap, IntegratedGradients

    X, C, G, n, dev, f, base, per_pass = _attribution_setup(net, stats, X_test, n_classes)
    gene_abs = torch.zeros(G, dtype=torch.float64, device=dev)
    gene_signed = torch.zeros(G, dtype=torch.float64, device=dev)
    class_abs = torch.zeros(C, dtype=torch.float64, device=dev)
    worst = 0.0
    if method == "ig":
        explainer = IntegratedGradients(f)
        rows_per_chunk = max(1, int(batch))
    else:
        explainer = GradientShap(f)
        rows_per_chunk = max(1, min(int(batch), per_pass // max(1, int(n_samples))))
    with _eval_mode(net), torch.enable_grad(), _seeded(seed, dev):
        for idx in _chunks(n, rows_per_chunk):
            x = torch.as_tensor(_rows(X, stats, idx), device=dev)
            b = base.expand_as(x).contiguous()
            if method == "ig":
                internal = max(len(idx), min(len(idx) * int(n_steps), per_pass))
                attr, delta = explainer.attribute(x, baselines=b, n_steps=int(n_steps),
                                                  method="gausslegendre",
                                                  internal_batch_size=internal,
                                                  return_convergence_delta=True)
                with torch.no_grad():
                    diff = (f(x) - f(base)).double()
                    rel = delta.detach().double().abs() / diff.abs().clamp_min(1e-6)
                    worst = max(worst, float(rel.max()))
            else:
                attr = explainer.attribute(x, baselines=base, n_samples=int(n_samples),
                                           stdevs=0.0)
            with torch.no_grad():
                a = attr.detach().double().view(len(idx), C, G)
                per_gene = a.sum(dim=1)
                gene_abs += per_gene.abs().sum(dim=0)
                gene_signed += per_gene.sum(dim=0)
                class_abs += a.abs().sum(dim=2).sum(dim=0)
    return GeneAttribution(gene_abs=(gene_abs / n).cpu().numpy(),
                           gene_signed=(gene_signed / n).cpu().numpy(),
                           class_abs=(class_abs / n).cpu().numpy(),
                           completeness_rel_err=float(worst) if method == "ig" else float("nan"))


# --------------------------------------------------------------------------- neuron importance


def _neuron_layer(net):
    """The gene -> neuron layer: ``net.path`` (pathway neurons) or ``net.hidden`` (dense units);
    None for heads without one (logreg, ensembles)."""
    for name in ("path", "hidden"):
        layer = getattr(net, name, None)
        if isinstance(layer, torch.nn.Module):
            return layer
    return None


def pathway_importance(net, stats: Standardiser, X_test, n_classes: int, *, n_steps: int = 32,
                       batch: int = 64) -> np.ndarray | None:
    """(K,) mean over test rows of |LayerIntegratedGradients attribution| of the logit to each
    output of the gene -> neuron layer (``net.path``: pathway neurons, index k = neuron k of the
    topology, the dummy neuron included; ``net.hidden``: dense units), from the zero-count row.
    None for heads without such a layer (logreg). Eval mode inside, flags restored after."""
    layer = _neuron_layer(net)
    if layer is None:
        return None
    from captum.attr import LayerIntegratedGradients

    X, C, G, n, dev, f, base, per_pass = _attribution_setup(net, stats, X_test, n_classes)
    total = None
    lig = LayerIntegratedGradients(f, layer)
    with _eval_mode(net), torch.enable_grad():
        for idx in _chunks(n, max(1, int(batch))):
            x = torch.as_tensor(_rows(X, stats, idx), device=dev)
            internal = max(len(idx), min(len(idx) * int(n_steps), per_pass))
            attr = lig.attribute(x, baselines=base.expand_as(x).contiguous(), n_steps=int(n_steps),
                                 method="gausslegendre", internal_batch_size=internal)
            s = attr.detach().double().abs().sum(dim=0)
            total = s if total is None else total + s
    return (total / n).cpu().numpy()


def weight_activation_importance(net, stats: Standardiser, X_test, n_classes: int,
                                 batch: int = 256) -> np.ndarray | None:
    """(K,) |output weight of neuron k| x mean over test rows of |activation of neuron k| for the
    gene -> neuron layer (see :func:`pathway_importance`); None for logreg."""
    layer = _neuron_layer(net)
    if layer is None or not hasattr(net, "layer_input"):
        return None
    X, C, G = _check_inputs(net, stats, X_test, n_classes)
    n = X.shape[0]
    dev = _device(net)
    total = None
    with _eval_mode(net), torch.no_grad():
        for idx in _chunks(n, min(max(1, int(batch)), _rows_per_pass(net, G, C))):
            x = torch.as_tensor(_rows(X, stats, idx), device=dev)
            act = net.act(layer(net.layer_input(x)))
            s = act.double().abs().sum(dim=0)
            total = s if total is None else total + s
        w = net.out.weight.detach().double().abs().reshape(-1)
    return (w * total / n).cpu().numpy()


# --------------------------------------------------------------------------- interactions


class _Knockouts:
    """Logits of a batch of rows with sets of genes put at their zero-count values.

    The shared gene module maps each gene's C class values to that gene's neuron independently
    of every other gene, so for a GeneNet "gene a at the baseline" is "gene neuron a at its
    baseline activation" and the gene module runs once per row. Three modes, fastest first:

    - ``linear``: no gene -> gene layer. The first layer after the gene neurons (``path``,
      ``hidden``, or ``out`` for logreg) is linear, so a knockout adds
      (g0[a] - g[:, a]) * W[:, a] to its pre-activations and only the head runs per set:
      O(B * K) per set instead of O(B * G * K).
    - ``gene``: gene neurons replaced, every layer after the gene module run per set.
    - ``input``: the gene's C input columns set to the baseline and the whole net run per set
      (any net, e.g. an ensemble).

    Each faster mode is checked against the next on the first batch (logits and one knockout)
    and dropped if it does not match to float tolerance.
    """

    def __init__(self, net, stats: Standardiser, C: int, G: int):
        self.net, self.C, self.G = net, C, G
        self.dev = _device(net)
        self.f = _logit_fn(net)
        self.base = torch.as_tensor(baseline_row(stats), device=self.dev)
        self.hidden = int(getattr(getattr(net, "gene", None), "hidden", 50) or 50)
        self.mode = "input"
        self.checked = False
        if isinstance(net, GeneNet):
            self.g0 = net.gene_activations(self.base.unsqueeze(0))[0]            # (G,)
            self.layer = _neuron_layer(net)
            self.first = self.layer if self.layer is not None else net.out
            self.mode = "linear" if net.gg is None else "gene"
            self._cols: dict[int, torch.Tensor] = {}

    # -- pieces of GeneNet.forward (eval mode: dropout is the identity)
    def _rest(self, g: torch.Tensor) -> torch.Tensor:
        """GeneNet.forward after the gene module."""
        net = self.net
        h = net.drop(g)
        if net.gg is not None:
            h = net.drop(net.act(net.gg(h)))
        if self.layer is None:
            return net.out(h).squeeze(1)
        return net.head(self.layer(h))

    def _post(self, pre: torch.Tensor) -> torch.Tensor:
        """Logits from the first layer's output (linear mode)."""
        if self.layer is None:
            return pre.squeeze(1)
        return self.net.head(pre)

    def _columns(self, genes: torch.Tensor) -> torch.Tensor:
        """(len(genes), K): column W[:, a] of the first layer for each gene a (cached)."""
        need = sorted({int(a) for a in genes.tolist()} - set(self._cols))
        if need:
            zero = self.first(torch.zeros(1, self.G, device=self.dev))
            for i in range(0, len(need), 256):
                part = need[i:i + 256]
                e = torch.zeros(len(part), self.G, device=self.dev)
                e[torch.arange(len(part), device=self.dev), torch.as_tensor(part, device=self.dev)] = 1.0
                cols = self.first(e) - zero
                for a, c in zip(part, cols):
                    self._cols[a] = c
        return torch.stack([self._cols[int(a)] for a in genes.tolist()])

    def prepare(self, x: torch.Tensor):
        """(state, f(x)) for a batch of standardised rows; f(x) computed the way the knockouts
        are, so that an additive net's differences cancel to rounding."""
        if self.mode == "input":
            return x, self.f(x)
        g = self.net.gene_activations(x)
        if not self.checked:
            self.checked = True
            fx = self.f(x)
            tol = 1e-4 * (1.0 + float(fx.abs().max()))
            close = lambda u, v: u.shape == v.shape and float((u - v).abs().max()) <= tol
            probe = [(0,), (0, self.G - 1)] if self.G > 1 else [(0,)]
            if self.mode == "linear":
                pre = self.first(g)
                state = (g, pre)
                if not (close(self._post(pre), fx)
                        and close(self._linear(state, probe), self._gene(g, probe))):
                    self.mode = "gene"
            if self.mode == "gene" and not close(self._rest(g), fx):
                self.mode = "input"
                return x, fx
        if self.mode == "linear":
            pre = self.first(g)
            return (g, pre), self._post(pre)
        return g, self._rest(g)

    def _index(self, sets, B: int):
        blk = torch.cat([torch.full((len(s),), j, dtype=torch.long) for j, s in enumerate(sets)])
        gen = torch.cat([torch.as_tensor(list(s), dtype=torch.long) for s in sets])
        return blk.to(self.dev), gen.to(self.dev)

    def _linear(self, state, sets) -> torch.Tensor:
        g, pre = state
        B, K = pre.shape
        blk, gen = self._index(sets, B)
        d = (self.g0[gen][:, None] - g[:, gen].t())                           # (k, B)
        contrib = d[:, :, None] * self._columns(gen)[:, None, :]               # (k, B, K)
        out = pre.unsqueeze(0).repeat(len(sets), 1, 1).index_add_(0, blk, contrib)
        return self._post(out.view(len(sets) * B, K)).view(len(sets), B)

    def _gene(self, g, sets) -> torch.Tensor:
        B = g.shape[0]
        blk, gen = self._index(sets, B)
        t = g.repeat(len(sets), 1)                                             # (S*B, G)
        rows = (blk[:, None] * B + torch.arange(B, device=self.dev)[None, :]).reshape(-1)
        cols = gen.repeat_interleave(B)
        t[rows, cols] = self.g0[cols]
        return self._rest(t).view(len(sets), B)

    def _input(self, x, sets) -> torch.Tensor:
        B = x.shape[0]
        blk, gen = self._index(sets, B)
        t = x.repeat(len(sets), 1)                                             # (S*B, C*G)
        rows = (blk[:, None] * B + torch.arange(B, device=self.dev)[None, :]).reshape(-1)
        cols = (torch.arange(self.C, device=self.dev)[None, :] * self.G + gen[:, None])  # (k, C)
        cols = cols.repeat_interleave(B, dim=0)                                # (k*B, C)
        t[rows[:, None].expand_as(cols), cols] = self.base[cols]
        return self.f(t).view(len(sets), B)

    def logits(self, state, sets: Sequence[Sequence[int]]) -> torch.Tensor:
        """(len(sets), B) logits, set j's genes at their zero-count values."""
        if self.mode == "linear":
            B, K = state[1].shape
            width, fn = 2 * K * max(len(s) for s in sets), self._linear
        elif self.mode == "gene":
            B = state.shape[0]
            width, fn = self.G, self._gene
        else:
            B = state.shape[0]
            width, fn = self.G * (self.hidden + self.C), self._input
        per = max(1, _ELEMENT_BUDGET // max(1, B * width))
        return torch.cat([fn(state, sets[j:j + per]) for j in range(0, len(sets), per)])


def interaction_scores(net, stats: Standardiser, X_test, n_classes: int, genes, *,
                       n_null: int = 200, seed: int = 0, batch: int = 128) -> pd.DataFrame:
    """Pairwise interaction of the net's logit f for every pair a < b of the gene indices
    ``genes``, over the rows x of X_test.

    delta(x) = f(x) - f(x, a at baseline) - f(x, b at baseline) + f(x, a and b at baseline)
    ("at baseline": the gene's C standardised columns at their zero-count values); score =
    sqrt(mean over rows of delta^2) (second finite difference; the numerator of Friedman's H).
    An additive net (logreg, linear) gives delta = 0 up to float rounding; nothing is special-cased.
    Null: the same score for ``n_null`` pairs drawn with a seeded generator (each pair two
    distinct genes, pairs drawn independently) from the genes with a nonzero count in X_test
    that are not in ``genes``; p = (1 + #{null >= score}) / (1 + #null), NaN when no null pair
    can be drawn (n_null 0 or fewer than two such genes); p = 1 for a score within float rounding
    of the logit scale (``ROUNDING_FLOOR`` x (RMS logit + 1)). Sorted by score, descending.
    """
    X, C, G = _check_inputs(net, stats, X_test, n_classes)
    n = X.shape[0]
    genes = np.unique(np.asarray(list(genes), dtype=np.int64).ravel())
    if genes.size and (genes.min() < 0 or genes.max() >= G):
        raise ValueError(f"gene indices must be in [0, {G})")
    pairs = [(int(a), int(b)) for a, b in itertools.combinations(genes.tolist(), 2)]
    cols = ["gene_a", "gene_b", "score", "p"]
    if not pairs:
        return pd.DataFrame({"gene_a": np.empty(0, np.int64), "gene_b": np.empty(0, np.int64),
                             "score": np.empty(0), "p": np.empty(0)})[cols]
    # the null pool: genes carrying at least one nonzero count in X_test, outside ``genes``
    Xc = X.tocoo()
    nz = Xc.data != 0
    present = np.unique(Xc.col[nz] % G)
    pool = np.setdiff1d(present, genes)
    rng = np.random.default_rng(seed)
    null_pairs = []
    if pool.size >= 2:
        for _ in range(int(n_null)):
            a, b = rng.choice(pool, size=2, replace=False)
            null_pairs.append((int(min(a, b)), int(max(a, b))))
    all_pairs = pairs + null_pairs
    singles = sorted({g for p in all_pairs for g in p})
    pos = {g: i for i, g in enumerate(singles)}
    sets = [(g,) for g in singles] + all_pairs
    ia = torch.as_tensor([pos[a] for a, _ in all_pairs])
    ib = torch.as_tensor([pos[b] for _, b in all_pairs])
    sumsq = torch.zeros(len(all_pairs), dtype=torch.float64)
    fx_sq = 0.0
    ko = None
    with _eval_mode(net), torch.no_grad():
        ko = _Knockouts(net, stats, C, G)
        for idx in _chunks(n, max(1, int(batch))):
            x = torch.as_tensor(_rows(X, stats, idx), device=ko.dev)
            state, fx = ko.prepare(x)
            vals = ko.logits(state, sets).double().cpu()                      # (S, B)
            f1 = vals[:len(singles)]
            f2 = vals[len(singles):]
            delta = fx.double().cpu()[None, :] - f1[ia] - f1[ib] + f2
            sumsq += (delta ** 2).sum(dim=1)
            fx_sq += float((fx.double() ** 2).sum())
    score = torch.sqrt(sumsq / n).numpy()
    # float rounding: an additive net's scores are ~1e-7 of its logits, and would still "beat"
    # null pairs whose rounding happens to be smaller. A score within rounding of the logit scale
    # is no interaction: p = 1.
    floor = ROUNDING_FLOOR * (math.sqrt(fx_sq / max(n, 1)) + 1.0)
    obs = score[:len(pairs)]
    null = score[len(pairs):]
    if null.size:
        p = (1.0 + (null[None, :] >= obs[:, None]).sum(axis=1)) / (1.0 + null.size)
    else:
        p = np.full(len(pairs), np.nan)
    p = np.where(obs <= floor, 1.0, p)
    df = pd.DataFrame({"gene_a": np.array([a for a, _ in pairs], np.int64),
                       "gene_b": np.array([b for _, b in pairs], np.int64),
                       "score": obs.astype(np.float64), "p": p.astype(np.float64)})
    return df.sort_values("score", ascending=False, kind="mergesort").reset_index(drop=True)[cols]


# --------------------------------------------------------------------------- burden x burden test


def burden_interaction_test(a, b, y, covariates=None) -> dict:
    """Logistic regression y ~ 1 + a + b + a*b (+ covariates), statsmodels Logit (Newton);
    the Wald test of the product term. Returns {beta_int, se, p, n} (n: rows used, those with
    finite a, b, y and covariates).

    beta_int, se and p are NaN, never a number, when the test is undefined: fewer rows than
    parameters, y, a or b constant, a rank-deficient design (the product collinear with the other
    columns), perfect or quasi-complete separation (statsmodels' warning, or a fitted linear
    predictor beyond +-30), non-convergence, or a non-finite estimate. Nothing is printed and no
    warning leaks.
    """
    import statsmodels.api as sm
    from statsmodels.tools import sm_exceptions as sme

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if not (a.size == b.size == y.size):
        raise ValueError(f"a, b and y differ in length ({a.size}, {b.size}, {y.size})")
    cov = None
    if covariates is not None:
        cov = np.asarray(covariates, dtype=np.float64)
        cov = cov.reshape(-1, 1) if cov.ndim == 1 else cov
        if cov.ndim != 2 or cov.shape[0] != y.size:
            raise ValueError(f"covariates must have {y.size} rows, got shape {cov.shape}")
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(y)
    if cov is not None:
        ok &= np.isfinite(cov).all(axis=1)
    a, b, y = a[ok], b[ok], y[ok]
    cov = cov[ok] if cov is not None else None
    n = int(y.size)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must be 0/1")
    nan = {"beta_int": float("nan"), "se": float("nan"), "p": float("nan"), "n": n}
    parts = [np.ones(n), a, b, a * b] + ([cov] if cov is not None else [])
    design = np.column_stack(parts) if n else np.zeros((0, 4))
    k = design.shape[1]
    if n <= k or np.ptp(y) == 0 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return nan
    # rank check on column-scaled design (burdens of very different sizes stay comparable)
    scale = np.abs(design).max(axis=0)
    if np.any(scale == 0) or np.linalg.matrix_rank(design / scale) < k:
        return nan
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        try:
            res = sm.Logit(y, design).fit(method="newton", maxiter=100, disp=False)
        except (np.linalg.LinAlgError, ValueError, OverflowError, ZeroDivisionError,
                sme.PerfectSeparationError):
            return nan
        separated = any(issubclass(w.category, sme.PerfectSeparationWarning) for w in caught)
        if separated or not res.mle_retvals.get("converged", False):
            return nan
        params = np.asarray(res.params, dtype=np.float64)
        bse = np.asarray(res.bse, dtype=np.float64)
        pvals = np.asarray(res.pvalues, dtype=np.float64)
        lin = design @ params
    beta, se, p = float(params[3]), float(bse[3]), float(pvals[3])
    if not (np.all(np.isfinite(params)) and math.isfinite(se) and se > 0 and math.isfinite(p)):
        return nan
    if float(np.max(np.abs(lin))) > 30.0:     # fitted probabilities within 1e-13 of 0 or 1
        return nan
    return {"beta_int": beta, "se": se, "p": p, "n": n}


# --------------------------------------------------------------------------- truth metrics


def _gene_name(entry) -> str | None:
    if isinstance(entry, dict):
        v = entry.get("gene", entry.get("name", entry.get("symbol")))
        return None if v is None else str(v)
    return None if entry is None else str(entry)


def _pair_names(entry) -> tuple[str, str] | None:
    if isinstance(entry, dict):
        g = entry.get("genes")
        if g is None:
            g = [_gene_name(entry.get("gene_a")), _gene_name(entry.get("gene_b"))]
    else:
        g = entry
    g = [str(v) for v in (g or []) if v is not None]
    return (g[0], g[1]) if len(g) == 2 else None


def _module(entry) -> tuple[str | None, list]:
    if not isinstance(entry, dict):
        return None, []
    pw = entry.get("pathway", entry.get("name"))
    genes = entry.get("genes")
    if genes is None:
        genes = [_gene_name(e) for e in entry.get("gene_info", [])]
    return (None if pw is None else str(pw)), [str(g) for g in genes if g is not None]


def planted(truth: dict) -> tuple[set, set, set]:
    """(planted gene names: additive, pair and module genes; planted pairs as frozensets;
    planted module pathway names) of a truth dict, in the layouts :func:`truth_metrics` reads."""
    additive = [g for g in (_gene_name(e) for e in (truth.get("additive_genes") or [])) if g]
    pairs = [p for p in (_pair_names(e) for e in (truth.get("epistatic_pairs") or [])) if p]
    modules = [_module(e) for e in (truth.get("pathway_modules") or [])]
    genes = set(additive) | {g for p in pairs for g in p} | {g for _, mg in modules for g in mg}
    return genes, {frozenset(p) for p in pairs}, {pw for pw, _ in modules if pw is not None}


def truth_metrics(gene_rank_names: Sequence[str], pair_rank_names: Sequence[tuple],
                  pathway_rank_names: Sequence[str], truth: dict, *, k: int = 20) -> dict:
    """Recovery of a simulated truth (``epiflow simulate``'s truth.json) by ranked lists.

    gene_rank_names: gene names, best first; pair_rank_names: (name_a, name_b) pairs, best
    first (unordered); pathway_rank_names: pathway names, best first (may be empty). Sections
    missing from ``truth`` (``additive_genes``, ``epistatic_pairs``, ``pathway_modules``) count
    as empty. Ranks are 1-based (first occurrence), None when absent. Returns:

    - precision_at_k: planted additive genes among the top min(k, #ranked) genes, divided by
      min(k, #ranked); NaN when no additive gene is planted or nothing is ranked.
    - recall_at_k: planted genes (additive, pair and module genes) in the top k, divided by the
      number of planted genes; NaN when none is planted.
    - additive_genes / additive_gene_ranks, pairs / pair_ranks / pair_gene_ranks (the
      importance rank of each gene of a planted pair: a pair is scored only when both genes
      are among the top genes), module_pathways /
      module_pathway_ranks, module_genes / module_gene_ranks: names and ranks in truth order.
    - k, n_additive, n_planted_genes.
    """
    k = int(k)
    genes = [str(g) for g in gene_rank_names]
    gene_rank: dict[str, int] = {}
    for i, g in enumerate(genes):
        gene_rank.setdefault(g, i + 1)
    pair_rank: dict[frozenset, int] = {}
    for i, pr in enumerate(pair_rank_names):
        pair_rank.setdefault(frozenset(str(v) for v in pr), i + 1)
    pw_rank: dict[str, int] = {}
    for i, pw in enumerate(pathway_rank_names or []):
        pw_rank.setdefault(str(pw), i + 1)

    additive = [g for g in (_gene_name(e) for e in (truth.get("additive_genes") or [])) if g]
    pairs = [p for p in (_pair_names(e) for e in (truth.get("epistatic_pairs") or [])) if p]
    modules = [_module(e) for e in (truth.get("pathway_modules") or [])]
    planted = list(dict.fromkeys(additive + [g for p in pairs for g in p]
                                 + [g for _, mg in modules for g in mg]))
    top = set(genes[:max(k, 0)])
    k_eff = min(k, len(genes))
    add_set = set(additive)
    precision = (len(top & add_set) / k_eff) if add_set and k_eff > 0 else float("nan")
    recall = (len(top & set(planted)) / len(planted)) if planted else float("nan")
    return {
        "k": k,
        "precision_at_k": float(precision),
        "recall_at_k": float(recall),
        "n_additive": len(add_set),
        "n_planted_genes": len(planted),
        "additive_genes": additive,
        "additive_gene_ranks": [gene_rank.get(g) for g in additive],
        "pairs": [list(p) for p in pairs],
        "pair_ranks": [pair_rank.get(frozenset(p)) for p in pairs],
        "pair_gene_ranks": [[gene_rank.get(g) for g in p] for p in pairs],
        "module_pathways": [pw for pw, _ in modules],
        "module_pathway_ranks": [pw_rank.get(pw) if pw is not None else None for pw, _ in modules],
        "module_genes": [mg for _, mg in modules],
        "module_gene_ranks": [[gene_rank.get(g) for g in mg] for _, mg in modules],
    }
