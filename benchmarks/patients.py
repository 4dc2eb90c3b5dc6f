"""Patient-level check of the shipped pipeline on the DeepAPL patients held out from training.

Usage: python benchmarks/patients.py [--all | --which test|val] [--zoom Z]
Builds one case per held-out test patient (all of that patient's crops, labelled or not, linked
into a temporary folder), runs `leukomorph analyze --per-folder`, and prints each patient's
molecular diagnosis beside the blast %, promyelocyte %, the learned APL score
(`case_scores.apl_vs_aml.probability`) and the suggestion that fired. Then APL vs AML at patient
level: the card's held-out estimate (these patients scored by a case model fitted without them;
the bundled case model was fitted on all 82 patients, so its scores printed above are in-sample
for the case model) and the card's patient-level cross-validation, each beside the
promyelocyte-fraction baseline.

``--all`` analyses every one of the 82 patients instead (most of whose labelled cells the cell
model trained on: in-sample, about 2 min) and adds how many have blasts, blast equivalents and
promyelocytes under the rules' ``apl_score_only_pct`` (5%): the differentials on which an APL
flag from the learned score alone carries the rules' caution (rules 1.3). ``--which val``: the
cell model's validation patients instead. ``--zoom Z``: every crop zoomed about its centre first,
as a microscope at Z times the training magnification would show it
(leukomorph.evaluation.reimage); the table then also gives the zoom the cell-scale search chose
and whether the learned score was applicable (used by the rules).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from leukomorph.aggregate.rules import RuleConfig
from leukomorph.data import data_root
from leukomorph.evaluation.reimage import place_crop
from leukomorph.models import DEFAULT_CASE_MODEL, DEFAULT_CLASSIFIER, get_card


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", action="store_true", help="every one of the 82 patients (in-sample for the cell model)")
    ap.add_argument("--which", choices=("test", "val"), default="test", help="the cell model's split to analyse")
    ap.add_argument("--zoom", type=float, default=1.0, help="zoom every crop first (2: re-imaged at x2)")
    a = ap.parse_args()
    every = a.all
    root = data_root() / "deepapl"
    card = get_card(DEFAULT_CLASSIFIER)
    dx = {r["patient_id"]: r["diagnosis"] for r in csv.DictReader(open(root / "patients.csv"))}
    test = set(dx) if every else set(card.raw["split"]["patients"][a.which])
    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp) / "cases"
        for row in csv.DictReader(open(root / "manifest.csv")):
            if row["patient_id"] in test:
                d = cases / row["patient_id"]
                d.mkdir(parents=True, exist_ok=True)
                place_crop(root / row["path"], d / Path(row["path"]).name, a.zoom)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "leukomorph.cli.main", "analyze", str(cases), "--per-folder", "--out", str(out)]
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        what = (
            "DeepAPL patients (all: in-sample for the cell model)"
            if every
            else {"test": "held-out DeepAPL patients", "val": "DeepAPL validation patients"}[a.which]
        )
        zoomed = a.zoom != 1
        print(f"model {card.name} ({card.sha256[:12]}), {len(test)} {what}" + (f", re-imaged x{a.zoom:g}" * zoomed))
        print(
            "\n| patient | diagnosis | cells | blast % (95% CI) | promyelocyte % | APL score | suggestion |"
            + (" zoom chosen | score applicable |" * zoomed)
        )
        print("|---|---|---:|---:|---:|---:|---|" + ("---:|---|" * zoomed))
        flagged = {"APL": [0, 0], "AML": [0, 0]}
        low = {"APL": 0, "AML": 0}  # blasts + blast equivalents + promyelocytes under apl_score_only_pct
        not_excluded = {"APL": 0, "AML": 0}  # no APL flag, but the score's interval reaches the threshold
        for p in sorted(test):
            r = json.loads((out / p / "results.json").read_text())
            pro = r["differential"]["classes"]["promyelocyte"]["percent"]
            lo, hi = r["blast_ci95"]
            code = r["suggestion"]["code"]
            blast = f"{r['blast_percent']:.1f} ({lo:.1f}-{hi:.1f})"
            score = r["case_scores"]["apl_vs_aml"]
            apl = score["probability"]
            extra = f" {r['model']['cell_scale'].get('zoom')} | {score.get('applicable')} |" if zoomed else ""
            print(f"| {p} | {dx[p]} | {r['n_classified']} | {blast} | {pro:.1f} | {apl:.2f} | {code} |{extra}")
            flagged[dx[p]][0] += code == "apl_suspected"
            flagged[dx[p]][1] += 1
            low[dx[p]] += r["blast_percent"] + pro < RuleConfig().apl_score_only_pct
            not_excluded[dx[p]] += bool(r["suggestion"]["details"].get("apl_not_excluded"))
        print(
            f"\nAPL flag raised: {flagged['APL'][0]}/{flagged['APL'][1]} APL patients, "
            f"{flagged['AML'][0]}/{flagged['AML'][1]} non-APL AML patients"
        )
        print(
            f"blasts, blast equivalents and promyelocytes under {RuleConfig().apl_score_only_pct:g}% of white cells "
            f"(a score-only APL flag would carry the caution): {low['APL']}/{flagged['APL'][1]} APL, "
            f"{low['AML']}/{flagged['AML'][1]} AML"
        )
        print(
            f"'APL not excluded' (no flag; the score's interval reaches the threshold, rules 1.4): "
            f"{not_excluded['APL']}/{flagged['APL'][1]} APL, {not_excluded['AML']}/{flagged['AML'][1]} AML"
        )
    base = get_card("leukomorph-apl-lr").raw["metrics"]
    print(f"\nAPL vs AML, patient level (case models on {DEFAULT_CLASSIFIER}; from their cards):\n")
    print("| model | estimate | patients (APL) | AUROC (95% CI) | Brier |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys((DEFAULT_CASE_MODEL, "leukomorph-apl", "leukomorph-apl-lr")):
        m = get_card(name).raw["metrics"]
        held, cv = m["held_out_cell_model_test_patients"], m["cross_validation"]
        if held:
            print(
                f"| {name} | held-out patients, case model fitted without them | {held['patients']} ({held['apl']}) | "
                f"{held['auroc']:.3f} ({held['auroc_ci95'][0]:.3f}-{held['auroc_ci95'][1]:.3f}) | {held['brier']:.3f} |"
            )
        print(
            f"| {name} | {cv['method']} | 82 (22) | {cv['auroc_mean_over_repeats']:.3f} "
            f"({cv['auroc_ci95'][0]:.3f}-{cv['auroc_ci95'][1]:.3f}) | {cv['brier']:.3f} |"
        )
    cv, held = base["cross_validation"], base["held_out_cell_model_test_patients"]
    print(
        f"| promyelocyte-fraction baseline | same folds / same held-out patients | | "
        f"{cv['baseline_promyelocyte_fraction_auroc']:.3f} ({cv['baseline_ci95'][0]:.3f}-{cv['baseline_ci95'][1]:.3f})"
        f" / {held.get('baseline_promyelocyte_fraction_auroc', float('nan')):.3f} | |"
    )


if __name__ == "__main__":
    main()
