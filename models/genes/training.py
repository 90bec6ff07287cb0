"""Training: weighted focal BCE, a thin LightningModule, and ``fit_predict`` for the pipeline."""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.genes import topology as T
from models.genes.data import (STANDARDIZE, ShuffledBatches, Standardiser, as_csr, make_source,
                               prep_cache_dir, prepare_fold)
from models.genes.ensemble import BatchedEnsemble
from models.genes.nets import HEADS, GeneNet, build_topology, n_trainable
from models.genes.sparsity import RigL, prune_dense_to_sparse
from models import registry
from models.registry import MEMBER_SOURCES, NET_DEFAULTS
from models.stats import rank_auc

MODEL_TYPES: tuple[str, ...] = registry.gene_net_types()   # the single-net heads + the ensemble
# the accepted model params and their defaults: the registry's NetParams schema (single source)
DEFAULT_PARAMS = dict(NET_DEFAULTS)
DEFAULT_TRAIN = {"max_epochs": 30, "batch_size": 128, "seed": 0, "device": "auto",
                 "input_mode": "auto", "cache_bytes": 1 << 30, "num_threads": 1,
                 "prep_cache": None, "loop": "torch"}


def focal_bce(logits: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Weighted focal binary cross-entropy, mean over the batch.

    loss_i = -a_i (1 - p_i)^gamma log p_i, p_i the probability of the true class, a_i = alpha for
    y = 1 and 1 - alpha for y = 0. gamma = 0 and alpha = 0.5 give half the plain BCE.
    """
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    a = y * alpha + (1 - y) * (1 - alpha)
    if gamma == 0:
        return (a * bce).mean()
    p_t = torch.exp(-bce)
    return (a * (1 - p_t).pow(gamma) * bce).mean()


LR_SCHEDULES = registry.LR_SCHEDULES


class StepRule:
    """What follows every optimiser step of a gene net, the same in both training loops:

    - ``schedule`` 'cosine': the learning rate of the next step is lr * (1 + cos(pi t / T)) / 2
      (t steps taken of T), so it reaches 0 at the last step; 'constant' leaves it at lr.
    - ``prox`` (a list of weights, from ``net.l1_weight()``): ``l1`` acts on them as a proximal
      step in Adam's metric (:func:`prox_l1_`) from step ``l1_start`` on, instead of a loss term.
      Adam divides a loss-term penalty away with each weight's own gradient scale, so a weight
      whose gradient is noise keeps moving by about the learning rate around zero; with one such
      weight per gene their sum grows as sqrt(genes). The proximal step sets those weights to
      exactly zero.
    """

    def __init__(self, *, lr: float, total_steps: int, schedule: str = "constant", prox=None,
                 l1: float = 0.0, l1_start: int = 0):
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule '{schedule}'; valid: {', '.join(LR_SCHEDULES)}")
        self.lr, self.total, self.schedule = float(lr), max(1, int(total_steps)), schedule
        self.prox = list(prox or [])
        self.l1, self.l1_start = float(l1), int(l1_start)

    @property
    def active(self) -> bool:
        return self.schedule != "constant" or (bool(self.prox) and self.l1 > 0)

    def lr_at(self, step: int) -> float:
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + float(np.cos(np.pi * min(step, self.total) / self.total)))
        return self.lr

    @torch.no_grad()
    def __call__(self, opt, steps_taken: int) -> None:
        opt = getattr(opt, "optimizer", opt)             # a LightningOptimizer wraps the Adam
        if self.prox and self.l1 > 0 and steps_taken - 1 >= self.l1_start:
            prox_l1_(opt, self.prox, self.l1, opt.param_groups[0]["lr"])
        if self.schedule != "constant":
            nxt = self.lr_at(steps_taken)
            for group in opt.param_groups:
                group["lr"] = nxt


@torch.no_grad()
def prox_l1_(opt: torch.optim.Optimizer, params, lam: float, lr: float) -> None:
    """Proximal L1 step in Adam's metric: after an Adam step, soft-threshold every weight of
    ``params`` by ``lr * lam / (sqrt(v_hat) + eps)`` (v_hat: Adam's bias-corrected second moment
    of that weight's gradient). A weight then stays at zero unless the running mean of its
    gradient exceeds ``lam`` (the L1 optimality condition at zero), and ``lam`` keeps the units
    of the loss-term coefficient."""
    for group in opt.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for w in group["params"]:
            if not any(w is q for q in params):
                continue
            st = opt.state.get(w, {})
            if "exp_avg_sq" not in st:
                continue
            bc2 = 1.0 - beta2 ** float(st["step"])
            thr = (st["exp_avg_sq"] / bc2).sqrt_().add_(eps).reciprocal_().mul_(lr * lam)
            w.copy_(w.sign() * (w.abs() - thr).clamp_(min=0.0))


def member_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of a single net (B,) or the SUM of member losses of an ensemble (B, N): each
    member then gets exactly the gradient of its own training run."""
    if logits.dim() == 2:
        return focal_bce(logits, y[:, None].expand_as(logits), alpha, gamma) * logits.shape[1]
    return focal_bce(logits, y, alpha, gamma)


def check_model_type(model_type: str, valid: Sequence[str] | None = None) -> None:
    valid = registry.gene_net_types() if valid is None else valid
    if model_type not in valid:
        raise ValueError(f"unknown model type '{model_type}'; valid types: {', '.join(valid)}")


def resolve_device(device: str) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{device}'; valid: auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return torch.device(device)


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's info banners and data-loader hints for one fit."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning\..*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _lightning_module(net, *, lr, weight_decay, alpha, gamma, l1=0.0, l1_start=0, hooks=(),
                      stopper=None, rule=None):
    import lightning.pytorch as pl

    chunked = isinstance(net, BatchedEnsemble) and net.member_chunk < net.n_members
    prox = rule is not None and bool(rule.prox)

    class LitGeneNet(pl.LightningModule):
        """Focal-BCE training of a net returning logits (B,) or ensemble logits (B, N)."""

        def __init__(self):
            super().__init__()
            self.net = net
            self.automatic_optimization = not chunked

        def forward(self, x):
            return self.net(x)

        def loss_fn(self, logits, y):
            return member_loss(logits, y, alpha, gamma)

        def training_step(self, batch, batch_idx):
            x, y = batch
            if chunked:
                # members in chunks, one optimiser step for all (same result, bounded memory)
                opt = self.optimizers()
                opt.zero_grad()
                total = 0.0
                for m0, m1 in self.net.chunks():
                    loss = self.loss_fn(self.net.logits(x, m0, m1), y)
                    self.manual_backward(loss)
                    total += float(loss.detach())
                opt.step()
                return torch.tensor(total)
            loss = self.loss_fn(self.net(x), y)
            if l1 > 0 and not prox and self.global_step >= l1_start:
                loss = loss + l1 * self.net.l1_penalty()
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if rule is not None:
                rule(self.optimizers(), self.global_step)
            for hook in hooks:
                hook(self, batch, self.loss_fn)

        def on_train_epoch_end(self):
            if stopper is not None and stopper.epoch_end(self.net):
                self.trainer.should_stop = True

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    return LitGeneNet()


class RowSubset:
    """The rows ``rows`` of a prepared source, as a source of their own (same encoding)."""

    def __init__(self, source, rows: np.ndarray):
        self.source, self.rows = source, torch.as_tensor(np.asarray(rows, dtype=np.int64))
        self.n, self.device = int(self.rows.numel()), source.device
        self.mode = getattr(source, "mode", None)

    def __call__(self, idx):
        return self.source(self.rows[torch.as_tensor(idx).cpu()])


def inner_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) of a training fold: ``fraction`` of its cases and of its
    controls, drawn with ``seed``. Raises when a class would leave fewer than 2 rows on a side."""
    y = np.asarray(y).ravel()
    rng = np.random.default_rng([int(seed), 7919])
    val = []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        k = int(round(float(fraction) * idx.size))
        if k < 2 or idx.size - k < 2:
            raise ValueError(f"early stopping needs at least 2 {'cases' if c else 'controls'} in "
                             f"the validation and the fitting part of the training fold "
                             f"({idx.size} in the fold, early_stopping={fraction}); lower "
                             f"early_stopping or set it to 0")
        val.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(y.size), val), val


class EarlyStopper:
    """After each epoch, the AUC of the net on a validation part of the training fold; keeps the
    best epoch's weights and stops after ``patience`` epochs without a gain. :meth:`restore`
    puts the best weights back. An ensemble is scored by its members' mean probability."""

    def __init__(self, source, y: np.ndarray, patience: int, min_delta: float = 1e-4):
        self.source, self.y = source, np.asarray(y).ravel()
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best, self.best_epoch, self.epoch, self.since = -np.inf, 0, 0, 0
        self.hold = 0          # no stop before this epoch (set by train_net: the L1 warm-up)
        self.state = None
        self.history: list[float] = []

    def score(self, net) -> float:
        p = torch.sigmoid(predict_logits(net, self.source).double())
        if p.dim() == 2:
            p = p.mean(dim=1)
        return rank_auc(self.y, p.numpy())

    def epoch_end(self, net) -> bool:
        """Score the epoch just trained; True when training should stop."""
        self.epoch += 1
        auc = self.score(net)
        self.history.append(auc)
        if auc > self.best + self.min_delta:
            self.best, self.best_epoch, self.since = auc, self.epoch, 0
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            self.since += 1
        return self.since >= self.patience and self.epoch >= self.hold + self.patience

    def restore(self, net) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


