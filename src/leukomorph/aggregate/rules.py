"""Versioned, rule-based patient-level suggestion (decision support, not a diagnosis).

Rules are checked in order; the first that fires is returned with its evidence cells (the most
confident cells of the class that triggered it).

1. too_few_cells: fewer than ``min_wbc`` white cells classified: no suggestion ("insufficient cells").
2. apl_suspected (urgent): either the learned patient-level APL-vs-AML score (``case_scores``,
   default model ``leukomorph-apl-ens``) is ≥ ``apl_score_threshold``, or promyelocytes are ≥
   ``apl_promyelocyte_pct`` % of white cells with at least ``apl_min_cells`` of them (used only when
   no applicable score exists: on DeepAPL the count separates APL from AML barely better than
   chance, the learned score far better). A flag from the score alone on a case with blasts,
   blast equivalents and promyelocytes below ``apl_score_only_pct`` % stays urgent but says so
   (``details.apl_score_only``, rules 1.3): the score was fitted on AML and APL patients only, and
   healthy blood from another camera has scored high. A flag from the score on fewer than
   ``apl_score_few_cells`` classified cells carries a caution too (``details.apl_score_few_cells``,
   rules 1.4): on fewer cells the score is less specific, and the caution quotes the score card's
   cells-per-case figures (``metrics.cells_per_case``) where it has them. In APL the
   abnormal promyelocytes are blast equivalents and the 20% threshold does not apply (WHO 5th ed.
   / ICC 2022: APL with PML::RARA). Evidence: the cells that raise the score most, or the
   promyelocytes.
3. acute_leukemia_suspected: blasts + promonocytes ≥ 20% of white cells and the 95% interval
   above 20% (WHO 5th ed. / ICC threshold for AML and ALL).
4. acute_leukemia_uncertain: blasts + promonocytes ≥ ``uncertain_low_pct`` % and the 95% interval
   contains 20%: neither answer is supported; the suggestion says how many more cells would settle it.
5. blasts_increased: blasts + promonocytes ≥ 5% (review smear; consider marrow).
6. no_leukemic_pattern.

Outcomes 3-6 say "APL not excluded" (``details.apl_not_excluded``, rules 1.4) when the learned
score is applicable and below the threshold but the upper end of its 95% interval over cell
resampling reaches it: the case's cells do not settle the score.

Since rules 1.5 the rules also read the morphological findings a reviewer recorded on cells
(``findings``: a :data:`leukomorph.taxonomy.FINDINGS` key -> the cells carrying it; the analysis
has none, so its suggestion is unchanged): a faggot cell (bundled Auer rods, the hallmark of APL)
raises "APL suspected — URGENT" before any other rule, with those cells as evidence, even on too
few cells; Auer rods make the lineage hint myeloid (they are not seen in lymphoid blasts); bilobed
nuclei or hypergranular cytoplasm recorded on a case without an APL flag say "APL not excluded";
dysplastic features are named with what they point to. Every outcome lists the findings it read
(``details.findings``).

Every result carries ``details.blast_thresholds`` (status, posterior probability above, cells
still needed at 10% and 20%) and the case scores it used. Outcomes 2-5 also carry
``details.lineage_hint`` (since rules 1.2, :func:`lineage_hint`): what the morphology suggests about the
lineage of the blast population, with its evidence cells and statistics. Morphology cannot assign
lineage (WHO 5th ed. and ICC require immunophenotyping); the hint says so every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..records import CellPrediction, Differential, Suggestion
from ..taxonomy import BLAST_EQUIVALENT
from .counting import threshold_report
from .differential import wilson_interval

__all__ = ["RULES_VERSION", "RuleConfig", "cells_per_case_rows", "lineage_hint", "suggest"]

RULES_VERSION = "1.5"


@dataclass(frozen=True)
class RuleConfig:
    min_wbc: int = 20
    apl_promyelocyte_pct: float = 10.0
    apl_min_cells: int = 3
    acute_blast_pct: float = 20.0
    increased_blast_pct: float = 5.0
    uncertain_low_pct: float = 10.0
    apl_score_threshold: float = 0.5
    #: an APL flag raised by the score alone, on a case whose blasts, blast equivalents and
    #: promyelocytes together are below this share of white cells (%), carries a caution (rules 1.3)
    apl_score_only_pct: float = 5.0
    #: an APL flag raised by the score on fewer classified cells than this carries a caution: the
    #: score is less specific on few cells (rules 1.4; ``benchmarks/case_cells.py``)
    apl_score_few_cells: int = 100
    n_evidence: int = 12
    #: lineage hint: monocytic component (monocytes + promonocytes, % of white cells)
    monocytic_pct: float = 20.0
    #: lineage hint: maturing granulocytic precursors (promyelocytes + myelocytes + metamyelocytes, %)
    maturing_pct: float = 10.0
    #: lineage hint: share of blasts the attribute model calls granular (≥ granular / ≤ agranular)
    granular_share: float = 0.5
    agranular_share: float = 0.1
    min_blasts_for_attributes: int = 10
    #: reviewer-recorded faggot cells that raise "APL suspected" on their own (rules 1.5)
    apl_faggot_cells: int = 1


def _evidence(preds: Sequence[CellPrediction], classes: set[str], n: int) -> tuple[str, ...]:
    hits = sorted((p for p in preds if p.predicted_class in classes), key=lambda p: -p.confidence)
    return tuple(p.source for p in hits[:n])


def _most_likely(preds: Sequence[CellPrediction], cls: str, n: int) -> tuple[str, ...]:
    """The ``n`` cells with the highest probability of ``cls``, whatever they were called."""
    ranked = sorted((p for p in preds if cls in p.classes), key=lambda p: -p.probabilities[p.classes.index(cls)])
    return tuple(p.source for p in ranked[:n])


LINEAGE_CAVEAT = (
    "Morphology alone cannot assign lineage: flow cytometry (and cytogenetics/molecular tests) decide; "
    "this hint only orders the work-up."
)


def lineage_hint(
    diff: Differential,
    preds: Sequence[CellPrediction],
    cfg: RuleConfig = RuleConfig(),
    attributes: dict[str, dict[str, tuple[str, float]]] | None = None,
    apl: bool = False,
    auer_rods: Sequence[str] = (),
) -> dict:
    """What the morphology suggests about the blast population's lineage (since rules 1.2).

    Checked in order: APL pattern (myeloid, promyelocytic); a monocytic component
    (monocytes + promonocytes ≥ ``monocytic_pct`` %); maturing granulocytic precursors
    (≥ ``maturing_pct`` %); granularity of the cells called blast, from the WBCAtt attribute
    model when it ran (granular blasts favour myeloid; agranular blasts fit lymphoid or minimally
    differentiated myeloid). Otherwise undetermined. Auer rods a reviewer recorded
    (``auer_rods``: the cells carrying them; rules 1.5) turn the last three into "myeloid (Auer
    rods)" and are added to the basis of the others.
    """
    by_name = {c.name: c for c in diff.counts}
    n = diff.wbc_denominator

    def pct(names):
        k = sum(by_name[c].count for c in names if c in by_name)
        lo, hi = wilson_interval(k, n)
        return k, (100 * k / n if n else 0.0), (100 * lo, 100 * hi)

    out: dict = {"caveat": LINEAGE_CAVEAT, "evidence_cells": [], "statistics": {}}
    mono_k, mono, mono_ci = pct(("monocyte", "promonocyte"))
    mat_k, mat, mat_ci = pct(("promyelocyte", "myelocyte", "metamyelocyte"))
    out["statistics"] = {
        "monocytic_percent": [round(mono, 1), [round(v, 1) for v in mono_ci]],
        "maturing_granulocytic_percent": [round(mat, 1), [round(v, 1) for v in mat_ci]],
    }
    blasts = [p for p in preds if p.predicted_class == "blast"]
    gran = None
    if attributes and len(blasts) >= cfg.min_blasts_for_attributes:
        have = [p for p in blasts if p.source in attributes and "granularity" in attributes[p.source]]
        if len(have) >= cfg.min_blasts_for_attributes:
            yes = [p for p in have if attributes[p.source]["granularity"][0] == "yes"]
            lo, hi = wilson_interval(len(yes), len(have))
            gran = (len(yes), len(have), len(yes) / len(have), (lo, hi), yes, have)
            out["statistics"]["granular_blast_share"] = [round(gran[2], 3), [round(lo, 3), round(hi, 3)], len(have)]
    if apl:
        out.update(
            hint="myeloid, promyelocytic (APL pattern)", basis="learned APL-vs-AML case score or promyelocyte excess"
        )
        out["evidence_cells"] = list(_evidence(preds, {"promyelocyte"}, cfg.n_evidence))
    elif mono >= cfg.monocytic_pct:
        out.update(
            hint="monocytic differentiation",
            basis=f"monocytes + promonocytes {mono:.1f}% of white cells (95% CI {mono_ci[0]:.1f}-{mono_ci[1]:.1f}%, "
            f"threshold {cfg.monocytic_pct:g}%); consider AML with monocytic differentiation "
            "(or CMML when blasts < 20%)",
        )
        out["evidence_cells"] = list(_evidence(preds, {"promonocyte", "monocyte"}, cfg.n_evidence))
    elif mat >= cfg.maturing_pct:
        out.update(
            hint="myeloid with maturation",
            basis=f"promyelocytes + myelocytes + metamyelocytes {mat:.1f}% of white cells "
            f"(95% CI {mat_ci[0]:.1f}-{mat_ci[1]:.1f}%, threshold {cfg.maturing_pct:g}%)",
        )
        out["evidence_cells"] = list(_evidence(preds, {"promyelocyte", "myelocyte", "metamyelocyte"}, cfg.n_evidence))
    elif gran is not None and gran[2] >= cfg.granular_share:
        out.update(
            hint="myeloid favoured (granular blasts)",
            basis=f"{gran[0]} of {gran[1]} blasts granular by the attribute model ({gran[2]:.0%}, 95% CI "
            f"{gran[3][0]:.0%}-{gran[3][1]:.0%}); the attribute model learned granularity on normal cells",
        )
        out["evidence_cells"] = [p.source for p in sorted(gran[4], key=lambda p: -p.confidence)[: cfg.n_evidence]]
    elif gran is not None and gran[2] <= cfg.agranular_share:
        out.update(
            hint="agranular blasts: lymphoid or minimally differentiated myeloid",
            basis=f"{gran[0]} of {gran[1]} blasts granular by the attribute model ({gran[2]:.0%}, 95% CI "
            f"{gran[3][0]:.0%}-{gran[3][1]:.0%}), no monocytic or maturing component",
        )
        out["evidence_cells"] = [p.source for p in sorted(gran[5], key=lambda p: -p.confidence)[: cfg.n_evidence]]
    else:
        out.update(
            hint="undetermined",
            basis="no monocytic or maturing component above its threshold"
            + ("" if gran is not None else "; blast granularity not assessed (attribute model off or too few blasts)"),
        )
    if auer_rods:
        seen = (
            f"Auer rods recorded by the reviewer in {len(auer_rods)} cell{'s' if len(auer_rods) != 1 else ''}: "
            "they mark myeloid blasts and are not seen in lymphoid ones"
        )
        if out["hint"] in ("undetermined", "myeloid favoured (granular blasts)") or out["hint"].startswith("agranular"):
            out.update(hint="myeloid (Auer rods)", basis=seen)
            out["evidence_cells"] = list(auer_rods[: cfg.n_evidence])
        else:
            out["basis"] += "; " + seen
        out["statistics"]["auer_rod_cells"] = len(auer_rods)
    return out


def cells_per_case_rows(validation: dict | None, n: int) -> tuple[dict, dict] | None:
    """From a case score's validation (its card's ``metrics``), the cross-validated figures for a
    case of ``n`` classified cells: (the ``cells_per_case`` row of the largest size up to ``n``, or
    of the smallest size when ``n`` is below all of them; the row of all cells), or None when the
    card has no such table."""
    rows = ((validation or {}).get("cells_per_case") or {}).get("rows") or []
    sized = sorted((r for r in rows if r.get("cells")), key=lambda r: r["cells"])
    every = next((r for r in rows if r.get("cells") is None), None)
    if not sized or every is None:
        return None
    return ([r for r in sized if r["cells"] <= n] or sized[:1])[-1], every


def _few_cells_caution(n: int, cfg: RuleConfig, apl: dict) -> str:
    """The caution on a score-based APL flag from fewer than ``cfg.apl_score_few_cells`` cells,
    with the score card's cross-validated false-alarm rates by cells per case where it has them."""
    text = f" Caution: the score rests on {n} cells; on fewer than {cfg.apl_score_few_cells} it is less specific"
    if (found := cells_per_case_rows(apl.get("validation"), n)) is not None:
        r, every = found
        text += (
            f" (patient-level cross-validation of {apl.get('model')}: {r['aml_flagged']:.0%} of non-APL AML "
            f"patients scored at least {cfg.apl_score_threshold:g} on {r['cells']} of their cells, against "
            f"{every['aml_flagged']:.0%} on all of them)"
        )
    return text + ": classify more of the patient's cells if the smear allows, and review the evidence cells now."


