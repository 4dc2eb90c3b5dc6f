"""The one place where stages are chained: images → checks → classification → differential →
suggestion. CLI, batch runners and the web app call :func:`run_case`; outputs are written by
:mod:`leukomorph.report`."""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

import cv2
import numpy as np

from . import __version__
from .aggregate import differential, suggest
from .aggregate.case_model import load_case_model
from .aggregate.correction import corrected_differential
from .aggregate.rules import RuleConfig
from .classify import LOW_CONFIDENCE, classify_crops, model_conformal, model_confusion, recommended_tta
from .classify.attributes import load_attribute_model
from .classify.fields import field_features, load_field_model
from .classify.scale import (
    classify_unfamiliar,
    mean_entropy,
    model_entropy_gate,
    route_unfamiliar,
    search_zoom,
    unfamiliar_fallback,
)
from .detect import Detection, detect_white_cells
from .detect.centernet import iou_matrix
from .detect.zone import BLOCK_UM, DEFAULT_COVERAGE, MAX_THICK_FRACTION, Tile, plan_reading_zone, tile_coverage
from .errors import ConfigError, ImageReadError
from .explain import occlusion_map, overlay
from .imageops import border_fill
from .io import MAX_PIXELS, check_pixel_size, read_image
from .io.slides import is_whole_slide, open_slide, read_thumbnail, region_source
from .models import DEFAULT_CASE_MODEL, DEFAULT_CLASSIFIER, load_classifier
from .models.registry import load_detector, load_segmenter
from .onnxrt import releasing_memory, trim_heap
from .qc import blank_reason, model_quality_gate, sharpness
from .records import CellPrediction, Differential, Image, Skipped, Suggestion
from .segment import classical_labels, morphometrics

log = logging.getLogger(__name__)

__all__ = ["AnalyzeConfig", "CaseResult", "InputRecord", "case_scores", "check_config", "run_case"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AnalyzeConfig:
    model: str = DEFAULT_CLASSIFIER
    batch_size: int = 128
    threads: int | None = None
    low_confidence: float = LOW_CONFIDENCE
    rules: RuleConfig = field(default_factory=RuleConfig)
    thumbnail_px: int = 72
    #: test-time augmentation (see classify.TTA_MODES); None: the model card's recommended mode
    tta: str | None = None
    #: attach the model card's conformal prediction sets (review_flag also uses them)
    conformal: bool = True
    #: WBCAtt attribute model (registry name or card path; None: off). Applied only when it was
    #: fitted on the cell model in use (else results.json says why).
    attributes: str | None = "leukomorph-wbcatt"
    #: inputs are smear fields: detect white cells, classify each cell crop
    fields: bool = False
    #: field detector: a registry name / card path of a learned detector, or "classical" (the
    #: colour + Otsu baseline, white cells only)
    detector: str = "leukomorph-det"
    #: field model scoring each field (field mode only; registry name / card path, None: off):
    #: the ALL subtype model, applied only with the cell model and detector it was fitted with
    field_model: str | None = "leukomorph-all"
    #: detections below this score are dropped (None: the detector card's per-class operating thresholds)
    detection_threshold: float | None = None
    #: per-cell morphometrics from nucleus/cytoplasm segmentation: "model" (the segmentation model
    #: ``segmenter``), "classical" (colour + Otsu baseline) or "none"; None: "model" in field mode,
    #: off for crops
    morphometrics: str | None = None
    segmenter: str = "leukomorph-seg"
    #: µm per pixel of the crops, when known (areas in µm²)
    pixel_size_um: float | None = None
    #: occlusion saliency maps for the suggestion's evidence cells (shown in the report)
    saliency: bool = True
    #: learned patient-level models to score the case with (registry names or card paths)
    case_models: tuple[str, ...] = (DEFAULT_CASE_MODEL,)
    #: also report the differential corrected for the model card's held-out confusion matrix
    #: (shown beside the raw count; the rules use the raw count)
    confusion_correction: bool = True
    #: crop mode: the magnification to classify at. "auto": when the case looks unfamiliar to the
    #: model at its native scale (mean prediction entropy above the gate), search a zoom that makes
    #: it familiar (:func:`leukomorph.classify.scale.search_zoom`) and classify at it; "none": as
    #: given; a number: that zoom for every crop. Field mode scales by the detector's red-cell ruler.
    cell_scale: str | float = "auto"
    #: crop mode with cell_scale "auto": a case the cell model finds unfamiliar and whose slide
    #: background has another colour than the training sites' (another stain or camera) is
    #: classified by the model its card names for such cases (``inference.unfamiliar``; for
    #: leukomorph-cell, the colour-robust leukomorph-cell-xdomain with a case-level stain
    #: transfer), recorded in results.json and the report. False: the cell model alone, at the zoom
    #: its search chooses.
    unfamiliar_model: bool = True
    #: inputs are whole-slide images (the formats OpenSlide reads): the tiles of each slide's
    #: reading zone are read as smear fields (implies ``fields``); see :mod:`leukomorph.detect.zone`
    slides: bool = False
    #: slides: stop reading tiles once this many white cells are counted (0: read the whole zone)
    max_white_cells: int = 500
    #: slides: a tile is counted when this fraction of it (full resolution) is covered by cells
    zone_coverage: tuple[float, float] = DEFAULT_COVERAGE
    #: slides: seed of the order in which the zone's tiles are read
    zone_seed: int = 0


@dataclass(frozen=True)
class InputRecord:
    path: str
    sha256: str
    status: str
    notes: tuple[str, ...] = ()
    shape: tuple[int, int] | None = None


@dataclass
class CaseResult:
    case: str
    inputs: list[InputRecord]
    predictions: list[CellPrediction]
    skipped: list[Skipped]
    differential: Differential
    suggestion: Suggestion
    thumbnails: dict[str, np.ndarray]
    model: dict[str, Any]
    config: AnalyzeConfig
    timings: dict[str, float]
    versions: dict[str, str]
    #: learned patient-level scores keyed by target (see :func:`case_scores`)
    case_scores: dict[str, dict] = field(default_factory=dict)
    #: occlusion-saliency overlays (RGB uint8 at the model's input size) of the evidence cells
    saliency: dict[str, np.ndarray] = field(default_factory=dict)
    #: per-cell morphometrics (segment.MORPHOMETRIC_COLUMNS) when requested
    morphometrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: field mode with segmentation: cell source → {"cell": polygon, "nucleus": polygon} in field pixels
    masks: dict[str, dict[str, list]] = field(default_factory=dict)
    #: field mode: cell source id ("<image>#<n>") → image path, box (pixels), detection score
    detections: dict[str, dict] = field(default_factory=dict)
    #: WBCAtt attributes per cell: source → attribute → (value, probability)
    attributes: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    #: field mode: image path → detector, object counts, scale, red cells and platelets found
    fields: dict[str, dict] = field(default_factory=dict)
    #: slide mode: slide path → what the slide is, its reading zone, tiles read and counted, cells
    slides: dict[str, dict] = field(default_factory=dict)
    #: quality control: cell source → sharpness of its crop as the model sees it (leukomorph.qc)
    sharpness: dict[str, float] = field(default_factory=dict)
    #: slide mode: slide path → (overview RGB uint8, its downsample from level 0), for the report
    slide_overviews: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict, repr=False)


