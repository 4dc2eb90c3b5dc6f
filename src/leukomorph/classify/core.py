"""Pure classification core: prepared uint8 crops and a model in, probability records out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import ConfigError
from ..records import CellPrediction
from .preprocess import prepare_crop

__all__ = [
    "LOW_CONFIDENCE",
    "TTA_MODES",
    "Classifier",
    "check_tta",
    "classify_crops",
    "needs_review",
    "predict_tta",
    "recommended_tta",
]

#: Test-time augmentation: probabilities averaged over the dihedral transforms of each crop
#: (cells have no preferred orientation). "none": 1 pass, "flip": 2, "rot4": 4, "d4": 8.
TTA_MODES = ("none", "flip", "rot4", "d4")

#: Cells whose top probability is below this are listed for review in the report.
LOW_CONFIDENCE = 0.6


class Classifier(Protocol):
    classes: tuple[str, ...]
    input_size: int

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


def check_tta(tta: str) -> str:
    """Return ``tta`` if it is a known mode, else raise :class:`ConfigError`."""
    if tta not in TTA_MODES:
        raise ConfigError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_MODES)}")
    return tta


def _views(batch: np.ndarray, tta: str) -> list[np.ndarray]:
    if tta == "none":
        return [batch]
    if tta == "flip":
        return [batch, batch[:, :, ::-1]]
    if tta == "rot4":
        return [np.rot90(batch, k, axes=(1, 2)) for k in range(4)]
    check_tta(tta)  # d4
    return [np.rot90(b, k, axes=(1, 2)) for b in (batch, batch[:, :, ::-1]) for k in range(4)]


def predict_tta(model: Classifier, batch: np.ndarray, tta: str = "none") -> np.ndarray:
    """Mean class probabilities over the TTA views of a prepared uint8 batch (N, S, S, 3)."""
    views = _views(batch, tta)
    # one model call per view keeps peak memory at that of a plain batch
    return np.mean([model.predict(np.ascontiguousarray(v)) for v in views], axis=0)


def recommended_tta(model: Classifier) -> str:
    """The test-time augmentation the model's card recommends ("none" without a card)."""
    card = getattr(model, "card", None)
    return (card.raw.get("inference", {}).get("tta") if card is not None else None) or "none"


def classify_crops(
    model: Classifier, crops: Sequence[np.ndarray], sources: Sequence[str], batch_size: int = 128, tta: str = "none"
) -> list[CellPrediction]:
    """Classify RGB uint8 crops (any size; the model's crop rule is applied here)."""
    out: list[CellPrediction] = []
    for start in range(0, len(crops), batch_size):
        batch = np.stack([prepare_crop(c, model.input_size) for c in crops[start : start + batch_size]])
        probs = predict_tta(model, batch, tta)
        for src, p in zip(sources[start : start + batch_size], probs, strict=True):
            out.append(CellPrediction(src, tuple(float(v) for v in p), tuple(model.classes)))
    return out


def needs_review(pred: CellPrediction, threshold: float = LOW_CONFIDENCE) -> bool:
    return pred.confidence < threshold
