"""Fit the patient-level APL-vs-AML model on DeepAPL, with patient-level cross-validation.

Every cell of every patient (labelled or not) is classified by the cell model, exactly as
``leukomorph analyze --case <patient>`` would; the case features
(:func:`leukomorph.aggregate.case_model.case_features`) feed an L2 logistic regression.

Estimates (all patient-level; in the card):
- repeated stratified 5-fold cross-validation over all patients (AUROC, Brier) — optimistic for the
  patients whose labelled cells trained the cell model;
- the cell model's own held-out test patients, scored by a case model fitted on the other
  patients only (neither model saw them) — honest but small;
- the promyelocyte-fraction baseline on the same folds.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import jsonio
from ..aggregate.case_model import (
    FEATURE_SET,
    case_feature_names,
    case_features,
    feature_index,
    save_case_model_params,
)
from ..classify import recommended_tta
from ..data import data_root
from ..evaluation.runner import predict_rows
from ..models.registry import load_classifier
from .card import card_head

log = logging.getLogger(__name__)

__all__ = [
    "apl_card_head",
    "auroc_ci",
    "cv_summary",
    "held_out_summary",
    "deepapl_cell_outputs",
    "fit_applicability",
    "fit_case_model",
]


def deepapl_cell_outputs(
    cell_model: str,
    root: str | os.PathLike[str] | None = None,
    cache: Path | None = None,
    embeddings: bool = False,
):
    """Classify every DeepAPL cell (labelled or not), as ``analyze --case <patient>`` would.

    Returns (probabilities, embeddings or None, manifest rows, cell model); a cache file keyed by
    the cell model's sha256 saves the pass on reruns.
    """
    base = data_root(root) / "deepapl"
    rows = list(csv.DictReader((base / "manifest.csv").open(newline="", encoding="utf-8")))
    model = load_classifier(cell_model)
    if cache is not None and cache.is_file():
        z = np.load(cache)
        if str(z["sha256"]) == model.card.sha256 and len(z["probs"]) == len(rows) and (not embeddings or "emb" in z):
            return z["probs"], (z["emb"] if embeddings else None), rows, model

    def progress(done: int, total: int) -> None:
        log.info("classified %d/%d DeepAPL cells", done, total)

    preds = predict_rows(
        model,
        [{"path": str(base / r["path"])} for r in rows],
        recommended_tta(model),
        progress,
        embeddings=embeddings,
    )
    probs = np.array([p.probabilities for p in preds], np.float32)
    emb = np.array([p.embedding for p in preds], np.float32) if embeddings else None
    if cache is not None:
        np.savez_compressed(cache, probs=probs, sha256=model.card.sha256, **({"emb": emb} if embeddings else {}))
    return probs, emb, rows, model


def auroc_ci(y: np.ndarray, s: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """AUROC with a 95% percentile bootstrap interval over patients (stratified by class)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        vals.append(roc_auc_score(y[idx], s[idx]))
    return float(roc_auc_score(y, s)), float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def patients_of(rows: list[dict[str, str]]) -> tuple[list[str], dict[str, list[int]], np.ndarray]:
    """Sorted patient ids, each patient's row indices, and 1 for APL / 0 for AML per patient."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    dx = {}
    for i, r in enumerate(rows):
        by_patient[r["patient_id"]].append(i)
        dx[r["patient_id"]] = r["diagnosis"]
    patients = sorted(by_patient)
    return patients, by_patient, np.array([dx[p] == "APL" for p in patients], int)


def apl_card_head(name: str, params_file: Path) -> dict:
    """The fields every APL-vs-AML case model card starts with (identity, target, file, sha256)."""
    return {
        **card_head(name, "1.0.0", "case-classification", params_file),
        "target": "apl_vs_aml",
        "positive": "APL",
        "classes": ["AML", "APL"],
    }


def held_out_summary(y: np.ndarray, scores: np.ndarray, patients, calibrated: np.ndarray | None = None) -> dict:
    """Held-out patients' AUROC (95% CI), Brier (of ``calibrated`` when given) and their scores."""
    a = auroc_ci(y, scores)
    shown = scores if calibrated is None else calibrated
    return {
        "patients": int(len(y)),
        "apl": int(y.sum()),
        "auroc": a[0],
        "auroc_ci95": [a[1], a[2]],
        "brier": float(brier_score_loss(y, shown)),
        "scores": {p: round(float(v), 4) for p, v in zip(patients, shown, strict=True)},
    }


def cv_summary(y: np.ndarray, oof: np.ndarray) -> dict:
    """Patient-level CV summary from out-of-fold scores (repeats × patients)."""
    per_repeat = [roc_auc_score(y, o) for o in oof]
    auc = auroc_ci(y, oof.mean(0))
    return {
        "method": f"{len(oof)}× repeated stratified 5-fold over {len(y)} patients ({int(y.sum())} APL)",
        "auroc_mean_over_repeats": float(np.mean(per_repeat)),
        "auroc_range_over_repeats": [float(min(per_repeat)), float(max(per_repeat))],
        "auroc_of_mean_oof": auc[0],
        "auroc_ci95": [auc[1], auc[2]],
        "brier": float(np.mean([brier_score_loss(y, o) for o in oof])),
    }


