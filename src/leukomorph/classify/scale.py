"""Cell-scale normalisation: bring a case's crops to the magnification the model was trained at.

The scale of a crop is measured, without labels, as the equivalent diameter of its central
nucleus divided by the crop side (:func:`leukomorph.segment.nucleus_size_fraction`). A case's
scale is the median over its crops (robust to the mix of cell types); the zoom that maps it to
the model's reference median is applied to every crop of the case.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..segment import nucleus_size_fraction

__all__ = ["REFERENCE_NUCLEUS_FRACTION", "case_zoom", "model_nucleus_fraction"]

#: Median nucleus-size fraction of the default classifier's training crops (1,000 PBC crops: 0.335,
#: 1,000 DeepAPL crops: 0.468; the midpoint of the two medians).
REFERENCE_NUCLEUS_FRACTION = 0.40

#: Zooms outside this range are clipped (beyond it the crop no longer holds a usable cell).
ZOOM_RANGE = (0.4, 2.5)


def model_nucleus_fraction(model) -> float:
    card = getattr(model, "card", None)
    val = (card.raw.get("inference", {}).get("scale") or {}).get("nucleus_fraction") if card is not None else None
    return float(val) if val else REFERENCE_NUCLEUS_FRACTION


def case_zoom(
    crops: Sequence[np.ndarray], reference: float = REFERENCE_NUCLEUS_FRACTION, max_cells: int = 400
) -> float:
    """Zoom factor for a case: reference / median nucleus fraction of (up to ``max_cells``) crops.

    Returns 1.0 when no nucleus is found in any crop.
    """
    step = max(1, len(crops) // max_cells)
    fr = np.array([nucleus_size_fraction(c) for c in crops[::step]], float)
    fr = fr[np.isfinite(fr)]
    if fr.size == 0:
        return 1.0
    return float(np.clip(reference / np.median(fr), *ZOOM_RANGE))