TRAIN_LOOPS = ("torch", "lightning")


class _LoopState:
    """What the hooks read of the training module: the net, the optimiser steps taken and
    ``optimizers()`` (as on a LightningModule)."""

    def __init__(self, net, opt):
        self.net, self.global_step, self._opt = net, 0, opt

    def optimizers(self):
        return self._opt


def _torch_loop(net, batches, *, lr, weight_decay, alpha, gamma, l1, l1_start, hooks,
                max_epochs, progress, stopper=None, rule=None):
    """The optimisation of :func:`_lightning_module` under a Lightning Trainer (automatic
    optimisation, or manual member chunks), as a plain loop. Returns the epochs run."""
    chunked = isinstance(net, BatchedEnsemble) and net.member_chunk < net.n_members
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    state = _LoopState(net, opt)
    prox = rule is not None and bool(rule.prox)
    loss_fn = lambda logits, y: member_loss(logits, y, alpha, gamma)  # noqa: E731
    net.train()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(batches) * max_epochs, desc="train", unit="step", leave=False)
    epochs = 0
    for _ in range(max_epochs):
        for batch in batches:
            x, y = batch
            opt.zero_grad(set_to_none=True)
            if chunked:
                for m0, m1 in net.chunks():
                    loss_fn(net.logits(x, m0, m1), y).backward()
            else:
                loss = loss_fn(net(x), y)
                if l1 > 0 and not prox and state.global_step >= l1_start:
                    loss = loss + l1 * net.l1_penalty()
                loss.backward()
            opt.step()
            state.global_step += 1
            if rule is not None:
                rule(opt, state.global_step)
            for hook in hooks:
                hook(state, batch, loss_fn)
            if bar is not None:
                bar.update()
        epochs += 1
        if stopper is not None and stopper.epoch_end(net):
            break
    if bar is not None:
        bar.close()
    return epochs


