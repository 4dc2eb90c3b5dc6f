"""Learned nucleus/cytoplasm segmentation through ONNX Runtime (no torch at inference)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from ..onnxrt import cpu_session, run

__all__ = ["OnnxSegmenter", "SEGMENT_BATCH"]

SEGMENT_BATCH = 16  # crops per segmentation call


class OnnxSegmenter:
    """Whole crop resized to ``size``×``size`` → per-pixel class → label image at the crop's size."""

    def __init__(self, session, size: int, card=None) -> None:
        self.session = session
        self.input_size = size
        self.card = card
        self._input = session.get_inputs()[0].name

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], size: int, card=None, threads: int | None = None):
        sess = cpu_session(path, threads, "segmentation model")
        return cls(sess, size, card)

    def probabilities(self, crops: list[np.ndarray], batch_size: int = SEGMENT_BATCH) -> np.ndarray:
        """Per-pixel class probabilities (N, classes, size, size), ``batch_size`` crops per model call:
        a U-Net keeps full-resolution feature maps, so memory grows with the batch (a field batch of
        a hundred cells in one call peaked at 1.6 GB)."""
        s = self.input_size
        if not crops:
            return np.zeros((0, 3, s, s), np.float32)
        out = []
        for i in range(0, len(crops), batch_size):
            batch = np.stack([cv2.resize(c, (s, s), interpolation=cv2.INTER_AREA) for c in crops[i : i + batch_size]])
            out.append(run(self.session, None, {self._input: batch})[0])
        return np.concatenate(out)

    def segment_many(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        if not crops:
            return []
        probs = self.probabilities(crops)
        out = []
        for c, p in zip(crops, probs, strict=True):
            h, w = c.shape[:2]
            up = cv2.resize(np.ascontiguousarray(p.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
            out.append(_keep_central_cell(up.argmax(2).astype(np.uint8)))
        return out

    def segment(self, crop: np.ndarray) -> np.ndarray:
        return self.segment_many([crop])[0]


def _keep_central_cell(lab: np.ndarray) -> np.ndarray:
    """Keep the foreground component nearest the centre (other cells at the crop edge are dropped)."""
    fg = (lab > 0).astype(np.uint8)
    n, comp, stats, cent = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 2:
        return lab
    h, w = lab.shape
    d = [((cent[i][0] - w / 2) ** 2 + (cent[i][1] - h / 2) ** 2) if i else np.inf for i in range(n)]
    keep = int(np.argmin(d))
    return np.where(comp == keep, lab, 0).astype(np.uint8)
