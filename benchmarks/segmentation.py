"""Nucleus / cytoplasm segmentation on the held-out seg_wbc cells: Dice per region and domain,
the bundled U-Net (leukomorph-seg) beside the classical baseline, with 95% bootstrap CIs over cells.

    python benchmarks/segmentation.py

Held-out cells: rows with split=test in the model's split file (per domain, by near-duplicate
cluster). dataset1: Jiangxi Tecom camera, 120 px; dataset2: CellaVision, 300 px.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from leukomorph.data import data_root
from leukomorph.io import read_image
from leukomorph.models.registry import get_card, load_segmenter
from leukomorph.segment import classical_labels, dice_scores
from leukomorph.training.segment import mask_to_labels


def _ci(v: np.ndarray, n_boot: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    m = [v[rng.integers(0, len(v), len(v))].mean() for _ in range(n_boot)]
    return float(np.quantile(m, 0.025)), float(np.quantile(m, 0.975))


def main() -> None:
    card = get_card("leukomorph-seg")
    seg = load_segmenter("leukomorph-seg")
    base = data_root() / "seg_wbc"
    split = {
        r["image"]: r["split"] for r in csv.DictReader((Path(card.card_path).parent / card.raw["split"]["file"]).open())
    }
    rows = [r for r in csv.DictReader((base / "manifest.csv").open()) if split.get(r["image"]) == "test"]
    res: dict[tuple[str, str], list[dict]] = {}
    t_model = 0.0
    for r in rows:
        img = read_image(base / r["image"]).pixels
        gt = mask_to_labels(read_image(base / r["mask"]).pixels)
        t = time.perf_counter()
        pred = seg.segment(img)
        t_model += time.perf_counter() - t
        res.setdefault((r["domain"], "U-Net (leukomorph-seg)"), []).append(dice_scores(pred, gt))
        res.setdefault((r["domain"], "classical baseline"), []).append(dice_scores(classical_labels(img), gt))
    print(
        f"{card.name} {card.version} ({card.sha256[:12]}), {len(rows)} held-out cells, "
        f"{1000 * t_model / max(len(rows), 1):.1f} ms per cell (U-Net, 1 crop per call)\n"
    )
    print("| domain | method | n | nucleus Dice (95% CI) | whole-cell Dice (95% CI) | cytoplasm Dice |")
    print("|---|---|---:|---|---|---:|")
    for (dom, method), v in sorted(res.items()):
        nuc = np.array([x["nucleus"] for x in v])
        cell = np.array([x["cell"] for x in v])
        cyt = np.array([x["cytoplasm"] for x in v])
        (a, b), (c, d) = _ci(nuc), _ci(cell)
        print(
            f"| {dom} | {method} | {len(v)} | {nuc.mean():.3f} ({a:.3f}–{b:.3f}) | {cell.mean():.3f} ({c:.3f}–{d:.3f}) "
            f"| {cyt.mean():.3f} |"
        )


if __name__ == "__main__":
    main()
