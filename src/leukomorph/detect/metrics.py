"""Detection metrics: IoU and VOC-style average precision (all-point interpolation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["average_precision", "iou"]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(
    detections: Sequence[tuple[str, Sequence[float], float]],
    truths: dict[str, list[Sequence[float]]],
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """AP over images. ``detections``: (image id, box, score); ``truths``: image id → boxes."""
    n_true = sum(len(v) for v in truths.values())
    used = {k: np.zeros(len(v), bool) for k, v in truths.items()}
    tp = []
    for img, box, _ in sorted(detections, key=lambda d: -d[2]):
        gts = truths.get(img, [])
        best, j = 0.0, -1
        for k, g in enumerate(gts):
            o = iou(box, g)
            if o > best:
                best, j = o, k
        if best >= iou_threshold and not used[img][j]:
            used[img][j] = True
            tp.append(1)
        else:
            tp.append(0)
    tp_a = np.array(tp, float)
    if n_true == 0:
        return {"ap": float("nan"), "n_true": 0, "n_det": len(tp)}
    ctp = np.cumsum(tp_a)
    recall = ctp / n_true
    precision = ctp / np.arange(1, len(tp_a) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    ap = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    return {
        "ap": ap,
        "n_true": int(n_true),
        "n_det": len(tp),
        "recall_max": float(recall[-1]) if len(recall) else 0.0,
    }
