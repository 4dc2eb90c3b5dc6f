"""The review workstation: FastAPI app with server-rendered pages (no front-end build step).

Security: argon2 password hashes; server-side sessions (random token in an HttpOnly, SameSite=Strict
cookie, only its SHA-256 stored); a per-session CSRF token required on every state-changing
request; failed logins rate-limited per client address; request bodies capped; images served
only by database id from the content-addressed store (no user-supplied paths).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
import threading
import time
from collections import Counter, defaultdict, deque
from datetime import timedelta
from pathlib import Path

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..taxonomy import ADDED_BY_REVIEWER, ARTEFACT, CLASSES, FINDINGS, REVIEW_LABELS
from .db import AuditEvent, Case, Cell, LoginSession, SignedReport, User, make_engine, now
from .db import Field as StoredField  # pydantic's Field is the other one
from .pdf import signed_pdf
from .store import cell_crop_png, check_password, image_dir, store_bytes
from .summary import (
    counts_of,
    csv_safe,
    differential_from_counts,
    differential_of,
    findings_from,
    findings_of,
    findings_summary,
    reviewed_suggestion,
)

__all__ = ["create_app"]

SESSION_COOKIE = "lm_session"
SESSION_HOURS = 12
MAX_BODY = 64 * 1024
LOGIN_WINDOW_S, LOGIN_MAX_FAILS = 300, 5
CAN_RELABEL = ("technologist", "hematologist", "admin")
CAN_SIGN = ("hematologist", "admin")
#: longest accepted reason for re-opening a signed case (characters)
MAX_REASON = 500
#: longest accepted interpretive comment of a signed report (characters)
MAX_COMMENT = 2000
#: keyboard shortcuts in the case view (one key per class; x: not a countable cell)
KEYS = {**dict(zip("1234567890qwertyu", CLASSES, strict=False)), "x": ARTEFACT}
#: after "f", one key per morphological finding (toggles it on the focused cell)
FINDING_KEYS = dict(zip("12345", FINDINGS, strict=False))


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


class LabelIn(BaseModel):
    label: str = Field(max_length=40)


#: smallest side of a box a reviewer draws (field pixels): a smaller one is a slip of the mouse
MIN_DRAWN_BOX = 8


class DrawnCellIn(BaseModel):
    x0: int = Field(ge=0)
    y0: int = Field(ge=0)
    x1: int = Field(ge=0)
    y1: int = Field(ge=0)
    label: str = Field(max_length=40)


class FindingIn(BaseModel):
    finding: str = Field(max_length=40)
    present: bool = True


def create_app(db_url: str, data_dir: str | Path) -> FastAPI:
    engine, factory = make_engine(db_url)
    images = image_dir(data_dir).resolve()
    # the templates end in .j2: select_autoescape() alone would leave them unescaped (case names,
    # file names and reasons are user input)
    env = Environment(
        loader=PackageLoader("leukomorph.review", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    fails: dict[str, deque] = defaultdict(deque)
    write_lock = threading.Lock()
    app = FastAPI(title="LeukoMorph review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.middleware("http")
    async def limits(request: Request, call_next):
        size = request.headers.get("content-length")
        if size and int(size) > MAX_BODY:
            return JSONResponse({"detail": "request body too large"}, status_code=413)
        resp = await call_next(request)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers.setdefault(  # a route may set a stricter one (the stored analysis report)
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        )
        return resp

    def db():
        s = factory()
        try:
            yield s
        finally:
            s.close()

    def render(name: str, **kw) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**kw))

    def current(request: Request, s: Session = Depends(db)) -> LoginSession:
        token = request.cookies.get(SESSION_COOKIE)
        sess = s.get(LoginSession, _sha(token)) if token else None
        if sess is None or sess.expires.replace(tzinfo=now().tzinfo) < now():
            raise HTTPException(status_code=401, detail="log in first")
        return sess

    def csrf_ok(request: Request, sess: LoginSession, form_token: str | None = None) -> None:
        token = form_token or request.headers.get("x-csrf-token", "")
        if not secrets.compare_digest(token, sess.csrf):
            raise HTTPException(status_code=403, detail="CSRF token missing or wrong")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(error: str = ""):
        return render("login.html.j2", error=error)

    @app.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...), s: Session = Depends(db)):
        client = request.client.host if request.client else "?"
        q = fails[client]
        while q and q[0] < time.monotonic() - LOGIN_WINDOW_S:
            q.popleft()
        if len(q) >= LOGIN_MAX_FAILS:
            raise HTTPException(status_code=429, detail="too many failed logins; wait a few minutes")
        user = s.scalar(select(User).where(User.username == username))
        if not check_password(user, password):
            q.append(time.monotonic())
            s.add(AuditEvent(username=username[:64], action="login_failed", after=client))
            s.commit()
            return RedirectResponse("/login?error=1", status_code=303)
        token = secrets.token_urlsafe(32)
        s.add(
            LoginSession(
                token_hash=_sha(token),
                user_id=user.id,
                csrf=secrets.token_urlsafe(32),
                expires=now() + timedelta(hours=SESSION_HOURS),
            )
        )
        s.add(AuditEvent(username=user.username, action="login", after=client))
        s.commit()
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", max_age=SESSION_HOURS * 3600)
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form(""), sess: LoginSession = Depends(current), s: Session = Depends(db)):
        csrf_ok(request, sess, csrf)
        s.delete(s.get(LoginSession, sess.token_hash))
        s.commit()
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/", response_class=HTMLResponse)
    def cases(sess: LoginSession = Depends(current), s: Session = Depends(db)):
        rows = []
        current_class = func.coalesce(Cell.label, Cell.predicted)
        counts: dict[int, dict[str, int]] = defaultdict(dict)  # every case's cells per current class, one query
        for case_id, cls, k in s.execute(
            select(Cell.case_id, current_class, func.count()).group_by(Cell.case_id, current_class)
        ):
            counts[case_id][cls] = k
        todo = dict(  # every case's flagged cells not yet reviewed, one query
            s.execute(
                select(Cell.case_id, func.count())
                .where(Cell.review_flag.is_(True), Cell.reviewed_at.is_(None))
                .group_by(Cell.case_id)
            ).all()
        )
        found = _findings_by_case(s)
        for c in s.scalars(select(Case).order_by(Case.imported.desc())):
            rows.append(
                {
                    "case": c,
                    "n": sum(counts[c.id].values()),
                    "todo": todo.get(c.id, 0),
                    "suggestion": c.results.get("suggestion", {}),
                    "after": reviewed_suggestion(counts[c.id], c.results.get("case_scores"), found.get(c.id)),
                }
            )
        return render("cases.html.j2", rows=rows, user=sess.user, csrf=sess.csrf)

    def _findings_by_case(s: Session, case_id: int | None = None) -> dict[int, dict[str, list[str]]]:
        """Case id -> :func:`findings_of` its cells, reading two columns of the cells that carry a finding."""
        q = select(Cell.case_id, Cell.path, Cell.findings).where(
            Cell.findings != "", func.coalesce(Cell.label, Cell.predicted) != ARTEFACT
        )
        if case_id is not None:
            q = q.where(Cell.case_id == case_id)
        rows: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for cid, path, found in s.execute(q.order_by(Cell.id)):
            rows[cid].append((path, found))
        return {cid: findings_from(r) for cid, r in rows.items()}

    def _case(s: Session, case_id: int) -> Case:
        c = s.get(Case, case_id)
        if c is None:
            raise HTTPException(status_code=404, detail="no such case")
        return c

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    def case_view(case_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        c = _case(s, case_id)
        cells = list(c.cells)
        queue = sorted((x for x in cells if x.review_flag and x.reviewed_at is None), key=lambda x: x.confidence)
        by_class: dict[str, list[Cell]] = defaultdict(list)
        for x in cells:
            by_class[x.current].append(x)
        galleries = [(k, by_class[k]) for k in REVIEW_LABELS if by_class.get(k)]
        on_field = Counter(x.field_id for x in cells if x.current != ARTEFACT)
        found = findings_of(cells)
        by_path = {x.path: x for x in cells}
        evidence = [
            by_path[p] for p in ((c.results or {}).get("suggestion") or {}).get("evidence_cells", []) if p in by_path
        ]
        reports = s.scalars(select(SignedReport).where(SignedReport.case_id == c.id).order_by(SignedReport.version))
        return render(
            "case.html.j2",
            case=c,
            queue=queue,
            galleries=galleries,
            diff=differential_of(cells),
            keys=KEYS,
            classes=REVIEW_LABELS,
            user=sess.user,
            csrf=sess.csrf,
            reports=list(reports),
            results=c.results,
            max_reason=MAX_REASON,
            max_comment=MAX_COMMENT,
            finding_keys={k: FINDINGS[v] for k, v in FINDING_KEYS.items()},
            finding_codes=FINDING_KEYS,
            findings=findings_summary(found),
            after_review=reviewed_suggestion(counts_of(cells), (c.results or {}).get("case_scores"), found),
            fields=[(f, on_field[f.id]) for f in c.fields],
            evidence=evidence,
        )

    @app.get("/cases/{case_id}/analysis-report", response_class=HTMLResponse)
    def analysis_report(case_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        """The analysis's own report.html (saliency maps, counting statistics, case scores), as
        imported; sandboxed: no script runs and nothing is fetched, whatever the file holds."""
        c = _case(s, case_id)
        if not c.report_file:
            raise HTTPException(
                status_code=404, detail="no analysis report stored for this case (imported before v0.9.4?)"
            )
        html = _stored_file(c.report_file).read_text(encoding="utf-8")
        return HTMLResponse(
            html,
            headers={
                "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
            },
        )

    @app.get("/cells/{cell_id}/image")
    def cell_image(cell_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        cell = s.get(Cell, cell_id)
        if cell is None:
            raise HTTPException(status_code=404, detail="no such cell")
        return FileResponse(_stored_file(cell.image_file))

    def _stored_file(rel: str) -> Path:
        path = (images / rel).resolve()
        if images not in path.parents or not path.is_file():
            raise HTTPException(status_code=404, detail="image missing from the store")
        return path

    def _field(s: Session, field_id: int) -> StoredField:
        field = s.get(StoredField, field_id)
        if field is None:
            raise HTTPException(status_code=404, detail="no such field")
        return field

    @app.get("/fields/{field_id}/image")
    def field_image(field_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        return FileResponse(_stored_file(_field(s, field_id).image_file))

    @app.get("/cases/{case_id}/fields/{field_id}", response_class=HTMLResponse)
    def field_view(case_id: int, field_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        """The field with the box of every cell counted on it (reviewed class, else predicted);
        dragging draws a box around a white cell the detector missed."""
        field = _field(s, field_id)
        if field.case_id != case_id:
            raise HTTPException(status_code=404, detail="no such field in this case")
        cells = list(s.scalars(select(Cell).where(Cell.field_id == field.id).order_by(Cell.id)))
        ids = [f.id for f in field.case.fields]
        at = ids.index(field.id)
        return render(
            "field.html.j2",
            case=field.case,
            field=field,
            cells=[(c, c.box_xyxy) for c in cells if c.box_xyxy],
            classes=list(CLASSES),
            prev_id=ids[at - 1] if at else None,
            next_id=ids[at + 1] if at + 1 < len(ids) else None,
            at=at + 1,
            n_fields=len(ids),
            user=sess.user,
            csrf=sess.csrf,
            min_box=MIN_DRAWN_BOX,
        )

    @app.post("/api/fields/{field_id}/cells")
    def draw_cell(
        field_id: int,
        body: DrawnCellIn,
        request: Request,
        sess: LoginSession = Depends(current),
        s: Session = Depends(db),
    ):
        """A white cell the detector missed, drawn by the reviewer as a box on the field: cropped
        from the stored field with the pipeline's crop rule, counted under the class given, and
        audited as ``add_cell`` (before: the field and box). Its crop is its own, so ``export-labels``
        writes it like any reviewed cell."""
        label = _may_edit(request, sess, body.label, CLASSES, "add cells")
        field = _field(s, field_id)
        box = (body.x0, body.y0, body.x1, body.y1)
        if not (body.x1 <= field.width and body.y1 <= field.height):
            raise HTTPException(status_code=422, detail=f"box outside the {field.width} x {field.height} px field")
        if min(body.x1 - body.x0, body.y1 - body.y0) < MIN_DRAWN_BOX:
            raise HTTPException(status_code=422, detail=f"box sides must be at least {MIN_DRAWN_BOX} px")
        from ..io import read_image

        # the crop is cut outside the writers' lock: the stored field never changes, and the
        # content-addressed store writes the same bytes once, whoever writes them
        rgb = read_image(_stored_file(field.image_file)).pixels
        sha, rel = store_bytes(cell_crop_png(rgb, box), ".png", images)
        with write_lock:
            _refuse_signed(field.case, "adding cells")  # the case is first loaded here, inside the lock
            path = f"{field.name} [drawn {','.join(map(str, box))}]"
            if s.scalar(select(Cell.id).where(Cell.case_id == field.case_id, Cell.path == path)) is not None:
                raise HTTPException(status_code=409, detail="a cell with this box is already drawn")
            new = _reviewers_cell(
                sess, field.case_id, path, sha, rel, label, field_id=field.id, box=",".join(map(str, box))
            )
            s.add(new)
            s.flush()
            s.add(_cell_event(sess, field.case_id, new.id, "add_cell", f"{field.name} box {new.box}", label))
            s.commit()
            new_id, case_id = new.id, field.case_id
        return {"cell": {"id": new_id, "label": label, "box": list(box)}, **_case_state(s, case_id)}

    def _reviewers_cell(sess: LoginSession, case_id: int, path: str, sha: str, rel: str, label: str, **where) -> Cell:
        """A cell a reviewer added (no model output: ``predicted`` is ADDED_BY_REVIEWER), labelled
        and reviewed by them now; ``where``: its field and box when drawn on a field."""
        return Cell(
            case_id=case_id,
            path=path,
            image_sha256=sha,
            image_file=rel,
            predicted=ADDED_BY_REVIEWER,
            confidence=0.0,
            prediction_set="",
            review_flag=False,
            label=label,
            reviewed_by=sess.user.username,
            reviewed_at=now(),
            version=1,
            **where,
        )

    def _may_edit(request: Request, sess: LoginSession, label: str, allowed, what: str, kind: str = "class") -> str:
        """The label, once the request carries its CSRF token, the user's role may ``what`` and the
        label is one of ``allowed``."""
        csrf_ok(request, sess)
        if sess.user.role not in CAN_RELABEL:
            raise HTTPException(status_code=403, detail=f"your role cannot {what}")
        if label not in allowed:
            raise HTTPException(status_code=422, detail=f"unknown {kind} {label[:40]!r}")
        return label

    def _cell_event(sess: LoginSession, case_id: int, cell_id: int, action: str, before: str, after: str):
        return AuditEvent(
            username=sess.user.username, case_id=case_id, cell_id=cell_id, action=action, before=before, after=after
        )

    def _open_cell(s: Session, cell_id: int, what: str) -> Cell:
        """The cell, if it exists and its case is not signed out (else 404 / 409: ``what`` is closed)."""
        cell = s.get(Cell, cell_id)
        if cell is None:
            raise HTTPException(status_code=404, detail="no such cell")
        _refuse_signed(cell.case, what)
        return cell

    def _refuse_signed(case: Case, what: str) -> None:
        """409 once the case is signed out: ``what`` is closed."""
        if case.status == "signed":
            raise HTTPException(status_code=409, detail=f"case is signed out; {what} is closed")

    @app.post("/api/cells/{cell_id}/label")
    def relabel(
        cell_id: int, body: LabelIn, request: Request, sess: LoginSession = Depends(current), s: Session = Depends(db)
    ):
        label = _may_edit(request, sess, body.label, REVIEW_LABELS, "relabel")
        # one writer at a time in this process: SQLite would otherwise make concurrent writers wait in
        # its busy handler (long sleeps); the version check still guards against other processes
        with write_lock:
            cell = _open_cell(s, cell_id, "relabelling")
            before, new_version = cell.current, cell.version + 1
            # optimistic concurrency: the version check makes each write apply exactly once
            res = s.execute(
                update(Cell)
                .where(Cell.id == cell.id, Cell.version == new_version - 1)
                .values(label=label, reviewed_by=sess.user.username, reviewed_at=now(), version=new_version)
            )
            if res.rowcount != 1:
                s.rollback()
                raise HTTPException(status_code=409, detail="cell changed meanwhile; reload")
            s.add(_cell_event(sess, cell.case_id, cell.id, "relabel", before, label))
            s.commit()
        return {"cell": {"id": cell_id, "label": label, "version": new_version}, **_case_state(s, cell.case_id)}

    def _case_state(s: Session, case_id: int) -> dict:
        """The case's differential from its current classes, its flagged cells not yet reviewed, the
        rules on the reviewed labels and findings, and the findings recorded."""
        current_class = func.coalesce(Cell.label, Cell.predicted)
        counts = dict(
            s.execute(select(current_class, func.count()).where(Cell.case_id == case_id).group_by(current_class)).all()
        )
        todo = s.scalar(
            select(func.count())
            .select_from(Cell)
            .where(Cell.case_id == case_id, Cell.review_flag.is_(True), Cell.reviewed_at.is_(None))
        )
        found = _findings_by_case(s, case_id).get(case_id, {})
        return {
            "differential": differential_from_counts(counts),
            "unreviewed_flagged": todo,
            "after_review": reviewed_suggestion(counts, _case_scores(s, case_id), found),
            "findings": findings_summary(found),
        }

    scores_of: dict[int, dict | None] = {}  # case id -> its analysis's case scores (fixed at import)

    def _case_scores(s: Session, case_id: int) -> dict | None:
        if case_id not in scores_of:
            scores_of[case_id] = (s.scalar(select(Case.results).where(Case.id == case_id)) or {}).get("case_scores")
        return scores_of[case_id]

    @app.post("/api/cells/{cell_id}/finding")
    def finding(
        cell_id: int, body: FindingIn, request: Request, sess: LoginSession = Depends(current), s: Session = Depends(db)
    ):
        """Record (``present``) or withdraw a morphological finding on a cell; audited as ``finding``."""
        name = _may_edit(request, sess, body.finding, tuple(FINDINGS), "record findings", "finding")
        with write_lock:
            cell = _open_cell(s, cell_id, "recording findings")
            before = cell.findings or ""
            now_on = [f for f in FINDINGS if (f in cell.finding_list and f != name) or (f == name and body.present)]
            after = "|".join(now_on)
            res = s.execute(
                update(Cell)
                .where(Cell.id == cell.id, Cell.version == cell.version)
                .values(findings=after, version=cell.version + 1)
            )
            if res.rowcount != 1:
                s.rollback()
                raise HTTPException(status_code=409, detail="cell changed meanwhile; reload")
            s.add(_cell_event(sess, cell.case_id, cell.id, "finding", before, after))
            s.commit()
        return {"cell": {"id": cell_id, "findings": now_on}, **_case_state(s, cell.case_id)}

    @app.post("/api/cells/{cell_id}/add")
    def add_cell(
        cell_id: int, body: LabelIn, request: Request, sess: LoginSession = Depends(current), s: Session = Depends(db)
    ):
        """One more cell in this cell's image (a box or crop that holds two overlapping cells): a new
        cell of the class given, on the same image, counted like any other; labelling it
        ``artefact`` takes it out again. Audited as ``add_cell``."""
        label = _may_edit(request, sess, body.label, CLASSES, "add cells")
        with write_lock:
            cell = _open_cell(s, cell_id, "adding cells")
            # a cell added to an added cell joins the original image (a path of its own may hold " +")
            base = cell.path.rsplit(" +", 1)[0] if cell.predicted == ADDED_BY_REVIEWER else cell.path
            taken = set(  # compared in Python: a path's own % _ or \ would be LIKE wildcards or escapes
                s.scalars(select(Cell.path).where(Cell.case_id == cell.case_id, Cell.predicted == ADDED_BY_REVIEWER))
            )
            k = next(i for i in range(1, len(taken) + 2) if f"{base} +{i}" not in taken)
            new = _reviewers_cell(sess, cell.case_id, f"{base} +{k}", cell.image_sha256, cell.image_file, label)
            s.add(new)
            s.flush()
            s.add(_cell_event(sess, cell.case_id, new.id, "add_cell", cell.path, label))
            s.commit()
            new_id = new.id
        return {"cell": {"id": new_id, "label": label, "version": 1}, **_case_state(s, cell.case_id)}

    @app.post("/cases/{case_id}/signout")
    def signout(
        case_id: int,
        request: Request,
        csrf: str = Form(""),
        comment: str = Form(""),
        sess: LoginSession = Depends(current),
        s: Session = Depends(db),
    ):
        """Sign the case out: an immutable report (HTML and PDF) of the reviewed differential, with the
        hematologist's interpretive comment (optional, up to MAX_COMMENT characters)."""
        csrf_ok(request, sess, csrf)
        comment = comment.strip()
        if len(comment) > MAX_COMMENT:
            raise HTTPException(status_code=422, detail=f"the comment is longer than {MAX_COMMENT} characters")
        if sess.user.role not in CAN_SIGN:
            raise HTTPException(status_code=403, detail="only a hematologist can sign out")
        c = _case(s, case_id)
        if c.status == "signed":
            raise HTTPException(status_code=409, detail="case already signed out")
        cells = list(c.cells)
        todo = [x for x in cells if x.review_flag and x.reviewed_at is None]
        if todo:
            raise HTTPException(status_code=409, detail=f"{len(todo)} flagged cells are not reviewed yet")
        version = (s.scalar(select(func.max(SignedReport.version)).where(SignedReport.case_id == c.id)) or 0) + 1
        corrections = [x for x in cells if x.label and x.label != x.predicted]
        found = findings_of(cells)
        reopened = (
            s.scalar(
                select(AuditEvent)
                .where(AuditEvent.case_id == c.id, AuditEvent.action == "reopened")
                .order_by(AuditEvent.id.desc())
            )
            if version > 1
            else None
        )
        ctx = dict(
            case=c,
            diff=differential_of(cells),
            user=sess.user,
            ts=now(),
            version=version,
            corrections=corrections,
            results=c.results,
            amends=reopened,
            comment=comment,
            findings=findings_summary(found),
            after_review=reviewed_suggestion(counts_of(cells), (c.results or {}).get("case_scores"), found),
        )
        html = env.get_template("signed.html.j2").render(**ctx)
        pdf = signed_pdf(ctx)
        s.add(
            SignedReport(
                case_id=c.id,
                version=version,
                signed_by=sess.user.username,
                html=html,
                sha256=_sha(html),
                pdf=pdf,
                pdf_sha256=hashlib.sha256(pdf).hexdigest(),
            )
        )
        c.status = "signed"
        s.add(AuditEvent(username=sess.user.username, case_id=c.id, action="signed_out", after=f"report v{version}"))
        s.commit()
        return RedirectResponse(f"/cases/{c.id}", status_code=303)

    @app.post("/cases/{case_id}/reopen")
    def reopen(
        case_id: int,
        request: Request,
        csrf: str = Form(""),
        reason: str = Form(""),
        sess: LoginSession = Depends(current),
        s: Session = Depends(db),
    ):
        """Re-open a signed case for an amendment: the signed reports stay as they are (immutable);
        the next sign-out writes the next version, which names the version it amends and why."""
        csrf_ok(request, sess, csrf)
        if sess.user.role not in CAN_SIGN:
            raise HTTPException(status_code=403, detail="only a hematologist can re-open a signed case")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise HTTPException(status_code=422, detail=f"give a reason for re-opening (1-{MAX_REASON} characters)")
        c = _case(s, case_id)
        if c.status != "signed":
            raise HTTPException(status_code=409, detail="case is not signed out")
        c.status = "open"
        s.add(AuditEvent(username=sess.user.username, case_id=c.id, action="reopened", before="signed", after=reason))
        s.commit()
        return RedirectResponse(f"/cases/{c.id}", status_code=303)

    def _signed(s: Session, case_id: int, version: int) -> SignedReport | None:
        return s.scalar(select(SignedReport).where(SignedReport.case_id == case_id, SignedReport.version == version))

    @app.get("/cases/{case_id}/reports/{version}.pdf")
    def signed_report_pdf(case_id: int, version: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        r = _signed(s, case_id, version)
        if r is None or r.pdf is None:  # reports signed before v0.9 have no PDF
            raise HTTPException(status_code=404, detail="no PDF of this signed report")
        c = s.get(Case, case_id)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", c.name if c is not None else str(case_id))
        return Response(
            r.pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}_report_v{version}.pdf"'},
        )

    @app.get("/cases/{case_id}/reports/{version}", response_class=HTMLResponse)
    def signed_report(case_id: int, version: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        r = _signed(s, case_id, version)
        if r is None:
            raise HTTPException(status_code=404, detail="no such signed report")
        return HTMLResponse(r.html)

    @app.get("/cases/{case_id}/audit", response_class=HTMLResponse)
    def audit(case_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        c = _case(s, case_id)
        ev = list(s.scalars(select(AuditEvent).where(AuditEvent.case_id == c.id).order_by(AuditEvent.id)))
        return render("audit.html.j2", case=c, events=ev, user=sess.user, csrf=sess.csrf)

    @app.get("/cases/{case_id}/audit.csv")
    def audit_csv(case_id: int, sess: LoginSession = Depends(current), s: Session = Depends(db)):
        c = _case(s, case_id)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["id", "time_utc", "user", "action", "cell_id", "before", "after"])
        for e in s.scalars(select(AuditEvent).where(AuditEvent.case_id == c.id).order_by(AuditEvent.id)):
            w.writerow(
                [
                    e.id,
                    e.ts.isoformat(),
                    csv_safe(e.username),
                    e.action,
                    e.cell_id or "",
                    csv_safe(e.before),
                    csv_safe(e.after),
                ]
            )
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="audit-case-{c.id}.csv"'},
        )

    return app
