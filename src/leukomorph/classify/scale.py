"""Cell-scale normalisation: bring a case's crops to the magnification the model was trained at.

Two label-free estimators of a case's zoom:

- :func:`search_zoom` (used by ``analyze --cell-scale auto``, the default): the zoom at which the
  classifier is most certain about the case, over a grid of zooms on a sample of the case's crops.
  A camera at another magnification makes every cell look unfamiliar and the prediction entropy
  high; at the right zoom the cells look like the training cells again. The score is information
  maximisation (mean entropy of the cells' predictions minus the entropy of their mean): plain
  entropy minimisation picked zooms where the model calls every cell the same class. The search
  runs only when the case's mean entropy at the native scale is above what held-out patients of
  the training sites reach (:data:`AUTO_ENTROPY_GATE`), and a zoom replaces 1 only when it lowers
  the score by a clear margin (:data:`AUTO_MARGIN`). Checked on DeepAPL test patients re-imaged
  at ×2 and ×0.6 (``benchmarks/cell_scale.py``).
- :func:`classify_unfamiliar`: for a case the default model finds unfamiliar *and* whose slide
  background has another colour than the training sites' (:func:`stain_shift`: another stain or
  camera, not only another magnification), a second model trained for other stains and cameras
  (named by the default card's ``inference.unfamiliar``) classifies it after a case-level
  Reinhard colour transfer and its own zoom search.
- :func:`case_zoom`: the equivalent diameter of each crop's central nucleus over the crop side
  (:func:`leukomorph.segment.nucleus_size_fraction`), median over the case, mapped to the model's
  reference median. Confounded by the cell mix (blasts have large nuclei), so it is kept as a
  baseline only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..records import CellPrediction
from ..segment import nucleus_size_fraction
from ..stain import LabStats, background_chroma, case_lab_stats
from .core import _card_inference, classify_crops, model_conformal, recommended_tta, stain_reference

__all__ = [
    "AUTO_ENTROPY_GATE",
    "AUTO_GATE_MARGIN",
    "AUTO_ZOOMS",
    "REFERENCE_NUCLEUS_FRACTION",
    "ZoomChoice",
    "case_zoom",
    "StainShift",
    "classify_unfamiliar",
    "even_sample",
    "mean_entropy",
    "model_entropy_gate",
    "model_nucleus_fraction",
    "route_unfamiliar",
    "search_zoom",
    "stain_shift",
    "unfamiliar_fallback",
]

#: Zooms tried by :func:`search_zoom` (apparent magnification relative to the crops as given).
AUTO_ZOOMS = (0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.45, 1.75)

#: Mean prediction entropy (nats) above which a case is searched for a better zoom, for a card
#: that sets none: the validation split's DeepAPL patients reach at most 0.94 with leukomorph-cell
#: 2.0.0 and 0.98 with 2.1.0, PBC 100-cell pseudo-cases at most 0.41 (the 17 test patients: at
#: most 0.99). Cards set their own (``inference.scale.auto_entropy_gate``, from
#: :func:`leukomorph.evaluation.calibrate.fit_entropy_gate`): 2.2.0, run on single views, 1.2.
AUTO_ENTROPY_GATE = 1.1

#: The gate sits this far above the highest per-patient mean entropy of the validation patients.
AUTO_GATE_MARGIN = 0.12

#: A zoom other than 1 must lower the sample's score by at least this fraction of its value at zoom 1.
AUTO_MARGIN = 0.1


@dataclass(frozen=True)
class ZoomChoice:
    """Outcome of the cell-scale search of one case."""

    zoom: float
    mean_entropy: float
    gate: float
    searched: bool
    n_sample: int = 0
    #: per zoom tried: mean entropy of the cells minus entropy of their mean (lower is better)
    score_by_zoom: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "mode": "auto",
            "zoom": self.zoom,
            "mean_entropy": round(self.mean_entropy, 4),
            "gate": self.gate,
            "searched": self.searched,
            "n_sample": self.n_sample,
            "score_by_zoom": {str(z): round(h, 4) for z, h in self.score_by_zoom.items()},
            "score": "mean entropy of the cells' predictions minus the entropy of their mean (lower: more certain)",
        }


def mean_entropy(probs: np.ndarray) -> float:
    """Mean Shannon entropy (nats) of the rows of a probability matrix."""
    p = np.clip(np.asarray(probs, float), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum(axis=1).mean())


def even_sample(n: int, k: int) -> np.ndarray:
    """Indices of an evenly spaced sample of at most ``k`` of ``n`` items (sorted, no repeats)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


