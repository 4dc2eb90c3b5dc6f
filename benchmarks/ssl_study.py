"""Self-supervised pre-training vs training from scratch, at a CPU-sized scale.

    python benchmarks/ssl_study.py --out runs/ssl [--size 64 --ssl-epochs 12 --epochs 10]

1. SimCLR (leukomorph.training.ssl) on every cell image outside the held-out test split of the
   bundled cell model: PBC and DeepAPL cells (labelled or not; the test patients and test clusters
   of `leukomorph-cell.split.csv.gz` are left out) and white cells cropped from txl_pbc *train*
   fields (four microscopes). seg_wbc stays out: it is the cross-domain test.
2. Two fine-tunings with the same records, split, seed and schedule: from scratch and from the
   SSL backbone. Each is finalized like a shipped model (held-out test metrics, bootstrap CIs)
   and tested cross-domain on seg_wbc (5 classes). The table compares them.

This is a small-scale study (64 px, few epochs, 2 CPU cores): it says whether SSL helps at this
budget, not what a GPU-scale pre-training would give.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import cv2

from leukomorph.classify import classify_crops
from leukomorph.data import data_root, load_seg_wbc
from leukomorph.evaluation.metrics import evaluate_predictions
from leukomorph.evaluation.runner import read_split
from leukomorph.io import read_image
from leukomorph.models import get_card
from leukomorph.models.registry import load_classifier
from leukomorph.records import LabelledImage
from leukomorph.taxonomy import WBC5_GROUP, WBC5_LABELS
from leukomorph.training.card import finalize_model
from leukomorph.training.detect import load_txl
from leukomorph.training.sources import load_sources
from leukomorph.training.ssl import SslConfig, pretrain_simclr
from leukomorph.training.train import TrainConfig, train_classifier


def ssl_pool(out: Path) -> list[LabelledImage]:
    root = data_root()
    split = read_split(Path(get_card("leukomorph-cell").card_path).parent / "leukomorph-cell.split.csv.gz")
    test_paths = {r["path"] for r in split if r["split"] == "test"}
    test_patients = {r["patient_id"] for r in split if r["split"] == "test" and r["patient_id"]}
    pool = []
    for r in csv.DictReader((root / "deepapl" / "manifest.csv").open()):
        if r["patient_id"] not in test_patients:
            pool.append(LabelledImage(str(root / "deepapl" / r["path"]), ("blast",), "ssl", ""))
    for r in csv.DictReader((root / "pbc" / "manifest.csv").open()):
        if f"pbc/{r['path']}" not in test_paths:
            pool.append(LabelledImage(str(root / "pbc" / r["path"]), ("blast",), "ssl", ""))
    crops = out / "txl_crops"
    crops.mkdir(parents=True, exist_ok=True)
    for it in load_txl("train"):
        for k, (b, lab) in enumerate(zip(it["boxes"], it["labels"], strict=True)):
            if lab == 0:
                x0, y0, x1, y1 = (int(v) for v in b)
                c = it["image"][max(0, y0) : y1, max(0, x0) : x1]
                if c.size:
                    p = crops / f"{Path(it['id']).stem}_{k}.png"
                    cv2.imwrite(str(p), cv2.cvtColor(c, cv2.COLOR_RGB2BGR))
                    pool.append(LabelledImage(str(p), ("blast",), "ssl", ""))
    return pool


def cross_domain(card_path: str) -> dict[str, str]:
    model = load_classifier(card_path)
    recs = load_seg_wbc()
    out = {}
    for domain in ("dataset1", "dataset2"):
        rs = [r for r in recs if r.source_label.startswith(domain + "/")]
        preds = classify_crops(model, [read_image(r.path).pixels for r in rs], [r.path for r in rs], tta="none")
        truth = [r.source_label.split("/")[1] for r in rs]
        rep = evaluate_predictions(
            truth, [WBC5_GROUP.get(p.predicted_class) or "(other)" for p in preds], list(WBC5_LABELS), None, 500
        )
        lo, hi = rep.summary_ci["accuracy"]
        out[domain] = f"{rep.summary['accuracy']:.3f} ({lo:.3f}–{hi:.3f})"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ssl-epochs", type=int, default=12)
    ap.add_argument("--ssl-images", type=int, default=0, help="subsample the SSL pool (0: all)")
    ap.add_argument("--epochs", type=int, default=10)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(a.out)
    cache = out / "cache"
    pool = ssl_pool(out)
    print(f"SSL pool: {len(pool)} images")
    backbone = out / "ssl" / "backbone.pt"
    if not backbone.exists():
        pretrain_simclr(pool, out / "ssl", SslConfig(size=a.size, epochs=a.ssl_epochs, max_images=a.ssl_images), cache)
    records = load_sources(["pbc", "deepapl"])
    rows = []
    for arm, init in (("scratch", None), ("ssl", str(backbone))):
        cfg = TrainConfig(size=a.size, epochs=a.epochs, val_fraction=0.1, augment="strong", init=init)
        run = out / arm
        if not (run / f"ssl-study-{arm}.json").exists():
            train_classifier(records, cfg, run, cache)
            finalize_model(run, f"ssl-study-{arm}", records, ["pbc", "deepapl"], n_boot=200)
        card = json.loads((run / f"ssl-study-{arm}.json").read_text())
        m = card["metrics"]["held_out_test"]
        pbc8, dapl = m["pbc/pbc8"], m["deepapl/taxonomy"]
        cd = cross_domain(str(run / f"ssl-study-{arm}.json"))
        rows.append(
            f"| {arm} | {pbc8['accuracy']:.4f} ({pbc8['ci95']['accuracy'][0]:.4f}–{pbc8['ci95']['accuracy'][1]:.4f}) "
            f"| {dapl['macro_f1']:.3f} ({dapl['ci95']['macro_f1'][0]:.3f}–{dapl['ci95']['macro_f1'][1]:.3f}) "
            f"| {dapl['per_class_f1'].get('blast', [float('nan')])[0]:.3f} | {m['calibration_ece']:.3f} "
            f"| {cd['dataset1']} | {cd['dataset2']} |"
        )
    ssl = json.loads((out / "ssl" / "ssl.json").read_text())
    print(
        f"\nSimCLR: {ssl['images']} images, {ssl['config']['epochs']} epochs, {ssl['minutes']:.0f} min; NT-Xent "
        f"{ssl['history'][0]['loss']:.2f} → {ssl['history'][-1]['loss']:.2f} (chance {ssl['chance_loss']:.2f}). "
        f"Fine-tuning: {a.size} px, {a.epochs} epochs, strong augmentation, same split and seed for both rows.\n"
    )
    print(
        "| start | PBC 8-class accuracy (95% CI) | DeepAPL macro-F1 (95% CI) | DeepAPL blast F1 | ECE "
        "| cross-domain Tecom (5 classes) | cross-domain CellaVision blog |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
