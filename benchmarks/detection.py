"""Smear-field detection on txl_pbc's held-out val fields: the learned detector against the
classical baseline, per class and per source, with 95% bootstrap CIs over fields; magnification
robustness (red-cell ruler); tiling of large mosaics; whole-pipeline time of a 1-megapixel field.

    python benchmarks/detection.py [--quick]

txl_pbc (TXL-PBC v2, MIT): fields from four public sets (PBC, Raabin-WBC, BCCD, BCDD) with YOLO
boxes. The detector `leukomorph-det` was trained on the `train` split only; `val` is never used for
any choice (thresholds were picked on training fields).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import numpy as np

from leukomorph.detect import detect_white_cells
from leukomorph.models.registry import load_detector
from leukomorph.training.detect import DET_CLASSES, evaluate_detector, load_txl


class _Classical:
    def detect(self, rgb, **kw):
        return detect_white_cells(rgb)


def _row(name, res, classes=("white_blood_cell",)):
    for c in classes:
        a = res[c]["all"]
        ci = a.get("ap50_ci95", [float("nan")] * 2)
        per = " | ".join(f"{res[c][s]['ap50']:.3f}" for s in ("PBC", "Raabin-WBC", "BCCD", "BCDD"))
        print(f"| {name} | {c} | {a['ap50']:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | {per} | {a['recall_max']:.3f} |")


def _magnified(items, f):
    """The same fields at another magnification, image size unchanged: f < 1 tiles the field k×k
    and shrinks the mosaic (cells 1/f times smaller); f > 1 enlarges the centre
    (cells cut by the new border are kept when at least half visible, boxes clipped)."""
    out = []
    for it in items:
        img, boxes, labels = it["image"], it["boxes"], it["labels"]
        h, w = img.shape[:2]
        if f < 1:
            k = round(1 / f)
            big = np.vstack([np.hstack([img] * k)] * k)
            bx = np.concatenate([boxes + [c * w, r * h, c * w, r * h] for r in range(k) for c in range(k)])
            img2 = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
            out.append({**it, "image": img2, "boxes": bx / k, "labels": np.concatenate([labels] * (k * k))})
        else:
            cw, ch = w / f, h / f
            x0, y0 = (w - cw) / 2, (h - ch) / 2
            crop = img[int(y0) : int(y0 + ch), int(x0) : int(x0 + cw)]
            img2 = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
            b = (boxes - [x0, y0, x0, y0]) * f
            vis = np.clip(b, 0, [w, h, w, h])
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            varea = (vis[:, 2] - vis[:, 0]).clip(0) * (vis[:, 3] - vis[:, 1]).clip(0)
            keep = varea >= 0.5 * area
            out.append({**it, "image": img2, "boxes": vis[keep], "labels": labels[keep]})
    return out


def _mosaics(items, n=4, side=4):
    """side×side mosaics of val fields at native size (each resized to the first field's size)."""
    out = []
    for k in range(n):
        group = items[k * side * side : (k + 1) * side * side]
        if len(group) < side * side:
            break
        th, tw = group[0]["image"].shape[:2]
        rows, boxes, labels = [], [], []
        for r in range(side):
            row = []
            for c in range(side):
                it = group[r * side + c]
                h, w = it["image"].shape[:2]
                row.append(cv2.resize(it["image"], (tw, th)))
                b = it["boxes"] * np.array([tw / w, th / h, tw / w, th / h]) + np.array(
                    [c * tw, r * th, c * tw, r * th]
                )
                boxes.append(b)
                labels.append(it["labels"])
            rows.append(np.hstack(row))
        out.append(
            {
                "id": f"mosaic{k}",
                "source": "mosaic",
                "image": np.vstack(rows),
                "boxes": np.concatenate(boxes),
                "labels": np.concatenate(labels),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 val fields, fewer bootstrap resamples")
    a = ap.parse_args()
    items = load_txl("val")
    if a.quick:
        items = items[:100]
    nb = 100 if a.quick else 500
    det = load_detector()
    print(f"txl_pbc val: {len(items)} fields; detector {det.card.name} {det.card.version} ({det.card.sha256[:12]})\n")
    print("| detector | class | AP@0.5 all (95% CI) | PBC | Raabin-WBC | BCCD | BCDD | max recall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    _row("classical baseline", evaluate_detector(_Classical(), items, n_boot=nb))
    t = time.perf_counter()
    for it in items:
        detect_white_cells(it["image"])
    t_c = time.perf_counter() - t
    res = evaluate_detector(det, items, n_boot=nb, auto_scale=False)
    _row("leukomorph-det, training scale", res, DET_CLASSES)
    t = time.perf_counter()
    for it in items:
        det.detect(it["image"])
    t_l = time.perf_counter() - t
    _row("leukomorph-det, red-cell ruler", evaluate_detector(det, items, n_boot=nb))
    px = sum(it["image"].shape[0] * it["image"].shape[1] for it in items) / 1e6
    print(
        f"\ntime per megapixel: classical {t_c / px:.2f} s, learned {t_l / px:.2f} s "
        "(2 CPU cores; learned: with the red-cell ruler)"
    )

    print("\nOther magnifications (same image size, cells smaller or larger; white-cell AP@0.5):\n")
    print("| magnification | training scale | red-cell ruler |")
    print("|---:|---:|---:|")
    for f in (0.5, 2.0):
        sub = _magnified(items, f)
        r0 = evaluate_detector(det, sub, n_boot=0, auto_scale=False)["white_blood_cell"]["all"]["ap50"]
        r1 = evaluate_detector(det, sub, n_boot=0)["white_blood_cell"]["all"]["ap50"]
        print(f"| ×{f:g} | {r0:.3f} | {r1:.3f} |")

    mos = _mosaics(items, n=2 if a.quick else 4)
    if mos:
        fd = det.detect_field(mos[0]["image"])
        res_m = evaluate_detector(det, mos, n_boot=0)["white_blood_cell"]["all"]
        h, w = mos[0]["image"].shape[:2]
        print(
            f"\nTiling: {len(mos)} mosaics of 4×4 val fields ({w}×{h} px); the red-cell ruler puts them at scale "
            f"{fd.scale:.2f} → {fd.tiles} tiles of ≤{det.tile} px with {det.overlap} px overlap; white-cell AP@0.5 "
            f"{res_m['ap50']:.3f} ({res_m['n_true']} cells; seams de-duplicated)"
        )


def field_timing(n_fields: int = 5) -> None:
    """Whole-pipeline time for 1-megapixel fields (mosaics of four txl_pbc val fields resized to
    500×500 each): detection, crops, classification, field model, case scores, saliency; outputs not written."""
    from leukomorph.io import read_image
    from leukomorph.models import load_classifier
    from leukomorph.pipeline import AnalyzeConfig, run_case

    items = load_txl("val", limit=4 * n_fields)
    model = load_classifier()
    cfg = AnalyzeConfig(fields=True)
    times, cells = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n_fields):
            tiles = [cv2.resize(it["image"], (500, 500)) for it in items[4 * k : 4 * k + 4]]
            mosaic = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
            path = f"{tmp}/field{k}.png"
            cv2.imwrite(path, cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
            assert read_image(path).shape == (1000, 1000)
            if k == 0:
                run_case([path], "warm-up", cfg, model)
            t = time.perf_counter()
            res = run_case([path], f"f{k}", cfg, model)
            times.append(time.perf_counter() - t)
            cells.append(len(res.predictions))
    print(
        f"\n1-megapixel fields (1000×1000 mosaics), whole pipeline (learned detector, ALL field model, saliency) "
        f"without writing files: median {np.median(times):.2f} s per field (max {max(times):.2f} s), "
        f"{np.mean(cells):.1f} white cells per field"
    )


if __name__ == "__main__":
    main()
    field_timing()
