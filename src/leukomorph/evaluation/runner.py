"""Evaluate a classifier on the rows of a split file (the model's own held-out split by default), or
on a laboratory's own labelled cells (a CSV manifest or a class-per-folder tree), with the per-case
agreement of the differential when the cells carry case ids."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np

from ..classify import classify_crops, coverage, model_conformal, recommended_tta
from ..data import data_root, load_csv_manifest, load_folder_tree
from ..errors import DataError, ImageReadError
from ..io import read_image
from ..models.registry import ModelCard, load_classifier
from ..taxonomy import CLASSES, PBC_GROUP, PBC_LABELS
from .agreement import differential_agreement, format_agreement
from .metrics import EvalReport, bootstrap_ci, confusion_png, evaluate_predictions, format_report

__all__ = [
    "default_split",
    "exact_targets",
    "labelled_rows",
    "predict_rows",
    "read_split",
    "run_evaluation",
    "split_rows",
]


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


def labelled_rows(path: str | os.PathLike[str], names: str = "taxonomy") -> list[dict[str, str]]:
    """A laboratory's labelled cells as evaluation rows: a class-per-folder tree
    (:func:`~leukomorph.data.load_folder_tree`, a sub-folder is the case) or a CSV manifest with
    ``path,label`` and optional ``patient_id`` (:func:`~leukomorph.data.load_csv_manifest`; what
    ``leukomorph export-labels`` writes). Labels are taxonomy classes (docs/taxonomy.md), or with
    ``names`` "cellavision" / "pbc" that system's class names, mapped to the taxonomy."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    recs = load_folder_tree(p, names=names) if p.is_dir() else load_csv_manifest(p, names=names)
    return [
        {
            "path": str(Path(r.path).resolve()),
            "classes": "|".join(r.classes),
            "dataset": r.dataset,
            "patient_id": r.patient_id or "",
            "group": str(i),  # a cell without a case is its own bootstrap group
            "split": "labels",
        }
        for i, r in enumerate(recs)
    ]


def predict_rows(
    model,
    rows: list[dict[str, str]],
    tta: str,
    progress=None,
    conformal=None,
    embeddings: bool = False,
    skipped: list | None = None,
) -> list:
    """Classify the images of rows with a ``path`` (paths relative to the data root are resolved).
    ``skipped``: an unreadable image is then left out and recorded there as ``(path, reason)``
    (else it raises)."""
    preds: list = []
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        imgs, paths = [], []
        for r in chunk:
            try:
                imgs.append(read_image(_resolve(r["path"])))
                paths.append(r["path"])
            except ImageReadError as exc:
                if skipped is None:
                    raise
                skipped.append((r["path"], exc.reason))
        if not imgs:
            continue
        preds += classify_crops(
            model,
            [i.pixels for i in imgs],
            paths,
            tta=tta,
            conformal=conformal,
            embeddings=embeddings,
        )
        if progress:
            progress(min(start + 256, len(rows)), len(rows))
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
    labels: str | os.PathLike[str] | None = None,
    label_names: str = "taxonomy",
) -> tuple[dict, str]:
    """Metrics of ``card``'s model on the ``which`` rows of ``split`` (default: its own split), or,
    with ``labels``, on a laboratory's own labelled cells (:func:`labelled_rows`): unreadable images
    are then skipped and listed, and cells with case ids also give the per-case agreement of the
    differential (:func:`~leukomorph.evaluation.agreement.differential_agreement`)."""
    if labels is not None:
        split, which, rows = Path(labels), "labels", labelled_rows(labels, label_names)
    else:
        split, rows = split_rows(card, split, which)
    model = load_classifier(card.card_path)
    tta = tta or recommended_tta(model)
    conformal = model_conformal(model)
    skipped: list | None = [] if labels is not None else None
    preds = predict_rows(model, rows, tta, progress, conformal, skipped=skipped)
    gone = {path for path, _ in skipped or []}
    kept = [r for r in rows if r["path"] not in gone]
    pred_cls = [p.predicted_class for p in preds]
    report: dict = {
        "model": card.name,
        "sha256": card.sha256,
        "split": str(split),
        "which": which,
        "tta": tta,
        "sources": {},
    }
    if labels is not None:
        title = f"# {card.name} on the labelled cells of {split} (test-time augmentation: {tta})"
    else:
        title = f"# {card.name} on split '{which}' of {Path(split).name} (test-time augmentation: {tta})"
    texts = [title]
    if skipped:
        report["skipped"] = [{"path": path, "reason": why} for path, why in skipped]
        texts.append(f"skipped {len(skipped)} unreadable images: " + "; ".join(f"{p}: {w}" for p, w in skipped[:10]))
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
    if labels is not None and any(kept[i]["patient_id"] for i in all_exact):
        with_case = [i for i in all_exact if kept[i]["patient_id"]]
        report["differential_agreement"] = agree = differential_agreement(
            [kept[i]["patient_id"] for i in with_case],
            [kept[i]["classes"] for i in with_case],
            [pred_cls[i] for i in with_case],
        )
        texts.append(format_agreement(agree))
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
