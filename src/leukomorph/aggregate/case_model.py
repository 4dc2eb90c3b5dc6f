"""Learned patient-level scores (e.g. APL vs non-APL AML) from a case's cell probabilities.

Pure core: the feature map and a logistic model evaluated with numpy (no scikit-learn or torch at
inference). A case model is tied to the cell classifier whose probabilities it was fitted on: the
card names that model's sha256, and a mismatch is reported, never silently scored.

Features (``log_frac_meanp_v1``), for each taxonomy class c: log(fraction of the case's cells
predicted as c + 0.01) and log(mean probability of c over the case's cells + 0.01).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .mil import MIL_FEATURES, PARAM_NAMES, MilCaseModel, mil_cell_terms, mil_forward, mil_logit, mil_probability

__all__ = [
    "ENSEMBLE_FEATURES",
    "FEATURE_SET",
    "CaseModel",
    "EnsembleCaseModel",
    "case_feature_names",
    "case_features",
    "feature_index",
    "cell_contributions",
    "load_case_model",
    "platt_scale",
    "save_case_model_params",
]

FEATURE_SET = "log_frac_meanp_v1"
_EPS = 0.01


def case_feature_names(classes: tuple[str, ...], index: np.ndarray | None = None) -> list[str]:
    """Names of :func:`case_features` (those at ``index`` only, when given)."""
    names = [f"log_frac_{c}" for c in classes] + [f"log_mean_p_{c}" for c in classes]
    return names if index is None else [names[i] for i in index]


def case_features(probs: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Feature vector of one case from its (N, K) cell probabilities (N ≥ 1); ``index``: keep only
    the features at these positions (:func:`feature_index`)."""
    probs = np.asarray(probs, float)
    k = probs.shape[1]
    frac = np.bincount(probs.argmax(1), minlength=k) / len(probs)
    f = np.concatenate([np.log(frac + _EPS), np.log(probs.mean(0) + _EPS)])
    return f if index is None else f[index]


def feature_index(classes: Sequence[str], feature_classes: Sequence[str] | None) -> np.ndarray | None:
    """Positions in :func:`case_features` of the features of ``feature_classes`` (their log
    fraction, then their log mean probability); None for all. An unknown class is an error."""
    if feature_classes is None:
        return None
    unknown = sorted(set(feature_classes) - set(classes))
    if unknown:
        raise ModelError(f"feature classes not among the cell classes: {', '.join(unknown)}")
    keep = [i for i, c in enumerate(classes) if c in set(feature_classes)]
    return np.array(keep + [len(classes) + i for i in keep], int)


@dataclass(frozen=True)
class CaseModel:
    name: str
    version: str
    target: str
    positive: str
    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    depends_on: dict[str, str]
    card_path: str
    #: applicability check: Mahalanobis distance (Ledoit-Wolf) of the standardised features to the
    #: training patients; cases beyond ``ood_threshold`` are unlike anything the model was fitted on
    ood_location: np.ndarray | None = None
    ood_precision: np.ndarray | None = None
    ood_threshold: float = float("inf")
    needs_embeddings: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: positions of the features used in :func:`case_features` (None: all; see :func:`feature_index`)
    index: np.ndarray | None = None

    def features(self, probs: np.ndarray) -> np.ndarray:
        """The case's feature vector as the model uses it."""
        return case_features(probs, self.index)

    def predict(self, probs: np.ndarray) -> float:
        """Probability of the positive class for one case's (N, K) cell probabilities."""
        z = (self.features(probs) - self.mean) / self.scale
        return float(1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept))))

    def distance(self, probs: np.ndarray) -> float:
        """Squared Mahalanobis distance of the case to the training patients (NaN without the check)."""
        return case_distance(probs, self.mean, self.scale, self.ood_location, self.ood_precision, self.index)

    def predict_interval(self, probs: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
        """95% interval of the score over bootstrap resamples of the case's cells (counting noise only)."""
        probs = np.asarray(probs, float)
        rng = np.random.default_rng(seed)
        vals = [self.predict(probs[rng.integers(0, len(probs), len(probs))]) for _ in range(n_boot)]
        return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))

    def assess(self, probs: np.ndarray, emb: np.ndarray | None = None, n_evidence: int = 12) -> dict[str, Any]:
        """Score, its interval, the evidence cells (those that raise the score most) and the strongest features."""
        push = cell_contributions(self, probs)
        return {
            "score": self.predict(probs),
            "ci95": self.predict_interval(probs),
            "evidence": [int(i) for i in np.argsort(-push)[:n_evidence] if push[i] > 0],
            "describe": {
                "evidence_method": "cells that raise the score most (first-order contribution)",
                "top_features": [[n, round(v, 3)] for n, v in self.contributions(probs)],
            },
        }

    def contributions(self, probs: np.ndarray, top: int = 5) -> list[tuple[str, float]]:
        """The features that push this case's score most (standardised value × coefficient)."""
        z = (self.features(probs) - self.mean) / self.scale * self.coef
        names = case_feature_names(self.classes, self.index)
        order = np.argsort(-np.abs(z))[:top]
        return [(names[i], float(z[i])) for i in order]


