"""Browser test: Playwright driving Debian's chromium (headless) through log in, keyboard
relabelling, sign-out and the audit log. Skipped with a reason when playwright or chromium is absent."""

import os
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (apt install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(store):
    """Start the app on a free port for an analysed store; yields (base URL, case id)."""
    import uvicorn

    from leukomorph.review.app import create_app

    url, data, case_id, _ = store
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(url, data), host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", case_id
    srv.should_exit = True
    t.join(5)


USERS = {"hema": ("browser-test-pw", "hematologist")}


@pytest.fixture
def server(sample_dir, tmp_path, monkeypatch, analysed_store):
    shutil.copytree(sample_dir, tmp_path / "cells")
    monkeypatch.chdir(tmp_path)
    yield from _serve(analysed_store(tmp_path, ["cells", "--case", "demo"], USERS))


@pytest.fixture
def field_server(tmp_path, monkeypatch, analysed_store, field_case_dir):
    monkeypatch.chdir(tmp_path)
    args = ["fields", "--fields", "--case", "smear", "--morphometrics", "none"]
    yield from _serve(analysed_store(tmp_path, args, USERS))


def _logged_in(p, base: str):
    """A chromium page logged in as the hematologist (browser, page)."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(base + "/login")
    page.fill("input[name=username]", "hema")
    page.fill("input[name=password]", USERS["hema"][0])
    page.click("button")
    return browser, page


def test_login_relabel_with_keyboard_signout_and_audit(server, tmp_path):
    base, case_id = server
    with sync_api.sync_playwright() as p:
        browser, page = _logged_in(p, base)
        page.click(f"a[href='/cases/{case_id}']")
        page.wait_for_selector(".cell.focus")
        blast_before = page.inner_text("#blast")
        # the first tile has focus: '9' relabels it as a blast (KEYS in review.app)
        page.keyboard.press("9")
        for _ in range(50):  # polling in Python: the app's CSP forbids Playwright's eval-based waits
            if page.inner_text("#blast") != blast_before:
                break
            page.wait_for_timeout(100)
        assert page.inner_text("#blast") != blast_before
        # 'a' then a class key: one more cell in the focused tile's image (the page reloads with it)
        wbc_before = int(page.inner_text("#wbc"))
        page.keyboard.press("a")
        assert "Adding a cell" in page.inner_text("#mode")
        page.keyboard.press("5")  # lymphocyte
        for _ in range(50):
            try:
                if int(page.inner_text("#wbc")) == wbc_before + 1:
                    break
            except Exception:  # the page is reloading
                pass
            page.wait_for_timeout(100)
        assert int(page.inner_text("#wbc")) == wbc_before + 1
        page.wait_for_selector(".cell.focus")
        # 'f' then '1': Auer rods on the focused cell, counted in the case's findings
        page.keyboard.press("f")
        page.keyboard.press("1")
        for _ in range(50):
            if "Auer rods (1 cell)" in page.inner_text("#findings"):
                break
            page.wait_for_timeout(100)
        assert "Auer rods (1 cell)" in page.inner_text("#findings")
        assert "Auer rods recorded by the reviewer" in page.inner_text("#aftertext")  # rules 1.5, updated in place
        # 'f' then '2' records a faggot cell: the reviewed side turns urgent; again withdraws it
        page.keyboard.press("f")
        page.keyboard.press("2")
        page.wait_for_selector("#after.urgent")
        assert "faggot cells" in page.inner_text("#aftertext")
        page.keyboard.press("f")
        page.keyboard.press("2")
        page.wait_for_selector("#after.notice")
        # confirm every flagged cell with Enter (the queue comes first, focus advances after each)
        todo = int(page.inner_text("#todo"))
        for _ in range(todo + 1):
            if int(page.inner_text("#todo")) == 0:
                break
            page.keyboard.press("Enter")
            page.wait_for_timeout(150)
        assert page.inner_text("#todo") == "0"
        if os.environ.get("LEUKOMORPH_SCREENSHOT"):  # for the README
            page.keyboard.press("Home")
            page.wait_for_timeout(200)
            page.screenshot(path=os.environ["LEUKOMORPH_SCREENSHOT"], full_page=False)
        page.click("#signout")
        page.wait_for_selector("text=Signed report v1")
        page.click("text=Audit log")
        text = page.inner_text("table")
        assert "relabel" in text and "signed_out" in text and "blast" in text and "add_cell" in text
        assert "finding" in text and "auer_rods" in text
        browser.close()


def test_drawing_a_missed_cell_on_a_field(field_server):
    """The field page: drag a box on the image, choose the class, add: the page shows one more box."""
    base, case_id = field_server
    with sync_api.sync_playwright() as p:
        browser, page = _logged_in(p, base)
        page.goto(f"{base}/cases/{case_id}")
        page.click("a.fieldlink")
        page.wait_for_selector("#ov")
        n_before = page.locator("g.box").count()
        b = page.locator("#ov").bounding_box()
        page.mouse.move(b["x"] + 0.05 * b["width"], b["y"] + 0.05 * b["height"])
        page.mouse.down()
        page.mouse.move(b["x"] + 0.15 * b["width"], b["y"] + 0.12 * b["height"], steps=5)
        page.mouse.up()
        assert page.is_enabled("#addcell") and "px" in page.inner_text("#boxtext")
        page.select_option("#cls", "blast")
        page.click("#addcell")
        for _ in range(50):
            if page.locator("g.box").count() == n_before + 1:
                break
            page.wait_for_timeout(100)
        assert page.locator("g.box").count() == n_before + 1
        assert "blast" in page.locator("g.box").last.text_content()
        browser.close()
