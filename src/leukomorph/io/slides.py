"""Whole-slide images: open them with OpenSlide, read regions, and name regions as sources.

OpenSlide reads the scanners' formats (Aperio SVS, Hamamatsu NDPI/VMS, Leica SCN, 3DHistech
MIRAX, Philips TIFF, Ventana BIF, DICOM, generic tiled TIFF) and gives the pixel size
(``openslide.mpp-x``) where the file states it. A region of a slide is named by a source string
``<slide path>[x=…,y=…,w=…,h=…,level=…]`` (x, y, w, h in level-0 pixels; the region is read at
``level``). :func:`leukomorph.io.read_image` reads such a source like a file, so every later stage
(report, saliency, review import) can fetch a tile's pixels by its name while the slide is where
it was.

Every failure raises :class:`~leukomorph.errors.ImageReadError` naming the slide and the reason.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import ImageReadError
from ..records import Image

__all__ = [
    "SLIDE_SUFFIXES",
    "SlideInfo",
    "is_region_source",
    "is_whole_slide",
    "open_slide",
    "parse_region",
    "read_region",
    "read_region_image",
    "read_thumbnail",
    "region_source",
]

#: suffixes of the scanners' own formats: never read as an ordinary image (tiled TIFFs are
#: recognised by their pyramid)
SLIDE_SUFFIXES = frozenset({".svs", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".bif", ".svslide"})
#: suffixes of ordinary images (a slide given among them gets a hint)
ORDINARY_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})
#: largest region read at once, in pixels at the read level
MAX_REGION_PIXELS = 64_000_000
#: largest ordinary image (a stitched smear scan) opened as a one-level slide: decoded whole,
#: 3 bytes a pixel
LARGE_IMAGE_MAX_PIXELS = 300_000_000

_REGION = re.compile(r"^(?P<path>.+)\[x=(?P<x>\d+),y=(?P<y>\d+),w=(?P<w>\d+),h=(?P<h>\d+),level=(?P<level>\d+)\]$")


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: its levels, its pixel size at level 0 (µm/px, None when not stated)."""

    path: str
    vendor: str
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level
    level_downsamples: tuple[float, ...]
    mpp: float | None
    objective_power: float | None
    #: OpenSlide's quick hash of the slide (a few tiles and the metadata), its identity in
    #: manifests; for a large ordinary image, the sha256 of its file
    quickhash: str

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    def level_mpp(self, level: int) -> float | None:
        return self.mpp * self.level_downsamples[level] if self.mpp else None

    def to_dict(self) -> dict:
        w, h = self.dimensions
        return {
            "path": self.path,
            "vendor": self.vendor,
            "width": w,
            "height": h,
            "levels": len(self.level_dimensions),
            "level_downsamples": [round(d, 4) for d in self.level_downsamples],
            "mpp": self.mpp,
            "objective_power": self.objective_power,
            "quickhash": self.quickhash,
        }


def _openslide():
    try:
        import openslide
    except ImportError as exc:  # a core dependency: only a broken install gets here
        raise ImageReadError(
            "openslide", f"whole-slide support needs openslide-python and openslide-bin ({exc})"
        ) from exc
    return openslide


class _NotOpenSlide(Exception):
    """OpenSlide does not read this file (the reason follows)."""


@functools.lru_cache(maxsize=8)
def _handle(path: str, mtime: float):
    """An open slide, kept for the next region of the same file (OpenSlide is thread-safe)."""
    openslide = _openslide()
    try:
        return openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise _NotOpenSlide(path) from exc
    except openslide.OpenSlideError as exc:
        raise ImageReadError(path, f"corrupt or unreadable whole-slide image ({exc})") from exc


def _not_a_slide(path: str) -> ImageReadError:
    ext = os.path.splitext(path)[1].lower()
    hint = (
        ": an ordinary image; analyse it with --fields (a smear field) or without (single-cell crops)"
        if ext in ORDINARY_SUFFIXES
        else _tiff_hint(path)
        if ext in (".tif", ".tiff")
        else ""
    )
    return ImageReadError(path, f"not a whole-slide image OpenSlide can read{hint}")


