"""Per-cell classification: the shared crop rule, batched prediction, review flags."""

from .core import LOW_CONFIDENCE, classify_crops, needs_review
from .preprocess import prepare_crop

__all__ = ["LOW_CONFIDENCE", "classify_crops", "needs_review", "prepare_crop"]
