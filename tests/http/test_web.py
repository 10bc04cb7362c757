"""The web page at `/` with httpx against a real `dpfw run --http`: login and its lock-out,
CSRF refusals, escaping of stored values, downloads, thumbnails, profile validation.
(tests/http/test_web_browser.py drives the same page in chromium.)"""

from __future__ import annotations

import io
import re
import time
from email.message import EmailMessage

import httpx
from PIL import Image

from firmware.http.web import THUMB
from tests.http.conftest import ADMIN, Lab

API = "/api/v1"
HOSTILE = "<script>alert(1)</script>"


def login(lab: Lab, password: str = ADMIN[1]) -> httpx.Client:
    client = lab.client(auth=None)
    got = client.post("/login", data={"user": "admin", "password": password})
    assert got.status_code == 303 and got.headers["location"] == "/", got.text
    return client


def csrf(client: httpx.Client, path: str = "/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def deliver(lab: Lab, box: str, raw: bytes) -> str:
    got = lab.api.post(
        f"{API}/boxes/{box}/messages", content=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert got.status_code == 201, got.text
    uid: str = got.json()["uid"]
    return uid


def test_pages_need_a_login_and_a_wrong_password_counts_in_the_shared_lock_out(lab: Lab) -> None:
    anon = lab.client(auth=None)
    got = anon.get("/")
    assert got.status_code == 303 and got.headers["location"] == "/login"
    assert anon.get("/boxes/alice").status_code == 303
    assert anon.post("/scans", data={"box": "alice"}).status_code == 403
    basic = lab.client()  # HTTP Basic is the API's, not the page's
    assert basic.get("/").status_code == 303
    for _ in range(3):
        got = anon.post("/login", data={"user": "admin", "password": "wrong"})
        assert got.status_code == 401 and "wrong user or password" in got.text
        assert "set-cookie" not in got.headers
    # The third failure locked admin logins: the API refuses the right password too.
    assert lab.api.get(f"{API}/status").status_code == 429
    got = anon.post("/login", data={"user": "admin", "password": ADMIN[1]})
    assert got.status_code == 429 and "locked" in got.text


def test_the_session_cookie_is_httponly_and_samesite_and_logout_ends_it(lab: Lab) -> None:
    client = lab.client(auth=None)
    got = client.post("/login", data={"user": "admin", "password": ADMIN[1]})
    cookie = got.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    token = csrf(client)
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/").status_code == 303


def test_every_form_is_refused_without_the_sessions_csrf_token(lab: Lab) -> None:
    client = login(lab)
    token = csrf(client)
    before = lab.api.get(f"{API}/boxes/alice").json()["box"]["messages"]
    raw = b"From: a@example.test\r\nSubject: csrf\r\n\r\nbody\r\n"
    for fields in ({}, {"csrf": "x" + token}):
        got = client.post("/boxes/alice/upload", data=fields, files={"message": ("m.eml", raw)})
        assert got.status_code == 403 and "CSRF" in got.text
        got = client.post("/scans", data={"box": "alice", **fields})
        assert got.status_code == 403
        got = client.post("/profile", data={"key": "pop3.max_sessions", "value": "3", **fields})
        assert got.status_code == 403
        assert client.post("/sessions/1/kill", data=fields).status_code == 403
        assert client.post("/logout", data=fields).status_code == 403
    assert lab.api.get(f"{API}/boxes/alice").json()["box"]["messages"] == before
    assert lab.api.get(f"{API}/profile").json()["keys"]  # unchanged below
    assert lab.api.get(f"{API}/scans/1").status_code == 404
    # Another session's token is not this session's.
    other = login(lab)
    got = other.post("/scans", data={"box": "alice", "csrf": token})
    assert got.status_code == 403


def test_stored_values_are_escaped_everywhere_they_are_shown(lab: Lab) -> None:
    box = "<i>'\"&x"
    got = lab.api.post(f"{API}/boxes", json={"name": box, "password": "Hostile-pass-123"})
    assert got.status_code == 201, got.text
    msg = EmailMessage()
    msg["From"] = f'"{HOSTILE}" <evil@example.test>'
    msg["Subject"] = HOSTILE
    msg.set_content("x")
    msg.add_attachment(b"data", maintype="text", subtype="plain", filename=f"{HOSTILE}.txt")
    uid = deliver(lab, "alice", msg.as_bytes())
    client = login(lab)
    home = client.get("/").text
    assert "&lt;i&gt;&#x27;&quot;&amp;x" in home and "<i>'" not in home
    box_page = client.get("/boxes/alice").text
    message_page = client.get(f"/boxes/alice/messages/{uid}").text
    for page in (box_page, message_page):
        assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert client.get("/boxes/%3Ci%3E'%22&x").status_code == 200


def test_raw_and_attachment_downloads_are_the_stored_bytes(lab: Lab) -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg["Subject"] = "download"
    msg.set_content("text")
    blob = bytes(range(256)) * 4
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename="b.bin")
    uid = deliver(lab, "alice", msg.as_bytes())
    client = login(lab)
    raw = client.get(f"/boxes/alice/messages/{uid}/raw")
    assert raw.status_code == 200
    assert raw.content == lab.api.get(f"{API}/boxes/alice/messages/{uid}/raw").content
    assert raw.headers["content-disposition"].startswith("attachment;")
    part = client.get(f"/boxes/alice/messages/{uid}/attachments/0")
    assert part.status_code == 200 and part.content == blob
    assert 'filename="b.bin"' in part.headers["content-disposition"]
    assert client.get(f"/boxes/alice/messages/{uid}/attachments/1").status_code == 404
    assert client.get("/boxes/alice/messages/nope/raw").status_code == 404


def test_a_scan_from_the_form_gets_a_thumbnail_of_each_page(lab: Lab) -> None:
    client = login(lab)
    got = client.post(
        "/scans",
        data={"box": "bob", "pages": "3", "format": "tiff", "mode": "", "csrf": csrf(client)},
    )
    assert got.status_code == 303
    assert "scan job 1 started" in client.get("/").text
    deadline = time.monotonic() + 60
    while (job := lab.api.get(f"{API}/scans/1").json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["state"] == "done", job
    uid = job["result"]["uid"]
    page = client.get(f"/boxes/bob/messages/{uid}").text
    link = f"/boxes/bob/messages/{uid}/attachments/0/pages"
    assert [f"{link}/{n}.png" for n in range(3)] == re.findall(rf"{re.escape(link)}/\d+\.png", page)
    for n in range(3):
        png = client.get(f"{link}/{n}.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(png.content)) as img:
            assert img.format == "PNG"
            assert img.width <= THUMB[0] and img.height <= THUMB[1]
    got = client.get(f"{link}/3.png")
    assert got.status_code == 404 and "3 pages" in got.text
    # A refused scan is the device's line on the page.
    got = client.post("/scans", data={"box": "bob", "dpi": "7", "csrf": csrf(client)})
    assert got.status_code == 303
    notes = client.get("/").text
    assert 'class="note error"' in notes and "7" in notes


def test_a_thumbnail_is_held_in_the_ram_budget(lab: Lab) -> None:
    """A page that decodes to more than the device's image RAM (DP-3530: 128 MiB) gets
    MEMORY FULL (507) instead of a thumbnail; a small one of the same message works."""
    big = io.BytesIO()
    Image.new("1", (8000, 8000), 1).save(big, "PNG")  # 8000x8000: 244 MiB decoded as RGBA
    small = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 10, 10)).save(small, "PNG")
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg["Subject"] = "pages"
    msg.set_content("two pages")
    msg.add_attachment(big.getvalue(), maintype="image", subtype="png", filename="big.png")
    msg.add_attachment(small.getvalue(), maintype="image", subtype="png", filename="small.png")
    uid = deliver(lab, "alice", msg.as_bytes())
    client = login(lab)
    link = f"/boxes/alice/messages/{uid}/attachments"
    got = client.get(f"{link}/0/pages/0.png")
    assert got.status_code == 507 and "MEMORY FULL: page thumbnail needs" in got.text
    got = client.get(f"{link}/1/pages/0.png")
    assert got.status_code == 200
    with Image.open(io.BytesIO(got.content)) as img:
        assert img.size == (180, 135)
    assert lab.api.get(f"{API}/status").json()["ram"]["used"] < 1 << 20  # all given back


def test_profile_values_are_checked_inline_by_the_device(lab: Lab) -> None:
    client = login(lab)
    token = csrf(client, "/profile")
    got = client.post("/profile", data={"key": "pop3.max_sessions", "value": "many", "csrf": token})
    assert got.status_code == 422
    row = re.search(r'<tr id="pop3\.max_sessions">.*?</tr>', got.text, re.S)
    assert row and 'class="err"' in row.group(0) and 'value="many"' in row.group(0)
    got = client.post("/profile", data={"key": "no.such", "value": "1", "csrf": token})
    assert got.status_code == 422 and "no.such" in got.text
    got = client.post("/profile", data={"key": "pop3.max_sessions", "value": "7", "csrf": token})
    assert got.status_code == 303
    assert "pop3.max_sessions = 7" in client.get("/profile").text
    keys = {k["key"]: k for k in lab.api.get(f"{API}/profile").json()["keys"]}
    assert keys["pop3.max_sessions"]["saved"] == 7


def test_an_upload_that_is_not_a_message_is_refused_with_the_devices_line(lab: Lab) -> None:
    client = login(lab)
    before = lab.api.get(f"{API}/boxes/alice").json()["box"]["messages"]
    got = client.post(
        "/boxes/alice/upload",
        data={"csrf": csrf(client)},
        files={"message": ("x.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")},
    )
    assert got.status_code == 303
    page = client.get("/boxes/alice").text
    assert 'class="note error"' in page
    assert lab.api.get(f"{API}/boxes/alice").json()["box"]["messages"] == before


def test_the_status_fragment_refreshes_without_a_reload(lab: Lab) -> None:
    client = login(lab)
    home = client.get("/").text
    assert "fetch('/status.html'" in home and "http" not in home.split("<script>")[1]
    fragment = client.get("/status.html")
    assert fragment.status_code == 200 and "POP3 sessions" in fragment.text
    assert "<html" not in fragment.text


def test_an_upload_over_the_box_quota_is_refused_whole_and_the_answer_arrives(lab: Lab) -> None:
    got = lab.api.patch(f"{API}/profile", json={"mailbox.quota_mib": 1})
    assert got.status_code == 200 and got.json()["changes"][0]["when"] == "now", got.text
    client = login(lab)
    before = lab.api.get(f"{API}/boxes/alice").json()["box"]["messages"]
    raw = b"From: a@example.test\r\nSubject: big\r\n\r\n" + b"x" * 76 + b"\r\n"
    got = client.post(
        "/boxes/alice/upload",
        data={"csrf": csrf(client)},
        files={"message": ("big.eml", raw * 40_000)},  # about 3 MiB
    )
    assert got.status_code == 303
    page = client.get("/boxes/alice").text
    assert 'class="note error"' in page and "mailbox.quota_mib" in page
    assert lab.api.get(f"{API}/boxes/alice").json()["box"]["messages"] == before
    assert lab.api.get(f"{API}/status").json()["ram"]["used"] < 1 << 20  # given back


def test_killing_a_session_that_is_gone_shows_the_devices_line(lab: Lab) -> None:
    client = login(lab)
    got = client.post("/sessions/999/kill", data={"csrf": csrf(client)})
    assert got.status_code == 303
    page = client.get("/").text
    assert 'class="note error"' in page and "999" in page
    assert client.post("/sessions/x1/kill", data={"csrf": csrf(client)}).status_code == 400
