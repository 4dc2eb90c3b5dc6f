"""Healthy white cells from other cameras as extra negatives of the APL-vs-AML score (train extra:
torch, scikit-learn).

Usage: python benchmarks/case_negatives.py [--mil-only] [--cache-dir runs/case-cells]

Crop cases of healthy donors' white cells from Raabin-WBC's camera (and BCDD's) get an APL score
of 0.9-0.99 from the shipped ensemble, which saw AML and APL patients only. This study adds 20
non-APL pseudo-cases to the members' training: for each txl_pbc *train* source (PBC,
Raabin-WBC, BCCD, BCDD), 5 bags of min(100, n // 2) of its box-truth white cells (cut with the
field crop rule, classified as ``analyze`` does), seed 0; ``--mil-only`` adds them to the MIL
member only (the logistic member, on the differential, is then the shipped design). Printed:

1. the ensemble's 3x 5-fold CV over the 82 DeepAPL patients (folds and seeds of
   ``leukomorph-apl-ens``; the pseudo-cases join every training fold, never a test fold) and its
   Brier score, beside the shipped design's 0.948 / 0.076;
2. the 17 held-out patients, members fitted without them, flagged at 0.5 after Platt scaling
   fitted on the candidate's out-of-fold scores;
3. whether it generalises to a camera it did not see: fitted with the negatives of the three
   other sources only, the scores of the Raabin-WBC (and then BCDD) crop cases, train and val;
   and, with every negative, the val crop case of each source.

About 4 min on 2 cores, plus about 1 min the first time to classify the txl_pbc crops (cached).
Pre-registered rule and results: the README, "Patient level".
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from healthy_cases import _truth_crops
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from leukomorph.aggregate.case_model import load_case_model
from leukomorph.classify import recommended_tta
from leukomorph.data import load_txl
from leukomorph.evaluation.runner import predict_rows
from leukomorph.models import DEFAULT_CASE_MODEL
from leukomorph.training.case_ensemble import cv_folds, ensemble_data, member_scores, platt
from leukomorph.training.case_model import _lr, cv_summary
from leukomorph.training.mil import _fit, _scores

SOURCES = ("PBC", "Raabin-WBC", "BCCD", "BCDD")


def txl_cells(model, cache: Path) -> dict[str, np.ndarray]:
    """Probabilities and embeddings of txl_pbc's box-truth white cells per source and split
    (keys ``"<source>|<split>|probs"`` and ``"...|emb"``), cached per cell model."""
    if cache.is_file():
        z = np.load(cache)
        if str(z["sha256"]) == model.card.sha256:
            return {k: z[k] for k in z.files if k != "sha256"}
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in ("train", "val"):
            for source in SOURCES:
                folder = Path(tmp) / f"{source}-{split}"
                _truth_crops(load_txl(split, None, source=source), folder)
                rows = [{"path": str(p)} for p in sorted(folder.glob("*.png"))]
                preds = predict_rows(model, rows, recommended_tta(model), embeddings=True)
                out[f"{source}|{split}|probs"] = np.array([p.probabilities for p in preds], np.float32)
                out[f"{source}|{split}|emb"] = np.array([p.embedding for p in preds], np.float32)
    np.savez_compressed(cache, sha256=model.card.sha256, **out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mil-only", action="store_true", help="negatives in the MIL member only")
    ap.add_argument(
        "--gate",
        action="store_true",
        help="instead: a separate applicability gate (DeepAPL patient vs healthy pseudo-case), the APL score untouched",
    )
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/case-cells"))
    args = ap.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    ens = load_case_model(DEFAULT_CASE_MODEL)
    d = ensemble_data(ens.mil.name, ens.lr.name, cache=args.cache_dir / "cell_embeddings.npz")
    cells = txl_cells(d.model, args.cache_dir / "txl_cells.npz")
    rng = np.random.default_rng(0)
    neg = []  # (source, embeddings, probabilities) of each pseudo-case
    for s in SOURCES:
        e, p = cells[f"{s}|train|emb"], cells[f"{s}|train|probs"]
        for _ in range(5):
            i = rng.choice(len(e), min(100, len(e) // 2), replace=False)
            neg.append((s, e[i], p[i]))

    if args.gate:
        return gate_study(d, cells, neg)

    def fit(train: np.ndarray, seed: int, exclude: tuple[str, ...] = ()):
        nb = [n for n in neg if n[0] not in exclude]
        y = np.concatenate([d.y[train], np.zeros(len(nb), int)])
        bags = [d.bags[i] for i in train] + [n[1] for n in nb]
        net = _fit(bags, y, d.epochs, seed=seed, members=d.members, min_cells=d.bag_min_cells)
        if args.mil_only:
            return net, _lr(d.c).fit(d.features([d.probs[i] for i in train]), d.y[train])
        return net, _lr(d.c).fit(d.features([d.probs[i] for i in train] + [n[2] for n in nb]), y)

    def score(members, bags, probs) -> np.ndarray:
        net, lr = members
        return (_scores(net, bags) + lr.predict_proba(d.features(probs))[:, 1]) / 2

    y = d.y
    where = "the MIL member only" if args.mil_only else "both members"
    print(f"{ens.name} {ens.version}'s design with 20 healthy pseudo-cases in {where}:")
    print("  pseudo-cases per source (cells each): " + ", ".join(f"{s} 5 x {len(e)}" for s, e, _ in neg[::5]))
    oof = np.zeros((3, len(y)))
    for r in range(3):
        for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=r).split(np.zeros(len(y)), y)):
            oof[r, te] = score(fit(tr, 100 * r + k), [d.bags[i] for i in te], [d.probs[i] for i in te])
    cv = cv_summary(y, oof)
    aucs = [roc_auc_score(y, o) for o in oof]
    print(
        f"1. CV AUROC {cv['auroc_mean_over_repeats']:.3f} (repeats {min(aucs):.3f}-{max(aucs):.3f}; 95% CI "
        f"{cv['auroc_ci95'][0]:.3f}-{cv['auroc_ci95'][1]:.3f}), Brier {cv['brier']:.3f} "
        f"(shipped: {ens.raw['metrics']['cross_validation']['auroc_mean_over_repeats']:.3f}, "
        f"{ens.raw['metrics']['cross_validation']['brier']:.3f})"
    )
    cal = platt(y, oof.mean(0))
    test = set(d.model.card.raw["split"]["patients"]["test"])
    it = np.array([p in test for p in d.patients])
    held = np.nonzero(it)[0]
    s = cal(score(fit(np.nonzero(~it)[0], 7), [d.bags[i] for i in held], [d.probs[i] for i in held]))
    apl, aml = s[y[it] == 1], s[y[it] == 0]
    print(
        f"2. held-out: APL {(apl >= 0.5).sum()}/{len(apl)} flagged (lowest {apl.min():.2f}), "
        f"AML {(aml >= 0.5).sum()}/{len(aml)} (highest {aml.max():.2f})"
    )
    everyone = np.arange(len(y))
    for left_out in ("Raabin-WBC", "BCDD"):
        m = fit(everyone, 0, exclude=(left_out,))
        for split in ("val", "train"):
            e, p = cells[f"{left_out}|{split}|emb"], cells[f"{left_out}|{split}|probs"]
            print(
                f"3. without {left_out}'s negatives: {left_out} {split} crop case ({len(e)} cells) "
                f"{float(cal(score(m, [e], [p]))[0]):.3f}"
            )
    m = fit(everyone, 0)
    for src in SOURCES:
        e, p = cells[f"{src}|val|emb"], cells[f"{src}|val|probs"]
        print(f"   every negative: {src} val crop case ({len(e)} cells) {float(cal(score(m, [e], [p]))[0]):.3f}")


def gate_study(d, cells: dict[str, np.ndarray], neg: list) -> None:
    """A gate with the MIL member's architecture and training, fitted to tell the DeepAPL patients (1)
    from the healthy pseudo-cases (0); below 0.5 a crop case's learned scores would not be used."""
    y = d.y

    def fit(patients: np.ndarray, seed: int, exclude: tuple[str, ...] = ()):
        nb = [n for n in neg if n[0] not in exclude]
        bags = [d.bags[i] for i in patients] + [n[1] for n in nb]
        target = np.concatenate([np.ones(len(patients), int), np.zeros(len(nb), int)])
        return _fit(bags, target, d.epochs, seed=seed, members=d.members)

    print("gate: DeepAPL patient (1) vs healthy pseudo-case (0), MIL architecture and training of the APL member")
    oof = np.zeros(len(y))
    for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y)):
        oof[te] = _scores(fit(tr, k), [d.bags[i] for i in te])
    shipped = np.zeros((3, len(y)))  # the shipped ensemble's out-of-fold scores (its own CV)
    for r, te, members in cv_folds(d, 3):
        s_mil, s_lr = member_scores(members, [d.bags[i] for i in te], [d.probs[i] for i in te], d)
        shipped[r, te] = (s_mil + s_lr) / 2
    flagged = platt(y, shipped.mean(0))(shipped.mean(0)) >= 0.5
    low = oof < 0.5
    names = [f"{d.patients[i]} ({'APL' if y[i] else 'AML'}, {oof[i]:.2f})" for i in np.nonzero(low)[0]]
    print(
        f"1. patient CV: {low.sum()}/{len(y)} below 0.5 ({', '.join(names) or 'none'}); "
        f"of the {flagged.sum()} patients "
        f"the shipped ensemble flags out of fold, {(low & flagged).sum()} below; lowest patient {oof.min():.3f}"
    )
    test = set(d.model.card.raw["split"]["patients"]["test"])
    it = np.array([p in test for p in d.patients])
    s = _scores(fit(np.nonzero(~it)[0], 7), [d.bags[i] for i in np.nonzero(it)[0]])
    print(f"2. the 17 test patients, gate fitted without them: {(s < 0.5).sum()} below 0.5 (lowest {s.min():.3f})")
    everyone = np.arange(len(y))
    for left_out in ("Raabin-WBC", "BCDD"):
        g = fit(everyone, 0, exclude=(left_out,))
        for split in ("val", "train"):
            e = cells[f"{left_out}|{split}|emb"]
            print(
                f"3. without {left_out}'s negatives: {left_out} {split} crop case ({len(e)} cells) "
                f"{_scores(g, [e])[0]:.3f}"
            )
    g = fit(everyone, 0)
    for src in SOURCES:
        e = cells[f"{src}|val|emb"]
        print(f"   every negative: {src} val crop case ({len(e)} cells) {_scores(g, [e])[0]:.3f}")


if __name__ == "__main__":
    main()
