"""Image quality control (leukomorph.qc): which crops the sharpness gate flags, and why it matters.

    python benchmarks/quality.py [--n 800] [--model leukomorph-cell] [--blank]

The gate is the 0.5th percentile of the sharpness of the model's *training* crops (in its card,
``inference.quality``). Rows: held-out test crops of the model's split (PBC and DeepAPL, a random
sample) as given, blurred (Gaussian, sigma in pixels of the model input) and at a lower
resolution (shrunk, then enlarged back); then the other cameras of seg_wbc (kept out of
training). Columns: the share flagged as blurred or low resolution, and the model's accuracy on
the exactly labelled test crops (taxonomy classes) in each condition, so that what a flag warns
of can be read off.

``--blank`` adds the margin of the blank-crop check (leukomorph.qc.blank_reason): the lowest
grey-level spread among every crop of pbc, deepapl and seg_wbc and among txl_pbc's white cells
cut from their fields by the field crop rule, against the gate BLANK_SPREAD (about 2 min).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from leukomorph.classify import classify_crops, recommended_tta
from leukomorph.classify.preprocess import prepare_crop
from leukomorph.data import load_seg_wbc
from leukomorph.evaluation.runner import _resolve, default_split, read_split
from leukomorph.io import read_image
from leukomorph.models.registry import get_card, load_classifier
from leukomorph.qc import BLANK_SPREAD, grey_spread, model_quality_gate, sharpness


def _degrade(img: np.ndarray, size: int, kind: str, amount: float) -> np.ndarray:
    c = prepare_crop(img, size)
    if kind == "blur":
        return cv2.GaussianBlur(c, (0, 0), amount)
    small = cv2.resize(c, (max(8, round(size * amount)),) * 2, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def blank_margin() -> None:
    """Lowest grey-level spread of real crops, per source, against the blank-crop gate."""
    from concurrent.futures import ThreadPoolExecutor

    from leukomorph.data import data_root
    from leukomorph.data.datasets import load_txl
    from leukomorph.detect import Detection
    from leukomorph.pipeline import field_crop

    root = data_root()
    print(f"\nBlank-crop check: gate {BLANK_SPREAD:g} (grey levels, 99th - 1st percentile)\n")
    print("| crops | n | lowest spread | 1st percentile |")
    print("|---|---:|---:|---:|")
    sets = {
        "pbc": sorted(root.glob("pbc/images/*/*.webp")),
        "deepapl": sorted(root.glob("deepapl/images/*/*/*.webp")),
        "seg_wbc": [Path(r.path) for r in load_seg_wbc()],
    }
    for name, files in sets.items():
        with ThreadPoolExecutor(2) as ex:
            s = np.array(list(ex.map(lambda f: grey_spread(read_image(f).pixels), files)))
        print(f"| {name} | {len(s)} | {s.min():.1f} | {np.percentile(s, 1):.1f} |")
    by: dict[str, list[float]] = {}
    for split in ("train", "val"):
        for it in load_txl(split):
            for b in it["boxes"][it["labels"] == 0]:
                d = Detection(int(b[0]), int(b[1]), int(b[2]), int(b[3]), 1.0, "white_blood_cell")
                by.setdefault(it["source"], []).append(grey_spread(field_crop(it["image"], d)))
    for src, v in sorted(by.items()):
        print(f"| txl_pbc {src} white cells (field crops) | {len(v)} | {min(v):.1f} | {np.percentile(v, 1):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--model", default="leukomorph-cell")
    ap.add_argument("--blank", action="store_true", help="also the blank-crop check's margin on every crop")
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
    if a.blank:
        blank_margin()


if __name__ == "__main__":
    main()
