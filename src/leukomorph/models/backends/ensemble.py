"""Soft-voting ensemble of registered cell classifiers (weighted mean of their probabilities).

Each member is loaded and sha256-checked through the registry like any model. Members may expect
different input sizes: crops are prepared once at the largest size and shrunk (area
interpolation) for the others.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...errors import ModelError

__all__ = ["EnsembleClassifier"]


class EnsembleClassifier:
    def __init__(self, card, members: list, weights: list[float]) -> None:
        if not members:
            raise ModelError(f"{card.name}: an ensemble needs at least one member")
        classes = {tuple(m.classes) for m in members}
        if len(classes) != 1 or tuple(card.classes) not in classes:
            raise ModelError(f"{card.name}: ensemble members disagree on the class list")
        self.card = card
        self.members = members
        w = np.asarray(weights, float)
        self.weights = w / w.sum()
        self.classes = card.classes
        self.input_size = max(m.input_size for m in members)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3) or batch.dtype != np.uint8:
            raise ModelError(
                f"{self.card.name}: expected uint8 batch (N, {self.input_size}, {self.input_size}, 3), "
                f"got {batch.dtype} {batch.shape}"
            )
        out = np.zeros((len(batch), len(self.classes)), np.float32)
        for m, w in zip(self.members, self.weights, strict=True):
            b = batch
            if m.input_size != self.input_size:
                s = m.input_size
                b = (
                    np.stack([cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA) for x in batch])
                    if len(batch)
                    else (np.zeros((0, s, s, 3), np.uint8))
                )
            out += w * m.predict(b)
        return out