#: feature-set tag of the ensemble case model (mean of member scores, Platt-recalibrated)
ENSEMBLE_FEATURES = "case_ensemble_mean_v1"


@dataclass(frozen=True)
class EnsembleCaseModel:
    """Mean of an attention-MIL member's raw score and a logistic member's probability,
    recalibrated by Platt scaling; attention (evidence cells) and applicability come from the
    members."""

    name: str
    version: str
    target: str
    positive: str
    mil: MilCaseModel
    lr: CaseModel
    platt_a: float
    platt_b: float
    depends_on: dict[str, str]
    card_path: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    needs_embeddings: bool = True

    @property
    def ood_threshold(self) -> float:
        return self.lr.ood_threshold

    def distance(self, probs: np.ndarray) -> float:
        return self.lr.distance(probs)

    def raw_score(self, probs: np.ndarray, emb: np.ndarray) -> tuple[float, np.ndarray]:
        s_mil, att = mil_forward(self.mil.params, emb, calibrated=False)
        return 0.5 * (s_mil + self.lr.predict(probs)), att

    def score_and_attention(self, probs: np.ndarray, emb: np.ndarray) -> tuple[float, np.ndarray]:
        m, att = self.raw_score(probs, emb)
        return self.calibrate(m), att

    def calibrate(self, raw):
        """The ensemble's Platt scaling of raw (member-mean) scores: a float, or an array of them."""
        return platt_scale(raw, self.platt_a, self.platt_b)

    def predict_interval(self, probs: np.ndarray, emb: np.ndarray, n_boot: int = 100, seed: int = 0):
        """95% interval over bootstrap resamples of the case's cells (counting noise only)."""
        probs = np.asarray(probs, float)
        terms = mil_cell_terms(self.mil.params, emb)  # per-cell MIL terms, computed once
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(n_boot):
            i = rng.integers(0, len(probs), len(probs))
            s_mil = mil_probability(self.mil.params, mil_logit(terms, i)[0], calibrated=False)
            vals.append(self.calibrate(0.5 * (s_mil + self.lr.predict(probs[i]))))
        return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))

    def assess(self, probs: np.ndarray, emb: np.ndarray, n_evidence: int = 12) -> dict[str, Any]:
        """Score, its interval, the evidence cells (the MIL member's attention) and the logistic
        member's strongest features."""
        score, att = self.score_and_attention(probs, emb)
        return {
            "score": score,
            "ci95": self.predict_interval(probs, emb),
            "evidence": [int(i) for i in np.argsort(-att)[:n_evidence]],
            "describe": {
                "evidence_method": "attention weights of the ensemble's multiple-instance member",
                "top_features": [[n, round(v, 3)] for n, v in self.lr.contributions(probs)],
                "members": [self.mil.name, self.lr.name],
            },
        }


def platt_scale(raw, a: float, b: float):
    """Platt scaling on the logit: 1 / (1 + exp(-(a · logit(raw) + b))), ``raw`` clipped to
    [1e-6, 1 - 1e-6]; a float for a float, an array for an array."""
    m = np.clip(np.asarray(raw, float), 1e-6, 1 - 1e-6)
    p = 1 / (1 + np.exp(-(a * np.log(m / (1 - m)) + b)))
    return float(p) if p.ndim == 0 else p


