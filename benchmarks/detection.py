"""White-cell detection on txl_pbc fields: AP@0.5 of the classical baseline, per source.

    python benchmarks/detection.py [--split val]

txl_pbc (TXL-PBC v2, MIT): fields from four public sets (PBC, Raabin-WBC, BCCD, BCDD) with YOLO
boxes; only the white_blood_cell class is scored (the classical detector finds nothing else).
"""

from __future__ import annotations

import argparse
import csv
import time

from leukomorph.data import data_root
from leukomorph.detect import average_precision, detect_white_cells
from leukomorph.io import read_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="val")
    a = ap.parse_args()
    base = data_root() / "txl_pbc"
    rows = [r for r in csv.DictReader((base / "manifest.csv").open()) if r["split"] == a.split]
    dets, truths, src, t_total, px = [], {}, {}, 0.0, 0
    for r in rows:
        img = read_image(base / r["image"]).pixels
        h, w = img.shape[:2]
        gts = []
        for line in (base / r["labels"]).read_text().split("\n"):
            if line.strip():
                c, cx, cy, bw, bh = line.split()
                if c == "0":
                    cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                    gts.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        truths[r["image"]] = gts
        src[r["image"]] = r["source_dataset"]
        t = time.perf_counter()
        found = detect_white_cells(img)
        t_total += time.perf_counter() - t
        px += h * w
        dets += [(r["image"], (d.x0, d.y0, d.x1, d.y1), d.score) for d in found]
    print(f"txl_pbc {a.split}: {len(rows)} fields, classical detector, {1e6 * t_total / px:.2f} s per megapixel\n")
    print("| source | fields | white cells | AP@0.5 | max recall |")
    print("|---|---:|---:|---:|---:|")
    for s in ["all", *sorted(set(src.values()))]:
        keep = {k for k, v in src.items() if s == "all" or v == s}
        r = average_precision([d for d in dets if d[0] in keep], {k: v for k, v in truths.items() if k in keep})
        print(f"| {s} | {len(keep)} | {r['n_true']} | {r['ap']:.3f} | {r['recall_max']:.3f} |")


def field_timing(n_fields: int = 5) -> None:
    """Whole-pipeline time for 1-megapixel fields (mosaics of four txl_pbc val fields resized to
    500×500 each): detection, crops, classification, case scores, saliency; outputs not written."""
    import tempfile

    import cv2
    import numpy as np

    from leukomorph.models import load_classifier
    from leukomorph.pipeline import AnalyzeConfig, run_case

    base = data_root() / "txl_pbc"
    rows = [r for r in csv.DictReader((base / "manifest.csv").open()) if r["split"] == "val"]
    model = load_classifier()
    cfg = AnalyzeConfig(fields=True)
    times, cells = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n_fields):
            tiles = [cv2.resize(read_image(base / r["image"]).pixels, (500, 500)) for r in rows[4 * k : 4 * k + 4]]
            mosaic = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
            path = f"{tmp}/field{k}.png"
            cv2.imwrite(path, cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
            run_case([path], "warm-up", cfg, model) if k == 0 else None
            t = time.perf_counter()
            res = run_case([path], f"f{k}", cfg, model)
            times.append(time.perf_counter() - t)
            cells.append(len(res.predictions))
    print(
        f"\n1-megapixel fields (1000×1000 mosaics), whole pipeline without writing files: median "
        f"{np.median(times):.2f} s per field (max {max(times):.2f} s), {np.mean(cells):.1f} cells per field"
    )


if __name__ == "__main__":
    main()
    field_timing()
