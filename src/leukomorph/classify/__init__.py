"""Per-cell classification: the shared crop rule, batched prediction, review flags."""

from .conformal import ConformalCalibration, calibrate, coverage, prediction_sets
from .core import (
    LOW_CONFIDENCE,
    TTA_MODES,
    check_tta,
    classify_crops,
    model_conformal,
    model_confusion,
    needs_review,
    predict_tta,
    recommended_tta,
    stain_reference,
)
from .preprocess import prepare_crop, zoom_crop

__all__ = [
    "ConformalCalibration",
    "calibrate",
    "coverage",
    "model_confusion",
    "model_conformal",
    "prediction_sets",
    "stain_reference",
    "LOW_CONFIDENCE",
    "TTA_MODES",
    "check_tta",
    "classify_crops",
    "needs_review",
    "predict_tta",
    "prepare_crop",
    "zoom_crop",
    "recommended_tta",
]
