"""Classical nucleus segmentation for Romanowsky-stained crops.

Nuclei are the most blue-violet structures of a May-Grünwald-Giemsa / Wright smear: their blue
channel exceeds the green one far more than in red cells, plasma or background. Otsu's threshold
on a smoothed ``B - G`` image, followed by a small opening, gives the nucleus (and any other
strongly basophilic object); the component(s) nearest the crop centre are kept.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["nucleus_mask", "nucleus_size_fraction"]

#: minimum spread of the B - G image (grey levels) for a nucleus to be looked for
MIN_CONTRAST = 12


def nucleus_mask(rgb: np.ndarray, keep: str = "central") -> np.ndarray:
    """Boolean nucleus mask of an RGB uint8 crop.

    ``keep="central"``: the connected component containing (or nearest to) the centre, plus any
    other component within a third of the crop side of it (lobes of one nucleus);
    ``keep="all"``: every component above 0.2% of the crop area.
    """
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    purple = rgb[..., 2].astype(np.int16) - rgb[..., 1].astype(np.int16)
    purple = cv2.GaussianBlur(np.clip(purple + 128, 0, 255).astype(np.uint8), (0, 0), max(1.0, min(h, w) / 150))
    lo, hi = np.percentile(purple, [5, 99.5])
    if hi - lo < MIN_CONTRAST:  # nothing stands out: no nucleus
        return np.zeros((h, w), bool)
    _, th = cv2.threshold(purple, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(1, min(h, w) // 60) * 2 + 1
    th = cv2.morphologyEx(th, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, lab, stats, cent = cv2.connectedComponentsWithStats(th, connectivity=8)
    min_area = 0.002 * h * w
    comps = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    if not comps:
        return np.zeros((h, w), bool)
    if keep == "all":
        return np.isin(lab, comps)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.nonzero(np.isin(lab, comps))
    d = (yy - cy) ** 2 + (xx - cx) ** 2
    seed = lab[yy[d.argmin()], xx[d.argmin()]]
    sy, sx = cent[seed][1], cent[seed][0]
    reach = min(h, w) / 3
    chosen = [i for i in comps if (cent[i][1] - sy) ** 2 + (cent[i][0] - sx) ** 2 <= reach**2]
    return np.isin(lab, chosen)


def nucleus_size_fraction(rgb: np.ndarray) -> float:
    """Equivalent diameter of the central nucleus divided by the crop's shorter side (NaN if none)."""
    m = nucleus_mask(rgb)
    area = float(m.sum())
    if area == 0:
        return float("nan")
    return float(np.sqrt(4 * area / np.pi) / min(rgb.shape[:2]))
