"""Write a :class:`~leukomorph.pipeline.CaseResult` to disk.

Only the files named in :data:`OUTPUT_FILES` are ever written; an existing output folder that
already holds any of them is refused unless ``overwrite`` is set, and even then nothing else in
the folder is touched.
"""

from __future__ import annotations

import base64
import csv
import math
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from .. import jsonio
from ..aggregate.rules import cells_per_case_rows
from ..classify.core import needs_review
from ..errors import OutputExistsError
from ..qc import QualityGate
from ..segment import MORPHOMETRIC_COLUMNS
from ..taxonomy import LINEAGE, NON_WBC

__all__ = [
    "BATCH_COLUMNS",
    "BATCH_SUMMARY",
    "OUTPUT_FILES",
    "case_summary",
    "prepare_batch_summary",
    "prepare_output_dir",
    "write_batch_summary",
    "write_outputs",
]

OUTPUT_FILES = ("cells.csv", "results.json", "report.html", "run.json")
#: written in field mode only (detections as QuPath-readable GeoJSON and as COCO)
FIELD_FILES = ("detections.geojson", "detections.coco.json", "fields.csv")
#: fields.csv columns before any field-model columns
FIELD_COLUMNS = (
    "image",
    "status",
    "detector",
    "n_white_cells",
    "n_red_cells",
    "n_platelets",
    "scale_method",
    "pixel_size_um",
    "estimated_um_per_px",
    "tiles",
)
GALLERY_LIMIT = 200
#: classes drawn red on field and slide views: blasts and blast equivalents
BLAST_LIKE = ("blast", "promonocyte", "promyelocyte")


