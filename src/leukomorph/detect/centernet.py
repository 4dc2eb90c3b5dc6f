"""Decoding of centre-point (CenterNet-style) detector outputs, NMS and tiling: pure numpy.

The learned detector predicts, at 1/``stride`` of its input resolution, one heat map per class
(probability that an object's centre lies in the cell of the grid) and four regression maps
(sub-cell centre offset x, y; log width, log height in input pixels). Peaks of the heat map (local
3×3 maxima above a threshold) are objects. Nothing here needs torch or onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from .classical import Detection

__all__ = ["decode", "iou_matrix", "merge_tiles", "nms", "tiles"]


def decode(
    heat: np.ndarray,
    reg: np.ndarray,
    classes: Sequence[str],
    stride: int,
    threshold: float = 0.05,
    max_per_class: int = 400,
) -> list[Detection]:
    """``heat`` (C, h, w) probabilities, ``reg`` (4, h, w) → boxes in input pixels, best first."""
    out: list[Detection] = []
    kernel = np.ones((3, 3), np.uint8)
    for c, name in enumerate(classes):
        hm = np.ascontiguousarray(heat[c], dtype=np.float32)
        peaks = (hm >= cv2.dilate(hm, kernel)) & (hm >= threshold)
        ys, xs = np.nonzero(peaks)
        if len(ys) > max_per_class:
            keep = np.argsort(-hm[ys, xs])[:max_per_class]
            ys, xs = ys[keep], xs[keep]
        for y, x in zip(ys, xs, strict=True):
            cx = (x + float(reg[0, y, x])) * stride
            cy = (y + float(reg[1, y, x])) * stride
            bw = float(np.exp(np.clip(reg[2, y, x], -4, 8)))
            bh = float(np.exp(np.clip(reg[3, y, x], -4, 8)))
            out.append(
                Detection(
                    int(round(cx - bw / 2)),
                    int(round(cy - bh / 2)),
                    int(round(cx + bw / 2)),
                    int(round(cy + bh / 2)),
                    float(hm[y, x]),
                    name,
                )
            )
    out.sort(key=lambda d: -d.score)
    return out


def iou_matrix(a, b) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), boxes as x0, y0, x1, y1."""
    a = np.asarray(a, float).reshape(-1, 4)
    b = np.asarray(b, float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(dets: Sequence[Detection], iou_threshold: float = 0.5) -> list[Detection]:
    """Greedy per-class non-maximum suppression; keeps the higher-scoring box of each overlap."""
    out: list[Detection] = []
    for label in sorted({d.label for d in dets}):
        ds = sorted((d for d in dets if d.label == label), key=lambda d: -d.score)
        if not ds:
            continue
        boxes = np.array([(d.x0, d.y0, d.x1, d.y1) for d in ds], float)
        over = iou_matrix(boxes, boxes) > iou_threshold
        alive = np.ones(len(ds), bool)
        for i in range(len(ds)):
            if alive[i]:
                out.append(ds[i])
                alive[i + 1 :] &= ~over[i, i + 1 :]
    out.sort(key=lambda d: -d.score)
    return out


def tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) windows of at most ``tile`` px covering the image, ``overlap`` px shared."""
    step = max(1, tile - overlap)

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile, step)) + [n - tile]
        return sorted(set(s))

    for y in starts(height):
        for x in starts(width):
            yield y, x, min(height, y + tile), min(width, x + tile)


def merge_tiles(
    per_tile: Sequence[tuple[tuple[int, int, int, int], list[Detection]]],
    height: int,
    width: int,
    edge_px: int = 2,
    iou_threshold: float = 0.5,
) -> list[Detection]:
    """Detections of overlapping tiles → one list in image pixels, seams de-duplicated.

    A box that touches a tile edge lying inside the image is cut by the seam; with an overlap larger
    than the largest object, the whole object is inside a neighbouring tile, so cut boxes are
    dropped (unless no other tile covers that place, i.e. the edge is the image border). The rest
    goes through NMS, which removes objects seen whole by two tiles.
    """
    keep: list[Detection] = []
    for (y0, x0, y1, x1), dets in per_tile:
        for d in dets:
            X0, Y0, X1, Y1 = d.x0 + x0, d.y0 + y0, d.x1 + x0, d.y1 + y0
            cut = (
                (x0 > 0 and X0 <= x0 + edge_px)
                or (y0 > 0 and Y0 <= y0 + edge_px)
                or (x1 < width and X1 >= x1 - edge_px)
                or (y1 < height and Y1 >= y1 - edge_px)
            )
            if not cut:
                keep.append(Detection(max(0, X0), max(0, Y0), min(width, X1), min(height, Y1), d.score, d.label))
    return nms(keep, iou_threshold)
