"""Differential corrected for the classifier's known confusion, with the correction's uncertainty.

A classifier that calls 5% of true myelocytes "promyelocyte" inflates the promyelocyte count of a
myelocyte-rich smear. With ``M[i, j] = P(predicted j | true i)`` from the model card's held-out
confusion matrix, the expected predicted proportions are ``q = π M`` for true proportions ``π``.
``π`` is estimated by maximum likelihood on the simplex (the EM algorithm of Saerens et al. 2002 /
iterative Bayesian unfolding), which never gives negative counts, unlike inverting ``M``.

Uncertainty: a parametric bootstrap that redraws both the case's counts (multinomial) and each row
of ``M`` (Dirichlet on the held-out counts of that true class, so rare classes with few test cells
carry their larger uncertainty into the interval); 95% percentile intervals.

Caveats (stated in every result): the confusion was measured on the model's own test split
(two CellaVision sites, DeepAPL labels are routine sign-outs), so the correction assumes the case
looks like that data; rows without held-out cells are taken as always correct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..taxonomy import BLAST_EQUIVALENT, NON_WBC

__all__ = ["CorrectedDifferential", "corrected_differential", "unfold"]

CAVEAT = (
    "corrected with the confusion matrix of the model's held-out test cells (PBC + DeepAPL, CellaVision); "
    "valid only for cases that resemble that data; classes without held-out cells are assumed always right"
)


@dataclass(frozen=True)
class CorrectedDifferential:
    #: class → (percent of white cells, 95% low, 95% high); non-WBC classes per 100 white cells
    percent: dict[str, tuple[float, float, float]]
    blast_percent: float
    blast_ci: tuple[float, float]
    draws: int
    method: str = "EM (maximum likelihood) unfolding of the held-out confusion; parametric bootstrap 95% CI"
    caveat: str = CAVEAT

    def to_dict(self) -> dict:
        return {
            "percent": {c: [round(v, 2) for v in t] for c, t in self.percent.items()},
            "blast_percent": round(self.blast_percent, 2),
            "blast_ci95": [round(v, 2) for v in self.blast_ci],
            "draws": self.draws,
            "method": self.method,
            "caveat": self.caveat,
        }


def unfold(counts: np.ndarray, m: np.ndarray, iters: int = 500, tol: float = 1e-9) -> np.ndarray:
    """Maximum-likelihood true proportions π (sum 1) given predicted ``counts`` and ``M`` (rows sum 1)."""
    counts = np.asarray(counts, float)
    if counts.sum() <= 0:
        return np.zeros(len(counts))
    return _unfold_batch(counts[None], np.asarray(m, float)[None], iters, tol)[0]


def _unfold_batch(counts: np.ndarray, m: np.ndarray, iters: int = 300, tol: float = 0.0) -> np.ndarray:
    """EM for D cases at once: counts (D, K), m (D, K, K); stops early once no proportion moves by
    ``tol`` or more (``tol=0``: always ``iters`` steps)."""
    d, k = counts.shape
    n = np.maximum(counts.sum(1, keepdims=True), 1e-12)
    pi = np.full((d, k), 1.0 / k)
    for _ in range(iters):
        q = np.einsum("dk,dkj->dj", pi, m)
        ratio = np.divide(counts, q, out=np.zeros_like(q), where=q > 0)
        new = pi * np.einsum("dkj,dj->dk", m, ratio) / n
        new /= np.maximum(new.sum(1, keepdims=True), 1e-12)
        if np.abs(new - pi).max() < tol:
            return new
        pi = new
    return pi


def _row_normalise(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, float)
    support = conf.sum(1)
    m = np.where(support[:, None] > 0, conf / np.maximum(support[:, None], 1), np.eye(len(conf)))
    return m, support


def _percentages(pi: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, float]:
    wbc = np.array([c not in NON_WBC for c in classes])
    blast = np.array([c in BLAST_EQUIVALENT for c in classes])
    denom = pi[wbc].sum()
    if denom <= 1e-9:  # (almost) no white cells: per-100-WBC figures are undefined, as in the raw count
        return np.zeros(len(pi)), 0.0
    return 100 * pi / denom, float(100 * pi[blast].sum() / denom)


def corrected_differential(
    counts: Sequence[int],
    confusion: np.ndarray,
    classes: Sequence[str],
    draws: int = 300,
    seed: int = 0,
) -> CorrectedDifferential:
    """``counts``: predicted cells per class of the case; ``confusion``: held-out counts, rows true."""
    counts = np.asarray(counts, float)
    conf = np.asarray(confusion, float)
    if conf.shape != (len(classes), len(classes)) or len(counts) != len(classes):
        raise ValueError("confusion must be K×K and counts of length K for the same K classes")
    m, support = _row_normalise(conf)
    point, blast = _percentages(unfold(counts, m), classes)
    rng = np.random.default_rng(seed)
    n = int(counts.sum())
    k = len(classes)
    c_star = rng.multinomial(n, counts / n, size=draws).astype(float) if n else np.zeros((draws, k))
    g = rng.gamma(conf[None] + 0.5 / k, size=(draws, k, k))  # Dirichlet rows via normalised gammas
    m_star = np.where((support > 0)[None, :, None], g / g.sum(2, keepdims=True), np.eye(k)[None])
    pi = _unfold_batch(c_star, m_star)
    boot = np.empty((draws, k))
    boot_b = np.empty(draws)
    for d in range(draws):
        boot[d], boot_b[d] = _percentages(pi[d], classes)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    blo, bhi = np.percentile(boot_b, [2.5, 97.5])
    return CorrectedDifferential(
        percent={c: (float(point[i]), float(lo[i]), float(hi[i])) for i, c in enumerate(classes)},
        blast_percent=blast,
        blast_ci=(float(blo), float(bhi)),
        draws=draws,
    )