def train_net(net: torch.nn.Module, source, y: np.ndarray, *, lr: float, weight_decay: float,
              alpha: float, gamma: float, max_epochs: int, batch_size: int, seed: int,
              device: torch.device, progress: bool = False, l1: float = 0.0,
              l1_warmup: float = 0.0, hooks=(), loop: str = "torch",
              stopper: "EarlyStopper | None" = None, lr_schedule: str = "constant",
              l1_prox: bool = False) -> dict:
    """Train ``net`` in place; returns {'epochs', 'train_time_s'} (with a ``stopper``: also
    'best_epoch' and 'val_auc', and the net holds the best epoch's weights).

    ``loop``: 'lightning' (a Lightning Trainer) or 'torch' (the same optimisation written out:
    per batch zero_grad, loss, backward, Adam step, hooks; identical parameters, step for step,
    without the Trainer's per-fit and per-step overhead nor its import in every worker).

    ``l1`` weights ``net.l1_penalty()``; it applies from step ``l1_warmup`` * total steps on, as
    a loss term, or with ``l1_prox`` as a proximal step on ``net.l1_weight()`` (:class:`StepRule`).
    ``lr_schedule``: 'constant' or 'cosine' (to zero at the last step).
    Applied from the first step, an L1 penalty on the gene -> neuron weights outpulls the data
    gradient while the shared gene module is still a random transform (that gradient is then
    weak, and in sparse heads further scaled by the small output weights): the weights of every
    gene go to zero together and the net predicts a constant. Seen on the embedded cohort as
    test AUC ~0.5 in a third of the folds of biosparse. A warm-up lets the gene neurons learn a
    burden-like transform first; the penalty then prunes the genes that carry no signal.
    """
    t0 = time.perf_counter()
    if max_epochs <= 0:
        return {"epochs": 0, "train_time_s": 0.0}
    if not 0.0 <= float(l1_warmup) < 1.0:
        raise ValueError(f"l1_warmup must be in [0, 1), got {l1_warmup}")
    batches = ShuffledBatches(source, y, batch_size, seed)
    steps = -(-int(source.n) // int(batch_size)) * int(max_epochs)
    if stopper is not None and l1 > 0:
        # the penalty is what prunes the genes that carry no signal: the validation AUC often
        # rises only after it applies, so no stop before the warm-up has ended
        stopper.hold = int(np.ceil(float(l1_warmup) * int(max_epochs)))
    if loop not in TRAIN_LOOPS:
        raise ValueError(f"unknown training loop '{loop}'; valid: {', '.join(TRAIN_LOOPS)}")
    l1_start = int(float(l1_warmup) * steps)
    rule = StepRule(lr=lr, total_steps=steps, schedule=lr_schedule, l1=l1, l1_start=l1_start,
                    prox=[net.l1_weight()] if (l1_prox and l1 > 0 and hasattr(net, "l1_weight")) else None)
    rule = rule if rule.active else None
    if loop == "torch":
        epochs = _torch_loop(net, batches, lr=lr, weight_decay=weight_decay, alpha=alpha,
                             gamma=gamma, l1=l1, l1_start=l1_start,
                             hooks=hooks, max_epochs=int(max_epochs), progress=progress,
                             stopper=stopper, rule=rule)
        net.to(device)
        return _finish(net, stopper, epochs, t0)
    import lightning.pytorch as pl

    lit = _lightning_module(net, lr=lr, weight_decay=weight_decay, alpha=alpha, gamma=gamma,
                            l1=l1, l1_start=l1_start, hooks=hooks, stopper=stopper, rule=rule)
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
            max_epochs=int(max_epochs), logger=False, enable_checkpointing=False,
            enable_progress_bar=bool(progress), enable_model_summary=bool(progress),
            num_sanity_val_steps=0, limit_val_batches=0, deterministic=False,
            default_root_dir=None)
        trainer.fit(lit, train_dataloaders=batches)
    # Lightning moves the module back to the CPU when fitting ends; prediction runs on `device`
    net.to(device)
    return _finish(net, stopper, int(trainer.current_epoch), t0)


