"""Cross-domain test: white cells from cameras/stains the model never trained on (seg_wbc).

    python benchmarks/cross_domain.py [--model leukomorph-cell] [--tta flip]

seg_wbc (Zheng et al. 2018) has two domains, both kept out of training: dataset1 (Jiangxi Tecom
camera, 120 px, 300 cells) and dataset2 (CellaVision images from a blog, 300 px, 50 cells). The
model's predictions are mapped to the 5 mature classes (neutrophil = segmented + band,
lymphocyte = lymphocyte + variant); any other predicted class counts as an error. Rows:
preprocessing variants, all label-free (stain: Reinhard to the model's reference; scale: the
case-level zoom of leukomorph.classify.scale, computed per domain from the images alone).
95% CIs: bootstrap over cells (no patient ids exist).
"""

from __future__ import annotations

import argparse

from leukomorph.classify import classify_crops, recommended_tta
from leukomorph.classify.scale import case_zoom, model_nucleus_fraction
from leukomorph.data import load_seg_wbc
from leukomorph.evaluation.metrics import evaluate_predictions
from leukomorph.io import read_image
from leukomorph.models.registry import load_classifier
from leukomorph.taxonomy import WBC5_GROUP, WBC5_LABELS

VARIANTS = [("none", False), ("reinhard", False), ("none", True), ("reinhard", True)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="leukomorph-cell", help="registry name or card path")
    ap.add_argument("--tta", default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args()
    model = load_classifier(a.model)
    tta = a.tta or recommended_tta(model)
    recs = load_seg_wbc()
    print(f"model {model.card.name} {model.card.version} (sha256 {model.card.sha256[:12]}), tta {tta}")
    print("| domain | stain | scale (zoom) | n | 5-class accuracy (95% CI) | macro-F1 | per-class recall |")
    print("|---|---|---|---|---|---|---|")
    for domain in ("dataset1", "dataset2", "all"):
        rs = [r for r in recs if domain == "all" or r.source_label.startswith(domain + "/")]
        imgs = [read_image(r.path).pixels for r in rs]
        truth = [r.source_label.split("/")[1] for r in rs]
        for stain, scale in VARIANTS:
            if scale and domain == "all":
                preds = []
                for d in ("dataset1", "dataset2"):
                    ii = [i for i, r in enumerate(rs) if r.source_label.startswith(d + "/")]
                    sub = [imgs[i] for i in ii]
                    z = case_zoom(sub, model_nucleus_fraction(model))
                    preds += classify_crops(model, sub, [rs[i].path for i in ii], tta=tta, stain=stain, zoom=z)
                truth_v = [
                    truth[i]
                    for d in ("dataset1", "dataset2")
                    for i, r in enumerate(rs)
                    if r.source_label.startswith(d + "/")
                ]
                ztxt = "per domain"
            else:
                z = case_zoom(imgs, model_nucleus_fraction(model)) if scale else 1.0
                preds = classify_crops(model, imgs, [r.path for r in rs], tta=tta, stain=stain, zoom=z)
                truth_v = truth
                ztxt = f"{z:.2f}" if scale else "1 (none)"
            pred5 = [WBC5_GROUP.get(p.predicted_class) or "(other)" for p in preds]
            rep = evaluate_predictions(truth_v, pred5, list(WBC5_LABELS), None, a.n_boot)
            acc, (lo, hi) = rep.summary["accuracy"], rep.summary_ci["accuracy"]
            rec = ", ".join(f"{c[:4]} {v['recall']:.2f}" for c, v in rep.per_class.items() if v["support"] > 0)
            print(
                f"| {domain} | {stain} | {ztxt} | {rep.n} | {acc:.3f} ({lo:.3f}–{hi:.3f}) | "
                f"{rep.summary['macro_f1']:.3f} | {rec} |"
            )


if __name__ == "__main__":
    main()
