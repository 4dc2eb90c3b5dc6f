"""Segmentation metrics on label images (0 background, 1 cytoplasm, 2 nucleus)."""

from __future__ import annotations

import numpy as np

__all__ = ["dice", "dice_scores"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of the nucleus (label 2), the whole cell (label > 0) and the cytoplasm (label 1)."""
    return {
        "nucleus": dice(pred == 2, truth == 2),
        "cell": dice(pred > 0, truth > 0),
        "cytoplasm": dice(pred == 1, truth == 1),
    }
