"""How many cells the APL-vs-AML score needs: the shipped ensemble's cross-validation, scored on
fewer cells per patient (train extra: torch, scikit-learn).

Usage: python benchmarks/case_cells.py [--repeats 3] [--draws 5] [--cache PATH] [--json PATH]

The protocol of the shipped ``leukomorph-apl-ens`` card, re-run: 3× repeated stratified 5-fold
over the 82 DeepAPL patients, same folds and seeds, both members refitted in every fold on all
cells of the training patients. Each out-of-fold patient is then scored on random subsets of its
cells (the same subsets in every repeat; a patient with fewer cells keeps them all), as if only
that many cells had been imaged. Printed per number of cells: the AUROC (mean over repeats ×
draws, with its range), its 95% CI (bootstrap over patients, draw 1's scores averaged over the
repeats, as the card's ``auroc_ci95``), and at the shipped 0.5 threshold after the shipped Platt
scaling (fitted on the all-cell out-of-fold scores of the same protocol: in-sample for the
threshold) the share of APL patients flagged and of AML patients falsely flagged, over repeats ×
draws; beside it the promyelocyte-fraction baseline's AUROC. The cell model trained on most of
these patients' labelled cells, so every figure is optimistic in the same way as the card's.
About 3 min on 2 cores (most of it the 15 MIL fits); the first run also classifies the 13,973
cells (about 1 min) and caches them. ``--json`` also writes the rows, as the ensemble card's
``metrics.cells_per_case`` holds them (the rules quote them in their caution on small cases).
Last, the all-cell AUROC per repeat of the patients whose labelled cells trained the cell model
and of those it never saw (its validation and test patients), as a new cohort's will be, and of
their scores averaged over the repeats with a 95% bootstrap CI over patients.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from leukomorph.aggregate.case_model import load_case_model
from leukomorph.models import DEFAULT_CASE_MODEL
from leukomorph.training.case_ensemble import cv_folds, ensemble_data, member_scores, platt
from leukomorph.training.case_model import auroc_ci

SIZES = (20, 50, 100, 200, None)  # None: every cell of the patient


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--draws", type=int, default=5, help="random cell subsets per patient and size")
    ap.add_argument("--cache", type=Path, default=Path("runs/case-cells/cell_embeddings.npz"))
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument(
        "--bag-min-cells",
        type=int,
        help="candidate study: refit the MIL member with bag-size augmentation from this many cells "
        "(flags then use Platt scaling refitted on the candidate's own all-cell out-of-fold scores)",
    )
    args = ap.parse_args()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    ens = load_case_model(DEFAULT_CASE_MODEL)
    d = ensemble_data(ens.mil.name, ens.lr.name, cache=args.cache)
    if args.bag_min_cells:
        d.bag_min_cells = args.bag_min_cells
    y, n_cells = d.y, np.array([len(b) for b in d.bags])
    rng = np.random.default_rng(0)
    subsets = {
        (n, k): [rng.choice(m, n, replace=False) if n is not None and n < m else np.arange(m) for m in n_cells]
        for n in SIZES
        for k in range(args.draws if n is not None else 1)
    }
    raw = {key: np.zeros((args.repeats, len(y))) for key in subsets}
    for r, te, members in cv_folds(d, args.repeats):
        for key, sub in subsets.items():
            s_mil, s_lr = member_scores(members, [d.bags[i][sub[i]] for i in te], [d.probs[i][sub[i]] for i in te], d)
            raw[key][r, te] = (s_mil + s_lr) / 2

    calibrate = ens.calibrate
    if args.bag_min_cells:
        calibrate = platt(y, raw[(None, 0)].mean(0))
    pro_i = list(d.model.classes).index("promyelocyte")
    bag = f"; MIL bag-size augmentation from {d.bag_min_cells} cells" if d.bag_min_cells else ""
    print(
        f"{ens.name} {ens.version} (members {ens.mil.name}, {ens.lr.name}; cell model {d.cell['name']} "
        f"{d.cell['version']}{bag}): {len(y)} DeepAPL patients ({int(y.sum())} APL), cells per patient "
        f"{n_cells.min()}–{n_cells.max()} (median {int(np.median(n_cells))}); {args.repeats}× 5-fold, "
        f"{args.draws} draws per size\n"
    )
    print(
        "| cells per case | patients with fewer (all used) | AUROC, mean (range) | 95% CI | APL flagged at 0.5 "
        "| AML flagged at 0.5 | promyelocyte-fraction AUROC |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n in SIZES:
        keys = [key for key in subsets if key[0] == n]
        aucs = [roc_auc_score(y, raw[key][r]) for key in keys for r in range(args.repeats)]
        _, lo, hi = auroc_ci(y, raw[keys[0]].mean(0))
        flags = np.array([calibrate(raw[key][r]) >= 0.5 for key in keys for r in range(args.repeats)])
        base = np.mean(
            [
                roc_auc_score(y, [(p[s].argmax(1) == pro_i).mean() for p, s in zip(d.probs, subsets[key], strict=True)])
                for key in keys
            ]
        )
        row = {
            "cells": n,
            "patients_with_fewer": int((n_cells < n).sum()) if n is not None else 0,
            "auroc_mean": round(float(np.mean(aucs)), 3),
            "auroc_range": [round(float(min(aucs)), 3), round(float(max(aucs)), 3)],
            "auroc_ci95": [round(lo, 3), round(hi, 3)],
            "apl_flagged": round(float(flags[:, y == 1].mean()), 3),
            "aml_flagged": round(float(flags[:, y == 0].mean()), 3),
            "promyelocyte_fraction_auroc": round(float(base), 3),
        }
        rows.append(row)
        print(
            f"| {n if n is not None else 'all'} | {row['patients_with_fewer']} | {row['auroc_mean']:.3f} "
            f"({min(aucs):.3f}–{max(aucs):.3f}) | {lo:.3f}–{hi:.3f} | {row['apl_flagged']:.2f} "
            f"| {row['aml_flagged']:.3f} | {base:.3f} |"
        )
    # all cells: the patients whose labelled cells trained the cell model against those it never saw
    split = d.model.card.raw.get("split", {}).get("patients", {})
    unseen = np.array([p in set(split.get("val", [])) | set(split.get("test", [])) for p in d.patients])
    for name, k in (("trained the cell model", ~unseen), ("the cell model never saw (val + test)", unseen)):
        if len(set(y[k])) == 2:
            per = " / ".join(f"{roc_auc_score(y[k], raw[(None, 0)][r][k]):.3f}" for r in range(args.repeats))
            auc, lo, hi = auroc_ci(y[k], raw[(None, 0)][:, k].mean(0))
            print(
                f"\nall cells, the {k.sum()} patients ({int(y[k].sum())} APL) whose cells {name}: "
                f"AUROC per repeat {per}; of the scores averaged over the repeats {auc:.3f} "
                f"(95% CI {lo:.3f}-{hi:.3f}, bootstrap over patients)"
            )
    if args.json:
        method = (
            f"{ens.name} {ens.version}'s CV protocol ({args.repeats}x repeated stratified 5-fold over {len(y)} "
            f"patients, members refitted on all cells of the training patients); each out-of-fold patient scored "
            f"on {args.draws} random subsets of its cells per size; flagged: score >= 0.5 after the shipped Platt "
            "scaling (fitted on the same protocol's all-cell out-of-fold scores)"
        )
        args.json.write_text(
            json.dumps({"method": method, "command": "python benchmarks/case_cells.py", "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
