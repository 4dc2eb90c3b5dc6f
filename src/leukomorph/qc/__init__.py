"""Image quality control of the cells a model classifies: is there the detail the model expects?

:func:`sharpness` is the variance of the Laplacian of the crop's grey levels *as the model sees
it* (the crop rule of :func:`leukomorph.classify.prepare_crop` at the model's input size), so an
out-of-focus image and a low-resolution one blown up to the input size both score low. The gate
is a property of the model, fitted on its own training crops (label-free:
:func:`leukomorph.evaluation.calibrate.fit_sharpness_gate`) and stored in its card under
``inference.quality``: a crop below it is noted ("blurred or low resolution", in cells.csv, the
report and results.json), never dropped, and not sent to review on that ground alone (the
shipped model keeps its accuracy on blurred crops of its own laboratories:
``benchmarks/quality.py``). A model card without a gate gets no check, and the outputs say so.

Pure: arrays in, numbers and dataclasses out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["QualityGate", "model_quality_gate", "sharpness"]


def sharpness(rgb: np.ndarray, size: int) -> float:
    """Variance of the Laplacian of the grey levels of ``rgb`` prepared as a ``size`` px model input."""
    from ..classify.preprocess import prepare_crop

    g = cv2.cvtColor(prepare_crop(rgb, size), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


@dataclass(frozen=True)
class QualityGate:
    """Sharpness below ``sharpness_gate`` (at ``size`` px): blurred or low resolution for this model."""

    sharpness_gate: float
    size: int
    source: str

    def low(self, value: float) -> bool:
        return value < self.sharpness_gate

    def reason(self, value: float) -> str:
        return (
            f"blurred or low resolution: sharpness {value:.0f} < {self.sharpness_gate:g} "
            f"(the model's training crops' {self.source})"
        )

    def to_dict(self) -> dict:
        return {"sharpness_gate": self.sharpness_gate, "input_size": self.size, "fitted": self.source}


def model_quality_gate(model) -> QualityGate | None:
    """The gate in the cell model's card (``inference.quality``), or None when it sets none."""
    card = getattr(model, "card", None)
    q = (card.raw.get("inference", {}) if card is not None else {}).get("quality") or {}
    if "sharpness_gate" not in q or card is None or not card.input_size:
        return None
    return QualityGate(
        float(q["sharpness_gate"]), int(card.input_size), f"{q.get('quantile', '?')}th percentile, label-free"
    )
