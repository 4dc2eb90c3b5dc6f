"""What the review workstation shows and exports about a case: its differential from the current
labels, the analysis's rules re-run on them, and the recorded findings (pure functions of the cells)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from ..aggregate import RULES_VERSION, suggest
from ..aggregate.differential import differential_from_counts as core_differential
from ..records import CellPrediction
from ..taxonomy import ARTEFACT, CLASSES, FINDINGS
from .db import Cell, finding_keys

__all__ = [
    "counts_of",
    "csv_safe",
    "differential_from_counts",
    "differential_of",
    "findings_from",
    "findings_of",
    "findings_summary",
    "reviewed_suggestion",
]


def reviewed_suggestion(
    counts: dict[str, int], case_scores: dict | None, findings: dict[str, list[str]] | None = None
) -> dict:
    """The analysis's rules (defaults, :data:`~leukomorph.aggregate.RULES_VERSION`) applied to the
    current classes (the reviewer's where given, else the model's; artefacts left out), the
    findings the reviewers recorded (:func:`findings_of`; read since rules 1.5) and the analysis's
    learned case scores, which review does not change."""
    preds = []
    for cls, n in counts.items():
        if cls in CLASSES:  # one object per class, n times: the rules count cells and read classes
            preds += [CellPrediction(cls, tuple(float(c == cls) for c in CLASSES), CLASSES)] * n
    if not preds:
        return {"code": "", "text": "no cells", "urgent": False, "rules_version": RULES_VERSION}
    sug = suggest(core_differential(counts, CLASSES), preds, case_scores=case_scores, findings=findings)
    return {"code": sug.code, "text": sug.text, "urgent": sug.urgent, "rules_version": RULES_VERSION}


def findings_of(cells: list[Cell]) -> dict[str, list[str]]:
    """The cells (paths) carrying each recorded finding, artefacts left out (FINDINGS order)."""
    return findings_from((c.path, c.findings) for c in cells if c.current != ARTEFACT)


def findings_from(rows: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
    """:func:`findings_of` from (path, "|"-joined findings) pairs, e.g. two columns of a query."""
    on: dict[str, list[str]] = defaultdict(list)
    for path, found in rows:
        for f in finding_keys(found):
            on[f].append(path)
    return {k: on[k] for k in FINDINGS if on[k]}


def findings_summary(found: dict[str, list[str]]) -> list[dict]:
    """How many cells carry each recorded finding, from what :func:`findings_of` made of the cells
    (FINDINGS order; findings on no cell left out)."""
    return [{"finding": k, "name": FINDINGS[k], "cells": len(v)} for k, v in found.items()]


def csv_safe(text: str) -> str:
    """A CSV field a spreadsheet will not run as a formula (OWASP CSV injection): text that starts
    with =, +, -, @, a tab or a carriage return gets a leading apostrophe."""
    return "'" + text if text and text[0] in "=+-@\t\r" else text


def counts_of(cells: list[Cell]) -> dict[str, int]:
    """Cells per current class (the reviewer's label, else the model's)."""
    counts: dict[str, int] = defaultdict(int)
    for c in cells:
        counts[c.current] += 1
    return dict(counts)


def differential_of(cells: list[Cell]) -> dict:
    """Counts and % with 95% Wilson intervals from the current (reviewed or predicted) classes."""
    return differential_from_counts(counts_of(cells))


def differential_from_counts(counts: dict[str, int]) -> dict:
    """The analysis differential (:func:`leukomorph.aggregate.differential_from_counts`: % of white
    cells, non-white cells per 100 white cells, 95% Wilson intervals) rounded for display; an
    unbounded interval end is None."""
    d = core_differential(counts, CLASSES)

    def r(v: float) -> float | None:
        return round(v, 1) if math.isfinite(v) else None

    return {
        "wbc": d.wbc_denominator,
        "classes": {
            c.name: {"count": c.count, "percent": r(c.percent), "ci95": [r(c.ci_low), r(c.ci_high)]} for c in d.counts
        },
        "blast_percent": r(d.blast_percent),
        "blast_ci95": [r(v) for v in d.blast_ci],
        "excluded": d.excluded,
    }
