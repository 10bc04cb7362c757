"""Bad input gets a 4xx with a JSON line naming what and why; limits store nothing partial."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.http.conftest import Lab, start_lab
from tests.http.test_api import deliver, message
from tests.support import DeviceProcess, dpfw

API = "/api/v1"


def snapshot(lab: Lab) -> tuple[object, object]:
    """What must not change after a refusal: every box with its messages, and flash use."""
    boxes = lab.api.get(f"{API}/boxes").json()
    used = lab.api.get(f"{API}/status").json()["flash"]["used"]
    return boxes, used


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("POST", "/boxes", {"content": b"{not json", "json_type": True}, 400, "not JSON"),
        ("POST", "/boxes", {"json": [1, 2]}, 400, "must be a JSON object, not a list"),
        ("POST", "/boxes", {"json": {"name": "x"}}, 400, "'password' is required"),
        ("POST", "/boxes", {"json": {"name": 5, "password": "p"}}, 400, "'name' must be a string"),
        (
            "POST",
            "/boxes",
            {"json": {"name": "dave", "password": "Dave-pass-123", "admin": True}},
            400,
            "unknown key 'admin'",
        ),
        ("POST", "/boxes", {"content": b'{"name":"d"}'}, 415, "Content-Type must be"),
        (
            "POST",
            "/boxes",
            {"json": {"name": "a b", "password": "Dave-pass-123"}},
            400,
            "is not allowed",
        ),
        (
            "POST",
            "/boxes",
            {"json": {"name": "../etc", "password": "Dave-pass-123"}},
            400,
            "cannot be addressed in a URL path",
        ),
        ("POST", "/boxes", {"content": b"\xff\xfe", "json_type": True}, 400, "not UTF-8"),
        ("POST", "/boxes", {"content": b"NaN", "json_type": True}, 400, "not JSON"),
        ("PATCH", "/boxes/alice", {"json": {"unlock": "yes"}}, 400, "must be a boolean"),
        ("PATCH", "/boxes/alice", {"json": {}}, 400, "nothing to change"),
        ("PATCH", "/boxes/nobody", {"json": {"unlock": True}}, 404, "no box named 'nobody'"),
        ("DELETE", "/boxes/alice?purge=maybe", {}, 400, "expected true or false"),
        ("GET", "/boxes?x=1", {}, 400, "unknown query parameter 'x'"),
        ("GET", "/boxes/nobody/messages", {}, 404, "no box named 'nobody'"),
        ("GET", "/boxes/alice/messages/nope", {}, 404, "no message with uid 'nope'"),
        ("GET", "/boxes/..%2F..%2Fetc/messages", {}, 404, "no route"),
        ("GET", "/boxes/%2e%2e/messages", {}, 400, "cannot be addressed in a URL path"),
        ("GET", "/boxes/a%00b", {}, 400, "is not allowed"),
        ("GET", "/boxes/" + "x" * 200, {}, 400, "is not allowed"),
        ("POST", "/scans", {"json": {"box": "alice", "pages": "2"}}, 400, "must be an integer"),
        ("POST", "/scans", {"json": {"box": "nobody"}}, 404, "no box named 'nobody'"),
        # What the code does (the job table lives as long as the process; docs/api.md).
        ("GET", "/scans/999", {}, 404, "jobs are kept until the process ends"),
        ("GET", "/nothing", {}, 404, "no route"),
        ("PUT", "/status", {}, 405, "not allowed"),
    ],
)
def test_bad_input_is_a_json_line_and_changes_nothing(
    shared_lab: Lab, method: str, path: str, kwargs: dict[str, object], status: int, words: str
) -> None:
    lab = shared_lab
    before = snapshot(lab)
    headers = {"Content-Type": "application/json"} if kwargs.pop("json_type", False) else {}
    got = lab.api.request(method, API + path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert got.status_code == status, got.text
    body = got.json()
    assert set(body) <= {"error", "message", "field"}
    assert words in body["message"], body
    assert "Traceback" not in got.text
    assert snapshot(lab) == before


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "the body is empty, not an RFC 5322 message"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "line 1 is not a header field"),
        (b"Subject: x\r\nX-Bin: \0\r\n\r\n", "a NUL byte in header line 2"),
        (b'{"subject": "hi"}', "line 1 is not a header field (Name: value, the name of"),
        (b"<html><body>hi</body></html>", "line 1 is not a header field"),
        (b"Subject: ok\r\nthis is no header\r\n\r\nbody", "line 2 is not a header field"),
        (b"\r\n\r\nbody only", "starts with an empty line"),
    ],
)
def test_a_body_that_is_not_a_message_is_refused(shared_lab: Lab, body: bytes, words: str) -> None:
    lab = shared_lab
    before = snapshot(lab)
    got = deliver(lab, "alice", body)
    assert got.status_code == 400, got.text
    assert words in got.json()["message"]
    assert snapshot(lab) == before


def test_delivery_needs_message_rfc822(lab: Lab) -> None:
    got = lab.api.post(
        f"{API}/boxes/alice/messages", content=message("x"), headers={"Content-Type": "text/plain"}
    )
    assert got.status_code == 415 and "message/rfc822" in got.json()["message"]


def test_a_1_gib_upload_is_refused_before_it_is_read(lab: Lab) -> None:
    """Content-Length says 1 GiB: 413 at once, and the device never holds the body."""
    host, port = lab.base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/boxes/alice/messages HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Basic YWRtaW46YWRtaW4tbGFi\r\n"
            b"Content-Type: message/rfc822\r\nContent-Length: 1073741824\r\n\r\n"
            b"Subject: big\r\n\r\n" + b"x" * 65536
        )
        reply = b""
        while chunk := sock.recv(65536):  # the device answers and closes
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"cannot fit" in reply
    assert lab.api.get(f"{API}/status").json()["ram"]["used"] == 0


def test_a_streamed_upload_over_the_limit_stops_at_the_limit(lab: Lab) -> None:
    before = snapshot(lab)

    def body() -> Iterator[bytes]:  # chunked, no Content-Length: counted as it arrives
        yield b"Subject: endless\r\n\r\n"
        for _ in range(200):  # 200 MiB offered; the demo image holds far less
            yield b"y" * (1 << 20)

    try:
        got = lab.api.post(
            f"{API}/boxes/alice/messages",
            content=body(),
            headers={"Content-Type": "message/rfc822"},
        )
    except httpx.TransportError:
        pass  # the device answered and closed while the client was still sending
    else:
        assert got.status_code == 413, got.text
        assert "nothing stored" in got.json()["message"]
    assert snapshot(lab) == before
    assert lab.api.get(f"{API}/status").json()["ram"]["used"] == 0


@pytest.fixture
def small(tmp_path: Path, start_device: type[DeviceProcess]) -> Iterator[Lab]:
    """A 2 MiB DP-3510 with box 'inbox', a 1 MiB quota, 3 messages a box, 4 MiB of RAM."""
    image = tmp_path / "small.img"
    dpfw("image", "create", str(image), "--profile", "DP-3510", "--size", "2MiB",
         "--admin-password", "admin-lab")  # fmt: skip
    dpfw("box", "add", str(image), "inbox", "--password", "Inbox-pass-123")
    dpfw("profile", "set", str(image), "mailbox.quota_mib", "1", "mailbox.max_messages", "3",
         "memory.image_ram_mib", "4")  # fmt: skip
    yield from start_lab(start_device, image)


def test_quota_and_message_count_answer_413_in_the_devices_words(small: Lab) -> None:
    part = message("part", body="z" * 400_000 + "\r\n")
    assert deliver(small, "inbox", part).status_code == 201
    assert deliver(small, "inbox", part).status_code == 201
    before = snapshot(small)
    over = deliver(small, "inbox", part)
    assert over.status_code == 413, over.text
    assert over.json()["error"] == "quota"
    assert "is over quota" in over.json()["message"]
    assert "(mailbox.quota_mib)" in over.json()["message"]
    assert snapshot(small) == before
    assert deliver(small, "inbox", message("small")).status_code == 201
    full = deliver(small, "inbox", message("fourth"))
    assert full.status_code == 413 and "mailbox.max_messages" in full.json()["message"]


def test_flash_full_answers_507_and_stores_nothing(small: Lab) -> None:
    dpfw_box = small.api.post(f"{API}/boxes", json={"name": "other", "password": "Other-pass-123"})
    assert dpfw_box.status_code == 201
    big = message("big", body="w" * 990_000 + "\r\n")  # two do not fit in 2 MiB
    assert deliver(small, "inbox", big).status_code == 201
    before = snapshot(small)
    full = deliver(small, "other", big)
    assert full.status_code == 507, full.text
    assert full.json()["error"] == "storage_full"
    assert full.json()["message"].startswith("storage full:")
    assert snapshot(small) == before


def test_memory_full_answers_507_and_stores_nothing(
    tmp_path: Path, start_device: type[DeviceProcess]
) -> None:
    image = tmp_path / "ram.img"
    dpfw("image", "create", str(image), "--profile", "DP-3510", "--size", "16MiB",
         "--admin-password", "admin-lab")  # fmt: skip
    dpfw("box", "add", str(image), "inbox", "--password", "Inbox-pass-123")
    dpfw("profile", "set", str(image), "memory.image_ram_mib", "4", "mailbox.quota_mib", "16")
    gen = start_lab(start_device, image)
    lab = next(gen)
    try:
        before = snapshot(lab)
        got = deliver(lab, "inbox", message("huge", body="m" * (5 << 20) + "\r\n"))
        assert got.status_code == 507, got.text
        assert got.json()["message"].startswith("MEMORY FULL: API delivery")
        assert snapshot(lab) == before
        assert lab.api.get(f"{API}/status").json()["ram"]["used"] == 0
        assert deliver(lab, "inbox", message("fits")).status_code == 201
    finally:
        gen.close()
