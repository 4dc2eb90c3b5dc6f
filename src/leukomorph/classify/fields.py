"""Field-level classification: ALL subtype (B-lineage) of a smear field from its white cells.

Features of one field (:func:`field_features`): the cell classifier's embeddings of the white
cells the detector found (mean and max over cells), their mean class probabilities, the
embedding of the whole field, and log(1 + number of white cells). A multinomial logistic
regression (numpy at inference) gives the probabilities of the four aria_all classes. A Ledoit-Wolf
Mahalanobis distance on a PCA projection of the standardised features says whether a field
resembles the training fields; unlike fields are scored but flagged "not applicable".

The model card names the cell classifier and the detector it was fitted with (sha256): a
mismatch is refused ("not computed"), never silently scored.

Colour-shortcut control: aria_all fields carry a scale bar in the lower-right corner whose colour
differs between classes, and the classes differ in brightness; the corner is blanked
(:func:`blank_scale_bar`) before anything is computed, here and in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ALL_SUBTYPES",
    "FIELD_FEATURES",
    "FieldModel",
    "blank_scale_bar",
    "field_features",
    "load_field_model",
]

#: feature-set tag a field model's card must name (what :func:`field_features` computes)
FIELD_FEATURES = "field_features_v1"

#: aria_all labels → names used in outputs
ALL_SUBTYPES = {
    "Benign": "benign_hematogones",
    "Early": "early_pre_b_all",
    "Pre": "pre_b_all",
    "Pro": "pro_b_all",
}


def blank_scale_bar(rgb: np.ndarray, frac_w: float = 0.2, frac_h: float = 0.15) -> np.ndarray:
    """Copy of ``rgb`` with the lower-right corner set to the field's median colour."""
    out = rgb.copy()
    h, w = out.shape[:2]
    out[int(h * (1 - frac_h)) :, int(w * (1 - frac_w)) :] = np.median(out.reshape(-1, 3), 0).astype(out.dtype)
    return out


def field_features(cell_model, rgb: np.ndarray, boxes: Sequence, crop) -> np.ndarray:
    """Feature vector of one field. ``boxes``: white-cell detections; ``crop(rgb, box)``: the
    pipeline's field crop rule. Uses the cell model without test-time augmentation."""
    from . import classify_crops

    rgb = blank_scale_bar(rgb)
    cells = [crop(rgb, b) for b in boxes]
    preds = classify_crops(
        cell_model, [*cells, rgb], [str(i) for i in range(len(cells) + 1)], tta="none", embeddings=True
    )
    whole = preds[-1].embedding
    if cells:
        e = np.stack([p.embedding for p in preds[:-1]])
        pr = np.array([p.probabilities for p in preds[:-1]])
        pooled = np.r_[e.mean(0), e.max(0), pr.mean(0)]
    else:  # no white cell found: the whole field stands in for its cells
        pooled = np.r_[whole, whole, np.asarray(preds[-1].probabilities)]
    return np.r_[pooled, whole, np.log1p(len(cells))].astype(np.float64)


@dataclass(frozen=True)
class FieldModel:
    name: str
    version: str
    classes: tuple[str, ...]
    params: dict[str, np.ndarray]
    depends_on: dict[str, dict[str, str]]
    ood_threshold: float
    card_path: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) for feature rows ``x`` (N, D)."""
        z = (np.atleast_2d(x) - self.params["mean"]) / self.params["scale"]
        logit = z @ self.params["coef"].T + self.params["intercept"]
        p = np.exp(logit - logit.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row in the PCA space of the training fields."""
        z = (np.atleast_2d(x) - self.params["mean"]) / self.params["scale"]
        u = (z - self.params["pca_mean"]) @ self.params["pca_components"].T - self.params["location"]
        return np.einsum("ni,ij,nj->n", u, self.params["precision"], u)

    def compatible(self, cell_card, detector_card, white_cell_threshold: float | None = None) -> str | None:
        """None when fitted with these models (and the detector's white-cell operating threshold),
        else the reason it cannot be applied."""
        want_c = self.depends_on.get("cell_model", {})
        want_d = self.depends_on.get("detector", {})
        if cell_card is None or cell_card.sha256 != want_c.get("sha256"):
            got = f"{cell_card.name} {cell_card.sha256[:12]}" if cell_card is not None else "an uncarded model"
            fitted = f"{want_c.get('name')} {want_c.get('sha256', '')[:12]}"
            return f"not computed: {self.name} was fitted on cell model {fitted}, this run used {got}"
        if detector_card is None or detector_card.sha256 != want_d.get("sha256"):
            got = (
                f"{detector_card.name} {detector_card.sha256[:12]}"
                if detector_card is not None
                else "the classical detector"
            )
            fitted = f"{want_d.get('name')} {want_d.get('sha256', '')[:12]}"
            return f"not computed: {self.name} was fitted with detector {fitted}, this run used {got}"
        want_t = want_d.get("white_cell_threshold")
        if want_t is not None and (white_cell_threshold is None or abs(white_cell_threshold - want_t) > 1e-9):
            return (
                f"not computed: {self.name} was fitted with white-cell threshold {want_t}, "
                f"this run used {white_cell_threshold}"
            )
        return None


def load_field_model(name_or_path: str) -> FieldModel:
    from ..errors import ModelError
    from ..models.registry import get_card, load_params

    card = get_card(name_or_path)
    params = load_params(card, "field-classification", "a field classifier")
    if card.input.get("features") != FIELD_FEATURES:
        raise ModelError(f"{card.card_path}: unsupported feature set {card.input.get('features')!r}")
    need = {"mean", "scale", "coef", "intercept", "pca_mean", "pca_components", "location", "precision"}
    if not need <= set(params):
        raise ModelError(f"{card.weights_path}: field model parameters lack {sorted(need - set(params))}")
    return FieldModel(
        name=card.name,
        version=card.version,
        classes=card.classes,
        params=params,
        depends_on=card.raw.get("depends_on", {}),
        ood_threshold=float(card.raw.get("applicability", {}).get("distance_threshold", np.inf)),
        card_path=card.card_path,
        raw=card.raw,
    )