def suggest(
    diff: Differential,
    preds: Sequence[CellPrediction],
    cfg: RuleConfig = RuleConfig(),
    case_scores: dict | None = None,
    attributes: dict[str, dict[str, tuple[str, float]]] | None = None,
    findings: Mapping[str, Sequence[str]] | None = None,
) -> Suggestion:
    """The first rule that fires (module docstring), with its evidence cells and statistics.
    ``findings``: morphological findings a reviewer recorded (a FINDINGS key -> the cells
    carrying it), read since rules 1.5."""
    found = {k: tuple(v) for k, v in (findings or {}).items() if v}
    s = _first_rule(diff, preds, cfg, case_scores, attributes, found)
    text = s.text + _findings_text(found, s.code)
    details = {**s.details, "findings": {k: len(v) for k, v in found.items()}}
    if s.code not in ("apl_suspected", "too_few_cells"):
        # no APL flag, but the learned score's interval over cell resampling reaches the threshold:
        # say so rather than let the outcome read as "not APL" (rules 1.4)
        apl = (case_scores or {}).get("apl_vs_aml") or {}
        p, ci = apl.get("probability"), apl.get("ci95")
        open_ = bool(apl.get("applicable", True) and p is not None and ci and ci[1] >= cfg.apl_score_threshold)
        if open_:
            text += (
                f" APL not excluded: the APL pattern score is {p:.2f}, but its 95% interval over cell resampling "
                f"({ci[0]:.2f}-{ci[1]:.2f}) reaches the {cfg.apl_score_threshold:g} threshold; review the "
                "promyelocytes and blasts for APL features, and classify more cells if the smear allows."
            )
        details["apl_not_excluded"] = open_ or any(k in found for k in _APL_FEATURES)
    return replace(s, text=text, details=details)