def _finish(net, stopper, epochs: int, t0: float) -> dict:
    out = {"epochs": int(epochs), "train_time_s": time.perf_counter() - t0}
    if stopper is not None:
        stopper.restore(net)
        out.update(best_epoch=int(stopper.best_epoch), val_auc=float(stopper.best))
    return out


@torch.no_grad()
def predict_logits(net: torch.nn.Module, source, batch_size: int = 512) -> torch.Tensor:
    net.eval()
    out = []
    for i in range(0, source.n, batch_size):
        idx = torch.arange(i, min(i + batch_size, source.n))
        out.append(net(source(idx)).cpu())
    net.train()
    return torch.cat(out) if out else torch.empty(0)


def predict_proba(net: torch.nn.Module, source, batch_size: int = 512) -> np.ndarray:
    """Probabilities of class 1; an ensemble averages its members' probabilities."""
    p = torch.sigmoid(predict_logits(net, source, batch_size).double())
    if p.dim() == 2:
        p = p.mean(dim=1)
    return p.numpy()


@torch.no_grad()
def gene_activations(net: GeneNet, source, batch_size: int = 512) -> np.ndarray:
    """(n, G) gene neuron outputs of a trained net (eval mode) for every row of ``source``."""
    net.eval()
    out = []
    for i in range(0, source.n, batch_size):
        idx = torch.arange(i, min(i + batch_size, source.n))
        out.append(net.gene_activations(source(idx)).cpu())
    net.train()
    return torch.cat(out).numpy()


