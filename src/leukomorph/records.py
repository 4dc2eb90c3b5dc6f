"""Frozen dataclasses passed between pipeline stages. Pure data: no I/O, no behaviour beyond
small derived properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

__all__ = [
    "CellPrediction",
    "ClassCount",
    "Differential",
    "Image",
    "LabelledImage",
    "Skipped",
    "Suggestion",
]


@dataclass(frozen=True)
class Image:
    """An RGB uint8 image (H, W, 3) with where it came from and its pixel size when known."""

    pixels: np.ndarray
    source: str
    sha256: str = ""
    pixel_size_um: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


@dataclass(frozen=True)
class Skipped:
    """An input that could not be used, with the reason."""

    source: str
    reason: str


@dataclass(frozen=True)
class LabelledImage:
    """One labelled crop from a data set: classes is one class, or several for a partial label."""

    path: str
    classes: tuple[str, ...]
    dataset: str
    source_label: str
    patient_id: str | None = None
    diagnosis: str | None = None

    @property
    def exact(self) -> bool:
        return len(self.classes) == 1


@dataclass(frozen=True)
class CellPrediction:
    """Classifier output for one cell."""

    source: str
    probabilities: tuple[float, ...]
    classes: tuple[str, ...]
    #: conformal prediction set (class names, most probable first); empty when the model has no
    #: conformal calibration
    prediction_set: tuple[str, ...] = ()
    #: pooled pre-head features (float32), only when requested from a model that exports them
    embedding: np.ndarray | None = field(default=None, compare=False, hash=False, repr=False)

    @cached_property  # computed once: the rules and reports ask for it many times per cell
    def index(self) -> int:
        p = self.probabilities  # the first of equal maxima, as numpy's argmax (without its conversion)
        return max(range(len(p)), key=p.__getitem__)

    @property
    def predicted_class(self) -> str:
        return self.classes[self.index]

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.index])


@dataclass(frozen=True)
class ClassCount:
    name: str
    count: int
    percent: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Differential:
    """Cell counts with 95% confidence intervals (percent of the white-cell denominator)."""

    counts: tuple[ClassCount, ...]
    total_cells: int
    wbc_denominator: int
    blast_count: int
    blast_percent: float
    blast_ci: tuple[float, float]
    method: str = "Wilson score interval, 95%"
    #: the same differential corrected for the model's held-out confusion
    #: (:class:`leukomorph.aggregate.correction.CorrectedDifferential` as a dict), when computed
    corrected: dict[str, Any] | None = None
    #: cells a reviewer excluded as artefacts (:data:`leukomorph.taxonomy.ARTEFACT`): in no count
    excluded: int = 0


@dataclass(frozen=True)
class Suggestion:
    """Patient-level decision-support suggestion with the rule that fired and its evidence."""

    code: str
    text: str
    rule: str
    urgent: bool
    evidence: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
