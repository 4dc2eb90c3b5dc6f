"""Segmentation: classical baseline, Dice, morphometrics, the `segment` command."""

import csv

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leukomorph.cli.main import app
from leukomorph.segment import classical_labels, dice, dice_scores, morphometrics


def _cell(size=120, r_nuc=18, lobes=1):
    img = np.full((size, size, 3), (235, 200, 200), np.uint8)
    c = size // 2
    cv2.circle(img, (c, c), 36, (190, 170, 215), -1)  # pale blue-violet cytoplasm
    if lobes == 1:
        cv2.circle(img, (c, c), r_nuc, (90, 40, 140), -1)
    else:
        for dx in (-20, 0, 20):
            cv2.circle(img, (c + dx, c), 8, (90, 40, 140), -1)
    return img


def _truth(size=120, r_nuc=18):
    lab = np.zeros((size, size), np.uint8)
    cv2.circle(lab, (size // 2, size // 2), 36, 1, -1)
    cv2.circle(lab, (size // 2, size // 2), r_nuc, 2, -1)
    return lab


def test_dice():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(a & False, a & False) == 1.0
    s = dice_scores(_truth(), _truth())
    assert s == {"nucleus": 1.0, "cell": 1.0, "cytoplasm": 1.0}


def test_classical_segmentation_on_a_synthetic_cell():
    s = dice_scores(classical_labels(_cell()), _truth())
    assert s["nucleus"] > 0.9 and s["cell"] > 0.9


def test_morphometrics_values():
    lab = _truth()
    m = morphometrics(_cell(), lab, pixel_size_um=0.5)
    assert m["nc_ratio"] == pytest.approx(18**2 / 36**2, rel=0.05)
    assert m["cell_area_um2"] == pytest.approx(m["cell_area_px"] * 0.25)
    assert m["cell_circularity"] > 0.85 and m["nucleus_lobes"] == 1
    three = np.zeros((120, 120), np.uint8)
    cv2.circle(three, (60, 60), 36, 1, -1)
    for dx in (-20, 0, 20):
        cv2.circle(three, (60 + dx, 60), 8, 2, -1)
    assert morphometrics(_cell(lobes=3), three)["nucleus_lobes"] == 3
    empty = morphometrics(_cell(), np.zeros((120, 120), np.uint8))
    assert np.isnan(empty["nc_ratio"]) and np.isnan(empty["cell_area_um2"])


def test_segment_command_writes_masks_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    Image.fromarray(_cell()).save(src / "a" / "x.png")
    Image.fromarray(_cell(lobes=3)).save(src / "b" / "x.png")  # same file name, other folder
    (src / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["segment", str(src), "--out", str(out), "--method", "classical"])
    assert r.exit_code == 1, r.output  # one input skipped
    rows = list(csv.DictReader((out / "morphometrics.csv").open()))
    assert len(rows) == 3 and sum(r["status"] == "ok" for r in rows) == 2
    masks = sorted((out / "masks").iterdir())
    assert len(masks) == 2
    m = np.asarray(Image.open(masks[0]))
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 128, 255} and (m == 255).any()
    r = CliRunner().invoke(app, ["segment", str(src), "--out", str(out), "--method", "classical"])
    assert r.exit_code == 3
    r = CliRunner().invoke(app, ["segment", str(src), "--out", str(tmp_path / "neg"), "--pixel-size", "-0.1"])
    assert r.exit_code == 2 and "--pixel-size" in r.output and not (tmp_path / "neg").exists()


def test_analyze_with_classical_morphometrics(sample_dir, tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(
        app, ["analyze", str(sample_dir), "--out", str(out), "--morphometrics", "classical", "--pixel-size", "0.1"]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert all(float(r["cell_area_um2"]) == pytest.approx(float(r["cell_area_px"]) * 0.01, rel=1e-3) for r in rows)
    assert all(0 < float(r["nc_ratio"]) <= 1 for r in rows if r["nc_ratio"])
    bad = CliRunner().invoke(app, ["analyze", str(sample_dir), "--out", str(tmp_path / "x"), "--morphometrics", "x"])
    assert bad.exit_code == 2


def test_analyze_fields_detects_and_classifies_each_cell(tmp_path):
    from leukomorph.detect import average_precision, detect_white_cells

    field = np.full((400, 600, 3), (235, 200, 200), np.uint8)
    centres = [(100, 100), (300, 250), (500, 120)]
    for cx, cy in centres:
        cv2.circle(field, (cx, cy), 30, (190, 170, 215), -1)
        cv2.circle(field, (cx, cy), 18, (90, 40, 140), -1)
    found = detect_white_cells(field)
    assert len(found) == 3
    truth = {"f": [(cx - 30, cy - 30, cx + 30, cy + 30) for cx, cy in centres]}
    assert average_precision([("f", (d.x0, d.y0, d.x1, d.y1), d.score) for d in found], truth, 0.3)["ap"] == 1.0
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(field).save(src / "field.png")
    Image.fromarray(np.full((300, 300, 3), 230, np.uint8)).save(src / "empty.png")
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(src), "--out", str(out), "--fields", "--detector", "classical"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "cells.csv").open()))
    cells = [r for r in rows if r["predicted_class"]]
    assert len(cells) == 3 and all(
        r["image"].endswith("field.png") and r["path"].startswith(r["image"] + "#") for r in cells
    )
    assert all(0 <= int(r["x0"]) < int(r["x1"]) <= 600 for r in cells)
    empty = [r for r in rows if r["image"].endswith("empty.png")]
    assert len(empty) == 1 and "0 white cells detected" in empty[0]["notes"]
    import json

    geo = json.loads((out / "detections.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 3
    assert geo["features"][0]["geometry"]["type"] == "Polygon"
    coco = json.loads((out / "detections.coco.json").read_text())
    assert len(coco["annotations"]) == 3 and coco["images"][0]["width"] == 600


def test_bundled_unet_segments_sample_crops(sample_dir, tmp_path):
    from leukomorph.io import read_image
    from leukomorph.models.registry import load_segmenter

    seg = load_segmenter()
    crops = [read_image(p).pixels for p in sorted(sample_dir.glob("*.webp"))[:4]]
    for c, lab in zip(crops, seg.segment_many(crops), strict=True):
        assert lab.shape == c.shape[:2] and set(np.unique(lab)) <= {0, 1, 2}
        assert (lab == 2).sum() > 0.01 * lab.size  # a nucleus is found
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(sample_dir), "--out", str(out), "--morphometrics", "model"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert sum(0 < float(r["nc_ratio"]) < 1 for r in rows if r["nc_ratio"]) > 20


def test_segmenter_batches_and_arena_release_do_not_change_results(sample_dir):
    """Memory bounds: segmentation runs SEGMENT_BATCH crops per call, and fields run inside
    onnxrt.releasing_memory; neither may change a single label."""
    from leukomorph.io import read_image
    from leukomorph.models.registry import load_segmenter
    from leukomorph.onnxrt import _RELEASE, releasing_memory

    seg = load_segmenter()
    crops = [read_image(p).pixels for p in sorted(sample_dir.glob("*.webp"))[:5]]
    whole = seg.probabilities(crops, batch_size=len(crops))
    assert np.allclose(seg.probabilities(crops, batch_size=2), whole, atol=1e-5)
    with releasing_memory():
        assert _RELEASE.get()
        released = seg.segment_many(crops)
    assert not _RELEASE.get()
    for a, b in zip(released, seg.segment_many(crops), strict=True):
        assert np.array_equal(a, b)


def test_trim_heap_calls_glibc_where_there_is_one():
    """Slides hand the C heap's free memory back after each chunk of tiles: glibc's malloc_trim,
    absent (and said so) on other C libraries."""
    import platform

    from leukomorph.onnxrt import trim_heap

    assert trim_heap() is (platform.libc_ver()[0] == "glibc")
