"""Learned smear-field detector (white cells, red cells, platelets) through ONNX Runtime.

Scale: the model learned fields whose longer side was resized to ``input.size`` px, where red
cells are about ``input.rbc_diameter_px`` across. A field is brought to that scale in one of three
ways, in this order: the pixel size (µm/px) when it is known; else red cells as an internal ruler
(a first pass at the default scale measures their median size, and the field is rescaled when they
are off by more than a third; red cells are about 7.5 µm everywhere); else the default scale.
Images larger than ``tile`` px at model scale are tiled with ``overlap`` px shared and the seams
de-duplicated (:func:`leukomorph.detect.centernet.merge_tiles`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..imageops import border_fill
from ..onnxrt import cpu_session, run
from .centernet import decode, merge_tiles, nms, tiles
from .classical import Detection

__all__ = ["FieldDetections", "OnnxDetector", "RBC_DIAMETER_UM"]

#: operating point of a class the card gives none for
DEFAULT_SCORE_THRESHOLD = 0.3

#: typical red-cell diameter used as the internal ruler
RBC_DIAMETER_UM = 7.5


@dataclass(frozen=True)
class FieldDetections:
    detections: list[Detection]
    #: model-input px per source px
    scale: float
    #: how the scale was chosen: "pixel size", "red-cell ruler" or "default"
    scale_method: str
    #: median red-cell box side in source px (None: fewer than 5 red cells found)
    rbc_diameter_px: float | None = None
    tiles: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def estimated_um_per_px(self) -> float | None:
        """Pixel size implied by the red-cell ruler (approximate: ±15% from red-cell size variation)."""
        return RBC_DIAMETER_UM / self.rbc_diameter_px if self.rbc_diameter_px else None


def _pad32(rgb: np.ndarray, min_side: int = 0) -> np.ndarray:
    """Pad right/bottom with the border colour to a multiple of 32 (and at least ``min_side``)."""
    h, w = rgb.shape[:2]
    ph, pw = max(-h % 32, min_side - h), max(-w % 32, min_side - w)
    ph, pw = ph + (-(h + ph) % 32), pw + (-(w + pw) % 32)
    if not (ph or pw):
        return rgb
    return cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=border_fill(rgb))


class OnnxDetector:
    def __init__(
        self,
        session,
        size: int,
        classes: Sequence[str],
        stride: int,
        card=None,
        rbc_diameter_px: float | None = None,
        um_per_px: float | None = None,
        tile: int = 768,
        overlap: int = 192,
        threshold: float = 0.05,
        score_thresholds: dict[str, float] | None = None,
    ) -> None:
        self.session = session
        self.input_size = size
        self.classes = tuple(classes)
        self.stride = stride
        self.card = card
        self.rbc_diameter_px = rbc_diameter_px
        self.um_per_px = um_per_px
        self.tile = tile
        self.overlap = overlap
        self.threshold = threshold
        #: per-class operating points (the card's ``inference.score_threshold``; 0.3 where none is given):
        #: detections below them are not counted as objects
        self.score_thresholds = {
            c: float((score_thresholds or {}).get(c, DEFAULT_SCORE_THRESHOLD)) for c in self.classes
        }
        self._input = session.get_inputs()[0].name

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], size: int, classes, stride: int, card=None, threads=None, **kw):
        sess = cpu_session(path, threads, "detection model")
        return cls(sess, size, classes, stride, card=card, **kw)

    # -- core ---------------------------------------------------------------------------------
    def _run(self, rgb: np.ndarray) -> list[Detection]:
        """Detections of one image already at model scale (its size ≤ tile), model-input pixels."""
        # small images get context up to the training canvas size, as in training (fields shrunk by
        # the scale jitter were placed on a canvas of the field's border colour)
        x = _pad32(rgb, self.input_size)[None]
        heat, reg = run(self.session, None, {self._input: np.ascontiguousarray(x)})
        return decode(heat[0], reg[0], self.classes, self.stride, self.threshold)

    def _at_scale(self, rgb: np.ndarray, s: float) -> tuple[list[Detection], int]:
        h, w = rgb.shape[:2]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        r = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        if nh <= self.tile and nw <= self.tile:
            dets, n = nms(self._run(r), 0.6), 1
        else:
            per = [
                ((y0, x0, y1, x1), self._run(r[y0:y1, x0:x1]))
                for y0, x0, y1, x1 in tiles(nh, nw, self.tile, self.overlap)
            ]
            dets, n = nms(merge_tiles(per, nh, nw), 0.6), len(per)
        out = [
            Detection(
                max(0, int(d.x0 / s)),
                max(0, int(d.y0 / s)),
                min(w, int(round(d.x1 / s))),
                min(h, int(round(d.y1 / s))),
                d.score,
                d.label,
            )
            for d in dets
        ]
        return out, n

    def _rbc_size(self, dets: list[Detection], shape: tuple[int, int], min_score: float = 0.3) -> float | None:
        """Median side of confident red-cell boxes that do not touch the image border (a cut cell's
        box understates its size); None when fewer than 5 such cells."""
        h, w = shape[:2]
        m = max(2, int(0.01 * max(h, w)))
        sides = [
            ((d.x1 - d.x0) * (d.y1 - d.y0)) ** 0.5
            for d in dets
            if d.label == "red_blood_cell"
            and d.score >= min_score
            and d.x0 > m
            and d.y0 > m
            and d.x1 < w - m
            and d.y1 < h - m
        ]
        return float(np.median(sides)) if len(sides) >= 5 else None

    def detect_field(self, rgb: np.ndarray, um_per_px: float | None = None, auto_scale: bool = True) -> FieldDetections:
        h, w = rgb.shape[:2]
        if um_per_px and self.um_per_px:
            s = um_per_px / self.um_per_px
            dets, n = self._at_scale(rgb, s)
            return FieldDetections(dets, s, "pixel size", self._rbc_size(dets, rgb.shape), n)
        s = self.input_size / max(h, w)
        dets, n = self._at_scale(rgb, s)
        rbc = self._rbc_size(dets, rgb.shape)
        if auto_scale and rbc is None and self.rbc_diameter_px:
            rbc = self._probe_rbc(rgb, s)
        if auto_scale and rbc and self.rbc_diameter_px:
            ratio = self.rbc_diameter_px / (rbc * s)
            if not 0.75 <= ratio <= 1.33:
                s2 = s * ratio
                if max(h, w) * s2 > 16 * self.input_size:
                    return FieldDetections(
                        dets,
                        s,
                        "default",
                        rbc,
                        n,
                        ("red-cell ruler asked for an implausible zoom; kept the default scale",),
                    )
                dets2, n2 = self._at_scale(rgb, s2)
                return FieldDetections(dets2, s2, "red-cell ruler", self._rbc_size(dets2, rgb.shape) or rbc, n2)
            return FieldDetections(dets, s, "red-cell ruler", rbc, n)
        return FieldDetections(dets, s, "default", rbc, n)

    def _probe_rbc(self, rgb: np.ndarray, s: float) -> float | None:
        """Red-cell size (source px) from the centre of a large field seen at 2×, 4×, 8× the default
        scale (red cells too small to see when the whole field is shrunk to the model's size)."""
        h, w = rgb.shape[:2]
        for k in (2, 4, 8):
            sk = s * k
            if sk > 1.5:  # would upsample the source: red cells are not that small
                break
            side = int(min(h, w, self.tile / sk))
            y0, x0 = (h - side) // 2, (w - side) // 2
            dets, _ = self._at_scale(rgb[y0 : y0 + side, x0 : x0 + side], sk)
            rbc = self._rbc_size(dets, (side, side))
            if rbc:
                return rbc
        return None

    def detect(self, rgb: np.ndarray, **kw) -> list[Detection]:
        return self.detect_field(rgb, **kw).detections
