"""Patient-level check of the shipped pipeline on the DeepAPL patients held out from training.

Usage: python benchmarks/patients.py
Builds one case per held-out test patient (all of that patient's crops, labelled or not, linked
into a temporary folder), runs `leukomorph analyze --per-folder`, and prints each patient's
molecular diagnosis beside the blast %, promyelocyte % and the suggestion that fired.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from leukomorph.data import data_root
from leukomorph.models import DEFAULT_CLASSIFIER, get_card


def main() -> None:
    root = data_root() / "deepapl"
    card = get_card(DEFAULT_CLASSIFIER)
    test = set(card.raw["split"]["patients"]["test"])
    dx = {r["patient_id"]: r["diagnosis"] for r in csv.DictReader(open(root / "patients.csv"))}
    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp) / "cases"
        for row in csv.DictReader(open(root / "manifest.csv")):
            if row["patient_id"] in test:
                d = cases / row["patient_id"]
                d.mkdir(parents=True, exist_ok=True)
                os.symlink((root / row["path"]).resolve(), d / Path(row["path"]).name)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "leukomorph.cli.main", "analyze", str(cases), "--per-folder", "--out", str(out)]
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"model {card.name} ({card.sha256[:12]}), {len(test)} held-out DeepAPL patients\n")
        print("| patient | diagnosis | cells | blast % (95% CI) | promyelocyte % | suggestion |")
        print("|---|---|---:|---:|---:|---|")
        flagged = {"APL": [0, 0], "AML": [0, 0]}
        for p in sorted(test):
            r = json.loads((out / p / "results.json").read_text())
            pro = r["differential"]["classes"]["promyelocyte"]["percent"]
            lo, hi = r["blast_ci95"]
            code = r["suggestion"]["code"]
            blast = f"{r['blast_percent']:.1f} ({lo:.1f}-{hi:.1f})"
            print(f"| {p} | {dx[p]} | {r['n_classified']} | {blast} | {pro:.1f} | {code} |")
            flagged[dx[p]][0] += code == "apl_suspected"
            flagged[dx[p]][1] += 1
        print(
            f"\nAPL flag raised: {flagged['APL'][0]}/{flagged['APL'][1]} APL patients, "
            f"{flagged['AML'][0]}/{flagged['AML'][1]} non-APL AML patients"
        )


if __name__ == "__main__":
    main()
