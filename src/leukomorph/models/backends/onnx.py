"""ONNX Runtime backend: uint8 NHWC crops in, class probabilities out. No torch needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ModelError
from ...onnxrt import cpu_session, run

__all__ = ["OnnxClassifier"]


class OnnxClassifier:
    def __init__(self, card, weights: Path, threads: int | None = None) -> None:
        self.session = cpu_session(weights, threads, "model")
        self.card = card
        self.classes = card.classes
        self.input_size = card.input_size
        self._input = self.session.get_inputs()[0].name
        outs = [o.name for o in self.session.get_outputs()]
        self._probs = outs[0]
        self.has_embedding = "embedding" in outs

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """batch: uint8 (N, S, S, 3) prepared crops → float32 (N, n_classes) probabilities."""
        self._check(batch)
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return run(self.session, [self._probs], {self._input: batch})[0]

    def predict_with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and the pooled pre-head features (models exported with an embedding output)."""
        if not self.has_embedding:
            raise ModelError(f"{self.card.name}: this model was exported without an embedding output")
        self._check(batch)
        probs, emb = run(self.session, [self._probs, "embedding"], {self._input: batch})
        return probs, emb

    def _check(self, batch: np.ndarray) -> None:
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3) or batch.dtype != np.uint8:
            raise ModelError(
                f"{self.card.name}: expected uint8 batch (N, {self.input_size}, {self.input_size}, 3), "
                f"got {batch.dtype} {batch.shape}"
            )
