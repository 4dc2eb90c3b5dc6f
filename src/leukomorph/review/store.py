"""Loading ``analyze`` outputs into the review store; users; content-addressed cell images."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ConfigError, DataError
from ..taxonomy import ADDED_BY_REVIEWER, ARTEFACT
from .db import ROLES, AuditEvent, Case, Cell, Field, User

__all__ = [
    "add_user",
    "cell_crop_png",
    "check_password",
    "export_cases",
    "export_labels",
    "image_dir",
    "import_results",
    "store_bytes",
]

_PH = PasswordHasher()


def image_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "images"


def add_user(db: Session, username: str, password: str, role: str, by: str = "cli") -> User:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ConfigError("passwords need at least 8 characters")
    if db.scalar(select(User).where(User.username == username)):
        raise ConfigError(f"user {username!r} exists")
    u = User(username=username, password_hash=_PH.hash(password), role=role)
    db.add(u)
    db.add(AuditEvent(username=by, action="user_added", after=f"{username} ({role})"))
    db.commit()
    return u


def check_password(user: User | None, password: str) -> bool:
    if user is None:
        _PH.hash(password)  # same cost whether or not the user exists
        return False
    try:
        return _PH.verify(user.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


def _store_image(src: Path, images: Path) -> tuple[str, str]:
    return store_bytes(src.read_bytes(), src.suffix.lower(), images)


def _locate(image: str, rd: Path):
    """The file (or slide region source) a cells.csv path names, looked up as given, then relative
    to the analyze output folder; None when it is gone."""
    from ..io.slides import parse_region, region_source

    region = parse_region(image)
    p = Path(region[0] if region else image)
    if not p.is_absolute() and not p.exists():
        p = rd / p  # paths in cells.csv are as given to analyze (relative to its working folder)
    if not p.is_file():
        return None
    return region_source(str(p), *region[1:]) if region else p


def _read_field(field, name: str):
    """RGB pixels of a field (or slide region) for the store; DataError naming ``name`` when unreadable."""
    from ..errors import ImageReadError
    from ..io import read_image

    try:
        return read_image(field).pixels
    except ImageReadError as exc:
        raise DataError(f"{name}: field image unreadable ({exc.reason})") from exc


def cell_crop_png(rgb, box: tuple[int, int, int, int]) -> bytes:
    """PNG of a field-mode cell: the pipeline's crop rule around ``box`` (x0, y0, x1, y1)."""
    import cv2

    from ..detect import Detection
    from ..pipeline import field_crop

    ok, buf = cv2.imencode(".png", cv2.cvtColor(field_crop(rgb, Detection(*box, 0.0)), cv2.COLOR_RGB2BGR))
    return buf.tobytes()


#: field images a browser shows as they are (others: :func:`_store_field`)
_BROWSER_FORMATS = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


def _store_field(case: Case, name: str, src, rgb, images: Path) -> Field:
    """The field as a :class:`Field` of the case: its file's bytes when a browser can show them; a
    TIFF (or other) field as PNG; a slide region, which has no file of its own and may be one of
    hundreds, as JPEG of quality 95 (the detected cells' crops were cut from the full pixels
    already; only a box a reviewer draws later is cut from this copy)."""
    import cv2

    if isinstance(src, Path) and src.suffix.lower() in _BROWSER_FORMATS:
        sha, rel = _store_image(src, images)
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        region = not isinstance(src, Path)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]) if region else cv2.imencode(".png", bgr)
        sha, rel = store_bytes(buf.tobytes(), ".jpg" if region else ".png", images)
    field = Field(name=name, image_sha256=sha, image_file=rel, width=int(rgb.shape[1]), height=int(rgb.shape[0]))
    case.fields.append(field)
    return field


