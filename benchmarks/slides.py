"""Whole-slide reading (`analyze --slides`) checked against box truth on a synthetic slide.

    python benchmarks/slides.py [--source Raabin-WBC PBC BCCD BCDD] [--out runs/slides-bench]

No public whole-slide image of a blood smear is available here, so each of txl_pbc's four sources
becomes one slide: its held-out (val) fields, never seen by the detector, laid edge to edge in a
square grid and written as a tiled, zlib-compressed pyramidal TIFF (levels 1, 1/4, 1/16) that
OpenSlide reads. The slide states the pixel size the red-cell ruler finds for that source's fields
(median over fields), as a scanner would. The slide is analysed as one case with
``--slides --max-cells 0`` (every tile with smear); the same fields are analysed as fields
(``--fields``) for comparison. For white cells the table gives, against txl_pbc's boxes:

- recall and precision at IoU ≥ 0.5 (a box truncated by a field's edge in the grid is as in the
  field: the mosaic adds seams where two fields meet, which is harder than a real slide);
- boxes counted twice (two predicted white-cell boxes with IoU ≥ 0.5 in slide coordinates: tile
  overlaps must not double-count);
- agreement of the predicted class between the two modes for truth boxes both found;
- tiles read and counted, and the time per slide megapixel.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from leukomorph.data import load_txl
from leukomorph.detect.centernet import iou_matrix
from leukomorph.models.registry import load_classifier, load_detector
from leukomorph.pipeline import AnalyzeConfig, run_case


def _fields(source: str) -> list[dict]:
    """The source's val fields with their white-cell truth boxes."""
    return [
        {"path": it["path"], "image": it["image"], "boxes": [tuple(b) for b in it["boxes"][it["labels"] == 0]]}
        for it in load_txl("val", source=source)
    ]


def _match(pred, truth, thr: float = 0.5) -> dict[int, int]:
    """Greedy one-to-one matching, best IoU first: truth index → prediction index."""
    if not len(pred) or not len(truth):
        return {}
    m = iou_matrix(truth, pred)
    out: dict[int, int] = {}
    used: set[int] = set()
    for t, p in sorted(np.argwhere(m >= thr).tolist(), key=lambda tp: -m[tp[0], tp[1]]):
        if t not in out and p not in used:
            out[t] = p
            used.add(p)
    return out


