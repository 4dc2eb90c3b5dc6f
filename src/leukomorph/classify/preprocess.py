"""The crop rule shared by training and inference (one function, so they cannot drift apart)."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["prepare_crop"]


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
