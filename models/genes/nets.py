"""The gene-network zoo as plain ``torch.nn`` modules (training lives in ``training.py``).

Every net reads a standardised batch of shape (B, C*G) whose column ``c*G + g`` is class ``c``
of gene ``g``, runs the shared gene module to get one neuron per gene, then a head:

- ``logreg``: gene neurons -> output (additive in genes).
- ``biosparse``: each gene -> one pathway neuron (random among its pathways; dummy neuron for
  genes without one), tanh, pathway neurons -> output.
- ``linear``: the biosparse graph with identity activations everywhere (gene module included),
  so the output is an affine function of the input.
- ``multipathway``: every gene-pathway membership is an edge.
- ``genegene_pathway``: gene -> gene layer (self + interaction partners), tanh, then
  gene -> pathway (all memberships), tanh, output.
- ``dense``: gene neurons -> fully connected hidden layer (``dense_units``), tanh, output.

Each head is a :class:`Head` in :data:`HEADS`; its flags (sparse gene layer, rewirable, all
pathway memberships) are in its ``models.registry`` entry. A new head: one Head subclass here,
one registry entry, one params.yaml entry.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models import registry
from models.genes import topology as T
from models.genes.data import ComboBatch, GeneBatch
from models.genes.layers import DenseLinear, GeneModule, SparseLinear, activation
from models.registry import SPARSITY_SOURCES

# single-net heads (the gene nets of the registry but the ensemble, which batches biosparse nets)
NET_TYPES = tuple(t for t in registry.gene_net_types() if t != "ensemble")


class Head:
    """What a net type puts after the gene module. Subclasses build their layers in
    :meth:`build` (in a fixed order: the init generator draws in that order) and count their
    parameters in :meth:`n_parameters`; the registry entry of the same name holds the flags
    (sparse, rewirable, all_pathways). A new head: one subclass here + one registry entry."""
    linear = False          # identity activations everywhere

    def build(self, net, n_genes, topo, gg_topo, dense_units, gen) -> None:
        raise NotImplementedError

    def layer(self, net):
        """The gene -> neuron layer (None: gene neurons go straight to the output)."""
        return net.path

    def n_parameters(self, n_genes, dense_units, n_edges, n_neurons, n_gg_edges) -> int:
        return n_edges + n_neurons + n_neurons + 1


class LogregHead(Head):
    def build(self, net, n_genes, topo, gg_topo, dense_units, gen):
        net.out = DenseLinear(n_genes, 1, gen=gen)

    def layer(self, net):
        return None

    def n_parameters(self, n_genes, dense_units, n_edges, n_neurons, n_gg_edges):
        return n_genes + 1


class DenseHead(Head):
    def build(self, net, n_genes, topo, gg_topo, dense_units, gen):
        net.hidden = DenseLinear(n_genes, dense_units, gen=gen)
        net.out = DenseLinear(dense_units, 1, gen=gen)

    def layer(self, net):
        return net.hidden

    def n_parameters(self, n_genes, dense_units, n_edges, n_neurons, n_gg_edges):
        return n_genes * dense_units + dense_units + dense_units + 1


class PathwayHead(Head):
    """gene -> pathway sparse layer (one or all memberships per gene), tanh, output."""

    def build(self, net, n_genes, topo, gg_topo, dense_units, gen):
        if topo is None:
            raise ValueError(f"model type '{net.model_type}' needs a gene -> pathway topology")
        net.path = SparseLinear(topo, gen=gen)
        net.out = DenseLinear(topo.n_dst, 1, gen=gen)


class LinearHead(PathwayHead):
    linear = True


class GeneGenePathwayHead(PathwayHead):
    def build(self, net, n_genes, topo, gg_topo, dense_units, gen):
        if topo is None:
            raise ValueError(f"model type '{net.model_type}' needs a gene -> pathway topology")
        if gg_topo is None:
            raise ValueError("genegene_pathway needs a gene -> gene topology")
        net.gg = SparseLinear(gg_topo, gen=gen)
        super().build(net, n_genes, topo, gg_topo, dense_units, gen)

    def n_parameters(self, n_genes, dense_units, n_edges, n_neurons, n_gg_edges):
        return super().n_parameters(n_genes, dense_units, n_edges, n_neurons, n_gg_edges) + n_gg_edges + n_genes


HEADS: dict[str, Head] = {"logreg": LogregHead(), "biosparse": PathwayHead(), "linear": LinearHead(),
                          "multipathway": PathwayHead(), "genegene_pathway": GeneGenePathwayHead(),
                          "dense": DenseHead()}
assert set(HEADS) == set(NET_TYPES), "every single-net type of the registry needs a head"


class GeneNet(nn.Module):
    def __init__(self, model_type: str, n_classes: int, n_genes: int, *, hidden: int = 50,
                 dropout: float = 0.0, topo: T.Topology | None = None,
                 gg_topo: T.Topology | None = None, dense_units: int = 64,
                 init_seed: int = 0, hidden_act: str | None = None):
        super().__init__()
        if model_type not in HEADS:
            raise ValueError(f"unknown net type '{model_type}'; valid: {', '.join(HEADS)}")
        self.model_type = model_type
        self.n_classes, self.n_genes = int(n_classes), int(n_genes)
        gen = torch.Generator().manual_seed(int(init_seed))
        self._head = HEADS[model_type]
        lin = self._head.linear
        self.gene = GeneModule(n_classes, hidden, "identity" if lin else "tanh", gen=gen)
        self.act = activation(hidden_act or ("identity" if lin else "tanh"))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.gg = None
        self.path = None
        self.hidden = None
        self._head.build(self, n_genes, topo, gg_topo, dense_units, gen)

    def gene_activations(self, x: torch.Tensor | GeneBatch | ComboBatch) -> torch.Tensor:
        """Gene neuron outputs (B, G) for a standardised batch (B, C*G) or a GeneBatch."""
        if isinstance(x, ComboBatch):
            return self.gene.forward_combos(x)
        if isinstance(x, GeneBatch):
            return self.gene.forward_pairs(x)
        return self.gene(x.view(x.shape[0], self.n_classes, self.n_genes))

    def layer_input(self, x) -> torch.Tensor:
        """Input of the gene -> neuron layer (path or hidden): gene neurons after dropout, and
        after the gene -> gene layer where there is one."""
        g = self.drop(self.gene_activations(x))
        if self.gg is not None:
            g = self.drop(self.act(self.gg(g)))
        return g

    def head(self, pre: torch.Tensor) -> torch.Tensor:
        """Logits from the pre-activations of the gene -> neuron layer."""
        return self.out(self.drop(self.act(pre))).squeeze(1)

    def forward(self, x) -> torch.Tensor:
        g = self.layer_input(x)
        layer = self._head.layer(self)
        if layer is None:
            return self.out(g).squeeze(1)
        return self.head(layer(g))

    def l1_weight(self) -> torch.Tensor:
        """The gene -> neuron weights (logreg: the gene -> output weights) ``gene_l1`` acts on."""
        return (self._head.layer(self) or self.out).weight

    def l1_penalty(self) -> torch.Tensor:
        """Sum of |w| over the gene -> neuron layer (the L1 sparsity source's penalty)."""
        return self.l1_weight().abs().sum()


def n_trainable(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def build_topology(model_type: str, n_genes: int, gene_pathways: Sequence[Sequence[int]] | None,
                   params: dict) -> tuple[T.Topology | None, T.Topology | None]:
    """(gene -> pathway topology, gene -> gene topology) for ``model_type`` and ``params``.

    params used: pathway_seed, sparsity (fraction of genes connected), sparsity_source
    (pathways | random | rigl | l1: random, rigl and l1 keep the pathway graph's edge and neuron
    counts; rigl starts from the random graph and rewires it during training, l1 finds its
    edges by pruning a dense L1-penalised layer), gene_gene_edges (for genegene_pathway).
    """
    seed = int(params.get("pathway_seed", 0))
    sparsity = float(params.get("sparsity", 1.0))
    source = params.get("sparsity_source", "pathways")
    if source not in SPARSITY_SOURCES:
        raise ValueError(f"unknown sparsity_source '{source}'; valid: {', '.join(SPARSITY_SOURCES)}")
    flags = registry.REGISTRY[model_type]
    if source in ("rigl", "l1") and not flags.rewirable:
        raise ValueError(f"sparsity_source '{source}' applies to {', '.join(registry.rewirable_heads())}, "
                         f"not '{model_type}'")
    if not flags.sparse:
        if source != "pathways" or sparsity != 1.0:
            raise ValueError(f"'{model_type}' has no sparse gene layer: sparsity_source and "
                             f"sparsity apply to {', '.join(registry.sparse_heads())}")
        return None, None
    if gene_pathways is None:
        # no gene sets: every gene on the dummy neuron (a valid, if uninformative, graph)
        gene_pathways = [[] for _ in range(n_genes)]
    T._check_gene_pathways(gene_pathways, n_genes)
    if registry.REGISTRY[model_type].all_pathways:
        topo = T.all_pathways(gene_pathways, seed=seed, sparsity=sparsity)
    else:
        topo = T.one_pathway(gene_pathways, seed=seed, sparsity=sparsity)
    if source != "pathways":
        topo = T.random_like(topo, seed=seed + 7919)
    gg = None
    if isinstance(HEADS[model_type], GeneGenePathwayHead):
        gg = T.gene_gene(n_genes, params.get("gene_gene_edges"))
    return topo, gg


def closed_form_n_parameters(model_type: str, n_classes: int, n_genes: int, hidden: int = 50, *,
                             n_edges: int = 0, n_neurons: int = 0, n_gg_edges: int = 0,
                             dense_units: int = 64) -> int:
    """The parameter count of each net type as a formula (the tests check the modules against it)."""
    gene = n_classes * hidden + hidden + hidden + 1
    return gene + HEADS[model_type].n_parameters(n_genes, dense_units, n_edges, n_neurons, n_gg_edges)


