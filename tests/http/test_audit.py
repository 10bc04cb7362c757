"""Security audit of the HTTP server (issue 17): every route from the app's own table.

The route table is read from a real `Api` over a booted in-process `Device`, so a route added
later is audited without anyone editing this file. The requests go over real sockets to one
`dpfw run --http` (the module's shared lab):

- without credentials, every API route and /metrics answer 401 with a Basic challenge, every
  web page redirects to /login and every web form is refused 403; only PUBLIC is served;
- with a web session but without its CSRF token, every web form is refused 403;
- box names and uids cannot walk out of their place (`..`, encoded slashes);
- headers, JSON and form bodies over their limits are refused (431/413), not read whole;
- a profile change of an Internet Fax key commits over the API and the web page (it was a 500:
  the commit runs on the store worker's thread and woke the poller with a trio.Event there).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from starlette.routing import Route

from firmware.config.profile import factory
from firmware.device.boards import create_board
from firmware.device.device import Device, RunOptions
from firmware.errors import ImageError, NotRunningError
from firmware.http.app import Api
from firmware.http.errors import device_status
from firmware.pop3.trace import body_octets
from tests.http.conftest import ADMIN, Lab
from tests.http.test_web import csrf, login

API = "/api/v1"
# Served without a login, on purpose: the API's description, and the login form itself.
# /metrics stays behind the admin login (a Prometheus scrape config takes basic_auth).
PUBLIC = {("GET", f"{API}/openapi.json"), ("GET", "/login"), ("POST", "/login")}
STREAMS = {f"{API}/trace"}  # answered 401 like the rest, but never read to its end when good


def route_table(tmp: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route the device's HTTP server has."""
    image = tmp / "routes.img"
    create_board(image, factory("DP-3530"), "admin-pw", size=2 << 20).close()

    async def collect() -> list[tuple[str, str]]:
        device = Device(RunOptions(image=image, pop3=("127.0.0.1", 0)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device.run)
            await device.wait_booted()
            routes = [
                (method, route.path)
                for route in Api(device).app.routes
                if isinstance(route, Route)
                for method in sorted(route.methods or ())
                if method != "HEAD"
            ]
            device.request_shutdown()
        return routes

    return trio.run(collect)


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    table = route_table(tmp_path_factory.mktemp("routes"))
    assert len(table) >= 40, table  # the API's 26 and the web page's
    return table


@pytest.fixture(scope="module")
def audit_lab(shared_lab: Lab) -> Iterator[Lab]:
    yield shared_lab


def concrete(template: str, uid: str) -> str:
    values = {"box": "alice", "uid": uid, "session": "1", "job": "1", "number": "1"}
    path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "0"), template)
    return path


def alice(lab: Lab) -> tuple[int, str]:
    listing = lab.api.get(f"{API}/boxes/alice/messages").json()["messages"]
    return len(listing), listing[0]["uid"]


def test_every_route_but_the_public_ones_refuses_without_credentials(
    audit_lab: Lab, routes: list[tuple[str, str]]
) -> None:
    count, uid = alice(audit_lab)
    profile = audit_lab.api.get(f"{API}/profile").json()
    seen = set()
    for cookie in (None, "forged-session-token"):
        with audit_lab.client(auth=None) as anon:
            if cookie is not None:
                anon.cookies.set("dpfw_session", cookie)
            for method, template in routes:
                seen.add((method, template))
                if (method, template) in PUBLIC:
                    continue
                path = concrete(template, uid)
                body = b"x=1" if method == "POST" else b""
                got = anon.request(method, path, content=body)
                where = (method, path, got.status_code, got.text[:200])
                if template.startswith(API) or template == "/metrics":
                    assert got.status_code == 401, where
                    assert got.headers["www-authenticate"].startswith("Basic "), where
                elif method == "GET":
                    assert got.status_code == 303, where
                    assert got.headers["location"] == "/login", where
                else:
                    assert got.status_code == 403, where
                    assert "log in" in got.text, where
    assert seen >= PUBLIC  # the public set names real routes
    with audit_lab.client(auth=None) as anon:
        assert anon.get(f"{API}/openapi.json").status_code == 200
        assert anon.get("/login").status_code == 200
    assert alice(audit_lab) == (count, uid)  # nothing ran
    assert audit_lab.api.get(f"{API}/profile").json() == profile


def test_every_web_form_needs_the_sessions_csrf_token(
    audit_lab: Lab, routes: list[tuple[str, str]]
) -> None:
    count, uid = alice(audit_lab)
    client = login(audit_lab)
    token = csrf(client)
    forms = [t for m, t in routes if m == "POST" and not t.startswith((API, "/login"))]
    assert "/logout" in forms and "/scans" in forms
    for template in forms:
        for fields in ({}, {"csrf": token[:-1]}):
            files = {"message": ("m.eml", b"Subject: x\r\n\r\nx\r\n")}
            got = client.post(
                concrete(template, uid),
                data={"box": "alice", **fields},
                files=files if template.endswith("/upload") else None,
            )
            assert got.status_code == 403, (template, got.status_code, got.text[:200])
            assert "CSRF" in got.text, (template, got.text[:200])
    assert client.get("/").status_code == 200  # still logged in: /logout was refused too
    assert alice(audit_lab) == (count, uid)