def fit_applicability(zs: np.ndarray, factor: float = 1.4):
    """Ledoit-Wolf fit of standardised case features, and the distance threshold: ``factor`` × the
    largest leave-one-out squared Mahalanobis distance of a training patient."""
    loo = []
    for i in range(len(zs)):
        lw_i = LedoitWolf().fit(np.delete(zs, i, 0))
        d = zs[i] - lw_i.location_
        loo.append(float(d @ lw_i.precision_ @ d))
    return LedoitWolf().fit(zs), factor * max(loo), loo


def _lr(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def fit_case_model(
    cell_model: str,
    out_dir: str | os.PathLike[str],
    name: str = "leukomorph-apl",
    c: float = 0.1,
    repeats: int = 10,
    root: str | os.PathLike[str] | None = None,
    feature_classes: Sequence[str] | None = None,
) -> Path:
    """``feature_classes``: use only these cell classes' features (their log fraction and log mean
    probability); None: all classes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probs, _, rows, model = deepapl_cell_outputs(cell_model, root, out / "cell_probs.npz")
    patients, by_patient, y = patients_of(rows)
    index = feature_index(tuple(model.classes), feature_classes)
    x = np.array([case_features(probs[by_patient[p]], index) for p in patients])
    pro_i = list(model.classes).index("promyelocyte")
    baseline = np.array([(probs[by_patient[p]].argmax(1) == pro_i).mean() for p in patients])

    oof = np.zeros((repeats, len(y)))
    for r in range(repeats):
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=r).split(x, y):
            oof[r, te] = _lr(c).fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
    mean_oof = oof.mean(0)
    base_auc = auroc_ci(y, baseline)
    cv = cv_summary(y, oof)
    cv["baseline_promyelocyte_fraction_auroc"] = base_auc[0]
    cv["baseline_ci95"] = [base_auc[1], base_auc[2]]
    held = {}
    test = set(model.card.raw.get("split", {}).get("patients", {}).get("test", []))
    it = np.array([p in test for p in patients])
    if it.any() and len(set(y[it])) == 2 and len(set(y[~it])) == 2:
        s = _lr(c).fit(x[~it], y[~it]).predict_proba(x[it])[:, 1]
        held = held_out_summary(y[it], s, np.array(patients)[it])
        held["baseline_promyelocyte_fraction_auroc"] = auroc_ci(y[it], baseline[it])[0]
    final = _lr(c).fit(x, y)
    sc, lr = final[0], final[1]
    pfile = f"{name}.npz"
    # applicability: Ledoit-Wolf Mahalanobis distance to the training patients; threshold 1.4× the
    # largest leave-one-out distance of a training patient
    lw, ood_threshold, loo = fit_applicability(sc.transform(x))
    save_case_model_params(
        out / pfile,
        sc.mean_,
        sc.scale_,
        lr.coef_[0],
        lr.intercept_[0],
        ood_location=lw.location_,
        ood_precision=lw.precision_,
        ood_threshold=ood_threshold,
    )
    card = {
        **apl_card_head(name, out / pfile),
        "input": {
            "features": FEATURE_SET,
            "feature_names": case_feature_names(model.classes, index),
            **({"feature_classes": [c for c in model.classes if c in set(feature_classes)]} if feature_classes else {}),
            "cell_classes": list(model.classes),
            "cell_tta": recommended_tta(model),
        },
        "depends_on": {"name": model.card.name, "version": model.card.version, "sha256": model.card.sha256},
        "architecture": {"name": "L2 logistic regression on standardised case features", "C": c},
        "training": {
            "data": "DeepAPL (Sidhom et al. 2021): all cells of 82 patients (22 APL, 60 non-APL AML), "
            "diagnosis confirmed by PML::RARA; research use, cite the paper",
            "patients": len(y),
            "cells": int(len(probs)),
        },
        "metrics": {"cross_validation": cv, "held_out_cell_model_test_patients": held},
        "applicability": {
            "method": "squared Mahalanobis distance (Ledoit-Wolf covariance) of the standardised case features to "
            "the training patients; beyond the threshold the score is reported but not used by the rules",
            "threshold": ood_threshold,
            "leave_one_out_distance_percentiles_50_90_100": [float(v) for v in np.percentile(loo, [50, 90, 100])],
        },
        "intended_use": "Score APL vs non-APL AML for a case already suspected to be acute myeloid leukemia. "
        "Decision support for urgency (start ATRA, check coagulation) pending PML::RARA; not a diagnosis.",
        "limitations": [
            "82 patients from one hospital (Johns Hopkins), CellaVision crops; performance elsewhere is unmeasured.",
            "The cell model trained on the labelled cells of most of these patients, so the cross-validated "
            "figures are optimistic; the held-out figure uses few patients.",
            "Meaningless for non-leukemic samples and for ALL: read it only when acute myeloid leukemia is suspected.",
        ],
    }
    card_path = out / f"{name}.json"
    card_path.write_text(jsonio.dumps(card, indent=1))
    (out / "case_scores_oof.json").write_text(
        json.dumps({p: [int(t), float(s)] for p, t, s in zip(patients, y, mean_oof, strict=True)}, indent=1)
    )
    return card_path
