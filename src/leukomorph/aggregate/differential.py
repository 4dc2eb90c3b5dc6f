"""Differential count. White-cell classes are given as % of the white-cell count (the denominator
excludes platelets, smudge cells and erythroblasts; erythroblasts and the others are given per
100 white cells, as nucleated red cells are in a manual differential). Intervals are 95% Wilson
score intervals, which stay inside [0, 100] and behave at small counts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from ..records import CellPrediction, ClassCount, Differential
from ..taxonomy import ARTEFACT, BLAST_EQUIVALENT, CLASSES, NON_WBC

__all__ = ["differential", "differential_from_counts", "wilson_interval"]

_Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials, as fractions (0, 0 when n is 0)."""
    if n <= 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def differential(predictions: Sequence[CellPrediction], classes: Sequence[str] = CLASSES) -> Differential:
    """The differential of classified cells (each counted as its predicted class)."""
    return differential_from_counts(Counter(p.predicted_class for p in predictions), classes, len(predictions))


def differential_from_counts(
    counts: Mapping[str, int], classes: Sequence[str] = CLASSES, total_cells: int | None = None
) -> Differential:
    """The differential of cells counted per class (e.g. a reviewer's current labels). Cells a
    reviewer labelled :data:`~leukomorph.taxonomy.ARTEFACT` count in no class, no denominator and
    not in ``total_cells``; their number is ``excluded``."""
    excluded = counts.get(ARTEFACT, 0)
    counts = {c: v for c, v in counts.items() if c != ARTEFACT}
    wbc = sum(v for c, v in counts.items() if c not in NON_WBC)
    rows = []
    for c in classes:
        k = counts.get(c, 0)
        if c in NON_WBC:
            # per 100 WBC: a ratio, so the interval is on k/(k+wbc) mapped back to a ratio
            lo, hi = wilson_interval(k, k + wbc)
            pct = 100.0 * k / wbc if wbc else 0.0
            lo_r = 100.0 * lo / (1 - lo) if wbc else 0.0
            hi_r = 100.0 * hi / (1 - hi) if wbc and hi < 1 else (math.inf if k else 0.0)
            rows.append(ClassCount(c, k, pct, lo_r, hi_r))
        else:
            lo, hi = wilson_interval(k, wbc)
            rows.append(ClassCount(c, k, 100.0 * k / wbc if wbc else 0.0, 100 * lo, 100 * hi))
    blasts = sum(counts.get(c, 0) for c in BLAST_EQUIVALENT)
    blo, bhi = wilson_interval(blasts, wbc)
    return Differential(
        counts=tuple(rows),
        total_cells=sum(counts.values()) if total_cells is None else total_cells,
        wbc_denominator=wbc,
        blast_count=blasts,
        blast_percent=100.0 * blasts / wbc if wbc else 0.0,
        blast_ci=(100 * blo, 100 * bhi),
        excluded=excluded,
    )
