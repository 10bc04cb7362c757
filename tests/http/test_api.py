"""Every /api/v1 endpoint with httpx against a real `dpfw run --http`, checked with POP3."""

from __future__ import annotations

import poplib
import socket
import time
from email.message import EmailMessage

import httpx
import pytest

from tests.http.conftest import BOXES, Lab

API = "/api/v1"


def message(subject: str, body: str = "hello\r\n", attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Scanner <scan@example.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 30 Nov 2026 01:02:03 +0000"
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="image", subtype="png", filename="page1.png")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def deliver(lab: Lab, box: str, raw: bytes) -> httpx.Response:
    return lab.api.post(
        f"{API}/boxes/{box}/messages",
        content=raw,
        headers={"Content-Type": "message/rfc822"},
    )


def pop3(lab: Lab, box: str) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
    client.user(box)
    client.pass_(BOXES[box])
    return client


def retr(lab: Lab, box: str, number: int) -> bytes:
    client = pop3(lab, box)
    try:
        _, lines, _ = client.retr(number)
    finally:
        client.quit()
    return b"".join(line + b"\r\n" for line in lines)


def test_status_tells_what_the_console_status_tells(lab: Lab) -> None:
    got = lab.api.get(f"{API}/status")
    assert got.status_code == 200, got.text
    status = got.json()
    assert status["model"] == "DP-3530" and status["running"] is True
    assert status["firmware_version"] and status["uptime_s"] >= 0
    assert status["ram"]["total"] > 0 and status["flash"]["total"] > 0
    assert status["flash"]["used"] > 0  # the demo messages
    assert status["pop3"]["sessions"] == 0 and status["pop3"]["locked"] == {}
    client = pop3(lab, "alice")
    try:
        assert lab.api.get(f"{API}/status").json()["pop3"]["sessions"] == 1
    finally:
        client.quit()


def test_an_api_delivery_is_what_pop3_retr_sends_octet_for_octet(lab: Lab) -> None:
    raw = message("API delivery", body="line one\r\n.a dot-stuffed line\r\n..two dots\r\n")
    got = deliver(lab, "alice", raw)
    assert got.status_code == 201, got.text
    uid = got.json()["uid"]
    assert got.headers["location"] == f"{API}/boxes/alice/messages/{uid}"
    listing = lab.api.get(f"{API}/boxes/alice/messages").json()["messages"]
    row = next(r for r in listing if r["uid"] == uid)
    assert row["subject"] == "API delivery" and row["from"] == "Scanner <scan@example.test>"
    assert row["size"] == len(raw) and row["date"] == 1796000523.0
    assert row["number"] == len(listing)  # the newest message is the last
    # The delivery answer is the same summary as the listing row (same keys, same values).
    assert got.json() == {**{k: v for k, v in row.items() if k != "number"}, "box": "alice"}
    schema = lab.api.get(f"{API}/openapi.json").json()["components"]["schemas"]["Message"]
    assert set(schema["properties"]) == set(row) - {"number"}
    pop3_bytes = retr(lab, "alice", row["number"])  # a new POP3 session sees it at once
    assert pop3_bytes == raw
    raw_got = lab.api.get(f"{API}/boxes/alice/messages/{uid}/raw")
    assert raw_got.status_code == 200
    assert raw_got.headers["content-type"] == "message/rfc822"
    assert raw_got.content == raw == pop3_bytes


