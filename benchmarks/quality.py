"""Image quality control (leukomorph.qc): which crops the sharpness gate flags, and why it matters.

    python benchmarks/quality.py [--n 800] [--model leukomorph-cell]

The gate is the 0.5th percentile of the sharpness of the model's *training* crops (in its card,
``inference.quality``). Rows: held-out test crops of the model's split (PBC and DeepAPL, a random
sample) as given, blurred (Gaussian, sigma in pixels of the model input) and at a lower
resolution (shrunk, then enlarged back); then the other cameras of seg_wbc (kept out of
training). Columns: the share flagged as blurred or low resolution, and the model's accuracy on
the exactly labelled test crops (taxonomy classes) in each condition, so that what a flag warns
of can be read off.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from leukomorph.classify import classify_crops, recommended_tta
from leukomorph.classify.preprocess import prepare_crop
from leukomorph.data import load_seg_wbc
from leukomorph.evaluation.runner import _resolve, default_split, read_split
from leukomorph.io import read_image
from leukomorph.models.registry import get_card, load_classifier
from leukomorph.qc import model_quality_gate, sharpness


def _degrade(img: np.ndarray, size: int, kind: str, amount: float) -> np.ndarray:
    c = prepare_crop(img, size)
    if kind == "blur":
        return cv2.GaussianBlur(c, (0, 0), amount)
    small = cv2.resize(c, (max(8, round(size * amount)),) * 2, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--model", default="leukomorph-cell")
    a = ap.parse_args()
    card = get_card(a.model)
    model = load_classifier(a.model)
    gate = model_quality_gate(model)
    if gate is None:
        raise SystemExit(f"{card.name} sets no sharpness gate")
    tta = recommended_tta(model)
    rows = [r for r in read_split(default_split(card)) if r["split"] == "test" and "|" not in r["classes"]]
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in sorted(rng.choice(len(rows), min(a.n, len(rows)), replace=False))]
    imgs = [read_image(_resolve(r["path"])).pixels for r in rows]
    truth = [r["classes"] for r in rows]
    print(f"{card.name} {card.version}: sharpness gate {gate.sharpness_gate:g} at {gate.size} px ({gate.source})")
    print(f"{len(rows)} test crops (PBC and DeepAPL, exact labels)\n")
    print("| crops | flagged blurred or low resolution | accuracy (all) | accuracy (not flagged) |")
    print("|---|---:|---:|---:|")
    conditions = [("as given", None, 0)] + [(f"blur sigma {s:g} px", "blur", s) for s in (0.7, 1.0, 1.5, 2.0)]
    conditions += [(f"resolution x{f:g}", "res", f) for f in (0.5, 0.33)]
    for label, kind, amount in conditions:
        crops = imgs if kind is None else [_degrade(im, gate.size, kind, amount) for im in imgs]
        low = np.array([gate.low(sharpness(c, gate.size)) for c in crops])
        preds = classify_crops(model, crops, [""] * len(crops), tta=tta)
        hit = np.array([p.predicted_class == t for p, t in zip(preds, truth, strict=True)])
        ok = f"{hit[~low].mean():.3f}" if (~low).any() else "–"
        print(f"| {label} | {low.mean():.3f} | {hit.mean():.3f} | {ok} |")
    print("\nOther cameras (seg_wbc, never trained on):\n")
    print("| domain | crops | native size | flagged |")
    print("|---|---:|---|---:|")
    recs = load_seg_wbc()
    for dom, name in (("dataset1", "Tecom camera"), ("dataset2", "CellaVision blog")):
        ims = [read_image(r.path).pixels for r in recs if f"/{dom}/" in r.path]
        low = np.array([gate.low(sharpness(im, gate.size)) for im in ims])
        sizes = sorted({f"{im.shape[1]}×{im.shape[0]}" for im in ims})
        print(f"| {name} | {len(ims)} | {', '.join(sizes[:3])} | {low.mean():.3f} |")


if __name__ == "__main__":
    main()