def _read(path: str) -> Image | Skipped:
    try:
        return read_image(path)
    except ImageReadError as exc:
        return Skipped(path, exc.reason)


def _thumb(rgb: np.ndarray, px: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = px / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


#: field mode: the crop around a detected cell is this many times the box's longer side, so the
#: cell fills about as much of the crop as in the CellaVision crops the classifier learned from
FIELD_CROP_FACTOR = 2.2


def field_crop_origin(d) -> tuple[int, int, int]:
    """Top-left corner (field pixels, may be negative) and side of :func:`field_crop`'s square."""
    side = int(max(d.x1 - d.x0, d.y1 - d.y0) * FIELD_CROP_FACTOR)
    cx, cy = (d.x0 + d.x1) // 2, (d.y0 + d.y1) // 2
    return cx - side // 2, cy - side // 2, side


def field_crop(rgb: np.ndarray, d) -> np.ndarray:
    """Square crop centred on a detection, padded with the field's border colour at the edges."""
    h, w = rgb.shape[:2]
    x0, y0, side = field_crop_origin(d)
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=border_fill(rgb))
        x0, y0 = x0 + pad, y0 + pad
    return np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])


def _outline(mask: np.ndarray, dx: int, dy: int) -> list[list[int]]:
    """Largest external contour of a binary mask as a closed polygon, shifted by (dx, dy)."""
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cs:
        return []
    c = cv2.approxPolyDP(max(cs, key=cv2.contourArea), 1.0, True)[:, 0, :]
    pts = [[int(x) + dx, int(y) + dy] for x, y in c]
    return pts + pts[:1] if len(pts) >= 3 else []


def _detect_field(rgb: np.ndarray, detector, threshold: dict[str, float], um_per_px: float | None):
    """White-cell detections of one field (best first) and the field's summary: detector, counts of
    white cells, red cells and platelets, how the scale was set, the other objects' boxes."""
    if detector is None:
        found = detect_white_cells(rgb)
        return found, {
            "detector": "classical",
            "n_white_cells": len(found),
            "n_red_cells": None,
            "n_platelets": None,
            "scale_method": "none (classical detector)",
            "pixel_size_um": um_per_px,
            "estimated_um_per_px": None,
            "tiles": 1,
            "objects": [],
        }
    fd = detector.detect_field(rgb, um_per_px=um_per_px)
    keep = [d for d in fd.detections if d.score >= threshold[d.label]]
    wbc = [d for d in keep if d.label == "white_blood_cell"]
    card = detector.card
    return wbc, {
        "detector": f"{card.name} {card.version}" if card is not None else "learned detector",
        "n_white_cells": len(wbc),
        "n_red_cells": sum(d.label == "red_blood_cell" for d in keep),
        "n_platelets": sum(d.label == "platelet" for d in keep),
        "scale_method": fd.scale_method,
        "pixel_size_um": um_per_px,
        "estimated_um_per_px": round(fd.estimated_um_per_px, 4) if fd.estimated_um_per_px else None,
        "tiles": fd.tiles,
        "notes": list(fd.notes),
        "objects": [
            {"label": d.label, "x0": d.x0, "y0": d.y0, "x1": d.x1, "y1": d.y1, "score": round(d.score, 3)}
            for d in keep
            if d.label != "white_blood_cell"
        ],
    }


def _score_field(fm, cell_model, rgb: np.ndarray, white_cells) -> dict:
    """One field's field-model result: class probabilities, label, applicability distance."""
    x = field_features(cell_model, rgb, white_cells, field_crop)
    pr = fm.predict(x)[0]
    dist = float(fm.distance(x)[0])
    return {
        "model": fm.name,
        "probabilities": {c: round(float(v), 4) for c, v in zip(fm.classes, pr, strict=True)},
        "label": fm.classes[int(pr.argmax())],
        "distance": round(dist, 2),
        "applicable": bool(dist <= fm.ood_threshold),
    }