def prepare_output_dir(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(str(out))
    if out.is_dir() and not overwrite and any((out / f).exists() for f in OUTPUT_FILES + FIELD_FILES):
        raise OutputExistsError(str(out))
    out.mkdir(parents=True, exist_ok=True)
    return out


#: ``analyze --per-folder``: one row per case at the top of the output folder
BATCH_SUMMARY = "cases.csv"
BATCH_COLUMNS = (
    "case",
    "status",
    "cells_classified",
    "inputs_skipped",
    "white_cells",
    "blast_percent",
    "blast_ci95_low",
    "blast_ci95_high",
    "suggestion",
    "urgent",
    "apl_cautions",
    "apl_vs_aml_probability",
    "apl_vs_aml_applicable",
    "report",
)


def prepare_batch_summary(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """The batch summary's path; refused (:class:`OutputExistsError`) when it exists and not ``overwrite``."""
    path = Path(out_dir) / BATCH_SUMMARY
    if path.exists() and not overwrite:
        raise OutputExistsError(str(path))
    return path


_APL_CAUTIONS = {
    "apl_score_only": "score alone (few blasts and promyelocytes)",
    "apl_score_few_cells": "score on few cells",
    "apl_not_excluded": "no flag, but APL not excluded (the score's interval reaches the threshold)",
}


def case_summary(case: str, result=None, report: str = "", status: str = "ok") -> dict:
    """One row of the batch summary: a case's counts, blast percentage, suggestion and APL score;
    ``result`` None for a case that produced no outputs (``status`` says why)."""
    row = dict.fromkeys(BATCH_COLUMNS, "")
    row.update(case=case, status=status, report=report)
    if result is None:
        return row
    d, s = result.differential, result.suggestion
    apl = (result.case_scores or {}).get("apl_vs_aml") or {}
    row.update(
        cells_classified=len(result.predictions),
        inputs_skipped=len(result.skipped),
        white_cells=d.wbc_denominator,
        blast_percent=f"{d.blast_percent:.1f}",
        blast_ci95_low=f"{d.blast_ci[0]:.1f}",
        blast_ci95_high=f"{d.blast_ci[1]:.1f}",
        suggestion=s.code,
        urgent=str(s.urgent).lower(),
        # why an APL flag from the learned score deserves a second look, or why its absence does
        # (rules 1.3, 1.4)
        apl_cautions="; ".join(text for key, text in _APL_CAUTIONS.items() if s.details.get(key)),
        apl_vs_aml_probability="" if apl.get("probability") is None else f"{apl['probability']:.3f}",
        apl_vs_aml_applicable="" if "applicable" not in apl else str(bool(apl["applicable"])).lower(),
    )
    return row


def write_batch_summary(path: str | os.PathLike[str], rows: list[dict]) -> Path:
    """Write (or rewrite, as cases finish) the batch summary CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, BATCH_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def _png_b64(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _chart(result) -> str:
    """Horizontal bar chart of the white-cell differential with 95% CI whiskers, as an SVG data URI
    (no plotting library: nothing to import, crisp at any zoom)."""
    # white cells only: non-white cells are per 100 WBC and can dwarf the differential (table has them)
    rows = [c for c in result.differential.counts if c.count > 0 and c.name not in NON_WBC]
    if not rows:
        return ""
    left, width, bar, gap = 150, 420, 16, 8
    height = 30 + len(rows) * (bar + gap) + 30
    top = max(10.0, max(c.ci_high if math.isfinite(c.ci_high) else c.percent for c in rows))
    top = 10 * math.ceil(top / 10)

    def x(v: float) -> float:
        return left + width * min(v, top) / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
        'font-family="sans-serif" font-size="12">'
    ]
    for t in range(0, int(top) + 1, max(10, int(top) // 10)):
        parts.append(f'<line x1="{x(t):.1f}" y1="20" x2="{x(t):.1f}" y2="{height - 28}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{height - 14}" text-anchor="middle">{t}</text>')
    for k, c in enumerate(rows):
        y = 24 + k * (bar + gap)
        # red: blasts and the cells that count as blast equivalents (promyelocytes in APL)
        colour = "#c0392b" if c.name in ("blast", "promonocyte", "promyelocyte") else "#2c7fb8"
        hi = c.ci_high if math.isfinite(c.ci_high) else c.percent
        name = c.name.replace("_", " ")
        parts += [
            f'<text x="{left - 6}" y="{y + bar - 4}" text-anchor="end">{name}</text>',
            f'<rect x="{left}" y="{y}" width="{x(c.percent) - left:.1f}" height="{bar}" fill="{colour}"/>',
            f'<line x1="{x(c.ci_low):.1f}" y1="{y + bar / 2}" x2="{x(hi):.1f}" y2="{y + bar / 2}" stroke="#222"/>',
            f'<line x1="{x(c.ci_low):.1f}" y1="{y + 3}" x2="{x(c.ci_low):.1f}" y2="{y + bar - 3}" stroke="#222"/>',
            f'<line x1="{x(hi):.1f}" y1="{y + 3}" x2="{x(hi):.1f}" y2="{y + bar - 3}" stroke="#222"/>',
        ]
    parts.append(f'<text x="{left + width / 2}" y="{height - 1}" text-anchor="middle">% of white cells, 95% CI</text>')
    parts.append("</svg>")
    return "data:image/svg+xml;base64," + base64.b64encode("".join(parts).encode()).decode()


def _fmt(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def _review_rule(result) -> str:
    thr = f"top probability < {result.config.low_confidence:.2f}"
    conf = result.model.get("conformal")
    if conf:
        return f"conformal prediction set ({1 - conf['alpha']:.0%} coverage) holds more than one class, or {thr}"
    return f"{thr} (the model has no conformal calibration)"


def _quality_note(result, src: str) -> str | None:
    """Why a cell's crop is below the model's sharpness gate (leukomorph.qc), or None."""
    gate = QualityGate.from_dict(result.model.get("quality"))
    v = getattr(result, "sharpness", {}).get(src)
    return gate.reason(v) if gate is not None and v is not None and gate.low(v) else None


def _low_quality(result, src: str) -> bool:
    return _quality_note(result, src) is not None


def _quality_summary(result) -> dict:
    q = result.model.get("quality") or {}
    vals = getattr(result, "sharpness", {})
    low = [s for s in vals if _low_quality(result, s)]
    return {
        **q,
        "n_checked": len(vals),
        "n_blurred_or_low_resolution": len(low),
        "fraction": round(len(low) / len(vals), 4) if vals else None,
    }


def _results_dict(result) -> dict:
    d = result.differential
    return {
        "case": result.case,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "leukomorph_version": result.versions["leukomorph"],
        "model": result.model,
        "notice": "Decision support, not a diagnosis. Every result must be reviewed by a qualified hematologist.",
        "n_inputs": len(result.inputs),
        "n_classified": len(result.predictions),
        "n_skipped": len(result.skipped),
        "skipped": [{"path": s.source, "reason": s.reason} for s in result.skipped],
        "differential": {
            "method": d.method,
            "white_cell_denominator": d.wbc_denominator,
            "classes": {
                c.name: {
                    "count": c.count,
                    "percent": round(c.percent, 2),
                    "ci95": [round(c.ci_low, 2), round(c.ci_high, 2) if math.isfinite(c.ci_high) else None],
                    "unit": "per 100 white cells" if c.name in NON_WBC else "% of white cells",
                }
                for c in d.counts
            },
            "corrected_for_model_confusion": d.corrected,
        },
        "review": {
            "n_flagged": sum(needs_review(p, result.config.low_confidence) for p in result.predictions),
            "rule": _review_rule(result),
            "conformal": result.model.get("conformal"),
        },
        "quality": _quality_summary(result),
        "case_scores": result.case_scores,
        "fields": {path: {k: v for k, v in f.items() if k != "objects"} for path, f in result.fields.items()},
        "slides": getattr(result, "slides", {}),
        "blast_thresholds": result.suggestion.details.get("blast_thresholds", []),
        "blast_percent": round(d.blast_percent, 2),
        "blast_ci95": [round(v, 2) for v in d.blast_ci],
        "blast_count": d.blast_count,
        "suggestion": {
            "code": result.suggestion.code,
            "text": result.suggestion.text,
            "rule": result.suggestion.rule,
            "urgent": result.suggestion.urgent,
            "evidence_cells": list(result.suggestion.evidence),
            "details": result.suggestion.details,
        },
        "input_checksums": {i.path: i.sha256 for i in result.inputs if i.sha256},
    }


def write_outputs(
    result, out_dir: str | os.PathLike[str], overwrite: bool = False, argv: list[str] | None = None
) -> dict[str, Path]:
    """Write cells.csv, results.json, report.html and run.json; return their paths."""
    out = prepare_output_dir(out_dir, overwrite)
    paths = {name: out / name for name in OUTPUT_FILES}
    classes = result.predictions[0].classes if result.predictions else ()
    by_src = {p.source: p for p in result.predictions}
    inputs_by_path = {i.path: i for i in result.inputs}
    morpho_cols = list(MORPHOMETRIC_COLUMNS) if result.morphometrics else []
    det_cols = ["image", "x0", "y0", "x1", "y1", "detection_score"] if result.detections else []
    if any("slide" in d for d in result.detections.values()):  # slide mode: where each cell is on its slide
        det_cols += SLIDE_CELL_COLUMNS
    attr_names = list(next(iter(result.attributes.values())).keys()) if result.attributes else []
    with paths["cells.csv"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "path",
                *det_cols,
                "predicted_class",
                "confidence",
                "prediction_set",
                "review_flag",
                *[f"p_{c}" for c in classes],
                "sharpness",
                *morpho_cols,
                *[f"attr_{a}" for a in attr_names],
                "status",
                "notes",
            ]
        )
        rows = []
        if result.detections:  # field mode: one row per detected cell, then inputs without any
            with_cells = {d["image"] for d in result.detections.values()}
            rows = [(src, inputs_by_path[d["image"]]) for src, d in result.detections.items()]
            rows += [(inp.path, inp) for inp in result.inputs if inp.path not in with_cells]
        else:
            rows = [(inp.path, inp) for inp in result.inputs]
        for src, inp in rows:
            p = by_src.get(src)
            det = result.detections.get(src, {})
            dvals = [_det_value(det, c, inp.path) for c in det_cols]
            if p is None:
                w.writerow(
                    [
                        src,
                        *dvals,
                        "",
                        "",
                        "",
                        "",
                        *[""] * len(classes),
                        "",
                        *[""] * len(morpho_cols),
                        *[""] * len(attr_names),
                        inp.status,
                        "; ".join(inp.notes),
                    ]
                )
            else:
                w.writerow(
                    [
                        src,
                        *dvals,
                        p.predicted_class,
                        f"{p.confidence:.4f}",
                        "|".join(p.prediction_set),
                        str(needs_review(p, result.config.low_confidence)).lower(),
                        *[f"{v:.4f}" for v in p.probabilities],
                        _fmt(getattr(result, "sharpness", {}).get(src)),
                        *[_fmt(result.morphometrics.get(src, {}).get(c)) for c in morpho_cols],
                        *[result.attributes.get(src, {}).get(a, ("", 0))[0] for a in attr_names],
                        "ok",
                        "; ".join(
                            [
                                *inp.notes,
                                *([note] if (note := _quality_note(result, src)) else []),
                            ]
                        ),
                    ]
                )
    results = _results_dict(result)
    paths["results.json"].write_text(jsonio.dumps(results, indent=2), encoding="utf-8")
    run = {
        "command": argv,
        "case": result.case,
        "created": results["created"],
        "config": asdict(result.config),
        "versions": result.versions,
        "models": [result.model],
        "inputs": [
            {"path": i.path, "sha256": i.sha256, "status": i.status, "notes": list(i.notes)} for i in result.inputs
        ],
        # slide mode: each slide's identity (OpenSlide's quick hash; the tiles above carry the
        # sha256 of their decoded pixels)
        "slides": [
            {"path": p, "quickhash": sl.get("quickhash"), "vendor": sl.get("vendor")}
            for p, sl in getattr(result, "slides", {}).items()
        ],
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "outputs": list(OUTPUT_FILES),
    }
    paths["run.json"].write_text(jsonio.dumps(run, indent=2), encoding="utf-8")
    paths["report.html"].write_text(render_html(result, results), encoding="utf-8")
    if result.detections or result.fields:
        paths.update(_write_detections(result, out))
    if result.fields:
        paths["fields.csv"] = _write_fields(result, out)
    return paths


#: slide mode: cells.csv columns giving each cell's slide and box in level-0 slide pixels
SLIDE_CELL_COLUMNS = ["slide", "slide_x0", "slide_y0", "slide_x1", "slide_y1"]
#: slide mode: fields.csv columns saying whether a tile was counted and why not
SLIDE_FIELD_COLUMNS = ("counted", "coverage", "thick_fraction", "zone")


def _det_value(det: dict, col: str, image: str):
    if col in SLIDE_CELL_COLUMNS:
        sl = det.get("slide")
        if sl is None:
            return ""
        return sl["path"] if col == "slide" else sl["box"][SLIDE_CELL_COLUMNS.index(col) - 1]
    return det.get(col, image if col == "image" else "")


def _write_fields(result, out: Path) -> Path:
    """One row per input field: detector, object counts, how the scale was set (and inputs that failed)."""
    path = out / "fields.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        fm_classes = next(
            (list(f["field_model"]["probabilities"]) for f in result.fields.values() if "field_model" in f), []
        )
        fm_cols = (
            ["all_subtype", "all_subtype_probability", "all_applicable", *[f"p_{c}" for c in fm_classes]]
            if fm_classes
            else []
        )
        sl_cols = list(SLIDE_FIELD_COLUMNS) if getattr(result, "slides", None) else []
        w.writerow([*FIELD_COLUMNS, *fm_cols, *sl_cols])
        for inp in result.inputs:
            f = result.fields.get(inp.path)
            if f is None:
                w.writerow([inp.path, inp.status, *[""] * (len(FIELD_COLUMNS) - 2 + len(fm_cols) + len(sl_cols))])
                continue
            slide_vals = [_fmt_cell(f.get(c)) for c in sl_cols]
            extra = []
            if fm_cols:
                m = f.get("field_model")
                extra = (
                    [
                        m["label"],
                        m["probabilities"][m["label"]],
                        str(m["applicable"]).lower(),
                        *[m["probabilities"][c] for c in fm_classes],
                    ]
                    if m
                    else [""] * len(fm_cols)
                )
            w.writerow(
                [
                    inp.path,
                    "ok",
                    *["" if f.get(c) is None else f.get(c) for c in FIELD_COLUMNS[2:]],
                    *extra,
                    *slide_vals,
                ]
            )
    return path


def _fmt_cell(v) -> str:
    return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _box_ring(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _slide_map(result, image: str):
    """For a slide tile: a function mapping tile pixels to level-0 slide pixels, and the slide."""
    from ..io.slides import parse_region

    r = parse_region(image) if getattr(result, "slides", None) else None
    if r is None or r[0] not in result.slides:
        return None, None
    path, x, y, _, _, level = r
    ds = result.slides[path]["level_downsamples"][level]
    return (lambda pts: [[round(x + px * ds), round(y + py * ds)] for px, py in pts]), path


def _write_detections(result, out: Path) -> dict[str, Path]:
    """GeoJSON (one FeatureCollection; QuPath imports it with File > Import objects, boxes as
    polygons with the class as ``classification``; slide tiles' cells in level-0 slide pixels,
    with the slide as ``image``) and COCO (images, categories, annotations; in each field's or
    tile's own pixels)."""
    by_src = {p.source: p for p in result.predictions}
    feats = []
    images: dict[str, int] = {}
    anns = []
    cats = {c: i + 1 for i, c in enumerate(result.predictions[0].classes)} if result.predictions else {}
    inputs = {i.path: i for i in result.inputs}

    def add(fid, image, box, ring, properties, category_id, score, det_score, nucleus=None):
        to_slide, slide = _slide_map(result, image)
        if to_slide is not None:  # a slide tile: the GeoJSON is in the slide's level-0 pixels
            ring, nucleus = to_slide(ring), to_slide(nucleus) if nucleus else nucleus
            properties = {**properties, "image": slide, "tile": image}
            if "box" in properties:
                properties["box"] = [v for pt in to_slide([box[:2], box[2:]]) for v in pt]
        feat = {"type": "Feature", "id": fid, "geometry": {"type": "Polygon", "coordinates": [ring]}}
        if nucleus:  # QuPath reads a cell object's nucleus from nucleusGeometry
            feat["nucleusGeometry"] = {"type": "Polygon", "coordinates": [nucleus]}
        feats.append({**feat, "properties": properties})
        images.setdefault(image, len(images) + 1)
        x0, y0, x1, y1 = box
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": images[image],
                "category_id": category_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
                "score": score,
                "detection_score": det_score,
            }
        )

    for src, d in result.detections.items():
        p = by_src.get(src)
        cls = p.predicted_class if p else "unclassified"
        box = (d["x0"], d["y0"], d["x1"], d["y1"])
        mk = result.masks.get(src, {})
        add(
            src,
            d["image"],
            box,
            mk.get("cell") or _box_ring(*box),
            {
                "objectType": "cell" if mk.get("cell") else "detection",
                "box": list(box),
                "image": d["image"],
                "classification": {"name": cls},
                "measurements": {
                    "detection_score": d["detection_score"],
                    "confidence": round(p.confidence, 4) if p else None,
                },
            },
            cats.get(cls, 0),
            round(p.confidence, 4) if p else None,
            d["detection_score"],
            mk.get("nucleus"),
        )
    # red cells and platelets of the learned detector: categories after the cell classes
    for path, f in result.fields.items():
        for j, o in enumerate(f.get("objects", [])):
            box = (o["x0"], o["y0"], o["x1"], o["y1"])
            add(
                f"{path}#{o['label']}{j + 1}",
                path,
                box,
                _box_ring(*box),
                {
                    "objectType": "detection",
                    "image": path,
                    "classification": {"name": o["label"]},
                    "measurements": {"detection_score": o["score"]},
                },
                cats.setdefault(o["label"], len(cats) + 1),
                None,
                o["score"],
            )
    coco = {
        "info": {"description": f"LeukoMorph detections, case {result.case}", "version": result.versions["leukomorph"]},
        "images": [
            {
                "id": i,
                "file_name": path,
                "width": (inputs[path].shape or (0, 0))[1],
                "height": (inputs[path].shape or (0, 0))[0],
            }
            for path, i in images.items()
        ],
        "categories": [{"id": i, "name": c} for c, i in cats.items()],
        "annotations": anns,
    }
    paths = {"detections.geojson": out / "detections.geojson", "detections.coco.json": out / "detections.coco.json"}
    paths["detections.geojson"].write_text(jsonio.dumps({"type": "FeatureCollection", "features": feats}, indent=1))
    paths["detections.coco.json"].write_text(jsonio.dumps(coco, indent=1))
    return paths


FIELD_VIEW_LIMIT = 24


def _field_views(result) -> list[dict]:
    """Field images with their detections boxed and labelled (first FIELD_VIEW_LIMIT fields)."""
    if not result.detections and not result.fields:
        return []
    from ..errors import ImageReadError
    from ..io import read_image

    by_img: dict[str, list] = {p: [] for p in result.fields}
    for src, d in result.detections.items():
        by_img.setdefault(d["image"], []).append((src, d))
    by_src = {p.source: p for p in result.predictions}
    out = []
    if getattr(result, "slides", None):  # slide tiles: those with white cells first
        by_img = dict(sorted(by_img.items(), key=lambda kv: not kv[1]))
    for path, dets in list(by_img.items())[:FIELD_VIEW_LIMIT]:
        try:
            img = read_image(path).pixels.copy()
        except ImageReadError:
            continue
        lw = max(1, min(img.shape[:2]) // 200)
        info = result.fields.get(path, {})
        for o in info.get("objects", []):  # red cells and platelets: thin outlines under the white cells
            colour = (150, 150, 150) if o["label"] == "red_blood_cell" else (120, 60, 160)
            cv2.rectangle(img, (o["x0"], o["y0"]), (o["x1"], o["y1"]), colour, 1)
        for src, d in dets:
            p = by_src.get(src)
            colour = (192, 57, 43) if p and p.predicted_class in BLAST_LIKE else (31, 120, 180)
            cv2.rectangle(img, (d["x0"], d["y0"]), (d["x1"], d["y1"]), colour, lw)
            mk = result.masks.get(src, {})
            for part, col in (("cell", (39, 174, 96)), ("nucleus", (60, 20, 90))):
                if mk.get(part):
                    cv2.polylines(img, [np.array(mk[part], np.int32)], True, col, max(1, lw // 2))
            label = f"{src.rsplit('#', 1)[1]} {p.predicted_class if p else '?'}"
            cv2.putText(img, label, (d["x0"], max(12, d["y0"] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * lw, colour, lw)
        s = min(1.0, 640 / img.shape[1])
        if s < 1:
            img = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        out.append(
            {
                "path": path,
                "src": _png_b64(img),
                "n": len(dets),
                "n_rbc": info.get("n_red_cells"),
                "n_plt": info.get("n_platelets"),
                "um": info.get("pixel_size_um") or info.get("estimated_um_per_px"),
                "um_how": "given" if info.get("pixel_size_um") else "red-cell ruler",
            }
        )
    return out


def _slide_views(result) -> list[dict]:
    """Each slide's overview: tiles counted (green), thick (orange) and sparse (grey), and the white
    cells found (red: blasts and blast equivalents, blue: the others)."""
    views = []
    by_src = {p.source: p for p in result.predictions}
    for path, sl in getattr(result, "slides", {}).items():
        ov = result.slide_overviews.get(path)
        if ov is None:
            continue
        thumb, ds = ov
        s = min(1.0, 900 / max(thumb.shape[:2]))
        img = cv2.resize(thumb, (max(1, int(thumb.shape[1] * s)), max(1, int(thumb.shape[0] * s))), cv2.INTER_AREA)
        k = s / ds  # level-0 pixels → overview pixels
        colours = {"counted": (39, 174, 96), "thick": (230, 126, 34), "sparse": (150, 150, 150)}
        for src, f in result.fields.items():
            if f.get("core") and src.startswith(path + "["):
                x0, y0, x1, y1 = (round(v * k) for v in f["core"])
                cv2.rectangle(img, (x0, y0), (max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1)), colours[f["zone"]], 1)
        for src, d in result.detections.items():
            sd = d.get("slide")
            if sd and sd["path"] == path:
                p = by_src.get(src)
                colour = (192, 57, 43) if p and p.predicted_class in BLAST_LIKE else (31, 120, 180)
                cx, cy = (sd["box"][0] + sd["box"][2]) / 2 * k, (sd["box"][1] + sd["box"][3]) / 2 * k
                cv2.circle(img, (round(cx), round(cy)), 2, colour, -1)
        views.append({"path": path, "src": _png_b64(img), "info": sl})
    return views


def attribute_text(attrs: dict[str, tuple[str, float]]) -> str:
    """A short morphology description from WBCAtt attributes, e.g. "big round cell; segmented nucleus,
    densely packed chromatin, low N:C; light blue cytoplasm, small pink granules"."""
    if not attrs:
        return ""
    v = {k: val for k, (val, _) in attrs.items()}
    gran = (
        f"{v.get('granule_type', '')} {v.get('granule_colour', '')} granules"
        if v.get("granularity") == "yes"
        else "no granules"
    )
    vac = ", vacuoles" if v.get("cytoplasm_vacuole") == "yes" else ""
    return (
        f"{v.get('cell_size', '')} {v.get('cell_shape', '')} cell; {v.get('nucleus_shape', '')} nucleus, "
        f"{v.get('chromatin_density', '')} chromatin, N:C {v.get('nuclear_cytoplasmic_ratio', '')}; "
        f"{v.get('cytoplasm_colour', '')} {v.get('cytoplasm_texture', '')} cytoplasm, {gran}{vac}"
    )


def render_html(result, results: dict) -> str:
    env = Environment(
        loader=PackageLoader("leukomorph.report", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    preds = result.predictions
    gallery = []
    for c in result.differential.counts:
        cells = sorted((p for p in preds if p.predicted_class == c.name), key=lambda p: -p.confidence)
        if cells:
            gallery.append(
                {
                    "name": c.name,
                    "lineage": LINEAGE.get(c.name, ""),
                    "count": len(cells),
                    "cells": [
                        {"src": _png_b64(result.thumbnails[p.source]), "path": p.source, "conf": p.confidence}
                        for p in cells[:GALLERY_LIMIT]
                    ],
                }
            )
    low = sorted((p for p in preds if needs_review(p, result.config.low_confidence)), key=lambda p: p.confidence)

    def second(p):
        order = np.argsort(p.probabilities)[::-1]
        return p.classes[order[1]], p.probabilities[order[1]]

    low_rows = [
        {
            "src": _png_b64(result.thumbnails[p.source]),
            "path": p.source,
            "cls": p.predicted_class,
            "conf": p.confidence,
            "alt": second(p),
            "set": [c.replace("_", " ") for c in p.prediction_set],
            "blur": _low_quality(result, p.source),
        }
        for p in low[:GALLERY_LIMIT]
    ]
    by_src = {p.source: p for p in preds}
    evidence = [
        {
            "src": _png_b64(result.thumbnails[s]),
            "path": s,
            "conf": by_src[s].confidence,
            "cls": by_src[s].predicted_class,
            "sal": _png_b64(result.saliency[s]) if s in result.saliency else "",
            "attr": attribute_text(result.attributes.get(s, {})),
        }
        for s in result.suggestion.evidence
    ]
    if result.suggestion.details.get("evidence_from_attention"):
        evidence_note = (
            "Chosen by the attention of the patient-level APL model: the cells its score rests on most. The class "
            "under each is that cell's own prediction and may differ (fragile APL promyelocytes are often called "
            "smudge cells)."
        )
    else:
        evidence_note = "The cells of the classes the rule counted, the most confidently classified first."
    # the cross-validated figures for a case of this many cells, beside each case score that has them
    cells_rows = {
        target: found
        for target, sc in (result.case_scores or {}).items()
        if sc.get("probability") is not None
        and (found := cells_per_case_rows(sc.get("validation"), len(result.predictions))) is not None
    }
    tpl = env.get_template("report.html.j2")
    return tpl.render(
        evidence_note=evidence_note,
        cells_rows=cells_rows,
        r=results,
        res=result,
        chart=_chart(result) if preds else "",
        gallery=gallery,
        low=low_rows,
        n_low=len(low),
        review_rule=_review_rule(result),
        evidence=evidence,
        limit=GALLERY_LIMIT,
        non_wbc=NON_WBC,
        isfinite=math.isfinite,
        fields=_field_views(result),
        slides=_slide_views(result),
    )
