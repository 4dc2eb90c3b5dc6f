"""Review workstation: import, login, CSRF, relabel with audit, sign-out rules, security checks."""

import csv
import hashlib
import io
import json
import re
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from leukomorph.cli.main import app as cli  # noqa: E402
from leukomorph.review.app import create_app  # noqa: E402
from leukomorph.review.db import AuditEvent, SignedReport, make_engine  # noqa: E402
from leukomorph.review.store import add_user, import_results  # noqa: E402

PW = "correct horse battery"


@pytest.fixture
def store(sample_dir, tmp_path, monkeypatch, analysed_store):
    shutil.copytree(sample_dir, tmp_path / "cells")
    monkeypatch.chdir(tmp_path)
    users = {"hema": (PW, "hematologist"), "tech": (PW, "technologist")}
    return analysed_store(tmp_path, ["cells", "--case", "demo"], users)


def _login(client, user="hema", pw=PW):
    r = client.post("/login", data={"username": user, "password": pw}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    page = client.get("/").text
    return page.split('name="csrf" value="')[1].split('"')[0]


def _open_case(store, user: str = "hema"):
    """A logged-in client on the store's case: (client, CSRF token, its header, the case's cell ids)."""
    url, data, case_id, _ = store
    c = TestClient(create_app(url, data))
    csrf = _login(c, user)
    page = c.get(f"/cases/{case_id}").text
    return c, csrf, {"X-CSRF-Token": csrf}, sorted({int(x) for x in re.findall(r'data-id="(\d+)"', page)})


def _review_queue(c, case_id: int, csrf: str, label: str = "lymphocyte", skip: set = frozenset()) -> None:
    """Label every cell of the case's review queue (except ``skip``), so that it can be signed out."""
    queue = c.get(f"/cases/{case_id}").text.split('id="queue"')[1].split("<h2>")[0]
    for cid in {int(x) for x in re.findall(r'data-id="(\d+)"', queue)} - set(skip):
        c.post(f"/api/cells/{cid}/label", json={"label": label}, headers={"X-CSRF-Token": csrf})


def test_import_is_content_addressed_and_refuses_duplicates(store, tmp_path):
    url, data, case_id, factory = store
    imgs = list((data / "images").rglob("*.webp"))
    assert len(imgs) == 31
    with factory() as s:
        with pytest.raises(Exception, match="already in the store"):
            import_results(s, tmp_path / "out", data)


def test_login_required_and_wrong_password(store):
    url, data, case_id, _ = store
    c = TestClient(create_app(url, data))
    assert c.get(f"/cases/{case_id}").status_code == 401
    assert c.get(f"/cases/{case_id}", headers={"accept": "text/html"}, follow_redirects=False).status_code == 303
    r = c.post("/login", data={"username": "hema", "password": "nope-nope"}, follow_redirects=False)
    assert r.headers["location"].startswith("/login?error")
    assert c.get("/").status_code == 401


def test_relabel_updates_differential_and_audit_then_signout(store):
    url, data, case_id, factory = store
    c = TestClient(create_app(url, data))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    assert "Review queue" in page and "Sign out case" in page
    cell_ids = sorted({int(x) for x in re.findall(r'data-id="(\d+)"', page)})
    # CSRF is required
    r = c.post(f"/api/cells/{cell_ids[0]}/label", json={"label": "blast"})
    assert r.status_code == 403
    r = c.post(f"/api/cells/{cell_ids[0]}/label", json={"label": "blast"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["differential"]["classes"]["blast"]["count"] >= 1
    r = c.post(f"/api/cells/{cell_ids[0]}/label", json={"label": "not_a_class"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422
    # sign-out refused while flagged cells are unreviewed
    queue = page.split('id="queue"')[1].split("<h2>")[0]
    flagged = [int(x) for x in re.findall(r'data-id="(\d+)"', queue) if int(x) != cell_ids[0]]
    if flagged:
        r = c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 409
        for cid in flagged:
            assert (
                c.post(
                    f"/api/cells/{cid}/label", json={"label": "lymphocyte"}, headers={"X-CSRF-Token": csrf}
                ).status_code
                == 200
            )
    r = c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    report = c.get(f"/cases/{case_id}/reports/1")
    assert report.status_code == 200 and "Signed out by <b>hema</b>" in report.text
    # the same report as PDF, written at sign-out with its own sha256
    pdf = c.get(f"/cases/{case_id}/reports/1.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and "attachment" in pdf.headers["content-disposition"]
    with factory() as s:
        rec = s.query(SignedReport).one()
        assert hashlib.sha256(pdf.content).hexdigest() == rec.pdf_sha256
    assert f"/cases/{case_id}/reports/1.pdf" in c.get(f"/cases/{case_id}").text
    assert c.get(f"/cases/{case_id}/reports/9.pdf").status_code == 404
    # signed: closed for relabelling
    r = c.post(f"/api/cells/{cell_ids[1]}/label", json={"label": "blast"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409
    csv_text = c.get(f"/cases/{case_id}/audit.csv").text
    assert "relabel" in csv_text and "signed_out" in csv_text
    # the audit log is append-only in the database too
    with factory() as s:
        ev = s.query(AuditEvent).first()
        ev.after = "tampered"
        with pytest.raises(Exception, match="append-only"):
            s.commit()


def test_roles_rate_limit_and_hostile_requests(store):
    url, data, case_id, _ = store
    c = TestClient(create_app(url, data))
    csrf = _login(c, "tech")
    r = c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 403  # technologists cannot sign out
    assert c.get("/cells/999999/image").status_code == 404
    assert c.get("/cells/..%2F..%2Fetc%2Fpasswd/image").status_code in (404, 422)
    big = "x" * (200 * 1024)
    r = c.post(
        "/api/cells/1/label",
        content=json.dumps({"label": big}),
        headers={"X-CSRF-Token": csrf, "content-type": "application/json"},
    )
    assert r.status_code == 413
    # SQL injection attempt in the login form is just a wrong user name
    c2 = TestClient(create_app(url, data))
    r = c2.post("/login", data={"username": "' OR 1=1 --", "password": "x' OR '1'='1"}, follow_redirects=False)
    assert r.headers["location"].startswith("/login?error")
    for _ in range(5):
        c2.post("/login", data={"username": "hema", "password": "wrong-pass"}, follow_redirects=False)
    assert c2.post("/login", data={"username": "hema", "password": PW}, follow_redirects=False).status_code == 429


def test_export_reviewed_labels_as_training_manifest(store, tmp_path):
    from leukomorph.data import load_csv_manifest
    from leukomorph.review.store import export_labels

    url, data, case_id, factory = store
    c = TestClient(create_app(url, data))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    cid = int(re.findall(r'data-id="(\d+)"', page)[0])
    assert (
        c.post(f"/api/cells/{cid}/label", json={"label": "monocyte"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    )
    with factory() as s:
        assert export_labels(s, data, tmp_path / "m0.csv") == 0  # case not signed yet
        assert export_labels(s, data, tmp_path / "m1.csv", signed_only=False) == 1
        with pytest.raises(Exception, match="exists"):
            export_labels(s, data, tmp_path / "m1.csv", signed_only=False)
    recs = load_csv_manifest(tmp_path / "m1.csv")
    assert recs[0].classes == ("monocyte",) and recs[0].patient_id == "demo"


def test_a_detection_excluded_as_artefact_counts_nowhere_and_is_not_exported(store, tmp_path):
    """A reviewer can say a crop or detection is no countable cell (debris, a red-cell clump, a cell
    cut by the field's edge): it leaves every count and denominator, the signed report says how many
    were excluded, and it is never exported as a training label."""
    from leukomorph.review.store import export_labels

    url, data, case_id, factory = store
    c = TestClient(create_app(url, data))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    assert '"x": "artefact"' in page  # its key in the case view
    cids = sorted({int(x) for x in re.findall(r'data-id="(\d+)"', page)})
    before = c.post(f"/api/cells/{cids[0]}/label", json={"label": "lymphocyte"}, headers={"X-CSRF-Token": csrf})
    d0 = before.json()["differential"]
    assert d0["excluded"] == 0
    r = c.post(f"/api/cells/{cids[0]}/label", json={"label": "artefact"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    d1 = r.json()["differential"]
    assert d1["excluded"] == 1 and d1["wbc"] == d0["wbc"] - 1
    assert d1["classes"]["lymphocyte"]["count"] == d0["classes"]["lymphocyte"]["count"] - 1
    assert "artefact" not in d1["classes"]
    page = c.get(f"/cases/{case_id}").text
    assert "1 excluded as artefacts" in page and "<h2>artefact (1)</h2>" in page
    _review_queue(c, case_id, csrf, skip={cids[0]})
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert "1 detections excluded by the reviewer as artefacts" in c.get(f"/cases/{case_id}/reports/1").text
    with factory() as s:
        n = export_labels(s, data, tmp_path / "m.csv")
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == n and all(r["label"] != "artefact" for r in rows)


def test_a_reviewer_adds_the_second_cell_of_a_box_that_holds_two(store, tmp_path):
    """A detection box (or crop) holding two overlapping cells counts one; the reviewer adds the
    other: a new cell on the same image, counted, audited, and never exported for training."""
    from leukomorph.review.store import export_labels

    url, data, case_id, factory = store
    c = TestClient(create_app(url, data))
    csrf = _login(c, "tech")  # technologists may add cells, as they may relabel
    page = c.get(f"/cases/{case_id}").text
    cid = sorted({int(x) for x in re.findall(r'data-id="(\d+)"', page)})[0]
    h = {"X-CSRF-Token": csrf}
    d0 = c.post(f"/api/cells/{cid}/label", json={"label": "monocyte"}, headers=h).json()["differential"]
    assert c.post(f"/api/cells/{cid}/add", json={"label": "lymphocyte"}).status_code == 403  # CSRF
    assert c.post(f"/api/cells/{cid}/add", json={"label": "artefact"}, headers=h).status_code == 422
    r = c.post(f"/api/cells/{cid}/add", json={"label": "lymphocyte"}, headers=h)
    assert r.status_code == 200, r.text
    d1, new = r.json()["differential"], r.json()["cell"]["id"]
    assert d1["wbc"] == d0["wbc"] + 1
    assert d1["classes"]["lymphocyte"]["count"] == d0["classes"]["lymphocyte"]["count"] + 1
    second = c.post(f"/api/cells/{new}/add", json={"label": "blast"}, headers=h)  # joins the original image
    assert second.status_code == 200 and second.json()["differential"]["wbc"] == d0["wbc"] + 2
    with factory() as s:
        from leukomorph.review.db import Cell

        orig, added = s.get(Cell, cid), s.get(Cell, new)
        assert added.image_file == orig.image_file and added.path == f"{orig.path} +1"
        assert s.get(Cell, second.json()["cell"]["id"]).path == f"{orig.path} +2"
        assert {e.action for e in s.query(AuditEvent).filter(AuditEvent.cell_id == new)} == {"add_cell"}
    # an added cell taken out again is labelled artefact, like any detection
    d3 = c.post(f"/api/cells/{new}/label", json={"label": "artefact"}, headers=h).json()["differential"]
    assert d3["wbc"] == d0["wbc"] + 1 and d3["excluded"] == 1
    assert c.get(f"/cells/{new}/image").status_code == 200
    assert "added by tech" in c.get(f"/cases/{case_id}").text  # the tile says who added it, not "AI ..."
    with factory() as s:
        export_labels(s, data, tmp_path / "m.csv", signed_only=False)
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert all(r["predicted"] != "added_by_reviewer" for r in rows) and len(rows) == 1  # the monocyte
    c2 = TestClient(create_app(url, data))
    csrf2 = _login(c2)
    _review_queue(c2, case_id, csrf2)
    assert c2.post(f"/cases/{case_id}/signout", data={"csrf": csrf2}, follow_redirects=False).status_code == 303
    assert "added by reviewer → blast" in c2.get(f"/cases/{case_id}/reports/1").text
    r = c2.post(f"/api/cells/{cid}/add", json={"label": "blast"}, headers={"X-CSRF-Token": csrf2})
    assert r.status_code == 409  # signed: closed


def test_signed_report_carries_the_hematologists_interpretive_comment(store):
    url, data, case_id, factory = store
    c = TestClient(create_app(url, data))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    assert 'name="comment"' in page
    _review_queue(c, case_id, csrf)
    too_long = {"csrf": csrf, "comment": "x" * 2001}
    assert c.post(f"/cases/{case_id}/signout", data=too_long, follow_redirects=False).status_code == 422
    comment = "Normal morphology. <b>No</b> blasts seen.\nRepeat if clinically indicated."
    r = c.post(f"/cases/{case_id}/signout", data={"csrf": csrf, "comment": comment}, follow_redirects=False)
    assert r.status_code == 303
    html = c.get(f"/cases/{case_id}/reports/1").text
    assert "Interpretive comment" in html and "Repeat if clinically indicated." in html
    assert "&lt;b&gt;No&lt;/b&gt;" in html and "<b>No</b>" not in html  # escaped, as every user text
    with factory() as s:
        rec = s.query(SignedReport).one()
        assert "Repeat if clinically indicated." in rec.html and rec.pdf.startswith(b"%PDF")


def test_a_reviewer_records_morphological_findings_and_the_report_counts_them(store, tmp_path):
    url, data, case_id, factory = store
    c, csrf, h, (a, b, *_) = _open_case(store)
    page = c.get(f"/cases/{case_id}").text
    assert "Auer rods" in page and 'Findings recorded: <span id="findings">none' in page
    assert c.post(f"/api/cells/{a}/finding", json={"finding": "auer_rods"}).status_code == 403  # CSRF
    assert c.post(f"/api/cells/{a}/finding", json={"finding": "halo"}, headers=h).status_code == 422
    r = c.post(f"/api/cells/{a}/finding", json={"finding": "auer_rods"}, headers=h)
    assert r.status_code == 200 and r.json()["cell"]["findings"] == ["auer_rods"]
    after = r.json()["after_review"]
    assert not after["urgent"] and "Auer rods recorded by the reviewer" in after["text"]
    r = c.post(f"/api/cells/{a}/finding", json={"finding": "faggot_cell"}, headers=h)
    assert r.json()["cell"]["findings"] == ["auer_rods", "faggot_cell"]
    # rules 1.5: a faggot cell the reviewer saw raises the urgent APL flag on the reviewed side
    assert r.json()["after_review"]["code"] == "apl_suspected" and r.json()["after_review"]["urgent"]
    assert "apl suspected <b>(changed)</b>" in c.get("/").text  # the case list, beside the AI's own suggestion
    c.post(f"/api/cells/{b}/finding", json={"finding": "auer_rods"}, headers=h)
    r = c.post(f"/api/cells/{a}/finding", json={"finding": "faggot_cell", "present": False}, headers=h)
    assert r.json()["cell"]["findings"] == ["auer_rods"] and not r.json()["after_review"]["urgent"]
    assert r.json()["findings"] == [{"finding": "auer_rods", "name": "Auer rods", "cells": 2}]
    with factory() as s:
        actions = [e.after for e in s.query(AuditEvent).filter(AuditEvent.action == "finding", AuditEvent.cell_id == a)]
        assert actions == ["auer_rods", "auer_rods|faggot_cell", "auer_rods"]
    _review_queue(c, case_id, csrf, skip={a})
    c.post(f"/api/cells/{a}/label", json={"label": "promyelocyte"}, headers=h)
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    html = c.get(f"/cases/{case_id}/reports/1").text
    assert "Morphological findings recorded by the reviewer: Auer rods in 2 cells." in html
    assert "The same rules on the reviewed labels and findings (rules 1.5):" in html and "Auer rods recorded" in html
    from leukomorph.review.store import export_labels

    with factory() as s:
        export_labels(s, data, tmp_path / "m.csv")
    rows = {r["path"]: r for r in csv.DictReader((tmp_path / "m.csv").open())}
    with factory() as s:
        from leukomorph.review.db import Cell

        path_a = str((data / "images" / s.get(Cell, a).image_file).resolve())
    assert rows[path_a]["label"] == "promyelocyte" and rows[path_a]["findings"] == "auer_rods"
    assert c.post(f"/api/cells/{a}/finding", json={"finding": "dysplasia"}, headers=h).status_code == 409


def test_the_rules_rerun_on_the_reviewed_labels(store):
    """The case view shows the analysis's suggestion and, beside it, the same rules on the current
    (reviewed) labels, updated with every relabel: here a reviewer calls a third of the cells blasts."""
    url, data, case_id, _ = store
    c = TestClient(create_app(url, data))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    assert "The same rules on the reviewed labels" in page
    cids = sorted({int(x) for x in re.findall(r'data-id="(\d+)"', page)})
    r = None
    for cid in cids[:12]:
        r = c.post(f"/api/cells/{cid}/label", json={"label": "blast"}, headers={"X-CSRF-Token": csrf})
    after = r.json()["after_review"]
    assert after["code"] == "acute_leukemia_suspected" and "blasts and blast equivalents" in after["text"], after
    assert after["rules_version"]
    assert "Acute leukemia suspected" in c.get(f"/cases/{case_id}").text  # and on the page
    listing = c.get("/").text  # and in the case list, marked as changed by the review
    assert "acute leukemia suspected <b>(changed)</b>" in listing and "no leukemic pattern" in listing


def test_export_cases_puts_the_ai_beside_the_review_for_quality_monitoring(store, tmp_path):
    _, data, case_id, _ = store
    c, csrf, h, cids = _open_case(store)
    for cid in cids[:12]:
        c.post(f"/api/cells/{cid}/label", json={"label": "blast"}, headers=h)
    c.post(f"/api/cells/{cids[12]}/label", json={"label": "artefact"}, headers=h)
    c.post(f"/api/cells/{cids[13]}/add", json={"label": "lymphocyte"}, headers=h)
    c.post(f"/api/cells/{cids[0]}/finding", json={"finding": "auer_rods"}, headers=h)
    out = tmp_path / "cases.csv"
    r = CliRunner().invoke(cli, ["export-cases", "--out", str(out), "--data-dir", str(data)])
    assert r.exit_code == 0 and "0 cases" in r.output  # only signed cases by default
    _review_queue(c, case_id, csrf, label="blast")
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    r = CliRunner().invoke(cli, ["export-cases", "--out", str(out), "--data-dir", str(data)])
    assert r.exit_code == 3 and "exists" in r.output  # never overwritten
    out.unlink()
    r = CliRunner().invoke(cli, ["export-cases", "--out", str(out), "--data-dir", str(data)])
    assert r.exit_code == 0 and "1 cases" in r.output, r.output
    (row,) = list(csv.DictReader(out.open()))
    assert row["case"] == "demo" and row["status"] == "signed" and row["signed_by"] == "hema"
    assert row["ai_suggestion"] == "no_leukemic_pattern" and row["reviewed_suggestion"] == "acute_leukemia_suspected"
    assert float(row["reviewed_blast_percent"]) > 20 > float(row["ai_blast_percent"])
    assert row["added"] == "1" and row["excluded"] == "1" and int(row["relabelled"]) >= 12
    assert row["findings"] == "Auer rods: 1"


def test_schema_is_under_alembic(tmp_path):
    from sqlalchemy import text

    engine, _ = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0005"
    make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")  # re-opening an up-to-date store is a no-op
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from leukomorph.review.db import Base

    with engine.connect() as c:  # the migrations build exactly the tables, columns and indexes the models declare
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []


def test_a_store_from_v0_8_upgrades_and_keeps_its_signed_reports(tmp_path):
    """Schema 0001 (v0.8) with a signed report → opened by this version: migrated to 0002, the
    report untouched (no PDF: it was signed before PDFs were written), still immutable."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    old = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("leukomorph.review") / "migrations"))
    with old.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "insert into cases (id, name, imported, source, status, results) values "
                "(1, 'c', '2026-01-01', 's', 'signed', '{}')"
            )
        )
        conn.execute(
            text(
                "insert into signed_reports (case_id, version, signed_by, ts, html, sha256) values "
                "(1, 1, 'hema', '2026-01-01', '<p>v1</p>', 'abc')"
            )
        )
        conn.execute(
            text(
                "insert into cells (case_id, path, image_sha256, image_file, predicted, confidence, prediction_set, "
                "review_flag, label, version) values (1, 'a.png', 'ff', 'ff/ff.png', 'blast', 0.9, '', 0, 'blast', 1)"
            )
        )
    engine, factory = make_engine(url)
    with engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0005"
        # the cell survives the table rebuild of 0005, without a field (none was stored before)
        cell = c.execute(text("select path, label, findings, field_id, box from cells")).one()
        assert tuple(cell) == ("a.png", "blast", "", None, None)
        row = c.execute(text("select html, sha256, pdf, pdf_sha256 from signed_reports")).one()
    assert tuple(row) == ("<p>v1</p>", "abc", None, None)
    with factory() as s:
        s.query(SignedReport).one().html = "tampered"
        with pytest.raises(Exception, match="immutable"):
            s.commit()


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    """A PostgreSQL server: $LEUKOMORPH_TEST_POSTGRES, else a throwaway local one from pgserver
    (the dev extra installs it on Linux), else the test is skipped saying so."""
    import os

    url = os.environ.get("LEUKOMORPH_TEST_POSTGRES")
    if url:
        yield url
        return
    try:
        import pgserver
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip(
            "no PostgreSQL: install pgserver and psycopg[binary] (dev extra), or set "
            "LEUKOMORPH_TEST_POSTGRES=postgresql+psycopg://user:pw@host/db"
        )
    srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield srv.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    srv.cleanup()


def test_postgresql_store_review_flow(postgres_url, tmp_path, sample_dir, monkeypatch):
    """The whole review flow on PostgreSQL: migrations, import, relabel, sign-out with its PDF,
    re-open and amend; then the database's own triggers refuse to alter the audit log or a signed
    report (UPDATE, DELETE, TRUNCATE)."""
    import os

    from sqlalchemy import create_engine, make_url, text

    db = f"lm_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    with create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    url = make_url(postgres_url).set(database=db).render_as_string(hide_password=False)
    shutil.copytree(sample_dir, tmp_path / "cells")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["analyze", "cells", "--out", "out", "--case", "pg"]).exit_code == 0
    engine, factory = make_engine(url)
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from leukomorph.review.db import Base

    with engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0005"
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []  # migrations = models, on PG too
    with factory() as s:
        case = import_results(s, tmp_path / "out", tmp_path / "store")
        assert len(case.cells) == 31
        add_user(s, "hema", PW, "hematologist")
        case_id = case.id
    c = TestClient(create_app(url, tmp_path / "store"))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    ids = {int(x) for x in re.findall(r'data-id="(\d+)"', page)}
    for cid in ids:
        r = c.post(f"/api/cells/{cid}/label", json={"label": "lymphocyte"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    pdf = c.get(f"/cases/{case_id}/reports/1.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert c.post(f"/cases/{case_id}/reopen", data={"csrf": csrf, "reason": "typo"}).status_code == 200
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert "replaces version 1" in c.get(f"/cases/{case_id}/reports/2").text
    assert "reopened" in c.get(f"/cases/{case_id}/audit.csv").text
    # the database itself refuses to change the audit log or a signed report (revision 0003)
    for sql, rule in (
        ("update audit set action = 'x'", "append-only"),
        ("delete from audit", "append-only"),
        ("truncate audit cascade", "append-only"),
        ("update signed_reports set html = 'tampered'", "immutable"),
        ("delete from signed_reports", "immutable"),
        ("truncate signed_reports", "immutable"),
    ):
        with pytest.raises(Exception, match=rule), engine.begin() as conn:
            conn.execute(text(sql))
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from signed_reports")).scalar() == 2
    engine.dispose()


def test_review_differential_is_the_analysis_differential():
    from leukomorph.aggregate.differential import differential_from_counts as core
    from leukomorph.review.app import differential_from_counts

    counts = {"blast": 30, "lymphocyte": 70, "platelet": 10}
    shown, d = differential_from_counts(counts), core(counts)
    for c in d.counts:
        assert shown["classes"][c.name]["percent"] == round(c.percent, 1)
        assert shown["classes"][c.name]["ci95"] == [round(c.ci_low, 1), round(c.ci_high, 1)]
    assert shown["blast_ci95"] == [round(v, 1) for v in d.blast_ci]
    # platelets are per 100 white cells, and their interval is around that figure
    lo, hi = shown["classes"]["platelet"]["ci95"]
    assert lo < shown["classes"]["platelet"]["percent"] == 10.0 < hi
    assert differential_from_counts({"platelet": 3})["classes"]["platelet"]["ci95"][1] is None  # unbounded, not inf


def test_import_of_a_per_folder_batch_imports_every_ok_case(sample_dir, tmp_path, monkeypatch):
    from leukomorph.review.db import Case

    monkeypatch.chdir(tmp_path)
    files = sorted(sample_dir.glob("*.webp"))
    for case, chunk in (("P1", files[:3]), ("P2", files[3:6])):
        (tmp_path / "in" / case).mkdir(parents=True)
        for f in chunk:
            shutil.copy(f, tmp_path / "in" / case / f.name)
    (tmp_path / "in" / "P3").mkdir()
    (tmp_path / "in" / "P3" / "x.png").write_bytes(b"not an image")
    r = CliRunner().invoke(cli, ["analyze", "in", "--per-folder", "--out", "out"])
    assert r.exit_code == 4, r.output  # P3 had no readable image
    store = ["--data-dir", str(tmp_path / "store")]
    r = CliRunner().invoke(cli, ["import", "out", *store])
    assert r.exit_code == 1 and "imported case 'P1'" in r.output and "imported case 'P2'" in r.output, r.output
    assert "skipped case 'P3'" in r.output
    _, factory = make_engine(f"sqlite:///{tmp_path / 'store' / 'review.sqlite'}")
    with factory() as s:
        assert sorted(c.name for c in s.query(Case)) == ["P1", "P2"]
    r = CliRunner().invoke(cli, ["import", "out", *store])  # again: each case refused, the batch goes on
    assert r.exit_code == 1 and r.output.count("already in the store") == 2
    r = CliRunner().invoke(cli, ["import", "out", "--name", "x", *store])
    assert r.exit_code == 2


def test_reopen_a_signed_case_for_an_amended_report(store):
    url, data, case_id, factory = store
    c = TestClient(create_app(url, data))
    csrf = _login(c)
    page = c.get(f"/cases/{case_id}").text
    for cid in {int(x) for x in re.findall(r'data-id="(\d+)"', page.split('id="queue"')[1].split("<h2>")[0])}:
        c.post(f"/api/cells/{cid}/label", json={"label": "lymphocyte"}, headers={"X-CSRF-Token": csrf})
    assert c.post(f"/cases/{case_id}/reopen", data={"csrf": csrf, "reason": "x"}).status_code == 409  # not signed
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    v1 = c.get(f"/cases/{case_id}/reports/1").text
    assert 'id="reopen"' in c.get(f"/cases/{case_id}").text
    assert c.post(f"/cases/{case_id}/reopen", data={"csrf": csrf, "reason": "  "}).status_code == 422
    assert c.post(f"/cases/{case_id}/reopen", data={"reason": "typo"}).status_code == 403  # CSRF
    tech = TestClient(create_app(url, data))
    tcsrf = _login(tech, "tech")
    assert tech.post(f"/cases/{case_id}/reopen", data={"csrf": tcsrf, "reason": "typo"}).status_code == 403
    why = "cell 3 is a <b>blast</b>"
    r = c.post(f"/cases/{case_id}/reopen", data={"csrf": csrf, "reason": why}, follow_redirects=False)
    assert r.status_code == 303
    cell = int(re.findall(r'data-id="(\d+)"', page)[0])
    r = c.post(f"/api/cells/{cell}/label", json={"label": "blast"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200  # open again for relabelling
    assert c.post(f"/cases/{case_id}/signout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    v2 = c.get(f"/cases/{case_id}/reports/2").text
    assert "Amended report" in v2 and "replaces version 1" in v2
    assert "&lt;b&gt;blast&lt;/b&gt;" in v2 and "<b>blast</b>" not in v2  # the reason is escaped
    assert c.get(f"/cases/{case_id}/reports/1").text == v1  # the first version is untouched
    csv_text = c.get(f"/cases/{case_id}/audit.csv").text
    assert "reopened" in csv_text and csv_text.index("reopened") < csv_text.rindex("signed_out")
    formula = '=HYPERLINK("http://x","y")'
    c.post(f"/cases/{case_id}/reopen", data={"csrf": csrf, "reason": formula})
    rows = list(csv.reader(io.StringIO(c.get(f"/cases/{case_id}/audit.csv").text)))
    assert rows[-1][-1] == "'" + formula  # a spreadsheet shows it as text instead of running it


def test_pages_escape_user_supplied_names(store, tmp_path):
    url, data, _, factory = store
    evil = '<img src=x onerror="alert(1)">'
    with factory() as s:
        case = import_results(s, tmp_path / "out", data, name=evil)
        case_id = case.id
    c = TestClient(create_app(url, data))
    _login(c)
    for page in (c.get("/").text, c.get(f"/cases/{case_id}").text, c.get(f"/cases/{case_id}/audit").text):
        assert evil not in page and "&lt;img src=x" in page


@pytest.fixture
def field_store(tmp_path, monkeypatch, analysed_store, field_case_dir):
    """A field-mode case (one PBC smear field, its detected white cells) in a fresh store."""
    monkeypatch.chdir(tmp_path)
    users = {"hema": (PW, "hematologist"), "tech": (PW, "technologist")}
    return analysed_store(tmp_path, ["fields", "--fields", "--case", "smear", "--morphometrics", "none"], users)


def test_a_reviewer_draws_a_cell_the_detector_missed(field_store, tmp_path):
    """Field-mode cases keep their fields (revision 0005): the field page shows every counted box,
    and a box drawn there becomes a cell of its own: cropped by the pipeline's rule, counted,
    audited, refused when it is outside the field, too small, drawn twice or the case is signed,
    and exported for training (its crop is its own)."""
    from PIL import Image

    from leukomorph.pipeline import FIELD_CROP_FACTOR
    from leukomorph.review.db import Cell, Field
    from leukomorph.review.store import export_labels

    url, data, case_id, factory = field_store
    with factory() as s:
        (field,) = s.query(Field).all()
        fid, w, h = field.id, field.width, field.height
        detected = s.query(Cell).filter(Cell.case_id == case_id).all()
        assert detected and all(c.field_id == fid and c.box_xyxy for c in detected)
        original = (tmp_path / "fields" / "f1.webp").read_bytes()
        assert (data / "images" / field.image_file).read_bytes() == original  # stored as given
    c = TestClient(create_app(url, data))
    csrf = _login(c, "tech")
    h_ = {"X-CSRF-Token": csrf}
    assert f'href="/cases/{case_id}/fields/{fid}"' in c.get(f"/cases/{case_id}").text
    page = c.get(f"/cases/{case_id}/fields/{fid}").text
    assert all(f'data-id="{x.id}"' in page for x in detected) and 'id="addcell"' in page
    assert c.get(f"/fields/{fid}/image").content == original
    assert c.get(f"/cases/{case_id + 1}/fields/{fid}").status_code == 404
    wbc = c.get(f"/cases/{case_id}").text.split('id="wbc">')[1].split("<")[0]
    box = {"x0": 10, "y0": 20, "x1": 70, "y1": 100}
    api = f"/api/fields/{fid}/cells"
    assert c.post(api, json={**box, "label": "blast"}).status_code == 403  # CSRF
    assert c.post(api, json={**box, "label": "halo"}, headers=h_).status_code == 422
    assert c.post(api, json={**box, "x1": w + 1, "label": "blast"}, headers=h_).status_code == 422
    assert c.post(api, json={**box, "y1": h + 1, "label": "blast"}, headers=h_).status_code == 422
    assert c.post(api, json={**box, "x1": 14, "label": "blast"}, headers=h_).status_code == 422  # 4 px wide
    assert c.post(api, json={**box, "x0": -1, "label": "blast"}, headers=h_).status_code == 422
    r = c.post(api, json={**box, "label": "blast"}, headers=h_)
    assert r.status_code == 200 and r.json()["differential"]["wbc"] == int(wbc) + 1
    new_id = r.json()["cell"]["id"]
    assert c.post(api, json={**box, "label": "blast"}, headers=h_).status_code == 409  # the same box twice
    crop = Image.open(io.BytesIO(c.get(f"/cells/{new_id}/image").content))
    assert crop.size == (int(80 * FIELD_CROP_FACTOR),) * 2  # the pipeline's crop rule around the box
    assert f'data-id="{new_id}"' in c.get(f"/cases/{case_id}/fields/{fid}").text
    with factory() as s:
        (ev,) = s.query(AuditEvent).filter(AuditEvent.action == "add_cell").all()
        assert ev.username == "tech" and ev.after == "blast" and "f1.webp box 10,20,70,100" in ev.before
    # sign out (the hematologist), then export: the drawn cell is written with its own crop
    c2 = TestClient(create_app(url, data))
    csrf2 = _login(c2)
    _review_queue(c2, case_id, csrf2)
    assert c2.post(f"/cases/{case_id}/signout", data={"csrf": csrf2}, follow_redirects=False).status_code == 303
    report = c2.get(f"/cases/{case_id}/reports/1").text
    assert "f1.webp [drawn 10,20,70,100] (added by reviewer → blast)" in report  # listed in the signed report
    assert c.post(api, json={**box, "y1": 90, "label": "blast"}, headers=h_).status_code == 409  # signed
    with factory() as s:
        export_labels(s, data, tmp_path / "labels.csv")
        drawn = s.get(Cell, new_id)
        stored = str((data / "images" / drawn.image_file).resolve())
    rows = {r["path"]: r for r in csv.DictReader((tmp_path / "labels.csv").open())}
    assert rows[stored]["label"] == "blast" and rows[stored]["predicted"] == "added_by_reviewer"


def test_case_view_shows_the_evidence_cells_and_the_sandboxed_analysis_report(store, tmp_path):
    """The AI suggestion's evidence cells get their own gallery (after the review queue), and the
    analysis's report.html, stored at import, is served with a sandboxing CSP."""
    url, data, case_id, factory = store
    out = tmp_path / "out"
    res = json.loads((out / "results.json").read_text())
    paths = [r["path"] for r in csv.DictReader((out / "cells.csv").open()) if r["predicted_class"]][:2]
    res["suggestion"]["evidence_cells"] = [*paths, "not-a-cell-of-this-case.png"]
    res["case"] = "with-evidence"
    (out / "results.json").write_text(json.dumps(res))
    with factory() as s:
        other = import_results(s, out, data).id
    c, *_ = _open_case(store)
    page = c.get(f"/cases/{other}").text
    gallery = page.split('id="evidence">')[1].split("</div>\n")[0]
    assert "Evidence for the AI suggestion (2)" in page and gallery.count('class="cell') == 2
    assert page.index('id="queue"') < page.index('id="evidence"')  # the queue stays first for the keyboard
    r = c.get(f"/cases/{other}/analysis-report")
    assert r.status_code == 200 and "<h2>" in r.text and r.text == (out / "report.html").read_text()
    assert r.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert "script-src 'self'" in c.get(f"/cases/{other}").headers["content-security-policy"]
    with factory() as s:  # a case imported before v0.9.4 has no stored report
        from leukomorph.review.db import Case

        s.get(Case, case_id).report_file = None
        s.commit()
    assert c.get(f"/cases/{case_id}/analysis-report").status_code == 404
    assert "Analysis report" not in c.get(f"/cases/{case_id}").text
