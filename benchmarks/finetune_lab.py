"""A laboratory with another camera learns from its own reviewed cells (`leukomorph finetune`).

    python benchmarks/finetune_lab.py [--out runs/finetune-lab] [--epochs 6] [--replay-size 4000]

Needs the train extra (torch). The "laboratory" is seg_wbc's Tecom camera (dataset1: 300
healthy-donor white cells, 5 classes, a camera and stain the shipped model never saw): its half A
(the cross-domain benchmark's halves: first hex digit of sha1 of the path) plays the reviewed
cells, cut into cases of 15 cells in file order (seg_wbc has no patient ids), neutrophils with the
partial label segmented|band as the source gives them; half B plays the laboratory's later cases
and is used for nothing but the final measurement. The shipped default is fine-tuned on half A
with replayed crops of its own training split (up to --epochs epochs, the one kept chosen on
the laboratory's validation cases), then base and fine-tuned models classify half B
as given (no zoom search, no stain transfer): 5-class accuracy with a 95% bootstrap CI over cells.
finetune.json adds both models on the base model's validation split (PBC, DeepAPL), to show what
the laboratory's gain costs elsewhere. Nothing is installed: the shipped models are unchanged.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cross_domain import half_of  # noqa: E402

from leukomorph.classify import classify_crops  # noqa: E402
from leukomorph.data import load_seg_wbc  # noqa: E402
from leukomorph.evaluation.metrics import bootstrap_ci  # noqa: E402
from leukomorph.io import read_image  # noqa: E402
from leukomorph.models.registry import load_classifier  # noqa: E402
from leukomorph.taxonomy import WBC5_GROUP  # noqa: E402

CASE_SIZE = 15


def _acc(model, recs) -> tuple[float, float, float]:
    imgs = [read_image(r.path).pixels for r in recs]
    preds = classify_crops(model, imgs, [r.path for r in recs], tta="none")
    truth = [WBC5_GROUP[r.classes[0]] for r in recs]
    hit = np.array([WBC5_GROUP.get(p.predicted_class) == t for p, t in zip(preds, truth, strict=True)], float)
    lo, hi = bootstrap_ci(lambda s: float(hit[s].mean()), np.arange(len(hit)), 1000)
    return float(hit.mean()), lo, hi


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/finetune-lab")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--replay-size", type=int, default=4000)
    a = ap.parse_args()
    from leukomorph.training.finetune import finetune

    tecom = sorted((r for r in load_seg_wbc() if "/dataset1/" in r.path), key=lambda r: r.path)
    half_a = [r for r in tecom if half_of(r.path) == "A"]
    half_b = [r for r in tecom if half_of(r.path) == "B"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "reviewed_tecom_half_a.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id"])
        for i, r in enumerate(half_a):
            w.writerow([r.path, "|".join(r.classes), f"tecom{i // CASE_SIZE:02d}"])
    res = finetune([str(manifest)], out / "run", epochs=a.epochs, replay_size=a.replay_size, name="tecom-ft")
    base = load_classifier("leukomorph-cell")
    tuned = load_classifier(res["card"])
    n_cases = res["laboratory"]["cases"]
    print(f"reviewed cells (half A): {len(half_a)} in {n_cases} cases; later cells (half B): {len(half_b)}")
    ch = res["chosen_epoch"]
    per = ", ".join(f"{e}: {v:.3f}" for e, v in ch["validation_accuracy"].items())
    print(f"kept epoch {ch['epoch']} of {ch['of']}; accuracy on the laboratory's validation cases by epoch: {per}\n")
    print(
        "| model | Tecom half B, 5-class accuracy as given (95% CI) | lab test cases (half A) | PBC val | DeepAPL val |"
    )
    print("|---|---:|---:|---:|---:|")
    for key, m in (("base", base), ("finetuned", tuned)):
        acc, lo, hi = _acc(m, half_b)
        c = res["comparison"][key]
        lab = c["laboratory_test_cases"]
        sv = c["base_validation_split"]

        def f(v):
            return f"{v['accuracy']:.3f} ({v['ci95'][0]:.3f}–{v['ci95'][1]:.3f})" if v.get("n") else "–"

        print(
            f"| {c['model']} | {acc:.3f} ({lo:.3f}–{hi:.3f}) | {f(lab)} | {f(sv.get('pbc', {}))} | "
            f"{f(sv.get('deepapl', {}))} |"
        )
    (out / "summary.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
