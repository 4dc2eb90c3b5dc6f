"""Pure classification core: prepared uint8 crops and a model in, probability records out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..records import CellPrediction
from .preprocess import prepare_crop

__all__ = ["LOW_CONFIDENCE", "Classifier", "classify_crops", "needs_review"]

#: Cells whose top probability is below this are listed for review in the report.
LOW_CONFIDENCE = 0.6


class Classifier(Protocol):
    classes: tuple[str, ...]
    input_size: int

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


def classify_crops(
    model: Classifier, crops: Sequence[np.ndarray], sources: Sequence[str], batch_size: int = 128
) -> list[CellPrediction]:
    """Classify RGB uint8 crops (any size; the model's crop rule is applied here)."""
    out: list[CellPrediction] = []
    for start in range(0, len(crops), batch_size):
        batch = np.stack([prepare_crop(c, model.input_size) for c in crops[start : start + batch_size]])
        probs = model.predict(batch)
        for src, p in zip(sources[start : start + batch_size], probs, strict=True):
            out.append(CellPrediction(src, tuple(float(v) for v in p), tuple(model.classes)))
    return out


def needs_review(pred: CellPrediction, threshold: float = LOW_CONFIDENCE) -> bool:
    return pred.confidence < threshold
