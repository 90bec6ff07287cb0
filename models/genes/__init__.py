"""Gene-centric sparse networks (torch + Lightning).

Entry point for the pipeline: :func:`fit_predict` (one training fold -> test probabilities).
``MODEL_TYPES`` lists the gene-network types of ``models.registry``; ``DEFAULT_PARAMS`` (read
from the registry's schema) / ``DEFAULT_TRAIN`` the accepted settings.
"""
from models.genes.training import (DEFAULT_PARAMS, DEFAULT_TRAIN, MODEL_TYPES, activations_for,
                                   fit_predict, focal_bce, gene_activations)

__all__ = ["MODEL_TYPES", "DEFAULT_PARAMS", "DEFAULT_TRAIN", "fit_predict", "focal_bce",
           "gene_activations", "activations_for"]