def test_message_detail_lists_headers_and_parts(lab: Lab) -> None:
    raw = message("with a page", attachment=b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    uid = deliver(lab, "bob", raw).json()["uid"]
    detail = lab.api.get(f"{API}/boxes/bob/messages/{uid}").json()
    names = [h["name"] for h in detail["headers"]]
    assert names[:4] == ["From", "To", "Subject", "Date"]
    assert {"name": "Subject", "value": "with a page"} in detail["headers"]
    types = [(p["content_type"], p["filename"]) for p in detail["parts"]]
    assert types == [("text/plain", None), ("image/png", "page1.png")]
    assert detail["parts"][1]["size"] == 108
    listing = lab.api.get(f"{API}/boxes/bob/messages").json()["messages"]
    assert next(r for r in listing if r["uid"] == uid)["attachments"] == ["page1.png"]


def test_delete_a_message_and_pop3_no_longer_lists_it(lab: Lab) -> None:
    uid = deliver(lab, "bob", message("to delete")).json()["uid"]
    before = len(lab.api.get(f"{API}/boxes/bob/messages").json()["messages"])
    got = lab.api.delete(f"{API}/boxes/bob/messages/{uid}")
    assert got.status_code == 200 and got.json()["uid"] == uid
    assert lab.api.delete(f"{API}/boxes/bob/messages/{uid}").status_code == 404
    assert lab.api.get(f"{API}/boxes/bob/messages/{uid}/raw").status_code == 404
    client = pop3(lab, "bob")
    try:
        assert uid.encode() not in b" ".join(client.uidl()[1])
        assert client.stat()[0] == before - 1
        other = lab.api.get(f"{API}/boxes/bob/messages").json()["messages"][0]["uid"]
        busy = lab.api.delete(f"{API}/boxes/bob/messages/{other}")  # bob is open in POP3
        assert busy.status_code == 409 and "POP3 session" in busy.json()["message"]
    finally:
        client.quit()


def test_boxes_add_show_change_password_and_delete(lab: Lab) -> None:
    got = lab.api.post(f"{API}/boxes", json={"name": "carol", "password": "Carol-pass-123"})
    assert got.status_code == 201, got.text
    assert got.json()["name"] == "carol"
    names = [b["name"] for b in lab.api.get(f"{API}/boxes").json()["boxes"]]
    assert names == ["alice", "bob", "carol"]
    again = lab.api.post(f"{API}/boxes", json={"name": "carol", "password": "Carol-pass-123"})
    assert again.status_code == 409 and "already exists" in again.json()["message"]
    shown = lab.api.get(f"{API}/boxes/carol").json()
    assert shown["box"]["messages"] == 0 and shown["quota_bytes"] > 0
    weak = lab.api.patch(f"{API}/boxes/carol", json={"password": "x"})
    assert weak.status_code == 422, weak.text
    changed = lab.api.patch(f"{API}/boxes/carol", json={"password": "Carol-new-456"})
    assert changed.status_code == 200, changed.text
    client = poplib.POP3("127.0.0.1", lab.pop3_port, timeout=15)
    client.user("carol")
    assert client.pass_("Carol-new-456").startswith(b"+OK")
    client.quit()
    deliver(lab, "carol", message("keep me"))
    full = lab.api.delete(f"{API}/boxes/carol")
    assert full.status_code == 409 and "delete" in full.json()["message"]
    assert lab.api.delete(f"{API}/boxes/carol?purge=true").status_code == 200
    assert lab.api.get(f"{API}/boxes/carol").status_code == 404


def test_sessions_list_and_kill(lab: Lab) -> None:
    client = pop3(lab, "alice")
    try:
        listed = lab.api.get(f"{API}/sessions").json()
        assert listed["running"] is True
        (session,) = listed["sessions"]
        assert session["box"] == "alice" and session["state"] == "transaction"
        assert lab.api.delete(f"{API}/sessions/{session['id']}").status_code == 200
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            for _ in range(50):
                client.noop()
                time.sleep(0.05)
    finally:
        client.close()
    assert lab.api.delete(f"{API}/sessions/999999").status_code == 404
    assert lab.api.delete(f"{API}/sessions/x").status_code == 400
    assert lab.api.get(f"{API}/sessions").json()["sessions"] == []


def test_profile_running_and_saved_values_live_and_reboot_keys(lab: Lab) -> None:
    view = lab.api.get(f"{API}/profile").json()
    keys = {k["key"]: k for k in view["keys"]}
    assert view["model"] == "DP-3530" and view["pending"] == []
    assert keys["pop3.max_sessions"]["live"] is True
    got = lab.api.patch(f"{API}/profile", json={"pop3.max_sessions": 3, "pop3.port": 1999})
    assert got.status_code == 200, got.text
    when = {c["key"]: c["when"] for c in got.json()["changes"]}
    assert when == {"pop3.max_sessions": "now", "pop3.port": "reboot"}
    view = lab.api.get(f"{API}/profile").json()
    keys = {k["key"]: k for k in view["keys"]}
    assert keys["pop3.max_sessions"]["running"] == 3
    assert keys["pop3.port"]["saved"] == 1999 and keys["pop3.port"]["running"] == 110
    assert view["pending"] == ["pop3.port"]
    assert lab.api.get(f"{API}/status").json()["pop3"]["max_sessions"] == 3


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"pop3.max_sessions": "3"}, 400, "'pop3.max_sessions' must be an integer, not a string"),
        ({"pop3.apop": 1}, 400, "must be a boolean, not an integer"),
        ({"pop3.max_sesions": 3}, 400, 'did you mean "pop3.max_sessions"'),
        ({"pop3.max_sessions": 0}, 422, "pop3.max_sessions = 0 is not allowed"),
        ({}, 400, "nothing to change"),
    ],
)
def test_profile_patch_refuses_in_the_console_words(
    lab: Lab, body: dict[str, object], status: int, words: str
) -> None:
    before = lab.api.get(f"{API}/profile").json()
    got = lab.api.patch(f"{API}/profile", json=body)
    assert got.status_code == status, got.text
    assert words in got.json()["message"]
    assert lab.api.get(f"{API}/profile").json() == before  # nothing changed


