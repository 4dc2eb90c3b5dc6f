"""Reading user images safely.

Every failure raises :class:`~leukomorph.errors.ImageReadError` naming the file and the reason;
valid but unusual images (grayscale, alpha, 16-bit, palette, EXIF-rotated) are converted to RGB
uint8 and the conversion is recorded in ``Image.notes``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from ..errors import ConfigError, ImageReadError
from ..records import Image
from .slides import SLIDE_SUFFIXES, is_region_source, read_region_image

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "check_pixel_size", "expand_inputs", "read_image", "sha256_file"]

#: Suffixes picked up when a folder is given. Files named explicitly are always attempted.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
#: Largest image accepted, in pixels (a guard against decompression bombs). A single-cell crop
#: is well under a megapixel; 64 MP admits a large smear field.
MAX_PIXELS = 64_000_000
_TIFF_SUFFIXES = (".tif", ".tiff")
#: what to do with a whole-slide image given as a crop or field
SLIDE_HINT = "analyse it with --slides"


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expand_inputs(items: Iterable[str], suffixes: Iterable[str] = IMAGE_SUFFIXES) -> list[str]:
    """Expand files, folders (recursively, image suffixes only) and glob patterns.

    Paths are returned as given (joined, never resolved, so symlinks keep their names), sorted
    within each item, duplicates removed in first-seen order; folders contribute the files with
    one of ``suffixes``. An item matching nothing is
    returned unchanged so that the caller reports it as unreadable.
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    for item in items:
        if os.path.isdir(item):
            found = []
            for root, dirs, files in os.walk(item, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                        found.append(os.path.join(root, name))
            for p in sorted(found):
                add(p)
        elif os.path.exists(item) or os.path.islink(item):
            add(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            for p in matches:
                if os.path.isdir(p):
                    continue
                add(p)
            if not matches:
                add(item)
        else:
            add(item)
    return out


def _to_uint8(arr: np.ndarray, path: str, notes: list[str]) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        notes.append("binary image converted to 8-bit")
        return arr.astype(np.uint8) * 255
    if arr.dtype in (np.uint16, np.int32, np.uint32) or arr.dtype == np.int16:
        bits = 16 if arr.dtype in (np.uint16, np.int16) else 32
        if arr.min() < 0:
            raise ImageReadError(path, f"signed {bits}-bit image with negative values is not supported")
        scale = 257.0 if bits == 16 else 16843009.0
        notes.append(f"{bits}-bit image scaled to 8-bit (divided by {scale:g})")
        return np.clip(np.round(arr.astype(np.float64) / scale), 0, 255).astype(np.uint8)
    raise ImageReadError(path, f"pixel type {arr.dtype} is not supported (expected 8- or 16-bit integers)")


def _to_rgb(arr: np.ndarray, path: str, notes: list[str]) -> np.ndarray:
    if arr.ndim == 2:
        notes.append("grayscale image replicated to RGB")
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        if arr.shape[2] == 2:
            notes.append("alpha channel composited on white")
            a = arr[:, :, 1:2].astype(np.float32) / 255.0
            g = arr[:, :, 0:1].astype(np.float32) * a + 255.0 * (1 - a)
            arr = np.round(g).astype(np.uint8)
        else:
            notes.append("grayscale image replicated to RGB")
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        notes.append("alpha channel composited on white")
        a = arr[:, :, 3:4].astype(np.float32) / 255.0
        rgb = arr[:, :, :3].astype(np.float32) * a + 255.0 * (1 - a)
        return np.round(rgb).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    raise ImageReadError(path, f"unsupported image shape {arr.shape} (expected H×W, H×W×3 or H×W×4)")


#: pixel sizes (µm/px) accepted from file metadata; outside this range the value is a screen/print
#: default (72, 96, 300 dpi) or nonsense, and is ignored
PLAUSIBLE_UM_PER_PX = (0.02, 5.0)


def _plausible(um: float | None) -> float | None:
    return float(um) if um and PLAUSIBLE_UM_PER_PX[0] <= um <= PLAUSIBLE_UM_PER_PX[1] else None


def check_pixel_size(um: float | None) -> None:
    """A pixel size a user gives (``--pixel-size``, µm/px): None, or > 0 and < 100; else :class:`ConfigError`."""
    if um is not None and not 0 < um < 100:
        raise ConfigError(f"pixel size (--pixel-size) must be µm per pixel, > 0 and < 100, not {um}")


def _tiff_pixel_size(tf, page) -> float | None:
    """µm per pixel from ImageJ metadata (unit micron) or the XResolution/ResolutionUnit tags."""
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    px_per_unit = num / den if den else 0.0
    if px_per_unit <= 0:
        return None
    ij = tf.imagej_metadata or {}
    unit = str(ij.get("unit", "")).lower()
    if unit in ("micron", "microns", "um", "\u00b5m", "µm"):
        return _plausible(1.0 / px_per_unit)
    res_unit = int(getattr(tags.get("ResolutionUnit"), "value", 2))
    per_unit_um = {2: 25400.0, 3: 10000.0}.get(res_unit)
    return _plausible(per_unit_um / px_per_unit) if per_unit_um else None


def _decode_tiff(data: bytes, path: str, notes: list[str], meta: dict | None = None) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tf:
            page = tf.pages[0]
            if meta is not None:
                try:
                    meta["pixel_size_um"] = _tiff_pixel_size(tf, page)
                except (KeyError, TypeError, ValueError, ZeroDivisionError):
                    meta["pixel_size_um"] = None
            n = int(np.prod(page.shape))
            if n > MAX_PIXELS * 4:
                raise ImageReadError(
                    path, f"image too large ({page.shape}; limit {MAX_PIXELS:,} pixels; if a whole slide, {SLIDE_HINT})"
                )
            if len(tf.pages) > 1:
                notes.append(f"multi-page TIFF: first of {len(tf.pages)} pages used")
            arr = page.asarray()
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise ImageReadError(path, f"corrupt or truncated TIFF ({exc.__class__.__name__}: {exc})") from exc
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _decode_pil(data: bytes, path: str, notes: list[str], meta: dict | None = None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            im = PILImage.open(io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageReadError(
                    path, f"image too large ({w}×{h}; limit {MAX_PIXELS:,} pixels; if a whole smear scan, {SLIDE_HINT})"
                )
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"multi-frame image: first of {im.n_frames} frames used")
            im.load()
    except ImageReadError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"image too large (decompression bomb guard: {exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from exc
    if meta is not None:
        dpi = im.info.get("dpi")
        try:
            meta["pixel_size_um"] = _plausible(25400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None
        except (TypeError, ValueError, IndexError):
            meta["pixel_size_um"] = None
    if im.getexif().get(0x0112, 1) not in (0, 1):
        im = ImageOps.exif_transpose(im)
        notes.append("EXIF orientation applied")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette image converted to RGB")
    elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{im.mode} image converted to RGB")
        im = im.convert("RGB")
    elif im.mode == "LA" or im.mode == "La":
        im = im.convert("LA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    return np.asarray(im)


def read_image(path: str | os.PathLike[str], *, max_bytes: int = 512 * 1024 * 1024) -> Image:
    """Read one image file as RGB uint8, or raise :class:`ImageReadError` saying why not."""
    p = os.fspath(path)
    if not os.path.exists(p):
        if is_region_source(p):  # "<slide>[x=…,y=…,w=…,h=…,level=…]": a tile of a whole-slide image
            return read_region_image(p)
        raise ImageReadError(p, "no such file (or a broken link)")
    if os.path.isdir(p):
        raise ImageReadError(p, "is a folder, not an image file")
    if Path(p).suffix.lower() in SLIDE_SUFFIXES:
        raise ImageReadError(p, f"a whole-slide image ({Path(p).suffix}): {SLIDE_HINT}")
    try:
        size = os.path.getsize(p)
        if size == 0:
            raise ImageReadError(p, "empty file (0 bytes)")
        if size > max_bytes:
            raise ImageReadError(
                p, f"file too large ({size:,} bytes; limit {max_bytes:,}; if a whole slide, {SLIDE_HINT})"
            )
        with open(p, "rb") as fh:
            data = fh.read()
    except PermissionError as exc:
        raise ImageReadError(p, "permission denied") from exc
    except ImageReadError:
        raise
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from exc
    notes: list[str] = []
    is_tiff = data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    meta: dict = {}
    arr = _decode_tiff(data, p, notes, meta) if is_tiff else _decode_pil(data, p, notes, meta)
    arr = _to_uint8(np.asarray(arr), p, notes)
    arr = _to_rgb(arr, p, notes)
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageReadError(p, f"image too small ({arr.shape[1]}×{arr.shape[0]} px; need at least 8×8)")
    return Image(
        pixels=np.ascontiguousarray(arr),
        source=p,
        sha256=hashlib.sha256(data).hexdigest(),
        pixel_size_um=meta.get("pixel_size_um"),
        notes=tuple(notes),
    )
