"""Fit the WBCAtt attribute heads on the cell classifier's embeddings of PBC crops.

Honest split: heads are fitted on WBCAtt cells in the cell model's *training* split and measured
on WBCAtt cells in its held-out *test* split (the backbone never saw those images).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from .. import jsonio
from ..classify import recommended_tta
from ..classify.attributes import WBCATT_ATTRIBUTES
from ..data import data_root
from ..evaluation.runner import default_split, predict_rows, read_split
from ..models.registry import load_classifier
from .card import card_head

__all__ = ["fit_attribute_model"]


def fit_attribute_model(
    cell_model: str, out_dir: str | os.PathLike[str], name: str = "leukomorph-wbcatt", c: float = 0.5
):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = data_root() / "pbc"
    rows = []
    for f in ("wbcatt_train.csv", "wbcatt_val.csv"):
        rows += list(csv.DictReader((base / f).open(newline="", encoding="utf-8")))
    model = load_classifier(cell_model)
    split = {r["path"]: r["split"] for r in read_split(default_split(model.card))}
    rows = [r for r in rows if f"pbc/{r['img_name']}" in split]
    which = np.array([split[f"pbc/{r['img_name']}"] for r in rows])
    preds = predict_rows(
        model, [{"path": str(base / r["img_name"])} for r in rows], recommended_tta(model), embeddings=True
    )
    x = np.array([p.embedding for p in preds], np.float64)
    tr, te = which != "test", which == "test"
    mean, scale = x[tr].mean(0), x[tr].std(0) + 1e-6
    z = (x - mean) / scale
    params, vocab, metrics = {"mean": mean, "scale": scale}, {}, {}
    for a in WBCATT_ATTRIBUTES:
        y = np.array([r[a] for r in rows])
        clf = LogisticRegression(C=c, max_iter=3000).fit(z[tr], y[tr])
        acc = float((clf.predict(z[te]) == y[te]).mean())
        cl = list(clf.classes_)
        w = clf.coef_ if len(cl) > 2 else np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
        b = clf.intercept_ if len(cl) > 2 else np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
        params[f"{a}__w"], params[f"{a}__b"], vocab[a] = w, b, cl
        majority = max(np.mean(y[te] == v) for v in cl)
        metrics[a] = {"accuracy": acc, "majority_baseline": float(majority), "n_test": int(te.sum())}
    pfile = out / f"{name}.npz"
    with pfile.open("wb") as fh:
        np.savez(fh, **params)
    mean_acc = float(np.mean([m["accuracy"] for m in metrics.values()]))
    card = {
        **card_head(name, "1.0.0", "attribute-classification", pfile),
        "classes": list(WBCATT_ATTRIBUTES),
        "input": {"features": "cell_embedding", "embedding_dim": int(x.shape[1])},
        "vocabulary": vocab,
        "depends_on": {"name": model.card.name, "version": model.card.version, "sha256": model.card.sha256},
        "architecture": {
            "name": "one multinomial logistic regression per attribute on the standardised embedding",
            "C": c,
        },
        "training": {
            "data": "WBCAtt attributes (Tsutsui et al. 2023, MIT) of PBC crops (CC BY 4.0), five white-cell classes",
            "n_train": int(tr.sum()),
            "n_test": int(te.sum()),
            "split": "train: WBCAtt cells in the cell model's training split; test: those in its held-out test split",
        },
        "metrics": {"held_out_test": {"mean_accuracy": mean_acc, "per_attribute": metrics}},
        "intended_use": "Describe each white cell in WBCAtt's vocabulary for review and explanation; research use.",
        "limitations": [
            "Fitted on healthy-donor cells of five mature classes only: blasts and abnormal cells are "
            "described in a vocabulary learned from normal cells."
        ],
    }
    path = out / f"{name}.json"
    path.write_text(jsonio.dumps(card, indent=1))
    return path