def field_case_score(fm, status: str | None, field_info: dict[str, dict]) -> dict:
    """Case-level score of a field model: mean class probabilities over its applicable fields, with a
    bootstrap interval over fields for the top class."""
    entry: dict[str, Any] = {
        "probability": None,
        "positive": None,
        "model": fm.name,
        "version": fm.version,
        "validation": fm.raw.get("metrics", {}),
        "intended_use": fm.raw.get("intended_use", ""),
        "resampled": "field",
        "training_units": "fields (B-ALL / hematogones)",
    }
    scored = [f["field_model"] for f in field_info.values() if "field_model" in f]
    if status is not None:
        entry["status"] = status
        return entry
    if not scored:
        entry["status"] = "not computed: no readable field"
        return entry
    use = [f for f in scored if f["applicable"]]
    probs = np.array([[f["probabilities"][c] for c in fm.classes] for f in (use or scored)])
    mean = probs.mean(0)
    top = int(mean.argmax())
    rng = np.random.default_rng(0)
    boot = [probs[rng.integers(0, len(probs), len(probs))].mean(0)[top] for _ in range(500)]
    entry.update(
        probability=round(float(mean[top]), 4),
        positive=fm.classes[top],
        probabilities={c: round(float(v), 4) for c, v in zip(fm.classes, mean, strict=True)},
        ci95=[round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
        applicable=bool(use),
        distance=round(float(np.median([f["distance"] for f in scored])), 2),
        distance_threshold=round(fm.ood_threshold, 2),
        n_fields=len(scored),
        n_applicable_fields=len(use),
        evidence_cells=[],
        status="ok",
    )
    return entry


def _crop_warnings(shape: tuple[int, int]) -> tuple[str, ...]:
    h, w = shape
    if max(h, w) > 1024 or max(h, w) > 1.6 * min(h, w):
        return (
            f"{w}x{h} px does not look like a single-cell crop: analysed as one cell after a centre square crop "
            "(smear fields are not supported yet)",
        )
    return ()


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "leukomorph": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
    }


#: occlusion grid (grid² forward passes per cell) and how many evidence cells get a map
SALIENCY_GRID, SALIENCY_CELLS = 6, 8


def _saliency(
    model, sources: Sequence[str], by_src: dict[str, CellPrediction], detections: dict[str, dict]
) -> dict[str, np.ndarray]:
    out = {}
    fields: dict[str, np.ndarray] = {}  # a field holding several evidence cells is read once
    for s in list(sources)[:SALIENCY_CELLS]:
        try:
            if s in detections:
                d = detections[s]
                box = Detection(d["x0"], d["y0"], d["x1"], d["y1"], d["detection_score"])
                if d["image"] not in fields:
                    fields[d["image"]] = read_image(d["image"]).pixels
                crop = field_crop(fields[d["image"]], box)
            else:
                crop = read_image(s).pixels
        except ImageReadError as exc:  # changed on disk since it was classified
            log.warning("no saliency for %s: %s", s, exc.reason)
            continue
        out[s] = overlay(crop, occlusion_map(model, crop, by_src[s].index, grid=SALIENCY_GRID))
    return out


def case_scores(
    names: Sequence,
    cell_model,
    preds: Sequence[CellPrediction],
    unfamiliar: str | None = None,
    note: str | None = None,
) -> dict[str, dict]:
    """Scores of the learned case models, keyed by target (e.g. ``apl_vs_aml``).

    A case model fitted on another cell model's probabilities is not applied: its entry says why
    (probability null). Missing or corrupt model files raise, as for the cell model. ``unfamiliar``
    (why the images look unlike the cell model's training images) marks every score not applicable,
    whatever the case model's own applicability check says: the rules then do not use it. ``note``
    (without ``unfamiliar``): why a case with hard cells is still in the score's domain.
    """
    out: dict[str, dict] = {}
    card = getattr(cell_model, "card", None)
    for name in names:
        cm = load_case_model(name) if isinstance(name, str) else name
        entry: dict[str, Any] = {
            "probability": None,
            "positive": cm.positive,
            "model": cm.name,
            "version": cm.version,
            "validation": cm.raw.get("metrics", {}),
            "intended_use": cm.raw.get("intended_use", ""),
        }
        if card is None or cm.depends_on.get("sha256") != card.sha256:
            used = f"{card.name} {card.sha256[:12]}" if card is not None else "an uncarded model"
            entry["status"] = (
                f"not computed: {cm.name} was fitted on {cm.depends_on.get('name')} "
                f"{cm.depends_on.get('sha256', '')[:12]}, this run used {used}"
            )
        elif not preds:
            entry["status"] = "not computed: no cells"
        elif cm.needs_embeddings and any(p.embedding is None for p in preds):
            entry["status"] = "not computed: the cell model gave no embeddings (exported without them?)"
        else:
            probs = np.array([p.probabilities for p in preds])
            emb = np.stack([p.embedding for p in preds]) if cm.needs_embeddings else None
            a = cm.assess(probs, emb)
            score, (lo, hi), top = a["score"], a["ci95"], a["evidence"]
            entry.update(a["describe"])
            dist = cm.distance(probs)
            entry.update(
                probability=round(score, 4),
                applicable=bool(not dist > cm.ood_threshold) and unfamiliar is None,
                distance=round(dist, 2) if np.isfinite(dist) else None,
                distance_threshold=round(cm.ood_threshold, 2) if np.isfinite(cm.ood_threshold) else None,
                ci95=[round(lo, 4), round(hi, 4)],
                ci_method="bootstrap over the case's cells (counting noise; not model uncertainty)",
                evidence_cells=[preds[i].source for i in top],
                status="ok",
            )
            if unfamiliar is not None or note is not None:
                entry["applicability_note"] = unfamiliar if unfamiliar is not None else note
        out[cm.target] = entry
    return out


