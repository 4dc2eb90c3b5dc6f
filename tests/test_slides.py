"""Whole-slide images: region sources, the reading zone, and `analyze --slides` end to end on a
small synthetic pyramid (a mosaic of a real smear field, written as a tiled pyramidal TIFF)."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from leukomorph.cli.main import app
from leukomorph.detect.zone import Tile, plan_reading_zone, smear_mask, tile_coverage
from leukomorph.errors import ImageReadError
from leukomorph.io import read_image
from leukomorph.io.slides import is_region_source, open_slide, parse_region, read_region, region_source

FIELD = Path(__file__).parent / "fixtures" / "fields" / "field_bccd.webp"
GLASS = (236, 232, 238)
MPP = 0.08  # about the red-cell ruler's estimate for this field (0.074)


def write_pyramid(path: Path, canvas: np.ndarray, mpp: float | None = MPP, description: str | None = None) -> Path:
    """A tiled, zlib-compressed pyramid (levels 1, 1/4, 1/16) OpenSlide reads as generic TIFF
    (or as Aperio when ``description`` says so)."""
    levels = [canvas] + [
        cv2.resize(canvas, (canvas.shape[1] // 4**k, canvas.shape[0] // 4**k), interpolation=cv2.INTER_AREA)
        for k in (1, 2)
    ]
    with tifffile.TiffWriter(path) as tw:
        for k, lv in enumerate(levels):
            kw = {}
            if mpp:
                r = 1e4 / (mpp * 4**k)
                kw = {"resolution": (r, r), "resolutionunit": "CENTIMETER"}
            if description and k == 0:
                kw["description"] = description
            tw.write(
                lv,
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                subfiletype=1 if k else 0,
                metadata=None,
                **kw,
            )
    return path


def mosaic(rows: int = 3, cols: int = 4, thick: bool = False) -> np.ndarray:
    """The field repeated rows × cols on glass; with ``thick``, a dense dark band to the right."""
    a = np.asarray(Image.open(FIELD).convert("RGB"))
    h, w = a.shape[:2]
    extra = 1100 if thick else 0
    canvas = np.full((h * rows + 400, w * cols + 600 + extra, 3), GLASS, np.uint8)
    for i in range(rows):
        for j in range(cols):
            canvas[200 + i * h : 200 + (i + 1) * h, 300 + j * w : 300 + (j + 1) * w] = a
    if thick:  # cells piled up: no glass left between them
        canvas[:, -extra:] = (150, 90, 130)
    return canvas


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    return write_pyramid(tmp_path_factory.mktemp("slides") / "smear.tif", mosaic())


def test_region_sources_round_trip_and_read_like_files(slide):
    src = region_source(str(slide), 300, 200, 640, 480, 0)
    assert parse_region(src) == (str(slide), 300, 200, 640, 480, 0)
    assert is_region_source(src) and not is_region_source(str(slide)) and parse_region("a.png") is None
    img = read_image(src)
    field = np.asarray(Image.open(FIELD).convert("RGB"))
    assert img.shape == (480, 640) and img.pixel_size_um == pytest.approx(MPP)
    assert np.abs(img.pixels.astype(int) - field).max() <= 2  # zlib is lossless; webp decode may differ by rounding
    lv1 = read_region(str(slide), 300, 200, 640, 480, 1)
    assert lv1.shape == (120, 160, 3)
    with pytest.raises(ImageReadError, match="level 5 out of range"):
        read_region(str(slide), 0, 0, 10, 10, 5)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(region_source(str(slide.with_name("gone.tif")), 0, 0, 8, 8, 0))


def test_open_slide_reports_levels_pixel_size_and_identity(slide, tmp_path):
    info = open_slide(slide)
    assert info.vendor == "generic-tiff" and len(info.level_dimensions) == 3
    assert info.dimensions == (640 * 4 + 600, 480 * 3 + 400) and info.mpp == pytest.approx(MPP)
    assert info.level_mpp(1) == pytest.approx(4 * MPP) and len(info.quickhash) == 64
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide at all" * 100)
    with pytest.raises(ImageReadError, match="not a whole-slide image"):
        open_slide(bad)


def test_a_striped_tiff_given_as_a_slide_says_how_to_convert_it(tmp_path, slide):
    p = tmp_path / "big.tif"
    tifffile.imwrite(p, np.full((300, 400, 3), 230, np.uint8))  # striped, not tiled
    with pytest.raises(ImageReadError, match="only when tiled"):
        open_slide(p)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(slide.read_bytes()[: slide.stat().st_size // 2])  # a truncated copy
    with pytest.raises(ImageReadError, match="damaged|corrupt or truncated"):
        open_slide(cut)


def test_a_slide_given_as_an_image_says_to_use_slides(tmp_path):
    p = tmp_path / "scan.svs"
    p.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(ImageReadError, match="--slides"):
        read_image(p)


def test_reading_zone_keeps_smear_tiles_and_their_cores_partition_the_slide():
    thumb = np.full((100, 300, 3), GLASS, np.uint8)
    thumb[20:80, 100:300] = (200, 120, 160)  # smear on the right two thirds
    zone = plan_reading_zone(thumb, downsample=10.0, size=(3000, 1000), core_px=500, margin_px=50, seed=1)
    assert zone.n_grid == 12 and len(zone.tiles) == 8  # the left third is glass
    assert all(t.core[0] >= 1000 for t in zone.tiles)
    for t in zone.tiles:  # reads hold the core plus the margin, clipped to the slide
        x, y, w, h = t.read
        assert x <= t.core[0] and y <= t.core[1] and x + w >= t.core[2] and y + h >= t.core[3]
        assert x >= 0 and y >= 0 and x + w <= 3000 and y + h <= 1000
    pts = np.random.default_rng(0).uniform((1000, 0), (3000, 1000), (500, 2))
    assert all(sum(t.owns(*p) for t in zone.tiles) == 1 for p in pts)  # each cell counted once
    again = plan_reading_zone(thumb, 10.0, (3000, 1000), 500, 50, seed=1)
    assert [t.core for t in again.tiles] == [t.core for t in zone.tiles]  # the order is seeded
    assert Tile((0, 0, 10, 10), (0, 0, 10, 10), 1.0).owns(0, 0) and not Tile((0, 0, 10, 10), (0, 0, 10, 10), 1).owns(
        10, 5
    )
    with pytest.raises(ValueError):
        plan_reading_zone(thumb, 10.0, (3000, 1000), 0, 50)


def test_tile_coverage_tells_glass_monolayer_and_thick_apart():
    field = np.asarray(Image.open(FIELD).convert("RGB"))
    glass = np.full((64, 64, 3), GLASS, np.uint8)
    thick = np.full((64, 64, 3), (150, 90, 130), np.uint8)
    assert tile_coverage(glass, GLASS) == (0.0, 0.0) and tile_coverage(thick, GLASS, 16) == (1.0, 1.0)
    cov, th = tile_coverage(field, GLASS, 320)  # 25 µm squares at about 0.075 µm/px
    assert 0.1 < cov < 0.9 and th == 0.0
    half = np.concatenate([glass, thick], 1)  # half glass, half piled up: a monolayer's mean, but thick
    assert tile_coverage(half, GLASS, 16) == (0.5, 0.5)
    mask, t = smear_mask(np.full((32, 32, 3), GLASS, np.uint8))  # bare glass: no smear
    assert not mask.any() and t > 0


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(newline="", encoding="utf-8")))


def test_analyze_slides_counts_each_white_cell_once_in_slide_coordinates(slide, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["analyze", str(slide), "--out", str(out), "--slides", "--case", "s1"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    sl = res["slides"][str(slide)]
    assert sl["read_level"] == 0 and sl["tiles_read"] == sl["zone"]["tiles_with_smear"] > 1
    assert sl["stopped"] is None and sl["tiles_counted"] == sl["tiles_read"]
    cells = [c for c in _rows(out / "cells.csv") if c["status"] == "ok" and c["predicted_class"]]
    assert len(cells) == sl["white_cells"] == 12  # the field has one white cell; 12 copies
    boxes = np.array([[int(c[k]) for k in ("slide_x0", "slide_y0", "slide_x1", "slide_y1")] for c in cells])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # one cell per copy of the field: every centre in its own copy, none twice
    copy = ((centres[:, 0] - 300) // 640).astype(int) * 10 + ((centres[:, 1] - 200) // 480).astype(int)
    assert len(set(copy)) == 12
    for c in cells:  # the tile box and the slide box agree through the region's origin
        _, x, y, *_ = parse_region(c["image"])
        assert int(c["slide_x0"]) == x + int(c["x0"]) and int(c["slide_y1"]) == y + int(c["y1"])
    geo = json.loads((out / "detections.geojson").read_text())
    wbc = [f for f in geo["features"] if f["properties"].get("tile")]
    assert {f["properties"]["image"] for f in wbc} == {str(slide)}
    xs = [
        p[0]
        for f in wbc
        if f["properties"]["classification"]["name"] not in ("red_blood_cell", "platelet")
        for p in f["geometry"]["coordinates"][0]
    ]
    assert max(xs) > 1152  # cells right of the first tile are in slide pixels, not tile pixels
    fields = _rows(out / "fields.csv")
    assert {f["counted"] for f in fields} == {"true"} and all(f["zone"] == "counted" for f in fields)
    html = (out / "report.html").read_text()
    assert "<h2>Slides</h2>" in html and "generic-tiff" in html
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["slides"] is True and run["config"]["fields"] is True
    assert run["slides"] == [{"path": str(slide), "quickhash": sl["quickhash"], "vendor": "generic-tiff"}]
    r = CliRunner().invoke(app, ["import", str(out), "--data-dir", str(tmp_path / "store")])
    assert r.exit_code == 0 and "(12 cells, 2 fields)" in r.output, r.output  # cells cut from the slide for review
    # each tile a cell was counted in is kept as a JPEG (a region has no file of its own), for drawing missed cells
    from leukomorph.review.db import Cell, Field, make_engine

    _, factory = make_engine(f"sqlite:///{tmp_path / 'store' / 'review.sqlite'}")
    with factory() as s:
        stored = s.query(Field).all()
        assert stored and all(f.image_file.endswith(".jpg") and "[x=" in f.name for f in stored)
        assert all(c.field_id is not None for c in s.query(Cell))


def test_tile_ownership_drops_cut_cells_and_boundary_twins():
    from leukomorph.detect import Detection
    from leukomorph.pipeline import _own, _Region

    # tile core 1000–2000 (x), read 900–2100, on a 4000-wide slide
    t = Tile((1000, 0, 2000, 1000), (900, 0, 1200, 1000), 1.0)
    reg = _Region("s.tif", t, 0, 1.0, GLASS, (4000, 1000), 64)
    whole = Detection(150, 100, 250, 200, 0.9)  # centre 1100: owned
    cut = Detection(1150, 100, 1200, 200, 0.9)  # touches the right read edge: cut
    outside = Detection(10, 300, 60, 350, 0.9)  # centre 935: the left neighbour's
    seen = [(1040.0, 95.0, 1150.0, 205.0)]  # the left neighbour counted `whole` already, offset a little
    found, info = _own([whole, cut, outside], {"n_white_cells": 3, "objects": []}, reg, seen)
    assert found == [] and info["n_white_cells"] == 0 and len(seen) == 1
    found, _ = _own([whole, cut, outside], {"n_white_cells": 3, "objects": []}, reg, [])
    assert found == [whole]
    edge = _Region("s.tif", Tile((0, 0, 1000, 1000), (0, 0, 1100, 1000), 1.0), 0, 1.0, GLASS, (4000, 1000), 64)
    at_slide_edge = Detection(0, 100, 80, 180, 0.9)  # the slide's own edge cuts nothing away
    assert _own([at_slide_edge], {"objects": []}, edge)[0] == [at_slide_edge]


def test_analyze_slides_stops_at_max_cells_and_skips_thick_tiles(tmp_path):
    slide = write_pyramid(tmp_path / "thick.tif", mosaic(thick=True), mpp=None)  # tiles of 1024 px
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["analyze", str(slide), "--out", str(out), "--slides", "--max-cells", "0"])
    assert r.exit_code == 0, r.output
    sl = json.loads((out / "results.json").read_text())["slides"][str(slide)]
    assert sl["mpp"] is None and sl["tile_core_px"] == 1024
    assert sl["tiles_thick"] >= 2 and sl["white_cells"] == 12
    notes = [f for f in _rows(out / "fields.csv") if f["zone"] == "thick"]
    assert notes and all(f["counted"] == "false" for f in notes)
    out2 = tmp_path / "out2"
    r = CliRunner().invoke(app, ["analyze", str(slide), "--out", str(out2), "--slides", "--max-cells", "3"])
    assert r.exit_code == 0, r.output
    sl = json.loads((out2 / "results.json").read_text())["slides"][str(slide)]
    assert sl["stopped"].startswith("reached") and 3 <= sl["white_cells"] < 12
    assert sl["tiles_read"] < sl["zone"]["tiles_with_smear"]


def test_analyze_slides_skips_what_is_not_a_slide_and_goes_on(slide, tmp_path):
    crop = tmp_path / "crop.png"
    Image.open(FIELD).convert("RGB").save(crop)
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"\x00" * 50)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["analyze", str(slide), str(crop), str(broken), "--out", str(out), "--slides"])
    assert r.exit_code == 1, r.output  # some inputs skipped
    res = json.loads((out / "results.json").read_text())
    reasons = {s["path"]: s["reason"] for s in res["skipped"]}
    assert "--fields" in reasons[str(crop)] and "whole-slide" in reasons[str(broken)]
    assert res["slides"][str(slide)]["white_cells"] == 12
    r = CliRunner().invoke(app, ["analyze", str(slide), "--out", str(tmp_path / "o3"), "--slides", "--max-cells", "-1"])
    assert r.exit_code == 2
    r = CliRunner().invoke(
        app, ["analyze", str(slide), "--out", str(tmp_path / "o4"), "--slides", "--zone-coverage", "0.9", "0.1"]
    )
    assert r.exit_code == 2 and "--zone-coverage" in r.output
    # a wider range is taken as given and recorded
    r = CliRunner().invoke(
        app, ["analyze", str(slide), "--out", str(tmp_path / "o5"), "--slides", "--zone-coverage", "0.05", "0.95"]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "o5" / "results.json").read_text())["slides"][str(slide)]["zone"]
    assert rec["coverage_range"] == [0.05, 0.95]


def test_folders_of_slides_are_expanded_with_slide_suffixes(tmp_path):
    from leukomorph.cli.main import _cases

    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    assert [Path(p).name for p in _cases([str(tmp_path)], False, None, slides=True)[0][1]] == ["a.svs", "b.png"]
    assert [Path(p).name for p in _cases([str(tmp_path)], False, None)[0][1]] == ["b.png"]


def test_aperio_slides_give_vendor_and_pixel_size(tmp_path):
    desc = "Aperio Image Library v12.0.0\r\n3160x1840 [0,0 3160x1840] (256x256) -> 3160x1840|AppMag = 40|MPP = 0.0800"
    p = write_pyramid(tmp_path / "scan.svs", mosaic(), mpp=None, description=desc)
    info = open_slide(p)
    assert info.vendor == "aperio" and info.mpp == pytest.approx(0.08) and info.objective_power == 40


def test_a_damaged_tile_skips_its_region_and_the_slide_goes_on(tmp_path, monkeypatch):
    import leukomorph.pipeline as pipeline
    from leukomorph.pipeline import AnalyzeConfig, run_case

    slide = write_pyramid(tmp_path / "s.tif", mosaic(), mpp=None)  # 1,024 px tiles: several regions
    with tifffile.TiffFile(slide) as tf:
        page = tf.pages[0]
        off, n = page.dataoffsets[5], page.databytecounts[5]  # a level-0 tile inside the smear
    data = bytearray(slide.read_bytes())
    data[off : off + n] = b"\xff" * n
    slide.write_bytes(bytes(data))
    monkeypatch.setattr(pipeline, "OVERVIEW_PX", 256)  # the overview comes from level 1, intact
    cfg = AnalyzeConfig(slides=True, max_white_cells=0, saliency=False, morphometrics="none")
    res = run_case([str(slide)], "s", cfg)
    bad = [s for s in res.skipped if "cannot read region" in s.reason]
    assert bad and all(parse_region(s.source)[0] == str(slide) for s in bad)
    sl = res.slides[str(slide)]
    assert sl["tiles_counted"] >= 1 and sl["white_cells"] >= 1  # the other regions were counted


def test_a_stitched_smear_image_too_large_for_a_field_is_read_as_a_one_level_slide(tmp_path, monkeypatch):
    """A PNG above the field limit: refused as a crop or field with the --slides hint, then read
    with --slides as a one-level slide (decoded whole) and counted like any slide."""
    import leukomorph.io.images as images
    import leukomorph.pipeline as pipeline

    monkeypatch.setattr(images, "MAX_PIXELS", 1_000_000)  # the mosaic (5.8 MP) stands for a 100 MP scan
    monkeypatch.setattr(pipeline, "MAX_PIXELS", 1_000_000)
    png = tmp_path / "scan.png"
    Image.fromarray(mosaic()).save(png)
    with pytest.raises(ImageReadError, match="--slides"):
        read_image(png)
    info = open_slide(png)
    assert info.vendor.startswith("image") and len(info.level_dimensions) == 1 and len(info.quickhash) == 64
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(png), "--out", str(out), "--slides", "--max-cells", "0"])
    assert r.exit_code == 0, r.output
    sl = json.loads((out / "results.json").read_text())["slides"][str(png)]
    assert sl["white_cells"] == 12 and sl["mpp"] is None
    small = tmp_path / "field.png"
    Image.open(FIELD).save(small)  # a field-sized PNG stays a field
    with pytest.raises(ImageReadError, match="--fields"):
        open_slide(small)
