"""Per-case agreement of the default model's differential with the labels, on the cell model's
held-out DeepAPL test patients, as a laboratory would run it on its own cells.

Usage: python benchmarks/agreement.py [--which test|val]

Writes the patients' exactly labelled cells (DeepAPL labels mapped to the taxonomy; partial
labels left out) as a CSV manifest with case ids and runs ``leukomorph evaluate --labels`` on it
(:func:`leukomorph.evaluation.runner.run_evaluation`): per-class metrics, then for every class and
for blast equivalents the mean per-case difference model − label (percentage points of white
cells) with its 95% limits of agreement (Bland-Altman). The labels are the cells' sign-out
classes, so this measures the classifier on the same cells, not a second count of the smear.
About 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from leukomorph.data import data_root
from leukomorph.errors import LabelMappingError
from leukomorph.evaluation.runner import run_evaluation
from leukomorph.models import DEFAULT_CLASSIFIER, get_card
from leukomorph.taxonomy import map_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", default="test", choices=("test", "val"), help="the cell model's patient split")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    card = get_card(DEFAULT_CLASSIFIER)
    patients = set(card.raw["split"]["patients"][args.which])
    base = data_root() / "deepapl"
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "labels.csv"
        n = 0
        with manifest.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "patient_id"])
            for r in csv.DictReader((base / "manifest.csv").open(newline="", encoding="utf-8")):
                if r["patient_id"] not in patients or not r["cell_label"]:
                    continue
                try:
                    classes = map_label("deepapl", r["cell_label"])
                except LabelMappingError:
                    continue
                if len(classes) == 1:
                    w.writerow([str((base / r["path"]).resolve()), classes[0], r["patient_id"]])
                    n += 1
        print(
            f"{len(patients)} DeepAPL {args.which} patients of {card.name} {card.version}, {n} exactly labelled cells\n"
        )
        _, text = run_evaluation(card, None, out=None, n_boot=args.n_boot, labels=manifest)
    print(text)


if __name__ == "__main__":
    main()
