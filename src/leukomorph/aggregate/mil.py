"""Attention-based multiple-instance learning (gated attention, Ilse et al. 2018) over cell
embeddings, evaluated with numpy (no torch at inference).

A case is a bag of cells; each cell's embedding e (the cell classifier's pooled features) is
mapped to h = ReLU(W e + b); attention a = w · (tanh(V h + v) ⊙ sigmoid(U h + u)); the case
vector is Σ softmax(a)_i h_i and the score σ(c · z + c0). The attention weights name the cells
the score rests on (SCEMILA / Sidhom et al. use the same idea).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MIL_FEATURES", "MilCaseModel", "mil_forward"]

MIL_FEATURES = "cell_embedding_mil_v1"
PARAM_NAMES = ("W", "b", "V", "v", "U", "u", "w", "c", "c0")


def mil_forward(params: dict[str, np.ndarray], emb: np.ndarray, calibrated: bool = True) -> tuple[float, np.ndarray]:
    """(probability, attention weights) for one bag of embeddings (N, D); ``calibrated=False``
    skips the Platt recalibration (the raw score that an ensemble averages)."""
    e = np.asarray(emb, np.float64)
    h = np.maximum(e @ params["W"].T + params["b"], 0)
    gate = np.tanh(h @ params["V"].T + params["v"]) * (1 / (1 + np.exp(-(h @ params["U"].T + params["u"]))))
    a = gate @ params["w"]
    a = np.exp(a - a.max())
    a /= a.sum()
    z = a @ h
    logit = float(z @ params["c"] + params["c0"])
    if calibrated and "platt_a" in params:  # recalibration to the training cohort's prevalence
        logit = float(params["platt_a"]) * logit + float(params["platt_b"])
    return float(1 / (1 + np.exp(-logit))), a


@dataclass(frozen=True)
class MilCaseModel:
    name: str
    version: str
    target: str
    positive: str
    params: dict[str, np.ndarray]
    depends_on: dict[str, str]
    card_path: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: applicability check on the probability features (see case_model.case_distance)
    feat_mean: np.ndarray | None = None
    feat_scale: np.ndarray | None = None
    ood_location: np.ndarray | None = None
    ood_precision: np.ndarray | None = None
    ood_threshold: float = float("inf")
    needs_embeddings: bool = True

    def distance(self, probs: np.ndarray) -> float:
        from .case_model import case_distance

        return case_distance(probs, self.feat_mean, self.feat_scale, self.ood_location, self.ood_precision)

    def predict(self, emb: np.ndarray) -> float:
        return mil_forward(self.params, emb)[0]

    def attention(self, emb: np.ndarray) -> np.ndarray:
        return mil_forward(self.params, emb)[1]

    def predict_interval(self, emb: np.ndarray, n_boot: int = 100, seed: int = 0) -> tuple[float, float]:
        """95% interval over bootstrap resamples of the case's cells (counting noise only)."""
        emb = np.asarray(emb)
        rng = np.random.default_rng(seed)
        vals = [self.predict(emb[rng.integers(0, len(emb), len(emb))]) for _ in range(n_boot)]
        return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))

    def assess(self, probs: np.ndarray, emb: np.ndarray, n_evidence: int = 12) -> dict[str, Any]:
        """Score, its interval, the evidence cells (highest attention) and how they were chosen."""
        score, att = mil_forward(self.params, emb)  # one pass gives the score and the attention
        return {
            "score": score,
            "ci95": self.predict_interval(emb),
            "evidence": [int(i) for i in np.argsort(-att)[:n_evidence]],
            "describe": {"evidence_method": "attention weights of the multiple-instance model", "top_features": []},
        }