#: findings of abnormal promyelocytes that, without an APL flag, say "APL not excluded" (rules 1.5)
_APL_FEATURES = ("bilobed_nucleus", "hypergranular")
_FINDING_WORDS = {
    "auer_rods": "Auer rods",
    "faggot_cell": "faggot cells",
    "bilobed_nucleus": "bilobed nuclei",
    "hypergranular": "hypergranular cytoplasm",
    "dysplasia": "dysplastic features",
}


def _cells(n: int) -> str:
    return f"{n} cell{'s' if n != 1 else ''}"


def _findings_text(found: Mapping[str, Sequence[str]], code: str) -> str:
    """What the reviewer's findings add to an outcome's text (rules 1.5)."""
    text = ""
    if "auer_rods" in found and code != "apl_suspected":
        text += (
            f" Auer rods recorded by the reviewer in {_cells(len(found['auer_rods']))}: they mark a myeloid "
            "neoplasm (AML, or a myelodysplastic neoplasm with excess blasts), not a lymphoid one."
        )
    features = [k for k in _APL_FEATURES if k in found]
    if features and code != "apl_suspected":
        text += (
            " APL not excluded: the reviewer recorded "
            + " and ".join(f"{_FINDING_WORDS[k]} in {_cells(len(found[k]))}" for k in features)
            + ", features of abnormal promyelocytes; request PML::RARA testing."
        )
    if code == "apl_suspected":
        seen = [
            f"{_FINDING_WORDS[k]} in {_cells(len(found[k]))}" for k in _FINDING_WORDS if k in found and k != "dysplasia"
        ]
        if seen:
            text += " The reviewer recorded " + ", ".join(seen) + "."
    if "dysplasia" in found:
        text += (
            f" Dysplastic features recorded by the reviewer in {_cells(len(found['dysplasia']))}: consider a "
            "myelodysplastic neoplasm, or AML with myelodysplasia-related changes if blasts reach 20%."
        )
    return text


