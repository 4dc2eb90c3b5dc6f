"""The APL-vs-AML score when the images shift: colour, stain, focus, compression (train extra:
torch, scikit-learn).

Usage: python benchmarks/case_shift.py [--cache runs/case-cells/cell_embeddings.npz]

A prospective cohort is imaged later, perhaps with another stain batch, lamp or camera setting. This
re-runs the shipped ensemble's cross-validation (3× 5-fold over the 82 DeepAPL patients, the card's
folds and seeds, members fitted on the cells as given) and scores each out-of-fold patient on all
its cells after one shift applied to every cell, re-classified by the shipped cell model. Printed
per shift: the AUROC (mean over repeats, with its range), the share of APL and of AML patients
flagged at 0.5 after the shipped Platt scaling (over repeats), and the median absolute change of a
patient's score. The model-level score only: ``analyze`` would also judge such a case's
familiarity (an unfamiliar case's score is reported but not used by the rules). The cell model
trained on most of these patients' labelled cells, so every row is optimistic in the same way.
About 7 min on 2 cores (each shift re-reads and re-classifies 13,973 cells).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from leukomorph.aggregate.case_model import load_case_model
from leukomorph.classify import classify_crops, recommended_tta
from leukomorph.data import data_root
from leukomorph.io import read_image
from leukomorph.models import DEFAULT_CASE_MODEL
from leukomorph.training.case_ensemble import cv_folds, ensemble_data, member_scores


def _gamma(g: float):
    return lambda x: np.clip(255 * (x / 255.0) ** g, 0, 255)


def _gains(r: float, g: float, b: float):
    return lambda x: np.clip(x * np.array([r, g, b], np.float32), 0, 255)


def _saturation(f: float):
    def shift(x):
        grey = x.mean(2, keepdims=True)
        return np.clip(grey + (x - grey) * f, 0, 255)

    return shift


def _blur(sigma: float):
    return lambda x: cv2.GaussianBlur(x, (0, 0), sigma)


def _jpeg(quality: int):
    def shift(x):
        buf = io.BytesIO()
        Image.fromarray(x.astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32)

    return shift


SHIFTS = {
    "darker (gamma 1.25)": _gamma(1.25),
    "lighter (gamma 0.8)": _gamma(0.8),
    "redder stain (R ×1.08, G ×0.95)": _gains(1.08, 0.95, 1.0),
    "bluer stain (R ×0.93, B ×1.08)": _gains(0.93, 1.0, 1.08),
    "paler (saturation ×0.7)": _saturation(0.7),
    "out of focus (blur σ 1 px)": _blur(1.0),
    "JPEG quality 70": _jpeg(70),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("runs/case-cells/cell_embeddings.npz"))
    args = ap.parse_args()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    ens = load_case_model(DEFAULT_CASE_MODEL)
    d = ensemble_data(ens.mil.name, ens.lr.name, cache=args.cache)
    rows, by_patient, patients, y, model = d.rows, d.by_patient, d.patients, d.y, d.model
    base, tta = data_root() / "deepapl", recommended_tta(model)
    shifted: dict[str, tuple[list, list]] = {}  # shift → per patient (embeddings, probabilities)
    for name, fn in SHIFTS.items():
        probs, emb = [], []
        for s in range(0, len(rows), 256):
            chunk = rows[s : s + 256]
            crops = [fn(read_image(base / r["path"]).pixels.astype(np.float32)).astype(np.uint8) for r in chunk]
            preds = classify_crops(model, crops, [r["path"] for r in chunk], tta=tta, embeddings=True)
            probs += [p.probabilities for p in preds]
            emb += [p.embedding for p in preds]
        probs, emb = np.array(probs, np.float32), np.array(emb, np.float32)
        shifted[name] = ([emb[by_patient[p]] for p in patients], [probs[by_patient[p]] for p in patients])
    raw = {name: np.zeros((3, len(y))) for name in ["as given", *SHIFTS]}
    for r, te, members in cv_folds(d, 3):
        for name in raw:
            bags, probs = (d.bags, d.probs) if name == "as given" else shifted[name]
            s_mil, s_lr = member_scores(members, [bags[i] for i in te], [probs[i] for i in te], d)
            raw[name][r, te] = (s_mil + s_lr) / 2

    print(
        f"{ens.name} {ens.version} on cell model {d.cell['name']} {d.cell['version']}: {len(y)} DeepAPL patients "
        f"({int(y.sum())} APL), 3× 5-fold, members fitted on the cells as given\n"
    )
    print("| every cell of the patient | AUROC, mean (range) | APL flagged | AML flagged | median abs. score change |")
    print("|---|---:|---:|---:|---:|")
    clean = ens.calibrate(raw["as given"])
    for name, s in raw.items():
        aucs = [roc_auc_score(y, s[r]) for r in range(3)]
        p = ens.calibrate(s)
        print(
            f"| {name} | {np.mean(aucs):.3f} ({min(aucs):.3f}–{max(aucs):.3f}) | {(p[:, y == 1] >= 0.5).mean():.2f} "
            f"| {(p[:, y == 0] >= 0.5).mean():.3f} | {np.median(np.abs(p - clean)):.3f} |"
        )


if __name__ == "__main__":
    main()
