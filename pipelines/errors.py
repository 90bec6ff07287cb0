"""User-facing errors (defined in :mod:`models.errors`, shared by cores and pipelines)."""
from models.errors import EpiflowError, InputError

__all__ = ["EpiflowError", "InputError"]
