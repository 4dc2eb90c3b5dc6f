"""Adapters giving typed :class:`~leukomorph.records.LabelledImage` records.

Shared data live outside the repository; their root is ``$LEUKOMORPH_DATA`` or, failing that,
``../shared/data`` relative to the working directory.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import DataError, LabelMappingError
from ..io.images import IMAGE_SUFFIXES, read_image
from ..records import LabelledImage
from ..taxonomy import CLASSES, DATASET_MAPS, map_label

__all__ = [
    "data_root",
    "load_csv_manifest",
    "load_deepapl",
    "load_folder_tree",
    "load_pbc",
    "load_seg_wbc",
    "load_txl",
]


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding ``pbc/``, ``deepapl/``, ...: the argument, ``$LEUKOMORPH_DATA``, or ../shared/data."""
    candidate = Path(root or os.environ.get("LEUKOMORPH_DATA") or Path.cwd().parent / "shared" / "data")
    if not candidate.is_dir():
        raise DataError(f"{candidate}: shared data folder not found (set LEUKOMORPH_DATA or pass --data-root)")
    return candidate


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_pbc(root: str | os.PathLike[str] | None = None) -> list[LabelledImage]:
    """PBC healthy-donor crops; labels from the ``sublabel`` column. No patient ids exist."""
    base = data_root(root) / "pbc"
    out = []
    for row in _read_csv(base / "manifest.csv"):
        out.append(
            LabelledImage(
                path=str(base / row["path"]),
                classes=map_label("pbc", row["sublabel"]),
                dataset="pbc",
                source_label=row["label"] + "/" + row["sublabel"],
                patient_id=None,
            )
        )
    return out


def load_deepapl(root: str | os.PathLike[str] | None = None) -> list[LabelledImage]:
    """DeepAPL crops with a laboratory sign-out label (unlabelled cells are left out)."""
    base = data_root(root) / "deepapl"
    out = []
    for row in _read_csv(base / "manifest.csv"):
        label = row["cell_label"].strip()
        if not label:
            continue
        out.append(
            LabelledImage(
                path=str(base / row["path"]),
                classes=map_label("deepapl", label),
                dataset="deepapl",
                source_label=label,
                patient_id=row["patient_id"],
                diagnosis=row["diagnosis"] or None,
            )
        )
    return out


def load_txl(split: str, root=None, limit: int = 0, source: str | None = None) -> list[dict]:
    """txl_pbc fields of one split (and of one ``source`` data set, e.g. "Raabin-WBC", when given):
    ``image`` (RGB), ``boxes`` (N, 4) pixels, ``labels`` (N,: 0 white cell, 1 red cell, 2 platelet),
    ``id`` (path in txl_pbc/), ``path`` (the file), ``source``."""
    base = data_root(root) / "txl_pbc"
    rows = [
        r
        for r in csv.DictReader((base / "manifest.csv").open(newline="", encoding="utf-8"))
        if r["split"] == split and (source is None or r["source_dataset"] == source)
    ]
    if limit:
        rows = rows[:limit]
    out = []
    for r in rows:
        img = read_image(base / r["image"]).pixels
        h, w = img.shape[:2]
        boxes, labels = [], []
        for line in (base / r["labels"]).read_text().split("\n"):
            if line.strip():
                c, cx, cy, bw, bh = line.split()
                cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                boxes.append((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
                labels.append(int(c))
        out.append(
            {
                "id": r["image"],
                "path": str(base / r["image"]),
                "source": r["source_dataset"],
                "image": img,
                "boxes": np.array(boxes, np.float32).reshape(-1, 4),
                "labels": np.array(labels, np.int64),
            }
        )
    return out


def load_seg_wbc(root: str | os.PathLike[str] | None = None, domain: str | None = None) -> list[LabelledImage]:
    """seg_wbc crops (Zheng et al. 2018): ``dataset1`` (Jiangxi Tecom camera, 120 px) and ``dataset2``
    (CellaVision, 300 px). ``patient_id`` is None (not released); the domain is kept in ``source_label``
    as ``domain/label``. The masks are read by the segmentation stage, not here."""
    base = data_root(root) / "seg_wbc"
    out = []
    for row in _read_csv(base / "manifest.csv"):
        if domain and row["domain"] != domain:
            continue
        out.append(
            LabelledImage(
                path=str(base / row["image"]),
                classes=map_label("seg_wbc", row["label"]),
                dataset="seg_wbc",
                source_label=row["domain"] + "/" + row["label"],
                patient_id=None,
            )
        )
    return out


#: label vocabularies a user's labels may be written in (``names``), and the mapping table of each
LABEL_NAMES = {"taxonomy": None, "cellavision": "deepapl", "pbc": "pbc"}


def _user_label(dataset: str, label: str, where: str = "", names: str = "taxonomy") -> tuple[str, ...]:
    """A taxonomy class, or a partial label "a|b" (one of these classes, e.g. a neutrophil whose
    segmentation was not judged: ``segmented_neutrophil|band_neutrophil``); with ``names`` =
    "cellavision" or "pbc", a class name of that vocabulary (CellaVision's, as in the DeepAPL
    export, or PBC's folder names), mapped by its table in :mod:`leukomorph.taxonomy`. ``where``
    (the folder or the CSV row) is named in the error, with the labels that are accepted."""
    if names not in LABEL_NAMES:
        raise DataError(f"unknown label vocabulary {names!r}; use one of {', '.join(LABEL_NAMES)}")
    if (table := LABEL_NAMES[names]) is not None:
        try:
            return map_label(table, label)
        except LabelMappingError:
            raise LabelMappingError(names, label, where, tuple(DATASET_MAPS[table])) from None
    parts = tuple(p.strip() for p in label.split("|"))
    for p in parts:
        if p not in CLASSES:
            raise LabelMappingError(dataset, label, where)
    return parts


def load_folder_tree(
    root: str | os.PathLike[str], dataset: str = "user", names: str = "taxonomy"
) -> list[LabelledImage]:
    """A class-per-folder tree ``root/<class>/**/<image>``; folder names must be taxonomy classes, or
    class names of the ``names`` vocabulary (:func:`_user_label`).

    A sub-folder below the class folder is taken as the patient id (``root/<class>/<patient>/x.png``).
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: not a folder")
    out = []
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes = _user_label(dataset, cls_dir.name, f"{cls_dir} (class folder)", names)
        for path in sorted(cls_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                rel = path.relative_to(cls_dir)
                patient = rel.parts[0] if len(rel.parts) > 1 else None
                out.append(LabelledImage(str(path), classes, dataset, cls_dir.name, patient))
    if not out:
        raise DataError(f"{base}: no images found in class folders")
    return out


def load_csv_manifest(
    path: str | os.PathLike[str], dataset: str = "user", names: str = "taxonomy"
) -> list[LabelledImage]:
    """A CSV with columns ``path,label`` and optional ``patient_id``; paths relative to the CSV; labels
    as in :func:`load_folder_tree`."""
    manifest = Path(path)
    rows = _read_csv(manifest)
    if rows and not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{manifest}: needs columns 'path' and 'label'")
    out = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        p = Path(row["path"])
        if not p.is_absolute():
            p = manifest.parent / p
        out.append(
            LabelledImage(
                str(p),
                _user_label(dataset, row["label"].strip(), f"{manifest}, line {n}", names),
                dataset,
                row["label"],
                (row.get("patient_id") or "").strip() or None,
            )
        )
    return out
