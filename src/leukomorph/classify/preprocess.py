"""The crop rule shared by training and inference (one function, so they cannot drift apart)."""

from __future__ import annotations

import cv2
import numpy as np

from ..imageops import border_fill

__all__ = ["prepare_crop", "zoom_crop"]


def prepare_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size``×``size`` (area interpolation when shrinking).

    Input and output are RGB uint8 arrays (H, W, 3).
    """
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    sq = rgb[top : top + s, left : left + s]
    if s == size:
        return np.ascontiguousarray(sq)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(sq), (size, size), interpolation=interp)


def zoom_crop(rgb: np.ndarray, zoom: float) -> np.ndarray:
    """Change the apparent magnification of a crop by ``zoom`` about its centre, keeping its size.

    ``zoom < 1`` shrinks the content and pads with the median colour of the crop's border (the
    slide background around the cell); ``zoom > 1`` keeps the central 1/zoom of the crop.
    """
    if not np.isfinite(zoom) or zoom <= 0:
        raise ValueError(f"zoom must be a positive number, got {zoom}")
    if abs(zoom - 1.0) < 1e-3:
        return rgb
    h, w = rgb.shape[:2]
    if zoom > 1:
        ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
        top, left = (h - ch) // 2, (w - cw) // 2
        return np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
    fill = border_fill(rgb)
    ph, pw = round(h / zoom), round(w / zoom)
    top, left = (ph - h) // 2, (pw - w) // 2
    return cv2.copyMakeBorder(rgb, top, ph - h - top, left, pw - w - left, cv2.BORDER_CONSTANT, value=fill)
