"""Counting statistics for decision thresholds: how sure is "blasts ≥ 20%", and how many more cells
would settle it ("adaptive counting").

A manual differential of 100-200 cells carries wide binomial uncertainty: 25 blasts in 100 white
cells is 25% with a 95% Wilson interval of 17.6-34.3%, which does not exclude the 20% threshold.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .differential import wilson_interval

__all__ = ["DEFAULT_THRESHOLDS", "cells_to_decide", "prob_above", "threshold_report"]

#: Blast-percentage thresholds reported: 20% (WHO 5th ed. / ICC acute leukemia) and 10% (ICC
#: AML with recurrent genetic abnormalities, and the lower edge of the 10-19% grey zone).
DEFAULT_THRESHOLDS = (10.0, 20.0)


@lru_cache(maxsize=4096)  # seeded, so a pure function of its arguments; the review app asks again on each relabel
def prob_above(k: int, n: int, threshold_pct: float, draws: int = 20000, seed: int = 0) -> float:
    """Posterior probability that the true proportion exceeds the threshold (Jeffreys Beta(k+½, n-k+½))."""
    if n <= 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    return float((rng.beta(k + 0.5, n - k + 0.5, draws) > threshold_pct / 100).mean())


def cells_to_decide(k: int, n: int, threshold_pct: float, max_cells: int = 5000) -> int | None:
    """Additional white cells needed for the 95% interval to exclude the threshold, if the observed
    proportion held. 0: already decided; None: not reachable within ``max_cells`` (proportion at
    the threshold, or no cells yet)."""
    if n <= 0:
        return None
    t = threshold_pct / 100
    lo, hi = wilson_interval(k, n)
    if lo > t or hi < t:
        return 0
    p = k / n
    if abs(p - t) < 1e-9:
        return None

    # the interval half-width shrinks like 1/sqrt(m): search on a doubling grid, then bisect
    def decided(m: int) -> bool:
        lo_m, hi_m = wilson_interval(round(p * m), m)
        return lo_m > t or hi_m < t

    m = n
    while not decided(m):
        m *= 2
        if m > max_cells:
            return None if not decided(max_cells) else _bisect(decided, n, max_cells) - n
    return _bisect(decided, max(n, m // 2), m) - n


def _bisect(ok, lo: int, hi: int) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def threshold_report(k: int, n: int, thresholds=DEFAULT_THRESHOLDS) -> list[dict]:
    """For each threshold: status (above / below / undecided), P(true % above), cells still needed."""
    out = []
    for t in thresholds:
        lo, hi = wilson_interval(k, n)
        status = "above" if lo * 100 > t else "below" if hi * 100 < t else "undecided"
        more = cells_to_decide(k, n, t)
        out.append(
            {
                "threshold_percent": t,
                "status": status if n > 0 else "no cells",
                "probability_above": None if n <= 0 else round(prob_above(k, n, t), 4),
                "additional_cells_needed": more,
                "total_cells_needed": None if more is None else n + more,
            }
        )
    return out
