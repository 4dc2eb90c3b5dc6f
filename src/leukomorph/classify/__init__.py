"""Per-cell classification: the shared crop rule, batched prediction, review flags."""

from .core import LOW_CONFIDENCE, TTA_MODES, check_tta, classify_crops, needs_review, predict_tta, recommended_tta
from .preprocess import prepare_crop

__all__ = [
    "LOW_CONFIDENCE",
    "TTA_MODES",
    "check_tta",
    "classify_crops",
    "needs_review",
    "predict_tta",
    "prepare_crop",
    "recommended_tta",
]
