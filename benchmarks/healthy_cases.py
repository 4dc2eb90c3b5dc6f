"""Specificity of the patient-level suggestion on healthy-donor cells (no leukemia anywhere).

Usage: python benchmarks/healthy_cases.py [--cases 20] [--cells 100] [--seed 0] [--no-fields] [--zoom Z]

PBC has no patients, so cases are built: each one draws ``--cells`` crops from the PBC crops in
the default cell model's *test* split (healthy donors, never trained on) in a fixed white-cell
mix, is linked into its own folder, and all are run through `leukomorph analyze --per-folder`
(the shipped pipeline, default models). Mixes: a normal differential, a reactive one with 8%
immature granulocytes (IG: promyelocytes, myelocytes, metamyelocytes), a left shift with 20% IG,
a CML-like one (IG and basophils; the cells are healthy donors', only the proportions are
CML's), eosinophilia, erythroblasts with IG, IG with erythroblasts and platelets, and "as
stored": PBC's own class-balanced proportions (about 18% eosinophils, 7% basophils, 13%
platelets, 9% erythroblasts, 18% IG), a mixture no patient has, which tests the case models'
applicability check more than their score. Printed per mix: how often each suggestion fired
(every "APL suspected" and "acute leukemia suspected" here is a false alarm), and the learned
APL score (median, max), how often it reached the rules' 0.5, how often it was applicable
(only an applicable score is used by the rules) and how often the suggestion said "APL not
excluded" (the score's interval over cell resampling reaching 0.5; rules 1.4). Then txl_pbc's
smear fields, one case per source and split, through `analyze --fields`, and the same white
cells (box truth, cut with the field crop rule) analysed as single-cell crops: each column gives
fields \\| crops. ``--zoom Z``: every crop of the mixes zoomed about its centre first, as a microscope at
Z times the training magnification would show it (leukomorph.evaluation.reimage)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from leukomorph.data import data_root
from leukomorph.evaluation.healthy import AS_STORED, HEALTHY_MIXES, healthy_cases
from leukomorph.evaluation.reimage import place_crop
from leukomorph.evaluation.runner import default_split, read_split
from leukomorph.models import DEFAULT_CLASSIFIER, get_card


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=20, help="cases per mix")
    ap.add_argument("--cells", type=int, default=100, help="crops per case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fields", action="store_true", help="skip the smear-field section (txl_pbc)")
    ap.add_argument("--zoom", type=float, default=1.0, help="zoom every crop of the mixes first (2: re-imaged at x2)")
    a = ap.parse_args()
    card = get_card(DEFAULT_CLASSIFIER)
    rows = [r for r in read_split(default_split(card)) if r["split"] == "test" and r["dataset"] == "pbc"]
    root = data_root()
    drawn = healthy_cases(rows, {**HEALTHY_MIXES, AS_STORED: None}, a.cases, a.cells, a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp) / "cases"
        names: dict[str, str] = {}
        for n, (mix_name, picked) in enumerate(drawn):
            d = cases / f"case{n:03d}"
            d.mkdir(parents=True)
            for i, p in enumerate(picked):
                place_crop(root / p, d / f"{i:03d}_{Path(p).name}", a.zoom)
            names[d.name] = mix_name
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "leukomorph.cli.main", "analyze", str(cases), "--per-folder", "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True)
        by_mix: dict[str, list[dict]] = {}
        for case, mix_name in names.items():
            by_mix.setdefault(mix_name, []).append(json.loads((out / case / "results.json").read_text()))
    head = f"model {card.name} {card.version} ({card.sha256[:12]})"
    zoomed = f", every crop zoomed x{a.zoom:g}" if a.zoom != 1 else ""
    print(f"{head}; {a.cases} cases of {a.cells} healthy-donor crops per mix{zoomed}\n")
    print("| mix | suggestions | APL score median (max) | score >= 0.5 | score applicable | APL not excluded |")
    print("|---|---|---:|---:|---:|---:|")
    for mix_name, results in by_mix.items():
        codes = Counter(r["suggestion"]["code"] for r in results)
        apl = [r["case_scores"]["apl_vs_aml"] for r in results if r["case_scores"].get("apl_vs_aml")]
        p = [s["probability"] for s in apl if s.get("probability") is not None]
        app = sum(bool(s.get("applicable")) for s in apl)
        sugg = ", ".join(f"{k} {v}" for k, v in codes.most_common())
        score = f"{np.median(p):.2f} ({max(p):.2f})" if p else "–"
        high = sum(v >= 0.5 for v in p)
        open_ = sum(bool(r["suggestion"]["details"].get("apl_not_excluded")) for r in results)
        print(f"| {mix_name} | {sugg} | {score} | {high}/{len(p)} | {app}/{len(results)} | {open_}/{len(results)} |")
    if not a.no_fields:
        fields_section(root)


def _truth_crops(items: list[dict], folder: Path) -> int:
    """The white cells of txl_pbc's box truth (:func:`leukomorph.data.load_txl` items), cut with
    the field crop rule, written as PNG crops."""
    import cv2

    from leukomorph.detect import Detection
    from leukomorph.pipeline import field_crop

    folder.mkdir(parents=True)
    n = 0
    for it in items:
        for x0, y0, x1, y1 in it["boxes"][it["labels"] == 0]:
            box = Detection(int(x0), int(y0), int(x1), int(y1), 1.0)
            crop = field_crop(it["image"], box)
            cv2.imwrite(str(folder / f"{n:04d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            n += 1
    return n


def fields_section(root: Path) -> None:
    """txl_pbc's fields, one case per source and split, through `analyze --fields`, and the same
    white cells (box truth) cut out and analysed as single-cell crops: PBC and Raabin-WBC are
    healthy donors' blood (BCCD and BCDD do not say), so an APL alarm there is false."""
    from leukomorph.data import load_txl

    print("\ntxl_pbc, one case per source and split: fields (`analyze --fields`) | truth crops (`analyze`):\n")
    print("| source | split | fields | white cells | suggestion | APL score | applicable |")
    print("|---|---|---:|---:|---|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for source in ("PBC", "Raabin-WBC", "BCCD", "BCDD"):
            for split in ("val", "train"):
                items = load_txl(split, root, source=source)
                fs = [it["path"] for it in items]
                crops = Path(tmp) / f"crops-{source}-{split}"
                n_crops = _truth_crops(items, crops)
                del items  # the fields' pixels: read again by analyze
                res = []
                for mode, inputs in (("fields", fs), ("crops", [str(crops)])):
                    out = Path(tmp) / f"{source}-{split}-{mode}"
                    cmd = [sys.executable, "-m", "leukomorph.cli.main", "analyze", *inputs, "--out", str(out)]
                    cmd += ["--fields", "--morphometrics", "none"] if mode == "fields" else []
                    subprocess.run(cmd, check=False, capture_output=True)
                    res.append(
                        json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else None
                    )

                def cell(r, key):
                    if r is None:
                        return "(no output)"
                    apl = r["case_scores"].get("apl_vs_aml", {})
                    prob = apl.get("probability")
                    det = r["suggestion"]["details"]
                    support = det["blast_percent"] + det["promyelocyte_percent"]
                    # rules 1.3: an APL flag from the score alone on a near-normal differential says so
                    caution = ""
                    if det.get("apl_score_only"):
                        caution = f" (score alone; blasts + promyelocytes {support:.1f}%)"
                    return {
                        "n": str(r["n_classified"]),
                        "code": r["suggestion"]["code"] + caution,
                        "p": "–" if prob is None else f"{prob:.2f}",
                        "a": str(bool(apl.get("applicable"))).lower(),
                    }[key]

                print(
                    f"| {source} | {split} | {len(fs)} | {cell(res[0], 'n')} \\| {n_crops} | "
                    f"{cell(res[0], 'code')} \\| {cell(res[1], 'code')} | "
                    f"{cell(res[0], 'p')} \\| {cell(res[1], 'p')} | "
                    f"{cell(res[0], 'a')} \\| {cell(res[1], 'a')} |"
                )


if __name__ == "__main__":
    main()