def _card_scale(model, key: str):
    """``inference.scale.<key>`` of the model's card, or None."""
    return (_card_inference(model, "scale") or {}).get(key)


def model_entropy_gate(model) -> float:
    val = _card_scale(model, "auto_entropy_gate")
    return float(val) if val else AUTO_ENTROPY_GATE


def search_zoom(
    model,
    crops: Sequence[np.ndarray],
    native_entropy: float,
    zooms: Sequence[float] = AUTO_ZOOMS,
    sample: int = 64,
    tta: str = "none",
    gate: float | None = None,
    margin: float = AUTO_MARGIN,
    stain: str = "none",
    stain_source: LabStats | None = None,
) -> ZoomChoice:
    """Choose a case's zoom by information maximisation over ``zooms`` (see the module docstring).

    ``native_entropy`` is the case's mean entropy at zoom 1 (from its ordinary classification);
    below the gate nothing is searched and the zoom stays 1. ``crops``: the case's crops (an evenly
    spaced sample of ``sample`` of them is used). ``stain``/``stain_source``: colour handling as in
    :func:`~leukomorph.classify.classify_crops`.
    """
    gate = model_entropy_gate(model) if gate is None else gate
    if native_entropy <= gate or not len(crops):
        return ZoomChoice(1.0, native_entropy, gate, False)
    picked = [crops[i] for i in even_sample(len(crops), sample)]
    score = {}
    for z in sorted({float(z) for z in zooms} | {1.0}):  # the native scale is always a candidate
        got = classify_crops(model, picked, [""] * len(picked), tta=tta, zoom=z, stain=stain, stain_source=stain_source)
        probs = np.array([p.probabilities for p in got])
        # information maximisation: certain about each cell, but not by calling every cell the same
        # class (at extreme zooms a model tends to collapse onto one class with low entropy)
        score[float(z)] = mean_entropy(probs) - mean_entropy(probs.mean(axis=0, keepdims=True))
    best = min(score, key=lambda z: (score[z], abs(np.log(z))))
    zoom = best if score[best] < score[1.0] - margin * abs(score[1.0]) else 1.0
    return ZoomChoice(zoom, native_entropy, gate, True, len(picked), score)


def unfamiliar_fallback(model) -> str | None:
    """The registry name (or card path) of the model the card names for unfamiliar cases
    (``inference.unfamiliar.model``), or None."""
    return (_card_inference(model, "unfamiliar") or {}).get("model")


@dataclass(frozen=True)
class StainShift:
    """How far a case's slide background is from the training sites' (CIE a*b* units)."""

    distance: float
    gate: float
    background_chroma: tuple[float, float]

    @property
    def shifted(self) -> bool:
        return self.distance > self.gate

    def to_dict(self) -> dict:
        return {
            "background_chroma": [round(v, 2) for v in self.background_chroma],
            "distance": round(self.distance, 2),
            "gate": self.gate,
            "shifted": self.shifted,
        }


def stain_shift(model, crops: Sequence[np.ndarray], sample: int = 256) -> StainShift | None:
    """The distance of the case's background colour (:func:`~leukomorph.stain.background_chroma`
    of an evenly spaced sample of ``sample`` crops) from the reference in the card's
    ``inference.unfamiliar`` (``background_chroma``, with its ``colour_gate``); None when the card
    sets none."""
    d = _card_inference(model, "unfamiliar") or {}
    if "background_chroma" not in d or "colour_gate" not in d or not len(crops):
        return None
    a, b = background_chroma([crops[i] for i in even_sample(len(crops), sample)])
    ra, rb = (float(v) for v in d["background_chroma"])
    return StainShift(float(np.hypot(a - ra, b - rb)), float(d["colour_gate"]), (a, b))