def _mosaic(fields: list[dict], gap: int = 200):
    """Fields edge to edge in a square grid on glass; truth boxes in slide pixels."""
    h = max(f["image"].shape[0] for f in fields)
    w = max(f["image"].shape[1] for f in fields)
    cols = int(np.ceil(np.sqrt(len(fields))))
    rows = int(np.ceil(len(fields) / cols))
    glass = np.median(np.stack([np.percentile(f["image"].reshape(-1, 3), 99, 0) for f in fields]), 0)
    canvas = np.empty((rows * h + 2 * gap, cols * w + 2 * gap, 3), np.uint8)
    canvas[:] = glass.astype(np.uint8)
    truth = []
    for i, f in enumerate(fields):
        y, x = gap + (i // cols) * h, gap + (i % cols) * w
        fh, fw = f["image"].shape[:2]
        canvas[y : y + fh, x : x + fw] = f["image"]
        truth += [(bx0 + x, by0 + y, bx1 + x, by1 + y, i) for bx0, by0, bx1, by1 in f["boxes"]]
    return canvas, truth, (cols, rows, w, h, gap)


def _level_kw(mpp: float, k: int) -> dict:
    """tifffile arguments of pyramid level k (downsample 4**k): zlib tiles, pixel size in the tags."""
    r = 1e4 / (mpp * 4**k)
    return dict(
        compression="zlib",
        photometric="rgb",
        resolution=(r, r),
        resolutionunit="CENTIMETER",
        subfiletype=1 if k else 0,
        metadata=None,
    )


def _write(path: Path, canvas: np.ndarray, mpp: float) -> None:
    levels = [canvas] + [
        cv2.resize(canvas, (max(1, canvas.shape[1] // 4**k), max(1, canvas.shape[0] // 4**k)), cv2.INTER_AREA)
        for k in (1, 2)
    ]
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, lv in enumerate(levels):
            tw.write(lv, tile=(256, 256), **_level_kw(mpp, k))


def large(out: Path, model, mpp: float) -> None:
    """A slide of 40,000 × 20,000 px (800 MP; written tile by tile, never held in memory): glass, a
    thick area (x < 12,000), a monolayer made of the Raabin-WBC val mosaic repeated (12,000–30,000)
    and glass beyond; analysed with the defaults of `analyze --slides` (500 white cells)."""
    import resource

    pattern, _, _ = _mosaic(_fields("Raabin-WBC"), gap=0)
    ph, pw = pattern.shape[:2]
    glass = np.percentile(pattern.reshape(-1, 3), 99, 0)
    W, H, T = 40_000, 20_000, 256

    def region(x0: int, y0: int, w: int, h: int) -> np.ndarray:
        ys, xs = np.arange(y0, y0 + h), np.arange(x0, x0 + w)
        tile = pattern[(ys % ph)[:, None], (xs % pw)[None, :]]
        out = np.empty((h, w, 3), np.uint8)
        out[:] = glass.astype(np.uint8)
        band = (ys >= 3000) & (ys < 17000)
        mono = band[:, None] & ((xs >= 12_000) & (xs < 30_000))[None, :]
        thick = band[:, None] & ((xs >= 5_000) & (xs < 12_000))[None, :]
        out[mono] = tile[mono]
        out[thick] = (tile[thick] * 0.55).astype(np.uint8)  # piled-up cells: no glass left
        return out

    def tiles(ds: int):
        for ty in range(0, H // ds, T):
            for tx in range(0, W // ds, T):
                r = region(tx * ds, ty * ds, T * ds, T * ds)
                yield r if ds == 1 else cv2.resize(r, (T, T), interpolation=cv2.INTER_AREA)

    path = out / "large.tif"
    t0 = time.perf_counter()
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, ds in enumerate((1, 4, 16)):
            shape = (-(-(H // ds) // T) * T, -(-(W // ds) // T) * T, 3)
            tw.write(tiles(ds), shape=shape, dtype=np.uint8, tile=(T, T), **_level_kw(mpp, k))
    print(f"\nlarge slide: {W}×{H} px written in {time.perf_counter() - t0:.0f} s ({path.stat().st_size / 1e6:.0f} MB)")
    t0 = time.perf_counter()
    res = run_case([str(path)], "large", AnalyzeConfig(slides=True), model)
    sl = res.slides[str(path)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"analyze --slides (defaults, --max-cells {AnalyzeConfig().max_white_cells}): "
        f"{time.perf_counter() - t0:.1f} s; "
        f"tiles with smear {sl['zone']['tiles_with_smear']} of {sl['zone']['tiles_on_grid']}; read {sl['tiles_read']}, "
        f"counted {sl['tiles_counted']}, thick {sl['tiles_thick']}, sparse {sl['tiles_sparse']}; "
        f"{sl['white_cells']} white cells; stopped: {sl['stopped']}; "
        f"peak RSS of this process (writing the slide included) {rss:.2f} GB"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", nargs="*", default=["Raabin-WBC", "PBC", "BCCD", "BCDD"])
    ap.add_argument("--out", default="runs/slides-bench", help="folder for the synthetic slides (written)")
    ap.add_argument("--large", action="store_true", help="also a 40,000 × 20,000 px slide (about 2 min to write)")
    ap.add_argument("--detector", default="leukomorph-det", help="detector name or card path (a candidate)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_classifier("leukomorph-cell")
    det = load_detector(a.detector)
    common = dict(
        saliency=False, attributes=None, field_model=None, case_models=(), morphometrics="none", detector=a.detector
    )
    mpps = {}
    print(
        "| source | fields | truth WBC | slide px | µm/px stated | tiles read / counted | "
        "recall slide / fields | precision slide / fields | counted twice | same class | s per slide MP |"
    )
    print("|---|---:|---:|---|---:|---|---|---|---:|---:|---:|")
    for source in a.source:
        fields = _fields(source)
        if not fields:
            print(f"| {source} | 0 | | | | | | | | | |")
            continue
        ums = [det.detect_field(f["image"]).estimated_um_per_px for f in fields]
        mpp = mpps[source] = float(statistics.median([u for u in ums if u]))
        canvas, truth, _ = _mosaic(fields)
        path = out / f"{source}.tif"
        _write(path, canvas, mpp)
        t0 = time.perf_counter()
        res = run_case([str(path)], source, AnalyzeConfig(slides=True, max_white_cells=0, **common), model)
        t_slide = time.perf_counter() - t0
        sl = res.slides[str(path)]
        sboxes = [d["slide"]["box"] for d in res.detections.values()]
        scls = [next(p for p in res.predictions if p.source == s).predicted_class for s in res.detections]
        tb = [t[:4] for t in truth]
        ms = _match(sboxes, tb)
        iou = iou_matrix(sboxes, sboxes) if sboxes else np.zeros((0, 0))
        twice = int((np.triu(iou, 1) >= 0.5).sum())
        # the same fields one by one
        fres = run_case([f["path"] for f in fields], source, AnalyzeConfig(fields=True, **common), model)
        by_img: dict[str, list] = {}
        for s, d in fres.detections.items():
            by_img.setdefault(d["image"], []).append((s, d))
        fcls = {p.source: p.predicted_class for p in fres.predictions}
        hit_f, n_pred_f, field_class = 0, 0, {}
        ti = 0
        for f in fields:
            dets = by_img.get(f["path"], [])
            n_pred_f += len(dets)
            m = _match([[d["x0"], d["y0"], d["x1"], d["y1"]] for _, d in dets], f["boxes"])
            hit_f += len(m)
            for t, p in m.items():
                field_class[ti + t] = fcls[dets[p][0]]
            ti += len(f["boxes"])
        same = [scls[p] == field_class[t] for t, p in ms.items() if t in field_class]
        n_t = len(truth)
        print(
            f"| {source} | {len(fields)} | {n_t} | {canvas.shape[1]}×{canvas.shape[0]} | {mpp:.3f} | "
            f"{sl['tiles_read']} / {sl['tiles_counted']} | {len(ms) / n_t:.3f} / {hit_f / n_t:.3f} | "
            f"{len(ms) / max(1, len(sboxes)):.3f} / {hit_f / max(1, n_pred_f):.3f} | {twice} | "
            f"{np.mean(same):.3f} ({len(same)}) | {t_slide / (canvas.shape[0] * canvas.shape[1] / 1e6):.2f} |"
        )
    if a.large:
        large(out, model, mpps.get("Raabin-WBC") or 0.054)


if __name__ == "__main__":
    main()