def store_bytes(data: bytes, suffix: str, images: Path) -> tuple[str, str]:
    """Write ``data`` into the content-addressed image folder (once; written to a temporary name
    and renamed); returns (SHA-256, path relative to ``images``)."""
    sha = hashlib.sha256(data).hexdigest()
    rel = f"{sha[:2]}/{sha}{suffix}"
    dst = images / rel
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(dst.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    return sha, rel


def import_results(
    db: Session, results_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], name: str | None = None
) -> Case:
    """Import one ``analyze`` output folder (cells.csv + results.json) as a case.

    Cell images are copied into the store by content hash (the originals are never touched), and
    so are the fields of a field-mode case and the analysis's report.html. A case name already in
    the store is refused.
    """
    rd = Path(results_dir)
    cells_csv, results_json = rd / "cells.csv", rd / "results.json"
    if not cells_csv.is_file() or not results_json.is_file():
        raise DataError(f"{rd}: not an analyze output folder (cells.csv and results.json needed)")
    results = json.loads(results_json.read_text(encoding="utf-8"))
    case_name = name or results.get("case") or rd.name
    if db.scalar(select(Case).where(Case.name == case_name)):
        raise DataError(f"case {case_name!r} is already in the store (import it under another name with --name)")
    images = image_dir(data_dir)
    case = Case(name=case_name, source=str(rd.resolve()), results=results)
    if (rd / "report.html").is_file():  # self-contained (saliency maps included): shown beside the case
        case.report_file = store_bytes((rd / "report.html").read_bytes(), ".html", images)[1]
    db.add(case)
    with cells_csv.open(newline="", encoding="utf-8") as fh:
        # classified cells only (a field without white cells has an ok row but no prediction)
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok" and r["predicted_class"]]
    fields: dict[str, Field] = {}  # field name -> stored field
    pixels: tuple[str, object] = ("", None)  # the last field read (cells.csv lists a field's cells together)
    for r in rows:
        field_mode = bool(r.get("image")) and r["path"] != r["image"]
        src = _locate(r["image"] if field_mode else r["path"], rd)
        if src is None:
            raise DataError(f"{r['path']}: cell image not found (import from the folder analyze ran in)")
        field, box = None, None
        if field_mode:  # a cell detected in a field or a slide tile: stored as its crop, the field once
            if pixels[0] != r["image"]:  # one field's pixels in memory at a time (a slide has dozens)
                pixels = (r["image"], _read_field(src, r["path"]))
            rgb = pixels[1]
            if r["image"] not in fields:
                fields[r["image"]] = _store_field(case, r["image"], src, rgb, images)
            field = fields[r["image"]]
            box = (int(r["x0"]), int(r["y0"]), int(r["x1"]), int(r["y1"]))
            sha, rel = store_bytes(cell_crop_png(rgb, box), ".png", images)
        else:
            sha, rel = _store_image(src, images)
        conf = float(r["confidence"])
        flag = r.get("review_flag", "").lower() == "true" if "review_flag" in r else conf < 0.6
        case.cells.append(
            Cell(
                path=r["path"],
                image_sha256=sha,
                image_file=rel,
                predicted=r["predicted_class"],
                confidence=conf,
                prediction_set=r.get("prediction_set", ""),
                review_flag=flag,
                field=field,
                box=",".join(map(str, box)) if box else None,
            )
        )
    db.flush()
    db.add(AuditEvent(username="import", case_id=case.id, action="case_imported", after=f"{len(rows)} cells from {rd}"))
    db.commit()
    return case


def batch_cases(root: str | os.PathLike[str]) -> list[tuple[str, Path | None, str]]:
    """The cases of an ``analyze --per-folder`` output folder, from its summary (``cases.csv``):
    (case name, its output folder or None when it produced none, the summary's status)."""
    from ..report import BATCH_SUMMARY

    summary = Path(root) / BATCH_SUMMARY
    if not summary.is_file():
        raise DataError(f"{root}: no {BATCH_SUMMARY} (not an analyze --per-folder output folder)")
    with summary.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [
        (r["case"], (Path(root) / r["report"]).parent if r["status"] == "ok" and r["report"] else None, r["status"])
        for r in rows
    ]


