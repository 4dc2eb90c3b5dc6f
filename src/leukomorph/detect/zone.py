"""Where to count on a whole slide: the reading zone and the tiles that cover it.

A hematologist counts white cells where the smear is one cell thick (the monolayer behind the
feathered edge): not on bare glass, not in the thick area where cells pile up. Two steps:

1. On the slide overview, :func:`smear_mask` separates stained material from glass (optical
   density above an Otsu threshold) and :func:`plan_reading_zone` lays a grid of tiles over the
   slide, keeping those with smear on them (the overview is too coarse to tell a monolayer from a
   thick area: red cells are about one overview pixel). The kept tiles are visited in a seeded
   random order, so a count stopped early samples the whole smear rather than one end of it.
2. Each tile's core, once read at full resolution, is measured by :func:`tile_coverage`
   (fraction of pixels denser than glass by ``COVER_OD``) and counted only when that fraction
   lies in the ``coverage`` range (below it the tile is sparse: edge, glass; above it thick: no
   glass between the cells) and at most MAX_THICK_FRACTION of its 25 µm squares are thick (a
   tile half on the thick area, half on glass, has a monolayer's mean coverage). The default
   range contains the public monolayer fields of txl_pbc (four microscopes: 10th–90th
   percentile of their coverage 0.21–0.65, per source medians 0.30–0.61); none of their 25 µm
   squares is thick. Neither was tuned on whole slides, none being public here.

Each tile is read with a margin around its core; a cell belongs to the tile whose core holds its
centre (:meth:`Tile.owns`), so a cell on a tile border is counted once, from a view that shows it
whole when the margin exceeds a cell's radius.

Pure: arrays and numbers in, dataclasses out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLOCK_UM",
    "COVER_OD",
    "DEFAULT_COVERAGE",
    "MAX_THICK_FRACTION",
    "ReadingZone",
    "Tile",
    "plan_reading_zone",
    "glass_white",
    "smear_mask",
    "tile_coverage",
]

#: covered fraction of a counted tile at full resolution (see the module docstring)
DEFAULT_COVERAGE = (0.1, 0.9)
#: overview: optical density below which a pixel is glass, whatever Otsu says (a blank slide has no smear)
MIN_OD = 0.04
#: overview: optical density above which a pixel is smear, whatever Otsu says
MAX_OD = 0.1
#: overview: fraction of a grid tile that must be smear for the tile to be read
MIN_SMEAR = 0.05
#: full resolution: optical density (mean of the channels, relative to the glass) of a covered pixel
COVER_OD = 0.1
#: full resolution: side of the squares a tile is cut into to find thick patches (µm), a square
#: covered more than THICK_BLOCK being thick (no 25 µm square of the 252 txl_pbc val fields is),
#: and the largest fraction of thick squares a counted tile may have
BLOCK_UM = 25.0
THICK_BLOCK = 0.9
MAX_THICK_FRACTION = 0.25


@dataclass(frozen=True)
class Tile:
    """One tile: its core (counted) and the region read (core plus margin), level-0 pixels."""

    core: tuple[int, int, int, int]  # x0, y0, x1, y1
    read: tuple[int, int, int, int]  # x, y, w, h
    #: fraction of the tile that is smear on the overview
    smear: float

    def owns(self, cx: float, cy: float) -> bool:
        """Whether a cell centred at (cx, cy) (level-0 pixels) is counted in this tile."""
        x0, y0, x1, y1 = self.core
        return x0 <= cx < x1 and y0 <= cy < y1


@dataclass(frozen=True)
class ReadingZone:
    """The tiles to read, in reading order, and how the slide's grid was sorted."""

    tiles: tuple[Tile, ...]
    n_grid: int
    #: the glass colour (RGB, the overview's 99.5th percentile per channel): the white reference
    #: of :func:`tile_coverage`
    white: tuple[float, float, float]
    od_threshold: float
    seed: int

    def to_dict(self) -> dict:
        return {
            "tiles_with_smear": len(self.tiles),
            "tiles_on_grid": self.n_grid,
            "glass_rgb": [round(v, 1) for v in self.white],
            "overview_od_threshold": round(self.od_threshold, 4),
            "order_seed": self.seed,
        }