def fixed_cell_zoom(cell_scale: str | float, fields: bool = False) -> float | None:
    """The zoom of a ``cell_scale`` setting: None for "auto", 1 for "none", else the number.

    A zoom is refused for smear fields (``fields``): the detector scales them.
    """
    if cell_scale == "auto":
        return None
    if cell_scale == "none":
        return 1.0
    try:
        z = float(cell_scale)
    except (TypeError, ValueError):
        z = float("nan")
    if not (np.isfinite(z) and 0.2 <= z <= 5):
        raise ConfigError(f"cell scale must be 'auto', 'none' or a zoom between 0.2 and 5, not {cell_scale!r}")
    if fields and z != 1.0:
        raise ConfigError(
            "a cell-scale zoom applies to single-cell crops; smear fields are scaled by the detector "
            "(red-cell ruler, or --pixel-size)"
        )
    return z


class _LazyCrops(Sequence):
    """The crops of already-read inputs, read again on access, a slice at a time (the case is not
    held in memory)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        item = _read(self.paths[i])
        if isinstance(item, Skipped):
            raise ImageReadError(item.source, f"could not be read again ({item.reason})")
        return item.pixels


#: why learned case scores are not used on cells cut from fields or slides: the case models
#: were fitted and validated on the single-cell crops of CellaVision analysers (DeepAPL); on
#: healthy-donor fields of another camera (txl_pbc's Raabin-WBC) the APL score reached 0.99 while
#: passing every applicability check (benchmarks/healthy_cases.py, fields section)
FIELD_CROPS_UNVALIDATED = (
    "cells cut from smear fields or slides by the detector: the case models were fitted and validated on "
    "single-cell analyser crops only (on healthy-donor fields of another camera the APL score reached 0.99), "
    "so the rules use the counts"
)


def _cell_scale(
    model, preds: list[CellPrediction], config: AnalyzeConfig, fixed_zoom: float | None, case: str, **classify
) -> tuple[list[CellPrediction], dict, str | None, Any]:
    """After a case's ordinary classification: its cell-scale record, the final predictions, why
    the case looks unfamiliar to the cell model (None when it does not) and the model that made the
    final predictions. "auto": an unfamiliar case whose background colour is off the training
    sites' (:func:`~leukomorph.classify.scale.route_unfamiliar`) goes to the model the card names for
    such cases (:func:`~leukomorph.classify.scale.classify_unfamiliar`) when there is one and
    ``config.unfamiliar_model``; otherwise it is re-classified at the zoom
    :func:`~leukomorph.classify.scale.search_zoom` chooses (only when that is not 1). A case whose
    colour was checked and is the training sites', and which the search leaves at zoom 1, has hard
    cells rather than another camera: it is not returned as unfamiliar (its scale record says so,
    ``case_scores_note``; v0.9.4).
    ``classify``: the keyword arguments of the ordinary :func:`classify_crops` call."""
    native = mean_entropy(np.array([p.probabilities for p in preds])) if preds else 0.0
    gate = model_entropy_gate(model)
    if config.fields:
        info = {
            "mode": "fields",
            "note": "scaled per field by the detector (red-cell ruler or pixel size)",
            "mean_entropy": round(native, 4),
            "gate": gate,
        }
        return preds, info, FIELD_CROPS_UNVALIDATED, model
    unfamiliar = (
        f"the cells look unlike the cell model's training images (mean prediction entropy {native:.2f} > "
        f"{gate:g} at the scale given): the case model's score is outside its validated domain"
        if native > gate
        else None
    )
    if fixed_zoom is not None:
        info = {"mode": "fixed", "zoom": fixed_zoom, "mean_entropy": round(native, 4), "gate": gate}
        return preds, info, unfamiliar, model
    if not preds:
        return preds, {"mode": "auto", "zoom": 1.0}, unfamiliar, model
    srcs = [p.source for p in preds]
    try:
        shift = route_unfamiliar(model, _LazyCrops(srcs), native, config.unfamiliar_model)
        if shift is not None and shift.shifted:
            # integrity errors of the named model raise, as for the cell model: never a silent fallback
            fallback = load_classifier(unfamiliar_fallback(model), threads=config.threads)
            new, info = classify_unfamiliar(
                fallback, _LazyCrops(srcs), srcs, model.classes, batch_size=classify["batch_size"]
            )
            log.warning(
                "case %s looks unfamiliar to %s (mean entropy %.2f > %.2f): classified by %s after a case-level "
                "stain transfer, at zoom %g",
                case,
                getattr(getattr(model, "card", None), "name", "the cell model"),
                native,
                gate,
                info["model"]["name"],
                info["zoom"],
            )
            scale_info = {"mode": "auto", "zoom": 1.0, "mean_entropy": round(native, 4), "gate": gate}
            info["stain_shift"] = shift.to_dict()
            return new, {**scale_info, "searched": True, "unfamiliar_model": info}, unfamiliar, fallback
        choice = search_zoom(model, _LazyCrops(srcs), native, tta=classify["tta"], gate=gate)
        if choice.zoom != 1.0:
            log.warning(
                "case %s looks unfamiliar at its native scale (mean entropy %.2f > %.2f): classified at zoom %g",
                case,
                native,
                gate,
                choice.zoom,
            )
            preds = classify_crops(model, _LazyCrops(srcs), srcs, zoom=choice.zoom, **classify)
    except ImageReadError as exc:  # an input changed on disk since it was classified: keep the native scale
        log.warning("case %s: cell-scale search abandoned: %s", case, exc)
        info = {"mode": "auto", "zoom": 1.0, "mean_entropy": round(native, 4), "gate": gate, "searched": False}
        return preds, {**info, "note": f"search abandoned, classified as given: {exc}"}, unfamiliar, model
    out = choice.to_dict()
    if shift is not None:
        out["stain_shift"] = shift.to_dict()
        if unfamiliar is not None and not shift.shifted and choice.zoom == 1.0:
            # hard cells, not another camera: the colour is the training sites' and no other
            # magnification fits better, so the learned case scores stay applicable (v0.9.4)
            out["case_scores_note"] = (
                f"the cells are hard to classify (mean prediction entropy {native:.2f} > {gate:g}), but the slide "
                "background has the training sites' colour and no other magnification fits them better: the case "
                "is in the score's domain"
            )
            unfamiliar = None
    return preds, out, unfamiliar, model


#: slides: tile core side and margin in µm (a margin wider than the largest blast's radius, so
#: the tile that counts a cell sees it whole), and in pixels of the level read when the slide
#: states no pixel size
SLIDE_TILE_UM = 200.0
SLIDE_MARGIN_UM = 16.0
SLIDE_TILE_PX = 1024
SLIDE_MARGIN_PX = 192
SLIDE_BLOCK_PX = 192
#: a box within this many pixels of a tile's edge is cut by it (unless the edge is the slide's)
EDGE_PX = 2
#: slides: tiles read at a time (each is a few MB)
SLIDE_CHUNK = 4
#: slides: longer side of the overview the reading zone is planned on
OVERVIEW_PX = 4096


@dataclass(frozen=True)
class _Region:
    """A slide tile being read: its slide, its tile, the level read and its downsample, the glass."""

    slide: str
    tile: Tile
    level: int
    downsample: float
    white: tuple[float, float, float]
    size: tuple[int, int]  # the slide's level-0 width and height
    #: side of the squares checked for thick patches, pixels of the level read
    block: int

    def core_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """The part of the tile's pixels that is its core."""
        x0, y0, x1, y1 = self.tile.core
        rx, ry = self.tile.read[:2]
        d = self.downsample
        return rgb[round((y0 - ry) / d) : round((y1 - ry) / d), round((x0 - rx) / d) : round((x1 - rx) / d)]

    def to_slide(self, x: float, y: float) -> tuple[float, float]:
        """Level-0 slide coordinates of a point in the tile's pixels."""
        return self.tile.read[0] + x * self.downsample, self.tile.read[1] + y * self.downsample


