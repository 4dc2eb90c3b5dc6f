"""Cases as another microscope would image them: crops placed in a case folder as they are
(a symbolic link) or zoomed about their centre (:func:`leukomorph.classify.preprocess.zoom_crop`:
×2 is a camera or objective at twice the training magnification, ×0.6 at 0.6 times it), for the
benchmarks that check what the pipeline does with such cases."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["place_crop"]


def place_crop(src: Path, dst: Path, zoom: float = 1.0) -> Path:
    """``src`` linked at ``dst`` (zoom 1), else written there as a PNG zoomed by ``zoom``; the path written."""
    if abs(zoom - 1.0) < 1e-9:
        os.symlink(Path(src).resolve(), dst)
        return dst
    import cv2

    from ..classify.preprocess import zoom_crop
    from ..io import read_image

    out = Path(dst).with_suffix(".png")
    cv2.imwrite(str(out), cv2.cvtColor(zoom_crop(read_image(src).pixels, zoom), cv2.COLOR_RGB2BGR))
    return out