def load_case_model(name_or_path: str) -> CaseModel | MilCaseModel | EnsembleCaseModel:
    """Load and verify a case model (card JSON + ``.npz`` parameters) by registry name or card path."""
    from ..models.registry import get_card, load_params, member_card

    card = get_card(name_or_path)
    params = load_params(card, "case-classification", "a case model")
    ident = dict(
        name=card.name,
        version=card.version,
        target=card.raw["target"],
        positive=card.raw["positive"],
        depends_on=dict(card.raw["depends_on"]),
        card_path=card.card_path,
        raw=card.raw,
    )
    ood = dict(  # applicability check (MIL and logistic models)
        ood_location=params.get("ood_location"),
        ood_precision=params.get("ood_precision"),
        ood_threshold=float(params["ood_threshold"]) if "ood_threshold" in params else float("inf"),
    )
    if card.input.get("features") == ENSEMBLE_FEATURES:
        members = {}
        for m in card.raw["ensemble"]["members"]:
            mc = load_case_model(member_card(card, m, "case ensemble").card_path)
            if mc.depends_on.get("sha256") != card.raw["depends_on"]["sha256"]:
                raise ModelError(f"case ensemble {card.name!r}: member {mc.name!r} was fitted on another cell model")
            members[m["role"]] = mc
        if not isinstance(members.get("mil"), MilCaseModel) or not isinstance(members.get("lr"), CaseModel):
            raise ModelError(f"{card.card_path}: a case ensemble needs one 'mil' and one 'lr' member")
        return EnsembleCaseModel(
            **ident,
            mil=members["mil"],
            lr=members["lr"],
            platt_a=float(params["platt_a"]),
            platt_b=float(params["platt_b"]),
        )
    if card.input.get("features") == MIL_FEATURES:
        return MilCaseModel(
            **ident,
            **ood,
            params={k: params[k] for k in (*PARAM_NAMES, "platt_a", "platt_b") if k in params},
            feat_mean=params.get("feat_mean"),
            feat_scale=params.get("feat_scale"),
        )
    if card.input.get("features") != FEATURE_SET:
        raise ModelError(f"{card.card_path}: unsupported feature set {card.input.get('features')!r}")
    classes = tuple(card.input["cell_classes"])
    return CaseModel(
        **ident,
        **ood,
        index=feature_index(classes, card.input.get("feature_classes")),
        classes=classes,
        mean=params["mean"],
        scale=params["scale"],
        coef=params["coef"],
        intercept=float(params["intercept"]),
    )


def save_case_model_params(path: str | os.PathLike[str], mean, scale, coef, intercept, **extra) -> str:
    """Write the parameter file; return its sha256."""
    p = Path(path)
    with p.open("wb") as fh:
        np.savez(
            fh,
            mean=np.asarray(mean, float),
            scale=np.asarray(scale, float),
            coef=np.asarray(coef, float),
            intercept=np.asarray(float(intercept)),
            **{k: np.asarray(v, float) for k, v in extra.items()},
        )
    return hashlib.sha256(p.read_bytes()).hexdigest()


def case_distance(probs, mean, scale, location, precision, index: np.ndarray | None = None) -> float:
    """Squared Mahalanobis distance of a case's standardised features (NaN without parameters);
    ``index``: the positions of the features used (:func:`feature_index`; None: all)."""
    if location is None or precision is None:
        return float("nan")
    d = (case_features(probs, index) - mean) / scale - location
    return float(d @ precision @ d)


def cell_contributions(model: CaseModel, probs: np.ndarray) -> np.ndarray:
    """Per-cell push on the case's logit (first-order): which cells raise the score most.

    The derivative of the logit with respect to one cell's probability vector, times that vector,
    divided by the number of cells; the fraction features contribute through the cell's top class.
    """
    probs = np.asarray(probs, float)
    n, k = probs.shape
    w = np.zeros(2 * k)  # unused features weigh nothing
    w[slice(None) if model.index is None else model.index] = model.coef / model.scale
    frac = np.bincount(probs.argmax(1), minlength=k) / n
    meanp = probs.mean(0)
    g_frac = w[:k] / (frac + _EPS)
    g_mean = w[k:] / (meanp + _EPS)
    return (probs @ g_mean + g_frac[probs.argmax(1)]) / n