def _read_level(info, target_um: float | None) -> int:
    """Coarsest level whose pixels are no larger than 1.5× the detector's scale (level 0 when the
    slide states no pixel size)."""
    if not info.mpp or not target_um:
        return 0
    ok = [i for i in range(len(info.level_downsamples)) if info.level_mpp(i) <= target_um * 1.5]
    return max(ok, key=lambda i: info.level_downsamples[i]) if ok else 0


def slide_tiles(
    paths: Sequence[str], config: AnalyzeConfig, detector_um: float | None = None
) -> tuple[list[str], dict[str, _Region], dict[str, dict], dict[str, tuple[np.ndarray, float]], list[Skipped]]:
    """Expand whole-slide images into their reading zones' tiles (region sources, slides interleaved
    so that a count stopped early samples every slide); per slide its record and overview; inputs
    that are not whole-slide images are skipped with the reason."""
    per_slide: list[list[str]] = []
    regions: dict[str, _Region] = {}
    slides: dict[str, dict] = {}
    overviews: dict[str, tuple[np.ndarray, float]] = {}
    skipped: list[Skipped] = []
    for p in paths:
        try:
            info = open_slide(p)
            if not is_whole_slide(info, MAX_PIXELS):
                raise ImageReadError(p, "a single-level image, not a whole slide: analyse it with --fields")
            thumb, ds_thumb = read_thumbnail(p, OVERVIEW_PX)
        except ImageReadError as exc:
            log.warning("skipped %s: %s", p, exc.reason)
            skipped.append(Skipped(p, exc.reason))
            continue
        level = _read_level(info, detector_um)
        ds = info.level_downsamples[level]
        um = info.level_mpp(level)
        core_px = int(np.clip(round(SLIDE_TILE_UM / um), 512, 2048)) if um else SLIDE_TILE_PX
        margin_px = max(64, int(np.ceil(SLIDE_MARGIN_UM / um))) if um else SLIDE_MARGIN_PX
        block = max(16, round(BLOCK_UM / um)) if um else SLIDE_BLOCK_PX
        core, margin = round(core_px * ds), round(margin_px * ds)
        zone = plan_reading_zone(thumb, ds_thumb, info.dimensions, core, margin, seed=config.zone_seed)
        srcs = []
        for t in zone.tiles:
            src = region_source(p, *t.read, level)
            regions[src] = _Region(p, t, level, ds, zone.white, info.dimensions, block)
            srcs.append(src)
        per_slide.append(srcs)
        slides[p] = {
            **info.to_dict(),
            "read_level": level,
            "read_um_per_px": um,
            "tile_core_px": core_px,
            "tile_margin_px": margin_px,
            "zone": {**zone.to_dict(), "coverage_range": list(config.zone_coverage)},
            "tiles_read": 0,
            "tiles_counted": 0,
            "tiles_sparse": 0,
            "tiles_thick": 0,
            "white_cells": 0,
            "stopped": None,
        }
        overviews[p] = (thumb, ds_thumb)
        log.info("%s: %d of %d grid tiles have smear on them", p, len(srcs), zone.n_grid)
    order = [s for group in zip_longest(*per_slide) for s in group if s is not None]
    return order, regions, slides, overviews, skipped