def activations_for(info: dict, X, n_classes: int, batch_size: int = 512) -> np.ndarray:
    """(n, G) gene activations of the net that ``fit_predict(..., return_model=True)`` trained,
    for count matrix X, standardised with that fit's training-fold statistics."""
    net, stats = info["model"], info["standardiser"]
    if not isinstance(net, GeneNet):
        raise ValueError("gene activations need a single net, not an ensemble")
    device = next(net.parameters()).device
    src = make_source(as_csr(X), stats, n_classes, device, mode=info.get("input_mode", "auto"),
                      cache_bytes=0)
    return gene_activations(net, src, batch_size)


def _merged(defaults: dict, given: dict | None, what: str) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {', '.join(unknown)}; valid: {', '.join(defaults)}")
    return {**defaults, **given}


def fit_predict(model_type: str, X_train, y_train, X_test, *, n_classes: int,
                gene_pathways: Sequence[Sequence[int]] | None = None, params: dict | None = None,
                train: dict | None = None, progress: bool = False, return_model: bool = False):
    """Fit one gene network on a training fold and return (test probabilities, info).

    X_train / X_test: sparse (n, C*G) counts, column c*G + g. y_train: 0/1 (1 = case).
    ``model_type``: one of MODEL_TYPES. ``params``: see DEFAULT_PARAMS; ``train``: see
    DEFAULT_TRAIN. info: n_parameters (trainable), train_time_s, epochs, device, focal_alpha,
    input_mode, and n_pathway_neurons / n_edges for sparse heads (rigl_rewired for RigL,
    n_members for ensembles); with ``return_model`` also 'model', 'standardiser' and (for
    ensembles) 'member_proba' (n_test, N).
    """
    check_model_type(model_type)
    p = _merged(DEFAULT_PARAMS, params, "model param")
    t = _merged(DEFAULT_TRAIN, train, "train")
    X_train, X_test = as_csr(X_train), as_csr(X_test)
    y_train = np.asarray(y_train).astype(np.float32).ravel()
    if X_train.shape[0] != y_train.size:
        raise ValueError(f"X_train has {X_train.shape[0]} rows but y_train has {y_train.size}")
    if X_train.shape[1] % n_classes:
        raise ValueError(f"{X_train.shape[1]} columns is not a multiple of n_classes={n_classes}")
    if X_test.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_test has {X_test.shape[1]} columns, X_train {X_train.shape[1]}")
    if not np.isin(y_train, (0, 1)).all():
        raise ValueError("y_train must be 0/1")
    if p["standardize"] not in STANDARDIZE:
        raise ValueError(f"unknown standardize '{p['standardize']}'; valid: {', '.join(STANDARDIZE)}")
    if p["member_source"] not in MEMBER_SOURCES:
        raise ValueError(f"unknown member_source '{p['member_source']}'; valid: "
                         f"{', '.join(MEMBER_SOURCES)}")
    device = resolve_device(t["device"])
    threads_before = torch.get_num_threads()
    if t["num_threads"]:
        # batch-128 ops are small: one intra-op thread avoids OpenMP spin-wait stalls when other
        # processes share the cores (measured: 2 threads ran 7-10x slower under load).
        torch.set_num_threads(int(t["num_threads"]))
    try:
        return _fit_predict(model_type, X_train, y_train, X_test, n_classes=n_classes,
                            gene_pathways=gene_pathways, p=p, t=t, device=device,
                            progress=progress, return_model=return_model)
    finally:
        torch.set_num_threads(threads_before)


