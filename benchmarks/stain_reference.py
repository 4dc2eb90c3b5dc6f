"""Print the Reinhard reference (mean of per-crop L*a*b* statistics) of a model's training crops.

    python benchmarks/stain_reference.py [--n 3000] [--model leukomorph-cell]

The printed values are what ``leukomorph.stain.LEUKOMORPH_REFERENCE`` holds.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from leukomorph.evaluation.runner import _resolve, read_split
from leukomorph.io import read_image
from leukomorph.models.registry import get_card
from leukomorph.stain import lab_stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="leukomorph-cell")
    ap.add_argument("--n", type=int, default=3000, help="random training crops to average (seed 0)")
    a = ap.parse_args()
    card = get_card(a.model)
    rows = [r for r in read_split(Path(card.card_path).parent / card.raw["split_file"]) if r["split"] == "train"]
    rows = random.Random(0).sample(rows, min(a.n, len(rows)))
    stats = [lab_stats(read_image(_resolve(r["path"])).pixels) for r in rows]
    mean = np.mean([s.mean for s in stats], 0)
    std = np.mean([s.std for s in stats], 0)
    print(f"{len(rows)} training crops of {card.name}")
    print(
        f"LabStats(mean=({mean[0]:.2f}, {mean[1]:.2f}, {mean[2]:.2f}), std=({std[0]:.2f}, {std[1]:.2f}, {std[2]:.2f}))"
    )


if __name__ == "__main__":
    main()