def _own(found, info: dict, reg: _Region, seen: list | None = None):
    """Keep the detections (and objects) whose centre lies in the tile's core and that no tile edge
    cuts (a cut cell's box is off its centre: the neighbour that owns it sees it whole); recount.
    ``seen``: the slide's white-cell boxes kept so far (level-0 pixels); a cell on a core boundary
    whose two views put its centre on either side is kept once (IoU ≥ 0.5), and ``seen`` grows."""
    rx, ry, rw, rh = reg.tile.read
    w, h = rw / reg.downsample, rh / reg.downsample
    left, top = rx > 0, ry > 0  # edges inside the slide (the slide's own edges cut nothing away)
    right, bottom = rx + rw < reg.size[0], ry + rh < reg.size[1]

    def owned(x0, y0, x1, y1) -> bool:
        cut = (
            (left and x0 <= EDGE_PX)
            or (top and y0 <= EDGE_PX)
            or (right and x1 >= w - EDGE_PX)
            or (bottom and y1 >= h - EDGE_PX)
        )
        return not cut and reg.tile.owns(*reg.to_slide((x0 + x1) / 2, (y0 + y1) / 2))

    found = [d for d in found if owned(d.x0, d.y0, d.x1, d.y1)]
    if seen is not None:
        mine = []
        for d in found:
            (a, b), (c, e) = reg.to_slide(d.x0, d.y0), reg.to_slide(d.x1, d.y1)
            if not seen or iou_matrix([(a, b, c, e)], seen).max() < 0.5:
                seen.append((a, b, c, e))
                mine.append(d)
        found = mine
    objects = [o for o in info.get("objects", []) if owned(o["x0"], o["y0"], o["x1"], o["y1"])]
    info = {**info, "n_white_cells": len(found), "objects": objects}
    if info.get("n_red_cells") is not None:
        info["n_red_cells"] = sum(o["label"] == "red_blood_cell" for o in objects)
        info["n_platelets"] = sum(o["label"] == "platelet" for o in objects)
    return found, info


def check_config(config: AnalyzeConfig) -> AnalyzeConfig:
    """The numeric options checked (:class:`ConfigError` naming the option), and ``fields`` set when
    ``slides`` is: what :func:`run_case` runs with. Callers may check before any work."""
    check_pixel_size(config.pixel_size_um)
    if config.threads is not None and config.threads < 0:
        raise ConfigError(f"threads (--threads) must be >= 0 (0: all cores), not {config.threads}")
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {config.batch_size}")
    if config.detection_threshold is not None and not 0 < config.detection_threshold < 1:
        raise ConfigError(f"detection_threshold must be between 0 and 1, not {config.detection_threshold}")
    if config.max_white_cells < 0:
        raise ConfigError(f"max_white_cells (--max-cells) must be >= 0, not {config.max_white_cells}")
    lo, hi = config.zone_coverage
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"zone_coverage (--zone-coverage) must be two fractions, lower < upper, not {(lo, hi)}")
    return dataclasses.replace(config, fields=True) if config.slides and not config.fields else config


