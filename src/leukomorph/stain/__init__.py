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

__all__ = [
    "LEUKOMORPH_REFERENCE",
    "STAIN_MODES",
    "LabStats",
    "background_chroma",
    "case_lab_stats",
    "lab_stats",
    "normalise",
    "reinhard",
]

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


def background_chroma(images, quantile: float = 0.9) -> tuple[float, float]:
    """The colour of a case's slide background: per image, the median a*, b* of its brightest pixels
    (L* at or above the image's ``quantile``), then the median over the images.

    The background is where a stain or camera shows most plainly (CellaVision's pinkish grey, a
    yellow cast, a white mask); unlike whole-crop statistics it barely moves with magnification."""
    per = []
    for im in images:
        lab = _lab(im).reshape(-1, 3)
        bright = lab[lab[:, 0] >= np.quantile(lab[:, 0], quantile)]
        per.append(np.median(bright[:, 1:], axis=0))
    if not per:
        from ..errors import DataError

        raise DataError("no images to take the background colour from")
    a, b = np.median(np.array(per), axis=0)
    return float(a), float(b)


def case_lab_stats(images) -> LabStats:
    """Colour statistics pooled over the pixels of several RGB uint8 images (e.g. a case's crops).

    Per-crop statistics depend on what the crop shows (a large cell or much background); pooled
    over a case they describe its stain and camera, so one transform serves every crop of the case."""
    n, s1, s2 = 0, np.zeros(3), np.zeros(3)
    for im in images:
        lab = _lab(im).reshape(-1, 3).astype(np.float64)
        n += len(lab)
        s1 += lab.sum(0)
        s2 += (lab**2).sum(0)
    if n == 0:
        from ..errors import DataError

        raise DataError("no images to take colour statistics from")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    return LabStats(tuple(mean.tolist()), tuple(std.tolist()))  # type: ignore[arg-type]


def reinhard(rgb: np.ndarray, reference: LabStats = LEUKOMORPH_REFERENCE, source: LabStats | None = None) -> np.ndarray:
    """Reinhard colour transfer of an RGB uint8 image to ``reference``; returns RGB uint8.

    ``source``: the statistics to map from (e.g. :func:`case_lab_stats` of the image's case);
    None: the image's own."""
    lab = _lab(rgb)
    if source is None:
        src = lab.reshape(-1, 3)
        mu, sd = src.mean(0), np.maximum(src.std(0), 1e-3)
    else:
        mu, sd = np.asarray(source.mean, np.float32), np.maximum(np.asarray(source.std, np.float32), 1e-3)
    out = (lab - mu) / sd * np.asarray(reference.std, np.float32) + np.asarray(reference.mean, np.float32)
    rgb_f = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb_f * 255.0 + 0.5, 0, 255).astype(np.uint8)


def normalise(
    rgb: np.ndarray, mode: str, reference: LabStats = LEUKOMORPH_REFERENCE, source: LabStats | None = None
) -> np.ndarray:
    """``mode`` "none" or "reinhard" (from ``source``, e.g. a case's pooled statistics, else the image's own)."""
    if mode == "none":
        return rgb
    if mode == "reinhard":
        return reinhard(rgb, reference, source)
    from ..errors import ConfigError

    raise ConfigError(f"unknown stain mode {mode!r}; choose one of {', '.join(STAIN_MODES)}")
