"""Decode labelled crops once into a compact uint8 array cache (with dHash for near-duplicates)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..classify.preprocess import prepare_crop
from ..data.splits import dhash
from ..errors import ImageReadError
from ..io.images import read_image
from ..records import LabelledImage

log = logging.getLogger(__name__)

__all__ = ["build_cache"]


def _load(args: tuple[str, int]) -> tuple[np.ndarray | None, int, str]:
    path, size = args
    try:
        img = read_image(path)
    except ImageReadError as exc:
        return None, 0, str(exc)
    return prepare_crop(img.pixels, size), dhash(img.pixels), ""


def build_cache(
    records: Sequence[LabelledImage],
    size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Return ``{"images": (N,size,size,3) uint8, "hashes": (N,) uint64, "ok": (N,) bool}``.

    Results are stored under ``cache_dir`` keyed by the list of paths and the size, so a second
    run with the same records reads the arrays back instead of decoding again.
    """
    key = hashlib.sha256(json.dumps([size, [r.path for r in records]]).encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"crops_{size}_{key}.npz" if cache_dir else None
    if target is not None and target.exists():
        with np.load(target) as z:
            return {k: z[k] for k in z.files}
    n = len(records)
    images = np.zeros((n, size, size, 3), np.uint8)
    hashes = np.zeros(n, np.uint64)
    ok = np.zeros(n, bool)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        jobs = pool.map(_load, [(r.path, size) for r in records], chunksize=64)
        for i, (arr, h, err) in enumerate(jobs):
            if arr is None:
                log.warning("skipped %s", err)
            else:
                images[i], hashes[i], ok[i] = arr, h, True
            if progress is not None:
                progress(i + 1, n)
    out = {"images": images, "hashes": hashes, "ok": ok}
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, **out)
        tmp.replace(target)
    return out
