"""Do morphometrics add to the patient-level APL-vs-AML model? (train extra: torch, scikit-learn)

Usage: python benchmarks/case_morphometrics.py [--cache-dir runs/case-cells]

Every DeepAPL cell is segmented as ``analyze --morphometrics model`` does (the bundled U-Net,
``leukomorph.segment.morphometrics``; about 75 s, cached). A case's morphometric features are the
mean and s.d. of 10 of them (``COLUMNS``: pixel areas left out, they depend on the camera's
scale) over its cells predicted as one of the logistic member's 11 white-cell classes. Printed:
the logistic member with and without them and the morphometrics alone (10× repeated 5-fold, as
the ``leukomorph-apl-lr`` card), and the ensemble with the MIL member (3× 5-fold, the folds and
seeds of ``leukomorph-apl-ens``), then the 17 held-out patients scored by the ensemble with
morphometrics fitted without them (Platt scaling fitted on its out-of-fold scores), beside the
shipped design's. About 2.5 min on 2 cores after the segmentation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from leukomorph.data import data_root
from leukomorph.io import read_image
from leukomorph.models.registry import load_segmenter
from leukomorph.segment import MORPHOMETRIC_COLUMNS, morphometrics
from leukomorph.training.case_ensemble import ensemble_data, fit_members, member_scores, platt
from leukomorph.training.case_model import _lr, cv_summary

# every morphometric but the areas (pixels and µm²: they depend on the camera's scale)
COLUMNS = tuple(c for c in MORPHOMETRIC_COLUMNS if not c.endswith(("_px", "_um2")))


def segmented(rows: list[dict], cache: Path) -> np.ndarray:
    """The ``COLUMNS`` morphometrics of every DeepAPL cell (rows of the manifest), cached."""
    if cache.is_file():
        z = np.load(cache)
        if len(z["morpho"]) == len(rows) and tuple(z["columns"]) == MORPHOMETRIC_COLUMNS:
            return z["morpho"][:, [MORPHOMETRIC_COLUMNS.index(c) for c in COLUMNS]]
    base, seg = data_root() / "deepapl", load_segmenter("leukomorph-seg")
    out = np.full((len(rows), len(MORPHOMETRIC_COLUMNS)), np.nan, np.float32)
    for s in range(0, len(rows), 256):
        crops = [read_image(base / r["path"]).pixels for r in rows[s : s + 256]]
        for j, (c, lab) in enumerate(zip(crops, seg.segment_many(crops), strict=True)):
            m = morphometrics(c, lab, None)
            out[s + j] = [m[k] for k in MORPHOMETRIC_COLUMNS]
    np.savez_compressed(cache, morpho=out, columns=np.array(MORPHOMETRIC_COLUMNS))
    return out[:, [MORPHOMETRIC_COLUMNS.index(c) for c in COLUMNS]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/case-cells"))
    args = ap.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir / "cell_embeddings.npz"
    d = ensemble_data(cache=cache)
    rows, patients, y, model = d.rows, d.patients, d.y, d.model
    morpho = segmented(rows, args.cache_dir / "morpho.npz")
    white = [list(model.classes).index(c) for c in d.lr_card.raw["input"]["feature_classes"]]

    def case_morpho(pr: np.ndarray, m: np.ndarray) -> np.ndarray:
        keep = np.isin(pr.argmax(1), white)
        m = m[keep] if keep.any() else m
        return np.concatenate([np.nanmean(m, 0), np.nanstd(m, 0)])

    base = d.features(d.probs)
    morph = np.array([case_morpho(pr, morpho[d.by_patient[p]]) for p, pr in zip(patients, d.probs, strict=True)])
    both = np.concatenate([base, morph], 1)

    def lr_oof(f: np.ndarray, repeats: int) -> np.ndarray:
        oof = np.zeros((repeats, len(y)))
        for r in range(repeats):
            for tr, te in StratifiedKFold(5, shuffle=True, random_state=r).split(np.zeros(len(y)), y):
                oof[r, te] = _lr(d.c).fit(f[tr], y[tr]).predict_proba(f[te])[:, 1]
        return oof

    print(
        f"{len(y)} DeepAPL patients ({int(y.sum())} APL), {len(rows)} cells, cell model {d.cell['name']} "
        f"{d.cell['version']}; morphometrics: mean and s.d. of {', '.join(COLUMNS)}\n"
    )
    print("| model | CV | AUROC, mean over repeats (range) | averaged out-of-fold, 95% CI | Brier |")
    print("|---|---|---:|---:|---:|")

    def row(name: str, how: str, oof: np.ndarray) -> None:
        cv = cv_summary(y, oof)
        lo, hi = cv["auroc_range_over_repeats"]
        c_lo, c_hi = cv["auroc_ci95"]
        print(
            f"| {name} | {how} | {cv['auroc_mean_over_repeats']:.3f} ({lo:.3f}–{hi:.3f}) "
            f"| {cv['auroc_of_mean_oof']:.3f} ({c_lo:.3f}–{c_hi:.3f}) | {cv['brier']:.3f} |"
        )

    for name, f in (
        ("logistic, classes + probabilities (shipped `leukomorph-apl-lr`)", base),
        ("logistic, + morphometrics", both),
        ("logistic, morphometrics alone", morph),
    ):
        row(name, "10× 5-fold", lr_oof(f, 10))
    oof_mil, oof_base, oof_both = (np.zeros((3, len(y))) for _ in range(3))
    for r in range(3):
        for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=r).split(np.zeros(len(y)), y)):
            members = fit_members(d, tr, seed=100 * r + k)
            oof_mil[r, te], oof_base[r, te] = member_scores(
                members, [d.bags[i] for i in te], [d.probs[i] for i in te], d
            )
            oof_both[r, te] = _lr(d.c).fit(both[tr], y[tr]).predict_proba(both[te])[:, 1]
    row("ensemble: MIL + logistic (shipped `leukomorph-apl-ens`)", "3× 5-fold", (oof_mil + oof_base) / 2)
    row("ensemble: MIL + logistic with morphometrics", "3× 5-fold", (oof_mil + oof_both) / 2)

    test = set(model.card.raw["split"]["patients"]["test"])
    it = np.array([p in test for p in patients])
    held = np.nonzero(it)[0]
    s_mil, s_base = member_scores(
        fit_members(d, np.nonzero(~it)[0], seed=7), [d.bags[i] for i in held], [d.probs[i] for i in held], d
    )
    s_both = _lr(d.c).fit(both[~it], y[~it]).predict_proba(both[it])[:, 1]
    yt = y[it]
    print(f"\n{len(held)} held-out patients ({int(yt.sum())} APL), fitted without them, 0.5 after Platt scaling:")
    for name, oof, s in (("shipped design", oof_base, s_base), ("with morphometrics", oof_both, s_both)):
        p = platt(y, ((oof_mil + oof) / 2).mean(0))((s_mil + s) / 2)
        print(
            f"- {name}: AUROC {roc_auc_score(yt, p):.3f}; APL flagged {int((p[yt == 1] >= 0.5).sum())}/{int(yt.sum())}"
            f" (lowest {p[yt == 1].min():.2f}), AML flagged {int((p[yt == 0] >= 0.5).sum())}/{int((yt == 0).sum())}"
            f" (highest {p[yt == 0].max():.2f})"
        )


if __name__ == "__main__":
    main()
