"""Stain handling: colour statistics and Reinhard normalisation (pure functions on RGB uint8 arrays).

Reinhard et al. (2001) match the per-channel mean and standard deviation of an image in CIE L*a*b*
to those of a reference. The reference shipped here (:data:`LEUKOMORPH_REFERENCE`) is the mean of
the per-crop statistics over the default classifier's training crops (PBC + DeepAPL, CellaVision
DM96, May-Grünwald-Giemsa/Wright-Giemsa); a model card may carry its own under
``inference.stain.reference``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["LEUKOMORPH_REFERENCE", "STAIN_MODES", "LabStats", "lab_stats", "normalise", "reinhard"]

#: "none": pixels as given; "reinhard": Reinhard normalisation to the model's reference.
STAIN_MODES = ("none", "reinhard")


@dataclass(frozen=True)
class LabStats:
    """Per-channel mean and standard deviation in OpenCV's float L*a*b* (L 0-100, a/b about -127..127)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> LabStats:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))  # type: ignore[arg-type]


#: Measured with ``python benchmarks/stain_reference.py`` (3,000 random leukomorph-cell training crops, seed 0).
LEUKOMORPH_REFERENCE = LabStats(mean=(77.36, 12.01, 5.75), std=(17.22, 9.60, 14.32))


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def lab_stats(rgb: np.ndarray) -> LabStats:
    """Colour statistics of one RGB uint8 image."""
    lab = _lab(rgb).reshape(-1, 3)
    return LabStats(tuple(lab.mean(0).tolist()), tuple(lab.std(0).tolist()))  # type: ignore[arg-type]


def reinhard(rgb: np.ndarray, reference: LabStats = LEUKOMORPH_REFERENCE) -> np.ndarray:
    """Reinhard colour transfer of an RGB uint8 image to ``reference``; returns RGB uint8."""
    lab = _lab(rgb)
    src = lab.reshape(-1, 3)
    mu, sd = src.mean(0), np.maximum(src.std(0), 1e-3)
    out = (lab - mu) / sd * np.asarray(reference.std, np.float32) + np.asarray(reference.mean, np.float32)
    rgb_f = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb_f * 255.0 + 0.5, 0, 255).astype(np.uint8)


def normalise(rgb: np.ndarray, mode: str, reference: LabStats = LEUKOMORPH_REFERENCE) -> np.ndarray:
    if mode == "none":
        return rgb
    if mode == "reinhard":
        return reinhard(rgb, reference)
    from ..errors import ConfigError

    raise ConfigError(f"unknown stain mode {mode!r}; choose one of {', '.join(STAIN_MODES)}")