def route_unfamiliar(
    model, crops: Sequence[np.ndarray], native_entropy: float, enabled: bool = True
) -> StainShift | None:
    """The routing rule of ``analyze --cell-scale auto``: for a case that is unfamiliar to ``model``
    (``native_entropy`` above its gate) when its card names a model for unfamiliar cases (and
    ``enabled``), the case's :func:`stain_shift`; None otherwise. The case goes to that model when
    the shift returned is ``.shifted``; else the model's own zoom search handles it."""
    if not enabled or not unfamiliar_fallback(model) or native_entropy <= model_entropy_gate(model):
        return None
    return stain_shift(model, crops)


def classify_unfamiliar(
    fallback,
    crops: Sequence[np.ndarray],
    sources: Sequence[str],
    primary_classes: Sequence[str],
    batch_size: int = 128,
    sample: int = 256,
    embeddings: bool = False,
) -> tuple[list[CellPrediction], dict]:
    """Classify a case that the default model found unfamiliar with ``fallback``, a model trained
    for other stains and cameras: the case's colour statistics (pooled over an evenly spaced
    sample of ``sample`` crops) are mapped to the fallback's stain reference (Reinhard, one
    transform for the whole case), then the fallback's zoom search runs (always: the case is
    already known to be unfamiliar) and the case is classified at the chosen zoom, with the
    fallback's own test-time augmentation and conformal sets. Returns the predictions and a record
    of what was done (for results.json and the report)."""
    card = getattr(fallback, "card", None)
    if list(fallback.classes) != list(primary_classes):
        raise ConfigError(
            f"model for unfamiliar cases {getattr(card, 'name', fallback)!r} has other classes than the default model"
        )
    stats = case_lab_stats([crops[i] for i in even_sample(len(crops), sample)])
    tta = recommended_tta(fallback)
    kw = dict(
        batch_size=batch_size,
        tta=tta,
        stain="reinhard",
        stain_source=stats,
        conformal=model_conformal(fallback),
        embeddings=embeddings,
    )
    preds = classify_crops(fallback, crops, sources, **kw)
    native = mean_entropy(np.array([p.probabilities for p in preds]))
    choice = search_zoom(fallback, crops, native, tta=tta, gate=0.0, stain="reinhard", stain_source=stats)
    if choice.zoom != 1.0:
        preds = classify_crops(fallback, crops, sources, zoom=choice.zoom, **kw)
    info = {
        "model": {
            "name": getattr(card, "name", type(fallback).__name__),
            "version": getattr(card, "version", ""),
            "sha256": getattr(card, "sha256", ""),
            "card": getattr(card, "card_path", ""),
        },
        "stain": "reinhard, one transform per case (colour statistics pooled over the case's crops)",
        "source_stats": stats.to_dict(),
        "reference": stain_reference(fallback).to_dict(),
        "tta": tta,
        **{k: v for k, v in choice.to_dict().items() if k != "mode"},
    }
    return preds, info


#: Median nucleus-size fraction of the default classifier's training crops (1,000 PBC crops: 0.335,
#: 1,000 DeepAPL crops: 0.468; the midpoint of the two medians).
REFERENCE_NUCLEUS_FRACTION = 0.40

#: Zooms outside this range are clipped (beyond it the crop no longer holds a usable cell).
ZOOM_RANGE = (0.4, 2.5)


def model_nucleus_fraction(model) -> float:
    val = _card_scale(model, "nucleus_fraction")
    return float(val) if val else REFERENCE_NUCLEUS_FRACTION


def case_zoom(
    crops: Sequence[np.ndarray], reference: float = REFERENCE_NUCLEUS_FRACTION, max_cells: int = 400
) -> float:
    """Zoom factor for a case: reference / median nucleus fraction of (up to ``max_cells``) crops.

    Returns 1.0 when no nucleus is found in any crop.
    """
    step = max(1, len(crops) // max_cells)
    fr = np.array([nucleus_size_fraction(c) for c in crops[::step]], float)
    fr = fr[np.isfinite(fr)]
    if fr.size == 0:
        return 1.0
    return float(np.clip(reference / np.median(fr), *ZOOM_RANGE))
