"""Fit the attention-MIL APL-vs-AML case model on DeepAPL cell embeddings, patient-level CV.

Same protocol as :mod:`leukomorph.training.case_model` (repeated stratified 5-fold over patients;
the cell model's held-out test patients scored by a model fitted without them), so the two case
models can be compared side by side; parameters are exported for the numpy forward pass of
:mod:`leukomorph.aggregate.mil`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from torch import nn

from .. import jsonio
from ..aggregate.case_model import case_features
from ..aggregate.mil import MIL_FEATURES, mil_forward
from ..classify import recommended_tta
from .case_model import (
    apl_card_head,
    cv_summary,
    deepapl_cell_outputs,
    fit_applicability,
    held_out_summary,
    patients_of,
)

log = logging.getLogger(__name__)

__all__ = ["GatedAttentionMIL", "fit_mil_model"]


class GatedAttentionMIL(nn.Module):
    def __init__(self, d_in: int, d_hidden: int = 64, d_att: int = 32, dropout: float = 0.25) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d_hidden)
        self.V = nn.Linear(d_hidden, d_att)
        self.U = nn.Linear(d_hidden, d_att)
        self.w = nn.Linear(d_att, 1, bias=False)
        self.out = nn.Linear(d_hidden, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.proj(e)))
        a = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)
        z = torch.softmax(a, 0) @ h
        return self.out(z).squeeze(-1)

    def params(self) -> dict[str, np.ndarray]:
        g = lambda t: t.detach().cpu().numpy().astype(np.float64)  # noqa: E731
        return {
            "W": g(self.proj.weight),
            "b": g(self.proj.bias),
            "V": g(self.V.weight),
            "v": g(self.V.bias),
            "U": g(self.U.weight),
            "u": g(self.U.bias),
            "w": g(self.w.weight[0]),
            "c": g(self.out.weight[0]),
            "c0": g(self.out.bias[0]),
        }


class _SeedBag:
    """K networks trained with different seeds; ``params()`` stacks them on a leading member axis
    (averaged by :func:`leukomorph.aggregate.mil.mil_forward`)."""

    def __init__(self, nets: list[GatedAttentionMIL]) -> None:
        self.nets = nets

    def params(self) -> dict[str, np.ndarray]:
        each = [n.params() for n in self.nets]
        return {k: np.stack([p[k] for p in each]) for k in each[0]}


def _bag_size(rng: np.random.Generator, n: int, min_cells: int | None, max_cells: int) -> int:
    """How many of a bag's ``n`` cells one training step sees: all of them up to ``max_cells``; with
    ``min_cells``, a number drawn log-uniformly between ``min_cells`` and that (bag-size augmentation:
    the network also learns from cases imaged with few cells)."""
    top = min(n, max_cells)
    if min_cells is None or top <= min_cells:
        return top
    return int(round(np.exp(rng.uniform(np.log(min_cells), np.log(top)))))


def _fit(
    bags: list[np.ndarray],
    y: np.ndarray,
    epochs: int,
    seed: int,
    max_cells: int = 256,
    members: int = 1,
    min_cells: int | None = None,
) -> GatedAttentionMIL | _SeedBag:
    """One network (``members=1``) or a bag of ``members`` networks (seeds seed, seed + 1000, ...).
    ``min_cells``: bag-size augmentation (:func:`_bag_size`); None keeps every cell up to ``max_cells``."""
    if members > 1:
        return _SeedBag([_fit(bags, y, epochs, seed + 1000 * m, max_cells, 1, min_cells) for m in range(members)])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = GatedAttentionMIL(bags[0].shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    pos_w = (len(y) - y.sum()) / max(y.sum(), 1)
    for _ in range(epochs):
        net.train()
        for i in rng.permutation(len(bags)):
            b = bags[i]
            k = _bag_size(rng, len(b), min_cells, max_cells)
            if k < len(b):  # subsample each epoch (augmentation, speed)
                b = b[rng.choice(len(b), k, replace=False)]
            logit = net(torch.from_numpy(b).float())
            loss = nn.functional.binary_cross_entropy_with_logits(
                logit, torch.tensor(float(y[i])), pos_weight=torch.tensor(float(pos_w))
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _scores(net: GatedAttentionMIL | _SeedBag, bags: list[np.ndarray]) -> np.ndarray:
    p = net.params()
    return np.array([mil_forward(p, b)[0] for b in bags])


def fit_mil_model(
    cell_model: str,
    out_dir: str | os.PathLike[str],
    name: str = "leukomorph-apl-mil",
    epochs: int = 30,
    repeats: int = 3,
    root=None,
    members: int = 1,
    bag_min_cells: int | None = None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probs, emb, rows, model = deepapl_cell_outputs(cell_model, root, out / "cell_embeddings.npz", embeddings=True)
    patients, by_patient, y = patients_of(rows)
    bags = [emb[by_patient[p]] for p in patients]
    oof = np.zeros((repeats, len(y)))
    for r in range(repeats):
        for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=r).split(np.zeros(len(y)), y)):
            net = _fit([bags[i] for i in tr], y[tr], epochs, seed=100 * r + k, members=members, min_cells=bag_min_cells)
            oof[r, te] = _scores(net, [bags[i] for i in te])
        log.info("repeat %d AUROC %.3f", r, roc_auc_score(y, oof[r]))
    cv = cv_summary(y, oof)
    held = {}
    test = set(model.card.raw.get("split", {}).get("patients", {}).get("test", []))
    it = np.array([p in test for p in patients])
    if it.any() and len(set(y[it])) == 2:
        net = _fit(
            [b for b, t in zip(bags, it, strict=True) if not t],
            y[~it],
            epochs,
            seed=7,
            members=members,
            min_cells=bag_min_cells,
        )
        s = _scores(net, [b for b, t in zip(bags, it, strict=True) if t])
        held = held_out_summary(y[it], s, np.array(patients)[it])
    # Platt recalibration of the class-weighted MIL output to the cohort's prevalence, fitted on the
    # cross-validated (out-of-fold) scores
    eps = 1e-6
    lo = np.log(np.clip(mean_oof_raw := oof.mean(0), eps, 1 - eps) / np.clip(1 - mean_oof_raw, eps, 1))
    platt = LogisticRegression(C=1e6).fit(lo.reshape(-1, 1), y)
    pa, pb = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    cal = 1 / (1 + np.exp(-(pa * lo + pb)))
    cv["brier_after_platt_in_sample"] = float(brier_score_loss(y, cal))
    final = _fit(bags, y, epochs, seed=0, members=members, min_cells=bag_min_cells)
    params = final.params()
    params["platt_a"], params["platt_b"] = np.asarray(pa), np.asarray(pb)
    # applicability on the probability features, as for the logistic case model
    feats = np.array([case_features(probs[by_patient[p]]) for p in patients])
    fm, fs = feats.mean(0), feats.std(0) + 1e-6
    lw, ood_threshold, _ = fit_applicability((feats - fm) / fs)
    pfile = out / f"{name}.npz"
    with pfile.open("wb") as fh:
        np.savez(
            fh,
            **params,
            feat_mean=fm,
            feat_scale=fs,
            ood_location=lw.location_,
            ood_precision=lw.precision_,
            ood_threshold=np.asarray(ood_threshold),
        )
    card = {
        **apl_card_head(name, pfile),
        "input": {"features": MIL_FEATURES, "embedding_dim": int(emb.shape[1]), "cell_tta": recommended_tta(model)},
        "depends_on": {"name": model.card.name, "version": model.card.version, "sha256": model.card.sha256},
        "architecture": {
            "name": "gated-attention MIL (Ilse et al. 2018) on cell embeddings",
            "hidden": 64,
            "attention": 32,
            "epochs": epochs,
            "members": members,
            **({"bag_min_cells": bag_min_cells} if bag_min_cells else {}),
            "bag_sampling": "each training step sees a bag subsampled to k cells, k log-uniform between "
            f"{bag_min_cells} and min(cells, 256)"
            if bag_min_cells
            else "every cell of a bag up to 256 (a random 256 above that)",
            "members_note": "networks trained with different seeds; logits and attention averaged"
            if members > 1
            else "one network",
        },
        "training": {
            "data": "DeepAPL (Sidhom et al. 2021): all cells of 82 patients (22 APL, 60 non-APL AML); research use",
            "patients": len(y),
            "cells": int(len(emb)),
        },
        "metrics": {"cross_validation": cv, "held_out_cell_model_test_patients": held},
        "applicability": {"threshold": float(ood_threshold), "method": "as leukomorph-apl-lr (probability features)"},
        "intended_use": "Score APL vs non-APL AML for a case already suspected to be acute myeloid leukemia; the "
        "attention weights name the cells the score rests on. Decision support, not a diagnosis.",
        "limitations": [
            "82 patients from one hospital; the cell model trained on most of their labelled cells (CV optimistic).",
        ],
    }
    path = out / f"{name}.json"
    path.write_text(jsonio.dumps(card, indent=1))
    return path
