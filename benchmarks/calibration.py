"""Calibration table: ECE and NLL before/after temperature scaling, conformal coverage and set size.

    python benchmarks/calibration.py [--model leukomorph-cell] [--which test]

"Before" undoes the temperature baked into the ONNX graph and the card's temperature for the
averaged test-time-augmentation views (softmax(T / s · log p), exact for a single view); "after" is
what the model outputs. Conformal rows use the card's calibration (fitted on the
validation patients) and are measured on the held-out test split, overall and per data set.
ECE: 15 equal-width confidence bins, exact labels only.
"""

from __future__ import annotations

import argparse

import numpy as np

from leukomorph.classify import coverage, model_conformal, recommended_tta
from leukomorph.evaluation.metrics import bootstrap_ci
from leukomorph.evaluation.runner import _ece, exact_targets, predict_rows, split_rows
from leukomorph.models.registry import get_card, load_classifier


def _temperature(card) -> float:
    text = card.raw.get("output", {}).get("calibration", "")
    try:
        return float(text.split("T=")[1].split(",")[0])
    except (IndexError, ValueError):
        return 1.0


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="leukomorph-cell")
    ap.add_argument("--which", default="test")
    a = ap.parse_args()
    card = get_card(a.model)
    model = load_classifier(a.model)
    _, rows = split_rows(card, None, a.which)
    idx, y = exact_targets(rows)
    rows = [rows[i] for i in idx]
    probs = np.array([p.probabilities for p in predict_rows(model, rows, recommended_tta(model))])
    t = _temperature(card)
    s = (card.raw.get("inference", {}).get("tta_temperature") or {}).get("scale", 1.0)
    logit = t / s * np.log(np.clip(probs, 1e-12, 1))
    raw = np.exp(logit - logit.max(1, keepdims=True))
    raw /= raw.sum(1, keepdims=True)
    ds = np.array([r["dataset"] for r in rows])
    groups = np.array([r["patient_id"] or f"g{r['group']}" for r in rows])
    print(f"model {card.name} {card.version} ({card.sha256[:12]}), split {a.which}, T = {t:.3f}, TTA s = {s:.3f}\n")
    print("| cells | n | ECE before T | ECE after T (95% CI) | NLL before | NLL after |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ["all", *sorted(set(ds))]:
        m = np.ones(len(y), bool) if name == "all" else ds == name
        pm, ym = probs[m], y[m]
        lo, hi = bootstrap_ci(lambda sel, p=pm, t=ym: _ece(p[sel], t[sel])["ece"], list(groups[m]), 500)
        print(
            f"| {name} | {m.sum()} | {_ece(raw[m], ym)['ece']:.4f} | {_ece(pm, ym)['ece']:.4f} ({lo:.4f}-{hi:.4f}) | "
            f"{_nll(raw[m], ym):.3f} | {_nll(pm, ym):.3f} |"
        )
    cal = model_conformal(model)
    if cal is None:
        print("\nno conformal calibration in the card")
        return
    fitted = card.raw["inference"]["conformal"].get("fitted_on", {})
    print(
        f"\nconformal (LAC), nominal coverage {1 - cal.alpha:.0%}, fitted on {cal.n_calibration} validation cells "
        f"of {', '.join(fitted.get('datasets', ['?']))} ({fitted.get('n_patients', 0)} patients); "
        "95% CI by resampling patients (PBC: near-duplicate clusters)\n"
    )
    print("| cells | n | coverage (95% CI) | mean set size | singletons |")
    print("|---|---:|---:|---:|---:|")
    for name in ["all", *sorted(set(ds))]:
        m = np.ones(len(y), bool) if name == "all" else ds == name
        c = coverage(probs[m], y[m], cal)
        hit = probs[m][np.arange(m.sum()), y[m]] >= cal.threshold
        lo, hi = bootstrap_ci(lambda sel, h=hit: float(h[sel].mean()), list(groups[m]), 1000)
        print(
            f"| {name} | {c['n']} | {c['coverage']:.3f} ({lo:.3f}-{hi:.3f}) | {c['mean_set_size']:.2f} | "
            f"{c['share_singletons']:.1%} |"
        )


if __name__ == "__main__":
    main()
