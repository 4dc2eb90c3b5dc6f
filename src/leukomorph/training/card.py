"""Turn a training output folder into a registry entry: named ONNX file, portable split, model card
with held-out metrics and sha256."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .. import jsonio
from ..data import data_root
from ..errors import DataError
from ..records import LabelledImage
from ..taxonomy import CLASSES

__all__ = ["card_head", "evaluate_card", "finalize_model"]

LICENCES = {
    "pbc": "PBC (Acevedo et al. 2020, Data in Brief 30:105474), CC BY 4.0",
    "deepapl": "APL-Cytomorphology_JHH (Sidhom et al. 2021, npj Precision Oncology), research use; cite the paper",
}


def card_head(name: str, version: str, task: str, weights: Path, size_bytes: bool = False) -> dict:
    """The fields every model card starts with: identity, task, weight file, its sha256 (checked
    at load), optionally its size, and the creation time."""
    head = {
        "name": name,
        "version": version,
        "task": task,
        "file": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    if size_bytes:
        head["size_bytes"] = weights.stat().st_size
    head["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return head


def _portable(path: str) -> str:
    try:
        return str(Path(path).relative_to(data_root()))
    except (ValueError, DataError):
        return path


def finalize_model(
    out: str | os.PathLike[str],
    name: str,
    records: list[LabelledImage],
    datasets: list[str],
    version: str = "1.0.0",
    n_boot: int = 1000,
    tta: str = "none",
    conformal_alpha: float | None = 0.1,
) -> Path:
    out = Path(out)
    training = json.loads((out / "training.json").read_text())
    by_path = {r.path: r for r in records}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "dataset", "patient_id", "group", "split", "classes", "source_label"])
    with (out / "split.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            rec = by_path[row["path"]]
            w.writerow(
                [
                    _portable(row["path"]),
                    row["dataset"],
                    row["patient_id"],
                    row["group"],
                    row["split"],
                    "|".join(rec.classes),
                    rec.source_label,
                ]
            )
    split_name = f"{name}.split.csv.gz"
    (out / split_name).write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
    onnx_name = f"{name}.onnx"
    shutil.copyfile(out / "model.onnx", out / onnx_name)
    cfg = training["config"]
    card = {
        **card_head(name, version, "cell-classification", out / onnx_name, size_bytes=True),
        "classes": list(CLASSES),
        "architecture": {"name": cfg["arch"], "framework": f"torch {training['torch']} → ONNX opset 17"},
        "input": {
            "size": cfg["size"],
            "dtype": "uint8",
            "layout": "NHWC",
            "colour": "RGB",
            "crop_rule": "centre square crop of the whole single-cell image, then resize to size×size "
            "(OpenCV INTER_AREA when shrinking): leukomorph.classify.prepare_crop",
            "normalisation": {
                "inside_graph": True,
                "mean": cfg["mean"],
                "std": cfg["std"],
                **(
                    {"grayscale": "the graph reduces RGB to luminance (BT.601) before normalising"}
                    if cfg.get("grayscale")
                    else {}
                ),
            },
            "expected_images": "single-cell crops centred on one white cell, May-Grünwald-Giemsa stain, 100× oil, "
            "CellaVision DM-style field of about 360 px square; pixel size not given by the "
            "sources, so none is enforced",
            "pixel_size_um": None,
        },
        "inference": {
            "tta": tta,
            "tta_note": "probabilities averaged over these views (classify.TTA_MODES); chosen on the validation split",
        },
        "output": {
            "name": "probabilities",
            "calibration": f"temperature scaling, T={training['temperature']:.4f}, "
            + ("fitted on the validation split" if cfg.get("temperature") is None else "fixed by --temperature"),
        },
        "training": {
            "datasets": {d: LICENCES.get(d, "user data") for d in datasets},
            "config": cfg,
            "epochs_run": len(training["history"]),
            "minutes": round(training["minutes"], 1),
            "device": training["device"],
            "counts": training["counts"],
            "final_epoch": training["history"][-1] if training["history"] else None,
        },
        "split": {
            "method": "deepapl: by patient; pbc (no patient ids): by near-duplicate cluster (dHash, ≤"
            f"{cfg['near_duplicate_bits']} bits, transitive), stratified by data set and diagnosis; "
            f"test {cfg['test_fraction']:.0%}, validation {cfg['val_fraction']:.0%}, seed {cfg['seed']}",
            "file": split_name,
            "patients": training["patients"],
            "n_groups": training["n_groups"],
        },
        "split_file": split_name,
        "intended_use": "Research and decision support: pre-classification of single-cell crops for review by a "
        "hematologist. Not a diagnostic device.",
        "limitations": [
            "Trained on two sites (one analyzer family): accuracy on other scanners and stains is unmeasured.",
            "DeepAPL labels are routine sign-outs and noisy (abnormal promyelocytes often filed as blasts or smudges).",
            "PBC has no patient ids: its held-out estimate is by image cluster, optimistic for new donors.",
            "Rare classes (basophil, plasma cell, promonocyte in DeepAPL) have few test cells: wide intervals.",
        ],
    }
    card_path = out / f"{name}.json"
    card_path.write_text(jsonio.dumps(card, indent=1))
    evaluate_card(card_path, out / split_name, out / "eval", n_boot, tta, conformal_alpha)
    from ..evaluation.calibrate import fit_sharpness_gate, write_quality_gate
    from ..models.registry import ModelCard

    write_quality_gate(card_path, fit_sharpness_gate(ModelCard.from_file(card_path), out / split_name))
    return card_path


def evaluate_card(
    card_path: str | os.PathLike[str],
    split: str | os.PathLike[str],
    eval_dir: str | os.PathLike[str],
    n_boot: int = 1000,
    tta: str | None = None,
    conformal_alpha: float | None = 0.1,
) -> dict:
    """Calibrate a card on the validation rows of ``split`` and evaluate it on the test rows.

    With test-time augmentation, a temperature for the averaged views is fitted on all validation
    rows (``inference.tta_temperature``); then conformal sets on the validation *patients* where
    there are any (``inference.conformal``) and the gate of the automatic cell scale from the same
    patients (``inference.scale``); the test metrics go to ``metrics.held_out_test`` and
    the confusion matrix to ``inference.confusion``. The weight file, so the sha256, is untouched.
    """
    from ..evaluation.calibrate import (
        conformal_from,
        entropy_gate_from,
        fit_conformal,
        fit_tta_temperature,
        labelled_probs,
        patient_datasets,
        write_conformal,
        write_confusion,
        write_entropy_gate,
        write_tta_temperature,
    )
    from ..evaluation.runner import read_split, run_evaluation
    from ..models.registry import ModelCard

    card_path, eval_dir = Path(card_path), Path(eval_dir)
    val_rows = [r for r in read_split(split) if r["split"] == "val"]
    tta = tta or ModelCard.from_file(card_path).raw.get("inference", {}).get("tta") or "none"
    if val_rows and tta != "none":
        _, value = fit_tta_temperature(ModelCard.from_file(card_path), split, "val", tta)
        write_tta_temperature(card_path, value)
    patients = patient_datasets(val_rows) if val_rows else None
    # the validation patients are classified once: conformal sets do not change probabilities, so
    # the cell-scale gate is set from the same predictions
    held = None
    if patients:
        held = labelled_probs(ModelCard.from_file(card_path), split, "val", tta, None, "calibrate on", patients)
    if conformal_alpha and val_rows:
        if held is not None:
            cal, source = conformal_from(held, conformal_alpha)
        else:
            cal, source = fit_conformal(ModelCard.from_file(card_path), split, "val", conformal_alpha, tta)
        write_conformal(card_path, cal, source)
    if held is not None:
        write_entropy_gate(card_path, entropy_gate_from(held))
    metrics, _ = run_evaluation(ModelCard.from_file(card_path), split, "test", eval_dir, n_boot)
    card = json.loads(card_path.read_text())
    card["metrics"] = {**card.get("metrics", {}), "held_out_test": _compact(metrics)}
    card_path.write_text(jsonio.dumps(card, indent=1))
    write_confusion(card_path, metrics)
    (eval_dir / "metrics.json").write_text(jsonio.dumps(metrics, indent=1))
    return metrics


def _compact(metrics: dict) -> dict:
    out = {"calibration_ece": metrics["calibration"]["ece"]}
    out.update({k: v for k, v in metrics["calibration"].items() if k.startswith("ece_")})
    if "conformal" in metrics:
        out["conformal"] = {k: v for k, v in metrics["conformal"].items() if k != "calibration"}
    for ds, reps in metrics["sources"].items():
        for level, rep in reps.items():
            out[f"{ds}/{level}"] = {
                "n": rep["n"],
                "n_groups": rep["n_groups"],
                **rep["summary"],
                "ci95": rep["summary_ci95"],
                "per_class_f1": {
                    c: [round(v["f1"], 4), [round(x, 4) for x in v["f1_ci95"]], v["support"]]
                    for c, v in rep["per_class"].items()
                },
            }
    return out
