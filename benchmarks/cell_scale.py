"""Automatic cell scale (`analyze --cell-scale auto`) on held-out patients re-imaged at another magnification.

    python benchmarks/cell_scale.py [--model leukomorph-cell] [--zooms 2 0.6] [--which test|val]
        [--unfamiliar-model NAME|CARD|none]

Each DeepAPL test patient of the model's split is one case, analysed as given and after zooming
every crop about its centre (×2: a camera/objective at twice the training magnification; ×0.6:
at 0.6 times it, padded with the slide background). For each case the search of
leukomorph.classify.scale.search_zoom decides, without labels, whether and how to rescale. The
table gives the pooled cell accuracy (taxonomy classes, exact labels) before and after, with 95%
CIs resampling patients, how many cases were searched and the zooms chosen (the ideal zoom is
1 / the applied one). As in ``analyze``, a case the model finds unfamiliar (mean entropy above its
gate) whose background colour is also off the training sites' (leukomorph.classify.scale.route_unfamiliar)
goes to the model its card names for unfamiliar cases (leukomorph.classify.scale.classify_unfamiliar;
counted as "x<zoom>" in the zooms column); ``--unfamiliar-model none``: the cell model alone.
No seg_wbc image is used: this checks the method on data whose truth is known.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from leukomorph.classify import classify_crops, recommended_tta
from leukomorph.classify.preprocess import zoom_crop
from leukomorph.classify.scale import (
    classify_unfamiliar,
    mean_entropy,
    route_unfamiliar,
    search_zoom,
    unfamiliar_fallback,
)
from leukomorph.evaluation.metrics import bootstrap_ci
from leukomorph.evaluation.runner import _resolve, default_split, read_split
from leukomorph.io import read_image
from leukomorph.models.registry import get_card, load_classifier


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="leukomorph-cell")
    ap.add_argument("--zooms", type=float, nargs="*", default=[2.0, 0.6])
    ap.add_argument("--which", default="test", choices=("test", "val"), help="split rows (val: for choosing models)")
    ap.add_argument(
        "--unfamiliar-model", default=None, help="model for unfamiliar cases (default: the card's; none: off)"
    )
    a = ap.parse_args()
    card = get_card(a.model)
    model = load_classifier(a.model)
    tta = recommended_tta(model)
    fb_name = unfamiliar_fallback(model) if a.unfamiliar_model is None else a.unfamiliar_model
    fallback = load_classifier(fb_name) if fb_name and fb_name != "none" else None
    if fallback is not None:
        print(f"unfamiliar cases: {fallback.card.name} {fallback.card.version} ({fallback.card.sha256[:12]})")
    rows = [
        r
        for r in read_split(default_split(card))
        if r["split"] == a.which and r["dataset"] == "deepapl" and "|" not in r["classes"]
    ]
    by_patient = defaultdict(list)
    for r in rows:
        by_patient[r["patient_id"]].append(r)
    print(f"model {card.name} {card.version} ({card.sha256[:12]}), tta {tta}, {len(by_patient)} {a.which} patients\n")
    print(
        "| re-imaged at | cases searched | zooms chosen | accuracy as given (95% CI) | accuracy, auto scale (95% CI) |"
    )
    print("|---|---:|---|---:|---:|")
    for applied in [1.0, *a.zooms]:
        hit0, hit1, groups, searched, chosen = [], [], [], 0, Counter()
        for pid, rs in sorted(by_patient.items()):
            crops = [zoom_crop(read_image(_resolve(r["path"])).pixels, applied) for r in rs]
            truth = [r["classes"] for r in rs]
            pred = classify_crops(model, crops, [""] * len(crops), tta=tta)
            native = mean_entropy(np.array([p.probabilities for p in pred]))
            shift = route_unfamiliar(model, crops, native, fallback is not None)
            if shift is not None and shift.shifted:
                pred2, info = classify_unfamiliar(fallback, crops, [""] * len(crops), model.classes)
                searched += 1
                chosen[f"x{info['zoom']:g}"] += 1
            else:
                choice = search_zoom(model, crops, native, tta=tta)
                searched += choice.searched
                chosen[f"{choice.zoom:g}"] += 1
                if choice.zoom != 1.0:
                    pred2 = classify_crops(model, crops, [""] * len(crops), tta=tta, zoom=choice.zoom)
                else:
                    pred2 = pred
            hit0 += [p.predicted_class == t for p, t in zip(pred, truth, strict=True)]
            hit1 += [p.predicted_class == t for p, t in zip(pred2, truth, strict=True)]
            groups += [pid] * len(rs)
        h0, h1 = np.array(hit0, float), np.array(hit1, float)
        ci0 = bootstrap_ci(lambda s, h=h0: float(h[s].mean()), groups, 1000)
        ci1 = bootstrap_ci(lambda s, h=h1: float(h[s].mean()), groups, 1000)
        zs = ", ".join(f"{z}: {n}" for z, n in sorted(chosen.items()))
        print(
            f"| ×{applied:g} | {searched}/{len(by_patient)} | {zs} | {h0.mean():.3f} ({ci0[0]:.3f}–{ci0[1]:.3f}) | "
            f"{h1.mean():.3f} ({ci1[0]:.3f}–{ci1[1]:.3f}) |"
        )


if __name__ == "__main__":
    main()
