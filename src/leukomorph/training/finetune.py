"""Fine-tune a shipped cell classifier on a laboratory's reviewed cells (``leukomorph finetune``).

Learning from corrections: ``leukomorph export-labels`` writes the reviewed cells of the review
store as a manifest (path, label, patient_id = case); this module trains the base model further on
them, from the training weights its card ships (sha256-checked), and measures the result against
the base model before anything changes for users:

- the laboratory's cases are split by case (test 20%, validation 20%, seed fixed); temperature
  and conformal sets are fitted on its validation cases, the card's metrics come from its test
  cases;
- how long to train is chosen on the laboratory's validation cases: up to ``epochs`` epochs, the
  weights kept are those of the epoch that classifies them best (epoch 0 is the base model: a
  fine-tune that does not help there gives the base weights back, and ``finetune.json`` says so);
- to keep what the base model knows, a sample of the base model's own *training* crops
  (``replay``, e.g. pbc and deepapl from the shared data) is mixed in; those crops are always in
  the training split (:attr:`TrainConfig.train_only`), never validated or tested on; half of the
  training samples are drawn from the laboratory's cells (LAB_SHARE), the other half from the
  replayed crops;
- ``finetune.json`` compares base and fine-tuned model on the laboratory's test cases and on the
  base model's validation split of the shared data (crops neither model trained on): a gain on
  one must not hide a loss on the other.

Nothing is installed or activated here: ``leukomorph models --install`` then ``--activate`` does
that, and ``--rollback`` undoes it. Case and attribute models were fitted on the base model's
outputs: with a fine-tuned classifier they are reported as not computed until refitted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..classify import recommended_tta
from ..data.datasets import load_csv_manifest
from ..errors import ConfigError, DataError
from ..evaluation.metrics import bootstrap_ci
from ..evaluation.runner import _resolve, default_split, predict_rows, read_split
from ..models.registry import get_card, load_classifier, training_weights
from ..records import LabelledImage
from ..taxonomy import CLASSES
from .card import finalize_model
from .sources import load_sources
from .train import TrainConfig, train_classifier

log = logging.getLogger(__name__)

__all__ = ["MIN_CASES", "MIN_CELLS", "finetune"]

#: fewest reviewed cases and cells a fine-tune accepts (split by case into train, validation and test)
MIN_CASES = 5
MIN_CELLS = 100
#: share of the training samples drawn from the laboratory's cells when shared crops are replayed
LAB_SHARE = 0.5
#: weight averaging of a fine-tune: a horizon of about 20 optimiser steps (training from scratch
#: uses 0.998, about 500 steps: longer than a whole fine-tune, whose exported weights then stayed
#: about 80% the base model's)
FINETUNE_EMA_DECAY = 0.95


def _base_state(card) -> dict[str, torch.Tensor]:
    with np.load(training_weights(card)) as z:
        return {k: torch.from_numpy(z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k]) for k in z.files}


def _replay(card, datasets: Sequence[str], size: int, seed: int, data_root) -> list[LabelledImage]:
    """Up to ``size`` crops of ``datasets`` from the base model's training split, drawn at random."""
    if not datasets or size <= 0:
        return []
    train = {str(_resolve(r["path"])) for r in read_split(default_split(card)) if r["split"] == "train"}
    recs = [r for r in load_sources(list(datasets), data_root) if str(r.path) in train]
    if not recs:
        raise DataError(f"no crop of {list(datasets)} is in the training split of {card.name}; check the data root")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(recs), min(size, len(recs)), replace=False))
    return [recs[i] for i in pick]