def glass_white(rgb: np.ndarray) -> np.ndarray:
    """The glass colour of an image: its 99.5th percentile per channel."""
    return np.maximum(np.percentile(rgb.reshape(-1, 3).astype(np.float32), 99.5, axis=0), 1.0)


def _od(rgb: np.ndarray, white) -> np.ndarray:
    """Mean optical density over the channels, relative to ``white``."""
    w = np.asarray(white, np.float32)
    return -np.log10(np.clip((rgb.astype(np.float32) + 1.0) / (w + 1.0), 1e-3, 1.0)).mean(-1)


def smear_mask(thumb: np.ndarray) -> tuple[np.ndarray, float]:
    """Stained material on an RGB uint8 overview: optical density relative to the glass
    (:func:`glass_white`) above Otsu's threshold clipped to [MIN_OD, MAX_OD] (unclipped, Otsu
    would split a thick area from the monolayer instead of the smear from the glass). Returns the
    mask and the threshold."""
    import cv2

    od = _od(thumb, glass_white(thumb))
    u8 = np.clip(od * 255.0, 0, 255).astype(np.uint8)  # OD 0–1 in 256 steps, for OpenCV's Otsu
    t = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0 if np.ptp(u8) > 0 else MIN_OD
    t = min(max(float(t), MIN_OD), MAX_OD)
    return od > t, t


def tile_coverage(rgb: np.ndarray, white, block: int | None = None) -> tuple[float, float]:
    """Fraction of a full-resolution tile denser than the glass ``white`` by COVER_OD, and the
    fraction of its ``block``-pixel squares (whole ones; about BLOCK_UM) covered more than
    THICK_BLOCK (0 when ``block`` is None or the tile holds no whole block)."""
    cov = _od(rgb, white) > COVER_OD
    thick = 0.0
    if block:
        h, w = (cov.shape[0] // block) * block, (cov.shape[1] // block) * block
        if h and w:
            means = cov[:h, :w].reshape(h // block, block, w // block, block).mean((1, 3))
            thick = float((means > THICK_BLOCK).mean())
    return float(cov.mean()), thick


def plan_reading_zone(
    thumb: np.ndarray,
    downsample: float,
    size: tuple[int, int],
    core_px: int,
    margin_px: int,
    seed: int = 0,
) -> ReadingZone:
    """Tiles over a slide of ``size`` (width, height, level-0 px) whose overview ``thumb`` is
    ``downsample`` times smaller: cores of ``core_px`` (level 0) on a grid, each read with
    ``margin_px`` around it (clipped to the slide); kept when at least MIN_SMEAR of it is smear
    on the overview; in a seeded random order."""
    if core_px < 1 or margin_px < 0:
        raise ValueError(f"core_px must be >= 1 and margin_px >= 0, not {core_px}, {margin_px}")
    mask, t = smear_mask(thumb)
    W, H = size
    th, tw = mask.shape
    kept, n_grid = [], 0
    for y0 in range(0, H, core_px):
        for x0 in range(0, W, core_px):
            n_grid += 1
            x1, y1 = min(x0 + core_px, W), min(y0 + core_px, H)
            a0, b0 = min(int(x0 / downsample), tw - 1), min(int(y0 / downsample), th - 1)
            a1 = max(a0 + 1, min(tw, int(np.ceil(x1 / downsample))))
            b1 = max(b0 + 1, min(th, int(np.ceil(y1 / downsample))))
            cov = float(mask[b0:b1, a0:a1].mean())
            if cov < MIN_SMEAR:
                continue
            rx, ry = max(0, x0 - margin_px), max(0, y0 - margin_px)
            read = (rx, ry, min(W, x1 + margin_px) - rx, min(H, y1 + margin_px) - ry)
            kept.append(Tile((x0, y0, x1, y1), read, round(cov, 4)))
    order = np.random.default_rng(seed).permutation(len(kept))
    return ReadingZone(
        tiles=tuple(kept[i] for i in order),
        n_grid=n_grid,
        white=tuple(float(v) for v in glass_white(thumb)),
        od_threshold=t,
        seed=seed,
    )
