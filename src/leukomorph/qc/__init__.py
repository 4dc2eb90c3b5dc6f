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

:func:`blank_reason` is a model-free check for crops that show nothing: a uniform image (a failed
crop of an analyser, an empty or fully transparent file) has almost no spread of grey levels,
while every stained cell has a dark nucleus on pale background. Such a crop is not classified
(the model would still name a class, e.g. "platelet" with confidence 0.88 for a uniform grey
image) but skipped with the reason, like an unreadable file.

Pure: arrays in, numbers and dataclasses out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BLANK_SPREAD", "QualityGate", "blank_reason", "grey_spread", "model_quality_gate", "sharpness"]

#: grey-level spread (99th − 1st percentile, 0–255) below which a crop shows no cell; the lowest
#: among all 24,666 crops of pbc and deepapl is 73, of seg_wbc's 350 is 119, of the 1,165 white
#: cells of txl_pbc's four cameras cut from their fields 61 (``benchmarks/quality.py --blank``)
BLANK_SPREAD = 16.0


def sharpness(rgb: np.ndarray, size: int) -> float:
    """Variance of the Laplacian of the grey levels of ``rgb`` prepared as a ``size`` px model input."""
    from ..classify.preprocess import prepare_crop

    g = cv2.cvtColor(prepare_crop(rgb, size), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


def grey_spread(rgb: np.ndarray) -> float:
    """99th minus 1st percentile of the grey levels (0–255, whole levels): how much contrast the
    image has. From the histogram, so it costs a few microseconds per crop."""
    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    cdf = np.cumsum(cv2.calcHist([g], [0], None, [256], [0, 256]).ravel())
    lo, hi = np.searchsorted(cdf, [0.01 * cdf[-1], 0.99 * cdf[-1]])
    return float(hi - lo)


def blank_reason(rgb: np.ndarray) -> str | None:
    """Why ``rgb`` cannot be a cell crop (a uniform image), or None when it has contrast enough."""
    s = grey_spread(rgb)
    if s < BLANK_SPREAD:
        return f"no cell visible: a uniform image (grey levels spread {s:.0f} < {BLANK_SPREAD:g} of 255)"
    return None


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

    @classmethod
    def from_dict(cls, d: dict | None) -> QualityGate | None:
        """The gate :meth:`to_dict` wrote (a run's ``results.json``), or None where none was set."""
        if not d or "sharpness_gate" not in d:
            return None
        return cls(float(d["sharpness_gate"]), int(d.get("input_size") or 0), str(d.get("fitted", "")))


def model_quality_gate(model) -> QualityGate | None:
    """The gate in the cell model's card (``inference.quality``), or None when it sets none."""
    card = getattr(model, "card", None)
    q = (card.raw.get("inference", {}) if card is not None else {}).get("quality") or {}
    if "sharpness_gate" not in q or card is None or not card.input_size:
        return None
    return QualityGate(
        float(q["sharpness_gate"]), int(card.input_size), f"{q.get('quantile', '?')}th percentile, label-free"
    )
