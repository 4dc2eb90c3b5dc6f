"""Evaluate a classifier on the rows of a split file (the model's own held-out split by default)."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np

from ..classify import classify_crops, coverage, model_conformal, recommended_tta
from ..data import data_root
from ..errors import DataError
from ..io import read_image
from ..models.registry import ModelCard, load_classifier
from ..taxonomy import CLASSES, PBC_GROUP, PBC_LABELS
from .metrics import EvalReport, bootstrap_ci, confusion_png, evaluate_predictions, format_report

__all__ = ["default_split", "exact_targets", "predict_rows", "read_split", "run_evaluation", "split_rows"]


def read_split(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: split file not found")
    raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))


def _resolve(path: str) -> str:
    return path if os.path.isabs(path) else str(data_root() / path)


def default_split(card: ModelCard) -> Path:
    name = card.raw.get("split_file")
    if not name:
        raise DataError(f"model {card.name!r} names no split file; pass --split")
    return Path(card.card_path).parent / name


def split_rows(card: ModelCard, split: str | os.PathLike[str] | None, which: str) -> tuple[Path, list[dict[str, str]]]:
    """The split file (default: the card's own) and its rows whose split column is ``which``."""
    path = Path(split) if split is not None else default_split(card)
    rows = [r for r in read_split(path) if r["split"] == which]
    if not rows:
        raise DataError(f"{path}: no rows in split {which!r}")
    return path, rows


def predict_rows(
    model, rows: list[dict[str, str]], tta: str, progress=None, conformal=None, embeddings: bool = False
) -> list:
    """Classify the images of rows with a ``path`` (paths relative to the data root are resolved)."""
    preds: list = []
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        imgs = [read_image(_resolve(r["path"])) for r in chunk]
        preds += classify_crops(
            model,
            [i.pixels for i in imgs],
            [r["path"] for r in chunk],
            tta=tta,
            conformal=conformal,
            embeddings=embeddings,
        )
        if progress:
            progress(len(preds), len(rows))
    return preds


def exact_targets(rows: list[dict[str, str]]) -> tuple[list[int], np.ndarray]:
    """Indices of rows with exact labels and their class indices in CLASSES."""
    idx = [i for i, r in enumerate(rows) if "|" not in r["classes"]]
    return idx, np.array([CLASSES.index(rows[i]["classes"]) for i in idx], int)


def run_evaluation(
    card: ModelCard,
    split: str | os.PathLike[str] | None,
    which: str = "test",
    out: str | os.PathLike[str] | None = None,
    n_boot: int = 1000,
    progress=None,
    tta: str | None = None,
) -> tuple[dict, str]:
    split, rows = split_rows(card, split, which)
    model = load_classifier(card.card_path)
    tta = tta or recommended_tta(model)
    conformal = model_conformal(model)
    preds = predict_rows(model, rows, tta, progress, conformal)
    kept = rows
    pred_cls = [p.predicted_class for p in preds]
    report: dict = {
        "model": card.name,
        "sha256": card.sha256,
        "split": str(split),
        "which": which,
        "tta": tta,
        "sources": {},
    }
    texts = [f"# {card.name} on split '{which}' of {Path(split).name} (test-time augmentation: {tta})"]
    outp = Path(out) if out else None
    if outp:
        outp.mkdir(parents=True, exist_ok=True)
    for ds in sorted({r["dataset"] for r in kept}):
        idx = [i for i, r in enumerate(kept) if r["dataset"] == ds]
        exact = [i for i in idx if "|" not in kept[i]["classes"]]
        groups = [kept[i]["patient_id"] or f"g{kept[i]['group']}" for i in exact]
        fine: EvalReport = evaluate_predictions(
            [kept[i]["classes"] for i in exact], [pred_cls[i] for i in exact], CLASSES, groups, n_boot
        )
        report["sources"][ds] = {"taxonomy": fine.to_dict()}
        texts.append(format_report(f"{ds}: taxonomy classes (exact labels only)", fine))
        if outp:
            confusion_png(fine, str(outp / f"confusion_{ds}.png"), f"{card.name} — {ds} ({which})")
        if ds == "pbc":
            # map back to the 8 PBC labels; all rows (partial labels have one PBC group too)
            true8 = [PBC_GROUP[kept[i]["classes"].split("|")[0]] for i in idx]
            pred8 = [PBC_GROUP[pred_cls[i]] or "(no pbc label)" for i in idx]
            g8 = [f"g{kept[i]['group']}" for i in idx]
            rep8 = evaluate_predictions(true8, pred8, list(PBC_LABELS), g8, n_boot)
            report["sources"][ds]["pbc8"] = rep8.to_dict()
            texts.append(format_report("pbc: 8 PBC labels (taxonomy mapped back)", rep8))
            if outp:
                confusion_png(rep8, str(outp / "confusion_pbc8.png"), f"{card.name} — pbc 8 classes ({which})")
    all_exact = [i for i, r in enumerate(kept) if "|" not in r["classes"]]
    probs = np.array([preds[i].probabilities for i in all_exact])
    yi = np.array([CLASSES.index(kept[i]["classes"]) for i in all_exact])
    report["calibration"] = _ece(probs, yi)
    texts.append(f"\nexpected calibration error (15 bins, all exact labels): {report['calibration']['ece']:.4f}")
    for ds in sorted({r["dataset"] for r in kept}):
        m = np.array([kept[i]["dataset"] == ds for i in all_exact])
        if m.any():
            report["calibration"][f"ece_{ds}"] = _ece(probs[m], yi[m])["ece"]
            groups = [kept[i]["patient_id"] or f"g{kept[i]['group']}" for i, mi in zip(all_exact, m, strict=True) if mi]
            report["calibration"][f"ece_{ds}_ci95"] = bootstrap_ci(
                lambda sel, p=probs[m], y=yi[m]: _ece(p[sel], y[sel])["ece"], groups, n_boot
            )
    if conformal is not None:
        report["conformal"] = {"calibration": conformal.to_dict(), "all": coverage(probs, yi, conformal)}
        lines = [f"\nconformal prediction sets (LAC, nominal coverage {1 - conformal.alpha:.0%}):"]
        for ds in ["all", *sorted({r["dataset"] for r in kept})]:
            m = np.array([ds == "all" or kept[i]["dataset"] == ds for i in all_exact])
            cov = coverage(probs[m], yi[m], conformal)
            hit = probs[m][np.arange(m.sum()), yi[m]] >= conformal.threshold
            groups = [kept[i]["patient_id"] or f"g{kept[i]['group']}" for i, mi in zip(all_exact, m, strict=True) if mi]
            cov["coverage_ci95"] = bootstrap_ci(lambda sel, h=hit: float(h[sel].mean()), groups, n_boot)
            report["conformal"][ds] = cov
            lo, hi = cov["coverage_ci95"]
            lines.append(
                f"  {ds}: coverage {cov['coverage']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
                f"mean set size {cov['mean_set_size']:.2f}, singletons {cov['share_singletons']:.1%} (n={cov['n']})"
            )
        texts.append("\n".join(lines))
    text = "\n\n".join(texts)
    if outp:
        (outp / "metrics.md").write_text(text + "\n")
    return report, text


def _ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> dict:
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return {"ece": float(ece), "bins": bins, "n": int(len(y))}
