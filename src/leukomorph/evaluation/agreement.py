"""Per-case agreement of the model's differential with a reference count (method comparison).

A laboratory that validates an automated differential compares, case by case, the percentage of
each cell class the method reports with the reference method's (CLSI H20-A2: a manual count of
the same smear). Here the reference is the laboratory's own labels of the same cells, so what is
measured is the classifier alone, not sampling of a smear. For every class and for blast
equivalents: the mean of the per-case differences model − reference (bias, percentage points) and
the 95% limits of agreement, bias ± 1.96 s.d. (Bland & Altman 1986), over the cases with at
least ``min_wbc`` exactly labelled white cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..taxonomy import BLAST_EQUIVALENT, CLASSES, NON_WBC

__all__ = ["differential_agreement", "format_agreement"]

#: the fewest reference white cells a case needs to enter the comparison
MIN_WBC = 20


def _percentages(labels: Sequence[str]) -> dict[str, float]:
    wbc = [c for c in labels if c not in NON_WBC]
    out = {c: 100.0 * wbc.count(c) / len(wbc) for c in CLASSES if c not in NON_WBC}
    out["blast equivalents"] = 100.0 * sum(c in BLAST_EQUIVALENT for c in wbc) / len(wbc)
    return out


def differential_agreement(
    cases: Sequence[str], reference: Sequence[str], predicted: Sequence[str], min_wbc: int = MIN_WBC
) -> dict:
    """Bland-Altman agreement of per-case white-cell differentials (% of white cells).

    ``cases``, ``reference``, ``predicted``: one entry per exactly labelled cell (its case, the
    reference class, the model's class). A case enters when at least ``min_wbc`` of its cells are
    white cells by the reference; the model's percentages use the same cells, over the cells *it*
    calls white cells.
    """
    by_case: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        by_case.setdefault(c, []).append(i)
    used, rows = [], []
    for case, idx in sorted(by_case.items()):
        ref = [reference[i] for i in idx]
        pred = [predicted[i] for i in idx]
        if sum(c not in NON_WBC for c in ref) < min_wbc or all(c in NON_WBC for c in pred):
            continue
        used.append(case)
        rows.append((_percentages(ref), _percentages(pred)))
    out: dict = {"method": __doc__.split("\n\n")[1].replace("\n", " "), "min_wbc": min_wbc, "cases": used}
    classes: dict[str, dict] = {}
    for name in rows[0][0] if rows else []:
        r = np.array([a[name] for a, _ in rows])
        m = np.array([b[name] for _, b in rows])
        if not (r.any() or m.any()):
            continue
        d = m - r
        sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
        bias = float(d.mean())
        classes[name] = {
            "reference_mean": round(float(r.mean()), 2),
            "model_mean": round(float(m.mean()), 2),
            "bias": round(bias, 2),
            "limits_of_agreement": [round(bias - 1.96 * sd, 2), round(bias + 1.96 * sd, 2)] if len(d) > 1 else None,
        }
    out["classes"] = classes
    return out


def format_agreement(a: dict) -> str:
    """A Markdown table of :func:`differential_agreement`."""
    n = len(a["cases"])
    head = (
        f"per-case differential agreement, model − reference (percentage points of white cells; {n} cases with "
        f">= {a['min_wbc']} reference white cells; bias and 95% limits of agreement, Bland-Altman)"
    )
    if not n:
        return head + ": no case has enough labelled white cells"
    lines = [
        head,
        "",
        "| class | reference mean % | model mean % | bias | 95% limits of agreement |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in a["classes"].items():
        loa = v["limits_of_agreement"]
        loa_s = f"{loa[0]:+.1f} to {loa[1]:+.1f}" if loa else "(one case)"
        means = f"{v['reference_mean']:.1f} | {v['model_mean']:.1f}"
        lines.append(f"| {name.replace('_', ' ')} | {means} | {v['bias']:+.1f} | {loa_s} |")
    return "\n".join(lines)
