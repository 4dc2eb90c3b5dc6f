"""Small array helpers shared by stages (no I/O, no models)."""

from __future__ import annotations

import numpy as np

__all__ = ["border_fill", "border_median"]


def border_median(a: np.ndarray) -> np.ndarray:
    """Per-channel median of the outermost rows and columns: the slide background around a cell or field."""
    return np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]), axis=0)


def border_fill(rgb: np.ndarray) -> tuple[int, ...]:
    """:func:`border_median` as integers, the fill value OpenCV's constant borders expect."""
    return tuple(int(v) for v in border_median(rgb))
