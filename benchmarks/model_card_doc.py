"""Render a bundled model card (JSON) as a Markdown page for people: docs/models/<name>.md.

python benchmarks/model_card_doc.py leukomorph-cell [--metrics eval/metrics.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leukomorph.models.registry import get_card


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return "`" + json.dumps(v)[:300] + "`"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--metrics", help="metrics.md written by `leukomorph evaluate --out` to append")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    card = get_card(a.name)
    r = card.raw
    lines = [
        f"# Model card: {card.name} {card.version}",
        "",
        f"Machine-readable card: `src/leukomorph/models/zoo/{card.name}.json` (the registry entry); "
        "this page restates it for people.",
        "",
        f"- **Task**: {card.task}",
        f"- **File**: `{card.file or '(ensemble of registry members)'}`, sha256 `{card.sha256}`",
    ]
    for key in ("architecture", "input", "inference", "output", "depends_on", "ensemble", "applicability"):
        if key in r:
            lines.append(
                f"- **{key.replace('_', ' ').capitalize()}**: "
                + "; ".join(f"{k}: {_fmt(v)}" for k, v in r[key].items())
                if isinstance(r[key], dict)
                else f"- **{key}**: {r[key]}"
            )
    tr = r.get("training", {})
    if tr:
        lines.append("- **Training**: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in tr.items() if k != "counts"))
    if "split" in r:
        sp = r["split"]
        lines.append(f"- **Split**: {sp.get('method', '')}")
        pts = sp.get("patients", {})
        if pts:
            lines.append(
                "  Patients — "
                + ", ".join(f"{k} {len(v)}" for k, v in pts.items())
                + (f" (test: {', '.join(pts.get('test', []))})" if pts.get("test") else "")
            )
    lines.append(f"- **Intended use**: {r.get('intended_use', '')}")
    lines.append("- **Limitations**: " + " ".join(r.get("limitations", [])))
    lines += [
        "",
        "## Metrics (from the card)",
        "",
        "```json",
        json.dumps(r.get("metrics", {}), indent=1)[:12000],
        "```",
    ]
    if a.metrics:
        lines += ["", "## Held-out evaluation (leukomorph evaluate)", "", Path(a.metrics).read_text()]
    out = Path(a.out or f"docs/models/{card.name}.md")
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
