"""Cross-domain test: white cells from cameras/stains the model never trained on (seg_wbc).

    python benchmarks/cross_domain.py [--model leukomorph-cell] [--tta flip] [--half A|B|all] [--fallback CARD]

seg_wbc (Zheng et al. 2018) has two domains, both kept out of training: dataset1 (Jiangxi Tecom
camera, 120 px, 300 cells) and dataset2 (CellaVision images from a blog, 300 px, 50 cells). The
model's predictions are mapped to the 5 mature classes (neutrophil = segmented + band,
lymphocyte = lymphocyte + variant); any other predicted class counts as an error. Rows:
preprocessing variants, all label-free, each domain treated as one case (stain: Reinhard to the
model's reference; scale: "nucleus" = the nucleus-size zoom of leukomorph.classify.scale.case_zoom,
"auto" = what `analyze --cell-scale auto` does: the confidence search of
leukomorph.classify.scale.search_zoom, or, for a case that is unfamiliar and whose background colour
is off the training sites' (leukomorph.classify.scale.route_unfamiliar), the model the card names for
unfamiliar cases after a case-level stain transfer (classify_unfamiliar); "auto, cell model alone" =
the search without that model).
Halves: the cells are split by the first hex digit of sha1(path relative to seg_wbc/) (even: A, odd:
B). Half A chose how unfamiliar cases are handled (rules in the README); half B never chose anything.
95% CIs: bootstrap over cells (no patient ids exist).
Last, each domain as one case, as analyze ships it: the suggestion of the count rules (healthy-donor
cells, so anything but no_leukemic_pattern is a false alarm; an urgent "apl_suspected" vetoes a
model for unfamiliar cases). --fallback measures a candidate model for unfamiliar cases without
installing it.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np

from leukomorph.aggregate import differential, suggest
from leukomorph.classify import classify_crops, recommended_tta
from leukomorph.classify.scale import (
    case_zoom,
    classify_unfamiliar,
    mean_entropy,
    model_nucleus_fraction,
    route_unfamiliar,
    search_zoom,
    unfamiliar_fallback,
)
from leukomorph.data import load_seg_wbc
from leukomorph.evaluation.metrics import evaluate_predictions
from leukomorph.io import read_image
from leukomorph.models.registry import load_classifier
from leukomorph.taxonomy import WBC5_GROUP, WBC5_LABELS

STAINS = ("none", "reinhard")
SCALES = ("none", "nucleus", "auto, cell model alone", "auto")


def half_of(path: str) -> str:
    """The seg_wbc half (A or B) of an image path."""
    rel = str(path).replace("\\", "/").split("seg_wbc/", 1)[1]
    return "A" if int(hashlib.sha1(rel.encode()).hexdigest()[0], 16) % 2 == 0 else "B"


def _unfamiliar(model, fallback, imgs, tta: str):
    """As analyze: predictions and a zoom text when the case goes to the model for unfamiliar cases, else None."""
    native = classify_crops(model, imgs, [""] * len(imgs), tta=tta)
    h = mean_entropy(np.array([p.probabilities for p in native]))
    shift = route_unfamiliar(model, imgs, h, fallback is not None)
    if shift is None or not shift.shifted:
        return None
    preds, info = classify_unfamiliar(fallback, imgs, [""] * len(imgs), model.classes)
    return preds, f"{info['zoom']:g} ({info['model']['name']}, stain shift {shift.distance:.1f} > {shift.gate:g})"


def _zoom(scale: str, model, imgs, stain: str, tta: str) -> tuple[float, str]:
    """The zoom of one domain (one case) under a label-free scale method."""
    if scale == "none":
        return 1.0, "1 (none)"
    scale = scale.split(",")[0]
    if scale == "nucleus":
        z = case_zoom(imgs, model_nucleus_fraction(model))
        return z, f"{z:.2f} (nucleus)"
    native = classify_crops(model, imgs, [""] * len(imgs), tta=tta, stain=stain)
    ch = search_zoom(model, imgs, mean_entropy(np.array([p.probabilities for p in native])), tta=tta)
    return ch.zoom, f"{ch.zoom:g} (auto, H={ch.mean_entropy:.2f}{'' if ch.searched else ', not searched'})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="leukomorph-cell", help="registry name or card path")
    ap.add_argument("--tta", default=None)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--half", default="all", choices=("A", "B", "all"), help="seg_wbc half (see the docstring)")
    ap.add_argument(
        "--fallback",
        default=None,
        help="model for unfamiliar cases, registry name or card path (default: the one --model's card names)",
    )
    a = ap.parse_args()
    model = load_classifier(a.model)
    tta = a.tta or recommended_tta(model)
    fb = a.fallback or unfamiliar_fallback(model)
    fallback = load_classifier(fb) if fb else None
    recs = [r for r in load_seg_wbc() if a.half == "all" or half_of(r.path) == a.half]
    print(f"seg_wbc half: {a.half} ({len(recs)} cells)")
    print(f"model {model.card.name} {model.card.version} (sha256 {model.card.sha256[:12]}), tta {tta}")
    print("| domain | stain | scale (zoom) | n | 5-class accuracy (95% CI) | macro-F1 | per-class recall |")
    print("|---|---|---|---|---|---|---|")
    pooled: dict[tuple[str, str], tuple[list, list]] = {}
    as_case = {}
    for domain in ("dataset1", "dataset2"):
        rs = [r for r in recs if r.source_label.startswith(domain + "/")]
        imgs = [read_image(r.path).pixels for r in rs]
        truth = [r.source_label.split("/")[1] for r in rs]
        for stain in STAINS:
            for scale in SCALES:
                if stain != "none" and scale == "auto":
                    continue  # the model for unfamiliar cases brings its own stain transfer
                got = _unfamiliar(model, fallback, imgs, tta) if scale == "auto" and stain == "none" else None
                if got is not None:
                    preds, ztxt = got
                else:
                    z, ztxt = _zoom(scale, model, imgs, stain, tta)
                    preds = classify_crops(model, imgs, [r.path for r in rs], tta=tta, stain=stain, zoom=z)
                if scale == "auto":  # as analyze ships it
                    as_case[domain] = preds
                pred5 = [WBC5_GROUP.get(p.predicted_class) or "(other)" for p in preds]
                _row(domain, stain, ztxt, truth, pred5, a.n_boot)
                t, pr = pooled.setdefault((stain, scale), ([], []))
                t += truth
                pr += pred5
    for (stain, scale), (truth, pred5) in pooled.items():
        _row("all", stain, f"{scale}, per domain", truth, pred5, a.n_boot)
    # the safety side: these are healthy-donor white cells, so no leukemic pattern should be suggested
    print("\nEach domain as one `analyze` case (as shipped; count rules only: a learned score is not applicable to an")
    print("unfamiliar case). Healthy-donor cells: any suggestion other than no_leukemic_pattern is a false alarm.\n")
    print("| domain | cells | suggestion | urgent | blast equivalents % | promyelocytes % |")
    print("|---|---:|---|---|---:|---:|")
    for domain, preds in as_case.items():
        diff = differential(preds, model.classes)
        sug = suggest(diff, preds)
        pct = {c.name: c.percent for c in diff.counts}
        print(
            f"| {domain} | {len(preds)} | {sug.code} | {'yes' if sug.urgent else 'no'} | "
            f"{diff.blast_percent:.1f} | {pct.get('promyelocyte', 0):.1f} |"
        )


def _row(domain: str, stain: str, ztxt: str, truth: list, pred5: list, n_boot: int) -> None:
    rep = evaluate_predictions(truth, pred5, list(WBC5_LABELS), None, n_boot)
    acc, (lo, hi) = rep.summary["accuracy"], rep.summary_ci["accuracy"]
    rec = ", ".join(f"{c[:4]} {v['recall']:.2f}" for c, v in rep.per_class.items() if v["support"] > 0)
    print(
        f"| {domain} | {stain} | {ztxt} | {rep.n} | {acc:.3f} ({lo:.3f}–{hi:.3f}) | "
        f"{rep.summary['macro_f1']:.3f} | {rec} |"
    )


if __name__ == "__main__":
    main()
