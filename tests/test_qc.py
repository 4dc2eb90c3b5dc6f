"""Image quality control: the sharpness gate of the cell model's card, noted per cell and per case."""

import csv
import json

import cv2
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from leukomorph.cli.main import app
from leukomorph.models import load_classifier
from leukomorph.qc import model_quality_gate, sharpness


def test_blur_and_low_resolution_lower_the_sharpness_below_the_gate(sample_dir):
    gate = model_quality_gate(load_classifier("leukomorph-cell"))
    assert gate is not None and gate.size == 192 and gate.sharpness_gate > 0
    img = np.asarray(Image.open(sorted(sample_dir.glob("*.webp"))[0]).convert("RGB"))
    sharp = sharpness(img, gate.size)
    blurred = sharpness(cv2.GaussianBlur(img, (0, 0), 3), gate.size)
    small = sharpness(cv2.resize(img, (60, 60), interpolation=cv2.INTER_AREA), gate.size)  # a third of the detail
    assert not gate.low(sharp) and gate.low(blurred) and gate.low(small) and blurred < sharp
    assert "blurred or low resolution" in gate.reason(blurred)


def test_analyze_notes_blurred_cells_and_counts_them(sample_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    files = sorted(sample_dir.glob("*.webp"))[:6]
    for i, f in enumerate(files):
        img = np.asarray(Image.open(f).convert("RGB"))
        if i < 2:
            img = cv2.GaussianBlur(img, (0, 0), 4)
        Image.fromarray(img).save(src / f"{i}_{f.stem}.png")
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["analyze", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    q = json.loads((out / "results.json").read_text())["quality"]
    assert q["n_checked"] == 6 and q["n_blurred_or_low_resolution"] == 2 and q["sharpness_gate"] > 0
    rows = {row["path"].rsplit("/", 1)[1]: row for row in csv.DictReader((out / "cells.csv").open())}
    blurred = [r for n, r in rows.items() if n.startswith(("0_", "1_"))]
    assert all(
        "blurred or low resolution" in r["notes"] and float(r["sharpness"]) < q["sharpness_gate"] for r in blurred
    )
    # the note says by how much: the crop's sharpness against the gate
    gate = f"< {q['sharpness_gate']:g}"
    assert all(f"sharpness {float(r['sharpness']):.0f} {gate}" in r["notes"] for r in blurred)
    assert all("blurred" not in r["notes"] for n, r in rows.items() if not n.startswith(("0_", "1_")))
    assert "2 of 6 cells blurred or low resolution" in (out / "report.html").read_text()
