"""Versioned, rule-based patient-level suggestion (decision support, not a diagnosis).

Rules are checked in order; the first that fires is returned with its evidence cells (the most
confident cells of the class that triggered it).

1. too_few_cells: fewer than ``min_wbc`` white cells classified: no suggestion.
2. apl_suspected (urgent): promyelocytes ≥ ``apl_promyelocyte_pct`` % of white cells and at
   least ``apl_min_cells`` of them. In APL the abnormal promyelocytes are blast equivalents and
   the 20% threshold does not apply (WHO 2022 / ICC 2022: APL with PML::RARA).
3. acute_leukemia_suspected: blasts + promonocytes ≥ 20% of white cells (WHO/ICC threshold).
4. blasts_increased: blasts + promonocytes ≥ 5% (review smear; consider marrow).
5. no_leukemic_pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..records import CellPrediction, Differential, Suggestion
from ..taxonomy import BLAST_EQUIVALENT

__all__ = ["RULES_VERSION", "RuleConfig", "suggest"]

RULES_VERSION = "1.0"


@dataclass(frozen=True)
class RuleConfig:
    min_wbc: int = 20
    apl_promyelocyte_pct: float = 10.0
    apl_min_cells: int = 3
    acute_blast_pct: float = 20.0
    increased_blast_pct: float = 5.0
    n_evidence: int = 12


def _evidence(preds: Sequence[CellPrediction], classes: set[str], n: int) -> tuple[str, ...]:
    hits = sorted((p for p in preds if p.predicted_class in classes), key=lambda p: -p.confidence)
    return tuple(p.source for p in hits[:n])


def suggest(diff: Differential, preds: Sequence[CellPrediction], cfg: RuleConfig = RuleConfig()) -> Suggestion:
    by_name = {c.name: c for c in diff.counts}
    pro = by_name.get("promyelocyte")
    details = {
        "rules_version": RULES_VERSION,
        "wbc_counted": diff.wbc_denominator,
        "blast_percent": round(diff.blast_percent, 2),
        "blast_ci95": [round(v, 2) for v in diff.blast_ci],
        "promyelocyte_percent": round(pro.percent, 2) if pro else 0.0,
        "thresholds": cfg.__dict__,
    }
    if diff.wbc_denominator < cfg.min_wbc:
        return Suggestion(
            "too_few_cells",
            f"Only {diff.wbc_denominator} white cells were classified (at least {cfg.min_wbc} needed): "
            "no suggestion; a differential needs 100-200 cells.",
            f"wbc < {cfg.min_wbc}",
            False,
            (),
            details,
        )
    if pro and pro.count >= cfg.apl_min_cells and pro.percent >= cfg.apl_promyelocyte_pct:
        return Suggestion(
            "apl_suspected",
            f"APL suspected — URGENT: promyelocytes {pro.percent:.1f}% of white cells "
            f"(95% CI {pro.ci_low:.1f}-{pro.ci_high:.1f}%). Review for abnormal promyelocytes (Auer rods, "
            "faggot cells); request PML::RARA testing and a coagulation screen now.",
            f"promyelocyte >= {cfg.apl_promyelocyte_pct}% and >= {cfg.apl_min_cells} cells",
            True,
            _evidence(preds, {"promyelocyte"}, cfg.n_evidence),
            details,
        )
    lo, hi = diff.blast_ci
    if diff.blast_percent >= cfg.acute_blast_pct:
        return Suggestion(
            "acute_leukemia_suspected",
            f"Acute leukemia suspected: blasts and blast equivalents {diff.blast_percent:.1f}% of white cells "
            f"(95% CI {lo:.1f}-{hi:.1f}%, threshold {cfg.acute_blast_pct:g}%). Confirm morphology; flow "
            "cytometry for lineage.",
            f"blast equivalents >= {cfg.acute_blast_pct}%",
            False,
            _evidence(preds, set(BLAST_EQUIVALENT), cfg.n_evidence),
            details,
        )
    if diff.blast_percent >= cfg.increased_blast_pct:
        return Suggestion(
            "blasts_increased",
            f"Blasts increased: {diff.blast_percent:.1f}% of white cells (95% CI {lo:.1f}-{hi:.1f}%), below the "
            f"{cfg.acute_blast_pct:g}% threshold. Review the smear; consider bone marrow examination.",
            f"blast equivalents >= {cfg.increased_blast_pct}%",
            False,
            _evidence(preds, set(BLAST_EQUIVALENT), cfg.n_evidence),
            details,
        )
    return Suggestion(
        "no_leukemic_pattern",
        f"No leukemic pattern detected: blasts {diff.blast_percent:.1f}% (95% CI {lo:.1f}-{hi:.1f}%), "
        f"promyelocytes {details['promyelocyte_percent']:.1f}%.",
        "no rule fired",
        False,
        (),
        details,
    )
