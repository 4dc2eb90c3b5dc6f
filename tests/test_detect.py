"""Centre-point decoding, NMS, tiling with seam de-duplication (pure numpy), and pixel size metadata."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from leukomorph.detect import Detection
from leukomorph.detect.centernet import decode, merge_tiles, nms, tiles
from leukomorph.io import read_image

CLASSES = ("white_blood_cell", "red_blood_cell", "platelet")


def _maps(h, w, objects, stride=4):
    heat = np.zeros((3, h // stride, w // stride), np.float32)
    reg = np.zeros((4, h // stride, w // stride), np.float32)
    for c, cx, cy, bw, bh, score in objects:
        gx, gy = int(cx / stride), int(cy / stride)
        heat[c, gy, gx] = score
        heat[c, gy, gx + 1] = score / 2  # a shoulder, not a peak
        reg[:, gy, gx] = (cx / stride - gx, cy / stride - gy, np.log(bw), np.log(bh))
    return heat, reg


def test_decode_finds_peaks_with_sizes_and_classes():
    heat, reg = _maps(128, 128, [(0, 41.0, 50.0, 40, 30, 0.9), (1, 90.0, 90.0, 20, 20, 0.6)])
    out = decode(heat, reg, CLASSES, 4, threshold=0.1)
    assert [d.label for d in out] == ["white_blood_cell", "red_blood_cell"]  # best first
    w = out[0]
    assert (w.x0, w.y0, w.x1, w.y1) == (21, 35, 61, 65) and w.score == pytest.approx(0.9)
    assert decode(heat, reg, CLASSES, 4, threshold=0.95) == []


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    a = Detection(0, 0, 40, 40, 0.9)
    b = Detection(2, 2, 42, 42, 0.8)
    c = Detection(2, 2, 42, 42, 0.7, "red_blood_cell")  # other class: kept
    d = Detection(100, 100, 140, 140, 0.5)
    kept = nms([b, a, c, d])
    assert a in kept and c in kept and d in kept and b not in kept


def test_tiles_cover_the_image_with_overlap():
    ts = list(tiles(1000, 700, 512, 192))
    cover = np.zeros((1000, 700), int)
    for y0, x0, y1, x1 in ts:
        assert y1 - y0 <= 512 and x1 - x0 <= 512
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1 and len(ts) == 6
    assert list(tiles(300, 200, 512, 192)) == [(0, 0, 300, 200)]


def test_merge_tiles_drops_seam_cut_boxes_and_duplicates():
    # one cell at x 280-340 straddles the seam of tile A (x 0-320) and lies whole in tile B (x 128-448)
    tile_a = ((0, 0, 320, 320), [Detection(280, 100, 320, 160, 0.9)])  # cut at A's right edge
    tile_b = ((0, 128, 320, 448), [Detection(152, 100, 212, 160, 0.8)])  # whole: x 280-340
    # a second cell seen whole by both tiles (x 150-200 lies inside A and inside B)
    tile_a[1].append(Detection(150, 10, 200, 60, 0.7))
    tile_b[1].append(Detection(22, 10, 72, 60, 0.6))
    merged = merge_tiles([tile_a, tile_b], 320, 448)
    boxes = sorted((d.x0, d.x1) for d in merged)
    assert boxes == [(150, 200), (280, 340)]


def test_pixel_size_from_metadata_when_plausible(tmp_path):
    a = np.zeros((40, 40, 3), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", a, resolution=(1e5, 1e5), resolutionunit="CENTIMETER")  # 0.1 µm
    tifffile.imwrite(tmp_path / "ij.tif", a[..., 0], resolution=(5.0, 5.0), imagej=True, metadata={"unit": "um"})
    Image.fromarray(a).save(tmp_path / "dpi.png", dpi=(254000, 254000))  # 0.1 µm
    Image.fromarray(a).save(tmp_path / "screen.jpg", dpi=(72, 72))  # a screen default, not a pixel size
    assert read_image(tmp_path / "cm.tif").pixel_size_um == pytest.approx(0.1)
    assert read_image(tmp_path / "ij.tif").pixel_size_um == pytest.approx(0.2)
    assert read_image(tmp_path / "dpi.png").pixel_size_um == pytest.approx(0.1, rel=1e-3)
    assert read_image(tmp_path / "screen.jpg").pixel_size_um is None


# -- the bundled detector on real held-out fields -------------------------------------------------
FIELDS = __import__("pathlib").Path(__file__).parent / "fixtures" / "fields"


def _truth(name):
    img = read_image(FIELDS / f"{name}.webp").pixels
    h, w = img.shape[:2]
    out = []
    for line in (FIELDS / f"{name}.txt").read_text().split("\n"):
        if line.strip():
            c, cx, cy, bw, bh = map(float, line.split())
            out.append((int(c), (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
    return img, out


def test_bundled_detector_finds_the_white_cells_at_any_magnification():
    from leukomorph.detect.metrics import iou
    from leukomorph.models.registry import load_detector

    det = load_detector()
    thr = det.card.raw["inference"]["score_threshold"]["white_blood_cell"]
    for name in ("field_pbc", "field_bccd"):
        img, truth = _truth(name)
        wbc = [t[1:] for t in truth if t[0] == 0]
        for zoom in (1.0, 2.5):  # 2.5×: another magnification, found again through the red-cell ruler
            big = __import__("cv2").resize(img, None, fx=zoom, fy=zoom) if zoom != 1 else img
            fd = det.detect_field(big)
            found = [d for d in fd.detections if d.label == "white_blood_cell" and d.score >= thr]
            assert len(found) == len(wbc), (name, zoom, found)
            for t in wbc:
                tz = [v * zoom for v in t]
                assert max(iou((d.x0, d.y0, d.x1, d.y1), tz) for d in found) > 0.6
            assert sum(d.label == "red_blood_cell" for d in fd.detections if d.score >= 0.5) >= 10
            if zoom != 1:
                assert fd.scale_method == "red-cell ruler" and fd.scale < 1.0 * det.input_size / max(img.shape[:2])


def test_tiled_detection_matches_whole_image_detection():
    import cv2

    from leukomorph.models.registry import load_detector

    det = load_detector()
    img, truth = _truth("field_pbc")
    views = [img, img[:, ::-1], img[::-1], img[::-1, ::-1]]
    mosaic = np.vstack([np.hstack([views[(r + c) % 4] for c in range(4)]) for r in range(4)])  # 16 white cells
    big = cv2.resize(mosaic, None, fx=2, fy=2)
    fd = det.detect_field(big)
    assert fd.tiles > 1
    wbc = [d for d in fd.detections if d.label == "white_blood_cell" and d.score >= 0.35]
    assert len(wbc) == 16  # each cell once, none lost or doubled at the seams
    det.tile = 10**5  # one pass over the whole image: the same cells
    whole = [d for d in det.detect_field(big).detections if d.label == "white_blood_cell" and d.score >= 0.35]
    assert len(whole) == 16


def test_analyze_fields_with_the_learned_detector(tmp_path):
    import csv
    import json
    import shutil

    from typer.testing import CliRunner

    from leukomorph.cli.main import app

    src = tmp_path / "in"
    src.mkdir()
    for f in ("field_pbc.webp", "field_bccd.webp"):
        shutil.copy(FIELDS / f, src / f)
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(src), "--out", str(out), "--fields"])
    assert r.exit_code == 0, r.output
    cells = [row for row in csv.DictReader((out / "cells.csv").open()) if row["predicted_class"]]
    assert len(cells) == 2 and all(row["nc_ratio"] for row in cells)  # field mode segments each cell
    fields = list(csv.DictReader((out / "fields.csv").open()))
    assert [int(f["n_white_cells"]) for f in fields] == [1, 1]
    # red cells as the ruler: CellaVision-like PBC fields are about 0.1 µm/px
    assert all(int(f["n_red_cells"]) >= 10 and 0.05 < float(f["estimated_um_per_px"]) < 0.2 for f in fields)
    # the ALL field model scores every field, and says these normal-blood fields are unlike its training fields
    assert all(f["all_subtype"] in {"benign_hematogones", "early_pre_b_all", "pre_b_all", "pro_b_all"} for f in fields)
    assert all(f["all_applicable"] == "false" for f in fields)
    res = json.loads((out / "results.json").read_text())
    assert res["case_scores"]["all_subtype"]["status"] == "ok"
    # the APL case model was validated on analyser crops only: scored, never used for field cells
    apl = res["case_scores"]["apl_vs_aml"]
    assert apl["applicable"] is False and "single-cell analyser crops" in apl["applicability_note"]
    geo = json.loads((out / "detections.geojson").read_text())
    kinds = {f["properties"]["classification"]["name"] for f in geo["features"]}
    assert "red_blood_cell" in kinds and any("nucleusGeometry" in f for f in geo["features"])
    coco = json.loads((out / "detections.coco.json").read_text())
    assert {"red_blood_cell", "platelet"} & {c["name"] for c in coco["categories"]}
    # the review store takes field-mode cases: each detected cell is stored as its crop
    r = CliRunner().invoke(app, ["import", str(out), "--data-dir", str(tmp_path / "store")])
    assert r.exit_code == 0 and "(2 cells, 2 fields)" in r.output, r.output
    stored = [p for p in (tmp_path / "store").rglob("*.png")]
    assert len(stored) == 2


def test_field_pixel_size_from_tiff_metadata_sets_the_scale(tmp_path):
    import csv

    from typer.testing import CliRunner

    from leukomorph.cli.main import app

    img, truth = _truth("field_pbc")
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "field.tif", img, resolution=(1e5, 1e5), resolutionunit="CENTIMETER")  # 0.1 µm/px
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(src), "--out", str(out), "--fields", "--morphometrics", "none"])
    assert r.exit_code == 0, r.output
    (f,) = list(csv.DictReader((out / "fields.csv").open()))
    assert f["scale_method"] == "pixel size" and float(f["pixel_size_um"]) == pytest.approx(0.1)
    assert int(f["n_white_cells"]) == 1
    cells = [row for row in csv.DictReader((out / "cells.csv").open()) if row["predicted_class"]]
    assert len(cells) == 1 and "nc_ratio" not in cells[0]  # segmentation switched off


def test_field_model_refuses_other_detector_settings():
    from leukomorph.pipeline import AnalyzeConfig, run_case

    field = str(FIELDS / "field_pbc.webp")
    other_t = run_case([field], "x", AnalyzeConfig(fields=True, detection_threshold=0.5, saliency=False))
    assert other_t.case_scores["all_subtype"]["status"].startswith(
        "not computed: leukomorph-all was fitted with white-cell threshold"
    )
    classical = run_case([field], "x", AnalyzeConfig(fields=True, detector="classical", saliency=False))
    assert "the classical detector" in classical.case_scores["all_subtype"]["status"]