def _accuracy(model, rows: list[dict], tta: str, groups: list[str]) -> dict:
    """Accuracy over exactly labelled rows with a 95% interval resampling ``groups``."""
    idx = [i for i, r in enumerate(rows) if "|" not in r["classes"]]
    if not idx:
        return {"n": 0}
    rows = [rows[i] for i in idx]
    g = np.array([groups[i] for i in idx])
    preds = predict_rows(model, rows, tta)
    hit = np.array([p.predicted_class == r["classes"] for p, r in zip(preds, rows, strict=True)], float)
    lo, hi = bootstrap_ci(lambda s: float(hit[s].mean()), g, 1000)
    return {"n": len(rows), "accuracy": round(float(hit.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}


def _describe(card_path: Path, base, out: Path, name: str, n_cells: int, n_cases: int, n_replay: int) -> None:
    """Say in the new card what it was fine-tuned from and on, and ship its own training weights
    (float16 .npz, sha256) so that it can be fine-tuned again."""
    import hashlib

    sd = torch.load(out / "weights.pt", map_location="cpu")
    wfile = f"{name}.weights.npz"
    np.savez_compressed(
        out / wfile, **{k: v.numpy().astype(np.float16) if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    )
    c = json.loads(card_path.read_text(encoding="utf-8"))
    c["finetuned_from"] = {"name": base.name, "version": base.version, "sha256": base.sha256}
    c["training_weights"] = {
        "file": wfile,
        "sha256": hashlib.sha256((out / wfile).read_bytes()).hexdigest(),
        "format": "numpy .npz of the torch state dict, floating-point tensors stored as float16",
        "use": "starting point of a further `leukomorph finetune`",
    }
    c["limitations"] = [
        f"Fine-tuned from {base.name} {base.version} on {n_cells} reviewed cells of {n_cases} cases of one "
        f"laboratory, with {n_replay} of the base model's training crops replayed; its held-out metrics are on that "
        "laboratory's test cases only (finetune.json compares it with the base model on the base's validation split).",
        "Case models (APL vs AML) and attribute models were fitted on the base model: not computed with this one.",
        *c.get("limitations", []),
    ]
    card_path.write_text(json.dumps(c, indent=1, ensure_ascii=False), encoding="utf-8")


def finetune(
    manifests: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    base: str = "leukomorph-cell",
    epochs: int = 6,
    lr: float = 2e-4,
    replay: Sequence[str] = ("pbc", "deepapl"),
    replay_size: int = 4000,
    name: str | None = None,
    seed: int = 0,
    data_root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: Callable[[str, dict], None] | None = None,
) -> dict:
    """Fine-tune ``base`` on the reviewed cells of ``manifests`` (plus replayed shared crops);
    write the run, a model card and ``finetune.json`` into ``out``; return that comparison."""
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, not {epochs}")
    card = get_card(base)
    state = _base_state(card)
    lab: list[LabelledImage] = []
    for m in manifests:
        lab += load_csv_manifest(m)
    if not lab:
        raise DataError("the manifests hold no reviewed cells")
    no_case = [r.path for r in lab if not r.patient_id]
    if no_case:
        raise DataError(
            f"{len(no_case)} reviewed cells have no case (patient_id), e.g. {no_case[0]}: the split is by case"
        )
    cases = sorted({r.patient_id for r in lab})
    if len(cases) < MIN_CASES:
        raise DataError(f"{len(cases)} reviewed case(s); fine-tuning needs at least {MIN_CASES} (split by case)")
    if len(lab) < MIN_CELLS:
        raise DataError(
            f"{len(lab)} reviewed cells; fine-tuning needs at least {MIN_CELLS} (a fifth of the cases calibrates "
            "the model and another fifth tests it)"
        )
    rep = _replay(card, replay, replay_size, seed, data_root)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    torch.save(state, outp / "base_weights.pt")
    norm = card.input.get("normalisation", {})
    cfg = TrainConfig(
        arch=card.raw["architecture"]["name"],
        size=card.input_size,
        epochs=epochs,
        lr=lr,
        init=str(outp / "base_weights.pt"),
        train_only=tuple(sorted({r.dataset for r in rep})),
        source_share={"user": LAB_SHARE} if rep else {},
        ema_decay=FINETUNE_EMA_DECAY,
        keep_best=True,
        test_fraction=0.2,
        val_fraction=0.2,
        augment="strong",
        balance_by="source",
        seed=seed,
        device=device,
        mean=tuple(norm.get("mean", TrainConfig.mean)),
        std=tuple(norm.get("std", TrainConfig.std)),
    )
    records = rep + lab
    summary = train_classifier(records, cfg, outp, cache_dir, progress)
    chosen = int(summary["chosen_epoch"])
    name = name or f"{card.name}-ft-{datetime.now(timezone.utc):%Y%m%d-%H%M}"
    base_model = load_classifier(card.card_path)
    tta = recommended_tta(base_model)
    new_card = finalize_model(outp, name, records, [*replay, *[str(m) for m in manifests]], tta=tta)
    _describe(new_card, card, outp, name, len(lab), len(cases), len(rep))
    # base vs fine-tuned, on the laboratory's test cases and on the base's validation split
    split = list(read_split(outp / "split.csv"))
    lab_paths = {r.path: r for r in lab}
    lab_test = [
        {"path": r["path"], "classes": "|".join(lab_paths[r["path"]].classes)}
        for r in split
        if r["split"] == "test" and r["path"] in lab_paths
    ]
    lab_groups = [lab_paths[r["path"]].patient_id or "" for r in lab_test]
    base_val = [r for r in read_split(default_split(card)) if r["split"] == "val" and r["dataset"] in replay]
    val_groups = [r["patient_id"] or f"g{r['group']}" for r in base_val]
    models = {"base": base_model, "finetuned": load_classifier(str(new_card))}
    comparison: dict = {}
    for key, m in models.items():
        comparison[key] = {
            "model": f"{m.card.name} {m.card.version}",
            "sha256": m.card.sha256,
            "laboratory_test_cases": _accuracy(m, lab_test, tta, lab_groups),
            "base_validation_split": (
                {
                    d: _accuracy(
                        m,
                        [r for r in base_val if r["dataset"] == d],
                        tta,
                        [g for g, r in zip(val_groups, base_val, strict=True) if r["dataset"] == d],
                    )
                    for d in sorted({r["dataset"] for r in base_val})
                }
                if base_val
                else {}
            ),
        }
    result = {
        "base": {"name": card.name, "version": card.version, "sha256": card.sha256},
        "card": str(new_card),
        "laboratory": {
            "cells": len(lab),
            "cases": len(cases),
            "test_cases": sorted(set(lab_groups)),
            "classes": {c: sum(c in r.classes for r in lab) for c in CLASSES if any(c in r.classes for r in lab)},
        },
        "replay": {"datasets": list(replay), "crops": len(rep)},
        "config": {"epochs": epochs, "lr": lr, "seed": seed},
        "chosen_epoch": {
            "epoch": chosen,
            "of": epochs,
            "rule": "the epoch whose averaged weights classify the laboratory's validation cases best "
            "(0 = the base model's weights; ties to the earlier)",
            "validation_accuracy": {int(h["epoch"]): round(float(h["val_acc_ema"]), 4) for h in summary["history"]},
            "note": (
                "no epoch classified the laboratory's validation cases better than the base model: the "
                "'fine-tuned' model carries the base model's weights (recalibrated on those cases)"
                if chosen == 0
                else ""
            ),
        },
        "comparison": comparison,
        "note": "case models (APL vs AML) and attribute models were fitted on the base model's outputs: with the "
        "fine-tuned model they are reported as not computed until refitted (leukomorph train-case-model).",
    }
    (outp / "finetune.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    log.info("fine-tuned model card: %s", new_card)
    return result
