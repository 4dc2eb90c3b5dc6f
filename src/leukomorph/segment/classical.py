"""Classical nucleus segmentation for Romanowsky-stained crops.

Nuclei are the most blue-violet structures of a May-Grünwald-Giemsa / Wright smear: their blue
channel exceeds the green one far more than in red cells, plasma or background. Otsu's threshold
on a smoothed ``B - G`` image, followed by a small opening, gives the nucleus (and any other
strongly basophilic object); the component(s) nearest the crop centre are kept.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..imageops import border_median

__all__ = ["cell_mask", "classical_labels", "nucleus_mask", "nucleus_size_fraction"]

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
    th = _split_nucleus_from_cytoplasm(rgb, th)
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


#: grey-level gap between the dark and light parts of the first mask above which the light part is
#: cytoplasm (basophilic cytoplasm passes the B - G threshold with the nucleus)
SPLIT_GAP = 45


def _split_nucleus_from_cytoplasm(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Second level: inside the blue-violet mask, keep the darker Otsu class if it is clearly darker."""
    inside = mask > 0
    if inside.sum() < 50:
        return mask
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    vals = grey[inside].reshape(-1, 1)
    t, _ = cv2.threshold(vals, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark, light = vals[vals <= t], vals[vals > t]
    if dark.size == 0 or light.size == 0 or float(light.mean() - dark.mean()) < SPLIT_GAP:
        return mask
    out = (inside & (grey <= t)).astype(np.uint8) * 255
    k = max(1, min(rgb.shape[:2]) // 60) * 2 + 1
    return cv2.morphologyEx(out, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def nucleus_size_fraction(rgb: np.ndarray) -> float:
    """Equivalent diameter of the central nucleus divided by the crop's shorter side (NaN if none)."""
    m = nucleus_mask(rgb)
    area = float(m.sum())
    if area == 0:
        return float("nan")
    return float(np.sqrt(4 * area / np.pi) / min(rgb.shape[:2]))


def cell_mask(rgb: np.ndarray, nucleus: np.ndarray | None = None) -> np.ndarray:
    """Boolean whole-cell mask: pixels whose L*a*b* colour differs from the crop border's (slide
    background and red cells) by more than Otsu's threshold, opened to cut thin bridges to touching
    red cells, keeping the components that hold the nucleus, holes filled."""
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    nuc = nucleus_mask(rgb) if nucleus is None else nucleus
    if not nuc.any():
        return nuc
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    dist = np.linalg.norm(lab - border_median(lab), axis=2)
    d8 = np.clip(dist * 255 / max(float(dist.max()), 1.0), 0, 255).astype(np.uint8)
    # threshold among non-nuclear pixels only: the nucleus would otherwise take the "foreground" side
    t, _ = cv2.threshold(d8[~nuc].reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = (d8 > t).astype(np.uint8)
    k = max(3, min(h, w) // 25) | 1
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    fg |= nuc.astype(np.uint8)
    _, comp = cv2.connectedComponents(fg)
    ids = np.unique(comp[nuc])
    m = np.isin(comp, ids[ids > 0]).astype(np.uint8)
    cnts, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(m)
    cv2.drawContours(out, cnts, -1, 1, -1)
    return out.astype(bool)


def classical_labels(rgb: np.ndarray) -> np.ndarray:
    """Label image of a crop's central white cell: 0 background, 1 cytoplasm, 2 nucleus."""
    nuc = nucleus_mask(rgb)
    cell = cell_mask(rgb, nuc) | nuc
    return np.where(nuc, 2, np.where(cell, 1, 0)).astype(np.uint8)
