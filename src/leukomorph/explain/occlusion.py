"""Occlusion saliency (Zeiler & Fergus 2014): how much the predicted class's probability drops when
a patch of the crop is covered. Model-agnostic: only forward passes, so it works for the shipped
ONNX model without torch. Cost: ``grid²`` forward passes per cell, batched.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..classify.preprocess import prepare_crop
from ..imageops import border_median

__all__ = ["occlusion_map", "overlay"]


def occlusion_map(model, crop: np.ndarray, class_index: int | None = None, grid: int = 8) -> np.ndarray:
    """Saliency in [0, 1] at the model's input size (S, S): drop of p(class) per occluded patch.

    The patch (side ``2 * S / grid``, stride ``S / grid``) is filled with the median colour of the
    crop's border (slide background). ``class_index`` defaults to the predicted class.
    """
    x = prepare_crop(crop, model.input_size)
    s = model.input_size
    base = model.predict(x[None])[0]
    k = int(np.argmax(base)) if class_index is None else class_index
    fill = border_median(x).astype(np.uint8)
    step, size = s / grid, 2 * s / grid
    views, boxes = [], []
    for i in range(grid):
        for j in range(grid):
            y0, x0 = int(i * step + step / 2 - size / 2), int(j * step + step / 2 - size / 2)
            y0c, x0c, y1c, x1c = max(0, y0), max(0, x0), min(s, int(y0 + size)), min(s, int(x0 + size))
            v = x.copy()
            v[y0c:y1c, x0c:x1c] = fill
            views.append(v)
            boxes.append((y0c, x0c, y1c, x1c))
    probs = model.predict(np.stack(views))[:, k]
    heat = np.zeros((s, s), np.float32)
    hits = np.zeros((s, s), np.float32)
    for (y0, x0, y1, x1), p in zip(boxes, probs, strict=True):
        heat[y0:y1, x0:x1] += max(0.0, float(base[k] - p))
        hits[y0:y1, x0:x1] += 1
    heat /= np.maximum(hits, 1)
    return heat / heat.max() if heat.max() > 0 else heat


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The model-input view of the crop with the saliency as a colour map on top (RGB uint8)."""
    x = prepare_crop(crop, heat.shape[0])
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(x, 1 - alpha, colour, alpha, 0)