def _new_file(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path, refused when it exists: an export never overwrites a file."""
    outp = Path(out)
    if outp.exists():
        raise DataError(f"{outp}: exists; choose a new file (nothing is overwritten)")
    return outp


def export_labels(
    db: Session, data_dir: str | os.PathLike[str], out: str | os.PathLike[str], signed_only: bool = True
) -> int:
    """Write reviewed cells as a training manifest (``path,label,patient_id,case,predicted,reviewed_by,findings``;
    ``findings``: the morphological findings recorded on the cell, "|"-joined).

    ``path`` is the stored image (absolute), ``patient_id`` the case name, so that
    ``leukomorph train-classifier --datasets manifest.csv`` keeps each case on one side of a split.
    Only cells a reviewer confirmed or relabelled are written (by default only from signed cases),
    never those excluded as artefacts nor cells a reviewer added to another cell's image (a cell
    a reviewer drew on a field has a crop of its own and is written). Returns the number of rows.
    """
    from sqlalchemy import or_

    from .db import Case, Cell

    images = image_dir(data_dir).resolve()
    q = (
        select(Cell, Case)
        .join(Case, Cell.case_id == Case.id)
        # an artefact is no class to learn; an added cell's image is its neighbour's crop, unless it
        # was drawn on its field (a box of its own)
        .where(
            Cell.label.is_not(None),
            Cell.label != ARTEFACT,
            or_(Cell.predicted != ADDED_BY_REVIEWER, Cell.box.is_not(None)),
        )
    )
    if signed_only:
        q = q.where(Case.status == "signed")
    outp = _new_file(out)
    n = 0
    with outp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id", "case", "predicted", "reviewed_by", "findings"])
        for cell, case in db.execute(q.order_by(Cell.id)):
            w.writerow(
                [
                    str(images / cell.image_file),
                    cell.label,
                    case.name,
                    case.name,
                    cell.predicted,
                    cell.reviewed_by,
                    cell.findings or "",
                ]
            )
            n += 1
    return n


#: the columns of :func:`export_cases`
CASE_COLUMNS = (
    "case",
    "status",
    "imported",
    "report_version",
    "signed_by",
    "signed_at",
    "cells",
    "relabelled",
    "added",
    "excluded",
    "ai_suggestion",
    "ai_urgent",
    "ai_blast_percent",
    "apl_score",
    "reviewed_blast_percent",
    "reviewed_blast_ci95",
    "reviewed_suggestion",
    "reviewed_urgent",
    "findings",
)


def export_cases(db: Session, out: str | os.PathLike[str], signed_only: bool = True) -> int:
    """One row per case (:data:`CASE_COLUMNS`) for the laboratory's quality monitoring of the AI:
    its suggestion and blast percentage before review beside the reviewed ones (the same rules on
    the reviewed labels), how many cells the reviewers relabelled, added or excluded, the findings
    they recorded, and who signed the latest report. Text fields are CSV-injection safe. Returns
    the number of rows; an existing file is refused."""
    from .db import Case, SignedReport
    from .summary import (
        counts_of,
        csv_safe,
        differential_from_counts,
        findings_of,
        findings_summary,
        reviewed_suggestion,
    )

    outp = _new_file(out)
    q = select(Case).order_by(Case.id)
    if signed_only:
        q = q.where(Case.status == "signed")
    n = 0
    with outp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CASE_COLUMNS)
        for case in db.scalars(q):
            cells = list(case.cells)
            counts = counts_of(cells)
            diff = differential_from_counts(counts)
            res = case.results or {}
            ai = res.get("suggestion") or {}
            apl = ((res.get("case_scores") or {}).get("apl_vs_aml") or {}).get("probability")
            found = findings_of(cells)
            after = reviewed_suggestion(counts, res.get("case_scores"), found)
            rep = db.execute(  # the latest report's signer, not its HTML and PDF
                select(SignedReport.version, SignedReport.signed_by, SignedReport.ts)
                .where(SignedReport.case_id == case.id)
                .order_by(SignedReport.version.desc())
            ).first()
            added = sum(c.predicted == ADDED_BY_REVIEWER for c in cells)
            relabelled = sum(
                bool(c.label) and c.label != c.predicted and c.predicted != ADDED_BY_REVIEWER for c in cells
            )
            w.writerow(
                [
                    csv_safe(case.name),
                    case.status,
                    case.imported.isoformat() if case.imported else "",
                    rep.version if rep else "",
                    csv_safe(rep.signed_by) if rep else "",
                    rep.ts.isoformat() if rep else "",
                    len(cells),
                    relabelled,
                    added,
                    counts.get(ARTEFACT, 0),
                    ai.get("code", ""),
                    ai.get("urgent", ""),
                    res.get("blast_percent", ""),
                    "" if apl is None else apl,
                    diff["blast_percent"],
                    "-".join(str(v) for v in diff["blast_ci95"]),
                    after["code"],
                    after["urgent"],
                    "; ".join(f"{f['name']}: {f['cells']}" for f in findings_summary(found)),
                ]
            )
            n += 1
    return n