_PIL_LIMIT = threading.Lock()


@functools.lru_cache(maxsize=1)  # the whole image is decoded: keep one at a time
def _large_image(path: str, mtime: float):
    """A stitched smear image (PNG, JPEG, BMP, WebP, striped TIFF) larger than a field may be
    (MAX_PIXELS) and at most LARGE_IMAGE_MAX_PIXELS, decoded whole and wrapped as a one-level
    slide (OpenSlide's ImageSlide); None for anything else (the caller explains why)."""
    from PIL import Image as PILImage

    from .images import MAX_PIXELS

    openslide = _openslide()
    with _PIL_LIMIT:  # Pillow's bomb guard is a module setting: raised for this one file only
        old = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = LARGE_IMAGE_MAX_PIXELS
        try:
            with PILImage.open(path) as im:
                w, h = im.size
                if not MAX_PIXELS < w * h <= LARGE_IMAGE_MAX_PIXELS:
                    if w * h > LARGE_IMAGE_MAX_PIXELS:
                        raise ImageReadError(
                            path, f"image too large ({w}×{h}; limit {LARGE_IMAGE_MAX_PIXELS:,} pixels as a slide)"
                        )
                    return None
                rgb = im.convert("RGB")
        except ImageReadError:
            raise
        except Exception:  # not an image Pillow reads, or damaged: the caller's message says so
            return None
        finally:
            PILImage.MAX_IMAGE_PIXELS = old
    return openslide.ImageSlide(rgb)


