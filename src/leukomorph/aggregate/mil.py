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

__all__ = ["MIL_FEATURES", "MilCaseModel", "mil_cell_terms", "mil_forward", "mil_logit", "mil_probability"]

MIL_FEATURES = "cell_embedding_mil_v1"
PARAM_NAMES = ("W", "b", "V", "v", "U", "u", "w", "c", "c0")


def _members(params: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The networks of a parameter set: one, or K stacked on a leading member axis."""
    if np.ndim(params["W"]) == 3:
        return [{k: params[k][i] for k in PARAM_NAMES} for i in range(params["W"].shape[0])]
    return [params]


def mil_cell_terms(params: dict[str, np.ndarray], emb: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Per network: the per-cell terms (hidden features h (N, H), attention logits (N,)) and its
    output layer (c, c0). They do not depend on the rest of the bag, so a bootstrap over the
    case's cells only re-indexes them (:func:`mil_logit`)."""
    e = np.asarray(emb, np.float64)
    out = []
    for p in _members(params):
        h = np.maximum(e @ p["W"].T + p["b"], 0)
        gate = np.tanh(h @ p["V"].T + p["v"]) * (1 / (1 + np.exp(-(h @ p["U"].T + p["u"]))))
        out.append((h, gate @ p["w"], p["c"], p["c0"]))
    return out


def mil_logit(terms: list[tuple[np.ndarray, ...]], idx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(mean logit over the networks, mean attention weights) of the cells ``idx`` (default: all)."""
    logits, atts = [], []
    for h, a, c, c0 in terms:
        if idx is not None:
            h, a = h[idx], a[idx]
        w = np.exp(a - a.max())
        w /= w.sum()
        logits.append(float(w @ h @ c + c0))
        atts.append(w)
    return float(np.mean(logits)), np.mean(atts, axis=0)


def mil_probability(params: dict[str, np.ndarray], logit: float, calibrated: bool = True) -> float:
    """Sigmoid of a MIL logit, after the Platt recalibration when ``calibrated`` (and fitted)."""
    if calibrated and "platt_a" in params:  # recalibration to the training cohort's prevalence
        logit = float(params["platt_a"]) * logit + float(params["platt_b"])
    return float(1 / (1 + np.exp(-logit)))


def mil_forward(params: dict[str, np.ndarray], emb: np.ndarray, calibrated: bool = True) -> tuple[float, np.ndarray]:
    """(probability, attention weights) for one bag of embeddings (N, D); ``calibrated=False``
    skips the Platt recalibration (the raw score that an ensemble averages).

    Parameters with a leading member axis (``W`` of shape (K, H, D)) are K networks trained with
    different seeds: their logits and attention weights are averaged.
    """
    logit, a = mil_logit(mil_cell_terms(params, emb))
    return mil_probability(params, logit, calibrated), a


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
        terms = mil_cell_terms(self.params, emb)
        n = len(terms[0][0])
        rng = np.random.default_rng(seed)
        vals = [mil_probability(self.params, mil_logit(terms, rng.integers(0, n, n))[0]) for _ in range(n_boot)]
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