def _member_nets(n_genes, n_classes, gene_pathways, p, init_seed) -> list[GeneNet]:
    """The ensemble's members: member i uses pathway_seed + i and init_seed + i."""
    members = []
    mtype = "biosparse"
    for i in range(int(p["n_members"])):
        q = dict(p, pathway_seed=int(p["pathway_seed"]) + i, sparsity_source=p["member_source"])
        topo, _ = build_topology(mtype, n_genes, gene_pathways, q)
        members.append(GeneNet(mtype, n_classes, n_genes, hidden=int(p["hidden"]), topo=topo,
                               init_seed=init_seed + i))
    return members


def _fit_predict(model_type, X_train, y_train, X_test, *, n_classes, gene_pathways, p, t, device,
                 progress, return_model):
    n_genes = X_train.shape[1] // n_classes
    seed = int(t["seed"])
    torch.manual_seed(seed)
    init_seed = seed if p["init_seed"] is None else int(p["init_seed"])
    alpha = p["focal_alpha"]
    if alpha is None:
        alpha = float(1.0 - y_train.mean())       # fraction of controls
    gamma = float(p["focal_gamma"])
    max_epochs, batch_size = int(t["max_epochs"]), int(t["batch_size"])
    common = dict(lr=float(p["lr"]), weight_decay=float(p["weight_decay"]), alpha=alpha,
                  gamma=gamma, batch_size=batch_size, device=device, progress=progress,
                  loop=t["loop"], lr_schedule=p["lr_schedule"])

    # standardisation and input encoding: once per fold for every model (models.genes.data)
    prep = prepare_fold(X_train, X_test, per=p["standardize"], n_classes=n_classes, device=device,
                        mode=t["input_mode"], cache_bytes=int(t["cache_bytes"]),
                        batch_size=batch_size, cache_dir=prep_cache_dir(t["prep_cache"]))
    stats, src_train, src_test = prep.stats, prep.train, prep.test
    info = {}
    topo = None
    # early stopping scores a held-out part of the training fold (never the test fold); the
    # standardisation stays that of the whole training fold
    src_fit, y_fit, stopper = src_train, y_train, None
    if float(p["early_stopping"]) > 0:
        fit_rows, val_rows = inner_split(y_train, float(p["early_stopping"]), seed)
        src_fit, y_fit = RowSubset(src_train, fit_rows), y_train[fit_rows]
        stopper = EarlyStopper(RowSubset(src_train, val_rows), y_train[val_rows],
                               patience=int(p["patience"]))
    if registry.REGISTRY[model_type].members:
        members = _member_nets(n_genes, n_classes, gene_pathways, p, init_seed)
        net = BatchedEnsemble(members, dropout=float(p["dropout"]),
                              member_chunk=p["member_chunk"]).to(device)
        del members
        fit = train_net(net, src_fit, y_fit, max_epochs=max_epochs, seed=seed, stopper=stopper,
                        **common)
        info.update(n_members=net.n_members, n_edges=int(net.src.numel()),
                    n_pathway_neurons=int(net.neuron_b.numel()))
    else:
        topo, gg = build_topology(model_type, n_genes, gene_pathways, p)
        source = p["sparsity_source"] if topo is not None else "pathways"
        build = dict(hidden=int(p["hidden"]), dropout=float(p["dropout"]), gg_topo=gg,
                     dense_units=int(p["dense_units"]), init_seed=init_seed)
        if source == "l1":
            net, fit = _fit_l1(model_type, n_classes, n_genes, topo, build, src_fit, y_fit,
                               p, max_epochs, seed, common, stopper)
            topo = T.Topology(src=net.path.src.cpu().numpy(), dst=net.path.dst.cpu().numpy(),
                              n_src=n_genes, n_dst=net.path.n_out)
        else:
            net = GeneNet(model_type, n_classes, n_genes, topo=topo, **build).to(device)
            hooks = []
            if source == "rigl":
                steps = -(-src_fit.n // batch_size)
                rigl = RigL(net.path, total_steps=steps * max_epochs,
                            interval=int(p["rigl_interval"] or steps),
                            fraction=float(p["rigl_fraction"]), stop=float(p["rigl_stop"]))
                hooks.append(rigl)
            fit = train_net(net, src_fit, y_fit, max_epochs=max_epochs, seed=seed,
                            hooks=hooks, l1=float(p["gene_l1"]), l1_prox=bool(p["l1_prox"]),
                            l1_warmup=float(p["l1_warmup"]), stopper=stopper, **common)
            if source == "rigl":
                info.update(rigl_rewired=rigl.n_rewired, rigl_updates=rigl.n_updates)
        if topo is not None:
            info.update(n_pathway_neurons=int(topo.n_dst), n_edges=int(net.path.n_edges))
    logits = predict_logits(net, src_test)
    probs = torch.sigmoid(logits.double())
    proba = (probs.mean(dim=1) if probs.dim() == 2 else probs).numpy()
    info = {"n_parameters": n_trainable(net), "train_time_s": fit["train_time_s"],
            "epochs": fit["epochs"], "device": str(device), "focal_alpha": alpha,
            "input_mode": src_train.mode, "prep_s": prep.seconds, "prep_cache": prep.hit, **info}
    if stopper is not None:
        info.update(best_epoch=fit["best_epoch"], val_auc=fit["val_auc"],
                    val_auc_by_epoch=[round(a, 6) for a in stopper.history])
    if return_model:
        info.update(model=net, standardiser=stats)
        if probs.dim() == 2:
            info["member_proba"] = probs.numpy()
    return proba, info


def _fit_l1(model_type, n_classes, n_genes, topo, build, src_train, y_train, p, max_epochs, seed,
            common, stopper=None):
    """L1 source: dense gene -> neuron layer under an L1 penalty, prune to the pathway graph's
    edge count, then train the sparse net (weights carried over) for the remaining epochs."""
    device = common["device"]
    ep_a = max(1, int(round(float(p["l1_epochs_fraction"]) * max_epochs)))
    ep_b = max(0, max_epochs - ep_a)
    act = "identity" if HEADS[model_type].linear else "tanh"
    dense = GeneNet("dense", n_classes, n_genes, **dict(build, dense_units=topo.n_dst),
                    hidden_act=act).to(device)
    fit_a = train_net(dense, src_train, y_train, max_epochs=ep_a, seed=seed,
                      l1=float(p["l1"]), **common)
    pruned = prune_dense_to_sparse(dense.hidden.weight, topo.n_edges)
    net = GeneNet(model_type, n_classes, n_genes, topo=pruned, **build).to(device)
    with torch.no_grad():
        net.gene.load_state_dict(dense.gene.state_dict())
        W = dense.hidden.weight
        net.path.weight.copy_(W[net.path.dst, net.path.src])
        net.path.bias.copy_(dense.hidden.bias)
        net.out.weight.copy_(dense.out.weight)
        net.out.bias.copy_(dense.out.bias)
    fit_b = train_net(net, src_train, y_train, max_epochs=ep_b, seed=seed + 1, stopper=stopper,
                      **common)
    fit = {**fit_b, "epochs": fit_a["epochs"] + fit_b["epochs"],
           "train_time_s": fit_a["train_time_s"] + fit_b["train_time_s"]}
    if stopper is not None and ep_b == 0:      # no sparse epochs: the pruned net, scored once
        stopper.epoch_end(net)
        fit.update(best_epoch=fit_a["epochs"], val_auc=float(stopper.best))
    elif "best_epoch" in fit:
        fit["best_epoch"] += fit_a["epochs"]
    return net, fit