def _tiff_hint(path: str) -> str:
    """Why OpenSlide may have refused a TIFF: damaged, or striped (not tiled)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            tiled = tf.pages[0].is_tiled
    except Exception as exc:  # tifffile raises many types for damaged files
        return f": a corrupt or truncated TIFF ({exc.__class__.__name__})"
    if tiled:
        return ": a tiled TIFF OpenSlide cannot open (damaged, or a layout it does not know)"
    return (
        ": OpenSlide reads TIFFs only when tiled; a large striped TIFF can be converted, e.g. "
        "`vips tiffsave in.tif out.tif --tile --pyramid` (a small one is a field: --fields)"
    )


def _slide(path: str):
    """OpenSlide's handle of a slide; an ordinary image (or striped TIFF) too large to be read as
    one field comes as a one-level slide (:func:`_large_image`)."""
    if not os.path.exists(path):
        raise ImageReadError(path, "no such file (or a broken link)")
    if os.path.isdir(path):
        raise ImageReadError(path, "is a folder, not a whole-slide image")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    mtime = os.path.getmtime(path)
    try:
        return _handle(path, mtime)
    except _NotOpenSlide:
        ext = os.path.splitext(path)[1].lower()
        big = _large_image(path, mtime) if ext in ORDINARY_SUFFIXES or ext in (".tif", ".tiff") else None
        if big is None:
            raise _not_a_slide(path) from None
        return big


def _float(props, key: str) -> float | None:
    try:
        v = float(props.get(key, ""))
    except ValueError:
        return None
    return v if np.isfinite(v) and v > 0 else None


def open_slide(path: str | os.PathLike[str]) -> SlideInfo:
    """The slide's levels, pixel size and identity; raises :class:`ImageReadError` if it is not one.
    Kept per file and modification time: every tile read asks for it again."""
    p = os.fspath(path)
    s = _slide(p)
    return _slide_info(p, os.path.getmtime(p), s)


@functools.lru_cache(maxsize=8)
def _slide_info(p: str, mtime: float, s) -> SlideInfo:
    props = s.properties
    mx, my = _float(props, "openslide.mpp-x"), _float(props, "openslide.mpp-y")
    mpp = (mx + my) / 2 if mx and my else (mx or my)
    if isinstance(s, _openslide().ImageSlide):  # a large ordinary image, decoded whole
        from .images import sha256_file

        w, h = s.dimensions
        return SlideInfo(p, "image (one level, decoded whole)", ((int(w), int(h)),), (1.0,), None, None, sha256_file(p))
    return SlideInfo(
        path=p,
        vendor=props.get("openslide.vendor", "unknown"),
        level_dimensions=tuple((int(w), int(h)) for w, h in s.level_dimensions),
        level_downsamples=tuple(float(d) for d in s.level_downsamples),
        mpp=mpp,
        objective_power=_float(props, "openslide.objective-power"),
        quickhash=props.get("openslide.quickhash-1", ""),
    )


def is_whole_slide(info: SlideInfo, max_pixels: int) -> bool:
    """A scanner format, a pyramid, or a single level too large to read as one field."""
    w, h = info.dimensions
    return info.vendor != "generic-tiff" or len(info.level_dimensions) > 1 or w * h > max_pixels


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's premultiplied RGBA (transparent where the scanner wrote nothing) on white."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) + 255.0 * (1.0 - a)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def read_region(path: str, x: int, y: int, w: int, h: int, level: int = 0) -> np.ndarray:
    """RGB uint8 pixels of a region: (x, y) its top-left corner and (w, h) its size in level-0
    pixels, read at ``level`` (so the array is (h, w) divided by the level's downsample)."""
    s = _slide(path)
    if not 0 <= level < s.level_count:
        raise ImageReadError(path, f"level {level} out of range (the slide has {s.level_count})")
    ds = float(s.level_downsamples[level])
    lw, lh = max(1, round(w / ds)), max(1, round(h / ds))
    if lw * lh > MAX_REGION_PIXELS:
        raise ImageReadError(path, f"region too large ({lw}×{lh} px at level {level}; limit {MAX_REGION_PIXELS:,})")
    try:
        rgba = np.asarray(s.read_region((int(x), int(y)), level, (lw, lh)))
    except Exception as exc:  # OpenSlideError after a corrupt tile: the handle is unusable
        _handle.cache_clear()
        raise ImageReadError(path, f"cannot read region x={x} y={y} ({exc.__class__.__name__}: {exc})") from exc
    return _rgba_to_rgb(rgba)


def read_thumbnail(path: str, max_px: int = 2048) -> tuple[np.ndarray, float]:
    """Whole-slide overview (RGB uint8, longer side at most ``max_px``) and its downsample from level 0."""
    s = _slide(path)
    w, h = s.dimensions
    try:
        th = np.asarray(s.get_thumbnail((max_px, max_px)).convert("RGB"))
    except Exception as exc:
        _handle.cache_clear()
        raise ImageReadError(path, f"cannot read the slide overview ({exc.__class__.__name__}: {exc})") from exc
    return th, w / th.shape[1]


def region_source(path: str, x: int, y: int, w: int, h: int, level: int) -> str:
    return f"{path}[x={int(x)},y={int(y)},w={int(w)},h={int(h)},level={int(level)}]"


def parse_region(source: str) -> tuple[str, int, int, int, int, int] | None:
    """(slide path, x, y, w, h, level) of a region source, or None for anything else."""
    m = _REGION.match(source)
    if m is None:
        return None
    return (m["path"], int(m["x"]), int(m["y"]), int(m["w"]), int(m["h"]), int(m["level"]))


def is_region_source(source: str) -> bool:
    """A region name whose slide exists, while no file carries that exact name."""
    r = parse_region(source)
    return r is not None and not os.path.exists(source) and os.path.isfile(r[0])


def read_region_image(source: str) -> Image:
    """A region source read as an :class:`Image`: pixel size from the slide (µm/px at the read
    level, when stated), sha256 of the decoded RGB pixels (hashing the whole slide per tile
    would cost more than analysing it; the slide's own identity is its quick hash)."""
    r = parse_region(source)
    if r is None:
        raise ImageReadError(source, "not a slide region")
    path, x, y, w, h, level = r
    info = open_slide(path)
    rgb = read_region(path, x, y, w, h, level)
    return Image(
        pixels=rgb,
        source=source,
        sha256=hashlib.sha256(rgb.tobytes()).hexdigest(),
        pixel_size_um=info.level_mpp(level),
    )
