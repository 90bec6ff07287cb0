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

from models.genes.data import ShuffledBatches, Standardiser, as_csr, make_source
from models.genes.nets import NET_TYPES, GeneNet, build_topology, n_trainable

MODEL_TYPES: tuple[str, ...] = NET_TYPES

DEFAULT_PARAMS = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "dropout": 0.0,
    "hidden": 50,
    "focal_gamma": 2.0,
    "focal_alpha": None,      # None: fraction of controls in the training fold
    "pathway_seed": 0,
    "sparsity": 1.0,
    "sparsity_source": "pathways",
    "dense_units": 64,
    "init_seed": None,        # None: train seed
}
DEFAULT_TRAIN = {"max_epochs": 30, "batch_size": 128, "seed": 0, "device": "auto",
                 "input_mode": "auto", "cache_bytes": 1 << 30, "num_threads": 1}


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


def check_model_type(model_type: str, valid: Sequence[str] = MODEL_TYPES) -> None:
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


def _lightning_module(net, *, lr, weight_decay, alpha, gamma, l1=0.0, on_step=None):
    import lightning.pytorch as pl

    class LitGeneNet(pl.LightningModule):
        """Focal-BCE training of any net whose forward returns logits (B,) or (B, N members)."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            if logits.dim() == 2:   # batched ensemble: members are independent; sum their losses
                yy = y[:, None].expand_as(logits)
                loss = focal_bce(logits, yy, alpha, gamma) * logits.shape[1]
            else:
                loss = focal_bce(logits, y, alpha, gamma)
            if l1 > 0:
                loss = loss + l1 * self.net.l1_penalty()
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if on_step is not None:
                on_step(self, batch)

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    return LitGeneNet()


def train_net(net: torch.nn.Module, source, y: np.ndarray, *, lr: float,
              weight_decay: float, alpha: float, gamma: float, max_epochs: int, batch_size: int,
              seed: int, device: torch.device, progress: bool = False, l1: float = 0.0,
              on_step=None) -> dict:
    """Train ``net`` in place with Lightning; returns {'epochs', 'train_time_s'}."""
    import lightning.pytorch as pl

    batches = ShuffledBatches(source, y, batch_size, seed)
    lit = _lightning_module(net, lr=lr, weight_decay=weight_decay, alpha=alpha, gamma=gamma,
                            l1=l1, on_step=on_step)
    t0 = time.perf_counter()
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
            max_epochs=int(max_epochs), logger=False, enable_checkpointing=False,
            enable_progress_bar=bool(progress), enable_model_summary=bool(progress),
            num_sanity_val_steps=0, limit_val_batches=0, deterministic=False,
            default_root_dir=None)
        trainer.fit(lit, train_dataloaders=batches)
    return {"epochs": int(trainer.current_epoch), "train_time_s": time.perf_counter() - t0}


@torch.no_grad()
def predict_proba(net: torch.nn.Module, source, batch_size: int = 512) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, source.n, batch_size):
        idx = torch.arange(i, min(i + batch_size, source.n))
        out.append(torch.sigmoid(net(source(idx))).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.empty(0)


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
    info: n_parameters (trainable), train_time_s, epochs, device, plus n_pathway_neurons and
    n_edges for sparse heads; with ``return_model`` also 'model' (the trained net) and
    'standardiser'.
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
    n_genes = X_train.shape[1] // n_classes
    device = resolve_device(t["device"])
    seed = int(t["seed"])
    threads_before = torch.get_num_threads()
    if t["num_threads"]:
        # batch-128 ops are small: one intra-op thread avoids OpenMP spin-wait stalls when other
        # processes share the cores (measured: 2 threads ran 7-10x slower under load).
        torch.set_num_threads(int(t["num_threads"]))
    try:
        return _fit_predict(model_type, X_train, y_train, X_test, n_classes=n_classes,
                            gene_pathways=gene_pathways, p=p, t=t, seed=seed, device=device,
                            n_genes=n_genes, progress=progress, return_model=return_model)
    finally:
        torch.set_num_threads(threads_before)


def _fit_predict(model_type, X_train, y_train, X_test, *, n_classes, gene_pathways, p, t, seed,
                 device, n_genes, progress, return_model):
    torch.manual_seed(seed)
    init_seed = seed if p["init_seed"] is None else int(p["init_seed"])

    alpha = p["focal_alpha"]
    if alpha is None:
        alpha = float(1.0 - y_train.mean())       # fraction of controls
    topo, gg = build_topology(model_type, n_genes, gene_pathways, p)
    net = GeneNet(model_type, n_classes, n_genes, hidden=int(p["hidden"]),
                  dropout=float(p["dropout"]), topo=topo, gg_topo=gg,
                  dense_units=int(p["dense_units"]), init_seed=init_seed).to(device)

    stats = Standardiser(X_train)
    src_train = make_source(X_train, stats, n_classes, device, mode=t["input_mode"],
                            cache_bytes=int(t["cache_bytes"]), batch_size=int(t["batch_size"]))
    fit = train_net(net, src_train, y_train, lr=float(p["lr"]),
                    weight_decay=float(p["weight_decay"]), alpha=alpha,
                    gamma=float(p["focal_gamma"]), max_epochs=int(t["max_epochs"]),
                    batch_size=int(t["batch_size"]), seed=seed, device=device, progress=progress)
    proba = predict_proba(net, make_source(X_test, stats, n_classes, device,
                                           mode=src_train.mode, cache_bytes=0))
    info = {"n_parameters": n_trainable(net), "train_time_s": fit["train_time_s"],
            "epochs": fit["epochs"], "device": str(device), "focal_alpha": alpha,
            "input_mode": src_train.mode}
    if topo is not None:
        info["n_pathway_neurons"] = int(topo.n_dst)
        info["n_edges"] = int(topo.n_edges)
    if return_model:
        info["model"] = net
        info["standardiser"] = stats
    return proba, info