def run_case(
    paths: Sequence[str],
    case: str = "case",
    config: AnalyzeConfig = AnalyzeConfig(),
    model=None,
    progress: Progress | None = None,
) -> CaseResult:
    """Analyse one case made of single-cell crop files (smear fields with ``config.fields``, whole
    slides with ``config.slides``). Unreadable inputs are skipped and reported."""
    t0 = time.perf_counter()
    config = check_config(config)
    lo, hi = config.zone_coverage
    model = model if model is not None else load_classifier(config.model, threads=config.threads)
    t_load = time.perf_counter() - t0
    tta = config.tta or recommended_tta(model)
    fixed_zoom = fixed_cell_zoom(config.cell_scale, config.fields)
    conformal = model_conformal(model) if config.conformal else None
    case_models = [load_case_model(n) for n in config.case_models]  # integrity errors before any work
    card = getattr(model, "card", None)
    attr_model = load_attribute_model(config.attributes) if config.attributes else None
    attr_ok = (
        attr_model is not None
        and card is not None
        and attr_model.depends_on.get("sha256") == card.sha256
        and getattr(model, "has_embedding", False)
    )
    want_emb = getattr(model, "has_embedding", False) and (
        attr_ok
        or any(
            cm.needs_embeddings and card is not None and cm.depends_on.get("sha256") == card.sha256
            for cm in case_models
        )
    )
    if config.morphometrics not in (None, "none", "model", "classical"):
        raise ConfigError(f"morphometrics must be 'model', 'classical', 'none' or None, not {config.morphometrics!r}")
    # field mode segments every white cell unless told not to ("none"); crops only on request
    morpho_mode = config.morphometrics if config.morphometrics is not None else ("model" if config.fields else None)
    morpho_mode = None if morpho_mode == "none" else morpho_mode
    segmenter = load_segmenter(config.segmenter, threads=config.threads) if morpho_mode == "model" else None
    detector = (
        load_detector(config.detector, threads=config.threads)
        if config.fields and config.detector != "classical"
        else None
    )
    det_threshold: dict[str, float] = {}
    if detector is not None:
        det_threshold = {
            c: config.detection_threshold if config.detection_threshold is not None else t
            for c, t in detector.score_thresholds.items()
        }
    regions: dict[str, _Region] = {}
    slides: dict[str, dict] = {}
    overviews: dict[str, tuple[np.ndarray, float]] = {}
    skipped: list[Skipped] = []
    inputs: list[InputRecord] = []
    if config.slides:
        paths, regions, slides, overviews, skipped = slide_tiles(
            paths, config, detector.um_per_px if detector is not None else None
        )
        inputs = [InputRecord(s.source, "", f"error: {s.reason}") for s in skipped]
    field_info: dict[str, dict] = {}
    field_model, field_status = None, None
    if config.fields and config.field_model:
        field_model = load_field_model(config.field_model)
        field_status = field_model.compatible(
            card, detector.card if detector is not None else None, det_threshold.get("white_blood_cell")
        )
    morpho: dict[str, dict[str, float]] = {}
    preds: list[CellPrediction] = []
    thumbs: dict[str, np.ndarray] = {}
    detections: dict[str, dict] = {}
    pixel_um: dict[str, float | None] = {}
    masks: dict[str, dict[str, list]] = {}
    classify = dict(batch_size=config.batch_size, tta=tta, conformal=conformal, embeddings=want_emb)
    gate = model_quality_gate(model)
    sharp: dict[str, float] = {}
    total, done, n_white, stopped = len(paths), 0, 0, None
    seen_boxes: dict[str, list] = {}  # slide → white-cell boxes counted so far (level-0 pixels)
    first_of: dict[str, str] = {}  # sha256 of an input file → the first input with those bytes
    step = SLIDE_CHUNK if config.slides else config.batch_size
    # fields and slides give batches of another size per field: hand ONNX Runtime's arena memory
    # back after each call, or it keeps blocks for every batch shape it has seen

    def skip(source: str, why: str, sha: str = "", shape: tuple[int, int] | None = None) -> None:
        """An input left out, with the reason: logged, listed as skipped, recorded as an input."""
        log.warning("skipped %s: %s", source, why)
        skipped.append(Skipped(source, why))
        inputs.append(InputRecord(source, sha, f"error: {why}", (), shape))

    with ThreadPoolExecutor(max_workers=2) as pool, releasing_memory(config.fields):
        for start in range(0, total, step):
            chunk = paths[start : start + step]
            crops, sources = [], []
            for item in pool.map(_read, chunk):
                if stopped:  # read with the chunk, after the count was reached: not used
                    continue
                reg = regions.get(item.source)
                if isinstance(item, Skipped):
                    skip(item.source, item.reason)
                elif reg is None and item.sha256 in first_of:  # the same image twice would count its cells twice
                    why = f"identical to {first_of[item.sha256]} (same bytes): counted once"
                    skip(item.source, why, item.sha256, item.shape)
                elif config.fields:
                    if reg is None:
                        first_of[item.sha256] = item.source
                    px_um = config.pixel_size_um or item.pixel_size_um
                    if reg is not None:
                        sl = slides[reg.slide]
                        sl["tiles_read"] += 1
                        cov, thick = tile_coverage(reg.core_pixels(item.pixels), reg.white, reg.block)
                        if not lo <= cov <= hi or thick > MAX_THICK_FRACTION:
                            kind = "sparse" if cov < lo else "thick"
                            sl[f"tiles_{kind}"] += 1
                            field_info[item.source] = {
                                "counted": False,
                                "coverage": round(cov, 4),
                                "thick_fraction": round(thick, 4),
                                "zone": kind,
                                "core": list(reg.tile.core),
                            }
                            why = (
                                f"{cov:.0%} covered; counted {lo:.0%}–{hi:.0%}"
                                if not lo <= cov <= hi
                                else f"{thick:.0%} of its 25 µm squares thick; at most {MAX_THICK_FRACTION:.0%}"
                            )
                            note = (f"not counted: {kind} area ({why})",)
                            inputs.append(InputRecord(item.source, item.sha256, "ok", note, item.shape))
                            continue
                    found, info = _detect_field(item.pixels, detector, det_threshold, px_um)
                    if reg is not None:
                        found, info = _own(found, info, reg, seen_boxes.setdefault(reg.slide, []))
                        info.update(
                            counted=True,
                            coverage=round(cov, 4),
                            thick_fraction=round(thick, 4),
                            zone="counted",
                            core=list(reg.tile.core),
                        )
                        sl["tiles_counted"] += 1
                        sl["white_cells"] += len(found)
                    if field_model is not None and field_status is None:
                        info["field_model"] = _score_field(field_model, model, item.pixels, found)
                    field_info[item.source] = info
                    note = (f"{len(found)} white cells detected ({info['detector']})",)
                    inputs.append(InputRecord(item.source, item.sha256, "ok", item.notes + note, item.shape))
                    for i, d in enumerate(found):
                        src = f"{item.source}#{i + 1}"
                        crop = field_crop(item.pixels, d)
                        crops.append(crop)
                        sources.append(src)
                        pixel_um[src] = px_um
                        thumbs[src] = _thumb(crop, config.thumbnail_px)
                        detections[src] = {
                            "image": item.source,
                            "x0": d.x0,
                            "y0": d.y0,
                            "x1": d.x1,
                            "y1": d.y1,
                            "detection_score": round(d.score, 4),
                        }
                        if reg is not None:  # where the cell is on the slide (level-0 pixels)
                            (a, b), (c, e) = reg.to_slide(d.x0, d.y0), reg.to_slide(d.x1, d.y1)
                            detections[src]["slide"] = {
                                "path": reg.slide,
                                "box": [round(a), round(b), round(c), round(e)],
                            }
                    n_white += len(found)
                    if config.slides and config.max_white_cells and n_white >= config.max_white_cells:
                        stopped = f"reached {n_white} white cells (--max-cells {config.max_white_cells})"
                elif blank := blank_reason(item.pixels):  # nothing to classify: skipped, as unreadable files are
                    skip(item.source, blank, item.sha256, item.shape)
                else:
                    first_of[item.sha256] = item.source
                    crops.append(item.pixels)
                    sources.append(item.source)
                    pixel_um[item.source] = config.pixel_size_um or item.pixel_size_um
                    thumbs[item.source] = _thumb(item.pixels, config.thumbnail_px)
                    notes = item.notes + _crop_warnings(item.shape)
                    if len(notes) > len(item.notes):
                        log.warning("%s: %s", item.source, notes[-1])
                    inputs.append(InputRecord(item.source, item.sha256, "ok", notes, item.shape))
            preds.extend(
                classify_crops(model, crops, sources, zoom=1.0 if fixed_zoom is None else fixed_zoom, **classify)
            )
            if gate is not None:  # quality control: is there the detail the model expects?
                sharp.update({src: sharpness(c, gate.size) for src, c in zip(sources, crops, strict=True)})
            if morpho_mode:
                labels = (
                    segmenter.segment_many(crops) if segmenter is not None else [classical_labels(c) for c in crops]
                )
                for src, c, lab in zip(sources, crops, labels, strict=True):
                    morpho[src] = morphometrics(c, lab, pixel_um.get(src))
                    if src in detections:  # field mode: outlines in field pixels for the report and GeoJSON
                        d = detections[src]
                        ox, oy, _ = field_crop_origin(Detection(d["x0"], d["y0"], d["x1"], d["y1"], 0.0))
                        masks[src] = {"cell": _outline(lab > 0, ox, oy), "nucleus": _outline(lab == 2, ox, oy)}
            done += len(chunk)
            if config.slides:  # the chunk's tile buffers are freed: hand them back to the system
                trim_heap()
            if progress is not None:
                progress(total if stopped else done, total)
            if stopped:
                for sl in slides.values():
                    sl["stopped"] = stopped
                log.info("slides: %s; %d of %d tiles read", stopped, done, total)
                break
    t_classify = time.perf_counter() - t0 - t_load
    t_scale = time.perf_counter()
    native_preds = preds
    preds, scale_info, unfamiliar, active = _cell_scale(model, preds, config, fixed_zoom, case, **classify)
    t_scale = time.perf_counter() - t_scale
    switched = active is not model
    attrs: dict[str, dict[str, tuple[str, float]]] = {}
    if attr_ok and preds and not switched:
        got = attr_model.predict(np.stack([p.embedding for p in preds]))
        for i, p in enumerate(preds):
            attrs[p.source] = {a: got[a][i] for a in got}
    diff = differential(preds, model.classes)
    confusion = model_confusion(active) if config.confusion_correction else None
    if confusion is not None and preds:
        counts = np.bincount([p.index for p in preds], minlength=len(model.classes))
        diff = dataclasses.replace(diff, corrected=corrected_differential(counts, confusion, model.classes).to_dict())
    # case models are fitted on the cell model's outputs: a case classified by the model for
    # unfamiliar cases is scored on the cell model's own (native) outputs, marked not applicable
    scores = case_scores(
        case_models, model, native_preds if switched else preds, unfamiliar, scale_info.get("case_scores_note")
    )
    if field_model is not None:
        scores[field_model.raw.get("target", "all_subtype")] = field_case_score(field_model, field_status, field_info)
    sug = suggest(diff, preds, config.rules, scores, attrs)
    t_sal = time.perf_counter()
    sal = _saliency(active, sug.evidence, {p.source: p for p in preds}, detections) if config.saliency else {}
    t_sal = time.perf_counter() - t_sal
    model_info = (
        {"name": card.name, "version": card.version, "sha256": card.sha256, "card": card.card_path}
        if card is not None
        else {"name": type(model).__name__, "version": "", "sha256": "", "card": ""}
    )
    model_info["tta"] = tta
    # which model made the cells' predictions: the cell model, or the one for unfamiliar cases
    model_info["classified_by"] = (
        scale_info["unfamiliar_model"]["model"]
        if switched
        else {k: model_info[k] for k in ("name", "version", "sha256")}
    )
    if attr_model is not None:
        if not attr_ok:
            note = f"fitted on {attr_model.depends_on.get('name')}, not on this cell model"
        elif switched:
            note = "not applied: the case was classified by the model for unfamiliar cases"
        else:
            note = ""
        model_info["attributes"] = {
            "name": attr_model.name,
            "version": attr_model.version,
            "applied": attr_ok and not switched,
            "note": note,
        }
    if switched and config.conformal:  # the sets came from the model for unfamiliar cases
        conformal = model_conformal(active)
    model_info["conformal"] = conformal.to_dict() if conformal is not None else None
    model_info["cell_scale"] = scale_info
    model_info["quality"] = (
        gate.to_dict()
        if gate is not None
        else {"note": "the cell model's card sets no sharpness gate: image quality not checked"}
    )
    return CaseResult(
        case=case,
        inputs=inputs,
        predictions=preds,
        skipped=skipped,
        differential=diff,
        suggestion=sug,
        case_scores=scores,
        saliency=sal,
        morphometrics=morpho,
        detections=detections,
        attributes=attrs,
        fields=field_info,
        slides=slides,
        slide_overviews=overviews,
        sharpness=sharp,
        masks=masks,
        thumbnails=thumbs,
        model=model_info,
        config=config,
        timings={
            "load_model_s": t_load,
            "classify_s": t_classify,
            "cell_scale_s": t_scale,
            "saliency_s": t_sal,
            "total_s": time.perf_counter() - t0,
        },
        versions=_versions(),
    )
