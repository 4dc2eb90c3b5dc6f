"""Pure classification core: prepared uint8 crops and a model in, probability records out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import ConfigError, ModelError
from ..records import CellPrediction
from ..stain import LEUKOMORPH_REFERENCE, LabStats, normalise
from .conformal import ConformalCalibration, prediction_sets
from .preprocess import prepare_crop, zoom_crop

__all__ = [
    "LOW_CONFIDENCE",
    "TTA_MODES",
    "Classifier",
    "check_tta",
    "classify_crops",
    "model_confusion",
    "model_conformal",
    "needs_review",
    "predict_tta",
    "recommended_tta",
    "stain_reference",
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


def sharpen(probs: np.ndarray, scale: float) -> np.ndarray:
    """Temperature-scale probabilities: ``p ** scale``, renormalised per row (scale > 1 sharpens)."""
    logp = scale * np.log(np.clip(probs, 1e-12, 1.0))
    logp -= logp.max(axis=-1, keepdims=True)
    q = np.exp(logp)
    return q / q.sum(axis=-1, keepdims=True)


def _tta_scale(model, tta: str) -> float | None:
    """The card's post-averaging temperature for this TTA mode (``inference.tta_temperature``).

    Averaging the views' probabilities softens them: the temperature baked into the graph was
    fitted on single views, so a card may carry a second one fitted on the averaged output.
    """
    d = _card_inference(model, "tta_temperature")
    return float(d["scale"]) if d and tta != "none" and d.get("tta") == tta else None


def predict_tta_embedding(model, batch: np.ndarray, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Mean probabilities and mean embeddings over the TTA views (models with an embedding output)."""
    outs = [model.predict_with_embedding(np.ascontiguousarray(v)) for v in _views(batch, tta)]
    probs = np.mean([o[0] for o in outs], axis=0)
    scale = _tta_scale(model, tta)
    return (probs if scale is None else sharpen(probs, scale)), np.mean([o[1] for o in outs], axis=0)


def predict_tta(model: Classifier, batch: np.ndarray, tta: str = "none") -> np.ndarray:
    """Mean class probabilities over the TTA views of a prepared uint8 batch (N, S, S, 3), with the
    card's post-averaging temperature for that mode where it has one."""
    views = _views(batch, tta)
    # one model call per view keeps peak memory at that of a plain batch
    probs = np.mean([model.predict(np.ascontiguousarray(v)) for v in views], axis=0)
    scale = _tta_scale(model, tta)
    return probs if scale is None else sharpen(probs, scale)


def recommended_tta(model: Classifier) -> str:
    """The test-time augmentation the model's card recommends ("none" without a card)."""
    card = getattr(model, "card", None)
    return (card.raw.get("inference", {}).get("tta") if card is not None else None) or "none"


def classify_crops(
    model: Classifier,
    crops: Sequence[np.ndarray],
    sources: Sequence[str],
    batch_size: int = 128,
    tta: str = "none",
    stain: str = "none",
    zoom: float = 1.0,
    conformal: ConformalCalibration | None = None,
    embeddings: bool = False,
    stain_source: LabStats | None = None,
) -> list[CellPrediction]:
    """Classify RGB uint8 crops (any size; the model's crop rule is applied here).

    ``zoom`` rescales every crop about its centre before the crop rule (see :func:`zoom_crop`;
    :func:`leukomorph.classify.scale.case_zoom` estimates it for a case); ``stain="reinhard"``
    normalises each prepared crop's colour to the model's stain reference (from ``stain_source``,
    e.g. the case's pooled :func:`~leukomorph.stain.case_lab_stats`, else each crop's own). With ``conformal``,
    each prediction carries its conformal prediction set. With ``embeddings`` (models exported with
    an embedding output) each prediction carries the cell's pooled features.
    """
    if embeddings and not getattr(model, "has_embedding", False):
        raise ConfigError(f"model {getattr(getattr(model, 'card', None), 'name', model)!r} has no embedding output")
    reference = stain_reference(model)
    out: list[CellPrediction] = []
    for start in range(0, len(crops), batch_size):
        batch = np.stack(
            [
                normalise(prepare_crop(zoom_crop(c, zoom), model.input_size), stain, reference, stain_source)
                for c in crops[start : start + batch_size]
            ]
        )
        if embeddings:
            probs, embs = predict_tta_embedding(model, batch, tta)
        else:
            probs, embs = predict_tta(model, batch, tta), [None] * len(batch)
        sets = prediction_sets(probs, conformal) if conformal is not None else [()] * len(probs)
        for src, p, s, e in zip(sources[start : start + batch_size], probs, sets, embs, strict=True):
            out.append(
                CellPrediction(
                    src,
                    tuple(float(v) for v in p),
                    tuple(model.classes),
                    tuple(model.classes[i] for i in s),
                    None if e is None else np.asarray(e, np.float32),
                )
            )
    return out


def _card_inference(model: Classifier, key: str):
    """``inference.<key>`` of the model's card, or None (no card, or nothing recorded)."""
    card = getattr(model, "card", None)
    return card.raw.get("inference", {}).get(key) if card is not None else None


def stain_reference(model: Classifier) -> LabStats:
    """The stain reference in the model's card (``inference.stain.reference``), else the package default."""
    ref = (_card_inference(model, "stain") or {}).get("reference")
    return LabStats.from_dict(ref) if ref else LEUKOMORPH_REFERENCE


def model_conformal(model: Classifier) -> ConformalCalibration | None:
    """The conformal calibration in the model's card (``inference.conformal``), or None."""
    d = _card_inference(model, "conformal")
    return ConformalCalibration.from_dict(d) if d else None


def model_confusion(model: Classifier) -> np.ndarray | None:
    """The held-out confusion counts in the model's card (``inference.confusion``, rows true,
    columns predicted, in the model's class order), or None."""
    d = _card_inference(model, "confusion")
    if not d:
        return None
    if tuple(d["classes"]) != tuple(model.classes):
        raise ModelError(f"model {model.card.name!r}: confusion matrix classes differ from the model's classes")
    return np.asarray(d["counts"], float)


def needs_review(pred: CellPrediction, threshold: float = LOW_CONFIDENCE) -> bool:
    """Review flag: the conformal set holds more than one class, or the top probability is below ``threshold``."""
    return len(pred.prediction_set) > 1 or pred.confidence < threshold
