"""Fit the APL-vs-AML case ensemble: the mean of the attention-MIL model's raw score and the
logistic case model's probability, Platt-recalibrated.

The members are the bundled ``leukomorph-apl`` (MIL) and ``leukomorph-apl-lr`` models, used as
they are; this module estimates the ensemble the same way the members were estimated, under the
same folds: repeated stratified 5-fold CV over the 82 DeepAPL patients (both members refitted in
every fold, their out-of-fold scores averaged), and the cell model's 17 held-out test patients
scored by members fitted on the other patients. Platt scaling is fitted on the averaged
out-of-fold ensemble scores (as for the MIL model).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from .. import jsonio
from ..aggregate.case_model import ENSEMBLE_FEATURES, case_features, feature_index, platt_scale
from ..models.registry import get_card
from .case_model import _lr, apl_card_head, cv_summary, deepapl_cell_outputs, held_out_summary, patients_of
from .mil import _fit, _scores

log = logging.getLogger(__name__)

__all__ = ["EnsembleData", "cv_folds", "ensemble_data", "fit_case_ensemble", "fit_members", "member_scores", "platt"]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class EnsembleData:
    """What the ensemble's members are fitted on: one bag of cell embeddings and one array of cell
    probabilities per DeepAPL patient, and the members' settings read from their cards."""

    patients: list[str]
    y: np.ndarray
    rows: list[dict]  # the DeepAPL manifest rows, in the order the cells were classified
    by_patient: dict[str, list[int]]  # each patient's row indices
    bags: list[np.ndarray]
    probs: list[np.ndarray]
    index: Any
    epochs: int
    members: int
    bag_min_cells: int | None  # the MIL member's bag-size augmentation (None: none)
    c: float
    cell: dict
    model: Any
    mil_card: Any
    lr_card: Any

    def features(self, probs: list[np.ndarray]) -> np.ndarray:
        """The logistic member's case features of each patient's cell probabilities."""
        return np.array([case_features(p, self.index) for p in probs])


def ensemble_data(
    mil_name: str = "leukomorph-apl",
    lr_name: str = "leukomorph-apl-lr",
    root=None,
    cache: str | os.PathLike[str] | None = None,
) -> EnsembleData:
    """Classify every DeepAPL cell with the members' cell model (``cache``: its outputs, reused when
    they match) and gather the members' settings."""
    mil_card, lr_card = get_card(mil_name), get_card(lr_name)
    cell = mil_card.raw["depends_on"]
    if lr_card.raw["depends_on"]["sha256"] != cell["sha256"]:
        raise ValueError("the two members were fitted on different cell models")
    probs, emb, rows, model = deepapl_cell_outputs(cell["name"], root, Path(cache) if cache else None, embeddings=True)
    patients, by_patient, y = patients_of(rows)
    # the logistic member's own features (all, or the classes its card names)
    index = feature_index(tuple(lr_card.raw["input"]["cell_classes"]), lr_card.raw["input"].get("feature_classes"))
    return EnsembleData(
        patients=patients,
        y=y,
        rows=rows,
        by_patient=by_patient,
        bags=[emb[by_patient[p]] for p in patients],
        probs=[probs[by_patient[p]] for p in patients],
        index=index,
        epochs=int(mil_card.raw["architecture"]["epochs"]),
        members=int(mil_card.raw["architecture"].get("members", 1)),
        bag_min_cells=mil_card.raw["architecture"].get("bag_min_cells"),
        c=float(lr_card.raw["architecture"]["C"]),
        cell=dict(cell),
        model=model,
        mil_card=mil_card,
        lr_card=lr_card,
    )


def fit_members(d: EnsembleData, train: np.ndarray, seed: int):
    """The two members fitted on the patients ``train`` (indices): (MIL network, logistic pipeline)."""
    net = _fit(
        [d.bags[i] for i in train], d.y[train], d.epochs, seed=seed, members=d.members, min_cells=d.bag_min_cells
    )
    return net, _lr(d.c).fit(d.features([d.probs[i] for i in train]), d.y[train])


def member_scores(members, bags: list[np.ndarray], probs: list[np.ndarray], d: EnsembleData):
    """Each member's score of the cases (bags of embeddings and their cells' probabilities)."""
    net, lr = members
    return _scores(net, bags), lr.predict_proba(d.features(probs))[:, 1]


def cv_folds(d: EnsembleData, repeats: int = 3):
    """The ensemble's cross-validation: (repeat, test patients, fitted members) per fold of a
    ``repeats``× repeated stratified 5-fold split over patients (seeds 100 × repeat + fold)."""
    for r in range(repeats):
        split = StratifiedKFold(5, shuffle=True, random_state=r).split(np.zeros(len(d.y)), d.y)
        for k, (tr, te) in enumerate(split):
            yield r, te, fit_members(d, tr, seed=100 * r + k)


class _Platt:
    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b

    def __call__(self, s: np.ndarray) -> np.ndarray:
        return platt_scale(s, self.a, self.b)  # as the shipped ensemble applies it


