"""Gene-centric sparse networks (torch + Lightning).

Entry point for the pipeline: :func:`fit_predict` (one training fold -> test probabilities).
"""
from models.genes.training import (DEFAULT_PARAMS, DEFAULT_TRAIN, MODEL_TYPES, fit_predict,
                                   focal_bce)

__all__ = ["MODEL_TYPES", "DEFAULT_PARAMS", "DEFAULT_TRAIN", "fit_predict", "focal_bce"]