def _first_rule(
    diff: Differential,
    preds: Sequence[CellPrediction],
    cfg: RuleConfig,
    case_scores: dict | None,
    attributes: dict[str, dict[str, tuple[str, float]]] | None,
    found: Mapping[str, tuple[str, ...]],
) -> Suggestion:
    by_name = {c.name: c for c in diff.counts}
    pro = by_name.get("promyelocyte")
    apl = (case_scores or {}).get("apl_vs_aml") or {}
    apl_p = apl.get("probability") if apl.get("applicable", True) else None
    details = {
        "rules_version": RULES_VERSION,
        "wbc_counted": diff.wbc_denominator,
        "blast_percent": round(diff.blast_percent, 2),
        "blast_ci95": [round(v, 2) for v in diff.blast_ci],
        "promyelocyte_percent": round(pro.percent, 2) if pro else 0.0,
        "thresholds": cfg.__dict__,
        "blast_thresholds": threshold_report(diff.blast_count, diff.wbc_denominator),
        "apl_vs_aml_probability": apl.get("probability"),
        "apl_vs_aml_used": apl_p is not None,
    }
    need20 = next(t for t in details["blast_thresholds"] if t["threshold_percent"] == 20.0)
    faggots = found.get("faggot_cell", ())
    apl_by_finding = len(faggots) >= cfg.apl_faggot_cells
    auer = found.get("auer_rods", ())
    if apl_by_finding and not (apl_p is not None and apl_p >= cfg.apl_score_threshold):
        # a faggot cell seen by the reviewer: urgent whatever the counts and the score say (rules 1.5)
        details["apl_by_finding"] = True
        details["lineage_hint"] = lineage_hint(diff, preds, cfg, attributes, apl=True, auer_rods=auer)
        score = (
            f" The learned APL pattern score is {apl_p:.2f} (model {apl.get('model')})." if apl_p is not None else ""
        )
        return Suggestion(
            "apl_suspected",
            f"APL suspected — URGENT: the reviewer recorded faggot cells (bundled Auer rods), the hallmark of "
            f"APL, in {_cells(len(faggots))}.{score} Request PML::RARA testing and a coagulation screen now.",
            f"reviewer finding: faggot cells >= {cfg.apl_faggot_cells}",
            True,
            faggots[: cfg.n_evidence],
            details,
        )
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
    apl_by_score = apl_p is not None and apl_p >= cfg.apl_score_threshold
    apl_by_count = bool(
        apl_p is None and pro and pro.count >= cfg.apl_min_cells and pro.percent >= cfg.apl_promyelocyte_pct
    )
    if apl_by_score or apl_by_count:
        details["lineage_hint"] = lineage_hint(diff, preds, cfg, attributes, apl=True, auer_rods=auer)
    elif diff.blast_percent >= cfg.increased_blast_pct or auer:
        details["lineage_hint"] = lineage_hint(diff, preds, cfg, attributes, auer_rods=auer)
    if apl_by_score:
        ci = apl.get("ci95") or [float("nan"), float("nan")]
        support = diff.blast_percent + (pro.percent if pro else 0.0)
        details["apl_score_only"] = support < cfg.apl_score_only_pct
        caution = (
            f" Caution: the score alone raises this flag; blasts, blast equivalents and promyelocytes are "
            f"{support:.1f}% of white cells. Such differentials occur in APL (often leukopenic, with few "
            "circulating abnormal cells) and in healthy blood, where the score, fitted on AML and APL patients "
            "only, has raised false alarms on images from other cameras: review the evidence cells now, and do "
            "not delay PML::RARA testing if they look suspicious."
            if details["apl_score_only"]
            else ""
        )
        details["apl_score_few_cells"] = len(preds) < cfg.apl_score_few_cells
        if details["apl_score_few_cells"]:
            caution += _few_cells_caution(len(preds), cfg, apl)
        # the case model's own evidence (MIL attention); else the cells called promyelocytes; else
        # (a score without one such cell) the cells most likely to be promyelocytes: an urgent
        # flag always shows the cells to review
        attended = tuple(apl.get("evidence_cells", ()))[: cfg.n_evidence]
        details["evidence_from_attention"] = bool(attended)
        details["apl_by_finding"] = apl_by_finding
        if apl_by_finding:  # the reviewer's faggot cells first, then the model's
            attended = tuple(dict.fromkeys(faggots + attended))[: cfg.n_evidence]
        return Suggestion(
            "apl_suspected",
            f"APL suspected — URGENT: the patient-level APL pattern score is {apl_p:.2f} "
            f"(95% interval over cell resampling {ci[0]:.2f}-{ci[1]:.2f}; model {apl.get('model')}). Review for "
            "abnormal promyelocytes (Auer rods, faggot cells, bilobed nuclei); request PML::RARA testing and a "
            "coagulation screen now." + caution,
            f"apl_vs_aml score >= {cfg.apl_score_threshold}",
            True,
            attended
            or _evidence(preds, {"promyelocyte"}, cfg.n_evidence)
            or _most_likely(preds, "promyelocyte", cfg.n_evidence),
            details,
        )
    if apl_by_count:
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
    prob20 = need20["probability_above"]
    if diff.blast_percent >= cfg.acute_blast_pct and need20["status"] == "above":
        return Suggestion(
            "acute_leukemia_suspected",
            f"Acute leukemia suspected: blasts and blast equivalents {diff.blast_percent:.1f}% of white cells "
            f"(95% CI {lo:.1f}-{hi:.1f}%, threshold {cfg.acute_blast_pct:g}%; probability above the threshold "
            f"{prob20:.1%}). Confirm morphology; flow cytometry for lineage.",
            f"blast equivalents >= {cfg.acute_blast_pct}% with the 95% CI above it",
            False,
            _evidence(preds, set(BLAST_EQUIVALENT), cfg.n_evidence),
            details,
        )
    if diff.blast_percent >= cfg.uncertain_low_pct and need20["status"] == "undecided":
        more = need20["additional_cells_needed"]
        how = (
            f"counting about {more} more white cells would settle it if the proportion held"
            if more
            else "the estimate sits on the threshold; count more cells and review the smear"
        )
        return Suggestion(
            "acute_leukemia_uncertain",
            f"Uncertain: blasts and blast equivalents {diff.blast_percent:.1f}% of white cells "
            f"(95% CI {lo:.1f}-{hi:.1f}%) — the interval contains the {cfg.acute_blast_pct:g}% threshold "
            f"(probability above it {prob20:.1%}); {how}.",
            f"blast equivalents >= {cfg.uncertain_low_pct}% and 95% CI containing {cfg.acute_blast_pct}%",
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