@pytest.mark.parametrize(
    "path",
    [
        f"{API}/boxes/..%2Fbob/messages",
        f"{API}/boxes/%2e%2e/messages",
        f"{API}/boxes/./messages",
        f"{API}/boxes/alice%2F..%2Fbob/messages",
        f"{API}/boxes/alice/messages/..%2F..%2Fbob",
        f"{API}/boxes/alice/messages/%2e%2e/raw",
        f"{API}/boxes/alice/messages/..%2F1/raw",
        f"{API}/boxes/alice/messages/%2Fetc%2Fpasswd/raw",
        f"{API}/boxes/%00/messages",
        "/boxes/..%2Fbob",
        "/boxes/%2e%2e",
        "/boxes/alice/messages/..%2F1/raw",
    ],
)
def test_box_names_and_uids_cannot_walk_out_of_their_place(audit_lab: Lab, path: str) -> None:
    client = login(audit_lab)
    client.auth = ADMIN
    got = client.get(path)
    assert got.status_code in (400, 404), (path, got.status_code, got.text[:300])
    assert "Traceback" not in got.text and "root:" not in got.text
    bob = audit_lab.api.get(f"{API}/boxes/bob/messages").json()["messages"]
    assert all(m["uid"] not in got.text for m in bob), got.text[:300]


def test_box_names_that_would_be_paths_are_refused(audit_lab: Lab) -> None:
    for name in ("..", ".", "../bob", "a/b", "a b", "x" * 41, "", "\x00"):
        got = audit_lab.api.post(f"{API}/boxes", json={"name": name, "password": "Pass-123456"})
        assert got.status_code == 400, (name, got.text)
        assert got.json()["message"], got.text


def test_request_size_limits(audit_lab: Lab) -> None:
    api = audit_lab.api
    huge = api.get(f"{API}/status", headers={"X-Pad": "a" * 100_000})
    assert huge.status_code == 431
    host, port = audit_lab.base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as raw:  # httpx refuses it
        raw.sendall(f"GET {API}/status?{'a' * 100_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = raw.makefile("rb").readline().split()
    assert status[1] in (b"414", b"431"), status
    body = b'{"name": "' + b"a" * (70 << 10) + b'", "password": "x"}'
    got = api.post(f"{API}/boxes", content=body, headers={"Content-Type": "application/json"})
    assert got.status_code == 413 and "exceeds" in got.json()["message"]
    with audit_lab.client(auth=None) as anon:
        form = b"user=admin&password=" + b"a" * (70 << 10)
        got = anon.post(
            "/login",
            content=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert got.status_code == 413
    assert api.get(f"{API}/status").status_code == 200


def test_an_ifax_key_commits_over_the_api_and_the_web_page(lab: Lab) -> None:
    """PATCH /api/v1/profile and the web page's Set form commit on the store worker's thread;
    an ifax.* change woke the poller there with trio.Event.set: RuntimeError, a 500 after
    the profile was already saved."""
    got = lab.api.patch(f"{API}/profile", json={"ifax.user": "fax", "ifax.server": "127.0.0.1"})
    assert got.status_code == 200, got.text
    client = login(lab)
    token = csrf(client, "/profile")
    got = client.post(
        "/profile", data={"key": "ifax.poll_interval_s", "value": "600", "csrf": token}
    )
    assert got.status_code == 303, got.text[:300]
    keys = lab.api.get(f"{API}/profile").json()["keys"]
    saved = {k["key"]: k["saved"] for k in keys}
    assert saved["ifax.user"] == "fax" and saved["ifax.poll_interval_s"] == 600
    assert "RuntimeError" not in lab.device.output()
    assert lab.api.get(f"{API}/ifax").status_code == 200


@pytest.mark.parametrize("digits", ["\u00b2", "\u0663", "1\u00b9"])  # superscript two, Arabic 3
def test_numbers_in_paths_are_ascii_digits_or_refused(audit_lab: Lab, digits: str) -> None:
    """str.isdigit() is true for '²' and '٣', which int() refuses: GET /api/v1/scans/² was a
    500 (found by schemathesis). Every path number and uid sequence is checked as ASCII."""
    _, uid = alice(audit_lab)
    tag = uid.partition(".")[0]
    api = audit_lab.api
    for method, path in [
        ("GET", f"{API}/scans/{digits}"),
        ("GET", f"{API}/tray/{digits}"),
        ("DELETE", f"{API}/sessions/{digits}"),
        ("GET", f"{API}/trace?session={digits}"),
        ("GET", f"{API}/boxes/alice/messages/{tag}.{digits}"),
        ("GET", f"{API}/boxes/alice/messages/{tag}.{digits}/raw"),
        ("DELETE", f"{API}/boxes/alice/messages/{tag}.{digits}"),
    ]:
        got = api.request(method, path)
        assert got.status_code in (400, 404), (method, path, got.status_code, got.text)
    client = login(audit_lab)
    got = client.post(f"/sessions/{digits}/kill", data={"csrf": csrf(client)})
    assert got.status_code == 400, got.text
    got = client.get(f"/boxes/alice/messages/{tag}.{digits}")
    assert got.status_code == 404, got.text
    assert body_octets(f"<{digits} octets>") is None  # `dpfw trace FILE` on a doctored file
    assert "internal error" not in audit_lab.device.output()


def test_an_io_error_on_the_image_is_503_not_a_refused_request() -> None:
    """Found by tests/reliability/test_fiu_device.py: a delivery that met EIO on the image
    answered 422 "refused" (a value the device refuses), so a client would not retry."""
    error = ImageError("/x/dev.img: write failed: Input/output error")
    assert device_status(error, delivering=True) == (503, "storage_error")
    assert device_status(error) == (503, "storage_error")
    assert device_status(NotRunningError("the device is not running"))[0] == 503