def test_profile_apply_a_model(lab: Lab) -> None:
    got = lab.api.post(f"{API}/profile/apply", json={"model": "DP-4520"})
    assert got.status_code == 200, got.text
    changes = {c["key"]: c for c in got.json()["changes"]}
    assert changes["identity.model"]["after"] == "DP-4520"
    assert changes["identity.model"]["when"] == "reboot"
    bad = lab.api.post(f"{API}/profile/apply", json={"model": "DP-9999"})
    assert bad.status_code == 422 and "DP-9999" in bad.json()["message"]


def test_a_scan_job_runs_into_a_box(lab: Lab) -> None:
    got = lab.api.post(f"{API}/scans", json={"box": "alice", "pages": 1, "dpi": 200})
    assert got.status_code in (202, 422), got.text
    if got.status_code == 422:  # 200 dpi not offered: the device names what is
        assert "offers" in got.json()["message"]
        got = lab.api.post(f"{API}/scans", json={"box": "alice", "pages": 1})
    assert got.status_code == 202, got.text
    job = got.json()["job"]
    deadline = time.monotonic() + 60
    state = got.json()
    while state["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        state = lab.api.get(f"{API}/scans/{job}").json()
    assert state["state"] == "done", state
    uid = state["result"]["uid"]
    listing = lab.api.get(f"{API}/boxes/alice/messages").json()["messages"]
    assert uid in [r["uid"] for r in listing]
    bad = lab.api.post(f"{API}/scans", json={"box": "alice", "pages": 999})
    assert bad.status_code == 422 and "page" in bad.json()["message"]
    assert lab.api.get(f"{API}/scans/424242").status_code == 404


def test_openapi_describes_every_route(lab: Lab) -> None:
    doc = httpx.get(f"{lab.base}{API}/openapi.json", timeout=10).json()  # no login needed
    assert doc["openapi"].startswith("3.")
    required = {
        f"{API}/status": {"get"},
        f"{API}/boxes": {"get", "post"},
        f"{API}/boxes/{{box}}": {"get", "patch", "delete"},
        f"{API}/boxes/{{box}}/messages": {"get", "post"},
        f"{API}/boxes/{{box}}/messages/{{uid}}": {"get", "delete"},
        f"{API}/boxes/{{box}}/messages/{{uid}}/raw": {"get"},
        f"{API}/profile": {"get", "patch"},
        f"{API}/profile/apply": {"post"},
        f"{API}/sessions": {"get"},
        f"{API}/sessions/{{session}}": {"delete"},
        f"{API}/scans": {"post"},
        f"{API}/scans/{{job}}": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in required.items():
        assert set(doc["paths"][path]) == methods, path


def test_the_api_serves_while_a_pop3_client_holds_a_session(lab: Lab) -> None:
    """The API runs in the device's loop: a slow POP3 client does not hold it up."""
    with socket.create_connection(("127.0.0.1", lab.pop3_port), timeout=10) as idle:
        idle.recv(512)
        started = time.monotonic()
        assert lab.api.get(f"{API}/boxes").status_code == 200
        assert time.monotonic() - started < 5
