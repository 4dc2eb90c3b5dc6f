"""Fit the ALL field model (aria_all: Benign hematogones / Early pre-B / Pre-B / Pro-B) on field
features from the bundled cell classifier and detector, with contiguous-block cross-validation.

aria_all has no patient ids; file numbers follow acquisition order, so each class's files are cut
into ``k`` contiguous blocks and fold j tests block j of every class. Training fields within
``gap`` file numbers of a test block are left out of that fold ("purged" CV), so a patient whose
images straddle a block edge is not on both sides. Reported: balanced accuracy (pooled out-of-fold,
per fold, bootstrap 95% CI over fields), per-class recall with Wilson intervals, and two
colour-shortcut controls under the same folds: colour statistics alone, and the features after
Reinhard stain normalisation.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import jsonio
from ..aggregate.differential import wilson_interval
from ..classify.fields import ALL_SUBTYPES, FIELD_FEATURES, blank_scale_bar, field_features
from ..data import data_root
from ..io import read_image
from ..stain import lab_stats, reinhard
from .card import card_head

log = logging.getLogger(__name__)

__all__ = ["aria_rows", "block_folds", "field_feature_table", "fit_all_model"]


def aria_rows(root=None) -> tuple[Path, list[dict[str, str]]]:
    base = data_root(root) / "aria_all"
    return base, list(csv.DictReader((base / "manifest.csv").open(newline="", encoding="utf-8")))


def block_folds(labels: np.ndarray, numbers: np.ndarray, k: int = 5) -> np.ndarray:
    """Fold index per field: contiguous blocks of file numbers within each class."""
    fold = np.zeros(len(labels), int)
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        idx = idx[np.argsort(numbers[idx])]
        for j, part in enumerate(np.array_split(idx, k)):
            fold[part] = j
    return fold


def purged_train(fold: np.ndarray, labels: np.ndarray, numbers: np.ndarray, j: int, gap: int) -> np.ndarray:
    """Training mask of fold j without fields within ``gap`` file numbers of the test block."""
    train = fold != j
    for c in np.unique(labels):
        te = (fold == j) & (labels == c)
        if te.any():
            lo, hi = numbers[te].min(), numbers[te].max()
            near = (labels == c) & (numbers >= lo - gap) & (numbers <= hi + gap)
            train &= ~near
    return train


def field_feature_table(cell_model, detector, threshold: float, root=None, stain: str = "none", progress=None):
    """Features of every aria_all field (see :func:`leukomorph.classify.fields.field_features`)."""
    from ..pipeline import field_crop

    base, rows = aria_rows(root)
    feats, n_cells = [], []
    for i, r in enumerate(rows):
        rgb = read_image(base / r["path"]).pixels
        if stain == "reinhard":
            rgb = reinhard(blank_scale_bar(rgb))
        fd = detector.detect_field(rgb)  # as in the pipeline: detection on the field as given
        boxes = [d for d in fd.detections if d.label == "white_blood_cell" and d.score >= threshold]
        feats.append(field_features(cell_model, rgb, boxes, field_crop))
        n_cells.append(len(boxes))
        if progress and i % 200 == 0:
            progress(i, len(rows))
    return np.array(feats), np.array(n_cells)


def _lr(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))


def _cv(x, y, fold, labels, numbers, gap, c):
    pred = np.zeros(len(y), int)
    proba = np.zeros((len(y), len(np.unique(y))))
    per_fold = []
    for j in np.unique(fold):
        tr, te = purged_train(fold, labels, numbers, j, gap), fold == j
        m = _lr(c).fit(x[tr], y[tr])
        proba[te] = m.predict_proba(x[te])
        pred[te] = proba[te].argmax(1)
        per_fold.append(float(balanced_accuracy_score(y[te], pred[te])))
    return pred, proba, per_fold


def _boot_bacc(y, pred, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        vals.append(balanced_accuracy_score(y[i], pred[i]))
    return [float(v) for v in np.percentile(vals, [2.5, 97.5])]


def fit_all_model(
    out_dir: str | os.PathLike[str],
    cell_model_name: str = "leukomorph-cell",
    detector_name: str = "leukomorph-det",
    name: str = "leukomorph-all",
    cs: tuple[float, ...] = (0.01, 0.1),
    k: int = 5,
    gap: int = 20,
    root=None,
    controls: bool = True,
) -> Path:
    from ..models import load_classifier
    from ..models.registry import load_detector

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cell = load_classifier(cell_model_name)
    det = load_detector(detector_name)
    thr = det.score_thresholds["white_blood_cell"]
    base, rows = aria_rows(root)
    labels = np.array([r["label"] for r in rows])
    classes = sorted(ALL_SUBTYPES)
    y = np.array([classes.index(v) for v in labels])
    numbers = np.array([int(re.findall(r"(\d+)\.\w+$", r["path"])[0]) for r in rows])
    fold = block_folds(labels, numbers, k)
    cache = out / "features.npz"
    key = f"{cell.card.sha256}:{det.card.sha256}:{thr}"
    z = np.load(cache) if cache.is_file() else None
    if z is not None and "key" in z and str(z["key"]) == key and len(z["x"]) == len(rows):
        x, n_cells = z["x"], z["n_cells"]
    else:  # a cache of other models (or of an older version without a key) is recomputed, never reused
        x, n_cells = field_feature_table(cell, det, thr, root)
        np.savez_compressed(cache, x=x, n_cells=n_cells, key=key)
    results = {}
    for c in cs:
        pred, proba, per_fold = _cv(x, y, fold, labels, numbers, gap, c)
        results[c] = (float(balanced_accuracy_score(y, pred)), pred, proba, per_fold)
        log.info("C=%g pooled balanced accuracy %.4f folds %s", c, results[c][0], per_fold)
    best_c = max(results, key=lambda c: results[c][0])
    bacc, pred, proba, per_fold = results[best_c]
    cm = confusion_matrix(y, pred)
    recall = {}
    for i, cl in enumerate(classes):
        kk, nn = int(cm[i, i]), int(cm[i].sum())
        lo, hi = wilson_interval(kk, nn)
        recall[ALL_SUBTYPES[cl]] = [round(kk / nn, 4), [round(lo, 4), round(hi, 4)], nn]
    metrics: dict = {
        "cross_validation": {
            "method": f"{k} contiguous file-number blocks per class; fold j tests block j of every class; training "
            f"fields within {gap} file numbers of a test block left out (purged)",
            "balanced_accuracy": round(bacc, 4),
            "balanced_accuracy_ci95": _boot_bacc(y, pred),
            "ci_method": "bootstrap over fields (out-of-fold predictions); fields of one patient are correlated, "
            "so it is narrow",
            "per_fold_balanced_accuracy": [round(v, 4) for v in per_fold],
            "recall_per_class": recall,
            "confusion": {"classes": [ALL_SUBTYPES[c] for c in classes], "counts": cm.tolist()},
            "c_grid": {str(c): round(results[c][0], 4) for c in cs},
            "c_chosen": best_c,
            "c_note": "C chosen by this same CV (a two-value grid): mildly optimistic",
        },
        "white_cells_per_field": [float(v) for v in np.percentile(n_cells, [10, 50, 90])],
    }
    if controls:
        stats = [lab_stats(blank_scale_bar(read_image(base / r["path"]).pixels)) for r in rows]
        col = np.array([np.r_[st.mean, st.std] for st in stats])
        p_col, _, f_col = _cv(col, y, fold, labels, numbers, gap, 1.0)
        metrics["controls"] = {
            "colour_statistics_only": {
                "features": "mean and s.d. of L*a*b* per field (scale bar blanked)",
                "balanced_accuracy": round(float(balanced_accuracy_score(y, p_col)), 4),
                "per_fold": [round(v, 4) for v in f_col],
            }
        }
        xr, _ = field_feature_table(cell, det, thr, root, stain="reinhard")
        np.savez_compressed(out / "features_reinhard.npz", x=xr)
        p_r, _, f_r = _cv(xr, y, fold, labels, numbers, gap, best_c)
        metrics["controls"]["reinhard_normalised_features"] = {
            "features": "the same features after Reinhard normalisation of each field to the package reference",
            "balanced_accuracy": round(float(balanced_accuracy_score(y, p_r)), 4),
            "per_fold": [round(v, 4) for v in f_r],
        }
    final = _lr(best_c).fit(x, y)
    sc, lr = final[0], final[1]
    zs = (x - sc.mean_) / sc.scale_
    # applicability: out-of-fold PCA + Ledoit-Wolf distances set the threshold
    oof = np.zeros(len(y))
    for j in np.unique(fold):
        tr, te = fold != j, fold == j
        pca = PCA(32, random_state=0).fit(zs[tr])
        lw = LedoitWolf().fit(pca.transform(zs[tr]))
        u = pca.transform(zs[te]) - lw.location_
        oof[te] = np.einsum("ni,ij,nj->n", u, lw.precision_, u)
    pca = PCA(32, random_state=0).fit(zs)
    lw = LedoitWolf().fit(pca.transform(zs))
    threshold = float(1.2 * np.percentile(oof, 99))
    params_path = out / f"{name}.npz"
    np.savez_compressed(
        params_path,
        mean=sc.mean_,
        scale=sc.scale_,
        coef=lr.coef_,
        intercept=lr.intercept_,
        pca_mean=pca.mean_,
        pca_components=pca.components_,
        location=lw.location_,
        precision=lw.precision_,
    )
    card = {
        **card_head(name, "1.0.0", "field-classification", params_path),
        "classes": [ALL_SUBTYPES[c] for c in classes],
        "source_labels": classes,
        "input": {
            "features": FIELD_FEATURES,
            "description": "leukomorph.classify.fields.field_features: white-cell embeddings (mean, max), mean class "
            "probabilities, whole-field embedding, log(1 + white cells); scale-bar corner blanked",
            "dimension": int(x.shape[1]),
        },
        "depends_on": {
            "cell_model": {"name": cell.card.name, "version": cell.card.version, "sha256": cell.card.sha256},
            "detector": {
                "name": det.card.name,
                "version": det.card.version,
                "sha256": det.card.sha256,
                "white_cell_threshold": thr,
            },
        },
        "architecture": {
            "name": "multinomial logistic regression on standardised features (class-balanced)",
            "C": best_c,
        },
        "applicability": {
            "method": "squared Mahalanobis distance (Ledoit-Wolf) in a 32-component PCA of the standardised features",
            "distance_threshold": round(threshold, 2),
            "threshold_rule": "1.2 × the 99th percentile of out-of-fold distances of the training fields",
        },
        "training": {
            "data": "aria_all (Aria et al. 2021, Kaggle doi:10.34740/KAGGLE/DSV/2175623; Ghaderzadeh et al. 2022): "
            "peripheral-blood smear fields of 89 patients with B-lineage ALL or hematogones (flow cytometry labels)",
            "n_fields": int(len(y)),
            "per_class": {ALL_SUBTYPES[c]: int((y == i).sum()) for i, c in enumerate(classes)},
            "minutes": round((time.time() - t0) / 60, 1),
        },
        "metrics": metrics,
        "intended_use": "Research: suggest the B-ALL maturation subtype (or hematogones) of peripheral-blood fields "
        "from a patient with B-lineage ALL suspected. Not a screen for leukemia; flow cytometry decides.",
        "limitations": [
            "One laboratory and camera (aria_all); fields of other sites are unmeasured.",
            "No patient ids: contiguous file blocks approximate a patient split.",
            "Classes differ in stain colour and brightness in this data set; the colour-only control shows how much "
            "colour alone separates them.",
        ],
    }
    card_path = out / f"{name}.json"
    card_path.write_text(jsonio.dumps(card, indent=1))
    log.info("balanced accuracy %.4f (C=%g); card %s", bacc, best_c, card_path)
    return card_path
