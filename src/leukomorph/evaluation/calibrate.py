"""Fit a model's conformal prediction sets on labelled held-out cells and record them in its card."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import jsonio
from ..classify import ConformalCalibration, calibrate, recommended_tta
from ..errors import DataError
from ..models.registry import ModelCard, load_classifier
from .runner import exact_targets, predict_rows, split_rows

__all__ = [
    "conformal_from",
    "entropy_gate_from",
    "fit_colour_gate",
    "fit_conformal",
    "fit_entropy_gate",
    "fit_sharpness_gate",
    "fit_tta_temperature",
    "labelled_probs",
    "patient_datasets",
    "write_confusion",
    "write_conformal",
    "write_entropy_gate",
    "write_quality_gate",
    "write_tta_temperature",
    "write_unfamiliar",
]

#: The colour gate sits this far (CIE a*b* units) above the largest background-colour distance
#: among the training sites' cases (every training and validation patient; see fit_colour_gate).
COLOUR_GATE_MARGIN = 5.0


def labelled_probs(
    card: ModelCard,
    split: str | os.PathLike[str] | None,
    which: str,
    tta: str | None,
    progress,
    purpose: str,
    datasets: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
) -> tuple[dict, list[dict[str, str]], np.ndarray, np.ndarray, str]:
    """The model's probabilities on the exact-label rows of ``which`` in ``split`` (only those of
    ``datasets`` when given), with their class indices; ``ignore``: card ``inference`` entries left
    out while predicting. Returns (source description, rows, classes, probabilities, tta)."""
    split, rows = split_rows(card, split, which)
    if datasets is not None:
        rows = [r for r in rows if r["dataset"] in set(datasets)]
    idx, y = exact_targets(rows)
    if not idx:
        raise DataError(f"{split}: no exact-label rows in split {which!r} to {purpose}")
    model = load_classifier(card.card_path)
    for key in ignore:
        model.card.raw.get("inference", {}).pop(key, None)
    tta = tta or recommended_tta(model)
    rows = [rows[i] for i in idx]
    probs = np.array([p.probabilities for p in predict_rows(model, rows, tta, progress)])
    source = {
        "split": Path(split).name,
        "which": which,
        "n_cells": len(rows),
        "datasets": sorted({r["dataset"] for r in rows}),
    }
    return source, rows, y, probs, tta


def fit_conformal(
    card: ModelCard,
    split: str | os.PathLike[str] | None = None,
    which: str = "val",
    alpha: float = 0.1,
    tta: str | None = None,
    progress=None,
    datasets: Sequence[str] | None = None,
) -> tuple[ConformalCalibration, dict]:
    """LAC calibration on the exact-label rows of ``which`` in ``split`` (default: the card's split).

    The rows must be held out from training (the card's validation split; or a laboratory's own
    reviewed cells as a class-folder tree turned into a split file). ``datasets`` keeps only the
    rows of those data sets (e.g. the patient cohort the sets should cover).
    """
    return conformal_from(labelled_probs(card, split, which, tta, progress, "calibrate on", datasets), alpha)


def conformal_from(labelled: tuple, alpha: float = 0.1) -> tuple[ConformalCalibration, dict]:
    """:func:`fit_conformal` on probabilities already computed (the tuple of ``labelled_probs``)."""
    source, rows, y, probs, tta = labelled
    cal = calibrate(probs, y, alpha)
    source = {
        **{k: source[k] for k in ("split", "which", "n_cells")},
        "n_patients": len({r["patient_id"] for r in rows if r["patient_id"]}),
        "datasets": source["datasets"],
        "tta": tta,
    }
    return cal, source


def fit_tta_temperature(
    card: ModelCard,
    split: str | os.PathLike[str] | None = None,
    which: str = "val",
    tta: str | None = None,
    progress=None,
) -> tuple[float, dict]:
    """Temperature for the TTA-averaged probabilities (``p ** scale``, renormalised), fitted by
    negative log-likelihood on the exact-label rows of ``which`` (the rows the graph's temperature
    was fitted on). Any temperature already in the card is ignored while fitting."""
    from ..classify.core import sharpen

    source, _, y, probs, tta = labelled_probs(
        card, split, which, tta, progress, "fit a temperature on", ignore=("tta_temperature",)
    )
    grid = np.round(np.arange(0.5, 2.0001, 0.005), 3)
    nll = [-np.log(np.clip(sharpen(probs, s)[np.arange(len(y)), y], 1e-12, 1)).mean() for s in grid]
    scale = float(grid[int(np.argmin(nll))])
    source["nll_before"] = float(nll[int(np.argmin(np.abs(grid - 1.0)))])
    source["nll_after"] = float(min(nll))
    return scale, {"tta": tta, "scale": scale, "fitted_on": source}


def fit_entropy_gate(
    card: ModelCard,
    split: str | os.PathLike[str] | None = None,
    which: str = "val",
    tta: str | None = None,
    progress=None,
) -> dict:
    """The mean prediction entropy above which ``analyze --cell-scale auto`` searches a case's
    zoom: the highest per-patient mean entropy among the held-out patients of ``which`` (cases
    from the training sites), plus :data:`~leukomorph.classify.scale.AUTO_GATE_MARGIN`, rounded to
    0.1. Probabilities as ``analyze`` computes them (the card's TTA and its temperatures)."""
    _, rows = split_rows(card, split, which)
    datasets = patient_datasets(rows)
    if datasets is None:
        raise DataError(f"split {which!r} has no patients to set a cell-scale gate on")
    return entropy_gate_from(labelled_probs(card, split, which, tta, progress, "set a gate on", datasets))


def entropy_gate_from(labelled: tuple) -> dict:
    """:func:`fit_entropy_gate` on probabilities already computed (the tuple of
    ``labelled_probs``, restricted to the data sets with patients)."""
    from ..classify.scale import AUTO_GATE_MARGIN, mean_entropy

    source, rows, _, probs, tta = labelled
    pids = np.array([r["patient_id"] for r in rows])
    worst = max(mean_entropy(probs[pids == p]) for p in np.unique(pids))
    return {
        "auto_entropy_gate": round(worst + AUTO_GATE_MARGIN, 1),
        "max_patient_mean_entropy": round(worst, 4),
        "margin": AUTO_GATE_MARGIN,
        "fitted_on": {**source, "n_patients": len(np.unique(pids)), "tta": tta},
    }


def fit_colour_gate(
    card: ModelCard,
    split: str | os.PathLike[str] | None = None,
    n_reference: int = 600,
    per_group: int = 200,
    seed: int = 0,
) -> dict:
    """Reference background colour and gate for :func:`leukomorph.classify.scale.stain_shift`: the
    :func:`~leukomorph.stain.background_chroma` of ``n_reference`` random training crops of the
    split, and the largest distance from it among the training sites' cases (every training and
    validation patient, and each data set without patients as one case; up to ``per_group``
    crops each) plus :data:`COLOUR_GATE_MARGIN`, rounded to 0.1. Label-free: no class label is
    read, so the training patients serve as well as held-out ones (a colour range, not a fit)."""
    from ..classify.scale import even_sample
    from ..io import read_image
    from ..stain import background_chroma
    from .runner import _resolve

    path, train = split_rows(card, split, "train")
    _, val = split_rows(card, path, "val")
    rng = np.random.default_rng(seed)
    pick = [train[i] for i in sorted(rng.choice(len(train), min(n_reference, len(train)), replace=False))]
    ref = background_chroma(read_image(_resolve(r["path"])).pixels for r in pick)
    groups: dict[str, list[dict[str, str]]] = {}
    for r in train + val:
        groups.setdefault(r["patient_id"] or f"dataset:{r['dataset']}", []).append(r)

    def distance(rs: list[dict[str, str]]) -> float:
        picked = (read_image(_resolve(rs[i]["path"])).pixels for i in even_sample(len(rs), per_group))
        return float(np.hypot(*np.subtract(background_chroma(picked), ref)))

    dist = {g: distance(rs) for g, rs in groups.items()}
    worst = max(dist.values())
    return {
        "background_chroma": [round(v, 2) for v in ref],
        "colour_gate": round(worst + COLOUR_GATE_MARGIN, 1),
        "max_case_distance": round(worst, 2),
        "margin": COLOUR_GATE_MARGIN,
        "fitted_on": {
            "split": path.name,
            "n_reference_crops": len(pick),
            "cases": "training and validation patients; each data set without patients as one case",
            "n_cases": len(dist),
            "crops_per_case": per_group,
            "seed": seed,
        },
    }


#: the sharpness gate is this percentile of the training crops' sharpness
SHARPNESS_QUANTILE = 0.5


def fit_sharpness_gate(
    card: ModelCard, split: str | os.PathLike[str] | None = None, n: int = 1500, seed: int = 0
) -> dict:
    """The :mod:`leukomorph.qc` gate of a cell model: the SHARPNESS_QUANTILE-th percentile of
    :func:`leukomorph.qc.sharpness` over ``n`` random crops of the split's *training* rows, rounded
    to 0.1. Label-free (a range of the training images, not a fit to labels)."""
    from ..io import read_image
    from ..qc import sharpness
    from .runner import _resolve

    path, train = split_rows(card, split, "train")
    rng = np.random.default_rng(seed)
    pick = [train[i] for i in sorted(rng.choice(len(train), min(n, len(train)), replace=False))]
    vals = np.array([sharpness(read_image(_resolve(r["path"])).pixels, card.input_size) for r in pick])
    return {
        "sharpness_gate": round(float(np.percentile(vals, SHARPNESS_QUANTILE)), 1),
        "quantile": SHARPNESS_QUANTILE,
        "measure": "variance of the Laplacian of the grey levels of the crop prepared at the input size "
        "(leukomorph.qc.sharpness)",
        "median_training_crop": round(float(np.median(vals)), 1),
        "fitted_on": {"split": path.name, "which": "train", "n_crops": len(pick), "seed": seed},
    }


def write_quality_gate(card_path: str | os.PathLike[str], gate: dict) -> None:
    """Store a :func:`fit_sharpness_gate` result under ``inference.quality`` of the card JSON."""
    _set_inference(card_path, "quality", gate)


def write_unfamiliar(card_path: str | os.PathLike[str], model: str, gate: dict) -> None:
    """Name ``model`` (registry name or card path) for the card's unfamiliar, stain-shifted cases
    and store the :func:`fit_colour_gate` result beside it under ``inference.unfamiliar``."""
    _set_inference(card_path, "unfamiliar", {"model": model, **gate})


def patient_datasets(rows: list[dict[str, str]]) -> list[str] | None:
    """The data sets of ``rows`` that carry patient ids, or None when none does.

    Conformal sets are calibrated on held-out *patients* when there are any: their cells are what
    the tool is used on, and pooling them with easier images without patients (PBC's healthy-donor
    crops) sets the threshold too low for patients (DeepAPL test coverage 0.849 at a nominal 0.90
    for leukomorph-cell 2.0.0, against 0.892 when calibrated on the validation patients alone).
    """
    found = sorted({r["dataset"] for r in rows if r["patient_id"]})
    return found or None


def _set_inference(card_path: str | os.PathLike[str], key: str, value: dict) -> None:
    """Write ``inference.<key>`` of a card JSON (the weight file, and so the sha256, is untouched)."""
    p = Path(card_path)
    raw = json.loads(p.read_text())
    raw.setdefault("inference", {})[key] = value
    p.write_text(jsonio.dumps(raw, indent=1))


def write_tta_temperature(card_path: str | os.PathLike[str], value: dict) -> None:
    """Store a :func:`fit_tta_temperature` result under ``inference.tta_temperature`` of the card JSON."""
    _set_inference(card_path, "tta_temperature", value)


def write_entropy_gate(card_path: str | os.PathLike[str], value: dict) -> None:
    """Store a :func:`fit_entropy_gate` result under ``inference.scale`` of the card JSON, beside
    what else the card keeps there (e.g. ``nucleus_fraction``)."""
    old = json.loads(Path(card_path).read_text()).get("inference", {}).get("scale") or {}
    _set_inference(card_path, "scale", {**old, **value})


def write_conformal(card_path: str | os.PathLike[str], cal: ConformalCalibration, source: dict) -> None:
    """Store the calibration under ``inference.conformal`` of the card JSON (the ONNX file is untouched)."""
    _set_inference(card_path, "conformal", {**cal.to_dict(), "fitted_on": source})


def write_confusion(card_path: str | os.PathLike[str], metrics: dict) -> None:
    """Store the pooled held-out confusion matrix (taxonomy classes, rows true) of a
    :func:`~leukomorph.evaluation.runner.run_evaluation` result under ``inference.confusion`` of the
    card (used by the confusion-corrected differential; the ONNX file is untouched)."""
    total, classes, parts = None, None, {}
    for ds, reps in metrics["sources"].items():
        rep = reps["taxonomy"]
        cm = np.array(rep["confusion"], int)
        classes = classes or rep["classes"]
        if list(rep["classes"]) != list(classes):
            raise ValueError("per-source confusion matrices use different class orders")
        total = cm if total is None else total + cm
        parts[ds] = int(cm.sum())
    if classes and classes[-1] == "(other)":  # evaluate_predictions' column for labels outside the classes
        total, classes = total[:-1, :-1], classes[:-1]
    confusion = {
        "classes": list(classes),
        "counts": total.tolist(),
        "rows": "true class (exact labels only)",
        "columns": "predicted class",
        "source": {
            "split": metrics["split"].rsplit("/", 1)[-1],
            "which": metrics["which"],
            "tta": metrics["tta"],
            "cells": parts,
        },
    }
    _set_inference(card_path, "confusion", confusion)
