"""The signed report as a PDF (A4), for a laboratory information system or the patient's record.

Written once, at sign-out, from the same facts as the signed HTML report (the reviewed
differential with its intervals, who signed and when, the version it amends, the AI suggestion
before review, the reviewer's corrections, the model), and stored beside it with its own sha256:
like the HTML it is never rewritten. Drawn with matplotlib's PDF backend (a core dependency; no
browser, no system library), text only, so it stays small and searchable.
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

from ..taxonomy import NON_WBC

__all__ = ["signed_pdf"]

A4 = (8.27, 11.69)  # inches
LINES_PER_PAGE = 62
WRAP = 100


def _lines(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(style, text) lines of the report; style: title, head, text, mono, note."""
    case, user, ts, version, diff = ctx["case"], ctx["user"], ctx["ts"], ctx["version"], ctx["diff"]
    results = ctx.get("results") or {}
    model = results.get("model") or {}
    out: list[tuple[str, str]] = [("title", f"Differential report — {case.name}")]
    out.append(
        ("text", f"Signed out by {user.username} ({user.role}) on {ts:%Y-%m-%d %H:%M} UTC. Report version {version}.")
    )
    amends = ctx.get("amends")
    if amends is not None:
        why = f"Amended report: replaces version {version - 1}; re-opened by {amends.username} on "
        why += f"{amends.ts:%Y-%m-%d %H:%M} UTC, reason: {amends.after}"
        out += [("text", s) for s in textwrap.wrap(why, WRAP)]
    lo, hi = diff["blast_ci95"]
    n_out = diff.get("excluded") or 0
    excluded = f" ({n_out} detections excluded by the reviewer as artefacts: in no count)" if n_out else ""
    out.append(("text", ""))
    out.append(
        (
            "text",
            f"{diff['wbc']} white cells{excluded}; blast equivalents {diff['blast_percent']}% (95% CI {lo}–{hi}%).",
        )
    )
    out.append(("head", "Differential (after review)"))
    out.append(("mono", f"{'class':<24}{'n':>6}{'%':>9}   {'95% CI':<14}unit"))
    for name, v in diff["classes"].items():
        if v["count"]:
            ci = f"{v['ci95'][0]}–{'∞' if v['ci95'][1] is None else v['ci95'][1]}"
            unit = "per 100 white cells" if name in NON_WBC else "% of white cells"
            out.append(("mono", f"{name.replace('_', ' '):<24}{v['count']:>6}{v['percent']:>9}   {ci:<14}{unit}"))
    if ctx.get("findings"):
        found = "; ".join(f"{f['name']} in {f['cells']} cell{'s' if f['cells'] != 1 else ''}" for f in ctx["findings"])
        out += [("text", s) for s in textwrap.wrap(f"Morphological findings recorded by the reviewer: {found}.", WRAP)]
    if ctx.get("comment"):
        out.append(("head", "Interpretive comment"))
        for para in ctx["comment"].splitlines():
            out += [("text", s) for s in textwrap.wrap(para, WRAP)] or [("text", "")]
    out.append(("head", "AI suggestion before review"))
    text = (results.get("suggestion") or {}).get("text") or "none recorded"
    out += [("text", s) for s in textwrap.wrap(text, WRAP)]
    if after := ctx.get("after_review"):
        out.append(("head", f"The same rules on the reviewed labels and findings (rules {after['rules_version']})"))
        out += [("text", s) for s in textwrap.wrap(after["text"], WRAP)]
    corr = ctx.get("corrections") or []
    out.append(("head", f"Cells reclassified by the reviewer: {len(corr)}"))
    for c in corr:
        change = f"{c.path}: {c.predicted.replace('_', ' ')} → {c.label.replace('_', ' ')}"
        out += [("mono", s) for s in textwrap.wrap(change, WRAP)]
    out.append(("head", "Model"))
    out.append(
        (
            "text",
            f"{model.get('name', '')} {model.get('version', '')} (sha256 {(model.get('sha256') or '')[:12]}…); "
            f"LeukoMorph {results.get('leukomorph_version', '')}.",
        )
    )
    out.append(("text", ""))
    out.append(("note", "AI-assisted differential, reviewed and signed by the hematologist named above."))
    return out


def signed_pdf(ctx: dict[str, Any]) -> bytes:
    """The PDF bytes of a signed report; ``ctx`` holds what the signed HTML template is given."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    lines = _lines(ctx)
    style = {
        "title": dict(size=15, weight="bold", family="sans-serif"),
        "head": dict(size=11, weight="bold", family="sans-serif"),
        "text": dict(size=9, family="sans-serif"),
        "mono": dict(size=8.5, family="monospace"),
        "note": dict(size=9, style="italic", family="sans-serif"),
    }
    buf = io.BytesIO()
    meta = {"Title": f"LeukoMorph signed report — {ctx['case'].name} v{ctx['version']}", "Creator": "LeukoMorph"}
    with PdfPages(buf, metadata=meta) as pdf:
        pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)] or [[]]
        for n, page in enumerate(pages, 1):
            fig = Figure(figsize=A4)
            y = 0.95
            for kind, text in page:
                if kind == "head":
                    y -= 0.008
                fig.text(0.08, y, text, va="top", **style[kind])
                y -= {"title": 0.03, "head": 0.02}.get(kind, 0.0145)
            fig.text(
                0.08,
                0.03,
                f"{ctx['case'].name} — signed report v{ctx['version']} — page {n} of {len(pages)}",
                size=7,
                color="0.4",
            )
            pdf.savefig(fig)
    return buf.getvalue()
