"""Split-conformal prediction sets (LAC / "least ambiguous set-valued classifier", Sadinle et al. 2019).

Calibration: on held-out cells with exact labels, score ``s = 1 - p(true class)``; the threshold
``qhat`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the scores. At inference a
cell's set is every class with ``p >= 1 - qhat`` (never empty: the top class is always in it).
With exchangeable calibration and test cells, the set contains the true class with probability at
least ``1 - alpha`` (marginal coverage: per class it can be lower, and a new laboratory is not
exchangeable with the calibration patients — coverage is re-measured on held-out patients and
reported in the model card).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["ConformalCalibration", "calibrate", "coverage", "prediction_sets"]


@dataclass(frozen=True)
class ConformalCalibration:
    alpha: float
    qhat: float
    n_calibration: int
    method: str = "lac"

    @property
    def threshold(self) -> float:
        """Minimum probability for a class to enter a prediction set."""
        return 1.0 - self.qhat

    def to_dict(self) -> dict:
        return {"method": self.method, "alpha": self.alpha, "qhat": self.qhat, "n_calibration": self.n_calibration}

    @classmethod
    def from_dict(cls, d: dict) -> ConformalCalibration:
        if d.get("method", "lac") != "lac":
            raise ConfigError(f"unsupported conformal method {d.get('method')!r} (only 'lac')")
        return cls(float(d["alpha"]), float(d["qhat"]), int(d["n_calibration"]), "lac")


def calibrate(probs: np.ndarray, y: np.ndarray, alpha: float = 0.1) -> ConformalCalibration:
    """Fit the LAC threshold on calibration probabilities (N, K) and true class indices (N,)."""
    probs, y = np.asarray(probs, float), np.asarray(y, int)
    n = len(y)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if n == 0 or math.ceil((n + 1) * (1 - alpha)) > n:
        raise ConfigError(f"{n} calibration cells are too few for alpha={alpha}")
    scores = 1.0 - probs[np.arange(n), y]
    level = math.ceil((n + 1) * (1 - alpha)) / n
    qhat = float(np.quantile(scores, level, method="higher"))
    return ConformalCalibration(alpha, qhat, n)


def prediction_sets(probs: np.ndarray, cal: ConformalCalibration) -> list[np.ndarray]:
    """Per row, the class indices in the set, most probable first."""
    probs = np.atleast_2d(np.asarray(probs, float))
    out = []
    for p in probs:
        order = np.argsort(-p)
        keep = order[p[order] >= cal.threshold]
        out.append(keep if keep.size else order[:1])
    return out


def coverage(probs: np.ndarray, y: np.ndarray, cal: ConformalCalibration) -> dict:
    """Empirical coverage and set-size summary on labelled cells."""
    sets = prediction_sets(probs, cal)
    y = np.asarray(y, int)
    hit = np.array([yi in s for yi, s in zip(y, sets, strict=True)])
    size = np.array([len(s) for s in sets])
    return {
        "nominal": 1 - cal.alpha,
        "coverage": float(hit.mean()) if len(y) else float("nan"),
        "mean_set_size": float(size.mean()) if len(y) else float("nan"),
        "share_singletons": float((size == 1).mean()) if len(y) else float("nan"),
        "n": int(len(y)),
    }