def platt(y: np.ndarray, scores: np.ndarray) -> _Platt:
    """Platt scaling of ensemble scores (the mean of the members' scores) fitted to labels ``y``:
    a callable with its slope ``a`` and intercept ``b`` on the logit."""
    fit = LogisticRegression(C=1e6).fit(_logit(scores).reshape(-1, 1), y)
    return _Platt(float(fit.coef_[0, 0]), float(fit.intercept_[0]))


def fit_case_ensemble(
    out_dir: str | os.PathLike[str],
    mil_name: str = "leukomorph-apl",
    lr_name: str = "leukomorph-apl-lr",
    name: str = "leukomorph-apl-ens",
    repeats: int = 3,
    root=None,
    cache: str | os.PathLike[str] | None = None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = ensemble_data(mil_name, lr_name, root, Path(cache) if cache else out / "cell_embeddings.npz")
    mil_card, lr_card, cell, model, y = d.mil_card, d.lr_card, d.cell, d.model, d.y
    patients = d.patients
    oof_mil, oof_lr = np.zeros((repeats, len(y))), np.zeros((repeats, len(y)))
    for r, te, members in cv_folds(d, repeats):
        oof_mil[r, te], oof_lr[r, te] = member_scores(members, [d.bags[i] for i in te], [d.probs[i] for i in te], d)
    for r in range(repeats):
        log.info(
            "repeat %d AUROC mil %.3f lr %.3f ensemble %.3f",
            r,
            roc_auc_score(y, oof_mil[r]),
            roc_auc_score(y, oof_lr[r]),
            roc_auc_score(y, (oof_mil[r] + oof_lr[r]) / 2),
        )
    oof = (oof_mil + oof_lr) / 2
    cv = cv_summary(y, oof)
    cv["members_same_folds"] = {
        "mil_auroc_mean_over_repeats": float(np.mean([roc_auc_score(y, o) for o in oof_mil])),
        "lr_auroc_mean_over_repeats": float(np.mean([roc_auc_score(y, o) for o in oof_lr])),
    }
    calibrate = platt(y, oof.mean(0))
    pa, pb = calibrate.a, calibrate.b
    cv["brier_after_platt_in_sample"] = float(brier_score_loss(y, calibrate(oof.mean(0))))
    held = {}
    test = set(model.card.raw.get("split", {}).get("patients", {}).get("test", []))
    it = np.array([p in test for p in patients])
    if it.any() and len(set(y[it])) == 2:
        held_idx = np.nonzero(it)[0]
        s_mil, s_lr = member_scores(
            fit_members(d, np.nonzero(~it)[0], seed=7),
            [d.bags[i] for i in held_idx],
            [d.probs[i] for i in held_idx],
            d,
        )
        s = (s_mil + s_lr) / 2
        held = held_out_summary(y[it], s, np.array(patients)[it], calibrated=calibrate(s))
    pfile = out / f"{name}.npz"
    with pfile.open("wb") as fh:
        np.savez(fh, platt_a=np.asarray(pa), platt_b=np.asarray(pb))
    card = {
        **apl_card_head(name, pfile),
        "input": {"features": ENSEMBLE_FEATURES, "cell_tta": mil_card.input.get("cell_tta")},
        "depends_on": dict(cell),
        "ensemble": {
            "members": [
                {"role": "mil", "model": mil_card.name, "sha256": mil_card.sha256},
                {"role": "lr", "model": lr_card.name, "sha256": lr_card.sha256},
            ],
            "combination": "mean of the MIL member's raw (un-recalibrated) score and the logistic member's "
            "probability, then Platt scaling fitted on the averaged out-of-fold ensemble scores",
        },
        "architecture": {"name": "two-member case ensemble (attention MIL + logistic regression)"},
        "training": {
            "data": "DeepAPL (Sidhom et al. 2021): all cells of 82 patients (22 APL, 60 non-APL AML); research use",
            "patients": len(y),
            "cells": int(sum(len(b) for b in d.bags)),
        },
        "metrics": {
            "cross_validation": {
                **cv,
                "baseline_promyelocyte_fraction_auroc": lr_card.raw["metrics"]["cross_validation"].get(
                    "baseline_promyelocyte_fraction_auroc"
                ),
            },
            "held_out_cell_model_test_patients": held,
        },
        "applicability": {"method": "the logistic member's check (probability features)"},
        "intended_use": "Score APL vs non-APL AML for a case already suspected to be acute myeloid leukemia; the MIL "
        "member's attention names the cells the score rests on. Decision support, not a diagnosis.",
        "limitations": [
            "82 patients from one hospital; the cell model trained on most of their labelled cells (CV optimistic).",
            "Platt scaling was fitted on the same out-of-fold scores that estimate the Brier score after it.",
        ],
    }
    path = out / f"{name}.json"
    path.write_text(jsonio.dumps(card, indent=1))
    log.info("ensemble CV AUROC %.3f; card %s", cv["auroc_mean_over_repeats"], path)
    return path
