"""Accuracy of the shipped classifier on the data held out during its training.

Usage: python benchmarks/accuracy.py [--model NAME_OR_CARD] [--n-boot 1000] [--out DIR]
The held-out rows are those marked 'test' in the split file shipped beside the model
(deepapl: whole patients; pbc: whole near-duplicate clusters). Needs ../shared/data or
$LEUKOMORPH_DATA. Prints per-class tables with 95% bootstrap CIs (resampling patients for
deepapl) and the PBC 8-class accuracy with taxonomy classes mapped back to PBC labels.
"""

from __future__ import annotations

import argparse

from leukomorph.evaluation.runner import run_evaluation
from leukomorph.models import DEFAULT_CLASSIFIER, get_card


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_CLASSIFIER)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    card = get_card(args.model)
    report, text = run_evaluation(card, None, "test", args.out, args.n_boot)
    print(text)
    apl = report["sources"].get("deepapl", {}).get("taxonomy")
    pbc = report["sources"].get("pbc", {}).get("pbc8")
    print("\n## Headline (held-out)")
    if pbc:
        lo, hi = pbc["summary_ci95"]["accuracy"]
        print(f"- pbc 8-class accuracy: {pbc['summary']['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f})")
    if apl:
        lo, hi = apl["summary_ci95"]["macro_f1"]
        print(
            f"- deepapl macro-F1 (taxonomy, exact labels): {apl['summary']['macro_f1']:.4f} (95% CI {lo:.4f}-{hi:.4f})"
        )
        b = apl["per_class"]["blast"]
        print(f"- deepapl blast F1: {b['f1']:.4f} (95% CI {b['f1_ci95'][0]:.4f}-{b['f1_ci95'][1]:.4f})")


if __name__ == "__main__":
    main()
