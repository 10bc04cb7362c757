"""The web page in a real browser: Debian's chromium, headless, driven by selenium through
chromedriver, against a real `dpfw run --http` on a demo image; what the page did is checked
with poplib. Skips with the reason when chromium or chromedriver is not installed
(.ci/run installs both)."""

from __future__ import annotations

import os
import poplib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http.conftest import ADMIN, BOXES, Lab

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ.get("DPFW_WEB_SHOTS", ""))  # set: keep the screenshots there

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)

UPLOAD = (
    b"From: Browser Test <browser@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: uploaded from chromium <b>bold?</b>\r\n"
    b"Date: Mon, 30 Nov 2026 01:02:03 +0000\r\n"
    b"\r\n"
    b"line one\r\n"
    b".a line with a leading dot\r\n"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll a condition in the browser (a page is another process: no trio tools here)."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except StaleElementReferenceException:
            pass  # the status box refreshed between finding an element and reading it
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shot(driver: Any, name: str) -> None:
    if str(SHOTS) not in ("", "."):
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"{name}.png"))


def pop3_login(lab: Lab, box: str) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
    client.user(box)
    client.pass_(BOXES[box])
    return client


def test_log_in_upload_fetch_with_pop3_and_kill_a_session(
    lab: Lab, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(lab.base + "/")
    assert driver.current_url.endswith("/login")
    # A wrong password: the login form says so (and the lock-out counts it).
    driver.find_element(By.NAME, "password").send_keys("wrong")
    driver.find_element(By.TAG_NAME, "button").click()
    # The click starts a navigation: the login page found at once may be the old one, gone
    # (stale) a moment later, so wait for the answer page's words.
    wait_for(
        lambda: "wrong user or password" in driver.find_element(By.TAG_NAME, "main").text,
        "the login form's refusal",
    )

    driver.find_element(By.NAME, "password").send_keys(ADMIN[1])
    driver.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: driver.current_url == lab.base + "/", "the status page")
    wait_for(lambda: "No sessions." in driver.find_element(By.TAG_NAME, "main").text, "sessions")
    page = driver.find_element(By.TAG_NAME, "main").text
    assert "DP-3530" in driver.title or "DP-3530" in driver.page_source
    for box in BOXES:  # the demo boxes, each a link to its messages
        assert driver.find_element(By.LINK_TEXT, box)
    assert "No sessions." in page
    shot(driver, "status")
    # The status box refreshes itself (a few lines of script fetch /status.html).
    first = driver.find_element(By.ID, "status").text
    wait_for(lambda: driver.find_element(By.ID, "status").text != first, "a refresh", 15)
    assert driver.current_url == lab.base + "/"

    # Upload a message into alice through the form, and see it listed.
    driver.find_element(By.LINK_TEXT, "alice").click()
    before = len(driver.find_elements(By.CSS_SELECTOR, "main table tr"))
    eml = tmp_path / "upload.eml"
    eml.write_bytes(UPLOAD)
    driver.find_element(By.NAME, "message").send_keys(str(eml))
    driver.find_element(By.XPATH, "//button[text()='Upload']").click()
    wait_for(lambda: "stored message" in driver.page_source, "the upload's note")
    rows = driver.find_elements(By.CSS_SELECTOR, "main table tr")
    assert len(rows) == before + 1
    last = rows[-1].text
    assert "uploaded from chromium <b>bold?</b>" in last  # shown as text, not markup
    assert "Browser Test <browser@example.test>" in last
    assert str(len(UPLOAD)) in last
    shot(driver, "box")

    # POP3 sends exactly the uploaded octets, as the last message of the box.
    client = pop3_login(lab, "alice")
    try:
        count, _ = client.stat()
        _, lines, octets = client.retr(count)
    finally:
        client.quit()
    assert b"".join(line + b"\r\n" for line in lines) == UPLOAD
    assert octets >= len(UPLOAD)

    # A live POP3 session shows on the status page; its Kill button ends it.
    victim = pop3_login(lab, "bob")
    driver.get(lab.base + "/")
    wait_for(lambda: "bob" in driver.find_element(By.XPATH, "//section[3]").text, "the session")
    wait_for(
        lambda: "transaction" in driver.find_element(By.XPATH, "//section[3]").text,
        "the session in the transaction state",
    )
    shot(driver, "session")
    driver.find_element(By.XPATH, "//section[3]//button[text()='Kill']").click()
    wait_for(lambda: "killed" in driver.page_source, "the kill's note")
    wait_for(lambda: "No sessions." in driver.find_element(By.TAG_NAME, "main").text, "no sessions")
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        victim.stat()
        victim.noop()
    victim.sock.close()
    shot(driver, "killed")


def test_a_scan_started_from_the_page_shows_its_pages_from_the_device_only(
    lab: Lab, browser: Any
) -> None:
    """Start a 2-page scan with the form; the box lists it with a thumbnail that the
    browser decoded; every resource the pages asked for is on the device (no CDN, fonts,
    or scripts from elsewhere)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(lab.base + "/login")
    driver.find_element(By.NAME, "password").send_keys(ADMIN[1])
    driver.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: driver.current_url == lab.base + "/", "the status page")
    Select(driver.find_element(By.NAME, "box")).select_by_visible_text("bob")
    pages = driver.find_element(By.NAME, "pages")
    pages.clear()
    pages.send_keys("2")
    Select(driver.find_element(By.NAME, "format")).select_by_visible_text("tiff")
    driver.find_element(By.XPATH, "//button[text()='Start scan']").click()
    wait_for(lambda: "scan job" in driver.page_source, "the scan's note")

    def done() -> bool:
        driver.get(lab.base + "/")
        return "2 pages, message" in driver.find_element(By.TAG_NAME, "main").text

    wait_for(done, "the scan job to finish", timeout=60)
    driver.find_element(By.LINK_TEXT, "bob").click()
    wait_for(lambda: driver.current_url.endswith("/boxes/bob"), "bob's page")
    wait_for(lambda: bool(driver.find_elements(By.CSS_SELECTOR, "img.thumb")), "a thumbnail")
    thumb = driver.find_elements(By.CSS_SELECTOR, "img.thumb")[-1]
    driver.execute_script("arguments[0].scrollIntoView()", thumb)
    wait_for(
        lambda: (
            driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", thumb
            )
            > 0
        ),
        "the thumbnail to load",
    )
    thumb.find_element(By.XPATH, "ancestor::tr//a[1]").click()  # the message page
    loaded = (
        "return Array.from(document.querySelectorAll('img.thumb'))"
        ".filter(function(i){return i.complete && i.naturalWidth > 0;}).length"
    )
    wait_for(lambda: driver.execute_script(loaded) == 2, "2 page thumbnails to load")
    shot(driver, "scan")
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function(e){return e.name;})"
    )
    host = lab.base.split("//", 1)[1]
    assert len(urls) >= 2 and all(url.split("//", 1)[1].startswith(host + "/") for url in urls)
